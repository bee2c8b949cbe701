//! `kith::wire::tso::Tso` on one TUN read (a segmentation request).
//!
//! The check (and what it asserts) is in `fuzz/checks/tso.rs`, shared with
//! the seed replay in the main test suite (`tests/fuzz_seeds.rs`).

#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::tso::run(data);
});
