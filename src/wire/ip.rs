//! Just enough of the inner IP header for cryptokey routing: version,
//! source, destination and total length (to strip transport padding); and
//! the one IP packet kith writes itself, the ICMP "too big" error that
//! tells a sender its packets do not fit a relayed path ([`too_big`]),
//! with the header builder and checksum the lab and tests use too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IpError {
    #[error("packet of {len} bytes is too short for an IPv{version} header")]
    TooShort { version: u8, len: usize },
    #[error("IP version {0} is neither 4 nor 6")]
    Version(u8),
    #[error("header claims {claimed} bytes but only {have} arrived")]
    Truncated { claimed: usize, have: usize },
}

/// Addresses and length of an inner IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpHeader {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Total length from the header; bytes past it are padding.
    pub total_len: usize,
}

/// Parse the header of an IPv4 or IPv6 packet.
pub fn parse_ip(p: &[u8]) -> Result<IpHeader, IpError> {
    let version = p.first().map(|b| b >> 4).unwrap_or(0);
    match version {
        4 => {
            if p.len() < 20 {
                return Err(IpError::TooShort {
                    version,
                    len: p.len(),
                });
            }
            let total_len = usize::from(u16::from_be_bytes([p[2], p[3]]));
            if total_len > p.len() || total_len < 20 {
                return Err(IpError::Truncated {
                    claimed: total_len,
                    have: p.len(),
                });
            }
            Ok(IpHeader {
                src: IpAddr::V4(Ipv4Addr::new(p[12], p[13], p[14], p[15])),
                dst: IpAddr::V4(Ipv4Addr::new(p[16], p[17], p[18], p[19])),
                total_len,
            })
        }
        6 => {
            if p.len() < 40 {
                return Err(IpError::TooShort {
                    version,
                    len: p.len(),
                });
            }
            let total_len = 40 + usize::from(u16::from_be_bytes([p[4], p[5]]));
            if total_len > p.len() {
                return Err(IpError::Truncated {
                    claimed: total_len,
                    have: p.len(),
                });
            }
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&p[8..24]);
            d.copy_from_slice(&p[24..40]);
            Ok(IpHeader {
                src: IpAddr::V6(Ipv6Addr::from(s)),
                dst: IpAddr::V6(Ipv6Addr::from(d)),
                total_len,
            })
        }
        v => Err(IpError::Version(v)),
    }
}

pub const IPV4_HEADER_LEN: usize = 20;
pub const IPV6_HEADER_LEN: usize = 40;
const ICMP_HEADER_LEN: usize = 8;
const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;
/// An ICMPv4 error quotes at most this much of the packet (RFC 1812
/// §4.3.2.3: the error is at most 576 bytes).
const ICMPV4_MAX_ERROR: usize = 576;
/// An ICMPv6 error fits the minimum IPv6 MTU (RFC 4443 §2.4).
const ICMPV6_MAX_ERROR: usize = 1280;

/// The Internet checksum (RFC 1071) of `data`, continuing from `sum` (a
/// pseudo-header's [`sum_words`]).
pub fn checksum(data: &[u8], sum: u32) -> u16 {
    // Already folded to 16 bits.
    !(sum_words(data, sum) as u16)
}

/// `data`'s 16-bit big-endian words added to `sum` (an odd last byte is
/// padded with zero), in one's complement: the result is at most 0xffff,
/// so callers may add small terms (a length, a protocol) before folding.
pub fn sum_words(data: &[u8], sum: u32) -> u32 {
    // The GRO path sums every merged segment, so this is on the data path:
    // eight bytes at a time, read little-endian (no byte swaps, and the
    // compiler vectorises it: ~45 ns per 1440 bytes against ~245 for
    // big-endian words). The one's complement sum does not depend on byte
    // order (RFC 1071 §2.B): the little-endian sum, byte-swapped, is the
    // big-endian one. Two 32-bit halves per word into 64-bit lanes cannot
    // overflow before 2^32 words.
    let (mut lo, mut hi) = (0u64, 0u64);
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let v = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        lo += v & 0xffff_ffff;
        hi += v >> 32;
    }
    let mut acc = lo + hi;
    for pair in words.remainder().chunks(2) {
        acc += u64::from(u16::from_le_bytes([
            pair[0],
            pair.get(1).copied().unwrap_or(0),
        ]));
    }
    let swapped = u64::from(fold16(acc).swap_bytes());
    u32::from(fold16(swapped + u64::from(sum)))
}

/// The pseudo-header's sum (RFC 768, RFC 793, RFC 8200 §8.1: source and
/// destination address, protocol, length) for `len` bytes of `proto` in IP
/// packet `packet`, whose header gives the addresses: what [`checksum`]
/// continues from for a UDP, TCP or ICMPv6 checksum.
pub fn pseudo_sum(packet: &[u8], proto: u8, len: usize) -> u32 {
    let addrs = if packet[0] >> 4 == 6 {
        &packet[8..40]
    } else {
        &packet[12..20]
    };
    sum_words(addrs, u32::from(proto) + len as u32)
}

/// `sum` folded to 16 bits with end-around carries.
fn fold16(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Writes into `out[..20]` an IPv4 header (no options, TTL 64, checksum
/// filled in) for `payload_len` bytes of `protocol`. `out` must hold 20.
pub fn emit_ipv4_header(
    out: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    payload_len: usize,
    id: u16,
    dont_fragment: bool,
) {
    let h = &mut out[..IPV4_HEADER_LEN];
    h.fill(0);
    h[0] = 0x45;
    h[2..4].copy_from_slice(&((IPV4_HEADER_LEN + payload_len) as u16).to_be_bytes());
    h[4..6].copy_from_slice(&id.to_be_bytes());
    if dont_fragment {
        h[6] = 0x40;
    }
    h[8] = 64;
    h[9] = protocol;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let sum = checksum(h, 0);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
}

/// A whole IPv4 packet of `protocol` around `payload` (as is: no
/// transport header is added), for tests, fuzz checks and the lab.
pub fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; IPV4_HEADER_LEN];
    emit_ipv4_header(&mut p, src, dst, protocol, payload.len(), 0, false);
    p.extend_from_slice(payload);
    p
}

/// A whole TCP or UDP packet (`proto` 6 or 17) around `payload`, IPv4
/// from 100.64.0.1 to 100.64.0.2 (TTL 64, DF) or IPv6 from fd6b::1 to
/// fd6b::2 (hop limit 64), from port `sport` to 49153; TCP with `seq`,
/// ACK number 7777, `flags` and window 512. Checksums filled in. For
/// tests and fuzz checks.
pub fn transport_packet(
    v6: bool,
    proto: u8,
    sport: u16,
    seq: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut t = vec![0u8; if proto == 6 { 20 } else { 8 }];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&49153u16.to_be_bytes());
    let at = if proto == 6 {
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&7777u32.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&512u16.to_be_bytes());
        16
    } else {
        t[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        6
    };
    t.extend_from_slice(payload);
    let mut p = if v6 {
        let ula = |n: u8| [0xfd, 0x6b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n];
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(t.len() as u16).to_be_bytes());
        p.extend_from_slice(&[proto, 64]);
        p.extend_from_slice(&[ula(1), ula(2)].concat());
        p
    } else {
        let mut p = vec![0u8; IPV4_HEADER_LEN];
        let (src, dst) = (Ipv4Addr::new(100, 64, 0, 1), Ipv4Addr::new(100, 64, 0, 2));
        emit_ipv4_header(&mut p, src, dst, proto, t.len(), 1, true);
        p
    };
    let iph = p.len();
    p.extend_from_slice(&t);
    let sum = checksum(&p[iph..], pseudo_sum(&p, proto, t.len()));
    p[iph + at..iph + at + 2].copy_from_slice(&sum.to_be_bytes());
    p
}

/// The ICMP error that tells the sender of `packet` (a valid IP packet,
/// its header `hdr`) that the path takes at most `mtu` bytes: IPv4
/// "fragmentation needed" or ICMPv6 "packet too big", from the packet's
/// destination to its source, quoting its start; written into `out`,
/// whose length it returns. `None` when the packet must not get one: an
/// IPv4 packet without Don't Fragment (the underlay may fragment it), a
/// fragment past the first, an ICMP error itself (never an error about an
/// error), an IPv6 `mtu` below 1280 (the minimum: the sender would ignore
/// it), or too little room in `out`. The sender's kernel lowers its
/// path MTU to that peer, and TCP its segment size, as for any router.
pub fn too_big(packet: &[u8], hdr: &IpHeader, mtu: usize, out: &mut [u8]) -> Option<usize> {
    let packet = packet.get(..hdr.total_len)?;
    let mtu = u16::try_from(mtu).ok()?;
    match (hdr.src, hdr.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let flags = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]);
            let (df, offset) = (flags & 0x4000 != 0, flags & 0x1fff);
            let ihl = usize::from(packet.first()? & 0x0f) * 4;
            let is_icmp_error = packet.get(9) == Some(&PROTO_ICMP)
                && !matches!(packet.get(ihl), Some(0 | 8 | 13 | 14 | 15 | 16));
            if !df || offset != 0 || is_icmp_error {
                return None;
            }
            let quote = packet
                .len()
                .min(ICMPV4_MAX_ERROR - IPV4_HEADER_LEN - ICMP_HEADER_LEN);
            let icmp_len = ICMP_HEADER_LEN + quote;
            let out = out.get_mut(..IPV4_HEADER_LEN + icmp_len)?;
            emit_ipv4_header(out, dst, src, PROTO_ICMP, icmp_len, 0, false);
            let icmp = &mut out[IPV4_HEADER_LEN..];
            icmp[..ICMP_HEADER_LEN].copy_from_slice(&[3, 4, 0, 0, 0, 0, 0, 0]);
            icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
            icmp[ICMP_HEADER_LEN..].copy_from_slice(&packet[..quote]);
            let sum = checksum(icmp, 0);
            icmp[2..4].copy_from_slice(&sum.to_be_bytes());
            Some(IPV4_HEADER_LEN + icmp_len)
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            // Only the first header is looked at: an error behind extension
            // headers is rare enough to answer (the sender's stack drops an
            // error about an error).
            let is_icmp_error = packet.get(6) == Some(&PROTO_ICMPV6)
                && packet.get(IPV6_HEADER_LEN).is_some_and(|t| *t < 128);
            // IPv6 paths never go below 1280 (RFC 8200 §5): a smaller
            // "too big" would be ignored and the packet lost for good, so
            // it goes as it is and the underlay fragments it.
            if is_icmp_error || usize::from(mtu) < ICMPV6_MAX_ERROR {
                return None;
            }
            let quote = packet
                .len()
                .min(ICMPV6_MAX_ERROR - IPV6_HEADER_LEN - ICMP_HEADER_LEN);
            let icmp_len = ICMP_HEADER_LEN + quote;
            let out = out.get_mut(..IPV6_HEADER_LEN + icmp_len)?;
            out[..IPV6_HEADER_LEN].fill(0);
            out[0] = 0x60;
            out[4..6].copy_from_slice(&(icmp_len as u16).to_be_bytes());
            out[6] = PROTO_ICMPV6;
            out[7] = 64;
            out[8..24].copy_from_slice(&dst.octets());
            out[24..40].copy_from_slice(&src.octets());
            let (head, icmp) = out.split_at_mut(IPV6_HEADER_LEN);
            icmp[..ICMP_HEADER_LEN].copy_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
            icmp[4..8].copy_from_slice(&u32::from(mtu).to_be_bytes());
            icmp[ICMP_HEADER_LEN..].copy_from_slice(&packet[..quote]);
            // RFC 4443 §2.3: over the pseudo-header (addresses, length,
            // next header) and the message.
            let sum = checksum(icmp, pseudo_sum(head, PROTO_ICMPV6, icmp_len));
            icmp[2..4].copy_from_slice(&sum.to_be_bytes());
            Some(IPV6_HEADER_LEN + icmp_len)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_words_is_the_word_at_a_time_sum() {
        // RFC 1071's definition, 16 bits at a time, big-endian.
        let reference = |data: &[u8], init: u32| {
            let mut sum = u64::from(init);
            for pair in data.chunks(2) {
                sum += u64::from(u16::from_be_bytes([
                    pair[0],
                    pair.get(1).copied().unwrap_or(0),
                ]));
            }
            fold16(sum)
        };
        let mut x = 0x1234_5678_u32;
        let mut random = |len: usize| -> Vec<u8> {
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect()
        };
        for len in (0..20).chain([63, 64, 65, 1419, 1420, 65_535]) {
            for data in [random(len), vec![0; len], vec![0xff; len]] {
                for init in [0u32, 1, 0xfffe, 0xffff, 0x3_0000] {
                    assert_eq!(
                        fold16(u64::from(sum_words(&data, init))),
                        reference(&data, init),
                        "len {len}, init {init:#x}, {:?}",
                        &data[..len.min(8)]
                    );
                }
            }
        }
    }

    #[test]
    fn parses_v4_and_ignores_padding() {
        let mut p = vec![0u8; 32];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[12..16].copy_from_slice(&[100, 96, 0, 1]);
        p[16..20].copy_from_slice(&[100, 96, 0, 2]);
        let h = parse_ip(&p).unwrap();
        assert_eq!(h.src, "100.96.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(h.dst, "100.96.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(h.total_len, 28);
    }

    #[test]
    fn rejects_short_and_lying_headers() {
        assert_eq!(parse_ip(&[]), Err(IpError::Version(0)));
        assert_eq!(
            parse_ip(&[0x45; 10]),
            Err(IpError::TooShort {
                version: 4,
                len: 10
            })
        );
        let mut p = vec![0u8; 20];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(
            parse_ip(&p),
            Err(IpError::Truncated {
                claimed: 100,
                have: 20
            })
        );
        let mut v6 = vec![0u8; 40];
        v6[0] = 0x60;
        v6[4..6].copy_from_slice(&1u16.to_be_bytes());
        assert_eq!(
            parse_ip(&v6),
            Err(IpError::Truncated {
                claimed: 41,
                have: 40
            })
        );
    }

    fn tcp_v4(df: bool, len: usize) -> Vec<u8> {
        let mut p = vec![0xab; len];
        emit_ipv4_header(
            &mut p,
            Ipv4Addr::new(100, 64, 0, 1),
            Ipv4Addr::new(100, 64, 0, 2),
            6,
            len - IPV4_HEADER_LEN,
            7,
            df,
        );
        p
    }

    #[test]
    fn too_big_answers_a_df_packet_with_fragmentation_needed() {
        let p = tcp_v4(true, 1420);
        assert_eq!(checksum(&p[..20], 0), 0, "the header builder's checksum");
        let hdr = parse_ip(&p).unwrap();
        let mut out = vec![0u8; 2000];
        let n = too_big(&p, &hdr, 1353, &mut out).expect("an error for a DF packet");
        let r = &out[..n];
        assert_eq!(n, 576, "at most 576 bytes (RFC 1812)");
        let h = parse_ip(r).unwrap();
        assert_eq!((h.src, h.dst, h.total_len), (hdr.dst, hdr.src, n));
        assert_eq!(r[9], PROTO_ICMP);
        assert_eq!(checksum(&r[..20], 0), 0);
        let icmp = &r[20..];
        assert_eq!(
            (icmp[0], icmp[1]),
            (3, 4),
            "destination unreachable, fragmentation needed"
        );
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1353);
        assert_eq!(checksum(icmp, 0), 0);
        assert_eq!(icmp[8..], p[..n - 28], "quotes the packet's start");
    }

    #[test]
    fn too_big_leaves_fragmentable_packets_and_errors_alone() {
        let mut out = vec![0u8; 2000];
        let p = tcp_v4(false, 1420);
        assert_eq!(too_big(&p, &parse_ip(&p).unwrap(), 1353, &mut out), None);
        // An ICMP error (destination unreachable) with DF: no error about it.
        let mut e = tcp_v4(true, 100);
        e[9] = PROTO_ICMP;
        e[20] = 3;
        assert_eq!(too_big(&e, &parse_ip(&e).unwrap(), 1353, &mut out), None);
        // An echo request is a query, not an error: it gets one.
        e[20] = 8;
        assert!(too_big(&e, &parse_ip(&e).unwrap(), 1353, &mut out).is_some());
        // No room: no reply, no panic.
        let p = tcp_v4(true, 1420);
        assert_eq!(
            too_big(&p, &parse_ip(&p).unwrap(), 1353, &mut out[..100]),
            None
        );
    }

    #[test]
    fn too_big_answers_ipv6_with_packet_too_big() {
        let (src, dst) = (
            "fd00::1".parse::<Ipv6Addr>().unwrap(),
            "fd00::2".parse::<Ipv6Addr>().unwrap(),
        );
        let mut p = vec![0x5a; 1400];
        p[..40].fill(0);
        p[0] = 0x60;
        p[4..6].copy_from_slice(&1360u16.to_be_bytes());
        p[6] = 6;
        p[8..24].copy_from_slice(&src.octets());
        p[24..40].copy_from_slice(&dst.octets());
        let hdr = parse_ip(&p).unwrap();
        let mut out = vec![0u8; 2000];
        let n = too_big(&p, &hdr, 1333, &mut out).unwrap();
        assert_eq!(n, 1280, "fits the minimum IPv6 MTU");
        let r = &out[..n];
        let h = parse_ip(r).unwrap();
        assert_eq!((h.src, h.dst, h.total_len), (hdr.dst, hdr.src, n));
        let icmp = &r[40..];
        assert_eq!((icmp[0], icmp[1]), (2, 0), "packet too big");
        assert_eq!(
            u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]),
            1333
        );
        let pseudo = sum_words(&r[8..40], 0) + icmp.len() as u32 + 58;
        assert_eq!(checksum(icmp, pseudo), 0, "checksum over the pseudo-header");
        // Below the IPv6 minimum MTU there is nothing a sender could do.
        assert_eq!(too_big(&p, &hdr, 1279, &mut out), None);
        // An ICMPv6 error is never answered.
        p[6] = PROTO_ICMPV6;
        p[40] = 1;
        assert_eq!(too_big(&p, &parse_ip(&p).unwrap(), 1333, &mut out), None);
    }

    proptest::proptest! {
        #[test]
        fn too_big_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..1600), mtu in 0usize..70_000) {
            if let Ok(hdr) = parse_ip(&bytes) {
                let mut out = vec![0u8; 1600];
                let _ = too_big(&bytes, &hdr, mtu, &mut out);
            }
        }
    }
}
