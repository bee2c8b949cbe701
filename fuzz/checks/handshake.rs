//! `kith::core::Node::handle_udp` on handshake messages that get past mac1:
//! the responder's Diffie-Hellman and its defences (replay memory, cookies
//! under load), and the initiator's side (message 2, cookie replies).
//!
//! B is the node under test, A its one peer, C a stranger (it knows B's
//! key; B does not list it). Each run builds one world, the same every
//! time (fixed keys, seeds and wall clock), with the real messages of it:
//!
//! | world | B | genuine messages |
//! |---|---|---|
//! | 0 rest | a session with A, 10 s old | A's initiation after a restart; C's initiation |
//! | 1 load | as at rest, and under load (100 initiations this second) | A's initiation without mac2; the same with mac2 keyed by the cookie B sent A's address |
//! | 2 initiator | its initiation to A waiting for an answer | A's response; A's cookie reply (A under load) |
//!
//! ```text
//! byte 0: bits 0..2  world (3 = rest)
//!         bit 2      1 = XOR mask over a genuine message, 0 = raw datagram
//!         bit 3      which genuine message (the table's order)
//!         bit 4      from C's address instead of A's
//!         bits 5..8  bytes to cut from the end
//! rest:   the datagram, or the mask (bytes past the message are appended)
//! ```
//!
//! Invariants, besides no panic and nothing ever written to the TUN:
//! - a response (0x82) goes out only at rest or under load; at rest iff the
//!   datagram is A's initiation up to mac2 (which B does not check at
//!   rest), under load iff it is A's initiation with its valid mac2 and
//!   comes from A's address; the same datagram again gets no second one
//!   (replay memory);
//! - a cookie reply (0x83) goes out only under load, at most one, 64 bytes,
//!   to the datagram's source, answering its sender index; A's initiation
//!   without a valid mac2 for its source always gets one;
//! - as initiator, B's session with A starts iff the datagram is A's
//!   response up to mac2 (unused in responses); a cookie reply B accepts
//!   makes it send its waiting initiation again, once, to where the reply
//!   came from, unchanged up to mac2; A's genuine cookie reply always is.
//!
//! The seeds carry each genuine message raw (valid MACs, written by
//! [`seeds`]) and as an empty mask; `tests/fuzz_seeds.rs` checks that each
//! reaches the stage [`seeds`] says.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kith::core::{DropReason, Event, Node, UdpOutcome};
use kith::wire::{
    COOKIE_REPLY_LEN, INITIATION_LEN, RESPONSE_LEN, TYPE_COOKIE_REPLY, TYPE_INITIATION,
    TYPE_RESPONSE, mac_offsets,
};

use super::common::{A, B, C, UNIX, ip_packet, masked, node, overlay, pump, transmits, underlay};

/// Initiations that put a responder under load: comfortably more than the
/// 64 a second at which it starts asking for cookies.
const LOAD: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    Rest = 0,
    Load = 1,
    Initiator = 2,
}

/// The furthest a datagram got B.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// B answered an initiation (after its Diffie-Hellman).
    Response,
    /// B, under load, answered with a cookie reply instead.
    Cookie,
    /// B's handshake as initiator completed.
    Session,
    /// B took a cookie reply and sent its initiation again with mac2.
    CookieAccepted,
    Dropped(DropReason),
    Other,
}

struct Built {
    b: Node,
    now: Instant,
    genuine: Vec<Vec<u8>>,
    /// B's initiation waiting for an answer (the initiator world).
    pending: Option<Vec<u8>>,
}

/// The first message of type `ty` `node` queued for `dst` (everything
/// queued is taken).
fn first_to(node: &mut Node, dst: SocketAddr, ty: u8) -> Vec<u8> {
    transmits(node)
        .into_iter()
        .find(|t| t.dst == dst && t.payload.first() == Some(&ty))
        .map(|t| t.payload)
        .expect("the world's node did not send that message")
}

fn build(world: World) -> Built {
    match world {
        World::Rest => responder(false),
        World::Load => responder(true),
        World::Initiator => initiator(),
    }
}

/// B with a session with A; A restarts 10 s later and initiates again.
fn responder(load: bool) -> Built {
    let t0 = Instant::now();
    let mut a = node(A, &[B], t0, UNIX, A);
    let mut b = node(B, &[A], t0, UNIX, B);
    let mut out = vec![0u8; 2048];
    a.handle_tun(t0, &ip_packet(overlay(A), overlay(B), b"hi"), &mut out);
    let first = pump(&mut a, &mut b, t0)
        .into_iter()
        .next()
        .expect("A initiated");
    let now = t0 + Duration::from_secs(10);
    let unix = UNIX + Duration::from_secs(10);
    let mut restarted = node(A, &[B], now, unix, 11);
    restarted.start(now);
    let a_init = first_to(&mut restarted, underlay(B), TYPE_INITIATION);
    let genuine = if load {
        // Replays of the first initiation count towards the load and cost
        // no Diffie-Hellman (B remembers it).
        for _ in 0..LOAD {
            b.handle_udp(now, underlay(A), &first, &mut out);
        }
        b.handle_udp(now, underlay(A), &a_init, &mut out);
        let cookie = first_to(&mut b, underlay(A), TYPE_COOKIE_REPLY);
        restarted.handle_udp(now, underlay(B), &cookie, &mut out);
        let with_mac2 = first_to(&mut restarted, underlay(B), TYPE_INITIATION);
        vec![a_init, with_mac2]
    } else {
        let mut c = node(C, &[B], now, unix, C);
        c.start(now);
        vec![a_init, first_to(&mut c, underlay(B), TYPE_INITIATION)]
    };
    transmits(&mut b);
    while b.poll_event().is_some() {}
    Built {
        b,
        now,
        genuine,
        pending: None,
    }
}

/// B's initiation to A waits; A answers it, and a copy of A under load
/// (flooded with a stranger's initiation) answers it with a cookie.
fn initiator() -> Built {
    let now = Instant::now();
    let mut out = vec![0u8; 2048];
    let mut b = node(B, &[A], now, UNIX, B);
    b.start(now);
    let b_init = first_to(&mut b, underlay(A), TYPE_INITIATION);
    while b.poll_event().is_some() {}
    let mut a = node(A, &[B], now, UNIX, A);
    a.handle_udp(now, underlay(B), &b_init, &mut out);
    let response = first_to(&mut a, underlay(B), TYPE_RESPONSE);
    let mut busy = node(A, &[B], now, UNIX, A);
    let mut c = node(C, &[A], now, UNIX, C);
    c.start(now);
    let c_init = first_to(&mut c, underlay(A), TYPE_INITIATION);
    for _ in 0..LOAD {
        busy.handle_udp(now, underlay(C), &c_init, &mut out);
    }
    transmits(&mut busy);
    busy.handle_udp(now, underlay(B), &b_init, &mut out);
    let cookie = first_to(&mut busy, underlay(B), TYPE_COOKIE_REPLY);
    Built {
        b,
        now,
        genuine: vec![response, cookie],
        pending: Some(b_init),
    }
}

fn world_of(mode: u8) -> World {
    match mode & 3 {
        1 => World::Load,
        2 => World::Initiator,
        _ => World::Rest,
    }
}

pub fn run(data: &[u8]) -> Reached {
    let Some((&mode, rest)) = data.split_first() else {
        return Reached::Other;
    };
    let world = world_of(mode);
    let mut w = build(world);
    let pick = &w.genuine[usize::from(mode >> 3 & 1)];
    let mut datagram = if mode & 4 != 0 {
        masked(pick, rest)
    } else {
        rest.to_vec()
    };
    datagram.truncate(datagram.len().saturating_sub(usize::from(mode >> 5)));
    let from = if mode & 16 != 0 {
        underlay(C)
    } else {
        underlay(A)
    };

    let before = w.b.handshake_stats();
    let mut out = vec![0u8; 2048];
    let outcome = w.b.handle_udp(w.now, from, &datagram, &mut out);
    assert!(
        !matches!(outcome, UdpOutcome::WriteTun { .. }),
        "a handshake datagram reached the TUN: {datagram:02x?}"
    );
    let sent = transmits(&mut w.b);
    let events: Vec<Event> = std::iter::from_fn(|| w.b.poll_event()).collect();
    let of_type = |ty: u8| sent.iter().filter(move |t| t.payload.first() == Some(&ty));
    let responses = of_type(TYPE_RESPONSE).count();
    let cookies: Vec<_> = of_type(TYPE_COOKIE_REPLY).collect();
    let initiations: Vec<_> = of_type(TYPE_INITIATION).collect();
    let connected = events.iter().any(|e| matches!(e, Event::Connected { .. }));
    let accepted = w.b.handshake_stats().cookies_accepted > before.cookies_accepted;
    // `genuine` is a whole message: its length gives the MAC offsets.
    let same_up_to_mac2 = |datagram: &[u8], genuine: &[u8]| {
        let (_, mac2_at) = mac_offsets(genuine.len());
        datagram.len() == genuine.len() && datagram[..mac2_at] == genuine[..mac2_at]
    };
    let a_initiation = world != World::Initiator && same_up_to_mac2(&datagram, &w.genuine[0]);

    match world {
        World::Rest => {
            assert_eq!(responses, usize::from(a_initiation), "{datagram:02x?}");
            assert!(cookies.is_empty(), "a cookie reply while not under load");
        }
        World::Load => {
            let valid_mac2 = datagram == w.genuine[1] && from == underlay(A);
            assert_eq!(responses, usize::from(valid_mac2), "{datagram:02x?}");
            assert!(cookies.len() <= 1, "{} cookie replies", cookies.len());
            if a_initiation && !valid_mac2 {
                assert_eq!(cookies.len(), 1, "A's initiation without mac2: no cookie");
            }
            for c in &cookies {
                assert_eq!(c.dst, from, "a cookie reply not to the source");
                assert_eq!(c.payload.len(), COOKIE_REPLY_LEN);
                assert_eq!(datagram.len(), INITIATION_LEN);
                assert_eq!(c.payload[4..8], datagram[4..8], "answers another sender");
            }
        }
        World::Initiator => {
            assert!(responses == 0 && cookies.is_empty(), "B is the initiator");
            let a_response =
                datagram.len() == RESPONSE_LEN && same_up_to_mac2(&datagram, &w.genuine[0]);
            assert_eq!(connected, a_response, "{datagram:02x?}");
            if datagram == w.genuine[1] {
                assert!(accepted, "A's genuine cookie reply was not taken");
            }
            if accepted {
                let pending = w.pending.as_deref().expect("the initiator world");
                assert_eq!(initiations.len(), 1, "one resend per cookie reply");
                assert_eq!(initiations[0].dst, from, "resent elsewhere");
                assert!(same_up_to_mac2(&initiations[0].payload, pending));
            } else {
                assert!(initiations.is_empty(), "an initiation without a cookie");
            }
        }
    }

    // Replayed: an answered initiation is not answered twice.
    w.b.handle_udp(w.now, from, &datagram, &mut out);
    let again = transmits(&mut w.b);
    if responses > 0 {
        assert!(
            !again
                .iter()
                .any(|t| t.payload.first() == Some(&TYPE_RESPONSE)),
            "the same initiation answered twice"
        );
    }

    // Whatever the datagram did, the timers and queues still work.
    w.b.handle_timeout(w.now + Duration::from_secs(1));
    transmits(&mut w.b);
    while w.b.poll_event().is_some() {}

    if responses > 0 {
        Reached::Response
    } else if !cookies.is_empty() {
        Reached::Cookie
    } else if connected {
        Reached::Session
    } else if accepted {
        Reached::CookieAccepted
    } else if let UdpOutcome::Dropped(reason) = outcome {
        Reached::Dropped(reason)
    } else {
        Reached::Other
    }
}

/// The checked-in seeds, `(file name, bytes, what it must reach)`: each
/// genuine message raw (its real bytes, valid MACs and all) and as an
/// empty mask (the mode byte alone).
pub fn seeds() -> Vec<(&'static str, Vec<u8>, Reached)> {
    let raw = |world: World, index: usize| {
        let mut seed = vec![world as u8];
        seed.extend_from_slice(&build(world).genuine[index]);
        seed
    };
    let unknown = Reached::Dropped(DropReason::UnknownPeer);
    vec![
        ("rest_initiation", vec![0b0_0100], Reached::Response),
        (
            "rest_initiation_raw",
            raw(World::Rest, 0),
            Reached::Response,
        ),
        ("rest_stranger", vec![0b0_1100], unknown),
        ("rest_stranger_raw", raw(World::Rest, 1), unknown),
        ("load_initiation", vec![0b0_0101], Reached::Cookie),
        ("load_initiation_raw", raw(World::Load, 0), Reached::Cookie),
        ("load_initiation_mac2", vec![0b0_1101], Reached::Response),
        (
            "load_initiation_mac2_raw",
            raw(World::Load, 1),
            Reached::Response,
        ),
        ("load_mac2_from_elsewhere", vec![0b1_1101], Reached::Cookie),
        ("initiator_response", vec![0b0_0110], Reached::Session),
        (
            "initiator_response_raw",
            raw(World::Initiator, 0),
            Reached::Session,
        ),
        ("initiator_cookie", vec![0b0_1110], Reached::CookieAccepted),
        (
            "initiator_cookie_raw",
            raw(World::Initiator, 1),
            Reached::CookieAccepted,
        ),
    ]
}
