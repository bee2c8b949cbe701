//! `kith::core::Node::handle_udp` on handshake messages that get past mac1.
//!
//! The check (and what it asserts) is in `fuzz/checks/handshake.rs`, shared with
//! the seed replay in the main test suite (`tests/fuzz_seeds.rs`).

#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::handshake::run(data);
});
