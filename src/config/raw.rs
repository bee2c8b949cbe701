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
//! Adding a table (e.g. `[metrics]`) is: a struct here, a field in
//! [`RawConfig`], and a matching `validate` function. Adding a key is a field
//! here and a `match` on it in that table's `validate` function.

use serde::Deserialize;
use toml::Spanned;

pub(super) type Str = Option<Spanned<String>>;
pub(super) type Int = Option<Spanned<i64>>;
pub(super) type Bool = Option<Spanned<bool>>;
pub(super) type StrList = Option<Spanned<Vec<Spanned<String>>>>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub interface: Option<Spanned<RawInterface>>,
    pub network: Option<Spanned<RawNetwork>>,
    pub discovery: Option<Spanned<RawDiscovery>>,
    pub relay: Option<Spanned<RawRelay>>,
    pub metrics: Option<Spanned<RawMetrics>>,
    #[serde(default)]
    pub peer: Vec<Spanned<RawPeer>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInterface {
    pub name: Str,
    pub address: Option<Spanned<OneOrList>>,
    pub private_key: Str,
    pub private_key_file: Str,
    pub listen_port: Int,
    pub mtu: Int,
    pub busy_poll: Str,
    pub queues: Option<Spanned<IntOrStr>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeer {
    pub name: Str,
    pub public_key: Str,
    pub allowed_ips: StrList,
    pub endpoint: Str,
    pub keepalive: Str,
    pub tcp_port: Int,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNetwork {
    pub id: Str,
    pub secret_file: Str,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDiscovery {
    pub dht: Bool,
    pub bootstrap: StrList,
    pub stun: StrList,
    pub port_mapping: Bool,
    pub dht_port: Int,
    pub state_dir: Str,
    pub dht_server: Bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRelay {
    pub serve: Bool,
    pub tcp_port: Int,
    pub via: StrList,
    pub rate: Str,
    pub max_rate: Str,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub listen: Str,
}

/// A key that takes one string or a list of them (`[interface] address`),
/// each list item with its own span so an error points at the bad entry.
///
/// Written by hand: serde's `untagged` buffers the value, which loses the
/// spans `Spanned` needs.
#[derive(Debug)]
pub(super) enum OneOrList {
    One(String),
    List(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for OneOrList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OneOrList;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of strings")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrList, E> {
                Ok(OneOrList::One(v.to_owned()))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrList, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<String>>()? {
                    items.push(item);
                }
                Ok(OneOrList::List(items))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A key that takes a number or a word (`[interface] queues = 2` or
/// `"auto"`); validation decides which words and numbers are meant.
#[derive(Debug)]
pub(super) enum IntOrStr {
    Int(i64),
    Str(String),
}

impl<'de> Deserialize<'de> for IntOrStr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = IntOrStr;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number or a string")
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<IntOrStr, E> {
                Ok(IntOrStr::Int(v))
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<IntOrStr, E> {
                Ok(IntOrStr::Int(i64::try_from(v).unwrap_or(i64::MAX)))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IntOrStr, E> {
                Ok(IntOrStr::Str(v.to_owned()))
            }
        }
        d.deserialize_any(Visitor)
    }
}
