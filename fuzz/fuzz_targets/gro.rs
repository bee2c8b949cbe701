//! `kith::wire::gro::Gro::coalesce` on a batch of opened packets.
//!
//! The check (and what it asserts) is in `fuzz/checks/gro.rs`, shared with
//! the seed replay in the main test suite (`tests/fuzz_seeds.rs`).

#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::gro::run(data);
});
