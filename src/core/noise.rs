//! The Noise handshake as kith uses it: `Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s`
//! (Noise spec rev. 34, §7.5 IK and §9 psk modifiers), plus the MAC that lets
//! a responder drop junk before any Diffie-Hellman.
//!
//! Randomness is handed in: every handshake gets its own resolver whose RNG
//! is seeded from the node's RNG, so a simulation with a fixed seed is
//! reproducible, while the daemon seeds the node from the OS.
//!
//! Secrets at rest: every primitive snow gets from [`Resolver`] wipes its key
//! when snow drops it, so a finished or abandoned handshake and an expired
//! session leave no key behind in freed memory: the X25519 private keys
//! (static and ephemeral) live in [`X25519`] (zeroized), the handshake's
//! AEAD key in [`WipedCipher`] and the session's two in `aead::DataKey`s
//! (set to zeros; what that reaches in each AEAD library is in
//! `core::aead`; the Split() output snow hands over is zeroized once they
//! are keyed, all but the copies snow leaves on its stack), and
//! the RNG that drew the ephemeral key in [`WipedRandom`] (reseeded with
//! zeros); [`Handshake`] overwrites snow's copy of the psk once message 2 is
//! done, or when it is dropped unfinished. Out of reach: snow 0.10 keeps
//! the chaining key and the handshake hash in plain arrays inside
//! `HandshakeState` and wipes nothing itself, so those, and copies snow and
//! the compiler leave on the stack, stay in freed memory until reused.
use blake2::digest::{Mac, consts::U16};
use blake2::{Blake2s256, Blake2sMac, Digest};
use curve25519_dalek::montgomery::MontgomeryPoint;
use rand::{RngCore, SeedableRng};
use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use zeroize::{Zeroize, Zeroizing};

use super::aead;
use crate::wire::MAC_LEN;

pub const NOISE_PATTERN: &str = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/// Prologue binds the handshake to this protocol and version.
pub const PROLOGUE: &[u8] = b"kith v1";
/// Label for the mac1 key, as WireGuard's `LABEL_MAC1` (whitepaper §5.4.4).
const LABEL_MAC1: &[u8] = b"mac1----";
/// Length of the handshake timestamp payload (TAI64N).
pub const TIMESTAMP_LEN: usize = 12;
/// X25519 keys and results, ChaCha20-Poly1305 keys and the psk: 32 bytes.
const KEY_LEN: usize = 32;
/// `psk2`: the psk is mixed in after the tokens of message 2.
const PSK_LOCATION: u8 = 2;

pub fn params() -> NoiseParams {
    // A constant, known-good pattern string: parsing cannot fail.
    NOISE_PATTERN
        .parse()
        .unwrap_or_else(|_| unreachable!("static Noise pattern"))
}

/// A handshake as initiator, `-> e, es, s, ss` next, towards the holder of
/// the X25519 public key `remote`.
pub fn initiator(
    rng: &mut impl RngCore,
    static_secret: &[u8; KEY_LEN],
    remote: &[u8; KEY_LEN],
    psk: &[u8; KEY_LEN],
) -> Result<Handshake, snow::Error> {
    build(
        Resolver::new(rng),
        PROLOGUE,
        static_secret,
        Some(remote),
        psk,
    )
}

/// A handshake as responder: it reads message 1 next.
pub fn responder(
    rng: &mut impl RngCore,
    static_secret: &[u8; KEY_LEN],
    psk: &[u8; KEY_LEN],
) -> Result<Handshake, snow::Error> {
    build(Resolver::new(rng), PROLOGUE, static_secret, None, psk)
}

fn build(
    resolver: Resolver,
    prologue: &[u8],
    static_secret: &[u8; KEY_LEN],
    remote: Option<&[u8; KEY_LEN]>,
    psk: &[u8; KEY_LEN],
) -> Result<Handshake, snow::Error> {
    let aead = resolver.aead;
    let builder = snow::Builder::with_resolver(params(), Box::new(resolver))
        .local_private_key(static_secret)?
        .prologue(prologue)?
        .psk(PSK_LOCATION, psk)?;
    let state = match remote {
        Some(remote) => builder.remote_public_key(remote)?.build_initiator()?,
        None => builder.build_responder()?,
    };
    Ok(Handshake(Some(state), aead))
}

/// One Noise handshake in progress. snow keeps its own copy of the psk in
/// the state; it is overwritten with zeros in place when the handshake
/// turns into a session (message 2 was its last use) or is dropped.
pub struct Handshake(Option<snow::HandshakeState>, aead::Backend);

impl Handshake {
    pub fn write_message(&mut self, payload: &[u8], out: &mut [u8]) -> Result<usize, snow::Error> {
        self.state()?.write_message(payload, out)
    }

    pub fn read_message(&mut self, msg: &[u8], out: &mut [u8]) -> Result<usize, snow::Error> {
        self.state()?.read_message(msg, out)
    }

    /// The other side's X25519 static key, once message 1 was read.
    pub fn remote_static(&self) -> Option<[u8; KEY_LEN]> {
        let state = self.0.as_ref()?;
        <[u8; KEY_LEN]>::try_from(state.get_remote_static()?).ok()
    }

    /// The session keys, once both messages went through: Noise's Split()
    /// (the first key seals what the initiator sends), each key in a
    /// [`aead::DataKey`] of the backend the handshake used, which seals in
    /// place where snow's transport would copy. What snow's
    /// stateless transport mode computes, byte for byte (the `kat` tests
    /// hold the two together).
    pub fn into_transport(mut self) -> Result<aead::SessionKeys, snow::Error> {
        // Wiped where it lies, before the state is moved out of `self`.
        self.wipe_psk();
        let not_finished = || snow::Error::State(snow::error::StateProblem::HandshakeNotFinished);
        let mut state = self.0.take().ok_or_else(not_finished)?;
        if !state.is_handshake_finished() {
            return Err(not_finished());
        }
        let (i_to_r, r_to_i) = state.dangerously_get_raw_split();
        let (i_to_r, r_to_i) = (Zeroizing::new(i_to_r), Zeroizing::new(r_to_i));
        let (send, recv) = if state.is_initiator() {
            (&i_to_r, &r_to_i)
        } else {
            (&r_to_i, &i_to_r)
        };
        Ok(aead::SessionKeys {
            send: aead::DataKey::new(self.1, send),
            recv: aead::DataKey::new(self.1, recv),
        })
    }

    #[cfg(test)]
    fn handshake_hash(&self) -> Vec<u8> {
        self.0
            .as_ref()
            .map(|s| s.get_handshake_hash().to_vec())
            .unwrap_or_default()
    }

    fn state(&mut self) -> Result<&mut snow::HandshakeState, snow::Error> {
        self.0.as_mut().ok_or(snow::Error::State(
            snow::error::StateProblem::HandshakeAlreadyFinished,
        ))
    }

    fn wipe_psk(&mut self) {
        if let Some(state) = self.0.as_mut() {
            // The location is the one `build` set, with a 32-byte key: it
            // cannot fail.
            let _ = state.set_psk(usize::from(PSK_LOCATION), &[0; KEY_LEN]);
        }
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        self.wipe_psk();
    }
}

/// The RNG one handshake draws its ephemeral key from. Its state could
/// draw that key again, so it is reseeded with zeros when snow drops it.
struct WipedRandom(rand::rngs::StdRng);

impl Random for WipedRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

impl Drop for WipedRandom {
    fn drop(&mut self) {
        self.0 = rand::rngs::StdRng::from_seed([0; 32]);
        std::hint::black_box(&self.0);
    }
}

/// Test vectors fix the ephemeral key: this hands snow those bytes.
#[cfg(test)]
struct FixedRandom(Zeroizing<[u8; KEY_LEN]>);

#[cfg(test)]
impl Random for FixedRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        for (d, s) in dest.iter_mut().zip(self.0.iter().cycle()) {
            *d = *s;
        }
        Ok(())
    }
}

/// What snow builds a handshake from: our [`X25519`], ChaCha20-Poly1305
/// from the backend the daemon measured fastest ([`aead::default_backend`]
/// when the resolver is made) behind [`WipedCipher`], the default BLAKE2s,
/// and an RNG seeded from the node's for the ephemeral key.
pub struct Resolver {
    /// Taken (and zeroized in place) by the one RNG snow asks for.
    seed: std::sync::Mutex<Option<Zeroizing<[u8; 32]>>>,
    /// For the handshake's AEAD and the session's two.
    aead: aead::Backend,
    #[cfg(test)]
    fixed_ephemeral: Option<[u8; KEY_LEN]>,
}

impl Resolver {
    pub fn new(rng: &mut impl RngCore) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut *seed);
        Self {
            seed: std::sync::Mutex::new(Some(seed)),
            aead: aead::default_backend(),
            #[cfg(test)]
            fixed_ephemeral: None,
        }
    }

    /// A resolver whose RNG hands out `ephemeral` as the ephemeral private key.
    #[cfg(test)]
    fn fixed(ephemeral: [u8; KEY_LEN]) -> Self {
        Self {
            seed: std::sync::Mutex::new(None),
            aead: aead::default_backend(),
            fixed_ephemeral: Some(ephemeral),
        }
    }

    /// The same, with the AEAD from `backend`.
    #[cfg(test)]
    fn with_aead(self, backend: aead::Backend) -> Self {
        Self {
            aead: backend,
            ..self
        }
    }
}

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        #[cfg(test)]
        if let Some(e) = self.fixed_ephemeral {
            return Some(Box::new(FixedRandom(Zeroizing::new(e))));
        }
        let mut slot = self.seed.lock().ok()?;
        let rng = rand::rngs::StdRng::from_seed(**slot.as_ref()?);
        // Dropped in place (zeroized where it lies), not moved out first.
        *slot = None;
        Some(Box::new(WipedRandom(rng)))
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::<X25519>::default()),
            _ => None,
        }
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        // snow's BLAKE2s resets its state after every digest: nothing of
        // a key stays in it between operations.
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        let cipher = match choice {
            CipherChoice::ChaChaPoly => self.aead.cipher(),
            _ => DefaultResolver.resolve_cipher(choice)?,
        };
        Some(Box::new(WipedCipher(cipher)))
    }
}

/// X25519 (RFC 7748) for snow, computed as snow's own (curve25519-dalek,
/// clamped scalars), with two differences: the private key (our static key
/// or an ephemeral one) is zeroized when snow drops it, and an all-zero
/// result (a low-order point from the other side, e.g. a forged ephemeral
/// key) fails the handshake, as WireGuard's does, instead of mixing a key
/// anyone can compute.
#[derive(Default)]
struct X25519 {
    private: Zeroizing<[u8; KEY_LEN]>,
    public: [u8; KEY_LEN],
}

impl X25519 {
    fn derive_public(&mut self) {
        self.public = MontgomeryPoint::mul_base_clamped(*self.private).to_bytes();
    }
}

impl Dh for X25519 {
    fn name(&self) -> &'static str {
        "25519"
    }
    fn pub_len(&self) -> usize {
        KEY_LEN
    }
    fn priv_len(&self) -> usize {
        KEY_LEN
    }
    fn set(&mut self, privkey: &[u8]) {
        self.private.zeroize();
        let n = privkey.len().min(KEY_LEN);
        self.private[..n].copy_from_slice(&privkey[..n]);
        self.derive_public();
    }
    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        rng.try_fill_bytes(&mut *self.private)?;
        self.derive_public();
        Ok(())
    }
    fn pubkey(&self) -> &[u8] {
        &self.public
    }
    fn privkey(&self) -> &[u8] {
        &*self.private
    }
    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let theirs = pubkey
            .get(..KEY_LEN)
            .and_then(|k| <[u8; KEY_LEN]>::try_from(k).ok())
            .ok_or(snow::Error::Dh)?;
        let out = out.get_mut(..KEY_LEN).ok_or(snow::Error::Dh)?;
        let mut shared = MontgomeryPoint(theirs).mul_clamped(*self.private);
        out.copy_from_slice(shared.as_bytes());
        shared.zeroize();
        // Constant time: the result is a secret.
        if out.iter().fold(0u8, |acc, b| acc | b) == 0 {
            return Err(snow::Error::Dh);
        }
        Ok(())
    }
}

/// An AEAD of snow's (the handshake's or a session's), keyed with zeros
/// when snow drops it: the key is overwritten where it lies, inside the
/// boxed cipher, by the cipher's own `set`.
struct WipedCipher(Box<dyn Cipher>);

impl Drop for WipedCipher {
    fn drop(&mut self) {
        self.0.set(&[0; KEY_LEN]);
        // Keep the store: the box is freed right after.
        std::hint::black_box(&*self.0);
    }
}

impl Cipher for WipedCipher {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn set(&mut self, key: &[u8; KEY_LEN]) {
        self.0.set(key)
    }
    fn encrypt(&self, nonce: u64, authtext: &[u8], plaintext: &[u8], out: &mut [u8]) -> usize {
        self.0.encrypt(nonce, authtext, plaintext, out)
    }
    fn decrypt(
        &self,
        nonce: u64,
        authtext: &[u8],
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, snow::Error> {
        self.0.decrypt(nonce, authtext, ciphertext, out)
    }
    fn rekey(&mut self) {
        self.0.rekey()
    }
}

/// mac1 key for messages addressed to the holder of `x25519_public`:
/// `HASH(LABEL_MAC1 || Spub)`.
pub fn mac1_key(x25519_public: &[u8; 32]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    h.update(LABEL_MAC1);
    h.update(x25519_public);
    h.finalize().into()
}

/// `MAC(key, msg)` = keyed BLAKE2s with a 16-byte output. Keys are 32
/// bytes (mac1) or 16 (a cookie, for mac2), both valid BLAKE2s key sizes.
pub fn mac<const N: usize>(key: &[u8; N], msg: &[u8]) -> [u8; MAC_LEN] {
    const { assert!(N >= 1 && N <= 32, "BLAKE2s keys are 1 to 32 bytes") };
    let mut m = <Blake2sMac<U16> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("BLAKE2s key of 1 to 32 bytes"));
    m.update(msg);
    m.finalize().into_bytes().into()
}

/// Constant-time comparison of two MACs.
pub fn mac_eq(a: &[u8; MAC_LEN], b: &[u8; MAC_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// TAI64N label for a Unix time: 8 bytes of seconds + 2^62, 4 bytes of
/// nanoseconds, big-endian. Byte order compares like time, so the responder
/// can reject replayed initiations with a plain `<=`.
pub fn tai64n(unix: std::time::Duration) -> [u8; TIMESTAMP_LEN] {
    let mut out = [0u8; TIMESTAMP_LEN];
    out[..8].copy_from_slice(&((1u64 << 62) + unix.as_secs()).to_be_bytes());
    out[8..].copy_from_slice(&unix.subsec_nanos().to_be_bytes());
    out
}

/// The smallest TAI64N label after `t` (one nanosecond later; the
/// nanoseconds field never exceeds 999 999 999).
pub fn tai64n_after(t: &[u8; TIMESTAMP_LEN]) -> [u8; TIMESTAMP_LEN] {
    let secs = u64::from_be_bytes(t[..8].try_into().unwrap_or([0; 8]));
    let nanos = u32::from_be_bytes(t[8..].try_into().unwrap_or([0; 4]));
    let (secs, nanos) = if nanos >= 999_999_999 {
        (secs.saturating_add(1), 0)
    } else {
        (secs, nanos + 1)
    };
    let mut out = [0u8; TIMESTAMP_LEN];
    out[..8].copy_from_slice(&secs.to_be_bytes());
    out[8..].copy_from_slice(&nanos.to_be_bytes());
    out
}

#[cfg(test)]
mod kat;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn an_x25519_private_key_is_zeroized_when_snow_drops_it() {
        let private = [0x3c; 32];
        let mut dh = X25519::default();
        dh.set(&private);
        let (before, after) = crate::identity::bytes_before_and_after_drop(dh);
        assert!(contains(&before, &private), "positive control");
        assert!(!contains(&after, &private[..8]), "{after:02x?}");
    }

    /// A cipher that shows the test every key it is given.
    struct Recorder(Arc<Mutex<[u8; KEY_LEN]>>);

    impl Cipher for Recorder {
        fn name(&self) -> &'static str {
            "recorder"
        }
        fn set(&mut self, key: &[u8; KEY_LEN]) {
            *self.0.lock().unwrap() = *key;
        }
        fn encrypt(&self, _: u64, _: &[u8], _: &[u8], _: &mut [u8]) -> usize {
            0
        }
        fn decrypt(&self, _: u64, _: &[u8], _: &[u8], _: &mut [u8]) -> Result<usize, snow::Error> {
            Ok(0)
        }
    }

    #[test]
    fn a_cipher_is_keyed_with_zeros_when_snow_drops_it() {
        let key = Arc::new(Mutex::new([0; KEY_LEN]));
        let mut cipher = WipedCipher(Box::new(Recorder(key.clone())));
        cipher.set(&[0x77; KEY_LEN]);
        assert_eq!(*key.lock().unwrap(), [0x77; KEY_LEN]);
        drop(cipher);
        assert_eq!(*key.lock().unwrap(), [0; KEY_LEN]);
    }

    #[test]
    fn the_rng_seed_is_used_once() {
        let r = Resolver::new(&mut rand::rngs::StdRng::seed_from_u64(1));
        assert!(r.resolve_rng().is_some());
        // Zeroized and gone: no second RNG can repeat the first one's keys.
        assert!(r.resolve_rng().is_none());
    }

    /// Message 1 of a handshake between keys 1 and 2, and both sides.
    fn first_message(
        psk_i: &[u8; KEY_LEN],
        psk_r: &[u8; KEY_LEN],
    ) -> (Handshake, Handshake, Vec<u8>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let (i, r) = (
            crate::identity::SecretKey::from_seed([1; 32]),
            crate::identity::SecretKey::from_seed([2; 32]),
        );
        let mut init = initiator(&mut rng, &i.x25519(), &r.public().x25519(), psk_i).unwrap();
        let mut resp = responder(&mut rng, &r.x25519(), psk_r).unwrap();
        let mut m1 = vec![0u8; 256];
        let n = init.write_message(b"hello", &mut m1).unwrap();
        m1.truncate(n);
        let mut payload = [0u8; 64];
        assert_eq!(resp.read_message(&m1, &mut payload), Ok(5));
        (init, resp, m1)
    }

    /// Message 2 from `resp`, as `init` takes it.
    fn second_message(init: &mut Handshake, resp: &mut Handshake) -> Result<usize, snow::Error> {
        let mut m2 = [0u8; 128];
        let n = resp.write_message(&[], &mut m2).unwrap();
        init.read_message(&m2[..n], &mut [])
    }

    /// Keys only from a finished handshake: after message 1 the chaining
    /// key has mixed neither the responder's ephemeral key nor the psk.
    #[test]
    fn an_unfinished_handshake_gives_no_keys() {
        let psk = [0x42; KEY_LEN];
        let (init, resp, _) = first_message(&psk, &psk);
        let unfinished = |r: Result<aead::SessionKeys, snow::Error>| {
            matches!(
                r,
                Err(snow::Error::State(
                    snow::error::StateProblem::HandshakeNotFinished
                ))
            )
        };
        assert!(unfinished(init.into_transport()));
        assert!(unfinished(resp.into_transport()));
    }

    /// A session's keys seal what snow's own stateless transport seals, on
    /// both sides and at any counter: kith peers built before sessions
    /// left snow's transport read what these send, and the other way round.
    /// (The same handshake twice, from the same seed: once through
    /// `into_transport`, once into snow's transport.)
    #[test]
    fn session_keys_seal_what_snows_transport_seals() {
        let psk = [0x42; KEY_LEN];
        let finished = || {
            let (mut init, mut resp, _) = first_message(&psk, &psk);
            assert_eq!(second_message(&mut init, &mut resp), Ok(0));
            [init, resp]
        };
        let ours = finished().map(|h| h.into_transport().unwrap());
        let snows =
            finished().map(|mut h| h.0.take().unwrap().into_stateless_transport_mode().unwrap());
        for (ours, snow) in ours.iter().zip(&snows) {
            for counter in [0, 1, 255, 1 << 32, u64::MAX - 1] {
                let plain: Vec<u8> = (0..1400u64).map(|i| (i ^ counter) as u8).collect();
                let mut theirs = vec![0u8; plain.len() + aead::TAG_LEN];
                let n = snow.write_message(counter, &plain, &mut theirs).unwrap();
                let mut buf = plain.clone();
                let tag = ours.send.seal(counter, &mut buf).unwrap();
                assert_eq!(theirs[..plain.len()], buf[..]);
                assert_eq!(theirs[plain.len()..n], tag[..]);
            }
        }
        // And the two sides' keys pair up: what one seals the other opens.
        let [init, resp] = &ours;
        let mut buf = *b"ping";
        let tag = init.send.seal(7, &mut buf).unwrap();
        let mut opened = [0; 4];
        resp.recv.open_into(7, &buf, &tag, &mut opened).unwrap();
        assert_eq!(&opened, b"ping");
    }

    #[test]
    fn the_psk_copy_in_snow_is_overwritten_in_place() {
        let psk = [0x42; KEY_LEN];
        // Control: the same psk on both sides completes.
        let (mut init, mut resp, _) = first_message(&psk, &psk);
        assert_eq!(second_message(&mut init, &mut resp), Ok(0));
        assert!(init.into_transport().is_ok() && resp.into_transport().is_ok());
        // Wiped before message 2: the responder now mixes zeros, which the
        // initiator's real psk cannot match, so the copy snow holds (the
        // one message 2 reads) was the one overwritten.
        let (mut init, mut resp, _) = first_message(&psk, &psk);
        resp.wipe_psk();
        assert!(second_message(&mut init, &mut resp).is_err());
        let (mut init, mut resp, _) = first_message(&[0; KEY_LEN], &psk);
        resp.wipe_psk();
        assert_eq!(second_message(&mut init, &mut resp), Ok(0));
    }

    #[test]
    fn an_all_zero_diffie_hellman_fails() {
        let r = Resolver::new(&mut rand::rngs::StdRng::seed_from_u64(1));
        let mut dh = r.resolve_dh(&DHChoice::Curve25519).unwrap();
        dh.set(&[7; 32]);
        let mut out = [0u8; 32];
        // 0 and 1 are points of small order: every scalar maps them to 0.
        for low in [[0u8; 32], {
            let mut one = [0u8; 32];
            one[0] = 1;
            one
        }] {
            assert!(matches!(dh.dh(&low, &mut out), Err(snow::Error::Dh)));
        }
        let other = crate::identity::SecretKey::from_seed([8; 32])
            .public()
            .x25519();
        dh.dh(&other, &mut out).unwrap();
        assert_ne!(out, [0; 32]);
    }

    #[test]
    fn blake2s_known_answer() {
        // RFC 7693 Appendix B: BLAKE2s-256("abc").
        let d: [u8; 32] = Blake2s256::digest(b"abc").into();
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982"
        );
    }

    #[test]
    fn the_label_after_is_the_next_nanosecond() {
        let a = tai64n(Duration::new(1_700_000_000, 5));
        assert_eq!(tai64n_after(&a), tai64n(Duration::new(1_700_000_000, 6)));
        let b = tai64n(Duration::new(1_700_000_000, 999_999_999));
        assert_eq!(tai64n_after(&b), tai64n(Duration::new(1_700_000_001, 0)));
        assert!(tai64n_after(&b) > b);
    }

    #[test]
    fn timestamps_order_like_time() {
        let a = tai64n(Duration::new(1_700_000_000, 999_999_999));
        let b = tai64n(Duration::new(1_700_000_001, 0));
        assert!(a < b);
        assert_eq!(&a[..8], &0x4000_0000_6553_f100u64.to_be_bytes());
    }

    #[test]
    fn mac_depends_on_key_and_message() {
        let k1 = mac1_key(&[1; 32]);
        let k2 = mac1_key(&[2; 32]);
        assert!(!mac_eq(&mac(&k1, b"m"), &mac(&k2, b"m")));
        assert!(!mac_eq(&mac(&k1, b"m"), &mac(&k1, b"n")));
        assert!(mac_eq(&mac(&k1, b"m"), &mac(&k1, b"m")));
    }
}
