//! ICMP echo from inside a namespace (`ping`), with its summary parsed.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{Host, LabError, Result, sys};

/// What `ping -q` reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PingStats {
    pub transmitted: u32,
    pub received: u32,
    /// min / avg / max round-trip time in milliseconds, when any reply came.
    pub rtt_ms: Option<(f64, f64, f64)>,
}

impl PingStats {
    pub fn all_received(&self) -> bool {
        self.transmitted > 0 && self.received == self.transmitted
    }

    pub fn avg_ms(&self) -> Option<f64> {
        self.rtt_ms.map(|(_, avg, _)| avg)
    }
}

/// Parses the summary of iputils `ping`:
/// `3 packets transmitted, 3 received, 0% packet loss, time 2003ms`
/// `rtt min/avg/max/mdev = 0.031/0.040/0.052/0.009 ms`
pub(crate) fn parse(output: &str) -> Option<PingStats> {
    let counts = output.lines().find(|l| l.contains("packets transmitted"))?;
    let mut numbers = counts
        .split(',')
        .map(|part| part.split_whitespace().next()?.parse::<u32>().ok());
    let transmitted = numbers.next()??;
    let received = numbers.next()??;
    let rtt_ms = output
        .lines()
        .find(|l| l.starts_with("rtt") || l.starts_with("round-trip"))
        .and_then(|l| {
            let values = l.split('=').nth(1)?.split_whitespace().next()?;
            let mut v = values.split('/').map(|x| x.parse::<f64>().ok());
            Some((v.next()??, v.next()??, v.next()??))
        });
    Some(PingStats {
        transmitted,
        received,
        rtt_ms,
    })
}

/// A `ping` running in the background (see [`Host::ping_stream`]);
/// killed if dropped before [`wait`](Self::wait).
pub struct PingStream {
    child: Option<std::process::Child>,
    what: String,
}

impl PingStream {
    /// Whether it is still sending (or waiting for its last reply).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits until every request was sent and the last reply came (or its
    /// one-second wait ran out); what it sent and received.
    pub fn wait(mut self) -> Result<PingStats> {
        let Some(child) = self.child.take() else {
            return Err(LabError::Parse {
                cmd: self.what.clone(),
                detail: "already waited for".into(),
            });
        };
        let out = child
            .wait_with_output()
            .map_err(|e| LabError::io(format!("waiting for {}", self.what), e))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        parse(&stdout).ok_or_else(|| LabError::Parse {
            cmd: self.what.clone(),
            detail: format!(
                "{} {}",
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

impl Drop for PingStream {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Host {
    /// Starts sending `count` echo requests to `dst`, `interval` apart, in
    /// the background: a stream whose loss across some event [`PingStream::wait`]
    /// counts exactly (every request gets its chance at a reply, which an
    /// interrupted ping would not give the last one).
    pub fn ping_stream(&self, dst: IpAddr, count: u32, interval: Duration) -> Result<PingStream> {
        sys::require_tool("ping")?;
        let mut cmd = self.command("ping");
        cmd.args(["-n", "-q", "-W", "1", "-c", &count.to_string()])
            .args(["-i", &format!("{:.3}", interval.as_secs_f64())])
            .arg(dst.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let what = sys::describe(&cmd);
        let child = cmd
            .spawn()
            .map_err(|e| LabError::io(format!("starting {what}"), e))?;
        Ok(PingStream {
            child: Some(child),
            what,
        })
    }

    /// Sends `count` echo requests to `dst`, `interval` apart, waiting at most
    /// one second for the last reply. Lost replies are not an error.
    pub fn ping(&self, dst: IpAddr, count: u32, interval: Duration) -> Result<PingStats> {
        sys::require_tool("ping")?;
        let mut cmd = self.command("ping");
        cmd.args(["-n", "-q", "-W", "1", "-c", &count.to_string()])
            .args(["-i", &format!("{:.3}", interval.as_secs_f64())])
            .arg(dst.to_string());
        let out = sys::output(&mut cmd)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // No route is a kind of "no reply" too.
        if stderr.contains("Network is unreachable") {
            return Ok(PingStats {
                transmitted: count,
                received: 0,
                rtt_ms: None,
            });
        }
        // Exit status 1 means "no reply"; 2 and others are real errors.
        if !matches!(out.status.code(), Some(0 | 1)) {
            return Err(LabError::Command {
                cmd: sys::describe(&cmd),
                status: out.status.to_string(),
                stderr: stderr.trim().to_owned(),
            });
        }
        parse(&stdout).ok_or_else(|| LabError::Parse {
            cmd: sys::describe(&cmd),
            detail: stdout.trim().to_owned(),
        })
    }

    /// Pings `dst` every 50 ms until one reply arrives; the time that took.
    pub fn wait_reachable(&self, dst: IpAddr, timeout: Duration) -> Result<Duration> {
        sys::require_tool("ping")?;
        let start = Instant::now();
        let deadline = timeout.as_secs().max(1).to_string();
        let mut cmd = self.command("ping");
        cmd.args(["-n", "-q", "-c", "1", "-i", "0.05", "-w", &deadline])
            .arg(dst.to_string());
        let out = sys::output(&mut cmd)?;
        if out.status.success() {
            Ok(start.elapsed())
        } else {
            Err(LabError::Timeout {
                what: format!("a ping reply from {dst} in {}", self.netns()),
                timeout,
                detail: String::new(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replies() {
        let out = "PING 100.96.0.2 (100.96.0.2) 56(84) bytes of data.\n\n\
                   --- 100.96.0.2 ping statistics ---\n\
                   20 packets transmitted, 19 received, 5% packet loss, time 1903ms\n\
                   rtt min/avg/max/mdev = 0.062/0.115/0.301/0.051 ms\n";
        let s = parse(out).unwrap();
        assert_eq!((s.transmitted, s.received), (20, 19));
        assert_eq!(s.rtt_ms, Some((0.062, 0.115, 0.301)));
        assert!(!s.all_received());
    }

    #[test]
    fn parses_total_loss() {
        let out = "--- 100.96.0.3 ping statistics ---\n\
                   3 packets transmitted, 0 received, +3 errors, 100% packet loss, time 2041ms\n";
        let s = parse(out).unwrap();
        assert_eq!((s.transmitted, s.received), (3, 0));
        assert_eq!(s.rtt_ms, None);
        assert_eq!(s.avg_ms(), None);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse("ping: unknown host"), None);
    }
}
