//! A link with latency: the lab's delay tool (this kernel has no netem).
//!
//! Owns: two TAP devices, one in each of two namespaces, and the forwarder
//! that joins them: one thread per direction in this process, copying every
//! Ethernet frame from one device to the other a fixed delay after it left.
//! Must not: address the devices or touch routes; the caller does, as
//! [`super::Internet::delay_uplink`] does when it swaps a veth for one.
//!
//! How a frame flows, `a` → `b` (the other direction is the mirror):
//! 1. The kernel in `a`'s namespace transmits on `a`'s TAP device; the
//!    forwarder reads the frame from that device's file descriptor and
//!    queues it with the time it arrived.
//! 2. The frame waits in a FIFO until `arrival + delay` (one delay for all
//!    frames, so arrival order is departure order); at most
//!    [`QUEUE_FRAMES`] wait, later ones are dropped as a full router queue
//!    would.
//! 3. The forwarder writes it to `b`'s TAP descriptor: `b`'s kernel
//!    receives it on that device.
//!
//! Why threads here and not a helper process: a TAP device lives in the
//! namespace of whoever opened `/dev/net/tun`, so each device is opened
//! from a thread that entered its namespace ([`Host::run_in`]) and the
//! descriptor carries over; the forwarder dies with the process that built
//! the lab, and nothing is left to find and kill. Dropping the
//! [`DelayLink`] stops both threads and closes the descriptors, and a TAP
//! device that is not persistent disappears with its last descriptor.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read as _, Write as _};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Host, LabError, Result};

/// Frames waiting per direction before new ones are dropped.
const QUEUE_FRAMES: usize = 4096;
/// The longest a forwarder sleeps before looking at its stop flag.
const POLL_CAP: Duration = Duration::from_millis(20);
/// Larger than any frame a TAP device without offloads hands out.
const FRAME_MAX: usize = 65_536;

/// Two TAP devices in two namespaces, joined by a forwarder that delays
/// every frame by the same amount each way. Dropping it deletes both.
#[derive(Debug)]
pub struct DelayLink {
    /// `(namespace, device)` of each end.
    ends: [(String, String); 2],
    delay_us: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl DelayLink {
    /// Creates TAP device `a_if` in `a` and `b_if` in `b`, brings both up
    /// (no addresses) and starts forwarding with `delay` each way.
    pub fn new(a: &Host, a_if: &str, b: &Host, b_if: &str, delay: Duration) -> Result<Self> {
        let a_tap = Arc::new(open_tap(a, a_if)?);
        let b_tap = Arc::new(open_tap(b, b_if)?);
        a.ip(&["link", "set", a_if, "up"])?;
        b.ip(&["link", "set", b_if, "up"])?;
        let mut link = Self {
            ends: [
                (a.netns().to_owned(), a_if.to_owned()),
                (b.netns().to_owned(), b_if.to_owned()),
            ],
            delay_us: Arc::new(AtomicU64::new(micros(delay))),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        for (from, to, name) in [
            (&a_tap, &b_tap, format!("delay-{a_if}")),
            (&b_tap, &a_tap, format!("delay-{b_if}")),
        ] {
            let (from, to) = (Arc::clone(from), Arc::clone(to));
            let (delay, stop) = (Arc::clone(&link.delay_us), Arc::clone(&link.stop));
            let thread = std::thread::Builder::new()
                .name(name)
                .spawn(move || forward(&from, &to, &delay, &stop))
                .map_err(|e| LabError::io(format!("starting the forwarder for {a_if}"), e))?;
            link.threads.push(thread);
        }
        Ok(link)
    }

    /// The delay each way.
    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Ordering::Relaxed))
    }

    /// Changes the delay each way; frames already queued leave at their
    /// arrival plus the new delay.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_us.store(micros(delay), Ordering::Relaxed);
    }

    /// `(namespace, device)` of each end.
    pub fn ends(&self) -> &[(String, String); 2] {
        &self.ends
    }
}

impl Drop for DelayLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Opens `/dev/net/tun` from a thread inside `host`'s namespace and makes
/// it the TAP device `name` (non-blocking, no packet-info header).
fn open_tap(host: &Host, name: &str) -> Result<File> {
    let owned = name.to_owned();
    host.run_in(move || tap(&owned))?
        .map_err(|e| LabError::io(format!("creating TAP device {name} in {}", host.netns()), e))
}

fn tap(name: &str) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/net/tun")?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(std::io::Error::new(
            ErrorKind::InvalidInput,
            "interface name longer than 15 bytes",
        ));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // IFF_TAP | IFF_NO_PI = 0x1002 fits a c_short.
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which `req` is, on an
    // open /dev/net/tun descriptor.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

/// One direction: frames read from `from` are written to `to` once they
/// have waited `delay` µs. Returns when `stop` is set or `from` fails (its
/// device was deleted with its namespace).
fn forward(mut from: &File, mut to: &File, delay: &AtomicU64, stop: &AtomicBool) {
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; FRAME_MAX];
    while !stop.load(Ordering::Relaxed) {
        let wait = Duration::from_micros(delay.load(Ordering::Relaxed));
        let now = Instant::now();
        while queue.front().is_some_and(|(at, _)| *at + wait <= now) {
            if let Some((_, frame)) = queue.pop_front() {
                // A frame the device refuses (e.g. it is down) is lost, as
                // on a cable.
                let _ = to.write_all(&frame);
            }
        }
        let sleep = queue
            .front()
            .map_or(POLL_CAP, |(at, _)| {
                (*at + wait).saturating_duration_since(now)
            })
            .min(POLL_CAP);
        if !readable(from, sleep) {
            continue;
        }
        loop {
            match from.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if queue.len() < QUEUE_FRAMES {
                        queue.push_back((Instant::now(), buf[..n].to_vec()));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

/// Waits up to `timeout` (rounded up to a millisecond) for `file` to be
/// readable. An error condition counts as readable: the read reports it.
fn readable(file: &File, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd, count 1.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    rc > 0 && pfd.revents != 0
}
