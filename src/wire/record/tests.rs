use super::*;
use proptest::prelude::*;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn cand(kind: CandidateKind, addr: &str) -> Candidate {
    Candidate {
        kind,
        addr: addr.parse().unwrap(),
    }
}

/// The example of docs/protocol.md ("DHT record").
fn example() -> RecordBody {
    RecordBody {
        timestamp: 1_700_000_000,
        candidates: vec![
            cand(CandidateKind::Local, "192.168.1.20:51871"),
            cand(CandidateKind::Reflexive, "203.0.113.7:40001"),
            cand(CandidateKind::Mapped, "[2001:db8::1]:51871"),
        ],
        relays: vec![[0xab; 32]],
    }
}

const EXAMPLE_HEX: &str = "01 000000006553f100 03 \
    41 c0a80114 ca9f \
    42 cb007107 9c41 \
    63 20010db8000000000000000000000001 ca9f \
    01 abababababababababababababababababababababababababababababababab";

#[test]
fn plaintext_snapshot() {
    let body = example();
    let bytes = record_plaintext_to_vec(&body).unwrap();
    assert_eq!(hex(&bytes), hex(&unhex(EXAMPLE_HEX)));
    assert_eq!(bytes.len(), 11 + 7 + 7 + 19 + 32);
    assert_eq!(bytes.len(), record_plaintext_len(&body));
    assert_eq!(parse_record_plaintext(&bytes).unwrap(), body);
}

#[test]
fn empty_body_snapshot() {
    let body = RecordBody::default();
    let bytes = record_plaintext_to_vec(&body).unwrap();
    assert_eq!(hex(&bytes), "0100000000000000000000");
    assert_eq!(parse_record_plaintext(&bytes).unwrap(), body);
}

#[test]
fn envelope_snapshot() {
    let nonce: [u8; 24] = std::array::from_fn(|i| i as u8);
    let ct = [0xeeu8; 20];
    let mut out = [0u8; 64];
    let n = emit_record_envelope(&mut out, &nonce, &ct).unwrap();
    assert_eq!(n, 45);
    assert_eq!(
        hex(&out[..n]),
        "01000102030405060708090a0b0c0d0e0f1011121314151617eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
    );
    let env = parse_record_envelope(&out[..n]).unwrap();
    assert_eq!(env.version, 1);
    assert_eq!(env.nonce, &nonce);
    assert_eq!(env.ciphertext, &ct);
}

#[test]
fn plaintext_rejections() {
    let good = unhex(EXAMPLE_HEX);
    assert_eq!(parse_record_plaintext(&[]), Err(RecordWireError::Empty));
    let mut v2 = good.clone();
    v2[0] = 2;
    assert_eq!(
        parse_record_plaintext(&v2),
        Err(RecordWireError::UnsupportedVersion(2))
    );
    // Cut inside the timestamp.
    assert_eq!(
        parse_record_plaintext(&good[..5]),
        Err(RecordWireError::Truncated {
            field: "timestamp",
            len: 5,
            need: 9
        })
    );
    // Cut inside the IPv6 address of candidate 2.
    assert!(matches!(
        parse_record_plaintext(&good[..30]),
        Err(RecordWireError::Truncated {
            field: "IPv6 address",
            len: 30,
            ..
        })
    ));
    // No relay count.
    assert!(matches!(
        parse_record_plaintext(&good[..good.len() - 33]),
        Err(RecordWireError::Truncated {
            field: "relay count",
            ..
        })
    ));
    let mut bad_kind = good.clone();
    bad_kind[10] = 0x44;
    assert_eq!(
        parse_record_plaintext(&bad_kind),
        Err(RecordWireError::UnknownCandidateTag {
            index: 0,
            tag: 0x44
        })
    );
    let mut bad_family = good.clone();
    bad_family[17] = 0x52;
    assert_eq!(
        parse_record_plaintext(&bad_family),
        Err(RecordWireError::UnknownCandidateTag {
            index: 1,
            tag: 0x52
        })
    );
    let mut long = good.clone();
    long.push(0);
    assert_eq!(
        parse_record_plaintext(&long),
        Err(RecordWireError::TrailingBytes {
            len: good.len() + 1,
            end: good.len()
        })
    );
}

#[test]
fn envelope_rejections() {
    assert_eq!(parse_record_envelope(&[]), Err(RecordWireError::Empty));
    assert_eq!(
        parse_record_envelope(&[7; 50]),
        Err(RecordWireError::UnsupportedVersion(7))
    );
    assert_eq!(
        parse_record_envelope(&[1; 40]),
        Err(RecordWireError::EnvelopeTooShort { len: 40, min: 41 })
    );
    assert!(parse_record_envelope(&[1; 41]).is_ok());
    assert!(parse_record_envelope(&[1; 1000]).is_ok());
    assert_eq!(
        parse_record_envelope(&[1; 1001]),
        Err(RecordWireError::TooLarge {
            len: 1001,
            max: 1000
        })
    );
    let mut out = [0u8; 1100];
    assert_eq!(
        emit_record_envelope(&mut out, &[0; 24], &[0; 976]),
        Err(RecordWireError::TooLarge {
            len: 1001,
            max: 1000
        })
    );
    assert_eq!(
        emit_record_envelope(&mut out, &[0; 24], &[0; 975]),
        Ok(1000)
    );
    assert_eq!(
        emit_record_envelope(&mut out, &[0; 24], &[0; 15]),
        Err(RecordWireError::EnvelopeTooShort { len: 40, min: 41 })
    );
    assert_eq!(
        emit_record_envelope(&mut out[..44], &[0; 24], &[0; 20]),
        Err(RecordWireError::BufferTooSmall { have: 44, need: 45 })
    );
}

#[test]
fn emit_rejections() {
    let mut body = example();
    let mut small = [0u8; 10];
    assert_eq!(
        emit_record_plaintext(&mut small, &body),
        Err(RecordWireError::BufferTooSmall { have: 10, need: 76 })
    );
    body.relays = vec![[0; 32]; 256];
    assert_eq!(
        record_plaintext_to_vec(&body),
        Err(RecordWireError::TooMany {
            what: "relays",
            count: 256
        })
    );
}

/// The sizes docs/protocol.md promises.
#[test]
fn documented_capacity() {
    assert_eq!(RECORD_ENVELOPE_OVERHEAD, 41);
    assert_eq!(MAX_RECORD_PLAINTEXT, 959);
    let v4 = cand(CandidateKind::Local, "10.0.0.1:1");
    let v6 = cand(CandidateKind::Local, "[fd00::1]:1");
    let body = |n4: usize, n6: usize, relays: usize| RecordBody {
        timestamp: 0,
        candidates: [vec![v4; n4], vec![v6; n6]].concat(),
        relays: vec![[0; 32]; relays],
    };
    // 16 IPv4 + 16 IPv6 + 8 relays: 683 bytes of plaintext, 724 of value.
    assert_eq!(record_plaintext_len(&body(16, 16, 8)), 683);
    // The largest all-IPv4 and all-IPv6 bodies without relays.
    assert!(record_plaintext_len(&body(135, 0, 0)) <= MAX_RECORD_PLAINTEXT);
    assert!(record_plaintext_len(&body(136, 0, 0)) > MAX_RECORD_PLAINTEXT);
    assert!(record_plaintext_len(&body(0, 49, 0)) <= MAX_RECORD_PLAINTEXT);
    assert!(record_plaintext_len(&body(0, 50, 0)) > MAX_RECORD_PLAINTEXT);
}

fn arb_candidate() -> impl Strategy<Value = Candidate> {
    let kind = prop_oneof![
        Just(CandidateKind::Local),
        Just(CandidateKind::Reflexive),
        Just(CandidateKind::Mapped)
    ];
    let addr = prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::from((Ipv4Addr::from(ip), port))),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::from((Ipv6Addr::from(ip), port))),
    ];
    (kind, addr).prop_map(|(kind, addr)| Candidate { kind, addr })
}

fn arb_body() -> impl Strategy<Value = RecordBody> {
    (
        any::<u64>(),
        proptest::collection::vec(arb_candidate(), 0..40),
        proptest::collection::vec(any::<[u8; 32]>(), 0..6),
    )
        .prop_map(|(timestamp, candidates, relays)| RecordBody {
            timestamp,
            candidates,
            relays,
        })
}

proptest! {
    #[test]
    fn plaintext_round_trip(body in arb_body()) {
        let bytes = record_plaintext_to_vec(&body).unwrap();
        prop_assert_eq!(bytes.len(), record_plaintext_len(&body));
        prop_assert_eq!(parse_record_plaintext(&bytes).unwrap(), body);
    }

    #[test]
    fn plaintext_parse_emit_parse(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(body) = parse_record_plaintext(&bytes) {
            prop_assert_eq!(record_plaintext_to_vec(&body).unwrap(), bytes);
        }
    }

    #[test]
    fn envelope_round_trip(nonce in any::<[u8; 24]>(), ct in proptest::collection::vec(any::<u8>(), 16..976)) {
        let mut out = vec![0u8; 1000];
        let n = emit_record_envelope(&mut out, &nonce, &ct).unwrap();
        prop_assert_eq!(n, RECORD_ENVELOPE_OVERHEAD - RECORD_TAG_LEN + ct.len());
        let env = parse_record_envelope(&out[..n]).unwrap();
        prop_assert_eq!(env.nonce, &nonce);
        prop_assert_eq!(env.ciphertext, &ct[..]);
    }
}
