//! OpenSSL's ChaCha20-Poly1305 through the EVP interface (the system's
//! libssl, OpenSSL 3 on Debian 12), which has AVX-512 ChaCha20 and
//! Poly1305 code that ring and AWS-LC lack; OpenSSL picks its code path
//! from the CPU at run time.
//!
//! An `EVP_CIPHER_CTX` holds per-message state, so each message takes the
//! context's lock: uncontended (each direction of a session has its own
//! `DataKey`), it costs two atomic operations against ~0.7 µs of
//! cryptography for a 1420-byte packet. The key is set once and each
//! message only sets the IV, which in OpenSSL's provider restarts the
//! AEAD (new Poly1305 key, lengths and tag reset).
//!
//! Keys at rest: a new key is written over the old one inside the
//! provider's context; freeing the context (`EVP_CIPHER_CTX_free`) clears
//! it with `OPENSSL_clear_free`.

use std::sync::{Mutex, PoisonError};

use openssl::cipher::Cipher;
use openssl::cipher_ctx::CipherCtx;
use openssl::error::ErrorStack;

use super::{Aead, Failed, KEY_LEN, NONCE_LEN, TAG_LEN};

/// `None` when OpenSSL could not make or key a context (out of memory):
/// every seal and open then fails, so nothing is sent or accepted with a
/// key we do not hold.
pub(super) struct OpenSsl(Option<Mutex<CipherCtx>>);

fn context(key: &[u8; KEY_LEN]) -> Option<Mutex<CipherCtx>> {
    let mut ctx = CipherCtx::new().ok()?;
    ctx.encrypt_init(Some(Cipher::chacha20_poly1305()), Some(key), None)
        .ok()?;
    Some(Mutex::new(ctx))
}

impl OpenSsl {
    /// The context, locked. A panic while it was held (none of the calls
    /// below panics) leaves nothing half-done that the next message's IV
    /// does not reset.
    fn locked(&self) -> Result<std::sync::MutexGuard<'_, CipherCtx>, Failed> {
        let ctx = self.0.as_ref().ok_or(Failed)?;
        Ok(ctx.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// One message opened: `update` decrypts its body (in place or into
    /// another buffer). EVP_DecryptFinal checks the tag: a forgery fails
    /// there, after the update wrote its unauthenticated plaintext, which
    /// the caller wipes.
    fn decrypt(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        tag: &[u8; TAG_LEN],
        update: impl FnOnce(&mut CipherCtx) -> Result<usize, ErrorStack>,
    ) -> Result<(), Failed> {
        let mut ctx = self.locked()?;
        ctx.decrypt_init(None, None, Some(nonce))
            .and_then(|()| ctx.set_tag(tag))
            .and_then(|()| ctx.cipher_update(aad, None))
            .and_then(|_| update(&mut ctx))
            .and_then(|_| ctx.cipher_final(&mut []))
            .map(drop)
            .map_err(|_| Failed)
    }
}

impl Aead for OpenSsl {
    fn new(key: &[u8; KEY_LEN]) -> Self {
        Self(context(key))
    }

    fn set_key(&mut self, key: &[u8; KEY_LEN]) {
        let rekeyed = self.0.as_mut().is_some_and(|ctx| {
            ctx.get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .encrypt_init(None, Some(key), None)
                .is_ok()
        });
        if !rekeyed {
            // Drops (and so clears) the old context first.
            self.0 = None;
            self.0 = context(key);
        }
    }

    fn seal(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Failed> {
        let mut ctx = self.locked()?;
        let mut tag = [0u8; TAG_LEN];
        // A stream cipher: the update writes as many bytes as it reads
        // (in place, which EVP allows when input and output are the same
        // buffer), and EVP_EncryptFinal writes none, so an empty buffer is
        // enough.
        let len = buf.len();
        ctx.encrypt_init(None, None, Some(nonce))
            .and_then(|()| ctx.cipher_update(aad, None))
            .and_then(|_| ctx.cipher_update_inplace(buf, len))
            .and_then(|_| ctx.cipher_final(&mut []))
            .and_then(|_| ctx.tag(&mut tag))
            .map_err(|_| Failed)?;
        Ok(tag)
    }

    fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Failed> {
        let len = buf.len();
        self.decrypt(nonce, aad, tag, |ctx| ctx.cipher_update_inplace(buf, len))
    }

    fn open_into(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; TAG_LEN],
        out: &mut [u8],
    ) -> Result<(), Failed> {
        self.decrypt(nonce, aad, tag, |ctx| {
            ctx.cipher_update(ciphertext, Some(out))
        })
    }
}
