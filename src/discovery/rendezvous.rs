//! DHT rendezvous: the long-lived actor that publishes this node's record
//! and resolves its peers' records in the Mainline DHT.
//!
//! A cheap [`Rendezvous`] handle sends commands to one task; results come
//! back as [`Found`] on a channel the daemon selects on. The DHT may be slow
//! or unreachable: nothing here blocks the daemon, the tunnel to static and
//! cached peers comes up regardless, and a node that cannot be built is
//! retried in the background.
//!
//! Flow:
//! - `publish(candidates, nat, relays)` → seal and sign a record (seq persisted, so
//!   it is monotonic across restarts) → `put_mutable`; republished on change
//!   (changes within [`COALESCE`] make one put) and every
//!   [`REPUBLISH_EVERY`] so it never falls out of the DHT;
//! - `resolve(peer)` → `get_mutable` stream → the first item that passes
//!   every check ([`record::verify_item`]) → [`Found::Candidates`]; each
//!   rejected item is logged with its reason.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_lite::StreamExt;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::Candidate;
use super::cache;
use super::dht::{self, DhtSettings};
use super::record;
use crate::identity::{PublicKey, SecretKey};
use crate::nat::NatBehaviour;
use crate::wire::{RECORD_NONCE_LEN, RecordBody};

/// BEP 44 items are dropped by DHT nodes after about two hours; republish
/// well before.
pub const REPUBLISH_EVERY: Duration = Duration::from_secs(30 * 60);
/// Records older than this are refused as stale.
pub const MAX_RECORD_AGE: Duration = Duration::from_secs(3 * 60 * 60);
/// How long one lookup may take before we give up on it.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(20);
const PUT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the lookup that refreshes write tokens before a put may take.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(10);
/// Retry delay after a failed publish or a DHT node that would not start.
const RETRY_AFTER: Duration = Duration::from_secs(15);
/// A change is put this long after it is asked for, so changes that come
/// together (a STUN run gives new reflexive candidates and new NAT facts in
/// two calls) make one put, not two back to back: each put takes a lookup
/// and tens of seconds of DHT traffic.
pub const COALESCE: Duration = Duration::from_secs(1);

/// What the rendezvous needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    pub identity: SecretKey,
    pub network_id: String,
    pub secret: Option<crate::identity::NetworkSecret>,
    pub dht: DhtSettings,
    pub state_dir: PathBuf,
}

/// A finished lookup: the record and its seq, or why there was none.
type Lookup = (PublicKey, Result<(RecordBody, i64), String>);

/// Results for the daemon.
#[derive(Debug, Clone)]
pub enum Found {
    /// A verified record of `peer`.
    /// Its timestamp is the peer's clock: a lookup can return an older
    /// record than one the peer pushed to us.
    Candidates {
        peer: PublicKey,
        body: RecordBody,
        seq: i64,
    },
    /// Our record is in the DHT.
    Published { seq: i64, nodes: usize },
}

/// What our record says (the timestamp is added when it is put).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ours {
    candidates: Vec<Candidate>,
    nat: Option<NatBehaviour>,
    /// Keys of the members we may be reached through (`[relay] via`).
    relays: Vec<[u8; 32]>,
}

enum Command {
    Publish(Ours),
    Resolve(PublicKey),
}

/// Handle to the rendezvous task; dropping every handle stops it.
#[derive(Clone)]
pub struct Rendezvous {
    tx: mpsc::UnboundedSender<Command>,
}

impl Rendezvous {
    /// Start the actor; results arrive on the returned receiver.
    pub fn spawn(settings: Settings) -> (Self, mpsc::UnboundedReceiver<Found>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (found_tx, found_rx) = mpsc::unbounded_channel();
        tokio::spawn(run(settings, rx, found_tx));
        (Self { tx }, found_rx)
    }

    /// Publish (or republish) our record with these candidates, NAT facts
    /// and relays (keys of the members we may be reached through).
    pub fn publish(
        &self,
        candidates: Vec<Candidate>,
        nat: Option<NatBehaviour>,
        relays: Vec<[u8; 32]>,
    ) {
        let _ = self.tx.send(Command::Publish(Ours {
            candidates,
            nat,
            relays,
        }));
    }

    /// Look `peer` up; a lookup already running for it is not repeated.
    pub fn resolve(&self, peer: PublicKey) {
        let _ = self.tx.send(Command::Resolve(peer));
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

struct Actor {
    settings: Settings,
    salt: [u8; record::SALT_LEN],
    dht: Option<Arc<mainline::async_dht::AsyncDht>>,
    ours: Option<Ours>,
    /// Highest seq accepted per peer: an older one is a replay.
    last_seq: HashMap<PublicKey, i64>,
    resolving: HashMap<PublicKey, tokio::task::JoinHandle<()>>,
    /// Lookups asked for before the DHT node was up; run once it is.
    waiting: Vec<PublicKey>,
    found: mpsc::UnboundedSender<Found>,
}

async fn run(
    settings: Settings,
    mut commands: mpsc::UnboundedReceiver<Command>,
    found: mpsc::UnboundedSender<Found>,
) {
    let salt = record::salt(&settings.network_id);
    let mut actor = Actor {
        settings,
        salt,
        dht: None,
        ours: None,
        last_seq: HashMap::new(),
        resolving: HashMap::new(),
        waiting: Vec::new(),
        found,
    };
    let (results_tx, mut results) = mpsc::unbounded_channel::<Lookup>();
    let mut publish_at = tokio::time::Instant::now() + Duration::from_secs(3600 * 24);
    let mut start_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(start_at), if actor.dht.is_none() => {
                match actor.start().await {
                    Ok(()) => {
                        publish_at = tokio::time::Instant::now();
                        for peer in std::mem::take(&mut actor.waiting) {
                            actor.resolve(peer, results_tx.clone());
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, retry_in = ?RETRY_AFTER, "DHT unavailable; static endpoints and cached candidates still work");
                        start_at = tokio::time::Instant::now() + RETRY_AFTER;
                    }
                }
            }
            cmd = commands.recv() => match cmd {
                None => break,
                Some(Command::Publish(ours)) => {
                    if actor.ours.as_ref() != Some(&ours) {
                        actor.ours = Some(ours);
                        publish_at = publish_at.min(tokio::time::Instant::now() + COALESCE);
                    }
                }
                Some(Command::Resolve(peer)) => actor.resolve(peer, results_tx.clone()),
            },
            _ = tokio::time::sleep_until(publish_at), if actor.dht.is_some() && actor.ours.is_some() => {
                publish_at = tokio::time::Instant::now() + match actor.publish().await {
                    Ok(()) => REPUBLISH_EVERY,
                    Err(e) => {
                        warn!(error = %e, "publishing the DHT record failed; retrying");
                        RETRY_AFTER
                    }
                };
            }
            Some((peer, result)) = results.recv() => {
                actor.resolving.remove(&peer);
                if let Ok((body, seq)) = result {
                    actor.last_seq.insert(peer, seq);
                    let _ = actor.found.send(Found::Candidates { peer, body, seq });
                }
            }
        }
    }
    for (_, task) in actor.resolving.drain() {
        task.abort();
    }
}

impl Actor {
    async fn start(&mut self) -> Result<(), dht::DhtError> {
        let settings = self.settings.dht.clone();
        let built = tokio::task::spawn_blocking(move || dht::build(&settings))
            .await
            .map_err(|e| dht::DhtError::Bind {
                port: self.settings.dht.port,
                source: std::io::Error::other(e),
            })??;
        let dht = built.as_async();
        // Queries before the routing table has nodes find nothing; wait
        // for bootstrap, but not forever (an empty private network is valid).
        let bootstrapped = tokio::time::timeout(Duration::from_secs(10), dht.bootstrapped())
            .await
            .unwrap_or(false);
        let info = dht.info().await;
        info!(addr = %info.local_addr(), server = self.settings.dht.server, bootstrapped, "DHT node started");
        self.dht = Some(Arc::new(dht));
        Ok(())
    }

    async fn publish(&mut self) -> Result<(), PublishError> {
        let (Some(dht), Some(ours)) = (self.dht.clone(), self.ours.clone()) else {
            return Ok(());
        };
        let now = unix_now();
        let body = RecordBody {
            timestamp: now,
            candidates: ours.candidates,
            relays: ours.relays,
            nat: ours.nat,
        };
        let mut nonce = [0u8; RECORD_NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| PublishError::Random(e.to_string()))?;
        let seq = record::next_seq(cache::load_seq(&self.settings.state_dir), now);
        // Persist before sending: a crash after the put must not reuse the seq.
        if let Err(e) = cache::save_seq(&self.settings.state_dir, seq) {
            warn!(error = %e, "cannot persist the DHT sequence number");
        }
        let item = record::publish_item(
            &self.settings.identity,
            &body,
            &self.settings.network_id,
            self.settings.secret.as_ref().map(|s| &s.0),
            seq,
            &nonce,
        )
        .map_err(PublishError::Record)?;
        // mainline puts to the nodes its last lookup of this target found,
        // with the write tokens they gave, cached for 5 min. Tokens are bound
        // to our address: after an address change every node answers "Bad
        // token" until they expire. A fresh lookup of our own item first
        // gets tokens for the address we have now (the first put of a run
        // does this lookup anyway).
        let own_key = *self.settings.identity.public().as_bytes();
        let _ = tokio::time::timeout(
            REFRESH_TIMEOUT,
            dht.get_mutable(&own_key, Some(&self.salt), None).count(),
        )
        .await;
        let outcome = tokio::time::timeout(PUT_TIMEOUT, dht.put_mutable(item, None))
            .await
            .map_err(|_| PublishError::Timeout)?
            .map_err(|e| PublishError::Put(e.to_string()))?;
        let nodes = outcome.stored_at as usize;
        info!(
            seq,
            candidates = body.candidates.len(),
            nat = ?body.nat.map(|n| n.mapping),
            nodes,
            "published DHT record"
        );
        let _ = self.found.send(Found::Published { seq, nodes });
        Ok(())
    }

    fn resolve(&mut self, peer: PublicKey, results: mpsc::UnboundedSender<Lookup>) {
        let Some(dht) = self.dht.clone() else {
            if !self.waiting.contains(&peer) {
                self.waiting.push(peer);
            }
            return;
        };
        if self.resolving.get(&peer).is_some_and(|t| !t.is_finished()) {
            return;
        }
        let salt = self.salt;
        let last_seq = self.last_seq.get(&peer).copied();
        let network_id = self.settings.network_id.clone();
        let secret = self.settings.secret.clone();
        let task = tokio::spawn(async move {
            let lookup = async {
                let mut items = dht.get_mutable(peer.as_bytes(), Some(&salt), None);
                while let Some(item) = items.next().await {
                    let verified = record::verify_item(
                        &item,
                        &peer,
                        &network_id,
                        secret.as_ref().map(|s| &s.0),
                        last_seq,
                        unix_now(),
                        MAX_RECORD_AGE,
                    );
                    match verified {
                        // The first valid item is enough (design §9): do not
                        // wait for the whole query.
                        Ok(body) => return Ok((body, item.seq())),
                        Err(reason) => {
                            warn!(peer = %peer.short(), seq = item.seq(), %reason, "DHT record rejected")
                        }
                    }
                }
                Err("no valid record found".to_string())
            };
            let result = tokio::time::timeout(RESOLVE_TIMEOUT, lookup)
                .await
                .unwrap_or_else(|_| Err("lookup timed out".to_string()));
            if let Err(reason) = &result {
                debug!(peer = %peer.short(), %reason, "DHT lookup found nothing");
            }
            let _ = results.send((peer, result));
        });
        self.resolving.insert(peer, task);
    }
}

#[derive(Debug, thiserror::Error)]
enum PublishError {
    #[error("cannot read OS randomness: {0}")]
    Random(String),
    #[error("{0}")]
    Record(record::RecordError),
    #[error("the DHT did not confirm the put within 30 s")]
    Timeout,
    #[error("put failed: {0}")]
    Put(String),
}
