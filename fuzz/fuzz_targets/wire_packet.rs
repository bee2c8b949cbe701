//! `kith::wire::parse` on arbitrary datagrams.
//!
//! The check (and what it asserts) is in `fuzz/checks/wire_packet.rs`, shared with
//! the seed replay in the main test suite (`tests/fuzz_seeds.rs`).

#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::wire_packet::run(data);
});
