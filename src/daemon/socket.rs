//! The UDP socket, batched: one `sendmsg` carries a run of equal-sized
//! datagrams to one destination (UDP GSO, `UDP_SEGMENT`), one `recvmsg`
//! returns a run the kernel coalesced (UDP GRO). Design §10: syscalls, not
//! crypto, are what limit a user-space VPN, and an undersized receive buffer
//! is what makes slow ones drop packets under load.
//!
//! Both offloads are probed at run time; a kernel without them gets one
//! datagram per syscall and nothing else changes.

use std::io;
use std::mem::{MaybeUninit, size_of};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket as StdUdp};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

const BUFFER_BYTES: libc::c_int = 4 << 20;
/// Linux's limit on segments per GSO send (`UDP_MAX_SEGMENTS`).
pub const MAX_GSO_SEGMENTS: usize = 64;
/// Largest payload one GSO send may carry.
pub const MAX_GSO_BYTES: usize = 65_000;

pub(super) fn setsockopt(
    fd: libc::c_int,
    level: libc::c_int,
    opt: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: fd is an open socket; the option value is a plain c_int.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Data-path socket buffers: large enough that a burst does not drop.
/// The FORCE variants pass the sysctl cap when we hold CAP_NET_ADMIN;
/// otherwise take what the cap allows.
fn size_buffers(fd: libc::c_int) {
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if setsockopt(fd, libc::SOL_SOCKET, force, BUFFER_BYTES).is_err() {
            let _ = setsockopt(fd, libc::SOL_SOCKET, plain, BUFFER_BYTES);
        }
    }
}

/// The data socket. Non-blocking and shared: the data plane's thread
/// receives and sends data on it, the control plane sends its own
/// datagrams (handshakes, STUN) on it directly.
#[derive(Debug)]
pub struct Udp {
    sock: StdUdp,
    /// Off only when the kernel has no UDP GSO at all; a destination that
    /// refuses one send is the caller's to remember (see `daemon::data`).
    gso: AtomicBool,
    gro: bool,
}

/// One received datagram, or a run of them the kernel coalesced: split
/// `len` bytes into chunks of `segment` bytes (the last may be shorter).
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub len: usize,
    pub from: SocketAddr,
    pub segment: usize,
    /// The kernel cut it to fit the buffer: not a datagram anyone sent.
    pub truncated: bool,
}

/// How [`Udp::send_segments`] sent a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// One GSO send (or a run of one).
    Whole,
    /// One datagram per syscall; `refused` when a GSO send was refused
    /// with an error that may be this destination's (EIO, EINVAL).
    OneByOne { refused: bool },
}

impl Udp {
    pub fn bind(port: u16) -> io::Result<Self> {
        let sock = StdUdp::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))?;
        // Tunnel and STUN traffic must not follow a default route into
        // the tunnel itself.
        super::routes::mark_or_log(sock.as_raw_fd(), "data");
        Self::adopt(sock)
    }

    /// A socket opened elsewhere (a hard-NAT route's, already marked) made
    /// a data socket: large buffers, GRO where the kernel has it,
    /// non-blocking.
    pub fn adopt(sock: StdUdp) -> io::Result<Self> {
        let fd = sock.as_raw_fd();
        size_buffers(fd);
        let gro = setsockopt(fd, libc::SOL_UDP, libc::UDP_GRO, 1).is_ok();
        sock.set_nonblocking(true)?;
        Ok(Self {
            sock,
            gso: AtomicBool::new(true),
            gro,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    pub fn offloads(&self) -> (bool, bool) {
        (self.gso.load(Ordering::Relaxed), self.gro)
    }

    /// One read, `WouldBlock` when there is nothing.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        recvmsg(&self.sock, buf)
    }

    /// Send `buf` to `dst` as datagrams of `segment` bytes (the last may be
    /// shorter): one syscall with GSO (when `gso` and the kernel has it),
    /// one per datagram without.
    pub fn send_segments(
        &self,
        dst: SocketAddr,
        buf: &[u8],
        segment: usize,
        gso: bool,
    ) -> io::Result<Sent> {
        let mut refused = false;
        if buf.len() > segment && gso && self.gso.load(Ordering::Relaxed) {
            match sendmsg_gso(&self.sock, dst, buf, segment) {
                Ok(()) => return Ok(Sent::Whole),
                // The kernel has no UDP GSO: off for good.
                Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {
                    tracing::debug!(error = %e, "UDP GSO unavailable; sending one datagram per syscall");
                    self.gso.store(false, Ordering::Relaxed);
                }
                // EIO: the route's device cannot segment (e.g. checksum
                // offload off); EINVAL: this send's shape. Either may be
                // this destination's alone.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL)) => {
                    tracing::debug!(addr = %dst, error = %e, "GSO send refused; this batch goes one by one");
                    refused = true;
                }
                // EMSGSIZE: segments larger than the path MTU (relayed
                // datagrams carry a second header). GSO cannot fragment;
                // single sends can, so this batch goes one by one and GSO
                // stays on for the others.
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {}
                Err(e) => return Err(e),
            }
        } else if buf.len() <= segment {
            self.send_to(buf, dst)?;
            return Ok(Sent::Whole);
        }
        for chunk in buf.chunks(segment.max(1)) {
            self.send_to(chunk, dst)?;
        }
        Ok(Sent::OneByOne { refused })
    }

    /// One datagram, never waiting: a full socket buffer is an error
    /// (`WouldBlock`), and UDP may lose it like any other.
    pub fn send_to(&self, buf: &[u8], dst: SocketAddr) -> io::Result<()> {
        self.sock.send_to(buf, dst).map(drop)
    }
}

impl AsRawFd for Udp {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.sock.as_raw_fd()
    }
}

fn sockaddr_v4(dst: SocketAddr) -> io::Result<libc::sockaddr_in> {
    let SocketAddr::V4(v4) = dst else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "IPv6 underlay not supported yet",
        ));
    };
    // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = v4.port().to_be();
    sa.sin_addr = libc::in_addr {
        s_addr: u32::from_ne_bytes(v4.ip().octets()),
    };
    Ok(sa)
}

/// Control-message space for one `u16`/`c_int` option.
const CMSG_SPACE: usize = 32;

#[repr(C, align(8))]
struct CmsgBuf([u8; CMSG_SPACE]);

fn sendmsg_gso(sock: &StdUdp, dst: SocketAddr, buf: &[u8], segment: usize) -> io::Result<()> {
    let mut sa = sockaddr_v4(dst)?;
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut control = CmsgBuf([0; CMSG_SPACE]);
    // SAFETY: msghdr is plain data; the pointers below stay valid for the
    // duration of the sendmsg call, and CMSG_* stay within `control`.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (&mut sa as *mut libc::sockaddr_in).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(size_of::<u16>() as u32) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment as u16);
        let rc = libc::sendmsg(sock.as_raw_fd(), &msg, 0);
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn recvmsg(sock: &StdUdp, buf: &mut [u8]) -> io::Result<Received> {
    let mut sa = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = CmsgBuf([0; CMSG_SPACE]);
    // SAFETY: as in sendmsg_gso; the kernel writes at most msg_namelen /
    // msg_controllen bytes, and we read cmsgs only through CMSG_* walkers.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = sa.as_mut_ptr().cast();
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = CMSG_SPACE as _;
        let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let len = n as usize;
        let truncated = msg.msg_flags & libc::MSG_TRUNC != 0;
        let mut segment = len;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == libc::UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                if size > 0 {
                    segment = size as usize;
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        let sa = sa.assume_init();
        let from = match sa.ss_family as libc::c_int {
            libc::AF_INET => {
                let v4 = &*(&sa as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)),
                    u16::from_be(v4.sin_port),
                ))
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "datagram from a non-IPv4 address",
                ));
            }
        };
        Ok(Received {
            len,
            from,
            segment,
            truncated,
        })
    }
}
