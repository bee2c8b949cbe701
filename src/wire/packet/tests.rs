use super::*;
use proptest::prelude::*;

use crate::wire::hex;

#[test]
fn data_header_snapshot() {
    let mut out = [0u8; 16];
    emit_data_header(&mut out, 0x0102_0304, 0x1122_3344_5566_7788).unwrap();
    assert_eq!(hex(&out), "84000000010203041122334455667788");
}

#[test]
fn initiation_snapshot() {
    let noise: [u8; NOISE_INIT_LEN] = std::array::from_fn(|i| i as u8);
    let mut out = [0xffu8; INITIATION_LEN];
    let n = emit_initiation(&mut out, 0xdead_beef, &noise).unwrap();
    assert_eq!(n, 148);
    let h = hex(&out);
    assert_eq!(&h[..24], "81000000deadbeef00010203");
    // MACs zeroed for the caller to fill.
    assert_eq!(&h[h.len() - 64..], "0".repeat(64));
    match parse(&out).unwrap() {
        Packet::Initiation(i) => {
            assert_eq!(i.sender, 0xdead_beef);
            assert_eq!(i.noise, &noise);
            assert_eq!(i.mac1_input.len(), 116);
        }
        other => panic!("parsed as {other:?}"),
    }
}

#[test]
fn response_snapshot() {
    let noise = [0xaau8; NOISE_RESPONSE_LEN];
    let mut out = [0u8; RESPONSE_LEN];
    assert_eq!(emit_response(&mut out, 1, 2, &noise).unwrap(), 92);
    assert_eq!(hex(&out[..16]), "820000000000000100000002aaaaaaaa");
}

#[test]
fn cookie_reply_snapshot() {
    let mut out = [0u8; COOKIE_REPLY_LEN];
    emit_cookie_reply(&mut out, 7, &[1u8; 24], &[2u8; 32]).unwrap();
    assert_eq!(hex(&out[..12]), "830000000000000701010101");
    assert!(matches!(parse(&out), Ok(Packet::CookieReply(c)) if c.receiver == 7));
}

#[test]
fn stun_is_told_apart() {
    // RFC 5769 §2.1 sample request header: type 0x0001, length 0x0058, magic cookie.
    let mut stun = vec![0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42];
    stun.extend_from_slice(&[0u8; 12 + 0x58]);
    assert!(matches!(parse(&stun), Ok(Packet::Stun(_))));
    // Same bytes without the cookie are not STUN.
    stun[4] = 0;
    assert_eq!(parse(&stun), Err(WireError::UnknownType(0)));
}

#[test]
fn rejects_malformed() {
    assert_eq!(parse(&[]), Err(WireError::Empty));
    assert_eq!(
        parse(&[0x84; 31]),
        Err(WireError::DataTooShort { len: 31, min: 32 })
    );
    assert!(matches!(
        parse(&[0x81; 147]),
        Err(WireError::BadLength { .. })
    ));
    let mut d = [0u8; 32];
    d[0] = TYPE_DATA;
    d[2] = 1;
    assert_eq!(parse(&d), Err(WireError::Reserved));
    assert_eq!(parse(&[0x7f, 0, 0, 0]), Err(WireError::UnknownType(0x7f)));
    let mut small = [0u8; 10];
    assert_eq!(
        emit_data_header(&mut small, 0, 0),
        Err(WireError::BufferTooSmall { have: 10, need: 16 })
    );
    assert_eq!(
        emit_initiation(&mut small, 0, &[0; NOISE_INIT_LEN]),
        Err(WireError::BufferTooSmall {
            have: 10,
            need: 148
        })
    );
}

proptest! {
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn data_round_trip(receiver in any::<u32>(), counter in any::<u64>(), body in proptest::collection::vec(any::<u8>(), 16..200)) {
        let mut out = vec![0u8; 16 + body.len()];
        emit_data_header(&mut out, receiver, counter).unwrap();
        out[16..].copy_from_slice(&body);
        let Packet::Data(d) = parse(&out).unwrap() else { panic!("not data") };
        prop_assert_eq!(d.receiver, receiver);
        prop_assert_eq!(d.counter, counter);
        prop_assert_eq!(d.ciphertext, &body[..]);
    }

    #[test]
    fn response_round_trip(s in any::<u32>(), r in any::<u32>(), noise in proptest::array::uniform32(any::<u8>())) {
        let mut n = [0u8; NOISE_RESPONSE_LEN];
        n[..32].copy_from_slice(&noise);
        let mut out = [0u8; RESPONSE_LEN];
        emit_response(&mut out, s, r, &n).unwrap();
        let Packet::Response(p) = parse(&out).unwrap() else { panic!("not a response") };
        prop_assert_eq!((p.sender, p.receiver), (s, r));
        prop_assert_eq!(p.noise, &n);
    }
}
