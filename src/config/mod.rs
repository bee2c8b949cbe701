//! Config: the hand-edited TOML file → a validated, immutable [`Config`].
//!
//! Owns parsing, defaults and validation, with every error located by file,
//! line and column and naming the key path. Must not hold runtime state.
//! (Parsing is being written; this file holds the public contract.)

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
    pub peers: Vec<Peer>,
    /// Non-fatal findings (e.g. a world-readable private key file).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Interface {
    pub name: String,
    /// This node's overlay address and prefix, e.g. 100.96.0.1/16.
    pub address: IpNet,
    pub private_key: SecretKey,
    /// 0 = any port.
    pub listen_port: u16,
    pub mtu: u16,
}

#[derive(Debug, Clone)]
pub struct Peer {
    pub name: String,
    pub public_key: PublicKey,
    pub allowed_ips: Vec<IpNet>,
    pub endpoint: Option<Endpoint>,
    pub keepalive: Option<Duration>,
}

/// A static endpoint hint as written: an address, or a DNS name resolved by the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Addr(SocketAddr),
    Host { host: String, port: u16 },
}

/// Every problem found in one file.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// One problem, located.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}:{line}:{column}: {key}: {message}")]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no place in the text (e.g. unreadable file).
    pub line: usize,
    pub column: usize,
    /// Key path, e.g. `peer[1].allowed_ips[0]`.
    pub key: String,
    pub message: String,
}

/// Read, parse and validate a config file (and the private key file it names).
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read config file: {e}"),
        }])
    })?;
    parse(path, &text)
}

/// Parse and validate config text; `path` is used for messages and to
/// resolve a relative `private_key_file`.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let _ = (path, text);
    unimplemented!("config parser")
}
