//! Receive coalescing for the TUN device: opened packets of one TCP or UDP
//! flow, written in one batch, are merged into one GSO packet behind a
//! virtio-net header (`IFF_VNET_HDR`), so the kernel takes a whole run
//! through its stack once instead of once per segment (what GRO does for a
//! NIC). Without it the receiving host's TCP processes every 1.4 KB
//! segment on its own and bulk throughput halves.
//!
//! Owns: which packets of a batch may merge and the headers of the merged
//! packet. The rules are the kernel's own GRO rules (`tcp_gro_receive`):
//! same addresses, ports and ACK, same IP TOS/TTL/DF (traffic class and hop
//! limit for IPv6), same TCP header (options, window) apart from PSH,
//! consecutive sequence numbers, no flags but ACK and PSH, and equal
//! segment sizes with a shorter one (or PSH) ending the run. IPv4 options,
//! fragments and IPv6 extension headers are never merged.
//!
//! Checksums: the merged packet goes up as `CHECKSUM_PARTIAL`, which the
//! kernel's receive path trusts, so every segment's own checksum is checked
//! here before it merges (a segment damaged before it reached the peer
//! that tunnelled it must still be dropped by TCP, as it would be unmerged).
//! A packet that does not merge keeps a zero header and the kernel checks it.
//!
//! Nothing is allocated: payloads are appended into the first packet's
//! buffer only within its capacity (the data plane's buffers hold 64 KiB),
//! and the bookkeeping reuses its vectors from batch to batch.

use super::ip::{PROTO_TCP as TCP, PROTO_UDP as UDP, checksum, pseudo_sum};
use super::vnet::{
    VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, VNET_GSO_TCPV6, VNET_GSO_UDP_L4, write_vnet_header,
};
pub use super::vnet::{VNET_HDR_LEN, vnet_header};

const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
/// The kernel takes at most this many segments in one UDP GSO packet
/// (`UDP_MAX_SEGMENTS`).
const UDP_MAX_SEGMENTS: u16 = 64;

/// What identifies a flow's mergeable run: the addresses (IPv4 in the
/// first 4 bytes), ports, protocol and, for TCP, the ACK number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    src: [u8; 16],
    dst: [u8; 16],
    ports: [u8; 4],
    ack: u32,
    proto: u8,
    v6: bool,
}

/// One packet's layout, as far as merging needs it.
#[derive(Debug, Clone, Copy)]
struct Segment {
    key: Key,
    /// IP header length (20 or 40) and transport header length.
    iph: usize,
    l4h: usize,
    payload: usize,
    seq: u32,
    psh: bool,
}

/// A run being built in the buffer of its first packet.
#[derive(Debug, Clone, Copy)]
struct Run {
    head: usize,
    seg: Segment,
    /// Payload bytes of each segment but (possibly) the last.
    gso_size: usize,
    segments: u16,
    next_seq: u32,
    /// A shorter segment or PSH ended it.
    closed: bool,
}

/// Merges each batch of opened packets; keep one per writer and reuse it.
#[derive(Debug)]
pub struct Gro {
    runs: Vec<Run>,
    /// Runs one batch may build: past it, a new flow goes unmerged (and
    /// nothing is allocated).
    max_runs: usize,
    merged: Vec<bool>,
    write: Vec<usize>,
}

impl Gro {
    /// Room for batches of up to `batch` packets without allocating.
    pub fn with_capacity(batch: usize) -> Self {
        Self {
            runs: Vec::with_capacity(batch),
            max_runs: batch,
            merged: Vec::with_capacity(batch),
            write: Vec::with_capacity(batch),
        }
    }

    /// Merges what it may of `bufs` (each a [`VNET_HDR_LEN`]-byte header,
    /// then an IP packet) in place and fills in every header; the indices
    /// of the buffers to write, in order. A buffer not listed was merged
    /// into an earlier one. UDP runs merge only when `udp` (the device
    /// takes UDP segmentation offload, Linux 6.2+).
    pub fn coalesce(&mut self, bufs: &mut [Vec<u8>], udp: bool) -> &[usize] {
        self.runs.clear();
        self.write.clear();
        self.merged.clear();
        self.merged.resize(bufs.len(), false);
        for i in 0..bufs.len() {
            let Some(p) = bufs[i].get(VNET_HDR_LEN..) else {
                continue;
            };
            let Some(flow) = flow(p) else {
                continue;
            };
            let Some(seg) = segment(p, flow, udp) else {
                // Nothing after it may join a run before it: that would
                // deliver the flow out of order (the kernel flushes a
                // flow's held packets on such a packet too).
                let key = flow.0;
                for r in self.runs.iter_mut().filter(|r| r.seg.key == key) {
                    r.closed = true;
                }
                continue;
            };
            if let Some(r) = self.runs.iter().rposition(|r| r.seg.key == seg.key)
                && self.append(bufs, r, i, &seg)
            {
                self.merged[i] = true;
                continue;
            }
            if self.runs.len() < self.max_runs {
                self.runs.push(Run {
                    head: i,
                    seg,
                    gso_size: seg.payload,
                    segments: 1,
                    next_seq: seg.seq.wrapping_add(seg.payload as u32),
                    closed: seg.psh,
                });
            }
        }
        for buf in bufs.iter_mut() {
            if let Some(h) = buf.get_mut(..VNET_HDR_LEN) {
                h.fill(0);
            }
        }
        for r in &self.runs {
            if r.segments > 1 {
                finish(&mut bufs[r.head], r);
            }
        }
        let merged = &self.merged;
        self.write
            .extend((0..bufs.len()).filter(|&i| !merged[i] && bufs[i].len() > VNET_HDR_LEN));
        &self.write
    }

    /// Appends packet `i` to run `r` if the kernel's rules allow it and its
    /// checksum holds; whether it did.
    fn append(&mut self, bufs: &mut [Vec<u8>], r: usize, i: usize, seg: &Segment) -> bool {
        let run = self.runs[r];
        if run.closed
            || seg.payload > run.gso_size
            || (seg.key.proto == TCP && seg.seq != run.next_seq)
            || (seg.key.proto == UDP && run.segments >= UDP_MAX_SEGMENTS)
        {
            return false;
        }
        let (before, rest) = bufs.split_at_mut(i);
        let head = &mut before[run.head];
        let pkt = &rest[0][VNET_HDR_LEN..];
        let first = &head[VNET_HDR_LEN..];
        if run.segments == 1 && !checksum_ok(first, &run.seg) {
            // Nothing may join a packet the kernel must check on its own.
            self.runs[r].closed = true;
            return false;
        }
        // The merged packet's IP length field (IPv6: the payload's) must
        // hold it, and its buffer must, without growing.
        let ip_hdr_excluded = if seg.key.v6 { 40 } else { 0 };
        if first.len() - ip_hdr_excluded + seg.payload > usize::from(u16::MAX)
            || head.len() + seg.payload > head.capacity()
            || !same_headers(first, pkt, seg)
            || !checksum_ok(pkt, seg)
        {
            return false;
        }
        let at = seg.iph + seg.l4h;
        head.extend_from_slice(&pkt[at..]);
        if seg.psh {
            // PSH may only be on the last segment: the run ends with it.
            head[VNET_HDR_LEN + seg.iph + 13] |= TCP_PSH;
        }
        let run = &mut self.runs[r];
        run.segments += 1;
        run.next_seq = seg.seq.wrapping_add(seg.payload as u32);
        run.closed = seg.psh || seg.payload < run.gso_size;
        true
    }
}

/// Where IP packet `p`'s transport header and payload begin, and which
/// transport it carries: `(IP header length, transport header length,
/// protocol)`, for TCP and UDP in IPv4 without options or IPv6 without
/// extension headers (what GRO merges). `None` for anything else or a
/// packet too short for its headers. The tests and the fuzz check read
/// packets with it too.
pub fn layout(p: &[u8]) -> Option<(usize, usize, u8)> {
    let (iph, proto) = match p.first()? >> 4 {
        4 if p.len() >= 20 && p[0] == 0x45 => (20, p[9]),
        6 if p.len() >= 40 => (40, p[6]),
        _ => return None,
    };
    let l4 = &p[iph..];
    let l4h = match proto {
        TCP if l4.len() >= 20 => usize::from(l4[12] >> 4) * 4,
        UDP => 8,
        _ => return None,
    };
    (l4h >= 8 && l4h <= l4.len()).then_some((iph, l4h, proto))
}

/// The flow of TCP or UDP packet `p` (see [`layout`]) and its layout.
fn flow(p: &[u8]) -> Option<(Key, usize, usize)> {
    let (iph, l4h, proto) = layout(p)?;
    let mut key = Key {
        src: [0; 16],
        dst: [0; 16],
        ports: [0; 4],
        ack: 0,
        proto,
        v6: iph == 40,
    };
    let (src, dst) = if key.v6 {
        (8..24, 24..40)
    } else {
        (12..16, 16..20)
    };
    key.src[..src.len()].copy_from_slice(&p[src]);
    key.dst[..dst.len()].copy_from_slice(&p[dst]);
    let l4 = &p[iph..];
    key.ports.copy_from_slice(&l4[..4]);
    if proto == TCP {
        key.ack = u32::from_be_bytes([l4[8], l4[9], l4[10], l4[11]]);
    }
    Some((key, iph, l4h))
}

/// Packet `p` of flow `key` as a merge candidate: TCP with data and no
/// flags but ACK and PSH, or (when `udp`) UDP with data; no IPv4 fragments;
/// lengths and the IPv4 header checksum right (the merged packet gets a
/// new one, which would hide a damaged header the kernel drops).
fn segment(p: &[u8], (key, iph, l4h): (Key, usize, usize), udp: bool) -> Option<Segment> {
    if key.v6 {
        if usize::from(u16::from_be_bytes([p[4], p[5]])) + 40 != p.len() {
            return None;
        }
    } else if usize::from(u16::from_be_bytes([p[2], p[3]])) != p.len()
        // DF may be set, nothing else of the flags and fragment offset.
        || p[6] & 0xbf != 0
        || p[7] != 0
        || checksum(&p[..20], 0) != 0
    {
        return None;
    }
    let l4 = &p[iph..];
    let payload = l4.len() - l4h;
    let mut seg = Segment {
        key,
        iph,
        l4h,
        payload,
        seq: 0,
        psh: false,
    };
    if payload == 0 {
        return None;
    }
    if key.proto == TCP {
        let flags = l4[13];
        if l4h < 20 || flags & !(TCP_ACK | TCP_PSH) != 0 || flags & TCP_ACK == 0 {
            return None;
        }
        seg.seq = u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]);
        seg.psh = flags & TCP_PSH != 0;
        return Some(seg);
    }
    (udp && usize::from(u16::from_be_bytes([l4[4], l4[5]])) == l4.len()).then_some(seg)
}

/// Whether `b` (already known to share `a`'s flow key) may follow `a` in
/// one GSO packet: the IP fields the kernel compares, and for TCP the
/// whole header but sequence number, flags and checksum.
fn same_headers(a: &[u8], b: &[u8], seg: &Segment) -> bool {
    let ip = if seg.key.v6 {
        // Version, traffic class, flow label; hop limit.
        a[..4] == b[..4] && a[7] == b[7]
    } else {
        // TOS; DF; TTL.
        a[1] == b[1] && a[6] == b[6] && a[8] == b[8]
    };
    if !ip || seg.key.proto != TCP {
        return ip;
    }
    let (ta, tb) = (&a[seg.iph..], &b[seg.iph..]);
    let l4h = seg.l4h;
    ta.len() > l4h
        && ta[12] == tb[12]
        // The window, the urgent pointer and the options.
        && ta[14..16] == tb[14..16]
        && ta[18..l4h] == tb[18..l4h]
}

/// The transport checksum of packet `p` (layout `seg`) holds. An IPv4 UDP
/// datagram without one (zero) passes, as the kernel lets it.
fn checksum_ok(p: &[u8], seg: &Segment) -> bool {
    let l4 = &p[seg.iph..];
    if seg.key.proto == UDP && !seg.key.v6 && l4[6..8] == [0, 0] {
        return true;
    }
    checksum(l4, pseudo_sum(p, seg.key.proto, l4.len())) == 0
}

/// The virtio-net GSO type and transport checksum offset of a merged run
/// of `proto` (TCP or UDP) over IPv6 or IPv4.
fn gso_kind(proto: u8, v6: bool) -> (u8, usize) {
    match (proto, v6) {
        (TCP, false) => (VNET_GSO_TCPV4, 16),
        (TCP, true) => (VNET_GSO_TCPV6, 16),
        _ => (VNET_GSO_UDP_L4, 6),
    }
}

/// Rewrites the first packet of merged run `r` (in `buf`, header
/// included) as one GSO packet: IP and UDP lengths, the IPv4 header
/// checksum, the pseudo-header sum in the transport checksum (what the
/// kernel completes for `CHECKSUM_PARTIAL`), and the virtio-net header.
fn finish(buf: &mut [u8], r: &Run) {
    let seg = &r.seg;
    let (hdr, p) = buf.split_at_mut(VNET_HDR_LEN);
    let l4_len = p.len() - seg.iph;
    // Both checked to fit 16 bits as the run grew.
    if seg.key.v6 {
        p[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    } else {
        let total = p.len() as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[10..12].fill(0);
        let sum = checksum(&p[..20], 0);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
    }
    let (gso_type, csum_offset) = gso_kind(seg.key.proto, seg.key.v6);
    if seg.key.proto == UDP {
        p[seg.iph + 4..seg.iph + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    }
    // Folded but not complemented: sum_words never exceeds 16 bits.
    let partial = pseudo_sum(p, seg.key.proto, l4_len) as u16;
    let at = seg.iph + csum_offset;
    p[at..at + 2].copy_from_slice(&partial.to_be_bytes());
    let fields = [seg.iph + seg.l4h, r.gso_size, seg.iph, csum_offset];
    write_vnet_header(hdr, VNET_F_NEEDS_CSUM, gso_type, fields);
}

/// Checks merged packet `buf` (header included) as the kernel will use
/// it, for tests and the fuzz check: a `NEEDS_CSUM` GSO header whose
/// lengths fit, IP length fields and the IPv4 header checksum right, more
/// than one segment's payload, and a transport checksum that verifies
/// once completed the kernel's way (summing from `csum_start` over the
/// pseudo-header sum in the field, the complement written there).
pub fn verify_merged(buf: &[u8]) -> Result<(), String> {
    let (flags, gso_type, hdr_len, gso_size, start, offset) =
        vnet_header(buf).ok_or("no header")?;
    let mut p = buf[VNET_HDR_LEN..].to_vec();
    let (start, offset) = (usize::from(start), usize::from(offset));
    let (iph, _, proto) = layout(&p).ok_or("not a TCP or UDP packet GRO makes")?;
    let want = gso_kind(proto, iph == 40);
    if flags != VNET_F_NEEDS_CSUM || (gso_type, offset) != want || start != iph {
        return Err(format!("header {:?}", vnet_header(buf)));
    }
    if gso_size == 0 || p.len() <= usize::from(hdr_len) + usize::from(gso_size) {
        return Err(format!(
            "{} bytes, header {hdr_len}, gso_size {gso_size}: one segment",
            p.len()
        ));
    }
    let ip_len = if iph == 20 {
        if checksum(&p[..20], 0) != 0 {
            return Err("IPv4 header checksum".into());
        }
        usize::from(u16::from_be_bytes([p[2], p[3]]))
    } else {
        usize::from(u16::from_be_bytes([p[4], p[5]])) + 40
    };
    if ip_len != p.len() {
        return Err(format!("IP length {ip_len} for {} bytes", p.len()));
    }
    let sum = checksum(&p[start..], 0);
    p[start + offset..start + offset + 2].copy_from_slice(&sum.to_be_bytes());
    let l4 = &p[start..];
    if checksum(l4, pseudo_sum(&p, proto, l4.len())) != 0 {
        return Err("the completed transport checksum does not verify".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
