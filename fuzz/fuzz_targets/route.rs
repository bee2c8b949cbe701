//! `kith::nat::portmap::route::parse_default_gateway` on arbitrary text
//!
//! The check (and what it asserts) is in `fuzz/checks/route.rs`, shared with
//! the seed replay in the main test suite (`tests/fuzz_seeds.rs`).

#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::route::run(data);
});
