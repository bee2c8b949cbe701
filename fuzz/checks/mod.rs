//! The fuzz targets' checks, one module per target: `run(data)` feeds the
//! input to the code under test and asserts the target's invariant.
//!
//! Plain Rust, no libFuzzer: each `fuzz_targets/<name>.rs` calls its
//! `run`, and the main crate's `tests/fuzz_seeds.rs` includes this module
//! to replay every seed in `fuzz/seeds/<name>/` in the ordinary test suite.
// Each fuzz binary calls one target's check; the rest is unused there.
#![allow(dead_code)]

pub mod common;
pub mod config;
pub mod control;
pub mod gro;
pub mod handshake;
pub mod node_udp;
pub mod record;
pub mod relay;
pub mod route;
pub mod stream;
pub mod stun;
pub mod tso;
pub mod wire_ip;
pub mod wire_packet;
