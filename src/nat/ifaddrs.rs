//! This host's own addresses: the LAN candidates a node publishes.

use std::net::Ipv4Addr;

/// IPv4 addresses of the interfaces that are up, except loopback,
/// link-local and the kith interface itself (its overlay address is not a
/// way to reach us from outside). 198.18.0.0/15 and private ranges are kept
/// on purpose: a LAN address is exactly what a peer on the same LAN needs,
/// and the lab's emulated internet lives in 198.18.0.0/15.
pub fn local_ipv4(exclude_interface: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below; we only
    // read entries whose address family says they hold a sockaddr_in.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut cur = head;
        while !cur.is_null() {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || (ifa.ifa_flags & libc::IFF_UP as u32) == 0 {
                continue;
            }
            if i32::from((*ifa.ifa_addr).sa_family) != libc::AF_INET {
                continue;
            }
            let name = std::ffi::CStr::from_ptr(ifa.ifa_name).to_string_lossy();
            if name == exclude_interface {
                continue;
            }
            let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            if ip.is_loopback() || ip.is_link_local() || ip.is_unspecified() {
                continue;
            }
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
        libc::freeifaddrs(head);
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn never_reports_loopback() {
        let addrs = super::local_ipv4("kith-none");
        assert!(addrs.iter().all(|a| !a.is_loopback()));
    }
}
