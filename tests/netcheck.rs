//! `kith netcheck` against two STUN responders on loopback: the report a
//! person reads and the JSON a script reads.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

const KITH: &str = env!("CARGO_BIN_EXE_kith");

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn netcheck_reports_each_server_and_the_mapping() {
    let (p1, p2) = (free_port(), free_port());
    let _server = Kill(
        Command::new(KITH)
            .args([
                "stun-server",
                "--listen",
                &format!("127.0.0.1:{p1}"),
                "--listen",
                &format!("127.0.0.1:{p2}"),
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let silent = free_port(); // nobody listens here
    let out = Command::new(KITH)
        .args(["netcheck", "--no-port-mapping", "--json"])
        .args([
            "--stun",
            &format!("127.0.0.1:{p1}"),
            "--stun",
            &format!("127.0.0.1:{p2}"),
        ])
        .args(["--stun", &format!("127.0.0.1:{silent}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stun = v["stun"].as_array().unwrap();
    assert_eq!(stun.len(), 3);
    let seen: Vec<Option<&str>> = stun.iter().map(|s| s["reflexive"].as_str()).collect();
    assert!(
        seen[0].is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{seen:?}"
    );
    assert_eq!(seen[0], seen[1], "one socket, one mapping on loopback");
    assert_eq!(
        seen[2], None,
        "the silent server is reported as not answering"
    );
    // Both answers agree, so the mapping is endpoint-independent (loopback
    // is not one of the host's published addresses).
    assert_eq!(v["mapping"], "endpoint-independent");
    assert_eq!(v["public"].as_str(), seen[0]);
    assert_eq!(v["port_mapping_tried"], false);
    assert!(!v["advice"].as_array().unwrap().is_empty());

    let text = Command::new(KITH)
        .args([
            "netcheck",
            "--no-port-mapping",
            "--stun",
            &format!("127.0.0.1:{p1}"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&format!("STUN 127.0.0.1:{p1}")), "{text}");
    assert!(
        text.contains("only one STUN server") || text.contains("NAT mapping"),
        "{text}"
    );
}
