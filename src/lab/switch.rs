//! A switch: a Linux bridge inside a namespace, with one veth port per
//! attached host. Routers use one as their LAN; tests use a bare one when
//! more than two hosts share a segment.

use super::host::iface_name;
use super::{Host, Iface, Result};

/// A bridge named `name` inside `host` (the host may also route, as a
/// router does, if the bridge has an address).
#[derive(Debug, Clone)]
pub struct Switch {
    pub host: Host,
    pub bridge: Iface,
}

impl Switch {
    /// Creates bridge `name` in `host`, with `addr` (CIDR) if given.
    pub fn create(host: &Host, name: &str, addr: Option<&str>) -> Result<Self> {
        host.ip(&["link", "add", name, "type", "bridge"])?;
        let bridge = host.configure_iface(name, addr)?;
        Ok(Self {
            host: host.clone(),
            bridge,
        })
    }

    /// Plugs `client` in with address `client_addr` (CIDR). The client's
    /// end is named `<prefix>-<switch host>`, the port `<prefix>-<client>`.
    pub fn attach(&self, client: &Host, client_addr: &str) -> Result<Iface> {
        let port = iface_name(self.host.prefix(), client.name())?;
        let client_if = iface_name(self.host.prefix(), self.host.name())?;
        self.host.ip(&[
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            &client_if,
            "netns",
            client.netns(),
        ])?;
        self.host
            .ip(&["link", "set", &port, "master", &self.bridge.name, "up"])?;
        client.configure_iface(&client_if, Some(client_addr))
    }
}
