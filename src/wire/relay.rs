//! Relay frames: an end-to-end kith datagram carried through a third
//! member. They travel, like control messages, encrypted inside a data
//! message of the hop's own session (sender ↔ relay, relay ↔ destination),
//! so only members with a live session can use a relay, and the relay reads
//! who talks to whom, never what: the carried datagram is the same
//! handshake or data message that would have gone direct.
//!
//! ```text
//! Forward (35 + n bytes), member → relay    Deliver (35 + n bytes), relay → member
//!  0  type = 0x10                            0  type = 0x11
//!  1  destination's Ed25519 public key (32)  1  sender's Ed25519 public key (32)
//! 33  n: datagram length (u16)              33  n (u16)
//! 35  the kith datagram (n bytes)           35  the kith datagram (n bytes)
//! ```
//!
//! The explicit length keeps the transport padding (trailing zeros) out of
//! the datagram. A Deliver is a Forward with the type byte and the key
//! replaced, the same length: a relay turns one into the other in place.
//!
//! Introductions ("call me now") have the same frame with an
//! [`Introduction`] as the carried bytes, and go through any member both
//! sides have a session with, relay or not:
//!
//! ```text
//! Introduce (35 + n bytes), member → mutual peer   Introduced, mutual peer → target
//!  0  type = 0x12                                   0  type = 0x13
//!  1  target's Ed25519 public key (32)              1  sender's Ed25519 public key (32)
//! 33  n (u16), 65 ≤ n ≤ 1023                       33  n (u16)
//! 35  Ed25519 signature (64)                       35  the same signature and record
//! 99  the sender's record plaintext (n − 64 bytes)
//! ```

use super::record::{
    MAX_RECORD_PLAINTEXT, RecordBody, RecordWireError, emit_record_plaintext,
    parse_record_plaintext, record_plaintext_len,
};

pub const RELAY_FORWARD: u8 = 0x10;
pub const RELAY_DELIVER: u8 = 0x11;
pub const RELAY_INTRODUCE: u8 = 0x12;
pub const RELAY_INTRODUCED: u8 = 0x13;
/// Type, key and length in front of the carried datagram.
pub const RELAY_HEADER_LEN: usize = 1 + 32 + 2;
/// An Ed25519 signature, in front of the record of an introduction.
pub const INTRO_SIGNATURE_LEN: usize = 64;
/// The largest introduction: a signature and the largest record.
pub const MAX_INTRODUCTION_LEN: usize = INTRO_SIGNATURE_LEN + MAX_RECORD_PLAINTEXT;

/// Which way a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayKind {
    /// To the relay: `key` is the destination.
    Forward,
    /// From the relay: `key` is the original sender.
    Deliver,
    /// To a mutual peer: `key` is the member to introduce us to.
    Introduce,
    /// From a mutual peer: `key` is the member who introduces itself.
    Introduced,
}

impl RelayKind {
    fn type_byte(self) -> u8 {
        match self {
            Self::Forward => RELAY_FORWARD,
            Self::Deliver => RELAY_DELIVER,
            Self::Introduce => RELAY_INTRODUCE,
            Self::Introduced => RELAY_INTRODUCED,
        }
    }

    /// The frame the hop sends on for this one: a Deliver for a Forward,
    /// an Introduced for an Introduce.
    pub fn passed_on(self) -> Option<Self> {
        match self {
            Self::Forward => Some(Self::Deliver),
            Self::Introduce => Some(Self::Introduced),
            Self::Deliver | Self::Introduced => None,
        }
    }
}

/// A parsed frame, borrowing the datagram from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayFrame<'a> {
    pub kind: RelayKind,
    pub key: [u8; 32],
    pub datagram: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("not a relay frame (type 0x{0:02x})")]
    NotRelay(u8),
    #[error("relay frame of {len} bytes is shorter than its header and datagram ({need})")]
    Truncated { len: usize, need: usize },
    #[error("relay frame carries an empty datagram")]
    Empty,
    #[error("output buffer of {have} bytes, need {need}")]
    BufferTooSmall { have: usize, need: usize },
}

/// The carried bytes of an Introduce or Introduced frame: the sender's
/// signature over (domain, target key, record) and its current record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Introduction<'a> {
    pub signature: [u8; INTRO_SIGNATURE_LEN],
    /// The record as sent: what the signature covers.
    pub record: &'a [u8],
    pub body: RecordBody,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IntroductionError {
    #[error("introduction of {len} bytes is outside {min}..={max}")]
    Length { len: usize, min: usize, max: usize },
    #[error("introduction record: {0}")]
    Record(RecordWireError),
    #[error("output buffer of {have} bytes, need {need}")]
    BufferTooSmall { have: usize, need: usize },
}

/// True when an inner plaintext is a relay frame (checked before the other
/// control messages, whose parser does not know these types).
pub fn is_relay_frame(plain: &[u8]) -> bool {
    matches!(
        plain.first(),
        Some(&(RELAY_FORWARD | RELAY_DELIVER | RELAY_INTRODUCE | RELAY_INTRODUCED))
    )
}

pub fn parse_relay(buf: &[u8]) -> Result<RelayFrame<'_>, RelayError> {
    let kind = match buf.first() {
        Some(&RELAY_FORWARD) => RelayKind::Forward,
        Some(&RELAY_DELIVER) => RelayKind::Deliver,
        Some(&RELAY_INTRODUCE) => RelayKind::Introduce,
        Some(&RELAY_INTRODUCED) => RelayKind::Introduced,
        Some(&other) => return Err(RelayError::NotRelay(other)),
        None => return Err(RelayError::Truncated { len: 0, need: 1 }),
    };
    if buf.len() < RELAY_HEADER_LEN {
        return Err(RelayError::Truncated {
            len: buf.len(),
            need: RELAY_HEADER_LEN,
        });
    }
    let n = usize::from(u16::from_be_bytes([buf[33], buf[34]]));
    if n == 0 {
        return Err(RelayError::Empty);
    }
    let end = RELAY_HEADER_LEN + n;
    if buf.len() < end {
        return Err(RelayError::Truncated {
            len: buf.len(),
            need: end,
        });
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&buf[1..33]);
    Ok(RelayFrame {
        kind,
        key,
        datagram: &buf[RELAY_HEADER_LEN..end],
    })
}

/// Write the header of a frame whose `len`-byte datagram the caller puts
/// (or already put) at `out[RELAY_HEADER_LEN..]`; returns the frame length.
/// Sealing straight into the frame saves a copy on the relayed data path.
pub fn emit_relay_header(
    kind: RelayKind,
    key: &[u8; 32],
    len: usize,
    out: &mut [u8],
) -> Result<usize, RelayError> {
    let total = RELAY_HEADER_LEN + len;
    let n = u16::try_from(len).map_err(|_| RelayError::BufferTooSmall {
        have: usize::from(u16::MAX),
        need: len,
    })?;
    if n == 0 {
        return Err(RelayError::Empty);
    }
    if out.len() < total {
        return Err(RelayError::BufferTooSmall {
            have: out.len(),
            need: total,
        });
    }
    out[0] = kind.type_byte();
    out[1..33].copy_from_slice(key);
    out[33..35].copy_from_slice(&n.to_be_bytes());
    Ok(total)
}

/// A whole frame: header and a copy of `datagram`.
pub fn emit_relay(
    kind: RelayKind,
    key: &[u8; 32],
    datagram: &[u8],
    out: &mut [u8],
) -> Result<usize, RelayError> {
    let total = emit_relay_header(kind, key, datagram.len(), out)?;
    out[RELAY_HEADER_LEN..total].copy_from_slice(datagram);
    Ok(total)
}

/// The carried bytes of an introduction frame (its `datagram`). Its record
/// parses as a DHT record plaintext (version 1 or 2), so nothing else is
/// accepted; an empty record is too short.
pub fn parse_introduction(payload: &[u8]) -> Result<Introduction<'_>, IntroductionError> {
    if payload.len() <= INTRO_SIGNATURE_LEN || payload.len() > MAX_INTRODUCTION_LEN {
        return Err(IntroductionError::Length {
            len: payload.len(),
            min: INTRO_SIGNATURE_LEN + 1,
            max: MAX_INTRODUCTION_LEN,
        });
    }
    let (sig, record) = payload.split_at(INTRO_SIGNATURE_LEN);
    let body = parse_record_plaintext(record).map_err(IntroductionError::Record)?;
    let mut signature = [0u8; INTRO_SIGNATURE_LEN];
    signature.copy_from_slice(sig);
    Ok(Introduction {
        signature,
        record,
        body,
    })
}

/// Write an introduction (signature, then `body`'s plaintext) into `out`;
/// returns its length. A record larger than the DHT allows is refused.
pub fn emit_introduction(
    signature: &[u8; INTRO_SIGNATURE_LEN],
    body: &RecordBody,
    out: &mut [u8],
) -> Result<usize, IntroductionError> {
    let n = record_plaintext_len(body);
    if n > MAX_RECORD_PLAINTEXT {
        return Err(IntroductionError::Length {
            len: INTRO_SIGNATURE_LEN + n,
            min: INTRO_SIGNATURE_LEN + 1,
            max: MAX_INTRODUCTION_LEN,
        });
    }
    let total = INTRO_SIGNATURE_LEN + n;
    if out.len() < total {
        return Err(IntroductionError::BufferTooSmall {
            have: out.len(),
            need: total,
        });
    }
    out[..INTRO_SIGNATURE_LEN].copy_from_slice(signature);
    emit_record_plaintext(&mut out[INTRO_SIGNATURE_LEN..total], body)
        .map_err(IntroductionError::Record)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::wire::hex;

    #[test]
    fn snapshots() {
        let mut out = [0u8; 64];
        let n = emit_relay(RelayKind::Forward, &[0xab; 32], &[0x84, 1, 2], &mut out).unwrap();
        assert_eq!(hex(&out[..n]), format!("10{}0003840102", "ab".repeat(32)));
        let n = emit_relay(RelayKind::Deliver, &[0x01; 32], &[0x81], &mut out).unwrap();
        assert_eq!(hex(&out[..n]), format!("11{}000181", "01".repeat(32)));
    }

    #[test]
    fn padding_is_ignored_and_errors_are_precise() {
        let mut buf = [0u8; 64];
        let n = emit_relay(RelayKind::Forward, &[7; 32], &[9, 9], &mut buf).unwrap();
        // Transport padding after the frame.
        let f = parse_relay(&buf[..n + 11]).unwrap();
        assert_eq!(f.datagram, &[9, 9]);
        assert_eq!(f.key, [7; 32]);
        assert_eq!(
            parse_relay(&buf[..n - 1]),
            Err(RelayError::Truncated {
                len: n - 1,
                need: n
            })
        );
        assert_eq!(
            parse_relay(&buf[..10]),
            Err(RelayError::Truncated { len: 10, need: 35 })
        );
        assert_eq!(parse_relay(&[0x03]), Err(RelayError::NotRelay(0x03)));
        assert_eq!(
            parse_relay(&[]),
            Err(RelayError::Truncated { len: 0, need: 1 })
        );
        buf[33] = 0;
        buf[34] = 0;
        assert_eq!(parse_relay(&buf[..n]), Err(RelayError::Empty));
        assert_eq!(
            emit_relay(RelayKind::Forward, &[0; 32], &[1; 8], &mut [0u8; 40]),
            Err(RelayError::BufferTooSmall { have: 40, need: 43 })
        );
        assert!(is_relay_frame(&[0x10]) && is_relay_frame(&[0x11]) && !is_relay_frame(&[0x45]));
    }

    fn intro_body() -> RecordBody {
        RecordBody {
            timestamp: 1_700_000_000,
            candidates: vec![crate::discovery::Candidate {
                kind: crate::discovery::CandidateKind::Reflexive,
                addr: "198.18.1.2:51871".parse().unwrap(),
            }],
            relays: Vec::new(),
            nat: None,
        }
    }

    #[test]
    fn introduction_snapshot() {
        let mut payload = [0u8; MAX_INTRODUCTION_LEN];
        let n = emit_introduction(&[0x5a; 64], &intro_body(), &mut payload).unwrap();
        let mut out = [0u8; 256];
        let total = emit_relay(RelayKind::Introduce, &[0xcd; 32], &payload[..n], &mut out).unwrap();
        assert_eq!(
            hex(&out[..total]),
            format!(
                "12{}{:04x}{}{}",
                "cd".repeat(32),
                n,
                "5a".repeat(64),
                "02000000006553f10001 42 c6120102 ca9f 00".replace(' ', "")
            )
        );
        let f = parse_relay(&out[..total + 7]).unwrap();
        assert_eq!(f.kind, RelayKind::Introduce);
        assert_eq!(f.kind.passed_on(), Some(RelayKind::Introduced));
        let intro = parse_introduction(f.datagram).unwrap();
        assert_eq!(intro.signature, [0x5a; 64]);
        assert_eq!(intro.body, intro_body());
        assert_eq!(intro.record, &payload[64..n]);
        assert!(is_relay_frame(&[0x12]) && is_relay_frame(&[0x13]) && !is_relay_frame(&[0x14]));
    }

    #[test]
    fn introduction_errors_are_precise() {
        assert_eq!(
            parse_introduction(&[0u8; 64]),
            Err(IntroductionError::Length {
                len: 64,
                min: 65,
                max: MAX_INTRODUCTION_LEN
            })
        );
        assert!(matches!(
            parse_introduction(&[0u8; MAX_INTRODUCTION_LEN + 1]),
            Err(IntroductionError::Length { .. })
        ));
        let mut bad = vec![0u8; 64];
        bad.push(7);
        assert_eq!(
            parse_introduction(&bad),
            Err(IntroductionError::Record(
                RecordWireError::UnsupportedVersion(7)
            ))
        );
        assert!(matches!(
            emit_introduction(&[0; 64], &intro_body(), &mut [0u8; 70]),
            Err(IntroductionError::BufferTooSmall { have: 70, .. })
        ));
    }

    proptest! {
        /// Any record: the signature and the record's own codec, nothing else.
        #[test]
        fn introduction_round_trip(sig in proptest::collection::vec(any::<u8>(), 64), timestamp in any::<u64>(), addrs in proptest::collection::vec((any::<[u8; 4]>(), any::<u16>()), 0..16)) {
            let body = RecordBody {
                timestamp,
                candidates: addrs.into_iter().map(|(ip, port)| crate::discovery::Candidate {
                    kind: crate::discovery::CandidateKind::Local,
                    addr: std::net::SocketAddr::from((ip, port)),
                }).collect(),
                ..intro_body()
            };
            let signature: [u8; 64] = sig.try_into().unwrap();
            let mut out = vec![0u8; MAX_INTRODUCTION_LEN];
            let n = emit_introduction(&signature, &body, &mut out).unwrap();
            let intro = parse_introduction(&out[..n]).unwrap();
            prop_assert_eq!(intro.signature, signature);
            prop_assert_eq!(intro.body, body);
        }

        #[test]
        fn introduction_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_introduction(&buf);
        }

        #[test]
        fn round_trip(key in any::<[u8; 32]>(), data in proptest::collection::vec(any::<u8>(), 1..1600), deliver in any::<bool>(), pad in 0usize..16) {
            let kind = [RelayKind::Forward, RelayKind::Deliver, RelayKind::Introduce, RelayKind::Introduced][usize::from(deliver) * 2 + pad % 2];
            let mut out = vec![0u8; RELAY_HEADER_LEN + data.len() + pad];
            let n = emit_relay(kind, &key, &data, &mut out).unwrap();
            prop_assert_eq!(n, RELAY_HEADER_LEN + data.len());
            let f = parse_relay(&out).unwrap();
            prop_assert_eq!(f.kind, kind);
            prop_assert_eq!(f.key, key);
            prop_assert_eq!(f.datagram, &data[..]);
        }

        #[test]
        fn never_panics(buf in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = parse_relay(&buf);
        }
    }
}
