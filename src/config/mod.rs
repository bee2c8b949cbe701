//! Config: the hand-edited TOML file → a validated, immutable [`Config`].
//!
//! Owns parsing, defaults and validation, with every error located by file,
//! line and column and naming the key path. Must not hold runtime state, and
//! does no I/O beyond reading the config and the secret files it names
//! (`private_key_file`, `secret_file`); DNS names in endpoints and bootstrap
//! nodes are resolved by the daemon.
//!
//! The flow:
//! 1. [`de`]: TOML text → [`raw::RawConfig`] (serde, `deny_unknown_fields`,
//!    every value [`toml::Spanned`]). A syntax error stops here; schema errors
//!    (unknown key, wrong type) are all collected by removing the offending
//!    entry and retrying.
//! 2. [`validate`]: raw values → domain types ([`IpNet`], [`Duration`], keys),
//!    defaults filled in, cross-peer rules checked, every error recorded.
//! 3. Byte spans become 1-based `line:column` (column in characters); errors
//!    are sorted by position. Nothing panics on any input (it is fuzzed).
//!
//! Every error prints as `file:line:column: key.path: message`, and the
//! message says what to write instead. Warnings (e.g. a deprecated spelling)
//! use the same format and land in [`Config::warnings`].
//!
//! Adding a table (e.g. `[metrics]`) is: a struct in `raw`, a field in
//! `RawConfig`, a function in `validate`, a field in [`Config`]. Adding a key
//! is a field in the table's `raw` struct, a `match` in its `validate`
//! function and a field in the public type.

mod de;
pub mod duration;
pub mod endpoint;
pub mod rate;
mod raw;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use crate::identity::{PublicKey, SecretKey};

pub const DEFAULT_INTERFACE: &str = "kith0";
pub const DEFAULT_LISTEN_PORT: u16 = 51871;
pub const DEFAULT_MTU: u16 = 1420;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (for messages).
    pub source: PathBuf,
    pub interface: Interface,
    pub network: Network,
    pub discovery: Discovery,
    pub relay: Relay,
    pub metrics: Metrics,
    pub peers: Vec<Peer>,
    /// The file has no `[network]` table and no `[discovery] dht` key, so
    /// the DHT is off and peers are reached at their static endpoints only,
    /// as in WireGuard. Kept apart from `discovery.dht` so the daemon and
    /// `check-config` can say why the DHT is off.
    pub static_only: bool,
    /// Non-fatal findings, in the same `file:line:column` format as errors.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Interface {
    pub name: String,
    /// This node's overlay addresses with their prefixes, in the file's
    /// order: one, or an IPv4 and an IPv6 one (e.g. 100.96.0.1/16 and
    /// fd00:6b69::1/64). Never empty.
    pub addresses: Vec<IpNet>,
    pub private_key: SecretKey,
    /// 0 = any port.
    pub listen_port: u16,
    pub mtu: u16,
    /// How long the data plane keeps polling after I/O before it sleeps
    /// (catches a reply without a wakeup); zero turns it off.
    pub busy_poll: std::time::Duration,
    /// How many data-plane workers, each with a TUN queue of its own.
    pub queues: Queues,
}

/// `[interface] queues`: a number of data-plane workers, or `Auto`, which
/// picks by the machine's CPU count ([`Queues::count`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Queues {
    #[default]
    Auto,
    Fixed(u8),
}

/// The most `[interface] queues` takes: past a few workers the shared
/// socket's receive side and the control plane are the limit, not sealing.
pub const MAX_QUEUES: u8 = 16;
/// Below this many CPUs `"auto"` runs one worker. Measured on 2 cores
/// (README, "The data plane"): a second worker competes with the receive
/// side and the peer daemon for the same two cores and gains nothing.
pub const AUTO_QUEUES_MIN_CPUS: usize = 4;
/// The most workers `"auto"` picks: one per two CPUs leaves the other
/// half to the kernel's share of the path (TUN, UDP, the receive side).
pub const AUTO_QUEUES_MAX: usize = 4;

impl Queues {
    /// How many workers to run on a machine with `cpus` CPUs.
    pub fn count(self, cpus: usize) -> usize {
        match self {
            Queues::Fixed(n) => usize::from(n.max(1)),
            Queues::Auto if cpus < AUTO_QUEUES_MIN_CPUS => 1,
            Queues::Auto => (cpus / 2).clamp(1, AUTO_QUEUES_MAX),
        }
    }
}

impl std::fmt::Display for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Queues::Auto => f.write_str("\"auto\""),
            Queues::Fixed(n) => write!(f, "{n}"),
        }
    }
}

/// `[interface] busy_poll` when the key is absent: longer than a ping's
/// round trip through the peer's daemon on a VM (~150 µs, three wakeups
/// and two crossings of both kernels), so the answer is caught by the spin
/// instead of a fourth wakeup; 50 µs never caught it (README, bench notes).
/// Answers slower than the window switch the spin off (`BusyPoll`).
pub const DEFAULT_BUSY_POLL: std::time::Duration = std::time::Duration::from_micros(200);
/// Its largest value: past this, spinning burns a core for nothing.
pub const MAX_BUSY_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// `[network]`: which rendezvous namespace this node lives in.
#[derive(Debug, Clone, Default)]
pub struct Network {
    /// Rendezvous namespace (salts the DHT records); required when `dht = true`.
    pub id: Option<String>,
    /// 32-byte network secret read from `secret_file` (base64, 44 characters):
    /// the PSK of every handshake and a key of the DHT records.
    pub secret: Option<crate::identity::NetworkSecret>,
}

/// The public Mainline bootstrap nodes, used when `[discovery] bootstrap`
/// is not set. Tests always replace them with their own.
pub const DEFAULT_BOOTSTRAP: &[&str] = &[
    "router.bittorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "dht.libtorrent.org:25401",
    "router.utorrent.com:6881",
];
pub const DEFAULT_STATE_DIR: &str = "/var/lib/kith";
/// Public STUN servers, used when `[discovery] stun` is not set. Tests
/// always replace them with their own.
pub const DEFAULT_STUN: &[&str] = &["stun.l.google.com:19302", "stun.cloudflare.com:3478"];

/// `[discovery]`: how this node finds its peers' current addresses.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// Publish and resolve records in the Mainline DHT (default true).
    pub dht: bool,
    /// `host:port` of the DHT bootstrap nodes (default [`DEFAULT_BOOTSTRAP`]).
    pub bootstrap: Vec<String>,
    /// `host:port` STUN servers asked for our reflexive address from the
    /// data socket (default [`DEFAULT_STUN`]; empty = no STUN).
    pub stun: Vec<String>,
    /// Map the listen port on the router with PCP, NAT-PMP or UPnP IGD.
    pub port_mapping: bool,
    /// UDP port of the DHT node (0 = any; it has its own socket).
    pub dht_port: u16,
    /// Where the candidate cache and the record sequence number live. A
    /// relative `state_dir` is resolved against the config file's directory.
    pub state_dir: PathBuf,
    /// The file set `state_dir` itself (so `kith up --state-dir` must not
    /// replace it).
    pub state_dir_in_file: bool,
    /// Also serve as a full DHT node (for nodes with a public address).
    pub dht_server: bool,
}

impl Default for Discovery {
    fn default() -> Self {
        Self {
            dht: true,
            bootstrap: DEFAULT_BOOTSTRAP.iter().map(|s| s.to_string()).collect(),
            stun: DEFAULT_STUN.iter().map(|s| s.to_string()).collect(),
            port_mapping: true,
            dht_port: 0,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            state_dir_in_file: false,
            dht_server: false,
        }
    }
}

impl Discovery {
    /// Use `dir` as the state directory unless the file named one: the
    /// template unit gives each network its own directory this way, and a
    /// `state_dir` written in the file still wins.
    pub fn default_state_dir(&mut self, dir: PathBuf) {
        if !self.state_dir_in_file {
            self.state_dir = dir;
        }
    }
}

#[derive(Debug, Clone)]
pub struct Peer {
    pub name: String,
    pub public_key: PublicKey,
    pub allowed_ips: Vec<IpNet>,
    pub endpoint: Option<Endpoint>,
    pub keepalive: Option<Duration>,
    /// TCP port of this peer's relay service (its `[relay] tcp_port`), for
    /// reaching it as a relay when UDP is blocked here.
    pub tcp_port: Option<u16>,
}

/// `[relay]`: relaying for the other members, and being reached through them.
#[derive(Debug, Clone, Default)]
pub struct Relay {
    /// Forward packets between members that hold a session with us.
    pub serve: bool,
    /// TCP port the relay service also listens on (none by default; 443
    /// passes most firewalls).
    pub tcp_port: Option<u16>,
    /// Names of the peers (all in `peers`) this node may be reached
    /// through, in order of preference. Published in our record.
    pub via: Vec<String>,
    /// Limit per member, bytes per second (`rate = "20 Mbit/s"`).
    pub rate: Option<u64>,
    /// Limit for all members together, bytes per second.
    pub max_rate: Option<u64>,
}

/// `[metrics]`: Prometheus metrics over HTTP (they are always available
/// from `kith metrics` on the control socket).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Serve `GET /metrics` on this TCP address (`listen =
    /// "127.0.0.1:9586"`); none by default.
    pub listen: Option<SocketAddr>,
}

/// The example address of `[metrics] listen`, used in messages and docs.
pub const METRICS_LISTEN_EXAMPLE: &str = "127.0.0.1:9586";

/// A static endpoint hint as written: an address, or a DNS name resolved by the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Addr(SocketAddr),
    Host { host: String, port: u16 },
}

/// Every problem found in one file, sorted by position.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// One problem, located.
///
/// Displays as `file:line:column: key: message`; the location is left out
/// when `line` is 0 and the key when it is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no place in the text (e.g. unreadable file).
    pub line: usize,
    /// 1-based, counted in characters.
    pub column: usize,
    /// Key path, e.g. `peer[1].allowed_ips[0]`; empty for TOML syntax errors.
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// The one line the daemon logs at start and `check-config` prints when
    /// the DHT is off only because the file has no `[network]` table: the
    /// file is not wrong, but a reader may have expected discovery.
    pub fn static_only_note(&self) -> Option<&'static str> {
        self.static_only
            .then_some("no [network] table: DHT off, static endpoints only (like WireGuard)")
    }

    /// The peers `[relay] via` names, in its order, with their index in
    /// `peers` (validation made sure each name is a peer).
    pub fn via_peers(&self) -> impl Iterator<Item = (usize, &Peer)> {
        self.relay
            .via
            .iter()
            .filter_map(|name| self.peers.iter().enumerate().find(|(_, p)| &p.name == name))
    }

    /// What `kith check-config` tells about relaying, beyond errors and
    /// warnings: which relays peers must share with this node, and gaps
    /// that leave peers without one.
    pub fn relay_notes(&self) -> Vec<String> {
        let r = &self.relay;
        let mut notes = Vec::new();
        if r.via.is_empty() {
            if !self.peers.is_empty() {
                notes.push(
                    "no [relay] via: a peer that cannot reach this node directly (both behind \
                     endpoint-dependent NATs, or UDP blocked on one side) has no relay to reach \
                     it through; list a reachable member, e.g. via = [\"vps\"]"
                        .to_string(),
                );
            }
        } else {
            let list = r.via.join(", ");
            notes.push(format!(
                "peers that cannot reach this node directly go through {list}; a peer can use \
                 one only if it lists it as a [[peer]] too, or there is no common relay"
            ));
        }
        for (_, p) in self.via_peers().filter(|(_, p)| p.endpoint.is_none()) {
            notes.push(format!(
                "relay {:?} has no endpoint: it is reached only once discovery finds it; a \
                 relay is most useful at a fixed, reachable address",
                p.name
            ));
        }
        if r.serve {
            let tcp = r
                .tcp_port
                .map_or("UDP only".to_string(), |p| format!("UDP and TCP port {p}"));
            notes.push(format!(
                "relaying for the {} member(s) of this file ({tcp})",
                self.peers.len()
            ));
        }
        notes
    }
}

/// Read, parse and validate a config file (and the private key file it names).
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    // Zeroized after parsing: an inline `private_key` is in the text.
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read config file: {e}"),
        }])
    })?);
    parse(path, &text)
}

/// Where a running daemon's config comes from: the file `kith up -c` named
/// and the `--state-dir` it was given. Read at start and again on every
/// reload, the same way, so an unchanged file always compares equal.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub file: PathBuf,
    /// `kith up --state-dir`: the state directory unless the file sets one.
    pub state_dir: Option<PathBuf>,
}

impl ConfigSource {
    pub fn load(&self) -> Result<Config, ConfigErrors> {
        let mut cfg = load(&self.file)?;
        if let Some(dir) = &self.state_dir {
            cfg.discovery.default_state_dir(dir.clone());
        }
        Ok(cfg)
    }
}

/// Parse and validate config text; `path` is used for messages and to
/// resolve relative paths (`private_key_file`, `secret_file`, `state_dir`).
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let de = de::deserialize(text);
    let mut ctx = validate::Ctx::new(path, text, &de.removed);
    let mut errors: Vec<ConfigError> = de
        .errors
        .into_iter()
        .map(|e| ctx.located(e.span, &e.key, e.message))
        .collect();
    let validated = de
        .raw
        .and_then(|raw| validate::config(&mut ctx, raw, &validate::base_dir(path)));
    errors.append(&mut ctx.errors);
    match validated {
        Some(v) if errors.is_empty() => Ok(Config {
            source: path.to_path_buf(),
            interface: v.interface,
            network: v.network,
            discovery: v.discovery,
            relay: v.relay,
            metrics: v.metrics,
            peers: v.peers,
            static_only: v.static_only,
            warnings: ctx.warnings.iter().map(ToString::to_string).collect(),
        }),
        _ => {
            // Stable: errors at the same place keep the order they were found in.
            errors.sort_by_key(|e| (e.line, e.column));
            if errors.is_empty() {
                // Unreachable by construction; never panic on input all the same.
                errors.push(ctx.located(None, "", "invalid configuration".to_string()));
            }
            Err(ConfigErrors(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VALID: &str = "[interface]\nname = \"kith0\"\naddress = \"100.96.0.1/16\"\n\
        private_key = \"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\"\nlisten_port = 0\nmtu = 1280\n\
        [network]\nid = \"home\"\n[discovery]\ndht = true\nbootstrap = [\"198.18.0.1:6881\", \"a.b:1\"]\n\
        dht_port = 6881\nstate_dir = \"state\"\ndht_server = true\n\
        [[peer]]\nname = \"nas\"\npublic_key = \"gTl3Dqh9F19Wo1Rmw0x+zMuNipG07jeiXfYPW4/Js5Q=\"\n\
        allowed_ips = [\"100.96.0.2/32\", \"fd00::/64\"]\nendpoint = \"[::1]:5\"\nkeepalive = \"1m\"\n";

    #[test]
    fn valid_text_parses() {
        let c = parse(Path::new("t.toml"), VALID).unwrap();
        assert_eq!(c.peers.len(), 1);
        assert_eq!(c.interface.listen_port, 0);
        assert_eq!(c.network.id.as_deref(), Some("home"));
        assert_eq!(c.network.secret, None);
        assert!(c.discovery.dht && c.discovery.dht_server);
        assert_eq!(c.discovery.bootstrap, ["198.18.0.1:6881", "a.b:1"]);
        assert_eq!(c.discovery.dht_port, 6881);
        // Relative: resolved against the config file's directory.
        assert_eq!(c.discovery.state_dir, Path::new("./state"));
    }

    #[test]
    fn state_dir_flag_applies_only_when_the_file_sets_none() {
        // Set in the file: the flag does not replace it.
        let mut c = parse(Path::new("t.toml"), VALID).unwrap();
        assert!(c.discovery.state_dir_in_file);
        c.discovery
            .default_state_dir(PathBuf::from("/var/lib/kith/home"));
        assert_eq!(c.discovery.state_dir, Path::new("./state"));

        // Not set: the default, replaced by the flag.
        let unset = VALID.replace("state_dir = \"state\"\n", "");
        let mut c = parse(Path::new("t.toml"), &unset).unwrap();
        assert!(!c.discovery.state_dir_in_file);
        assert_eq!(c.discovery.state_dir, Path::new(DEFAULT_STATE_DIR));
        c.discovery
            .default_state_dir(PathBuf::from("/var/lib/kith/home"));
        assert_eq!(c.discovery.state_dir, Path::new("/var/lib/kith/home"));
    }

    #[test]
    fn queues_take_auto_or_1_to_16() {
        let with = |v: &str| VALID.replace("mtu = 1280\n", &format!("mtu = 1280\nqueues = {v}\n"));
        assert_eq!(
            parse(Path::new("t.toml"), VALID).unwrap().interface.queues,
            Queues::Auto
        );
        for (v, want) in [
            ("\"auto\"", Queues::Auto),
            ("1", Queues::Fixed(1)),
            ("16", Queues::Fixed(16)),
        ] {
            assert_eq!(
                parse(Path::new("t.toml"), &with(v))
                    .unwrap()
                    .interface
                    .queues,
                want,
                "{v}"
            );
        }
        for (v, says) in [
            ("0", "queues must be between 1 and 16, got 0"),
            ("17", "queues must be between 1 and 16, got 17"),
            ("-1", "queues must be between 1 and 16, got -1"),
            ("\"many\"", "invalid queues \"many\": write \"auto\""),
            ("\"2\"", "invalid queues \"2\""),
            ("true", "expected a number or a string, got boolean `true`"),
        ] {
            let ConfigErrors(errors) = parse(Path::new("t.toml"), &with(v)).unwrap_err();
            assert_eq!(errors.len(), 1, "{v}: {errors:?}");
            let e = &errors[0];
            assert_eq!(
                (e.line, e.column, e.key.as_str()),
                (7, 10, "interface.queues"),
                "{v}"
            );
            assert!(e.message.contains(says), "{v}: {}", e.message);
        }
    }

    #[test]
    fn auto_queues_by_cpu_count() {
        let auto = |cpus| Queues::Auto.count(cpus);
        assert_eq!([auto(1), auto(2), auto(3)], [1, 1, 1]);
        assert_eq!([auto(4), auto(6), auto(8), auto(64)], [2, 3, 4, 4]);
        assert_eq!(Queues::Fixed(3).count(1), 3);
    }

    proptest! {
        // Fuzz-like: any text, and a valid file with lines dropped or
        // characters swapped, gives Ok or located errors, never a panic.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = parse(Path::new("t.toml"), &text);
        }

        #[test]
        fn mangled_valid_file_never_panics(
            drop in proptest::collection::vec(any::<bool>(), 12),
            at in 0usize..400,
            with in "[\\[\\]=\"., a-z0-9\\n:/é]{0,3}",
        ) {
            let mut text: String = VALID
                .lines()
                .zip(drop.iter().chain(std::iter::repeat(&false)))
                .filter(|(_, d)| !**d)
                .map(|(l, _)| format!("{l}\n"))
                .collect();
            let at = (0..=at.min(text.len())).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
            text.insert_str(at, &with);
            match parse(Path::new("t.toml"), &text) {
                Ok(_) => {}
                Err(ConfigErrors(errors)) => {
                    prop_assert!(!errors.is_empty());
                    for e in errors {
                        prop_assert!(e.line >= 1 && e.column >= 1, "{e}");
                    }
                }
            }
        }
    }
}
