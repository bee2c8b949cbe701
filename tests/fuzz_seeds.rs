//! The fuzz targets' seeds, replayed in the ordinary test suite through
//! each target's own check (`fuzz/checks/`, compiled here without
//! libFuzzer): every target has seeds, every seed passes its target's
//! invariant, and the handshake seeds reach the stage they are there for
//! (past mac1: a response, a cookie reply, a session, a cookie taken).
//! `scripts/fuzz.sh` then fuzzes each target from these seeds.
//!
//! The handshake seeds carry real messages with valid MACs; after a change
//! to the handshake (or to what a node draws from its RNG) rewrite them
//! with `KITH_WRITE_SEEDS=1 cargo test --release --test fuzz_seeds`.

#[path = "../fuzz/checks/mod.rs"]
mod checks;

use std::path::{Path, PathBuf};

use checks::handshake::Reached;

/// A target's check: panics when its invariant breaks.
type Check = fn(&[u8]);

/// Every target's check; a target without one fails
/// `every_target_has_a_check_and_seeds`.
const TARGETS: &[(&str, Check)] = &[
    ("config", checks::config::run),
    ("control", checks::control::run),
    ("gro", checks::gro::run),
    ("handshake", |data| {
        checks::handshake::run(data);
    }),
    ("node_udp", checks::node_udp::run),
    ("record", checks::record::run),
    ("relay", checks::relay::run),
    ("route", checks::route::run),
    ("stream", checks::stream::run),
    ("stun", checks::stun::run),
    ("tso", checks::tso::run),
    ("wire_ip", checks::wire_ip::run),
    ("wire_packet", checks::wire_packet::run),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn seeds_of(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join("seeds").join(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    seeds.sort();
    seeds
}

#[test]
fn every_target_has_a_check_and_seeds() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    let mut bins: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|name| *name != "kith-fuzz")
        .collect();
    bins.sort();
    let checked: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(bins, checked, "fuzz/Cargo.toml's targets and this file's");
    for (target, _) in TARGETS {
        assert!(!seeds_of(target).is_empty(), "fuzz/seeds/{target} is empty");
    }
}

#[test]
fn every_seed_passes_its_targets_check() {
    for (target, run) in TARGETS {
        for (name, bytes) in seeds_of(target) {
            eprintln!("{target}/{name}");
            run(&bytes);
        }
    }
}

#[test]
fn the_handshake_seeds_reach_past_mac1() {
    let write = std::env::var_os("KITH_WRITE_SEEDS").is_some();
    let dir = fuzz_dir().join("seeds").join("handshake");
    for (name, bytes, expected) in checks::handshake::seeds() {
        let path = dir.join(name);
        if write {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let on_disk = std::fs::read(&path).unwrap_or_default();
        assert!(
            on_disk == bytes,
            "fuzz/seeds/handshake/{name} is stale: rewrite the seeds with \
             KITH_WRITE_SEEDS=1 cargo test --release --test fuzz_seeds"
        );
        assert_eq!(checks::handshake::run(&bytes), expected, "{name}");
    }
    // Not a stage any seed may reach by accident: garbage stops at mac1.
    let mut junk = vec![0u8; 149];
    junk[1] = 0x81;
    assert_eq!(
        checks::handshake::run(&junk),
        Reached::Dropped(kith::core::DropReason::BadMac)
    );
}
