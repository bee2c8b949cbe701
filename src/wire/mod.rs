//! Wire: the byte layout of every message kith puts on its UDP socket.
//!
//! Owns parsing and emitting; knows nothing of sessions, keys or time.
//! Parsers check lengths once and return [`WireError`] on anything short,
//! long or unknown: network input is hostile and must never panic.
//!
//! Demultiplexing one socket (see `docs/protocol.md`):
//! - first byte `0x00..=0x3f` with the magic cookie `0x2112A442` at offset 4
//!   → STUN (RFC 8489 §5), handed to the NAT module untouched;
//! - first byte `0x81..=0x84` → kith messages below;
//! - anything else is dropped.
//!
//! Kith's type bytes have the top bit set so they can never be mistaken for
//! STUN (top two bits `00`), whatever the bytes at offset 4 happen to be.
//! All integers are big-endian (network order).
//!
//! `record` holds the plaintext and envelope of the DHT record (not a UDP
//! message: it travels as a BEP 44 value; layout in `record.rs`).
//!
//! ```text
//! Initiation (148 bytes)                  Response (92 bytes)
//!  0  type=0x81 | reserved (3, zero)       0  type=0x82 | reserved (3)
//!  4  sender index (u32)                   4  sender index (u32)
//!  8  Noise message 1 (108):               8  receiver index (u32)
//!       e (32) | enc(s) (48) |            12  Noise message 2 (48):
//!       enc(timestamp 12) (28)                  e (32) | enc(empty) (16)
//! 116 mac1 (16)                           60  mac1 (16)
//! 132 mac2 (16)                           76  mac2 (16)
//!
//! Cookie reply (64 bytes)                 Data (16 + n bytes, n ≥ 16)
//!  0  type=0x83 | reserved (3)             0  type=0x84 | reserved (3)
//!  4  receiver index (u32)                 4  receiver index (u32)
//!  8  nonce (24)                           8  counter (u64) = AEAD nonce
//! 32  enc(cookie 16) (32)                 16  ChaCha20-Poly1305(payload) | tag
//! ```

#![cfg_attr(not(test), deny(clippy::disallowed_methods))]

mod control;
pub mod gro;
mod ip;
mod packet;
mod record;
mod relay;
mod stream;
pub mod tso;
pub mod vnet;

pub use control::*;
pub use ip::*;

pub use packet::*;
pub use record::*;
pub use relay::*;
pub use stream::*;

/// Lowercase hex of `b`: what the wire snapshot tests compare against.
#[cfg(test)]
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
