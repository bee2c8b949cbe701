use super::*;
use crate::wire::{parse_ip, pseudo_sum, sum_words, transport_packet, vnet::write_vnet_header};

const MAX: usize = 128;

/// A request for `gso`-byte segments of a TCP or UDP packet carrying
/// `payload`.
fn request(v6: bool, proto: u8, flags: u8, payload: &[u8], gso: usize) -> Vec<u8> {
    let p = transport_packet(v6, proto, 5001, 1_000_000, flags, payload);
    let gso_type = match (proto, v6) {
        (TCP, false) => VNET_GSO_TCPV4,
        (TCP, true) => VNET_GSO_TCPV6,
        _ => VNET_GSO_UDP_L4,
    };
    super::request(&p, gso_type, gso).unwrap()
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn segments(read: &[u8]) -> Vec<Vec<u8>> {
    let tso = Tso::parse(read, true, MAX).expect("plan");
    (0..tso.segments())
        .map(|i| {
            let mut out = vec![0xaa; 70_000];
            let n = tso.write(read, i, &mut out).expect("segment");
            out.truncate(n);
            out
        })
        .collect()
}

/// Each segment is a packet the receiving host takes as it is: lengths
/// and checksums right (IPv4 header, transport over the pseudo-header),
/// and together they carry the payload in order, TCP with consecutive
/// sequence numbers.
fn check(segs: &[Vec<u8>], payload: &[u8]) {
    let mut carried = Vec::new();
    let mut seq = None;
    for s in segs {
        let h = parse_ip(s).expect("an IP packet");
        assert_eq!(h.total_len, s.len());
        let (iph, l4h, proto) = crate::wire::gro::layout(s).expect("TCP or UDP");
        if iph == 20 {
            assert_eq!(checksum(&s[..20], 0), 0, "IPv4 header checksum");
        }
        let l4 = &s[iph..];
        assert_eq!(
            checksum(l4, pseudo_sum(s, proto, l4.len())),
            0,
            "transport checksum"
        );
        if proto == TCP {
            let this = u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]);
            if let Some(want) = seq {
                assert_eq!(this, want, "sequence numbers");
            }
            seq = Some(this.wrapping_add((l4.len() - l4h) as u32));
        } else {
            assert_eq!(usize::from(u16::from_be_bytes([l4[4], l4[5]])), l4.len());
        }
        carried.extend_from_slice(&l4[l4h..]);
    }
    assert_eq!(carried, payload, "payload lost, reordered or made up");
}

#[test]
fn a_tcp_request_becomes_segments_the_receiver_takes() {
    for v6 in [false, true] {
        let data = payload(10 * 1380 + 7);
        let read = request(v6, TCP, 0x18 | TCP_FIN, &data, 1380);
        let segs = segments(&read);
        assert_eq!(segs.len(), 11);
        assert!(
            segs[..10]
                .iter()
                .all(|s| s.len() == 1380 + 20 + if v6 { 40 } else { 20 })
        );
        check(&segs, &data);
        let flags = |s: &Vec<u8>| s[if v6 { 40 } else { 20 } + 13];
        // FIN and PSH only on the last segment.
        assert!(segs[..10].iter().all(|s| flags(s) == 0x10));
        assert_eq!(flags(&segs[10]), 0x18 | TCP_FIN);
        if !v6 {
            let ids: Vec<u16> = segs
                .iter()
                .map(|s| u16::from_be_bytes([s[4], s[5]]))
                .collect();
            assert!(
                ids.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
                "{ids:?}"
            );
        }
    }
}

#[test]
fn cwr_stays_on_the_first_segment_of_an_ecn_request() {
    let data = payload(3000);
    let mut read = request(false, TCP, 0x10 | TCP_CWR, &data, 1000);
    read[1] |= VNET_GSO_ECN;
    let segs = segments(&read);
    assert_eq!(segs.len(), 3);
    assert_eq!(segs[0][33], 0x10 | TCP_CWR);
    assert!(segs[1..].iter().all(|s| s[33] == 0x10));
    check(&segs, &data);
}

#[test]
fn a_udp_request_becomes_datagrams_with_their_own_lengths() {
    for v6 in [false, true] {
        let data = payload(5 * 1200 + 1);
        let segs = segments(&request(v6, UDP, 0, &data, 1200));
        assert_eq!(segs.len(), 6);
        check(&segs, &data);
    }
}

/// tun-rs's segmentation (which the data plane used before, wireguard-go's
/// port) as the oracle: the same bytes, header fields and checksums.
#[test]
fn segments_are_the_bytes_tun_rs_makes() {
    let cases = [
        (false, TCP, 0x18, 64_000, 1448),
        (false, TCP, 0x10 | TCP_FIN, 5000, 1380),
        (true, TCP, 0x18, 30_000, 1360),
        (false, UDP, 0, 9000, 1400),
        (true, UDP, 0, 4001, 1000),
        (false, TCP, 0x10, 1380, 1380),
    ];
    for (v6, proto, flags, n, gso) in cases {
        let read = request(v6, proto, flags, &payload(n), gso);
        let ours = segments(&read);
        let (_, gso_type, hdr_len, gso_size, start, offset) = vnet_header(&read).unwrap();
        let hdr = tun_rs::VirtioNetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type,
            hdr_len,
            gso_size,
            csum_start: start,
            csum_offset: offset,
        };
        let mut input = read[VNET_HDR_LEN..].to_vec();
        let mut bufs = vec![vec![0u8; 70_000]; MAX];
        let mut sizes = vec![0; MAX];
        let k = tun_rs::gso_split(&mut input, hdr, &mut bufs, &mut sizes, 0, v6).unwrap();
        assert_eq!(k, ours.len(), "{v6} {proto} {n}");
        for (i, s) in ours.iter().enumerate() {
            assert_eq!(
                s[..],
                bufs[i][..sizes[i]],
                "segment {i} of {v6} {proto} {n}"
            );
        }
    }
}

#[test]
fn tcp_options_and_ipv4_options_are_carried_on_every_segment() {
    // A 32-byte TCP header (timestamps) behind a 24-byte IPv4 header.
    let data = payload(4000);
    let mut p = transport_packet(false, TCP, 5001, 7, 0x18, &[]);
    p.truncate(40);
    p[32] = 0x80; // data offset 8 words
    p.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3]);
    p.splice(20..20, [1, 1, 1, 0]); // IPv4 options: NOPs, end
    p[0] = 0x46;
    p.extend_from_slice(&data);
    let len = p.len() as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    let partial = pseudo_sum(&p, TCP, p.len() - 24) as u16;
    p[40..42].copy_from_slice(&partial.to_be_bytes());
    let mut read = vec![0; VNET_HDR_LEN];
    write_vnet_header(
        &mut read,
        VNET_F_NEEDS_CSUM,
        VNET_GSO_TCPV4,
        [56, 1000, 24, 16],
    );
    read.extend_from_slice(&p);
    let segs = segments(&read);
    assert_eq!(segs.len(), 4);
    for s in &segs {
        assert_eq!(s[20..24], [1, 1, 1, 0]);
        assert_eq!(s[24 + 20..24 + 32], p[44..56]);
        assert_eq!(checksum(&s[..24], 0), 0);
        let l4 = &s[24..];
        assert_eq!(checksum(l4, pseudo_sum(s, TCP, l4.len())), 0);
    }
    let carried: Vec<u8> = segs.iter().flat_map(|s| s[56..].to_vec()).collect();
    assert_eq!(carried, data);
}

/// An IPv6 request with extension headers: a hop-by-hop header (8 bytes)
/// and a routing header (type 2, Mobile IPv6: 24 bytes) whose address is
/// the final destination. The kernel summed that address into the
/// pseudo-header, so every segment must verify against it, not against
/// the IPv6 header's destination.
#[test]
fn ipv6_extension_headers_are_carried_and_the_senders_pseudo_header_kept() {
    let data = payload(3500);
    let base = transport_packet(true, TCP, 5001, 99, 0x18, &data);
    let home: [u8; 16] = [0xfd, 0x6b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x77];
    let mut ext = vec![43, 0, 1, 4, 0, 0, 0, 0]; // hop-by-hop: next routing, PadN
    ext.extend_from_slice(&[6, 2, 2, 1, 0, 0, 0, 0]); // routing type 2, 1 left
    ext.extend_from_slice(&home);
    let mut p = base[..40].to_vec();
    p[6] = 0; // next header: hop-by-hop
    p.extend_from_slice(&ext);
    p.extend_from_slice(&base[40..]);
    let iph = 40 + ext.len();
    let l4_len = p.len() - iph;
    let ip_payload = (p.len() - 40) as u16;
    p[4..6].copy_from_slice(&ip_payload.to_be_bytes());
    // The sender's pseudo-header: source, the routing header's address.
    let src: [u8; 16] = p[8..24].try_into().unwrap();
    let pseudo_of =
        move |len: usize| sum_words(&src, sum_words(&home, u32::from(TCP) + len as u32));
    let partial = pseudo_of(l4_len) as u16;
    p[iph + 16..iph + 18].copy_from_slice(&partial.to_be_bytes());
    let mut read = vec![0; VNET_HDR_LEN];
    write_vnet_header(
        &mut read,
        VNET_F_NEEDS_CSUM,
        VNET_GSO_TCPV6,
        [iph + 20, 1200, iph, 16],
    );
    read.extend_from_slice(&p);
    let segs = segments(&read);
    assert_eq!(segs.len(), 3);
    let mut carried = Vec::new();
    for s in &segs {
        assert_eq!(s[40..iph], ext[..], "extension headers");
        assert_eq!(usize::from(u16::from_be_bytes([s[4], s[5]])), s.len() - 40);
        let l4 = &s[iph..];
        assert_eq!(
            checksum(l4, pseudo_of(l4.len())),
            0,
            "checksum against the final destination"
        );
        carried.extend_from_slice(&l4[20..]);
    }
    assert_eq!(carried, data);
}

/// A forwarded request the kernel took as checked (`DATA_VALID`): the
/// field holds the whole packet's checksum, not a pseudo-header sum, and
/// each segment's is summed from its addresses, as the kernel would.
#[test]
fn a_request_taken_as_checked_gets_checksums_from_its_addresses() {
    for (v6, proto) in [(false, TCP), (true, TCP), (false, UDP), (true, UDP)] {
        let data = payload(4321);
        let mut read = request(v6, proto, 0x18, &data, 1000);
        read[0] = crate::wire::vnet::VNET_F_DATA_VALID;
        let whole = transport_packet(v6, proto, 5001, 1_000_000, 0x18, &data);
        let field = if v6 { 40 } else { 20 } + csum_at(proto);
        read[VNET_HDR_LEN + field..][..2].copy_from_slice(&whole[field..field + 2]);
        let segs = segments(&read);
        assert_eq!(segs.len(), 5);
        check(&segs, &data);
    }
}

#[test]
fn a_request_longer_than_the_length_fields_hold_is_refused() {
    let mut read = request(true, TCP, 0x10, &payload(60_000), 1000);
    read.extend_from_slice(&payload(6000));
    assert!(matches!(
        Tso::parse(&read, true, 4096),
        Err(TsoError::TooLong { .. })
    ));
}

#[test]
fn a_packet_with_its_checksum_left_to_us_gets_the_right_one() {
    for (v6, proto) in [(false, TCP), (true, TCP), (false, UDP), (true, UDP)] {
        let whole = transport_packet(v6, proto, 5001, 1_000_000, 0x18, &payload(333));
        let mut read = request(v6, proto, 0x18, &payload(333), 1000);
        read[1] = VNET_GSO_NONE;
        let tso = Tso::parse(&read, true, MAX).unwrap();
        assert_eq!(tso.segments(), 1);
        let mut out = vec![0; 2000];
        let n = tso.write(&read, 0, &mut out).unwrap();
        let at = if v6 { 40 } else { 20 } + if proto == TCP { 16 } else { 6 };
        assert_ne!(read[VNET_HDR_LEN + at..][..2], whole[at..at + 2]);
        assert_eq!(out[..n], whole[..], "{v6} {proto}");
    }
}

#[test]
fn a_plain_read_is_one_packet_as_it_is() {
    let p = transport_packet(false, UDP, 1, 0, 0, b"hello");
    let mut read = vec![0; VNET_HDR_LEN];
    read.extend_from_slice(&p);
    for (buf, vnet) in [(&p, false), (&read, true)] {
        let tso = Tso::parse(buf, vnet, MAX).unwrap();
        assert_eq!(tso.segments(), 1);
        let mut out = vec![0; 100];
        let n = tso.write(buf, 0, &mut out).unwrap();
        assert_eq!(out[..n], p[..]);
    }
}

#[test]
fn bad_requests_are_errors() {
    let ok = request(false, TCP, 0x10, &payload(3000), 1000);
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut r = ok.clone();
        f(&mut r);
        Tso::parse(&r, true, MAX)
    };
    assert!(matches!(
        Tso::parse(&ok[..4], true, MAX),
        Err(TsoError::Short(4))
    ));
    assert!(matches!(
        Tso::parse(&ok[..10], true, MAX),
        Err(TsoError::Short(10))
    ));
    assert!(matches!(with(&|r| r[1] = 9), Err(TsoError::GsoType(9))));
    assert!(matches!(
        with(&|r| r[1] = VNET_GSO_TCPV6),
        Err(TsoError::Version { .. })
    ));
    assert!(matches!(
        with(&|r| r[1] = VNET_GSO_UDP_L4 | VNET_GSO_ECN),
        Err(TsoError::UdpEcn)
    ));
    assert!(matches!(
        with(&|r| r[4..6].fill(0)),
        Err(TsoError::ZeroSize)
    ));
    // Checksum start past the IP header IHL gives, a wrong offset, a TCP
    // header shorter than 20 bytes, headers only.
    assert!(matches!(
        with(&|r| r[6] = 24),
        Err(TsoError::Headers { .. })
    ));
    assert!(matches!(with(&|r| r[8] = 6), Err(TsoError::Headers { .. })));
    assert!(matches!(
        with(&|r| r[10 + 32] = 0x40),
        Err(TsoError::Headers { .. })
    ));
    assert!(matches!(
        with(&|r| r.truncate(50)),
        Err(TsoError::Headers { .. })
    ));
    assert!(matches!(
        Tso::parse(&ok, true, 2),
        Err(TsoError::TooMany {
            segments: 3,
            max: 2
        })
    ));
    let mut none = ok.clone();
    none[1] = VNET_GSO_NONE;
    none[6..8].copy_from_slice(&3030u16.to_ne_bytes());
    assert!(matches!(
        Tso::parse(&none, true, MAX),
        Err(TsoError::Checksum { .. })
    ));

    let tso = Tso::parse(&ok, true, MAX).unwrap();
    let mut small = [0; 1000];
    assert!(matches!(
        tso.write(&ok, 0, &mut small),
        Err(TsoError::Room { len: 1040, .. })
    ));
    let mut out = vec![0; 2000];
    assert_eq!(tso.write(&ok, 3, &mut out), Err(TsoError::Read));
    assert_eq!(tso.write(&ok[..100], 0, &mut out), Err(TsoError::Read));
}

proptest::proptest! {
    /// Whatever the header and bytes, a plan is an error or segments that
    /// are written without a panic, each within the room given.
    #[test]
    fn any_read_plans_and_writes_without_panicking(
        read in proptest::collection::vec(proptest::num::u8::ANY, 0..3000),
        vnet: bool,
        room in 0usize..2000,
    ) {
        if let Ok(tso) = Tso::parse(&read, vnet, MAX) {
            let mut out = vec![0; room];
            for i in 0..tso.segments() {
                if let Ok(n) = tso.write(&read, i, &mut out) {
                    proptest::prop_assert!(n <= room);
                }
            }
        }
    }
}
