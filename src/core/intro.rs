//! Introductions ("call me now"): what a node signs when it asks a mutual
//! peer to pass its current record to a peer it cannot reach yet, and how
//! the target checks it. Sans-IO; the frames are in [`crate::wire`] (relay),
//! the sending and passing on in the node.
//!
//! The mutual peer authenticates the sender on its own session and names it
//! in the frame it passes on, but the target does not have to trust it: the
//! record is signed by the sender's Ed25519 key over a domain string, the
//! target's key and the record bytes, so a member can neither forge another
//! member's candidates nor redirect an introduction meant for someone else.
//! A replayed introduction carries an old record: the target refuses one
//! older than the last it acted on, and discovery one older than the
//! record it holds; the same record is acted on at most once per
//! [`INTRO_DEDUPE`] (the sender's own retries, or a mutual peer replaying
//! it, cost at most one handshake a second).

use std::time::Duration;

use ed25519_dalek::{Signature, Signer, VerifyingKey};

use crate::identity::{PublicKey, SecretKey};
use crate::wire::{INTRO_SIGNATURE_LEN, Introduction};

/// Separates introduction signatures from every other use of the key (the
/// DHT's BEP 44 items sign bencoded bytes that never start like this).
const DOMAIN: &[u8] = b"kith introduction v1";

/// At most one introduction to each target per this interval: the handshake
/// retries that trigger them come faster at first.
pub const INTRO_EVERY: Duration = Duration::from_secs(2);

/// A target acts on one copy of a sender's record per this interval (a
/// mutual peer replaying one cannot make it initiate in a loop); a changed
/// record is acted on at once.
pub const INTRO_DEDUPE: Duration = Duration::from_secs(1);

/// What a mutual peer passes on for each sender, bytes per second: a few
/// introductions a second, never a channel for data.
pub const INTRO_PASS_RATE: u64 = 16 * 1024;

fn signable(target: &PublicKey, record: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 32 + record.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(target.as_bytes());
    m.extend_from_slice(record);
    m
}

/// `payload` is an introduction as `wire::emit_introduction` wrote it (any
/// signature): sign its record for `target` in place.
pub fn sign(secret: &SecretKey, target: &PublicKey, payload: &mut [u8]) {
    if payload.len() <= INTRO_SIGNATURE_LEN {
        return;
    }
    let (sig, record) = payload.split_at_mut(INTRO_SIGNATURE_LEN);
    let s = secret.signing_key().sign(&signable(target, record));
    sig.copy_from_slice(&s.to_bytes());
}

/// Did `sender` sign this introduction for `target`?
pub fn verify(sender: &PublicKey, target: &PublicKey, intro: &Introduction<'_>) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(sender.as_bytes()) else {
        return false;
    };
    key.verify_strict(
        &signable(target, intro.record),
        &Signature::from_bytes(&intro.signature),
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{MAX_INTRODUCTION_LEN, RecordBody, emit_introduction, parse_introduction};

    fn signed(secret: &SecretKey, target: &PublicKey) -> Vec<u8> {
        let body = RecordBody {
            timestamp: 1_700_000_000,
            ..RecordBody::default()
        };
        let mut out = vec![0u8; MAX_INTRODUCTION_LEN];
        let n = emit_introduction(&[0; 64], &body, &mut out).unwrap();
        out.truncate(n);
        sign(secret, target, &mut out);
        out
    }

    #[test]
    fn only_the_sender_for_that_target_verifies() {
        let a = SecretKey::from_seed([1; 32]);
        let b = SecretKey::from_seed([2; 32]).public();
        let c = SecretKey::from_seed([3; 32]).public();
        let payload = signed(&a, &b);
        let intro = parse_introduction(&payload).unwrap();
        assert!(verify(&a.public(), &b, &intro));
        // Meant for b: passed to c instead, or claimed by c.
        assert!(!verify(&a.public(), &c, &intro));
        assert!(!verify(&c, &b, &intro));
        // Any change to the record breaks it.
        let mut tampered = payload.clone();
        *tampered.last_mut().unwrap() ^= 1;
        if let Ok(t) = parse_introduction(&tampered) {
            assert!(!verify(&a.public(), &b, &t));
        }
        let mut ts = payload;
        ts[64 + 5] ^= 1; // the timestamp
        assert!(!verify(&a.public(), &b, &parse_introduction(&ts).unwrap()));
    }
}
