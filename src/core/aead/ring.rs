//! ring's ChaCha20-Poly1305 (BoringSSL's assembly: SSSE3 and AVX2 paths,
//! chosen by ring's own CPU detection). The key lives inline in
//! `LessSafeKey` ("less safe": nonce uniqueness is ours to keep, which
//! snow's counter does), so a new key overwrites the old one in place.

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, Tag, UnboundKey};

use super::{Aead, Failed, KEY_LEN, NONCE_LEN, TAG_LEN};

pub(super) struct Ring(LessSafeKey);

fn key(bytes: &[u8; KEY_LEN]) -> LessSafeKey {
    // ring refuses only a key of the wrong length, and this one is 32 bytes.
    LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, bytes)
            .unwrap_or_else(|_| unreachable!("a 32-byte ChaCha20-Poly1305 key")),
    )
}

impl Aead for Ring {
    fn new(bytes: &[u8; KEY_LEN]) -> Self {
        Self(key(bytes))
    }

    fn set_key(&mut self, bytes: &[u8; KEY_LEN]) {
        self.0 = key(bytes);
    }

    fn seal(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Failed> {
        let tag = self
            .0
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
        self.0
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                Tag::from(*tag),
                buf,
                0..,
            )
            .map(drop)
            .map_err(|_| Failed)
    }
}
