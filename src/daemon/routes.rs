//! Kernel routes for the peers' `allowed_ips`, and the policy routing that
//! keeps kith's own traffic out of a default route through the tunnel.
//!
//! Owns: the routes kith adds through its TUN device, the policy rules of
//! its routing table, and the firewall mark on kith's own sockets. Must not:
//! decide what is routed (that is the config's `allowed_ips`), or touch
//! routes and rules it did not add (other than stale ones a crashed kith of
//! the same network left behind).
//!
//! [`Routes`] is a desired-state sync over rtnetlink (the `netlink-sys` and
//! `netlink-packet-route` crates tun-rs already uses):
//! - [`Routes::new`] removes the rules and table routes a kith of this
//!   network that did not exit cleanly left behind;
//! - [`Routes::apply`] takes every peer's `allowed_ips` ([`prefixes`]),
//!   adds the routes that are missing and removes the ones it added earlier
//!   that are no longer wanted. Calling it again with the same list costs no
//!   system call, so a config reload may call it whatever changed;
//! - [`Routes::clear`] (and `Drop`) removes everything it added.
//!
//! Where a prefix goes (the design follows wg-quick, docs/architecture.md,
//! "Routes and the default route"):
//! - a prefix inside one of the interface's own prefixes is already routed
//!   by the kernel's prefix route for that address: nothing to add;
//! - any other prefix except a default route: the main table, `dev kith0`,
//!   so it competes with the host's own routes by longest prefix;
//! - `0.0.0.0/0` and `::/0` (an exit node): kith's own table ([`table_id`])
//!   with two rules per address family, `lookup main suppress_prefixlength
//!   0` (the host's specific routes still win) then `not fwmark FWMARK
//!   lookup <table>`. kith marks its own sockets with [`FWMARK`] ([`mark`]),
//!   so its underlay traffic (the data socket and STUN on it, hard-NAT pool
//!   sockets, relay TCP connections, the DHT's socket via
//!   [`mark_udp_port`]) skips the table and leaves through the host's real
//!   default route. Port mapping talks to the on-link gateway, which the
//!   main table's connected route covers before the table is consulted.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{AsRawFd as _, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::route::{
    RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, constants::NETLINK_ROUTE};
use tracing::{debug, info, warn};

/// The firewall mark on every socket kith opens for its underlay, the same
/// for every kith network on a host ("kith" in ASCII): one network's
/// traffic never enters another's exit node either.
pub const FWMARK: u32 = 0x6b69_7468;
/// `rtm_protocol` / `FRA_PROTOCOL` of the routes and rules kith adds, so
/// `ip route show proto 107` lists them and a restart finds its rules.
/// Unassigned in `/etc/iproute2/rt_protos` ('k').
pub const RTPROT_KITH: u8 = 107;
/// Rule priorities: just before the main table's rule (32766), like
/// wg-quick's, so rules an administrator added with lower numbers win.
pub const PRIO_SUPPRESS: u32 = 32700;
pub const PRIO_TABLE: u32 = 32701;
const RT_TABLE_MAIN: u32 = 254;
/// A kernel that does not answer within this long is not going to.
const NETLINK_TIMEOUT: Duration = Duration::from_secs(5);

/// kith's routing table for a network: its listen port, as wg-quick uses
/// 51820 for its port 51820, so `ip route show table 51871` reads as what
/// it is. Two networks on one host cannot share a port; their interface
/// names differ too. With `listen_port = 0` (any port, so it changes with
/// every start) or a port that is one of the kernel's own table ids
/// (252–255), the table is 65536 plus a 16-bit hash of the interface name:
/// stable across restarts, so a restart still finds a crashed run's rules,
/// and never equal to a port-derived id.
pub fn table_id(listen_port: u16, interface: &str) -> u32 {
    match listen_port {
        0 | 252..=255 => 0x1_0000 + u32::from(fnv1a16(interface)),
        port => u32::from(port),
    }
}

/// FNV-1a folded to 16 bits: a stable, dependency-free hash.
fn fnv1a16(text: &str) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    ((h >> 16) ^ (h & 0xffff)) as u16
}

/// Every peer's `allowed_ips`, in config order: what [`Routes::apply`] takes.
pub fn prefixes(peers: &[crate::config::Peer]) -> Vec<IpNet> {
    peers
        .iter()
        .flat_map(|p| p.allowed_ips.iter().copied())
        .collect()
}

// ------------------------------------------------------------- socket marks

/// errno of the first [`mark`] that failed (0: none did). A default route
/// through the tunnel is refused once kith's own packets cannot be told
/// apart from the ones it must carry.
static MARK_ERROR: AtomicI32 = AtomicI32::new(0);

/// Put [`FWMARK`] on a socket kith opens for its underlay. Needs
/// CAP_NET_ADMIN, which the daemon has for its TUN device; a failure is
/// remembered (see [`Routes::apply`]) and returned.
pub fn mark(fd: RawFd) -> io::Result<()> {
    // The kernel reads SO_MARK as a u32; FWMARK is below 2^31.
    let result =
        super::socket::setsockopt(fd, libc::SOL_SOCKET, libc::SO_MARK, FWMARK as libc::c_int);
    if let Err(e) = &result {
        let _ = MARK_ERROR.compare_exchange(
            0,
            e.raw_os_error().unwrap_or(libc::EPERM),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
    result
}

/// [`mark`] where a failure is only worth a debug line: the socket still
/// works, and a default route through the tunnel is then refused with the
/// reason.
pub fn mark_or_log(fd: RawFd, what: &str) {
    if let Err(e) = mark(fd) {
        debug!(socket = what, error = %e, "cannot set SO_MARK on a socket");
    }
}

/// Mark the IPv4 UDP socket of this process bound to `port`: the DHT's,
/// which the `mainline` crate opens and keeps to itself. Found among
/// `/proc/self/fd` by its bound port (the DHT's port differs from every
/// other socket of ours: the kernel gives each its own). Returns how many
/// sockets were marked.
pub fn mark_udp_port(port: u16) -> io::Result<usize> {
    let mut marked = 0;
    for entry in std::fs::read_dir("/proc/self/fd")?.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"));
        if is_socket && udp_v4_port(fd) == Some(port) {
            mark(fd)?;
            marked += 1;
        }
    }
    Ok(marked)
}

/// The local port of `fd` if it is a bound IPv4 UDP socket.
fn udp_v4_port(fd: RawFd) -> Option<u16> {
    let mut kind: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `kind`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut kind as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 || kind != libc::SOCK_DGRAM {
        return None;
    }
    // SAFETY: sockaddr_in is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: getsockname writes at most `len` bytes into `addr`.
    let rc =
        unsafe { libc::getsockname(fd, (&mut addr as *mut libc::sockaddr_in).cast(), &mut len) };
    let full = len as usize == std::mem::size_of::<libc::sockaddr_in>();
    (rc == 0 && full && libc::c_int::from(addr.sin_family) == libc::AF_INET)
        .then(|| u16::from_be(addr.sin_port))
}

// ------------------------------------------------------------------ errors

/// Which routing table a route is in, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Main,
    Kith(u32),
}

impl Table {
    fn id(self) -> u32 {
        match self {
            Self::Main => RT_TABLE_MAIN,
            Self::Kith(t) => t,
        }
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Main => f.write_str("the main table"),
            Self::Kith(t) => write!(f, "table {t}"),
        }
    }
}

/// A route or rule kith could not change, saying what to check.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(
        "cannot open a netlink socket to manage the routes of {dev}: {source}; kith needs \
         CAP_NET_ADMIN"
    )]
    Netlink { dev: String, source: io::Error },
    #[error("cannot {op} the route {prefix} through {dev} in {table}: {source}{}", route_hint(.source, *.prefix, .dev, *.table))]
    Route {
        op: &'static str,
        prefix: IpNet,
        dev: String,
        table: Table,
        source: io::Error,
    },
    #[error("cannot {op} the {family} rule `{rule}` for {dev}: {source}{}", rule_hint(.source, .family))]
    Rule {
        op: &'static str,
        family: &'static str,
        rule: String,
        dev: String,
        source: io::Error,
    },
    #[error(
        "not routing {prefix} through {dev}: kith could not mark its own sockets (SO_MARK: \
         {source}), so its own packets would loop into the tunnel; kith needs CAP_NET_ADMIN"
    )]
    Unmarked {
        prefix: IpNet,
        dev: String,
        source: io::Error,
    },
}

fn route_hint(e: &io::Error, prefix: IpNet, dev: &str, table: Table) -> String {
    let show = match table {
        Table::Main => format!("ip route show {prefix}"),
        Table::Kith(t) => format!("ip route show table {t}"),
    };
    match e.raw_os_error() {
        Some(libc::EEXIST) => format!(
            "; another route to {prefix} is already there (`{show}`): remove it, or remove \
             {prefix} from the peer's allowed_ips"
        ),
        Some(libc::EPERM | libc::EACCES) => "; kith needs CAP_NET_ADMIN".to_string(),
        Some(libc::ENETDOWN) => format!("; {dev} is down (`ip link show {dev}`)"),
        Some(libc::ENODEV) => format!("; {dev} is gone"),
        Some(libc::EAFNOSUPPORT | libc::EOPNOTSUPP) if prefix.addr().is_ipv6() => {
            "; is IPv6 off on this host (sysctl net.ipv6.conf.all.disable_ipv6)?".to_string()
        }
        _ => format!("; check `{show}`"),
    }
}

fn rule_hint(e: &io::Error, family: &str) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => "; kith needs CAP_NET_ADMIN".to_string(),
        Some(libc::EEXIST) => {
            "; another kith on this host uses the same table (two networks with the same \
             listen_port?): check `ip rule show`"
                .to_string()
        }
        Some(libc::EAFNOSUPPORT | libc::EOPNOTSUPP) => format!(
            "; this kernel has no {family} policy routing (CONFIG_IP_MULTIPLE_TABLES / \
             CONFIG_IPV6_MULTIPLE_TABLES)"
        ),
        _ => "; check `ip rule show` (kith needs Linux 4.17 or newer)".to_string(),
    }
}

// -------------------------------------------------------------- the plan

/// What is routed through the device for `desired` (every peer's
/// `allowed_ips`): each prefix once, in network form, except those inside
/// one of the interface's own prefixes (`own`), which the kernel's prefix
/// route of that address already covers.
fn wanted(own: &[IpNet], desired: &[IpNet]) -> BTreeSet<IpNet> {
    desired
        .iter()
        .map(IpNet::trunc)
        .filter(|p| !own.iter().any(|o| o.trunc().contains(p)))
        .collect()
}

/// Routes to add and to remove to go from `installed` to `wanted`, in the
/// order to do it (removals first, so a moved prefix never has two routes).
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    remove: Vec<IpNet>,
    add: Vec<IpNet>,
}

fn plan(installed: &BTreeSet<IpNet>, wanted: &BTreeSet<IpNet>) -> Plan {
    Plan {
        remove: installed.difference(wanted).copied().collect(),
        add: wanted.difference(installed).copied().collect(),
    }
}

fn is_default(p: &IpNet) -> bool {
    p.prefix_len() == 0
}

/// The address families (IPv4, IPv6) with a default route in `set`.
fn default_families(set: &BTreeSet<IpNet>) -> [bool; 2] {
    [
        set.iter().any(|p| is_default(p) && p.addr().is_ipv4()),
        set.iter().any(|p| is_default(p) && p.addr().is_ipv6()),
    ]
}

const FAMILIES: [AddressFamily; 2] = [AddressFamily::Inet, AddressFamily::Inet6];

fn family_name(f: AddressFamily) -> &'static str {
    if f == AddressFamily::Inet6 {
        "IPv6"
    } else {
        "IPv4"
    }
}

/// The kith-relevant parts of a policy rule the kernel listed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RuleInfo {
    family: AddressFamily,
    table: u32,
    protocol: u8,
    suppress_prefixlen: Option<u32>,
}

impl RuleInfo {
    fn parse(m: &RuleMessage) -> Self {
        let mut r = Self {
            family: m.header.family,
            table: u32::from(m.header.table),
            protocol: 0,
            suppress_prefixlen: None,
        };
        for a in &m.attributes {
            match a {
                RuleAttribute::Table(t) => r.table = *t,
                RuleAttribute::Protocol(p) => r.protocol = u8::from(*p),
                RuleAttribute::SuppressPrefixLen(s) => r.suppress_prefixlen = Some(*s),
                _ => {}
            }
        }
        r
    }

    fn is_kith(&self) -> bool {
        self.protocol == RTPROT_KITH
    }

    /// A kith rule that sends to a kith table (not main).
    fn is_kith_table(&self) -> bool {
        self.is_kith() && self.table != RT_TABLE_MAIN
    }

    fn is_kith_suppress(&self) -> bool {
        self.is_kith() && self.table == RT_TABLE_MAIN && self.suppress_prefixlen.is_some()
    }
}

/// Which of the listed `rules` to delete so that the rules of `table` are
/// gone and a family's shared suppress rule stays only while some kith
/// table rule of that family (another network's) still needs it.
fn rules_to_delete(rules: &[RuleInfo], table: u32) -> Vec<usize> {
    let ours = |r: &RuleInfo| r.is_kith() && r.table == table;
    let mut out: Vec<usize> = (0..rules.len()).filter(|&i| ours(&rules[i])).collect();
    for family in FAMILIES {
        let others = rules
            .iter()
            .any(|r| r.family == family && r.is_kith_table() && !ours(r));
        if !others {
            out.extend(
                (0..rules.len())
                    .filter(|&i| rules[i].family == family && rules[i].is_kith_suppress()),
            );
        }
    }
    out
}

// ---------------------------------------------------------------- netlink

/// A blocking rtnetlink socket. The kernel answers route and rule requests
/// synchronously, so a call takes microseconds and may run on the
/// daemon's task.
struct Netlink {
    sock: Socket,
    seq: u32,
}

impl Netlink {
    fn open() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        // Dumps filtered by table in the kernel (4.20+); older ones send
        // everything and we filter.
        let _ = sock.set_netlink_get_strict_chk(true);
        let timeout = libc::timeval {
            tv_sec: NETLINK_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: the socket is open; the value is a plain timeval.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { sock, seq: 0 })
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        req.finalize();
        let mut buf = vec![0; req.buffer_len()];
        req.serialize(&mut buf);
        self.sock.send(&buf, 0)?;
        Ok(self.seq)
    }

    /// The messages of one datagram that answer request `seq`. Messages
    /// that do not parse (a newer kernel's attribute layout) are skipped:
    /// acks and dump ends always parse.
    fn recv(&mut self, seq: u32) -> io::Result<Vec<NetlinkPayload<RouteNetlinkMessage>>> {
        let (buf, _) = self.sock.recv_from_full()?;
        let mut out = Vec::new();
        let mut at = 0;
        while at < buf.len() {
            let Ok(nl) = NetlinkBuffer::new_checked(&buf[at..]) else {
                break;
            };
            let len = nl.length() as usize;
            let next = at + ((len + 3) & !3);
            if nl.sequence_number() == seq {
                match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[at..at + len]) {
                    Ok(m) => out.push(m.payload),
                    Err(e) => debug!(error = %e, "skipping a netlink message that does not parse"),
                }
            }
            if len == 0 {
                break;
            }
            at = next;
        }
        Ok(out)
    }

    /// Send a change and wait for the kernel's answer.
    fn change(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        let seq = self.send(msg, flags | NLM_F_ACK)?;
        loop {
            for payload in self.recv(seq)? {
                if let NetlinkPayload::Error(e) = payload {
                    return match e.code {
                        None => Ok(()),
                        Some(_) => Err(e.to_io()),
                    };
                }
            }
        }
    }

    fn dump(&mut self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, NLM_F_DUMP)?;
        let mut out = Vec::new();
        loop {
            for payload in self.recv(seq)? {
                match payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    _ => {}
                }
            }
        }
    }

    fn rules(&mut self) -> io::Result<Vec<RuleMessage>> {
        let mut req = RuleMessage::default();
        req.header.family = AddressFamily::Unspec;
        Ok(self
            .dump(RouteNetlinkMessage::GetRule(req))?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRule(r) => Some(r),
                _ => None,
            })
            .collect())
    }

    /// Routes of `table`, both families.
    fn routes_in(&mut self, table: u32) -> io::Result<Vec<RouteMessage>> {
        let mut out = Vec::new();
        for family in FAMILIES {
            let mut req = RouteMessage::default();
            req.header.address_family = family;
            req.header.table = table_u8(table);
            req.attributes.push(RouteAttribute::Table(table));
            for m in self.dump(RouteNetlinkMessage::GetRoute(req))? {
                if let RouteNetlinkMessage::NewRoute(r) = m
                    && route_table(&r) == table
                {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }
}

/// The header's 8-bit table field: the id itself below 256, else
/// `RT_TABLE_UNSPEC` and the id in the `RTA_TABLE`/`FRA_TABLE` attribute.
fn table_u8(table: u32) -> u8 {
    u8::try_from(table).unwrap_or(0)
}

fn route_table(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

fn family_of(p: &IpNet) -> AddressFamily {
    match p {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    }
}

/// `ip route add|del <prefix> dev <ifindex> table <table> proto kith`.
fn route_message(prefix: IpNet, ifindex: u32, table: u32, add: bool) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header = RouteHeader {
        address_family: family_of(&prefix),
        destination_prefix_length: prefix.prefix_len(),
        table: table_u8(table),
        protocol: RouteProtocol::from(RTPROT_KITH),
        ..RouteHeader::default()
    };
    if add {
        // A route with no gateway is on-link, as `ip route add … dev`
        // makes it (IPv6 ignores the scope).
        m.header.scope = if prefix.addr().is_ipv4() {
            RouteScope::Link
        } else {
            RouteScope::Universe
        };
        m.header.kind = RouteType::Unicast;
    } else {
        // Any scope and type: as `ip route del` asks.
        m.header.scope = RouteScope::NoWhere;
        m.header.kind = RouteType::Unspec;
    }
    if prefix.prefix_len() > 0 {
        m.attributes
            .push(RouteAttribute::Destination(prefix.addr().into()));
    }
    m.attributes.push(RouteAttribute::Oif(ifindex));
    m.attributes.push(RouteAttribute::Table(table));
    m
}

/// The two rules of one family, as `ip rule` would print them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuleKind {
    /// `lookup main suppress_prefixlength 0`: the host's routes other than
    /// its default win over our table.
    Suppress,
    /// `not fwmark FWMARK lookup <table>`: everything but kith's own
    /// traffic may take the table's default route.
    Table,
}

fn rule_message(family: AddressFamily, kind: RuleKind, table: u32) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = family;
    m.header.action = RuleAction::ToTable;
    m.attributes
        .push(RuleAttribute::Protocol(RouteProtocol::from(RTPROT_KITH)));
    match kind {
        RuleKind::Suppress => {
            m.header.table = table_u8(RT_TABLE_MAIN);
            m.attributes.push(RuleAttribute::Priority(PRIO_SUPPRESS));
            m.attributes.push(RuleAttribute::Table(RT_TABLE_MAIN));
            m.attributes.push(RuleAttribute::SuppressPrefixLen(0));
        }
        RuleKind::Table => {
            m.header.table = table_u8(table);
            m.header.flags = RuleFlags::Invert;
            m.attributes.push(RuleAttribute::Priority(PRIO_TABLE));
            m.attributes.push(RuleAttribute::FwMark(FWMARK));
            m.attributes.push(RuleAttribute::FwMask(u32::MAX));
            m.attributes.push(RuleAttribute::Table(table));
        }
    }
    m
}

fn rule_text(kind: RuleKind, table: u32) -> String {
    match kind {
        RuleKind::Suppress => {
            format!("priority {PRIO_SUPPRESS} lookup main suppress_prefixlength 0")
        }
        RuleKind::Table => format!("priority {PRIO_TABLE} not fwmark {FWMARK:#x} lookup {table}"),
    }
}

fn gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT | libc::ESRCH | libc::ENODEV)
    )
}

// ----------------------------------------------------------------- Routes

/// The routes of one TUN device. See the module docs.
pub struct Routes {
    nl: Netlink,
    dev: String,
    ifindex: u32,
    table: u32,
    /// The interface's own prefixes (their routes are the kernel's).
    own: Vec<IpNet>,
    /// What this instance added and has not removed.
    installed: BTreeSet<IpNet>,
    /// Families (IPv4, IPv6) whose two rules are in place.
    rules: [bool; 2],
}

impl Routes {
    /// Routes through `dev` (index `ifindex`), whose own addresses are
    /// `own`; default routes go to `table` ([`table_id`]). Removes the
    /// rules and the routes of `table` that an earlier run of this network
    /// left behind (killed, or crashed: a clean exit removes them).
    pub fn new(dev: &str, ifindex: u32, table: u32, own: &[IpNet]) -> Result<Self, RouteError> {
        let nl = Netlink::open().map_err(|source| RouteError::Netlink {
            dev: dev.to_string(),
            source,
        })?;
        let mut routes = Self {
            nl,
            dev: dev.to_string(),
            ifindex,
            table,
            own: own.iter().map(IpNet::trunc).collect(),
            installed: BTreeSet::new(),
            rules: [false; 2],
        };
        routes.sweep();
        Ok(routes)
    }

    /// Delete what a previous run of this network left: its rules (our
    /// table id), the routes in our table, and a suppress rule no other
    /// kith network needs.
    fn sweep(&mut self) {
        let mut removed = 0;
        match self.nl.rules() {
            Ok(list) => {
                let infos: Vec<RuleInfo> = list.iter().map(RuleInfo::parse).collect();
                for i in rules_to_delete(&infos, self.table) {
                    match self
                        .nl
                        .change(RouteNetlinkMessage::DelRule(list[i].clone()), 0)
                    {
                        Ok(()) => removed += 1,
                        Err(e) if gone(&e) => {}
                        Err(e) => {
                            warn!(interface = %self.dev, error = %e, "cannot remove a stale routing rule")
                        }
                    }
                }
            }
            Err(e) => {
                warn!(interface = %self.dev, error = %e, "cannot list routing rules to remove stale ones")
            }
        }
        match self.nl.routes_in(self.table) {
            Ok(list) => {
                for r in list {
                    match self.nl.change(RouteNetlinkMessage::DelRoute(r), 0) {
                        Ok(()) => removed += 1,
                        Err(e) if gone(&e) => {}
                        Err(e) => {
                            warn!(table = self.table, error = %e, "cannot remove a stale route")
                        }
                    }
                }
            }
            Err(e) => {
                warn!(table = self.table, error = %e, "cannot list the routes of kith's table")
            }
        }
        if removed > 0 {
            info!(
                interface = %self.dev,
                table = self.table,
                removed,
                "removed routing rules and routes an earlier kith left behind (it did not exit cleanly)"
            );
        }
    }

    /// Make the routes through the device match `desired` (every peer's
    /// `allowed_ips`, see [`prefixes`]): add what is missing, remove what
    /// this instance added that is no longer wanted. Idempotent: a second
    /// call with the same list makes no system call. A prefix that fails is
    /// left out (and tried again by the next call); the others still go in.
    pub fn apply(&mut self, desired: &[IpNet]) -> Result<(), Vec<RouteError>> {
        let wanted = wanted(&self.own, desired);
        let plan = plan(&self.installed, &wanted);
        if plan == Plan::default() {
            return Ok(());
        }
        let mut errors = Vec::new();
        let mut removed = 0;
        for prefix in &plan.remove {
            match self.change_route(*prefix, false) {
                Ok(()) => {
                    self.installed.remove(prefix);
                    removed += 1;
                }
                Err(e) => errors.push(e),
            }
        }
        let keep_rules = default_families(&wanted);
        for (i, family) in FAMILIES.into_iter().enumerate() {
            if self.rules[i] && !keep_rules[i] {
                errors.extend(self.remove_rules(family));
            }
        }
        let mut added = 0;
        for prefix in &plan.add {
            match self.add(*prefix) {
                Ok(()) => added += 1,
                Err(e) => errors.push(e),
            }
        }
        if added + removed > 0 {
            let routed: Vec<String> = self.installed.iter().map(ToString::to_string).collect();
            info!(
                interface = %self.dev,
                routes = %routed.join(", "),
                added,
                removed,
                "routes through the tunnel updated"
            );
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Add one route; for a default route, its family's rules first.
    fn add(&mut self, prefix: IpNet) -> Result<(), RouteError> {
        if is_default(&prefix) {
            let code = MARK_ERROR.load(Ordering::Relaxed);
            if code != 0 {
                return Err(RouteError::Unmarked {
                    prefix,
                    dev: self.dev.clone(),
                    source: io::Error::from_raw_os_error(code),
                });
            }
            let i = usize::from(prefix.addr().is_ipv6());
            if !self.rules[i] {
                self.add_rules(FAMILIES[i])?;
            }
        }
        self.change_route(prefix, true)?;
        self.installed.insert(prefix);
        if is_default(&prefix) {
            info!(
                interface = %self.dev,
                route = %prefix,
                table = self.table,
                fwmark = %format_args!("{FWMARK:#x}"),
                "default route through the tunnel; kith's own traffic bypasses it"
            );
            if prefix.addr().is_ipv4()
                && let Some(warning) = strict_rp_filter()
            {
                warn!("{warning}");
            }
        }
        Ok(())
    }

    fn change_route(&mut self, prefix: IpNet, add: bool) -> Result<(), RouteError> {
        let table = if is_default(&prefix) {
            Table::Kith(self.table)
        } else {
            Table::Main
        };
        let msg = route_message(prefix, self.ifindex, table.id(), add);
        let result = if add {
            self.nl.change(
                RouteNetlinkMessage::NewRoute(msg),
                NLM_F_CREATE | NLM_F_EXCL,
            )
        } else {
            self.nl.change(RouteNetlinkMessage::DelRoute(msg), 0)
        };
        match result {
            Ok(()) => Ok(()),
            // Already gone (the device went down and took it): the goal.
            Err(e) if !add && gone(&e) => Ok(()),
            Err(source) => Err(RouteError::Route {
                op: if add { "add" } else { "remove" },
                prefix,
                dev: self.dev.clone(),
                table,
                source,
            }),
        }
    }

    fn add_rules(&mut self, family: AddressFamily) -> Result<(), RouteError> {
        for kind in [RuleKind::Suppress, RuleKind::Table] {
            let msg = rule_message(family, kind, self.table);
            match self
                .nl
                .change(RouteNetlinkMessage::NewRule(msg), NLM_F_CREATE | NLM_F_EXCL)
            {
                Ok(()) => {}
                // The suppress rule is shared by every kith network.
                Err(e) if kind == RuleKind::Suppress && e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(source) => {
                    let err = self.rule_error("add", family, kind, source);
                    let _ = self.remove_rules(family);
                    return Err(err);
                }
            }
        }
        self.rules[usize::from(family == AddressFamily::Inet6)] = true;
        Ok(())
    }

    /// Remove this network's rule of `family`, and the shared suppress rule
    /// unless another kith network still has a table rule.
    fn remove_rules(&mut self, family: AddressFamily) -> Vec<RouteError> {
        let mut errors = Vec::new();
        let msg = rule_message(family, RuleKind::Table, self.table);
        match self.nl.change(RouteNetlinkMessage::DelRule(msg), 0) {
            Ok(()) => {}
            Err(e) if gone(&e) => {}
            Err(e) => errors.push(self.rule_error("remove", family, RuleKind::Table, e)),
        }
        let others = match self.nl.rules() {
            Ok(list) => list
                .iter()
                .map(RuleInfo::parse)
                .any(|r| r.family == family && r.is_kith_table() && r.table != self.table),
            // Unknown: keep the shared rule rather than break another network.
            Err(_) => true,
        };
        if !others {
            let msg = rule_message(family, RuleKind::Suppress, self.table);
            match self.nl.change(RouteNetlinkMessage::DelRule(msg), 0) {
                Ok(()) => {}
                Err(e) if gone(&e) => {}
                Err(e) => errors.push(self.rule_error("remove", family, RuleKind::Suppress, e)),
            }
        }
        self.rules[usize::from(family == AddressFamily::Inet6)] = false;
        errors
    }

    fn rule_error(
        &self,
        op: &'static str,
        family: AddressFamily,
        kind: RuleKind,
        source: io::Error,
    ) -> RouteError {
        RouteError::Rule {
            op,
            family: family_name(family),
            rule: rule_text(kind, self.table),
            dev: self.dev.clone(),
            source,
        }
    }

    /// Remove every route and rule this instance added (at exit).
    pub fn clear(&mut self) -> Result<(), Vec<RouteError>> {
        if self.installed.is_empty() && self.rules == [false; 2] {
            return Ok(());
        }
        let result = self.apply(&[]);
        // Rules whose default route failed to go in are not in `installed`.
        let mut errors = result.err().unwrap_or_default();
        for (i, family) in FAMILIES.into_iter().enumerate() {
            if self.rules[i] {
                errors.extend(self.remove_rules(family));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

impl Drop for Routes {
    fn drop(&mut self) {
        if let Err(errors) = self.clear() {
            for e in errors {
                warn!("{e}");
            }
        }
    }
}

/// A warning when strict reverse-path filtering would drop the answers to
/// kith's underlay packets while a default route goes through the tunnel:
/// the check looks the sender up without kith's mark, finds the tunnel, and
/// the packet came in elsewhere. Loose mode (2, systemd's default) or off
/// (0) is fine.
fn strict_rp_filter() -> Option<String> {
    let read = |dev: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{dev}/rp_filter"))
            .ok()
            .and_then(|s| s.trim().parse::<u8>().ok())
            .unwrap_or(0)
    };
    let uplink = crate::nat::portmap::route::default_gateway().ok()?.iface;
    // The kernel uses the larger of `all` and the interface's value.
    let value = read("all").max(read(&uplink));
    (value == 1).then(|| {
        format!(
            "reverse-path filtering is strict on {uplink} (rp_filter = 1): it drops the answers \
             to kith's own packets while a default route goes through the tunnel; set \
             net.ipv4.conf.all.rp_filter and net.ipv4.conf.{uplink}.rp_filter to 2 (loose)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn set(list: &[&str]) -> BTreeSet<IpNet> {
        nets(list).into_iter().collect()
    }

    #[test]
    fn own_prefixes_are_left_to_the_kernel_and_duplicates_fold() {
        let own = nets(&["100.96.0.1/16", "fd00:6b::1/64"]);
        let got = wanted(
            &own,
            &nets(&[
                "100.96.0.2/32",
                "192.168.77.0/24",
                "fd00:6b::2/128",
                "fd00:77::/64",
                "192.168.77.0/24",
                "100.64.0.0/10",
                "0.0.0.0/0",
                "::/0",
            ]),
        );
        assert_eq!(
            got,
            set(&[
                "192.168.77.0/24",
                "fd00:77::/64",
                // Wider than our own prefix: still routed.
                "100.64.0.0/10",
                "0.0.0.0/0",
                "::/0",
            ])
        );
    }

    #[test]
    fn the_plan_adds_what_is_missing_and_removes_what_is_no_longer_wanted() {
        let installed = set(&["192.168.77.0/24", "0.0.0.0/0"]);
        let wanted = set(&["192.168.77.0/24", "10.9.0.0/16"]);
        assert_eq!(
            plan(&installed, &wanted),
            Plan {
                remove: nets(&["0.0.0.0/0"]),
                add: nets(&["10.9.0.0/16"]),
            }
        );
        // Applied, the same list again changes nothing.
        assert_eq!(plan(&wanted, &wanted), Plan::default());
        assert_eq!(
            plan(&wanted, &BTreeSet::new()),
            Plan {
                remove: nets(&["10.9.0.0/16", "192.168.77.0/24"]),
                add: vec![],
            }
        );
    }

    #[test]
    fn rules_exist_per_family_with_a_default_route() {
        assert_eq!(default_families(&set(&["10.0.0.0/8"])), [false, false]);
        assert_eq!(default_families(&set(&["0.0.0.0/0"])), [true, false]);
        assert_eq!(
            default_families(&set(&["::/0", "0.0.0.0/1"])),
            [false, true]
        );
    }

    #[test]
    fn table_ids_follow_the_port_and_avoid_the_kernels_tables() {
        assert_eq!(table_id(51871, "kith0"), 51871);
        assert_eq!(table_id(1, "kith0"), 1);
        for port in [0, 252, 253, 254, 255] {
            let t = table_id(port, "kith0");
            assert!(t > 0xffff, "port {port}: {t}");
            assert_eq!(t, table_id(port, "kith0"), "stable");
        }
        assert_ne!(table_id(0, "kith0"), table_id(0, "kith1"));
    }

    fn rule(family: AddressFamily, table: u32, protocol: u8, suppress: bool) -> RuleInfo {
        RuleInfo {
            family,
            table,
            protocol,
            suppress_prefixlen: suppress.then_some(0),
        }
    }

    #[test]
    fn a_restart_deletes_its_own_stale_rules_and_a_suppress_rule_nobody_needs() {
        use AddressFamily::{Inet, Inet6};
        let k = RTPROT_KITH;
        let rules = [
            rule(Inet, 255, 2, false),           // local: not ours
            rule(Inet, RT_TABLE_MAIN, k, true),  // shared suppress, v4
            rule(Inet, 51871, k, false),         // ours, v4
            rule(Inet, 51820, 4, false),         // someone else's table
            rule(Inet6, RT_TABLE_MAIN, k, true), // shared suppress, v6
            rule(Inet6, 51871, k, false),        // ours, v6
            rule(Inet6, 40000, k, false),        // another kith network, v6
        ];
        let mut got = rules_to_delete(&rules, 51871);
        got.sort_unstable();
        // v4: nobody else needs the suppress rule; v6: network 40000 does.
        assert_eq!(got, [1, 2, 5]);
        // Nothing of ours: only an orphaned suppress rule goes.
        let orphan = [rule(Inet, RT_TABLE_MAIN, k, true), rule(Inet, 254, 3, true)];
        assert_eq!(rules_to_delete(&orphan, 51871), [0]);
    }

    #[test]
    fn messages_carry_the_table_beyond_255_in_the_attribute() {
        let m = route_message("0.0.0.0/0".parse().unwrap(), 7, 51871, true);
        assert_eq!(m.header.table, 0);
        assert_eq!(m.header.destination_prefix_length, 0);
        assert!(m.attributes.contains(&RouteAttribute::Table(51871)));
        assert!(m.attributes.contains(&RouteAttribute::Oif(7)));
        assert!(
            !m.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Destination(_)))
        );
        let m = route_message("192.168.77.0/24".parse().unwrap(), 7, RT_TABLE_MAIN, true);
        assert_eq!(m.header.table, 254);
        assert_eq!(m.header.scope, RouteScope::Link);
        let r = rule_message(AddressFamily::Inet, RuleKind::Table, 70000);
        let info = RuleInfo::parse(&r);
        assert!(info.is_kith_table() && info.table == 70000);
        assert_eq!(r.header.flags, RuleFlags::Invert);
        let s = RuleInfo::parse(&rule_message(
            AddressFamily::Inet6,
            RuleKind::Suppress,
            70000,
        ));
        assert!(s.is_kith_suppress() && s.family == AddressFamily::Inet6);
    }

    #[test]
    fn the_dht_socket_is_found_by_its_port() {
        // A socket of this process, found and marked by port (root only:
        // SO_MARK needs CAP_NET_ADMIN; elsewhere the error says so).
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        assert_eq!(udp_v4_port(sock.as_raw_fd()), Some(port));
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(udp_v4_port(tcp.as_raw_fd()), None);
        match mark_udp_port(port) {
            Ok(n) => {
                assert_eq!(n, 1);
                let mut value: u32 = 0;
                let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
                // SAFETY: getsockopt writes at most `len` bytes into `value`.
                let rc = unsafe {
                    libc::getsockopt(
                        sock.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_MARK,
                        (&mut value as *mut u32).cast(),
                        &mut len,
                    )
                };
                assert_eq!((rc, value), (0, FWMARK));
            }
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}"),
        }
    }
}
