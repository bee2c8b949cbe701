//! Bulk TCP between two lab hosts from the test process itself: a thread
//! per side enters its namespace, one sends `bytes` of deterministic
//! pseudo-random data, the other receives; both hash what they saw.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
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
        while left > 0 {
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
