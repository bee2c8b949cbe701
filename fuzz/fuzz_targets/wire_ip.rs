//! `kith::wire::parse_ip` on arbitrary inner packets.
//!
//! The check (and what it asserts) is in `fuzz/checks/wire_ip.rs`, shared with
//! the seed replay in the main test suite (`tests/fuzz_seeds.rs`).

#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::wire_ip::run(data);
});
