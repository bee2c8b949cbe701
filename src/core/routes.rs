//! Cryptokey routing: which peer owns an address.
//!
//! Outbound packets pick the peer by longest-prefix match on the
//! destination; inbound packets are accepted only if their source maps back
//! to the peer that sent them. Prefixes may nest (an exit node's
//! `0.0.0.0/0` or `::/0` beside a NAS's /32): the longest match wins, in
//! each address family apart.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{DropReason, PeerId};
use crate::wire::{self, IpHeader};

#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    /// Sorted by prefix length, longest first, so the first hit is the best.
    entries: Vec<(IpNet, PeerId)>,
}

impl RouteTable {
    pub fn insert(&mut self, net: IpNet, peer: PeerId) {
        let at = self
            .entries
            .partition_point(|(n, _)| n.prefix_len() >= net.prefix_len());
        self.entries.insert(at, (net.trunc(), peer));
    }

    pub fn lookup(&self, addr: IpAddr) -> Option<PeerId> {
        self.entries
            .iter()
            .find(|(n, _)| n.contains(&addr))
            .map(|&(_, p)| p)
    }

    /// An IP packet read from the TUN device: the peer it goes to, its
    /// header, and the packet without any bytes past its total length.
    /// Both halves of the node route with this.
    pub fn outbound<'p>(
        &self,
        packet: &'p [u8],
    ) -> Result<(PeerId, IpHeader, &'p [u8]), DropReason> {
        let hdr = wire::parse_ip(packet).map_err(DropReason::NotIp)?;
        let id = self.lookup(hdr.dst).ok_or(DropReason::NoRoute)?;
        Ok((id, hdr, &packet[..hdr.total_len]))
    }

    /// An IP packet `from` sent us, opened: its header, if the peer may
    /// speak for its source (its allowed_ips).
    pub fn inbound(&self, from: PeerId, packet: &[u8]) -> Result<IpHeader, DropReason> {
        let hdr = wire::parse_ip(packet).map_err(DropReason::NotIp)?;
        if self.lookup(hdr.src) != Some(from) {
            return Err(DropReason::SourceNotAllowed);
        }
        Ok(hdr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_are_routed_by_destination_and_accepted_by_source() {
        let mut t = RouteTable::default();
        t.insert("10.1.0.0/16".parse().unwrap(), PeerId(1));
        t.insert("10.2.0.0/16".parse().unwrap(), PeerId(2));
        let pkt = |src: [u8; 4], dst: [u8; 4]| {
            let mut p = vec![0u8; 28];
            wire::emit_ipv4_header(&mut p, src.into(), dst.into(), 17, 8, 1, false);
            p.extend_from_slice(&[0xee; 4]); // bytes past the total length
            p
        };
        let p = pkt([10, 1, 0, 5], [10, 2, 0, 7]);
        let (id, hdr, trimmed) = t.outbound(&p).unwrap();
        assert_eq!((id, hdr.total_len, trimmed.len()), (PeerId(2), 28, 28));
        assert!(matches!(
            t.outbound(&pkt([10, 1, 0, 5], [10, 3, 0, 7])),
            Err(DropReason::NoRoute)
        ));
        assert!(matches!(t.outbound(&[0x45, 0]), Err(DropReason::NotIp(_))));
        assert!(t.inbound(PeerId(1), &p).is_ok());
        assert!(matches!(
            t.inbound(PeerId(2), &p),
            Err(DropReason::SourceNotAllowed)
        ));
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = RouteTable::default();
        t.insert("10.0.0.0/8".parse().unwrap(), PeerId(0));
        t.insert("10.1.2.0/24".parse().unwrap(), PeerId(1));
        t.insert("10.1.0.0/16".parse().unwrap(), PeerId(2));
        assert_eq!(t.lookup("10.1.2.3".parse().unwrap()), Some(PeerId(1)));
        assert_eq!(t.lookup("10.1.3.3".parse().unwrap()), Some(PeerId(2)));
        assert_eq!(t.lookup("10.9.9.9".parse().unwrap()), Some(PeerId(0)));
        assert_eq!(t.lookup("11.0.0.1".parse().unwrap()), None);
        assert_eq!(t.lookup("::1".parse().unwrap()), None);
    }

    #[test]
    fn ipv6_longest_prefix_wins_and_families_stay_apart() {
        let mut t = RouteTable::default();
        t.insert("::/0".parse().unwrap(), PeerId(0));
        t.insert("fd00:6b::2/128".parse().unwrap(), PeerId(1));
        t.insert("fd00:77::/64".parse().unwrap(), PeerId(2));
        assert_eq!(t.lookup("fd00:6b::2".parse().unwrap()), Some(PeerId(1)));
        assert_eq!(t.lookup("fd00:77::9".parse().unwrap()), Some(PeerId(2)));
        assert_eq!(t.lookup("2001:db8::1".parse().unwrap()), Some(PeerId(0)));
        // ::/0 is no IPv4 default route.
        assert_eq!(t.lookup("192.0.2.1".parse().unwrap()), None);
    }
}
