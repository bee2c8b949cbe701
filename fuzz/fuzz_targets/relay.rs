//! `kith::wire::parse_relay` on arbitrary decrypted hop plaintexts.
//!
//! Invariant: an accepted frame re-emits to exactly the bytes it was read
//! from (type, key, length, datagram; the rest is padding), and the
//! datagram is never empty. Errors are truthful: `NotRelay` carries the
//! first byte, `Truncated` the input length and more than it, `Empty` only
//! for a zero length field.

#![no_main]

use kith::wire::{RELAY_HEADER_LEN, RelayError, emit_relay, parse_relay};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
