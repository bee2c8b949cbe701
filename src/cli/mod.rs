//! CLI: the `kith` subcommands and their human output. Holds no logic the
//! daemon needs; it parses arguments, calls into the library and prints.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser, Subcommand};

use crate::config;
use crate::identity::SecretKey;

#[derive(Debug, Parser)]
#[command(name = "kith", version, about = "A serverless peer-to-peer mesh VPN")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a new private key (base64 Ed25519 seed), e.g. `kith genkey > /etc/kith/private.key`.
    Genkey {
        /// Print a new network secret instead (32 random bytes, base64) for
        /// `[network] secret_file`: `kith genkey --network > /etc/kith/network.secret`
        /// once, then copy the file to every node.
        #[arg(long)]
        network: bool,
    },
    /// Read a private key on stdin and print its public key.
    Pubkey,
    /// Validate a config file: prints "ok", or every error as file:line:column.
    CheckConfig {
        /// The config file.
        file: PathBuf,
    },
    /// Run a standalone Mainline DHT node (server mode): a bootstrap node
    /// for a private network or a test lab.
    DhtNode {
        /// Address and UDP port to listen on, e.g. 198.18.0.100:6881.
        #[arg(long)]
        listen: std::net::SocketAddrV4,
        /// Other DHT nodes to join (host:port); none starts a new network.
        #[arg(long = "bootstrap", value_name = "HOST:PORT")]
        bootstrap: Vec<String>,
    },
    /// Answer STUN Binding requests (RFC 8489) on each address until
    /// SIGTERM/SIGINT: a STUN server for tests and private networks. Not an
    /// RFC 5780 server (miniupnpd's STUN check needs one: use coturn there).
    StunServer {
        /// Address and UDP port to answer on, e.g. 198.18.0.10:3478; repeat
        /// for several.
        #[arg(long, value_name = "IP:PORT", required = true)]
        listen: Vec<std::net::SocketAddr>,
    },
    /// Report the NAT in front of this host: public address from each STUN
    /// server, mapping behaviour, port-mapping protocols the router speaks,
    /// and what that means for direct connections.
    Netcheck {
        /// Take the STUN servers and port_mapping from this config.
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        /// STUN server to ask (host:port); repeatable; overrides the config.
        #[arg(long = "stun", value_name = "HOST:PORT")]
        stun: Vec<String>,
        /// Do not ask the router for a port mapping.
        #[arg(long)]
        no_port_mapping: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the daemon in the foreground.
    Up {
        /// The config file.
        #[arg(short = 'c', long = "config", default_value = "/etc/kith/kith.toml")]
        config: PathBuf,
        /// Control socket (default /run/kith/<interface>.sock).
        #[arg(long, value_name = "PATH")]
        control: Option<PathBuf>,
        /// State directory (peer cache, record sequence) when the config
        /// sets no [discovery] state_dir; a state_dir in the file wins.
        /// Default /var/lib/kith.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Show the running daemon's peers: path, endpoint, handshake, traffic,
    /// and where each peer's candidates came from.
    Status {
        /// Interface of the daemon to ask.
        #[arg(short = 'i', long, default_value = crate::config::DEFAULT_INTERFACE)]
        interface: String,
        /// Control socket (overrides -i).
        #[arg(long, value_name = "PATH")]
        control: Option<PathBuf>,
        /// Print the daemon's JSON answer as is.
        #[arg(long)]
        json: bool,
    },
    /// Send path probes through the tunnel to a peer and print, per reply,
    /// the path it took (direct endpoint, or relay) and the round-trip
    /// time; exits non-zero if no reply came.
    Ping {
        /// The peer: its name in the config, or its public key.
        peer: String,
        /// How many probes (one per second).
        #[arg(short = 'c', long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::daemon::control::MAX_PING_COUNT)))]
        count: u32,
        /// Interface of the daemon to ask.
        #[arg(short = 'i', long, default_value = crate::config::DEFAULT_INTERFACE)]
        interface: String,
        /// Control socket (overrides -i).
        #[arg(long, value_name = "PATH")]
        control: Option<PathBuf>,
    },
    /// Print the running daemon's metrics in the Prometheus text format
    /// (every metric: docs/metrics.md).
    Metrics {
        /// Interface of the daemon to ask.
        #[arg(short = 'i', long, default_value = crate::config::DEFAULT_INTERFACE)]
        interface: String,
        /// Control socket (overrides -i).
        #[arg(long, value_name = "PATH")]
        control: Option<PathBuf>,
    },
    /// Make the running daemon read its config file again and apply what
    /// changed (peers added, removed or edited, [relay], STUN servers, port
    /// mapping) while unchanged peers keep their sessions. Prints every
    /// error and exits non-zero if the file is invalid or changes what only
    /// a restart can (interface, listen port, key, network, DHT); the daemon
    /// then runs on with its previous config. SIGHUP does the same.
    Reload {
        /// Interface of the daemon to ask.
        #[arg(short = 'i', long, default_value = crate::config::DEFAULT_INTERFACE, conflicts_with = "config")]
        interface: String,
        /// Control socket (overrides -i and -c).
        #[arg(long, value_name = "PATH")]
        control: Option<PathBuf>,
        /// Ask the daemon of this config file (its interface name finds the
        /// socket), after checking the file: what the systemd units use.
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Write the man pages or shell completions (for packaging).
    #[command(hide = true, subcommand)]
    Generate(Generate),
}

#[derive(Debug, Subcommand)]
pub enum Generate {
    /// Man pages: kith.1 and one per subcommand (kith-up.1, ...).
    Man {
        /// Directory to write them into (created if missing).
        dir: PathBuf,
    },
    /// Completions: `kith` (bash), `_kith` (zsh), `kith.fish` (fish).
    Completions {
        /// Directory to write them into (created if missing).
        dir: PathBuf,
    },
}

/// `sysexits.h` EX_CONFIG: what `up` and `check-config` exit with when the
/// config file is invalid, so systemd can tell a broken file
/// (`RestartPreventExitStatus=78`: restarting will not fix it) from a
/// failure a restart may cure.
pub const EXIT_CONFIG: u8 = 78;

/// The config file did not load; its errors were already printed.
#[derive(Debug, thiserror::Error)]
#[error("{file} has {count} error(s){hint}")]
pub struct InvalidConfig {
    file: String,
    count: usize,
    hint: &'static str,
}

impl InvalidConfig {
    fn new(file: &std::path::Path, errors: &config::ConfigErrors, hint: &'static str) -> Self {
        Self {
            file: file.display().to_string(),
            count: errors.0.len(),
            hint,
        }
    }
}

/// The process exit code for an error `run` returned: [`EXIT_CONFIG`] for
/// an invalid config file, 1 for anything else.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    if error.is::<InvalidConfig>() {
        EXIT_CONFIG
    } else {
        1
    }
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Genkey { network } => genkey(network),
        Command::Pubkey => pubkey(),
        Command::CheckConfig { file } => check_config(&file),
        Command::Up {
            config,
            control,
            state_dir,
        } => up(&config, control, state_dir),
        Command::Netcheck {
            config,
            stun,
            no_port_mapping,
            json,
        } => netcheck(config.as_deref(), stun, no_port_mapping, json),
        Command::Status {
            interface,
            control,
            json,
        } => status(&interface, control, json),
        Command::Ping {
            peer,
            count,
            interface,
            control,
        } => ping(&interface, control, &peer, count),
        Command::Metrics { interface, control } => metrics(&interface, control),
        Command::Reload {
            interface,
            control,
            config,
        } => reload(&interface, control, config.as_deref()),
        Command::DhtNode { listen, bootstrap } => dht_node(listen, bootstrap),
        Command::StunServer { listen } => stun_server(&listen),
        Command::Generate(Generate::Man { dir }) => generate_man(&dir),
        Command::Generate(Generate::Completions { dir }) => generate_completions(&dir),
    }
}

fn genkey(network: bool) -> Result<()> {
    let text = if network {
        let bytes = crate::identity::random32().context("reading OS randomness")?;
        crate::identity::NetworkSecret(*bytes).to_base64()
    } else {
        let key = SecretKey::generate().context("reading OS randomness")?;
        zeroize::Zeroizing::new(key.to_base64())
    };
    let mut out = std::io::stdout().lock();
    // When redirected into a file, make it private before the secret lands.
    restrict_stdout_file();
    writeln!(out, "{}", *text)?;
    Ok(())
}

/// chmod 0600 on stdout if it is a regular file (`kith genkey > key`).
fn restrict_stdout_file() {
    use std::os::fd::AsRawFd;
    let fd = std::io::stdout().as_raw_fd();
    // SAFETY: fstat/fchmod on our own stdout descriptor with a zeroed stat.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFREG {
            libc::fchmod(fd, 0o600);
        }
    }
}

fn pubkey() -> Result<()> {
    let mut text = String::new();
    if std::io::stdin().is_terminal() {
        eprintln!("paste a private key, then Ctrl-D");
    }
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading stdin")?;
    let key: SecretKey = text
        .trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("stdin is not a kith private key: {e}"))?;
    println!("{}", key.public());
    Ok(())
}

fn check_config(file: &std::path::Path) -> Result<()> {
    match config::load(file) {
        Ok(cfg) => {
            for w in &cfg.warnings {
                eprintln!("warning: {w}");
            }
            let static_only = cfg.static_only_note().map(str::to_string);
            for n in static_only.into_iter().chain(cfg.relay_notes()) {
                eprintln!("note: {n}");
            }
            println!("ok");
            Ok(())
        }
        Err(errors) => {
            eprintln!("{errors}");
            Err(InvalidConfig::new(file, &errors, "").into())
        }
    }
}

fn up(file: &std::path::Path, control: Option<PathBuf>, state_dir: Option<PathBuf>) -> Result<()> {
    // Before the key files are read into memory.
    if let Err(e) = crate::daemon::nodump::forbid_core_dumps() {
        tracing::warn!("cannot turn core dumps off ({e}): a crash may write keys to disk");
    }
    let source = config::ConfigSource {
        file: file.to_path_buf(),
        state_dir,
    };
    let cfg = match source.load() {
        Ok(cfg) => cfg,
        Err(errors) => {
            eprintln!("{errors}");
            return Err(InvalidConfig::new(file, &errors, "; fix them and start again").into());
        }
    };
    // Before the first handshake: every session uses the backend chosen here.
    crate::daemon::aead::choose()?;
    test_timer_divisor();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let control =
        control.unwrap_or_else(|| crate::daemon::control::default_path(&cfg.interface.name));
    rt.block_on(crate::daemon::run(cfg, source, control))?;
    Ok(())
}

/// Test only, undocumented for operators: `KITH_TEST_TIMER_DIVISOR=N`
/// runs every protocol timer N times faster (`core::scaled`), so an
/// end-to-end test sees rekeys and the reject-after-time within seconds.
fn test_timer_divisor() {
    let Some(value) = std::env::var_os(TEST_TIMER_DIVISOR) else {
        return;
    };
    match value.to_str().and_then(|v| v.parse::<u32>().ok()) {
        Some(n) if n >= 1 => {
            crate::core::set_test_timer_divisor(n);
            tracing::warn!(
                "{TEST_TIMER_DIVISOR}={n}: protocol timers divided by {n} (rekey after {:?}); for tests only",
                crate::core::scaled(crate::core::REKEY_AFTER_TIME)
            );
        }
        _ => tracing::warn!("{TEST_TIMER_DIVISOR}={value:?} is not a positive integer: ignored"),
    }
}

/// The environment variable read by [`test_timer_divisor`].
pub const TEST_TIMER_DIVISOR: &str = "KITH_TEST_TIMER_DIVISOR";

fn generate_man(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))
}

fn generate_completions(dir: &std::path::Path) -> Result<()> {
    use clap_complete::Shell;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // clap_complete offers hidden subcommands too; users should not be
    // offered `generate`, so complete a copy of the CLI without them.
    let full = Cli::command();
    let mut cmd = clap::Command::new("kith")
        .about(full.get_about().cloned().unwrap_or_default())
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    // The names each shell looks up in its completions directory
    // (clap_complete's own would be kith.bash for bash).
    for (shell, name) in [
        (Shell::Bash, "kith"),
        (Shell::Zsh, "_kith"),
        (Shell::Fish, "kith.fish"),
    ] {
        let path = dir.join(name);
        let mut file =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        clap_complete::generate(shell, &mut cmd, "kith", &mut file);
        file.flush()
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn dht_node(listen: std::net::SocketAddrV4, bootstrap: Vec<String>) -> Result<()> {
    use crate::discovery::dht;
    let settings = dht::DhtSettings {
        bind: Some(*listen.ip()),
        port: listen.port(),
        bootstrap,
        server: true,
        mark: false,
    };
    let node = dht::build(&settings)?.as_async();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let info = node.info().await;
        tracing::info!(addr = %info.local_addr(), id = %info.id(), "DHT node listening");
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut report = tokio::time::interval(std::time::Duration::from_secs(30));
        report.tick().await;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = report.tick() => {
                    let info = node.info().await;
                    tracing::debug!(dht_size_estimate = info.dht_size_estimate().0, "DHT node running");
                }
            }
        }
        tracing::info!("DHT node stopping");
        Ok::<(), std::io::Error>(())
    })?;
    Ok(())
}

fn stun_server(listen: &[std::net::SocketAddr]) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut tasks = tokio::task::JoinSet::new();
        for &addr in listen {
            let socket = tokio::net::UdpSocket::bind(addr).await.with_context(|| {
                format!("binding UDP {addr} (is the address on an interface and the port free?)")
            })?;
            tracing::info!(addr = %socket.local_addr()?, "STUN server listening");
            tasks.spawn(async move {
                let mut buf = vec![0u8; 2048];
                loop {
                    let (n, from) = match socket.recv_from(&mut buf).await {
                        Ok(got) => got,
                        Err(e) => break Err::<(), _>(e),
                    };
                    let Some(out) = crate::nat::stun_server::respond(&buf[..n], from) else {
                        continue;
                    };
                    if let Err(e) = socket.send_to(&out, from).await {
                        tracing::debug!(addr = %from, error = %e, "STUN answer not sent");
                    }
                }
            });
        }
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            Some(done) = tasks.join_next() => {
                done.context("STUN server task")?.context("STUN server socket")?;
            }
        }
        tracing::info!("STUN server stopping");
        Ok::<(), anyhow::Error>(())
    })
}

fn status(interface: &str, control: Option<PathBuf>, json: bool) -> Result<()> {
    let path = control_path(interface, control);
    let report = ask_daemon(crate::daemon::control::request_status(&path))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print!("{}", render_status(&report));
    Ok(())
}

/// The control socket `-i IFACE` / `--control PATH` name.
fn control_path(interface: &str, control: Option<PathBuf>) -> PathBuf {
    control.unwrap_or_else(|| crate::daemon::control::default_path(interface))
}

fn metrics(interface: &str, control: Option<PathBuf>) -> Result<()> {
    let path = control_path(interface, control);
    let text = ask_daemon(crate::daemon::control::request_metrics(&path))?;
    print!("{text}");
    Ok(())
}

fn ping(interface: &str, control: Option<PathBuf>, peer: &str, count: u32) -> Result<()> {
    use crate::daemon::control::{PingLine, request_ping};
    let path = control_path(interface, control);
    let mut pongs = 0;
    let mut error = None;
    ask_daemon(request_ping(&path, peer, count, |line| {
        match &line {
            PingLine::Pong { .. } => pongs += 1,
            PingLine::Error { message } => error = Some(message.clone()),
            _ => {}
        }
        if let Some(text) = render_ping_line(&line) {
            println!("{text}");
            let _ = std::io::stdout().flush();
        }
    }))?;
    if let Some(message) = error {
        bail!("{message}");
    }
    if pongs == 0 {
        bail!("no reply from {peer} to {count} probe(s); `kith status` says why");
    }
    Ok(())
}

/// One probe's line, like `tailscale ping`: "pong from nas via
/// 198.18.0.2:51871 in 0.42 ms". `None` for an error (printed as the
/// command's error instead).
pub fn render_ping_line(line: &crate::daemon::control::PingLine) -> Option<String> {
    use crate::daemon::control::PingLine;
    Some(match line {
        PingLine::Pong {
            seq,
            peer,
            endpoint,
            relay,
            transport,
            rtt_us,
            ..
        } => {
            let via = match (endpoint, relay) {
                (Some(ep), _) => ep.clone(),
                (None, Some(r)) => format!(
                    "relay {r} ({})",
                    transport.as_deref().unwrap_or("udp").to_uppercase()
                ),
                (None, None) => "?".to_string(),
            };
            let ms = *rtt_us as f64 / 1000.0;
            format!("pong from {peer} via {via} in {ms:.2} ms (seq {seq})")
        }
        PingLine::Timeout {
            seq,
            peer,
            timeout_ms,
        } => format!(
            "timeout: no pong from {peer} within {:.1} s (seq {seq})",
            *timeout_ms as f64 / 1000.0
        ),
        PingLine::NotSent { seq, peer, reason } => {
            format!("not sent to {peer}: {reason} (seq {seq})")
        }
        PingLine::Error { .. } => return None,
    })
}

/// Run one request to the daemon's control socket to its answer.
fn ask_daemon<T>(request: impl std::future::Future<Output = Result<T, String>>) -> Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(request).map_err(anyhow::Error::msg)
}

/// The daemon refused a reload for changes only a restart applies; the
/// reasons were already printed.
#[derive(Debug, thiserror::Error)]
#[error(
    "{file} not reloaded: {count} change(s) need a restart (`systemctl restart kith`, or \
     stop and start `kith up`); the daemon runs on with its previous config"
)]
pub struct NeedsRestart {
    file: String,
    count: usize,
}

/// What the running daemon answers, says what it changed; the file's
/// errors give [`InvalidConfig`] (exit 78), as `check-config` and `up` do.
fn reload(interface: &str, control: Option<PathBuf>, file: Option<&std::path::Path>) -> Result<()> {
    use crate::daemon::control;
    const KEPT: &str = "; not reloaded, the daemon runs on with its previous config";
    // Checked here first: the daemon would refuse it the same way, and
    // without a valid file there is no interface name to find it by.
    let named = match file.map(config::load) {
        None => None,
        Some(Ok(cfg)) => Some(cfg.interface.name),
        Some(Err(errors)) => {
            eprintln!("{errors}");
            let file = file.unwrap_or(std::path::Path::new(""));
            return Err(InvalidConfig::new(file, &errors, KEPT).into());
        }
    };
    let path =
        control.unwrap_or_else(|| control::default_path(named.as_deref().unwrap_or(interface)));
    let report = ask_daemon(control::request_reload(&path))?;
    if report.applied {
        if report.changes.is_empty() {
            println!("reloaded {}: no changes", report.file);
        } else {
            println!("reloaded {}: {}", report.file, report.changes.join("; "));
        }
        return Ok(());
    }
    for e in &report.errors {
        eprintln!("{e}");
    }
    for r in &report.needs_restart {
        eprintln!("{}: needs a restart: {r}", report.file);
    }
    if !report.errors.is_empty() {
        return Err(InvalidConfig {
            file: report.file,
            count: report.errors.len(),
            hint: KEPT,
        }
        .into());
    }
    Err(NeedsRestart {
        file: report.file,
        count: report.needs_restart.len(),
    }
    .into())
}

fn ago(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs} s ago"),
        120..=7199 => format!("{} min ago", secs / 60),
        _ => format!("{} h ago", secs / 3600),
    }
}

fn bytes(n: u64) -> String {
    match n {
        0..=9_999 => format!("{n} B"),
        10_000..=9_999_999 => format!("{:.1} kB", n as f64 / 1e3),
        _ => format!("{:.1} MB", n as f64 / 1e6),
    }
}

/// The human form of a status report.
pub fn render_status(r: &crate::daemon::control::StatusReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "interface {}  listening on {}", r.interface, r.listen);
    let _ = writeln!(out, "public key {}", r.public_key);
    if !r.addresses.is_empty() {
        let _ = writeln!(out, "address {}", r.addresses.join(", "));
    }
    match r.data_workers.as_slice() {
        [] => {}
        [_] => {
            let _ = writeln!(out, "data plane: 1 worker");
        }
        w => {
            let sealed: Vec<String> = w.iter().map(u64::to_string).collect();
            let _ = writeln!(
                out,
                "data plane: {} workers, datagrams sealed {}",
                w.len(),
                sealed.join(" / ")
            );
        }
    }
    match &r.dht {
        Some(d) => {
            let published = d
                .published_seq
                .map_or("not yet published".to_string(), |s| {
                    format!("record seq {s} published")
                });
            let _ = writeln!(
                out,
                "dht: network \"{}\", {published}; local candidates {}",
                d.network,
                d.local_candidates.join(", ")
            );
        }
        None => {
            let _ = writeln!(out, "dht: off");
        }
    }
    let nat = &r.nat;
    let step = nat
        .sequential_step
        .map(|s| format!(" (sequential, step {s})"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "nat: mapping {}{step}, public address {}, port mapping {}",
        nat.mapping.as_deref().unwrap_or("not measured"),
        nat.public.as_deref().unwrap_or("-"),
        nat.port_mapping.as_deref().unwrap_or("none")
    );
    for p in &r.peers {
        let short: String = p.public_key.chars().take(8).collect();
        let _ = writeln!(out, "\npeer {} ({short}…)", p.name);
        match &p.relay {
            // The reason already reads "relayed via vps (UDP): why".
            Some(r) => {
                let _ = writeln!(out, "  path         {}", p.path_reason);
                let _ = writeln!(
                    out,
                    "  relayed      {} sent, {} received, {} dropped",
                    bytes(r.tx_bytes),
                    bytes(r.rx_bytes),
                    r.drops
                );
            }
            None => {
                let via = p.endpoint.as_deref().unwrap_or("-");
                let _ = writeln!(
                    out,
                    "  path         {} via {via}: {}",
                    p.path, p.path_reason
                );
            }
        }
        if !p.allowed_ips.is_empty() {
            let _ = writeln!(out, "  allowed ips  {}", p.allowed_ips.join(", "));
        }
        if !p.peer_relays.is_empty() {
            let _ = writeln!(out, "  its relays   {}", p.peer_relays.join(", "));
        }
        let hs = p.last_handshake_secs.map_or("never".to_string(), ago);
        let _ = writeln!(out, "  handshake    {hs}");
        let _ = writeln!(
            out,
            "  transfer     {} received, {} sent",
            bytes(p.rx_bytes),
            bytes(p.tx_bytes)
        );
        let from = match (&p.candidates_source, p.candidates_age_secs) {
            (Some(s), Some(age)) => format!("{s}, {}", ago(age)),
            _ => "none yet".to_string(),
        };
        let list = if p.candidates.is_empty() {
            "-".to_string()
        } else {
            p.candidates.join(", ")
        };
        let _ = writeln!(out, "  candidates   {list} (from {from})");
        if let Some(h) = &p.punch {
            let state = if h.active {
                "running".to_string()
            } else {
                h.last.clone().unwrap_or_default()
            };
            let _ = writeln!(
                out,
                "  hard NAT     {} side, {} probes, attempt {} ({state})",
                h.role, h.probes, h.attempts
            );
        }
    }
    if r.control_data > 0 {
        let _ = writeln!(
            out,
            "\nslow path: {} data packets carried by the control plane (relay over TCP, paths settling)",
            r.control_data
        );
    }
    if r.tcp_dropped > 0 {
        let _ = writeln!(
            out,
            "\nrelay over TCP: {} datagrams dropped (no connection yet, or a full queue)",
            r.tcp_dropped
        );
    }
    let drops: Vec<String> = r
        .data_drops
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{} {n}", k.replace('_', " ")))
        .collect();
    if !drops.is_empty() {
        let _ = writeln!(out, "\ndata plane drops: {}", drops.join(", "));
    }
    if let Some(svc) = &r.relay_service {
        let tcp = svc
            .tcp_port
            .map_or("no TCP".to_string(), |p| format!("TCP port {p}"));
        let _ = writeln!(
            out,
            "\nrelay service: UDP on the listen port, {tcp}; refused {} from unknown keys, {} for members without a session",
            svc.refused_unknown, svc.refused_no_session
        );
        for m in &svc.members {
            let _ = writeln!(
                out,
                "  {:<12} forwarded {} in {} packets, delivered {}, {} dropped over the rate",
                m.name,
                bytes(m.forwarded_bytes),
                m.forwarded_packets,
                bytes(m.delivered_bytes),
                m.dropped_rate
            );
        }
    }
    out
}

fn netcheck(
    config: Option<&std::path::Path>,
    stun: Vec<String>,
    no_port_mapping: bool,
    json: bool,
) -> Result<()> {
    let discovery = match config {
        Some(file) => match config::load(file) {
            Ok(cfg) => cfg.discovery,
            Err(errors) => {
                eprintln!("{errors}");
                bail!("{} has {} error(s)", file.display(), errors.0.len())
            }
        },
        None => config::Discovery::default(),
    };
    let servers = if stun.is_empty() {
        discovery.stun
    } else {
        stun
    };
    let port_mapping = discovery.port_mapping && !no_port_mapping;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        let resolved = crate::nat::netcheck::resolve(&servers).await;
        crate::nat::netcheck::run(&resolved, port_mapping).await
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", crate::nat::netcheck::render(&report));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::control::{NatStatus, PeerReport, PunchReport, StatusReport};

    fn report(punch: Option<PunchReport>) -> StatusReport {
        StatusReport {
            interface: "kith0".into(),
            public_key: "AAAA".into(),
            listen: "0.0.0.0:51871".into(),
            addresses: vec!["100.96.0.1/16".into()],
            dht: None,
            nat: NatStatus {
                mapping: Some("endpoint-independent".into()),
                public: Some("198.18.3.2:51871".into()),
                sequential_step: None,
                port_mapping: None,
            },
            peers: vec![PeerReport {
                name: "nas".into(),
                public_key: "b64key".into(),
                allowed_ips: vec!["100.96.0.2/32".into(), "192.168.50.0/24".into()],
                path: "direct".into(),
                path_reason:
                    "direct through the peer's endpoint-dependent NAT (port probing, 311 probes)"
                        .into(),
                endpoint: Some("198.18.4.2:14620".into()),
                last_handshake_secs: Some(3),
                handshakes: 2,
                rx_bytes: 2048,
                tx_bytes: 1024,
                candidates: vec!["198.18.4.2:15309".into()],
                candidates_source: Some("dht".into()),
                candidates_age_secs: Some(8),
                punch,
                relay: None,
                peer_relays: Vec::new(),
            }],
            relay_service: None,
            tcp_dropped: 0,
            control_data: 7,
            data_drops: vec![("udp_dropped".into(), 3), ("truncated".into(), 0)],
            data_workers: vec![40, 2],
        }
    }

    #[test]
    fn status_shows_hard_nat_traversal_only_when_tried() {
        let plain = render_status(&report(None));
        assert!(plain.contains("path         direct via 198.18.4.2:14620: direct through the peer's endpoint-dependent NAT"), "{plain}");
        assert!(!plain.contains("hard NAT"), "{plain}");
        assert!(
            plain.contains("data plane: 2 workers, datagrams sealed 40 / 2"),
            "{plain}"
        );
        assert!(
            plain.contains("slow path: 7 data packets carried by the control plane"),
            "{plain}"
        );
        let mut quiet = report(None);
        quiet.control_data = 0;
        assert!(!render_status(&quiet).contains("slow path"));
        let punched = render_status(&report(Some(PunchReport {
            role: "easy".into(),
            probes: 311,
            attempts: 1,
            active: false,
            last: Some("connected".into()),
        })));
        assert!(
            punched.contains("hard NAT     easy side, 311 probes, attempt 1 (connected)"),
            "{punched}"
        );
    }

    #[test]
    fn ping_lines_name_the_path_and_the_rtt() {
        use crate::daemon::control::PingLine;
        let direct = PingLine::Pong {
            seq: 1,
            peer: "nas".into(),
            path: "direct".into(),
            endpoint: Some("198.18.0.2:51871".into()),
            relay: None,
            transport: None,
            rtt_us: 420,
        };
        assert_eq!(
            render_ping_line(&direct).unwrap(),
            "pong from nas via 198.18.0.2:51871 in 0.42 ms (seq 1)"
        );
        let relayed = PingLine::Pong {
            seq: 2,
            peer: "nas".into(),
            path: "relayed".into(),
            endpoint: None,
            relay: Some("vps".into()),
            transport: Some("tcp".into()),
            rtt_us: 12_345,
        };
        assert_eq!(
            render_ping_line(&relayed).unwrap(),
            "pong from nas via relay vps (TCP) in 12.35 ms (seq 2)"
        );
        let timeout = PingLine::Timeout {
            seq: 3,
            peer: "nas".into(),
            timeout_ms: 2000,
        };
        assert_eq!(
            render_ping_line(&timeout).unwrap(),
            "timeout: no pong from nas within 2.0 s (seq 3)"
        );
        assert_eq!(
            render_ping_line(&PingLine::Error {
                message: "x".into()
            }),
            None
        );
    }

    #[test]
    fn status_shows_our_addresses_and_each_peers_allowed_ips() {
        let text = render_status(&report(None));
        assert!(text.contains("address 100.96.0.1/16\n"), "{text}");
        assert!(
            text.contains("  allowed ips  100.96.0.2/32, 192.168.50.0/24\n"),
            "{text}"
        );
    }
}
