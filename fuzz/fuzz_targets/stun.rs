//! STUN datagrams into `kith::nat::StunClient::handle_response` and into the
//!
//! The check (and what it asserts) is in `fuzz/checks/stun.rs`, shared with
//! the seed replay in the main test suite (`tests/fuzz_seeds.rs`).

#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::stun::run(data);
});
