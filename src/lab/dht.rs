//! A private Mainline DHT on the emulated internet: `n` `kith dht-node`
//! processes (server mode) in one namespace `<prefix>-dht`, each on its
//! own public address, so that the DHT sees `n` distinct nodes (mainline
//! keeps only one non-BEP-42 node per IP address).
//!
//! Node 0 starts a new network; the others bootstrap from it. Daemons get
//! every node as a bootstrap address ([`LabDht::bootstrap`]). [`LabDht::stop`]
//! makes the DHT unreachable; [`LabDht::start`] brings it back empty (items
//! live in the nodes' memory only). [`LabDht::client`] builds a mainline
//! node in any lab host, for tests that read or write items themselves.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use mainline::async_dht::AsyncDht;

use super::internet::{Internet, Uplink};
use super::{Host, Lab, LabError, Result, sys};

/// The UDP port every lab DHT node listens on.
pub const DHT_PORT: u16 = 6881;
/// Host part of node 0's address in the DHT host's subnet; node `i` is
/// `FIRST_NODE + i`.
const FIRST_NODE: u8 = 10;
/// The most nodes one subnet holds with this numbering.
pub const MAX_NODES: usize = (254 - FIRST_NODE as usize) + 1;
/// How long a node may take to bind its socket.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// One `kith dht-node` process.
struct NodeProc {
    addr: SocketAddrV4,
    log: PathBuf,
    child: Option<Child>,
    /// How many times it was started (each start logs one "listening" line).
    starts: usize,
}

/// The lab's DHT. Dropping it kills the nodes.
pub struct LabDht {
    host: Host,
    uplink: Uplink,
    bin: PathBuf,
    nodes: Vec<NodeProc>,
}

impl LabDht {
    /// A namespace `dht` attached to `internet`, with `n` nodes listening on
    /// `<subnet>.10`, `.11`, … port [`DHT_PORT`]; returns once all listen.
    pub fn start_new(lab: &Lab, internet: &Internet, kith: &Path, n: usize) -> Result<Self> {
        if n == 0 || n > MAX_NODES {
            return Err(LabError::Parse {
                cmd: "starting a lab DHT".into(),
                detail: format!("{n} nodes asked for; 1 to {MAX_NODES} fit in one subnet"),
            });
        }
        let host = lab.host("dht")?;
        let uplink = internet.attach(&host)?;
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let octet = FIRST_NODE + u8::try_from(i).unwrap_or(u8::MAX);
            host.ip(&[
                "addr",
                "add",
                &uplink.subnet.cidr(octet),
                "dev",
                &uplink.iface.name,
            ])?;
            nodes.push(NodeProc {
                addr: SocketAddrV4::new(uplink.subnet.addr(octet), DHT_PORT),
                log: lab.dir().join(format!("dht-node{i}.log")),
                child: None,
                starts: 0,
            });
        }
        let mut dht = Self {
            host,
            uplink,
            bin: kith.to_owned(),
            nodes,
        };
        dht.start()?;
        Ok(dht)
    }

    /// The namespace the nodes run in.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The nodes' link to the internet (cut it to partition the DHT).
    pub fn uplink(&self) -> &Uplink {
        &self.uplink
    }

    /// Every node's address.
    pub fn addrs(&self) -> Vec<SocketAddrV4> {
        self.nodes.iter().map(|n| n.addr).collect()
    }

    /// `[discovery] bootstrap` for daemons: every node, `IP:PORT`.
    pub fn bootstrap(&self) -> Vec<String> {
        self.addrs().iter().map(ToString::to_string).collect()
    }

    /// The nodes' log files (one per node, all runs appended).
    pub fn logs(&self) -> Vec<PathBuf> {
        self.nodes.iter().map(|n| n.log.clone()).collect()
    }

    /// Whether any node is running.
    pub fn is_running(&self) -> bool {
        self.nodes.iter().any(|n| n.child.is_some())
    }

    /// Starts every stopped node (node 0 first, without bootstrap; the rest
    /// bootstrapping from it) and waits until all listen. A restarted node
    /// has a new id and holds no items.
    pub fn start(&mut self) -> Result<()> {
        let first = self.nodes[0].addr.to_string();
        for i in 0..self.nodes.len() {
            let bootstrap = (i > 0).then_some(first.as_str());
            self.spawn_node(i, bootstrap)?;
            if i == 0 {
                self.wait_listening(0)?;
            }
        }
        for i in 1..self.nodes.len() {
            self.wait_listening(i)?;
        }
        Ok(())
    }

    /// SIGTERM to every node, then SIGKILL to those still there after a
    /// second: the DHT is gone, with everything it stored.
    pub fn stop(&mut self) -> Result<()> {
        let mut children: Vec<Child> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.child.take())
            .collect();
        for child in &children {
            sys::signal(child.id(), libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        for child in &mut children {
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            child
                .wait()
                .map_err(|e| LabError::io("waiting for a DHT node to exit", e))?;
        }
        Ok(())
    }

    /// A mainline node (client mode) inside `host`, bootstrapped from this
    /// DHT; its socket lives in `host`'s namespace. Waits (up to 10 s) for
    /// the bootstrap to finish.
    pub fn client(&self, host: &Host) -> Result<AsyncDht> {
        let bootstrap = self.bootstrap();
        let dht = host.run_in(move || {
            // mainline's actor thread is spawned from here, so it inherits
            // this thread's namespace.
            mainline::Dht::builder().bootstrap(&bootstrap).build()
        })?;
        let dht =
            dht.map_err(|e| LabError::io(format!("starting a DHT client in {}", host.netns()), e))?;
        let dht = dht.as_async();
        let _ = futures_lite::future::block_on(dht.bootstrapped());
        Ok(dht)
    }

    fn spawn_node(&mut self, i: usize, bootstrap: Option<&str>) -> Result<()> {
        let node = &mut self.nodes[i];
        if node.child.is_some() {
            return Ok(());
        }
        let mut cmd = self.host.command(&self.bin);
        cmd.arg("dht-node")
            .arg("--listen")
            .arg(node.addr.to_string());
        if let Some(b) = bootstrap {
            cmd.arg("--bootstrap").arg(b);
        }
        cmd.env("KITH_LOG", "info");
        let marker = format!("starting DHT node {i} on {}", node.addr);
        let child = sys::spawn_logged(&mut cmd, &node.log, &marker)?;
        node.child = Some(child);
        node.starts += 1;
        Ok(())
    }

    /// Waits until node `i` has logged "DHT node listening" once per start.
    fn wait_listening(&mut self, i: usize) -> Result<()> {
        let start = Instant::now();
        let node = &mut self.nodes[i];
        loop {
            let log = std::fs::read_to_string(&node.log).unwrap_or_default();
            if log.matches("DHT node listening").count() >= node.starts {
                return Ok(());
            }
            if let Some(child) = node.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                node.child = None;
                return Err(LabError::DaemonExited {
                    netns: self.host.netns().to_owned(),
                    status: format!("DHT node {i} on {}: {status}", node.addr),
                    log: node.log.clone(),
                    tail: tail(&log, 20),
                });
            }
            if start.elapsed() > LISTEN_TIMEOUT {
                return Err(LabError::Timeout {
                    what: format!("DHT node {i} to listen on {}", node.addr),
                    timeout: LISTEN_TIMEOUT,
                    detail: format!("; log {}:\n{}", node.log.display(), tail(&log, 20)),
                });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The address of node `i`.
    pub fn node_ip(&self, i: usize) -> Option<Ipv4Addr> {
        self.nodes.get(i).map(|n| *n.addr.ip())
    }
}

impl Drop for LabDht {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
