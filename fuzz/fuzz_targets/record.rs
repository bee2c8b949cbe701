//! The DHT record: `wire::parse_record_plaintext`, `discovery::record::open`
//!
//! The check (and what it asserts) is in `fuzz/checks/record.rs`, shared with
//! the seed replay in the main test suite (`tests/fuzz_seeds.rs`).

#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::record::run(data);
});
