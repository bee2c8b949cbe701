//! Running STUN from the data socket: when, against which servers, and what
//! the answers mean for our published candidates. The protocol is
//! `nat::StunClient`'s; this file only schedules it and reads the results.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::{debug, info};

use crate::nat::{self, MappingBehaviour, NatBehaviour, Retransmit, StunClient};

/// Re-learn the public address this often (mappings expire, routers reboot).
const RERUN_EVERY: Duration = Duration::from_secs(300);

/// Idle until [`Reflexive::set_servers`] hands it the servers whose names
/// resolved (the daemon never waits for DNS).
#[derive(Default)]
pub struct Reflexive {
    servers: Vec<SocketAddr>,
    client: Option<StunClient>,
    next_run: Option<Instant>,
    pub behaviour: Option<NatBehaviour>,
}

impl Reflexive {
    /// The servers to ask, once their names resolved (again): a changed
    /// list runs at once.
    pub fn set_servers(&mut self, servers: Vec<SocketAddr>, now: Instant) {
        if servers != self.servers {
            self.servers = servers;
            self.rerun(now);
        }
    }

    /// Run again soon (e.g. our addresses changed).
    pub fn rerun(&mut self, now: Instant) {
        if !self.servers.is_empty() {
            self.next_run = Some(now);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let client = self.client.as_ref().and_then(StunClient::poll_timeout);
        match (client, self.next_run) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_run.is_some_and(|t| t <= now) {
            self.next_run = None;
            let mut client = StunClient::new(Retransmit::default());
            for server in &self.servers {
                let mut txid = [0u8; 12];
                if getrandom::fill(&mut txid).is_err() {
                    continue;
                }
                let _ = client.add_server(now, *server, txid);
            }
            self.client = Some(client);
        }
        if let Some(c) = &mut self.client {
            c.handle_timeout(now);
        }
    }

    /// A datagram that looks like STUN arrived on the data socket.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let Some(c) = &mut self.client else { return };
        if let Err(e) = c.handle_response(now, from, bytes) {
            debug!(addr = %from, error = %e, "STUN datagram ignored");
        }
    }

    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.client.as_mut()?.poll_transmit()
    }

    /// When a run has finished: the reflexive addresses worth publishing.
    /// `local` are our own addresses with the data socket's port.
    pub fn poll_result(&mut self, now: Instant, local: &[SocketAddr]) -> Option<Vec<SocketAddr>> {
        let c = self.client.as_mut()?;
        while c.poll_event().is_some() {}
        if !c.is_finished() {
            return None;
        }
        let observations = c.observations();
        self.client = None;
        self.next_run = Some(now + RERUN_EVERY);
        let behaviour = nat::classify(local, &observations);
        if self.behaviour.as_ref() != Some(&behaviour) {
            info!(
                mapping = ?behaviour.mapping,
                public = ?behaviour.public,
                port_preserving = behaviour.port_preserving,
                sequential_step = ?behaviour.sequential,
                "NAT behaviour measured"
            );
        }
        // An endpoint-dependent mapping's address is only valid towards the
        // STUN server that saw it; publishing it still helps a peer whose own
        // NAT is easy, which answers from the address our packets come from.
        let reflexive = match behaviour.mapping {
            MappingBehaviour::NoNat => Vec::new(),
            _ => behaviour.public.into_iter().collect(),
        };
        self.behaviour = Some(behaviour);
        Some(reflexive)
    }
}
