//! `kith ping`, the daemon's side: each request is a job that sends one
//! probe per [`INTERVAL`] through the core ([`Node::ping`]), matches the
//! pongs the core reports ([`Node::poll_ping_reply`]) to its probes, gives
//! up on a probe after [`TIMEOUT`], and streams one [`PingLine`] per probe
//! to the client. The job ends (closing the stream) once every probe is
//! answered or timed out, or when the client goes away.
//!
//! Time is an argument and the core sits behind [`Prober`], so the
//! schedule is tested without sockets or clocks.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::control::PingLine;
use crate::core::{Node, PeerId, PingError, PingReply};

/// Between two probes of one request.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// A probe without a pong this long is reported as a timeout.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// Most probes one request may ask for.
pub const MAX_COUNT: u32 = 100;

/// The longest `count` probes take: the last leaves after `count - 1`
/// intervals and may wait [`TIMEOUT`] for its pong.
pub fn duration(count: u32) -> Duration {
    INTERVAL * count.saturating_sub(1) + TIMEOUT
}

/// What sends a probe: the core, or a test's fake.
pub trait Prober {
    fn ping(&mut self, now: Instant, peer: PeerId) -> Result<u64, PingError>;
}

impl Prober for Node {
    fn ping(&mut self, now: Instant, peer: PeerId) -> Result<u64, PingError> {
        Node::ping(self, now, peer)
    }
}

struct Waiting {
    seq: u32,
    probe: u64,
    deadline: Instant,
}

struct Job {
    peer: PeerId,
    name: String,
    count: u32,
    sent: u32,
    next: Instant,
    waiting: Vec<Waiting>,
    tx: mpsc::Sender<PingLine>,
}

impl Job {
    fn done(&self) -> bool {
        (self.sent >= self.count && self.waiting.is_empty()) || self.tx.is_closed()
    }

    /// The channel has room for every line (see `control`); a full or
    /// closed one means the client is gone, and the job ends with it.
    fn say(&self, line: PingLine) {
        let _ = self.tx.try_send(line);
    }
}

/// The running `kith ping` requests.
#[derive(Default)]
pub struct Pings {
    jobs: Vec<Job>,
}

impl Pings {
    /// `count` probes to `peer` (called `name` in the lines), the first at
    /// the next [`handle_timeout`](Self::handle_timeout).
    pub fn start(
        &mut self,
        now: Instant,
        peer: PeerId,
        name: String,
        count: u32,
        tx: mpsc::Sender<PingLine>,
    ) {
        self.jobs.push(Job {
            peer,
            name,
            count: count.min(MAX_COUNT),
            sent: 0,
            next: now,
            waiting: Vec::new(),
            tx,
        });
    }

    /// When a probe is due or one times out.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.jobs
            .iter()
            .flat_map(|j| {
                let next = (j.sent < j.count).then_some(j.next);
                next.into_iter().chain(j.waiting.iter().map(|w| w.deadline))
            })
            .min()
    }

    /// Send the probes that are due, report the ones that timed out.
    pub fn handle_timeout(&mut self, now: Instant, prober: &mut impl Prober) {
        self.jobs.retain(|j| !j.tx.is_closed());
        for job in &mut self.jobs {
            while job.sent < job.count && job.next <= now {
                job.sent += 1;
                job.next += INTERVAL;
                let seq = job.sent;
                match prober.ping(now, job.peer) {
                    Ok(probe) => job.waiting.push(Waiting {
                        seq,
                        probe,
                        deadline: now + TIMEOUT,
                    }),
                    Err(e) => job.say(PingLine::NotSent {
                        seq,
                        peer: job.name.clone(),
                        reason: e.to_string(),
                    }),
                }
            }
            let (late, waiting): (Vec<_>, Vec<_>) =
                job.waiting.drain(..).partition(|w| w.deadline <= now);
            job.waiting = waiting;
            for w in late {
                job.say(PingLine::Timeout {
                    seq: w.seq,
                    peer: job.name.clone(),
                    timeout_ms: TIMEOUT.as_millis() as u64,
                });
            }
        }
        self.jobs.retain(|j| !j.done());
    }

    /// A pong from the core: `line(seq, name)` is the line for the probe
    /// it answers (the shell knows how to name the path); nothing if no
    /// job waits for it (timed out already, or its client left).
    pub fn on_reply(&mut self, reply: &PingReply, line: impl FnOnce(u32, &str) -> PingLine) {
        for job in self.jobs.iter_mut().filter(|j| j.peer == reply.peer) {
            if let Some(at) = job.waiting.iter().position(|w| w.probe == reply.probe) {
                let w = job.waiting.remove(at);
                job.say(line(w.seq, &job.name));
                break;
            }
        }
        self.jobs.retain(|j| !j.done());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Via;

    /// Hands out probe ids 1, 2, 3, … or the errors it is told to.
    #[derive(Default)]
    struct Fake {
        sent: Vec<(Instant, PeerId)>,
        fail: Vec<PingError>,
    }

    impl Prober for Fake {
        fn ping(&mut self, now: Instant, peer: PeerId) -> Result<u64, PingError> {
            if let Some(e) = self.fail.pop() {
                return Err(e);
            }
            self.sent.push((now, peer));
            Ok(self.sent.len() as u64)
        }
    }

    fn reply(probe: u64) -> PingReply {
        PingReply {
            peer: PeerId(0),
            probe,
            via: Via::Direct("198.18.0.2:51871".parse().unwrap()),
            rtt: Duration::from_millis(3),
        }
    }

    fn pong(seq: u32, peer: &str) -> PingLine {
        PingLine::Pong {
            seq,
            peer: peer.to_string(),
            path: "direct".into(),
            endpoint: None,
            relay: None,
            transport: None,
            rtt_us: 3000,
        }
    }

    fn drain(rx: &mut mpsc::Receiver<PingLine>) -> Vec<PingLine> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[test]
    fn one_probe_per_interval_then_pongs_and_timeouts_then_the_end() {
        let t0 = Instant::now();
        let (tx, mut rx) = mpsc::channel(4);
        let mut pings = Pings::default();
        let mut fake = Fake::default();
        pings.start(t0, PeerId(0), "nas".into(), 3, tx);
        assert_eq!(pings.poll_timeout(), Some(t0));
        pings.handle_timeout(t0, &mut fake);
        assert_eq!(fake.sent, [(t0, PeerId(0))]);
        assert_eq!(pings.poll_timeout(), Some(t0 + INTERVAL));
        pings.on_reply(&reply(1), pong);
        assert_eq!(drain(&mut rx), [pong(1, "nas")]);
        // An answer nobody waits for (another id) says nothing.
        pings.on_reply(&reply(9), pong);
        assert!(drain(&mut rx).is_empty());

        pings.handle_timeout(t0 + INTERVAL, &mut fake);
        pings.handle_timeout(t0 + 2 * INTERVAL, &mut fake);
        assert_eq!(fake.sent.len(), 3, "three probes, no more");
        pings.on_reply(&reply(3), pong);
        assert_eq!(drain(&mut rx), [pong(3, "nas")]);
        // Probe 2 left at t0 + 1 s.
        assert_eq!(pings.poll_timeout(), Some(t0 + INTERVAL + TIMEOUT));
        pings.handle_timeout(t0 + INTERVAL + TIMEOUT, &mut fake);
        assert_eq!(
            drain(&mut rx),
            [PingLine::Timeout {
                seq: 2,
                peer: "nas".into(),
                timeout_ms: 2000
            }]
        );
        assert_eq!(pings.poll_timeout(), None, "done");
        assert!(
            matches!(rx.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)),
            "the stream is closed"
        );
        // A late pong for the finished job is ignored.
        pings.on_reply(&reply(2), pong);
        assert_eq!(fake.sent.len(), 3);
    }

    #[test]
    fn a_probe_the_core_could_not_send_is_reported_with_its_reason() {
        let t0 = Instant::now();
        let (tx, mut rx) = mpsc::channel(4);
        let mut pings = Pings::default();
        let mut fake = Fake {
            fail: vec![PingError::NoSession],
            ..Fake::default()
        };
        pings.start(t0, PeerId(0), "nas".into(), 2, tx);
        pings.handle_timeout(t0, &mut fake);
        assert_eq!(
            drain(&mut rx),
            [PingLine::NotSent {
                seq: 1,
                peer: "nas".into(),
                reason: PingError::NoSession.to_string()
            }]
        );
        pings.handle_timeout(t0 + INTERVAL, &mut fake);
        pings.on_reply(&reply(1), pong);
        assert_eq!(
            drain(&mut rx),
            [pong(2, "nas")],
            "the second one got through"
        );
        assert_eq!(pings.poll_timeout(), None);
    }

    #[test]
    fn a_client_that_left_ends_its_job() {
        let t0 = Instant::now();
        let (tx, rx) = mpsc::channel(4);
        let mut pings = Pings::default();
        let mut fake = Fake::default();
        pings.start(t0, PeerId(0), "nas".into(), 10, tx);
        pings.handle_timeout(t0, &mut fake);
        drop(rx);
        pings.handle_timeout(t0 + INTERVAL, &mut fake);
        assert_eq!(pings.poll_timeout(), None);
        assert_eq!(fake.sent.len(), 1, "nothing after it left");
        assert_eq!(duration(4), Duration::from_secs(5));
    }
}
