//! The UDP socket, sized for bulk traffic: an undersized receive buffer is
//! what makes slow VPNs drop packets under load (design §10).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket as StdUdp};
use std::os::fd::AsRawFd;

use tokio::net::UdpSocket;

const BUFFER_BYTES: libc::c_int = 4 << 20;

fn setsockopt(fd: libc::c_int, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: fd is a valid open socket; the value is a plain c_int.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

pub fn bind_udp(port: u16) -> io::Result<UdpSocket> {
    let sock = StdUdp::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))?;
    let fd = sock.as_raw_fd();
    // The FORCE variants pass the sysctl cap when we hold CAP_NET_ADMIN;
    // otherwise fall back to what the cap allows.
    for (force, plain) in [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)] {
        if setsockopt(fd, force, BUFFER_BYTES).is_err() {
            let _ = setsockopt(fd, plain, BUFFER_BYTES);
        }
    }
    sock.set_nonblocking(true)?;
    UdpSocket::from_std(sock)
}
