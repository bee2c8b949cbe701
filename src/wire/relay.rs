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

pub const RELAY_FORWARD: u8 = 0x10;
pub const RELAY_DELIVER: u8 = 0x11;
/// Type, key and length in front of the carried datagram.
pub const RELAY_HEADER_LEN: usize = 1 + 32 + 2;

/// Which way a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayKind {
    /// To the relay: `key` is the destination.
    Forward,
    /// From the relay: `key` is the original sender.
    Deliver,
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

/// True when an inner plaintext is a relay frame (checked before the other
/// control messages, whose parser does not know these types).
pub fn is_relay_frame(plain: &[u8]) -> bool {
    matches!(plain.first(), Some(&(RELAY_FORWARD | RELAY_DELIVER)))
}

pub fn parse_relay(buf: &[u8]) -> Result<RelayFrame<'_>, RelayError> {
    let kind = match buf.first() {
        Some(&RELAY_FORWARD) => RelayKind::Forward,
        Some(&RELAY_DELIVER) => RelayKind::Deliver,
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
    out[0] = match kind {
        RelayKind::Forward => RELAY_FORWARD,
        RelayKind::Deliver => RELAY_DELIVER,
    };
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

    proptest! {
        #[test]
        fn round_trip(key in any::<[u8; 32]>(), data in proptest::collection::vec(any::<u8>(), 1..1600), deliver in any::<bool>(), pad in 0usize..16) {
            let kind = if deliver { RelayKind::Deliver } else { RelayKind::Forward };
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
