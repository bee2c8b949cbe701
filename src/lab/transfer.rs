//! Bulk TCP between two lab hosts from the test process itself: a thread
//! per side enters its namespace, one sends `bytes` of deterministic
//! pseudo-random data, the other receives; both hash what they saw. And
//! paced UDP ([`udp`]) for measuring what a rate limit lets through.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use blake2::{Blake2b512, Digest};

use super::{Host, LabError, Result};

/// What one transfer did.
#[derive(Debug, Clone)]
pub struct TransferReport {
    pub sent_bytes: u64,
    pub received_bytes: u64,
    pub sent_hash: Vec<u8>,
    pub received_hash: Vec<u8>,
    /// From accept to end of stream, on the receiver.
    pub elapsed: Duration,
}

impl TransferReport {
    /// Byte-identical: same length and same BLAKE2b-512.
    pub fn intact(&self) -> bool {
        self.sent_bytes == self.received_bytes && self.sent_hash == self.received_hash
    }

    /// Goodput in megabits per second, measured at the receiver.
    pub fn mbit_per_s(&self) -> f64 {
        self.received_bytes as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
}

const CHUNK: usize = 64 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Fills `buf` from a xorshift64 stream: fast, deterministic, not compressible.
fn fill(state: &mut u64, buf: &mut [u8]) {
    for word in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let bytes = state.to_le_bytes();
        word.copy_from_slice(&bytes[..word.len()]);
    }
}

/// Sends `bytes` from `client` to a listener that `server` opens on `listen`.
pub fn tcp(server: &Host, listen: SocketAddr, client: &Host, bytes: u64) -> Result<TransferReport> {
    tcp_paced(server, listen, client, bytes, None)
}

/// [`tcp`], written at no more than `pace` bytes per second when given, so
/// the transfer lasts long enough for a test to change the path under it.
pub fn tcp_paced(
    server: &Host,
    listen: SocketAddr,
    client: &Host,
    bytes: u64,
    pace: Option<u64>,
) -> Result<TransferReport> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let receiver = server.spawn_in(move || -> Result<(u64, Vec<u8>, Duration)> {
        let what = format!("receiving on {listen}");
        let io = |e| LabError::io(what.clone(), e);
        let listener = TcpListener::bind(listen).map_err(io)?;
        let _ = ready_tx.send(());
        let (mut stream, _) = listener.accept().map_err(io)?;
        stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        let start = Instant::now();
        let mut hash = Blake2b512::new();
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            let n = stream.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            total += n as u64;
        }
        Ok((total, hash.finalize().to_vec(), start.elapsed()))
    });
    if ready_rx.recv_timeout(Duration::from_secs(5)).is_err() {
        // The receiver failed before listening: report its error.
        return match receiver.join() {
            Ok(Ok(Err(e)) | Err(e)) => Err(e),
            Ok(Ok(Ok(_))) | Err(_) => Err(LabError::Timeout {
                what: format!("a listener on {listen}"),
                timeout: Duration::from_secs(5),
                detail: String::new(),
            }),
        };
    }
    let sender = client.spawn_in(move || -> Result<Vec<u8>> {
        let what = format!("sending to {listen}");
        let io = |e| LabError::io(what.clone(), e);
        let mut stream = TcpStream::connect_timeout(&listen, Duration::from_secs(5)).map_err(io)?;
        stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        let mut hash = Blake2b512::new();
        let mut buf = vec![0u8; CHUNK];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut left = bytes;
        let start = Instant::now();
        while left > 0 {
            if let Some(pace) = pace.filter(|p| *p > 0) {
                // Ahead of schedule: wait until the bytes sent so far are due.
                let due = Duration::from_secs_f64((bytes - left) as f64 / pace as f64);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            let n = usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK));
            fill(&mut state, &mut buf[..n]);
            stream.write_all(&buf[..n]).map_err(io)?;
            hash.update(&buf[..n]);
            left -= n as u64;
        }
        stream.shutdown(Shutdown::Write).map_err(io)?;
        Ok(hash.finalize().to_vec())
    });
    let sent_hash = join(sender)?;
    let (received_bytes, received_hash, elapsed) = join(receiver)?;
    Ok(TransferReport {
        sent_bytes: bytes,
        received_bytes,
        sent_hash,
        received_hash,
        elapsed,
    })
}

/// What one [`udp`] run did.
#[derive(Debug, Clone, Copy)]
pub struct UdpReport {
    pub sent_bytes: u64,
    pub received_bytes: u64,
    /// How long the sender sent.
    pub elapsed: Duration,
}

impl UdpReport {
    /// Bytes per second that arrived, over the sending time.
    pub fn received_rate(&self) -> f64 {
        self.received_bytes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// UDP payload size of [`udp`]: well under the overlay MTU.
pub const UDP_PAYLOAD: usize = 1200;

/// Sends UDP datagrams of [`UDP_PAYLOAD`] bytes from `client` to `listen`
/// (opened in `server`) at `rate` bytes per second for `time`, and counts
/// what arrives until the first second without a datagram (so a path that
/// goes silent for a second ends the count early).
pub fn udp(
    server: &Host,
    listen: SocketAddr,
    client: &Host,
    rate: u64,
    time: Duration,
) -> Result<UdpReport> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let receiver = server.spawn_in(move || -> Result<u64> {
        let io = |e| LabError::io(format!("receiving UDP on {listen}"), e);
        let socket = UdpSocket::bind(listen).map_err(io)?;
        socket
            .set_read_timeout(Some(Duration::from_secs(1)))
            .map_err(io)?;
        let _ = ready_tx.send(());
        let mut buf = vec![0u8; 65_536];
        let mut total = 0u64;
        // Wait up to the sending time plus a margin for the first datagram,
        // then until a second of silence.
        let deadline = Instant::now() + time + Duration::from_secs(5);
        loop {
            match socket.recv(&mut buf) {
                Ok(n) => total += n as u64,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if total > 0 || Instant::now() > deadline {
                        break;
                    }
                }
                Err(e) => return Err(io(e)),
            }
        }
        Ok(total)
    });
    if ready_rx.recv_timeout(Duration::from_secs(5)).is_err() {
        return Err(LabError::Timeout {
            what: format!("a UDP receiver on {listen}"),
            timeout: Duration::from_secs(5),
            detail: String::new(),
        });
    }
    let sender = client.spawn_in(move || -> Result<(u64, Duration)> {
        let io = |e| LabError::io(format!("sending UDP to {listen}"), e);
        let socket = UdpSocket::bind("0.0.0.0:0").map_err(io)?;
        let buf = vec![0x5au8; UDP_PAYLOAD];
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < time {
            let due = Duration::from_secs_f64(sent as f64 / rate.max(1) as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            // A full queue is loss like any other; keep the pace.
            if socket.send_to(&buf, listen).is_ok() {
                sent += UDP_PAYLOAD as u64;
            }
        }
        Ok((sent, start.elapsed()))
    });
    let (sent_bytes, elapsed) = join(sender)?;
    let received_bytes = join(receiver)?;
    Ok(UdpReport {
        sent_bytes,
        received_bytes,
        elapsed,
    })
}

fn join<T>(handle: std::thread::JoinHandle<Result<Result<T>>>) -> Result<T> {
    match handle.join() {
        Ok(result) => result?,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_is_deterministic_and_varied() {
        let (mut s1, mut s2) = (1u64, 1u64);
        let (mut a, mut b) = ([0u8; 20], [0u8; 20]);
        fill(&mut s1, &mut a);
        fill(&mut s2, &mut b);
        assert_eq!(a, b);
        let mut c = [0u8; 20];
        fill(&mut s1, &mut c);
        assert_ne!(a, c);
    }
}
