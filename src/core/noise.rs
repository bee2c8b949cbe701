//! The Noise handshake as kith uses it: `Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s`
//! (Noise spec rev. 34, §7.5 IK and §9 psk modifiers), plus the MAC that lets
//! a responder drop junk before any Diffie-Hellman.
//!
//! Randomness is handed in: every handshake gets its own resolver whose RNG
//! is seeded from the node's RNG, so a simulation with a fixed seed is
//! reproducible, while the daemon seeds the node from the OS.

use blake2::digest::{Mac, consts::U16};
use blake2::{Blake2s256, Blake2sMac, Digest};
use rand::RngCore;
use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver, RingResolver};
use snow::types::{Cipher, Dh, Hash, Random};

use crate::wire::MAC_LEN;

pub const NOISE_PATTERN: &str = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/// Prologue binds the handshake to this protocol and version.
pub const PROLOGUE: &[u8] = b"kith v1";
/// Label for the mac1 key, as WireGuard's `LABEL_MAC1` (whitepaper §5.4.4).
const LABEL_MAC1: &[u8] = b"mac1----";
/// Length of the handshake timestamp payload (TAI64N).
pub const TIMESTAMP_LEN: usize = 12;

pub fn params() -> NoiseParams {
    // A constant, known-good pattern string: parsing cannot fail.
    NOISE_PATTERN
        .parse()
        .unwrap_or_else(|_| unreachable!("static Noise pattern"))
}

struct SeededRandom(rand::rngs::StdRng);

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

/// ring for the AEAD (≈3× the pure-Rust one), the default resolver for
/// X25519 and BLAKE2s, and our own seeded RNG for ephemeral keys.
pub struct Resolver {
    seed: std::sync::Mutex<Option<[u8; 32]>>,
}

impl Resolver {
    pub fn new(rng: &mut impl RngCore) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        Self {
            seed: std::sync::Mutex::new(Some(seed)),
        }
    }
}

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        use rand::SeedableRng;
        let seed = self.seed.lock().ok()?.take()?;
        Some(Box::new(SeededRandom(rand::rngs::StdRng::from_seed(seed))))
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        Some(Box::new(NonZeroDh(DefaultResolver.resolve_dh(choice)?)))
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        RingResolver
            .resolve_cipher(choice)
            .or_else(|| DefaultResolver.resolve_cipher(choice))
    }
}

/// snow's X25519, refusing an all-zero result (a low-order point from the
/// other side, e.g. a forged ephemeral key): the handshake then fails as
/// WireGuard's does, instead of mixing a key anyone can compute.
struct NonZeroDh(Box<dyn Dh>);

impl Dh for NonZeroDh {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn pub_len(&self) -> usize {
        self.0.pub_len()
    }
    fn priv_len(&self) -> usize {
        self.0.priv_len()
    }
    fn set(&mut self, privkey: &[u8]) {
        self.0.set(privkey)
    }
    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        self.0.generate(rng)
    }
    fn pubkey(&self) -> &[u8] {
        self.0.pubkey()
    }
    fn privkey(&self) -> &[u8] {
        self.0.privkey()
    }
    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        self.0.dh(pubkey, out)?;
        let n = self.dh_len().min(out.len());
        // Constant time: the result is a secret.
        if out[..n].iter().fold(0u8, |acc, b| acc | b) == 0 {
            return Err(snow::Error::Dh);
        }
        Ok(())
    }
    fn dh_len(&self) -> usize {
        self.0.dh_len()
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
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_all_zero_diffie_hellman_fails() {
        use rand::SeedableRng as _;
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
