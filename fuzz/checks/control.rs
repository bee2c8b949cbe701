//! `kith::wire::parse_control` on arbitrary decrypted control plaintexts.
//!
//! Invariant: an accepted message parses back to itself from its re-emit.
//! A ping or pong re-emits to a prefix of the input (the rest is padding);
//! a record's body is exactly what the DHT record codec reads from the
//! length its header gives, and it re-emits as that codec writes it (which
//! may differ from the input: version 2, no unknown extensions). Errors are
//! truthful (`Empty` only for empty input, `UnknownType` carries the first
//! byte, a record's errors are its codec's on the bytes its header names).

use kith::wire::{
    CONTROL_RECORD, Control, ControlError, MAX_CONTROL_LEN, MAX_RECORD_PLAINTEXT, emit_control,
    parse_control, parse_record_plaintext, record_plaintext_to_vec,
};

/// The body length a record's header gives (the caller checked 3 bytes).
fn record_len(data: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([data[1], data[2]]))
}

pub fn run(data: &[u8]) {
    match parse_control(data) {
        Ok(msg) => {
            let mut out = [0u8; MAX_CONTROL_LEN];
            let n = emit_control(&msg, &mut out).expect("MAX_CONTROL_LEN fits every message");
            assert_eq!(parse_control(&out[..n]).as_ref(), Ok(&msg));
            match &msg {
                Control::Record(body) => {
                    assert_eq!(data[0], CONTROL_RECORD);
                    let len = record_len(data);
                    assert!(len <= MAX_RECORD_PLAINTEXT && 3 + len <= data.len());
                    assert_eq!(parse_record_plaintext(&data[3..3 + len]).as_ref(), Ok(body));
                    let canonical = record_plaintext_to_vec(body).expect("parsed bodies emit");
                    assert_eq!(&out[3..n], &canonical[..]);
                    assert_eq!(record_len(&out), n - 3);
                }
                Control::PathPing { .. } | Control::PathPong { .. } => {
                    assert!(n <= data.len());
                    assert_eq!(
                        &out[..n],
                        &data[..n],
                        "re-emit differs from the accepted input"
                    );
                    if let Control::PathPong { observed, .. } = msg {
                        assert_eq!(data[9], if observed.is_ipv4() { 4 } else { 6 });
                    }
                }
            }
        }
        Err(ControlError::Empty) => assert!(data.is_empty()),
        Err(ControlError::UnknownType(t)) => assert_eq!(Some(&t), data.first()),
        Err(ControlError::Truncated { len, need }) => {
            assert_eq!(len, data.len());
            assert!(need > len);
        }
        Err(ControlError::Family(f)) => assert_eq!(data.get(9), Some(&f)),
        Err(ControlError::RecordTooLarge { len, max }) => {
            assert_eq!(data[0], CONTROL_RECORD);
            assert_eq!(len, record_len(data));
            assert!(len > max && max == MAX_RECORD_PLAINTEXT);
        }
        Err(ControlError::Record(e)) => {
            assert_eq!(data[0], CONTROL_RECORD);
            let len = record_len(data);
            assert_eq!(parse_record_plaintext(&data[3..3 + len]), Err(e));
        }
        Err(ControlError::BufferTooSmall { .. }) => panic!("parse never reports a buffer error"),
    }
}
