//! NAT behaviour from STUN results: a pure function, no I/O, no time.
//!
//! Terms are RFC 4787's (§4.1 mapping, §4.2.1 port preservation, §4.1
//! "port-overloading"/allocation) as tested in RFC 5780 §4.3, with one
//! difference: RFC 5780 asks one server to answer from its alternate
//! address (CHANGE-REQUEST, OTHER-ADDRESS), while kith asks several
//! independent servers from the same socket and compares what they saw.
//! That works with any plain STUN server, and the mapping is the data
//! socket's own.
//!
//! - **Endpoint-independent mapping** (RFC 4787 §4.1, "full cone",
//!   "restricted cone", "port-restricted cone" in RFC 3489 terms): every
//!   server saw the same reflexive address. A peer can reach us there once
//!   our filter lets it in (hole punching).
//! - **Endpoint-dependent mapping** (address- or address-and-port-dependent,
//!   RFC 4787 §4.1; "symmetric" in RFC 3489): servers saw different
//!   reflexive addresses, so a peer cannot use the one a server saw; port
//!   prediction ([`NatBehaviour::sequential`]) or birthday probing is needed.
//! - **No NAT**: the reflexive address is one of the socket's own.
//! - **Unknown**: fewer than two servers answered, so the mapping cannot be
//!   compared.
//!
//! Servers that share an IP address but differ in port can tell an
//! address-and-port-dependent mapping from an endpoint-independent one, but
//! not an address-dependent one (rare in practice): use servers at different
//! IP addresses where that matters.

#![cfg_attr(not(test), deny(clippy::disallowed_methods))]

use std::net::SocketAddr;

pub use super::stun::Observation;

/// A step larger than this between consecutive mappings is not taken for a
/// sequential allocator.
pub const MAX_SEQUENTIAL_DELTA: i32 = 16;

/// How the NAT in front of the socket maps it (RFC 4787 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappingBehaviour {
    /// One mapping for all destinations (RFC 4787 §4.1, REQ-1).
    EndpointIndependent,
    /// A new mapping per destination address (and port).
    EndpointDependent,
    /// The servers saw the socket's own address: no translation.
    NoNat,
    /// Too few answers to compare.
    Unknown,
}

/// What the STUN results say about the NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatBehaviour {
    pub mapping: MappingBehaviour,
    /// The first mapping kept the socket's port (RFC 4787 §4.2.1 "port
    /// preservation"). Always true for [`MappingBehaviour::NoNat`].
    pub port_preserving: bool,
    /// For an endpoint-dependent mapping: the allocator's step between
    /// consecutive new mappings (RFC 4787 §4.2.2 allocation), when every
    /// step seen goes the same way and is at most [`MAX_SEQUENTIAL_DELTA`]
    /// ports. The smallest step is reported: other hosts behind the same NAT
    /// may take ports in between. At least three mappings (two steps) are
    /// needed: one small step happens by chance behind a random allocator.
    pub sequential: Option<i32>,
    /// The address to publish as the reflexive candidate: the common
    /// mapping ([`MappingBehaviour::EndpointIndependent`]), the socket's own
    /// ([`MappingBehaviour::NoNat`]), the only answer
    /// ([`MappingBehaviour::Unknown`]), or the most recent mapping
    /// ([`MappingBehaviour::EndpointDependent`]: its IP is the NAT's, its
    /// port the base for prediction).
    pub public: Option<SocketAddr>,
}

impl NatBehaviour {
    const UNKNOWN: Self = Self {
        mapping: MappingBehaviour::Unknown,
        port_preserving: false,
        sequential: None,
        public: None,
    };
}

/// Classify from the socket's local addresses and the servers' answers.
///
/// `local` is the data socket's address; when it is bound to an unspecified
/// address (`0.0.0.0`, `::`), pass each interface address with the socket's
/// port instead (unspecified entries match nothing). `observations` come in
/// the order the requests were first sent ([`super::stun::StunClient::observations`]);
/// silent servers (`reflexive: None`) are skipped. Only answers in the
/// family of the first answer are compared. Answers equal to a local address
/// came from servers on our side of the NAT (a LAN server) and only count
/// towards [`MappingBehaviour::NoNat`] when every answer is local.
pub fn classify(local: &[SocketAddr], observations: &[Observation]) -> NatBehaviour {
    let mut answered = observations
        .iter()
        .filter_map(|o| o.reflexive.map(|r| (o.server, r)))
        .peekable();
    let Some(&(_, first)) = answered.peek() else {
        return NatBehaviour::UNKNOWN;
    };
    let answered: Vec<(SocketAddr, SocketAddr)> = answered
        .filter(|(_, r)| r.is_ipv4() == first.is_ipv4())
        .collect();
    let is_local = |r: &SocketAddr| local.iter().any(|l| !l.ip().is_unspecified() && l == r);
    if answered.iter().all(|(_, r)| is_local(r)) {
        return NatBehaviour {
            mapping: MappingBehaviour::NoNat,
            port_preserving: true,
            sequential: None,
            public: Some(first),
        };
    }
    // One answer per server (a server asked twice repeats its mapping), in
    // send order, without those from our side of the NAT.
    let mut mapped: Vec<(SocketAddr, SocketAddr)> = Vec::with_capacity(answered.len());
    for (server, r) in answered {
        if !is_local(&r) && !mapped.iter().any(|(s, _)| *s == server) {
            mapped.push((server, r));
        }
    }
    let local_port = local.first().map(SocketAddr::port);
    let Some(&(_, first)) = mapped.first() else {
        return NatBehaviour::UNKNOWN;
    };
    let port_preserving = local_port == Some(first.port());
    if mapped.len() < 2 {
        return NatBehaviour {
            mapping: MappingBehaviour::Unknown,
            port_preserving,
            sequential: None,
            public: Some(first),
        };
    }
    if mapped.iter().all(|(_, r)| *r == first) {
        return NatBehaviour {
            mapping: MappingBehaviour::EndpointIndependent,
            port_preserving,
            sequential: None,
            public: Some(first),
        };
    }
    let ports: Vec<u16> = mapped.iter().map(|(_, r)| r.port()).collect();
    NatBehaviour {
        mapping: MappingBehaviour::EndpointDependent,
        port_preserving,
        sequential: sequential_step(&ports),
        public: mapped.last().map(|(_, r)| *r),
    }
}

/// The smallest step between consecutive ports when all steps are non-zero,
/// in one direction and at most [`MAX_SEQUENTIAL_DELTA`]. At least two steps
/// (three mappings) are required: a random allocator produces one small step
/// now and then (seen in the lab behind `masquerade fully-random`), two in a
/// row in the same direction about once in ten million.
fn sequential_step(ports: &[u16]) -> Option<i32> {
    let steps: Vec<i32> = ports
        .windows(2)
        .map(|w| i32::from(w[1]) - i32::from(w[0]))
        .collect();
    if steps.len() < 2 {
        return None;
    }
    let first = *steps.first()?;
    let same_way = steps.iter().all(|d| d.signum() == first.signum());
    let small = steps
        .iter()
        .all(|d| *d != 0 && d.abs() <= MAX_SEQUENTIAL_DELTA);
    if !(same_way && small) {
        return None;
    }
    steps.into_iter().min_by_key(|d| d.abs())
}

#[cfg(test)]
mod tests {
    use super::MappingBehaviour::*;
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn obs(list: &[(&str, Option<&str>)]) -> Vec<Observation> {
        list.iter()
            .map(|(s, r)| Observation {
                server: a(s),
                reflexive: r.map(a),
            })
            .collect()
    }

    const LOCAL: &str = "192.168.1.10:51820";
    const S1: &str = "198.18.0.10:3478";
    const S2: &str = "198.18.0.20:3478";
    const S3: &str = "198.18.0.30:3478";
    const S4: &str = "198.18.0.40:3478";

    struct Case {
        name: &'static str,
        local: &'static [&'static str],
        obs: &'static [(&'static str, Option<&'static str>)],
        mapping: MappingBehaviour,
        port_preserving: bool,
        sequential: Option<i32>,
        public: Option<&'static str>,
    }

    #[test]
    fn table() {
        let cases = [
            Case {
                name: "no NAT: reflexive == local",
                local: &["198.18.5.2:51820"],
                obs: &[
                    (S1, Some("198.18.5.2:51820")),
                    (S2, Some("198.18.5.2:51820")),
                ],
                mapping: NoNat,
                port_preserving: true,
                sequential: None,
                public: Some("198.18.5.2:51820"),
            },
            Case {
                name: "no NAT, socket on 0.0.0.0, interface addresses given",
                local: &["10.0.0.1:51820", "198.18.5.2:51820"],
                obs: &[(S1, Some("198.18.5.2:51820"))],
                mapping: NoNat,
                port_preserving: true,
                sequential: None,
                public: Some("198.18.5.2:51820"),
            },
            Case {
                name: "unspecified local matches nothing",
                local: &["0.0.0.0:51820"],
                obs: &[
                    (S1, Some("198.18.5.2:51820")),
                    (S2, Some("198.18.5.2:51820")),
                ],
                mapping: EndpointIndependent,
                port_preserving: true,
                sequential: None,
                public: Some("198.18.5.2:51820"),
            },
            Case {
                name: "cone, port-preserving (Linux masquerade)",
                local: &[LOCAL],
                obs: &[
                    (S1, Some("203.0.113.7:51820")),
                    (S2, Some("203.0.113.7:51820")),
                ],
                mapping: EndpointIndependent,
                port_preserving: true,
                sequential: None,
                public: Some("203.0.113.7:51820"),
            },
            Case {
                name: "cone, port rewritten",
                local: &[LOCAL],
                obs: &[
                    (S1, Some("203.0.113.7:40001")),
                    (S2, Some("203.0.113.7:40001")),
                    (S3, Some("203.0.113.7:40001")),
                ],
                mapping: EndpointIndependent,
                port_preserving: false,
                sequential: None,
                public: Some("203.0.113.7:40001"),
            },
            Case {
                name: "symmetric, random ports (masquerade fully-random)",
                local: &[LOCAL],
                obs: &[
                    (S1, Some("203.0.113.7:40001")),
                    (S2, Some("203.0.113.7:17233")),
                ],
                mapping: EndpointDependent,
                port_preserving: false,
                sequential: None,
                public: Some("203.0.113.7:17233"),
            },
            Case {
                name: "symmetric, first mapping port-preserving",
                local: &[LOCAL],
                obs: &[
                    (S1, Some("203.0.113.7:51820")),
                    (S2, Some("203.0.113.7:3001")),
                ],
                mapping: EndpointDependent,
                port_preserving: true,
                sequential: None,
                public: Some("203.0.113.7:3001"),
            },
            Case {
                name: "symmetric, sequential +1",
                local: &[LOCAL],
                obs: &[
                    (S1, Some("203.0.113.7:40001")),
                    (S2, Some("203.0.113.7:40002")),
                    (S3, Some("203.0.113.7:40003")),
                ],
                mapping: EndpointDependent,
                port_preserving: false,
                sequential: Some(1),
                public: Some("203.0.113.7:40003"),
            },
            Case {
                name: "symmetric, sequential +2 with another host taking a port",
                local: &[LOCAL],
                obs: &[
                    (S1, Some("203.0.113.7:40000")),
                    (S2, Some("203.0.113.7:40002")),
                    (S3, Some("203.0.113.7:40006")),
                    (S4, Some("203.0.113.7:40008")),
                ],
                mapping: EndpointDependent,
                port_preserving: false,
                sequential: Some(2),
                public: Some("203.0.113.7:40008"),
            },
            Case {
                name: "symmetric, sequential downwards",
                local: &[LOCAL],
                obs: &[
                    (S1, Some("203.0.113.7:40010")),
                    (S2, Some("203.0.113.7:40009")),
                    (S3, Some("203.0.113.7:40008")),
                ],
                mapping: EndpointDependent,
                port_preserving: false,
                sequential: Some(-1),
                public: Some("203.0.113.7:40008"),
            },
            Case {
                name: "symmetric, one small step from two servers is not evidence",
                local: &[LOCAL],
                obs: &[
                    (S1, Some("203.0.113.7:54638")),
                    (S2, Some("203.0.113.7:54641")),
                ],
                mapping: EndpointDependent,
                port_preserving: false,
                sequential: None,
                public: Some("203.0.113.7:54641"),
            },
            Case {
                name: "symmetric, steps both ways are not sequential",
                local: &[LOCAL],
                obs: &[
                    (S1, Some("203.0.113.7:40010")),
                    (S2, Some("203.0.113.7:40011")),
                    (S3, Some("203.0.113.7:40009")),
                ],
                mapping: EndpointDependent,
                port_preserving: false,
                sequential: None,
                public: Some("203.0.113.7:40009"),
            },
            Case {
                name: "address pooling: same port, different IP",
                local: &[LOCAL],
                obs: &[
                    (S1, Some("203.0.113.7:51820")),
                    (S2, Some("203.0.113.8:51820")),
                ],
                mapping: EndpointDependent,
                port_preserving: true,
                sequential: None,
                public: Some("203.0.113.8:51820"),
            },
            Case {
                name: "one server silent: partial",
                local: &[LOCAL],
                obs: &[(S1, None), (S2, Some("203.0.113.7:51820"))],
                mapping: Unknown,
                port_preserving: true,
                sequential: None,
                public: Some("203.0.113.7:51820"),
            },
            Case {
                name: "all silent",
                local: &[LOCAL],
                obs: &[(S1, None), (S2, None)],
                mapping: Unknown,
                port_preserving: false,
                sequential: None,
                public: None,
            },
            Case {
                name: "nothing asked",
                local: &[LOCAL],
                obs: &[],
                mapping: Unknown,
                port_preserving: false,
                sequential: None,
                public: None,
            },
            Case {
                name: "same server asked twice counts once",
                local: &[LOCAL],
                obs: &[
                    (S1, Some("203.0.113.7:40001")),
                    (S1, Some("203.0.113.7:40001")),
                ],
                mapping: Unknown,
                port_preserving: false,
                sequential: None,
                public: Some("203.0.113.7:40001"),
            },
            Case {
                name: "LAN server sees the local address, public ones a cone",
                local: &[LOCAL],
                obs: &[
                    ("192.168.1.1:3478", Some(LOCAL)),
                    (S1, Some("203.0.113.7:51820")),
                    (S2, Some("203.0.113.7:51820")),
                ],
                mapping: EndpointIndependent,
                port_preserving: true,
                sequential: None,
                public: Some("203.0.113.7:51820"),
            },
            Case {
                name: "same server IP, different ports: compared all the same",
                local: &[LOCAL],
                obs: &[
                    ("198.18.0.10:3478", Some("203.0.113.7:51820")),
                    ("198.18.0.10:3479", Some("203.0.113.7:51820")),
                ],
                mapping: EndpointIndependent,
                port_preserving: true,
                sequential: None,
                public: Some("203.0.113.7:51820"),
            },
            Case {
                name: "an IPv6 answer after IPv4 ones is not compared",
                local: &[LOCAL],
                obs: &[
                    (S1, Some("203.0.113.7:51820")),
                    (S2, Some("203.0.113.7:51820")),
                    ("[2001:db8::1]:3478", Some("[2001:db8::2]:51820")),
                ],
                mapping: EndpointIndependent,
                port_preserving: true,
                sequential: None,
                public: Some("203.0.113.7:51820"),
            },
        ];
        for c in cases {
            let local: Vec<SocketAddr> = c.local.iter().map(|s| a(s)).collect();
            let got = classify(&local, &obs(c.obs));
            let want = NatBehaviour {
                mapping: c.mapping,
                port_preserving: c.port_preserving,
                sequential: c.sequential,
                public: c.public.map(a),
            };
            assert_eq!(got, want, "case: {}", c.name);
        }
    }

    #[test]
    fn sequential_limits() {
        assert_eq!(sequential_step(&[100, 116, 132]), Some(16));
        assert_eq!(sequential_step(&[100, 116, 133]), None);
        assert_eq!(sequential_step(&[100, 116]), None, "one step is not enough");
        assert_eq!(sequential_step(&[100, 100, 100]), None);
        assert_eq!(sequential_step(&[100]), None);
        assert_eq!(sequential_step(&[65535, 0]), None);
    }
}
