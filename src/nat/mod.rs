//! NAT: learning how the network in front of the data socket treats it.
//!
//! Owns the STUN client logic (with `stun-rs` as the codec), NAT behaviour
//! classification, a STUN responder for tests and private deployments, and
//! (later) port mapping. It must not reach into `core`: the daemon drives
//! these sans-IO parts with the data socket's STUN datagrams and the clock,
//! and forwards their results to `core` and the DHT record as events.
//!
//! Flow:
//! - [`stun::StunClient`]: Binding requests out of the data socket to each
//!   configured server, retransmitted on explicit deadlines; datagrams that
//!   `wire::is_stun` accepts come back in; per-server reflexive addresses
//!   come out as [`stun::StunEvent`]s;
//! - [`classify::classify`]: those per-server results (plus any extra
//!   probes from the same socket) → [`classify::NatBehaviour`] (RFC 4787
//!   mapping behaviour, port preservation, sequential allocation, public
//!   address);
//! - [`stun_server::respond`]: the answering side, behind `kith stun-server`.

pub mod classify;
pub mod ifaddrs;
pub mod netcheck;
pub mod portmap;
pub mod punch;
pub mod stun;
pub mod stun_server;

pub use classify::{MappingBehaviour, NatBehaviour, classify};
pub use stun::{
    AddError, Failure, Handled, Ignored, Mapping, Observation, Retransmit, StunClient, StunError,
    StunEvent, TxId,
};
pub use stun_server::respond;
