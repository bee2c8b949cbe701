//! One established Noise session: transport keys, send counter, replay window.
//!
//! Datagram transport (Noise spec §11.4 "out-of-order transport messages"):
//! the nonce travels in the packet as the 64-bit counter, and
//! `snow::StatelessTransportState` encrypts with it explicitly. snow does no
//! replay protection in this mode, so the window here is checked before and
//! marked after decryption (boringtun's order).
//!
//! The session holds no key of its own: the two transport keys live in the
//! ciphers snow got from `noise::Resolver`, which set them to zeros when a
//! dropped session drops them.

use std::time::Instant;

use super::replay::ReplayWindow;
use super::timers::{REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME, scaled};
use crate::wire::{self, DATA_HEADER_LEN, TAG_LEN};

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

pub struct Session {
    pub local_index: u32,
    pub remote_index: u32,
    transport: snow::StatelessTransportState,
    send_counter: u64,
    replay: ReplayWindow,
    pub created: Instant,
    /// We sent the initiation that made this session.
    pub initiator: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("send_counter", &self.send_counter)
            .field("initiator", &self.initiator)
            .finish()
    }
}

impl Session {
    pub fn new(
        local_index: u32,
        remote_index: u32,
        transport: snow::StatelessTransportState,
        created: Instant,
        initiator: bool,
    ) -> Self {
        Self {
            local_index,
            remote_index,
            transport,
            send_counter: 0,
            replay: ReplayWindow::default(),
            created,
            initiator,
        }
    }

    pub fn age(&self, now: Instant) -> std::time::Duration {
        now.saturating_duration_since(self.created)
    }

    /// Usable for sending and receiving at `now`.
    pub fn is_valid(&self, now: Instant) -> bool {
        self.age(now) < scaled(REJECT_AFTER_TIME) && self.send_counter < REJECT_AFTER_MESSAGES
    }

    pub fn messages_sent(&self) -> u64 {
        self.send_counter
    }

    /// Encrypt `payload` into a complete data message in `out`; returns its length.
    pub fn encrypt(
        &mut self,
        now: Instant,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize, SessionError> {
        if !self.is_valid(now) {
            return Err(SessionError::Expired);
        }
        let total = DATA_HEADER_LEN + payload.len() + TAG_LEN;
        if out.len() < total {
            return Err(SessionError::Buffer);
        }
        let counter = self.send_counter;
        wire::emit_data_header(out, self.remote_index, counter)
            .map_err(|_| SessionError::Buffer)?;
        let n = self
            .transport
            .write_message(counter, payload, &mut out[DATA_HEADER_LEN..total])
            .map_err(|_| SessionError::Buffer)?;
        self.send_counter += 1;
        Ok(DATA_HEADER_LEN + n)
    }

    /// Authenticate and decrypt; returns the plaintext length written to `out`.
    pub fn decrypt(
        &mut self,
        now: Instant,
        counter: u64,
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, SessionError> {
        if self.age(now) >= scaled(REJECT_AFTER_TIME) || counter >= REJECT_AFTER_MESSAGES {
            return Err(SessionError::Expired);
        }
        if !self.replay.check(counter) {
            return Err(SessionError::Replay(counter));
        }
        if out.len() + TAG_LEN < ciphertext.len() {
            return Err(SessionError::Buffer);
        }
        let n = self
            .transport
            .read_message(counter, ciphertext, out)
            .map_err(|_| SessionError::Decrypt)?;
        // Only an authentic packet may move the window.
        if !self.replay.mark(counter) {
            return Err(SessionError::Replay(counter));
        }
        Ok(n)
    }
}
