use super::*;
use crate::wire::{checksum, pseudo_sum, transport_packet};

/// What the data plane's TUN buffers hold.
const ROOM: usize = VNET_HDR_LEN + 65_600;

/// A buffer as the data plane hands it over: a (stale) header, then the
/// packet, with room to grow.
fn buffer(packet: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(ROOM);
    b.extend_from_slice(&[0xee; VNET_HDR_LEN]);
    b.extend_from_slice(packet);
    b
}

fn v4(proto: u8, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    v4_from(5001, proto, seq, flags, payload)
}

fn v4_from(sport: u16, proto: u8, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    buffer(&transport_packet(false, proto, sport, seq, flags, payload))
}

fn v6(proto: u8, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    buffer(&transport_packet(true, proto, 5001, seq, flags, payload))
}

const ACK: u8 = TCP_ACK;

/// `n` consecutive TCP segments of `size` bytes from `seq`, each filled
/// with its index.
fn run(make: fn(u8, u32, u8, &[u8]) -> Vec<u8>, seq: u32, sizes: &[usize]) -> Vec<Vec<u8>> {
    let mut at = seq;
    sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let b = make(TCP, at, ACK, &vec![i as u8; size]);
            at = at.wrapping_add(size as u32);
            b
        })
        .collect()
}

fn payload(buf: &[u8]) -> &[u8] {
    let p = &buf[VNET_HDR_LEN..];
    let (iph, l4h, _) = layout(p).unwrap();
    &p[iph + l4h..]
}

fn completes(buf: &[u8]) {
    if let Err(e) = verify_merged(buf) {
        panic!("{e}");
    }
}

#[test]
fn a_run_of_segments_becomes_one_gso_packet_the_kernel_can_finish() {
    let mut bufs = run(v4, 1000, &[1380, 1380, 1380, 700]);
    let head = bufs[0].as_ptr();
    let mut gro = Gro::with_capacity(64);
    assert_eq!(gro.coalesce(&mut bufs, false), &[0]);
    assert_eq!(bufs[0].as_ptr(), head, "merged in place, no new buffer");
    assert_eq!(
        vnet_header(&bufs[0]),
        Some((VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, 40, 1380, 20, 16))
    );
    let want: Vec<u8> = [(0u8, 1380), (1, 1380), (2, 1380), (3, 700)]
        .iter()
        .flat_map(|&(i, n)| vec![i; n])
        .collect();
    assert_eq!(payload(&bufs[0]), want.as_slice());
    completes(&bufs[0]);

    // IPv6 the same way.
    let mut bufs = run(v6, u32::MAX - 10, &[1360, 1360]);
    assert_eq!(gro.coalesce(&mut bufs, false), &[0], "across the seq wrap");
    assert_eq!(
        vnet_header(&bufs[0]),
        Some((VNET_F_NEEDS_CSUM, VNET_GSO_TCPV6, 60, 1360, 40, 16))
    );
    completes(&bufs[0]);
}

#[test]
fn a_gap_a_flag_a_bad_checksum_or_a_short_segment_keeps_packets_apart() {
    let mut gro = Gro::with_capacity(64);
    let zeroed = |bufs: &[Vec<u8>]| bufs.iter().all(|b| b[..VNET_HDR_LEN] == [0; VNET_HDR_LEN]);

    // A gap in the sequence.
    let mut bufs = run(v4, 0, &[1000, 1000]);
    bufs[1] = v4(TCP, 1500, ACK, &[1; 1000]);
    assert_eq!(gro.coalesce(&mut bufs, false), &[0, 1]);
    assert!(zeroed(&bufs), "unmerged packets go with an empty header");

    // FIN (or SYN, RST...) never merges.
    let mut bufs = run(v4, 0, &[1000]);
    bufs.push(v4(TCP, 1000, ACK | 0x01, &[1; 1000]));
    assert_eq!(gro.coalesce(&mut bufs, false), &[0, 1]);

    // A packet of the flow that cannot merge (here a pure ACK) ends the
    // flow's run: the next segment, though it follows the run's sequence,
    // must not overtake it.
    let mut bufs = run(v4, 0, &[1000]);
    bufs.push(v4(TCP, 1000, ACK, &[]));
    bufs.push(v4(TCP, 1000, ACK, &[1; 1000]));
    assert_eq!(gro.coalesce(&mut bufs, false), &[0, 1, 2]);

    // A damaged segment stays alone for the kernel to drop.
    let mut bufs = run(v4, 0, &[1000, 1000, 1000]);
    let last = bufs[1].len() - 1;
    bufs[1][last] ^= 0xff;
    assert_eq!(gro.coalesce(&mut bufs, false), &[0, 1, 2]);
    // ... and a damaged first one takes nothing in.
    let mut bufs = run(v4, 0, &[1000, 1000]);
    let last = bufs[0].len() - 1;
    bufs[0][last] ^= 0xff;
    assert_eq!(gro.coalesce(&mut bufs, false), &[0, 1]);

    // A shorter segment ends the run; so does PSH, which the run keeps.
    let mut bufs = run(v4, 0, &[1000, 500, 1000]);
    assert_eq!(gro.coalesce(&mut bufs, false), &[0, 2]);
    let mut bufs = run(v4, 0, &[1000]);
    bufs.push(v4(TCP, 1000, ACK | TCP_PSH, &[1; 1000]));
    bufs.push(v4(TCP, 2000, ACK, &[2; 1000]));
    assert_eq!(gro.coalesce(&mut bufs, false), &[0, 2]);
    assert_eq!(bufs[0][VNET_HDR_LEN + 20 + 13], ACK | TCP_PSH);
    completes(&bufs[0]);

    // A different window, TTL or TOS is a different header (each packet
    // with its checksums right, so only the header rule can tell).
    for (at, what) in [(20 + 15, "window"), (8, "TTL"), (1, "TOS")] {
        let mut bufs = run(v4, 0, &[1000, 1000]);
        bufs[1][VNET_HDR_LEN + at] ^= 1;
        refresh_checksums(&mut bufs[1]);
        assert_eq!(gro.coalesce(&mut bufs, false), &[0, 1], "{what}");
    }
    // ... and the same bytes with the checksums refreshed do merge.
    let mut bufs = run(v4, 0, &[1000, 1000]);
    refresh_checksums(&mut bufs[1]);
    assert_eq!(gro.coalesce(&mut bufs, false), &[0]);
    // An IPv6 flow label apart: another flow in all but the key.
    let mut bufs = run(v6, 0, &[1000, 1000]);
    bufs[1][VNET_HDR_LEN + 3] ^= 1;
    assert_eq!(gro.coalesce(&mut bufs, false), &[0, 1]);
    // A damaged IPv4 header (its checksum no longer holds) stays alone.
    let mut bufs = run(v4, 0, &[1000, 1000]);
    bufs[1][VNET_HDR_LEN + 4] ^= 1;
    assert_eq!(gro.coalesce(&mut bufs, false), &[0, 1]);
}

/// Recompute the IPv4 header and transport checksums of `buf`'s packet
/// after a test changed a field.
fn refresh_checksums(buf: &mut [u8]) {
    let p = &mut buf[VNET_HDR_LEN..];
    let (iph, _, proto) = layout(p).unwrap();
    if iph == 20 {
        p[10..12].fill(0);
        let sum = checksum(&p[..20], 0);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
    }
    let at = iph + if proto == TCP { 16 } else { 6 };
    p[at..at + 2].fill(0);
    let sum = checksum(&p[iph..], pseudo_sum(p, proto, p.len() - iph));
    p[at..at + 2].copy_from_slice(&sum.to_be_bytes());
}

#[test]
fn flows_merge_apart_and_keep_their_order() {
    let mut gro = Gro::with_capacity(64);
    let mut other = vec![
        v4_from(6000, TCP, 5000, ACK, &[0; 1000]),
        v4_from(6000, TCP, 6000, ACK, &[1; 1000]),
    ];
    let mut ours = run(v4, 0, &[1000, 1000]);
    let mut bufs = vec![
        ours.remove(0),
        other.remove(0),
        v4(17, 0, 0, b"not merged: UDP without USO"),
        ours.remove(0),
        other.remove(0),
    ];
    assert_eq!(gro.coalesce(&mut bufs, false), &[0, 1, 2]);
    assert_eq!(payload(&bufs[0]), [[0u8; 1000], [1; 1000]].concat());
    assert_eq!(payload(&bufs[1]), [[0u8; 1000], [1; 1000]].concat());
    completes(&bufs[0]);
    completes(&bufs[1]);
}

#[test]
fn udp_merges_only_where_the_device_takes_it() {
    let mut gro = Gro::with_capacity(64);
    let batch = || {
        (0..3u8)
            .map(|i| v4(UDP, 0, 0, &[i; 1200]))
            .chain([v6(UDP, 0, 0, &[9; 1200]), v6(UDP, 0, 0, &[8; 1000])])
            .collect::<Vec<_>>()
    };
    let mut bufs = batch();
    assert_eq!(gro.coalesce(&mut bufs, false), &[0, 1, 2, 3, 4]);
    let mut bufs = batch();
    assert_eq!(gro.coalesce(&mut bufs, true), &[0, 3]);
    assert_eq!(
        vnet_header(&bufs[0]),
        Some((VNET_F_NEEDS_CSUM, VNET_GSO_UDP_L4, 28, 1200, 20, 6))
    );
    assert_eq!(
        vnet_header(&bufs[3]),
        Some((VNET_F_NEEDS_CSUM, VNET_GSO_UDP_L4, 48, 1200, 40, 6))
    );
    let udp_len = |b: &[u8], iph: usize| {
        let p = &b[VNET_HDR_LEN + iph..];
        usize::from(u16::from_be_bytes([p[4], p[5]]))
    };
    assert_eq!(udp_len(&bufs[0], 20), 8 + 3 * 1200);
    assert_eq!(udp_len(&bufs[3], 40), 8 + 2200);
    completes(&bufs[0]);
    completes(&bufs[3]);
}

#[test]
fn a_buffer_without_room_is_not_grown() {
    let mut gro = Gro::with_capacity(64);
    let mut bufs = run(v4, 0, &[1000, 1000]);
    bufs[0].shrink_to_fit();
    let head = bufs[0].as_ptr();
    assert_eq!(gro.coalesce(&mut bufs, false), &[0, 1]);
    assert_eq!(bufs[0].as_ptr(), head);
    // And a run stops short of the 64 KiB an IP length can say.
    let mut bufs = run(v4, 0, &[1400; 48]);
    let written = gro.coalesce(&mut bufs, false).to_vec();
    assert_eq!(written, &[0, 46], "46 segments of 1400 fit under 65535");
    completes(&bufs[0]);
}

#[test]
fn what_is_not_ip_passes_through() {
    let mut gro = Gro {
        max_runs: 1,
        ..Gro::with_capacity(8)
    };
    let mut bufs = vec![
        buffer(&[0x45, 0, 0]),
        buffer(&[]),
        buffer(&[0x60; 39]),
        v4(TCP, 0, ACK, &[1; 10]),
        v4(TCP, 10, ACK, &[1; 10]),
        v4_from(6000, TCP, 0, ACK, &[1; 10]),
        v4_from(6000, TCP, 10, ACK, &[1; 10]),
    ];
    // The empty one is not written, the others go as they are; past its
    // capacity of runs (one here), a flow goes unmerged.
    assert_eq!(gro.coalesce(&mut bufs, false), &[0, 2, 3, 5, 6]);
}
