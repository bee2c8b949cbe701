//! Port mapping: asking the home router to forward the daemon's UDP listen
//! port, so the mapped public address becomes a candidate peers can reach
//! without any hole punching.
//!
//! Owns gateway discovery, the three mapping protocols and the lease policy.
//! Must not reach into `core`: the daemon watches [`PortMapper::watch`] and
//! forwards each [`Mapping`] (or its loss) as a candidate event.
//!
//! Protocols, tried in this order (each with its own short deadline):
//! 1. PCP, RFC 6887 (`crab_nat::pcp`);
//! 2. NAT-PMP, RFC 6886 (`crab_nat::natpmp`);
//! 3. UPnP IGD (`igd-next`, SSDP search then SOAP `AddPortMapping`).
//!
//! The wire formats of all three are parsed by those crates, not by kith:
//! their response parsers are fuzzed (or not) upstream. kith's own parser
//! here is [`route::parse_default_gateway`] (`fuzz/fuzz_targets/route.rs`).
//!
//! Flow:
//! - [`route`]: `/proc/net/route` → default IPv4 gateway (pure parser), then
//!   the local address that faces it (a connected UDP socket, no traffic);
//! - [`lease::LeasePolicy`]: the sans-IO lease clock, driven with explicit
//!   `now`: when to map, when to renew (half the granted lifetime), when a
//!   gateway reboot (epoch going backwards, RFC 6886 §3.6 / RFC 6887 §8.5)
//!   or a failed renewal calls for a fresh mapping, when a lease has run out;
//! - [`protocols`]: one async request per protocol, each under a deadline
//!   (igd-next's internal 10 s timeouts are too long for a daemon);
//! - [`PortMapper`]: the actor (style habit 12): a handle with an inbox and a
//!   `watch` of `Option<Mapping>`; [`PortMapper::shutdown`] deletes the
//!   mapping; [`PortMapper::disabled`] is the no-op variant for
//!   `port_mapping = false`;
//! - [`probe`]: for `kith netcheck`, which protocols the gateway answers.

mod actor;
pub mod lease;
mod probe;
pub mod protocols;
pub mod route;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

pub use actor::PortMapper;
pub use probe::{PortMapReport, ProtocolReport, probe, probe_with};

/// A port mapping protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// Port Control Protocol, RFC 6887.
    Pcp,
    /// NAT Port Mapping Protocol, RFC 6886.
    NatPmp,
    /// UPnP Internet Gateway Device (WANIPConnection `AddPortMapping`).
    Upnp,
}

impl Protocol {
    /// Every protocol, in the order they are tried.
    pub const ALL: [Protocol; 3] = [Protocol::Pcp, Protocol::NatPmp, Protocol::Upnp];
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Pcp => "PCP",
            Protocol::NatPmp => "NAT-PMP",
            Protocol::Upnp => "UPnP",
        })
    }
}

/// A mapping the gateway granted: UDP packets to `external` reach the
/// daemon's listen port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Mapping {
    pub protocol: Protocol,
    /// The public address and port peers should send to.
    pub external: SocketAddr,
    /// The lifetime the gateway granted (zero: UPnP "permanent", still
    /// renewed by kith).
    pub lease: Duration,
}

/// How the [`PortMapper`] and [`probe`] behave. `Default` is what the daemon
/// wants; tests shorten the deadlines and force a protocol.
#[derive(Debug, Clone)]
pub struct Options {
    /// The gateway to ask; `None`: the default IPv4 route's gateway from
    /// `/proc/net/route`, looked up again before every fresh mapping.
    pub gateway: Option<Ipv4Addr>,
    /// The protocols to try, in order (default: PCP, NAT-PMP, UPnP). A test
    /// forces one by listing only it.
    pub protocols: Vec<Protocol>,
    /// Lease requested from PCP and NAT-PMP gateways (default 2 h, the
    /// RFC 6886 recommendation).
    pub pcp_lease: Duration,
    /// Lease requested from UPnP gateways (default 1 h: many IGDs refuse
    /// or cap longer ones).
    pub upnp_lease: Duration,
    /// Deadline for one protocol's whole attempt (request and retries).
    pub request_timeout: Duration,
    /// How long the UPnP SSDP search waits for the gateway to answer.
    pub upnp_search_timeout: Duration,
    /// First retry delay after every protocol failed; doubles up to
    /// `max_retry`.
    pub min_retry: Duration,
    pub max_retry: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            gateway: None,
            protocols: Protocol::ALL.to_vec(),
            pcp_lease: Duration::from_secs(2 * 3600),
            upnp_lease: Duration::from_secs(3600),
            request_timeout: Duration::from_secs(3),
            upnp_search_timeout: Duration::from_secs(2),
            min_retry: Duration::from_secs(30),
            max_retry: Duration::from_secs(30 * 60),
        }
    }
}

impl Options {
    /// The lease to request from `protocol`.
    pub fn lease_for(&self, protocol: Protocol) -> Duration {
        match protocol {
            Protocol::Pcp | Protocol::NatPmp => self.pcp_lease,
            Protocol::Upnp => self.upnp_lease,
        }
    }

    fn lease_policy_config(&self) -> lease::LeaseConfig {
        lease::LeaseConfig {
            min_retry: self.min_retry,
            max_retry: self.max_retry,
            fallback_lease: self.upnp_lease,
        }
    }
}

/// Everything that can go wrong while mapping a port.
#[derive(Debug, thiserror::Error)]
pub enum PortMapError {
    #[error("reading {path}: {source}")]
    ReadRoutes {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("no default IPv4 route in {path}: is this machine online (check `ip route`)?")]
    NoGateway { path: &'static str },
    #[error("finding the local address that faces gateway {gateway}: {source}")]
    LocalAddr {
        gateway: Ipv4Addr,
        #[source]
        source: std::io::Error,
    },
    #[error("the local port must not be 0 (bind the data socket first)")]
    PortZero,
    #[error("{protocol} to gateway {gateway}: no answer within {after:?}")]
    Timeout {
        protocol: Protocol,
        gateway: Ipv4Addr,
        after: Duration,
    },
    #[error("PCP to gateway {gateway}: {source}")]
    Pcp {
        gateway: Ipv4Addr,
        #[source]
        source: crab_nat::pcp::Failure,
    },
    #[error("NAT-PMP to gateway {gateway}: {source}")]
    NatPmp {
        gateway: Ipv4Addr,
        #[source]
        source: crab_nat::natpmp::Failure,
    },
    #[error("NAT-PMP or PCP gave an external address of the wrong family: {addr}")]
    ExternalFamily { addr: std::net::IpAddr },
    #[error("UPnP: no Internet Gateway Device answered the SSDP search: {source}")]
    UpnpSearch {
        #[source]
        source: igd_next::SearchError,
    },
    #[error("UPnP: the IGD at {gateway} refused AddPortMapping: {source}")]
    UpnpAdd {
        gateway: SocketAddr,
        #[source]
        source: igd_next::AddAnyPortError,
    },
    #[error("UPnP: the IGD at {gateway} refused AddPortMapping for port {port}: {source}")]
    UpnpAddPort {
        gateway: SocketAddr,
        port: u16,
        #[source]
        source: igd_next::AddPortError,
    },
    #[error("UPnP: the IGD at {gateway} did not give its external address: {source}")]
    UpnpExternalIp {
        gateway: SocketAddr,
        #[source]
        source: igd_next::GetExternalIpError,
    },
    #[error("UPnP: the IGD at {gateway} refused DeletePortMapping: {source}")]
    UpnpRemove {
        gateway: SocketAddr,
        #[source]
        source: igd_next::RemovePortError,
    },
    #[error("{}", unavailable_message(*gateway, *port, errors))]
    Unavailable {
        gateway: Ipv4Addr,
        port: u16,
        /// Why each protocol failed, in the order tried.
        errors: Vec<(Protocol, PortMapError)>,
    },
}

impl PortMapError {
    /// Whether the gateway replied to this protocol at all (a refusal
    /// counts; silence, an ICMP error or "speak another version" do not).
    pub fn gateway_answered(&self) -> bool {
        use crab_nat::{natpmp, pcp};
        match self {
            PortMapError::Pcp { source, .. } => !matches!(
                source,
                pcp::Failure::Socket(_)
                    | pcp::Failure::Timeout
                    | pcp::Failure::UnsupportedVersion(_)
            ),
            PortMapError::NatPmp { source, .. } => !matches!(
                source,
                natpmp::Failure::Socket(_)
                    | natpmp::Failure::Timeout
                    | natpmp::Failure::UnsupportedVersion(_)
            ),
            PortMapError::UpnpAdd { .. }
            | PortMapError::UpnpAddPort { .. }
            | PortMapError::UpnpExternalIp { .. }
            | PortMapError::UpnpRemove { .. }
            | PortMapError::ExternalFamily { .. } => true,
            PortMapError::ReadRoutes { .. }
            | PortMapError::NoGateway { .. }
            | PortMapError::LocalAddr { .. }
            | PortMapError::PortZero
            | PortMapError::Timeout { .. }
            | PortMapError::UpnpSearch { .. }
            | PortMapError::Unavailable { .. } => false,
        }
    }
}

fn unavailable_message(
    gateway: Ipv4Addr,
    port: u16,
    errors: &[(Protocol, PortMapError)],
) -> String {
    let names: Vec<String> = errors.iter().map(|(p, _)| p.to_string()).collect();
    let mut msg = format!(
        "router {gateway} does not answer {}; enable UPnP (or NAT-PMP/PCP) on the router or forward UDP port {port} to this machine by hand",
        names.join("/")
    );
    for (protocol, error) in errors {
        msg.push_str(&format!("\n  {protocol}: {error}"));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_says_what_to_check() {
        let gateway = Ipv4Addr::new(192, 168, 1, 1);
        let err = PortMapError::Unavailable {
            gateway,
            port: 51820,
            errors: vec![
                (
                    Protocol::Pcp,
                    PortMapError::Timeout {
                        protocol: Protocol::Pcp,
                        gateway,
                        after: Duration::from_secs(3),
                    },
                ),
                (
                    Protocol::Upnp,
                    PortMapError::Timeout {
                        protocol: Protocol::Upnp,
                        gateway,
                        after: Duration::from_secs(2),
                    },
                ),
            ],
        };
        let msg = err.to_string();
        assert!(msg.starts_with("router 192.168.1.1 does not answer PCP/UPnP; enable UPnP"));
        assert!(msg.contains("forward UDP port 51820"));
        assert!(msg.contains("PCP: PCP to gateway 192.168.1.1: no answer within 3s"));
    }

    #[test]
    fn mapping_serializes() {
        let m = Mapping {
            protocol: Protocol::NatPmp,
            external: "198.18.1.2:51820".parse().unwrap(),
            lease: Duration::from_secs(7200),
        };
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains("\"protocol\":\"nat-pmp\""), "{json}");
        assert!(json.contains("\"external\":\"198.18.1.2:51820\""), "{json}");
    }
}
