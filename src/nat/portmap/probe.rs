//! `kith netcheck`'s port-mapping section: ask the gateway with each
//! protocol in turn, note who answered and what it mapped, and delete each
//! mapping again before the next protocol.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use super::protocols::{self, Target};
use super::{Mapping, Options, Protocol};

/// Which protocols the gateway answers and what each mapped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PortMapReport {
    pub gateway: Ipv4Addr,
    /// The local address and port the probe mapped (`None` if the local
    /// address facing the gateway could not be found).
    pub local: Option<SocketAddrV4>,
    pub pcp: ProtocolReport,
    pub nat_pmp: ProtocolReport,
    pub upnp: ProtocolReport,
}

/// One protocol's result.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct ProtocolReport {
    /// The gateway replied (a refusal counts).
    pub answered: bool,
    /// The public address it mapped, if it did.
    pub external: Option<SocketAddr>,
    /// The lease it granted, in seconds.
    pub lease_secs: Option<u64>,
    /// Why it did not map, for humans.
    pub error: Option<String>,
}

impl PortMapReport {
    /// The report for one protocol.
    pub fn get(&self, protocol: Protocol) -> &ProtocolReport {
        match protocol {
            Protocol::Pcp => &self.pcp,
            Protocol::NatPmp => &self.nat_pmp,
            Protocol::Upnp => &self.upnp,
        }
    }

    /// The protocols that answered, in preference order.
    pub fn answering(&self) -> Vec<Protocol> {
        Protocol::ALL
            .into_iter()
            .filter(|&p| self.get(p).answered)
            .collect()
    }

    /// The mapping the daemon would get: the first protocol, in preference
    /// order, that mapped.
    pub fn mapped(&self) -> Option<Mapping> {
        Protocol::ALL.into_iter().find_map(|protocol| {
            let report = self.get(protocol);
            Some(Mapping {
                protocol,
                external: report.external?,
                lease: Duration::from_secs(report.lease_secs.unwrap_or(0)),
            })
        })
    }
}

/// Probes `gateway` with default deadlines. `local_port` 0 maps a fresh
/// ephemeral port (held for the probe), which is what `kith netcheck`
/// should pass while a daemon may hold a mapping for its own port: the
/// probe deletes what it maps.
pub async fn probe(gateway: Ipv4Addr, local_port: u16) -> PortMapReport {
    probe_with(gateway, local_port, &Options::default()).await
}

/// [`probe`] with explicit deadlines and protocol list (unlisted protocols
/// are reported as not tried).
pub async fn probe_with(gateway: Ipv4Addr, local_port: u16, options: &Options) -> PortMapReport {
    let mut report = PortMapReport {
        gateway,
        local: None,
        pcp: ProtocolReport::default(),
        nat_pmp: ProtocolReport::default(),
        upnp: ProtocolReport::default(),
    };
    let options = Options {
        gateway: Some(gateway),
        ..options.clone()
    };
    let local_ip = match super::route::local_addr_towards(gateway) {
        Ok(ip) => ip,
        Err(e) => {
            let error = Some(e.to_string());
            for r in [&mut report.pcp, &mut report.nat_pmp, &mut report.upnp] {
                r.error.clone_from(&error);
            }
            return report;
        }
    };
    // Hold an ephemeral socket so the port stays ours during the probe.
    let (_socket, port) = match local_port {
        0 => match UdpSocket::bind((local_ip, 0)).and_then(|s| Ok((s.local_addr()?.port(), s))) {
            Ok((port, socket)) => (Some(socket), port),
            Err(e) => {
                let error = Some(format!("binding a probe socket on {local_ip}: {e}"));
                for r in [&mut report.pcp, &mut report.nat_pmp, &mut report.upnp] {
                    r.error.clone_from(&error);
                }
                return report;
            }
        },
        port => (None, port),
    };
    let target = Target {
        gateway,
        local: SocketAddrV4::new(local_ip, port),
    };
    report.local = Some(target.local);
    for protocol in Protocol::ALL {
        let slot = match protocol {
            Protocol::Pcp => &mut report.pcp,
            Protocol::NatPmp => &mut report.nat_pmp,
            Protocol::Upnp => &mut report.upnp,
        };
        if !options.protocols.contains(&protocol) {
            slot.error = Some("not tried".into());
            continue;
        }
        *slot = probe_one(protocol, target, &options).await;
    }
    report
}

async fn probe_one(protocol: Protocol, target: Target, options: &Options) -> ProtocolReport {
    match protocols::map(protocol, target, options).await {
        Ok(held) => {
            let mapping = held.grant().mapping;
            // crab_nat can fall back inside one call; report what was used.
            let error = (mapping.protocol != protocol)
                .then(|| format!("answered with {} instead", mapping.protocol));
            if let Err(e) = held.delete(options).await {
                tracing::debug!(%protocol, error = %e, "deleting the probe mapping failed");
            }
            ProtocolReport {
                answered: true,
                external: Some(mapping.external),
                lease_secs: Some(mapping.lease.as_secs()),
                error,
            }
        }
        Err(e) => ProtocolReport {
            answered: e.gateway_answered(),
            external: None,
            lease_secs: None,
            error: Some(e.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn report() -> PortMapReport {
        PortMapReport {
            gateway: Ipv4Addr::new(192, 168, 1, 1),
            local: Some("192.168.1.10:51820".parse().unwrap()),
            pcp: ProtocolReport {
                answered: false,
                error: Some("no answer".into()),
                ..Default::default()
            },
            nat_pmp: ProtocolReport {
                answered: true,
                external: Some(SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::new(198, 18, 1, 2)),
                    51820,
                )),
                lease_secs: Some(7200),
                error: None,
            },
            upnp: ProtocolReport {
                answered: true,
                external: Some("198.18.1.2:51820".parse().unwrap()),
                lease_secs: Some(3600),
                error: None,
            },
        }
    }

    #[test]
    fn mapped_prefers_protocol_order() {
        let r = report();
        assert_eq!(r.answering(), [Protocol::NatPmp, Protocol::Upnp]);
        let m = r.mapped().unwrap();
        assert_eq!(m.protocol, Protocol::NatPmp);
        assert_eq!(m.lease, Duration::from_secs(7200));
    }

    #[test]
    fn report_serializes_for_json_output() {
        let json = serde_json::to_value(report()).unwrap();
        assert_eq!(json["gateway"], "192.168.1.1");
        assert_eq!(json["nat_pmp"]["external"], "198.18.1.2:51820");
        assert_eq!(json["pcp"]["answered"], false);
    }

    #[tokio::test]
    async fn unlisted_protocols_are_not_tried() {
        let options = Options {
            protocols: vec![Protocol::Pcp],
            request_timeout: Duration::from_millis(200),
            ..Options::default()
        };
        let r = probe_with(Ipv4Addr::LOCALHOST, 0, &options).await;
        assert_eq!(r.upnp.error.as_deref(), Some("not tried"));
        assert_eq!(r.nat_pmp.error.as_deref(), Some("not tried"));
        assert!(!r.pcp.answered);
        assert!(r.local.is_some());
        assert_eq!(r.mapped(), None);
    }
}
