//! Other VPNs in the lab, for the bench's side-by-side rows: VpnCloud and
//! boringtun (WireGuard in user space) between two hosts, so kith is
//! compared with peers on the same link in the same run, not only with the
//! raw link.
//!
//! Owns: starting and stopping those daemons in two namespaces, their
//! per-run keys and static peer settings, and waiting for their tunnel.
//! Must not: build them (`scripts/bench.sh` does, into a cache directory
//! outside the repo) or judge them (the bench measures all rows alike).
//!
//! Each side is configured the way an operator of that VPN would for a
//! two-node static setup, with nothing that searches for peers:
//! - VpnCloud: flags only, fresh key pairs from `vpncloud genkey`, each
//!   side trusting both keys, the other side as its one `--peer`, its own
//!   overlay /32 claimed, port forwarding off, ChaCha20-Poly1305 as the
//!   only algorithm (the AEAD kith and WireGuard use, so the rows compare
//!   the same cipher); a default route via the other side while it runs
//!   (it needs one to find its own address);
//! - boringtun: `boringtun-cli --foreground` creates the TUN device; keys,
//!   port, peer, endpoint and allowed IPs go in over its UAPI socket
//!   (`/var/run/wireguard/<ifname>.sock`, the protocol `wg` speaks), fresh
//!   X25519 keys per run.
//!
//! For both, the overlay address and the MTU are set with `ip`, as
//! `wg-quick` does; both tunnels get MTU 1420, kith's default and
//! WireGuard's usual value, so no row pays for fragmentation another does
//! not.

use std::io::{BufRead, BufReader, Write as _};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::host::iface_name;
use super::{Host, LabError, Result, sys};
use crate::identity::SecretKey;

/// The MTU of every peer tunnel (kith's default).
pub const TUNNEL_MTU: u16 = 1420;

/// A VPN the bench compares kith with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerVpn {
    VpnCloud,
    Boringtun,
}

impl PeerVpn {
    pub const ALL: [PeerVpn; 2] = [PeerVpn::VpnCloud, PeerVpn::Boringtun];

    /// The name in the bench's table.
    pub fn label(self) -> &'static str {
        match self {
            Self::VpnCloud => "VpnCloud",
            Self::Boringtun => "boringtun",
        }
    }

    /// The executable `cargo install` puts in `<root>/bin`.
    pub fn binary(self) -> &'static str {
        match self {
            Self::VpnCloud => "vpncloud",
            Self::Boringtun => "boringtun-cli",
        }
    }

    /// The overlay addresses of a and b: a /24 of 100.64.0.0/10 apart from
    /// kith's 100.96.0.0/16 and from the other peer's.
    pub fn overlay(self) -> (Ipv4Addr, Ipv4Addr) {
        let third = match self {
            Self::VpnCloud => 97,
            Self::Boringtun => 98,
        };
        (
            Ipv4Addr::new(100, third, 0, 1),
            Ipv4Addr::new(100, third, 0, 2),
        )
    }

    /// The UDP port both sides listen on (kith's is 51871).
    fn port(self) -> u16 {
        match self {
            Self::VpnCloud => 3210,
            Self::Boringtun => 51820,
        }
    }

    /// The version line the binary prints, e.g. `VpnCloud v2.3.0`.
    pub fn version(self, bin: &Path) -> Result<String> {
        let out = sys::run(Command::new(bin).arg("--version"))?;
        Ok(out.lines().next().unwrap_or_default().trim().to_owned())
    }
}

/// One side's daemon.
struct Daemon {
    host: Host,
    child: Child,
    /// Its command line, for errors.
    cmd: String,
    log: PathBuf,
    /// boringtun's UAPI socket, removed after the daemon is stopped.
    socket: Option<PathBuf>,
    /// A default route this side got for the daemon's sake, removed with it.
    default_route: bool,
}

/// A peer VPN running between two hosts; stopped when dropped.
pub struct PeerTunnel {
    pub kind: PeerVpn,
    a: Daemon,
    b: Daemon,
}

/// How long a peer daemon gets to create its interface.
const START_TIMEOUT: Duration = Duration::from_secs(10);

impl PeerTunnel {
    /// Starts `kind` (the executable `bin`) on `a` and `b`, which reach each
    /// other at `a_ip` and `b_ip`; logs go to `dir/<binary>-<host>.log`.
    /// Returns once both interfaces are up with their overlay address (not
    /// once the tunnel carries traffic: see [`PeerTunnel::wait_tunnel`]).
    pub fn start(
        dir: &Path,
        kind: PeerVpn,
        bin: &Path,
        (a, a_ip): (&Host, Ipv4Addr),
        (b, b_ip): (&Host, Ipv4Addr),
    ) -> Result<Self> {
        let (a, b) = match kind {
            PeerVpn::VpnCloud => vpncloud::start(dir, bin, (a, a_ip), (b, b_ip))?,
            PeerVpn::Boringtun => boringtun::start(dir, bin, (a, a_ip), (b, b_ip))?,
        };
        Ok(Self { kind, a, b })
    }

    /// The daemons' process ids (a, b).
    pub fn pids(&self) -> [u32; 2] {
        [self.a.child.id(), self.b.child.id()]
    }

    /// Waits until a ping over the overlay passes both ways.
    pub fn wait_tunnel(&mut self, timeout: Duration) -> Result<()> {
        let (a_ip, b_ip) = self.kind.overlay();
        let start = Instant::now();
        let result = self
            .a
            .host
            .wait_reachable(IpAddr::V4(b_ip), timeout)
            .and_then(|_| {
                let left = timeout.saturating_sub(start.elapsed());
                self.b.host.wait_reachable(IpAddr::V4(a_ip), left)
            });
        result.map(drop).map_err(|e| {
            self.check_running()
                .err()
                .unwrap_or_else(|| LabError::Timeout {
                    what: format!("a ping over {} both ways", self.kind.label()),
                    timeout,
                    detail: format!(" ({e}); logs in {}", self.a.log.display()),
                })
        })
    }

    /// An error, with the log's tail, if either daemon has exited.
    pub fn check_running(&mut self) -> Result<()> {
        self.a.check_running()?;
        self.b.check_running()
    }
}

impl Daemon {
    /// Runs `cmd` (the `kind` daemon in `host`), logging to
    /// `dir/<binary>-<host>.log`.
    fn spawn(dir: &Path, kind: PeerVpn, host: &Host, mut cmd: Command) -> Result<Self> {
        let log = dir.join(format!("{}-{}.log", kind.binary(), host.name()));
        let described = sys::describe(&cmd);
        let marker = format!("starting {described} in {}", host.netns());
        let child = sys::spawn_logged(&mut cmd, &log, &marker)?;
        Ok(Self {
            host: host.clone(),
            child,
            cmd: described,
            log,
            socket: None,
            default_route: false,
        })
    }

    fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(LabError::Command {
                cmd: self.cmd.clone(),
                status: format!("exited early, {status}"),
                stderr: format!("log {}:\n{}", self.log.display(), tail(&self.log, 20)),
            }),
            Err(e) => Err(LabError::io("checking on a peer VPN daemon", e)),
        }
    }

    /// Polls `ready` until it holds; an error if the daemon exits first or
    /// [`START_TIMEOUT`] passes, with `what` and the log's tail.
    fn wait_for(&mut self, what: &str, mut ready: impl FnMut(&Self) -> bool) -> Result<()> {
        let start = Instant::now();
        while !ready(self) {
            self.check_running()?;
            if start.elapsed() > START_TIMEOUT {
                return Err(LabError::Timeout {
                    what: format!("{what} in {}", self.host.netns()),
                    timeout: START_TIMEOUT,
                    detail: format!("; log {}:\n{}", self.log.display(), tail(&self.log, 20)),
                });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Ok(())
    }

    /// Gives the daemon's TUN device `dev` its overlay address (a /24) and
    /// MTU and brings it up, as `wg-quick` would; waits for the address.
    fn configure(&mut self, dev: &str, overlay: Ipv4Addr) -> Result<()> {
        let host = self.host.clone();
        host.ip(&["addr", "add", &format!("{overlay}/24"), "dev", dev])?;
        host.ip(&["link", "set", dev, "mtu", &TUNNEL_MTU.to_string(), "up"])?;
        self.wait_for(&format!("{dev} with {overlay}"), |d| {
            d.host.addresses(dev).contains(&overlay)
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM first: boringtun removes its socket and device on a
        // clean exit.
        sys::terminate(&mut self.child, Duration::from_secs(2));
        if let Some(socket) = &self.socket {
            let _ = std::fs::remove_file(socket);
        }
        if self.default_route {
            let _ = self.host.ip(&["route", "del", "default"]);
        }
    }
}

/// The last `lines` lines of a log file.
fn tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

mod vpncloud {
    use super::*;

    /// The TUN device's name in each host (namespaces keep them apart).
    const DEV: &str = "vpncloud0";

    /// A key pair from `vpncloud genkey`: (private, public).
    fn genkey(bin: &Path) -> Result<(String, String)> {
        let mut cmd = Command::new(bin);
        cmd.arg("genkey");
        let out = sys::run(&mut cmd)?;
        let field = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        match (field("Private key:"), field("Public key:")) {
            (Some(private), Some(public)) => Ok((private, public)),
            _ => Err(LabError::Parse {
                cmd: sys::describe(&cmd),
                detail: "no `Private key:` and `Public key:` lines".into(),
            }),
        }
    }

    pub(super) fn start(
        dir: &Path,
        bin: &Path,
        (a, a_ip): (&Host, Ipv4Addr),
        (b, b_ip): (&Host, Ipv4Addr),
    ) -> Result<(Daemon, Daemon)> {
        let kind = PeerVpn::VpnCloud;
        let keys = [genkey(bin)?, genkey(bin)?];
        let trusted = format!("{},{}", keys[0].1, keys[1].1);
        let (a_overlay, b_overlay) = kind.overlay();
        let side = |host: &Host, overlay: Ipv4Addr, other_ip: Ipv4Addr, key: &(String, String)| {
            // VpnCloud finds its own address by routing towards 8.8.8.8
            // (a UDP connect: nothing is sent) and panics without a
            // default route; one via the other side keeps it in the lab.
            host.add_default_route(other_ip)?;
            let mut cmd = host.command(bin);
            // No `--ip`: 2.3.0 writes the address with an ioctl that
            // garbles it on this kernel (100.97.0.1/24 becomes
            // 0.1.0.0/8), so the address is set with `ip` below, and its
            // own /32 claimed explicitly (its auto-claim reads the same
            // garbled address).
            cmd.args(["--type", "tun", "--device", DEV])
                .args(["--listen", &kind.port().to_string()])
                .args(["--peer", &format!("{other_ip}:{}", kind.port())])
                .args(["--no-auto-claim", "--claim", &format!("{overlay}/32")])
                .args(["--private-key", &key.0, "--public-key", &key.1])
                .args(["--trusted-key", &trusted])
                .args(["--algorithm", "chacha20", "--no-port-forwarding"]);
            let mut daemon = Daemon::spawn(dir, kind, host, cmd)?;
            daemon.default_route = true;
            // It sets the device's MTU itself right after creating it
            // (from the default route's device); ours comes after that.
            daemon.wait_for("VpnCloud setting its MTU", |d| {
                let log = std::fs::read_to_string(&d.log).unwrap_or_default();
                log.contains("Setting MTU") || log.contains("optimal MTU")
            })?;
            daemon.configure(DEV, overlay)?;
            Ok(daemon)
        };
        Ok((
            side(a, a_overlay, b_ip, &keys[0])?,
            side(b, b_overlay, a_ip, &keys[1])?,
        ))
    }
}

mod boringtun {
    use super::*;

    /// Where boringtun (like wireguard-go) puts its UAPI sockets; shared by
    /// every namespace, so device names carry the lab's prefix.
    const SOCKET_DIR: &str = "/var/run/wireguard";

    pub(super) fn start(
        dir: &Path,
        bin: &Path,
        (a, a_ip): (&Host, Ipv4Addr),
        (b, b_ip): (&Host, Ipv4Addr),
    ) -> Result<(Daemon, Daemon)> {
        let kind = PeerVpn::Boringtun;
        let key = || SecretKey::generate().map_err(|e| LabError::io("key", e.into()));
        let keys = [key()?, key()?];
        let (a_overlay, b_overlay) = kind.overlay();
        // One side: its host, overlay address and key; the other side's
        // overlay address, underlay address and key.
        let side =
            |host: &Host,
             overlay: Ipv4Addr,
             key: &SecretKey,
             (other_overlay, other_ip, other_key): (Ipv4Addr, Ipv4Addr, &SecretKey)| {
                let dev = iface_name(host.prefix(), &format!("wg{}", host.name()))?;
                let mut cmd = host.command(bin);
                cmd.args(["--foreground", "--disable-drop-privileges", &dev]);
                let mut daemon = Daemon::spawn(dir, kind, host, cmd)?;
                let socket = Path::new(SOCKET_DIR).join(format!("{dev}.sock"));
                daemon.socket = Some(socket.clone());
                daemon.wait_for(
                    &format!("boringtun's UAPI socket {}", socket.display()),
                    |_| UnixStream::connect(&socket).is_ok(),
                )?;
                // WireGuard's cross-platform UAPI: `set=1`, then key=value
                // lines, a blank line; the answer is `errno=0`.
                let request = format!(
                    "set=1\nprivate_key={}\nlisten_port={}\nreplace_peers=true\n\
                 public_key={}\nendpoint={other_ip}:{}\nreplace_allowed_ips=true\n\
                 allowed_ip={other_overlay}/32\n\n",
                    hex(&*key.x25519()),
                    kind.port(),
                    hex(&other_key.public().x25519()),
                    kind.port(),
                );
                uapi_set(&socket, &request).map_err(|e| LabError::Command {
                    cmd: format!("UAPI set on {}", socket.display()),
                    status: "failed".into(),
                    stderr: e,
                })?;
                daemon.configure(&dev, overlay)?;
                Ok(daemon)
            };
        Ok((
            side(a, a_overlay, &keys[0], (b_overlay, b_ip, &keys[1]))?,
            side(b, b_overlay, &keys[1], (a_overlay, a_ip, &keys[0]))?,
        ))
    }

    /// Sends one UAPI `set` request; an error with the daemon's answer
    /// unless it says `errno=0`.
    fn uapi_set(socket: &Path, request: &str) -> std::result::Result<(), String> {
        let mut stream = UnixStream::connect(socket).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        stream
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        for line in BufReader::new(stream).lines() {
            let line = line.map_err(|e| e.to_string())?;
            if line.is_empty() {
                break;
            }
            answer.push_str(&line);
            answer.push('\n');
        }
        if answer.lines().any(|l| l == "errno=0") {
            Ok(())
        } else {
            Err(format!("answer: {answer:?}"))
        }
    }
}
