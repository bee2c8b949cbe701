//! The file as written: serde structs mirroring the TOML schema, every value
//! wrapped in [`Spanned`] so validation can point at it.
//!
//! Rules that keep this layer dumb and strict:
//! - `deny_unknown_fields` everywhere: a typo is an error, never a silent default.
//! - Every key is an `Option` (and every table a defaulted `Option`/`Vec`), so a
//!   missing key is reported by validation, together with the other errors,
//!   instead of aborting deserialization.
//! - Values are kept in their TOML types (`String`, `i64`); turning them into
//!   domain types (`IpNet`, `Duration`, keys) is `validate`'s job, where the
//!   error messages can say what to write instead.
//!
//! Adding a table (`[network]`, `[discovery]`, ...) is: a struct here, a field
//! in [`RawConfig`], and a matching `validate` function.

use serde::Deserialize;
use toml::Spanned;

pub(super) type Str = Option<Spanned<String>>;
pub(super) type Int = Option<Spanned<i64>>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub interface: Option<Spanned<RawInterface>>,
    #[serde(default)]
    pub peer: Vec<Spanned<RawPeer>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInterface {
    pub name: Str,
    pub address: Str,
    pub private_key: Str,
    pub private_key_file: Str,
    pub listen_port: Int,
    pub mtu: Int,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeer {
    pub name: Str,
    pub public_key: Str,
    pub allowed_ips: Option<Spanned<Vec<Spanned<String>>>>,
    pub endpoint: Str,
    pub keepalive: Str,
}
