use super::*;
use proptest::prelude::*;

use crate::wire::hex;

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
        nat: None,
    }
}

const EXAMPLE_HEX: &str = "02 000000006553f100 03 \
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
    assert_eq!(hex(&bytes), "0200000000000000000000");
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
    for version in [0, 3, 0xff] {
        let mut other = good.clone();
        other[0] = version;
        assert_eq!(
            parse_record_plaintext(&other),
            Err(RecordWireError::UnsupportedVersion(version))
        );
    }
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
    // In version 2 a stray byte after the relays starts an extension whose
    // length byte is missing.
    let mut long = good.clone();
    long.push(0);
    assert_eq!(
        parse_record_plaintext(&long),
        Err(RecordWireError::Truncated {
            field: "extension length",
            len: good.len() + 1,
            need: good.len() + 2
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
    body.nat = Some(nat_example());
    assert_eq!(
        emit_record_plaintext(&mut small, &body),
        Err(RecordWireError::BufferTooSmall { have: 10, need: 89 })
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
        nat: None,
    };
    // 16 IPv4 + 16 IPv6 + 8 relays: 683 bytes of plaintext, 724 of value.
    assert_eq!(record_plaintext_len(&body(16, 16, 8)), 683);
    // The NAT extension adds 7, 13 or 25 bytes: at most 708 and 749.
    let with_nat = |public: Option<&str>| RecordBody {
        nat: Some(NatBehaviour {
            public: public.map(|a| a.parse().unwrap()),
            ..nat_example()
        }),
        ..body(16, 16, 8)
    };
    assert_eq!(record_plaintext_len(&with_nat(None)), 683 + 7);
    assert_eq!(record_plaintext_len(&with_nat(Some("1.2.3.4:5"))), 683 + 13);
    assert_eq!(record_plaintext_len(&with_nat(Some("[::1]:5"))), 708);
    assert_eq!(708 + RECORD_ENVELOPE_OVERHEAD, 749);
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

fn arb_nat() -> impl Strategy<Value = NatBehaviour> {
    let mapping = prop_oneof![
        Just(MappingBehaviour::Unknown),
        Just(MappingBehaviour::NoNat),
        Just(MappingBehaviour::EndpointIndependent),
        Just(MappingBehaviour::EndpointDependent),
    ];
    // Every step the wire can carry: non-zero i16.
    let step = prop_oneof![
        Just(None),
        (i16::MIN..=-1i16).prop_map(|s| Some(i32::from(s))),
        (1..=i16::MAX).prop_map(|s| Some(i32::from(s))),
    ];
    let public = proptest::option::of(arb_candidate().prop_map(|c| c.addr));
    (mapping, any::<bool>(), step, public).prop_map(
        |(mapping, port_preserving, sequential, public)| NatBehaviour {
            mapping,
            port_preserving,
            sequential,
            public,
        },
    )
}

fn arb_body() -> impl Strategy<Value = RecordBody> {
    (
        any::<u64>(),
        proptest::collection::vec(arb_candidate(), 0..40),
        proptest::collection::vec(any::<[u8; 32]>(), 0..6),
        proptest::option::of(arb_nat()),
    )
        .prop_map(|(timestamp, candidates, relays, nat)| RecordBody {
            timestamp,
            candidates,
            relays,
            nat,
        })
}

proptest! {
    #[test]
    fn plaintext_round_trip(body in arb_body()) {
        let bytes = record_plaintext_to_vec(&body).unwrap();
        prop_assert_eq!(bytes.len(), record_plaintext_len(&body));
        prop_assert_eq!(parse_record_plaintext(&bytes).unwrap(), body);
    }

    /// What a parse accepts re-emits (as version 2, without unknown
    /// extensions and flag bits) to bytes that parse to the same body.
    #[test]
    fn plaintext_parse_emit_parse(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(body) = parse_record_plaintext(&bytes) {
            let emitted = record_plaintext_to_vec(&body).unwrap();
            prop_assert_eq!(parse_record_plaintext(&emitted).unwrap(), body);
        }
    }

    /// Any extensions after a valid body: a stranger is skipped without
    /// changing what is read.
    #[test]
    fn unknown_extensions_never_change_the_body(
        body in arb_body(),
        extra in proptest::collection::vec((2u8.., proptest::collection::vec(any::<u8>(), 0..40)), 0..4),
    ) {
        let mut bytes = record_plaintext_to_vec(&body).unwrap();
        for (ty, value) in &extra {
            bytes.extend_from_slice(&[*ty, value.len() as u8]);
            bytes.extend_from_slice(value);
        }
        prop_assert_eq!(parse_record_plaintext(&bytes).unwrap(), body);
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

/// The publisher behind a sequential symmetric NAT of docs/protocol.md.
fn nat_example() -> NatBehaviour {
    NatBehaviour {
        mapping: MappingBehaviour::EndpointDependent,
        port_preserving: true,
        sequential: Some(-2),
        public: Some("203.0.113.7:40001".parse().unwrap()),
    }
}

/// The example of docs/protocol.md with the NAT extension.
const NAT_EXAMPLE_HEX: &str = "02 000000006553f100 03 \
    41 c0a80114 ca9f \
    42 cb007107 9c41 \
    63 20010db8000000000000000000000001 ca9f \
    01 abababababababababababababababababababababababababababababababab \
    01 0b 03 01 fffe 04 cb007107 9c41";

#[test]
fn nat_extension_snapshot() {
    let body = RecordBody {
        nat: Some(nat_example()),
        ..example()
    };
    let bytes = record_plaintext_to_vec(&body).unwrap();
    assert_eq!(hex(&bytes), hex(&unhex(NAT_EXAMPLE_HEX)));
    assert_eq!(bytes.len(), 76 + 2 + 11);
    assert_eq!(bytes.len(), record_plaintext_len(&body));
    assert_eq!(parse_record_plaintext(&bytes).unwrap(), body);
}

#[test]
fn nat_extension_without_address_and_ipv6_snapshots() {
    let none = NatBehaviour {
        mapping: MappingBehaviour::Unknown,
        port_preserving: false,
        sequential: None,
        public: None,
    };
    let v6 = NatBehaviour {
        mapping: MappingBehaviour::NoNat,
        port_preserving: true,
        sequential: None,
        public: Some("[2001:db8::1]:51871".parse().unwrap()),
    };
    let eim = NatBehaviour {
        mapping: MappingBehaviour::EndpointIndependent,
        sequential: Some(300),
        ..none
    };
    for (nat, ext) in [
        (none, "01 05 00 00 0000 00"),
        (eim, "01 05 02 00 012c 00"),
        (
            v6,
            "01 17 01 01 0000 06 20010db8000000000000000000000001 ca9f",
        ),
    ] {
        let body = RecordBody {
            nat: Some(nat),
            ..RecordBody::default()
        };
        let bytes = record_plaintext_to_vec(&body).unwrap();
        assert_eq!(
            hex(&bytes),
            hex(&unhex(&format!("02 0000000000000000 00 00 {ext}")))
        );
        assert_eq!(parse_record_plaintext(&bytes).unwrap(), body);
    }
}

/// A version 1 body (what kith before the NAT extension wrote) still reads,
/// strictly: no extensions, no trailing bytes.
#[test]
fn version_1_body_still_read() {
    let mut v1 = unhex(EXAMPLE_HEX);
    v1[0] = 1;
    assert_eq!(parse_record_plaintext(&v1).unwrap(), example());
    let mut with_ext = v1.clone();
    with_ext.extend_from_slice(&unhex("01 05 00 00 0000 00"));
    assert_eq!(
        parse_record_plaintext(&with_ext),
        Err(RecordWireError::TrailingBytes {
            len: v1.len() + 7,
            end: v1.len()
        })
    );
    // Re-emitted as version 2: only the version byte differs.
    let emitted = record_plaintext_to_vec(&example()).unwrap();
    assert_eq!(emitted[0], 2);
    assert_eq!(emitted[1..], v1[1..]);
}

#[test]
fn unknown_extension_is_skipped() {
    let known = unhex(NAT_EXAMPLE_HEX);
    let expected = parse_record_plaintext(&known).unwrap();
    // A future extension before and after the NAT one, and an empty one.
    let mut bytes = unhex(EXAMPLE_HEX);
    bytes.extend_from_slice(&unhex("07 03 aabbcc"));
    bytes.extend_from_slice(&known[76..]);
    bytes.extend_from_slice(&unhex("ff 00"));
    assert_eq!(parse_record_plaintext(&bytes).unwrap(), expected);
    // Only unknown ones: no NAT facts.
    let mut bytes = unhex(EXAMPLE_HEX);
    bytes.extend_from_slice(&unhex("02 01 00"));
    assert_eq!(parse_record_plaintext(&bytes).unwrap(), example());
}

#[test]
fn truncated_extension_is_an_error() {
    let good = unhex(NAT_EXAMPLE_HEX);
    // Cut inside the NAT value: its length byte promises 11 bytes.
    assert_eq!(
        parse_record_plaintext(&good[..good.len() - 1]),
        Err(RecordWireError::Truncated {
            field: "extension value",
            len: good.len() - 1,
            need: good.len()
        })
    );
    // An unknown extension is skipped only if it is whole.
    let mut unknown = unhex(EXAMPLE_HEX);
    unknown.extend_from_slice(&unhex("09 04 0102"));
    assert_eq!(
        parse_record_plaintext(&unknown),
        Err(RecordWireError::Truncated {
            field: "extension value",
            len: 76 + 4,
            need: 76 + 6
        })
    );
}

#[test]
fn nat_extension_rejections() {
    let body = |ext: &str| {
        let mut b = unhex("02 0000000000000000 00 00");
        b.extend_from_slice(&unhex(ext));
        parse_record_plaintext(&b)
    };
    assert_eq!(
        body("01 05 04 00 0000 00"),
        Err(RecordWireError::UnknownNatMapping(4))
    );
    assert_eq!(
        body("01 05 ff 00 0000 00"),
        Err(RecordWireError::UnknownNatMapping(0xff))
    );
    assert_eq!(
        body("01 05 03 00 0000 05"),
        Err(RecordWireError::UnknownNatFamily(5))
    );
    // The value's length must be its fields' length: shorter, longer, or
    // an address that does not match its family.
    assert_eq!(
        body("01 04 03 00 0000"),
        Err(RecordWireError::ExtensionLength {
            ty: 1,
            len: 4,
            need: 5
        })
    );
    assert_eq!(
        body("01 06 03 00 0000 00 00"),
        Err(RecordWireError::ExtensionLength {
            ty: 1,
            len: 6,
            need: 5
        })
    );
    assert_eq!(
        body("01 05 03 00 0000 04"),
        Err(RecordWireError::ExtensionLength {
            ty: 1,
            len: 5,
            need: 11
        })
    );
    assert_eq!(
        body("01 0b 03 00 0000 06 0102030405 06"),
        Err(RecordWireError::ExtensionLength {
            ty: 1,
            len: 11,
            need: 23
        })
    );
    assert_eq!(
        body("01 05 00 00 0000 00 01 05 00 00 0000 00"),
        Err(RecordWireError::DuplicateExtension(1))
    );
    // Unknown flag bits are for later versions: ignored, not an error.
    let nat = body("01 05 02 fe 0000 00").unwrap().nat.unwrap();
    assert!(!nat.port_preserving);
    assert_eq!(nat.mapping, MappingBehaviour::EndpointIndependent);
    let nat = body("01 05 02 ff 0000 00").unwrap().nat.unwrap();
    assert!(nat.port_preserving);
}

#[test]
fn unrepresentable_nat_step_is_refused() {
    for step in [
        0,
        i32::from(i16::MAX) + 1,
        i32::from(i16::MIN) - 1,
        i32::MAX,
    ] {
        let body = RecordBody {
            nat: Some(NatBehaviour {
                sequential: Some(step),
                ..nat_example()
            }),
            ..example()
        };
        assert_eq!(
            record_plaintext_to_vec(&body),
            Err(RecordWireError::UnrepresentableNatStep(step))
        );
    }
    for step in [i32::from(i16::MIN), -1, 1, i32::from(i16::MAX)] {
        let body = RecordBody {
            nat: Some(NatBehaviour {
                sequential: Some(step),
                ..nat_example()
            }),
            ..example()
        };
        let bytes = record_plaintext_to_vec(&body).unwrap();
        assert_eq!(parse_record_plaintext(&bytes).unwrap(), body);
    }
}
