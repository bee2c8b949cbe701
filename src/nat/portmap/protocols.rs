//! One request per protocol, each under kith's own deadline.
//!
//! PCP and NAT-PMP go through `crab_nat` (which also parses their
//! responses), UPnP IGD through `igd-next` (SSDP search, device description
//! and SOAP parsing are its code). Both crates retry on their own schedule
//! and igd-next allows itself 10 s per call, so every call here is wrapped
//! in `tokio::time::timeout(options.request_timeout, ..)`.
//!
//! A mapping in hand is a [`Held`], which knows how to renew and delete
//! itself with the protocol that made it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::num::NonZeroU16;
use std::time::Duration;

use crab_nat::{InternetProtocol, PortMappingOptions, PortMappingType, TimeoutConfig};
use igd_next::aio::Gateway as IgdGateway;
use igd_next::aio::tokio::Tokio;
use igd_next::{AddPortError, PortMappingProtocol, SearchOptions};

use super::lease::Grant;
use super::{Mapping, Options, PortMapError, Protocol};

/// Who asks whom: the gateway, and the local address and port to map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub gateway: Ipv4Addr,
    /// The local address facing the gateway and the daemon's listen port.
    pub local: SocketAddrV4,
}

/// The description kith puts on UPnP mappings (shown by `upnpc -l` and in
/// router web pages).
pub const UPNP_DESCRIPTION: &str = "kith";

/// A mapping held on a gateway, able to renew and delete itself.
#[derive(Debug)]
pub enum Held {
    /// PCP or NAT-PMP.
    Crab {
        mapping: crab_nat::PortMapping,
        /// The external IPv4 address (from the PCP response, or a NAT-PMP
        /// external-address request).
        external_ip: Ipv4Addr,
        gateway: Ipv4Addr,
    },
    Upnp {
        igd: IgdGateway<Tokio>,
        external: SocketAddr,
        local: SocketAddrV4,
        /// The lease granted (zero: permanent).
        lease: Duration,
        requested: Duration,
    },
}

impl Held {
    pub fn protocol(&self) -> Protocol {
        match self {
            Held::Crab { mapping, .. } => match mapping.mapping_type() {
                PortMappingType::NatPmp => Protocol::NatPmp,
                PortMappingType::Pcp { .. } => Protocol::Pcp,
            },
            Held::Upnp { .. } => Protocol::Upnp,
        }
    }

    /// What this mapping means for peers, and the gateway epoch if any.
    pub fn grant(&self) -> Grant {
        match self {
            Held::Crab {
                mapping,
                external_ip,
                ..
            } => Grant {
                mapping: Mapping {
                    protocol: self.protocol(),
                    external: SocketAddr::new(
                        IpAddr::V4(*external_ip),
                        mapping.external_port().get(),
                    ),
                    lease: Duration::from_secs(u64::from(mapping.lifetime())),
                },
                epoch: Some(mapping.gateway_epoch()),
            },
            Held::Upnp {
                external, lease, ..
            } => Grant {
                mapping: Mapping {
                    protocol: Protocol::Upnp,
                    external: *external,
                    lease: *lease,
                },
                epoch: None,
            },
        }
    }

    /// Refreshes the lease with the same protocol and external port.
    pub async fn renew(&mut self, options: &Options) -> Result<Grant, PortMapError> {
        match self {
            Held::Crab {
                mapping, gateway, ..
            } => {
                let protocol = self_protocol(mapping);
                let gateway = *gateway;
                deadline(protocol, gateway, options, async {
                    mapping.renew().await.map_err(|e| crab_error(gateway, e))
                })
                .await?;
            }
            Held::Upnp {
                igd,
                external,
                local,
                lease,
                requested,
            } => {
                let gateway = igd.addr;
                let ip = gateway_v4(gateway);
                *lease = deadline(Protocol::Upnp, ip, options, async {
                    upnp_add_port(igd, external.port(), *local, *requested).await
                })
                .await?;
            }
        }
        Ok(self.grant())
    }

    /// Deletes the mapping on the gateway.
    pub async fn delete(self, options: &Options) -> Result<(), PortMapError> {
        match self {
            Held::Crab {
                mapping, gateway, ..
            } => {
                let protocol = self_protocol(&mapping);
                deadline(protocol, gateway, options, async {
                    mapping
                        .try_drop()
                        .await
                        .map_err(|(e, _)| crab_error(gateway, e))
                })
                .await
            }
            Held::Upnp { igd, external, .. } => {
                let gateway = igd.addr;
                deadline(Protocol::Upnp, gateway_v4(gateway), options, async {
                    igd.remove_port(PortMappingProtocol::UDP, external.port())
                        .await
                        .map_err(|source| PortMapError::UpnpRemove { gateway, source })
                })
                .await
            }
        }
    }
}

fn self_protocol(mapping: &crab_nat::PortMapping) -> Protocol {
    match mapping.mapping_type() {
        PortMappingType::NatPmp => Protocol::NatPmp,
        PortMappingType::Pcp { .. } => Protocol::Pcp,
    }
}

fn gateway_v4(addr: SocketAddr) -> Ipv4Addr {
    match addr.ip() {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    }
}

fn crab_error(gateway: Ipv4Addr, e: crab_nat::MappingFailure) -> PortMapError {
    match e {
        crab_nat::MappingFailure::Pcp(source) => PortMapError::Pcp { gateway, source },
        crab_nat::MappingFailure::NatPmp(source) => PortMapError::NatPmp { gateway, source },
    }
}

/// `fut` under `options.request_timeout`.
async fn deadline<T>(
    protocol: Protocol,
    gateway: Ipv4Addr,
    options: &Options,
    fut: impl Future<Output = Result<T, PortMapError>>,
) -> Result<T, PortMapError> {
    let after = options.request_timeout;
    tokio::time::timeout(after, fut)
        .await
        .unwrap_or(Err(PortMapError::Timeout {
            protocol,
            gateway,
            after,
        }))
}

/// crab_nat's retry schedule: 250 ms, 500 ms, 1 s (its PCP default starts
/// at 1 s and doubles to 1024 s, far too slow for a daemon start).
fn crab_timeouts() -> TimeoutConfig {
    TimeoutConfig {
        initial_timeout: Duration::from_millis(250),
        max_retries: 2,
        max_retry_timeout: Some(Duration::from_secs(1)),
    }
}

fn crab_options(options: &Options, protocol: Protocol, port: NonZeroU16) -> PortMappingOptions {
    PortMappingOptions {
        // Ask for the same port outside as inside: easier to read, and
        // what a peer's port prediction would guess.
        external_port: Some(port),
        lifetime_seconds: Some(secs_u32(options.lease_for(protocol))),
        timeout_config: Some(crab_timeouts()),
    }
}

fn secs_u32(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

/// Asks `target.gateway` for a mapping with `protocol`.
pub async fn map(
    protocol: Protocol,
    target: Target,
    options: &Options,
) -> Result<Held, PortMapError> {
    let port = NonZeroU16::new(target.local.port()).ok_or(PortMapError::PortZero)?;
    let gateway = target.gateway;
    deadline(protocol, gateway, options, async {
        match protocol {
            Protocol::Pcp => map_pcp(target, port, options).await,
            Protocol::NatPmp => map_natpmp(target, port, options).await,
            Protocol::Upnp => map_upnp(target, options).await,
        }
    })
    .await
}

async fn map_pcp(
    target: Target,
    port: NonZeroU16,
    options: &Options,
) -> Result<Held, PortMapError> {
    let gateway = target.gateway;
    let request = crab_nat::pcp::BaseMapRequest::new(
        gateway.into(),
        IpAddr::V4(*target.local.ip()),
        InternetProtocol::Udp,
        port,
    );
    let mapping = crab_nat::pcp::port_mapping(
        request,
        None,
        None,
        crab_options(options, Protocol::Pcp, port),
    )
    .await
    .map_err(|source| PortMapError::Pcp { gateway, source })?;
    let external_ip = match mapping.mapping_type() {
        PortMappingType::Pcp { external_ip, .. } => v4_or_mapped(external_ip)?,
        PortMappingType::NatPmp => external_natpmp(gateway).await?,
    };
    Ok(Held::Crab {
        mapping,
        external_ip,
        gateway,
    })
}

async fn map_natpmp(
    target: Target,
    port: NonZeroU16,
    options: &Options,
) -> Result<Held, PortMapError> {
    let gateway = target.gateway;
    let external_ip = external_natpmp(gateway).await?;
    let mapping = crab_nat::natpmp::port_mapping(
        gateway.into(),
        InternetProtocol::Udp,
        port,
        crab_options(options, Protocol::NatPmp, port),
    )
    .await
    .map_err(|source| PortMapError::NatPmp { gateway, source })?;
    Ok(Held::Crab {
        mapping,
        external_ip,
        gateway,
    })
}

async fn external_natpmp(gateway: Ipv4Addr) -> Result<Ipv4Addr, PortMapError> {
    crab_nat::natpmp::external_address(gateway.into(), Some(crab_timeouts()))
        .await
        .map_err(|source| PortMapError::NatPmp { gateway, source })
}

/// PCP carries IPv4 addresses as IPv4-mapped IPv6.
fn v4_or_mapped(ip: IpAddr) -> Result<Ipv4Addr, PortMapError> {
    match ip {
        IpAddr::V4(v4) => Ok(v4),
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .ok_or(PortMapError::ExternalFamily { addr: ip }),
    }
}

async fn map_upnp(target: Target, options: &Options) -> Result<Held, PortMapError> {
    let mut search = SearchOptions::default();
    search.bind_addr = SocketAddr::new(IpAddr::V4(*target.local.ip()), 0);
    search.timeout = Some(options.upnp_search_timeout);
    search.single_search_timeout = Some(options.upnp_search_timeout);
    search.gateway_ip_version = igd_next::GatewayIpVersion::V4;
    search.allowed_gateway_ips = vec![IpAddr::V4(target.gateway)];
    let igd = igd_next::aio::tokio::search_gateway(search)
        .await
        .map_err(|source| PortMapError::UpnpSearch { source })?;
    let gateway = igd.addr;
    let requested = options.upnp_lease;
    let (port, lease) =
        match upnp_add_port(&igd, target.local.port(), target.local, requested).await {
            Ok(lease) => (target.local.port(), lease),
            // Someone else holds our port outside: take any.
            Err(PortMapError::UpnpAddPort {
                source: AddPortError::PortInUse,
                ..
            }) => {
                let port = igd
                    .add_any_port(
                        PortMappingProtocol::UDP,
                        SocketAddr::V4(target.local),
                        secs_u32(requested),
                        UPNP_DESCRIPTION,
                    )
                    .await
                    .map_err(|source| PortMapError::UpnpAdd { gateway, source })?;
                (port, requested)
            }
            Err(e) => return Err(e),
        };
    let ip = igd
        .get_external_ip()
        .await
        .map_err(|source| PortMapError::UpnpExternalIp { gateway, source })?;
    Ok(Held::Upnp {
        igd,
        external: SocketAddr::new(ip, port),
        local: target.local,
        lease,
        requested,
    })
}

/// `AddPortMapping` for `external` → `local`; the lease granted. IGDs that
/// only take permanent mappings get one (kith still refreshes and deletes
/// it).
async fn upnp_add_port(
    igd: &IgdGateway<Tokio>,
    external: u16,
    local: SocketAddrV4,
    lease: Duration,
) -> Result<Duration, PortMapError> {
    let gateway = igd.addr;
    let add = |lease: Duration| {
        igd.add_port(
            PortMappingProtocol::UDP,
            external,
            SocketAddr::V4(local),
            secs_u32(lease),
            UPNP_DESCRIPTION,
        )
    };
    match add(lease).await {
        Ok(()) => Ok(lease),
        Err(AddPortError::OnlyPermanentLeasesSupported) => add(Duration::ZERO)
            .await
            .map(|()| Duration::ZERO)
            .map_err(|source| PortMapError::UpnpAddPort {
                gateway,
                port: external,
                source,
            }),
        Err(source) => Err(PortMapError::UpnpAddPort {
            gateway,
            port: external,
            source,
        }),
    }
}

/// The gateway and local address to use: `options.gateway` or the default
/// route's, and the local address facing it.
pub fn target(local_port: u16, options: &Options) -> Result<Target, PortMapError> {
    let gateway = match options.gateway {
        Some(gateway) => gateway,
        None => super::route::default_gateway()?.gateway,
    };
    let ip = super::route::local_addr_towards(gateway)?;
    Ok(Target {
        gateway,
        local: SocketAddrV4::new(ip, local_port),
    })
}

/// Tries `options.protocols` in order; the first mapping granted, or why
/// each failed.
pub async fn map_any(target: Target, options: &Options) -> Result<Held, PortMapError> {
    let mut errors = Vec::new();
    for &protocol in &options.protocols {
        match map(protocol, target, options).await {
            Ok(held) => return Ok(held),
            Err(e) => {
                tracing::debug!(%protocol, gateway = %target.gateway, error = %e, "port mapping attempt failed");
                errors.push((protocol, e));
            }
        }
    }
    Err(PortMapError::Unavailable {
        gateway: target.gateway,
        port: target.local.port(),
        errors,
    })
}
