//! CLI: the `kith` subcommands and their human output. Holds no logic the
//! daemon needs; it parses arguments, calls into the library and prints.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

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
    Genkey,
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
    /// Run the daemon in the foreground.
    Up {
        /// The config file.
        #[arg(short = 'c', long = "config", default_value = "/etc/kith/kith.toml")]
        config: PathBuf,
    },
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Genkey => genkey(),
        Command::Pubkey => pubkey(),
        Command::CheckConfig { file } => check_config(&file),
        Command::Up { config } => up(&config),
        Command::DhtNode { listen, bootstrap } => dht_node(listen, bootstrap),
    }
}

fn genkey() -> Result<()> {
    let key = SecretKey::generate().context("reading OS randomness")?;
    let mut out = std::io::stdout().lock();
    // When redirected into a file, make it private before the secret lands.
    restrict_stdout_file();
    writeln!(out, "{}", key.to_base64())?;
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
            println!("ok");
            Ok(())
        }
        Err(errors) => {
            eprintln!("{errors}");
            bail!("{} has {} error(s)", file.display(), errors.0.len())
        }
    }
}

fn up(file: &std::path::Path) -> Result<()> {
    let cfg = match config::load(file) {
        Ok(cfg) => cfg,
        Err(errors) => {
            eprintln!("{errors}");
            bail!(
                "{} has {} error(s); fix them and start again",
                file.display(),
                errors.0.len()
            )
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(crate::daemon::run(cfg))?;
    Ok(())
}

fn dht_node(listen: std::net::SocketAddrV4, bootstrap: Vec<String>) -> Result<()> {
    use crate::discovery::dht;
    let settings = dht::DhtSettings {
        bind: Some(*listen.ip()),
        port: listen.port(),
        bootstrap,
        server: true,
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
