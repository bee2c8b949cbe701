//! `kith::core::Node::handle_udp` on arbitrary datagrams.
//!
//! The check (and what it asserts) is in `fuzz/checks/node_udp.rs`, shared with
//! the seed replay in the main test suite (`tests/fuzz_seeds.rs`).

#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::node_udp::run(data);
});
