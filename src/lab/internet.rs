//! The emulated internet: one namespace (`<prefix>-inet`) that routes
//! 198.18.0.0/15 between point-to-point links, one /24 per attachment.
//!
//! Everything "public" hangs off it: hosts with public addresses
//! ([`Internet::attach`]), the lab DHT ([`super::LabDht`]) and NAT routers
//! for home sites ([`Internet::nat_router`]). Attachment `n` gets the
//! subnet [`Subnet`]`(n)`: the internet's end is `.1` (the attached host's
//! default gateway), the host's end `.2`. A host moves to a fresh subnet with
//! [`Internet::renumber`], as a laptop does when it changes networks, and
//! gets latency on its link with [`Internet::delay_uplink`].

use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Duration;

use super::router::{self, NatKind, Router, RouterSpec};
use super::{DelayLink, Host, Iface, Lab, LabError, Result};

/// The name of the internet's namespace inside a lab (`<prefix>-inet`).
pub const INTERNET_HOST: &str = "inet";

/// One /24 of the emulated internet: `Subnet(n)` is the `n`-th /24 of
/// 198.18.0.0/15 (1 ≤ n ≤ 511), e.g. `Subnet(3)` = 198.18.3.0/24 and
/// `Subnet(257)` = 198.19.1.0/24.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet(pub u16);

impl Subnet {
    /// The address `.host` in this subnet.
    pub fn addr(self, host: u8) -> Ipv4Addr {
        let [hi, lo] = self.0.to_be_bytes();
        Ipv4Addr::new(198, 18 + hi, lo, host)
    }

    /// `a.b.c.host/24`.
    pub fn cidr(self, host: u8) -> String {
        format!("{}/24", self.addr(host))
    }

    /// The internet's end, `.1`: the attached host's gateway.
    pub fn gateway(self) -> Ipv4Addr {
        self.addr(1)
    }

    /// `a.b.c.0/24`.
    pub fn network(self) -> String {
        format!("{}/24", self.addr(0))
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.network())
    }
}

/// The last usable subnet index (198.19.255.0/24).
const LAST_SUBNET: u16 = 511;

/// The internet router. Cheap to share by reference; the [`Lab`] owns the
/// namespace.
#[derive(Debug)]
pub struct Internet {
    host: Host,
    next: Mutex<u16>,
}

/// A host's link to the internet.
#[derive(Debug, Clone)]
pub struct Uplink {
    /// The attached host's end.
    pub iface: Iface,
    /// The internet's end (named after the attached host).
    pub gateway_iface: Iface,
    /// The subnet the link is in now.
    pub subnet: Subnet,
}

impl Uplink {
    /// The attached host's public address (`.2` of its subnet).
    pub fn addr(&self) -> Ipv4Addr {
        self.subnet.addr(2)
    }

    pub fn host(&self) -> &Host {
        &self.iface.host
    }
}

impl Internet {
    /// Creates the `inet` namespace with forwarding on.
    pub fn new(lab: &Lab) -> Result<Self> {
        let host = lab.host(INTERNET_HOST)?;
        host.enable_forwarding()?;
        Ok(Self {
            host,
            next: Mutex::new(1),
        })
    }

    /// The internet's own namespace (for captures, or to cut links).
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The next unused /24.
    pub fn next_subnet(&self) -> Result<Subnet> {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        if *next > LAST_SUBNET {
            return Err(LabError::Parse {
                cmd: "allocating an internet subnet".into(),
                detail: format!("all {LAST_SUBNET} /24s of 198.18.0.0/15 are in use"),
            });
        }
        let subnet = Subnet(*next);
        *next += 1;
        Ok(subnet)
    }

    /// Links `host` to the internet in a fresh /24 (host `.2`, internet
    /// `.1`) and makes the internet its default gateway.
    pub fn attach(&self, host: &Host) -> Result<Uplink> {
        let subnet = self.next_subnet()?;
        let (gateway_iface, iface) =
            super::link(&self.host, &subnet.cidr(1), host, &subnet.cidr(2))?;
        host.add_default_route(subnet.gateway())?;
        Ok(Uplink {
            iface,
            gateway_iface,
            subnet,
        })
    }

    /// Moves an attached host to a fresh /24: its old address and the
    /// internet's old gateway address go away, so packets to the old address
    /// find no route. Returns the host's new address.
    pub fn renumber(&self, uplink: &mut Uplink) -> Result<Ipv4Addr> {
        let old = uplink.subnet;
        let new = self.next_subnet()?;
        let host = uplink.iface.host.clone();
        let (dev, gw_dev) = (uplink.iface.name.clone(), uplink.gateway_iface.name.clone());
        self.host
            .ip(&["addr", "add", &new.cidr(1), "dev", &gw_dev])?;
        host.ip(&["addr", "add", &new.cidr(2), "dev", &dev])?;
        host.ip(&["addr", "del", &old.cidr(2), "dev", &dev])?;
        host.add_default_route(new.gateway())?;
        self.host
            .ip(&["addr", "del", &old.cidr(1), "dev", &gw_dev])?;
        uplink.subnet = new;
        uplink.iface.addr = Some(new.addr(2));
        uplink.gateway_iface.addr = Some(new.gateway());
        Ok(new.addr(2))
    }

    /// Puts `delay` on `host`'s link to the internet, each way: the veth
    /// is replaced by a [`DelayLink`] whose two TAP devices take the veth
    /// ends' names and addresses, and `host`'s default route through it is
    /// restored, so [`Uplink`]s, NAT rules and [`Internet::renumber`] keep
    /// working. `host` is any host or router attached here (for a CGNAT
    /// site, the carrier). Dropping the link cuts `host` off; change the
    /// delay with [`DelayLink::set_delay`].
    pub fn delay_uplink(&self, host: &Host, delay: Duration) -> Result<DelayLink> {
        let inet_if = self.host.iface_name_towards(host)?;
        let host_if = host.iface_name_towards(&self.host)?;
        let inet_cidrs = cidrs(&self.host, &inet_if)?;
        let host_cidrs = cidrs(host, &host_if)?;
        let gateway = default_gateway(host, &host_if)?;
        host.ip(&["link", "del", &host_if])?;
        let link = DelayLink::new(&self.host, &inet_if, host, &host_if, delay)?;
        for (end, dev, list) in [
            (&self.host, &inet_if, &inet_cidrs),
            (host, &host_if, &host_cidrs),
        ] {
            for cidr in list {
                end.ip(&["addr", "add", cidr, "dev", dev])?;
            }
        }
        if let Some(gateway) = gateway {
            host.add_default_route(gateway)?;
        }
        Ok(link)
    }

    /// A NAT router named `name` whose WAN side is attached to the internet
    /// in a fresh /24 and whose LAN is `lan_addr` (e.g. `192.168.1.1/24`);
    /// attach home hosts with [`Router::attach`].
    pub fn nat_router(
        &self,
        lab: &Lab,
        name: &str,
        kind: NatKind,
        lan_addr: &str,
    ) -> Result<Router> {
        let subnet = self.next_subnet()?;
        router::build(
            lab,
            &RouterSpec {
                name,
                kind,
                upstream: &self.host,
                upstream_addr: &subnet.cidr(1),
                wan_addr: &subnet.cidr(2),
                lan_addr,
            },
        )
    }
}

/// UDP between two addresses dropped in the internet's forward path, both
/// ways, until [`UdpCut::lift`] (or drop): two sites cannot punch to each
/// other while every other path (STUN, the DHT, a relay) still works.
pub struct UdpCut {
    host: Host,
    table: String,
    lifted: bool,
}

impl UdpCut {
    /// Removes the rule; packets flow again at once.
    pub fn lift(&mut self) -> Result<()> {
        if !self.lifted {
            self.lifted = true;
            let mut cmd = self.host.command("nft");
            cmd.args(["delete", "table", "inet", &self.table]);
            super::sys::run(&mut cmd)?;
        }
        Ok(())
    }
}

impl Drop for UdpCut {
    fn drop(&mut self) {
        let _ = self.lift();
    }
}

impl Internet {
    /// Drops UDP between `a` and `b` (see [`UdpCut`]).
    pub fn cut_udp(&self, a: Ipv4Addr, b: Ipv4Addr) -> Result<UdpCut> {
        let table = format!("kithcut_{}_{}", a, b).replace('.', "_");
        let ruleset = format!(
            "table inet {table} {{\n  chain forward {{\n    type filter hook forward priority -10; policy accept;\n    \
             ip saddr {a} ip daddr {b} meta l4proto udp drop\n    \
             ip saddr {b} ip daddr {a} meta l4proto udp drop\n  }}\n}}\n"
        );
        router::load_ruleset(&self.host, &ruleset)?;
        Ok(UdpCut {
            host: self.host.clone(),
            table,
            lifted: false,
        })
    }
}

/// The IPv4 addresses on `dev` in CIDR form, from `ip -4 -br addr`.
fn cidrs(host: &Host, dev: &str) -> Result<Vec<String>> {
    let out = host.ip(&["-4", "-br", "addr", "show", "dev", dev])?;
    Ok(parse_brief_cidrs(&out))
}

/// `k1a2b3-inet@if9  UP  198.18.3.2/24 198.18.4.2/24` → the CIDRs.
fn parse_brief_cidrs(out: &str) -> Vec<String> {
    out.split_whitespace()
        .skip(2)
        .filter(|c| c.contains('/'))
        .map(str::to_owned)
        .collect()
}

/// The gateway of `host`'s default route if it leaves through `dev`.
fn default_gateway(host: &Host, dev: &str) -> Result<Option<Ipv4Addr>> {
    let out = host.ip(&["-4", "route", "show", "default", "dev", dev])?;
    Ok(parse_via(&out))
}

/// `default via 198.18.3.1 ` → 198.18.3.1.
fn parse_via(out: &str) -> Option<Ipv4Addr> {
    let mut words = out.split_whitespace();
    words.find(|w| *w == "via")?;
    words.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_cover_198_18_slash_15() {
        assert_eq!(Subnet(1).addr(2), Ipv4Addr::new(198, 18, 1, 2));
        assert_eq!(Subnet(1).cidr(1), "198.18.1.1/24");
        assert_eq!(Subnet(255).network(), "198.18.255.0/24");
        assert_eq!(Subnet(256).gateway(), Ipv4Addr::new(198, 19, 0, 1));
        assert_eq!(Subnet(LAST_SUBNET).addr(9), Ipv4Addr::new(198, 19, 255, 9));
    }

    #[test]
    fn reads_brief_addresses_and_the_default_gateway() {
        assert_eq!(
            parse_brief_cidrs("k1a2b3-inet@if9  UP  198.18.3.2/24 198.18.4.2/24 \n"),
            ["198.18.3.2/24", "198.18.4.2/24"]
        );
        assert!(parse_brief_cidrs("").is_empty());
        assert_eq!(
            parse_via("default via 198.18.3.1 \n"),
            Some(Ipv4Addr::new(198, 18, 3, 1))
        );
        assert_eq!(parse_via(""), None);
    }
}
