//! NAT routers: a namespace with forwarding on, a WAN link to an upstream
//! host, a LAN bridge its clients attach to, and an nftables ruleset chosen
//! by [`NatKind`].
//!
//! Adding a NAT kind (full cone, symmetric, sequential, CGNAT, a miniupnpd
//! gateway) is a new [`NatKind`] variant with its ruleset in
//! [`NatKind::ruleset`]; kinds that need a service (miniupnpd) start it in
//! [`build`] and keep the child in [`Router`], which kills it on drop. A
//! CGNAT is two routers chained: the inner one's upstream is the outer one's
//! LAN client.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::Command;
use std::process::Stdio;

use super::host::parse_cidr_addr;
use super::switch::Switch;
use super::{Host, Iface, Lab, LabError, Result, sys};

/// How a router translates addresses. Every kind drops unsolicited packets
/// to the router itself on its WAN side silently (see [`guard_chain`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NatKind {
    /// Linux `masquerade`: source NAT to the WAN address, keeping the source
    /// port when it is free (so in practice endpoint-independent mapping),
    /// with address-and-port-dependent filtering: only replies to flows
    /// started from the LAN come in.
    Masquerade,
    /// A port-preserving "cone" home router: the same ruleset as
    /// [`NatKind::Masquerade`] (endpoint-independent mapping while the port
    /// is free, address-and-port-dependent filtering), named for the NAT
    /// tables.
    Cone,
    /// `masquerade fully-random`: every new flow (each destination) gets a
    /// random public port, so the mapping is endpoint-dependent; filtering
    /// as for [`NatKind::Cone`].
    Symmetric,
    /// A sequential allocator, as many carrier and enterprise NATs have:
    /// every new UDP flow (each destination) gets the next public port,
    /// 20000, 20001, … (wrapping after [`SEQUENTIAL_PORTS`]), so the mapping
    /// is endpoint-dependent with step 1, the case port prediction is for.
    /// Linux masquerade has no such mode (it keeps the port or picks a
    /// random one), so the port comes from `numgen inc`: the NAT chain runs
    /// once per new conntrack flow, and each run takes the counter's next
    /// value. The counter is the router's, shared by every LAN host, as on a
    /// real sequential NAT. Other protocols get plain `masquerade`;
    /// filtering as for [`NatKind::Cone`].
    ///
    /// The counter goes through a map to the port
    /// ([`sequential_port_map`]): `numgen` yields a host-order number, and
    /// `masquerade to :numgen inc mod 1000 offset 20000` is accepted but
    /// uses it as a network-order port, so on x86 the ports come out
    /// byte-swapped (20000, 20001, 20002 become 8270, 8526, 8782: step 256,
    /// which no classifier reads as sequential). Map values are typed
    /// (`inet_service`) and stored in network order.
    Sequential,
}

impl NatKind {
    /// The nftables ruleset for a router whose WAN interface is `wan` and
    /// whose LAN bridge is `lan`.
    ///
    /// LAN-to-LAN traffic is accepted: with `br_netfilter` loaded (Docker
    /// hosts load it, and its `bridge-nf-call-iptables` defaults to 1 in
    /// every namespace) packets bridged between two LAN hosts also cross the
    /// router's `forward` hook (as `lan` → `lan`), and the drop policy would
    /// cut hosts on one LAN off from each other.
    pub fn ruleset(self, wan: &str, lan: &str) -> String {
        let masquerade = match self {
            NatKind::Masquerade | NatKind::Cone => format!("oifname \"{wan}\" masquerade"),
            NatKind::Symmetric => format!("oifname \"{wan}\" masquerade fully-random"),
            NatKind::Sequential => format!(
                "oifname \"{wan}\" meta l4proto udp masquerade to :numgen inc mod {SEQUENTIAL_PORTS} \
                 map {{ {map} }}\n\
                 \t\toifname \"{wan}\" masquerade",
                map = sequential_port_map()
            ),
        };
        format!(
            "table ip kithlab {{\n\
             \tchain postrouting {{\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\t{masquerade}\n\
             \t}}\n\
             \tchain forward {{\n\
             \t\ttype filter hook forward priority filter; policy drop;\n\
             \t\tct state established,related accept\n\
             \t\tiifname \"{lan}\" oifname \"{wan}\" accept\n\
             \t\tiifname != \"{wan}\" oifname != \"{wan}\" accept\n\
             \t}}\n\
             {guard}\
             }}\n",
            guard = guard_chain(wan)
        )
    }

    /// A short name for reports: "cone", "symmetric", "sequential",
    /// "masquerade".
    pub fn name(self) -> &'static str {
        match self {
            NatKind::Masquerade => "masquerade",
            NatKind::Cone => "cone",
            NatKind::Symmetric => "symmetric",
            NatKind::Sequential => "sequential",
        }
    }
}

/// Ports a [`NatKind::Sequential`] router hands out before it wraps.
pub const SEQUENTIAL_PORTS: u16 = 1000;
/// The first port a [`NatKind::Sequential`] router hands out.
pub const SEQUENTIAL_FIRST_PORT: u16 = 20000;

/// The elements of [`NatKind::Sequential`]'s counter-to-port map:
/// `0 : 20000, 1 : 20001, …`.
fn sequential_port_map() -> String {
    (0..SEQUENTIAL_PORTS)
        .map(|i| format!("{i} : {}", SEQUENTIAL_FIRST_PORT + i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `input` chain every NAT router needs: packets to the router itself
/// that arrive on the WAN side and belong to no flow it started are dropped
/// silently (no ICMP), as real home routers do.
///
/// Why: an unsolicited packet from a peer to `router:port` that is accepted
/// (or answered with an ICMP error) gets its conntrack entry confirmed;
/// when the LAN host then sends to that peer from `port`, the tuple is
/// taken and masquerade picks another source port, which breaks
/// endpoint-independent mapping exactly when both sides punch at once.
/// Dropped in `input`, the entry is never confirmed.
pub fn guard_chain(wan: &str) -> String {
    format!(
        "\tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tiifname \"{wan}\" ct state established,related accept\n\
         \t\tiifname \"{wan}\" drop\n\
         \t}}\n"
    )
}

/// A table `ip kithloss` that drops `percent`% of the packets the router
/// forwards, each direction independently (`numgen random mod 100`). Its
/// chain runs before the NAT router's forward filter.
pub fn loss_ruleset(percent: u8) -> String {
    format!(
        "table ip kithloss {{\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter - 10; policy accept;\n\
         \t\tnumgen random mod 100 < {percent} counter drop\n\
         \t}}\n\
         }}\n"
    )
}

/// A table `ip kithudpblock` that drops every UDP packet the router would
/// forward from its LAN, except DNS (port 53): a hotel or office network
/// that allows TCP only.
pub fn udp_block_ruleset(lan: &str) -> String {
    format!(
        "table ip kithudpblock {{\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter - 5; policy accept;\n\
         \t\tiifname \"{lan}\" udp dport != 53 counter drop\n\
         \t}}\n\
         }}\n"
    )
}

/// What to build: the router's name, NAT kind, and its two sides.
#[derive(Debug, Clone)]
pub struct RouterSpec<'a> {
    pub name: &'a str,
    pub kind: NatKind,
    /// The host the WAN link goes to (e.g. an "internet" namespace).
    pub upstream: &'a Host,
    /// The upstream end's address on the WAN link, e.g. `198.18.1.1/24`;
    /// also the router's default gateway.
    pub upstream_addr: &'a str,
    /// The router's public (WAN) address, e.g. `198.18.1.2/24`.
    pub wan_addr: &'a str,
    /// The router's LAN address, e.g. `192.168.1.1/24`.
    pub lan_addr: &'a str,
}

/// A built router. LAN hosts join with [`Router::attach`].
#[derive(Debug, Clone)]
pub struct Router {
    pub host: Host,
    pub kind: NatKind,
    /// The router's WAN end (public address).
    pub wan: Iface,
    /// The LAN bridge (its address is the clients' gateway).
    pub lan: Switch,
}

/// Name of the LAN bridge inside every router namespace.
const LAN_BRIDGE: &str = "lan";

pub(crate) fn build(lab: &Lab, spec: &RouterSpec<'_>) -> Result<Router> {
    sys::require_tool("nft")?;
    let host = lab.host(spec.name)?;
    let (_, wan) = lab.link(spec.upstream, spec.upstream_addr, &host, spec.wan_addr)?;
    finish(
        host,
        wan,
        parse_cidr_addr(spec.upstream_addr)?,
        spec.kind,
        spec.lan_addr,
    )
}

/// A router whose WAN end is a port on someone else's LAN (`upstream`, e.g.
/// a carrier-grade NAT's): the inner router of a CGNAT.
pub fn build_behind(
    lab: &Lab,
    name: &str,
    kind: NatKind,
    upstream: &Router,
    wan_addr: &str,
    lan_addr: &str,
) -> Result<Router> {
    sys::require_tool("nft")?;
    let host = lab.host(name)?;
    let wan = upstream.lan.attach(&host, wan_addr)?;
    let gateway = upstream.lan.bridge.addr.ok_or_else(|| LabError::Parse {
        cmd: "router".into(),
        detail: format!("{}'s LAN bridge has no address", upstream.host.name()),
    })?;
    finish(host, wan, gateway, kind, lan_addr)
}

/// Forwarding, the default route, the LAN bridge and the ruleset.
fn finish(
    host: Host,
    wan: Iface,
    gateway: Ipv4Addr,
    kind: NatKind,
    lan_addr: &str,
) -> Result<Router> {
    host.enable_forwarding()?;
    host.add_default_route(gateway)?;
    let lan = Switch::create(&host, LAN_BRIDGE, Some(lan_addr))?;
    load_ruleset(&host, &kind.ruleset(&wan.name, LAN_BRIDGE))?;
    Ok(Router {
        host,
        kind,
        wan,
        lan,
    })
}

pub(crate) fn load_ruleset(host: &Host, ruleset: &str) -> Result<()> {
    let mut cmd: Command = host.command("nft");
    cmd.args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = format!("loading nftables rules in {}", host.netns());
    let mut child = cmd.spawn().map_err(|e| LabError::io(what.clone(), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(ruleset.as_bytes())
            .map_err(|e| LabError::io(what.clone(), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| LabError::io(what, e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LabError::Command {
            cmd: format!("{} <<< {ruleset}", sys::describe(&cmd)),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

impl Router {
    /// The router's public address.
    pub fn public_ip(&self) -> Option<Ipv4Addr> {
        self.wan.addr
    }

    /// Drops `percent`% of the packets this router forwards, in each
    /// direction ([`loss_ruleset`]); 0 removes the loss.
    pub fn set_loss(&self, percent: u8) -> Result<()> {
        let _ = self
            .host
            .exec("nft", &["delete", "table", "ip", "kithloss"]);
        if percent == 0 {
            return Ok(());
        }
        load_ruleset(&self.host, &loss_ruleset(percent))
    }

    /// Drops UDP from the LAN except DNS ([`udp_block_ruleset`]).
    pub fn block_udp(&self) -> Result<()> {
        load_ruleset(&self.host, &udp_block_ruleset(&self.lan.bridge.name))
    }

    /// Lets UDP from the LAN through again.
    pub fn unblock_udp(&self) -> Result<()> {
        self.host
            .exec("nft", &["delete", "table", "ip", "kithudpblock"])
            .map(drop)
    }

    /// Joins `client` to the LAN with address `client_addr` (CIDR) and makes
    /// the router its default gateway.
    pub fn attach(&self, client: &Host, client_addr: &str) -> Result<Iface> {
        let end = self.lan.attach(client, client_addr)?;
        let gateway = self.lan.bridge.addr.ok_or_else(|| LabError::Parse {
            cmd: "router".into(),
            detail: "LAN bridge has no address".into(),
        })?;
        client.add_default_route(gateway)?;
        Ok(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masquerade_ruleset_names_both_sides() {
        let rules = NatKind::Masquerade.ruleset("k1a2b3-inet", "lan");
        assert!(rules.contains("oifname \"k1a2b3-inet\" masquerade"));
        assert!(rules.contains("iifname \"lan\" oifname \"k1a2b3-inet\" accept"));
        assert!(rules.contains("policy drop"));
        assert!(rules.contains("iifname \"k1a2b3-inet\" drop"));
    }

    #[test]
    fn symmetric_is_fully_random_and_guarded() {
        let rules = NatKind::Symmetric.ruleset("w", "lan");
        assert!(rules.contains("oifname \"w\" masquerade fully-random"));
        assert!(rules.contains("type filter hook input"));
        assert!(
            NatKind::Cone
                .ruleset("w", "lan")
                .contains("oifname \"w\" masquerade\n")
        );
    }

    #[test]
    fn sequential_numbers_udp_flows_and_masquerades_the_rest() {
        let rules = NatKind::Sequential.ruleset("w", "lan");
        let udp = "oifname \"w\" meta l4proto udp masquerade to :numgen inc mod 1000 \
                   map { 0 : 20000, 1 : 20001, ";
        let rest = "oifname \"w\" masquerade\n";
        assert!(rules.contains("998 : 20998, 999 : 20999 }\n"), "{rules}");
        let (at_udp, at_rest) = (rules.find(udp), rules.find(rest));
        assert!(
            at_udp.zip(at_rest).is_some_and(|(u, r)| u < r),
            "the numbered UDP rule must come first, then plain masquerade:\n{rules}"
        );
        assert!(rules.contains("type filter hook input"));
        assert!(rules.contains("policy drop"));
        assert_eq!(NatKind::Sequential.name(), "sequential");
    }

    #[test]
    fn loss_drops_a_share_of_forwarded_packets() {
        assert!(loss_ruleset(5).contains("numgen random mod 100 < 5 counter drop"));
    }
}
