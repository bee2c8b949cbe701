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

/// `kith genkey --network > file` makes the secret of a new setup: 32
/// random bytes in base64, in a 0600 file; `check-config` warns about a
/// DHT-on file until `secret_file` names it.
#[test]
fn genkey_network_writes_a_secret_file_that_silences_the_warning() {
    let dir = std::env::temp_dir().join(format!("kith-cli-net-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("network.secret");
    let make = |path: &std::path::Path| {
        let file = std::fs::File::create(path).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let status = Command::new(KITH)
            .args(["genkey", "--network"])
            .stdout(file)
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::read_to_string(path).unwrap()
    };
    let text = make(&secret);
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o600,
        "kith genkey --network > file must leave it 0600"
    );
    let parsed: kith::identity::NetworkSecret = text.trim().parse().unwrap();
    assert_eq!(text.trim().len(), 44, "{text:?}");
    let again: kith::identity::NetworkSecret =
        make(&dir.join("other.secret")).trim().parse().unwrap();
    assert_ne!(parsed, again, "two runs give different secrets");

    let key = kith::identity::SecretKey::from_seed([5; 32]).to_base64();
    let conf = dir.join("kith.toml");
    let base = format!(
        "[interface]\naddress = \"100.96.0.1/16\"\nprivate_key = \"{key}\"\n[network]\nid = \"home\"\n"
    );
    std::fs::write(&conf, &base).unwrap();
    let (code, out, err) = run(&["check-config", conf.to_str().unwrap()], "");
    assert_eq!((code, out.trim()), (0, "ok"), "{err}");
    assert!(
        err.contains(":4:1: network.secret_file: the DHT is on without a network secret")
            && err.starts_with("warning: "),
        "{err}"
    );
    std::fs::write(&conf, format!("{base}secret_file = \"network.secret\"\n")).unwrap();
    let (code, out, err) = run(&["check-config", conf.to_str().unwrap()], "");
    assert_eq!((code, out.trim()), (0, "ok"), "{err}");
    assert!(!err.contains("warning"), "{err}");
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

    // No [network] table: WireGuard-style, valid, and says the DHT is off.
    let no_net = dir.join("no-net.toml");
    std::fs::write(
        &no_net,
        format!("[interface]\naddress = \"100.96.0.1/16\"\nprivate_key = \"{key}\"\n"),
    )
    .unwrap();
    let (code, out, err) = run(&["check-config", no_net.to_str().unwrap()], "");
    assert_eq!((code, out.trim()), (0, "ok"), "{err}");
    assert!(
        err.contains("note: no [network] table: DHT off, static endpoints only (like WireGuard)"),
        "{err}"
    );

    // Asking for the DHT without a [network] id is still an error.
    let no_id = dir.join("no-id.toml");
    std::fs::write(
        &no_id,
        format!(
            "[interface]\naddress = \"100.96.0.1/16\"\nprivate_key = \"{key}\"\n\
             [discovery]\ndht = true\n"
        ),
    )
    .unwrap();
    let (code, _, err) = run(&["check-config", no_id.to_str().unwrap()], "");
    assert_ne!(code, 0);
    let located = format!("{}:4:1: network.id: missing [network] id", no_id.display());
    assert!(err.contains(&located), "expected {located:?} in:\n{err}");
    assert!(err.contains("dht = false"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn invalid_config_exits_78_and_other_failures_1() {
    let dir = std::env::temp_dir().join(format!("kith-cli-exit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = kith::identity::SecretKey::from_seed([7; 32]).to_base64();
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        format!(
            "[interface]\naddress = \"100.96.0.1/16\"\nprivate_key = \"{key}\"\n\
             [discovery]\ndht = false\n"
        ),
    )
    .unwrap();
    let (code, out, err) = run(&["check-config", good.to_str().unwrap()], "");
    assert_eq!((code, out.trim()), (0, "ok"), "{err}");

    // Two errors: both printed, and EX_CONFIG, from check-config and up.
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "[interface]\naddress = \"100.96.0.300/16\"\nprivate_key = \"{key}\"\nmtu = 10\n\
             [discovery]\ndht = false\n"
        ),
    )
    .unwrap();
    for args in [
        vec!["check-config", bad.to_str().unwrap()],
        vec!["up", "-c", bad.to_str().unwrap()],
    ] {
        let (code, _, err) = run(&args, "");
        assert_eq!(code, 78, "{args:?} on an invalid config:\n{err}");
        assert!(err.contains("interface.address"), "{err}");
        assert!(err.contains("interface.mtu"), "{err}");
        assert!(err.contains("has 2 error(s)"), "{err}");
    }
    // A file that cannot be read is a config problem too.
    let missing = dir.join("missing.toml");
    let (code, _, err) = run(&["check-config", missing.to_str().unwrap()], "");
    assert_eq!(code, 78, "{err}");

    // Any other failure keeps exit 1: here a control socket in a directory
    // that does not exist, found only after the config loaded.
    let (code, _, err) = run(&["status", "--control", "/nonexistent/kith.sock"], "");
    assert_eq!(code, 1, "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn generate_writes_man_pages_and_completions() {
    let dir = std::env::temp_dir().join(format!("kith-cli-gen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let man = dir.join("man");
    let (code, _, err) = run(&["generate", "man", man.to_str().unwrap()], "");
    assert_eq!(code, 0, "{err}");
    let top = std::fs::read_to_string(man.join("kith.1")).expect("kith.1 written");
    assert!(
        top.starts_with(".ie") || top.contains(".TH"),
        "not roff:\n{top}"
    );
    assert!(
        top.contains("check\\-config"),
        "kith.1 lists check-config:\n{top}"
    );
    for sub in ["up", "check-config", "genkey", "status", "netcheck"] {
        let page = man.join(format!("kith-{sub}.1"));
        assert!(page.is_file(), "{} missing", page.display());
    }
    let up = std::fs::read_to_string(man.join("kith-up.1")).unwrap();
    assert!(
        up.contains("state\\-dir"),
        "kith-up.1 documents --state-dir:\n{up}"
    );
    // The packaging command itself is hidden from users.
    assert!(!man.join("kith-generate.1").exists());
    assert!(!top.contains("generate"), "{top}");

    let comp = dir.join("completions");
    let (code, _, err) = run(&["generate", "completions", comp.to_str().unwrap()], "");
    assert_eq!(code, 0, "{err}");
    for name in ["kith", "_kith", "kith.fish"] {
        let text =
            std::fs::read_to_string(comp.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            text.contains("check-config"),
            "{name} completes check-config:\n{text}"
        );
        assert!(
            !text.contains("generate"),
            "{name} offers the hidden generate:\n{text}"
        );
    }
    assert!(
        std::fs::read_to_string(comp.join("_kith"))
            .unwrap()
            .starts_with("#compdef kith")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A stand-in for the daemon's control socket at `path`: answers one
/// request with `answer` (a JSON line) and returns the request line.
fn fake_daemon(path: &std::path::Path, answer: &str) -> std::thread::JoinHandle<String> {
    use std::io::{BufRead, BufReader};
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    let answer = format!("{answer}\n");
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        stream.write_all(answer.as_bytes()).unwrap();
        line
    })
}

#[test]
fn reload_reports_what_changed_or_why_nothing_did() {
    let dir = std::env::temp_dir().join(format!("kith-cli-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("kith0.sock");
    let sock_arg = sock.to_str().unwrap();

    // Applied: the changes on stdout, exit 0, after a "reload" request.
    let daemon = fake_daemon(
        &sock,
        r#"{"file":"/etc/kith/kith.toml","applied":true,"changes":["added peer nas","removed peer old"]}"#,
    );
    let (code, out, err) = run(&["reload", "--control", sock_arg], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        "reloaded /etc/kith/kith.toml: added peer nas; removed peer old"
    );
    assert_eq!(daemon.join().unwrap(), "reload\n");

    // The daemon found the file invalid: its errors, EX_CONFIG.
    let daemon = fake_daemon(
        &sock,
        r#"{"file":"/etc/kith/kith.toml","applied":false,"changes":[],"errors":["/etc/kith/kith.toml:7:15: peer[0].allowed_ips[0]: bad prefix"]}"#,
    );
    let (code, out, err) = run(&["reload", "--control", sock_arg], "");
    daemon.join().unwrap();
    assert_eq!(code, 78, "{out}{err}");
    assert!(
        err.contains("/etc/kith/kith.toml:7:15: peer[0].allowed_ips[0]: bad prefix"),
        "{err}"
    );
    assert!(
        err.contains("the daemon runs on with its previous config"),
        "{err}"
    );

    // A change only a restart applies: the reason, exit 1.
    let daemon = fake_daemon(
        &sock,
        r#"{"file":"/etc/kith/kith.toml","applied":false,"changes":[],"needs_restart":["[interface] listen_port (51871 → 4000) changed: the UDP socket is bound at start"]}"#,
    );
    let (code, _, err) = run(&["reload", "--control", sock_arg], "");
    daemon.join().unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("needs a restart: [interface] listen_port (51871 → 4000) changed"),
        "{err}"
    );

    // No daemon there.
    let (code, _, err) = run(&["reload", "--control", "/nonexistent/kith.sock"], "");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot reach the kith daemon"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reload_with_a_config_file_checks_it_and_finds_its_daemon_by_interface() {
    let dir = std::env::temp_dir().join(format!("kith-cli-reload-c-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = kith::identity::SecretKey::from_seed([8; 32]).to_base64();
    let interface = format!("kt{}", std::process::id() % 100_000);
    let good = dir.join("net.toml");
    std::fs::write(
        &good,
        format!(
            "[interface]\nname = \"{interface}\"\naddress = \"100.96.0.1/16\"\n\
             private_key = \"{key}\"\n[discovery]\ndht = false\n"
        ),
    )
    .unwrap();
    // The socket named after the file's interface (nothing listens there).
    let (code, _, err) = run(&["reload", "-c", good.to_str().unwrap()], "");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("/run/kith/{interface}.sock")),
        "{err}"
    );

    // An invalid file is refused here, with its errors, before any daemon
    // is asked.
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        format!("[interface]\naddress = \"100.96.0.1/16\"\nprivate_key = \"{key}\"\nmtu = 10\n"),
    )
    .unwrap();
    let (code, _, err) = run(&["reload", "-c", bad.to_str().unwrap()], "");
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains(&format!("{}:4:7: interface.mtu", bad.display())),
        "{err}"
    );
    assert!(!err.contains("cannot reach"), "{err}");

    // -i and -c name the daemon two ways: one at a time.
    let (code, _, err) = run(&["reload", "-i", "kith0", "-c", good.to_str().unwrap()], "");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
