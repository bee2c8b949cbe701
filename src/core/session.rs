//! One established Noise session: transport keys, send counter, replay window.
//!
//! Datagram transport (Noise spec §11.4 "out-of-order transport messages"):
//! the nonce travels in the packet as the 64-bit counter, and each message
//! is sealed with it explicitly, as snow's stateless transport mode would,
//! but in place: the handshake's Split() keys go to two [`DataKey`]s
//! (`noise::Handshake::into_transport`), so a packet is encrypted where it
//! lies in the datagram (the data plane writes TUN segments straight there;
//! other callers copy it in once). The replay window is checked
//! before and marked after decryption (boringtun's order).
//!
//! The keys are set to zeros when a dropped session drops them.
//!
//! A [`Session`] is a handle both halves of the node hold at once (see
//! `core::data`): the data plane seals and opens on it, the control plane
//! seals its control messages on it and decides when it is replaced. So
//! the send counter is an atomic from which every sealer reserves numbers
//! ([`Session::reserve`]: a data-plane worker a block at a time, the
//! control plane one per message), never one twice, and the replay window
//! sits behind a mutex, locked once per opened packet and uncontended in
//! practice: a session receives on one thread at a time except while a
//! path moves between the data plane and the control plane.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::aead::{self, DataKey, SessionKeys};
use super::replay::ReplayWindow;
use super::timers::{REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME, scaled};
use crate::wire::{self, DATA_HEADER_LEN, TAG_LEN};

/// Plaintext is padded to a multiple of this to blur packet sizes
/// (WireGuard whitepaper §5.4.6).
pub const PAD_TO: usize = 16;
/// One data message's framing: header, tag, padding.
pub const SEAL_OVERHEAD: usize = DATA_HEADER_LEN + TAG_LEN + PAD_TO;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("counter {0} replayed or outside the window")]
    Replay(u64),
    #[error("authentication failed")]
    Decrypt,
    #[error("session expired")]
    Expired,
    #[error("output buffer too small")]
    Buffer,
}

/// Copies `payload` to where [`Session::seal_in_place`] seals it in `out`
/// (behind the data header); its length.
pub fn stage(payload: &[u8], out: &mut [u8]) -> Result<usize, SessionError> {
    let body = out
        .get_mut(DATA_HEADER_LEN..DATA_HEADER_LEN + payload.len())
        .ok_or(SessionError::Buffer)?;
    body.copy_from_slice(payload);
    Ok(payload.len())
}

/// A cheap handle (an `Arc`): clones are the same session.
#[derive(Clone)]
pub struct Session(Arc<Inner>);

pub struct Inner {
    pub local_index: u32,
    pub remote_index: u32,
    send: DataKey,
    recv: DataKey,
    /// The next counter to send; may pass REJECT_AFTER_MESSAGES, after
    /// which nothing is sealed.
    send_counter: AtomicU64,
    replay: Mutex<ReplayWindow>,
    pub created: Instant,
    /// We sent the initiation that made this session.
    pub initiator: bool,
}

impl std::ops::Deref for Session {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("send_counter", &self.messages_sent())
            .field("initiator", &self.initiator)
            .finish()
    }
}

impl Session {
    pub fn new(
        local_index: u32,
        remote_index: u32,
        keys: SessionKeys,
        created: Instant,
        initiator: bool,
    ) -> Self {
        Self(Arc::new(Inner {
            local_index,
            remote_index,
            send: keys.send,
            recv: keys.recv,
            send_counter: AtomicU64::new(0),
            replay: Mutex::new(ReplayWindow::default()),
            created,
            initiator,
        }))
    }

    /// The same session (not merely equal keys).
    pub fn same(&self, other: &Session) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    pub fn age(&self, now: Instant) -> std::time::Duration {
        now.saturating_duration_since(self.created)
    }

    /// Usable for sending and receiving at `now`.
    pub fn is_valid(&self, now: Instant) -> bool {
        self.age(now) < scaled(REJECT_AFTER_TIME) && self.messages_sent() < REJECT_AFTER_MESSAGES
    }

    pub fn messages_sent(&self) -> u64 {
        self.send_counter.load(Ordering::Relaxed)
    }

    /// Reserves `n` consecutive send counters in one atomic step; the
    /// first. Numbers are never handed out twice, whichever threads
    /// reserve; one reserved and not used (a batch that ended early, a
    /// failed seal) costs nothing: the receiver's window skips it.
    pub fn reserve(&self, n: u64) -> u64 {
        self.send_counter.fetch_add(n, Ordering::Relaxed)
    }

    /// Seal `payload` as [`seal_in_place`](Self::seal_in_place) does,
    /// after copying it to where that seals (the one copy of the payload).
    pub fn seal_padded(
        &self,
        now: Instant,
        counter: u64,
        payload: &[u8],
        limit: usize,
        out: &mut [u8],
    ) -> Result<usize, SessionError> {
        let len = stage(payload, out)?;
        self.seal_in_place(now, counter, out, len, limit)
    }

    /// Seal the `len` payload bytes at `buf[DATA_HEADER_LEN..]` where they
    /// lie, with `counter` (reserved with [`reserve`](Self::reserve), used
    /// once), padded with zeros to a multiple of [`PAD_TO`] but never past
    /// `limit` (the interface MTU: a packet that fills it must not grow
    /// past what the path was sized for; WireGuard §5.4.6 does the same):
    /// `buf` then starts with a complete data message; its length. An
    /// expired session leaves `buf` untouched, so the caller still has the
    /// packet to queue.
    pub fn seal_in_place(
        &self,
        now: Instant,
        counter: u64,
        buf: &mut [u8],
        len: usize,
        limit: usize,
    ) -> Result<usize, SessionError> {
        if self.age(now) >= scaled(REJECT_AFTER_TIME) || counter >= REJECT_AFTER_MESSAGES {
            return Err(SessionError::Expired);
        }
        let padded = len.next_multiple_of(PAD_TO).min(limit).max(len);
        let total = DATA_HEADER_LEN + padded + TAG_LEN;
        if buf.len() < total {
            return Err(SessionError::Buffer);
        }
        wire::emit_data_header(buf, self.remote_index, counter)
            .map_err(|_| SessionError::Buffer)?;
        let (body, tag) = buf[DATA_HEADER_LEN..total].split_at_mut(padded);
        body[len..].fill(0);
        match self.send.seal(counter, body) {
            Ok(t) => tag.copy_from_slice(&t),
            Err(_) => {
                // Nothing half-sealed leaves: the caller drops the packet.
                body.fill(0);
                return Err(SessionError::Buffer);
            }
        }
        Ok(total)
    }

    /// Authenticate and decrypt; returns the plaintext length written to `out`.
    pub fn decrypt(
        &self,
        now: Instant,
        counter: u64,
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, SessionError> {
        if self.age(now) >= scaled(REJECT_AFTER_TIME) || counter >= REJECT_AFTER_MESSAGES {
            return Err(SessionError::Expired);
        }
        // Locked once, across the open, rather than for the check and again
        // for the mark: one atomic pair per packet fewer, and the rare
        // second receiver (a path moving between the planes) waits one
        // open at most.
        let mut window = self.window();
        if !window.check(counter) {
            return Err(SessionError::Replay(counter));
        }
        let (body, tag) = aead::split_tag(ciphertext).ok_or(SessionError::Decrypt)?;
        let len = body.len();
        let out = out.get_mut(..len).ok_or(SessionError::Buffer)?;
        self.recv
            .open_into(counter, body, tag, out)
            .map_err(|_| SessionError::Decrypt)?;
        // Only an authentic packet may move the window.
        window.mark(counter);
        Ok(len)
    }

    /// A poisoned lock only means a thread panicked between check and
    /// mark, which leaves the window as valid as ever.
    fn window(&self) -> std::sync::MutexGuard<'_, ReplayWindow> {
        self.replay.lock().unwrap_or_else(|e| e.into_inner())
    }
}
