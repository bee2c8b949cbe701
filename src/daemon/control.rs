//! The control socket: a unix stream socket (default
//! `/run/kith/<interface>.sock`, mode 0600). A client writes one request
//! line and reads the answer:
//! - `status`: one JSON line, a [`StatusReport`] (`kith status`);
//! - `metrics`: one JSON line, `{"metrics": "<Prometheus text>"}` (`kith metrics`);
//! - `ping COUNT PEER`: one JSON line per probe, a [`PingLine`], as the
//!   answers come (`kith ping`); PEER is a name or a public key;
//! - `reload`: one JSON line, a [`ReloadReport`] (`kith reload`): the
//!   daemon reads its config file again and applies it, or refuses it with
//!   every error;
//! - anything else: `{"error": "..."}`.
//!
//! The listener runs as its own task and hands each request to the daemon's
//! loop, which alone owns the state it reports.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// Where the daemon for `interface` listens unless told otherwise.
pub fn default_path(interface: &str) -> PathBuf {
    PathBuf::from("/run/kith").join(format!("{interface}.sock"))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusReport {
    pub interface: String,
    pub public_key: String,
    pub listen: String,
    /// This node's overlay addresses with their prefixes, e.g. "100.96.0.1/16".
    #[serde(default)]
    pub addresses: Vec<String>,
    /// `None` when the DHT is off.
    pub dht: Option<DhtStatus>,
    pub nat: NatStatus,
    pub peers: Vec<PeerReport>,
    /// The relay service, when `[relay] serve = true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_service: Option<RelayServiceReport>,
    /// Datagrams the relay TCP transport had to drop (a full queue, or no
    /// connection yet or any more).
    #[serde(default)]
    pub tcp_dropped: u64,
    /// Data packets the control plane sealed or opened itself instead of
    /// the data plane: relays reached over TCP and peers without a
    /// settled path (a handful while a path settles). 0 from a daemon
    /// older than the field.
    #[serde(default)]
    pub control_data: u64,
    /// The data plane's drop counters by reason (`daemon::data::Stats`),
    /// zeros included, in a fixed order.
    #[serde(default)]
    pub data_drops: Vec<(String, u64)>,
    /// One entry per data-plane worker (TUN queue, `[interface] queues`):
    /// the datagrams it sealed. Empty from a daemon older than the field.
    #[serde(default)]
    pub data_workers: Vec<u64>,
}

/// What this node relays for others (`[relay] serve = true`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct RelayServiceReport {
    /// TCP port the relay listens on, if any.
    pub tcp_port: Option<u16>,
    /// Frames refused because the sender or destination key is not in our config.
    pub refused_unknown: u64,
    /// Frames refused because the destination has no live session with us.
    pub refused_no_session: u64,
    /// Per member that sent or received relayed traffic.
    pub members: Vec<RelayMemberReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct RelayMemberReport {
    pub name: String,
    /// Bytes of end-to-end packets this member sent through us.
    pub forwarded_bytes: u64,
    pub forwarded_packets: u64,
    /// Bytes delivered to this member on behalf of others.
    pub delivered_bytes: u64,
    /// Frames from this member dropped by the per-member or total rate limit.
    pub dropped_rate: u64,
    /// How this member reaches us: "udp" or "tcp".
    pub transport: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DhtStatus {
    pub network: String,
    /// Sequence number of our last published record, if any.
    pub published_seq: Option<i64>,
    pub local_candidates: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct NatStatus {
    /// RFC 4787 mapping behaviour from STUN ("endpoint-independent", …), if measured.
    pub mapping: Option<String>,
    /// Our address as STUN servers see it.
    pub public: Option<String>,
    /// An endpoint-dependent NAT's allocator step, when it is sequential
    /// (peers predict our next ports from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential_step: Option<i32>,
    /// The router port mapping, e.g. "198.18.0.1:51871 via UPnP".
    pub port_mapping: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerReport {
    pub name: String,
    pub public_key: String,
    /// The prefixes this peer may send from and that are sent to it.
    #[serde(default)]
    pub allowed_ips: Vec<String>,
    /// "direct", "relayed" (through another member, see `relay`) or "none".
    pub path: String,
    /// Why the path is what it is, in words.
    pub path_reason: String,
    pub endpoint: Option<String>,
    pub last_handshake_secs: Option<u64>,
    /// Handshakes completed with the peer: the first and every rekey.
    #[serde(default)]
    pub handshakes: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Candidate addresses being tried.
    pub candidates: Vec<String>,
    /// Where they came from: static, dht, cache.
    pub candidates_source: Option<String>,
    pub candidates_age_secs: Option<u64>,
    /// Hard-NAT traversal for this peer, once one was tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub punch: Option<PunchReport>,
    /// Set while `path` is "relayed".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelayPathReport>,
    /// Relays the peer says it can be reached through (names of our peers
    /// where we know them, else the key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_relays: Vec<String>,
}

/// How a relayed peer is reached.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RelayPathReport {
    /// Name of the relaying peer, e.g. "vps".
    pub via: String,
    /// How we reach that relay: "udp" or "tcp".
    pub transport: String,
    /// Why the path is relayed, e.g. "both sides endpoint-dependent".
    pub reason: String,
    /// End-to-end bytes sent and received through the relay.
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    /// Packets for this peer we could not hand to a relay.
    pub drops: u64,
}

/// A peer's hard-NAT traversal ([`crate::nat::punch`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PunchReport {
    /// "easy" (we probe the peer's ports) or "hard" (we opened sockets).
    pub role: String,
    /// Packets the current or last attempt sent.
    pub probes: u32,
    pub attempts: u32,
    pub active: bool,
    /// How the last attempt ended: "connected" or "spent".
    pub last: Option<String>,
}

/// Most probes one `kith ping` may ask for.
pub const MAX_PING_COUNT: u32 = super::ping::MAX_COUNT;

/// One line of `kith ping`'s answer: what became of one probe (`seq`
/// counts from 1), or why none is sent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PingLine {
    /// The pong came back over this path after `rtt_us` microseconds.
    Pong {
        seq: u32,
        peer: String,
        /// "direct" or "relayed".
        path: String,
        /// The peer's address, for a direct path.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
        /// The relaying peer's name, and how we reach it ("udp" or "tcp").
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relay: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transport: Option<String>,
        rtt_us: u64,
    },
    /// No pong within `timeout_ms`.
    Timeout {
        seq: u32,
        peer: String,
        timeout_ms: u64,
    },
    /// Nothing was sent, and why (e.g. no session yet: a handshake started).
    NotSent {
        seq: u32,
        peer: String,
        reason: String,
    },
    /// The request cannot be served (an unknown peer: the message lists
    /// the known ones).
    Error { message: String },
}

/// What `reload` did. Nothing at all unless `applied`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ReloadReport {
    /// The config file the daemon read.
    pub file: String,
    /// The file's settings are in effect now (also when nothing changed).
    pub applied: bool,
    /// What changed, one entry each, e.g. "added peer nas".
    pub changes: Vec<String>,
    /// Why nothing was applied: the file's errors (`file:line:column: key:
    /// message`, as `kith check-config` prints them) ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// ... or the changes only a restart can apply, each with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs_restart: Vec<String>,
}

/// A request from a client, with the channel for the answer.
pub enum Request {
    Status {
        reply: oneshot::Sender<StatusReport>,
    },
    /// The Prometheus text.
    Metrics { reply: oneshot::Sender<String> },
    /// Read the config file again and apply it (or refuse it).
    Reload {
        reply: oneshot::Sender<ReloadReport>,
    },
    /// `count` probes to `peer` (a name or a public key); the daemon sends
    /// a line per probe and then drops `reply`.
    Ping {
        peer: String,
        count: u32,
        reply: mpsc::Sender<PingLine>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "cannot create the control socket {path}: {source}. Is another kith using this interface name? (`kith up --control PATH` picks another socket)"
    )]
    Bind { path: PathBuf, source: io::Error },
    #[error(
        "{path} exists and is not a socket; kith will not remove it. Move it away, or pick another \
         socket with `kith up --control PATH`"
    )]
    NotSocket { path: PathBuf },
}

/// At most this many control connections are served at once; more wait in
/// the listen backlog.
const MAX_CLIENTS: usize = 16;
/// A client that sends no complete request line in this time is dropped.
const CLIENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Bind the socket (replacing a stale one) and serve requests into `tx`.
pub fn serve(path: &Path, tx: mpsc::Sender<Request>) -> Result<(), ControlError> {
    use std::os::unix::fs::FileTypeExt as _;
    let err = |source| ControlError::Bind {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(ControlError::NotSocket {
                path: path.to_path_buf(),
            });
        }
        // A socket left by a killed daemon would make bind fail; a live
        // one belongs to another daemon, and bind will say so.
        Ok(_) if std::os::unix::net::UnixStream::connect(path).is_err() => {
            let _ = std::fs::remove_file(path);
        }
        _ => {}
    }
    // Bound under a temporary name and made 0600 before it appears under
    // its own: nobody else can connect in between.
    let tmp = path.with_extension(format!("new-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(err)?;
    let placed =
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).and_then(|()| {
            if path.exists() {
                // Raced by another daemon: do not take its socket.
                return Err(io::Error::from(io::ErrorKind::AddrInUse));
            }
            std::fs::rename(&tmp, path)
        });
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    super::accept::serve_capped(listener, MAX_CLIENTS, move |stream| {
        let tx = tx.clone();
        async move {
            if let Err(e) = answer(stream, tx).await {
                tracing::debug!(error = %e, "control request failed");
            }
        }
    });
    Ok(())
}

/// Read one request line and answer it, each within its time: the line and
/// a one-shot answer within [`CLIENT_TIMEOUT`], a ping's stream within the
/// time its probes take.
async fn answer(stream: UnixStream, tx: mpsc::Sender<Request>) -> io::Result<()> {
    let slow = || io::Error::new(io::ErrorKind::TimedOut, "control client too slow; dropped");
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    // One short line; anything longer is not a kith client.
    let mut reader = BufReader::new(read.take(256));
    tokio::time::timeout(CLIENT_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| slow())??;
    let request = line.trim();
    if let Some(args) = request.strip_prefix("ping ") {
        let budget = match parse_ping(args) {
            Ok((count, _)) => super::ping::duration(count) + CLIENT_TIMEOUT,
            Err(_) => CLIENT_TIMEOUT,
        };
        return tokio::time::timeout(budget, answer_ping(args, &tx, &mut write))
            .await
            .map_err(|_| slow())?;
    }
    // The answer must also be taken within the time: a client that does
    // not read it gives its slot back.
    tokio::time::timeout(CLIENT_TIMEOUT, async {
        let response = answer_one(request, &tx).await?;
        write.write_all(response.as_bytes()).await?;
        write.write_all(b"\n").await?;
        write.shutdown().await
    })
    .await
    .map_err(|_| slow())?
}

/// The one-line answer to `request`.
async fn answer_one(request: &str, tx: &mpsc::Sender<Request>) -> io::Result<String> {
    Ok(match request {
        "status" => ask_loop(tx, |reply| Request::Status { reply }).await?,
        "metrics" => {
            let text: String = ask_loop_raw(tx, |reply| Request::Metrics { reply }).await?;
            serde_json::json!({ "metrics": text }).to_string()
        }
        "reload" => ask_loop(tx, |reply| Request::Reload { reply }).await?,
        other => serde_json::json!({
            "error": format!("unknown request {other:?}; try \"status\", \"metrics\", \"reload\" or \"ping COUNT PEER\"")
        })
        .to_string(),
    })
}

/// Hand a request to the daemon's loop; its answer.
async fn ask_loop_raw<T>(
    tx: &mpsc::Sender<Request>,
    request: impl FnOnce(oneshot::Sender<T>) -> Request,
) -> io::Result<T> {
    let stopping = || io::Error::other("daemon stopping");
    let (reply, rx) = oneshot::channel();
    tx.send(request(reply)).await.map_err(|_| stopping())?;
    rx.await.map_err(|_| stopping())
}

/// [`ask_loop_raw`], the answer as one JSON line.
async fn ask_loop<T: Serialize>(
    tx: &mpsc::Sender<Request>,
    request: impl FnOnce(oneshot::Sender<T>) -> Request,
) -> io::Result<String> {
    let answer = ask_loop_raw(tx, request).await?;
    serde_json::to_string(&answer).map_err(io::Error::other)
}

/// `COUNT PEER` of a ping request.
fn parse_ping(args: &str) -> Result<(u32, &str), String> {
    let usage = || {
        format!(
            "usage: ping COUNT PEER, COUNT from 1 to {}",
            super::ping::MAX_COUNT
        )
    };
    let (count, peer) = args.trim().split_once(' ').ok_or_else(usage)?;
    let count: u32 = count.parse().map_err(|_| usage())?;
    let peer = peer.trim();
    if !(1..=super::ping::MAX_COUNT).contains(&count) || peer.is_empty() {
        return Err(usage());
    }
    Ok((count, peer))
}

/// Stream one JSON line per probe until the daemon drops its sender.
async fn answer_ping(
    args: &str,
    tx: &mpsc::Sender<Request>,
    write: &mut tokio::net::unix::OwnedWriteHalf,
) -> io::Result<()> {
    let (count, peer) = match parse_ping(args) {
        Ok(p) => p,
        Err(message) => {
            let line =
                serde_json::to_string(&PingLine::Error { message }).map_err(io::Error::other)?;
            write.write_all(line.as_bytes()).await?;
            write.write_all(b"\n").await?;
            return write.shutdown().await;
        }
    };
    // Room for every line: the daemon never waits on this client.
    let (reply, mut lines) = mpsc::channel(count as usize + 1);
    tx.send(Request::Ping {
        peer: peer.to_string(),
        count,
        reply,
    })
    .await
    .map_err(|_| io::Error::other("daemon stopping"))?;
    while let Some(line) = lines.recv().await {
        let text = serde_json::to_string(&line).map_err(io::Error::other)?;
        write.write_all(text.as_bytes()).await?;
        write.write_all(b"\n").await?;
    }
    write.shutdown().await
}

use tokio::io::AsyncReadExt as _;

/// Connect to the daemon's control socket at `path` and send `request`.
async fn connect(path: &Path, request: &str) -> Result<UnixStream, String> {
    let mut stream = UnixStream::connect(path).await.map_err(|e| {
        format!(
            "cannot reach the kith daemon at {}: {e}. Is `kith up` running for this interface (and are you root)? Use -i IFACE or --control PATH",
            path.display()
        )
    })?;
    stream
        .write_all(format!("{request}\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

/// Send `request` and read the whole one-line answer as `T`, or the
/// daemon's `{"error": ...}`.
async fn request_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    request: &str,
) -> Result<T, String> {
    let mut stream = connect(path, request).await?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .await
        .map_err(|e| e.to_string())?;
    if let Ok(serde_json::Value::Object(o)) = serde_json::from_str(&text)
        && let Some(serde_json::Value::String(e)) = o.get("error")
    {
        return Err(format!("the daemon at {} says: {e}", path.display()));
    }
    serde_json::from_str(&text)
        .map_err(|e| format!("unexpected answer from {}: {e}", path.display()))
}

/// Client side: ask the daemon at `path` for its status.
pub async fn request_status(path: &Path) -> Result<StatusReport, String> {
    request_json(path, "status").await
}

/// Client side: ask the daemon at `path` to read its config file again.
pub async fn request_reload(path: &Path) -> Result<ReloadReport, String> {
    request_json(path, "reload").await
}

/// Client side: the daemon's metrics, as Prometheus text.
pub async fn request_metrics(path: &Path) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Answer {
        metrics: String,
    }
    request_json::<Answer>(path, "metrics")
        .await
        .map(|a| a.metrics)
}

/// Client side: `count` probes to `peer`; `on_line` gets each line as it
/// arrives.
pub async fn request_ping(
    path: &Path,
    peer: &str,
    count: u32,
    mut on_line: impl FnMut(PingLine),
) -> Result<(), String> {
    let stream = connect(path, &format!("ping {count} {peer}")).await?;
    let mut lines = BufReader::new(stream).lines();
    while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
        let parsed = serde_json::from_str(&line)
            .map_err(|e| format!("unexpected answer from {}: {e}: {line}", path.display()))?;
        on_line(parsed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Send one request line to the socket at `path`; its answer line.
    async fn ask(path: &Path, line: &str) -> String {
        let mut s = UnixStream::connect(path).await.unwrap();
        s.write_all(format!("{line}\n").as_bytes()).await.unwrap();
        let mut answer = String::new();
        BufReader::new(s).read_line(&mut answer).await.unwrap();
        answer
    }

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kith-control-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[tokio::test]
    async fn status_and_reload_requests_reach_the_loop_and_their_answers_come_back() {
        let d = dir("reload");
        let path = d.join("kith0.sock");
        let (tx, mut rx) = mpsc::channel(1);
        serve(&path, tx).unwrap();
        let report = ReloadReport {
            file: "/etc/kith/kith.toml".into(),
            applied: false,
            changes: Vec::new(),
            errors: vec!["/etc/kith/kith.toml:3:1: interface.name: bad".into()],
            needs_restart: Vec::new(),
        };
        let answered = report.clone();
        let daemon = tokio::spawn(async move {
            match rx.recv().await {
                Some(Request::Reload { reply }) => reply.send(answered).unwrap(),
                _ => panic!("expected a reload request"),
            }
        });
        assert_eq!(request_reload(&path).await.unwrap(), report);
        daemon.await.unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_socket_is_left_alone() {
        let d = dir("file");
        let path = d.join("kith0.sock");
        std::fs::write(&path, b"precious").unwrap();
        let (tx, _rx) = mpsc::channel(1);
        let e = serve(&path, tx).unwrap_err();
        assert!(matches!(e, ControlError::NotSocket { .. }), "{e}");
        assert!(e.to_string().contains("--control PATH"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn the_socket_is_private_and_not_taken_from_a_live_daemon() {
        let d = dir("live");
        let path = d.join("kith0.sock");
        let (tx, _rx) = mpsc::channel(1);
        serve(&path, tx.clone()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let e = serve(&path, tx).unwrap_err();
        assert!(matches!(e, ControlError::Bind { .. }), "{e}");
        // Still the first one's: it answers.
        let answer = ask(&path, "hello").await;
        assert!(answer.contains("unknown request"), "{answer}");
        let leftovers: Vec<_> = std::fs::read_dir(&d).unwrap().collect();
        assert_eq!(
            leftovers.len(),
            1,
            "no temporary sockets left: {leftovers:?}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn a_silent_client_is_dropped_and_others_are_served() {
        let d = dir("slow");
        let path = d.join("kith0.sock");
        let (tx, _rx) = mpsc::channel(1);
        serve(&path, tx).unwrap();
        // More silent clients than slots: a later one still gets its answer
        // once the silent ones time out.
        let mut silent = Vec::new();
        for _ in 0..MAX_CLIENTS {
            silent.push(UnixStream::connect(&path).await.unwrap());
        }
        let started = std::time::Instant::now();
        let answer = ask(&path, "hello").await;
        assert!(answer.contains("unknown request"), "{answer}");
        assert!(
            started.elapsed() >= CLIENT_TIMEOUT / 2,
            "it waited for a slot"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn ping_requests_take_a_count_in_range_and_a_peer() {
        assert_eq!(parse_ping("4 nas"), Ok((4, "nas")));
        assert_eq!(
            parse_ping("2 my nas "),
            Ok((2, "my nas")),
            "names may hold spaces"
        );
        for bad in ["", "4", "nas 4", "0 nas", "101 nas", "-1 nas", "4  "] {
            let e = parse_ping(bad).unwrap_err();
            assert!(e.starts_with("usage: ping COUNT PEER"), "{bad:?}: {e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_ping_request_parses_or_says_how(line in "\\PC{0,60}") {
            if let Ok((count, peer)) = parse_ping(&line) {
                proptest::prop_assert!((1..=MAX_PING_COUNT).contains(&count));
                proptest::prop_assert!(!peer.is_empty());
            }
        }
    }

    #[tokio::test]
    async fn ping_lines_stream_as_the_daemon_sends_them() {
        let d = dir("ping");
        let path = d.join("kith0.sock");
        let (tx, mut rx) = mpsc::channel(1);
        serve(&path, tx).unwrap();
        tokio::spawn(async move {
            while let Some(req) = rx.recv().await {
                if let Request::Ping { peer, count, reply } = req {
                    for seq in 1..=count {
                        let line = PingLine::Timeout {
                            seq,
                            peer: peer.clone(),
                            timeout_ms: 1,
                        };
                        reply.send(line).await.unwrap();
                    }
                }
            }
        });
        let mut got = Vec::new();
        request_ping(&path, "nas box", 3, |l| got.push(l))
            .await
            .unwrap();
        let seqs: Vec<u32> = got
            .iter()
            .map(|l| match l {
                PingLine::Timeout { seq, peer, .. } if peer == "nas box" => *seq,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(seqs, [1, 2, 3]);
        let mut bad = Vec::new();
        request_ping(&path, "nas", 0, |l| bad.push(l))
            .await
            .unwrap();
        assert!(
            matches!(&bad[..], [PingLine::Error { message }] if message.contains("usage: ping COUNT PEER")),
            "{bad:?}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn metrics_come_back_as_text() {
        let d = dir("metrics");
        let path = d.join("kith0.sock");
        let (tx, mut rx) = mpsc::channel(1);
        serve(&path, tx).unwrap();
        tokio::spawn(async move {
            while let Some(req) = rx.recv().await {
                if let Request::Metrics { reply } = req {
                    let _ = reply.send("# HELP kith_peers x\nkith_peers 1\n".to_string());
                }
            }
        });
        let text = request_metrics(&path).await.unwrap();
        assert_eq!(text, "# HELP kith_peers x\nkith_peers 1\n");
        let e = request_json::<StatusReport>(&path, "frobnicate")
            .await
            .unwrap_err();
        assert!(e.contains("unknown request \"frobnicate\""), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
