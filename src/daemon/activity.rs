//! Activity reports from several data-plane workers, put in an order the
//! core can read.
//!
//! Each worker's [`DataPlane`](crate::core::DataPlane) reports a peer's
//! activity on its own (sends on the worker that sealed, receives on the
//! worker that reads the socket), and `Node::handle_activity` reads one
//! report as a timeline: sends before the receive, the receive, sends
//! after it. Two workers' reports for one peer can arrive in either order,
//! so this keeps, per peer, the latest send and receive any report showed
//! and trims each report to what is news against them:
//! - sends older than a receive already handed over were answered by it:
//!   handed over again they would arm the no-reply timer (a needless
//!   handshake 15 s later on a quiet link) and cancel the passive
//!   keepalive that receive owes;
//! - a receive older than a send already handed over must not leave that
//!   send unanswered: the send is handed over again after it.
//!
//! Relay frames count as the same: one opened on the peer's session
//! (`heard`) as a receive, one sealed on it (`framed`) as a send, dropped
//! when older than a receive already handed over (it would cancel the
//! passive keepalive that receive owes).
//!
//! Counters pass unchanged. With one worker, reports come in time order
//! and nothing here changes them.

use std::time::Instant;

use crate::core::Activity;
use crate::core::data::Sent;

#[derive(Default)]
pub struct Order {
    peers: Vec<Marks>,
}

/// The latest send and receive of a peer that any report showed.
#[derive(Default, Clone, Copy)]
struct Marks {
    tx: Option<Instant>,
    rx: Option<Instant>,
}

impl Order {
    /// `a` as the core should see it, and a send to hand over after it.
    pub fn fix(&mut self, mut a: Activity) -> (Activity, Option<Activity>) {
        if self.peers.len() <= a.peer.0 {
            self.peers.resize_with(a.peer.0 + 1, Marks::default);
        }
        let m = self.peers[a.peer.0];
        // A relay frame opened on the peer's session is a receive too (it
        // proves the path), and one sealed on it a send.
        let rx = a.received.map(|(t, _)| t).max(a.heard.map(|(t, _)| t));
        if let (Some(f), None, Some(seen)) = (a.framed, rx, m.rx)
            && f <= seen
        {
            a.framed = None;
        }
        if let (Some(s), None, Some(seen)) = (a.sent, rx, m.rx) {
            a.sent = if s.last <= seen {
                None
            } else if s.first <= seen {
                let after = s.first_after_rx.filter(|t| *t > seen);
                Some(Sent {
                    // The first send after `seen` is at most this late.
                    first: after.unwrap_or(s.last),
                    first_after_rx: after,
                    last: s.last,
                })
            } else {
                Some(s)
            };
        }
        let again = match (rx, m.tx) {
            (Some(r), Some(t)) if t > r && a.sent.is_none_or(|s| s.last < t) => Some(Activity {
                peer: a.peer,
                sent: Some(Sent {
                    first: t,
                    first_after_rx: None,
                    last: t,
                }),
                ..Activity::default()
            }),
            _ => None,
        };
        let p = &mut self.peers[a.peer.0];
        p.rx = p.rx.max(rx);
        p.tx = p.tx.max(a.sent.map(|s| s.last));
        (a, again)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::core::{PeerId, Via};

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    fn sent(peer: usize, first: Instant, last: Instant) -> Activity {
        Activity {
            peer: PeerId(peer),
            sent: Some(Sent {
                first,
                first_after_rx: None,
                last,
            }),
            tx_bytes: 100,
            ..Activity::default()
        }
    }

    fn received(peer: usize, t: Instant) -> Activity {
        let from: SocketAddr = "192.0.2.1:5".parse().unwrap();
        Activity {
            peer: PeerId(peer),
            received: Some((t, Via::Direct(from))),
            rx_bytes: 200,
            ..Activity::default()
        }
    }

    #[test]
    fn one_workers_reports_in_order_pass_unchanged() {
        let t = Instant::now();
        let mut o = Order::default();
        for a in [
            sent(0, at(t, 0), at(t, 5)),
            received(0, at(t, 6)),
            sent(0, at(t, 30), at(t, 40)),
            received(0, at(t, 41)),
        ] {
            assert_eq!(o.fix(a), (a, None));
        }
    }

    #[test]
    fn sends_answered_by_a_receive_already_reported_are_dropped() {
        let t = Instant::now();
        let mut o = Order::default();
        o.fix(received(0, at(t, 10)));
        // Another worker's report, late: all before the receive.
        let (a, again) = o.fix(sent(0, at(t, 2), at(t, 8)));
        assert_eq!((a.sent, a.tx_bytes, again), (None, 100, None));
        // Straddling it: only what came after counts, from its last send.
        let (a, _) = o.fix(sent(0, at(t, 4), at(t, 12)));
        assert_eq!(
            a.sent,
            Some(Sent {
                first: at(t, 12),
                first_after_rx: None,
                last: at(t, 12)
            })
        );
        // Other peers are not concerned.
        let s = sent(1, at(t, 2), at(t, 8));
        assert_eq!(o.fix(s), (s, None));
    }

    #[test]
    fn a_late_receive_is_followed_by_the_newer_send() {
        let t = Instant::now();
        let mut o = Order::default();
        o.fix(sent(0, at(t, 0), at(t, 20)));
        let r = received(0, at(t, 10));
        let (a, again) = o.fix(r);
        assert_eq!(a, r);
        let again = again.expect("the send at 20 ms is still unanswered");
        assert_eq!(
            again.sent,
            Some(Sent {
                first: at(t, 20),
                first_after_rx: None,
                last: at(t, 20)
            })
        );
        assert_eq!((again.tx_bytes, again.rx_bytes), (0, 0));
        // A receive after every send: nothing to hand over again.
        assert_eq!(o.fix(received(0, at(t, 25))).1, None);
    }

    #[test]
    fn relay_frames_are_sends_and_receives_too() {
        let t = Instant::now();
        let mut o = Order::default();
        let from: SocketAddr = "192.0.2.3:5".parse().unwrap();
        // A frame opened on the peer's session at 10 ms...
        let heard = Activity {
            peer: PeerId(0),
            heard: Some((at(t, 10), from)),
            ..Activity::default()
        };
        assert_eq!(o.fix(heard), (heard, None));
        // ...makes a frame sealed at 5 ms, reported late, old news.
        let framed = Activity {
            peer: PeerId(0),
            framed: Some(at(t, 5)),
            tx_bytes: 80,
            ..Activity::default()
        };
        let (a, again) = o.fix(framed);
        assert_eq!((a.framed, a.tx_bytes, again), (None, 80, None));
        // A data send at 20 ms, then a late frame heard at 15 ms: the
        // send is handed over again after it.
        o.fix(sent(0, at(t, 20), at(t, 20)));
        let late = Activity {
            heard: Some((at(t, 15), from)),
            ..heard
        };
        let (_, again) = o.fix(late);
        assert_eq!(again.and_then(|a| a.sent).map(|s| s.last), Some(at(t, 20)));
    }
}
