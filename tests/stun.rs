//! STUN over real loopback sockets: kith's responder answers kith's client,
//! the reflexive address is the socket's own, and classification says there
//! is no NAT. Also `kith stun-server` as a process.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kith::nat::{
    Handled, MappingBehaviour, Retransmit, StunClient, StunEvent, TxId, classify, stun_server,
};

const KITH: &str = env!("CARGO_BIN_EXE_kith");

/// A responder thread on 127.0.0.1 using the sans-IO `respond`.
fn spawn_responder() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind responder");
    let addr = socket.local_addr().expect("responder address");
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if let Some(out) = stun_server::respond(&buf[..n], from) {
                let _ = socket.send_to(&out, from);
            }
        }
    });
    addr
}

fn txid(i: u8) -> TxId {
    let mut id = [0u8; 12];
    getrandom::fill(&mut id).expect("OS randomness");
    id[0] = i;
    id
}

/// Drive a client over a real socket until every transaction finished;
/// returns the events in arrival order.
fn run_client(socket: &UdpSocket, servers: &[SocketAddr]) -> (StunClient, Vec<StunEvent>) {
    let mut client = StunClient::new(Retransmit::default());
    let start = Instant::now();
    for (i, s) in servers.iter().enumerate() {
        client
            .add_server(start, *s, txid(i as u8))
            .expect("add server");
    }
    let mut events = Vec::new();
    let mut buf = [0u8; 2048];
    while !client.is_finished() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "STUN took too long"
        );
        while let Some((to, bytes)) = client.poll_transmit() {
            socket.send_to(&bytes, to).expect("send request");
        }
        let wait = client
            .poll_timeout()
            .map_or(Duration::from_millis(100), |d| {
                d.saturating_duration_since(Instant::now())
            })
            .max(Duration::from_millis(1));
        socket.set_read_timeout(Some(wait)).expect("timeout");
        match socket.recv_from(&mut buf) {
            Ok((n, from)) if kith::wire::is_stun(&buf[..n]) => {
                let handled = client
                    .handle_response(Instant::now(), from, &buf[..n])
                    .expect("the responder's answers are well-formed");
                assert!(matches!(handled, Handled::Mapped(_)), "{handled:?}");
            }
            Ok(_) => panic!("only STUN arrives on this socket"),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                client.handle_timeout(Instant::now());
            }
            Err(e) => panic!("recv: {e}"),
        }
        while let Some(ev) = client.poll_event() {
            events.push(ev);
        }
    }
    (client, events)
}

#[test]
fn loopback_reflexive_is_local_and_no_nat() {
    let servers = [spawn_responder(), spawn_responder()];
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind client");
    let local = socket.local_addr().expect("client address");
    let (client, events) = run_client(&socket, &servers);

    assert_eq!(events.len(), 2, "{events:?}");
    for ev in &events {
        let StunEvent::Mapped(m) = ev else {
            panic!("expected a mapping: {ev:?}");
        };
        assert!(servers.contains(&m.server));
        assert_eq!(m.reflexive, local);
        assert!(!m.legacy);
    }
    let observations = client.observations();
    assert_eq!(observations.len(), 2);
    assert_eq!(observations[0].server, servers[0]);
    let nat = classify(&[local], &observations);
    assert_eq!(nat.mapping, MappingBehaviour::NoNat);
    assert_eq!(nat.public, Some(local));
    assert!(nat.port_preserving);
}

/// A silent server times out (with a short schedule), the answering one
/// still maps, and classification is partial.
#[test]
fn loopback_silent_server_times_out() {
    let live = spawn_responder();
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind silent server");
    let silent_addr = silent.local_addr().expect("address");
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind client");
    let local = socket.local_addr().expect("client address");

    let mut client = StunClient::new(Retransmit {
        initial_rto: Duration::from_millis(20),
        max_rto: Duration::from_millis(40),
        max_requests: 3,
        last_wait_factor: 2,
    });
    let t0 = Instant::now();
    client.add_server(t0, live, txid(1)).expect("add");
    client.add_server(t0, silent_addr, txid(2)).expect("add");
    let mut buf = [0u8; 2048];
    while !client.is_finished() {
        assert!(t0.elapsed() < Duration::from_secs(10));
        while let Some((to, bytes)) = client.poll_transmit() {
            socket.send_to(&bytes, to).expect("send");
        }
        let wait = client
            .poll_timeout()
            .map_or(Duration::from_millis(10), |d| {
                d.saturating_duration_since(Instant::now())
            })
            .max(Duration::from_millis(1));
        socket.set_read_timeout(Some(wait)).expect("timeout");
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                client
                    .handle_response(Instant::now(), from, &buf[..n])
                    .expect("well-formed");
            }
            Err(_) => client.handle_timeout(Instant::now()),
        }
    }
    // The silent server got every request.
    silent
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut requests = 0;
    while silent.recv_from(&mut buf).is_ok() {
        requests += 1;
    }
    assert_eq!(requests, 3);
    let mut failed = 0;
    while let Some(ev) = client.poll_event() {
        if let StunEvent::Failed { server, .. } = ev {
            assert_eq!(server, silent_addr);
            failed += 1;
        }
    }
    assert_eq!(failed, 1);
    let nat = classify(&[local], &client.observations());
    assert_eq!(nat.mapping, MappingBehaviour::NoNat);
}

/// `kith stun-server --listen … --listen …` answers on both sockets and
/// exits cleanly on SIGTERM.
#[test]
fn stun_server_command() {
    let mut child = Command::new(KITH)
        .args([
            "stun-server",
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("KITH_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kith stun-server");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut servers = Vec::new();
    while servers.len() < 2 {
        let line = lines
            .next()
            .expect("kith stun-server exited early")
            .expect("read stderr");
        if let Some(rest) = line.split("addr=").nth(1) {
            let addr = rest.split_whitespace().next().unwrap_or_default();
            servers.push(addr.parse::<SocketAddr>().expect("listening address"));
        }
    }
    assert_ne!(servers[0], servers[1]);

    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind client");
    let local = socket.local_addr().expect("client address");
    let (client, events) = run_client(&socket, &servers);
    assert_eq!(events.len(), 2);
    let nat = classify(&[local], &client.observations());
    assert_eq!(nat.mapping, MappingBehaviour::NoNat);

    // SAFETY: kill(2) on our own child's pid.
    let pid = child.id() as libc::pid_t;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = child.wait().expect("wait");
    assert!(status.success(), "exit status {status}");
}
