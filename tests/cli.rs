//! The `kith` command line as a user meets it: keys, config checking, and
//! the errors `up` gives before it touches the system.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

const KITH: &str = env!("CARGO_BIN_EXE_kith");

fn run(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(KITH)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kith");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn genkey_then_pubkey() {
    let (code, key, _) = run(&["genkey"], "");
    assert_eq!(code, 0);
    let key = key.trim();
    assert_eq!(key.len(), 44, "base64 of a 32-byte seed: {key:?}");
    let (code, public, _) = run(&["pubkey"], key);
    assert_eq!(code, 0);
    let expected = key
        .parse::<kith::identity::SecretKey>()
        .unwrap()
        .public()
        .to_string();
    assert_eq!(public.trim(), expected);
    // Two runs give different keys.
    let (_, other, _) = run(&["genkey"], "");
    assert_ne!(other.trim(), key);
}

#[test]
fn genkey_into_a_file_is_private() {
    let dir = std::env::temp_dir().join(format!("kith-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("private.key");
    let file = std::fs::File::create(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let status = Command::new(KITH)
        .arg("genkey")
        .stdout(file)
        .status()
        .unwrap();
    assert!(status.success());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "kith genkey > file must leave the file 0600");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pubkey_rejects_garbage() {
    let (code, _, err) = run(&["pubkey"], "definitely not a key");
    assert_ne!(code, 0);
    assert!(err.contains("not a kith private key"), "{err}");
}

#[test]
fn check_config_reports_ok_and_located_errors() {
    let dir = std::env::temp_dir().join(format!("kith-cli-cc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = kith::identity::SecretKey::from_seed([5; 32]).to_base64();
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        format!(
            "[interface]\naddress = \"100.96.0.1/16\"\nprivate_key = \"{key}\"\n\
             [discovery]\ndht = false\n"
        ),
    )
    .unwrap();
    let (code, out, _) = run(&["check-config", good.to_str().unwrap()], "");
    assert_eq!((code, out.trim()), (0, "ok"));

    // Relaying: which relays peers must share, and a relay with no address.
    let relayed = dir.join("relayed.toml");
    let peer = kith::identity::SecretKey::from_seed([6; 32]).public();
    std::fs::write(
        &relayed,
        format!(
            "[interface]\naddress = \"100.96.0.1/16\"\nprivate_key = \"{key}\"\n\
             [discovery]\ndht = false\n[relay]\nvia = [\"vps\"]\n\
             [[peer]]\nname = \"vps\"\npublic_key = \"{peer}\"\nallowed_ips = []\n"
        ),
    )
    .unwrap();
    let (code, out, err) = run(&["check-config", relayed.to_str().unwrap()], "");
    assert_eq!((code, out.trim()), (0, "ok"), "{err}");
    assert!(
        err.contains("note: peers that cannot reach this node directly go through vps; a peer can use one only if it lists it as a [[peer]] too, or there is no common relay"),
        "{err}"
    );
    assert!(err.contains("note: relay \"vps\" has no endpoint"), "{err}");

    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "[interface]\naddress = \"100.96.0.300/16\"\nprivate_key = \"{key}\"\n\
             [network]\nid = \"home\"\n"
        ),
    )
    .unwrap();
    let (code, _, err) = run(&["check-config", bad.to_str().unwrap()], "");
    assert_ne!(code, 0);
    let located = format!("{}:2:11: interface.address", bad.display());
    assert!(err.contains(&located), "expected {located:?} in:\n{err}");

    // `up` refuses the same file before touching the system.
    let (code, _, err) = run(&["up", "-c", bad.to_str().unwrap()], "");
    assert_ne!(code, 0);
    assert!(err.contains(&located), "{err}");

    // Without [network] id the DHT (on by default) has no namespace.
    let no_id = dir.join("no-id.toml");
    std::fs::write(
        &no_id,
        format!("[interface]\naddress = \"100.96.0.1/16\"\nprivate_key = \"{key}\"\n"),
    )
    .unwrap();
    let (code, _, err) = run(&["check-config", no_id.to_str().unwrap()], "");
    assert_ne!(code, 0);
    let located = format!("{}:1:1: network.id: missing [network] id", no_id.display());
    assert!(err.contains(&located), "expected {located:?} in:\n{err}");
    assert!(err.contains("dht = false"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
