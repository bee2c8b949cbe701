//! Node identity: one Ed25519 key pair per node.
//!
//! The public key (base64, 44 characters) names a peer everywhere: in the
//! config, in logs, in the CLI and (later) in the DHT. The Noise static key is
//! the X25519 form of the same key (the Ed25519 → X25519 birational map, as
//! libsodium's `crypto_sign_ed25519_*_to_curve25519`), so a single secret
//! serves both the handshake and signed records.
//!
//! Owns: key encoding/decoding and the X25519 conversion. Must not: read files
//! (the config and CLI do that) or generate randomness it was not handed.
//!
//! Secrets at rest: the seed lives in `ed25519_dalek::SigningKey`, which
//! zeroizes it when dropped; everything derived from it or decoded on the
//! way (the X25519 scalar, the base64 text's bytes) is handed out in
//! [`Zeroizing`] buffers, and [`NetworkSecret`] zeroizes itself.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{SigningKey, VerifyingKey};
use zeroize::{Zeroize, Zeroizing};

/// Errors decoding a key from its base64 text form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not valid base64 (expected 44 characters of standard base64)")]
    Base64,
    #[error("decodes to {len} bytes, a key is 32 bytes")]
    Length { len: usize },
    #[error("not a valid Ed25519 public key (not a point on the curve)")]
    NotOnCurve,
    #[error(
        "a low-order point, not a real public key (every Diffie-Hellman with it gives the same \
         result)"
    )]
    LowOrder,
}

/// The 32 bytes a key's base64 text stands for. The decoded bytes may be a
/// secret: the buffers they pass through are zeroized.
pub(crate) fn decode32(text: &str) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let bytes = Zeroizing::new(B64.decode(text.trim()).map_err(|_| KeyError::Base64)?);
    let mut out = Zeroizing::new([0u8; 32]);
    if bytes.len() != out.len() {
        return Err(KeyError::Length { len: bytes.len() });
    }
    out.copy_from_slice(&bytes);
    Ok(out)
}

/// The secret half: the 32-byte Ed25519 seed.
#[derive(Clone)]
pub struct SecretKey {
    signing: SigningKey,
}

impl SecretKey {
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let seed = random32()?;
        Ok(Self::from_seed(*seed))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            ed: self.signing.verifying_key().to_bytes(),
        }
    }

    /// The X25519 private scalar used as the Noise static key.
    pub fn x25519(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_scalar_bytes())
    }

    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The base64 text written to a private key file.
    pub fn to_base64(&self) -> String {
        B64.encode(*self.seed())
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }
}

impl FromStr for SecretKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode32(s).map(|seed| Self::from_seed(*seed))
    }
}

impl fmt::Debug for SecretKey {
    // Never print the secret, not even in debug logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public={})", self.public())
    }
}

/// 32 bytes from the operating system's CSPRNG, for a key or a secret.
pub fn random32() -> Result<Zeroizing<[u8; 32]>, getrandom::Error> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut *bytes)?;
    Ok(bytes)
}

/// The network secret: the psk2 of every handshake and a key of the DHT
/// records (all zeros when the network has none). `Debug` never shows it,
/// so a config or settings struct can be logged whole; it is zeroized when
/// dropped.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NetworkSecret(pub [u8; 32]);

impl NetworkSecret {
    /// The text of a secret file: standard base64, 44 characters.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(B64.encode(self.0))
    }
}

impl FromStr for NetworkSecret {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode32(s).map(|bytes| Self(*bytes))
    }
}

impl Drop for NetworkSecret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for NetworkSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NetworkSecret(redacted)")
    }
}

/// A peer's name: its Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey {
    ed: [u8; 32],
}

impl PublicKey {
    /// Accepts only encodings of points on the curve, so a typo in a config
    /// fails at load time rather than as a silent handshake failure, and
    /// none of small order: its X25519 form would make the static-key
    /// Diffie-Hellman results all zero, whoever holds the other key.
    pub fn from_bytes(ed: [u8; 32]) -> Result<Self, KeyError> {
        let vk = VerifyingKey::from_bytes(&ed).map_err(|_| KeyError::NotOnCurve)?;
        if vk.is_weak() {
            return Err(KeyError::LowOrder);
        }
        Ok(Self { ed: vk.to_bytes() })
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.ed
    }

    /// The X25519 public key the peer uses as its Noise static key.
    pub fn x25519(&self) -> [u8; 32] {
        // `from_bytes` guaranteed the point decodes.
        match VerifyingKey::from_bytes(&self.ed) {
            Ok(vk) => vk.to_montgomery().to_bytes(),
            Err(_) => [0u8; 32],
        }
    }

    /// First 8 characters of the base64 form: enough to tell peers apart in logs.
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(8);
        s
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::from_bytes(*decode32(s)?)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&B64.encode(self.ed))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self)
    }
}

/// Test hook for secrets at rest: the bytes `value` occupies while alive,
/// and the same bytes again after its destructor ran (its storage is still
/// there, and is what a later reader of freed memory would find). For types
/// without padding, so that every byte read is initialized.
#[cfg(test)]
pub(crate) fn bytes_before_and_after_drop<T>(value: T) -> (Vec<u8>, Vec<u8>) {
    let mut slot = std::mem::ManuallyDrop::new(value);
    let at: *mut T = &mut *slot;
    let len = std::mem::size_of::<T>();
    // SAFETY: `at` points at the `len` initialized bytes of `slot`, which
    // lives on this frame; dropping in place runs the destructor once and
    // leaves the storage (never dropped again: ManuallyDrop) readable.
    unsafe {
        let before = std::slice::from_raw_parts(at.cast::<u8>(), len).to_vec();
        std::ptr::drop_in_place(at);
        let after = std::slice::from_raw_parts(at.cast::<u8>(), len).to_vec();
        (before, after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `needle` occurs in `haystack`.
    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn a_private_key_is_zeroized_when_dropped() {
        // ed25519-dalek's SigningKey (with its `zeroize` feature, on by
        // default) wipes the seed it holds.
        let seed = [0x3c; 32];
        let (before, after) = bytes_before_and_after_drop(SecretKey::from_seed(seed));
        assert!(contains(&before, &seed), "positive control");
        assert!(!contains(&after, &seed[..8]), "{after:02x?}");
    }

    #[test]
    fn a_network_secret_is_zeroized_when_dropped() {
        let secret = [0x5a; 32];
        let (before, after) = bytes_before_and_after_drop(NetworkSecret(secret));
        assert!(contains(&before, &secret), "positive control");
        assert!(!contains(&after, &secret[..8]), "{after:02x?}");
    }

    #[test]
    fn a_network_secret_reads_and_writes_the_secret_file_text() {
        let s = NetworkSecret([7; 32]);
        let text = s.to_base64();
        assert_eq!(text.len(), 44);
        assert_eq!(text.parse::<NetworkSecret>(), Ok(NetworkSecret([7; 32])));
        assert_eq!(
            "AAAA".parse::<NetworkSecret>(),
            Err(KeyError::Length { len: 3 })
        );
    }

    #[test]
    fn low_order_keys_are_refused() {
        // The identity point and a point of order 2, as Ed25519 encodings.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut order2 = [0xffu8; 32];
        order2[0] = 0xec;
        order2[31] = 0x7f;
        for ed in [identity, order2] {
            assert_eq!(PublicKey::from_bytes(ed).err(), Some(KeyError::LowOrder));
            let text = B64.encode(ed);
            assert_eq!(text.parse::<PublicKey>().err(), Some(KeyError::LowOrder));
        }
        assert!(PublicKey::from_bytes(*SecretKey::from_seed([5; 32]).public().as_bytes()).is_ok());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let seed = [0xab; 32];
        let sk = SecretKey::from_seed(seed);
        let cfg = crate::config::Network {
            id: Some("home".into()),
            secret: Some(NetworkSecret(seed)),
        };
        for shown in [format!("{sk:?}"), format!("{cfg:?}")] {
            assert!(!shown.contains("171"), "{shown}");
            assert!(!shown.to_lowercase().contains("abab"), "{shown}");
            assert!(!shown.contains(&sk.to_base64()), "{shown}");
        }
        assert!(format!("{cfg:?}").contains("redacted"));
    }

    #[test]
    fn base64_round_trip_and_length() {
        let sk = SecretKey::from_seed([7u8; 32]);
        let text = sk.to_base64();
        assert_eq!(text.len(), 44);
        let back: SecretKey = text.parse().unwrap();
        assert_eq!(back.public(), sk.public());
        let pk_text = sk.public().to_string();
        assert_eq!(pk_text.len(), 44);
        assert_eq!(pk_text.parse::<PublicKey>().unwrap(), sk.public());
    }

    #[test]
    fn rejects_bad_text() {
        assert_eq!("not base64!".parse::<PublicKey>(), Err(KeyError::Base64));
        assert_eq!(
            "AAAA".parse::<PublicKey>(),
            Err(KeyError::Length { len: 3 })
        );
    }

    #[test]
    fn x25519_forms_agree() {
        // A Noise NK handshake succeeds only if the X25519 public key derived
        // from the Ed25519 public matches the scalar derived from the seed:
        // otherwise two correctly configured peers could never connect.
        let sk = SecretKey::from_seed([42u8; 32]);
        let params: snow::params::NoiseParams =
            "Noise_NK_25519_ChaChaPoly_BLAKE2s".parse().unwrap();
        let scalar = sk.x25519();
        let remote = sk.public().x25519();
        let mut init = snow::Builder::new(params.clone())
            .remote_public_key(&remote)
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut resp = snow::Builder::new(params)
            .local_private_key(&*scalar)
            .unwrap()
            .build_responder()
            .unwrap();
        let (mut m1, mut p) = ([0u8; 128], [0u8; 128]);
        let n = init.write_message(b"hi", &mut m1).unwrap();
        let k = resp.read_message(&m1[..n], &mut p).unwrap();
        assert_eq!(&p[..k], b"hi");
        // A different key must fail.
        let other = SecretKey::from_seed([43u8; 32]).x25519();
        let mut init2 = snow::Builder::new("Noise_NK_25519_ChaChaPoly_BLAKE2s".parse().unwrap())
            .remote_public_key(&SecretKey::from_seed([43u8; 32]).public().x25519())
            .unwrap()
            .build_initiator()
            .unwrap();
        let _ = other;
        let mut resp2 = snow::Builder::new("Noise_NK_25519_ChaChaPoly_BLAKE2s".parse().unwrap())
            .local_private_key(&*scalar)
            .unwrap()
            .build_responder()
            .unwrap();
        let n = init2.write_message(b"hi", &mut m1).unwrap();
        assert!(resp2.read_message(&m1[..n], &mut p).is_err());
    }
}
