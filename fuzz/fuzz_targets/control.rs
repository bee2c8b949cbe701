//! `kith::wire::parse_control` on arbitrary decrypted control plaintexts.
//!
//! The check (and what it asserts) is in `fuzz/checks/control.rs`, shared with
//! the seed replay in the main test suite (`tests/fuzz_seeds.rs`).

#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::control::run(data);
});
