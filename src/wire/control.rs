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
//!
//! Record (3 + n bytes, n ≤ 959)
//!  0  type = 0x03
//!  1  n: body length (u16)
//!  3  the sender's record plaintext (n bytes): the DHT record body of
//!     `wire::record`, version 1 or 2
//! ```
//!
//! A pong tells the pinger which of its addresses the peer saw, as STUN
//! would, and lets each side time every candidate path. A record tells a
//! connected peer our new candidates and NAT facts at once, instead of
//! when it next reads the DHT; it is the DHT record's codec, so there is one
//! candidate layout. Its explicit length keeps the padding out of the body,
//! whose extensions run to its end, and it is capped like the DHT record's
//! plaintext so it fits one datagram on any path.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::record::{
    MAX_RECORD_PLAINTEXT, RecordBody, RecordWireError, emit_record_plaintext,
    parse_record_plaintext, record_plaintext_len,
};

pub const CONTROL_PATH_PING: u8 = 0x01;
pub const CONTROL_PATH_PONG: u8 = 0x02;
pub const CONTROL_RECORD: u8 = 0x03;
/// Bytes in front of a record body: type and length.
pub const CONTROL_RECORD_HEADER_LEN: usize = 1 + 2;
/// Room any control message needs when emitted: a record of the largest
/// size the DHT allows (a pong needs 28).
pub const MAX_CONTROL_LEN: usize = CONTROL_RECORD_HEADER_LEN + MAX_RECORD_PLAINTEXT;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    PathPing {
        id: u64,
    },
    PathPong {
        id: u64,
        observed: SocketAddr,
    },
    /// The sender's current record: candidates and NAT facts.
    Record(RecordBody),
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
    #[error("record of {len} bytes is larger than the {max} a record may have")]
    RecordTooLarge { len: usize, max: usize },
    #[error("record: {0}")]
    Record(RecordWireError),
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
        CONTROL_RECORD => {
            need(buf, CONTROL_RECORD_HEADER_LEN)?;
            let len = usize::from(u16::from_be_bytes([buf[1], buf[2]]));
            if len > MAX_RECORD_PLAINTEXT {
                return Err(ControlError::RecordTooLarge {
                    len,
                    max: MAX_RECORD_PLAINTEXT,
                });
            }
            let end = CONTROL_RECORD_HEADER_LEN + len;
            need(buf, end)?;
            parse_record_plaintext(&buf[CONTROL_RECORD_HEADER_LEN..end])
                .map(Control::Record)
                .map_err(ControlError::Record)
        }
        other => Err(ControlError::UnknownType(other)),
    }
}

/// Write `msg` into `out`; returns its length. A record larger than the
/// DHT allows is refused ([`ControlError::RecordTooLarge`]), as is one its
/// codec cannot write ([`ControlError::Record`]).
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
        Control::Record(body) => {
            let n = record_plaintext_len(body);
            if n > MAX_RECORD_PLAINTEXT {
                return Err(ControlError::RecordTooLarge {
                    len: n,
                    max: MAX_RECORD_PLAINTEXT,
                });
            }
            CONTROL_RECORD_HEADER_LEN + n
        }
    };
    if out.len() < len {
        return Err(ControlError::BufferTooSmall {
            have: out.len(),
            need: len,
        });
    }
    match msg {
        &Control::PathPing { id } => {
            out[0] = CONTROL_PATH_PING;
            out[1..9].copy_from_slice(&id.to_be_bytes());
        }
        &Control::PathPong { id, observed } => {
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
        Control::Record(body) => {
            // At most 959: checked above.
            let n = (len - CONTROL_RECORD_HEADER_LEN) as u16;
            out[0] = CONTROL_RECORD;
            out[1..3].copy_from_slice(&n.to_be_bytes());
            emit_record_plaintext(&mut out[CONTROL_RECORD_HEADER_LEN..len], body)
                .map_err(ControlError::Record)?;
        }
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{Candidate, CandidateKind};
    use crate::nat::{MappingBehaviour, NatBehaviour};
    use proptest::prelude::*;

    use crate::wire::hex;

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

    fn example_body() -> RecordBody {
        RecordBody {
            timestamp: 1_700_000_000,
            candidates: vec![Candidate {
                kind: CandidateKind::Local,
                addr: "192.168.1.20:51871".parse().unwrap(),
            }],
            relays: Vec::new(),
            nat: Some(NatBehaviour {
                mapping: MappingBehaviour::EndpointIndependent,
                port_preserving: true,
                sequential: None,
                public: None,
            }),
        }
    }

    #[test]
    fn record_snapshot() {
        let mut out = [0u8; MAX_CONTROL_LEN];
        let n = emit_control(&Control::Record(example_body()), &mut out).unwrap();
        assert_eq!(
            hex(&out[..n]),
            concat!(
                "03 0019",
                "02 000000006553f100 01 41 c0a80114 ca9f 00",
                "01 05 02 01 0000 00"
            )
            .replace(' ', "")
        );
        assert_eq!(n, 3 + 25);
        // Padded to 32 as the transport does: the same message.
        assert_eq!(
            parse_control(&out[..32]),
            Ok(Control::Record(example_body()))
        );
    }

    #[test]
    fn record_errors_are_precise() {
        let mut out = [0u8; MAX_CONTROL_LEN];
        let n = emit_control(&Control::Record(example_body()), &mut out).unwrap();
        let good = out[..n].to_vec();
        assert_eq!(
            parse_control(&good[..2]),
            Err(ControlError::Truncated { len: 2, need: 3 })
        );
        // The length says 25; the message stops short.
        assert_eq!(
            parse_control(&good[..n - 1]),
            Err(ControlError::Truncated {
                len: n - 1,
                need: n
            })
        );
        // A length beyond what the DHT record may hold.
        assert_eq!(
            parse_control(&[CONTROL_RECORD, 0x03, 0xc0]),
            Err(ControlError::RecordTooLarge { len: 960, max: 959 })
        );
        // The body's own errors come through: an unknown NAT mapping value.
        let mut bad = good.clone();
        bad[n - 5] = 9;
        assert_eq!(
            parse_control(&bad),
            Err(ControlError::Record(RecordWireError::UnknownNatMapping(9)))
        );
        // A shorter length cuts the body inside the NAT extension.
        let mut short = good.clone();
        short[2] -= 1;
        assert!(matches!(
            parse_control(&short),
            Err(ControlError::Record(RecordWireError::Truncated { .. }))
        ));
        // Emitting refuses a record the DHT could not carry, and a body its
        // codec cannot write.
        let huge = RecordBody {
            candidates: vec![example_body().candidates[0]; 137],
            ..example_body()
        };
        assert!(matches!(
            emit_control(&Control::Record(huge), &mut out),
            Err(ControlError::RecordTooLarge { max: 959, .. })
        ));
        let zero_step = RecordBody {
            nat: Some(NatBehaviour {
                sequential: Some(0),
                ..example_body().nat.unwrap()
            }),
            ..example_body()
        };
        assert_eq!(
            emit_control(&Control::Record(zero_step), &mut out),
            Err(ControlError::Record(
                RecordWireError::UnrepresentableNatStep(0)
            ))
        );
        assert_eq!(
            emit_control(&Control::Record(example_body()), &mut out[..n - 1]),
            Err(ControlError::BufferTooSmall {
                have: n - 1,
                need: n
            })
        );
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
                prop_assert_eq!(parse_control(&out[..n]), Ok(msg.clone()));
                prop_assert_eq!(parse_control(&out), Ok(msg));
            }
        }

        /// Any record: its bytes after the header are the record codec's,
        /// and padding after them is ignored.
        #[test]
        fn record_round_trip(
            timestamp in any::<u64>(),
            addrs in proptest::collection::vec((any::<[u8; 4]>(), any::<u16>()), 0..16),
            pad in 0usize..16,
        ) {
            let body = RecordBody {
                timestamp,
                candidates: addrs
                    .into_iter()
                    .map(|(ip, port)| Candidate { kind: CandidateKind::Reflexive, addr: SocketAddr::from((ip, port)) })
                    .collect(),
                ..example_body()
            };
            let msg = Control::Record(body.clone());
            let mut out = vec![0u8; MAX_CONTROL_LEN + 16];
            let n = emit_control(&msg, &mut out).unwrap();
            prop_assert_eq!(&out[3..n], &crate::wire::record_plaintext_to_vec(&body).unwrap()[..]);
            prop_assert_eq!(parse_control(&out[..n + pad]), Ok(msg));
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_control(&bytes);
        }

        /// Records with a plausible header and arbitrary bodies.
        #[test]
        fn record_never_panics(body in proptest::collection::vec(any::<u8>(), 0..120), extra in 0usize..4) {
            let mut bytes = vec![CONTROL_RECORD];
            bytes.extend_from_slice(&(body.len() as u16).to_be_bytes());
            bytes.extend_from_slice(&body);
            bytes.truncate(bytes.len().saturating_sub(extra));
            let _ = parse_control(&bytes);
        }
    }
}
