//! Send segmentation for the TUN device: the mirror of [`super::gro`].
//!
//! With offload on (`IFF_VNET_HDR`, TSO and USO), one TUN read is a
//! virtio-net header and a packet of up to 64 KiB that stands for many: a
//! TCP (or UDP) packet the kernel left for us to cut into segments of
//! `gso_size` payload bytes, and whose transport checksum it left for us to
//! complete (`NEEDS_CSUM`: the field holds the pseudo-header sum). A read
//! without segmentation is one packet, its checksum possibly left too.
//!
//! Owns: reading that request ([`Tso::parse`]) and writing each segment
//! ([`Tso::write`]) with its headers fixed up as the kernel's own
//! segmentation does (`tcp_gso_segment`, `__udp_gso_segment`): IPv4 total
//! length, an ID per segment and the header checksum; IPv6 payload length;
//! TCP sequence numbers, FIN and PSH on the last segment only, CWR on the
//! first only; UDP lengths; each segment's full transport checksum, which
//! the receiving host checks (a peer's kernel takes a packet written
//! without a virtio-net header as one whose checksum is still to verify).
//! The checksum starts from the pseudo-header sum the kernel left in the
//! field (`NEEDS_CSUM`), adjusted from the request's length to the
//! segment's, as the kernel's own segmentation does: the addresses it
//! summed (a routing header's final destination, not the IPv6 header's)
//! stay in. A request the kernel took as checked (`DATA_VALID`: a
//! forwarded packet) holds a whole checksum there instead, and its
//! segments' pseudo-headers are summed from the IP header, as the kernel
//! would.
//!
//! A segment is written wherever the caller wants it: the data plane writes
//! it straight into the datagram it then seals in place, so the payload is
//! copied once on its way from the TUN read to the GSO send. [`Tso`] is the
//! plan of one read (offsets and lengths, nothing borrowed), so the caller
//! may hold it while it writes other buffers.
//!
//! The kernel writes these headers, but a parser that panics on a strange
//! one would take the data plane down: every length is checked once in
//! [`Tso::parse`], and [`Tso::write`] checks the buffers it is given.

use super::ip::{PROTO_TCP as TCP, PROTO_UDP as UDP, checksum, pseudo_sum};
use super::vnet::{
    VNET_F_NEEDS_CSUM, VNET_GSO_ECN, VNET_GSO_NONE, VNET_GSO_TCPV4, VNET_GSO_TCPV6,
    VNET_GSO_UDP_L4, VNET_HDR_LEN, vnet_header, write_vnet_header,
};

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;
/// Offsets of the checksum field in a TCP and a UDP header.
const TCP_CSUM_AT: usize = 16;
const UDP_CSUM_AT: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TsoError {
    #[error("TUN read of {0} bytes: no packet behind the virtio-net header")]
    Short(usize),
    #[error("unknown virtio-net GSO type {0:#x}")]
    GsoType(u8),
    #[error("GSO type {gso_type:#x} for an IP version {version} packet")]
    Version { gso_type: u8, version: u8 },
    #[error("ECN flag on a UDP GSO request")]
    UdpEcn,
    #[error("checksum start {start} and offset {offset} do not fit a {len}-byte packet")]
    Checksum {
        start: usize,
        offset: usize,
        len: usize,
    },
    #[error("GSO headers (IP {iph}, transport {l4h} bytes) do not fit a {len}-byte packet")]
    Headers { iph: usize, l4h: usize, len: usize },
    #[error("GSO size 0")]
    ZeroSize,
    #[error("{segments} segments, more than the {max} a read may split into")]
    TooMany { segments: usize, max: usize },
    #[error("a {len}-byte GSO request: its segments' length fields cannot hold it")]
    TooLong { len: usize },
    #[error("a {len}-byte segment does not fit the {room} bytes it was given")]
    Room { len: usize, room: usize },
    #[error("the read is not the one this plan was made for")]
    Read,
}

/// What one TUN read stands for: where its packet lies in the read and
/// how it becomes packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tso {
    /// The packet is `read[start..end]`.
    start: usize,
    end: usize,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// One packet, as it is.
    Whole,
    /// One packet whose transport checksum is left to us: summed from
    /// `start` (in the packet) and written at `start + offset`.
    Checksum { start: usize, offset: usize },
    /// Segments: `iph` bytes of IP header (options or extension headers
    /// included), `l4h` of transport header, then `gso` payload bytes each
    /// (the last possibly fewer).
    Split {
        iph: usize,
        l4h: usize,
        gso: usize,
        proto: u8,
        v6: bool,
        segments: usize,
        /// `NEEDS_CSUM`: the checksum field holds the pseudo-header sum.
        /// Without it (a packet the kernel took as checked, `DATA_VALID`)
        /// it holds the whole request's checksum.
        partial: bool,
    },
}

impl Tso {
    /// The plan for `read`: with `vnet` (the device was opened with
    /// offload) a virtio-net header and a packet, without it a packet
    /// alone. At most `max_segments` segments.
    pub fn parse(read: &[u8], vnet: bool, max_segments: usize) -> Result<Self, TsoError> {
        if !vnet {
            return Ok(Self {
                start: 0,
                end: read.len(),
                kind: Kind::Whole,
            });
        }
        let (flags, gso_type, _, gso_size, csum_start, csum_offset) =
            vnet_header(read).ok_or(TsoError::Short(read.len()))?;
        if read.len() == VNET_HDR_LEN {
            return Err(TsoError::Short(read.len()));
        }
        let p = &read[VNET_HDR_LEN..];
        let (start, offset) = (usize::from(csum_start), usize::from(csum_offset));
        let kind = if gso_type == VNET_GSO_NONE {
            if flags & VNET_F_NEEDS_CSUM == 0 {
                Kind::Whole
            } else if start + offset + 2 <= p.len() {
                Kind::Checksum { start, offset }
            } else {
                return Err(TsoError::Checksum {
                    start,
                    offset,
                    len: p.len(),
                });
            }
        } else {
            let partial = flags & VNET_F_NEEDS_CSUM != 0;
            let gso = usize::from(gso_size);
            split(p, gso_type, gso, start, offset, partial, max_segments)?
        };
        Ok(Self {
            start: VNET_HDR_LEN,
            end: read.len(),
            kind,
        })
    }

    /// How many packets the read stands for.
    pub fn segments(&self) -> usize {
        match self.kind {
            Kind::Whole | Kind::Checksum { .. } => 1,
            Kind::Split { segments, .. } => segments,
        }
    }

    /// Writes packet `i` (of [`segments`](Self::segments)) of `read` (the
    /// read this plan was made for) into the start of `out`; its length.
    pub fn write(&self, read: &[u8], i: usize, out: &mut [u8]) -> Result<usize, TsoError> {
        let p = read
            .get(self.start..self.end)
            .filter(|_| read.len() == self.end && i < self.segments())
            .ok_or(TsoError::Read)?;
        let room = out.len();
        match self.kind {
            Kind::Whole | Kind::Checksum { .. } => {
                let out = out
                    .get_mut(..p.len())
                    .ok_or(TsoError::Room { len: p.len(), room })?;
                out.copy_from_slice(p);
                if let Kind::Checksum { start, offset } = self.kind {
                    // The field holds the pseudo-header sum: summing over
                    // it completes the checksum (skb_checksum_help), and a
                    // zero result goes out as 0xffff, which means the same.
                    let sum = checksum(&out[start..], 0);
                    let sum = if sum == 0 { 0xffff } else { sum };
                    out[start + offset..start + offset + 2].copy_from_slice(&sum.to_be_bytes());
                }
                Ok(p.len())
            }
            Kind::Split {
                iph,
                l4h,
                gso,
                proto,
                v6,
                segments,
                partial,
            } => {
                let hdr = iph + l4h;
                let from = hdr + i * gso;
                let data = gso.min(p.len() - from);
                let len = hdr + data;
                let out = out.get_mut(..len).ok_or(TsoError::Room { len, room })?;
                out[..hdr].copy_from_slice(&p[..hdr]);
                out[hdr..].copy_from_slice(&p[from..from + data]);
                if v6 {
                    out[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
                } else {
                    out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                    let id = u16::from_be_bytes([p[4], p[5]]).wrapping_add(i as u16);
                    out[4..6].copy_from_slice(&id.to_be_bytes());
                    out[10..12].fill(0);
                    let sum = checksum(&out[..iph], 0);
                    out[10..12].copy_from_slice(&sum.to_be_bytes());
                }
                if (p[0] >> 4 == 6) != v6 {
                    return Err(TsoError::Read);
                }
                let field = iph + csum_at(proto);
                let sum_left = u16::from_be_bytes([p[field], p[field + 1]]);
                let l4 = &mut out[iph..];
                if proto == TCP {
                    let seq = u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]);
                    let seq = seq.wrapping_add((i * gso) as u32);
                    l4[4..8].copy_from_slice(&seq.to_be_bytes());
                    if i > 0 {
                        l4[13] &= !TCP_CWR;
                    }
                    if i + 1 < segments {
                        l4[13] &= !(TCP_FIN | TCP_PSH);
                    }
                } else {
                    l4[4..6].copy_from_slice(&((len - iph) as u16).to_be_bytes());
                }
                out[field..field + 2].fill(0);
                let pseudo = if partial {
                    // One's complement: minus the request's transport
                    // length, plus the segment's (both fit 16 bits:
                    // checked in `parse`).
                    let whole = (p.len() - iph) as u16;
                    u32::from(sum_left) + u32::from(!whole) + (len - iph) as u32
                } else {
                    // As the kernel does then (`__tcp_v4_send_check`):
                    // from the IP header's addresses.
                    pseudo_sum(out, proto, len - iph)
                };
                let sum = checksum(&out[iph..], pseudo);
                // UDP's zero means "no checksum" (RFC 768): 0xffff instead.
                let sum = if sum == 0 && proto == UDP {
                    0xffff
                } else {
                    sum
                };
                out[field..field + 2].copy_from_slice(&sum.to_be_bytes());
                Ok(len)
            }
        }
    }
}

/// The plan for segmenting packet `p` by the header's GSO fields. The
/// header length the kernel gives is not trusted (on a forwarded packet it
/// can span the whole first packet): the transport header's own length
/// counts, as wireguard-go and tun-rs also do.
fn split(
    p: &[u8],
    gso_type: u8,
    gso: usize,
    iph: usize,
    csum_offset: usize,
    partial: bool,
    max_segments: usize,
) -> Result<Kind, TsoError> {
    let version = p[0] >> 4;
    let ecn = gso_type & VNET_GSO_ECN != 0;
    let (proto, v6) = match (gso_type & !VNET_GSO_ECN, version) {
        (VNET_GSO_TCPV4, 4) => (TCP, false),
        (VNET_GSO_TCPV6, 6) => (TCP, true),
        (VNET_GSO_UDP_L4, _) if ecn => return Err(TsoError::UdpEcn),
        (VNET_GSO_UDP_L4, 4 | 6) => (UDP, version == 6),
        (VNET_GSO_TCPV4 | VNET_GSO_TCPV6 | VNET_GSO_UDP_L4, _) => {
            return Err(TsoError::Version { gso_type, version });
        }
        _ => return Err(TsoError::GsoType(gso_type)),
    };
    let headers = |l4h| TsoError::Headers {
        iph,
        l4h,
        len: p.len(),
    };
    // IPv4: the header the checksum covers is the one its IHL says.
    let iph_ok = if v6 {
        iph >= 40
    } else {
        iph >= 20 && iph == usize::from(p[0] & 0x0f) * 4
    };
    if !iph_ok || csum_offset != csum_at(proto) {
        return Err(headers(0));
    }
    let l4h = if proto == TCP {
        let l4h = p.get(iph + 12).map_or(0, |b| usize::from(b >> 4) * 4);
        if l4h < 20 {
            return Err(headers(l4h));
        }
        l4h
    } else {
        8
    };
    let hdr = iph + l4h;
    if hdr >= p.len() {
        return Err(headers(l4h));
    }
    if gso == 0 {
        return Err(TsoError::ZeroSize);
    }
    let payload = p.len() - hdr;
    let segments = payload.div_ceil(gso);
    if segments > max_segments {
        return Err(TsoError::TooMany {
            segments,
            max: max_segments,
        });
    }
    // The length fields hold 16 bits: IPv4's the whole packet, IPv6's and
    // UDP's all past the fixed IPv6 header; and the pseudo-header sum is
    // adjusted from the request's transport length, 16 bits as well.
    let longest = hdr + gso.min(payload);
    if longest - if v6 { 40 } else { 0 } > usize::from(u16::MAX)
        || p.len() - iph > usize::from(u16::MAX)
    {
        return Err(TsoError::TooLong { len: p.len() });
    }
    Ok(Kind::Split {
        iph,
        l4h,
        gso,
        proto,
        v6,
        segments,
        partial,
    })
}

/// A segmentation request as the kernel hands one over, for tests and the
/// fuzz check: TCP or UDP `packet` (IPv4 without options or IPv6 without
/// extension headers: see [`super::gro::layout`]) behind a header asking
/// for `gso_type` in `gso`-byte segments, the transport checksum field
/// holding the pseudo-header sum (`CHECKSUM_PARTIAL`). `None` for another
/// packet.
pub fn request(packet: &[u8], gso_type: u8, gso: usize) -> Option<Vec<u8>> {
    let (iph, l4h, proto) = super::gro::layout(packet)?;
    let mut read = vec![0; VNET_HDR_LEN];
    let fields = [iph + l4h, gso, iph, csum_at(proto)];
    write_vnet_header(&mut read, VNET_F_NEEDS_CSUM, gso_type, fields);
    read.extend_from_slice(packet);
    let field = VNET_HDR_LEN + iph + csum_at(proto);
    let partial = pseudo_sum(packet, proto, packet.len() - iph) as u16;
    read[field..field + 2].copy_from_slice(&partial.to_be_bytes());
    Some(read)
}

/// Where the checksum field of a TCP or UDP header is.
fn csum_at(proto: u8) -> usize {
    if proto == TCP {
        TCP_CSUM_AT
    } else {
        UDP_CSUM_AT
    }
}

#[cfg(test)]
mod tests;
