//! `kith::nat::portmap::route::parse_default_gateway` on arbitrary text
//! (the `/proc/net/route` parser of port mapping's gateway discovery).
//!
//! Invariant: it never panics, and a route it returns comes from the text:
//! a line (after the header) whose first field is the interface and whose
//! gateway field is the address re-encoded as the kernel prints it; the
//! gateway is never 0.0.0.0.
//!
//! The PCP, NAT-PMP and UPnP response parsers belong to `crab_nat` and
//! `igd-next`: kith does not parse those bytes itself.

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(route) = kith::nat::portmap::route::parse_default_gateway(text) else {
        return;
    };
    assert!(!route.gateway.is_unspecified());
    let hex = format!("{:08X}", u32::from_ne_bytes(route.gateway.octets()));
    let found = text.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        fields.next() == Some(route.iface.as_str())
            && fields.nth(1).is_some_and(|g| g.eq_ignore_ascii_case(&hex))
    });
    assert!(found, "route {route:?} not in the text");
}
