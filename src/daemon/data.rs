//! The data plane's thread: a minimal loop over the TUN device, the data
//! socket and an eventfd, running the core's [`DataPlane`].
//!
//! It owns the per-packet work and nothing else: it reads the TUN
//! (offloaded, up to 64 KiB a read), splits each read segment by segment
//! straight into one GSO buffer (`wire::tso`), seals each where it lies and
//! sends each run to a peer (or its relay) with one syscall; it reads (GRO-coalesced)
//! datagrams, opens them and writes the packets to the TUN in one batch;
//! frames it relays for other members join the same send runs. Whatever the
//! data half hands over goes to the control plane (tokio, `daemon::Shell`)
//! through two bounded queues: one for what is authenticated or local
//! (activity reports, opened control messages, TUN packets for peers with
//! no settled path), one for everything a stranger can send
//! (handshakes, cookies, STUN, unknown indices). A full queue drops and
//! counts, so a handshake flood costs this thread a parse and a `try_send`
//! per datagram and never stalls data.
//!
//! The control plane talks back through a channel and the eventfd: new
//! views (keys, addresses, routes) and packets to write to the TUN. It sends
//! its own datagrams on the shared socket itself.
//!
//! Workers: `[interface] queues = N` runs N copies of the loop, one per
//! queue of a multi-queue TUN device, each on its own thread with its own
//! [`DataPlane`] (so nothing of the per-packet state is shared but the
//! sessions, whose counters and replay windows are safe across threads). The
//! kernel puts each flow's outgoing packets on one TUN queue, so one flow is
//! sealed by one worker, in order. Only worker 0 reads the data socket (and
//! the hard-NAT routes' sockets, `Down::Sockets`, which every worker sends
//! on for their addresses): the receive side stays one reader (per-worker
//! sockets with SO_REUSEPORT would let a second daemon on the same port join
//! the group silently instead of failing with "address in use", and a peer's
//! traffic is one UDP flow, which the kernel would hand to one socket
//! anyway); the others seal and send on the shared socket, which is safe
//! from several threads. Worker 0 writes each opened packet to the queue of
//! its flow ([`flow_queue`]), because the kernel steers a flow's outgoing
//! packets to the queue its incoming ones were last written to: written all
//! through queue 0, every TCP flow would be sealed by worker 0. Every view
//! the control plane publishes goes to every worker; packets for the TUN go
//! to worker 0. With one queue it is the same code, N = 1.
//!
//! Latency: after I/O the loop keeps polling without sleeping for the
//! `[interface] busy_poll` window, so the answer to a packet just sent is
//! caught without a wakeup; the window adapts ([`BusyPoll`]: halved after
//! a spin that caught nothing, down to no spin at all; the full window
//! again once a sleep shows the next packet came within it). Nothing is
//! batched across a wait: a lone packet goes out at once.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::socket::{self, Received, Udp};
use crate::core::{Activity, DataPlane, DataTun, DataUdp, DataUpdate, OVERHEAD, PeerId, Via};
use crate::wire::DATA_HEADER_LEN;
use crate::wire::gro::Gro;
use crate::wire::tso::Tso;

pub(super) const TUN_HDR: usize = crate::wire::gro::VNET_HDR_LEN;
const _: () = assert!(TUN_HDR == tun_rs::VIRTIO_NET_HDR_LEN);
/// Segments one offloaded TUN read may split into: 64 KiB at the smallest
/// MSS Linux sends with (`net.ipv4.tcp_min_snd_mss`, 48 by default) is
/// 1366. They go straight into the GSO runs, so the number costs no memory.
const TUN_BATCH: usize = 2048;
// A packet may wait in the open GSO run while every other worker seals a
// block of counters, after the one each sealed before it: two blocks per
// other worker must fit the replay window.
const _: () = assert!(
    (crate::config::MAX_QUEUES as u64 - 1) * 2 * crate::core::COUNTER_BLOCK
        < crate::core::REPLAY_WINDOW
);
/// Reads of one descriptor before the other gets a turn.
const DRAIN: usize = 32;
/// Authenticated or local messages waiting for the control plane.
const CONTROL_QUEUE: usize = 1024;
/// Unauthenticated datagrams waiting for the control plane: a handshake
/// costs it ~200 µs of Diffie-Hellman, so this is ~50 ms of work; more
/// would only add latency to the handshakes that matter.
const STRANGER_QUEUE: usize = 256;
/// The longest the loop sleeps: it stamps the heartbeat the watchdog reads.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// How long a destination that refused a GSO send gets single datagrams.
const NO_GSO_FOR: Duration = Duration::from_secs(10);

/// From the data plane to the control plane.
#[derive(Debug)]
pub enum Up {
    /// A TUN packet for a peer the data half does not send to.
    Tun(Vec<u8>),
    /// A datagram the data half does not open.
    Datagram {
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    /// A data message opened on `peer`'s session that is not an IP packet:
    /// the datagram came from `from`, the message `via` (direct from
    /// there, or delivered by a relay).
    Opened {
        peer: PeerId,
        from: SocketAddr,
        via: Via,
        plain: Vec<u8>,
        wire_len: usize,
    },
    Activity(Activity),
}

/// From the control plane to the data plane.
#[derive(Debug, Clone)]
pub enum Down {
    Update(DataUpdate),
    /// An IP packet for the TUN device.
    Tun(Vec<u8>),
    /// Hard-NAT routes (`daemon::punch`), all of them: data to and from
    /// each address goes through its socket, not the data socket.
    Sockets(Vec<(SocketAddr, Arc<Udp>)>),
}

/// Counters the data plane keeps and `status`/metrics read.
#[derive(Debug, Default)]
pub struct Stats {
    /// TUN packets dropped: not IP, no route, a session error.
    pub tun_dropped: AtomicU64,
    /// Datagrams dropped: replays, failed authentication, expired
    /// sessions, a source outside the peer's allowed_ips.
    pub udp_dropped: AtomicU64,
    /// Datagrams the kernel truncated (larger than the receive buffer).
    pub truncated: AtomicU64,
    /// TUN reads that failed or could not be split (a malformed offload
    /// header, more segments than a batch), segments that did not fit.
    pub tun_read_errors: AtomicU64,
    /// Writes the TUN device refused (a merged run counts once).
    pub tun_write_errors: AtomicU64,
    /// Datagrams the socket refused.
    pub send_errors: AtomicU64,
    /// Handed to the control plane and dropped: its queue was full.
    pub control_queue_full: AtomicU64,
    /// Strangers' datagrams dropped: the control plane's handshake queue
    /// was full (a flood).
    pub stranger_queue_full: AtomicU64,
    /// GSO sends a destination refused (then sent one by one).
    pub gso_refused: AtomicU64,
    /// TUN packets too big for a relayed path, answered with an ICMP
    /// "too big" error so the sender sends smaller ones.
    pub too_big: AtomicU64,
}

impl Stats {
    pub(super) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// `(name, value)` of every drop counter, for status and metrics.
    pub fn drops(&self) -> [(&'static str, u64); 10] {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("tun_dropped", g(&self.tun_dropped)),
            ("udp_dropped", g(&self.udp_dropped)),
            ("truncated", g(&self.truncated)),
            ("tun_read_errors", g(&self.tun_read_errors)),
            ("tun_write_errors", g(&self.tun_write_errors)),
            ("send_errors", g(&self.send_errors)),
            ("control_queue_full", g(&self.control_queue_full)),
            ("stranger_queue_full", g(&self.stranger_queue_full)),
            ("gso_refused", g(&self.gso_refused)),
            ("too_big", g(&self.too_big)),
        ]
    }
}

/// The control plane's end: commands down (to every worker), two queues
/// up (shared by all workers).
pub struct Handle {
    workers: Vec<Worker>,
    pub up: tokio::sync::mpsc::Receiver<Up>,
    pub strangers: tokio::sync::mpsc::Receiver<Up>,
    pub stats: Arc<Stats>,
    started: Instant,
}

/// The control plane's end of one worker thread.
struct Worker {
    down: mpsc::Sender<Down>,
    wake: Arc<OwnedFd>,
    /// Set by the worker just before it sleeps: only then does a command
    /// need the eventfd (a busy thread finds it at its next turn).
    sleeping: Arc<AtomicBool>,
    gauges: Arc<WorkerGauges>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What one worker publishes about itself.
#[derive(Default)]
struct WorkerGauges {
    /// Milliseconds since start at the loop's last turn (the watchdog).
    heartbeat_ms: AtomicU64,
    /// Datagrams sealed: how the kernel spread the flows over the queues.
    sealed: AtomicU64,
}

impl Worker {
    fn send(&self, d: Down) {
        if self.down.send(d).is_ok() && self.sleeping.swap(false, Ordering::SeqCst) {
            wake(&self.wake);
        }
    }
}

impl Handle {
    /// A view or route sockets go to every worker (each seals and opens on
    /// its own copy); a packet for the TUN to one (any queue writes to the
    /// same device).
    pub fn send(&self, d: Down) {
        match d {
            tun @ Down::Tun(_) => {
                if let Some(w) = self.workers.first() {
                    w.send(tun);
                }
            }
            every => {
                if let Some((last, rest)) = self.workers.split_last() {
                    for w in rest {
                        w.send(every.clone());
                    }
                    last.send(every);
                }
            }
        }
    }

    /// Datagrams each worker (TUN queue) sealed, in worker order.
    pub fn sealed(&self) -> Vec<u64> {
        self.workers
            .iter()
            .map(|w| w.gauges.sealed.load(Ordering::Relaxed))
            .collect()
    }

    /// Whether every worker turned within `within` (the watchdog feeds
    /// systemd only while both planes run: one stuck worker strands the
    /// flows the kernel hashes to its queue).
    pub fn alive(&self, within: Duration) -> bool {
        let elapsed = self.started.elapsed();
        self.workers.iter().all(|w| {
            let beat = Duration::from_millis(w.gauges.heartbeat_ms.load(Ordering::Relaxed));
            elapsed.saturating_sub(beat) <= within
        })
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Closing the channels ends the loops at their next turn.
        for w in &mut self.workers {
            let (dead, _) = mpsc::channel();
            w.down = dead;
            w.sleeping.store(false, Ordering::SeqCst);
            wake(&w.wake);
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// To the control plane's queue, or counted as dropped when it is full.
fn send_up(up: &tokio::sync::mpsc::Sender<Up>, stats: &Stats, m: Up) {
    if up.try_send(m).is_err() {
        Stats::add(&stats.control_queue_full, 1);
    }
}

fn wake(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writing 8 bytes from a valid u64 to an eventfd.
    unsafe {
        libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8);
    }
}

pub struct Options {
    pub busy_poll: Duration,
    pub mtu: usize,
}

/// Start the data plane: one worker thread per TUN queue in `queues`
/// (at least one); worker 0 also reads the data socket.
pub fn spawn(
    queues: Vec<tun_rs::SyncDevice>,
    udp: Arc<Udp>,
    options: Options,
) -> std::io::Result<Handle> {
    let (up_tx, up_rx) = tokio::sync::mpsc::channel(CONTROL_QUEUE);
    let (str_tx, str_rx) = tokio::sync::mpsc::channel(STRANGER_QUEUE);
    let n = queues.len();
    let queues: Arc<[tun_rs::SyncDevice]> = queues.into();
    let mut handle = Handle {
        workers: Vec::with_capacity(n),
        up: up_rx,
        strangers: str_rx,
        stats: Arc::new(Stats::default()),
        started: Instant::now(),
    };
    // On an error the workers started so far stop with `handle`'s drop.
    for (i, tun) in queues.iter().enumerate() {
        // SAFETY: eventfd returns a new descriptor or -1.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: efd is a fresh descriptor we own.
        let wake_fd = Arc::new(unsafe { OwnedFd::from_raw_fd(efd) });
        let (down_tx, down_rx) = mpsc::channel();
        let sleeping = Arc::new(AtomicBool::new(false));
        let gauges = Arc::new(WorkerGauges::default());
        tun.set_nonblocking(true)?;
        let mut dp = DataPlane::default();
        dp.set_mtu(options.mtu);
        let mut fds = vec![tun.as_raw_fd(), wake_fd.as_raw_fd()];
        if reads_udp(i) {
            fds.push(udp.as_raw_fd());
        }
        let mut l = Loop {
            dp,
            queues: queues.clone(),
            queue: i,
            udp: udp.clone(),
            routes: Vec::new(),
            ep: Epoll::new(&fds)?,
            down: down_rx,
            wake: wake_fd.clone(),
            sleeping: sleeping.clone(),
            gauges: gauges.clone(),
            up: up_tx.clone(),
            strangers: str_tx.clone(),
            stats: handle.stats.clone(),
            started: handle.started,
            b: Buffers::new(n),
            max_wire: options.mtu + crate::wire::DATA_HEADER_LEN + crate::wire::TAG_LEN,
            busy: BusyPoll::new(options.busy_poll),
            no_gso: Vec::new(),
            run: GsoRun::default(),
            recv_errors: RecvErrors::default(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("kith-data-{i}"))
            .spawn(move || match l.run() {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    debug!(worker = i, "data plane stopped: the control plane is gone");
                }
                Err(e) => warn!(worker = i, error = %e, "data plane stopped"),
                Ok(()) => {}
            })?;
        handle.workers.push(Worker {
            down: down_tx,
            wake: wake_fd,
            sleeping,
            gauges,
            thread: Some(thread),
        });
    }
    Ok(handle)
}

/// Every buffer of the data path, allocated once at start: the per-packet
/// path allocates nothing (what goes to the control plane is copied out).
struct Buffers {
    /// Raw offloaded TUN read (virtio header + up to 64 KiB), split
    /// segment by segment straight into `gso`.
    tun_raw: Vec<u8>,
    /// Encrypted datagrams waiting for one GSO send.
    gso: Vec<u8>,
    /// A received (possibly coalesced) UDP read.
    udp_in: Vec<u8>,
    /// Decrypted packets waiting for one TUN write (coalesced by GRO).
    tun_out: Vec<Vec<u8>>,
    /// The packets of `tun_out` for one queue (with several queues): their
    /// buffers are swapped in, so these are as many and as large.
    tun_queue: Vec<Vec<u8>>,
    gro: Gro,
}

impl Buffers {
    fn new(queues: usize) -> Self {
        let big = crate::wire::MAX_DATAGRAM + OVERHEAD;
        Self {
            tun_raw: vec![0; TUN_HDR + crate::wire::MAX_DATAGRAM],
            gso: vec![0; socket::MAX_GSO_BYTES + big],
            udp_in: vec![0; crate::wire::MAX_DATAGRAM],
            // GRO merges a flow into its first buffer only within that
            // buffer's capacity: with less than 64 KiB, runs stay short and
            // throughput halves. Untouched capacity costs no RSS.
            tun_out: (0..socket::MAX_GSO_SEGMENTS)
                .map(|_| Vec::with_capacity(TUN_HDR + big))
                .collect(),
            tun_queue: (0..if queues > 1 {
                socket::MAX_GSO_SEGMENTS
            } else {
                0
            })
                .map(|_| Vec::with_capacity(TUN_HDR + big))
                .collect(),
            gro: Gro::with_capacity(socket::MAX_GSO_SEGMENTS),
        }
    }
}

/// A run of encrypted datagrams in `Buffers::gso` for one destination, all
/// `segment` bytes long except possibly the last: the shape UDP GSO sends.
#[derive(Default)]
struct GsoRun {
    dst: Option<SocketAddr>,
    segment: usize,
    used: usize,
    count: usize,
    /// The last datagram was shorter than `segment`: the run is closed.
    short: bool,
}

impl GsoRun {
    /// Can a datagram of `len` bytes for `dst` extend this run?
    fn fits(&self, dst: SocketAddr, len: usize) -> bool {
        self.dst == Some(dst)
            && !self.short
            && len <= self.segment
            && self.count < socket::MAX_GSO_SEGMENTS
            && self.used + len <= socket::MAX_GSO_BYTES
    }
}

struct Loop {
    dp: DataPlane,
    /// Every queue of the TUN device (one descriptor each), and the one
    /// this worker reads; worker 0 also reads the data socket and writes
    /// to all of them.
    queues: Arc<[tun_rs::SyncDevice]>,
    queue: usize,
    udp: Arc<Udp>,
    /// Hard-NAT routes: data to and from these addresses uses their own
    /// socket (a handful at most; usually none).
    routes: Vec<(SocketAddr, Arc<Udp>)>,
    /// What the loop sleeps on: its TUN queue, the eventfd and, on worker
    /// 0, the data socket and the routes' sockets.
    ep: Epoll,
    down: mpsc::Receiver<Down>,
    wake: Arc<OwnedFd>,
    sleeping: Arc<AtomicBool>,
    gauges: Arc<WorkerGauges>,
    up: tokio::sync::mpsc::Sender<Up>,
    strangers: tokio::sync::mpsc::Sender<Up>,
    stats: Arc<Stats>,
    started: Instant,
    b: Buffers,
    /// The largest datagram a direct path carries (a full packet sealed).
    max_wire: usize,
    busy: BusyPoll,
    /// Destinations that refused a GSO send, until when.
    no_gso: Vec<(SocketAddr, Instant)>,
    /// Sealed datagrams in `b.gso` not sent yet.
    run: GsoRun,
    recv_errors: RecvErrors,
}

impl Loop {
    fn reads_udp(&self) -> bool {
        reads_udp(self.queue)
    }

    fn run(&mut self) -> std::io::Result<()> {
        // When the last pass that found work ended, and, after a sleep, how
        // long after it the sleep ended: what the busy-poll window learns.
        let mut last_work = Instant::now();
        let mut woke_after: Option<Duration> = None;
        loop {
            let mut did = self.turn()?;
            if did {
                if let Some(gap) = woke_after.take() {
                    self.busy.slept(gap);
                }
                last_work = Instant::now();
                continue;
            }
            // Spin only for the answer to work just done, not after a
            // wakeup that found none (a report falling due).
            let window = self.busy.window();
            if woke_after.take().is_none() && !window.is_zero() {
                let until = Instant::now() + window;
                while !did && Instant::now() < until {
                    std::hint::spin_loop();
                    did = self.turn()?;
                }
                self.busy.spun(did);
                if did {
                    last_work = Instant::now();
                    continue;
                }
            }
            // Reports wait (at most REPORT_EVERY) rather than wake the
            // control plane in the middle of a round trip.
            let sleep = self
                .dp
                .next_report()
                .map_or(MAX_SLEEP, |t| t.saturating_duration_since(Instant::now()))
                .min(MAX_SLEEP);
            // Announce the sleep, then look once more: a command sent
            // before the flag was up is found here, one sent after it
            // writes the eventfd.
            self.sleeping.store(true, Ordering::SeqCst);
            if self.commands()? {
                self.sleeping.store(false, Ordering::SeqCst);
                continue;
            }
            let woken = self.ep.wait(sleep, self.wake.as_raw_fd())?;
            self.sleeping.store(false, Ordering::SeqCst);
            if woken {
                // Only then: a read of an unsignalled eventfd is a wasted
                // system call on every wakeup by a packet.
                self.drain_wake();
            }
            woke_after = Some(last_work.elapsed());
        }
    }

    /// One pass over every source without blocking; whether anything came.
    /// Errors only when the control plane is gone (time to stop).
    fn turn(&mut self) -> std::io::Result<bool> {
        let now = Instant::now();
        self.gauges.heartbeat_ms.store(
            now.saturating_duration_since(self.started).as_millis() as u64,
            Ordering::Relaxed,
        );
        let mut did = self.commands()?;
        if self.reads_udp() {
            did |= self.drain_udp(now, None);
            for i in 0..self.routes.len() {
                did |= self.drain_udp(now, Some(i));
            }
        }
        for _ in 0..DRAIN {
            match self.queues[self.queue].recv(&mut self.b.tun_raw) {
                Ok(n) => {
                    did = true;
                    self.on_tun(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    Stats::add(&self.stats.tun_read_errors, 1);
                    debug!(error = %e, "TUN read failed");
                    break;
                }
            }
        }
        self.flush_run();
        self.report();
        Ok(did)
    }

    /// Read the data socket (`None`) or route `i`'s, up to [`DRAIN`]
    /// reads; whether anything came.
    fn drain_udp(&mut self, now: Instant, route: Option<usize>) -> bool {
        let mut did = false;
        for _ in 0..DRAIN {
            let sock = match route {
                None => &self.udp,
                Some(i) => &self.routes[i].1,
            };
            match sock.try_recv(&mut self.b.udp_in) {
                Ok(r) => {
                    did = true;
                    self.on_udp(r);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.recv_errors.note(now, &e);
                    break;
                }
            }
        }
        did
    }

    /// The hard-NAT routes' sockets, replacing the last set: every worker
    /// sends on them, worker 0 also reads them.
    fn set_sockets(&mut self, new: Vec<(SocketAddr, Arc<Udp>)>) {
        if self.reads_udp() {
            let has = |set: &[(SocketAddr, Arc<Udp>)], s: &Arc<Udp>| {
                set.iter().any(|(_, o)| Arc::ptr_eq(o, s))
            };
            // Gone ones first: a socket the control plane still holds
            // would stay readable here with nobody to read it.
            for (_, s) in &self.routes {
                if !has(&new, s) {
                    self.ep.remove(s.as_raw_fd());
                }
            }
            for (addr, s) in &new {
                if !has(&self.routes, s)
                    && let Err(e) = self.ep.add(s.as_raw_fd())
                {
                    // Its datagrams wait until a turn finds them.
                    warn!(%addr, error = %e, "data plane: cannot watch a hard-NAT route's socket");
                }
            }
        }
        self.routes = new;
    }

    /// Apply what the control plane sent; `Err` once it is gone.
    fn commands(&mut self) -> std::io::Result<bool> {
        let mut did = false;
        let mut tun_k = 0;
        loop {
            match self.down.try_recv() {
                Ok(Down::Update(u)) => self.dp.apply(u),
                Ok(Down::Sockets(s)) => self.set_sockets(s),
                Ok(Down::Tun(pkt)) => {
                    let out = &mut self.b.tun_out[tun_k];
                    out.clear();
                    out.resize(TUN_HDR, 0);
                    out.extend_from_slice(&pkt);
                    tun_k += 1;
                    if tun_k == self.b.tun_out.len() {
                        self.write_tun(tun_k);
                        tun_k = 0;
                    }
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::BrokenPipe,
                        "the control plane is gone",
                    ));
                }
            }
            did = true;
        }
        if tun_k > 0 {
            self.write_tun(tun_k);
        }
        Ok(did)
    }

    fn drain_wake(&self) {
        let mut v: u64 = 0;
        // SAFETY: reading 8 bytes into a valid u64 from our eventfd.
        unsafe {
            libc::read(self.wake.as_raw_fd(), (&mut v as *mut u64).cast(), 8);
        }
    }

    fn report(&mut self) {
        let now = Instant::now();
        while let Some(a) = self.dp.poll_activity(now, false) {
            self.to_control(Up::Activity(a));
        }
    }

    fn to_control(&self, m: Up) {
        send_up(&self.up, &self.stats, m);
    }

    /// Write `tun_out[..k]` to the TUN device: each packet to the queue of
    /// its flow, so the kernel steers the flow's answers to that queue's
    /// worker (see the module docs).
    fn write_tun(&mut self, k: usize) {
        let n = self.queues.len();
        if n == 1 {
            let b = &mut self.b;
            write_merged(
                &mut b.gro,
                &self.queues[0],
                &mut b.tun_out[..k],
                &self.stats,
            );
            return;
        }
        let mut of = [0u8; socket::MAX_GSO_SEGMENTS];
        for (q, out) in of.iter_mut().zip(&self.b.tun_out[..k]) {
            *q = flow_queue(&out[TUN_HDR..], n) as u8;
        }
        for q in 0..n {
            let b = &mut self.b;
            let mut m = 0;
            for i in (0..k).filter(|&i| usize::from(of[i]) == q) {
                // Buffers trade places: the one left in `tun_out` is
                // written over before it is read again.
                std::mem::swap(&mut b.tun_out[i], &mut b.tun_queue[m]);
                m += 1;
            }
            write_merged(
                &mut b.gro,
                &self.queues[q],
                &mut b.tun_queue[..m],
                &self.stats,
            );
        }
    }

    /// Open a (possibly coalesced) read and write the packets to the TUN
    /// in batches, which lets the kernel merge TCP segments again.
    fn on_udp(&mut self, r: Received) {
        if r.truncated {
            Stats::add(&self.stats.truncated, 1);
            return;
        }
        let now = Instant::now();
        let segment = r.segment.max(1);
        let group = segment * self.b.tun_out.len();
        let mut at = 0;
        while at < r.len {
            let end = (at + group).min(r.len);
            self.open_group(now, r.from, at, end, segment);
            at = end;
        }
    }

    /// The datagrams in `udp_in[at..end]`, at most `tun_out.len()`.
    fn open_group(
        &mut self,
        now: Instant,
        from: SocketAddr,
        at: usize,
        end: usize,
        segment: usize,
    ) {
        let mut k = 0;
        let mut start = at;
        while start < end {
            let stop = (start + segment).min(end);
            let b = &mut self.b;
            let datagram = &b.udp_in[start..stop];
            let out = &mut b.tun_out[k];
            out.resize(TUN_HDR + datagram.len() + OVERHEAD, 0);
            match self.dp.handle_udp(now, from, datagram, &mut out[TUN_HDR..]) {
                DataUdp::WriteTun { len } => {
                    out.truncate(TUN_HDR + len);
                    k += 1;
                }
                DataUdp::Opened {
                    peer,
                    via,
                    len,
                    wire_len,
                } => {
                    let plain = out[TUN_HDR..TUN_HDR + len].to_vec();
                    self.to_control(Up::Opened {
                        peer,
                        from,
                        via,
                        plain,
                        wire_len,
                    });
                }
                DataUdp::Forward { dst, len } => {
                    // We relay: the frame joins the send run, so a member's
                    // burst goes on as one GSO send (sent at the end of
                    // the turn at the latest).
                    let at = self.run.used;
                    let b = &mut self.b;
                    b.gso[at..at + len].copy_from_slice(&b.tun_out[k][TUN_HDR..TUN_HDR + len]);
                    let mut run = std::mem::take(&mut self.run);
                    self.extend_run(&mut run, dst, len);
                    self.run = run;
                }
                DataUdp::Control => {
                    let m = Up::Datagram {
                        from,
                        bytes: datagram.to_vec(),
                    };
                    if self.strangers.try_send(m).is_err() {
                        Stats::add(&self.stats.stranger_queue_full, 1);
                    }
                }
                DataUdp::Dropped(reason) => {
                    Stats::add(&self.stats.udp_dropped, 1);
                    debug!(addr = %from, %reason, "datagram dropped");
                }
            }
            start = stop;
        }
        if k > 0 {
            self.write_tun(k);
        }
    }

    /// Split a TUN read (`b.tun_raw[..read]`) segment by segment straight
    /// into the GSO buffer, seal each where it lies, and send each run of
    /// same-destination, same-size datagrams with one syscall.
    ///
    /// The run stays open across reads (one TSO read rarely fills it):
    /// [`Loop::turn`] sends what is left once the TUN has nothing more, so
    /// a lone packet still leaves at once.
    fn on_tun(&mut self, read: usize) {
        let now = Instant::now();
        let vnet = self.queues[self.queue].tcp_gso();
        let tso = match Tso::parse(&self.b.tun_raw[..read], vnet, TUN_BATCH) {
            Ok(tso) => tso,
            Err(e) => {
                Stats::add(&self.stats.tun_read_errors, 1);
                debug!(error = %e, "TUN read dropped: cannot split it");
                return;
            }
        };
        let mut run = std::mem::take(&mut self.run);
        let mut sealed = 0;
        self.dp.begin_batch(tso.segments());
        for i in 0..tso.segments() {
            let at = run.used;
            let b = &mut self.b;
            let buf = &mut b.gso[at..];
            let len = match tso.write(&b.tun_raw[..read], i, &mut buf[DATA_HEADER_LEN..]) {
                Ok(len) => len,
                Err(e) => {
                    Stats::add(&self.stats.tun_read_errors, 1);
                    debug!(error = %e, "TUN segment dropped");
                    continue;
                }
            };
            match self.dp.handle_tun_in_place(now, buf, len) {
                DataTun::Send { dst, len } => {
                    self.extend_run(&mut run, dst, len);
                    sealed += 1;
                }
                DataTun::Reply { len } => {
                    Stats::add(&self.stats.too_big, 1);
                    let b = &mut self.b;
                    let reply = &mut b.tun_out[0];
                    reply.clear();
                    reply.resize(TUN_HDR, 0);
                    reply.extend_from_slice(&b.gso[at..at + len]);
                    self.write_tun(1);
                }
                DataTun::Control => {
                    let pkt = self.b.gso[at + DATA_HEADER_LEN..][..len].to_vec();
                    send_up(&self.up, &self.stats, Up::Tun(pkt));
                }
                DataTun::Dropped(reason) => {
                    Stats::add(&self.stats.tun_dropped, 1);
                    debug!(%reason, "TUN packet dropped");
                }
            }
        }
        self.dp.end_batch();
        self.run = run;
        self.gauges.sealed.fetch_add(sealed, Ordering::Relaxed);
    }

    /// `b.gso[run.used..][..len]` is a sealed datagram for `dst`: it joins
    /// the run, or the run goes out and it starts the next.
    fn extend_run(&mut self, run: &mut GsoRun, dst: SocketAddr, len: usize) {
        if len > self.max_wire {
            // Larger than any direct datagram (relayed, and its sender let
            // it be fragmented): GSO cannot fragment, so it goes alone.
            let at = run.used;
            if run.count > 0 {
                self.send_run(run);
                self.b.gso.copy_within(at..at + len, 0);
            }
            let alone = GsoRun {
                dst: Some(dst),
                segment: len,
                used: len,
                count: 1,
                short: false,
            };
            self.send_run(&alone);
            *run = GsoRun::default();
            return;
        }
        if !run.fits(dst, len) {
            if run.count > 0 {
                self.send_run(run);
                let at = run.used;
                self.b.gso.copy_within(at..at + len, 0);
            }
            *run = GsoRun {
                dst: Some(dst),
                segment: len,
                ..GsoRun::default()
            };
        }
        run.short = len < run.segment;
        run.used += len;
        run.count += 1;
    }

    /// Send the open run, if any.
    fn flush_run(&mut self) {
        let run = std::mem::take(&mut self.run);
        if run.count > 0 {
            self.send_run(&run);
        }
    }

    fn send_run(&mut self, run: &GsoRun) {
        let Some(dst) = run.dst else { return };
        let now = Instant::now();
        self.no_gso.retain(|(_, until)| *until > now);
        let gso = !self.no_gso.iter().any(|(d, _)| *d == dst);
        let buf = &self.b.gso[..run.used];
        let sock = match self.routes.iter().find(|(a, _)| *a == dst) {
            Some((_, route)) => route,
            None => &self.udp,
        };
        match sock.send_segments(dst, buf, run.segment, gso) {
            Ok(socket::Sent::Whole) => {}
            Ok(socket::Sent::OneByOne { refused }) => {
                if refused {
                    // This destination (its route's device) cannot take a
                    // GSO send: single datagrams for a while, others unchanged.
                    Stats::add(&self.stats.gso_refused, 1);
                    self.no_gso.push((dst, now + NO_GSO_FOR));
                }
            }
            Err(e) => {
                Stats::add(&self.stats.send_errors, run.count as u64);
                debug!(addr = %dst, error = %e, "UDP send failed");
            }
        }
    }
}

/// Worker 0 reads the data socket (and the routes'); the others only send
/// on them.
fn reads_udp(worker: usize) -> bool {
    worker == 0
}

/// Merge what GRO may of `bufs` and write the result to `tun`, one
/// packet (or merged run) per write. A device without offload (no
/// virtio-net header: an old kernel, or `KITH_TUN_OFFLOAD=off`) takes the
/// packets as they are.
fn write_merged(gro: &mut Gro, tun: &tun_rs::SyncDevice, bufs: &mut [Vec<u8>], stats: &Stats) {
    let written = |r: std::io::Result<usize>| {
        if let Err(e) = r {
            Stats::add(&stats.tun_write_errors, 1);
            debug!(error = %e, "TUN write failed; packet (or merged run) dropped");
        }
    };
    if !tun.tcp_gso() {
        for b in bufs.iter().filter(|b| b.len() > TUN_HDR) {
            written(tun.send(&b[TUN_HDR..]));
        }
        return;
    }
    for &i in gro.coalesce(bufs, tun.udp_gso()) {
        written(tun.send(&bufs[i]));
    }
}

/// The TUN queue (of `n`) for the flow of IP packet `pkt`: a hash of its
/// addresses, protocol and ports that is the same in both directions (the
/// kernel matches a flow's answers to it), so a flow always goes to one
/// queue. Packets it cannot read, fragments and protocols without ports
/// hash on what they have.
fn flow_queue(pkt: &[u8], n: usize) -> usize {
    let (src, dst, proto, l4) = match pkt.first().map(|b| b >> 4) {
        Some(4) if pkt.len() >= 20 => {
            let fragment = pkt[6] & 0x3f != 0 || pkt[7] != 0;
            let l4 = usize::from(pkt[0] & 0x0f) * 4;
            (
                &pkt[12..16],
                &pkt[16..20],
                pkt[9],
                (!fragment).then_some(l4),
            )
        }
        Some(6) if pkt.len() >= 40 => (&pkt[8..24], &pkt[24..40], pkt[6], Some(40)),
        _ => return 0,
    };
    let ports = match proto {
        6 | 17 => l4.and_then(|at| pkt.get(at..at + 4)),
        _ => None,
    };
    let (sport, dport) = ports.map_or((&[][..], &[][..]), |p| p.split_at(2));
    // FNV-1a of each end; xor makes the pair the same either way round.
    let end = |addr: &[u8], port: &[u8]| {
        addr.iter()
            .chain(port)
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            })
    };
    let h =
        (end(src, sport) ^ end(dst, dport) ^ u64::from(proto)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // The top 32 bits scaled to 0..n (no division).
    (((h >> 32) * n as u64) >> 32) as usize
}

/// Failed reads of the data socket. One is no reason to stop (an ICMP error
/// queued on the socket, a transient ENOMEM); a run of them is worth a
/// warning, not one per datagram.
#[derive(Default)]
pub(super) struct RecvErrors {
    count: u64,
    warned: Option<Instant>,
}

impl RecvErrors {
    const WARN_EVERY: Duration = Duration::from_secs(10);

    fn note(&mut self, now: Instant, e: &std::io::Error) {
        self.count += 1;
        if self
            .warned
            .is_some_and(|t| now.saturating_duration_since(t) < Self::WARN_EVERY)
        {
            debug!(error = %e, "UDP receive failed");
            return;
        }
        self.warned = Some(now);
        warn!(error = %e, total = self.count, "UDP receive failed; carrying on");
    }
}

/// The adaptive busy-poll window (`[interface] busy_poll` is its largest):
/// spinning pays only when the next packet comes within the window, so
/// the window follows what the spins and the sleeps found. A spin that
/// caught nothing halves it, down to nothing (a ping every second over a
/// path slower than the window, or a laptop's idle tunnel, never spins);
/// a sleep that ended with work no later than the full window after the
/// last work shows a spin would have caught it, and restores it.
#[derive(Debug, Clone, Copy)]
struct BusyPoll {
    max: Duration,
    window: Duration,
}

impl BusyPoll {
    /// Below this share of the largest window, a window is not worth a spin.
    const FLOOR_DIVISOR: u32 = 16;

    fn new(max: Duration) -> Self {
        Self { max, window: max }
    }

    /// How long to spin now.
    fn window(&self) -> Duration {
        self.window
    }

    /// A spin ended; whether it found work.
    fn spun(&mut self, caught: bool) {
        if caught {
            return;
        }
        self.window /= 2;
        if self.window < self.max / Self::FLOOR_DIVISOR {
            self.window = Duration::ZERO;
        }
    }

    /// A sleep ended with work `gap` after the last work.
    fn slept(&mut self, gap: Duration) {
        if gap <= self.max {
            self.window = self.max;
        }
    }
}

/// Level-triggered epoll over a few descriptors: the only place the
/// thread sleeps.
struct Epoll(OwnedFd);

impl Epoll {
    fn new(fds: &[RawFd]) -> std::io::Result<Self> {
        // SAFETY: epoll_create1 returns a new descriptor or -1.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: ep is a fresh descriptor we own.
        let ep = Self(unsafe { OwnedFd::from_raw_fd(ep) });
        for &fd in fds {
            ep.add(fd)?;
        }
        Ok(ep)
    }

    fn add(&self, fd: RawFd) -> std::io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        // SAFETY: valid epoll and target descriptors, a valid event.
        let rc = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stop watching `fd` (nothing to do if it was not watched).
    fn remove(&self, fd: RawFd) {
        // SAFETY: valid epoll descriptor; the event is ignored for DEL.
        unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            );
        }
    }

    /// Sleep until a descriptor is readable or `timeout` passes; whether
    /// `watch` is among the readable ones.
    fn wait(&self, timeout: Duration, watch: RawFd) -> std::io::Result<bool> {
        // Room for every descriptor (TUN, eventfd, data socket, a few
        // routes), so the eventfd is never left out of a report.
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 16];
        // SAFETY: evs is valid for 16 events.
        let rc = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                evs.as_mut_ptr(),
                evs.len() as i32,
                // Rounded up: waking before a report is due would spin.
                timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
            return Ok(false);
        }
        Ok(evs[..rc as usize].iter().any(|ev| ev.u64 == watch as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_poll_stops_spinning_when_spins_never_pay_and_resumes_when_they_would() {
        let max = Duration::from_micros(50);
        let mut b = BusyPoll::new(max);
        assert_eq!(b.window(), max);
        b.spun(true);
        assert_eq!(b.window(), max, "a spin that caught work keeps the window");
        // Pings a second apart over a 0.3 ms path: every spin misses, and
        // every sleep ends long after the window.
        let mut spins = 0;
        while !b.window().is_zero() {
            b.spun(false);
            b.slept(Duration::from_micros(300));
            spins += 1;
            assert!(spins < 10, "the window never reached zero");
        }
        assert_eq!(spins, 5, "50 → 25 → 12.5 → 6.25 → 3.125 µs, then off");
        b.slept(Duration::from_millis(1));
        assert!(b.window().is_zero(), "a late packet does not restore it");
        // The answers start coming within the window: spinning would have
        // caught them, so it resumes at the full window.
        b.slept(Duration::from_micros(40));
        assert_eq!(b.window(), max);
        // Off stays off.
        let mut off = BusyPoll::new(Duration::ZERO);
        off.slept(Duration::ZERO);
        assert!(off.window().is_zero());
    }

    /// An IPv4 TCP header pair (no options) from `src:sport` to `dst:dport`.
    fn tcp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[9] = 6;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p
    }

    #[test]
    fn a_flow_has_one_queue_both_ways_and_flows_spread() {
        let (a, b) = ([100, 96, 0, 1], [100, 96, 0, 2]);
        let mut used = [0usize; 4];
        for port in 40000..40400 {
            let q = flow_queue(&tcp4(a, port, b, 5201), 4);
            assert_eq!(q, flow_queue(&tcp4(b, 5201, a, port), 4), "port {port}");
            used[q] += 1;
        }
        // 400 flows over 4 queues: each gets a fair share.
        assert!(used.iter().all(|&n| n > 60), "{used:?}");
        // One queue, or nothing to read: queue 0.
        assert_eq!(flow_queue(&tcp4(a, 1, b, 2), 1), 0);
        assert_eq!(flow_queue(&[], 4), 0);
        assert_eq!(flow_queue(&[0x45, 0, 0], 4), 0);
        // A fragment hashes without ports: every fragment of it alike.
        let mut frag = tcp4(a, 1, b, 2);
        frag[6] = 0x20;
        let mut other = tcp4(a, 3, b, 4);
        other[6] = 0x20;
        assert_eq!(flow_queue(&frag, 4), flow_queue(&other, 4));
        // IPv6 too.
        let mut v6 = vec![0u8; 44];
        v6[0] = 0x60;
        v6[6] = 17;
        v6[8] = 1;
        v6[24] = 2;
        v6[40..42].copy_from_slice(&7u16.to_be_bytes());
        let mut back = v6.clone();
        back[8..24].copy_from_slice(&v6[24..40]);
        back[24..40].copy_from_slice(&v6[8..24]);
        back[40..42].copy_from_slice(&v6[42..44]);
        back[42..44].copy_from_slice(&v6[40..42]);
        assert_eq!(flow_queue(&v6, 16), flow_queue(&back, 16));
    }
}
