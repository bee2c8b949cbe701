//! When to reach a relay over TCP instead of UDP (sans-IO, explicit time).
//!
//! One [`TcpFallback`] per relay we may use over TCP (a `[[peer]]` with a
//! `tcp_port`). The core keeps addressing the relay by its UDP endpoint;
//! the shell asks [`TcpFallback::on_send`] for each datagram to it which
//! transport to use, and tells [`TcpFallback::on_udp_received`] whenever a
//! datagram from that endpoint arrives over UDP.
//!
//! - UDP is tried first. A handshake initiation that gets no UDP datagram
//!   back for [`UDP_SILENCE`] means UDP is blocked here: switch to TCP.
//!   Only initiations count, because they are always answered: data may
//!   flow one way for seconds with nothing coming back.
//! - Over TCP, one datagram in every [`UDP_RETRY`] is also sent over UDP
//!   (a duplicate is harmless: the replay window drops it); the first UDP
//!   datagram back switches to UDP again.
//! - A TCP connection that fails, or closes, is retried after a backoff
//!   from [`BACKOFF_MIN`] doubling to [`BACKOFF_MAX`], reset by a
//!   connection that carried a datagram back.

use std::time::{Duration, Instant};

/// Unanswered UDP for this long moves the relay to TCP.
pub const UDP_SILENCE: Duration = Duration::from_secs(2);
/// While on TCP, a copy goes over UDP at most this often.
pub const UDP_RETRY: Duration = Duration::from_secs(5);
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What the shell should do with one datagram for the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Send {
    Udp,
    /// Over the TCP connection (dropped if there is none yet).
    Tcp,
    /// Over both: TCP carries it, UDP checks whether UDP works again.
    Both,
}

/// Which transport carries the relay's traffic now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

#[derive(Debug, Clone)]
pub struct TcpFallback {
    transport: Transport,
    /// First initiation sent over UDP since the last UDP datagram back.
    unanswered_since: Option<Instant>,
    last_udp_copy: Option<Instant>,
    connection: Connection,
    backoff: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connection {
    None,
    /// Retry no earlier than this.
    Waiting(Instant),
    Connecting,
    Up,
}

impl Default for TcpFallback {
    fn default() -> Self {
        Self {
            transport: Transport::Udp,
            unanswered_since: None,
            last_udp_copy: None,
            connection: Connection::None,
            backoff: BACKOFF_MIN,
        }
    }
}

impl TcpFallback {
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// A datagram for the relay is about to go out; `initiation` when it
    /// is a handshake initiation (which the relay always answers).
    pub fn on_send(&mut self, now: Instant, initiation: bool) -> Send {
        match self.transport {
            Transport::Udp => {
                let Some(since) = self.unanswered_since else {
                    if initiation {
                        self.unanswered_since = Some(now);
                    }
                    return Send::Udp;
                };
                if now.saturating_duration_since(since) < UDP_SILENCE {
                    return Send::Udp;
                }
                self.transport = Transport::Tcp;
                self.last_udp_copy = Some(now);
                Send::Tcp
            }
            Transport::Tcp => {
                let due = self
                    .last_udp_copy
                    .is_none_or(|t| now.saturating_duration_since(t) >= UDP_RETRY);
                if due {
                    self.last_udp_copy = Some(now);
                    Send::Both
                } else {
                    Send::Tcp
                }
            }
        }
    }

    /// A datagram from the relay's endpoint arrived over UDP: UDP works.
    pub fn on_udp_received(&mut self) {
        self.unanswered_since = None;
        self.transport = Transport::Udp;
    }

    /// Should the shell open a connection now? True at most once until
    /// [`Self::on_connected`] or [`Self::on_closed`].
    pub fn should_connect(&mut self, now: Instant) -> bool {
        if self.transport != Transport::Tcp {
            return false;
        }
        let go = match self.connection {
            Connection::None => true,
            Connection::Waiting(at) => now >= at,
            Connection::Connecting | Connection::Up => false,
        };
        if go {
            self.connection = Connection::Connecting;
        }
        go
    }

    pub fn on_connected(&mut self) {
        self.connection = Connection::Up;
    }

    /// A datagram came back over TCP: the connection works.
    pub fn on_tcp_received(&mut self) {
        self.backoff = BACKOFF_MIN;
    }

    /// The connection failed or closed: retry after the backoff.
    pub fn on_closed(&mut self, now: Instant) {
        self.connection = Connection::Waiting(now + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// The shell closed the connection on purpose (UDP works again): no
    /// backoff, the next switch to TCP connects at once.
    pub fn reset_connection(&mut self) {
        self.connection = Connection::None;
    }

    pub fn connected(&self) -> bool {
        self.connection == Connection::Up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn udp_until_it_stays_silent_then_tcp() {
        let t0 = Instant::now();
        let mut f = TcpFallback::default();
        // Data alone never looks like a blocked UDP: it need not be answered.
        for t in 0..50 {
            assert_eq!(f.on_send(t0 + ms(100 * t), false), Send::Udp);
        }
        let t0 = t0 + ms(5000);
        assert_eq!(f.on_send(t0, true), Send::Udp);
        assert!(!f.should_connect(t0), "no TCP while UDP may work");
        assert_eq!(f.on_send(t0 + ms(1999), false), Send::Udp);
        // An answer in time restarts the clock.
        f.on_udp_received();
        assert_eq!(f.on_send(t0 + ms(2500), true), Send::Udp);
        assert_eq!(f.on_send(t0 + ms(4400), false), Send::Udp);
        assert_eq!(f.on_send(t0 + ms(4500), false), Send::Tcp);
        assert_eq!(f.transport(), Transport::Tcp);
        assert!(f.should_connect(t0 + ms(4500)));
        assert!(
            !f.should_connect(t0 + ms(4501)),
            "one connection attempt at a time"
        );
    }

    #[test]
    fn over_tcp_udp_is_retried_and_wins_back() {
        let t0 = Instant::now();
        let mut f = TcpFallback::default();
        f.on_send(t0, true);
        assert_eq!(f.on_send(t0 + ms(2000), true), Send::Tcp);
        assert_eq!(f.on_send(t0 + ms(6999), false), Send::Tcp);
        assert_eq!(
            f.on_send(t0 + ms(7000), false),
            Send::Both,
            "a UDP copy every 5 s"
        );
        assert_eq!(f.on_send(t0 + ms(7001), false), Send::Tcp);
        f.on_udp_received();
        assert_eq!(f.transport(), Transport::Udp);
        assert_eq!(f.on_send(t0 + ms(7100), true), Send::Udp);
    }

    #[test]
    fn failed_connections_back_off() {
        let t0 = Instant::now();
        let mut f = TcpFallback::default();
        f.on_send(t0, true);
        f.on_send(t0 + ms(2000), true);
        let mut at = t0 + ms(2000);
        assert!(f.should_connect(at));
        let mut waits = Vec::new();
        for _ in 0..6 {
            f.on_closed(at);
            let mut t = at;
            while !f.should_connect(t) {
                t += ms(100);
            }
            waits.push(t.duration_since(at).as_secs());
            at = t;
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 30]);
        // A connection that works resets the backoff.
        f.on_connected();
        f.on_tcp_received();
        assert!(f.connected());
        f.on_closed(at);
        assert!(!f.should_connect(at + ms(900)));
        assert!(f.should_connect(at + ms(1000)));
    }
}
