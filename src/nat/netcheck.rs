//! `kith netcheck`: one look at the network in front of this host, for a
//! person deciding why peers do or do not connect directly.
//!
//! Runs STUN from a fresh socket against the configured servers (to learn
//! the public address and whether the NAT keeps one mapping for every
//! destination), asks the router which port-mapping protocols it speaks,
//! and turns the findings into advice.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::UdpSocket;

use super::portmap::{self, PortMapReport};
use super::{MappingBehaviour, Observation, Retransmit, StunClient, classify, ifaddrs};

#[derive(Debug, Clone, Serialize)]
pub struct NetcheckReport {
    /// This host's IPv4 addresses (with the probe socket's port).
    pub local: Vec<SocketAddr>,
    pub stun: Vec<StunAnswer>,
    /// "endpoint-independent", "endpoint-dependent", "no NAT" or "unknown".
    pub mapping: String,
    pub public: Option<SocketAddr>,
    pub port_preserving: bool,
    /// Port step between successive mappings, when the allocator looks sequential.
    pub sequential: Option<i32>,
    /// Whether the router was asked at all (`--no-port-mapping` or
    /// `port_mapping = false` skip it).
    pub port_mapping_tried: bool,
    /// `None` when not tried or there is no default gateway to ask.
    pub port_mapping: Option<PortMapReport>,
    pub advice: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StunAnswer {
    pub server: SocketAddr,
    /// `None`: the server did not answer.
    pub reflexive: Option<SocketAddr>,
}

/// Resolve `host:port` STUN servers to IPv4 addresses (the data socket is
/// IPv4); names that do not resolve are logged and skipped.
pub async fn resolve(servers: &[String]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for s in servers {
        if let Some(a) = resolve_ipv4(s.as_str(), s).await {
            out.push(a);
        }
    }
    out
}

/// The first IPv4 address `target` resolves to, waiting at most 5 s; a
/// failure is logged with `name` and gives `None`. For one-shot lookups
/// (the CLI); the daemon resolves in the background (`daemon::names`).
pub async fn resolve_ipv4(
    target: impl tokio::net::ToSocketAddrs,
    name: &str,
) -> Option<SocketAddr> {
    lookup_ipv4(target)
        .await
        .inspect_err(|e| tracing::warn!(host = name, error = %e, "DNS lookup failed"))
        .ok()
}

/// The first IPv4 address `target` resolves to, waiting at most 5 s. One
/// place for every DNS lookup of the daemon and the CLI.
pub async fn lookup_ipv4(target: impl tokio::net::ToSocketAddrs) -> Result<SocketAddr, String> {
    match tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host(target)).await {
        Ok(Ok(mut addrs)) => addrs
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| "no IPv4 address".to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out after 5 s".to_string()),
    }
}

/// Probe the network. `stun` must already be resolved; `port_mapping`
/// false skips asking the router.
pub async fn run(stun: &[SocketAddr], port_mapping: bool) -> std::io::Result<NetcheckReport> {
    let sock = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))).await?;
    let port = sock.local_addr()?.port();
    let local: Vec<SocketAddr> = ifaddrs::local_ipv4("")
        .into_iter()
        .map(|ip| SocketAddr::V4(SocketAddrV4::new(ip, port)))
        .collect();

    let observations = stun_round(&sock, stun).await?;
    let behaviour = classify(&local, &observations);
    let port_mapping_tried = port_mapping;
    let port_mapping = match (port_mapping, portmap::route::default_gateway()) {
        (true, Ok(route)) => Some(portmap::probe(route.gateway, port).await),
        _ => None,
    };
    let mapping = match behaviour.mapping {
        MappingBehaviour::EndpointIndependent => "endpoint-independent",
        MappingBehaviour::EndpointDependent => "endpoint-dependent",
        MappingBehaviour::NoNat => "no NAT",
        MappingBehaviour::Unknown => "unknown",
    };
    let mut report = NetcheckReport {
        local,
        stun: observations
            .iter()
            .map(|o| StunAnswer {
                server: o.server,
                reflexive: o.reflexive,
            })
            .collect(),
        mapping: mapping.to_string(),
        public: behaviour.public,
        port_preserving: behaviour.port_preserving,
        sequential: behaviour.sequential,
        port_mapping,
        port_mapping_tried,
        advice: Vec::new(),
    };
    report.advice = advice(&report, behaviour.mapping);
    Ok(report)
}

/// One STUN transaction per server from `sock`, until all finish.
async fn stun_round(sock: &UdpSocket, servers: &[SocketAddr]) -> std::io::Result<Vec<Observation>> {
    let mut client = StunClient::new(Retransmit {
        max_requests: 4,
        ..Retransmit::default()
    });
    let now = Instant::now();
    for server in servers {
        let mut txid = [0u8; 12];
        getrandom::fill(&mut txid).map_err(std::io::Error::other)?;
        let _ = client.add_server(now, *server, txid);
    }
    let mut buf = [0u8; 1500];
    while !client.is_finished() {
        while let Some((dst, bytes)) = client.poll_transmit() {
            sock.send_to(&bytes, dst).await?;
        }
        let deadline = client
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let (n, from) = r?;
                let _ = client.handle_response(Instant::now(), from, &buf[..n]);
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                client.handle_timeout(Instant::now());
            }
        }
        while client.poll_event().is_some() {}
    }
    Ok(client.observations())
}

fn advice(r: &NetcheckReport, mapping: MappingBehaviour) -> Vec<String> {
    let mut out = Vec::new();
    let answered = r.stun.iter().filter(|s| s.reflexive.is_some()).count();
    if r.stun.is_empty() {
        out.push(
            "no STUN servers configured: kith cannot learn its public address ([discovery] stun)"
                .into(),
        );
    } else if answered == 0 {
        out.push("no STUN server answered: UDP may be blocked on this network, or the servers are unreachable; peers will need a relay".into());
    } else if answered == 1 && r.stun.len() > 1 {
        out.push(
            "only one STUN server answered: the NAT's mapping behaviour could not be measured"
                .into(),
        );
    }
    let mapped = r.port_mapping.as_ref().and_then(PortMapReport::mapped);
    match mapping {
        MappingBehaviour::NoNat => out.push("no NAT in front of this host: peers can reach it directly".into()),
        MappingBehaviour::EndpointIndependent => out.push(
            "the NAT keeps one public address for all destinations (easy NAT): hole punching works with any peer that is not behind a hard NAT too".into(),
        ),
        MappingBehaviour::EndpointDependent if mapped.is_none() => out.push(
            "the NAT picks a new public port for every destination (hard NAT): direct paths need the peer to have an easy NAT or a port mapping; enable UPnP/NAT-PMP/PCP on the router or forward the listen port".into(),
        ),
        MappingBehaviour::EndpointDependent => out.push(
            "the NAT is hard (a new public port per destination), but the router port mapping lets peers reach this host directly".into(),
        ),
        MappingBehaviour::Unknown => {}
    }
    match (&r.port_mapping, mapped) {
        (None, _) if !r.port_mapping_tried => {}
        (None, _) => out.push("no default gateway found: port mapping was not tried".into()),
        (Some(pm), Some(m)) => out.push(format!(
            "the router ({}) mapped a port with {}: {} will be published as a candidate",
            pm.gateway, m.protocol, m.external
        )),
        (Some(pm), None) => out.push(format!(
            "the router ({}) answered none of PCP, NAT-PMP and UPnP: enable one of them, or forward the UDP listen port by hand",
            pm.gateway
        )),
    }
    out
}

/// The report as a person reads it.
pub fn render(r: &NetcheckReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let list = |v: &[SocketAddr]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        out,
        "local addresses   {}",
        if r.local.is_empty() {
            "-".into()
        } else {
            list(&r.local)
        }
    );
    for s in &r.stun {
        let seen = s
            .reflexive
            .map_or("no answer".to_string(), |a| a.to_string());
        let _ = writeln!(out, "STUN {:<21} sees us as {seen}", s.server);
    }
    let _ = writeln!(out, "NAT mapping       {}", r.mapping);
    let _ = writeln!(
        out,
        "public address    {}",
        r.public.map_or("-".into(), |a| a.to_string())
    );
    let _ = writeln!(
        out,
        "port preserving   {}",
        if r.port_preserving { "yes" } else { "no" }
    );
    if let Some(step) = r.sequential {
        let _ = writeln!(out, "port allocation   sequential, step {step}");
    }
    match &r.port_mapping {
        None if !r.port_mapping_tried => {
            let _ = writeln!(out, "port mapping      skipped");
        }
        None => {
            let _ = writeln!(out, "port mapping      not tried (no default gateway)");
        }
        Some(pm) => {
            for (name, p) in [
                ("PCP", &pm.pcp),
                ("NAT-PMP", &pm.nat_pmp),
                ("UPnP", &pm.upnp),
            ] {
                let state = match (p.answered, p.external) {
                    (true, Some(ext)) => format!("mapped {ext}"),
                    (true, None) => "answered, no mapping".to_string(),
                    (false, _) => format!("no ({})", p.error.as_deref().unwrap_or("no answer")),
                };
                let _ = writeln!(out, "{name:<17} {state}");
            }
        }
    }
    let _ = writeln!(out, "\nadvice:");
    for a in &r.advice {
        let _ = writeln!(out, "  - {a}");
    }
    out
}
