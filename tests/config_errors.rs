//! Bad config files and exactly what `config::parse` must say about them.
//!
//! Each row is a config text, written to its own temp directory next to a
//! valid private key file `key` and network secret file `secret` (mode 0600)
//! and some bad secret files, and the full list of expected errors as (line,
//! column, key path, message substring). Rows about other things get
//! `[discovery] dht = false` appended (after their last line, so the lines
//! they name do not move); rows about `[network]`/`[discovery]` give the
//! whole text. Placeholders in
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

/// A fresh directory holding a valid `key` file and `secret` file (mode
/// 0600), and the bad secret files `short.secret` (3 bytes),
/// `garbage.secret` (not base64) and `big.secret` (over 1 KiB).
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kith-config-errors-{}-{tag}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    write_key(&dir.join("key"), 0o600);
    write_secret(&dir.join("secret"), &secret_b64(), 0o600);
    write_secret(&dir.join("short.secret"), "AAAA\n", 0o600);
    write_secret(&dir.join("garbage.secret"), "not base64!\n", 0o600);
    write_secret(&dir.join("big.secret"), &"A".repeat(2000), 0o600);
    dir
}

/// The network secret the good `secret` file holds: 32 bytes of 9, as
/// `kith genkey` would print it.
fn secret_b64() -> String {
    SecretKey::from_seed([9; 32]).to_base64() + "\n"
}

fn write_secret(path: &Path, text: &str, mode: u32) {
    fs::write(path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }
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
/// Appended to rows about something else: without a `[network] id` the DHT
/// (on by default) is an error.
const NO_DHT: &str = "\n[discovery]\ndht = false\n";
/// `[network]` lines that are valid (lines 4-5 after [`IFACE`]).
const NET: &str = "[network]\nid = \"home\"\n";

type Expect = (usize, usize, &'static str, &'static str);

struct Row {
    name: &'static str,
    text: String,
    errors: Vec<Expect>,
}

/// A row about something else than the DHT: `text` with [`NO_DHT`] appended.
fn row(name: &'static str, text: &str, errors: &[Expect]) -> Row {
    exact(name, &format!("{text}{NO_DHT}"), errors)
}

/// A row whose text is exactly `text`.
fn exact(name: &'static str, text: &str, errors: &[Expect]) -> Row {
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

/// Like [`with_iface`], but `rest` is the rest of the file exactly.
fn iface_exact(name: &'static str, rest: &str, errors: &[Expect]) -> Row {
    exact(name, &format!("{IFACE}{rest}"), errors)
}

fn rows() -> Vec<Row> {
    vec![
        row(
            "syntax",
            "[interface]\naddress = = \"x\"\n",
            &[(
                2,
                11,
                "interface.address",
                "TOML syntax error in the value of `address`",
            )],
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
            "address of the wrong type",
            "[interface]\naddress = 5\nprivate_key_file = \"key\"\n",
            &[(
                2,
                11,
                "interface.address",
                "expected a string or an array of strings, got integer `5`",
            )],
        ),
        row(
            "empty address list",
            "[interface]\naddress = []\nprivate_key_file = \"key\"\n",
            &[(2, 11, "interface.address", "the address list is empty")],
        ),
        row(
            "bad entry in an address list",
            "[interface]\naddress = [\"100.96.0.1/16\", \"fd00::zz/64\"]\nprivate_key_file = \"key\"\n",
            &[(
                2,
                29,
                "interface.address[1]",
                "expected a CIDR like \"100.96.0.1/16\", got \"fd00::zz/64\"",
            )],
        ),
        row(
            "address list entry of the wrong type",
            "[interface]\naddress = [\"100.96.0.1/16\", 5]\nprivate_key_file = \"key\"\n",
            &[(
                2,
                29,
                "interface.address[1]",
                "expected a string, got integer `5`",
            )],
        ),
        row(
            "two IPv4 addresses",
            "[interface]\naddress = [\"100.96.0.1/16\", \"100.97.0.1/16\"]\nprivate_key_file = \"key\"\n",
            &[(
                2,
                29,
                "interface.address[1]",
                "a second IPv4 address (100.97.0.1/16; 100.96.0.1/16 is on line 2): the \
                 interface takes one IPv4 and one IPv6 address; remove one",
            )],
        ),
        row(
            "mtu too small for an ipv6 address in a list",
            "[interface]\naddress = [\"100.96.0.1/16\", \"fd00:6b69::1/64\"]\nprivate_key_file = \"key\"\nmtu = 1000\n",
            &[(4, 7, "interface.mtu", "below 1280, the minimum for IPv6")],
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
            "public key of low order",
            "[[peer]]\nname = \"nas\"\npublic_key = \"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\nallowed_ips = []\n",
            &[(
                6,
                14,
                "peer[0].public_key",
                "a low-order point, not a real public key",
            )],
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
            "same prefix on two peers",
            "[[peer]]\nname = \"nas\"\npublic_key = \"{PK2}\"\nallowed_ips = [\"100.96.0.2/32\", \"100.96.1.0/24\"]\n\
             [[peer]]\nname = \"laptop\"\npublic_key = \"{PK3}\"\nallowed_ips = [\"100.96.1.0/24\"]\n",
            &[(
                11,
                16,
                "peer[1].allowed_ips[0]",
                "allowed_ips 100.96.1.0/24 is also listed for peer \"nas\" (peer[0].allowed_ips[1], line 7); an address may route to only one peer",
            )],
        ),
        with_iface(
            "same prefix twice in a peer",
            "[[peer]]\nname = \"nas\"\npublic_key = \"{PK2}\"\nallowed_ips = [\"10.0.0.0/8\", \"10.0.0.0/8\"]\n",
            &[(
                7,
                30,
                "peer[0].allowed_ips[1]",
                "10.0.0.0/8 is listed twice (also peer[0].allowed_ips[0], line 7)",
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
        // [network] and [discovery]
        iface_exact(
            "network table without id, dht by default",
            "[network]\n[discovery]\nstun = []\n",
            &[(
                5,
                1,
                "network.id",
                "missing [network] id, which the DHT needs to find your peers ([discovery] dht is \
                 true by default when there is a [network] table): set id = \"home\" (any name \
                 shared by your nodes) under [network], or set [discovery] dht = false to use \
                 only static endpoints",
            )],
        ),
        iface_exact(
            "no network table: a peer without endpoint",
            "[[peer]]\nname = \"nas\"\npublic_key = \"{PK2}\"\nallowed_ips = []\n\
             [[peer]]\nname = \"vps\"\npublic_key = \"{PK3}\"\nallowed_ips = []\nendpoint = \"198.18.0.3:51871\"\n",
            &[(
                4,
                1,
                "peer[0].endpoint",
                "peer[0] has no endpoint, and without a [network] table the DHT is off, so \
                 nothing can find it: add `[network] id = \"...\"` (peers found through the \
                 DHT) or an `endpoint = \"host:port\"` to this peer",
            )],
        ),
        iface_exact(
            "dht = true without network id",
            "[discovery]\ndht = true\n",
            &[(
                4,
                1,
                "network.id",
                "missing [network] id, which the DHT needs to find your peers ([discovery] dht = true)",
            )],
        ),
        iface_exact(
            "network table without id",
            "[network]\nsecret_file = \"secret\"\n",
            &[(1, 1, "network.id", "missing [network] id")],
        ),
        iface_exact(
            "network id with a space",
            "[network]\nid = \"my home\"\n",
            &[(
                5,
                6,
                "network.id",
                "network id \"my home\" contains ' '; use 1 to 64 letters, digits, '.', '_' or '-'",
            )],
        ),
        iface_exact(
            "network id with a slash",
            "[network]\nid = \"home/lan\"\n",
            &[(5, 6, "network.id", "network id \"home/lan\" contains '/'")],
        ),
        iface_exact(
            "network id too long",
            &format!("[network]\nid = \"{}\"\n", "x".repeat(65)),
            &[(
                5,
                6,
                "network.id",
                "network id is 65 characters long, at most 64 are allowed",
            )],
        ),
        iface_exact(
            "network id empty",
            "[network]\nid = \"\"\n",
            &[(5, 6, "network.id", "network id is empty")],
        ),
        iface_exact(
            "network id not a string",
            "[network]\nid = 5\n",
            &[(5, 6, "network.id", "expected a string, got integer `5`")],
        ),
        iface_exact(
            "secret file missing",
            &format!("{NET}secret_file = \"nope.secret\"\n"),
            &[(
                6,
                15,
                "network.secret_file",
                "cannot read network secret file \"{DIR}/nope.secret\": No such file or directory \
                 (os error 2); check the path (a relative path is resolved against the config \
                 file's directory) or create the secret with `kith genkey --network > network.secret`",
            )],
        ),
        iface_exact(
            "secret file is a directory",
            &format!("{NET}secret_file = \"{{DIR}}\"\n"),
            &[(
                6,
                15,
                "network.secret_file",
                "network secret file \"{DIR}\" is not a regular file; point secret_file at the \
                 file written by `kith genkey --network > network.secret`",
            )],
        ),
        iface_exact(
            "secret file wrong length",
            &format!("{NET}secret_file = \"short.secret\"\n"),
            &[(
                6,
                15,
                "network.secret_file",
                "network secret file \"{DIR}/short.secret\" does not hold a valid secret: decodes \
                 to 3 bytes, a secret is 32 bytes; regenerate it with `kith genkey --network > network.secret`",
            )],
        ),
        iface_exact(
            "secret file not base64",
            &format!("{NET}secret_file = \"garbage.secret\"\n"),
            &[(
                6,
                15,
                "network.secret_file",
                "does not hold a valid secret: not valid base64 (expected 44 characters",
            )],
        ),
        iface_exact(
            "secret file too large",
            &format!("{NET}secret_file = \"big.secret\"\n"),
            &[(
                6,
                15,
                "network.secret_file",
                "network secret file \"{DIR}/big.secret\" is too large to hold a secret",
            )],
        ),
        iface_exact(
            "unknown key in network",
            "[network]\nidd = \"home\"\n",
            // The suggestion stands in for the "missing id" error.
            &[(
                5,
                1,
                "network.idd",
                "unknown key \"idd\"; did you mean \"id\"?",
            )],
        ),
        iface_exact(
            "unknown key in discovery",
            &format!("{NET}[discovery]\ndht = false\nbootstrp = []\n"),
            &[(
                8,
                1,
                "discovery.bootstrp",
                "unknown key \"bootstrp\"; did you mean \"bootstrap\"?",
            )],
        ),
        iface_exact(
            "unknown key in discovery, dht_server",
            &format!("{NET}[discovery]\ndht_sever = true\n"),
            &[(
                7,
                1,
                "discovery.dht_sever",
                "unknown key \"dht_sever\"; did you mean \"dht_server\"?",
            )],
        ),
        iface_exact(
            "dht not a boolean",
            "[discovery]\ndht = \"no\"\n",
            // The type error stands in for the "missing id" error.
            &[(
                5,
                7,
                "discovery.dht",
                "expected a boolean, got string \"no\"",
            )],
        ),
        iface_exact(
            "bootstrap entry without port",
            &format!(
                "{NET}[discovery]\nbootstrap = [\"198.18.0.1:6881\", \"router.bittorrent.com\"]\n"
            ),
            &[(
                7,
                33,
                "discovery.bootstrap[1]",
                "invalid bootstrap node \"router.bittorrent.com\": missing port; write \"host:port\"",
            )],
        ),
        iface_exact(
            "bootstrap entry port zero",
            &format!("{NET}[discovery]\nbootstrap = [\"dht.example.net:0\"]\n"),
            &[(
                7,
                14,
                "discovery.bootstrap[0]",
                "invalid bootstrap node \"dht.example.net:0\": port 0 is not allowed",
            )],
        ),
        iface_exact(
            "bootstrap entry bad host",
            &format!("{NET}[discovery]\nbootstrap = [\"not a host:6881\"]\n"),
            &[(
                7,
                14,
                "discovery.bootstrap[0]",
                "\"not a host\" is not a valid IP address or DNS name",
            )],
        ),
        iface_exact(
            "stun entry without port",
            &format!("{NET}[discovery]\nstun = [\"198.18.0.3:3478\", \"stun.example.net\"]\n"),
            &[(
                7,
                28,
                "discovery.stun[1]",
                "invalid STUN server \"stun.example.net\": missing port; write \"host:port\"",
            )],
        ),
        iface_exact(
            "stun entry port zero",
            &format!("{NET}[discovery]\nstun = [\"stun.example.net:0\"]\n"),
            &[(
                7,
                9,
                "discovery.stun[0]",
                "invalid STUN server \"stun.example.net:0\": port 0 is not allowed; give the STUN server's UDP port",
            )],
        ),
        iface_exact(
            "port_mapping not a boolean",
            &format!("{NET}[discovery]\nport_mapping = \"yes\"\n"),
            &[(7, 16, "discovery.port_mapping", "expected a boolean")],
        ),
        iface_exact(
            "bootstrap empty with dht on",
            &format!("{NET}[discovery]\nbootstrap = []\n"),
            &[(
                7,
                13,
                "discovery.bootstrap",
                "bootstrap is empty, so the DHT has no node to start from; list at least one \
                 \"host:port\" (or remove the key to use the public bootstrap nodes), or set \
                 dht = false",
            )],
        ),
        exact(
            "dht_port equals listen_port",
            &format!("{IFACE}listen_port = 7000\n{NET}[discovery]\ndht_port = 7000\n"),
            &[(
                8,
                12,
                "discovery.dht_port",
                "dht_port 7000 is the same as [interface] listen_port (line 4); the DHT node has \
                 its own UDP socket, so choose another port, or 0 for any free port",
            )],
        ),
        iface_exact(
            "dht_port equals the default listen_port",
            &format!("{NET}[discovery]\ndht_port = 51871\n"),
            &[(
                7,
                12,
                "discovery.dht_port",
                "dht_port 51871 is the same as [interface] listen_port (the default)",
            )],
        ),
        iface_exact(
            "dht_port out of range",
            &format!("{NET}[discovery]\ndht_port = 70000\n"),
            &[(
                7,
                12,
                "discovery.dht_port",
                "dht_port must be between 0 and 65535",
            )],
        ),
        iface_exact(
            "state_dir empty",
            &format!("{NET}[discovery]\nstate_dir = \"\"\n"),
            &[(7, 13, "discovery.state_dir", "state_dir is empty")],
        ),
        with_iface(
            "relay via names no peer, with a suggestion",
            "[relay]\nvia = [\"nass\"]\n[[peer]]\nname = \"nas\"\npublic_key = \"{PK2}\"\nallowed_ips = []\n",
            &[(
                5,
                8,
                "relay.via[0]",
                "no peer is named \"nass\"; did you mean \"nas\"?",
            )],
        ),
        with_iface(
            "relay via names no peer at all",
            "[relay]\nvia = [\"vps\"]\n",
            &[(
                5,
                8,
                "relay.via[0]",
                "no peer is named \"vps\"; a relay must also be a [[peer]]",
            )],
        ),
        with_iface(
            "relay via lists a peer twice",
            "[relay]\nvia = [\"nas\", \"nas\"]\n[[peer]]\nname = \"nas\"\npublic_key = \"{PK2}\"\nallowed_ips = []\n",
            &[(5, 15, "relay.via[1]", "\"nas\" is listed twice")],
        ),
        with_iface(
            "relay tcp_port 0",
            "[relay]\nserve = true\ntcp_port = 0\n",
            &[(
                6,
                12,
                "relay.tcp_port",
                "tcp_port must be between 1 and 65535, got 0 (443 passes most firewalls)",
            )],
        ),
        with_iface(
            "relay rate with an unknown unit",
            "[relay]\nserve = true\nrate = \"20 mbps\"\n",
            &[(
                6,
                8,
                "relay.rate",
                "invalid rate \"20 mbps\": unknown unit \"mbps\"; use bit/s, kbit/s, Mbit/s",
            )],
        ),
        with_iface(
            "relay max_rate without a unit",
            "[relay]\nserve = true\nmax_rate = \"200\"\n",
            &[(6, 12, "relay.max_rate", "the rate needs a unit")],
        ),
        with_iface(
            "relay key misspelt",
            "[relay]\nserv = true\n",
            &[(5, 1, "relay.serv", "did you mean \"serve\"")],
        ),
        with_iface(
            "metrics listen without a port",
            "[metrics]\nlisten = \"9586\"\n",
            &[(
                5,
                10,
                "metrics.listen",
                "invalid listen address \"9586\": write an IP address and a TCP port, e.g. listen = \"127.0.0.1:9586\"",
            )],
        ),
        with_iface(
            "metrics listen given as a name",
            "[metrics]\nlisten = \"localhost:9586\"\n",
            &[(
                5,
                10,
                "metrics.listen",
                "names are not resolved here; write an IP address, e.g. listen = \"127.0.0.1:9586\"",
            )],
        ),
        with_iface(
            "metrics listen port 0",
            "[metrics]\nlisten = \"127.0.0.1:0\"\n",
            &[(
                5,
                10,
                "metrics.listen",
                "listen port 0 would pick a random port",
            )],
        ),
        with_iface(
            "metrics listen on the relay's tcp_port",
            "[relay]\nserve = true\ntcp_port = 9586\n[metrics]\nlisten = \"127.0.0.1:9586\"\n",
            &[(
                8,
                10,
                "metrics.listen",
                "port 9586 is also [relay] tcp_port",
            )],
        ),
        with_iface(
            "metrics key misspelt",
            "[metrics]\nlisen = \"127.0.0.1:9586\"\n",
            &[(5, 1, "metrics.lisen", "did you mean \"listen\"")],
        ),
        with_iface(
            "peer tcp_port out of range",
            "[[peer]]\nname = \"nas\"\npublic_key = \"{PK2}\"\nallowed_ips = []\ntcp_port = 70000\n",
            &[(
                8,
                12,
                "peer[0].tcp_port",
                "tcp_port must be between 1 and 65535, got 70000 (its [relay] tcp_port)",
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

[discovery]
dht = false
bootstrap = [\"nope\"]
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
            (22, 14, "discovery.bootstrap[0]"),
        ],
        "{errors:#?}"
    );
    // Display: one error per line, `file:line:col: key: message`.
    let shown = ConfigErrors(errors).to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 10);
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
    let text = format!(
        "[interface]\naddress = \"100.96.0.1/16\"\nprivate_key = \"AAAA\"\nprivate_key_file = \"key\"\n{NO_DHT}"
    );
    let (dir, got) = parse_in("both-keys", &text);
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
fn world_readable_key_file_is_refused() {
    let dir = temp_dir("world-readable");
    let key = dir.join("open.key");
    write_key(&key, 0o644);
    let path = dir.join("kith.toml");
    let text = format!(
        "[interface]\naddress = \"100.96.0.1/16\"\nprivate_key_file = \"open.key\"\n{NO_DHT}"
    );
    let err = config::parse(&path, &text).expect_err("a readable key is refused");
    let shown = err.to_string();
    assert!(
        shown.contains(":3:20: interface.private_key_file: "),
        "{shown}"
    );
    assert!(shown.contains(&key.display().to_string()), "{shown}");
    assert!(shown.contains("mode 644"), "{shown}");
    assert!(shown.contains("chmod 600"), "{shown}");
    write_key(&key, 0o600);
    let config = config::parse(&path, &text).expect("the same key at 0600 is fine");
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn defaults_and_values_of_a_good_file() {
    let text = format!(
        "{IFACE}{NET}\n[[peer]]\nname = \"nas\"\npublic_key = \"{{PK2}}\"\n\
         allowed_ips = [\"100.96.0.2/32\", \"192.168.50.0/24\"]\n\
         endpoint = \"198.18.0.10:51871\"\nkeepalive = \"1m30s\"\n\
         [[peer]]\nname = \"laptop\"\npublic_key = \"{{PK3}}\"\nallowed_ips = [\"fd00::/64\"]\n\
         endpoint = \"laptop.example.net:4000\"\n"
    );
    let (dir, got) = parse_in("good", &text);
    let c = got.expect("valid");
    assert_eq!(c.source, dir.join("kith.toml"));
    // The DHT is on (the default) and there is no secret: said once, at
    // the [network] table, with the command that makes one.
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(
        c.warnings[0].contains(
            ":4:1: network.secret_file: the DHT is on without a network secret: DHT nodes \
             storing this node's record see its public key, IP address and the network's salt, \
             and anyone who guesses the network id can read the record"
        ),
        "{:?}",
        c.warnings
    );
    assert!(
        c.warnings[0].ends_with(
            "`kith genkey --network > /etc/kith/network.secret`, copy it to every node and set \
             secret_file = \"/etc/kith/network.secret\" under [network]"
        ),
        "{:?}",
        c.warnings
    );
    assert_eq!(c.interface.name, config::DEFAULT_INTERFACE);
    assert_eq!(c.interface.addresses, ["100.96.0.1/16".parse().unwrap()]);
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
    // [network] id given, no secret; [discovery] absent: all defaults.
    assert_eq!(c.network.id.as_deref(), Some("home"));
    assert_eq!(c.network.secret, None);
    let d = config::Discovery::default();
    assert!(c.discovery.dht);
    assert_eq!(c.discovery.bootstrap, config::DEFAULT_BOOTSTRAP);
    assert_eq!(c.discovery.dht_port, 0);
    assert_eq!(c.discovery.state_dir, Path::new(config::DEFAULT_STATE_DIR));
    assert!(!c.discovery.dht_server);
    assert_eq!(c.discovery.stun, config::DEFAULT_STUN);
    assert!(c.discovery.port_mapping);
    assert_eq!(
        (d.dht, d.dht_port, d.dht_server, d.bootstrap.len()),
        (true, 0, false, config::DEFAULT_BOOTSTRAP.len())
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn network_and_discovery_values() {
    let text = format!(
        "{IFACE}[network]\nid = \"Home-1.lan_x\"\nsecret_file = \"secret\"\n\
         [discovery]\ndht = true\nbootstrap = [\"198.18.0.1:6881\", \"[2001:db8::1]:6881\", \"dht.example.net:25401\"]\n\
         dht_port = 6881\nstate_dir = \"state\"\ndht_server = true\n\
         stun = [\"198.18.0.3:3478\", \"stun.example.net:3478\"]\nport_mapping = false\n"
    );
    let (dir, got) = parse_in("net-disc", &text);
    let c = got.expect("valid");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.network.id.as_deref(), Some("Home-1.lan_x"));
    assert_eq!(
        c.network.secret,
        Some(kith::identity::NetworkSecret([9; 32]))
    );
    assert!(c.discovery.dht && c.discovery.dht_server);
    // An explicit list replaces the defaults, kept as written.
    assert_eq!(
        c.discovery.bootstrap,
        [
            "198.18.0.1:6881",
            "[2001:db8::1]:6881",
            "dht.example.net:25401"
        ]
    );
    assert_eq!(c.discovery.dht_port, 6881);
    assert_eq!(
        c.discovery.stun,
        ["198.18.0.3:3478", "stun.example.net:3478"]
    );
    assert!(!c.discovery.port_mapping);
    // A relative state_dir is resolved against the config file's directory.
    assert_eq!(c.discovery.state_dir, dir.join("state"));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn dht_off_needs_no_network_and_allows_empty_bootstrap() {
    let text =
        format!("{IFACE}[discovery]\ndht = false\nbootstrap = []\nstate_dir = \"/srv/kith\"\n");
    let (dir, got) = parse_in("dht-off", &text);
    let c = got.expect("valid");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert!(!c.discovery.dht);
    assert!(c.discovery.bootstrap.is_empty());
    assert_eq!(c.discovery.state_dir, Path::new("/srv/kith"));
    // An empty STUN list turns STUN off; it is not an error.
    let (dir3, got) = parse_in(
        "stun-off",
        &format!("{IFACE}[discovery]\ndht = false\nstun = []\n"),
    );
    assert!(got.expect("valid").discovery.stun.is_empty());
    let _ = fs::remove_dir_all(&dir3);
    assert_eq!(c.network.id, None);
    assert_eq!(c.network.secret, None);
    // dht_port = listen_port is a conflict only when non-zero.
    let text = format!("{IFACE}listen_port = 0\n{NET}[discovery]\ndht_port = 0\n");
    let (dir2, got) = parse_in("both-zero", &text);
    got.expect("both ports 0 is valid");
    let _ = fs::remove_dir_all(&dir);
    let _ = fs::remove_dir_all(&dir2);
}

#[test]
fn metrics_listen_values_and_warnings() {
    let (dir, got) = parse_in(
        "metrics-local",
        &format!("{IFACE}[metrics]\nlisten = \"127.0.0.1:9586\"\n{NO_DHT}"),
    );
    let c = got.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.metrics.listen, Some("127.0.0.1:9586".parse().unwrap()));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let _ = fs::remove_dir_all(&dir);

    // Absent: no listener.
    let (dir, got) = parse_in("metrics-none", &format!("{IFACE}{NO_DHT}"));
    assert_eq!(got.unwrap_or_else(|e| panic!("{e}")).metrics.listen, None);
    let _ = fs::remove_dir_all(&dir);

    // Reachable from other hosts: allowed, with a warning that says why not.
    let (dir, got) = parse_in(
        "metrics-open",
        &format!("{IFACE}[metrics]\nlisten = \"[::]:9586\"\n{NO_DHT}"),
    );
    let c = got.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.metrics.listen, Some("[::]:9586".parse().unwrap()));
    let w = c.warnings.join("\n");
    assert!(
        w.contains(":5:10: metrics.listen: [::]:9586 is reachable from other hosts")
            && w.contains("keep the listener on localhost"),
        "{w}"
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn relay_values_and_warnings() {
    let text = format!(
        "{IFACE}[relay]\nserve = true\ntcp_port = 443\nvia = [\"vps\", \"nas\"]\n\
         rate = \"20 Mbit/s\"\nmax_rate = \"200 Mbit/s\"\n{NO_DHT}\
         [[peer]]\nname = \"nas\"\npublic_key = \"{}\"\nallowed_ips = []\n\
         [[peer]]\nname = \"vps\"\npublic_key = \"{}\"\nallowed_ips = []\ntcp_port = 443\n",
        pk(2),
        pk(3)
    );
    let (dir, got) = parse_in("relay-values", &text);
    let c = got.unwrap_or_else(|e| panic!("{e}"));
    assert!(c.relay.serve);
    assert_eq!(c.relay.tcp_port, Some(443));
    assert_eq!(c.relay.via, ["vps", "nas"], "in the order written");
    assert_eq!(c.relay.rate, Some(2_500_000), "bytes per second");
    assert_eq!(c.relay.max_rate, Some(25_000_000));
    assert_eq!(c.peers[1].tcp_port, Some(443));
    assert_eq!(c.peers[0].tcp_port, None);
    // vps has a tcp_port but no endpoint to connect to.
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(
        c.warnings[0].contains("peer[1].tcp_port: tcp_port has no effect without an endpoint"),
        "{:?}",
        c.warnings
    );
    let _ = fs::remove_dir_all(&dir);

    // No [relay]: nothing served, nothing listed.
    let (dir, got) = parse_in("relay-default", &format!("{IFACE}{NO_DHT}"));
    let c = got.unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.relay.serve && c.relay.via.is_empty() && c.relay.rate.is_none());
    let _ = fs::remove_dir_all(&dir);

    // Limits without serving do nothing, and a per-member rate above the
    // total is capped by it: warnings, not errors.
    let text =
        format!("{IFACE}[relay]\nrate = \"300 Mbit/s\"\nmax_rate = \"200 Mbit/s\"\n{NO_DHT}");
    let (dir, got) = parse_in("relay-warnings", &text);
    let c = got.unwrap_or_else(|e| panic!("{e}"));
    let w = c.warnings.join("\n");
    assert_eq!(c.warnings.len(), 3, "{w}");
    assert!(
        w.contains(":5:8: relay.rate: rate has no effect without serve = true"),
        "{w}"
    );
    assert!(
        w.contains(":6:12: relay.max_rate: max_rate has no effect"),
        "{w}"
    );
    assert!(
        w.contains("rate 300 Mbit/s per member is above max_rate 200 Mbit/s"),
        "{w}"
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn dht_server_without_dht_is_a_warning() {
    let text = format!("{IFACE}[discovery]\ndht = false\ndht_server = true\n");
    let (dir, got) = parse_in("server-no-dht", &text);
    let c = got.expect("valid");
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(
        c.warnings[0].ends_with(
            ":6:14: discovery.dht_server: dht_server = true has no effect with dht = false"
        ),
        "{:?}",
        c.warnings
    );
    let _ = fs::remove_dir_all(&dir);
}

#[cfg(unix)]
#[test]
fn world_readable_secret_file_is_refused() {
    let dir = temp_dir("open-secret");
    let secret = dir.join("open.secret");
    write_secret(&secret, &secret_b64(), 0o640);
    let path = dir.join("kith.toml");
    let text = format!("{IFACE}{NET}secret_file = \"open.secret\"\n");
    let err = config::parse(&path, &text).expect_err("a readable secret is refused");
    let shown = err.to_string();
    assert!(
        shown.contains(":6:15: network.secret_file: network secret file "),
        "{shown}"
    );
    assert!(shown.contains(&secret.display().to_string()), "{shown}");
    assert!(shown.contains("mode 640"), "{shown}");
    assert!(shown.contains("chmod 600"), "{shown}");
    assert!(
        !shown.contains(&secret_b64()),
        "never echo the secret: {shown}"
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn zero_peers_and_inline_key_are_valid() {
    let path = Path::new("/nonexistent/kith.toml");
    let text = fill(
        &format!("[interface]\naddress = \"100.96.0.1/16\"\nprivate_key = \"{{SK}}\"\n{NO_DHT}"),
        Path::new("/"),
    );
    let c = config::parse(path, &text).expect("valid");
    assert!(c.peers.is_empty());
    assert_eq!(c.interface.private_key.public(), own().public());
}

#[test]
fn an_ipv4_and_an_ipv6_address_in_a_list() {
    let path = Path::new("/nonexistent/kith.toml");
    let text = fill(
        &format!(
            "[interface]\naddress = [\"100.96.0.1/16\", \"fd00:6b69::1/64\"]\nprivate_key = \"{{SK}}\"\n{NO_DHT}"
        ),
        Path::new("/"),
    );
    let c = config::parse(path, &text).expect("valid");
    let shown: Vec<String> = c
        .interface
        .addresses
        .iter()
        .map(|a| a.to_string())
        .collect();
    assert_eq!(shown, ["100.96.0.1/16", "fd00:6b69::1/64"]);
    // One string is still one address.
    let one = text.replace(
        "[\"100.96.0.1/16\", \"fd00:6b69::1/64\"]",
        "\"fd00:6b69::1/64\"",
    );
    let c = config::parse(path, &one).expect("valid");
    assert_eq!(c.interface.addresses, ["fd00:6b69::1/64".parse().unwrap()]);
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

#[test]
fn nested_prefixes_on_two_peers_are_valid() {
    // An exit node's default route beside a NAS's own address and LAN:
    // routed by longest prefix, not an overlap error.
    let text = format!(
        "{IFACE}[[peer]]\nname = \"exit\"\npublic_key = \"{{PK2}}\"\nallowed_ips = [\"100.96.0.2/32\", \"0.0.0.0/0\"]\n\
         [[peer]]\nname = \"nas\"\npublic_key = \"{{PK3}}\"\nallowed_ips = [\"100.96.0.3/32\", \"192.168.50.0/24\"]\n{NO_DHT}"
    );
    let (dir, got) = parse_in("nested", &text);
    let config = got.unwrap_or_else(|e| panic!("nested prefixes must parse: {e}"));
    let nets: Vec<String> = config
        .peers
        .iter()
        .flat_map(|p| p.allowed_ips.iter().map(|n| n.to_string()))
        .collect();
    assert_eq!(
        nets,
        [
            "100.96.0.2/32",
            "0.0.0.0/0",
            "100.96.0.3/32",
            "192.168.50.0/24"
        ]
    );
    let _ = fs::remove_dir_all(&dir);
}

/// A WireGuard-style file (no `[network]`, no `dht` key) is valid: the DHT
/// is off and says so once; an explicit `dht = false` file is not marked
/// (its author chose it), and its peers may still wait to be called.
#[test]
fn no_network_table_means_static_endpoints_only() {
    let peers = "[[peer]]\nname = \"nas\"\npublic_key = \"{PK2}\"\nallowed_ips = [\"100.96.0.2/32\"]\n\
                 endpoint = \"198.18.0.2:51871\"\n";
    for (tag, text) in [
        ("static", format!("{IFACE}{peers}")),
        // [discovery] without `dht` keeps the WireGuard default.
        (
            "static-disc",
            format!("{IFACE}[discovery]\nbootstrap = []\nstun = []\n{peers}"),
        ),
    ] {
        let (dir, got) = parse_in(tag, &text);
        let c = got.unwrap_or_else(|e| panic!("{tag}: {e}"));
        assert!(c.static_only, "{tag}");
        assert!(!c.discovery.dht, "{tag}");
        assert_eq!(
            c.static_only_note(),
            Some("no [network] table: DHT off, static endpoints only (like WireGuard)")
        );
        assert!(c.warnings.is_empty(), "{tag}: {:?}", c.warnings);
        let _ = fs::remove_dir_all(&dir);
    }

    let text = format!(
        "{IFACE}[[peer]]\nname = \"nas\"\npublic_key = \"{{PK2}}\"\nallowed_ips = []\n{NO_DHT}"
    );
    let (dir, got) = parse_in("explicit-off", &text);
    let c = got.expect("dht = false with a peer that calls in is valid");
    assert!(!c.static_only && !c.discovery.dht);
    assert_eq!(c.static_only_note(), None);
    assert_eq!(c.peers[0].endpoint, None);
    let _ = fs::remove_dir_all(&dir);

    // A [network] table turns the DHT back on by default.
    let (dir, got) = parse_in("with-net", &format!("{IFACE}{NET}"));
    let c = got.expect("valid");
    assert!(!c.static_only && c.discovery.dht);
    let _ = fs::remove_dir_all(&dir);
}
