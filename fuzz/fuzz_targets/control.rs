//! `kith::wire::parse_control` on arbitrary decrypted control plaintexts.
//!
//! Invariant: an accepted message re-emits to a prefix of the input (the
//! rest is padding) and parses back to itself; errors are truthful (`Empty`
//! only for empty input, `UnknownType` carries the first byte).

#![no_main]

use kith::wire::{Control, ControlError, MAX_CONTROL_LEN, emit_control, parse_control};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_control(data) {
        Ok(msg) => {
            let mut out = [0u8; MAX_CONTROL_LEN];
            let n = emit_control(&msg, &mut out).expect("MAX_CONTROL_LEN fits every message");
            assert!(n <= data.len());
            assert_eq!(&out[..n], &data[..n], "re-emit differs from the accepted input");
            assert_eq!(parse_control(&out[..n]), Ok(msg));
            if let Control::PathPong { observed, .. } = msg {
                assert_eq!(data[9], if observed.is_ipv4() { 4 } else { 6 });
            }
        }
        Err(ControlError::Empty) => assert!(data.is_empty()),
        Err(ControlError::UnknownType(t)) => assert_eq!(Some(&t), data.first()),
        Err(ControlError::Truncated { len, .. }) => assert_eq!(len, data.len()),
        Err(ControlError::Family(f)) => assert_eq!(data.get(9), Some(&f)),
        Err(ControlError::BufferTooSmall { .. }) => panic!("parse never reports a buffer error"),
    }
});
