//! Handshake floods for the flood tests (`tests/e2e_flood.rs`) and the
//! bench: initiations a kith peer really sent, taken from a capture and
//! sent again at a set rate from a raw socket, either from many spoofed
//! source addresses or from the very address each came from.
//!
//! Owns: picking initiations out of a capture ([`initiations`]), the
//! flood itself ([`Flood`]: a thread in an attacker's namespace that
//! writes whole IPv4/UDP packets to an `IPPROTO_RAW` socket, so it may
//! set any source), and the topology of the spoofed flood ([`FloodPair`]).
//!
//! Why captured initiations: every one is mac1-valid for the peer it was
//! sent to, so it passes kith's cheapest check, and an attacker on any
//! path gets them for free (hard-NAT probing even sprays them to 2000
//! ports). They are the most expensive thing a stranger can make a kith
//! node look at.
//!
//! How a flood runs:
//! 1. a [`Capture`] with the filter [`INITIATIONS`] on a link the
//!    initiations cross;
//! 2. [`initiations`] picks them out of the capture ([`Packets::Fixed`]), or
//!    the flood re-reads the growing capture every 200 ms
//!    ([`Packets::Live`]: an attacker that keeps listening replays the
//!    newest initiations too);
//! 3. [`Flood::start`] sends them, evenly paced, from [`Sources::Spoofed`]
//!    addresses or [`Sources::AsCaptured`], until [`Flood::stop`] says how
//!    many it sent and at what rate.
//!
//! Everything stays inside the lab: destinations are lab hosts, and the
//! emulated internet routes the spoofed range ([`SPOOFED_NET`]) back to the
//! attacker, which does not forward and so drops the answers.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::capture::{LINKTYPE_ETHERNET, LINKTYPE_RAW};
use super::topology::wait_both_ways;
use super::{Capture, Host, Internet, KithNode, KithSpec, Lab, LabError, Pcap, Result, Uplink};
use crate::identity::SecretKey;
use crate::wire::{self, IPV4_HEADER_LEN, checksum, emit_ipv4_header, pseudo_sum};

/// The IPv4 identification every flood packet carries, so a capture on
/// the attacker's own path can leave its copies out ([`INITIATIONS`]).
pub const FLOOD_IP_ID: u16 = 0x6b66;

/// tcpdump filter: kith initiations (first UDP payload byte 0x81, the
/// whole 148-byte message), but none the flood itself sent.
pub const INITIATIONS: &str = "udp and udp[8] = 0x81 and udp[4:2] = 156 and ip[4:2] != 0x6b66";

/// The spoofed sources: the top /20 of the emulated internet (4096
/// addresses), which [`Internet::attach`] hands out last.
pub const SPOOFED_NET: &str = "198.19.240.0/20";
/// How many addresses [`SPOOFED_NET`] holds.
pub const SPOOFED_SOURCES: u32 = 4096;
const SPOOFED_FIRST: Ipv4Addr = Ipv4Addr::new(198, 19, 240, 0);

/// One initiation as captured: who sent it to whom, and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub payload: Vec<u8>,
}

/// The distinct kith initiations over IPv4 in `pcap` (Ethernet or raw IP
/// frames), in capture order; anything else is skipped.
pub fn initiations(pcap: &Pcap) -> Vec<Captured> {
    let mut seen = HashSet::new();
    pcap.packets
        .iter()
        .filter_map(|frame| {
            let ip = match pcap.linktype {
                // Ethernet II carrying IPv4.
                LINKTYPE_ETHERNET if frame.get(12..14) == Some(&[0x08, 0x00]) => frame.get(14..)?,
                LINKTYPE_RAW => frame,
                _ => return None,
            };
            udp_in(ip)
        })
        .filter(|c| matches!(wire::parse(&c.payload), Ok(wire::Packet::Initiation(_))))
        .filter(|c| seen.insert(c.payload.clone()))
        .collect()
}

/// The UDP datagram in an IPv4 packet, if that is what it is.
fn udp_in(ip: &[u8]) -> Option<Captured> {
    let header = wire::parse_ip(ip).ok()?;
    let (std::net::IpAddr::V4(src), std::net::IpAddr::V4(dst)) = (header.src, header.dst) else {
        return None;
    };
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[9] != libc::IPPROTO_UDP as u8 || ihl < 20 {
        return None;
    }
    let udp = ip.get(ihl..header.total_len)?;
    let port = |at: usize| Some(u16::from_be_bytes([*udp.get(at)?, *udp.get(at + 1)?]));
    let len = usize::from(port(4)?);
    Some(Captured {
        src: SocketAddrV4::new(src, port(0)?),
        dst: SocketAddrV4::new(dst, port(2)?),
        payload: udp.get(8..len)?.to_vec(),
    })
}

/// Writes into `out` the IPv4 packet (no options, DF, TTL 64, ID
/// [`FLOOD_IP_ID`]) carrying `payload` in a UDP datagram from `src` to
/// `dst`, both checksums filled in.
fn udp_packet(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8], out: &mut Vec<u8>) {
    let udp_len = 8 + payload.len();
    out.clear();
    out.resize(IPV4_HEADER_LEN, 0);
    let proto = libc::IPPROTO_UDP as u8;
    emit_ipv4_header(out, *src.ip(), *dst.ip(), proto, udp_len, FLOOD_IP_ID, true);
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out.extend_from_slice(&(udp_len as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
    // RFC 768: over the pseudo-header (addresses, protocol, length) and
    // the datagram; a computed zero is sent as all ones.
    let udp_sum = match checksum(&out[20..], pseudo_sum(out, proto, udp_len)) {
        0 => 0xffff,
        s => s,
    };
    out[26..28].copy_from_slice(&udp_sum.to_be_bytes());
}

/// Whose address a flood packet claims to come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sources {
    /// Packet `k` from the `k % count`-th address of [`SPOOFED_NET`] (at
    /// most [`SPOOFED_SOURCES`]), each with its own port.
    Spoofed { count: u32 },
    /// Each initiation from the address and port that sent it: the real
    /// peer's, as seen by the node it was sent to. The flows (source,
    /// destination) share the rate equally, and the newest initiation of
    /// each is held back (see `Picker::pick`).
    AsCaptured,
}

/// What a flood sends.
#[derive(Debug, Clone)]
pub enum Packets {
    /// These initiations, over and over.
    Fixed(Vec<Captured>),
    /// The initiations in this capture file, re-read every 200 ms while a
    /// [`Capture`] writes it (filter [`INITIATIONS`]).
    Live(PathBuf),
}

#[derive(Debug, Clone)]
pub struct FloodSpec {
    /// Packets per second, all sources together.
    pub rate: u32,
    pub sources: Sources,
    pub packets: Packets,
    /// The sending thread's nice value. Positive leaves the CPU to the
    /// target and its traffic (a real attacker's CPU is not the target's,
    /// as it is on the lab's one machine); negative keeps the pacing even
    /// on a busy machine, where it matters more than the CPU.
    pub nice: i32,
}

/// What a flood did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FloodReport {
    /// Packets the kernel took.
    pub sent: u64,
    /// Packets it refused (e.g. a full buffer: `ENOBUFS`).
    pub failed: u64,
    /// From the first packet due to the stop.
    pub elapsed: Duration,
    /// Distinct source addresses used.
    pub sources: usize,
    /// Packets sent per destination, in order of address.
    pub per_destination: Vec<(SocketAddrV4, u64)>,
}

impl FloodReport {
    /// Packets sent per second, on average.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Packets sent to `dst`.
    pub fn sent_to(&self, dst: SocketAddrV4) -> u64 {
        self.per_destination
            .iter()
            .find(|(d, _)| *d == dst)
            .map_or(0, |(_, n)| *n)
    }
}

impl std::fmt::Display for FloodReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} packets in {:.1} s ({:.0}/s) from {} sources, {} refused by the kernel",
            self.sent,
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.sources,
            self.failed
        )
    }
}

/// Which initiation, from which source, comes next.
struct Picker {
    sources: Sources,
    packets: Vec<Captured>,
    /// Indices into `packets` grouped by (source, destination), in capture
    /// order within each group; groups in order of first appearance.
    flows: Vec<Vec<usize>>,
    /// Packets picked so far.
    next: u64,
}

impl Picker {
    fn new(sources: Sources) -> Self {
        Self {
            sources,
            packets: Vec::new(),
            flows: Vec::new(),
            next: 0,
        }
    }

    fn update(&mut self, packets: Vec<Captured>) {
        let mut index: HashMap<(SocketAddrV4, SocketAddrV4), usize> = HashMap::new();
        self.flows.clear();
        for (i, c) in packets.iter().enumerate() {
            let flow = *index.entry((c.src, c.dst)).or_insert_with(|| {
                self.flows.push(Vec::new());
                self.flows.len() - 1
            });
            self.flows[flow].push(i);
        }
        self.packets = packets;
    }

    /// The source address and the initiation of the next packet; `None`
    /// while nothing was captured.
    fn pick(&mut self) -> Option<(SocketAddrV4, &Captured)> {
        if self.packets.is_empty() {
            return None;
        }
        let k = self.next;
        self.next += 1;
        match self.sources {
            Sources::Spoofed { count } => {
                let c = &self.packets[(k % self.packets.len() as u64) as usize];
                let i = (k % u64::from(count.clamp(1, SPOOFED_SOURCES))) as u32;
                let ip = Ipv4Addr::from(u32::from(SPOOFED_FIRST) + i);
                Some((SocketAddrV4::new(ip, 10_000 + i as u16), c))
            }
            Sources::AsCaptured => {
                // Each flow (each peer's address) gets an equal share;
                // within one, any initiation but the newest, which may be
                // the one its sender is waiting on: replayed, it would
                // complete that handshake rather than starve it. (With
                // only one, that one: it was processed before the flood.)
                let n = self.flows.len() as u64;
                let flow = &self.flows[(k % n) as usize];
                let older = (flow.len() - 1).max(1) as u64;
                // Knuth's multiplicative hash: a spread without an RNG.
                let spread = (k / n).wrapping_mul(2_654_435_761) >> 7;
                let i = (spread % older) as usize;
                let c = &self.packets[flow[i]];
                Some((c.src, c))
            }
        }
    }
}

/// `socket(AF_INET, SOCK_RAW, IPPROTO_RAW)`: the caller writes the IP header.
struct RawSocket(OwnedFd);

impl RawSocket {
    fn open() -> io::Result<Self> {
        // SAFETY: socket has no memory-safety preconditions.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_RAW,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a socket we just opened and own.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn send(&self, packet: &[u8], dst: Ipv4Addr) -> io::Result<()> {
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(dst).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: packet and addr are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                std::ptr::addr_of!(addr).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// A flood running on a thread in the attacker's namespace. Stop it with
/// [`Flood::stop`]; dropping it stops it too.
pub struct Flood {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Result<FloodReport>>>>,
}

impl Flood {
    /// Starts sending `spec`'s packets from `attacker`'s namespace.
    pub fn start(attacker: &Host, spec: FloodSpec) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let netns = attacker.netns().to_owned();
        let thread = attacker.spawn_in(move || run(&netns, &spec, &flag));
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the flood; what it sent.
    pub fn stop(mut self) -> Result<FloodReport> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().ok_or_else(|| LabError::Parse {
            cmd: "flood".into(),
            detail: "already stopped".into(),
        })?;
        match thread.join() {
            Ok(result) => result?,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How often a [`Packets::Live`] capture is read again.
const LIVE_REFRESH: Duration = Duration::from_millis(200);

fn run(netns: &str, spec: &FloodSpec, stop: &AtomicBool) -> Result<FloodReport> {
    // SAFETY: neither call has memory-safety preconditions. With a
    // thread id as `who`, setpriority sets that thread's nice value
    // (Linux); the timer slack (50 µs by default) would bunch the packets
    // of a flood paced in microseconds.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, spec.nice);
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
    let socket = RawSocket::open().map_err(|e| {
        LabError::io(
            format!("opening a raw IPv4 socket in {netns} (needs CAP_NET_RAW)"),
            e,
        )
    })?;
    let mut picker = Picker::new(spec.sources);
    let live = match &spec.packets {
        Packets::Fixed(list) => {
            picker.update(list.clone());
            None
        }
        Packets::Live(path) => Some(path.as_path()),
    };
    let rate = f64::from(spec.rate.max(1));
    // Evenly paced: one tick per packet, but no sleep shorter than the
    // scheduler can keep or longer than a millisecond of packets.
    let tick = Duration::from_secs_f64(1.0 / rate)
        .clamp(Duration::from_micros(20), Duration::from_millis(1));
    // After a stall (a busy machine) catch up, a tenth of a second at most.
    let burst = u64::from(spec.rate / 10).max(1);
    let mut report = FloodReport::default();
    let mut sources = HashSet::new();
    let mut per_destination: HashMap<SocketAddrV4, u64> = HashMap::new();
    let mut packet = Vec::with_capacity(256);
    let mut refreshed: Option<Instant> = None;
    let mut owed = 0u64;
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Some(path) = live
            && refreshed.is_none_or(|t| t.elapsed() >= LIVE_REFRESH)
        {
            refresh(&mut picker, path);
            refreshed = Some(Instant::now());
        }
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        let mut n = 0;
        while owed < due && n < burst {
            owed += 1;
            n += 1;
            // Nothing captured yet: nothing is owed either.
            let Some((src, c)) = picker.pick() else {
                owed = due;
                break;
            };
            udp_packet(src, c.dst, &c.payload, &mut packet);
            match socket.send(&packet, *c.dst.ip()) {
                Ok(()) => {
                    report.sent += 1;
                    sources.insert(src);
                    *per_destination.entry(c.dst).or_default() += 1;
                }
                Err(_) => report.failed += 1,
            }
        }
        std::thread::sleep(tick);
    }
    report.elapsed = start.elapsed();
    report.sources = sources.len();
    report.per_destination = per_destination.into_iter().collect();
    report.per_destination.sort();
    Ok(report)
}

/// Reads the live capture again; a read that fails (tcpdump mid-write)
/// keeps what was known.
fn refresh(picker: &mut Picker, path: &Path) {
    if let Ok(pcap) = Pcap::read(path) {
        let list = initiations(&pcap);
        if !list.is_empty() {
            picker.update(list);
        }
    }
}

/// The topology of the spoofed flood: hosts `a` (the target) and `b` on
/// the emulated internet, each in its own /24, running kith with the
/// other at a static endpoint, and an attacker host (`m`, no kith) whose
/// link the internet also routes [`SPOOFED_NET`] to. Overlay addresses as
/// in [`super::topology::Pair`].
pub struct FloodPair {
    pub internet: Internet,
    pub a: Host,
    pub b: Host,
    pub attacker: Host,
    pub a_up: Uplink,
    pub b_up: Uplink,
    pub node_a: KithNode,
    pub node_b: KithNode,
    /// b's initiations to a, captured on a's link as the pair connected:
    /// the first sent before a's daemon ran (a never processed those),
    /// then the ones a answered.
    pub captured: Vec<Captured>,
}

impl FloodPair {
    /// Builds the hosts, starts b, captures its first initiation to a
    /// while a is down, then starts a and waits until the tunnel works
    /// both ways.
    pub fn start(lab: &Lab, kith: &Path) -> Result<Self> {
        let internet = lab.internet()?;
        let a = lab.host("a")?;
        let b = lab.host("b")?;
        let attacker = lab.host("m")?;
        let a_up = internet.attach(&a)?;
        let b_up = internet.attach(&b)?;
        let m_up = internet.attach(&attacker)?;
        // Answers to spoofed sources go to the attacker, which drops them.
        internet.host().add_route(SPOOFED_NET, m_up.addr())?;
        let key = || SecretKey::generate().map_err(|e| LabError::io("key", e.into()));
        let spec_a = KithSpec::new("100.96.0.1/16", key()?);
        let spec_b = KithSpec::new("100.96.0.2/16", key()?);
        let at = |up: &Uplink, spec: &KithSpec| Some(format!("{}:{}", up.addr(), spec.listen_port));
        let full_a = spec_a.clone().peer("b", &spec_b, at(&b_up, &spec_b));
        let full_b = spec_b.peer("a", &spec_a, at(&a_up, &spec_a));

        let path = lab.dir().join("a-initiations.pcap");
        let capture = Capture::start_filtered(&a, &a_up.iface.name, &path, INITIATIONS)?;
        let mut node_b = lab.spawn_kith(&b, kith, full_b)?;
        node_b.wait_ready(Duration::from_secs(10))?;
        wait_captured(&capture, Duration::from_secs(5))?;
        let mut node_a = lab.spawn_kith(&a, kith, full_a)?;
        node_a.wait_ready(Duration::from_secs(10))?;
        wait_both_ways(&mut node_a, &mut node_b, Duration::from_secs(10))?;
        let to_a = a_up.addr();
        let captured: Vec<Captured> = initiations(&capture.stop()?)
            .into_iter()
            .filter(|c| *c.dst.ip() == to_a)
            .collect();
        Ok(Self {
            internet,
            a,
            b,
            attacker,
            a_up,
            b_up,
            node_a,
            node_b,
            captured,
        })
    }

    /// Floods a with the captured initiations from all of
    /// [`SPOOFED_SOURCES`] addresses, `rate` packets per second.
    pub fn flood(&self, rate: u32) -> Result<Flood> {
        Flood::start(
            &self.attacker,
            FloodSpec {
                rate,
                sources: Sources::Spoofed {
                    count: SPOOFED_SOURCES,
                },
                packets: Packets::Fixed(self.captured.clone()),
                // The target's CPU is what is measured: leave it alone.
                nice: 10,
            },
        )
    }

    /// TCP b → a through the tunnel (iperf3, `secs` per run), `rounds`
    /// times without the flood and then under it ([`FloodPair::flood`] at
    /// `rate`), alternating so that a change in the machine's load meets
    /// both alike; and what a did while flooded, from its own counters.
    pub fn compare(&self, rate: u32, rounds: u32, secs: u32) -> Result<Comparison> {
        let a = std::net::IpAddr::V4(self.node_a.spec().overlay_ip()?);
        let mut c = Comparison::default();
        for round in 0..rounds.max(1) {
            let port = 5201 + 2 * round as u16;
            c.quiet
                .push(super::iperf::tcp(&self.a, &self.b, a, port, secs)?);
            let before = HandshakeCounters::read(&self.node_a)?;
            let cpu = self.node_a.cpu_seconds();
            let flood = self.flood(rate)?;
            let started = Instant::now();
            let loaded = super::iperf::tcp(&self.a, &self.b, a, port + 1, secs);
            let report = flood.stop()?;
            c.flood_time += started.elapsed();
            c.flooded.push(loaded?);
            c.floods.push(report);
            c.counters = c
                .counters
                .plus(HandshakeCounters::read(&self.node_a)?.minus(before));
            if let (Some(t0), Some(t1)) = (cpu, self.node_a.cpu_seconds()) {
                c.cpu_seconds += t1 - t0;
            }
        }
        Ok(c)
    }
}

/// What [`FloodPair::compare`] measured.
#[derive(Debug, Clone, Default)]
pub struct Comparison {
    /// The runs without the flood and under it, in order.
    pub quiet: Vec<super::iperf::IperfReport>,
    pub flooded: Vec<super::iperf::IperfReport>,
    /// One per run under the flood.
    pub floods: Vec<FloodReport>,
    /// Time under the flood, all runs together, and a's CPU seconds and
    /// handshake counters in it.
    pub flood_time: Duration,
    pub cpu_seconds: f64,
    pub counters: HandshakeCounters,
}

impl Comparison {
    /// Mean bits per second without the flood.
    pub fn quiet_bps(&self) -> f64 {
        mean(self.quiet.iter().map(|r| r.bits_per_second))
    }

    /// Mean bits per second under the flood.
    pub fn flooded_bps(&self) -> f64 {
        mean(self.flooded.iter().map(|r| r.bits_per_second))
    }

    /// Packets the floods sent, and their rate over the time they ran.
    pub fn flood_sent(&self) -> (u64, f64) {
        let sent: u64 = self.floods.iter().map(|f| f.sent).sum();
        let secs: f64 = self.floods.iter().map(|f| f.elapsed.as_secs_f64()).sum();
        (sent, sent as f64 / secs.max(1e-9))
    }

    /// The slowest flood's rate: each run had at least this.
    pub fn min_flood_rate(&self) -> f64 {
        self.floods
            .iter()
            .map(FloodReport::rate)
            .fold(f64::INFINITY, f64::min)
    }

    /// Per second under the flood: a's CPU seconds, initiations it refused
    /// and cookie replies it sent.
    pub fn per_second(&self) -> (f64, f64, f64) {
        let t = self.flood_time.as_secs_f64().max(1e-9);
        (
            self.cpu_seconds / t,
            self.counters.refused / t,
            self.counters.cookies_sent / t,
        )
    }
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
    sum / f64::from(n.max(1))
}

/// A daemon's handshake-defence counters (`docs/metrics.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HandshakeCounters {
    /// `kith_handshakes_refused_total`: initiations refused before any DH.
    pub refused: f64,
    /// `kith_cookies_sent_total`.
    pub cookies_sent: f64,
}

impl HandshakeCounters {
    pub fn read(node: &KithNode) -> Result<Self> {
        let m = node.metrics()?;
        Ok(Self {
            refused: m.value("kith_handshakes_refused_total"),
            cookies_sent: m.value("kith_cookies_sent_total"),
        })
    }

    pub fn minus(self, earlier: Self) -> Self {
        Self {
            refused: self.refused - earlier.refused,
            cookies_sent: self.cookies_sent - earlier.cookies_sent,
        }
    }

    fn plus(self, other: Self) -> Self {
        Self {
            refused: self.refused + other.refused,
            cookies_sent: self.cookies_sent + other.cookies_sent,
        }
    }
}

/// Waits until `capture` holds an initiation.
fn wait_captured(capture: &Capture, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if Pcap::read(capture.path()).is_ok_and(|p| !initiations(&p).is_empty()) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(LabError::Timeout {
        what: format!("an initiation in {}", capture.path().display()),
        timeout,
        detail: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::sum_words;

    fn initiation(sender: u32) -> Vec<u8> {
        let mut msg = vec![0u8; wire::INITIATION_LEN];
        wire::emit_initiation(&mut msg, sender, &[7; wire::NOISE_INIT_LEN]).unwrap();
        msg
    }

    fn addr(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    #[test]
    fn packets_carry_valid_checksums_and_read_back() {
        let (src, dst) = (addr("198.19.240.7:10007"), addr("198.18.1.2:51871"));
        let payload = initiation(42);
        let mut packet = Vec::new();
        udp_packet(src, dst, &payload, &mut packet);
        assert_eq!(packet.len(), 20 + 8 + wire::INITIATION_LEN);
        // A header with its checksum in sums to zero.
        assert_eq!(checksum(&packet[..20], 0), 0);
        let mut pseudo = [0u8; 12];
        pseudo[..4].copy_from_slice(&src.ip().octets());
        pseudo[4..8].copy_from_slice(&dst.ip().octets());
        pseudo[9] = 17;
        pseudo[10..].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        assert_eq!(checksum(&packet[20..], sum_words(&pseudo, 0)), 0);
        assert_eq!(&packet[4..6], &FLOOD_IP_ID.to_be_bytes());

        let pcap = Pcap {
            linktype: LINKTYPE_RAW,
            packets: vec![packet.clone()],
        };
        assert_eq!(initiations(&pcap), [Captured { src, dst, payload }]);
    }

    #[test]
    fn only_distinct_initiations_are_picked_out() {
        let (src, dst) = (addr("198.18.2.2:51871"), addr("198.18.1.2:51871"));
        let frame = |payload: &[u8]| {
            let mut ip = Vec::new();
            udp_packet(src, dst, payload, &mut ip);
            let mut f = vec![0u8; 12];
            f.extend([0x08, 0x00]);
            f.extend(ip);
            f
        };
        let mut data = vec![0u8; 32];
        wire::emit_data_header(&mut data, 1, 0).unwrap();
        let mut arp = frame(&initiation(1));
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let pcap = Pcap {
            linktype: LINKTYPE_ETHERNET,
            packets: vec![
                frame(&initiation(1)),
                frame(&data),
                frame(&initiation(1)),
                arp,
                frame(&initiation(2)),
                frame(&initiation(3))[..40].to_vec(),
            ],
        };
        let got = initiations(&pcap);
        let senders: Vec<u32> = got
            .iter()
            .map(|c| match wire::parse(&c.payload) {
                Ok(wire::Packet::Initiation(i)) => i.sender,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(senders, [1, 2]);
        assert!(got.iter().all(|c| c.src == src && c.dst == dst));
    }

    fn captured(src: &str, dst: &str, sender: u32) -> Captured {
        Captured {
            src: addr(src),
            dst: addr(dst),
            payload: initiation(sender),
        }
    }

    #[test]
    fn spoofed_sources_cycle_through_the_range() {
        let mut p = Picker::new(Sources::Spoofed { count: 3 });
        assert!(p.pick().is_none(), "nothing captured, nothing to send");
        p.update(vec![
            captured("198.18.2.2:51871", "198.18.1.2:51871", 1),
            captured("198.18.2.2:51871", "198.18.1.2:51871", 2),
        ]);
        let picks: Vec<(SocketAddrV4, u8)> = (0..4)
            .map(|_| p.pick().map(|(s, c)| (s, c.payload[4..8][3])).unwrap())
            .collect();
        assert_eq!(
            picks,
            [
                (addr("198.19.240.0:10000"), 1),
                (addr("198.19.240.1:10001"), 2),
                (addr("198.19.240.2:10002"), 1),
                (addr("198.19.240.0:10000"), 2),
            ]
        );
        let mut all = Picker::new(Sources::Spoofed {
            count: SPOOFED_SOURCES,
        });
        all.update(vec![captured("198.18.2.2:1", "198.18.1.2:2", 1)]);
        let last = (0..SPOOFED_SOURCES).map(|_| all.pick().unwrap().0).last();
        assert_eq!(last, Some(addr("198.19.255.255:14095")));
    }

    #[test]
    fn as_captured_shares_between_flows_and_holds_back_the_newest() {
        let mut p = Picker::new(Sources::AsCaptured);
        p.update(vec![
            captured("198.18.2.2:51871", "198.18.1.2:51871", 1),
            captured("198.18.1.2:51871", "198.18.2.2:51871", 10),
            captured("198.18.2.2:51871", "198.18.1.2:51871", 2),
            captured("198.18.2.2:51871", "198.18.1.2:51871", 3),
        ]);
        let mut from_b = Vec::new();
        let mut from_a = Vec::new();
        for _ in 0..400 {
            let (src, c) = p.pick().unwrap();
            assert_eq!(src, c.src, "sent from where it came");
            if src == addr("198.18.2.2:51871") {
                from_b.push(c.payload[7]);
            } else {
                from_a.push(c.payload[7]);
            }
        }
        assert_eq!((from_b.len(), from_a.len()), (200, 200));
        // a's flow has one initiation: that one. b's has three: never
        // the newest (3), both older ones.
        assert!(from_a.iter().all(|s| *s == 10));
        assert!(!from_b.contains(&3), "{from_b:?}");
        let ones = from_b.iter().filter(|s| **s == 1).count();
        assert!(
            (50..=150).contains(&ones),
            "spread over both: {ones} of 200"
        );
    }
}
