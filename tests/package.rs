//! The Debian package end to end, as root on this machine: build it with
//! scripts/package.sh, install it with dpkg, check what it installed (the
//! stripped binary, units that verify and score ≤ 3.0 in
//! `systemd-analyze security`, man pages, completions, the user kith and
//! its directories), run the installed daemon as that user with only
//! CAP_NET_ADMIN, then purge it and check nothing of it is left. A guard
//! purges the package however the test ends.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const UNITS: [&str; 2] = [
    "/lib/systemd/system/kith.service",
    "/lib/systemd/system/kith@.service",
];
const COMPLETIONS: [&str; 3] = [
    "/usr/share/bash-completion/completions/kith",
    "/usr/share/zsh/vendor-completions/_kith",
    "/usr/share/fish/vendor_completions.d/kith.fish",
];
/// An admin's file in /etc/kith: purging must leave it alone.
const ADMIN_FILE: &str = "/etc/kith/package-test-admin.toml";
const NETNS: &str = "kith-pkgtest";

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (scripts/setup.sh installs it)"))
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// dpkg knows the package (installed, or removed with its config left).
fn dpkg_knows_kith() -> bool {
    run("dpkg-query", &["-W", "-f=${Status}", "kith"])
        .status
        .success()
}

fn purge() -> Output {
    run("dpkg", &["--purge", "kith"])
}

/// Purges the package and undoes the test's own changes, on success and
/// on a failed assertion alike.
struct Cleanup {
    etc_kith_existed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", NETNS]);
        if dpkg_knows_kith() {
            let _ = purge();
        }
        let _ = std::fs::remove_file(ADMIN_FILE);
        let _ = std::fs::remove_file("/etc/kith/package-test.key");
        if !self.etc_kith_existed {
            let _ = std::fs::remove_dir("/etc/kith");
        }
    }
}

/// The number after "Overall exposure level for UNIT:".
fn exposure(unit: &str) -> f64 {
    let out = run("systemd-analyze", &["security", "--offline=yes", unit]);
    let all = text(&out);
    assert!(
        out.status.success(),
        "systemd-analyze security {unit}: {all}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure level for {unit}: {all}"));
    let after = line.rsplit_once(':').map(|(_, r)| r).unwrap_or_default();
    after
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read a score in {line:?}"))
}

fn user_exists(name: &str) -> bool {
    run("getent", &["passwd", name]).status.success()
}

fn group_exists(name: &str) -> bool {
    run("getent", &["group", name]).status.success()
}

#[test]
fn deb_installs_a_hardened_daemon_and_purges_cleanly() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the package test installs a .deb: run it as root (scripts/test.sh does)"
    );
    if dpkg_knows_kith() {
        let out = purge();
        assert!(
            out.status.success(),
            "purging an earlier kith: {}",
            text(&out)
        );
    }
    let _cleanup = Cleanup {
        etc_kith_existed: Path::new("/etc/kith").exists(),
    };

    // Build.
    let mut package = Command::new(format!("{ROOT}/scripts/package.sh"));
    // The variables cargo sets for this test would reach the build
    // scripts of package.sh's cargo build and make them (and so the next
    // `cargo test`) rebuild; give it the environment a shell would.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_TARGET_DIR" {
            package.env_remove(&*key);
        }
    }
    // Package the binary this suite was built with (its profile is the
    // name of the directory cargo put it in, `debug` for `dev`), rather
    // than building kith a second time in another profile.
    let profile = match Path::new(env!("CARGO_BIN_EXE_kith"))
        .parent()
        .and_then(Path::file_name)
        .and_then(|p| p.to_str())
        .expect("the kith binary lies in target/<profile>/")
    {
        "debug" => "dev",
        other => other,
    };
    package.env("KITH_PROFILE", profile);
    let out = package
        .current_dir(ROOT)
        .output()
        .expect("run scripts/package.sh");
    assert!(out.status.success(), "scripts/package.sh: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let deb = stdout.lines().last().unwrap_or_default().trim().to_string();
    assert!(
        deb.ends_with(".deb") && Path::new(&deb).is_file(),
        "package.sh's last line is not a .deb: {}",
        text(&out)
    );
    let deb = if Path::new(&deb).is_absolute() {
        deb
    } else {
        format!("{ROOT}/{deb}")
    };

    // Install.
    let out = run("dpkg", &["-i", &deb]);
    assert!(out.status.success(), "dpkg -i {deb}: {}", text(&out));
    let listed = run("dpkg", &["-L", "kith"]);
    assert!(listed.status.success(), "{}", text(&listed));
    let files: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|p| Path::new(p).is_file())
        .map(str::to_string)
        .collect();
    assert!(files.iter().any(|f| f == "/usr/bin/kith"), "{files:?}");

    let out = run("/usr/bin/kith", &["--version"]);
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        version.trim(),
        format!("kith {}", env!("CARGO_PKG_VERSION"))
    );

    // Stripped: no DWARF left (the release profile has debug = 1).
    let out = run("readelf", &["-S", "-W", "/usr/bin/kith"]);
    let sections = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && sections.contains(".text"),
        "readelf: {}",
        text(&out)
    );
    assert!(
        !sections.contains(".debug_info") && !sections.contains(".debug_line"),
        "/usr/bin/kith still has debug info:\n{sections}"
    );

    for unit in UNITS {
        let out = run("systemd-analyze", &["verify", unit]);
        assert!(
            out.status.success(),
            "systemd-analyze verify {unit}: {}",
            text(&out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let about_kith: Vec<&str> = stderr.lines().filter(|l| l.contains("kith")).collect();
        assert!(about_kith.is_empty(), "verify {unit} warns: {about_kith:?}");
        let score = exposure(unit);
        assert!(score <= 3.0, "{unit}: exposure {score} > 3.0");
        let body = std::fs::read_to_string(unit).unwrap();
        for line in [
            "ExecStart=/usr/bin/kith up",
            "User=kith",
            "CapabilityBoundingSet=CAP_NET_ADMIN\n",
            "RestartPreventExitStatus=78",
            "ExecReload=/usr/bin/kith reload -c /etc/kith/",
            // Fed from the data path's loop: a stuck loop is restarted.
            "WatchdogSec=",
        ] {
            assert!(body.contains(line), "{unit} lacks {line:?}");
        }
    }
    let template = std::fs::read_to_string(UNITS[1]).unwrap();
    assert!(
        template.contains("--state-dir /var/lib/kith/%i"),
        "{template}"
    );
    assert!(template.contains("StateDirectory=kith/%i"), "{template}");

    for page in ["kith.1.gz", "kith-up.1.gz", "kith-check-config.1.gz"] {
        let path = format!("/usr/share/man/man1/{page}");
        assert!(Path::new(&path).is_file(), "{path} missing");
    }
    for file in COMPLETIONS {
        let body = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            body.contains("check-config"),
            "{file} does not complete check-config"
        );
    }

    // The user, and its directories.
    assert!(
        user_exists("kith") && group_exists("kith"),
        "postinst made no user kith"
    );
    let gid = |name: &str| -> u32 {
        let out = run("getent", &["group", name]);
        String::from_utf8_lossy(&out.stdout)
            .split(':')
            .nth(2)
            .and_then(|g| g.trim().parse().ok())
            .unwrap_or_else(|| panic!("no gid for {name}: {}", text(&out)))
    };
    let kith_gid = gid("kith");
    let etc = std::fs::metadata("/etc/kith").unwrap();
    assert_eq!(
        (etc.uid(), etc.gid(), etc.permissions().mode() & 0o7777),
        (0, kith_gid, 0o750),
        "/etc/kith must be root:kith 0750"
    );
    let state = std::fs::metadata("/var/lib/kith").expect("/var/lib/kith");
    assert_eq!(state.gid(), kith_gid);
    assert!(Path::new("/etc/kith/kith.toml.example").is_file());

    daemon_runs_as_kith_with_only_cap_net_admin();

    // Purge: an admin's file stays, nothing of the package does.
    std::fs::write(ADMIN_FILE, "# written by the admin\n").unwrap();
    let out = purge();
    assert!(out.status.success(), "dpkg --purge kith: {}", text(&out));
    assert!(!dpkg_knows_kith(), "dpkg still knows kith after --purge");
    for f in &files {
        assert!(!Path::new(f).exists(), "{f} is left after purge");
    }
    assert!(!user_exists("kith"), "the user kith is left after purge");
    assert!(!group_exists("kith"), "the group kith is left after purge");
    assert!(
        !Path::new("/var/lib/kith").exists(),
        "/var/lib/kith is left after purge"
    );
    assert!(
        Path::new(ADMIN_FILE).is_file(),
        "purge removed an admin's file in /etc/kith"
    );
}

/// The installed binary, as the units run it (user kith, ambient
/// CAP_NET_ADMIN and nothing else), creates its TUN device, binds, and
/// answers on its control socket; in a namespace of its own. (systemd's
/// own sandbox needs a running systemd, which this machine may not have.)
fn daemon_runs_as_kith_with_only_cap_net_admin() {
    let _ = run("ip", &["netns", "del", NETNS]);
    let out = run("ip", &["netns", "add", NETNS]);
    assert!(out.status.success(), "ip netns add: {}", text(&out));
    let run_dir = std::env::temp_dir().join(format!("kith-pkgtest-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir).unwrap();
    let _ = run("chown", &["kith:kith", run_dir.to_str().unwrap()]);

    // The README's steps: genkey, then chown kith: and chmod 600.
    let key = "/etc/kith/package-test.key";
    let out = Command::new("sh")
        .args([
            "-c",
            &format!("/usr/bin/kith genkey > {key} && chown kith: {key} && chmod 600 {key}"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let config = run_dir.join("kith.toml");
    std::fs::write(
        &config,
        format!(
            "[interface]\nname = \"kithpkg0\"\naddress = \"100.96.0.1/16\"\n\
             private_key_file = \"{key}\"\nlisten_port = 0\n\
             [discovery]\ndht = false\nport_mapping = false\nstun = []\n"
        ),
    )
    .unwrap();
    let _ = run("chown", &["kith:kith", config.to_str().unwrap()]);
    let control = run_dir.join("control.sock");
    let state = run_dir.join("state");
    // udev makes /dev/net/tun 0666 on a host; a container may leave it
    // 0600 root. The daemon, as kith, opens it as on a host: through a
    // 0666 node of the same device bound over it, in a mount namespace of
    // its own (the host's node is not touched).
    let tun = run_dir.join("tun");
    let out = run(
        "mknod",
        &["-m", "0666", tun.to_str().unwrap(), "c", "10", "200"],
    );
    assert!(out.status.success(), "mknod: {}", text(&out));
    // Each of unshare, sh, ip netns exec and setpriv execs the next, so
    // the child is the daemon itself.
    let mut daemon = Command::new("unshare")
        .args(["--mount", "--", "sh", "-c"])
        .arg("mount --bind \"$0\" /dev/net/tun && exec \"$@\"")
        .arg(&tun)
        .args([
            "ip",
            "netns",
            "exec",
            NETNS,
            "setpriv",
            "--reuid=kith",
            "--regid=kith",
        ])
        .args(["--init-groups", "--inh-caps=-all,+net_admin"])
        .args([
            "--ambient-caps=-all,+net_admin",
            "--bounding-set=-all,+net_admin",
        ])
        .args(["/usr/bin/kith", "up", "-c", config.to_str().unwrap()])
        .args(["--control", control.to_str().unwrap()])
        .args(["--state-dir", state.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn kith up under setpriv");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answered = None;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = daemon.try_wait() {
            break;
        }
        let out = run(
            "ip",
            &[
                "netns",
                "exec",
                NETNS,
                "/usr/bin/kith",
                "status",
                "--json",
                "--control",
                control.to_str().unwrap(),
            ],
        );
        if out.status.success() {
            answered = Some(String::from_utf8_lossy(&out.stdout).into_owned());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = daemon.kill();
    let out = daemon.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&run_dir);
    let _ = run("ip", &["netns", "del", NETNS]);
    let status = answered.unwrap_or_else(|| {
        panic!(
            "kith up as user kith with CAP_NET_ADMIN never answered on its control socket:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(status.contains("kithpkg0"), "{status}");
}
