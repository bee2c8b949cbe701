//! `kith::wire::parse` on arbitrary datagrams.
//!
//! Invariant: whatever `parse` accepts, the `emit_*` functions write back
//! byte for byte (handshake MACs, which `emit_*` leaves zeroed, are compared
//! against the parsed fields instead), and every length adds up to the input.
//! Whatever it rejects, the error describes the input truthfully.

use kith::wire::{self, Packet, WireError};

pub fn run(data: &[u8]) {
    let mut out = vec![0xa5u8; data.len().max(wire::INITIATION_LEN)];
    match wire::parse(data) {
        Ok(Packet::Initiation(i)) => {
            let n = wire::emit_initiation(&mut out, i.sender, i.noise).expect("buffer is large");
            assert_eq!(n, data.len());
            assert_eq!(n, wire::INITIATION_LEN);
            check_handshake(data, &out[..n], i.mac1_input, &i.mac1, &i.mac2);
        }
        Ok(Packet::Response(r)) => {
            let n = wire::emit_response(&mut out, r.sender, r.receiver, r.noise)
                .expect("buffer is large");
            assert_eq!(n, data.len());
            assert_eq!(n, wire::RESPONSE_LEN);
            check_handshake(data, &out[..n], r.mac1_input, &r.mac1, &r.mac2);
        }
        Ok(Packet::CookieReply(c)) => {
            let n = wire::emit_cookie_reply(&mut out, c.receiver, c.nonce, c.encrypted_cookie)
                .expect("buffer is large");
            assert_eq!(n, wire::COOKIE_REPLY_LEN);
            assert_eq!(&out[..n], data);
        }
        Ok(Packet::Data(d)) => {
            assert!(d.ciphertext.len() >= wire::TAG_LEN);
            assert_eq!(wire::DATA_HEADER_LEN + d.ciphertext.len(), data.len());
            wire::emit_data_header(&mut out, d.receiver, d.counter).expect("buffer is large");
            out[wire::DATA_HEADER_LEN..data.len()].copy_from_slice(d.ciphertext);
            assert_eq!(&out[..data.len()], data);
        }
        Ok(Packet::Stun(s)) => {
            assert!(wire::is_stun(data));
            assert_eq!(s, data);
            assert!(!is_kith_type(data[0]));
        }
        Err(e) => check_error(data, e),
    }
}

fn is_kith_type(b: u8) -> bool {
    (wire::TYPE_INITIATION..=wire::TYPE_DATA).contains(&b)
}

/// A handshake re-emitted with zero MACs equals the input up to mac1; the
/// MAC fields are the input's last 32 bytes, and `mac1_input` is the prefix.
fn check_handshake(data: &[u8], emitted: &[u8], mac1_input: &[u8], mac1: &[u8], mac2: &[u8]) {
    let (m1, m2) = wire::mac_offsets(data.len());
    assert_eq!(m1, mac1_input.len());
    assert_eq!(m2, m1 + wire::MAC_LEN);
    assert_eq!(m2 + wire::MAC_LEN, data.len());
    assert_eq!(mac1_input, &data[..m1]);
    assert_eq!(&emitted[..m1], &data[..m1]);
    assert!(
        emitted[m1..].iter().all(|&b| b == 0),
        "emit must zero the MACs"
    );
    assert_eq!(mac1, &data[m1..m2]);
    assert_eq!(mac2, &data[m2..]);
}

/// The error says what is actually wrong with `data`.
fn check_error(data: &[u8], e: WireError) {
    match e {
        WireError::Empty => assert!(data.is_empty()),
        WireError::UnknownType(t) => {
            assert_eq!(Some(&t), data.first());
            assert!(!is_kith_type(t));
            assert!(!wire::is_stun(data));
        }
        WireError::BadLength { len, expected, .. } => {
            assert_eq!(len, data.len());
            assert_ne!(len, expected);
            assert!(is_kith_type(data[0]) && data[0] != wire::TYPE_DATA);
        }
        WireError::DataTooShort { len, min } => {
            assert_eq!(len, data.len());
            assert!(len < min);
            assert_eq!(data[0], wire::TYPE_DATA);
        }
        WireError::Reserved => {
            assert!(is_kith_type(data[0]));
            assert_ne!(&data[1..4], &[0, 0, 0]);
        }
        WireError::BufferTooSmall { .. } => panic!("parse never reports an output buffer"),
    }
}
