//! `kith::wire::parse_relay` on arbitrary decrypted hop plaintexts.
//!
//! The check (and what it asserts) is in `fuzz/checks/relay.rs`, shared with
//! the seed replay in the main test suite (`tests/fuzz_seeds.rs`).

#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::relay::run(data);
});
