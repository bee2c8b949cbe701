//! A host: one network namespace, and what you can do inside it.

use std::net::Ipv4Addr;
use std::process::Command;
use std::thread::JoinHandle;

use super::{LabError, Result, netns, sys};

/// A network namespace in a lab. Cheap to clone; the [`super::Lab`] owns
/// its lifetime.
#[derive(Debug, Clone)]
pub struct Host {
    name: String,
    netns: String,
    prefix: String,
}

/// One configured interface end inside a host.
#[derive(Debug, Clone)]
pub struct Iface {
    pub host: Host,
    /// The interface name inside the host's namespace.
    pub name: String,
    /// Its IPv4 address, if it has one (a bridge port has none).
    pub addr: Option<Ipv4Addr>,
}

impl Host {
    pub(crate) fn new(name: &str, netns: &str, prefix: &str) -> Self {
        Self {
            name: name.to_owned(),
            netns: netns.to_owned(),
            prefix: prefix.to_owned(),
        }
    }

    /// The short name given to [`super::Lab::host`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lab's prefix.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The namespace name, `<prefix>-<name>`.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// `ip netns exec <netns> <program>`, ready for arguments.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        sys::netns_exec(&self.netns, program)
    }

    /// Runs `program args…` in this namespace; its stdout, or an error with
    /// its stderr.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        sys::run(self.command(program).args(args))
    }

    /// `ip -n <netns> args…`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        sys::run(sys::ip(&self.netns).args(args))
    }

    /// Runs `f` on a new thread that has entered this namespace, so the
    /// std sockets it opens live here. A panic in `f` is re-raised.
    pub fn run_in<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match self.spawn_in(f).join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Like [`Host::run_in`], without waiting.
    pub fn spawn_in<T, F>(&self, f: F) -> JoinHandle<Result<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let netns = self.netns.clone();
        std::thread::Builder::new()
            .name(format!("in-{netns}"))
            .spawn(move || {
                netns::enter(&netns)?;
                Ok(f())
            })
            .unwrap_or_else(|e| panic!("spawning a thread for namespace {}: {e}", self.netns))
    }

    /// Turns on IPv4 forwarding (routers).
    pub fn enable_forwarding(&self) -> Result<()> {
        sys::require_tool("sysctl")?;
        self.exec("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"])
            .map(drop)
    }

    pub fn add_default_route(&self, via: Ipv4Addr) -> Result<()> {
        self.ip(&["route", "replace", "default", "via", &via.to_string()])
            .map(drop)
    }

    pub fn add_route(&self, net: &str, via: Ipv4Addr) -> Result<()> {
        self.ip(&["route", "replace", net, "via", &via.to_string()])
            .map(drop)
    }

    /// Writes `/etc/netns/<netns>/<name>`, which every later command run
    /// in this namespace (`ip netns exec`, so also the kith daemon) sees as
    /// `/etc/<name>`: a `resolv.conf` or `hosts` of the host's own. The
    /// file is rewritten in place, so a daemon already running sees the
    /// new text through its bind mount (a `hosts` entry added later). The
    /// lab removes the directory with the namespace.
    pub fn set_etc_file(&self, name: &str, text: &str) -> Result<()> {
        let dir = super::netns::etc_dir(&self.netns);
        std::fs::create_dir_all(&dir)
            .map_err(|e| LabError::io(format!("creating {}", dir.display()), e))?;
        let path = dir.join(name);
        std::fs::write(&path, text)
            .map_err(|e| LabError::io(format!("writing {}", path.display()), e))
    }

    /// The IPv4 addresses on `dev` (empty if it does not exist yet).
    pub fn addresses(&self, dev: &str) -> Vec<Ipv4Addr> {
        let out = sys::output(sys::ip(&self.netns).args(["-4", "-br", "addr", "show", "dev", dev]));
        let Ok(out) = out else { return Vec::new() };
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .skip(2)
            .filter_map(|cidr| cidr.split('/').next()?.parse().ok())
            .collect()
    }

    /// The name of the interface in this host that faces `other`.
    pub(crate) fn iface_name_towards(&self, other: &Host) -> Result<String> {
        iface_name(&self.prefix, other.name())
    }

    /// Sets `addr` (CIDR) on `dev` if given, and brings it up.
    pub(crate) fn configure_iface(&self, dev: &str, addr: Option<&str>) -> Result<Iface> {
        if let Some(cidr) = addr {
            self.ip(&["addr", "add", cidr, "dev", dev])?;
        }
        self.ip(&["link", "set", dev, "up"])?;
        let addr = addr.map(parse_cidr_addr).transpose()?;
        Ok(Iface {
            host: self.clone(),
            name: dev.to_owned(),
            addr,
        })
    }
}

/// `<prefix>-<suffix>`, checked against Linux's 15-byte limit.
pub(crate) fn iface_name(prefix: &str, suffix: &str) -> Result<String> {
    let name = format!("{prefix}-{suffix}");
    if name.len() > 15 {
        return Err(LabError::NameTooLong {
            len: name.len(),
            name,
        });
    }
    Ok(name)
}

/// The address part of `a.b.c.d/len`.
pub(crate) fn parse_cidr_addr(cidr: &str) -> Result<Ipv4Addr> {
    cidr.split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| LabError::Parse {
            cmd: "address".into(),
            detail: format!("`{cidr}` is not an IPv4 address in CIDR form (a.b.c.d/len)"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_fit_linux_limit() {
        assert_eq!(iface_name("k1a2b3", "b").unwrap(), "k1a2b3-b");
        assert_eq!(iface_name("k1a2b3", "router1").unwrap(), "k1a2b3-router1");
        assert!(matches!(
            iface_name("k1a2b3", "verylonghost"),
            Err(LabError::NameTooLong { len: 19, .. })
        ));
    }

    #[test]
    fn cidr_addresses() {
        assert_eq!(
            parse_cidr_addr("198.18.0.1/24").unwrap(),
            Ipv4Addr::new(198, 18, 0, 1)
        );
        assert!(parse_cidr_addr("nope/24").is_err());
    }
}
