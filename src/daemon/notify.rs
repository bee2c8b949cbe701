//! systemd notification (`Type=notify`): `READY=1` once the TUN device and
//! the socket are up, `STOPPING=1` on the way out, `WATCHDOG=1` from the
//! data path's loop (so a stuck loop gets the unit restarted) and `STATUS=`
//! with a one-line summary of the peers. A no-op outside systemd.
//!
//! The messages go to `$NOTIFY_SOCKET` (a path, or `@name` for an abstract
//! socket); the watchdog interval comes from `$WATCHDOG_USEC`, for us only
//! if `$WATCHDOG_PID` is unset or our pid.

use std::ffi::OsStr;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send_to(&path, state) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// One notification datagram to the socket `path` names.
fn send_to(path: &OsStr, state: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?;
        sock.send_to_addr(state.as_bytes(), &addr).map(drop)
    } else {
        sock.send_to(state.as_bytes(), path).map(drop)
    }
}

pub fn ready() {
    send("READY=1");
}

pub fn stopping() {
    send("STOPPING=1");
}

/// "Still alive": sent from the data path's loop itself, every
/// [`watchdog_interval`].
pub fn watchdog() {
    send("WATCHDOG=1");
}

/// `systemctl status` shows `summary` (see [`peer_summary`]).
pub fn status(summary: &str) {
    send(&status_message(summary));
}

/// The `STATUS=` datagram: one line (a newline would start another
/// assignment).
fn status_message(summary: &str) -> String {
    let line: String = summary
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("STATUS={line}")
}

/// "3 of 4 peers connected, 1 relayed".
pub fn peer_summary(peers: usize, connected: usize, relayed: usize) -> String {
    let noun = if peers == 1 { "peer" } else { "peers" };
    let mut s = format!("{connected} of {peers} {noun} connected");
    if relayed > 0 {
        s.push_str(&format!(", {relayed} relayed"));
    }
    s
}

/// How often to send [`watchdog`]: half the unit's `WatchdogSec=`, as
/// sd_watchdog_enabled(3) advises; `None` when systemd does not watch us.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok()?;
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval_from(&usec, pid.as_deref(), std::process::id())
}

fn watchdog_interval_from(usec: &str, pid: Option<&str>, ours: u32) -> Option<Duration> {
    // A watchdog meant for another process (the variables leaked into a
    // child of the service) is not ours to feed.
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(ours)
    {
        return None;
    }
    let usec: u64 = usec.trim().parse().ok().filter(|u| *u > 0)?;
    // Never zero: a timer cannot tick every 0 s.
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `NOTIFY_SOCKET`: a datagram socket bound in a fresh directory.
    fn fake_systemd(tag: &str) -> (std::path::PathBuf, UnixDatagram) {
        let dir = std::env::temp_dir().join(format!("kith-notify-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        (path, sock)
    }

    fn received(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn status_and_watchdog_datagrams_are_what_systemd_reads() {
        let (path, sock) = fake_systemd("msgs");
        send_to(path.as_os_str(), &status_message(&peer_summary(4, 3, 1))).unwrap();
        assert_eq!(received(&sock), "STATUS=3 of 4 peers connected, 1 relayed");
        send_to(path.as_os_str(), &status_message(&peer_summary(1, 0, 0))).unwrap();
        assert_eq!(received(&sock), "STATUS=0 of 1 peer connected");
        send_to(path.as_os_str(), "WATCHDOG=1").unwrap();
        assert_eq!(received(&sock), "WATCHDOG=1");
        // A newline in the summary must not smuggle in another assignment.
        send_to(path.as_os_str(), &status_message("ok\nREADY=1")).unwrap();
        assert_eq!(received(&sock), "STATUS=ok READY=1");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn an_abstract_notify_socket_is_reached_too() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("kith-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        send_to(OsStr::new(&format!("@{name}")), "WATCHDOG=1").unwrap();
        assert_eq!(received(&sock), "WATCHDOG=1");
    }

    #[test]
    fn no_listener_is_an_error_not_a_panic() {
        let (path, sock) = fake_systemd("gone");
        drop(sock);
        std::fs::remove_file(&path).unwrap();
        assert!(send_to(path.as_os_str(), "WATCHDOG=1").is_err());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn the_watchdog_is_fed_at_half_its_interval_and_only_for_us() {
        // WatchdogSec=30s.
        assert_eq!(
            watchdog_interval_from("30000000", None, 42),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval_from("30000000", Some("42"), 42),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_interval_from("30000000", Some("7"), 42), None);
        assert_eq!(watchdog_interval_from("0", None, 42), None);
        assert_eq!(
            watchdog_interval_from("1", None, 42),
            Some(Duration::from_millis(1))
        );
        assert_eq!(watchdog_interval_from("soon", None, 42), None);
    }
}
