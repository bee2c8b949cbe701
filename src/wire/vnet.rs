//! The virtio-net header in front of every packet on an `IFF_VNET_HDR` TUN
//! device (`struct virtio_net_hdr`, native byte order): the vocabulary
//! both directions of offload share, [`super::gro`] writing it over merged
//! packets and [`super::tso`] reading it off segmentation requests.

/// The header's length (without the `num_buffers` field, which TUN leaves
/// out unless asked for it).
pub const VNET_HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the transport checksum is left to the
/// reader, from `csum_start`, written at `csum_start + csum_offset` (the
/// field holds the pseudo-header sum).
pub const VNET_F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the kernel took the packet as checked
/// (its checksum field holds a whole checksum, not a pseudo-header sum).
pub const VNET_F_DATA_VALID: u8 = 2;
pub const VNET_GSO_NONE: u8 = 0;
pub const VNET_GSO_TCPV4: u8 = 1;
pub const VNET_GSO_TCPV6: u8 = 4;
pub const VNET_GSO_UDP_L4: u8 = 5;
/// Or'ed into a TCP GSO type: the flow uses ECN (CWR on the first segment).
pub const VNET_GSO_ECN: u8 = 0x80;

/// The header's fields: flags, GSO type, header length, GSO size, checksum
/// start and offset. `None` if `buf` is shorter than a header.
pub fn vnet_header(buf: &[u8]) -> Option<(u8, u8, u16, u16, u16, u16)> {
    let h = buf.get(..VNET_HDR_LEN)?;
    let f = |i: usize| u16::from_ne_bytes([h[i], h[i + 1]]);
    Some((h[0], h[1], f(2), f(4), f(6), f(8)))
}

/// Writes a header into `buf[..VNET_HDR_LEN]`: `flags`, `gso_type`, then
/// header length, GSO size, checksum start and offset.
pub fn write_vnet_header(buf: &mut [u8], flags: u8, gso_type: u8, fields: [usize; 4]) {
    buf[0] = flags;
    buf[1] = gso_type;
    for (i, v) in fields.into_iter().enumerate() {
        buf[2 + 2 * i..4 + 2 * i].copy_from_slice(&(v as u16).to_ne_bytes());
    }
}
