//! ChaCha20-Poly1305 (RFC 8439 §2.8) for the handshake (snow's `Cipher`
//! trait) and for sessions ([`DataKey`], in place), from one
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
//! Flow: `noise::Resolver` asks [`Backend::cipher`] for the handshake's
//! AEAD, with the backend chosen when the resolver was made; snow keys it
//! with [`Cipher::set`] and calls `encrypt`/`decrypt` with a 64-bit
//! counter, which [`nonce`] lays out as WireGuard and the Noise spec do.
//! A finished handshake's two transport keys become [`DataKey`]s of the
//! same backend (`noise::Handshake::into_transport`), which a session
//! seals with directly, in place, and opens from the datagram into the TUN
//! buffer, with the same nonce layout.
//! Session code is unchanged by the choice, and the backends interoperate:
//! a peer may have picked another.
//!
//! Keys at rest: `noise::WipedCipher` keys every snow cipher with zeros
//! before snow drops it, and a [`DataKey`] does the same to itself when it
//! is dropped. What that reaches in each library:
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
        Box::new(SnowCipher(self.aead(&[0; KEY_LEN])))
    }

    fn aead(self, key: &[u8; KEY_LEN]) -> Box<dyn Aead> {
        match self {
            Self::Ring => Box::new(ring::Ring::new(key)),
            #[cfg(feature = "aws-lc")]
            Self::AwsLc => Box::new(aws_lc::AwsLc::new(key)),
            Self::OpenSsl => Box::new(openssl::OpenSsl::new(key)),
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

/// A sealed message's ciphertext and the tag after it; `None` when it is
/// too short to hold a tag.
pub fn split_tag(sealed: &[u8]) -> Option<(&[u8], &[u8; TAG_LEN])> {
    let (body, tag) = sealed.split_at(sealed.len().checked_sub(TAG_LEN)?);
    Some((body, tag.try_into().ok()?))
}

/// A message that did not open (forged or damaged), or a library call
/// that failed for another reason (OpenSSL out of memory, an unkeyed
/// context).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed;

/// What each backend provides: the RFC 8439 AEAD with a whole 96-bit
/// nonce, the tag apart, in place (every library's fastest form: the data
/// plane seals a packet where it already lies in the send buffer).
trait Aead: Send + Sync {
    fn new(key: &[u8; KEY_LEN]) -> Self
    where
        Self: Sized;
    /// Replaces the key (see the module doc for where the old one goes).
    fn set_key(&mut self, key: &[u8; KEY_LEN]);
    /// Encrypts `buf` in place; the tag.
    fn seal(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Failed>;
    /// Checks `tag` and decrypts `buf` in place; `Failed` for a forged or
    /// damaged message, and then `buf` may hold anything (the caller
    /// wipes it).
    fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Failed>;
    /// As [`open`](Self::open), from `ciphertext` into `out` (of its
    /// length): a received datagram has to end up in another buffer
    /// anyway, and a library that decrypts from one buffer into another
    /// does that copy as part of the decryption.
    fn open_into(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; TAG_LEN],
        out: &mut [u8],
    ) -> Result<(), Failed> {
        out.copy_from_slice(ciphertext);
        self.open(nonce, aad, out, tag)
    }
}

/// One direction of a session: its transport key, used directly with
/// snow's nonce layout and no associated data (what snow's stateless
/// transport mode does, so peers interoperate), sealing in place and
/// opening into another buffer. The key is set to zeros when it is dropped (see the module doc
/// for what that reaches).
pub struct DataKey(Box<dyn Aead>);

impl DataKey {
    pub fn new(backend: Backend, key: &[u8; KEY_LEN]) -> Self {
        Self(backend.aead(key))
    }

    /// Encrypts `buf` in place with `counter` (used once); the tag.
    pub fn seal(&self, counter: u64, buf: &mut [u8]) -> Result<[u8; TAG_LEN], Failed> {
        self.0.seal(&nonce(counter), &[], buf)
    }

    /// Checks `tag` and decrypts `ciphertext` into `out`, which must be as
    /// long (a received datagram has to end up in another buffer anyway);
    /// a forged or damaged message leaves `out` zeroed.
    pub fn open_into(
        &self,
        counter: u64,
        ciphertext: &[u8],
        tag: &[u8; TAG_LEN],
        out: &mut [u8],
    ) -> Result<(), Failed> {
        if out.len() != ciphertext.len() {
            return Err(Failed);
        }
        self.0
            .open_into(&nonce(counter), &[], ciphertext, tag, out)
            .inspect_err(|_| out.fill(0))
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        self.0.set_key(&[0; KEY_LEN]);
        // The zeroing must not be elided as a dead store before the free.
        std::hint::black_box(&*self.0);
    }
}

/// A session's two keys.
pub struct SessionKeys {
    pub send: DataKey,
    pub recv: DataKey,
}

/// A backend as snow sees it (the handshake's messages): the counter
/// turned into the nonce, the tag appended to the ciphertext.
struct SnowCipher(Box<dyn Aead>);

impl Cipher for SnowCipher {
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
        body.copy_from_slice(plaintext);
        match self.0.seal(&nonce(counter), authtext, body) {
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
        let (body, tag) = split_tag(ciphertext).ok_or(snow::Error::Decrypt)?;
        let len = body.len();
        let out = out.get_mut(..len).ok_or(snow::Error::Decrypt)?;
        self.0
            .open_into(&nonce(counter), authtext, body, tag, out)
            .map(|()| len)
            .map_err(|Failed| {
                out.fill(0);
                snow::Error::Decrypt
            })
    }
}

#[cfg(test)]
mod tests;
