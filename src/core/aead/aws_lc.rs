//! aws-lc-rs's ChaCha20-Poly1305 (AWS-LC, BoringSSL's descendant: the same
//! SSSE3/AVX2 assembly family as ring, with its own CPU detection). Opening
//! reads the ciphertext and writes the plaintext elsewhere in one pass.
//!
//! Keys at rest: the key schedule lives in an `EVP_AEAD_CTX` that AWS-LC
//! allocated; a new key gets a new context and the old one is freed with
//! `EVP_AEAD_CTX_free`, whose `OPENSSL_free` overwrites the allocation with
//! zeros first.

use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use super::{Aead, Failed, KEY_LEN, NONCE_LEN, TAG_LEN};

/// `None` when AWS-LC could not make a context (out of memory): every seal
/// and open then fails.
pub(super) struct AwsLc(Option<LessSafeKey>);

fn key(bytes: &[u8; KEY_LEN]) -> Option<LessSafeKey> {
    UnboundKey::new(&CHACHA20_POLY1305, bytes)
        .ok()
        .map(LessSafeKey::new)
}

impl Aead for AwsLc {
    fn new(bytes: &[u8; KEY_LEN]) -> Self {
        Self(key(bytes))
    }

    fn set_key(&mut self, bytes: &[u8; KEY_LEN]) {
        // The old context is freed (and cleared) before the new one is made.
        self.0 = None;
        self.0 = key(bytes);
    }

    fn seal(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Failed> {
        let key = self.0.as_ref().ok_or(Failed)?;
        let tag = key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), buf)
            .map_err(|_| Failed)?;
        tag.as_ref().try_into().map_err(|_| Failed)
    }

    fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Failed> {
        let key = self.0.as_ref().ok_or(Failed)?;
        key.open_in_place_separate_tag(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(aad),
            tag,
            buf,
        )
        .map(drop)
        .map_err(|_| Failed)
    }

    fn open_into(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; TAG_LEN],
        out: &mut [u8],
    ) -> Result<(), Failed> {
        let key = self.0.as_ref().ok_or(Failed)?;
        key.open_separate_gather(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(aad),
            ciphertext,
            tag,
            out,
        )
        .map_err(|_| Failed)
    }
}
