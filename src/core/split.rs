//! Both halves of a node in one value, for the simulator: every packet
//! goes to the [`DataPlane`] first and to the [`Node`] only when the data
//! half hands it over, exactly as the daemon's two threads pass it, but
//! synchronously, with updates and activity carried over after each call.
//! So every simulator test also tests the split. It derefs to the [`Node`]
//! for everything that is the control half's alone.

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::time::Instant;

use super::data::{DataPlane, DataTun, DataUdp};
use super::node::{Node, TunOutcome, UdpOutcome};

pub struct Split {
    pub node: Node,
    pub data: DataPlane,
}

impl Split {
    pub fn new(node: Node) -> Self {
        let mut s = Self {
            node,
            data: DataPlane::default(),
        };
        s.publish();
        s
    }

    /// Carry what the control half decided to the data half.
    pub fn publish(&mut self) {
        while let Some(u) = self.node.poll_data_update() {
            self.data.apply(u);
        }
    }

    /// Carry the data half's activity to the control half: every report at
    /// once, as the daemon does before its data thread sleeps.
    fn report(&mut self, now: Instant) {
        while let Some(a) = self.data.poll_activity(now, true) {
            self.node.handle_activity(now, a);
        }
        self.publish();
    }

    pub fn handle_tun(&mut self, now: Instant, packet: &[u8], out: &mut [u8]) -> TunOutcome {
        self.publish();
        let r = match self.data.handle_tun(now, packet, out) {
            DataTun::Send { dst, len } => TunOutcome::Send { dst, len },
            DataTun::Reply { len } => TunOutcome::Reply { len },
            DataTun::Dropped(reason) => TunOutcome::Dropped(reason),
            DataTun::Control => self.node.handle_tun(now, packet, out),
        };
        self.report(now);
        r
    }

    pub fn handle_udp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> UdpOutcome {
        self.publish();
        let r = match self.data.handle_udp(now, from, datagram, out) {
            DataUdp::WriteTun { len } => UdpOutcome::WriteTun { len },
            DataUdp::Forward { dst, len } => UdpOutcome::Forward { dst, len },
            DataUdp::Dropped(reason) => UdpOutcome::Dropped(reason),
            DataUdp::Opened {
                peer,
                via,
                len,
                wire_len,
            } => {
                // The activity first: the control half sees the packets in
                // the order they arrived.
                self.report(now);
                self.node.handle_opened(now, peer, via, out, len, wire_len)
            }
            DataUdp::Control => self.node.handle_udp(now, from, datagram, out),
        };
        self.report(now);
        r
    }

    /// The control half's next timer, or the data half's next report if
    /// sooner (a half driven from outside the simulator, as a test does,
    /// still reports on time).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.node.poll_timeout(), self.data.next_report()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.report(now);
        self.node.handle_timeout(now);
        self.publish();
    }
}

impl Deref for Split {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl DerefMut for Split {
    fn deref_mut(&mut self) -> &mut Node {
        &mut self.node
    }
}
