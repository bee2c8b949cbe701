//! The DHT record: `wire::parse_record_plaintext`, `discovery::record::open`
//! and `verify_item` on arbitrary bytes.
//!
//! Byte 0 of the input picks the mode (`% 3`); the rest is the payload:
//! - 0: plaintext. Whatever `parse_record_plaintext` accepts, emit writes
//!   back as version 2 that parses to the same body, with its length adding
//!   up; the candidates and relays are the input's bytes, and only what the
//!   parser may skip differs (the version byte of a version 1 body, unknown
//!   extensions, unknown NAT flag bits). Whatever it rejects, the error
//!   describes the input.
//! - 1: a BEP 44 value. `parse_record_envelope` splits it truthfully, and
//!   `open` under a fixed key is Ok **iff** the payload is exactly the value
//!   the target sealed itself (`GENUINE`) or an older kith sealed for the
//!   same body as version 1 (`GENUINE_V1`), giving back its body.
//! - 2: the payload, signed by the publisher as an item under the network's
//!   salt: `verify_item` is Ok iff it is one of those; otherwise the reason is
//!   one the value itself can cause (never a key, salt, seq or clock error).

use std::sync::LazyLock;

use kith::discovery::record::{self, RecordError};
use kith::discovery::{Candidate, CandidateKind};
use kith::identity::SecretKey;
use kith::nat::{MappingBehaviour, NatBehaviour};
use kith::wire::{self, RecordBody, RecordWireError};

const NOW: u64 = 1_700_000_000;
const ID: &str = "fuzz";
const SECRET: [u8; 32] = [0x5e; 32];
const NONCE: [u8; 24] = [0x24; 24];

static PUBLISHER: LazyLock<SecretKey> = LazyLock::new(|| SecretKey::from_seed([1; 32]));

static BODY: LazyLock<RecordBody> = LazyLock::new(|| RecordBody {
    timestamp: NOW,
    candidates: vec![
        Candidate {
            kind: CandidateKind::Local,
            addr: "192.168.1.20:51871".parse().expect("literal"),
        },
        Candidate {
            kind: CandidateKind::Mapped,
            addr: "[2001:db8::1]:51871".parse().expect("literal"),
        },
    ],
    relays: vec![],
    nat: Some(NatBehaviour {
        mapping: MappingBehaviour::EndpointDependent,
        port_preserving: true,
        sequential: Some(-2),
        public: Some("203.0.113.7:40001".parse().expect("literal")),
    }),
});

/// What kith sealed for `BODY` without its NAT facts, as a version 1 body,
/// before version 2 existed (the checked-in `open_genuine` and
/// `verify_genuine` seeds): a version 1 body still opens, so this value is
/// genuine too.
const GENUINE_V1: &str = "01242424242424242424242424242424242424242424242424\
    cc92fe0ae3973098d8abb721ebbce9dd85b54d1ae348753afa5e580adfad7f77b650bb4b\
    54134f3c8e9c218f034292045c5a4fbb76";

/// The body `data` was sealed from, if it is one of the genuine values.
fn genuine(data: &[u8]) -> Option<RecordBody> {
    if data == GENUINE.as_slice() {
        return Some(BODY.clone());
    }
    let v1: Vec<u8> = (0..GENUINE_V1.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&GENUINE_V1[i..i + 2], 16).expect("hex literal"))
        .collect();
    (data == v1.as_slice()).then(|| RecordBody {
        nat: None,
        ..BODY.clone()
    })
}

static GENUINE: LazyLock<Vec<u8>> = LazyLock::new(|| {
    record::seal(&BODY, &PUBLISHER.public(), ID, Some(&SECRET), &NONCE).expect("fits")
});

pub fn run(data: &[u8]) {
    let Some((&mode, payload)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => plaintext(payload),
        1 => open(payload),
        _ => verify(payload),
    }
}

/// Bytes the NAT extension takes in an emitted body (header included).
fn nat_ext_len(body: &RecordBody) -> usize {
    body.nat.as_ref().map_or(0, |n| {
        wire::RECORD_EXT_HEADER_LEN + wire::record_nat_value_len(n)
    })
}

fn plaintext(data: &[u8]) {
    match wire::parse_record_plaintext(data) {
        Ok(body) => {
            let emitted = wire::record_plaintext_to_vec(&body).expect("parsed bodies emit");
            assert_eq!(emitted.len(), wire::record_plaintext_len(&body));
            assert_eq!(emitted[0], wire::RECORD_BODY_VERSION);
            assert_eq!(wire::parse_record_plaintext(&emitted).as_ref(), Ok(&body));
            // Everything before the extensions is copied, not reinterpreted.
            let core = emitted.len() - nat_ext_len(&body);
            assert_eq!(emitted[1..core], data[1..core]);
            if data[0] == wire::RECORD_BODY_V1 {
                assert_eq!(core, data.len(), "a version 1 body has no extensions");
                assert_eq!(body.nat, None);
            } else {
                // Re-emitting only drops unknown extensions.
                assert!(emitted.len() <= data.len());
                if emitted.len() == data.len() {
                    // None were dropped: the same bytes, up to the NAT
                    // flag bits a reader ignores.
                    let flags = core + wire::RECORD_EXT_HEADER_LEN + 1;
                    for (i, (e, d)) in emitted.iter().zip(data).enumerate() {
                        if body.nat.is_some() && i == flags {
                            assert_eq!(e & 1, d & 1, "port preserving flag");
                        } else {
                            assert_eq!(e, d, "byte {i} of a canonical body changed");
                        }
                    }
                }
            }
        }
        Err(RecordWireError::Empty) => assert!(data.is_empty()),
        Err(RecordWireError::UnsupportedVersion(v)) => {
            assert_eq!(Some(&v), data.first());
            assert!(v != wire::RECORD_BODY_VERSION && v != wire::RECORD_BODY_V1);
        }
        Err(RecordWireError::Truncated { len, need, .. }) => {
            assert_eq!(len, data.len());
            assert!(need > len);
        }
        Err(RecordWireError::UnknownCandidateTag { tag, .. }) => {
            assert!(data.contains(&tag));
            assert!(!matches!(tag, 0x41..=0x43 | 0x61..=0x63));
        }
        Err(RecordWireError::TrailingBytes { len, end }) => {
            // Only version 1 ends strictly; version 2 reads extensions.
            assert_eq!(data[0], wire::RECORD_BODY_V1);
            assert_eq!(len, data.len());
            assert!(end < len);
            // The prefix that was consumed is itself a valid body.
            assert!(wire::parse_record_plaintext(&data[..end]).is_ok());
        }
        Err(RecordWireError::UnknownNatMapping(m)) => {
            assert_eq!(data[0], wire::RECORD_BODY_VERSION);
            assert!(m > 3 && data.contains(&m));
        }
        Err(RecordWireError::UnknownNatFamily(f)) => {
            assert_eq!(data[0], wire::RECORD_BODY_VERSION);
            assert!(!matches!(f, 0 | 4 | 6) && data.contains(&f));
        }
        Err(RecordWireError::ExtensionLength { ty, len, need }) => {
            assert_eq!(ty, wire::RECORD_EXT_NAT);
            assert!(matches!(need, 5 | 11 | 23) && len != need);
            assert!(data.contains(&(len as u8)));
        }
        Err(RecordWireError::DuplicateExtension(ty)) => {
            assert_eq!(ty, wire::RECORD_EXT_NAT);
            assert_eq!(data[0], wire::RECORD_BODY_VERSION);
        }
        Err(e) => panic!("parse_record_plaintext reported {e:?}"),
    }
}

fn open(data: &[u8]) {
    match wire::parse_record_envelope(data) {
        Ok(env) => {
            assert!(
                (wire::RECORD_ENVELOPE_OVERHEAD..=wire::MAX_RECORD_VALUE).contains(&data.len())
            );
            assert_eq!(env.version, wire::RECORD_ENVELOPE_VERSION);
            assert_eq!(&env.nonce[..], &data[1..25]);
            assert_eq!(env.ciphertext, &data[25..]);
        }
        Err(RecordWireError::Empty) => assert!(data.is_empty()),
        Err(RecordWireError::UnsupportedVersion(v)) => assert_eq!(Some(&v), data.first()),
        Err(RecordWireError::TooLarge { len, .. }) => {
            assert_eq!(len, data.len());
            assert!(len > wire::MAX_RECORD_VALUE);
        }
        Err(RecordWireError::EnvelopeTooShort { len, min }) => {
            assert_eq!(len, data.len());
            assert!(len < min);
        }
        Err(e) => panic!("parse_record_envelope reported {e:?}"),
    }
    let opened = record::open(data, &PUBLISHER.public(), ID, Some(&SECRET));
    match genuine(data) {
        Some(body) => assert_eq!(opened, Ok(body)),
        None => assert!(opened.is_err(), "opened a value the publisher never sealed"),
    }
}

fn verify(data: &[u8]) {
    let salt = record::salt(ID);
    let Ok(item) = record::sign(&PUBLISHER, data, 1, &salt) else {
        assert!(data.len() > wire::MAX_RECORD_VALUE);
        return;
    };
    let got = record::verify_item(
        &item,
        &PUBLISHER.public(),
        ID,
        Some(&SECRET),
        Some(0),
        NOW,
        record::DEFAULT_MAX_AGE,
    );
    match got {
        Ok(body) => assert_eq!(Some(body), genuine(data)),
        Err(e) => {
            assert_eq!(genuine(data), None, "genuine record refused: {e}");
            assert!(
                matches!(
                    e,
                    RecordError::Decrypt
                        | RecordError::UnsupportedVersion(_)
                        | RecordError::Malformed(_)
                ),
                "{e:?} cannot come from the value alone"
            );
        }
    }
}
