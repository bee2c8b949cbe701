//! ChaCha20-Poly1305 (RFC 8439 §2.8) for snow's `Cipher` trait, from one
//! of three libraries: ring, aws-lc-rs, or OpenSSL through the openssl
//! crate's EVP interface. All three compute the same function; which is
//! fastest depends on the CPU (OpenSSL has AVX-512 code paths the others
//! lack), so the daemon measures them at start and picks one
//! (`daemon::aead`), with ring as the default until it does.
//!
//! Owns: the backends, the nonce layout and the process-wide choice.
//! Must not: measure anything (no clocks here: the daemon times them and
//! calls [`set_default`]).
//!
//! Flow: `noise::Resolver` asks [`Backend::cipher`] for every AEAD snow
//! needs (the handshake's and each session's two), with the backend chosen
//! when the resolver was made; snow keys it with [`Cipher::set`] and calls
//! `encrypt`/`decrypt` with a 64-bit counter, which [`nonce`] lays out as
//! WireGuard and the Noise spec do. Session code is unchanged by the choice,
//! and the backends interoperate: a peer may have picked another.
//!
//! Keys at rest: `noise::WipedCipher` keys every cipher with zeros before
//! snow drops it. What that reaches in each library:
//! - ring: the key lives inline in our struct; a new key overwrites it in
//!   place.
//! - aws-lc-rs: the key lives in an `EVP_AEAD_CTX` on AWS-LC's heap; a new
//!   key gets a new context and the old one is freed, and AWS-LC's
//!   `OPENSSL_free` overwrites every allocation with zeros before freeing it.
//! - OpenSSL: the key lives in the provider's context; a new key is
//!   written over it in place (`EVP_EncryptInit_ex` with a key and no
//!   cipher), and `EVP_CIPHER_CTX_free` clears the context
//!   (`OPENSSL_clear_free`) when it is finally dropped.
//!
//! Stack copies the libraries make while sealing (the Poly1305 one-time
//! key among them) are out of reach, as for snow's own (see `noise`).

#[cfg(feature = "aws-lc")]
mod aws_lc;
mod openssl;
mod ring;

use std::sync::atomic::{AtomicU8, Ordering};

use snow::types::Cipher;

/// ChaCha20-Poly1305 key length.
pub const KEY_LEN: usize = 32;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// RFC 8439 nonce length.
pub const NONCE_LEN: usize = 12;

/// A ChaCha20-Poly1305 implementation kith can use. aws-lc-rs is there
/// when kith is built with the `aws-lc` feature (the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Backend {
    Ring = 0,
    #[cfg(feature = "aws-lc")]
    AwsLc = 1,
    OpenSsl = 2,
}

impl Backend {
    /// Every backend this build has.
    #[cfg(feature = "aws-lc")]
    pub const ALL: &[Backend] = &[Backend::Ring, Backend::AwsLc, Backend::OpenSsl];
    /// Every backend this build has.
    #[cfg(not(feature = "aws-lc"))]
    pub const ALL: &[Backend] = &[Backend::Ring, Backend::OpenSsl];

    /// The name logs and `KITH_AEAD` use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ring => "ring",
            #[cfg(feature = "aws-lc")]
            Self::AwsLc => "aws-lc-rs",
            Self::OpenSsl => "openssl",
        }
    }

    /// A fresh cipher for snow, keyed with zeros until snow sets its key.
    pub fn cipher(self) -> Box<dyn Cipher> {
        match self {
            Self::Ring => Box::new(SnowCipher(ring::Ring::new(&[0; KEY_LEN]))),
            #[cfg(feature = "aws-lc")]
            Self::AwsLc => Box::new(SnowCipher(aws_lc::AwsLc::new(&[0; KEY_LEN]))),
            Self::OpenSsl => Box::new(SnowCipher(openssl::OpenSsl::new(&[0; KEY_LEN]))),
        }
    }

    fn from_u8(v: u8) -> Self {
        Self::ALL
            .iter()
            .copied()
            .find(|b| *b as u8 == v)
            .unwrap_or(Self::Ring)
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A backend name that is none of [`Backend::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown AEAD backend `{name}`: use ring, aws-lc-rs (if built with it) or openssl")]
pub struct UnknownBackend {
    pub name: String,
}

impl std::str::FromStr for Backend {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|b| b.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownBackend { name: s.to_owned() })
    }
}

/// The backend new handshakes use: ring until the daemon has measured.
static DEFAULT: AtomicU8 = AtomicU8::new(Backend::Ring as u8);

/// Makes `backend` the one every later handshake (and its session) uses.
/// Sessions already running keep theirs.
pub fn set_default(backend: Backend) {
    DEFAULT.store(backend as u8, Ordering::Relaxed);
}

/// The backend new handshakes use.
pub fn default_backend() -> Backend {
    Backend::from_u8(DEFAULT.load(Ordering::Relaxed))
}

/// Noise rev. 34 §12.3, ChaChaPoly: "ENCRYPT(k, n, ad, plaintext) …
/// the 96-bit nonce is formed by encoding 32 bits of zeros followed by
/// little-endian encoding of n" (as WireGuard's counter, whitepaper §5.4.6).
pub fn nonce(counter: u64) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[4..].copy_from_slice(&counter.to_le_bytes());
    nonce
}

/// A library call that failed for a reason other than a forged or
/// damaged message (OpenSSL out of memory, an unkeyed context).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Failed;

/// What each backend provides: the RFC 8439 AEAD with a whole 96-bit
/// nonce, the tag apart, from one buffer into another of the same length
/// (what snow hands over; each library copies or not as it works best).
trait Aead: Send + Sync {
    fn new(key: &[u8; KEY_LEN]) -> Self
    where
        Self: Sized;
    /// Replaces the key (see the module doc for where the old one goes).
    fn set_key(&mut self, key: &[u8; KEY_LEN]);
    /// Encrypts `plaintext` into `out` (of its length); the tag.
    fn seal(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
        out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Failed>;
    /// Checks `tag` and decrypts `ciphertext` into `out` (of its length);
    /// `Failed` for a forged or damaged message, and then `out` may hold
    /// anything (the caller wipes it).
    fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; TAG_LEN],
        out: &mut [u8],
    ) -> Result<(), Failed>;
}

/// A backend as snow sees it: the counter turned into the nonce, the tag
/// appended to the ciphertext.
struct SnowCipher<A>(A);

impl<A: Aead> Cipher for SnowCipher<A> {
    fn name(&self) -> &'static str {
        "ChaChaPoly"
    }

    fn set(&mut self, key: &[u8; KEY_LEN]) {
        self.0.set_key(key);
    }

    /// `plaintext` sealed into `out`, tag after it; its length. snow checks
    /// that `out` has room; should a library call fail anyway, `out` is
    /// wiped and the length is 0, a message no peer accepts.
    fn encrypt(&self, counter: u64, authtext: &[u8], plaintext: &[u8], out: &mut [u8]) -> usize {
        let len = plaintext.len();
        let Some(out) = out.get_mut(..len + TAG_LEN) else {
            return 0;
        };
        let (body, tag_out) = out.split_at_mut(len);
        match self.0.seal(&nonce(counter), authtext, plaintext, body) {
            Ok(tag) => {
                tag_out.copy_from_slice(&tag);
                len + TAG_LEN
            }
            Err(Failed) => {
                out.fill(0);
                0
            }
        }
    }

    fn decrypt(
        &self,
        counter: u64,
        authtext: &[u8],
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, snow::Error> {
        let len = ciphertext
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(snow::Error::Decrypt)?;
        let (body, tag) = ciphertext.split_at(len);
        let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| snow::Error::Decrypt)?;
        let out = out.get_mut(..len).ok_or(snow::Error::Decrypt)?;
        self.0
            .open(&nonce(counter), authtext, body, tag, out)
            .map(|()| len)
            .map_err(|Failed| {
                out.fill(0);
                snow::Error::Decrypt
            })
    }
}

#[cfg(test)]
mod tests;
