//! The DHT record: sealing, signing, opening and verifying a node's BEP 44
//! mutable item.
//!
//! Owns the record's crypto and acceptance policy; the byte layouts are
//! `wire::record`'s, the DHT traffic `discovery::dht`'s and the daemon's.
//! Sans-IO: no clock, no randomness, no sockets. The caller hands in
//! `now_unix`, the nonce and the last accepted `seq`, and persists `seq`.
//! Reference: `docs/protocol.md`, "DHT record".
//!
//! Publishing: `RecordBody` → [`seal`] (plaintext, XChaCha20-Poly1305 under
//! [`record_key`], envelope) → [`sign`] under [`salt`] with
//! [`next_seq`] → `put_mutable`. [`publish_item`] does all three.
//!
//! Resolving: each item of the `get_mutable` stream → [`verify_item`]
//! (key, salt, size, signature, seq, decryption, layout, freshness, in that
//! order) → candidates for the core; the daemon stores `item.seq()` as the
//! peer's last accepted seq.

#![cfg_attr(not(test), deny(clippy::disallowed_methods))]

use std::time::Duration;

use blake2::{Blake2s256, Digest};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ed25519_dalek::{Signature, VerifyingKey};
use mainline::MutableItem;

use crate::identity::{PublicKey, SecretKey};
use crate::wire::{
    MAX_RECORD_PLAINTEXT, MAX_RECORD_VALUE, RECORD_ENVELOPE_OVERHEAD, RECORD_ENVELOPE_VERSION,
    RECORD_NONCE_LEN, RecordBody, RecordWireError, emit_record_envelope, emit_record_plaintext,
    parse_record_envelope, parse_record_plaintext, record_plaintext_len,
};

/// Bytes of the BEP 44 salt (BEP 44 allows up to 64).
pub const SALT_LEN: usize = 16;
/// Domain label of the salt derivation.
pub const SALT_LABEL: &[u8] = b"kith dht salt v1";
/// Domain label of the record key derivation.
pub const KEY_LABEL: &[u8] = b"kith dht record key v1";
/// A record whose timestamp is further ahead of our clock than this is
/// refused (clock skew allowance).
pub const MAX_FUTURE_SKEW_SECS: u64 = 5 * 60;
/// Suggested `max_age` for [`verify_item`]: DHT nodes drop items after
/// about 2 h, and publishers republish well before that.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3 * 60 * 60);

/// Why a record was refused. The daemon says whose record it was
/// ("record from peer X rejected: …"); these say why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("it is signed by key {}, not the peer's key", b64(got))]
    WrongKey { got: [u8; 32] },
    #[error(
        "its salt ({}) is not this network's: it was published for another network id",
        got.as_deref().map(hex).unwrap_or_else(|| "none".into())
    )]
    WrongSalt { got: Option<Vec<u8>> },
    #[error("its value is {len} bytes; BEP 44 allows at most 1000")]
    TooLarge { len: usize },
    #[error("its BEP 44 signature does not verify")]
    BadSignature,
    #[error(
        "its sequence number {seq} is older than {last}, the last one accepted \
         (a replay, or an out-of-date DHT node)"
    )]
    StaleSeq { seq: i64, last: i64 },
    #[error(
        "it does not decrypt: the peer uses another network secret or network id, \
         or the value was altered"
    )]
    Decrypt,
    #[error(
        "it was written {age_secs} s ago, older than the maximum age of {max_age_secs} s \
         (the peer has not republished: is it down, or is its clock behind?)"
    )]
    Expired { age_secs: u64, max_age_secs: u64 },
    #[error(
        "its timestamp is {ahead_secs} s in the future, more than the {MAX_FUTURE_SKEW_SECS} s \
         allowed: check the clocks of both nodes"
    )]
    FromFuture { ahead_secs: u64 },
    #[error("relay {index} is not a valid Ed25519 public key")]
    BadRelayKey { index: usize },
    #[error(
        "record version {0} is not supported (this kith reads body versions 1 and 2, \
         envelope version 1: upgrade kith?)"
    )]
    UnsupportedVersion(u8),
    #[error("it is malformed: {0}")]
    Malformed(RecordWireError),
}

impl From<RecordWireError> for RecordError {
    fn from(e: RecordWireError) -> Self {
        match e {
            RecordWireError::UnsupportedVersion(v) => RecordError::UnsupportedVersion(v),
            RecordWireError::TooLarge { len, .. } => RecordError::TooLarge { len },
            other => RecordError::Malformed(other),
        }
    }
}

fn b64(key: &[u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(key)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The BEP 44 salt of a network: `BLAKE2s-256("kith dht salt v1" || id)`,
/// first 16 bytes. One key can publish in several networks, and the DHT
/// never sees the id (though it can test a guessed one).
pub fn salt(network_id: &str) -> [u8; SALT_LEN] {
    let digest = Blake2s256::new()
        .chain_update(SALT_LABEL)
        .chain_update(network_id.as_bytes())
        .finalize();
    let mut out = [0u8; SALT_LEN];
    out.copy_from_slice(&digest[..SALT_LEN]);
    out
}

/// The XChaCha20-Poly1305 key of `publisher`'s record in a network:
/// `BLAKE2s-256("kith dht record key v1" || publisher (32) ||
/// len(id) (u16 BE) || id || secret (32, zeros without one))`.
/// Everything in it is known to the publisher's peers and, apart from the
/// secret, to nobody who does not already know the publisher's key.
pub fn record_key(publisher: &PublicKey, network_id: &str, secret: Option<&[u8; 32]>) -> [u8; 32] {
    // An id longer than 65535 bytes cannot come from a config; saturating
    // keeps the function total without changing any real id's key.
    let id_len = u16::try_from(network_id.len()).unwrap_or(u16::MAX);
    Blake2s256::new()
        .chain_update(KEY_LABEL)
        .chain_update(publisher.as_bytes())
        .chain_update(id_len.to_be_bytes())
        .chain_update(network_id.as_bytes())
        .chain_update(secret.unwrap_or(&[0u8; 32]))
        .finalize()
        .into()
}

/// Associated data: the envelope version and the publisher's key, so a
/// value cannot be replayed under another version or another key.
fn associated_data(version: u8, publisher: &PublicKey) -> [u8; 33] {
    let mut ad = [0u8; 33];
    ad[0] = version;
    ad[1..].copy_from_slice(publisher.as_bytes());
    ad
}

/// Encrypt `body` into a BEP 44 value. `nonce` must be fresh random bytes
/// from the caller (24 bytes: random nonces are safe for XChaCha20).
/// Refuses, with [`RecordError::TooLarge`], a body whose value would exceed
/// 1000 bytes (mainline would report that as a timeout).
pub fn seal(
    body: &RecordBody,
    publisher: &PublicKey,
    network_id: &str,
    secret: Option<&[u8; 32]>,
    nonce: &[u8; RECORD_NONCE_LEN],
) -> Result<Vec<u8>, RecordError> {
    let plain_len = record_plaintext_len(body);
    if plain_len > MAX_RECORD_PLAINTEXT {
        return Err(RecordError::TooLarge {
            len: plain_len + RECORD_ENVELOPE_OVERHEAD,
        });
    }
    let mut plaintext = vec![0u8; plain_len];
    emit_record_plaintext(&mut plaintext, body)?;
    let key = record_key(publisher, network_id, secret);
    let ad = associated_data(RECORD_ENVELOPE_VERSION, publisher);
    let ciphertext = XChaCha20Poly1305::new(&key.into())
        .encrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: &plaintext,
                aad: &ad,
            },
        )
        .map_err(|_| RecordError::Decrypt)?;
    let mut value = vec![0u8; 1 + RECORD_NONCE_LEN + ciphertext.len()];
    emit_record_envelope(&mut value, nonce, &ciphertext)?;
    Ok(value)
}

/// Decrypt and parse a value sealed by `publisher`. Relay keys must be
/// valid Ed25519 public keys.
pub fn open(
    value: &[u8],
    publisher: &PublicKey,
    network_id: &str,
    secret: Option<&[u8; 32]>,
) -> Result<RecordBody, RecordError> {
    let envelope = parse_record_envelope(value)?;
    let key = record_key(publisher, network_id, secret);
    let ad = associated_data(envelope.version, publisher);
    let plaintext = XChaCha20Poly1305::new(&key.into())
        .decrypt(
            XNonce::from_slice(envelope.nonce),
            Payload {
                msg: envelope.ciphertext,
                aad: &ad,
            },
        )
        .map_err(|_| RecordError::Decrypt)?;
    let body = parse_record_plaintext(&plaintext)?;
    for (index, relay) in body.relays.iter().enumerate() {
        PublicKey::from_bytes(*relay).map_err(|_| RecordError::BadRelayKey { index })?;
    }
    Ok(body)
}

/// What BEP 44 signs: the bencoded `salt`, `seq` and `v` entries
/// (`4:salt<n>:<salt>3:seqi<seq>e1:v<n>:<value>`, salt omitted when empty).
pub fn bep44_signable(seq: i64, value: &[u8], salt: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(salt.len() + value.len() + 40);
    if !salt.is_empty() {
        out.extend_from_slice(format!("4:salt{}:", salt.len()).as_bytes());
        out.extend_from_slice(salt);
    }
    out.extend_from_slice(format!("3:seqi{seq}e1:v{}:", value.len()).as_bytes());
    out.extend_from_slice(value);
    out
}

/// Sign `value` as a BEP 44 mutable item. Refuses values over 1000 bytes.
pub fn sign(
    secret_key: &SecretKey,
    value: &[u8],
    seq: i64,
    salt: &[u8; SALT_LEN],
) -> Result<MutableItem, RecordError> {
    if value.len() > MAX_RECORD_VALUE {
        return Err(RecordError::TooLarge { len: value.len() });
    }
    Ok(MutableItem::new(
        secret_key.signing_key().clone(),
        value,
        seq,
        Some(salt),
    ))
}

/// [`seal`] then [`sign`] under the network's [`salt`]: the item to put.
pub fn publish_item(
    secret_key: &SecretKey,
    body: &RecordBody,
    network_id: &str,
    secret: Option<&[u8; 32]>,
    seq: i64,
    nonce: &[u8; RECORD_NONCE_LEN],
) -> Result<MutableItem, RecordError> {
    let value = seal(body, &secret_key.public(), network_id, secret, nonce)?;
    sign(secret_key, &value, seq, &salt(network_id))
}

/// The `seq` to publish next: `max(last + 1, now_unix)`.
///
/// BEP 44 storing nodes refuse a lower `seq` than the one they hold, so it
/// must grow across restarts. The daemon persists the value it published
/// (under the state dir) and passes it back as `last_persisted`; using the
/// clock as a floor keeps it growing even if that file is lost, as long as
/// the node published less than once a second on average.
pub fn next_seq(last_persisted: Option<i64>, now_unix: u64) -> i64 {
    let now = i64::try_from(now_unix).unwrap_or(i64::MAX);
    match last_persisted {
        Some(last) => last.saturating_add(1).max(now),
        None => now,
    }
}

/// Check one item from a peer's `get_mutable` stream; no I/O.
///
/// In order: the item is under `expected`'s key ([`RecordError::WrongKey`])
/// and this network's salt (`WrongSalt`), at most 1000 bytes (`TooLarge`),
/// its BEP 44 signature verifies (`BadSignature`; mainline checks too, this
/// is defense in depth), its seq is not below `last_seq`, the last one
/// accepted from this peer (`StaleSeq`; an equal seq is the same signed
/// record read again, which every periodic lookup does), it decrypts (`Decrypt`), it parses
/// (`UnsupportedVersion`, `Malformed`, `BadRelayKey`), and its timestamp is
/// at most `max_age` old (`Expired`) and at most 5 min ahead of `now_unix`
/// (`FromFuture`). On success the caller records `item.seq()` as the new
/// `last_seq`.
pub fn verify_item(
    item: &MutableItem,
    expected: &PublicKey,
    network_id: &str,
    secret: Option<&[u8; 32]>,
    last_seq: Option<i64>,
    now_unix: u64,
    max_age: Duration,
) -> Result<RecordBody, RecordError> {
    if item.key() != expected.as_bytes() {
        return Err(RecordError::WrongKey { got: *item.key() });
    }
    let our_salt = salt(network_id);
    if item.salt() != Some(&our_salt[..]) {
        return Err(RecordError::WrongSalt {
            got: item.salt().map(<[u8]>::to_vec),
        });
    }
    let value = item.value();
    if value.len() > MAX_RECORD_VALUE {
        return Err(RecordError::TooLarge { len: value.len() });
    }
    let verifying =
        VerifyingKey::from_bytes(expected.as_bytes()).map_err(|_| RecordError::BadSignature)?;
    let signature = Signature::from_bytes(item.signature());
    verifying
        .verify_strict(&bep44_signable(item.seq(), value, &our_salt), &signature)
        .map_err(|_| RecordError::BadSignature)?;
    if let Some(last) = last_seq
        && item.seq() < last
    {
        return Err(RecordError::StaleSeq {
            seq: item.seq(),
            last,
        });
    }
    let body = open(value, expected, network_id, secret)?;
    if body.timestamp > now_unix {
        let ahead_secs = body.timestamp - now_unix;
        if ahead_secs > MAX_FUTURE_SKEW_SECS {
            return Err(RecordError::FromFuture { ahead_secs });
        }
    } else {
        let age_secs = now_unix - body.timestamp;
        if age_secs > max_age.as_secs() {
            return Err(RecordError::Expired {
                age_secs,
                max_age_secs: max_age.as_secs(),
            });
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{Candidate, CandidateKind};

    const NOW: u64 = 1_700_000_000;
    const ID: &str = "home";
    const SECRET: [u8; 32] = [0x5e; 32];
    const NONCE: [u8; 24] = [0x24; 24];

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn alice() -> SecretKey {
        SecretKey::from_seed([1; 32])
    }

    fn body() -> RecordBody {
        RecordBody {
            timestamp: NOW - 60,
            candidates: vec![
                Candidate {
                    kind: CandidateKind::Local,
                    addr: "192.168.77.31:51871".parse().unwrap(),
                },
                Candidate {
                    kind: CandidateKind::Reflexive,
                    addr: "198.51.100.201:40123".parse().unwrap(),
                },
                Candidate {
                    kind: CandidateKind::Mapped,
                    addr: "[2001:db8:cafe::17]:61001".parse().unwrap(),
                },
            ],
            relays: vec![*SecretKey::from_seed([9; 32]).public().as_bytes()],
            nat: Some(crate::nat::NatBehaviour {
                mapping: crate::nat::MappingBehaviour::EndpointDependent,
                port_preserving: false,
                sequential: Some(1),
                public: Some("198.51.100.201:40123".parse().unwrap()),
            }),
        }
    }

    fn item(seq: i64) -> MutableItem {
        publish_item(&alice(), &body(), ID, Some(&SECRET), seq, &NONCE).unwrap()
    }

    fn verify(item: &MutableItem, last: Option<i64>) -> Result<RecordBody, RecordError> {
        verify_item(
            item,
            &alice().public(),
            ID,
            Some(&SECRET),
            last,
            NOW,
            DEFAULT_MAX_AGE,
        )
    }

    /// Re-sign `value` with Alice's key: what a holder of the key could do.
    fn resigned(value: &[u8], seq: i64) -> MutableItem {
        sign(&alice(), value, seq, &salt(ID)).unwrap()
    }

    #[test]
    fn round_trip() {
        let it = item(42);
        assert_eq!(it.seq(), 42);
        assert_eq!(it.salt(), Some(&salt(ID)[..]));
        assert_eq!(it.key(), alice().public().as_bytes());
        assert_eq!(verify(&it, Some(41)).unwrap(), body());
        assert_eq!(verify(&it, None).unwrap(), body());
    }

    #[test]
    fn without_network_secret() {
        let it = publish_item(&alice(), &body(), ID, None, 1, &NONCE).unwrap();
        let got = verify_item(&it, &alice().public(), ID, None, None, NOW, DEFAULT_MAX_AGE);
        assert_eq!(got.unwrap(), body());
        // A network that has a secret cannot read it, and the other way round.
        assert_eq!(verify(&it, None), Err(RecordError::Decrypt));
    }

    /// Pins salt, key derivation, AEAD and envelope (docs/protocol.md).
    /// The expected values were computed apart from this code (Python:
    /// hashlib's BLAKE2s, HChaCha20 checked against the XChaCha draft's
    /// vector, then `cryptography`'s ChaCha20-Poly1305).
    #[test]
    fn known_answers() {
        assert_eq!(hex(&salt("home")), "6b88a288de9809ffce651de6daf77b2d");
        let key = record_key(&alice().public(), ID, Some(&SECRET));
        assert_eq!(
            hex(&key),
            "a500766fc0f0940865dbc7802f653df749c8018167362741e016e1d8e8ba2aff"
        );
        let value = seal(&RecordBody::default(), &alice().public(), ID, None, &NONCE).unwrap();
        assert_eq!(
            hex(&value),
            "01242424242424242424242424242424242424242424242424\
             f555d92f293c1e582f6348cf638d1b843ba4358c706c882843b3ac"
        );
        // With the NAT extension: plaintext
        // 02 0000000000000000 00 00 01 0b 03 01 fffe 04 cb007107 9c41.
        let nat = RecordBody {
            nat: Some(crate::nat::NatBehaviour {
                mapping: crate::nat::MappingBehaviour::EndpointDependent,
                port_preserving: true,
                sequential: Some(-2),
                public: Some("203.0.113.7:40001".parse().unwrap()),
            }),
            ..RecordBody::default()
        };
        let value = seal(&nat, &alice().public(), ID, None, &NONCE).unwrap();
        assert_eq!(
            hex(&value),
            "01242424242424242424242424242424242424242424242424\
             f555d92f293c1e582f6348ce01e87f824ac903dad6e235faf983112e\
             0083b3a66a7a56b7699e4099"
        );
        // A version 1 body (an older kith's record) opens, without NAT facts.
        let v1 = unhex(
            "01242424242424242424242424242424242424242424242424\
             f655d92f293c1e582f63483e3fddb500bc82da4bda8d118cbc3da4",
        );
        assert_eq!(
            open(&v1, &alice().public(), ID, None),
            Ok(RecordBody::default())
        );
    }

    /// The BEP 44 test vectors (bittorrent.org/beps/bep_0044.html).
    #[test]
    fn bep44_signable_matches_spec_vectors() {
        let pk = unhex("77ff84905a91936367c01360803104f92432fcd904a43511876df5cdf3e7e548");
        let vk = VerifyingKey::from_bytes(&pk.try_into().unwrap()).unwrap();
        let sig1 = unhex(
            "305ac8aeb6c9c151fa120f120ea2cfb923564e11552d06a5d856091e5e853cff\
             1260d3f39e4999684aa92eb73ffd136e6f4f3ecbfda0ce53a1608ecd7ae21f01",
        );
        let sig1 = Signature::from_slice(&sig1).unwrap();
        assert_eq!(
            bep44_signable(1, b"Hello World!", b""),
            b"3:seqi1e1:v12:Hello World!"
        );
        vk.verify_strict(&bep44_signable(1, b"Hello World!", b""), &sig1)
            .unwrap();
        let sig2 = unhex(
            "6834284b6b24c3204eb2fea824d82f88883a3d95e8b4a21b8c0ded553d17d17d\
             df9a8a7104b1258f30bed3787e6cb896fca78c58f8e03b5f18f14951a87d9a08",
        );
        let sig2 = Signature::from_slice(&sig2).unwrap();
        assert_eq!(
            bep44_signable(1, b"Hello World!", b"foobar"),
            b"4:salt6:foobar3:seqi1e1:v12:Hello World!"
        );
        vk.verify_strict(&bep44_signable(1, b"Hello World!", b"foobar"), &sig2)
            .unwrap();
    }

    #[test]
    fn signable_agrees_with_mainline() {
        let it = item(-7);
        let vk = VerifyingKey::from_bytes(it.key()).unwrap();
        let sig = Signature::from_bytes(it.signature());
        vk.verify_strict(&bep44_signable(-7, it.value(), &salt(ID)), &sig)
            .unwrap();
    }

    #[test]
    fn wrong_key() {
        let mallory = SecretKey::from_seed([2; 32]);
        let it = publish_item(&mallory, &body(), ID, Some(&SECRET), 5, &NONCE).unwrap();
        assert_eq!(
            verify(&it, None),
            Err(RecordError::WrongKey {
                got: *mallory.public().as_bytes()
            })
        );
    }

    #[test]
    fn other_network_id_is_wrong_salt() {
        let it = publish_item(&alice(), &body(), "office", Some(&SECRET), 5, &NONCE).unwrap();
        assert_eq!(
            verify(&it, None),
            Err(RecordError::WrongSalt {
                got: Some(salt("office").to_vec())
            })
        );
        let unsalted = MutableItem::new(alice().signing_key().clone(), it.value(), 5, None);
        assert_eq!(
            verify(&unsalted, None),
            Err(RecordError::WrongSalt { got: None })
        );
    }

    #[test]
    fn other_network_id_under_our_salt_does_not_decrypt() {
        // Sealed for "office" but signed under "home"'s salt: the key differs.
        let value = seal(&body(), &alice().public(), "office", Some(&SECRET), &NONCE).unwrap();
        assert_eq!(
            verify(&resigned(&value, 5), None),
            Err(RecordError::Decrypt)
        );
    }

    #[test]
    fn wrong_network_secret() {
        let it = publish_item(&alice(), &body(), ID, Some(&[0x77; 32]), 5, &NONCE).unwrap();
        assert_eq!(verify(&it, None), Err(RecordError::Decrypt));
    }

    #[test]
    fn tampered_and_resigned_does_not_decrypt() {
        let it = item(5);
        for at in [0usize, 1, 30, it.value().len() - 1] {
            let mut value = it.value().to_vec();
            value[at] ^= 0x01;
            let got = verify(&resigned(&value, 6), None);
            if at == 0 {
                assert_eq!(got, Err(RecordError::UnsupportedVersion(0)));
            } else {
                assert_eq!(got, Err(RecordError::Decrypt), "byte {at}");
            }
        }
    }

    #[test]
    fn tampered_without_resigning_is_bad_signature() {
        let it = item(5);
        let mut value = it.value().to_vec();
        value[40] ^= 0x80;
        let forged = MutableItem::new_signed_unchecked(
            *it.key(),
            *it.signature(),
            &value,
            it.seq(),
            it.salt(),
        );
        assert_eq!(verify(&forged, None), Err(RecordError::BadSignature));
        // A raised seq on the genuine value is a forgery too.
        let bumped =
            MutableItem::new_signed_unchecked(*it.key(), *it.signature(), it.value(), 6, it.salt());
        assert_eq!(verify(&bumped, Some(5)), Err(RecordError::BadSignature));
    }

    #[test]
    fn stale_seq() {
        let it = item(100);
        // The same record read again (every periodic lookup) is fine.
        assert!(verify(&it, Some(100)).is_ok());
        assert_eq!(
            verify(&it, Some(250)),
            Err(RecordError::StaleSeq {
                seq: 100,
                last: 250
            })
        );
        assert!(verify(&it, Some(99)).is_ok());
    }

    #[test]
    fn oversized() {
        let big = MutableItem::new(
            alice().signing_key().clone(),
            &[1u8; 1001],
            5,
            Some(&salt(ID)),
        );
        assert_eq!(verify(&big, None), Err(RecordError::TooLarge { len: 1001 }));
        assert_eq!(
            sign(&alice(), &[1u8; 1001], 5, &salt(ID)).unwrap_err(),
            RecordError::TooLarge { len: 1001 }
        );
        // 136 IPv4 candidates: 11 + 952 plaintext bytes, 1004 of value.
        let mut b = body();
        b.relays.clear();
        b.nat = None;
        b.candidates = vec![b.candidates[0]; 136];
        assert_eq!(
            seal(&b, &alice().public(), ID, None, &NONCE),
            Err(RecordError::TooLarge { len: 1004 })
        );
        b.candidates.pop();
        let value = seal(&b, &alice().public(), ID, None, &NONCE).unwrap();
        assert_eq!(value.len(), 997);
    }

    #[test]
    fn freshness() {
        let at = |timestamp: u64| {
            let b = RecordBody {
                timestamp,
                ..body()
            };
            let it = publish_item(&alice(), &b, ID, Some(&SECRET), 5, &NONCE).unwrap();
            verify(&it, None).map(|_| ())
        };
        let max = DEFAULT_MAX_AGE.as_secs();
        assert_eq!(at(NOW), Ok(()));
        assert_eq!(at(NOW - max), Ok(()));
        assert_eq!(
            at(NOW - max - 1),
            Err(RecordError::Expired {
                age_secs: max + 1,
                max_age_secs: max
            })
        );
        assert_eq!(
            at(0),
            Err(RecordError::Expired {
                age_secs: NOW,
                max_age_secs: max
            })
        );
        assert_eq!(at(NOW + 300), Ok(()));
        assert_eq!(
            at(NOW + 301),
            Err(RecordError::FromFuture { ahead_secs: 301 })
        );
        assert_eq!(
            at(u64::MAX),
            Err(RecordError::FromFuture {
                ahead_secs: u64::MAX - NOW
            })
        );
    }

    #[test]
    fn bad_relay_key() {
        let mut b = body();
        // Not a point on the curve (y = 2 has no x).
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        assert!(PublicKey::from_bytes(not_a_point).is_err());
        b.relays.push(not_a_point);
        let it = publish_item(&alice(), &b, ID, Some(&SECRET), 5, &NONCE).unwrap();
        assert_eq!(
            verify(&it, None),
            Err(RecordError::BadRelayKey { index: 1 })
        );
    }

    #[test]
    fn malformed_plaintext_under_a_good_envelope() {
        // A publisher running a future or broken kith: encrypts a body of
        // version 9, or a truncated one.
        let key = record_key(&alice().public(), ID, Some(&SECRET));
        let ad = associated_data(RECORD_ENVELOPE_VERSION, &alice().public());
        let seal_raw = |plain: &[u8]| {
            let ct = XChaCha20Poly1305::new(&key.into())
                .encrypt(
                    XNonce::from_slice(&NONCE),
                    Payload {
                        msg: plain,
                        aad: &ad,
                    },
                )
                .unwrap();
            let mut v = vec![0u8; 25 + ct.len()];
            emit_record_envelope(&mut v, &NONCE, &ct).unwrap();
            resigned(&v, 5)
        };
        assert_eq!(
            verify(&seal_raw(&[9, 0, 0]), None),
            Err(RecordError::UnsupportedVersion(9))
        );
        assert!(matches!(
            verify(&seal_raw(&[1, 0, 0]), None),
            Err(RecordError::Malformed(RecordWireError::Truncated { .. }))
        ));
        assert!(matches!(
            verify(&resigned(&[1; 20], 5), None),
            Err(RecordError::Malformed(
                RecordWireError::EnvelopeTooShort { .. }
            ))
        ));
    }

    /// Nobody without the key learns the candidates: no address or port
    /// appears in the value, in either byte order.
    #[test]
    fn sealed_value_hides_addresses() {
        let value = item(5).value().to_vec();
        let contains = |needle: &[u8]| value.windows(needle.len()).any(|w| w == needle);
        for c in body().candidates {
            let ip = match c.addr.ip() {
                std::net::IpAddr::V4(a) => a.octets().to_vec(),
                std::net::IpAddr::V6(a) => a.octets().to_vec(),
            };
            let port = c.addr.port();
            assert!(!contains(&ip), "{} in the clear", c.addr);
            for p in [port.to_be_bytes(), port.to_le_bytes()] {
                assert!(!contains(&p), "port {port} in the clear");
            }
            let mut rev = ip.clone();
            rev.reverse();
            assert!(!contains(&rev));
        }
        assert!(!contains(&(NOW - 60).to_be_bytes()[4..]));
    }

    #[test]
    fn seq_policy() {
        assert_eq!(next_seq(None, NOW), NOW as i64);
        assert_eq!(next_seq(Some(5), NOW), NOW as i64);
        assert_eq!(next_seq(Some(NOW as i64 + 10), NOW), NOW as i64 + 11);
        assert_eq!(next_seq(Some(-3), 0), 0);
        assert_eq!(next_seq(Some(i64::MAX), NOW), i64::MAX);
        assert_eq!(next_seq(None, u64::MAX), i64::MAX);
        // Restart after losing the state file, a second later: still newer.
        let before = next_seq(Some(next_seq(None, NOW)), NOW);
        assert!(next_seq(None, NOW + 1) >= before);
    }

    #[test]
    fn messages_read_well() {
        let e = RecordError::StaleSeq { seq: 3, last: 9 };
        assert_eq!(
            e.to_string(),
            "its sequence number 3 is older than 9, the last one accepted \
             (a replay, or an out-of-date DHT node)"
        );
        let e = RecordError::WrongSalt {
            got: Some(vec![0xab, 0x01]),
        };
        assert!(e.to_string().contains("ab01"), "{e}");
        let e = RecordError::WrongKey { got: [0; 32] };
        assert!(e.to_string().contains("AAAAAAAA"), "{e}");
    }
}
