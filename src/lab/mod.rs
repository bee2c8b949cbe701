//! The network-namespace lab: real Linux topologies for the demo
//! (`kith-lab demo`), the benchmark (`kith-lab bench`) and the end-to-end
//! tests (`tests/e2e_*.rs`).
//!
//! Owns: network namespaces, veth links, NAT routers (nftables), the kith
//! daemon processes it starts inside them, and the probes used to judge
//! them (ping, tcpdump captures, TCP transfers, iperf3). Must not: leak into
//! the daemon — nothing under `daemon`, `core` or `wire` uses this module.
//!
//! How a lab is used:
//! 1. [`Lab::new`] picks a unique prefix (`k` + 5 hex digits), sweeps
//!    the namespaces and scratch directories that dead (killed) labs left
//!    behind, and makes a scratch directory.
//! 2. [`Lab::host`] creates a namespace `<prefix>-<name>`; [`Lab::link`]
//!    joins two with a veth pair; [`Lab::nat_router`] builds a router
//!    namespace with an nftables NAT between a WAN link and a LAN bridge.
//! 3. [`Lab::spawn_kith`] writes a config and key file into the scratch
//!    directory and runs `kith up` in a namespace, its log going to a file;
//!    the returned [`KithNode`] can be killed, stopped and restarted.
//!    [`Lab::switch`] makes a bridge for segments of more than two hosts;
//!    [`topology::Pair`] is the two-node kith setup most callers want.
//! 4. The emulated internet: [`Lab::internet`] routes 198.18.0.0/15, one
//!    /24 per attached host or NAT router ([`Internet::attach`],
//!    [`Internet::nat_router`], [`Internet::renumber`] to move a host);
//!    [`LabDht::start_new`] runs `n` `kith dht-node`s on it (stop/start,
//!    [`LabDht::client`] for tests); [`topology::DhtPair`] is two nodes with
//!    no endpoints that meet through it. [`Internet::delay_uplink`] adds
//!    latency to an attached host's link ([`DelayLink`]: two TAP devices
//!    and a forwarder thread per direction; the kernel has no netem).
//! 5. Probes: [`Host::ping`], [`Host::wait_reachable`], [`Capture`]
//!    (tcpdump), [`transfer::tcp`] (hashed bulk TCP from threads that
//!    [`Host::run_in`] moves into a namespace with `setns`), [`iperf`],
//!    a daemon's counters ([`KithNode::metrics`], [`cpu_seconds`]).
//! 6. Other VPNs for the bench's comparison: [`peers::PeerTunnel`] runs
//!    VpnCloud or boringtun between two hosts with static peers.
//! 7. Attacks: [`flood`] replays captured handshake initiations at a set
//!    rate from spoofed sources or from the peers' own addresses.
//! 7. Dropping the lab kills every process in its namespaces and deletes
//!    them (veths vanish with them). When dropped during a panic, the scratch
//!    directory with configs and daemon logs is kept and its path printed.
//!
//! Everything needs root; a missing tool is reported with the Debian package
//! that provides it (`scripts/setup.sh` installs them all).

mod capture;
mod delay;
mod dht;
pub mod flood;
mod host;
mod internet;
pub mod iperf;
mod kith;
pub mod miniupnpd;
pub mod nat;
mod netns;
pub mod peers;
mod ping;
pub mod relay;
mod router;
mod switch;
mod sys;
pub mod topology;
pub mod transfer;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use capture::{Capture, Pcap};
pub use delay::DelayLink;
pub use dht::{DHT_PORT, LabDht};
pub use host::{Host, Iface};
pub use internet::{Internet, Subnet, UdpCut, Uplink};
pub use kith::{
    DiscoverySpec, KithNode, KithSpec, Metrics, MetricsSpec, NetworkSpec, PeerSpec, RelaySpec,
};
pub use ping::{PingStats, PingStream};
pub use router::{NatKind, Router, RouterSpec};
pub use switch::Switch;
pub use sys::cpu_seconds;

/// Everything that can go wrong while building or probing a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(
        "the lab needs root (network namespaces, veth, nftables, TUN): run as root, e.g. `sudo -E cargo test`"
    )]
    NotRoot,
    #[error("`{tool}` not found in PATH: install {package} (scripts/setup.sh does)")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        cmd: String,
        status: String,
        stderr: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} did not happen within {timeout:?}{detail}")]
    Timeout {
        what: String,
        timeout: Duration,
        /// Extra context, e.g. the tail of a daemon log (may be empty).
        detail: String,
    },
    #[error("kith in {netns} exited early ({status}); log {log}:\n{tail}")]
    DaemonExited {
        netns: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("could not understand the output of `{cmd}`: {detail}")]
    Parse { cmd: String, detail: String },
    #[error("interface name `{name}` is {len} bytes, Linux allows 15: use a shorter host name")]
    NameTooLong { name: String, len: usize },
}

impl LabError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

pub type Result<T, E = LabError> = std::result::Result<T, E>;

/// One topology: a set of namespaces sharing a unique prefix.
pub struct Lab {
    prefix: String,
    dir: PathBuf,
    namespaces: Mutex<Vec<String>>,
    keep_files: AtomicBool,
}

impl Lab {
    /// A lab with a fresh random prefix (`k` + 5 hex digits).
    pub fn new() -> Result<Self> {
        Self::with_prefix(&netns::random_prefix()?)
    }

    /// A lab with the given prefix. Its namespaces are `<prefix>-<host>`.
    pub fn with_prefix(prefix: &str) -> Result<Self> {
        sys::require_root()?;
        sys::require_tool("ip")?;
        netns::sweep_stale();
        netns::claim_prefix(prefix)?;
        let dir = netns::scratch_dir(prefix);
        std::fs::create_dir_all(&dir)
            .map_err(|e| LabError::io(format!("creating {}", dir.display()), e))?;
        Ok(Self {
            prefix: prefix.to_owned(),
            dir,
            namespaces: Mutex::new(Vec::new()),
            keep_files: AtomicBool::new(std::env::var_os("KITH_LAB_KEEP").is_some()),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The scratch directory: configs, keys, logs, captures.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keep the scratch directory (configs, logs, captures) after drop, as
    /// happens anyway when the lab is dropped during a panic or when
    /// `KITH_LAB_KEEP` is set in the environment.
    pub fn keep_files(&self) {
        self.keep_files.store(true, Ordering::Relaxed);
    }

    /// A new namespace `<prefix>-<name>` with `lo` up.
    pub fn host(&self, name: &str) -> Result<Host> {
        let netns = format!("{}-{name}", self.prefix);
        netns::create(&netns)?;
        self.namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(netns.clone());
        Ok(Host::new(name, &netns, &self.prefix))
    }

    /// A veth pair between `a` and `b`, addressed and up. Each end is named
    /// `<prefix>-<other host>` inside its namespace, e.g. `k1f2e3-b` in `a`.
    pub fn link(&self, a: &Host, a_addr: &str, b: &Host, b_addr: &str) -> Result<(Iface, Iface)> {
        link(a, a_addr, b, b_addr)
    }

    /// A NAT router: a namespace joined to `spec.upstream` by a WAN link and
    /// owning a LAN bridge; attach LAN hosts with [`Router::attach`].
    pub fn nat_router(&self, spec: &RouterSpec<'_>) -> Result<Router> {
        router::build(self, spec)
    }

    /// The emulated internet (namespace `<prefix>-inet`): hosts, NAT
    /// routers and the lab DHT attach to it, each in its own /24.
    pub fn internet(&self) -> Result<Internet> {
        Internet::new(self)
    }

    /// A switch (bridge) in a new namespace `<prefix>-<name>`, for segments
    /// with more than two hosts; attach them with [`Switch::attach`].
    pub fn switch(&self, name: &str) -> Result<Switch> {
        let host = self.host(name)?;
        Switch::create(&host, "sw0", None)
    }

    /// Writes `spec`'s config and key file into the scratch directory and
    /// starts `kith up` (the binary at `bin`) inside `host`.
    pub fn spawn_kith(&self, host: &Host, bin: &Path, spec: KithSpec) -> Result<KithNode> {
        KithNode::spawn(&self.dir, host, host.name(), bin, spec)
    }

    /// Like [`Lab::spawn_kith`], for a second daemon (another network) in
    /// the same host: its files are named `name` instead of the host's.
    pub fn spawn_kith_named(
        &self,
        host: &Host,
        name: &str,
        bin: &Path,
        spec: KithSpec,
    ) -> Result<KithNode> {
        KithNode::spawn(&self.dir, host, name, bin, spec)
    }
}

/// [`Lab::link`], for helpers that hold hosts but not the lab.
pub(crate) fn link(a: &Host, a_addr: &str, b: &Host, b_addr: &str) -> Result<(Iface, Iface)> {
    let a_if = a.iface_name_towards(b)?;
    let b_if = b.iface_name_towards(a)?;
    sys::run(sys::ip(a.netns()).args([
        "link",
        "add",
        &a_if,
        "type",
        "veth",
        "peer",
        "name",
        &b_if,
        "netns",
        b.netns(),
    ]))?;
    let a_end = a.configure_iface(&a_if, Some(a_addr))?;
    let b_end = b.configure_iface(&b_if, Some(b_addr))?;
    Ok((a_end, b_end))
}

impl Drop for Lab {
    fn drop(&mut self) {
        let namespaces =
            std::mem::take(self.namespaces.get_mut().unwrap_or_else(|e| e.into_inner()));
        for ns in namespaces.iter().rev() {
            netns::destroy(ns);
        }
        netns::release_prefix(&self.prefix);
        let failed = std::thread::panicking();
        if failed || self.keep_files.load(Ordering::Relaxed) {
            eprintln!(
                "kith-lab: lab {}{}; configs and logs kept in {}",
                self.prefix,
                if failed { " failed" } else { "" },
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
