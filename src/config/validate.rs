//! [`RawConfig`] → domain types, collecting every error with its place.
//!
//! Each table has one function here that takes its raw struct and returns the
//! validated value (or `None` after recording why). Cross-entry rules
//! (unique names and keys, no `allowed_ips` prefix on two peers, not listing
//! ourselves) run after every entry has been checked on its own; cross-table
//! rules (`dht` needs a `[network] id`, `dht_port` differs from
//! `listen_port`) are checked where the later table is validated.
//!
//! Adding a key to a table: a field in its `raw` struct, a `match` on it in
//! its function here (`None` → default, `Some(v)` → check, error at
//! `v.span()`), a field in the public type.

use std::collections::{HashMap, HashSet};
use std::io::Read as _;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use toml::Spanned;
use zeroize::Zeroizing;

use super::endpoint::EndpointError;
use super::raw::{
    IntOrStr, OneOrList, RawConfig, RawDiscovery, RawInterface, RawMetrics, RawNetwork, RawPeer,
    RawRelay,
};
use super::{AUTO_QUEUES_MIN_CPUS, MAX_QUEUES, Queues};
use super::{ConfigError, DEFAULT_INTERFACE, DEFAULT_LISTEN_PORT, DEFAULT_MTU, Endpoint};
use super::{DEFAULT_BUSY_POLL, MAX_BUSY_POLL, METRICS_LISTEN_EXAMPLE, Metrics};
use super::{DEFAULT_STATE_DIR, Discovery, Interface, Network, Peer, Relay, duration, rate};
use crate::identity::{KeyError, NetworkSecret, PublicKey, SecretKey};

/// Linux `IFNAMSIZ` is 16 including the terminating NUL.
const IFNAME_MAX: usize = 15;
/// RFC 791: every IPv4 host must accept 576-byte datagrams.
const MTU_MIN_V4: i64 = 576;
/// RFC 8200 §5: the IPv6 minimum link MTU.
const MTU_MIN_V6: i64 = 1280;
const MTU_MAX: i64 = 9000;
const KEEPALIVE_MIN: std::time::Duration = std::time::Duration::from_secs(1);
const KEEPALIVE_MAX: std::time::Duration = std::time::Duration::from_secs(3600);
/// A key file holds 44 characters; anything much larger is the wrong file.
const KEY_FILE_MAX: u64 = 1024;
/// Longest `[network] id`: a name people type, not a key.
const NETWORK_ID_MAX: usize = 64;

/// Where errors and warnings are collected, with what is needed to place them.
pub(super) struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
    line_starts: Vec<usize>,
    /// Key paths already reported by deserialization (and removed from the tree).
    removed: &'a HashSet<String>,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
}

impl<'a> Ctx<'a> {
    pub fn new(file: &'a Path, text: &'a str, removed: &'a HashSet<String>) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            file,
            text,
            line_starts,
            removed,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// 1-based line and column (in characters) of byte `offset`.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts.get(line - 1).copied().unwrap_or(0);
        let column = match self.text.get(start..offset) {
            Some(s) => s.chars().count(),
            None => offset - start,
        };
        (line, column + 1)
    }

    fn line(&self, span: &Range<usize>) -> usize {
        self.line_col(span.start).0
    }

    pub fn located(&self, span: Option<Range<usize>>, key: &str, message: String) -> ConfigError {
        let (line, column) = span.map_or((0, 0), |s| self.line_col(s.start));
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            key: key.to_string(),
            message,
        }
    }

    fn error(&mut self, span: Range<usize>, key: &str, message: String) {
        let e = self.located(Some(span), key, message);
        self.errors.push(e);
    }

    fn warn(&mut self, span: Range<usize>, key: &str, message: String) {
        let w = self.located(Some(span), key, message);
        self.warnings.push(w);
    }

    /// A required key is absent from the table whose header is at `span`.
    fn missing(&mut self, span: Range<usize>, table: &str, key: &str, hint: &str) {
        let path = format!("{table}.{key}");
        if !self.removed.contains(&path) {
            self.error(span, &path, format!("missing required key {key:?}; {hint}"));
        }
    }
}

/// Everything a valid file yields.
pub(super) struct Validated {
    pub static_only: bool,
    pub interface: Interface,
    pub network: Network,
    pub discovery: Discovery,
    pub relay: Relay,
    pub metrics: Metrics,
    pub peers: Vec<Peer>,
}

/// Validate the whole file. `None` if anything was wrong (see `ctx.errors`).
pub(super) fn config(ctx: &mut Ctx<'_>, raw: RawConfig, base_dir: &Path) -> Option<Validated> {
    // Read before the tables are consumed, for the cross-table rules.
    let listen_port_line = raw
        .interface
        .as_ref()
        .and_then(|t| t.get_ref().listen_port.as_ref())
        .map(|v| ctx.line(&v.span()));
    dht_needs_network_id(ctx, &raw);
    let static_only = static_only(&raw);
    let network_at = raw.network.as_ref().map(|t| t.span());

    let interface = match raw.interface {
        Some(table) => interface(ctx, table, base_dir),
        None => {
            if !ctx.removed.contains("interface") {
                ctx.error(
                    0..0,
                    "interface",
                    "missing required table [interface]; it needs at least \"address\" and \
                     \"private_key_file\""
                        .to_string(),
                );
            }
            None
        }
    };
    let network = match raw.network {
        Some(table) => network(ctx, table.into_inner(), base_dir),
        None => Some(Network::default()),
    };
    let listen_port = interface
        .as_ref()
        .map(|i| (i.listen_port, listen_port_line));
    let dht_default = !static_only;
    let discovery = match raw.discovery {
        Some(table) => discovery(ctx, table.into_inner(), base_dir, listen_port, dht_default),
        None => Some(Discovery {
            dht: dht_default,
            ..Discovery::default()
        }),
    };
    let own_key = interface.as_ref().map(|i| i.private_key.public());
    // Before the peers are consumed: `[relay] via` names them.
    let peer_names: Vec<String> = raw
        .peer
        .iter()
        .filter_map(|p| p.get_ref().name.as_ref().map(|n| n.get_ref().clone()))
        .collect();
    let relay = match raw.relay {
        Some(table) => relay(ctx, table.into_inner(), &peer_names),
        None => Some(Relay::default()),
    };
    let relay_tcp = relay.as_ref().and_then(|r| r.tcp_port.filter(|_| r.serve));
    let metrics = match raw.metrics {
        Some(table) => metrics(ctx, table.into_inner(), relay_tcp),
        None => Some(Metrics::default()),
    };
    let peers = peers(ctx, raw.peer, own_key, static_only);
    if let (Some(n), Some(d)) = (&network, &discovery) {
        dht_without_secret(ctx, network_at.unwrap_or(0..0), n, d);
    }
    Some(Validated {
        static_only,
        interface: interface?,
        network: network?,
        discovery: discovery?,
        relay: relay?,
        metrics: metrics?,
        peers: peers?,
    })
}

/// No `[network]` table and no `dht` key: the file is a WireGuard-style
/// one (static endpoints only), so the DHT defaults to off instead of
/// failing for want of a network id.
fn static_only(raw: &RawConfig) -> bool {
    raw.network.is_none()
        && raw
            .discovery
            .as_ref()
            .is_none_or(|t| t.get_ref().dht.is_none())
}

/// Records published without a network secret are readable by anyone who
/// guesses the network id (`docs/protocol.md`, "What the DHT learns"): a
/// warning, not an error, since a network id alone is a working setup.
/// Reported at the `[network]` table (where `secret_file` goes).
fn dht_without_secret(ctx: &mut Ctx<'_>, at: Range<usize>, network: &Network, d: &Discovery) {
    if !d.dht || network.secret.is_some() {
        return;
    }
    ctx.warn(
        at,
        "network.secret_file",
        "the DHT is on without a network secret: DHT nodes storing this node's record see its \
         public key, IP address and the network's salt, and anyone who guesses the network id \
         can read the record (this node's addresses, relays and NAT); create a secret once with \
         `kith genkey --network > /etc/kith/network.secret`, copy it to every node and set \
         secret_file = \"/etc/kith/network.secret\" under [network]"
            .to_string(),
    );
}

/// `dht = true` (the default once a `[network]` table is written) publishes
/// and looks up records under the network id, so it needs one. Reported at
/// `[discovery]`, or at the top of the file when that table is absent (the
/// default is what is wrong).
fn dht_needs_network_id(ctx: &mut Ctx<'_>, raw: &RawConfig) {
    let removed = |k: &str| ctx.removed.contains(k);
    // A bad `dht` or `id` value was already reported; do not guess around it.
    if removed("discovery")
        || removed("discovery.dht")
        || removed("network")
        || removed("network.id")
        || static_only(raw)
    {
        return;
    }
    let dht = raw
        .discovery
        .as_ref()
        .and_then(|t| t.get_ref().dht.as_ref());
    let has_id = raw
        .network
        .as_ref()
        .is_some_and(|t| t.get_ref().id.is_some());
    if has_id || dht.is_some_and(|v| !*v.get_ref()) {
        return;
    }
    let why = if dht.is_some() {
        "[discovery] dht = true"
    } else {
        "[discovery] dht is true by default when there is a [network] table"
    };
    let at = raw.discovery.as_ref().map_or(0..0, |t| t.span());
    ctx.error(
        at,
        "network.id",
        format!(
            "missing [network] id, which the DHT needs to find your peers ({why}): set \
             id = \"home\" (any name shared by your nodes) under [network], or set [discovery] \
             dht = false to use only static endpoints"
        ),
    );
}

fn interface(
    ctx: &mut Ctx<'_>,
    table: Spanned<RawInterface>,
    base_dir: &Path,
) -> Option<Interface> {
    let header = table.span();
    let raw = table.into_inner();
    let mut ok = true;

    let name = match raw.name {
        None => Some(DEFAULT_INTERFACE.to_string()),
        Some(v) => match check_ifname(v.get_ref()) {
            Ok(()) => Some(v.into_inner()),
            Err(msg) => {
                ctx.error(v.span(), "interface.name", msg);
                None
            }
        },
    };

    let addresses = match raw.address {
        None => {
            ctx.missing(
                header.clone(),
                "interface",
                "address",
                "give this node's overlay address and prefix, e.g. address = \"100.96.0.1/16\"",
            );
            None
        }
        Some(v) => addresses(ctx, v),
    };

    let private_key = private_key(
        ctx,
        header.clone(),
        raw.private_key,
        raw.private_key_file,
        base_dir,
    );

    let listen_port = match raw.listen_port {
        None => Some(DEFAULT_LISTEN_PORT),
        Some(v) => match u16::try_from(*v.get_ref()) {
            Ok(port) => Some(port),
            Err(_) => {
                ctx.error(
                    v.span(),
                    "interface.listen_port",
                    format!(
                        "listen_port must be between 0 and 65535 (0 = any free port), got {}",
                        v.get_ref()
                    ),
                );
                None
            }
        },
    };

    let mtu = match raw.mtu {
        None => Some(DEFAULT_MTU),
        Some(v) => {
            let mtu = *v.get_ref();
            let v6 = addresses
                .as_ref()
                .is_some_and(|list| list.iter().any(|a| a.addr().is_ipv6()));
            if !(MTU_MIN_V4..=MTU_MAX).contains(&mtu) {
                ctx.error(
                    v.span(),
                    "interface.mtu",
                    format!("mtu must be between {MTU_MIN_V4} and {MTU_MAX}, got {mtu}"),
                );
                None
            } else if v6 && mtu < MTU_MIN_V6 {
                ctx.error(
                    v.span(),
                    "interface.mtu",
                    format!(
                        "mtu {mtu} is below {MTU_MIN_V6}, the minimum for IPv6 (the address is IPv6)"
                    ),
                );
                None
            } else {
                u16::try_from(mtu).ok()
            }
        }
    };

    let busy_poll = match raw.busy_poll {
        None => Some(DEFAULT_BUSY_POLL),
        Some(v) => match duration::parse(v.get_ref()) {
            Ok(d) if d > MAX_BUSY_POLL => {
                ctx.error(
                    v.span(),
                    "interface.busy_poll",
                    format!(
                        "busy_poll {:?} is too long (at most \"10ms\"); \"200us\" suits most \
                         machines, \"0s\" turns it off (laptops)",
                        v.get_ref()
                    ),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                ctx.error(
                    v.span(),
                    "interface.busy_poll",
                    format!("invalid busy_poll {:?}: {e}", v.get_ref()),
                );
                None
            }
        },
    };

    let queues = match raw.queues {
        None => Some(Queues::Auto),
        Some(v) => {
            let queues = match v.get_ref() {
                IntOrStr::Str(s) if s == "auto" => Ok(Queues::Auto),
                IntOrStr::Str(s) => Err(format!("invalid queues {s:?}")),
                IntOrStr::Int(n) => u8::try_from(*n)
                    .ok()
                    .filter(|n| (1..=MAX_QUEUES).contains(n))
                    .map(Queues::Fixed)
                    .ok_or_else(|| format!("queues must be between 1 and {MAX_QUEUES}, got {n}")),
            };
            match queues {
                Ok(q) => Some(q),
                Err(e) => {
                    ctx.error(
                        v.span(),
                        "interface.queues",
                        format!(
                            "{e}: write \"auto\" (one worker below \
                             {AUTO_QUEUES_MIN_CPUS} CPUs) or a number of data-plane workers \
                             from 1 to {MAX_QUEUES}"
                        ),
                    );
                    None
                }
            }
        }
    };

    ok &= name.is_some() && addresses.is_some() && private_key.is_some();
    ok &= listen_port.is_some() && mtu.is_some() && busy_poll.is_some() && queues.is_some();
    if !ok {
        return None;
    }
    Some(Interface {
        name: name?,
        addresses: addresses?,
        private_key: private_key?,
        listen_port: listen_port?,
        mtu: mtu?,
        busy_poll: busy_poll?,
        queues: queues?,
    })
}

/// `[interface] address`: one CIDR string, or a list with at most one
/// IPv4 and one IPv6 address (the TUN device gets each; tun-rs and the
/// kernel give an interface one primary IPv4 address).
fn addresses(ctx: &mut Ctx<'_>, value: Spanned<OneOrList>) -> Option<Vec<IpNet>> {
    const EXAMPLE: &str = "100.96.0.1/16";
    let span = value.span();
    let items = match value.into_inner() {
        OneOrList::One(text) => {
            return match parse_cidr(&text, EXAMPLE) {
                Ok(net) => Some(vec![net]),
                Err(msg) => {
                    ctx.error(span, "interface.address", msg);
                    None
                }
            };
        }
        OneOrList::List(items) => items,
    };
    if items.is_empty() {
        ctx.error(
            span,
            "interface.address",
            "the address list is empty; give this node's overlay address, e.g. \
             address = \"100.96.0.1/16\" or address = [\"100.96.0.1/16\", \"fd00:6b69::1/64\"]"
                .to_string(),
        );
        return None;
    }
    let mut out: Vec<(IpNet, usize)> = Vec::new();
    let mut ok = true;
    for (i, item) in items.into_iter().enumerate() {
        let key = format!("interface.address[{i}]");
        let net = match parse_cidr(item.get_ref(), EXAMPLE) {
            Ok(net) => net,
            Err(msg) => {
                ctx.error(item.span(), &key, msg);
                ok = false;
                continue;
            }
        };
        let line = ctx.line(&item.span());
        if let Some((first, first_line)) = out
            .iter()
            .find(|(n, _)| n.addr().is_ipv4() == net.addr().is_ipv4())
        {
            let family = if net.addr().is_ipv4() { "IPv4" } else { "IPv6" };
            ctx.error(
                item.span(),
                &key,
                format!(
                    "a second {family} address ({net}; {first} is on line {first_line}): the \
                     interface takes one IPv4 and one IPv6 address; remove one"
                ),
            );
            ok = false;
            continue;
        }
        out.push((net, line));
    }
    ok.then(|| out.into_iter().map(|(net, _)| net).collect())
}

fn private_key(
    ctx: &mut Ctx<'_>,
    header: Range<usize>,
    inline: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
    base_dir: &Path,
) -> Option<SecretKey> {
    match (inline, file) {
        (None, None) => {
            ctx.error(
                header,
                "interface.private_key_file",
                "missing required key \"private_key_file\" (or \"private_key\"); create a key \
                 with `kith genkey > /etc/kith/private.key` and point private_key_file at it"
                    .to_string(),
            );
            None
        }
        (Some(inline), None) => match inline.get_ref().parse::<SecretKey>() {
            Ok(key) => Some(key),
            Err(e) => {
                // Never echo the value: it is meant to be a secret.
                ctx.error(
                    inline.span(),
                    "interface.private_key",
                    format!("invalid private_key: {e}; generate one with `kith genkey`"),
                );
                None
            }
        },
        (inline, Some(file)) => {
            if let Some(inline) = inline {
                ctx.warn(
                    inline.span(),
                    "interface.private_key",
                    "both private_key and private_key_file are set; using private_key_file \
                     and ignoring private_key (remove one)"
                        .to_string(),
                );
            }
            secret_file(ctx, &PRIVATE_KEY_FILE, file, base_dir, |text| {
                text.parse::<SecretKey>().map_err(|e| e.to_string())
            })
        }
    }
}

/// A file holding one base64 secret (`private_key_file`, `secret_file`), and
/// the words its messages use.
struct SecretFile {
    /// Key path naming the file.
    key: &'static str,
    /// "private key file".
    what: &'static str,
    /// What it holds: "key".
    holds: &'static str,
    /// How to make a valid one, e.g. "`kith genkey`".
    make: &'static str,
}

const PRIVATE_KEY_FILE: SecretFile = SecretFile {
    key: "interface.private_key_file",
    what: "private key file",
    holds: "key",
    make: "`kith genkey`",
};

const NETWORK_SECRET_FILE: SecretFile = SecretFile {
    key: "network.secret_file",
    what: "network secret file",
    holds: "secret",
    make: "`kith genkey --network > network.secret` (once, then copy it to every node)",
};

/// Read and decode the secret file named by `file` (relative to
/// `base_dir`), recording an error or a permission warning at its value.
fn secret_file<T>(
    ctx: &mut Ctx<'_>,
    kind: &SecretFile,
    file: Spanned<String>,
    base_dir: &Path,
    decode: impl FnOnce(&str) -> Result<T, String>,
) -> Option<T> {
    let path = base_dir.join(file.get_ref());
    let shown = path.display();
    let (what, holds, make) = (kind.what, kind.holds, kind.make);
    let (text, mode) = match read_secret_file(&path, kind) {
        Ok(read) => read,
        Err(msg) => {
            ctx.error(file.span(), kind.key, msg);
            return None;
        }
    };
    let value = match decode(text.trim()) {
        Ok(value) => value,
        Err(e) => {
            // Never echo the contents: they are meant to be a secret.
            ctx.error(
                file.span(),
                kind.key,
                format!(
                    "{what} \"{shown}\" does not hold a valid {holds}: {e}; regenerate it with {make}"
                ),
            );
            return None;
        }
    };
    if mode & 0o077 != 0 {
        // Refused, not warned about: a secret others can read is already
        // theirs, and a warning scrolls past in a service's journal.
        ctx.error(
            file.span(),
            kind.key,
            format!(
                "{what} \"{shown}\" is readable by group/others (mode {:03o}); \
                 run `chmod 600 {shown}` (and consider the secret exposed)",
                mode & 0o777,
            ),
        );
        return None;
    }
    Some(value)
}

/// Read a secret file's text (at most [`KEY_FILE_MAX`] bytes) and its
/// permission bits (0 where there are none).
fn read_secret_file(path: &Path, kind: &SecretFile) -> Result<(Zeroizing<String>, u32), String> {
    let shown = path.display();
    let (what, holds, make) = (kind.what, kind.holds, kind.make);
    let name = kind.key.rsplit('.').next().unwrap_or(kind.key);
    let cannot = |e: std::io::Error| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "; check the path (a relative path is resolved against the config file's \
                 directory) or create the {holds} with {make}"
            ),
            std::io::ErrorKind::PermissionDenied => {
                "; run kith as a user that may read it".to_string()
            }
            _ => String::new(),
        };
        format!("cannot read {what} \"{shown}\": {e}{hint}")
    };
    // Check the kind first: a FIFO or device (/dev/zero) would block or never end.
    let meta = std::fs::metadata(path).map_err(cannot)?;
    if !meta.is_file() {
        return Err(format!(
            "{what} \"{shown}\" is not a regular file; point {name} at the file written by {make}"
        ));
    }
    // Room for all of it up front: a growing buffer would leave copies of
    // the secret behind in freed memory.
    let mut text = Zeroizing::new(String::with_capacity(KEY_FILE_MAX as usize + 1));
    std::fs::File::open(path)
        .and_then(|f| f.take(KEY_FILE_MAX + 1).read_to_string(&mut text))
        .map_err(cannot)?;
    if text.len() as u64 > KEY_FILE_MAX {
        return Err(format!(
            "{what} \"{shown}\" is too large to hold a {holds} (it should be 44 characters of \
             base64)"
        ));
    }
    Ok((text, mode_bits(&meta)))
}

#[cfg(unix)]
fn mode_bits(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    meta.permissions().mode()
}

#[cfg(not(unix))]
fn mode_bits(_meta: &std::fs::Metadata) -> u32 {
    0
}

fn network(ctx: &mut Ctx<'_>, raw: RawNetwork, base_dir: &Path) -> Option<Network> {
    let id = match raw.id {
        None => Some(None),
        Some(v) => match check_network_id(v.get_ref()) {
            Ok(()) => Some(Some(v.into_inner())),
            Err(msg) => {
                ctx.error(v.span(), "network.id", msg);
                None
            }
        },
    };

    let secret = match raw.secret_file {
        None => Some(None),
        Some(file) => {
            secret_file(ctx, &NETWORK_SECRET_FILE, file, base_dir, decode_secret).map(Some)
        }
    };

    Some(Network {
        id: id?,
        secret: secret?,
    })
}

/// A network id: 1 to [`NETWORK_ID_MAX`] of `[A-Za-z0-9._-]`, so it reads
/// the same in every shell, log and file name.
fn check_network_id(id: &str) -> Result<(), String> {
    let hint = format!(
        "use 1 to {NETWORK_ID_MAX} letters, digits, '.', '_' or '-', the same on every node, \
         e.g. id = \"home\""
    );
    if id.is_empty() {
        return Err(format!("network id is empty; {hint}"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!("network id {id:?} contains {c:?}; {hint}"));
    }
    if id.len() > NETWORK_ID_MAX {
        return Err(format!(
            "network id is {} characters long, at most {NETWORK_ID_MAX} are allowed; {hint}",
            id.len()
        ));
    }
    Ok(())
}

/// The network secret: 32 bytes in standard base64 (what `kith genkey
/// --network` writes).
fn decode_secret(text: &str) -> Result<NetworkSecret, String> {
    text.parse::<NetworkSecret>().map_err(|e| match e {
        KeyError::Length { len } => format!("decodes to {len} bytes, a secret is 32 bytes"),
        other => other.to_string(),
    })
}

/// `[discovery]`; `listen_port` is the validated `[interface] listen_port`
/// and the line it was written on (`None` when defaulted), if valid;
/// `dht_default` is what an absent `dht` key means (see [`static_only`]).
fn discovery(
    ctx: &mut Ctx<'_>,
    raw: RawDiscovery,
    base_dir: &Path,
    listen_port: Option<(u16, Option<usize>)>,
    dht_default: bool,
) -> Option<Discovery> {
    let default = Discovery::default();

    let dht = raw.dht.map_or(dht_default, Spanned::into_inner);

    let bootstrap = match raw.bootstrap {
        None => Some(default.bootstrap),
        Some(list) if list.get_ref().is_empty() => {
            if dht {
                ctx.error(
                    list.span(),
                    "discovery.bootstrap",
                    "bootstrap is empty, so the DHT has no node to start from; list at least \
                     one \"host:port\" (or remove the key to use the public bootstrap nodes), \
                     or set dht = false"
                        .to_string(),
                );
                None
            } else {
                Some(Vec::new())
            }
        }
        Some(list) => server_list(
            ctx,
            list,
            "bootstrap",
            "bootstrap node",
            "router.bittorrent.com:6881",
        ),
    };

    // An empty list is allowed: it turns STUN off (no reflexive candidates).
    let stun = match raw.stun {
        None => Some(default.stun),
        Some(list) => server_list(ctx, list, "stun", "STUN server", "stun.l.google.com:19302"),
    };
    let port_mapping = raw
        .port_mapping
        .map_or(default.port_mapping, Spanned::into_inner);

    let dht_port = match raw.dht_port {
        None => Some(default.dht_port),
        Some(v) => match u16::try_from(*v.get_ref()) {
            Err(_) => {
                ctx.error(
                    v.span(),
                    "discovery.dht_port",
                    format!(
                        "dht_port must be between 0 and 65535 (0 = any free port), got {}",
                        v.get_ref()
                    ),
                );
                None
            }
            Ok(port) => match listen_port {
                Some((listen, line)) if port != 0 && port == listen => {
                    let at = match line {
                        Some(line) => format!("line {line}"),
                        None => "the default".to_string(),
                    };
                    ctx.error(
                        v.span(),
                        "discovery.dht_port",
                        format!(
                            "dht_port {port} is the same as [interface] listen_port ({at}); the \
                             DHT node has its own UDP socket, so choose another port, or 0 for \
                             any free port"
                        ),
                    );
                    None
                }
                _ => Some(port),
            },
        },
    };

    let state_dir_in_file = raw.state_dir.is_some();
    let state_dir = match raw.state_dir {
        None => Some(default.state_dir),
        Some(v) if v.get_ref().is_empty() => {
            ctx.error(
                v.span(),
                "discovery.state_dir",
                format!(
                    "state_dir is empty; give a directory kith may write, e.g. \
                     state_dir = {DEFAULT_STATE_DIR:?}"
                ),
            );
            None
        }
        // A relative path is resolved like private_key_file: against the
        // config file's directory, never the daemon's working directory.
        Some(v) => Some(base_dir.join(v.get_ref())),
    };

    let dht_server = match raw.dht_server {
        None => default.dht_server,
        Some(v) => {
            if *v.get_ref() && !dht {
                ctx.warn(
                    v.span(),
                    "discovery.dht_server",
                    "dht_server = true has no effect with dht = false".to_string(),
                );
            }
            v.into_inner()
        }
    };

    Some(Discovery {
        dht,
        bootstrap: bootstrap?,
        stun: stun?,
        port_mapping,
        dht_port: dht_port?,
        state_dir: state_dir?,
        state_dir_in_file,
        dht_server,
    })
}

/// A list of `host:port` servers under `[discovery] key`; `what` names one
/// in messages and `example` shows a valid entry.
fn server_list(
    ctx: &mut Ctx<'_>,
    list: Spanned<Vec<Spanned<String>>>,
    key: &str,
    what: &str,
    example: &str,
) -> Option<Vec<String>> {
    let mut servers = Vec::new();
    let mut list_ok = true;
    for (i, item) in list.into_inner().into_iter().enumerate() {
        match item.get_ref().parse::<Endpoint>() {
            Ok(_) => servers.push(item.into_inner()),
            Err(e) => {
                let why = match e {
                    EndpointError::PortZero => {
                        format!(
                            "port 0 is not allowed; give the {what}'s UDP port, e.g. {example:?}"
                        )
                    }
                    e => e.to_string(),
                };
                ctx.error(
                    item.span(),
                    &format!("discovery.{key}[{i}]"),
                    format!("invalid {what} {:?}: {why}", item.get_ref()),
                );
                list_ok = false;
            }
        }
    }
    list_ok.then_some(servers)
}

/// A Linux interface name (see the kernel's `dev_valid_name`).
fn check_ifname(name: &str) -> Result<(), String> {
    const HINT: &str = "use 1 to 15 letters, digits, '-', '_' or '.', e.g. \"kith0\"";
    if name.is_empty() {
        return Err(format!("interface name is empty; {HINT}"));
    }
    if name.len() > IFNAME_MAX {
        return Err(format!(
            "interface name {name:?} is {} bytes long, Linux allows at most {IFNAME_MAX}; {HINT}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("interface name {name:?} is not allowed; {HINT}"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!("interface name {name:?} contains {c:?}; {HINT}"));
    }
    Ok(())
}

fn parse_cidr(text: &str, example: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>().map_err(|_| {
        if text.parse::<IpAddr>().is_ok() {
            format!("missing prefix length: expected a CIDR like {example:?}, got {text:?}")
        } else {
            format!("expected a CIDR like {example:?}, got {text:?}")
        }
    })
}

/// What is remembered of an earlier peer for cross-peer checks.
struct Seen {
    index: usize,
    /// The peer's name if it had a valid one, for messages.
    name: String,
    line: usize,
}

fn peer_label(name: &Option<String>, index: usize) -> String {
    match name {
        Some(n) => format!("peer {n:?}"),
        None => format!("peer[{index}]"),
    }
}

/// `static_only`: the DHT is off because the file has no `[network]` table
/// (see [`static_only`]), so a peer is reachable only at its endpoint.
fn peers(
    ctx: &mut Ctx<'_>,
    raw: Vec<Spanned<RawPeer>>,
    own_key: Option<PublicKey>,
    static_only: bool,
) -> Option<Vec<Peer>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut ok = true;
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut keys: HashMap<PublicKey, Seen> = HashMap::new();
    // Every accepted allowed_ips entry so far: (net, owner label, key path, line).
    let mut routes: Vec<(IpNet, String, String, usize)> = Vec::new();

    for (i, table) in raw.into_iter().enumerate() {
        let header = table.span();
        let raw = table.into_inner();
        let prefix = format!("peer[{i}]");
        let key_of = |k: &str| format!("{prefix}.{k}");

        let name = match raw.name {
            None => {
                ctx.missing(
                    header.clone(),
                    &prefix,
                    "name",
                    "give each peer a unique name, e.g. name = \"nas\"",
                );
                None
            }
            Some(v) => {
                let line = ctx.line(&v.span());
                let n = v.get_ref();
                if n.trim().is_empty() || n.chars().any(char::is_control) {
                    ctx.error(
                        v.span(),
                        &key_of("name"),
                        format!(
                            "peer name {n:?} must be non-empty and printable, e.g. name = \"nas\""
                        ),
                    );
                    None
                } else if let Some(first) = names.get(n) {
                    ctx.error(
                        v.span(),
                        &key_of("name"),
                        format!("duplicate peer name {n:?} (first at line {first}); names must be unique"),
                    );
                    None
                } else {
                    names.insert(n.clone(), line);
                    Some(v.into_inner())
                }
            }
        };
        let label = peer_label(&name, i);

        let public_key = match raw.public_key {
            None => {
                ctx.missing(
                    header.clone(),
                    &prefix,
                    "public_key",
                    "copy it from `kith pubkey` on that peer",
                );
                None
            }
            Some(v) => match v.get_ref().parse::<PublicKey>() {
                Err(e) => {
                    ctx.error(
                        v.span(),
                        &key_of("public_key"),
                        format!(
                            "invalid public key {:?}: {e}; copy it from `kith pubkey` on that peer",
                            v.get_ref()
                        ),
                    );
                    None
                }
                Ok(key) if Some(key) == own_key => {
                    ctx.error(
                        v.span(),
                        &key_of("public_key"),
                        "this is our own public key (from [interface]); a node must not list \
                         itself as a peer"
                            .to_string(),
                    );
                    None
                }
                Ok(key) => {
                    if let Some(first) = keys.get(&key) {
                        ctx.error(
                            v.span(),
                            &key_of("public_key"),
                            format!(
                                "duplicate public key: already used by {} (peer[{}], line {}); \
                                 each peer needs its own key",
                                first.name, first.index, first.line
                            ),
                        );
                        None
                    } else {
                        let line = ctx.line(&v.span());
                        keys.insert(
                            key,
                            Seen {
                                index: i,
                                name: label.clone(),
                                line,
                            },
                        );
                        Some(key)
                    }
                }
            },
        };

        let allowed_ips = match raw.allowed_ips {
            None => {
                ctx.missing(
                    header.clone(),
                    &prefix,
                    "allowed_ips",
                    "list the addresses this peer may send from, e.g. allowed_ips = [\"100.96.0.2/32\"]",
                );
                None
            }
            Some(list) => {
                let mut nets = Vec::new();
                let mut list_ok = true;
                for (j, item) in list.into_inner().into_iter().enumerate() {
                    let key = format!("{prefix}.allowed_ips[{j}]");
                    let text = item.get_ref();
                    let net = match parse_cidr(text, "100.96.0.2/32") {
                        Ok(net) => net,
                        Err(msg) => {
                            ctx.error(item.span(), &key, msg);
                            list_ok = false;
                            continue;
                        }
                    };
                    if net.trunc() != net {
                        let host_len = if net.addr().is_ipv4() { 32 } else { 128 };
                        ctx.error(
                            item.span(),
                            &key,
                            format!(
                                "{net} has host bits set; write the network \"{}\" (or \"{}/{host_len}\" \
                                 for a single host)",
                                net.trunc(),
                                net.addr()
                            ),
                        );
                        list_ok = false;
                        continue;
                    }
                    // Nested prefixes are routed by longest prefix (an exit
                    // node's 0.0.0.0/0 beside a NAS's /32); only the same
                    // prefix twice leaves no answer to "which peer".
                    let clash = routes.iter().find(|(other, ..)| *other == net);
                    if let Some((other, owner, other_key, line)) = clash {
                        let msg = if *owner == label {
                            format!(
                                "{net} is listed twice (also {other_key}, line {line}); remove one"
                            )
                        } else {
                            format!(
                                "allowed_ips {other} is also listed for {owner} ({other_key}, line {line}); \
                                 an address may route to only one peer: remove it from one of them \
                                 (a longer prefix inside it may go to another peer)"
                            )
                        };
                        ctx.error(item.span(), &key, msg);
                        list_ok = false;
                        continue;
                    }
                    let line = ctx.line(&item.span());
                    routes.push((net, label.clone(), key, line));
                    nets.push(net);
                }
                list_ok.then_some(nets)
            }
        };

        let endpoint = match raw.endpoint {
            // An explicit `dht = false` says the peer is expected to call in;
            // a file that only left out [network] more likely forgot how the
            // peer is to be found.
            None if static_only => {
                if !ctx.removed.contains(&key_of("endpoint")) {
                    ctx.error(
                        header.clone(),
                        &key_of("endpoint"),
                        format!(
                            "{prefix} has no endpoint, and without a [network] table the DHT is \
                             off, so nothing can find it: add `[network] id = \"...\"` (peers \
                             found through the DHT) or an `endpoint = \"host:port\"` to this peer"
                        ),
                    );
                }
                None
            }
            None => Some(None),
            Some(v) => match v.get_ref().parse::<Endpoint>() {
                Ok(ep) => Some(Some(ep)),
                Err(e) => {
                    ctx.error(
                        v.span(),
                        &key_of("endpoint"),
                        format!("invalid endpoint {:?}: {e}", v.get_ref()),
                    );
                    None
                }
            },
        };

        let keepalive = match raw.keepalive {
            None => Some(None),
            Some(v) => match duration::parse(v.get_ref()) {
                Ok(d) if d.is_zero() => {
                    ctx.error(
                        v.span(),
                        &key_of("keepalive"),
                        "keepalive 0 is not allowed; omit the key to disable keepalives"
                            .to_string(),
                    );
                    None
                }
                Ok(d) if !(KEEPALIVE_MIN..=KEEPALIVE_MAX).contains(&d) => {
                    ctx.error(
                        v.span(),
                        &key_of("keepalive"),
                        format!(
                            "keepalive must be between 1s and 1h, got {:?}; 25s suits most NATs",
                            v.get_ref()
                        ),
                    );
                    None
                }
                Ok(d) => Some(Some(d)),
                Err(e) => {
                    ctx.error(
                        v.span(),
                        &key_of("keepalive"),
                        format!("invalid keepalive {:?}: {e}", v.get_ref()),
                    );
                    None
                }
            },
        };

        let tcp_port = match raw.tcp_port {
            None => Some(None),
            Some(v) => {
                if matches!(endpoint, Some(None)) {
                    ctx.warn(
                        v.span(),
                        &key_of("tcp_port"),
                        "tcp_port has no effect without an endpoint: kith connects to the \
                         endpoint's host at this port"
                            .to_string(),
                    );
                }
                tcp_port(ctx, v, &key_of("tcp_port"), "its [relay] tcp_port").map(Some)
            }
        };

        match (name, public_key, allowed_ips, endpoint, keepalive, tcp_port) {
            (
                Some(name),
                Some(public_key),
                Some(allowed_ips),
                Some(endpoint),
                Some(keepalive),
                Some(tcp_port),
            ) => {
                out.push(Peer {
                    name,
                    public_key,
                    allowed_ips,
                    endpoint,
                    keepalive,
                    tcp_port,
                });
            }
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

/// `[relay]`. `peer_names` are the names the `[[peer]]` tables give, so
/// `via` can be checked against them.
fn relay(ctx: &mut Ctx<'_>, raw: RawRelay, peer_names: &[String]) -> Option<Relay> {
    let serve = raw.serve.as_ref().is_some_and(|v| *v.get_ref());
    let mut ok = true;

    let tcp_port = match raw.tcp_port {
        None => None,
        Some(v) => {
            if !serve {
                ctx.warn(
                    v.span(),
                    "relay.tcp_port",
                    "tcp_port has no effect without serve = true".to_string(),
                );
            }
            let port = tcp_port(ctx, v, "relay.tcp_port", "443 passes most firewalls");
            ok &= port.is_some();
            port
        }
    };

    let mut via = Vec::new();
    if let Some(list) = raw.via {
        let known: Vec<&str> = peer_names.iter().map(String::as_str).collect();
        for (i, item) in list.into_inner().into_iter().enumerate() {
            let key = format!("relay.via[{i}]");
            let name = item.get_ref();
            if via.contains(name) {
                ctx.error(item.span(), &key, format!("{name:?} is listed twice"));
                ok = false;
            } else if known.contains(&name.as_str()) {
                via.push(item.into_inner());
            } else {
                let hint = match super::de::suggest(name, &known) {
                    Some(s) => format!("did you mean {s:?}?"),
                    None => "a relay must also be a [[peer]] (with its name, key and, usually, \
                             endpoint), because we reach it over our session with it"
                        .to_string(),
                };
                ctx.error(
                    item.span(),
                    &key,
                    format!("no peer is named {name:?}; {hint}"),
                );
                ok = false;
            }
        }
    }

    // Some(None): not set; None: invalid (reported).
    let mut limit = |v: Option<Spanned<String>>, key: &str| -> Option<Option<u64>> {
        let Some(v) = v else { return Some(None) };
        let path = format!("relay.{key}");
        if !serve {
            ctx.warn(
                v.span(),
                &path,
                format!("{key} has no effect without serve = true"),
            );
        }
        match rate::parse(v.get_ref()) {
            Ok(r) => Some(Some(r)),
            Err(e) => {
                ctx.error(
                    v.span(),
                    &path,
                    format!("invalid {key} {:?}: {e}", v.get_ref()),
                );
                None
            }
        }
    };
    let rate_line = raw.rate.as_ref().map(|v| v.span());
    let rate = limit(raw.rate, "rate");
    let max_rate = limit(raw.max_rate, "max_rate");
    if let (Some(Some(r)), Some(Some(m)), Some(at)) = (rate, max_rate, rate_line)
        && r > m
    {
        ctx.warn(
            at,
            "relay.rate",
            format!(
                "rate {} per member is above max_rate {}; no member can get more than max_rate",
                rate::format(r),
                rate::format(m)
            ),
        );
    }
    if !ok {
        return None;
    }
    Some(Relay {
        serve,
        tcp_port,
        via,
        rate: rate?,
        max_rate: max_rate?,
    })
}

/// `[metrics]`. `relay_tcp` is the relay service's TCP port, when it
/// serves one: the two listeners cannot share it.
fn metrics(ctx: &mut Ctx<'_>, raw: RawMetrics, relay_tcp: Option<u16>) -> Option<Metrics> {
    let Some(v) = raw.listen else {
        return Some(Metrics::default());
    };
    let key = "metrics.listen";
    let text = v.get_ref().trim();
    let addr = match text.parse::<std::net::SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            let hint = if text.rsplit_once(':').is_some_and(|(host, port)| {
                port.parse::<u16>().is_ok() && host.parse::<IpAddr>().is_err()
            }) {
                "names are not resolved here; write an IP address"
            } else {
                "write an IP address and a TCP port"
            };
            ctx.error(
                v.span(),
                key,
                format!(
                    "invalid listen address {:?}: {hint}, e.g. listen = {METRICS_LISTEN_EXAMPLE:?} \
                     (or remove the key for no HTTP listener; `kith metrics` always works)",
                    v.get_ref()
                ),
            );
            return None;
        }
    };
    if addr.port() == 0 {
        ctx.error(
            v.span(),
            key,
            format!(
                "listen port 0 would pick a random port that nothing can be told to scrape; \
                 give a fixed one, e.g. listen = {METRICS_LISTEN_EXAMPLE:?}"
            ),
        );
        return None;
    }
    if relay_tcp == Some(addr.port()) {
        ctx.error(
            v.span(),
            key,
            format!(
                "port {} is also [relay] tcp_port; the metrics listener needs a port of its own, \
                 e.g. listen = {METRICS_LISTEN_EXAMPLE:?}",
                addr.port()
            ),
        );
        return None;
    }
    if !addr.ip().is_loopback() {
        ctx.warn(
            v.span(),
            key,
            format!(
                "{addr} is reachable from other hosts, and the metrics name every peer and its \
                 traffic; keep the listener on localhost (e.g. {METRICS_LISTEN_EXAMPLE:?}) unless \
                 a firewall guards it"
            ),
        );
    }
    Some(Metrics { listen: Some(addr) })
}

/// A TCP port someone must connect to: 1-65535 (0, "any port", would be
/// unreachable). `example` ends the message.
fn tcp_port(ctx: &mut Ctx<'_>, v: Spanned<i64>, key: &str, example: &str) -> Option<u16> {
    match u16::try_from(*v.get_ref()) {
        Ok(port) if port != 0 => Some(port),
        _ => {
            ctx.error(
                v.span(),
                key,
                format!(
                    "tcp_port must be between 1 and 65535, got {} ({example})",
                    v.get_ref()
                ),
            );
            None
        }
    }
}

/// The directory a relative `private_key_file` is resolved against.
pub(super) fn base_dir(config_path: &Path) -> PathBuf {
    match config_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters() {
        let removed = HashSet::new();
        let text = "ab\né=x\n\nz";
        let ctx = Ctx::new(Path::new("f"), text, &removed);
        assert_eq!(ctx.line_col(0), (1, 1));
        assert_eq!(ctx.line_col(2), (1, 3));
        assert_eq!(ctx.line_col(3), (2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(ctx.line_col(5), (2, 2));
        assert_eq!(ctx.line_col(8), (3, 1));
        assert_eq!(ctx.line_col(9), (4, 1));
        assert_eq!(ctx.line_col(999), (4, 2));
        // Inside a multi-byte character: still a position, no panic.
        assert_eq!(ctx.line_col(4).0, 2);
    }

    #[test]
    fn interface_names() {
        assert!(check_ifname("kith0").is_ok());
        assert!(check_ifname("a.b-c_d").is_ok());
        assert!(check_ifname("123456789012345").is_ok());
        for bad in [
            "",
            "1234567890123456",
            "a/b",
            "a b",
            "a:b",
            "a\tb",
            ".",
            "..",
        ] {
            assert!(check_ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn network_ids() {
        assert!(check_network_id("home").is_ok());
        assert!(check_network_id("a.B_c-9").is_ok());
        assert!(check_network_id(&"x".repeat(NETWORK_ID_MAX)).is_ok());
        for bad in [
            "",
            "ho me",
            "a/b",
            "é",
            "a:b",
            &"x".repeat(NETWORK_ID_MAX + 1),
        ] {
            assert!(check_network_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secrets_are_32_bytes_of_base64() {
        let b64 = SecretKey::from_seed([7; 32]).to_base64();
        assert_eq!(decode_secret(&b64), Ok(NetworkSecret([7; 32])));
        assert!(
            decode_secret("AAAA")
                .unwrap_err()
                .contains("decodes to 3 bytes")
        );
        assert!(
            decode_secret("not base64!")
                .unwrap_err()
                .contains("not valid base64")
        );
    }
}
