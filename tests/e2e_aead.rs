//! End to end: daemons that chose different ChaCha20-Poly1305 backends
//! (`KITH_AEAD`, or measured at start) still talk, and a bad `KITH_AEAD`
//! stops the daemon with a message naming it.
//!
//! Needs root (namespaces, TUN), like every `e2e_*` test.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use kith::core::aead::Backend;
use kith::identity::SecretKey;
use kith::lab::topology::{A_OVERLAY, B_OVERLAY, Pair, wait_both_ways};
use kith::lab::{KithSpec, transfer};

fn spec(address: &str, aead: Option<&str>) -> KithSpec {
    let mut spec = KithSpec::new(address, SecretKey::generate().unwrap());
    spec.env = aead
        .map(|name| vec![("KITH_AEAD".to_owned(), name.to_owned())])
        .unwrap_or_default();
    spec
}

#[test]
fn daemons_on_different_aead_backends_talk() {
    let lab = common::lab();
    // Neither is the default (ring): both overrides must take.
    let b_aead = Backend::ALL
        .iter()
        .copied()
        .find(|b| ![Backend::Ring, Backend::OpenSsl].contains(b))
        .unwrap_or(Backend::Ring);
    let (spec_a, spec_b) = (
        spec("100.96.0.1/16", Some("openssl")),
        spec("100.96.0.2/16", Some(b_aead.name())),
    );
    let Pair {
        mut node_a,
        mut node_b,
        a,
        b,
        ..
    } = Pair::start_with(&lab, &common::kith_bin(), spec_a, spec_b).unwrap();
    let wait = Duration::from_secs(10);
    node_a
        .wait_log(&["AEAD: openssl (set by KITH_AEAD)"], wait)
        .unwrap();
    node_b
        .wait_log(&[&format!("AEAD: {b_aead} (set by KITH_AEAD)")], wait)
        .unwrap();
    wait_both_ways(&mut node_a, &mut node_b, wait).unwrap();
    // Thousands of full-size packets each way, sealed by one library and
    // opened by the other.
    let listen = SocketAddr::new(IpAddr::V4(B_OVERLAY), 5001);
    let report = transfer::tcp(&b, listen, &a, 20 * 1024 * 1024).unwrap();
    assert!(report.intact(), "a → b: content differs");

    // b again with nothing set: it measures and logs every backend's speed.
    let measured = KithSpec {
        env: Vec::new(),
        ..node_b.spec().clone()
    };
    node_b.rewrite_config(measured).unwrap();
    node_b.restart().unwrap();
    let line = node_b
        .wait_log(&["AEAD: ", " GB/s", "using"], wait)
        .unwrap();
    for backend in Backend::ALL {
        assert!(line.contains(backend.name()), "{line}");
    }
    node_b.wait_ready(wait).unwrap();
    wait_both_ways(&mut node_a, &mut node_b, wait).unwrap();
    let listen = SocketAddr::new(IpAddr::V4(A_OVERLAY), 5002);
    let report = transfer::tcp(&a, listen, &b, 5 * 1024 * 1024).unwrap();
    assert!(report.intact(), "b → a after b measured: content differs");

    // A name that is no backend: the daemon refuses to start and says why.
    let bad = KithSpec {
        env: vec![("KITH_AEAD".into(), "chacha".into())],
        ..node_a.spec().clone()
    };
    node_a.rewrite_config(bad).unwrap();
    node_a.restart().unwrap();
    let err = node_a.wait_ready(wait).unwrap_err().to_string();
    assert!(
        err.contains("KITH_AEAD=\"chacha\" names no AEAD backend"),
        "{err}"
    );
}
