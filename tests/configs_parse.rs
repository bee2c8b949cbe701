//! Every shipped example in `configs/` must parse.
//!
//! The examples point at the production key path
//! `private_key_file = "/etc/kith/private.key"`, which does not exist on a
//! build machine. The test writes a real key file (mode 0600) to a temp
//! directory and rewrites that one line to point at it before parsing; every
//! other line is parsed exactly as shipped. An example that does not mention
//! that path is parsed unchanged.

use std::fs;
use std::path::PathBuf;

use kith::config;
use kith::identity::SecretKey;

const KEY_LINE: &str = "private_key_file = \"/etc/kith/private.key\"";

fn key_file(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kith-configs-parse-{}-{tag}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("private.key");
    fs::write(&path, SecretKey::from_seed([1; 32]).to_base64()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

#[test]
fn every_example_config_parses() {
    let key = key_file("all");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut seen = Vec::new();
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap();
        let text = text.replace(
            KEY_LINE,
            &format!("private_key_file = {:?}", key.display().to_string()),
        );
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
    let _ = fs::remove_file(&key);
}

#[test]
fn full_example_has_documented_values() {
    let key = key_file("full");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/kith.toml");
    let text = fs::read_to_string(&path).unwrap();
    let text = text.replace(
        KEY_LINE,
        &format!("private_key_file = {:?}", key.display().to_string()),
    );
    let c = config::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    // The example spells out the defaults; they must be the real defaults.
    assert_eq!(c.interface.name, config::DEFAULT_INTERFACE);
    assert_eq!(c.interface.listen_port, config::DEFAULT_LISTEN_PORT);
    assert_eq!(c.interface.mtu, config::DEFAULT_MTU);
    let names: Vec<&str> = c.peers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["nas", "laptop"]);
    let _ = fs::remove_file(&key);
}
