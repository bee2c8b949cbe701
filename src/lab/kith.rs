//! The kith daemon as a lab process: a generated config and key file in the
//! lab's directory, `kith up -c FILE` inside a namespace, its stderr
//! appended to `<host>.log`.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::host::parse_cidr_addr;
use super::{Host, LabError, Result, sys};
use crate::daemon::control::{PeerReport, StatusReport};
use crate::identity::SecretKey;

/// One node's settings; rendered to the daemon's TOML config.
#[derive(Debug, Clone)]
pub struct KithSpec {
    /// TUN interface name, e.g. `kith0`.
    pub interface: String,
    /// Overlay address in CIDR form, e.g. `100.96.0.1/16`.
    pub address: String,
    /// More overlay addresses (an IPv6 one, e.g. `fd00:6b::1/64`); with
    /// any, `address` is written as a list.
    pub extra_addresses: Vec<String>,
    pub listen_port: u16,
    /// `[interface] queues` (data-plane workers); left out (`"auto"`) when `None`.
    pub queues: Option<u8>,
    /// `[interface] busy_poll`, e.g. `"0s"`; left out (the default) when `None`.
    pub busy_poll: Option<String>,
    pub key: SecretKey,
    pub peers: Vec<PeerSpec>,
    /// `[network]`; empty (no keys) by default.
    pub network: NetworkSpec,
    /// `[discovery]`; `dht = false` by default, so nodes use their static
    /// endpoints only.
    pub discovery: DiscoverySpec,
    /// `[relay]`; left out of the file when it has no keys.
    pub relay: RelaySpec,
    /// `[metrics]`; left out of the file when it has no keys.
    pub metrics: MetricsSpec,
    /// `KITH_LOG` for the daemon, e.g. `info` or `debug`.
    pub log_level: String,
    /// More environment for the daemon (e.g. a fake systemd's
    /// `NOTIFY_SOCKET`).
    pub env: Vec<(String, String)>,
}

/// The `[metrics]` table; a `None` key is left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MetricsSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

impl MetricsSpec {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The `[network]` table. A `None` key is left out of the file (the daemon's
/// default applies). A relative `secret_file` is resolved against the lab
/// directory, where the config is written.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NetworkSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
}

/// The `[discovery]` table. `dht` is always written (the daemon defaults it
/// to true, which needs a `[network] id`); a `None` key is left out. Add a
/// key as one more `Option` field.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiscoverySpec {
    pub dht: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dht_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dht_server: Option<bool>,
    /// Always written: lab daemons must never ask the public STUN servers
    /// (the default); empty turns STUN off, a test lists its own servers.
    pub stun: Vec<String>,
    /// Leave `stun` out of the file so the daemon uses its default (named,
    /// public) servers: only for a test whose namespace can resolve no
    /// name and reach nothing outside the lab (see `Host::set_etc_file`).
    #[serde(skip)]
    pub default_stun: bool,
    /// Always written; off unless a test runs a mapping router.
    pub port_mapping: bool,
}

/// The `[relay]` table; a `None` key is left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RelaySpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serve: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rate: Option<String>,
}

impl RelaySpec {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A `[[peer]]` entry.
#[derive(Debug, Clone, Serialize)]
pub struct PeerSpec {
    pub name: String,
    pub public_key: String,
    pub allowed_ips: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_port: Option<u16>,
}

impl KithSpec {
    /// A node on `kith0` listening on 51871, DHT off, logging at `KITH_LOG`
    /// (or info).
    pub fn new(address: &str, key: SecretKey) -> Self {
        Self {
            interface: "kith0".into(),
            address: address.into(),
            extra_addresses: Vec::new(),
            listen_port: 51871,
            queues: None,
            busy_poll: None,
            key,
            peers: Vec::new(),
            network: NetworkSpec::default(),
            discovery: DiscoverySpec::default(),
            relay: RelaySpec::default(),
            metrics: MetricsSpec::default(),
            log_level: std::env::var("KITH_LOG").unwrap_or_else(|_| "info".into()),
            env: Vec::new(),
        }
    }

    /// Adds a peer that may send from its overlay addresses (each a /32 or
    /// /128) and, if `endpoint` is given, is contacted there.
    pub fn peer(mut self, name: &str, other: &KithSpec, endpoint: Option<String>) -> Self {
        let overlay = other
            .overlay_ip()
            .map_or_else(|_| other.address.clone(), |ip| format!("{ip}/32"));
        let mut allowed_ips = vec![overlay];
        allowed_ips.extend(other.extra_addresses.iter().map(|cidr| {
            let addr = cidr.split('/').next().unwrap_or(cidr);
            let len = if addr.contains(':') { 128 } else { 32 };
            format!("{addr}/{len}")
        }));
        self.peers.push(PeerSpec {
            name: name.into(),
            public_key: other.key.public().to_string(),
            allowed_ips,
            endpoint,
            keepalive: None,
            tcp_port: None,
        });
        self
    }

    /// Turns the DHT on: network `id`, `bootstrap` nodes (e.g.
    /// [`super::LabDht::bootstrap`]), state (cache, seq) under `state_dir`.
    pub fn with_dht(mut self, id: &str, bootstrap: Vec<String>, state_dir: &Path) -> Self {
        self.network.id = Some(id.into());
        self.discovery.dht = true;
        self.discovery.bootstrap = Some(bootstrap);
        self.discovery.state_dir = Some(state_dir.display().to_string());
        self
    }

    pub fn overlay_ip(&self) -> Result<Ipv4Addr> {
        parse_cidr_addr(&self.address)
    }

    /// The config file text; the key is read from `key_file`.
    pub fn render(&self, key_file: &Path) -> Result<String> {
        #[derive(Serialize)]
        struct File<'a> {
            interface: Interface<'a>,
            network: &'a NetworkSpec,
            discovery: &'a DiscoverySpec,
            #[serde(skip_serializing_if = "RelaySpec::is_empty")]
            relay: &'a RelaySpec,
            #[serde(skip_serializing_if = "MetricsSpec::is_empty")]
            metrics: &'a MetricsSpec,
            peer: &'a [PeerSpec],
        }
        #[derive(Serialize)]
        #[serde(untagged)]
        enum Address<'a> {
            One(&'a str),
            List(Vec<&'a str>),
        }
        #[derive(Serialize)]
        struct Interface<'a> {
            name: &'a str,
            address: Address<'a>,
            private_key_file: String,
            listen_port: u16,
            #[serde(skip_serializing_if = "Option::is_none")]
            queues: Option<u8>,
            #[serde(skip_serializing_if = "Option::is_none")]
            busy_poll: Option<&'a str>,
        }
        let file = File {
            interface: Interface {
                name: &self.interface,
                address: if self.extra_addresses.is_empty() {
                    Address::One(&self.address)
                } else {
                    Address::List(
                        std::iter::once(self.address.as_str())
                            .chain(self.extra_addresses.iter().map(String::as_str))
                            .collect(),
                    )
                },
                private_key_file: key_file.display().to_string(),
                listen_port: self.listen_port,
                queues: self.queues,
                busy_poll: self.busy_poll.as_deref(),
            },
            network: &self.network,
            discovery: &self.discovery,
            relay: &self.relay,
            metrics: &self.metrics,
            peer: &self.peers,
        };
        let err = |e: &dyn std::fmt::Display| LabError::Parse {
            cmd: "rendering a kith config".into(),
            detail: e.to_string(),
        };
        let mut value = toml::Value::try_from(&file).map_err(|e| err(&e))?;
        if self.discovery.default_stun
            && let Some(discovery) = value
                .get_mut("discovery")
                .and_then(toml::Value::as_table_mut)
        {
            discovery.remove("stun");
        }
        toml::to_string(&value).map_err(|e| err(&e))
    }
}

/// The Prometheus text of `kith metrics` (every metric in
/// `docs/metrics.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metrics(pub String);

impl Metrics {
    /// The value of the sample `series`, its name and labels exactly as
    /// printed (e.g. `kith_peer_handshakes_total{peer="b"}`).
    pub fn get(&self, series: &str) -> Option<f64> {
        self.0
            .lines()
            .filter_map(|l| l.rsplit_once(' '))
            .find(|(s, _)| *s == series)
            .and_then(|(_, v)| v.parse().ok())
    }

    /// Like [`Metrics::get`], 0 for a sample that is absent (a counter
    /// that never moved, e.g. one a daemon does not export yet).
    pub fn value(&self, series: &str) -> f64 {
        self.get(series).unwrap_or(0.0)
    }
}

/// A kith daemon running (or stopped) in a lab host. Dropping it kills the
/// daemon; during a panic the tail of its log is printed.
pub struct KithNode {
    host: Host,
    bin: PathBuf,
    spec: KithSpec,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl KithNode {
    /// `name` names its files in `dir` (`<name>.toml`, `.key`, `.log`,
    /// `.sock`): the host's name, or another for a second daemon there.
    pub(crate) fn spawn(
        dir: &Path,
        host: &Host,
        name: &str,
        bin: &Path,
        spec: KithSpec,
    ) -> Result<Self> {
        if !bin.is_file() {
            return Err(LabError::io(
                format!("kith binary {}", bin.display()),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        let key = dir.join(format!("{name}.key"));
        write_file(&key, &(spec.key.to_base64() + "\n"), 0o600)?;
        let config = dir.join(format!("{name}.toml"));
        write_file(&config, &spec.render(&key)?, 0o644)?;
        let mut node = Self {
            host: host.clone(),
            bin: bin.to_owned(),
            spec,
            config,
            log: dir.join(format!("{name}.log")),
            child: None,
        };
        node.start()?;
        Ok(node)
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    pub fn spec(&self) -> &KithSpec {
        &self.spec
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole log so far (all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The daemon's control socket (`kith status --control PATH`).
    pub fn control_path(&self) -> PathBuf {
        self.config.with_extension("sock")
    }

    /// `kith status --control PATH --json`, parsed.
    pub fn status(&self) -> Result<StatusReport> {
        let mut cmd = std::process::Command::new(&self.bin);
        cmd.arg("status")
            .arg("--control")
            .arg(self.control_path())
            .arg("--json");
        let out = sys::run(&mut cmd)?;
        serde_json::from_str(&out).map_err(|e| LabError::Parse {
            cmd: sys::describe(&cmd),
            detail: format!("{e}: {out}"),
        })
    }

    /// `kith metrics --control PATH`: the daemon's counters.
    pub fn metrics(&self) -> Result<Metrics> {
        let mut cmd = std::process::Command::new(&self.bin);
        cmd.arg("metrics").arg("--control").arg(self.control_path());
        Ok(Metrics(sys::run(&mut cmd)?))
    }

    /// User + system CPU seconds the running daemon has used.
    pub fn cpu_seconds(&self) -> Option<f64> {
        self.pid().and_then(sys::cpu_seconds)
    }

    /// The status line of peer `name`.
    pub fn peer_status(&self, name: &str) -> Result<PeerReport> {
        let report = self.status()?;
        report
            .peers
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| LabError::Parse {
                cmd: format!("kith status in {}", self.host.netns()),
                detail: format!("no peer named {name}"),
            })
    }

    /// Writes `spec` as the daemon's config file (same key file), leaving
    /// the running daemon alone: [`reload`](Self::reload) or
    /// [`sighup`](Self::sighup) make it read the file again. A later
    /// [`start`](Self::start) uses it too.
    pub fn rewrite_config(&mut self, spec: KithSpec) -> Result<()> {
        let text = spec.render(&self.config.with_extension("key"))?;
        self.write_config_text(&text)?;
        self.spec = spec;
        Ok(())
    }

    /// Writes `text` as the config file as is (e.g. an invalid one).
    pub fn write_config_text(&self, text: &str) -> Result<()> {
        write_file(&self.config, text, 0o644)
    }

    /// `kith reload --control PATH`: the exit code, stdout and stderr.
    pub fn reload(&self) -> Result<(i32, String, String)> {
        let mut cmd = std::process::Command::new(&self.bin);
        cmd.arg("reload").arg("--control").arg(self.control_path());
        let out = sys::output(&mut cmd)?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// SIGHUP to the daemon (a reload whose outcome goes to the log only).
    pub fn sighup(&self) {
        if let Some(pid) = self.pid() {
            sys::signal(pid, libc::SIGHUP);
        }
    }

    /// Polls `kith status` every 100 ms until `pred` holds for peer `name`;
    /// the last report on a timeout.
    pub fn wait_peer(
        &mut self,
        name: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&PeerReport) -> bool,
    ) -> Result<PeerReport> {
        let peer = |r: &StatusReport| r.peers.iter().find(|p| p.name == name).cloned();
        let report = self.wait_status(&format!("{what} (peer {name})"), timeout, |r| {
            peer(r).is_some_and(|p| pred(&p))
        })?;
        peer(&report).ok_or_else(|| LabError::Parse {
            cmd: format!("kith status in {}", self.host.netns()),
            detail: format!("no peer named {name}"),
        })
    }

    /// Polls `kith status` every 100 ms until `pred` holds for the whole
    /// report; the last report on a timeout.
    pub fn wait_status(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&StatusReport) -> bool,
    ) -> Result<StatusReport> {
        let start = Instant::now();
        loop {
            let last = self.status();
            if let Ok(r) = &last
                && pred(r)
            {
                return Ok(r.clone());
            }
            self.check_running()?;
            if start.elapsed() > timeout {
                return Err(LabError::Timeout {
                    what: format!("{what} in {}", self.host.netns()),
                    timeout,
                    detail: format!(
                        "; last status {last:?}\nlog {}:\n{}",
                        self.log.display(),
                        self.log_tail(30)
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls the log (every 100 ms) for a line containing every one of
    /// `needles`; returns that line.
    pub fn wait_log(&mut self, needles: &[&str], timeout: Duration) -> Result<String> {
        let start = Instant::now();
        loop {
            if let Some(line) = self
                .log()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return Ok(line.to_owned());
            }
            self.check_running()?;
            if start.elapsed() > timeout {
                return Err(LabError::Timeout {
                    what: format!(
                        "a log line with {needles:?} from kith in {}",
                        self.host.netns()
                    ),
                    timeout,
                    detail: format!("; log {}:\n{}", self.log.display(), self.log_tail(30)),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts the daemon (after a kill or stop); no-op if it is running.
    pub fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let mut cmd = self.host.command(&self.bin);
        cmd.args(["up", "-c"])
            .arg(&self.config)
            // /run is shared by every namespace: each lab daemon gets its own
            // control socket beside its config.
            .arg("--control")
            .arg(self.control_path())
            // Each lab daemon owns a state directory (the daemon refuses a
            // shared one); a state_dir in the file still wins.
            .arg("--state-dir")
            .arg(self.config.with_extension("state"))
            .env("KITH_LOG", &self.spec.log_level)
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)));
        let marker = format!("starting kith in {}", self.host.netns());
        let child = sys::spawn_logged(&mut cmd, &self.log, &marker)?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL: the daemon gets no chance to clean up.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child
                .wait()
                .map_err(|e| LabError::io("waiting for kith after SIGKILL", e))?;
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            sys::terminate(&mut child, grace);
        }
        Ok(())
    }

    /// Kill, then start again with the same config.
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.start()
    }

    /// Waits until the TUN interface exists with the overlay address; fails
    /// early, with the log's tail, if the daemon exits.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        let want = self.spec.overlay_ip()?;
        loop {
            if self.host.addresses(&self.spec.interface).contains(&want) {
                return Ok(start.elapsed());
            }
            self.check_running()?;
            if start.elapsed() > timeout {
                return Err(LabError::Timeout {
                    what: format!(
                        "kith in {} to bring up {} with {want}",
                        self.host.netns(),
                        self.spec.interface
                    ),
                    timeout,
                    detail: format!("; log {}:\n{}", self.log.display(), self.log_tail(30)),
                });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// An error if the daemon has exited.
    pub fn check_running(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Err(self.exited("not started".into()));
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                self.child = None;
                Err(self.exited(status.to_string()))
            }
            Err(e) => Err(LabError::io("checking on kith", e)),
        }
    }

    fn exited(&self, status: String) -> LabError {
        LabError::DaemonExited {
            netns: self.host.netns().to_owned(),
            status,
            log: self.log.clone(),
            tail: self.log_tail(30),
        }
    }
}

impl Drop for KithNode {
    fn drop(&mut self) {
        let _ = self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- kith log of {} ({}), last 40 lines ---\n{}\n---",
                self.host.netns(),
                self.log.display(),
                self.log_tail(40)
            );
        }
    }
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| LabError::io(format!("writing {}", path.display()), e))?;
    file.write_all(text.as_bytes())
        .map_err(|e| LabError::io(format!("writing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_by_series() {
        let m = Metrics(
            "# HELP kith_peers Peers.\n# TYPE kith_peers gauge\nkith_peers 2\n\
             kith_peer_handshakes_total{peer=\"b\"} 7\nkith_cookies_sent_total 1.5e3\n"
                .into(),
        );
        assert_eq!(m.get("kith_peers"), Some(2.0));
        assert_eq!(m.get("kith_peer_handshakes_total{peer=\"b\"}"), Some(7.0));
        assert_eq!(m.value("kith_cookies_sent_total"), 1500.0);
        assert_eq!(m.get("kith_peer_handshakes_total"), None);
        assert_eq!(m.value("kith_absent"), 0.0);
    }

    #[test]
    fn renders_the_daemon_contract() {
        let a = KithSpec::new("100.96.0.1/16", SecretKey::from_seed([1; 32]));
        let b = KithSpec::new("100.96.0.2/16", SecretKey::from_seed([2; 32]));
        let a = a.peer("b", &b, Some("198.18.0.2:51871".into()));
        let text = a.render(Path::new("/tmp/a.key")).unwrap();
        let parsed: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(parsed["interface"]["name"].as_str(), Some("kith0"));
        assert_eq!(
            parsed["interface"]["address"].as_str(),
            Some("100.96.0.1/16")
        );
        assert_eq!(
            parsed["interface"]["private_key_file"].as_str(),
            Some("/tmp/a.key")
        );
        assert_eq!(parsed["interface"]["listen_port"].as_integer(), Some(51871));
        let peer = &parsed["peer"][0];
        assert_eq!(peer["name"].as_str(), Some("b"));
        assert_eq!(
            peer["public_key"].as_str(),
            Some(b.key.public().to_string().as_str())
        );
        assert_eq!(peer["allowed_ips"][0].as_str(), Some("100.96.0.2/32"));
        assert_eq!(peer["endpoint"].as_str(), Some("198.18.0.2:51871"));
        assert!(peer.get("keepalive").is_none());
        // DHT, STUN and port mapping off by default; nothing else written.
        assert_eq!(
            parsed["discovery"].as_table().unwrap().clone(),
            toml::from_str::<toml::Table>("dht = false\nstun = []\nport_mapping = false").unwrap()
        );
        assert!(parsed["network"].as_table().unwrap().is_empty());
        assert!(parsed.get("relay").is_none(), "no [relay] unless asked for");
    }

    #[test]
    fn rendered_configs_are_valid() {
        let dir = std::env::temp_dir().join(format!("kith-lab-render-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("a.key");
        let a = KithSpec::new("100.96.0.1/16", SecretKey::from_seed([1; 32]));
        write_file(&key, &a.key.to_base64(), 0o600).unwrap();
        let b = KithSpec::new("100.96.0.2/16", SecretKey::from_seed([2; 32]));
        let mut a = a.peer("b", &b, Some("198.18.0.2:51871".into()));
        let config = dir.join("a.toml");
        let c = crate::config::parse(&config, &a.render(&key).unwrap()).unwrap();
        assert!(!c.discovery.dht);
        assert_eq!(c.network.id, None);
        // Lab daemons never fall back to the public STUN servers.
        assert!(c.discovery.stun.is_empty() && !c.discovery.port_mapping);

        a.network.id = Some("lab".into());
        a.discovery = DiscoverySpec {
            dht: true,
            bootstrap: Some(vec!["198.18.0.1:6881".into()]),
            dht_port: Some(6881),
            state_dir: Some(dir.display().to_string()),
            dht_server: Some(true),
            stun: vec!["198.18.0.3:3478".into()],
            port_mapping: false,
            default_stun: false,
        };
        let c = crate::config::parse(&config, &a.render(&key).unwrap()).unwrap();
        assert_eq!(c.network.id.as_deref(), Some("lab"));
        assert!(c.discovery.dht && c.discovery.dht_server);
        assert_eq!(c.discovery.bootstrap, ["198.18.0.1:6881"]);
        assert_eq!(c.discovery.dht_port, 6881);

        a.peers[0].tcp_port = Some(443);
        a.relay = RelaySpec {
            serve: Some(true),
            tcp_port: Some(8443),
            via: Some(vec!["b".into()]),
            rate: Some("20 Mbit/s".into()),
            max_rate: Some("200 Mbit/s".into()),
        };
        let c = crate::config::parse(&config, &a.render(&key).unwrap()).unwrap();
        assert!(c.relay.serve);
        assert_eq!(c.relay.tcp_port, Some(8443));
        assert_eq!(c.relay.via, ["b"]);
        assert_eq!(
            (c.relay.rate, c.relay.max_rate),
            (Some(2_500_000), Some(25_000_000))
        );
        assert_eq!(c.peers[0].tcp_port, Some(443));

        // Only on request does a lab daemon get the default (named) servers.
        a.discovery.default_stun = true;
        let c = crate::config::parse(&config, &a.render(&key).unwrap()).unwrap();
        assert_eq!(c.discovery.stun, crate::config::DEFAULT_STUN);
        a.discovery.default_stun = false;

        // An IPv6 address beside the IPv4 one: written as a list, and a
        // peer of this node may send from both.
        a.extra_addresses = vec!["fd00:6b::1/64".into()];
        let c = crate::config::parse(&config, &a.render(&key).unwrap()).unwrap();
        let addresses: Vec<String> = c
            .interface
            .addresses
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(addresses, ["100.96.0.1/16", "fd00:6b::1/64"]);
        let b = b.peer("a", &a, None);
        assert_eq!(b.peers[0].allowed_ips, ["100.96.0.1/32", "fd00:6b::1/128"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
