//! Packet captures with `tcpdump`, read back with a small pcap reader so a
//! test can count packets and search their bytes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::{Host, LabError, Result, sys};

/// A running `tcpdump -w` on one interface. Stop it with [`Capture::stop`];
/// dropping it kills tcpdump.
pub struct Capture {
    child: Option<Child>,
    path: PathBuf,
    what: String,
}

impl Capture {
    /// Starts capturing every packet on `dev` in `host` into `path`, and
    /// returns once tcpdump reports that it is listening.
    pub fn start(host: &Host, dev: &str, path: &Path) -> Result<Self> {
        Self::start_filtered(host, dev, path, "")
    }

    /// Like [`Capture::start`], keeping only the packets that match the
    /// pcap-filter(7) expression `filter` (empty: all).
    pub fn start_filtered(host: &Host, dev: &str, path: &Path, filter: &str) -> Result<Self> {
        sys::require_tool("tcpdump")?;
        let what = format!("tcpdump on {dev} in {}", host.netns());
        let mut cmd = host.command("tcpdump");
        // --immediate-mode and -U: hand over and write each packet as it
        // comes (else packets still in the kernel ring are lost at SIGINT);
        // -Z root: keep the right to write into the lab's directory.
        cmd.args(["-n", "--immediate-mode", "-U", "-Z", "root", "-s", "0"])
            .args(["-i", dev, "-w"])
            .arg(path)
            .args(filter.split_whitespace())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| LabError::io(format!("starting {what}"), e))?;
        let stderr = child.stderr.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let Some(stderr) = stderr else { return };
            let mut told = false;
            let mut seen = String::new();
            for line in BufReader::new(stderr)
                .lines()
                .map_while(std::io::Result::ok)
            {
                if !told && line.contains("listening on") {
                    told = true;
                    let _ = tx.send(Ok(()));
                }
                seen.push_str(&line);
                seen.push('\n');
            }
            if !told {
                let _ = tx.send(Err(seen));
            }
        });
        let mut capture = Self {
            child: Some(child),
            path: path.to_owned(),
            what,
        };
        let timeout = Duration::from_secs(5);
        match rx.recv_timeout(timeout) {
            Ok(Ok(())) => Ok(capture),
            Ok(Err(stderr)) => {
                capture.kill();
                Err(LabError::Command {
                    cmd: sys::describe(&cmd),
                    status: "exited".into(),
                    stderr,
                })
            }
            Err(_) => {
                capture.kill();
                Err(LabError::Timeout {
                    what: format!("{} to start listening", capture.what),
                    timeout,
                    detail: String::new(),
                })
            }
        }
    }

    /// The file tcpdump writes (readable while it runs: each packet is
    /// written as it comes).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops tcpdump (SIGINT, so it flushes) and reads the capture.
    pub fn stop(mut self) -> Result<Pcap> {
        // Let packets already in flight reach the capture.
        std::thread::sleep(Duration::from_millis(200));
        if let Some(mut child) = self.child.take() {
            sys::signal(child.id(), libc::SIGINT);
            child
                .wait()
                .map_err(|e| LabError::io(format!("waiting for {}", self.what), e))?;
        }
        Pcap::read(&self.path)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The packets of a pcap file (link-layer frames as captured).
#[derive(Debug, Clone, Default)]
pub struct Pcap {
    /// The file's link type: 1 Ethernet (a veth), 101 raw IP (a TUN).
    pub linktype: u32,
    pub packets: Vec<Vec<u8>>,
}

/// Pcap link type of Ethernet frames.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Pcap link type of bare IP packets.
pub const LINKTYPE_RAW: u32 = 101;

impl Pcap {
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .map_err(|e| LabError::io(format!("reading {}", path.display()), e))?;
        Self::parse(&bytes).ok_or_else(|| LabError::Parse {
            cmd: format!("tcpdump -w {}", path.display()),
            detail: "not a pcap file, or truncated".into(),
        })
    }

    /// Parses classic pcap (either byte order, micro- or nanosecond).
    /// A record cut short at the end (tcpdump killed mid-write) is dropped.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let magic = bytes.get(..4)?;
        let big_endian = match magic {
            [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => false,
            [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => true,
            _ => return None,
        };
        let u32_at = |at: usize| -> Option<u32> {
            let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
            Some(if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            })
        };
        let linktype = u32_at(20)?;
        let mut packets = Vec::new();
        let mut at = 24;
        while at + 16 <= bytes.len() {
            let caplen = usize::try_from(u32_at(at + 8)?).ok()?;
            let start = at + 16;
            let Some(data) = bytes.get(start..start + caplen) else {
                break;
            };
            packets.push(data.to_vec());
            at = start + caplen;
        }
        Some(Self { linktype, packets })
    }

    pub fn count(&self) -> usize {
        self.packets.len()
    }

    /// How many packets contain `needle` anywhere in their bytes.
    pub fn count_containing(&self, needle: &[u8]) -> usize {
        self.packets
            .iter()
            .filter(|p| !needle.is_empty() && p.windows(needle.len()).any(|w| w == needle))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(data: &[u8]) -> Vec<u8> {
        let mut r = vec![0u8; 8];
        r.extend((data.len() as u32).to_le_bytes());
        r.extend((data.len() as u32).to_le_bytes());
        r.extend(data);
        r
    }

    #[test]
    fn reads_records_and_searches_them() {
        let mut file = vec![0xd4, 0xc3, 0xb2, 0xa1];
        file.extend([0u8; 16]);
        file.extend(LINKTYPE_ETHERNET.to_le_bytes());
        file.extend(record(b"hello MARKER world"));
        file.extend(record(b"nothing here"));
        file.extend(&record(b"cut short")[..20]);
        let pcap = Pcap::parse(&file).unwrap();
        assert_eq!(pcap.linktype, LINKTYPE_ETHERNET);
        assert_eq!(pcap.count(), 2);
        assert_eq!(pcap.count_containing(b"MARKER"), 1);
        assert_eq!(pcap.count_containing(b"absent"), 0);
    }

    #[test]
    fn rejects_non_pcap() {
        assert!(Pcap::parse(b"not a capture at all").is_none());
        assert!(Pcap::parse(b"").is_none());
    }
}
