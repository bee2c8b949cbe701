//! `kith::wire::parse_ip` on arbitrary inner packets.
//!
//! Invariant: an accepted header's total length fits the input and the
//! minimum header, its addresses are the bytes at the RFC 791 / RFC 8200
//! offsets, and parsing the packet with its padding stripped gives the same
//! header (the core strips padding with `total_len`). Errors are truthful.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use kith::wire::{IpError, parse_ip};

pub fn run(data: &[u8]) {
    match parse_ip(data) {
        Ok(h) => {
            assert!(h.total_len <= data.len());
            match data[0] >> 4 {
                4 => {
                    assert!(h.total_len >= 20);
                    assert_eq!(
                        h.total_len,
                        usize::from(u16::from_be_bytes([data[2], data[3]]))
                    );
                    let v4 = |at: usize| {
                        IpAddr::V4(Ipv4Addr::new(
                            data[at],
                            data[at + 1],
                            data[at + 2],
                            data[at + 3],
                        ))
                    };
                    assert_eq!(h.src, v4(12));
                    assert_eq!(h.dst, v4(16));
                }
                6 => {
                    assert!(h.total_len >= 40);
                    assert_eq!(
                        h.total_len,
                        40 + usize::from(u16::from_be_bytes([data[4], data[5]]))
                    );
                    let v6 = |at: usize| {
                        let mut b = [0u8; 16];
                        b.copy_from_slice(&data[at..at + 16]);
                        IpAddr::V6(Ipv6Addr::from(b))
                    };
                    assert_eq!(h.src, v6(8));
                    assert_eq!(h.dst, v6(24));
                }
                v => panic!("accepted IP version {v}"),
            }
            // Stripping the padding keeps the header valid and unchanged.
            assert_eq!(parse_ip(&data[..h.total_len]), Ok(h));
        }
        Err(IpError::Version(v)) => {
            assert_eq!(v, data.first().map_or(0, |b| b >> 4));
            assert!(v != 4 && v != 6);
        }
        Err(IpError::TooShort { version, len }) => {
            assert_eq!(len, data.len());
            assert_eq!(version, data[0] >> 4);
            let min = if version == 4 { 20 } else { 40 };
            assert!(len < min);
        }
        Err(IpError::Truncated { claimed, have }) => {
            assert_eq!(have, data.len());
            let min = if data[0] >> 4 == 4 { 20 } else { 40 };
            assert!(claimed > have || claimed < min);
        }
    }
}
