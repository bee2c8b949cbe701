//! Bad config files and exactly what `config::parse` must say about them.
//!
//! Each row is a config text, written to its own temp directory next to a
//! valid private key file `key` (mode 0600), and the full list of expected
//! errors as (line, column, key path, message substring). Placeholders in
//! the text and expectations: `{OWN}` our public key, `{PK2}`/`{PK3}` peers'
//! public keys, `{SK}` our private key, `{DIR}` the temp directory.

use std::fs;
use std::path::{Path, PathBuf};

use kith::config::{self, Config, ConfigErrors};
use kith::identity::SecretKey;

fn own() -> SecretKey {
    SecretKey::from_seed([1; 32])
}

fn pk(n: u8) -> String {
    SecretKey::from_seed([n; 32]).public().to_string()
}

/// A fresh directory holding a valid `key` file (mode 0600).
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kith-config-errors-{}-{tag}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    write_key(&dir.join("key"), 0o600);
    dir
}

fn write_key(path: &Path, mode: u32) {
    fs::write(path, format!("{}\n", own().to_base64())).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }
}

fn fill(text: &str, dir: &Path) -> String {
    text.replace("{OWN}", &own().public().to_string())
        .replace("{SK}", &own().to_base64())
        .replace("{PK2}", &pk(2))
        .replace("{PK3}", &pk(3))
        .replace("{DIR}", &dir.display().to_string())
}

fn parse_in(tag: &str, text: &str) -> (PathBuf, Result<Config, ConfigErrors>) {
    let dir = temp_dir(tag);
    let path = dir.join("kith.toml");
    let text = fill(text, &dir);
    fs::write(&path, &text).unwrap();
    let got = config::load(&path);
    (dir, got)
}

/// Interface lines that are valid, for rows about something else.
const IFACE: &str = "[interface]\naddress = \"100.96.0.1/16\"\nprivate_key_file = \"key\"\n";

type Expect = (usize, usize, &'static str, &'static str);

struct Row {
    name: &'static str,
    text: String,
    errors: Vec<Expect>,
}

fn row(name: &'static str, text: &str, errors: &[Expect]) -> Row {
    Row {
        name,
        text: text.to_string(),
        errors: errors.to_vec(),
    }
}

/// A row whose text starts with the valid [interface] (lines 1-3).
fn with_iface(name: &'static str, rest: &str, errors: &[Expect]) -> Row {
    row(name, &format!("{IFACE}{rest}"), errors)
}

fn rows() -> Vec<Row> {
    vec![
        row(
            "syntax",
            "[interface]\naddress = = \"x\"\n",
            &[(2, 11, "", "TOML syntax error")],
        ),
        row(
            "unknown key with suggestion",
            "[interface]\nadress = \"100.96.0.1/16\"\nprivate_key_file = \"key\"\n",
            &[(
                2,
                1,
                "interface.adress",
                "unknown key \"adress\"; did you mean \"address\"?",
            )],
        ),
        with_iface(
            "unknown key without suggestion",
            "colour = \"blue\"\n",
            &[(
                4,
                1,
                "interface.colour",
                "unknown key \"colour\"; expected one of: name, address",
            )],
        ),
        with_iface(
            "unknown table",
            "\n[netwrk]\nsecret = 1\n",
            &[(5, 2, "netwrk", "unknown table [netwrk]")],
        ),
        with_iface(
            "unknown key in peer",
            "\n[[peer]]\nname = \"nas\"\npublic_key = \"{PK2}\"\nallowed_ips = []\nendpont = \"a:1\"\n",
            &[(9, 1, "peer[0].endpont", "did you mean \"endpoint\"?")],
        ),
        row(
            "missing interface table",
            "[[peer]]\nname = \"nas\"\npublic_key = \"{PK2}\"\nallowed_ips = []\n",
            &[(1, 1, "interface", "missing required table [interface]")],
        ),
        row(
            "missing address",
            "[interface]\nprivate_key_file = \"key\"\n",
            &[(
                1,
                1,
                "interface.address",
                "missing required key \"address\"",
            )],
        ),
        row(
            "missing private key",
            "\n[interface]\naddress = \"100.96.0.1/16\"\n",
            &[(
                2,
                1,
                "interface.private_key_file",
                "missing required key \"private_key_file\" (or \"private_key\")",
            )],
        ),
        row(
            "wrong type",
            "[interface]\naddress = \"100.96.0.1/16\"\nprivate_key_file = \"key\"\nmtu = \"1420\"\n",
            &[(
                4,
                7,
                "interface.mtu",
                "expected an integer, got string \"1420\"",
            )],
        ),
        row(
            "bad cidr",
            "[interface]\naddress = \"100.96.0.300/16\"\nprivate_key_file = \"key\"\n",
            &[(
                2,
                11,
                "interface.address",
                "expected a CIDR like \"100.96.0.1/16\", got \"100.96.0.300/16\"",
            )],
        ),
        row(
            "address without prefix",
            "[interface]\naddress = \"100.96.0.1\"\nprivate_key_file = \"key\"\n",
            &[(2, 11, "interface.address", "missing prefix length")],
        ),
        row(
            "inline private key invalid",
            "[interface]\naddress = \"100.96.0.1/16\"\nprivate_key = \"AAAA\"\n",
            &[(
                3,
                15,
                "interface.private_key",
                "invalid private_key: decodes to 3 bytes, a key is 32 bytes",
            )],
        ),
        row(
            "unreadable private key file",
            "[interface]\naddress = \"100.96.0.1/16\"\nprivate_key_file = \"missing.key\"\n",
            &[(
                3,
                20,
                "interface.private_key_file",
                "cannot read private key file \"{DIR}/missing.key\"",
            )],
        ),
        row(
            "private key file is a directory",
            "[interface]\naddress = \"100.96.0.1/16\"\nprivate_key_file = \"{DIR}\"\n",
            &[(3, 20, "interface.private_key_file", "is not a regular file")],
        ),
        row(
            "bad mtu",
            "[interface]\naddress = \"100.96.0.1/16\"\nprivate_key_file = \"key\"\nmtu = 100\n",
            &[(
                4,
                7,
                "interface.mtu",
                "mtu must be between 576 and 9000, got 100",
            )],
        ),
        row(
            "mtu too small for ipv6",
            "[interface]\naddress = \"fd00:6b69::1/64\"\nprivate_key_file = \"key\"\nmtu = 1000\n",
            &[(4, 7, "interface.mtu", "below 1280, the minimum for IPv6")],
        ),
        row(
            "bad listen port",
            "[interface]\naddress = \"100.96.0.1/16\"\nprivate_key_file = \"key\"\nlisten_port = 70000\n",
            &[(4, 15, "interface.listen_port", "between 0 and 65535")],
        ),
        row(
            "interface name with space",
            "[interface]\nname = \"kith 0\"\naddress = \"100.96.0.1/16\"\nprivate_key_file = \"key\"\n",
            &[(2, 8, "interface.name", "contains ' '")],
        ),
        row(
            "interface name too long",
            "[interface]\nname = \"kith0123456789ab\"\naddress = \"100.96.0.1/16\"\nprivate_key_file = \"key\"\n",
            &[(2, 8, "interface.name", "at most 15")],
        ),
        with_iface(
            "allowed_ips host bits",
            "[[peer]]\nname = \"nas\"\npublic_key = \"{PK2}\"\nallowed_ips = [\"100.96.0.2/32\", \"192.168.50.1/24\"]\n",
            &[(
                7,
                33,
                "peer[0].allowed_ips[1]",
                "192.168.50.1/24 has host bits set; write the network \"192.168.50.0/24\"",
            )],
        ),
        with_iface(
            "allowed_ips bad cidr",
            "[[peer]]\nname = \"nas\"\npublic_key = \"{PK2}\"\nallowed_ips = [\"nope\"]\n",
            &[(
                7,
                16,
                "peer[0].allowed_ips[0]",
                "expected a CIDR like \"100.96.0.2/32\", got \"nope\"",
            )],
        ),
        with_iface(
            "public key not base64",
            "[[peer]]\nname = \"nas\"\npublic_key = \"not base64!\"\nallowed_ips = []\n",
            &[(6, 14, "peer[0].public_key", "not valid base64")],
        ),
        with_iface(
            "public key wrong length",
            "[[peer]]\nname = \"nas\"\npublic_key = \"AAAA\"\nallowed_ips = []\n",
            &[(
                6,
                14,
                "peer[0].public_key",
                "decodes to 3 bytes, a key is 32 bytes",
            )],
        ),
        with_iface(
            "missing peer keys",
            "[[peer]]\nendpoint = \"a:1\"\n",
            &[
                (4, 1, "peer[0].name", "missing required key \"name\""),
                (
                    4,
                    1,
                    "peer[0].public_key",
                    "missing required key \"public_key\"",
                ),
                (
                    4,
                    1,
                    "peer[0].allowed_ips",
                    "missing required key \"allowed_ips\"",
                ),
            ],
        ),
        with_iface(
            "empty peer name",
            "[[peer]]\nname = \"\"\npublic_key = \"{PK2}\"\nallowed_ips = []\n",
            &[(5, 8, "peer[0].name", "must be non-empty")],
        ),
        with_iface(
            "duplicate peer names",
            "[[peer]]\nname = \"nas\"\npublic_key = \"{PK2}\"\nallowed_ips = []\n\
             [[peer]]\nname = \"nas\"\npublic_key = \"{PK3}\"\nallowed_ips = []\n",
            &[(
                9,
                8,
                "peer[1].name",
                "duplicate peer name \"nas\" (first at line 5)",
            )],
        ),
        with_iface(
            "duplicate public keys",
            "[[peer]]\nname = \"nas\"\npublic_key = \"{PK2}\"\nallowed_ips = []\n\
             [[peer]]\nname = \"laptop\"\npublic_key = \"{PK2}\"\nallowed_ips = []\n",
            &[(
                10,
                14,
                "peer[1].public_key",
                "duplicate public key: already used by peer \"nas\" (peer[0], line 6)",
            )],
        ),
        with_iface(
            "own key as peer",
            "[[peer]]\nname = \"me\"\npublic_key = \"{OWN}\"\nallowed_ips = []\n",
            &[(6, 14, "peer[0].public_key", "this is our own public key")],
        ),
        with_iface(
            "overlap across peers",
            "[[peer]]\nname = \"nas\"\npublic_key = \"{PK2}\"\nallowed_ips = [\"100.96.0.2/32\", \"100.96.1.0/24\"]\n\
             [[peer]]\nname = \"laptop\"\npublic_key = \"{PK3}\"\nallowed_ips = [\"100.96.1.128/25\"]\n",
            &[(
                11,
                16,
                "peer[1].allowed_ips[0]",
                "allowed_ips 100.96.1.128/25 overlaps 100.96.1.0/24 of peer \"nas\" (peer[0].allowed_ips[1], line 7)",
            )],
        ),
        with_iface(
            "overlap within a peer",
            "[[peer]]\nname = \"nas\"\npublic_key = \"{PK2}\"\nallowed_ips = [\"10.0.0.0/8\", \"10.1.0.0/16\"]\n",
            &[(
                7,
                30,
                "peer[0].allowed_ips[1]",
                "overlaps 10.0.0.0/8 of peer \"nas\" (peer[0].allowed_ips[0], line 7)",
            )],
        ),
        with_iface(
            "endpoint without port",
            "[[peer]]\nname = \"nas\"\npublic_key = \"{PK2}\"\nallowed_ips = []\nendpoint = \"198.18.0.10\"\n",
            &[(
                8,
                12,
                "peer[0].endpoint",
                "invalid endpoint \"198.18.0.10\": missing port",
            )],
        ),
        with_iface(
            "endpoint port zero",
            "[[peer]]\nname = \"nas\"\npublic_key = \"{PK2}\"\nallowed_ips = []\nendpoint = \"nas.example.net:0\"\n",
            &[(8, 12, "peer[0].endpoint", "port 0 is not allowed")],
        ),
        with_iface(
            "endpoint garbage",
            "[[peer]]\nname = \"nas\"\npublic_key = \"{PK2}\"\nallowed_ips = []\nendpoint = \"not an endpoint:x\"\n",
            &[(8, 12, "peer[0].endpoint", "is not a number in 1..=65535")],
        ),
        with_iface(
            "endpoint bare ipv6",
            "[[peer]]\nname = \"nas\"\npublic_key = \"{PK2}\"\nallowed_ips = []\nendpoint = \"2001:db8::1:51871\"\n",
            &[(8, 12, "peer[0].endpoint", "needs brackets")],
        ),
        with_iface(
            "bad duration",
            "[[peer]]\nname = \"nas\"\npublic_key = \"{PK2}\"\nallowed_ips = []\nkeepalive = \"25x\"\n",
            &[(
                8,
                13,
                "peer[0].keepalive",
                "invalid keepalive \"25x\": unknown unit \"x\"",
            )],
        ),
        with_iface(
            "keepalive zero",
            "[[peer]]\nname = \"nas\"\npublic_key = \"{PK2}\"\nallowed_ips = []\nkeepalive = \"0s\"\n",
            &[(
                8,
                13,
                "peer[0].keepalive",
                "keepalive 0 is not allowed; omit the key",
            )],
        ),
        with_iface(
            "keepalive too long",
            "[[peer]]\nname = \"nas\"\npublic_key = \"{PK2}\"\nallowed_ips = []\nkeepalive = \"1h1s\"\n",
            &[(8, 13, "peer[0].keepalive", "between 1s and 1h")],
        ),
        with_iface(
            "keepalive as integer",
            "[[peer]]\nname = \"nas\"\npublic_key = \"{PK2}\"\nallowed_ips = []\nkeepalive = 25\n",
            &[(
                8,
                13,
                "peer[0].keepalive",
                "expected a string, got integer `25`",
            )],
        ),
    ]
}

#[test]
fn every_bad_file_is_reported_precisely() {
    let mut failures = Vec::new();
    for (n, row) in rows().into_iter().enumerate() {
        let (dir, got) = parse_in(&format!("row{n}"), &row.text);
        let errors = match got {
            Ok(_) => {
                failures.push(format!("{}: parsed OK, expected errors", row.name));
                continue;
            }
            Err(ConfigErrors(errors)) => errors,
        };
        let got: Vec<String> = errors
            .iter()
            .map(|e| format!("{}:{} {} | {}", e.line, e.column, e.key, e.message))
            .collect();
        let matches = errors.len() == row.errors.len()
            && errors
                .iter()
                .zip(&row.errors)
                .all(|(e, (line, col, key, msg))| {
                    e.line == *line
                        && e.column == *col
                        && e.key == *key
                        && e.message.contains(&fill(msg, &dir))
                        && e.file == dir.join("kith.toml")
                });
        if !matches {
            failures.push(format!(
                "{}:\n  expected {:?}\n  got      {got:#?}",
                row.name, row.errors
            ));
        }
        let _ = fs::remove_dir_all(&dir);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn several_errors_are_all_reported_in_order() {
    let text = "\
[interface]
name = \"a/b\"
address = \"100.96.0.1/16\"
private_key_file = \"key\"
mtu = 100
colour = \"red\"

[[peer]]
name = \"nas\"
public_key = \"AAAA\"
allowed_ips = [\"100.96.0.2/32\", \"192.168.50.1/24\"]
endpoint = \"198.18.0.10\"
keepalive = \"0s\"

[[peer]]
name = \"nas\"
public_key = \"{PK3}\"
allowed_ips = [\"100.96.0.2/32\"]
";
    let (dir, got) = parse_in("several", text);
    let Err(ConfigErrors(errors)) = got else {
        panic!("expected errors")
    };
    let got: Vec<(usize, usize, &str)> = errors
        .iter()
        .map(|e| (e.line, e.column, e.key.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (2, 8, "interface.name"),
            (5, 7, "interface.mtu"),
            (6, 1, "interface.colour"),
            (10, 14, "peer[0].public_key"),
            (11, 33, "peer[0].allowed_ips[1]"),
            (12, 12, "peer[0].endpoint"),
            (13, 13, "peer[0].keepalive"),
            (16, 8, "peer[1].name"),
            (18, 16, "peer[1].allowed_ips[0]"),
        ],
        "{errors:#?}"
    );
    // Display: one error per line, `file:line:col: key: message`.
    let shown = ConfigErrors(errors).to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 9);
    let file = dir.join("kith.toml");
    assert_eq!(
        lines[1],
        format!(
            "{}:5:7: interface.mtu: mtu must be between 576 and 9000, got 100",
            file.display()
        )
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn both_private_keys_is_a_warning_and_the_file_wins() {
    let text = "[interface]\naddress = \"100.96.0.1/16\"\nprivate_key = \"AAAA\"\nprivate_key_file = \"key\"\n";
    let (dir, got) = parse_in("both-keys", text);
    let config = got.expect("both keys must parse");
    assert_eq!(config.interface.private_key.public(), own().public());
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(
        config.warnings[0].ends_with(
            ":3:15: interface.private_key: both private_key and private_key_file are set; \
             using private_key_file and ignoring private_key (remove one)"
        ),
        "{:?}",
        config.warnings
    );
    let _ = fs::remove_dir_all(&dir);
}

#[cfg(unix)]
#[test]
fn world_readable_key_file_is_a_warning() {
    let dir = temp_dir("world-readable");
    let key = dir.join("open.key");
    write_key(&key, 0o644);
    let path = dir.join("kith.toml");
    let text = "[interface]\naddress = \"100.96.0.1/16\"\nprivate_key_file = \"open.key\"\n";
    let config = config::parse(&path, text).expect("a readable key is still valid");
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    let w = &config.warnings[0];
    assert!(w.contains(":3:20: interface.private_key_file: "), "{w}");
    assert!(w.contains(&key.display().to_string()), "{w}");
    assert!(w.contains("mode 644"), "{w}");
    assert!(w.contains("chmod 600"), "{w}");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn defaults_and_values_of_a_good_file() {
    let text = format!(
        "{IFACE}\n[[peer]]\nname = \"nas\"\npublic_key = \"{{PK2}}\"\n\
         allowed_ips = [\"100.96.0.2/32\", \"192.168.50.0/24\"]\n\
         endpoint = \"198.18.0.10:51871\"\nkeepalive = \"1m30s\"\n\
         [[peer]]\nname = \"laptop\"\npublic_key = \"{{PK3}}\"\nallowed_ips = [\"fd00::/64\"]\n\
         endpoint = \"laptop.example.net:4000\"\n"
    );
    let (dir, got) = parse_in("good", &text);
    let c = got.expect("valid");
    assert_eq!(c.source, dir.join("kith.toml"));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.interface.name, config::DEFAULT_INTERFACE);
    assert_eq!(c.interface.address, "100.96.0.1/16".parse().unwrap());
    assert_eq!(c.interface.listen_port, config::DEFAULT_LISTEN_PORT);
    assert_eq!(c.interface.mtu, config::DEFAULT_MTU);
    assert_eq!(c.interface.private_key.public(), own().public());
    assert_eq!(c.peers.len(), 2);
    assert_eq!(c.peers[0].name, "nas");
    assert_eq!(c.peers[0].public_key.to_string(), pk(2));
    assert_eq!(c.peers[0].allowed_ips.len(), 2);
    assert_eq!(
        c.peers[0].endpoint,
        Some(config::Endpoint::Addr("198.18.0.10:51871".parse().unwrap()))
    );
    assert_eq!(
        c.peers[0].keepalive,
        Some(std::time::Duration::from_secs(90))
    );
    assert_eq!(
        c.peers[1].endpoint,
        Some(config::Endpoint::Host {
            host: "laptop.example.net".into(),
            port: 4000
        })
    );
    assert_eq!(c.peers[1].keepalive, None);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn zero_peers_and_inline_key_are_valid() {
    let path = Path::new("/nonexistent/kith.toml");
    let text = fill(
        "[interface]\naddress = \"100.96.0.1/16\"\nprivate_key = \"{SK}\"\n",
        Path::new("/"),
    );
    let c = config::parse(path, &text).expect("valid");
    assert!(c.peers.is_empty());
    assert_eq!(c.interface.private_key.public(), own().public());
}

#[test]
fn unreadable_config_file_names_it() {
    let err = config::load(Path::new("/nonexistent/kith.toml")).unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.starts_with("/nonexistent/kith.toml: cannot read config file"),
        "{shown}"
    );
}
