//! DNS names of the config (static endpoints, STUN servers), resolved in
//! the background so that nothing waits for DNS before the data path is up.
//!
//! Owns one task per name list (the STUN servers, each peer's endpoint;
//! a reload replaces the ones whose names changed): it resolves, hands the answer to the
//! daemon's loop over a channel, and resolves again — soon while lookups
//! fail (boot before the network, an offline LAN), every
//! [`REFRESH`] once they work (an address that moved), and at once when the
//! loop says the peer behind a name stopped answering (what WireGuard leaves
//! to a `reresolve-dns` script). Addresses written as IPs never come here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tracing::{debug, info, warn};

use crate::core::PeerId;
use crate::nat::netcheck::lookup_ipv4;

/// Resolve a name that works again this often.
pub const REFRESH: Duration = Duration::from_secs(300);
/// First retry after a failed lookup; doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// An answer for the daemon's loop; sent only when it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// The STUN servers that resolved (the names that did not are retried).
    Stun(Vec<SocketAddr>),
    /// A peer's `endpoint` name `host` resolved to `addr`. The loop checks
    /// that the peer's endpoint is still that name: an answer may have been
    /// on its way when a reload changed it.
    Endpoint {
        peer: PeerId,
        host: String,
        addr: SocketAddr,
    },
}

/// The task keeping one name list resolved; stopped when dropped.
struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A peer's named endpoint being kept resolved.
struct Named {
    peer: PeerId,
    name: (String, u16),
    /// Wakes the task for a fresh lookup.
    wake: Arc<Notify>,
    _task: Task,
}

/// The running lookups; dropping it stops them.
pub struct Names {
    tx: mpsc::UnboundedSender<Resolved>,
    rx: mpsc::UnboundedReceiver<Resolved>,
    stun: Option<(Vec<String>, Task)>,
    endpoints: Vec<Named>,
}

impl Names {
    /// Start resolving. `stun` entries are `host:port` (IP literals resolve
    /// at once); `endpoints` are the peers' named endpoints.
    pub fn spawn(stun: Vec<String>, endpoints: Vec<(PeerId, String, u16)>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut names = Self {
            tx,
            rx,
            stun: None,
            endpoints: Vec::new(),
        };
        names.set_stun(stun);
        for (peer, host, port) in endpoints {
            names.set_endpoint(peer, Some((host, port)));
        }
        names
    }

    /// Resolve these STUN servers from now on (a reload); nothing happens
    /// when the list is the same.
    pub fn set_stun(&mut self, servers: Vec<String>) {
        if self.stun.as_ref().is_some_and(|(s, _)| *s == servers) {
            return;
        }
        self.stun = None;
        if servers.is_empty() {
            return;
        }
        let tx = self.tx.clone();
        let names: Vec<(String, u16)> = servers.iter().filter_map(|s| split(s)).collect();
        let task = Task(tokio::spawn(async move {
            keep_resolved(names, None, move |addrs| {
                tx.send(Resolved::Stun(addrs)).is_ok()
            })
            .await;
        }));
        self.stun = Some((servers, task));
    }

    /// `peer`'s endpoint is this name from now on, or no name (`None`: an
    /// address, none, or the peer left the config); nothing happens when
    /// it is the same name.
    pub fn set_endpoint(&mut self, peer: PeerId, name: Option<(String, u16)>) {
        if let Some(i) = self.endpoints.iter().position(|n| n.peer == peer) {
            if Some(&self.endpoints[i].name) == name.as_ref() {
                return;
            }
            self.endpoints.swap_remove(i);
        }
        let Some((host, port)) = name else {
            return;
        };
        let tx = self.tx.clone();
        let wake = Arc::new(Notify::new());
        let notify = wake.clone();
        let named = host.clone();
        let task = Task(tokio::spawn(async move {
            keep_resolved(vec![(named.clone(), port)], Some(notify), move |addrs| {
                addrs.first().is_none_or(|&addr| {
                    let host = named.clone();
                    tx.send(Resolved::Endpoint { peer, host, addr }).is_ok()
                })
            })
            .await;
        }));
        self.endpoints.push(Named {
            peer,
            name: (host, port),
            wake,
            _task: task,
        });
    }

    /// The next answer, or forever when there are no names.
    pub async fn recv(&mut self) -> Resolved {
        match self.rx.recv().await {
            Some(r) => r,
            // Never: `self.tx` keeps the channel open.
            None => std::future::pending().await,
        }
    }

    /// `peer` stopped answering: if it is reached through a name, look the
    /// name up again now.
    pub fn stale(&self, peer: PeerId) {
        if let Some(n) = self.endpoints.iter().find(|n| n.peer == peer) {
            n.wake.notify_one();
        }
    }
}

/// `host:port` → its parts; `None` (logged) when it has no port, which the
/// config validation already refuses.
fn split(entry: &str) -> Option<(String, u16)> {
    let (host, port) = entry.rsplit_once(':')?;
    let port = port.parse().ok()?;
    Some((host.trim_matches(['[', ']']).to_string(), port))
}

/// Resolve `names` until `deliver` returns false (the loop is gone).
/// `deliver` gets the addresses that resolved, in order, each time the set
/// changes and is not empty.
async fn keep_resolved(
    names: Vec<(String, u16)>,
    wake: Option<Arc<Notify>>,
    deliver: impl FnMut(Vec<SocketAddr>) -> bool,
) {
    keep_resolved_with(names, wake, deliver, |host, port| async move {
        lookup_ipv4((host.as_str(), port)).await
    })
    .await;
}

/// [`keep_resolved`] with the lookup as an argument (tests fake DNS).
async fn keep_resolved_with<F, Fut>(
    names: Vec<(String, u16)>,
    wake: Option<Arc<Notify>>,
    mut deliver: impl FnMut(Vec<SocketAddr>) -> bool,
    lookup: F,
) where
    F: Fn(String, u16) -> Fut,
    Fut: std::future::Future<Output = Result<SocketAddr, String>>,
{
    let mut last: Vec<SocketAddr> = Vec::new();
    let mut retry = RETRY_FIRST;
    let mut failed_before = false;
    loop {
        let mut addrs = Vec::new();
        let mut failures = Vec::new();
        for (host, port) in &names {
            match lookup(host.clone(), *port).await {
                Ok(a) => addrs.push(a),
                Err(e) => failures.push(format!("{host}: {e}")),
            }
        }
        if !addrs.is_empty() && addrs != last {
            if failed_before {
                info!(names = ?names.iter().map(|(h, _)| h).collect::<Vec<_>>(), addrs = ?addrs, "DNS names resolved");
            } else {
                debug!(addrs = ?addrs, "DNS names resolved");
            }
            if !deliver(addrs.clone()) {
                return;
            }
            last = addrs;
        }
        let wait = if failures.is_empty() {
            retry = RETRY_FIRST;
            failed_before = false;
            REFRESH
        } else {
            // One warning per outage, not one per retry.
            if !failed_before {
                warn!(failures = ?failures, retry_in = ?retry, "DNS lookup failed; retrying in the background");
            } else {
                debug!(failures = ?failures, retry_in = ?retry, "DNS lookup failed again");
            }
            failed_before = true;
            let w = retry;
            retry = (retry * 2).min(RETRY_MAX);
            w
        };
        match &wake {
            Some(n) => {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = n.notified() => debug!("peer behind a name stopped answering; resolving again"),
                }
            }
            None => tokio::time::sleep(wait).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_split_into_host_and_port() {
        assert_eq!(
            split("stun.example.org:3478"),
            Some(("stun.example.org".into(), 3478))
        );
        assert_eq!(
            split("198.18.0.10:3478"),
            Some(("198.18.0.10".into(), 3478))
        );
        assert_eq!(split("[::1]:3478"), Some(("::1".into(), 3478)));
        assert_eq!(split("no-port"), None);
    }

    /// A fake DNS: fails until `works` is set, then answers `addr`; counts
    /// lookups.
    #[derive(Clone, Default)]
    struct FakeDns {
        works: Arc<std::sync::atomic::AtomicBool>,
        lookups: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl FakeDns {
        fn lookups(&self) -> usize {
            self.lookups.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_name_is_retried_with_backoff_then_refreshed_and_woken() {
        use std::sync::atomic::Ordering::SeqCst;
        let dns = FakeDns::default();
        let addr: SocketAddr = "198.18.0.2:51871".parse().unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let wake = Arc::new(Notify::new());
        let fake = dns.clone();
        let task = tokio::spawn(keep_resolved_with(
            vec![("b.example".into(), 51871)],
            Some(wake.clone()),
            move |a| tx.send(a).is_ok(),
            move |_, _| {
                let fake = fake.clone();
                async move {
                    fake.lookups.fetch_add(1, SeqCst);
                    if fake.works.load(SeqCst) {
                        Ok(addr)
                    } else {
                        Err("no DNS".to_string())
                    }
                }
            },
        ));
        // Failing: tries at 0, 1, 3, 7, 15 s (backoff doubling from 1 s).
        tokio::time::sleep(Duration::from_millis(15_500)).await;
        assert_eq!(dns.lookups(), 5, "retries while the name fails");
        assert!(rx.try_recv().is_err(), "nothing resolved yet");
        // DNS comes back: the next retry (at 31 s) delivers the address.
        dns.works.store(true, SeqCst);
        tokio::time::sleep(Duration::from_secs(16)).await;
        assert_eq!(rx.try_recv().ok(), Some(vec![addr]));
        let after_success = dns.lookups();
        // Working: quiet until REFRESH, then looked up again.
        tokio::time::sleep(REFRESH - Duration::from_secs(1)).await;
        assert_eq!(dns.lookups(), after_success, "no lookups between refreshes");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(dns.lookups(), after_success + 1, "refreshed after REFRESH");
        // The peer behind the name stopped answering: looked up at once.
        wake.notify_one();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(dns.lookups(), after_success + 2, "woken for a fresh lookup");
        task.abort();
    }

    #[tokio::test]
    async fn a_reload_replaces_and_removes_named_endpoints() {
        let mut names = Names::spawn(Vec::new(), vec![(PeerId(0), "127.0.0.1".into(), 1)]);
        let first = names.recv().await;
        assert_eq!(
            first,
            Resolved::Endpoint {
                peer: PeerId(0),
                host: "127.0.0.1".into(),
                addr: "127.0.0.1:1".parse().unwrap()
            }
        );
        // The same name again starts nothing new.
        names.set_endpoint(PeerId(0), Some(("127.0.0.1".into(), 1)));
        // A new name is resolved at once; a dropped one never answers again.
        names.set_endpoint(PeerId(0), Some(("127.0.0.2".into(), 2)));
        names.set_endpoint(PeerId(1), Some(("127.0.0.3".into(), 3)));
        names.set_endpoint(PeerId(1), None);
        let next = names.recv().await;
        assert_eq!(
            next,
            Resolved::Endpoint {
                peer: PeerId(0),
                host: "127.0.0.2".into(),
                addr: "127.0.0.2:2".parse().unwrap()
            }
        );
        assert_eq!(names.endpoints.len(), 1);
        names.set_stun(vec!["127.0.0.4:3478".into()]);
        assert_eq!(
            names.recv().await,
            Resolved::Stun(vec!["127.0.0.4:3478".parse().unwrap()])
        );
        names.set_stun(Vec::new());
        assert!(names.stun.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn literals_are_delivered_at_once_and_again_only_when_they_change() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(keep_resolved(
            vec![("127.0.0.1".into(), 3478), ("127.0.0.2".into(), 3479)],
            None,
            move |a| tx.send(a).is_ok(),
        ));
        let first = rx.recv().await.unwrap();
        assert_eq!(
            first,
            vec![
                "127.0.0.1:3478".parse().unwrap(),
                "127.0.0.2:3479".parse().unwrap()
            ]
        );
        // Refreshes that find the same addresses send nothing.
        tokio::time::sleep(REFRESH * 3).await;
        assert!(
            rx.try_recv().is_err(),
            "an unchanged answer is not sent again"
        );
        task.abort();
    }
}
