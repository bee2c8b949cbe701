//! `kith-lab`: kith in a network-namespace lab, for people.
//!
//! - `kith-lab demo` narrates kith's main job on a real (namespaced)
//!   network, stage by stage, and exits non-zero if any stage fails.
//! - `kith-lab bench` measures, on the same namespaces in one run, TCP
//!   throughput (iperf3) and ping RTT over the raw veth link and over kith,
//!   then the DHT rendezvous time (daemon start → first ping reply of two
//!   hosts with no endpoint; median of 3 fresh labs) and the time to a
//!   direct path for each row of the NAT table (median of 3 fresh labs);
//!   then the peers' table (raw veth, kith, VpnCloud, boringtun on the same
//!   link: iperf3 with 1 and 4 streams, ping, CPU per GB, peak RSS; the
//!   peers from `$KITH_BENCH_CACHE/bin`, which `scripts/bench.sh` fills)
//!   and each AEAD backend's speed per packet; the relay rows; and TCP
//!   without and under a handshake flood with the flooded daemon's
//!   handshake counters per second.
//!
//! Both find the `kith` binary next to this one, or take `--kith PATH`.
//! Needs root. The lab machinery lives in `kith::lab`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use kith::lab::flood::{FloodPair, SPOOFED_SOURCES};
use kith::lab::nat::{NatPair, NatPairSpec, SiteKind};
use kith::lab::peers::{PeerTunnel, PeerVpn};
use kith::lab::relay::{RelayPair, RelayPairSpec};
use kith::lab::topology::{A_OVERLAY, A_UNDERLAY, B_OVERLAY, B_UNDERLAY, DHT_NODES, DhtPair, Pair};
use kith::lab::{KithNode, Lab, cpu_seconds, iperf, transfer};

#[derive(Parser)]
#[command(
    name = "kith-lab",
    about = "kith in a network-namespace lab (needs root)"
)]
struct Cli {
    /// The kith binary (default: `kith` next to this executable).
    #[arg(long, global = true, value_name = "PATH")]
    kith: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show kith connecting two hosts: tunnel, ping both ways, bulk TCP.
    Demo {
        /// Megabytes moved through the tunnel.
        #[arg(long, default_value_t = 20)]
        megabytes: u64,
    },
    /// Measure kith against the raw link (iperf3 TCP, ping RTT) and the DHT
    /// rendezvous time.
    Bench {
        /// Seconds per iperf3 run.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Pings per direction and path.
        #[arg(long, default_value_t = 20)]
        pings: u32,
        #[command(flatten)]
        rows: Rows,
    },
    /// Only the bench's peers table: raw veth, kith, VpnCloud and boringtun
    /// on one link (the peers from `$KITH_BENCH_CACHE/bin`, default
    /// /var/cache/kith-bench/bin, which scripts/bench.sh fills).
    Peers {
        /// Seconds per iperf3 run.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Pings per direction and path.
        #[arg(long, default_value_t = 20)]
        pings: u32,
        #[command(flatten)]
        rows: Rows,
        /// Only raw veth and kith's rows: leave out VpnCloud and boringtun.
        #[arg(long)]
        no_peers: bool,
    },
    /// Only the bench's time-to-direct rows (cone | cone: DHT only, shared
    /// relay + DHT, mutual peer without the DHT), each run `runs` times.
    TimeToDirect {
        #[arg(long, default_value_t = 3)]
        runs: u32,
    },
    /// Only the bench's relay rows: TCP and ping a → b direct, then through
    /// relay1 over UDP and over TCP, with the relay's CPU per GB.
    Relay {
        /// Seconds per iperf3 run.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Pings per path.
        #[arg(long, default_value_t = 20)]
        pings: u32,
    },
    /// Only the bench's flood rows: TCP through the tunnel without and
    /// under a flood of captured handshake initiations from 4096 spoofed
    /// sources, and the flooded daemon's handshake counters per second.
    Flood {
        /// Seconds of iperf3 without the flood, and as many under it.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
    },
}

/// Extra kith rows of the peers' table: the first kith row runs the
/// defaults, each extra one both daemons restarted with one setting changed.
#[derive(clap::Args, Debug)]
struct Rows {
    /// A row per `[interface] queues = N` (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "2")]
    queues: Vec<u8>,
    /// A row per `[interface] busy_poll = D` (comma-separated, e.g. "0s").
    #[arg(long, value_delimiter = ',')]
    busy_poll: Vec<String>,
}

impl Rows {
    fn variants(&self) -> Vec<Variant> {
        let queues = self.queues.iter().map(|&n| Variant {
            queues: Some(n),
            ..Variant::default()
        });
        let busy = self.busy_poll.iter().map(|d| Variant {
            busy_poll: Some(d.clone()),
            ..Variant::default()
        });
        queues.chain(busy).collect()
    }
}

/// One kith row's settings; `Default` is the daemon's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Variant {
    queues: Option<u8>,
    busy_poll: Option<String>,
}

impl Variant {
    fn label(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.queues {
            parts.push(format!("queues = {n}"));
        }
        if let Some(d) = &self.busy_poll {
            parts.push(format!("busy_poll = {d}"));
        }
        format!("kith, {}", parts.join(", "))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = kith_binary(cli.kith).and_then(|kith| match cli.command {
        Command::Demo { megabytes } => demo(&kith, megabytes),
        Command::Bench {
            seconds,
            pings,
            rows,
        } => bench(&kith, seconds, pings, &rows.variants()),
        Command::Peers {
            seconds,
            pings,
            rows,
            no_peers,
        } => peers(&kith, seconds, pings, &rows.variants(), !no_peers),
        Command::TimeToDirect { runs } => time_to_direct_rows(&kith, runs),
        Command::Flood { seconds } => flood_bench(&kith, seconds),
        Command::Relay { seconds, pings } => relay_bench(&kith, seconds, pings),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kith-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn kith_binary(given: Option<PathBuf>) -> Result<PathBuf> {
    let path = match given {
        Some(path) => path,
        None => std::env::current_exe()
            .context("finding this executable's directory")?
            .with_file_name("kith"),
    };
    if !path.is_file() {
        bail!(
            "kith binary not found at {}: build it (`cargo build --release`) or pass --kith PATH",
            path.display()
        );
    }
    Ok(path)
}

// ---------------------------------------------------------------- demo

/// One demo stage: builds its own lab, narrates, returns a one-line result.
/// Later stages (NAT traversal, relays, home sites behind different NAT
/// routers) are further entries in [`STAGES`].
struct Stage {
    title: &'static str,
    run: fn(&Lab, &DemoArgs) -> Result<String>,
}

struct DemoArgs {
    kith: PathBuf,
    megabytes: u64,
}

const STAGES: &[Stage] = &[
    Stage {
        title: "Direct: two hosts on one link",
        run: stage_direct,
    },
    Stage {
        title: "Rendezvous: two hosts with no endpoint meet through a DHT",
        run: stage_dht,
    },
    Stage {
        title: "Through the NAT: two home sites behind different NAT routers (cone + miniupnpd) connect directly",
        run: stage_nat,
    },
    Stage {
        title: "Relay: two symmetric NATs connect through a relay; a blocked pair goes direct once punching is allowed",
        run: stage_relay,
    },
    Stage {
        title: "Call me now: a peer that does not relay introduces two NATed hosts, no DHT, and they connect directly",
        run: stage_introduce,
    },
];

fn say(line: &str) {
    println!("  {line}");
}

/// One line of what `kith status` on `node` says about `peer`: what an
/// operator would look at to see the stage's outcome for themselves.
fn say_status(node: &KithNode, peer: &str) -> Result<()> {
    let p = node.peer_status(peer)?;
    let relay = p.relay.as_ref().map_or(String::new(), |r| {
        format!(" via {} over {}", r.via, r.transport.to_uppercase())
    });
    say(&format!(
        "`kith status` on {}: peer {peer} {}{relay}, endpoint {}, handshake {} s ago, {} B in / {} B out — {}",
        node.host().name(),
        p.path,
        p.endpoint.as_deref().unwrap_or("-"),
        p.last_handshake_secs.map_or("-".into(), |s| s.to_string()),
        p.rx_bytes,
        p.tx_bytes,
        p.path_reason
    ));
    Ok(())
}

fn demo(kith: &Path, megabytes: u64) -> Result<()> {
    let args = DemoArgs {
        kith: kith.to_owned(),
        megabytes,
    };
    println!(
        "kith demo — {} stage(s), using {}\n",
        STAGES.len(),
        kith.display()
    );
    let mut results = Vec::new();
    for (i, stage) in STAGES.iter().enumerate() {
        println!("Stage {}: {}", i + 1, stage.title);
        let lab = Lab::new()?;
        say(&format!(
            "lab {} (namespaces {}-*)",
            lab.prefix(),
            lab.prefix()
        ));
        let outcome = (stage.run)(&lab, &args);
        if let Err(e) = &outcome {
            lab.keep_files();
            say(&format!("FAILED: {e:#}"));
        }
        drop(lab);
        say("cleaned up (daemons stopped, namespaces deleted)\n");
        results.push((stage.title, outcome));
    }
    println!("Summary");
    let mut failed = 0;
    for (title, outcome) in &results {
        match outcome {
            Ok(summary) => println!("  ok    {title}: {summary}"),
            Err(e) => {
                failed += 1;
                println!("  FAIL  {title}: {e:#}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} stage(s) failed", results.len());
    }
    println!("\nAll stages passed.");
    Ok(())
}

fn stage_direct(lab: &Lab, args: &DemoArgs) -> Result<String> {
    say(&format!(
        "hosts a ({A_UNDERLAY}) and b ({B_UNDERLAY}) share a veth link; neither has a route to the other's overlay address"
    ));
    let mut pair = Pair::start(lab, &args.kith).context("starting kith on a and b")?;
    say(&format!(
        "generated a key pair per host: a is {}, b is {}",
        pair.node_a.spec().key.public(),
        pair.node_b.spec().key.public()
    ));
    say(&format!(
        "kith up on both: a = {A_OVERLAY} on kith0, b = {B_OVERLAY} on kith0 (configs: {}, {})",
        pair.node_a.config_path().display(),
        pair.node_b.config_path().display()
    ));
    let took = pair.wait_tunnel(Duration::from_secs(10))?;
    say(&format!(
        "tunnel up: first ping answered both ways after {} ms",
        took.as_millis()
    ));

    let ab = pair
        .a
        .ping(IpAddr::V4(B_OVERLAY), 5, Duration::from_millis(200))?;
    let ba = pair
        .b
        .ping(IpAddr::V4(A_OVERLAY), 5, Duration::from_millis(200))?;
    for (label, stats) in [("a → b", ab), ("b → a", ba)] {
        say(&format!(
            "ping {label} over the overlay: {}/{} replies, avg {}",
            stats.received,
            stats.transmitted,
            stats
                .avg_ms()
                .map_or("-".into(), |ms| format!("{ms:.3} ms"))
        ));
    }
    if !ab.all_received() || !ba.all_received() {
        bail!("pings over the overlay were lost (a → b {ab:?}, b → a {ba:?})");
    }

    let bytes = args.megabytes * 1_000_000;
    let report = transfer::tcp(
        &pair.b,
        SocketAddr::new(IpAddr::V4(B_OVERLAY), 5001),
        &pair.a,
        bytes,
    )
    .context("TCP transfer through the tunnel")?;
    let ok = if report.intact() {
        "byte-identical (BLAKE2b-512 matches)"
    } else {
        "CORRUPTED"
    };
    say(&format!(
        "TCP a → b through the tunnel: {} MB in {:.2} s = {:.0} Mbit/s, {ok}",
        args.megabytes,
        report.elapsed.as_secs_f64(),
        report.mbit_per_s()
    ));
    if !report.intact() {
        bail!(
            "the transfer arrived damaged: {} of {} bytes, hashes differ",
            report.received_bytes,
            report.sent_bytes
        );
    }
    say_status(&pair.node_a, "b")?;
    Ok(format!(
        "tunnel in {} ms, ping {:.2}/{:.2} ms, {:.0} Mbit/s TCP, data intact",
        took.as_millis(),
        ab.avg_ms().unwrap_or(f64::NAN),
        ba.avg_ms().unwrap_or(f64::NAN),
        report.mbit_per_s()
    ))
}

fn stage_dht(lab: &Lab, args: &DemoArgs) -> Result<String> {
    let mut pair = DhtPair::start(lab, &args.kith).context("starting the DHT lab")?;
    let nodes = pair.dht.addrs();
    say(&format!(
        "emulated internet 198.18.0.0/15 (namespace {}), a private Mainline DHT of {DHT_NODES} `kith dht-node`s on it: {} … {}",
        pair.internet.host().netns(),
        nodes[0],
        nodes[nodes.len() - 1]
    ));
    say(&format!(
        "a ({}) and b ({}) know only each other's public key: no `endpoint` in either config",
        pair.a_up.addr(),
        pair.b_up.addr()
    ));
    let wait = Duration::from_secs(60);
    for node in [&mut pair.node_a, &mut pair.node_b] {
        node.wait_log(&["published DHT record"], wait)?;
        say(&format!(
            "{} published its signed, encrypted record (its addresses, readable only by holders of its key)",
            node.host().name()
        ));
    }
    let took = pair.wait_tunnel(wait)?;
    for (node, peer) in [(&pair.node_a, "b"), (&pair.node_b, "a")] {
        let status = node.peer_status(peer)?;
        say(&format!(
            "{} → {peer}: endpoint {}, candidates {:?} from {}",
            node.host().name(),
            status.endpoint.as_deref().unwrap_or("-"),
            status.candidates,
            status.candidates_source.as_deref().unwrap_or("-")
        ));
    }
    say(&format!(
        "rendezvous: first ping reply {:.1} s after the daemons started",
        took.as_secs_f64()
    ));
    let ab = pair
        .a
        .ping(IpAddr::V4(B_OVERLAY), 3, Duration::from_millis(200))?;
    say(&format!(
        "ping a → b over the overlay: {}/{} replies",
        ab.received, ab.transmitted
    ));
    if !ab.all_received() {
        bail!("pings over the overlay were lost: {ab:?}");
    }
    say_status(&pair.node_a, "b")?;
    Ok(format!(
        "met through {DHT_NODES} DHT nodes, first ping after {:.1} s",
        took.as_secs_f64()
    ))
}

fn stage_nat(lab: &Lab, args: &DemoArgs) -> Result<String> {
    let spec = NatPairSpec::sites(SiteKind::Cone, SiteKind::Miniupnpd);
    let mut pair = NatPair::start(lab, &args.kith, spec).context("building the NAT lab")?;
    let stun = pair.net.stun.list();
    say(&format!(
        "emulated internet with a DHT of {} nodes and STUN servers at {}",
        pair.net.dht.addrs().len(),
        stun.join(", ")
    ));
    let b_site = pair.site_b.as_ref().context("site b")?;
    for (who, site, lan) in [("a", &pair.site_a, pair.a_lan), ("b", b_site, pair.b_lan)] {
        say(&format!(
            "{who} is {lan} on a home LAN behind a {} router with public address {}{}",
            site.kind.name(),
            site.public_ip().map_or("?".into(), |ip| ip.to_string()),
            if site.kind == SiteKind::Miniupnpd {
                " (UPnP IGD, NAT-PMP and PCP on; kith may ask it for a port)"
            } else {
                " (no port mapping; unsolicited packets dropped)"
            }
        ));
    }
    let took = pair.wait_direct(Duration::from_secs(60))?;
    for (node, who) in [(&pair.node_a, "a"), (&pair.node_b, "b")] {
        let nat = node.status()?.nat;
        say(&format!(
            "{who}'s daemon, by STUN from its data socket: public {}, mapping {}; router port mapping: {}",
            nat.public.as_deref().unwrap_or("unknown"),
            nat.mapping.as_deref().unwrap_or("unknown"),
            nat.port_mapping.as_deref().unwrap_or("none")
        ));
    }
    let (ab, ba) = pair.reports()?;
    for (me, peer, view) in [("a", "b", &ab), ("b", "a", &ba)] {
        say(&format!(
            "{me} → {peer}: {} at {} — {} (candidates {:?} from {})",
            view.path,
            view.endpoint.as_deref().unwrap_or("-"),
            view.path_reason,
            view.candidates,
            view.candidates_source.as_deref().unwrap_or("-")
        ));
    }
    if ab.path != "direct" || ba.path != "direct" {
        bail!("the path is not direct: a → b {ab:?}, b → a {ba:?}");
    }
    say(&format!(
        "direct path: first ping reply {:.1} s after the daemons started",
        took.as_secs_f64()
    ));
    let ab_ping = pair
        .a
        .ping(IpAddr::V4(B_OVERLAY), 3, Duration::from_millis(200))?;
    say(&format!(
        "ping a → b over the overlay: {}/{} replies",
        ab_ping.received, ab_ping.transmitted
    ));
    if !ab_ping.all_received() {
        bail!("pings over the overlay were lost: {ab_ping:?}");
    }
    say_status(&pair.node_a, "b")?;
    Ok(format!(
        "cone ↔ miniupnpd direct after {:.1} s; a: {}; b: {}",
        took.as_secs_f64(),
        ab.path_reason,
        ba.path_reason
    ))
}

fn stage_relay(lab: &Lab, args: &DemoArgs) -> Result<String> {
    // Part 1: nothing can be punched between two endpoint-dependent NATs.
    let spec = RelayPairSpec::sites(SiteKind::Symmetric, SiteKind::Symmetric);
    let mut pair = RelayPair::start(lab, &args.kith, spec).context("building the relay lab")?;
    say(&format!(
        "a and b are behind symmetric NAT routers ({} and {}); relay1 has a public address {} and serves ([relay] serve = true)",
        pair.site_a
            .public_ip()
            .map_or("?".into(), |ip| ip.to_string()),
        pair.site_b
            .public_ip()
            .map_or("?".into(), |ip| ip.to_string()),
        pair.relay_hosts[0].1.addr()
    ));
    say("a and b list relay1 in [relay] via and know each other by key only");
    let reached = pair.wait_path("relayed", Duration::from_secs(60))?;
    let (took, ab, ba) = (reached.first_ping, reached.ab, reached.ba);
    for (me, peer, view) in [("a", "b", &ab), ("b", "a", &ba)] {
        say(&format!("{me} → {peer}: {}", view.path_reason));
    }
    say(&format!(
        "first ping reply {:.2} s after the daemons started",
        took.as_secs_f64()
    ));
    let listen = SocketAddr::new(IpAddr::V4(pair.node_b.spec().overlay_ip()?), 5201);
    let bytes = args.megabytes << 20;
    let report = transfer::tcp(&pair.b, listen, &pair.a, bytes)?;
    if !report.intact() {
        bail!("the transfer through the relay arrived damaged: {report:?}");
    }
    say(&format!(
        "{} MB a → b through the relay arrived intact at {:.0} Mbit/s",
        args.megabytes,
        report.mbit_per_s()
    ));
    let svc = pair.relays[0]
        .status()?
        .relay_service
        .context("relay1 reports no relay service")?;
    for m in &svc.members {
        say(&format!(
            "relay1 forwarded {} bytes from {} (end-to-end encrypted; it holds no keys for them)",
            m.forwarded_bytes, m.name
        ));
    }
    say_status(&pair.node_a, "b")?;
    let relayed = took;
    drop(pair);

    // Part 2: two cone NATs whose punching is blocked until the rule goes.
    let spec = RelayPairSpec {
        cut: true,
        ..RelayPairSpec::sites(SiteKind::Cone, SiteKind::Cone)
    };
    // A lab of its own: the first one's namespace names are taken.
    let lab2 = Lab::new().context("building a second lab")?;
    say(&format!(
        "lab {} (namespaces {}-*)",
        lab2.prefix(),
        lab2.prefix()
    ));
    let mut pair = RelayPair::start(&lab2, &args.kith, spec).context("building the relay lab")?;
    say(
        "now two cone NATs, with UDP between their sites dropped by a firewall rule on the internet",
    );
    let ab = pair.wait_path("relayed", Duration::from_secs(60))?.ab;
    say(&format!("a → b: {}", ab.path_reason));
    pair.lift_cut()?;
    let lifted = Instant::now();
    say("rule lifted; a keeps probing the direct candidates while relayed");
    let ab = pair
        .node_a
        .wait_peer("b", "a direct path", Duration::from_secs(30), |p| {
            p.path == "direct"
        })?;
    let direct = lifted.elapsed();
    say(&format!(
        "a → b: {} at {} — {:.1} s after the rule was lifted",
        ab.path,
        ab.endpoint.as_deref().unwrap_or("-"),
        direct.as_secs_f64()
    ));
    say_status(&pair.node_a, "b")?;
    Ok(format!(
        "symmetric ↔ symmetric relayed after {:.2} s; blocked cone pair direct {:.1} s after unblocking",
        relayed.as_secs_f64(),
        direct.as_secs_f64()
    ))
}

fn stage_introduce(lab: &Lab, args: &DemoArgs) -> Result<String> {
    let spec = RelayPairSpec {
        serve: false,
        dht: false,
        ..RelayPairSpec::sites(SiteKind::Cone, SiteKind::Cone)
    };
    let mut pair = RelayPair::start(lab, &args.kith, spec).context("building the lab")?;
    say(
        "two cone NATs with the DHT off: a and b know each other by key only, and both know relay1's address; relay1 does not relay ([relay] serve = false)",
    );
    let reached = pair.wait_path("direct", Duration::from_secs(60))?;
    pair.node_a
        .wait_log(&["introduced: connecting now"], Duration::from_secs(5))
        .context("a logged no introduction")?;
    say(
        "relay1 passed each side's signed record to the other (\"call me now\"); both punched at once",
    );
    for (me, peer, view) in [("a", "b", &reached.ab), ("b", "a", &reached.ba)] {
        say(&format!(
            "{me} → {peer}: {} at {}",
            view.path_reason,
            view.endpoint.as_deref().unwrap_or("-")
        ));
    }
    let svc = pair.relays[0].status()?.relay_service;
    if svc.is_some() {
        bail!("relay1 reports a relay service, but it was started with serve = false");
    }
    say_status(&pair.node_a, "b")?;
    Ok(format!(
        "cone ↔ cone introduced by a non-relaying peer, direct {:.2} s after start (first ping {:.2} s)",
        reached.on_path.as_secs_f64(),
        reached.first_ping.as_secs_f64()
    ))
}

// ---------------------------------------------------------------- bench

/// Runs per NAT row (the median is reported).
const NAT_RUNS: usize = 3;

/// One NAT row's runs: time to direct, and the hard-NAT probe packets each
/// side sent (zero where ordinary punching sufficed).
struct NatRun {
    took: Duration,
    probes: (u32, u32),
}

/// Daemon start → first ping over a direct path, for each row of
/// [`NatPairSpec::matrix`], each run in a fresh lab.
fn nat_times(kith: &Path) -> Result<Vec<(&'static str, Vec<NatRun>)>> {
    let mut rows = Vec::new();
    for (label, spec) in NatPairSpec::matrix() {
        let mut runs = Vec::new();
        for run in 1..=NAT_RUNS {
            println!("time to direct, {label}, run {run} of {NAT_RUNS} …");
            let lab = Lab::new()?;
            let result = NatPair::start(&lab, kith, spec)
                .map_err(anyhow::Error::from)
                .and_then(|mut pair| {
                    let took = pair.wait_direct(Duration::from_secs(60))?;
                    let (ab, ba) = pair.reports()?;
                    let probes = |p: &kith::daemon::control::PeerReport| {
                        p.punch.as_ref().map_or(0, |h| h.probes)
                    };
                    Ok(NatRun {
                        took,
                        probes: (probes(&ab), probes(&ba)),
                    })
                });
            match result {
                Ok(r) => runs.push(r),
                Err(e) => {
                    lab.keep_files();
                    return Err(e.context(format!("time to direct, {label}, run {run}")));
                }
            }
        }
        runs.sort_by_key(|r| r.took);
        rows.push((label, runs));
    }
    Ok(rows)
}

/// Runs of the DHT rendezvous measurement (the median is reported).
const RENDEZVOUS_RUNS: usize = 3;

/// Daemon start → first ping reply of two hosts with no endpoint, each run
/// in a fresh lab with a fresh DHT.
fn dht_rendezvous(kith: &Path) -> Result<Vec<Duration>> {
    let mut times = Vec::new();
    for run in 1..=RENDEZVOUS_RUNS {
        println!("DHT rendezvous, run {run} of {RENDEZVOUS_RUNS} …");
        let lab = Lab::new()?;
        let result = DhtPair::start(&lab, kith)
            .map_err(anyhow::Error::from)
            .and_then(|mut pair| Ok(pair.wait_tunnel(Duration::from_secs(60))?));
        match result {
            Ok(took) => times.push(took),
            Err(e) => {
                lab.keep_files();
                return Err(e.context(format!("DHT rendezvous run {run}")));
            }
        }
    }
    Ok(times)
}

fn bench(kith: &Path, seconds: u32, pings: u32, variants: &[Variant]) -> Result<()> {
    let lab = Lab::new()?;
    let result = bench_in(&lab, kith, seconds, pings, variants);
    if result.is_err() {
        lab.keep_files();
    }
    result
}

fn bench_in(lab: &Lab, kith: &Path, seconds: u32, pings: u32, variants: &[Variant]) -> Result<()> {
    println!(
        "kith bench — lab {}: a ({A_UNDERLAY}) ↔ b ({B_UNDERLAY}) on one veth link",
        lab.prefix()
    );
    let mut pair = Pair::start(lab, kith).context("starting kith on a and b")?;
    pair.wait_tunnel(Duration::from_secs(10))?;
    let interval = Duration::from_millis(100);
    let (raw_b, kith_b) = (IpAddr::V4(B_UNDERLAY), IpAddr::V4(B_OVERLAY));
    let (raw_a, kith_a) = (IpAddr::V4(A_UNDERLAY), IpAddr::V4(A_OVERLAY));

    println!("iperf3 TCP a → b, {seconds} s over the raw link …");
    let tcp_raw = iperf::tcp(&pair.b, &pair.a, raw_b, 5201, seconds)?;
    println!("iperf3 TCP a → b, {seconds} s over kith …");
    let tcp_kith = iperf::tcp(&pair.b, &pair.a, kith_b, 5201, seconds)?;
    println!(
        "ping, {pings} each way and path at {} ms …",
        interval.as_millis()
    );
    let ping_raw_ab = pair.a.ping(raw_b, pings, interval)?;
    let ping_kith_ab = pair.a.ping(kith_b, pings, interval)?;
    let ping_raw_ba = pair.b.ping(raw_a, pings, interval)?;
    let ping_kith_ba = pair.b.ping(kith_a, pings, interval)?;
    pair.node_a.check_running()?;
    pair.node_b.check_running()?;

    let mut rendezvous = dht_rendezvous(kith)?;
    rendezvous.sort();
    let nat = nat_times(kith)?;
    let ms = |s: kith::lab::PingStats| s.avg_ms().unwrap_or(f64::NAN);
    println!();
    println!(
        "{:<26} {:>12} {:>12} {:>10}",
        "", "raw veth", "kith", "kith/raw"
    );
    let row = |label: &str, raw: f64, k: f64, unit_fmt: fn(f64) -> String| {
        // A ratio to zero (e.g. no retransmits on the raw link) means nothing.
        let ratio = if raw > 0.0 {
            format!("{:.2}", k / raw)
        } else {
            "-".into()
        };
        println!(
            "{label:<26} {:>12} {:>12} {ratio:>10}",
            unit_fmt(raw),
            unit_fmt(k)
        );
    };
    row(
        "TCP a → b (Gbit/s)",
        tcp_raw.gbit_per_s(),
        tcp_kith.gbit_per_s(),
        |v| format!("{v:.3}"),
    );
    row(
        "TCP retransmits",
        tcp_raw.retransmits,
        tcp_kith.retransmits,
        |v| format!("{v:.0}"),
    );
    row(
        "ping a → b avg (ms)",
        ms(ping_raw_ab),
        ms(ping_kith_ab),
        |v| format!("{v:.3}"),
    );
    row(
        "ping b → a avg (ms)",
        ms(ping_raw_ba),
        ms(ping_kith_ba),
        |v| format!("{v:.3}"),
    );
    let loss = |s: kith::lab::PingStats| s.transmitted - s.received;
    println!(
        "{:<26} {:>12} {:>12}",
        "ping lost (a→b, b→a)",
        format!("{}, {}", loss(ping_raw_ab), loss(ping_raw_ba)),
        format!("{}, {}", loss(ping_kith_ab), loss(ping_kith_ba))
    );
    for node in [&pair.node_a, &pair.node_b] {
        if let Some(rss) = node.pid().and_then(peak_rss_kib) {
            println!(
                "{:<26} {:>25}",
                format!("kith peak RSS ({})", node.host().name()),
                format!("{:.1} MB", rss as f64 / 1024.0)
            );
        }
    }
    println!(
        "{:<26} {:>25}",
        format!("DHT rendezvous (median/{RENDEZVOUS_RUNS})"),
        format!("{:.2} s", rendezvous[rendezvous.len() / 2].as_secs_f64())
    );
    println!(
        "{:<26} {:>25}",
        "  runs (start → 1st ping)",
        rendezvous
            .iter()
            .map(|d| format!("{:.2}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
            + " s"
    );
    println!("\nTime to a direct path (daemon start → 1st ping), median of {NAT_RUNS}:");
    for (label, runs) in &nat {
        let probes: Vec<String> = runs
            .iter()
            .filter(|r| r.probes != (0, 0))
            .map(|r| format!("{}+{}", r.probes.0, r.probes.1))
            .collect();
        println!(
            "  {label:<28} {:>8} (runs {}){}",
            format!("{:.2} s", runs[runs.len() / 2].took.as_secs_f64()),
            runs.iter()
                .map(|r| format!("{:.2}", r.took.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", "),
            if probes.is_empty() {
                String::new()
            } else {
                format!(
                    "; hard-NAT probe packets a+b per run: {}",
                    probes.join(", ")
                )
            }
        );
    }
    peer_table(lab, &mut pair, seconds, pings, variants, true)?;
    relay_bench(kith, seconds, pings)?;
    flood_bench(kith, seconds)?;
    println!(
        "\nkith reaches {:.1}% of the raw link's TCP throughput.",
        100.0 * tcp_kith.bits_per_second / tcp_raw.bits_per_second
    );
    Ok(())
}

/// Where `scripts/bench.sh` installs the peer VPNs (`cargo install
/// --root`): `$KITH_BENCH_CACHE`, by default this.
const PEER_CACHE: &str = "/var/cache/kith-bench";

/// What one row of the peers' table measured.
struct PeerFigures {
    one: iperf::IperfReport,
    four: iperf::IperfReport,
    ping_ab: kith::lab::PingStats,
    ping_ba: kith::lab::PingStats,
    /// The daemons' CPU seconds (user + system, both sides) per GB
    /// received over both iperf3 runs; none for the raw link.
    cpu_per_gb: Option<f64>,
    /// The larger of the two daemons' peak RSS (VmHWM), KiB.
    rss_kib: Option<u64>,
}

/// Both iperf3 runs (1 stream, then 4) from a to b's `b_ip`, the daemons'
/// CPU time over them, then pings both ways and the daemons' peak RSS.
fn measure_peer_row(
    (a, a_ip): (&kith::lab::Host, IpAddr),
    (b, b_ip): (&kith::lab::Host, IpAddr),
    pids: &[u32],
    seconds: u32,
    pings: u32,
) -> Result<PeerFigures> {
    let cpu = || -> Option<f64> { pids.iter().map(|&p| cpu_seconds(p)).sum() };
    let cpu0 = cpu();
    let one = iperf::tcp(b, a, b_ip, 5201, seconds)?;
    let four = iperf::tcp_streams(b, a, b_ip, 5201, seconds, 4)?;
    let cpu1 = cpu();
    let interval = Duration::from_millis(100);
    let ping_ab = a.ping(b_ip, pings, interval)?;
    let ping_ba = b.ping(a_ip, pings, interval)?;
    let gb = (one.bytes + four.bytes) / 1e9;
    Ok(PeerFigures {
        one,
        four,
        ping_ab,
        ping_ba,
        cpu_per_gb: cpu0
            .zip(cpu1)
            .filter(|_| !pids.is_empty() && gb > 0.0)
            .map(|(c0, c1)| (c1 - c0) / gb),
        rss_kib: pids.iter().filter_map(|&p| peak_rss_kib(p)).max(),
    })
}

/// The peers' table: raw veth, kith, VpnCloud and boringtun on the bench's
/// a ↔ b link, each with iperf3 TCP (1 and 4 streams), ping both ways, CPU
/// per GB and peak RSS, all in this run. The peer VPNs are the binaries
/// `scripts/bench.sh` installed into `$KITH_BENCH_CACHE/bin`; a missing or
/// failing one is a row saying why, not a failed bench.
fn peer_table(
    lab: &Lab,
    pair: &mut Pair,
    seconds: u32,
    pings: u32,
    variants: &[Variant],
    with_peers: bool,
) -> Result<()> {
    let cache = std::env::var_os("KITH_BENCH_CACHE")
        .map_or_else(|| PathBuf::from(PEER_CACHE), PathBuf::from);
    let (a, b) = (pair.a.clone(), pair.b.clone());
    let mut rows: Vec<(String, Result<PeerFigures, String>)> = Vec::new();
    println!(
        "\npeers: raw veth, kith, then each peer VPN: iperf3 TCP a → b ({seconds} s, 1 stream, then 4), ping …"
    );
    let raw = (IpAddr::V4(A_UNDERLAY), IpAddr::V4(B_UNDERLAY));
    let figures = measure_peer_row((&a, raw.0), (&b, raw.1), &[], seconds, pings)?;
    rows.push(("raw veth".into(), Ok(figures)));
    let overlay = (IpAddr::V4(A_OVERLAY), IpAddr::V4(B_OVERLAY));
    let default = (pair.node_a.spec().clone(), pair.node_b.spec().clone());
    for v in std::iter::once(&Variant::default()).chain(variants) {
        let label = if *v == Variant::default() {
            "kith".to_owned()
        } else {
            let label = v.label();
            println!("{label} …");
            for (node, spec) in [
                (&mut pair.node_a, &default.0),
                (&mut pair.node_b, &default.1),
            ] {
                node.rewrite_config(kith::lab::KithSpec {
                    queues: v.queues.or(spec.queues),
                    busy_poll: v.busy_poll.clone().or(spec.busy_poll.clone()),
                    ..spec.clone()
                })?;
                node.restart()?;
                node.wait_ready(Duration::from_secs(10))?;
            }
            pair.wait_tunnel(Duration::from_secs(10))?;
            label
        };
        let pids: Vec<u32> = [&pair.node_a, &pair.node_b]
            .iter()
            .filter_map(|n| n.pid())
            .collect();
        let figures = measure_peer_row((&a, overlay.0), (&b, overlay.1), &pids, seconds, pings)?;
        pair.node_a.check_running()?;
        pair.node_b.check_running()?;
        rows.push((label, Ok(figures)));
    }
    for vpn in PeerVpn::ALL.into_iter().filter(|_| with_peers) {
        let bin = cache.join("bin").join(vpn.binary());
        let label = vpn.version(&bin).unwrap_or_else(|_| vpn.label().to_owned());
        let figures = if bin.is_file() {
            println!("{label} …");
            peer_row(lab, vpn, &bin, seconds, pings, (&a, &b)).map_err(|e| format!("failed: {e:#}"))
        } else {
            Err(format!(
                "skipped: {} not found (scripts/bench.sh builds it there; see its output for why it did not)",
                bin.display()
            ))
        };
        rows.push((label, figures));
    }
    print_peer_table(&rows, seconds, pings);
    let speeds = kith::daemon::aead::measure(Duration::from_millis(600));
    println!(
        "\nChaCha20-Poly1305 per {}-byte packet, seal + open, GB/s of CPU time: {} \
         (kith measures the same at start and uses the fastest, here {})",
        kith::daemon::aead::PACKET,
        kith::daemon::aead::describe(&speeds),
        kith::daemon::aead::fastest(&speeds)
    );
    Ok(())
}

/// The peers table alone, in a lab of its own.
fn peers(
    kith: &Path,
    seconds: u32,
    pings: u32,
    variants: &[Variant],
    with_peers: bool,
) -> Result<()> {
    let lab = Lab::new()?;
    let result = Pair::start(&lab, kith)
        .map_err(anyhow::Error::from)
        .and_then(|mut pair| {
            pair.wait_tunnel(Duration::from_secs(10))?;
            peer_table(&lab, &mut pair, seconds, pings, variants, with_peers)
        });
    if result.is_err() {
        lab.keep_files();
    }
    result
}

/// One peer VPN's row: started on a and b, measured, stopped.
fn peer_row(
    lab: &Lab,
    vpn: PeerVpn,
    bin: &Path,
    seconds: u32,
    pings: u32,
    (a, b): (&kith::lab::Host, &kith::lab::Host),
) -> Result<PeerFigures> {
    let mut tunnel = PeerTunnel::start(lab.dir(), vpn, bin, (a, A_UNDERLAY), (b, B_UNDERLAY))?;
    tunnel.wait_tunnel(Duration::from_secs(20))?;
    let (a_ip, b_ip) = vpn.overlay();
    let figures = measure_peer_row(
        (a, IpAddr::V4(a_ip)),
        (b, IpAddr::V4(b_ip)),
        &tunnel.pids(),
        seconds,
        pings,
    )?;
    tunnel.check_running()?;
    Ok(figures)
}

fn print_peer_table(rows: &[(String, Result<PeerFigures, String>)], seconds: u32, pings: u32) {
    println!(
        "\nkith and its peers on one veth link, one run: iperf3 TCP a → b, {seconds} s each; \
         ping {pings} each way; CPU s/GB: both daemons' user + system time per GB received \
         over both iperf3 runs; RSS: the larger daemon's peak (VmHWM)"
    );
    println!(
        "{:<18} {:>9} {:>9} {:>13} {:>24} {:>8} {:>7} {:>9}",
        "",
        "1 stream",
        "4 streams",
        "share of raw",
        "ping avg (a→b / b→a)",
        "CPU",
        "RSS",
        "retrans."
    );
    println!(
        "{:<18} {:>9} {:>9} {:>13} {:>24} {:>8} {:>7} {:>9}",
        "", "Mbit/s", "Mbit/s", "1 / 4", "ms", "s/GB", "MB", "1 / 4"
    );
    let raw = rows
        .first()
        .and_then(|(_, r)| r.as_ref().ok())
        .map(|r| (r.one.bits_per_second, r.four.bits_per_second));
    for (label, row) in rows {
        let f = match row {
            Ok(f) => f,
            Err(why) => {
                println!("{label:<18} {why}");
                continue;
            }
        };
        let ms = |s: kith::lab::PingStats| s.avg_ms().unwrap_or(f64::NAN);
        let share = raw.map_or_else(
            || "-".to_owned(),
            |(r1, r4)| {
                format!(
                    "{:.2} / {:.2}",
                    f.one.bits_per_second / r1,
                    f.four.bits_per_second / r4
                )
            },
        );
        println!(
            "{label:<18} {:>9.0} {:>9.0} {share:>13} {:>24} {:>8} {:>7} {:>9}",
            f.one.bits_per_second / 1e6,
            f.four.bits_per_second / 1e6,
            format!(
                "{:.3} ({:.3} / {:.3})",
                (ms(f.ping_ab) + ms(f.ping_ba)) / 2.0,
                ms(f.ping_ab),
                ms(f.ping_ba)
            ),
            f.cpu_per_gb
                .map_or_else(|| "-".into(), |c| format!("{c:.1}")),
            f.rss_kib
                .map_or_else(|| "-".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
            format!("{:.0} / {:.0}", f.one.retransmits, f.four.retransmits),
        );
    }
}

/// The relay rows: one cone | cone pair with a relay; TCP and ping over
/// the direct path, then (UDP between the sites cut) through the relay, in
/// the same lab; the relay's CPU per GB forwarded; time to direct for a
/// cone | cone pair with the DHT only, with a shared relay, and with a
/// mutual peer that does not relay and no DHT (introductions only); then a
/// pair whose site blocks UDP, through the relay over TCP (ratios against
/// the same direct figure).
fn relay_bench(kith: &Path, seconds: u32, pings: u32) -> Result<()> {
    // Labs of their own: the bench's lab already has hosts a and b.
    let lab = Lab::new().context("building the relay lab")?;
    let spec = RelayPairSpec::sites(SiteKind::Cone, SiteKind::Cone);
    let mut pair = RelayPair::start(&lab, kith, spec).context("building the relay lab")?;
    let to_direct = pair.wait_path("direct", Duration::from_secs(60))?.on_path;
    let b = IpAddr::V4(pair.node_b.spec().overlay_ip()?);
    let interval = Duration::from_millis(100);
    println!("\niperf3 TCP a → b, {seconds} s, cone | cone direct, then through relay1 (UDP) …");
    let direct = iperf::tcp(&pair.b, &pair.a, b, 5201, seconds)?;
    let ping_direct = pair.a.ping(b, pings, interval)?;
    pair.cut_direct()?;
    pair.node_a
        .wait_peer("b", "a relayed path", Duration::from_secs(30), |p| {
            p.path == "relayed"
        })?;
    pair.node_b
        .wait_peer("a", "a relayed path", Duration::from_secs(30), |p| {
            p.path == "relayed"
        })?;
    let relay_pid = pair.relays[0].pid().context("relay1 is not running")?;
    let (cpu0, fwd0) = (cpu_seconds(relay_pid), forwarded(&pair.relays[0])?);
    let relayed = iperf::tcp(&pair.b, &pair.a, b, 5201, seconds)?;
    let (cpu1, fwd1) = (cpu_seconds(relay_pid), forwarded(&pair.relays[0])?);
    let ping_relayed = pair.a.ping(b, pings, interval)?;
    let ms = |s: kith::lab::PingStats| s.avg_ms().unwrap_or(f64::NAN);
    println!(
        "{:<26} {:>12} {:>12} {:>10}",
        "", "direct", "relayed", "rel/dir"
    );
    println!(
        "{:<26} {:>12.3} {:>12.3} {:>10.2}",
        "TCP a → b (Gbit/s)",
        direct.gbit_per_s(),
        relayed.gbit_per_s(),
        relayed.bits_per_second / direct.bits_per_second
    );
    println!(
        "{:<26} {:>12.3} {:>12.3} {:>10.2}",
        "ping a → b avg (ms)",
        ms(ping_direct),
        ms(ping_relayed),
        ms(ping_relayed) / ms(ping_direct)
    );
    let gb = (fwd1.saturating_sub(fwd0)) as f64 / 1e9;
    if let (Some(c0), Some(c1)) = (cpu0, cpu1)
        && gb > 0.0
    {
        println!(
            "{:<26} {:>25}",
            "relay CPU per GB forwarded",
            format!("{:.2} s ({:.2} GB)", (c1 - c0) / gb, gb)
        );
    }
    drop(pair);
    let [(dht_row, dht_only), (relay_row, _), (intro_row, introduced)] = direct_specs();
    let dht_only = time_to_direct(kith, dht_only)?;
    let introduced = time_to_direct(kith, introduced)?;

    // Over TCP: a's site lets no UDP out, so a reaches relay1 over TCP.
    let lab2 = Lab::new().context("building a second lab")?;
    let spec = RelayPairSpec {
        tcp: true,
        ..RelayPairSpec::sites(SiteKind::UdpBlocked, SiteKind::Cone)
    };
    let mut pair = RelayPair::start(&lab2, kith, spec).context("building the TCP relay lab")?;
    pair.wait_path("relayed", Duration::from_secs(60))?;
    println!("iperf3 TCP a → b, {seconds} s, a's site without UDP: through relay1 over TCP …");
    let over_tcp = iperf::tcp(&pair.b, &pair.a, b, 5201, seconds)?;
    let ping_tcp = pair.a.ping(b, pings, interval)?;
    let transport = pair.node_a.peer_status("b")?.relay.map(|r| r.transport);
    // Ratios against the direct figures of the first lab.
    println!(
        "{:<26} {:>12} {:>12.3} {:>10.2}",
        format!(
            "TCP a → b, relay over {}",
            transport.as_deref().unwrap_or("?")
        ),
        "",
        over_tcp.gbit_per_s(),
        over_tcp.bits_per_second / direct.bits_per_second
    );
    println!(
        "{:<26} {:>12} {:>12.3} {:>10.2}",
        "ping, relay over TCP (ms)",
        "",
        ms(ping_tcp),
        ms(ping_tcp) / ms(ping_direct)
    );
    println!(
        "\ntime to direct, cone | cone, daemon start → both report direct (one run each, status polled every 0.1 s):"
    );
    for (what, t) in [
        (dht_row, dht_only),
        (relay_row, to_direct),
        (intro_row, introduced),
    ] {
        println!("{:<26} {:>12.2} s", what, t.as_secs_f64());
    }
    Ok(())
}

/// The spoofed flood's rate in the bench, as in `tests/e2e_flood.rs`.
const FLOOD_RATE: u32 = 25_000;

/// The flood rows: TCP b → a through the tunnel without and then under a
/// flood of b's captured initiations from 4096 spoofed sources (one lab,
/// one run), and what a's handshake defences did meanwhile, from its own
/// counters: initiations refused before any Diffie-Hellman and cookie
/// replies sent, per second, and its CPU time.
fn flood_bench(kith: &Path, seconds: u32) -> Result<()> {
    let lab = Lab::new().context("building the flood lab")?;
    let result = flood_rows(&lab, kith, seconds);
    if result.is_err() {
        lab.keep_files();
    }
    result
}

fn flood_rows(lab: &Lab, kith: &Path, seconds: u32) -> Result<()> {
    let pair = FloodPair::start(lab, kith).context("building the flood lab")?;
    // Two runs each way, alternating, so a change in the machine's load
    // meets both alike.
    let (rounds, secs) = (2, (seconds / 2).max(1));
    println!(
        "\niperf3 TCP b → a, {rounds} × {secs} s without and {rounds} × {secs} s under a flood of \
         {} captured initiations from {SPOOFED_SOURCES} spoofed sources at {FLOOD_RATE}/s, alternating …",
        pair.captured.len()
    );
    let c = pair.compare(FLOOD_RATE, rounds, secs)?;
    println!(
        "{:<26} {:>12} {:>12} {:>10}",
        "", "no flood", "flood", "flood/no"
    );
    println!(
        "{:<26} {:>12.3} {:>12.3} {:>10.2}",
        "TCP b → a (Gbit/s)",
        c.quiet_bps() / 1e9,
        c.flooded_bps() / 1e9,
        c.flooded_bps() / c.quiet_bps()
    );
    let (sent, rate) = c.flood_sent();
    let (cpu, refused, cookies) = c.per_second();
    let wide = |label: &str, value: String| println!("{label:<26} {value:>25}");
    wide("flood sent", format!("{rate:.0}/s ({sent} packets)"));
    wide("a: initiations refused", format!("{refused:.0}/s (no DH)"));
    wide("a: cookie replies sent", format!("{cookies:.0}/s"));
    wide(
        "a: CPU, flood + TCP",
        format!("{:.0} % of a core", 100.0 * cpu),
    );
    Ok(())
}

/// The bench's time-to-direct rows: cone | cone with the DHT only, with a
/// shared relay (and the DHT), with a mutual peer that does not relay and
/// no DHT.
fn direct_specs() -> [(&'static str, RelayPairSpec); 3] {
    let cone = || RelayPairSpec::sites(SiteKind::Cone, SiteKind::Cone);
    [
        (
            "DHT only",
            RelayPairSpec {
                relays: 0,
                ..cone()
            },
        ),
        ("shared relay + DHT", cone()),
        (
            "mutual peer, no DHT",
            RelayPairSpec {
                serve: false,
                dht: false,
                ..cone()
            },
        ),
    ]
}

/// The time-to-direct rows alone, `runs` times each, with the median.
fn time_to_direct_rows(kith: &Path, runs: u32) -> Result<()> {
    println!("time to direct, cone | cone, daemon start → both report direct:");
    for (what, spec) in direct_specs() {
        let mut times = (0..runs.max(1))
            .map(|_| time_to_direct(kith, spec.clone()).map(|t| t.as_secs_f64()))
            .collect::<Result<Vec<_>>>()?;
        times.sort_by(f64::total_cmp);
        let all: Vec<String> = times.iter().map(|t| format!("{t:.2}")).collect();
        println!(
            "{:<26} {:>8.2} s (median; runs {})",
            what,
            times[times.len() / 2],
            all.join(", ")
        );
    }
    Ok(())
}

/// Daemon start → both sides of `spec`'s pair report "direct", in a lab of
/// its own.
fn time_to_direct(kith: &Path, spec: RelayPairSpec) -> Result<Duration> {
    let lab = Lab::new().context("building a time-to-direct lab")?;
    let mut pair = RelayPair::start(&lab, kith, spec.clone())
        .with_context(|| format!("building the lab {spec:?}"))?;
    Ok(pair.wait_path("direct", Duration::from_secs(60))?.on_path)
}

/// Bytes the relay forwarded for all members so far.
fn forwarded(relay: &kith::lab::KithNode) -> Result<u64> {
    let svc = relay.status()?.relay_service.context("no relay service")?;
    Ok(svc.members.iter().map(|m| m.forwarded_bytes).sum())
}

/// VmHWM (peak resident set) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
