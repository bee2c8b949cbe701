//! Just enough of the inner IP header for cryptokey routing: version,
//! source, destination and total length (to strip transport padding).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IpError {
    #[error("packet of {len} bytes is too short for an IPv{version} header")]
    TooShort { version: u8, len: usize },
    #[error("IP version {0} is neither 4 nor 6")]
    Version(u8),
    #[error("header claims {claimed} bytes but only {have} arrived")]
    Truncated { claimed: usize, have: usize },
}

/// Addresses and length of an inner IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpHeader {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Total length from the header; bytes past it are padding.
    pub total_len: usize,
}

/// Parse the header of an IPv4 or IPv6 packet.
pub fn parse_ip(p: &[u8]) -> Result<IpHeader, IpError> {
    let version = p.first().map(|b| b >> 4).unwrap_or(0);
    match version {
        4 => {
            if p.len() < 20 {
                return Err(IpError::TooShort {
                    version,
                    len: p.len(),
                });
            }
            let total_len = usize::from(u16::from_be_bytes([p[2], p[3]]));
            if total_len > p.len() || total_len < 20 {
                return Err(IpError::Truncated {
                    claimed: total_len,
                    have: p.len(),
                });
            }
            Ok(IpHeader {
                src: IpAddr::V4(Ipv4Addr::new(p[12], p[13], p[14], p[15])),
                dst: IpAddr::V4(Ipv4Addr::new(p[16], p[17], p[18], p[19])),
                total_len,
            })
        }
        6 => {
            if p.len() < 40 {
                return Err(IpError::TooShort {
                    version,
                    len: p.len(),
                });
            }
            let total_len = 40 + usize::from(u16::from_be_bytes([p[4], p[5]]));
            if total_len > p.len() {
                return Err(IpError::Truncated {
                    claimed: total_len,
                    have: p.len(),
                });
            }
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&p[8..24]);
            d.copy_from_slice(&p[24..40]);
            Ok(IpHeader {
                src: IpAddr::V6(Ipv6Addr::from(s)),
                dst: IpAddr::V6(Ipv6Addr::from(d)),
                total_len,
            })
        }
        v => Err(IpError::Version(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v4_and_ignores_padding() {
        let mut p = vec![0u8; 32];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[12..16].copy_from_slice(&[100, 96, 0, 1]);
        p[16..20].copy_from_slice(&[100, 96, 0, 2]);
        let h = parse_ip(&p).unwrap();
        assert_eq!(h.src, "100.96.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(h.dst, "100.96.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(h.total_len, 28);
    }

    #[test]
    fn rejects_short_and_lying_headers() {
        assert_eq!(parse_ip(&[]), Err(IpError::Version(0)));
        assert_eq!(
            parse_ip(&[0x45; 10]),
            Err(IpError::TooShort {
                version: 4,
                len: 10
            })
        );
        let mut p = vec![0u8; 20];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(
            parse_ip(&p),
            Err(IpError::Truncated {
                claimed: 100,
                have: 20
            })
        );
        let mut v6 = vec![0u8; 40];
        v6[0] = 0x60;
        v6[4..6].copy_from_slice(&1u16.to_be_bytes());
        assert_eq!(
            parse_ip(&v6),
            Err(IpError::Truncated {
                claimed: 41,
                have: 40
            })
        );
    }
}
