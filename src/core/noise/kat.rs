//! Known answers for the handshake, `Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s`:
//! fixed static keys, psk and ephemeral keys in, the exact bytes of both
//! messages, the handshake hash and the transport keys out.
//!
//! The code under test is what the node runs, [`super::build`] (snow with
//! kith's resolver: our X25519, an AEAD backend behind `WipedCipher`), with
//! every pair of AEAD backends on the two sides, so the bytes show that
//! the backends a daemon may pick interoperate. Two sources of truth,
//! neither of them snow:
//! - the Cacophony test vector for this protocol name (the Noise test
//!   vectors snow ships in `tests/vectors/cacophony.txt`), which also checks
//!   the reference below;
//! - a reference implementation of the Noise rev. 34 processing rules (§5),
//!   the IK pattern (§7.5) and the psk modifier (§9), written here from the
//!   primitives (BLAKE2s, ChaCha20-Poly1305, X25519), run on kith's own
//!   prologue and network secret, whose answers are also pinned as hex.

use std::time::Duration;

use blake2::{Blake2s256, Digest};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use curve25519_dalek::montgomery::MontgomeryPoint;

use super::{Handshake, KEY_LEN, PROLOGUE, Resolver, build, tai64n};
use crate::core::aead::{self, Backend};
use crate::identity::SecretKey;

type Key = [u8; KEY_LEN];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn key(text: &str) -> Key {
    unhex(text).try_into().unwrap()
}

// ---- the reference -------------------------------------------------------

/// BLAKE2s-256 of the parts, one after another.
fn hash(parts: &[&[u8]]) -> Key {
    let mut h = Blake2s256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// `HMAC-HASH(key, data)` (Noise §4.3: RFC 2104 over BLAKE2s, 64-byte block).
fn hmac(key: &[u8], data: &[&[u8]]) -> Key {
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let ipad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let mut inner = vec![&ipad[..]];
    inner.extend_from_slice(data);
    hash(&[&opad, &hash(&inner)])
}

/// `HKDF(chaining_key, input_key_material)` with three outputs (§4.3).
fn hkdf(ck: &Key, ikm: &[u8]) -> [Key; 3] {
    let temp = hmac(ck, &[ikm]);
    let o1 = hmac(&temp, &[&[1]]);
    let o2 = hmac(&temp, &[&o1, &[2]]);
    let o3 = hmac(&temp, &[&o2, &[3]]);
    [o1, o2, o3]
}

/// `ENCRYPT(k, n, ad, plaintext)` for ChaChaPoly (§12.3): the nonce is 32
/// zero bits and the 64-bit counter, little-endian.
fn seal(k: &Key, n: u64, ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&n.to_le_bytes());
    ChaCha20Poly1305::new(k.into())
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: ad,
            },
        )
        .unwrap()
}

fn public(private: &Key) -> Key {
    MontgomeryPoint::mul_base_clamped(*private).to_bytes()
}

fn dh(private: &Key, public: &Key) -> Key {
    MontgomeryPoint(*public).mul_clamped(*private).to_bytes()
}

/// The SymmetricState of §5.2, with its CipherState (§5.1) inline.
struct Symmetric {
    ck: Key,
    h: Key,
    k: Option<Key>,
    n: u64,
}

impl Symmetric {
    fn new(protocol_name: &[u8]) -> Self {
        let h = if protocol_name.len() <= KEY_LEN {
            let mut h = [0; KEY_LEN];
            h[..protocol_name.len()].copy_from_slice(protocol_name);
            h
        } else {
            hash(&[protocol_name])
        };
        Self {
            ck: h,
            h,
            k: None,
            n: 0,
        }
    }

    fn mix_hash(&mut self, data: &[u8]) {
        self.h = hash(&[&self.h, data]);
    }

    fn mix_key(&mut self, ikm: &[u8]) {
        let [ck, k, _] = hkdf(&self.ck, ikm);
        (self.ck, self.k, self.n) = (ck, Some(k), 0);
    }

    fn mix_key_and_hash(&mut self, ikm: &[u8]) {
        let [ck, temp_h, k] = hkdf(&self.ck, ikm);
        self.ck = ck;
        self.mix_hash(&temp_h);
        (self.k, self.n) = (Some(k), 0);
    }

    fn encrypt_and_hash(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let c = match self.k {
            Some(k) => {
                let c = seal(&k, self.n, &self.h, plaintext);
                self.n += 1;
                c
            }
            None => plaintext.to_vec(),
        };
        self.mix_hash(&c);
        c
    }

    /// The initiator's sending key and the responder's.
    fn split(&self) -> (Key, Key) {
        let [k1, k2, _] = hkdf(&self.ck, &[]);
        (k1, k2)
    }
}

struct Inputs<'a> {
    prologue: &'a [u8],
    psk: Key,
    init_static: Key,
    init_ephemeral: Key,
    resp_static: Key,
    resp_ephemeral: Key,
    payload1: &'a [u8],
    payload2: &'a [u8],
}

#[derive(Debug, PartialEq)]
struct Outputs {
    m1: Vec<u8>,
    m2: Vec<u8>,
    handshake_hash: Key,
    /// The first transport message each way (nonce 0, no associated
    /// data) of a fixed plaintext: it depends on nothing but the key, so
    /// it stands for the transport keys (`into_transport`'s `DataKey`s).
    first_i_to_r: Vec<u8>,
    first_r_to_i: Vec<u8>,
}

const TRANSPORT_I_TO_R: &[u8] = b"F. A. Hayek";
const TRANSPORT_R_TO_I: &[u8] = b"Carl Menger";

/// Both messages of the handshake, computed from both sides' keys at once.
fn reference(i: &Inputs) -> (Outputs, (Key, Key)) {
    let mut sym = Symmetric::new(super::NOISE_PATTERN.as_bytes());
    sym.mix_hash(i.prologue);
    // Pre-message `<- s`: the initiator knows the responder's static key.
    let rs = public(&i.resp_static);
    sym.mix_hash(&rs);

    // -> e, es, s, ss (with a psk, `e` is also mixed into the key: §9.2)
    let mut m1 = Vec::new();
    let e_i = public(&i.init_ephemeral);
    m1.extend_from_slice(&e_i);
    sym.mix_hash(&e_i);
    sym.mix_key(&e_i);
    sym.mix_key(&dh(&i.init_ephemeral, &rs));
    m1.extend(sym.encrypt_and_hash(&public(&i.init_static)));
    sym.mix_key(&dh(&i.init_static, &rs));
    m1.extend(sym.encrypt_and_hash(i.payload1));

    // <- e, ee, se, psk
    let mut m2 = Vec::new();
    let e_r = public(&i.resp_ephemeral);
    m2.extend_from_slice(&e_r);
    sym.mix_hash(&e_r);
    sym.mix_key(&e_r);
    sym.mix_key(&dh(&i.init_ephemeral, &e_r));
    sym.mix_key(&dh(&i.init_static, &e_r));
    sym.mix_key_and_hash(&i.psk);
    m2.extend(sym.encrypt_and_hash(i.payload2));

    let (k1, k2) = sym.split();
    let out = Outputs {
        m1,
        m2,
        handshake_hash: sym.h,
        first_i_to_r: seal(&k1, 0, &[], TRANSPORT_I_TO_R),
        first_r_to_i: seal(&k2, 0, &[], TRANSPORT_R_TO_I),
    };
    (out, (k1, k2))
}

// ---- the code under test -------------------------------------------------

fn write(h: &mut Handshake, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 1024];
    let n = h.write_message(payload, &mut out).unwrap();
    out.truncate(n);
    out
}

fn read(h: &mut Handshake, msg: &[u8]) -> Result<Vec<u8>, snow::Error> {
    let mut out = vec![0u8; 1024];
    let n = h.read_message(msg, &mut out)?;
    out.truncate(n);
    Ok(out)
}

/// The first transport message (counter 0), as snow's stateless transport
/// mode frames it: ciphertext, then tag.
fn seal_transport(k: &aead::SessionKeys, plaintext: &[u8]) -> Vec<u8> {
    let mut out = plaintext.to_vec();
    let tag = k.send.seal(0, &mut out).unwrap();
    out.extend_from_slice(&tag);
    out
}

fn open_transport(k: &aead::SessionKeys, message: &[u8]) -> Vec<u8> {
    let (body, tag) = aead::split_tag(message).unwrap();
    let mut plain = vec![0; body.len()];
    k.recv.open_into(0, body, tag, &mut plain).unwrap();
    plain
}

/// [`under_test_with`] for every pair of AEAD backends (initiator,
/// responder); the outputs, which must be the same for all.
fn under_test(i: &Inputs) -> Outputs {
    let mut outputs = Backend::ALL
        .iter()
        .flat_map(|&a| Backend::ALL.iter().map(move |&b| (a, b)))
        .map(|(a, b)| (a, b, under_test_with(i, (a, b))));
    let (_, _, first) = outputs.next().unwrap();
    for (a, b, out) in outputs {
        assert_eq!(out, first, "initiator on {a}, responder on {b}");
    }
    first
}

/// The handshake through `build`, each side with its own fixed ephemeral
/// key and AEAD backend, checking that each side reads what the other
/// wrote.
fn under_test_with(i: &Inputs, (init_aead, resp_aead): (Backend, Backend)) -> Outputs {
    let rs = public(&i.resp_static);
    let fixed = |e, aead| Resolver::fixed(e).with_aead(aead);
    let mut init = build(
        fixed(i.init_ephemeral, init_aead),
        i.prologue,
        &i.init_static,
        Some(&rs),
        &i.psk,
    )
    .unwrap();
    let mut resp = build(
        fixed(i.resp_ephemeral, resp_aead),
        i.prologue,
        &i.resp_static,
        None,
        &i.psk,
    )
    .unwrap();
    let m1 = write(&mut init, i.payload1);
    assert_eq!(read(&mut resp, &m1).unwrap(), i.payload1);
    assert_eq!(resp.remote_static(), Some(public(&i.init_static)));
    let m2 = write(&mut resp, i.payload2);
    assert_eq!(read(&mut init, &m2).unwrap(), i.payload2);
    let hash = init.handshake_hash();
    assert_eq!(hash, resp.handshake_hash());
    let (init, resp) = (
        init.into_transport().unwrap(),
        resp.into_transport().unwrap(),
    );
    let out = Outputs {
        m1,
        m2,
        handshake_hash: hash.try_into().unwrap(),
        first_i_to_r: seal_transport(&init, TRANSPORT_I_TO_R),
        first_r_to_i: seal_transport(&resp, TRANSPORT_R_TO_I),
    };
    // And each side opens what the other sealed.
    assert_eq!(open_transport(&resp, &out.first_i_to_r), TRANSPORT_I_TO_R);
    assert_eq!(open_transport(&init, &out.first_r_to_i), TRANSPORT_R_TO_I);
    out
}

// ---- the vectors ---------------------------------------------------------

#[test]
fn the_cacophony_vector_for_ikpsk2() {
    let prologue = unhex("4a6f686e2047616c74");
    let p1 = unhex("4c756477696720766f6e204d69736573");
    let p2 = unhex("4d757272617920526f746862617264");
    let inputs = Inputs {
        prologue: &prologue,
        psk: key("54686973206973206d7920417573747269616e20706572737065637469766521"),
        init_static: key("e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1"),
        init_ephemeral: key("893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a"),
        resp_static: key("4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893"),
        resp_ephemeral: key("bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b"),
        payload1: &p1,
        payload2: &p2,
    };
    assert_eq!(
        hex(&public(&inputs.resp_static)),
        "31e0303fd6418d2f8c0e78b91f22e8caed0fbe48656dcf4767e4834f701b8f62",
        "init_remote_static"
    );
    let vector = Outputs {
        m1: unhex(
            "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944001e21de9f98ddd8e2ad\
             57527207feb56253c9c94a9e496782ecfcb2a75fbcaf1b52948cc48daefe660c62119ab5000980c84831\
             215f2441eba616548e832985464cf17e51ee93109008399a21f7e13f",
        ),
        m2: unhex(
            "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843cb765f2caef0751b8f00\
             7572dab0322217755c0632f365717edbf34d33e87a",
        ),
        handshake_hash: key("f5191b875290abcd41347ac3622d9679688a7e980229cb937ef748336cfde0e5"),
        first_i_to_r: unhex("8153ca9833bc3c1b91a7e66e5f4d4f5b59bf9e64c2f20d15f0bba7"),
        first_r_to_i: unhex("07af0c9c86e1b4e80f36b04ff7688d51141af3debd0332f0a705ef"),
    };
    assert_eq!(reference(&inputs).0, vector, "the reference");
    assert_eq!(under_test(&inputs), vector, "kith's handshake");
}

/// kith's own handshake: the prologue `kith v1`, X25519 keys converted from
/// Ed25519 identities, a 12-byte timestamp in message 1, an empty
/// message 2, and a network secret as the psk.
fn kith_inputs<'a>(psk: Key, timestamp: &'a [u8]) -> Inputs<'a> {
    Inputs {
        prologue: PROLOGUE,
        psk,
        init_static: *SecretKey::from_seed([1; 32]).x25519(),
        init_ephemeral: [0x11; KEY_LEN],
        resp_static: *SecretKey::from_seed([2; 32]).x25519(),
        resp_ephemeral: [0x22; KEY_LEN],
        payload1: timestamp,
        payload2: &[],
    }
}

const NETWORK_SECRET: Key = *b"a network secret of 32 bytes ...";

#[test]
fn kiths_handshake_with_a_network_secret() {
    let timestamp = tai64n(Duration::from_secs(1_800_000_000));
    let inputs = kith_inputs(NETWORK_SECRET, &timestamp);
    let (expected, (k1, k2)) = reference(&inputs);
    assert_eq!(under_test(&inputs), expected);
    // Pinned: a change to any input, primitive or processing rule shows.
    assert_eq!(
        hex(&expected.m1),
        "7b4e909bbe7ffe44c465a220037d608ee35897d31ef972f07f74892cb0f73f13\
         8a3d5a78727c7e1ce44ceab488b3a5da88b5ebaa736346962fd4dc9d53dc2736\
         b8c0d65d3488d3b69804b47bd8027c37cdbf8d64a185a9feaa45c165762625b8\
         029f29aa3e592068cd132cb6"
    );
    assert_eq!(
        hex(&expected.m2),
        "0faa684ed28867b97f4a6a2dee5df8ce974e76b7018e3f22a1c4cf2678570f20\
         8edd7601ded842d4f8485dc4ff13d15c"
    );
    // The transport keys: the initiator's sending key, the responder's.
    assert_eq!(
        hex(&k1),
        "9a1c56657160e4fc444fe6eecf970c87cdb9119bc6d0b424e6d667000401adee"
    );
    assert_eq!(
        hex(&k2),
        "865509bd6532ce5518026fa768719be42b78655edc69146604d231c569f1050b"
    );
    assert_eq!(
        hex(&expected.handshake_hash),
        "a11ea07076880b0d2ea2f9a3a1d83a072410fbb05eef5b5d30b582fe6092a022"
    );
}

#[test]
fn the_secret_changes_message_2_and_the_keys_not_message_1() {
    // psk2 is mixed in after message 2's tokens: message 1 (who is
    // calling, and when) is the same with any secret, and a responder
    // holding another secret answers with a message 2 (and keys) the
    // initiator cannot match.
    let timestamp = tai64n(Duration::from_secs(1_800_000_000));
    let (with, with_keys) = reference(&kith_inputs(NETWORK_SECRET, &timestamp));
    let (without, without_keys) = reference(&kith_inputs([0; KEY_LEN], &timestamp));
    assert_eq!(with.m1, without.m1);
    assert_ne!(with.m2, without.m2);
    assert_ne!(with_keys.0, without_keys.0);
    assert_ne!(with_keys.1, without_keys.1);
    assert_eq!(under_test(&kith_inputs([0; KEY_LEN], &timestamp)), without);

    // The initiator with the secret refuses the answer of one without.
    let i = kith_inputs(NETWORK_SECRET, &timestamp);
    let rs = public(&i.resp_static);
    let mut init = build(
        Resolver::fixed(i.init_ephemeral),
        PROLOGUE,
        &i.init_static,
        Some(&rs),
        &i.psk,
    )
    .unwrap();
    let _ = write(&mut init, &timestamp);
    assert!(read(&mut init, &without.m2).is_err());
}
