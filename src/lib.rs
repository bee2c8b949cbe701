//! kith: a serverless peer-to-peer mesh VPN.
//!
//! The tree mirrors the architecture (see `docs/architecture.md`):
//! - [`wire`]: byte layout of every kith message; parsers never panic.
//! - [`core`]: the sans-IO engine (handshake, sessions, replay window, timers).
//! - [`config`]: TOML → validated [`config::Config`].
//! - [`daemon`]: the tokio shell around `core` (UDP socket, TUN, signals).
//! - [`cli`]: subcommands and human output.
//! - [`relay`]: what a relaying member admits and counts.
//! - [`lab`]: the network-namespace lab used by the demo and end-to-end tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod cli;
pub mod config;
pub mod core;
pub mod daemon;
pub mod discovery;
pub mod identity;
pub mod lab;
pub mod nat;
pub mod relay;
pub mod wire;
