//! A home router that answers UPnP IGD, NAT-PMP and PCP: an nftables
//! masquerade router running `miniupnpd` (Debian `miniupnpd-nftables`), and
//! the RFC 5780 STUN server (`coturn`) its start-up check needs.
//!
//! Why the STUN server: miniupnpd counts 198.18.0.0/15 (the lab's internet)
//! as reserved and refuses every mapping on a reserved WAN address unless
//! its STUN check (`ext_perform_stun=yes`) shows the address is reachable
//! from outside without filtering. The check sends four Binding requests
//! with CHANGE-REQUEST (none, port, address, both), so the server must
//! listen on two addresses: [`Coturn::start`] runs `turnserver --stun-only`
//! on a primary and an alternate address of one "internet" host.
//!
//! How [`UpnpRouter::build`] lays out the router namespace:
//! - a WAN veth to the upstream host and a LAN bridge `lan`, as
//!   [`super::Lab::nat_router`] does;
//! - one nftables table `inet kithupnp` with masquerade, a forward chain
//!   that drops what is not established or from the LAN, and the empty
//!   chains miniupnpd fills (`miniupnpd` for forward accepts,
//!   `prerouting_miniupnpd` for DNAT, `postrouting_miniupnpd`): miniupnpd
//!   2.3 expects them to exist (its `nft_init.sh`), named in its config;
//! - `miniupnpd -d` (foreground, logging to `<lab dir>/<name>-miniupnpd.log`)
//!   with UPnP, NAT-PMP/PCP, `secure_mode` and an allow rule for the LAN.
//!
//! Nothing is installed system-wide and no system service is started: the
//! config, pid and lease files live in the lab's scratch directory.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::host::parse_cidr_addr;
use super::router::load_ruleset;
use super::switch::Switch;
use super::{Host, Iface, Lab, LabError, NatKind, Result, Router, sys};

/// The nftables table the router's rules (and miniupnpd's) live in.
pub const TABLE: &str = "kithupnp";
const LAN_BRIDGE: &str = "lan";

/// What to build. Addresses are CIDR, as for [`super::RouterSpec`].
#[derive(Debug, Clone)]
pub struct UpnpRouterSpec<'a> {
    pub name: &'a str,
    pub upstream: &'a Host,
    pub upstream_addr: &'a str,
    pub wan_addr: &'a str,
    pub lan_addr: &'a str,
    /// The RFC 5780 STUN server miniupnpd checks its WAN address with
    /// (a [`Coturn`] on the upstream side).
    pub stun: SocketAddrV4,
}

/// A running miniupnpd router. Killing miniupnpd on drop (the lab kills it
/// anyway when it deletes the namespace).
#[derive(Debug)]
pub struct UpnpRouter {
    pub router: Router,
    /// The upstream host's end of the WAN link.
    pub upstream: Iface,
    child: Child,
    log: PathBuf,
}

impl UpnpRouter {
    /// Builds the router and starts miniupnpd; returns once it listens for
    /// NAT-PMP/PCP and its STUN check enabled port forwarding.
    pub fn build(lab: &Lab, spec: &UpnpRouterSpec<'_>) -> Result<Self> {
        sys::require_tool("nft")?;
        require("miniupnpd", "miniupnpd-nftables")?;
        let host = lab.host(spec.name)?;
        let (upstream, wan) = lab.link(spec.upstream, spec.upstream_addr, &host, spec.wan_addr)?;
        host.enable_forwarding()?;
        host.add_default_route(parse_cidr_addr(spec.upstream_addr)?)?;
        let lan = Switch::create(&host, LAN_BRIDGE, Some(spec.lan_addr))?;
        load_ruleset(&host, &ruleset(&wan.name, LAN_BRIDGE))?;

        let lan_net = lan_network(spec.lan_addr)?;
        let dir = lab.dir();
        let conf = dir.join(format!("{}-miniupnpd.conf", spec.name));
        let config = config(&wan.name, &lan_net, spec.stun, dir, spec.name);
        std::fs::write(&conf, config)
            .map_err(|e| LabError::io(format!("writing {}", conf.display()), e))?;
        let log = dir.join(format!("{}-miniupnpd.log", spec.name));
        let log_file = std::fs::File::create(&log)
            .map_err(|e| LabError::io(format!("creating {}", log.display()), e))?;
        let log_err = log_file
            .try_clone()
            .map_err(|e| LabError::io(format!("opening {}", log.display()), e))?;
        let pid = dir.join(format!("{}-miniupnpd.pid", spec.name));
        let mut cmd = host.command("miniupnpd");
        cmd.arg("-d")
            .arg("-f")
            .arg(&conf)
            .arg("-P")
            .arg(&pid)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err);
        let child = cmd
            .spawn()
            .map_err(|e| LabError::io(format!("starting `{}`", sys::describe(&cmd)), e))?;
        let mut router = Self {
            router: Router {
                host,
                kind: NatKind::Masquerade,
                wan,
                lan,
            },
            upstream,
            child,
            log,
        };
        router.wait_ready(Duration::from_secs(10))?;
        Ok(router)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let log = self.log_text();
            if log.contains("Listening for NAT-PMP/PCP traffic")
                && log.contains("Port forwarding is now enabled")
            {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(LabError::DaemonExited {
                    netns: self.router.host.netns().to_owned(),
                    status: status.to_string(),
                    log: self.log.clone(),
                    tail: tail(&log),
                });
            }
            if start.elapsed() > timeout {
                return Err(LabError::Timeout {
                    what: format!(
                        "miniupnpd in {} enabling port forwarding (is the STUN server up and RFC 5780-capable?)",
                        self.router.host.netns()
                    ),
                    timeout,
                    detail: format!("; log {}:\n{}", self.log.display(), tail(&log)),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// miniupnpd's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The path of miniupnpd's log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The router's public address.
    pub fn public_ip(&self) -> Option<Ipv4Addr> {
        self.router.public_ip()
    }

    /// `nft list table inet kithupnp` in the router.
    pub fn ruleset(&self) -> Result<String> {
        self.router
            .host
            .exec("nft", &["list", "table", "inet", TABLE])
    }

    /// The UDP port forwards miniupnpd installed: (external port, internal
    /// address), from its DNAT rules.
    pub fn udp_redirects(&self) -> Result<Vec<(u16, SocketAddrV4)>> {
        Ok(parse_redirects(&self.ruleset()?))
    }
}

impl Drop for UpnpRouter {
    fn drop(&mut self) {
        // SIGTERM lets miniupnpd remove its rules; the lab deletes the
        // namespace right after anyway.
        sys::terminate(&mut self.child, Duration::from_secs(2));
    }
}

/// An RFC 5780 STUN server: coturn's `turnserver --stun-only` listening on
/// `primary` and `alternate` (two addresses of `host`), port 3478 (and 3479
/// for CHANGE-REQUEST port changes).
#[derive(Debug)]
pub struct Coturn {
    child: Child,
    log: PathBuf,
    pub primary: SocketAddrV4,
}

/// coturn's default STUN port.
pub const STUN_PORT: u16 = 3478;

impl Coturn {
    pub fn start(lab: &Lab, host: &Host, primary: Ipv4Addr, alternate: Ipv4Addr) -> Result<Self> {
        require("turnserver", "coturn")?;
        let dir = lab.dir();
        let log = dir.join(format!("{}-coturn.log", host.name()));
        let log_file = std::fs::File::create(&log)
            .map_err(|e| LabError::io(format!("creating {}", log.display()), e))?;
        let pid = dir.join(format!("{}-coturn.pid", host.name()));
        let db = dir.join(format!("{}-coturn.db", host.name()));
        let mut cmd = host.command("turnserver");
        cmd.args(["-n", "--stun-only", "--no-tls", "--no-dtls", "--no-cli"])
            .args(["--no-auth", "--no-software-attribute", "--simple-log"])
            .args(["--log-file", "stdout"])
            .args(["--listening-ip", &primary.to_string()])
            .args(["--listening-ip", &alternate.to_string()])
            .arg("--pidfile")
            .arg(&pid)
            .arg("--userdb")
            .arg(&db)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .map_err(|e| LabError::io(format!("starting `{}`", sys::describe(&cmd)), e))?;
        let mut coturn = Self {
            child,
            log,
            primary: SocketAddrV4::new(primary, STUN_PORT),
        };
        // Ready once both addresses listen (the alternate port too).
        let start = Instant::now();
        let timeout = Duration::from_secs(10);
        loop {
            let ss = host.exec("ss", &["-Hulnp"]).unwrap_or_default();
            let ready = [primary, alternate].iter().all(|ip| {
                ss.contains(&format!("{ip}:{STUN_PORT}"))
                    && ss.contains(&format!("{ip}:{}", STUN_PORT + 1))
            });
            if ready {
                return Ok(coturn);
            }
            if let Ok(Some(status)) = coturn.child.try_wait() {
                return Err(LabError::DaemonExited {
                    netns: host.netns().to_owned(),
                    status: status.to_string(),
                    log: coturn.log.clone(),
                    tail: tail(&std::fs::read_to_string(&coturn.log).unwrap_or_default()),
                });
            }
            if start.elapsed() > timeout {
                return Err(LabError::Timeout {
                    what: format!("coturn listening on {primary} and {alternate}"),
                    timeout,
                    detail: format!("; log {}", coturn.log.display()),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn require(tool: &'static str, package: &'static str) -> Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(Into::into))
        .any(|dir| dir.join(tool).is_file());
    if found {
        Ok(())
    } else {
        Err(LabError::MissingTool { tool, package })
    }
}

/// The router's nftables rules: masquerade, a LAN-out/established-in
/// forward policy, and the chains miniupnpd manages.
pub fn ruleset(wan: &str, lan: &str) -> String {
    format!(
        "table inet {TABLE} {{\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy drop;\n\
         \t\tct state established,related accept\n\
         \t\tiifname \"{lan}\" oifname \"{wan}\" accept\n\
         \t\tjump miniupnpd\n\
         \t}}\n\
         \tchain miniupnpd {{\n\
         \t}}\n\
         \tchain prerouting {{\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\tjump prerouting_miniupnpd\n\
         \t}}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tjump postrouting_miniupnpd\n\
         \t\toifname \"{wan}\" masquerade\n\
         \t}}\n\
         \tchain prerouting_miniupnpd {{\n\
         \t}}\n\
         \tchain postrouting_miniupnpd {{\n\
         \t}}\n\
         }}\n"
    )
}

/// miniupnpd.conf for a router whose WAN is `wan` and LAN is `lan_net`.
pub fn config(wan: &str, lan_net: &str, stun: SocketAddrV4, dir: &Path, name: &str) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "ext_ifname={wan}");
    let _ = writeln!(c, "listening_ip={LAN_BRIDGE}");
    let _ = writeln!(c, "http_port=0");
    let _ = writeln!(c, "enable_upnp=yes");
    let _ = writeln!(c, "enable_natpmp=yes");
    let _ = writeln!(c, "secure_mode=yes");
    let _ = writeln!(c, "system_uptime=yes");
    // 198.18.0.0/15 is "reserved" to miniupnpd: prove it is reachable.
    let _ = writeln!(c, "ext_perform_stun=yes");
    let _ = writeln!(c, "ext_stun_host={}", stun.ip());
    let _ = writeln!(c, "ext_stun_port={}", stun.port());
    let _ = writeln!(c, "upnp_table_name={TABLE}");
    let _ = writeln!(c, "upnp_nat_table_name={TABLE}");
    let _ = writeln!(c, "upnp_forward_chain=miniupnpd");
    let _ = writeln!(c, "upnp_nat_chain=prerouting_miniupnpd");
    let _ = writeln!(c, "upnp_nat_postrouting_chain=postrouting_miniupnpd");
    let _ = writeln!(
        c,
        "lease_file={}",
        dir.join(format!("{name}-upnp.leases")).display()
    );
    let _ = writeln!(c, "min_lifetime=120");
    let _ = writeln!(c, "max_lifetime=86400");
    let _ = writeln!(c, "uuid=6b1c2f0e-6b69-7468-0000-{:012x}", fnv(name));
    let _ = writeln!(c, "allow 1024-65535 {lan_net} 1024-65535");
    let _ = writeln!(c, "deny 0-65535 0.0.0.0/0 0-65535");
    c
}

/// A small stable hash for the device UUID.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) & 0xffff_ffff_ffff
}

/// `192.168.7.1/24` → `192.168.7.0/24`.
fn lan_network(cidr: &str) -> Result<String> {
    let addr = parse_cidr_addr(cidr)?;
    let len: u32 = cidr
        .split('/')
        .nth(1)
        .and_then(|l| l.parse().ok())
        .filter(|l| *l <= 32)
        .ok_or_else(|| LabError::Parse {
            cmd: "address".into(),
            detail: format!("`{cidr}` has no prefix length"),
        })?;
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    Ok(format!("{}/{len}", Ipv4Addr::from(u32::from(addr) & mask)))
}

/// DNAT rules miniupnpd writes look like
/// `iif "k1-net" @nh,72,8 0x11 th dport 40000 dnat ip to 192.168.7.2:40000`
/// (0x11: the IPv4 protocol byte for UDP).
fn parse_redirects(ruleset: &str) -> Vec<(u16, SocketAddrV4)> {
    ruleset
        .lines()
        .filter(|l| l.contains("0x11") && l.contains("dnat"))
        .filter_map(|l| {
            let dport = l.split("dport ").nth(1)?.split_whitespace().next()?;
            let to = l.split("dnat ip to ").nth(1)?.split_whitespace().next()?;
            Some((dport.parse().ok()?, to.parse().ok()?))
        })
        .collect()
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lan_network_masks_the_host_part() {
        assert_eq!(lan_network("192.168.7.1/24").unwrap(), "192.168.7.0/24");
        assert_eq!(lan_network("10.1.2.3/8").unwrap(), "10.0.0.0/8");
        assert!(lan_network("10.1.2.3").is_err());
    }

    #[test]
    fn redirects_from_miniupnpd_rules() {
        let rules = "\t\tiif \"k1-net\" th dport 40000 @nh,128,32 0xc0a80702 @nh,72,8 0x11 accept\n\
                     \t\tiif \"k1-net\" @nh,72,8 0x11 th dport 40000 dnat ip to 192.168.7.2:40000\n\
                     \t\tiif \"k1-net\" @nh,72,8 0x6 th dport 80 dnat ip to 192.168.7.2:80\n";
        assert_eq!(
            parse_redirects(rules),
            [(40000, "192.168.7.2:40000".parse().unwrap())]
        );
    }

    #[test]
    fn config_names_the_chains_and_stun() {
        let c = config(
            "k1-net",
            "192.168.7.0/24",
            "198.18.1.1:3478".parse().unwrap(),
            Path::new("/tmp/x"),
            "rtr",
        );
        assert!(c.contains("ext_stun_host=198.18.1.1\n"));
        assert!(c.contains("upnp_nat_chain=prerouting_miniupnpd\n"));
        assert!(c.contains("allow 1024-65535 192.168.7.0/24 1024-65535\n"));
        assert!(c.contains("enable_natpmp=yes\n"));
    }
}
