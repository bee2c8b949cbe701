//! Shared helpers for the end-to-end tests: each test builds its own lab
//! (unique prefix), so tests may run in parallel.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use kith::lab::Lab;
use kith::lab::topology::Pair;

/// The `kith` binary cargo built for this test run.
pub fn kith_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kith"))
}

/// A fresh lab; fails the test (never skips it) when not root or a tool is missing.
pub fn lab() -> Lab {
    Lab::new().unwrap_or_else(|e| panic!("end-to-end tests cannot build their lab: {e}"))
}

/// Taken by [`lab_in_turn`].
static TURN: Mutex<()> = Mutex::new(());

/// A fresh lab, once no other test of this binary holds one: the NAT and
/// relay labs (a dozen namespaces, a DHT, routers, daemons) are too heavy
/// for a 2-core machine to run side by side. Keep the guard with the lab.
pub fn lab_in_turn() -> (MutexGuard<'static, ()>, Lab) {
    let guard = TURN.lock().unwrap_or_else(|e| e.into_inner());
    (guard, lab())
}

/// Two kith nodes on a link with a working tunnel.
pub fn pair(lab: &Lab) -> Pair {
    let mut pair = Pair::start(lab, &kith_bin()).unwrap_or_else(|e| panic!("starting kith: {e}"));
    let took = pair
        .wait_tunnel(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("tunnel did not come up: {e}"));
    eprintln!("tunnel up after {took:?}");
    pair
}

/// Two kith nodes with no endpoints on the emulated internet with a lab
/// DHT; daemons started, tunnel not yet up.
pub fn dht_pair(lab: &Lab) -> kith::lab::topology::DhtPair {
    kith::lab::topology::DhtPair::start(lab, &kith_bin())
        .unwrap_or_else(|e| panic!("starting the DHT lab: {e}"))
}
