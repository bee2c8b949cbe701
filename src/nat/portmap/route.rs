//! Gateway discovery: the default IPv4 route's gateway, read from
//! `/proc/net/route`, and the local address that faces it.
//!
//! [`parse_default_gateway`] is pure (and fuzzed); [`default_gateway`] reads
//! the file and [`local_addr_towards`] asks the kernel which source address
//! it would use (a connected UDP socket: no packet is sent).
//!
//! `/proc/net/route` columns are whitespace-separated: `Iface Destination
//! Gateway Flags RefCnt Use Metric Mask MTU Window IRTT`, with addresses as
//! 8 hex digits of the address's bytes read as a native-endian u32
//! (`0101A8C0` is 192.168.1.1 on little-endian hosts) and flags in hex (`RTF_UP` 0x1,
//! `RTF_GATEWAY` 0x2).
#![cfg_attr(not(test), deny(clippy::disallowed_methods))]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

use super::PortMapError;

/// A default route: its interface and gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoute {
    pub iface: String,
    pub gateway: Ipv4Addr,
    pub metric: u32,
}

const RTF_UP: u32 = 0x1;
const RTF_GATEWAY: u32 = 0x2;

/// The default route with the lowest metric in the text of
/// `/proc/net/route`, if any. Lines that do not parse are skipped, never a
/// panic.
pub fn parse_default_gateway(text: &str) -> Option<DefaultRoute> {
    text.lines()
        .skip(1) // the header
        .filter_map(parse_line)
        .min_by_key(|r| r.metric)
}

fn parse_line(line: &str) -> Option<DefaultRoute> {
    let mut fields = line.split_whitespace();
    let iface = fields.next()?;
    let destination = hex_u32(fields.next()?, 8)?;
    let gateway = hex_u32(fields.next()?, 8)?;
    let flags = hex_u32(fields.next()?, 4)?;
    let _refcnt = fields.next()?;
    let _use = fields.next()?;
    let metric: u32 = fields.next()?.parse().ok()?;
    let mask = hex_u32(fields.next()?, 8)?;
    let is_default = destination == 0 && mask == 0;
    let usable = flags & RTF_UP != 0 && flags & RTF_GATEWAY != 0 && gateway != 0;
    (is_default && usable).then(|| DefaultRoute {
        iface: iface.to_owned(),
        // The kernel prints the address's in-memory (network order) bytes
        // as a native u32: its native bytes are the address.
        gateway: Ipv4Addr::from(gateway.to_ne_bytes()),
        metric,
    })
}

/// Exactly `digits` hex digits (no sign, which `from_str_radix` accepts).
fn hex_u32(field: &str, digits: usize) -> Option<u32> {
    if field.len() != digits || !field.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(field, 16).ok()
}

/// The route table of the calling thread's network namespace.
/// `/proc/net` follows the process's first thread, `thread-self` the
/// caller, which matters for threads that `setns` (the lab, tests).
const ROUTE_FILES: [&str; 2] = ["/proc/thread-self/net/route", "/proc/net/route"];

/// Reads the route table and returns the default gateway.
pub fn default_gateway() -> Result<DefaultRoute, PortMapError> {
    let mut last_err = None;
    for path in ROUTE_FILES {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                return parse_default_gateway(&text).ok_or(PortMapError::NoGateway { path });
            }
            Err(source) => last_err = Some(PortMapError::ReadRoutes { path, source }),
        }
    }
    Err(last_err.unwrap_or(PortMapError::NoGateway {
        path: ROUTE_FILES[1],
    }))
}

/// The local IPv4 address the kernel would use to reach `gateway`.
pub fn local_addr_towards(gateway: Ipv4Addr) -> Result<Ipv4Addr, PortMapError> {
    let err = |source| PortMapError::LocalAddr { gateway, source };
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(err)?;
    socket
        .connect((gateway, crab_nat::GATEWAY_PORT))
        .map_err(err)?;
    match socket.local_addr().map_err(err)? {
        SocketAddr::V4(v4) => Ok(*v4.ip()),
        SocketAddr::V6(_) => Err(err(std::io::Error::other("got an IPv6 source address"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";

    #[test]
    fn finds_the_default_route() {
        let text = format!(
            "{HEADER}\
             eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
             eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
        );
        assert_eq!(
            parse_default_gateway(&text),
            Some(DefaultRoute {
                iface: "eth0".into(),
                gateway: Ipv4Addr::new(192, 168, 1, 1),
                metric: 100,
            })
        );
    }

    #[test]
    fn lowest_metric_wins() {
        let text = format!(
            "{HEADER}\
             wlan0\t00000000\t0100000A\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
             eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
        );
        let route = parse_default_gateway(&text).unwrap();
        assert_eq!(route.iface, "eth0");
        assert_eq!(route.gateway, Ipv4Addr::new(192, 168, 1, 1));
    }

    #[test]
    fn skips_routes_that_are_down_or_direct() {
        let text = format!(
            "{HEADER}\
             eth0\t00000000\t0101A8C0\t0002\t0\t0\t100\t00000000\t0\t0\t0\n\
             tun0\t00000000\t00000000\t0001\t0\t0\t50\t00000000\t0\t0\t0\n\
             eth0\t0001A8C0\t0101A8C0\t0003\t0\t0\t10\t00FFFFFF\t0\t0\t0\n"
        );
        assert_eq!(parse_default_gateway(&text), None);
    }

    #[test]
    fn no_routes_or_garbage() {
        assert_eq!(parse_default_gateway(""), None);
        assert_eq!(parse_default_gateway(HEADER), None);
        let garbage = format!("{HEADER}eth0\t0000\nx y z\n\u{fffd}\t00000000\tZZZZZZZZ\n");
        assert_eq!(parse_default_gateway(&garbage), None);
    }

    #[test]
    fn reads_this_machine_without_panicking() {
        // Whatever the machine has (a container may have no default route).
        let _ = default_gateway();
    }
}
