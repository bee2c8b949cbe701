//! `iperf3` between two lab hosts: a one-shot server in one namespace, a
//! JSON-reporting client in the other.

use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;

use super::{Host, LabError, Result, sys};
use serde_json::Value;

/// One iperf3 TCP run, as reported by the client's `-J` output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IperfReport {
    /// Receiver-side goodput.
    pub bits_per_second: f64,
    /// TCP retransmissions seen by the sender.
    pub retransmits: f64,
    /// Bytes the receiver got, all streams together.
    pub bytes: f64,
}

impl IperfReport {
    pub fn gbit_per_s(&self) -> f64 {
        self.bits_per_second / 1e9
    }
}

/// How long either end waits for a stalled stream before the run fails.
const IDLE_TIMEOUT_MS: &str = "10000";

/// Runs a `seconds`-long single-stream TCP test from `client` to `server`'s
/// address `addr` on `port`.
pub fn tcp(
    server: &Host,
    client: &Host,
    addr: IpAddr,
    port: u16,
    seconds: u32,
) -> Result<IperfReport> {
    tcp_streams(server, client, addr, port, seconds, 1)
}

/// Like [`tcp`], with `streams` parallel TCP connections (`-P`); the
/// report sums them.
pub fn tcp_streams(
    server: &Host,
    client: &Host,
    addr: IpAddr,
    port: u16,
    seconds: u32,
    streams: u32,
) -> Result<IperfReport> {
    sys::require_tool("iperf3")?;
    let port = port.to_string();
    let mut srv = server
        .command("iperf3")
        .args(["-s", "-1", "-B", &addr.to_string(), "-p", &port])
        // A tunnel that dies mid-test fails the run in 10 s, not 120.
        .args(["--rcv-timeout", IDLE_TIMEOUT_MS])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| LabError::io(format!("starting iperf3 -s in {}", server.netns()), e))?;
    let mut cmd = client.command("iperf3");
    cmd.args([
        "-J",
        "-c",
        &addr.to_string(),
        "-p",
        &port,
        "-t",
        &seconds.to_string(),
        "-P",
        &streams.max(1).to_string(),
        "--snd-timeout",
        IDLE_TIMEOUT_MS,
    ]);
    // The server needs a moment to listen: retry while it refuses.
    let mut outcome = Err(String::new());
    // Up to 10 s: on a loaded 2-core machine iperf3 -s can take seconds to listen.
    for _ in 0..100 {
        let out = sys::output(&mut cmd)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        // With -J, iperf3 reports its errors in the JSON on stdout, and
        // 3.12 sometimes exits 0 after a refused connect: trust the JSON.
        let json_error = serde_json::from_str::<Value>(&stdout)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned));
        if out.status.success() && json_error.is_none() {
            outcome = Ok(stdout);
            break;
        }
        let error =
            json_error.unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_owned());
        let refused = error.contains("refused");
        outcome = Err(error);
        if !refused {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = srv.kill();
    let _ = srv.wait();
    let json = outcome.map_err(|error| LabError::Command {
        cmd: sys::describe(&cmd),
        status: "failed".into(),
        stderr: error,
    })?;
    parse(&json).ok_or_else(|| LabError::Parse {
        cmd: sys::describe(&cmd),
        detail: json.chars().take(400).collect(),
    })
}

/// Reads `end.sum_received.bits_per_second` and `.bytes`, and
/// `end.sum_sent.retransmits`.
pub(crate) fn parse(json: &str) -> Option<IperfReport> {
    let v: Value = serde_json::from_str(json).ok()?;
    Some(IperfReport {
        bits_per_second: v["end"]["sum_received"]["bits_per_second"].as_f64()?,
        retransmits: v["end"]["sum_sent"]["retransmits"].as_f64().unwrap_or(0.0),
        bytes: v["end"]["sum_received"]["bytes"].as_f64().unwrap_or(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_client_json() {
        let json = r#"{"start": {"connected": []},
            "intervals": [{"streams": [{"end": 1.0, "bits_per_second": 1}]}],
            "end": {"sum_sent": {"bits_per_second": 9.5e9, "retransmits": 12},
                    "sum_received": {"bits_per_second": 9.4e9, "bytes": 11750000000}}}"#;
        let r = parse(json).unwrap();
        assert_eq!(r.bits_per_second, 9.4e9);
        assert_eq!(r.retransmits, 12.0);
        assert_eq!(r.bytes, 11.75e9);
        assert!((r.gbit_per_s() - 9.4).abs() < 1e-9);
    }
}
