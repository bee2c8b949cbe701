//! Control messages between peers: they travel encrypted inside data
//! messages, in place of an IP packet. An inner plaintext whose first
//! nibble is 4 or 6 is IP; an empty one is a keepalive; otherwise the first
//! byte is one of the types below. Trailing zero bytes are transport padding
//! and are ignored.
//!
//! ```text
//! PathPing (9 bytes)      PathPong (12 + address bytes)
//!  0  type = 0x01          0  type = 0x02
//!  1  probe id (u64)       1  probe id (u64), echoed
//!                          9  family: 4 or 6
//!                         10  observed address (4 or 16): where the ping came from
//!                         .   observed port (u16)
//! ```
//!
//! A pong tells the pinger which of its addresses the peer saw, as STUN
//! would, and lets each side time every candidate path.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const CONTROL_PATH_PING: u8 = 0x01;
pub const CONTROL_PATH_PONG: u8 = 0x02;
/// Room any control message needs when emitted.
pub const MAX_CONTROL_LEN: usize = 1 + 8 + 1 + 16 + 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    PathPing { id: u64 },
    PathPong { id: u64, observed: SocketAddr },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("empty control message")]
    Empty,
    #[error("unknown control type 0x{0:02x}")]
    UnknownType(u8),
    #[error("control message of {len} bytes is shorter than its {need}-byte layout")]
    Truncated { len: usize, need: usize },
    #[error("address family {0} is neither 4 nor 6")]
    Family(u8),
    #[error("output buffer of {have} bytes, need {need}")]
    BufferTooSmall { have: usize, need: usize },
}

fn need(buf: &[u8], need: usize) -> Result<(), ControlError> {
    if buf.len() < need {
        return Err(ControlError::Truncated {
            len: buf.len(),
            need,
        });
    }
    Ok(())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

pub fn parse_control(buf: &[u8]) -> Result<Control, ControlError> {
    let Some(&ty) = buf.first() else {
        return Err(ControlError::Empty);
    };
    match ty {
        CONTROL_PATH_PING => {
            need(buf, 9)?;
            Ok(Control::PathPing { id: u64_at(buf, 1) })
        }
        CONTROL_PATH_PONG => {
            need(buf, 10)?;
            let id = u64_at(buf, 1);
            let (ip, port_at) = match buf[9] {
                4 => {
                    need(buf, 16)?;
                    (
                        IpAddr::V4(Ipv4Addr::new(buf[10], buf[11], buf[12], buf[13])),
                        14,
                    )
                }
                6 => {
                    need(buf, 28)?;
                    let mut o = [0u8; 16];
                    o.copy_from_slice(&buf[10..26]);
                    (IpAddr::V6(Ipv6Addr::from(o)), 26)
                }
                f => return Err(ControlError::Family(f)),
            };
            let port = u16::from_be_bytes([buf[port_at], buf[port_at + 1]]);
            Ok(Control::PathPong {
                id,
                observed: SocketAddr::new(ip, port),
            })
        }
        other => Err(ControlError::UnknownType(other)),
    }
}

/// Write `msg` into `out`; returns its length.
pub fn emit_control(msg: &Control, out: &mut [u8]) -> Result<usize, ControlError> {
    let len = match msg {
        Control::PathPing { .. } => 9,
        Control::PathPong { observed, .. } => {
            if observed.is_ipv4() {
                16
            } else {
                28
            }
        }
    };
    if out.len() < len {
        return Err(ControlError::BufferTooSmall {
            have: out.len(),
            need: len,
        });
    }
    match *msg {
        Control::PathPing { id } => {
            out[0] = CONTROL_PATH_PING;
            out[1..9].copy_from_slice(&id.to_be_bytes());
        }
        Control::PathPong { id, observed } => {
            out[0] = CONTROL_PATH_PONG;
            out[1..9].copy_from_slice(&id.to_be_bytes());
            let port_at = match observed.ip() {
                IpAddr::V4(v4) => {
                    out[9] = 4;
                    out[10..14].copy_from_slice(&v4.octets());
                    14
                }
                IpAddr::V6(v6) => {
                    out[9] = 6;
                    out[10..26].copy_from_slice(&v6.octets());
                    26
                }
            };
            out[port_at..port_at + 2].copy_from_slice(&observed.port().to_be_bytes());
        }
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn snapshots() {
        let mut out = [0u8; MAX_CONTROL_LEN];
        let n = emit_control(
            &Control::PathPing {
                id: 0x0102_0304_0506_0708,
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(hex(&out[..n]), "010102030405060708");
        let pong = Control::PathPong {
            id: 1,
            observed: "198.18.0.1:51871".parse().unwrap(),
        };
        let n = emit_control(&pong, &mut out).unwrap();
        assert_eq!(hex(&out[..n]), "02000000000000000104c6120001ca9f");
    }

    #[test]
    fn padding_is_ignored_and_errors_are_precise() {
        let mut buf = [0u8; 32];
        let n = emit_control(&Control::PathPing { id: 9 }, &mut buf).unwrap();
        assert_eq!(n, 9);
        assert_eq!(parse_control(&buf[..16]), Ok(Control::PathPing { id: 9 }));
        assert_eq!(parse_control(&[]), Err(ControlError::Empty));
        assert_eq!(
            parse_control(&[0x01, 0, 0]),
            Err(ControlError::Truncated { len: 3, need: 9 })
        );
        assert_eq!(parse_control(&[0x7f]), Err(ControlError::UnknownType(0x7f)));
        let mut pong = [0u8; 16];
        pong[0] = CONTROL_PATH_PONG;
        pong[9] = 5;
        assert_eq!(parse_control(&pong), Err(ControlError::Family(5)));
    }

    proptest! {
        #[test]
        fn round_trip(id in any::<u64>(), v4 in any::<[u8; 4]>(), v6 in any::<[u8; 16]>(), port in any::<u16>(), six in any::<bool>()) {
            let ip = if six { IpAddr::from(v6) } else { IpAddr::from(v4) };
            for msg in [Control::PathPing { id }, Control::PathPong { id, observed: SocketAddr::new(ip, port) }] {
                let mut out = [0u8; MAX_CONTROL_LEN + 4];
                let n = emit_control(&msg, &mut out).unwrap();
                prop_assert_eq!(parse_control(&out[..n]), Ok(msg));
                prop_assert_eq!(parse_control(&out), Ok(msg));
            }
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_control(&bytes);
        }
    }
}
