//! Static endpoint hints: `"198.18.0.10:51871"`, `"[2001:db8::1]:51871"` or
//! `"vpn.example.net:51871"`. An address is kept as a [`SocketAddr`]; a DNS
//! name is kept as written for the daemon to resolve (config does no I/O
//! beyond reading its own files).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use super::Endpoint;

/// Why an endpoint string was rejected; the message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("missing port; write \"host:port\", e.g. \"198.18.0.10:51871\"")]
    MissingPort,
    #[error("port {port:?} is not a number in 1..=65535")]
    BadPort { port: String },
    #[error("port 0 is not allowed; give the peer's real UDP port, e.g. 51871")]
    PortZero,
    #[error("an IPv6 endpoint needs brackets, e.g. \"[2001:db8::1]:51871\"")]
    Ipv6NeedsBrackets,
    #[error("{host:?} is not a valid IPv6 address inside brackets")]
    BadIpv6 { host: String },
    #[error("{host:?} is not a valid IP address or DNS name")]
    BadHost { host: String },
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(text: &str) -> Result<Self, EndpointError> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            if addr.port() == 0 {
                return Err(EndpointError::PortZero);
            }
            return Ok(Endpoint::Addr(addr));
        }
        if let Some(inner) = text.strip_prefix('[') {
            // "[v6]:port" that did not parse as a SocketAddr.
            let Some((host, port)) = inner.split_once(']') else {
                return Err(EndpointError::BadIpv6 {
                    host: inner.to_string(),
                });
            };
            let Some(port) = port.strip_prefix(':') else {
                return Err(EndpointError::MissingPort);
            };
            let ip: std::net::Ipv6Addr = host.parse().map_err(|_| EndpointError::BadIpv6 {
                host: host.to_string(),
            })?;
            let port = parse_port(port)?;
            return Ok(Endpoint::Addr(SocketAddr::new(IpAddr::V6(ip), port)));
        }
        if text.parse::<std::net::Ipv6Addr>().is_ok() {
            return Err(EndpointError::Ipv6NeedsBrackets);
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(EndpointError::MissingPort);
        };
        if host.contains(':') {
            return Err(EndpointError::Ipv6NeedsBrackets);
        }
        let port = parse_port(port)?;
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Endpoint::Addr(SocketAddr::new(ip, port)));
        }
        if !is_dns_name(host) {
            return Err(EndpointError::BadHost {
                host: host.to_string(),
            });
        }
        Ok(Endpoint::Host {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Addr(addr) => write!(f, "{addr}"),
            Endpoint::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

fn parse_port(text: &str) -> Result<u16, EndpointError> {
    if text.is_empty() {
        return Err(EndpointError::MissingPort);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EndpointError::BadPort {
            port: text.to_string(),
        });
    }
    match text.parse::<u16>() {
        Ok(0) => Err(EndpointError::PortZero),
        Ok(port) => Ok(port),
        Err(_) => Err(EndpointError::BadPort {
            port: text.to_string(),
        }),
    }
}

/// RFC 1123 host name: dot-separated labels of 1..=63 letters, digits and
/// hyphens (not at either end), at most 253 characters, an optional final dot.
/// A name made only of digits and dots is a mistyped IPv4 address, not a name.
fn is_dns_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    if name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return false;
    }
    name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn host(h: &str, port: u16) -> Endpoint {
        Endpoint::Host {
            host: h.to_string(),
            port,
        }
    }

    #[test]
    fn accepts_addresses_and_names() {
        let ok = [
            (
                "198.18.0.10:51871",
                Endpoint::Addr("198.18.0.10:51871".parse().unwrap()),
            ),
            (
                "[2001:db8::1]:51871",
                Endpoint::Addr("[2001:db8::1]:51871".parse().unwrap()),
            ),
            ("[::1]:1", Endpoint::Addr("[::1]:1".parse().unwrap())),
            ("vpn.example.net:51871", host("vpn.example.net", 51871)),
            ("nas:65535", host("nas", 65535)),
            ("a-b.example.:1", host("a-b.example.", 1)),
        ];
        for (text, want) in ok {
            assert_eq!(text.parse::<Endpoint>(), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejects_with_reason() {
        use EndpointError::*;
        let bad = [
            ("198.18.0.10", MissingPort),
            ("198.18.0.10:", MissingPort),
            ("nas", MissingPort),
            ("198.18.0.10:0", PortZero),
            ("nas:0", PortZero),
            ("[::1]:0", PortZero),
            (
                "nas:65536",
                BadPort {
                    port: "65536".into(),
                },
            ),
            (
                "nas:http",
                BadPort {
                    port: "http".into(),
                },
            ),
            ("nas:+1", BadPort { port: "+1".into() }),
            ("2001:db8::1", Ipv6NeedsBrackets),
            ("2001:db8::1:51871:x", Ipv6NeedsBrackets),
            ("[2001:db8::1]", MissingPort),
            (
                "[nope]:1",
                BadIpv6 {
                    host: "nope".into(),
                },
            ),
            ("[::1", BadIpv6 { host: "::1".into() }),
            (
                "198.18.0.300:1",
                BadHost {
                    host: "198.18.0.300".into(),
                },
            ),
            (
                "bad_name:1",
                BadHost {
                    host: "bad_name".into(),
                },
            ),
            (
                "-x.net:1",
                BadHost {
                    host: "-x.net".into(),
                },
            ),
            (
                "a..b:1",
                BadHost {
                    host: "a..b".into(),
                },
            ),
            (":1", BadHost { host: "".into() }),
            ("", MissingPort),
        ];
        for (text, want) in bad {
            assert_eq!(text.parse::<Endpoint>(), Err(want), "{text}");
        }
    }

    proptest! {
        #[test]
        fn socket_addrs_round_trip(addr in any::<SocketAddr>()) {
            prop_assume!(addr.port() != 0);
            // Scope ids and flow info are not part of the text form.
            let addr = SocketAddr::new(addr.ip(), addr.port());
            let ep = Endpoint::Addr(addr);
            prop_assert_eq!(ep.to_string().parse::<Endpoint>(), Ok(ep));
        }

        #[test]
        fn names_round_trip(name in "[a-z][a-z0-9-]{0,10}[a-z0-9](\\.[a-z]{1,8}){0,3}", port in 1u16..) {
            let ep = host(&name, port);
            prop_assert_eq!(ep.to_string().parse::<Endpoint>(), Ok(ep));
        }

        #[test]
        fn never_panics(text in "\\PC{0,40}") {
            let _ = text.parse::<Endpoint>();
        }
    }
}
