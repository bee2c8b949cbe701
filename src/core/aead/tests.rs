//! Every backend against RFC 8439's vector, against an independent
//! implementation (RustCrypto's `chacha20poly1305`) through snow's nonce
//! layout, and against each other.

use chacha20poly1305::aead::{Aead as _, KeyInit, Payload};
use proptest::prelude::*;

use super::*;

fn unhex(text: &str) -> Vec<u8> {
    let text: String = text.split_whitespace().collect();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// `backend`'s cipher for snow, keyed with `key`.
fn cipher(backend: Backend, key: &[u8; KEY_LEN]) -> Box<dyn Cipher> {
    let mut c = backend.cipher();
    c.set(key);
    c
}

/// RFC 8439 §2.8.2, "Example and Test Vector for AEAD_CHACHA20_POLY1305".
/// Its nonce has a non-zero constant (07 00 00 00), which snow's layout
/// never produces: this goes through the whole-nonce interface.
#[test]
fn rfc8439_aead_known_answer_for_every_backend() {
    let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you \
                      only one tip for the future, sunscreen would be it.";
    let aad = unhex("50515253c0c1c2c3c4c5c6c7");
    let key: [u8; KEY_LEN] =
        unhex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
            .try_into()
            .unwrap();
    let nonce: [u8; NONCE_LEN] = unhex("070000004041424344454647").try_into().unwrap();
    let ciphertext = unhex(
        "d31a8d34648e60db7b86afbc53ef7ec2 a4aded51296e08fea9e2b5a736ee62d6
         3dbea45e8ca9671282fafb69da92728b 1a71de0a9e060b2905d6a5b67ecd3b36
         92ddbd7f2d778b8c9803aee328091b58 fab324e4fad675945585808b4831d7bc
         3ff4def08e4b7a9de576d26586cec64b 6116",
    );
    let tag: [u8; TAG_LEN] = unhex("1ae10b594f09e26a7e902ecbd0600691")
        .try_into()
        .unwrap();
    for &backend in Backend::ALL {
        let a = backend.aead(&key);
        let mut out = plaintext.to_vec();
        assert_eq!(a.seal(&nonce, &aad, &mut out), Ok(tag), "{backend}");
        assert_eq!(out, ciphertext, "{backend}");
        let mut back = ciphertext.clone();
        assert_eq!(a.open(&nonce, &aad, &mut back, &tag), Ok(()), "{backend}");
        assert_eq!(back, plaintext, "{backend}");
        let mut forged = tag;
        forged[0] ^= 1;
        let mut back = ciphertext.clone();
        assert_eq!(
            a.open(&nonce, &aad, &mut back, &forged),
            Err(Failed),
            "{backend} accepted a forged tag"
        );
    }
}

/// Through snow's interface, each backend computes what an independent
/// implementation computes with the nonce 0x00000000 ‖ LE64(counter).
#[test]
fn the_counter_is_laid_out_as_noise_and_wireguard_do() {
    let key = [0x42; KEY_LEN];
    let counter = 0x0102_0304_0506_0708u64;
    let (aad, plaintext) = (b"header".as_slice(), b"a packet".as_slice());
    let mut nonce = [0u8; NONCE_LEN];
    nonce[4..].copy_from_slice(&[8, 7, 6, 5, 4, 3, 2, 1]);
    let expected = chacha20poly1305::ChaCha20Poly1305::new(&key.into())
        .encrypt(
            &nonce.into(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .unwrap();
    for &backend in Backend::ALL {
        let mut out = [0u8; 64];
        let n = cipher(backend, &key).encrypt(counter, aad, plaintext, &mut out);
        assert_eq!(&out[..n], &expected[..], "{backend}");
    }
}

/// `WipedCipher` keys a cipher with zeros before snow drops it: that must
/// reach the key each backend seals with.
#[test]
fn a_new_key_replaces_the_old_one_in_every_backend() {
    let plaintext = [9u8; 40];
    for &backend in Backend::ALL {
        let seal = |c: &dyn Cipher| {
            let mut out = [0u8; 56];
            c.encrypt(7, &[], &plaintext, &mut out);
            out
        };
        let mut c = cipher(backend, &[0x77; KEY_LEN]);
        let with_secret = seal(&*c);
        c.set(&[0; KEY_LEN]);
        let with_zeros = seal(&*c);
        assert_ne!(with_zeros, with_secret, "{backend}");
        assert_eq!(
            with_zeros,
            seal(&*cipher(backend, &[0; KEY_LEN])),
            "{backend}"
        );
    }
}

#[test]
fn short_or_misfit_buffers_fail_without_panicking() {
    for &backend in Backend::ALL {
        let c = cipher(backend, &[1; KEY_LEN]);
        let mut out = [0u8; 64];
        assert!(c.decrypt(0, &[], &[0u8; TAG_LEN - 1], &mut out).is_err());
        let mut sealed = [0u8; 48];
        let n = c.encrypt(0, &[], &[5u8; 32], &mut sealed);
        assert_eq!(n, 48);
        assert!(
            c.decrypt(0, &[], &sealed, &mut [0u8; 31]).is_err(),
            "{backend}"
        );
        assert_eq!(
            c.encrypt(0, &[], &[5u8; 32], &mut [0u8; 47]),
            0,
            "{backend}"
        );
    }
}

/// An AEAD that shows the test every key it is given.
struct Recorder(std::sync::Arc<std::sync::Mutex<[u8; KEY_LEN]>>);

impl Aead for Recorder {
    fn new(_: &[u8; KEY_LEN]) -> Self {
        unreachable!("built by the test")
    }
    fn set_key(&mut self, key: &[u8; KEY_LEN]) {
        *self.0.lock().unwrap() = *key;
    }
    fn seal(&self, _: &[u8; NONCE_LEN], _: &[u8], _: &mut [u8]) -> Result<[u8; TAG_LEN], Failed> {
        Err(Failed)
    }
    fn open(
        &self,
        _: &[u8; NONCE_LEN],
        _: &[u8],
        _: &mut [u8],
        _: &[u8; TAG_LEN],
    ) -> Result<(), Failed> {
        Err(Failed)
    }
}

/// A session's key is keyed with zeros when the session drops it (what
/// that reaches in each library: the module doc, and the test above).
#[test]
fn a_data_key_is_keyed_with_zeros_when_dropped() {
    let key = std::sync::Arc::new(std::sync::Mutex::new([0x77; KEY_LEN]));
    drop(DataKey(Box::new(Recorder(key.clone()))));
    assert_eq!(*key.lock().unwrap(), [0; KEY_LEN]);
}

fn forged_from(sealed: &[u8]) -> Vec<u8> {
    let mut f = sealed.to_vec();
    f[100] ^= 4;
    f
}

/// A session's key seals in place exactly what the handshake's cipher
/// seals from one buffer into another, opens it back into another buffer,
/// and leaves nothing of a forged message or a wrong counter behind. (That
/// it matches snow's own transport: `noise`'s tests and the Cacophony
/// vector in `noise::kat`.)
#[test]
fn a_data_key_seals_in_place_what_the_handshake_cipher_seals() {
    let key = [0x42; KEY_LEN];
    let plaintext: Vec<u8> = (0..1420u32).map(|i| (i * 7) as u8).collect();
    for &backend in Backend::ALL {
        let mut snow_sealed = vec![0u8; plaintext.len() + TAG_LEN];
        let n = cipher(backend, &key).encrypt(9, &[], &plaintext, &mut snow_sealed);
        assert_eq!(n, snow_sealed.len(), "{backend}");
        let k = DataKey::new(backend, &key);
        let mut buf = plaintext.clone();
        let tag = k.seal(9, &mut buf).unwrap();
        assert_eq!(buf, snow_sealed[..plaintext.len()], "{backend}");
        assert_eq!(tag, snow_sealed[plaintext.len()..], "{backend}");
        let mut into = vec![0xaa; buf.len()];
        assert_eq!(
            k.open_into(10, &buf, &tag, &mut into),
            Err(Failed),
            "{backend}"
        );
        assert!(
            into.iter().all(|&b| b == 0),
            "{backend}: plaintext of a wrong counter left"
        );
        let mut into = vec![0xaa; buf.len()];
        k.open_into(9, &buf, &tag, &mut into).unwrap();
        assert_eq!(into, plaintext, "{backend}");
        let mut into = vec![0xaa; buf.len()];
        assert_eq!(
            k.open_into(9, &forged_from(&buf), &tag, &mut into),
            Err(Failed)
        );
        assert!(
            into.iter().all(|&b| b == 0),
            "{backend}: plaintext of a forgery left"
        );
    }
}

#[test]
fn backend_names_parse_back() {
    for &backend in Backend::ALL {
        assert_eq!(backend.name().parse::<Backend>(), Ok(backend));
        assert_eq!(
            backend.name().to_uppercase().parse::<Backend>(),
            Ok(backend)
        );
    }
    assert_eq!(
        "chacha".parse::<Backend>(),
        Err(UnknownBackend {
            name: "chacha".into()
        })
    );
}

proptest! {
    /// Any backend opens what any other sealed, all seal to the same bytes,
    /// and each refuses a message with one bit flipped, leaving no
    /// plaintext behind.
    #[test]
    fn backends_interoperate(
        key in any::<[u8; KEY_LEN]>(),
        counter in any::<u64>(),
        aad in proptest::collection::vec(any::<u8>(), 0..48),
        plaintext in proptest::collection::vec(any::<u8>(), 0..1600),
        flip in any::<usize>(),
    ) {
        let ciphers: Vec<_> = Backend::ALL.iter().map(|&b| (b, cipher(b, &key))).collect();
        let mut sealed: Vec<Vec<u8>> = Vec::new();
        for (_, c) in &ciphers {
            let mut out = vec![0u8; plaintext.len() + TAG_LEN];
            prop_assert_eq!(c.encrypt(counter, &aad, &plaintext, &mut out), out.len());
            sealed.push(out);
        }
        prop_assert!(sealed.windows(2).all(|w| w[0] == w[1]));
        for (from, message) in Backend::ALL.iter().zip(&sealed) {
            for (to, c) in &ciphers {
                let mut out = vec![0u8; plaintext.len()];
                let n = c.decrypt(counter, &aad, message, &mut out);
                prop_assert_eq!(n, Ok(plaintext.len()), "{} → {}", from, to);
                prop_assert_eq!(&out, &plaintext);
                let mut bad = message.clone();
                let bit = flip % (bad.len() * 8);
                bad[bit / 8] ^= 1 << (bit % 8);
                let mut out = vec![0xaa; plaintext.len()];
                prop_assert!(c.decrypt(counter, &aad, &bad, &mut out).is_err(), "{}", to);
                prop_assert!(out.iter().all(|b| *b == 0), "{} left bytes behind", to);
            }
        }
    }
}
