//! `kith::wire::gro::Gro::coalesce` on a batch of opened packets, built
//! from the input: mostly valid TCP/UDP segments of a few flows (so runs
//! form and the merge rules are exercised), some damaged, some raw bytes.
//!
//! Each record of the input: a kind byte, then for a raw packet (kind bit
//! 7) a length byte and that many bytes; else a segment: bit 0 IPv6, bit 1
//! UDP, bits 2-3 the flow (source port), bit 4 PSH, bit 5 FIN, bit 6 one
//! byte damaged; two bytes payload length (mod 1500), a byte that skews
//! its sequence number from the flow's next (0: consecutive).
//! The first byte's bit 0 says whether the device takes UDP GSO.
//!
//! Invariant: the written indices rise, each a non-empty buffer; an
//! unmerged packet is written unchanged under an empty header; every
//! merged packet verifies as the kernel will use it
//! (`gro::verify_merged`); and each merged packet's payload is its first
//! packet's followed by those of the packets that joined it, in order
//! (a packet not written joined the latest written one of its flow before
//! it), TCP ones with consecutive sequence numbers: nothing lost, reordered
//! or made up.

use kith::wire::gro::{Gro, VNET_HDR_LEN, layout, verify_merged, vnet_header};
use kith::wire::transport_packet;

/// A batch as the data plane writes it.
const BATCH: usize = 64;
const ROOM: usize = VNET_HDR_LEN + 65_600;

pub fn run(data: &[u8]) {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let udp = first & 1 != 0;
    let mut bufs: Vec<Vec<u8>> = Vec::new();
    let mut next_seq = [0u32; 4];
    while let Some((&kind, tail)) = rest.split_first() {
        if bufs.len() == BATCH {
            break;
        }
        let packet = if kind & 0x80 != 0 {
            let Some((&len, tail)) = tail.split_first() else {
                break;
            };
            let len = usize::from(len).min(tail.len());
            rest = &tail[len..];
            tail[..len].to_vec()
        } else {
            let [hi, lo, skew, tail @ ..] = tail else {
                break;
            };
            rest = tail;
            let flow = usize::from(kind >> 2 & 3);
            let len = usize::from(u16::from_be_bytes([*hi, *lo])) % 1500;
            let seq = next_seq[flow].wrapping_add(u32::from(*skew));
            next_seq[flow] = seq.wrapping_add(len as u32);
            let flags = 0x10 | if kind & 0x10 != 0 { 0x08 } else { 0 } | (kind >> 5 & 1);
            let proto = if kind & 2 != 0 { 17 } else { 6 };
            let payload = vec![flow as u8 ^ *skew; len];
            let mut p = transport_packet(
                kind & 1 != 0,
                proto,
                5000 + flow as u16,
                seq,
                flags,
                &payload,
            );
            if kind & 0x40 != 0 {
                let at = usize::from(*skew) % p.len();
                p[at] ^= 0x5a;
            }
            p
        };
        let mut b = Vec::with_capacity(ROOM);
        b.extend_from_slice(&[0xee; VNET_HDR_LEN]);
        b.extend_from_slice(&packet);
        bufs.push(b);
    }
    let before: Vec<Vec<u8>> = bufs.iter().map(|b| b[VNET_HDR_LEN..].to_vec()).collect();
    let mut gro = Gro::with_capacity(BATCH);
    let written = gro.coalesce(&mut bufs, udp).to_vec();

    assert!(written.windows(2).all(|w| w[0] < w[1]), "{written:?}");
    for &i in &written {
        assert!(bufs[i].len() > VNET_HDR_LEN, "empty buffer {i} written");
        let packet = &bufs[i][VNET_HDR_LEN..];
        if bufs[i][..VNET_HDR_LEN] == [0; VNET_HDR_LEN] {
            assert_eq!(packet, before[i].as_slice(), "unmerged packet {i} changed");
        } else if let Err(e) = verify_merged(&bufs[i]) {
            panic!("merged packet {i}: {e}: {:?}", vnet_header(&bufs[i]));
        }
    }
    // What each written packet should hold: its own payload, then that of
    // every packet that joined it. A packet that was not written joined the
    // latest written packet of its flow before it.
    let mut expect: Vec<(usize, Vec<u8>, u32)> = Vec::new();
    for (i, p) in before.iter().enumerate() {
        if written.contains(&i) {
            expect.push((i, p.clone(), seq_after(p)));
            continue;
        }
        if p.is_empty() {
            continue;
        }
        let (iph, l4h, _) = layout(p).expect("a packet that joined another is TCP or UDP");
        let head = expect
            .iter_mut()
            .rev()
            .find(|(h, ..)| same_flow(&before[*h], p))
            .unwrap_or_else(|| panic!("packet {i} joined no earlier packet of its flow"));
        if let Some(seq) = tcp_seq(p) {
            assert_eq!(seq, head.2, "packet {i} joined out of sequence");
        }
        head.1.extend_from_slice(&p[iph + l4h..]);
        head.2 = seq_after(p);
    }
    for (i, want, _) in expect {
        let got = &bufs[i][VNET_HDR_LEN..];
        if got.len() != want.len() || bufs[i][..VNET_HDR_LEN] == [0; VNET_HDR_LEN] {
            assert_eq!(got, want.as_slice(), "packet {i}: bytes lost or made up");
            continue;
        }
        // Merged: headers rewritten (lengths, checksums, PSH); the payloads
        // must be exactly the joined ones.
        let (iph, l4h, _) = layout(got).expect("merged packets are TCP or UDP");
        assert_eq!(
            &got[iph + l4h..],
            &want[iph + l4h..],
            "packet {i}: payloads"
        );
    }
}

/// The TCP sequence number of IP packet `p`, if it is a TCP segment.
fn tcp_seq(p: &[u8]) -> Option<u32> {
    let (iph, _, proto) = layout(p)?;
    (proto == 6).then(|| u32::from_be_bytes([p[iph + 4], p[iph + 5], p[iph + 6], p[iph + 7]]))
}

/// The sequence number after TCP segment `p` (0 for anything else).
fn seq_after(p: &[u8]) -> u32 {
    match (tcp_seq(p), layout(p)) {
        (Some(seq), Some((iph, l4h, _))) => seq.wrapping_add((p.len() - iph - l4h) as u32),
        _ => 0,
    }
}

/// Same addresses, protocol and ports (and, for TCP, ACK number).
fn same_flow(a: &[u8], b: &[u8]) -> bool {
    let (Some((ia, _, pa)), Some((ib, _, pb))) = (layout(a), layout(b)) else {
        return false;
    };
    let addrs = |p: &[u8], iph: usize| {
        if iph == 20 {
            p[12..20].to_vec()
        } else {
            p[8..40].to_vec()
        }
    };
    let ack = |p: &[u8], iph: usize, proto: u8| {
        if proto == 6 {
            p[iph + 8..iph + 12].to_vec()
        } else {
            Vec::new()
        }
    };
    ia == ib
        && pa == pb
        && addrs(a, ia) == addrs(b, ib)
        && a[ia..ia + 4] == b[ib..ib + 4]
        && ack(a, ia, pa) == ack(b, ib, pb)
}
