//! Every shipped example in `configs/` must parse.
//!
//! The examples point at the production paths
//! `private_key_file = "/etc/kith/private.key"` and
//! `secret_file = "/etc/kith/network.secret"`, which do not exist on a build
//! machine. The test writes a real key file and secret file (mode 0600) to a
//! temp directory and rewrites those two lines to point at them before
//! parsing; every other line is parsed exactly as shipped. An example that
//! does not mention those paths is parsed unchanged.

use std::fs;
use std::path::PathBuf;

use kith::config;
use kith::identity::SecretKey;

const KEY_LINE: &str = "private_key_file = \"/etc/kith/private.key\"";
const SECRET_LINE: &str = "secret_file = \"/etc/kith/network.secret\"";

/// A temp directory with `private.key` (seed [1; 32]) and `network.secret`
/// (32 bytes of 9), both mode 0600.
fn secrets_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kith-configs-parse-{}-{tag}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    for (name, seed) in [("private.key", 1), ("network.secret", 9)] {
        let path = dir.join(name);
        // `kith genkey` output is exactly what both files hold.
        fs::write(&path, SecretKey::from_seed([seed; 32]).to_base64() + "\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    dir
}

/// The shipped text with its production secret paths pointed into `dir`.
fn localize(text: &str, dir: &std::path::Path) -> String {
    let at = |name: &str| format!("{:?}", dir.join(name).display().to_string());
    text.replace(
        KEY_LINE,
        &format!("private_key_file = {}", at("private.key")),
    )
    .replace(
        SECRET_LINE,
        &format!("secret_file = {}", at("network.secret")),
    )
}

#[test]
fn every_example_config_parses() {
    let secrets = secrets_dir("all");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut seen = Vec::new();
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = localize(&fs::read_to_string(&path).unwrap(), &secrets);
        let config = config::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            config.warnings.is_empty(),
            "{}: {:?}",
            path.display(),
            config.warnings
        );
        seen.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    for want in ["kith.toml", "minimal.toml"] {
        assert!(seen.iter().any(|s| s == want), "configs/{want} missing");
    }
    let _ = fs::remove_dir_all(&secrets);
}

#[test]
fn full_example_has_documented_values() {
    let secrets = secrets_dir("full");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/kith.toml");
    let text = localize(&fs::read_to_string(&path).unwrap(), &secrets);
    let c = config::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    // The example spells out the defaults; they must be the real defaults.
    assert_eq!(c.interface.name, config::DEFAULT_INTERFACE);
    assert_eq!(c.interface.listen_port, config::DEFAULT_LISTEN_PORT);
    assert_eq!(c.interface.mtu, config::DEFAULT_MTU);
    let names: Vec<&str> = c.peers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["nas", "laptop"]);
    assert_eq!(c.network.id.as_deref(), Some("home"));
    assert_eq!(
        c.network.secret,
        Some(kith::identity::NetworkSecret([9; 32]))
    );
    let d = config::Discovery::default();
    assert_eq!(c.discovery.dht, d.dht);
    assert_eq!(c.discovery.bootstrap, config::DEFAULT_BOOTSTRAP);
    assert_eq!(c.discovery.dht_port, d.dht_port);
    assert_eq!(
        c.discovery.state_dir,
        PathBuf::from(config::DEFAULT_STATE_DIR)
    );
    assert_eq!(c.discovery.dht_server, d.dht_server);
    let r = config::Relay::default();
    assert_eq!(c.relay.serve, r.serve);
    assert_eq!(
        (c.relay.tcp_port, c.relay.rate, c.relay.max_rate),
        (None, None, None)
    );
    assert_eq!(c.relay.via, ["nas"]);
    let _ = fs::remove_dir_all(&secrets);
}

#[test]
fn minimal_example_finds_peers_through_the_dht() {
    let secrets = secrets_dir("minimal");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/minimal.toml");
    let text = localize(&fs::read_to_string(&path).unwrap(), &secrets);
    let c = config::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.network.id.as_deref(), Some("home"));
    // New setups use a network secret (README quick start).
    assert_eq!(
        c.network.secret,
        Some(kith::identity::NetworkSecret([9; 32]))
    );
    assert!(c.discovery.dht);
    assert_eq!(c.discovery.bootstrap, config::DEFAULT_BOOTSTRAP);
    let _ = fs::remove_dir_all(&secrets);
}
