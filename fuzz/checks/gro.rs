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
//! (`gro::verify_merged`); and no byte is lost or made up: the written
//! packets hold every input packet's bytes, less the headers of those that
//! joined another.

use kith::wire::gro::{Gro, VNET_HDR_LEN, verify_merged, vnet_header};
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
    let mut out_bytes = 0usize;
    for &i in &written {
        assert!(bufs[i].len() > VNET_HDR_LEN, "empty buffer {i} written");
        let packet = &bufs[i][VNET_HDR_LEN..];
        out_bytes += packet.len();
        if bufs[i][..VNET_HDR_LEN] == [0; VNET_HDR_LEN] {
            assert_eq!(packet, before[i].as_slice(), "unmerged packet {i} changed");
        } else if let Err(e) = verify_merged(&bufs[i]) {
            panic!("merged packet {i}: {e}: {:?}", vnet_header(&bufs[i]));
        }
    }
    // Every packet not written was merged: its payload is in a written
    // one, its headers are not.
    let mut in_bytes = 0usize;
    for (i, p) in before.iter().enumerate() {
        if written.contains(&i) {
            in_bytes += p.len();
        } else if !p.is_empty() {
            let (iph, proto) = if p[0] >> 4 == 4 {
                (20, p[9])
            } else {
                (40, p[6])
            };
            let l4h = if proto == 17 {
                8
            } else {
                usize::from(p[iph + 12] >> 4) * 4
            };
            in_bytes += p.len() - iph - l4h;
        }
    }
    assert_eq!(out_bytes, in_bytes, "bytes lost or made up");
}
