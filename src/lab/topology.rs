//! Ready-made topologies shared by the demo, the bench and the tests.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use super::{Host, Iface, KithNode, KithSpec, Lab, Result};
use crate::identity::SecretKey;

/// Two hosts `a` and `b` on one veth link (198.18.0.1 and 198.18.0.2), each
/// running kith with the other as a peer at a static endpoint (overlay
/// 100.96.0.1 and 100.96.0.2 on `kith0`).
pub struct Pair {
    pub node_a: KithNode,
    pub node_b: KithNode,
    pub a: Host,
    pub b: Host,
    /// `a`'s end of the underlay link.
    pub a_link: Iface,
    /// `b`'s end of the underlay link.
    pub b_link: Iface,
}

pub const A_UNDERLAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const B_UNDERLAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const A_OVERLAY: Ipv4Addr = Ipv4Addr::new(100, 96, 0, 1);
pub const B_OVERLAY: Ipv4Addr = Ipv4Addr::new(100, 96, 0, 2);

impl Pair {
    /// Builds the hosts and link, writes fresh keys and configs, starts both
    /// daemons and waits until both TUN interfaces are up (not for the
    /// tunnel: see [`Pair::wait_tunnel`]).
    pub fn start(lab: &Lab, kith: &Path) -> Result<Self> {
        let a = lab.host("a")?;
        let b = lab.host("b")?;
        let (a_link, b_link) = lab.link(&a, "198.18.0.1/24", &b, "198.18.0.2/24")?;
        let key_a = SecretKey::generate().map_err(|e| super::LabError::io("key", e.into()))?;
        let key_b = SecretKey::generate().map_err(|e| super::LabError::io("key", e.into()))?;
        let spec_a = KithSpec::new("100.96.0.1/16", key_a);
        let spec_b = KithSpec::new("100.96.0.2/16", key_b);
        let endpoint = |ip: Ipv4Addr, spec: &KithSpec| Some(format!("{ip}:{}", spec.listen_port));
        let spec_a_full = spec_a
            .clone()
            .peer("b", &spec_b, endpoint(B_UNDERLAY, &spec_b));
        let spec_b_full = spec_b.peer("a", &spec_a, endpoint(A_UNDERLAY, &spec_a));
        let mut node_a = lab.spawn_kith(&a, kith, spec_a_full)?;
        let mut node_b = lab.spawn_kith(&b, kith, spec_b_full)?;
        node_a.wait_ready(Duration::from_secs(10))?;
        node_b.wait_ready(Duration::from_secs(10))?;
        Ok(Self {
            node_a,
            node_b,
            a,
            b,
            a_link,
            b_link,
        })
    }

    /// Waits until a ping over the overlay succeeds both ways; how long that took.
    pub fn wait_tunnel(&mut self, timeout: Duration) -> Result<Duration> {
        let start = std::time::Instant::now();
        let result = self
            .a
            .wait_reachable(IpAddr::V4(B_OVERLAY), timeout)
            .and_then(|_| {
                let left = timeout.saturating_sub(start.elapsed());
                self.b.wait_reachable(IpAddr::V4(A_OVERLAY), left)
            });
        match result {
            Ok(_) => Ok(start.elapsed()),
            Err(e) => {
                // A dead daemon explains more than a timeout.
                self.node_a.check_running()?;
                self.node_b.check_running()?;
                Err(super::LabError::Timeout {
                    what: "a ping over the overlay both ways".into(),
                    timeout,
                    detail: format!(
                        " ({e})\n--- log a ---\n{}\n--- log b ---\n{}",
                        self.node_a.log_tail(20),
                        self.node_b.log_tail(20)
                    ),
                })
            }
        }
    }
}
