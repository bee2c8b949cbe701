//! `kith::wire::parse_relay` on arbitrary decrypted hop plaintexts.
//!
//! Invariant: an accepted frame re-emits to exactly the bytes it was read
//! from (type, key, length, datagram; the rest is padding), and the
//! datagram is never empty. Errors are truthful: `NotRelay` carries the
//! first byte, `Truncated` the input length and more than it, `Empty` only
//! for a zero length field. The datagram of an introduction frame (0x12,
//! 0x13) also goes through `parse_introduction`: accepted, its record is
//! the bytes after the signature, and signature and body survive a re-emit.

use kith::wire::{
    INTRO_SIGNATURE_LEN, MAX_INTRODUCTION_LEN, RELAY_HEADER_LEN, RelayError, RelayKind,
    emit_introduction, emit_relay, parse_introduction, parse_relay,
};

pub fn run(data: &[u8]) {
    match parse_relay(data) {
        Ok(frame) => {
            assert!(!frame.datagram.is_empty());
            let mut out = vec![0u8; RELAY_HEADER_LEN + frame.datagram.len()];
            let n = emit_relay(frame.kind, &frame.key, frame.datagram, &mut out)
                .expect("a parsed frame emits");
            assert_eq!(
                &out[..n],
                &data[..n],
                "re-emit differs from the accepted input"
            );
            if matches!(frame.kind, RelayKind::Introduce | RelayKind::Introduced)
                && let Ok(intro) = parse_introduction(frame.datagram)
            {
                assert_eq!(intro.record, &frame.datagram[INTRO_SIGNATURE_LEN..]);
                let mut again = vec![0u8; MAX_INTRODUCTION_LEN];
                let m = emit_introduction(&intro.signature, &intro.body, &mut again)
                    .expect("a parsed introduction emits");
                // Not byte for byte: a record may carry extensions this
                // version skips (the signature covers `intro.record`, the
                // bytes as received, for exactly that reason).
                let back = parse_introduction(&again[..m]).expect("re-emitted parses");
                assert_eq!(back.signature, intro.signature);
                assert_eq!(back.body, intro.body, "introduction round trip differs");
            }
        }
        Err(RelayError::NotRelay(t)) => assert_eq!(Some(&t), data.first()),
        Err(RelayError::Truncated { len, need }) => {
            assert_eq!(len, data.len());
            assert!(need > len);
        }
        Err(RelayError::Empty) => {
            assert!(data.len() >= RELAY_HEADER_LEN && data[33] == 0 && data[34] == 0)
        }
        Err(RelayError::BufferTooSmall { .. }) => panic!("parse never reports a buffer error"),
    }
}
