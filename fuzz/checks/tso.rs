//! `kith::wire::tso::Tso` on one TUN read, built from the input: either
//! raw bytes (a header and packet as they come) or a segmentation request
//! made from a few parameters, so most inputs pass the header checks and
//! the segmentation itself is exercised, then possibly damaged.
//!
//! The first byte: bit 0 the read carries a virtio-net header; bit 1 a
//! request is made (else the rest is the read). A request: a byte of kind
//! (bit 0 IPv6, bit 1 UDP, bit 2 ECN, bit 3 no segmentation, only the
//! checksum left, bit 4 FIN, bit 5 PSH, bit 6 CWR, bit 7 taken as checked:
//! `DATA_VALID` and a whole checksum in the field), two bytes payload
//! length, two bytes GSO size, then (position, xor) pairs that damage the
//! read, header included.
//!
//! Invariant: planning and writing never panic; a plan's every packet is
//! written into enough room, and: without a header, the read as it is;
//! with one and no segmentation, the packet with (if it was left to us) a
//! transport checksum that verifies; segmented, as many packets as the GSO
//! size makes, whose IP lengths, IPv4 IDs and header checksums are right,
//! whose other header bytes are the request's, whose transport checksums
//! verify (over the request's pseudo-header sum when it left one; over the
//! addresses for an undamaged request or one taken as checked), whose
//! payloads are the request's in order,
//! TCP with consecutive sequence numbers, FIN and PSH on the last segment
//! only and CWR on the first only.

use kith::wire::tso::{Tso, request};
use kith::wire::vnet::{
    VNET_F_DATA_VALID, VNET_F_NEEDS_CSUM, VNET_GSO_ECN, VNET_GSO_NONE, VNET_GSO_TCPV4,
    VNET_GSO_TCPV6, VNET_GSO_UDP_L4, VNET_HDR_LEN, vnet_header,
};
use kith::wire::{checksum, pseudo_sum, transport_packet};

const MAX_SEGMENTS: usize = 2048;
const ROOM: usize = 70_000;

pub fn run(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let vnet = first & 1 != 0;
    // Whether the read is a request as the kernel makes them, undamaged.
    let (read, pristine) = if first & 2 != 0 {
        match made(rest, vnet) {
            Some(r) => r,
            None => return,
        }
    } else {
        (rest.to_vec(), false)
    };
    let Ok(tso) = Tso::parse(&read, vnet, MAX_SEGMENTS) else {
        return;
    };
    let mut out = vec![0u8; ROOM];
    let packets: Vec<Vec<u8>> = (0..tso.segments())
        .map(|i| {
            let n = tso
                .write(&read, i, &mut out)
                .unwrap_or_else(|e| panic!("packet {i} of a plan not written: {e}"));
            out[..n].to_vec()
        })
        .collect();
    if !vnet {
        assert_eq!(packets, [read], "a read without a header changed");
        return;
    }
    let (flags, gso_type, _, gso_size, start, offset) = vnet_header(&read).unwrap();
    let p = &read[VNET_HDR_LEN..];
    let (start, offset) = (usize::from(start), usize::from(offset));
    if gso_type == VNET_GSO_NONE {
        assert_eq!(packets.len(), 1);
        let got = &packets[0];
        assert_eq!(got.len(), p.len());
        if flags & VNET_F_NEEDS_CSUM == 0 {
            assert_eq!(got, p, "a packet without offload changed");
            return;
        }
        let field = start + offset..start + offset + 2;
        assert_eq!(got[..field.start], p[..field.start]);
        assert_eq!(got[field.end..], p[field.end..]);
        // Completed the kernel's way: the complement of the sum from
        // `start`, over the pseudo-header sum the field held.
        let want = checksum(&p[start..], 0);
        let field = u16::from_be_bytes([got[field.start], got[field.start + 1]]);
        assert!(
            field == want || (want == 0 && field == 0xffff),
            "the completed checksum {field:#x}, not {want:#x}"
        );
        return;
    }
    let tcp = gso_type & !VNET_GSO_ECN != VNET_GSO_UDP_L4;
    let proto = if tcp { 6 } else { 17 };
    let iph = start;
    let l4h = if tcp {
        usize::from(p[iph + 12] >> 4) * 4
    } else {
        8
    };
    let hdr = iph + l4h;
    let gso = usize::from(gso_size);
    assert_eq!(packets.len(), (p.len() - hdr).div_ceil(gso), "segments");
    let field = iph + if tcp { 16 } else { 6 };
    let partial = u32::from(u16::from_be_bytes([p[field], p[field + 1]]));
    let whole = (p.len() - iph) as u16;
    let v4 = p[0] >> 4 == 4;
    let mut carried = Vec::new();
    let mut seq = None;
    for (i, s) in packets.iter().enumerate() {
        let last = i + 1 == packets.len();
        assert!(
            s.len() > hdr && s.len() <= hdr + gso,
            "segment {i}: {} bytes",
            s.len()
        );
        if v4 {
            assert_eq!(usize::from(u16::from_be_bytes([s[2], s[3]])), s.len());
            assert_eq!(
                checksum(&s[..iph], 0),
                0,
                "segment {i}: IPv4 header checksum"
            );
            let id = u16::from_be_bytes([p[4], p[5]]).wrapping_add(i as u16);
            assert_eq!(s[4..6], id.to_be_bytes(), "segment {i}: IPv4 ID");
            // Everything else of the IP header as the request's.
            assert_eq!(s[..2], p[..2]);
            assert_eq!(s[6..10], p[6..10]);
            assert_eq!(s[12..iph], p[12..iph]);
        } else {
            assert_eq!(usize::from(u16::from_be_bytes([s[4], s[5]])) + 40, s.len());
            assert_eq!(s[..4], p[..4]);
            assert_eq!(s[6..iph], p[6..iph]);
        }
        let l4 = &s[iph..];
        if flags & VNET_F_NEEDS_CSUM != 0 {
            // The pseudo-header sum the request carried, for this length.
            let pseudo = partial + u32::from(!whole) + l4.len() as u32;
            assert_eq!(checksum(l4, pseudo), 0, "segment {i}: transport checksum");
        }
        if pristine || flags & VNET_F_NEEDS_CSUM == 0 {
            // Over the addresses: as the request was made, or as the
            // kernel sums them for a request it took as checked.
            let sum = checksum(l4, pseudo_sum(s, proto, l4.len()));
            assert_eq!(sum, 0, "segment {i}: transport checksum over the addresses");
        }
        if tcp {
            let this = u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]);
            if let Some(want) = seq {
                assert_eq!(this, want, "segment {i}: sequence number");
            }
            seq = Some(this.wrapping_add((s.len() - hdr) as u32));
            // FIN and PSH only on the last segment, CWR only on the first.
            let mut want = p[iph + 13];
            if i > 0 {
                want &= !0x80;
            }
            if !last {
                want &= !0x09;
            }
            assert_eq!(l4[13], want, "segment {i}: flags");
            assert_eq!(l4[..4], p[iph..iph + 4], "segment {i}: ports");
            assert_eq!(l4[8..13], p[iph + 8..iph + 13], "segment {i}: ack, offset");
            assert_eq!(l4[14..16], p[iph + 14..iph + 16], "segment {i}: window");
            assert_eq!(
                l4[18..l4h],
                p[iph + 18..hdr],
                "segment {i}: urgent, options"
            );
        } else {
            assert_eq!(usize::from(u16::from_be_bytes([l4[4], l4[5]])), l4.len());
        }
        carried.extend_from_slice(&s[hdr..]);
    }
    assert_eq!(carried, p[hdr..], "payload lost, reordered or made up");
}

/// A segmentation request (or a packet with its checksum left) from the
/// parameters in `rest`, then damaged as it says; whether it was not.
fn made(rest: &[u8], vnet: bool) -> Option<(Vec<u8>, bool)> {
    let [kind, l1, l0, g1, g0, damage @ ..] = rest else {
        return None;
    };
    let v6 = kind & 1 != 0;
    let udp = kind & 2 != 0;
    let proto = if udp { 17 } else { 6 };
    let len = usize::from(u16::from_be_bytes([*l1, *l0])) % 65_000;
    let gso = usize::from(u16::from_be_bytes([*g1, *g0]));
    let flags =
        0x10 | (kind >> 4 & 1) | if kind & 0x20 != 0 { 0x08 } else { 0 } | (kind & 0x40) << 1;
    let payload: Vec<u8> = (0..len).map(|i| (i as u8) ^ *l0).collect();
    let p = transport_packet(v6, proto, 4000, 12345, flags, &payload);
    let gso_type = match (kind & 8 != 0, udp, v6) {
        (true, ..) => VNET_GSO_NONE,
        (_, true, _) => VNET_GSO_UDP_L4,
        (_, false, false) => VNET_GSO_TCPV4,
        (_, false, true) => VNET_GSO_TCPV6,
    } | if kind & 4 != 0 { VNET_GSO_ECN } else { 0 };
    let mut read = request(&p, gso_type, gso).expect("a TCP or UDP packet");
    if kind & 0x80 != 0 {
        // Taken as checked (a forwarded packet): the field holds the
        // packet's whole checksum, as `transport_packet` made it.
        read[0] = VNET_F_DATA_VALID;
        let field = if v6 { 40 } else { 20 } + if udp { 6 } else { 16 };
        read[VNET_HDR_LEN + field..][..2].copy_from_slice(&p[field..field + 2]);
    }
    if !vnet {
        read.drain(..VNET_HDR_LEN);
    }
    let pristine = read.clone();
    for pair in damage.chunks_exact(3) {
        let at = usize::from(u16::from_be_bytes([pair[0], pair[1]])) % read.len();
        read[at] ^= pair[2];
    }
    let undamaged = read == pristine;
    Some((read, undamaged))
}
