//! Handshake defence under load: cookies (WireGuard whitepaper §5.4.7), a
//! memory of initiations already processed, and the global budget of
//! Diffie-Hellmans per second.
//!
//! Owns: the responder's rotating cookie secret and its load meter
//! ([`Guard`]), the initiator's cookie from a reply ([`Jar`]), and the
//! cryptography of both (keyed BLAKE2s, XChaCha20-Poly1305). Knows nothing
//! of peers or sockets: the node asks "may this initiation cost a DH?" and
//! gets an answer, or a cookie reply to send back.
//!
//! Why each piece is needed:
//! - mac1 proves only that the sender knows our public key, which is in the
//!   DHT for anyone to read. Under load an initiation must also carry mac2,
//!   keyed with a cookie that only the holder of its source address could
//!   have received, so spoofed sources cost us a 64-byte reply (smaller
//!   than their 148-byte message: no amplification) and no DH.
//! - A byte-identical copy of an initiation already processed is a replay:
//!   dropped before the per-source limiter, so an attacker replaying a real
//!   peer's initiations "from" that peer's address cannot use up the real
//!   peer's tokens (the cookie does not help there: a captured initiation
//!   carries a valid mac2 for that very address).
//! - The global budget caps DH per second whatever the number of sources.

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use blake2::{Blake2s256, Digest};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use zeroize::Zeroizing;

use super::limiter::{HandshakeLimiter, Source};
use super::noise;
use super::timers::scaled;
use crate::wire::{self, COOKIE_NONCE_LEN, MAC_LEN};

/// Label for the cookie-reply key, as WireGuard's `LABEL_COOKIE`.
const LABEL_COOKIE: &[u8] = b"cookie--";
/// A cookie secret lives this long, and an initiator uses a cookie at most
/// this long after receiving it (WireGuard's `COOKIE_SECRET_MAX_AGE`).
pub const COOKIE_LIFETIME: Duration = Duration::from_secs(120);
/// Initiations (with a valid mac1) per second above which we are under
/// load and ask for cookies. A healthy mesh of even a hundred peers sends
/// a few per second; 64 is far above that and far below what one core
/// can answer (an IK response is four X25519 operations, ~0.15 ms here).
pub const UNDER_LOAD_PER_SEC: u32 = 64;
/// Once under load, stay so this long after the rate falls (as wireguard-go
/// does), so an on-off flood does not make every other second cookie-free.
const UNDER_LOAD_HOLD: Duration = Duration::from_secs(1);
/// DH-costing initiations per second from all sources together, and the
/// burst. Each costs ~0.15 ms, so the budget bounds handshake work at
/// ~8 % of one core whatever the flood.
pub const GLOBAL_RATE_PER_SEC: f64 = 500.0;
const GLOBAL_BURST: f64 = 100.0;
/// Initiations remembered as processed (their mac1). Only those that got
/// as far as a DH are recorded, at most the global budget per second, so
/// this covers at least the last 8 s; the per-peer timestamp rejects
/// older replays of a known peer.
const SEEN_CAPACITY: usize = 4096;

/// `HASH(LABEL_COOKIE || Spub)`: the key cookie replies to the holder of
/// `x25519_public` are sealed with.
pub fn reply_key(x25519_public: &[u8; 32]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    h.update(LABEL_COOKIE);
    h.update(x25519_public);
    h.finalize().into()
}

/// What the responder decides about an initiation whose mac1 is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on to the DH.
    Process,
    /// The same bytes were processed before.
    Replay,
    /// Under load without a valid mac2: send this cookie reply back.
    Cookie(Vec<u8>),
    /// Over this source's rate (see `limiter`).
    RateLimited,
    /// Over the global budget.
    OverBudget,
}

/// Responder side.
pub struct Guard {
    /// Seals our cookie replies: `HASH(LABEL_COOKIE || our Spub)`.
    reply_key: [u8; 32],
    /// Keys every cookie: whoever learns it can make cookies for any
    /// address, so it is zeroized when redrawn over and when dropped.
    secret: Zeroizing<[u8; 32]>,
    /// When `secret` was drawn; `None` until the first cookie is needed.
    secret_born: Option<Instant>,
    /// Initiations in the current one-second bucket, and its start.
    bucket: (Instant, u32),
    under_load_until: Option<Instant>,
    limiter: HandshakeLimiter,
    budget: (f64, Option<Instant>),
    seen: HashSet<[u8; MAC_LEN]>,
    seen_order: VecDeque<[u8; MAC_LEN]>,
}

impl Guard {
    pub fn new(our_x25519_public: &[u8; 32], now: Instant) -> Self {
        Self {
            reply_key: reply_key(our_x25519_public),
            secret: Zeroizing::new([0; 32]),
            secret_born: None,
            bucket: (now, 0),
            under_load_until: None,
            limiter: HandshakeLimiter::default(),
            budget: (GLOBAL_BURST, None),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
        }
    }

    /// Whether initiations must carry a valid mac2 now.
    pub fn under_load(&self, now: Instant) -> bool {
        self.under_load_until.is_some_and(|t| now < t)
    }

    /// Count one initiation with a valid mac1 towards the load.
    fn count(&mut self, now: Instant) {
        if now.saturating_duration_since(self.bucket.0) >= Duration::from_secs(1) {
            self.bucket = (now, 0);
        }
        self.bucket.1 += 1;
        if self.bucket.1 > UNDER_LOAD_PER_SEC {
            let until = now + UNDER_LOAD_HOLD;
            if !self.under_load(now) {
                tracing::info!(
                    "handshakes arrive faster than {UNDER_LOAD_PER_SEC}/s: answering new initiators with cookies"
                );
            }
            self.under_load_until = Some(until);
        }
    }

    /// Decide about an initiation whose mac1 was valid: `from` is its
    /// source address if it came straight to us, `source` what the
    /// per-source limiter counts it against, `msg` the whole message. In
    /// this order: replay, cookie, per-source rate, global budget, so each
    /// check spends nothing a cheaper one could have refused.
    pub fn check(
        &mut self,
        now: Instant,
        rng: &mut impl RngCore,
        from: Option<SocketAddr>,
        source: Source,
        init: &wire::Initiation<'_>,
    ) -> Verdict {
        self.count(now);
        if self.seen.contains(&init.mac1) {
            return Verdict::Replay;
        }
        // Relayed initiations (no `from`) need no cookie: the relay
        // authenticated the member they come from, and the limiter counts
        // them per member.
        if let Some(from) = from
            && self.under_load(now)
        {
            let cookie = self.cookie(now, rng, from);
            if !noise::mac_eq(&mac2_with(&cookie, init.mac2_input), &init.mac2) {
                return Verdict::Cookie(self.reply(rng, init.sender, &cookie, &init.mac1));
            }
        }
        if !self.limiter.allow(now, source) {
            return Verdict::RateLimited;
        }
        if !self.take_budget(now) {
            return Verdict::OverBudget;
        }
        // Only now: a message refused above cost no DH, and its sender may
        // send the same bytes again (with a cookie, or when tokens refill).
        self.remember(init.mac1);
        Verdict::Process
    }

    fn remember(&mut self, mac1: [u8; MAC_LEN]) {
        if self.seen_order.len() >= SEEN_CAPACITY
            && let Some(old) = self.seen_order.pop_front()
        {
            self.seen.remove(&old);
        }
        if self.seen.insert(mac1) {
            self.seen_order.push_back(mac1);
        }
    }

    fn take_budget(&mut self, now: Instant) -> bool {
        let (tokens, last) = &mut self.budget;
        let refill = last.map_or(0.0, |l| {
            now.saturating_duration_since(l).as_secs_f64() * GLOBAL_RATE_PER_SEC
        });
        *tokens = (*tokens + refill).min(GLOBAL_BURST);
        *last = Some(now);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// `MAC(secret, source ip || port)`, the secret redrawn every
    /// [`COOKIE_LIFETIME`].
    fn cookie(&mut self, now: Instant, rng: &mut impl RngCore, from: SocketAddr) -> [u8; MAC_LEN] {
        if self
            .secret_born
            .is_none_or(|t| now.saturating_duration_since(t) >= scaled(COOKIE_LIFETIME))
        {
            rng.fill_bytes(&mut *self.secret);
            self.secret_born = Some(now);
        }
        let mut input = Vec::with_capacity(18);
        match from.ip() {
            IpAddr::V4(a) => input.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => input.extend_from_slice(&a.octets()),
        }
        input.extend_from_slice(&from.port().to_be_bytes());
        noise::mac(&self.secret, &input)
    }

    /// The cookie reply: the cookie sealed with XChaCha20-Poly1305 under
    /// our reply key, the initiation's mac1 as associated data (so only
    /// the initiator that sent it can use the reply).
    fn reply(
        &self,
        rng: &mut impl RngCore,
        receiver: u32,
        cookie: &[u8; MAC_LEN],
        mac1: &[u8; MAC_LEN],
    ) -> Vec<u8> {
        let mut nonce = [0u8; COOKIE_NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let sealed = XChaCha20Poly1305::new(&self.reply_key.into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: cookie,
                    aad: mac1,
                },
            )
            .unwrap_or_else(|_| unreachable!("sealing 16 bytes cannot fail"));
        let sealed: [u8; 32] = sealed
            .try_into()
            .unwrap_or_else(|_| unreachable!("16-byte cookie + 16-byte tag"));
        let mut out = vec![0u8; wire::COOKIE_REPLY_LEN];
        // The buffer is exactly COOKIE_REPLY_LEN: emitting cannot fail.
        let _ = wire::emit_cookie_reply(&mut out, receiver, &nonce, &sealed);
        out
    }
}

/// `mac2 = MAC(cookie, msg up to mac2)`; the cookie (16 bytes) is the key.
fn mac2_with(cookie: &[u8; MAC_LEN], input: &[u8]) -> [u8; MAC_LEN] {
    noise::mac(cookie, input)
}

/// Initiator side, one per peer: the last cookie the peer sent us.
pub struct Jar {
    /// Opens the peer's replies: `HASH(LABEL_COOKIE || peer's Spub)`.
    key: [u8; 32],
    /// Zeroized when replaced or dropped: it stands for our address with
    /// the peer until it expires.
    cookie: Option<(Zeroizing<[u8; MAC_LEN]>, Instant)>,
}

impl Jar {
    pub fn new(peer_x25519_public: &[u8; 32]) -> Self {
        Self {
            key: reply_key(peer_x25519_public),
            cookie: None,
        }
    }

    /// Open a cookie reply to the initiation whose mac1 was `mac1`; false
    /// (and nothing kept) if it does not open.
    pub fn accept(&mut self, now: Instant, reply: &wire::CookieReply<'_>, mac1: &[u8]) -> bool {
        let opened = XChaCha20Poly1305::new(&self.key.into()).decrypt(
            XNonce::from_slice(reply.nonce),
            Payload {
                msg: reply.encrypted_cookie,
                aad: mac1,
            },
        );
        let opened = opened.map(Zeroizing::new);
        match opened.as_deref().ok().filter(|c| c.len() == MAC_LEN) {
            Some(cookie) => {
                let mut kept = Zeroizing::new([0u8; MAC_LEN]);
                kept.copy_from_slice(cookie);
                self.cookie = Some((kept, now));
                true
            }
            None => false,
        }
    }

    /// Fill in mac2 of `msg` (mac1 already set): keyed with a cookie younger
    /// than [`COOKIE_LIFETIME`], else zero. Returns whether it was keyed.
    pub fn seal_mac2(&self, now: Instant, msg: &mut [u8]) -> bool {
        let (_, mac2_at) = wire::mac_offsets(msg.len());
        let fresh = self
            .cookie
            .as_ref()
            .filter(|(_, at)| now.saturating_duration_since(*at) < scaled(COOKIE_LIFETIME));
        let mac2 = match fresh {
            Some((cookie, _)) => mac2_with(cookie, &msg[..mac2_at]),
            None => [0; MAC_LEN],
        };
        msg[mac2_at..].copy_from_slice(&mac2);
        fresh.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn initiation(sender: u32, fill: u8) -> Vec<u8> {
        let mut msg = vec![0u8; wire::INITIATION_LEN];
        wire::emit_initiation(&mut msg, sender, &[fill; wire::NOISE_INIT_LEN]).unwrap();
        let (mac1_at, mac2_at) = wire::mac_offsets(msg.len());
        let mac1 = noise::mac(&noise::mac1_key(&[9; 32]), &msg[..mac1_at]);
        msg[mac1_at..mac2_at].copy_from_slice(&mac1);
        msg
    }

    /// `check` on the bytes, as the node calls it on a parsed message.
    fn check(
        g: &mut Guard,
        rng: &mut StdRng,
        t: Instant,
        from: Option<SocketAddr>,
        source: Source,
        msg: &[u8],
    ) -> Verdict {
        let Ok(wire::Packet::Initiation(init)) = wire::parse(msg) else {
            panic!("not an initiation");
        };
        g.check(t, rng, from, source, &init)
    }

    fn src(a: SocketAddr) -> Source {
        Source::Addr(a.ip())
    }

    fn load(g: &mut Guard, rng: &mut StdRng, now: Instant) {
        for i in 0..=UNDER_LOAD_PER_SEC {
            let _ = check(
                g,
                rng,
                now,
                None,
                Source::Member(i as usize),
                &initiation(i, 0),
            );
        }
    }

    #[test]
    fn under_load_a_cookie_round_trip_lets_the_same_initiation_in() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(1);
        let responder_pub = [9; 32];
        let mut g = Guard::new(&responder_pub, t0);
        let from: SocketAddr = "198.18.1.2:51820".parse().unwrap();
        let mut msg = initiation(77, 0xaa);
        assert!(!g.under_load(t0));
        load(&mut g, &mut rng, t0);
        assert!(g.under_load(t0));

        let Verdict::Cookie(reply) = check(&mut g, &mut rng, t0, Some(from), src(from), &msg)
        else {
            panic!("under load, an initiation without mac2 gets a cookie");
        };
        let Ok(wire::Packet::CookieReply(r)) = wire::parse(&reply) else {
            panic!("not a cookie reply");
        };
        assert_eq!(r.receiver, 77);
        let mut jar = Jar::new(&responder_pub);
        let (mac1_at, mac2_at) = wire::mac_offsets(msg.len());
        // Bound to the initiation it answers: another mac1 does not open it.
        assert!(!jar.accept(t0, &r, &[0; MAC_LEN]));
        assert!(jar.accept(t0, &r, &msg[mac1_at..mac2_at]));
        assert!(jar.seal_mac2(t0, &mut msg));
        assert_eq!(
            check(&mut g, &mut rng, t0, Some(from), src(from), &msg),
            Verdict::Process
        );
        // Processed once: the same bytes again are a replay.
        assert_eq!(
            check(&mut g, &mut rng, t0, Some(from), src(from), &msg),
            Verdict::Replay
        );

        // The cookie is tied to the source address.
        let mut other = initiation(78, 0xbb);
        assert!(jar.seal_mac2(t0, &mut other));
        let elsewhere: SocketAddr = "198.18.9.9:51820".parse().unwrap();
        assert!(matches!(
            check(
                &mut g,
                &mut rng,
                t0,
                Some(elsewhere),
                src(elsewhere),
                &other
            ),
            Verdict::Cookie(_)
        ));
        // And it expires with the initiator's clock.
        assert!(!jar.seal_mac2(t0 + COOKIE_LIFETIME, &mut other));
    }

    #[test]
    fn no_cookie_is_asked_for_without_load_and_the_load_passes() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(2);
        let mut g = Guard::new(&[9; 32], t0);
        let from: SocketAddr = "198.18.1.2:51820".parse().unwrap();
        assert_eq!(
            check(
                &mut g,
                &mut rng,
                t0,
                Some(from),
                src(from),
                &initiation(1, 1)
            ),
            Verdict::Process
        );
        load(&mut g, &mut rng, t0);
        let later = t0 + Duration::from_secs(3);
        assert!(!g.under_load(later));
        assert_eq!(
            check(
                &mut g,
                &mut rng,
                later,
                Some(from),
                src(from),
                &initiation(2, 2)
            ),
            Verdict::Process
        );
    }

    #[test]
    fn the_global_budget_caps_dh_per_second_and_refunds_refusals() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(3);
        let mut g = Guard::new(&[9; 32], t0);
        // Relayed (no source address): no cookies, only the budget.
        // Each from its own member, so the per-source limiter passes them.
        let member = |g: &mut Guard, rng: &mut StdRng, t: Instant, i: u32| {
            check(
                g,
                rng,
                t,
                None,
                Source::Member(i as usize),
                &initiation(i, 0),
            )
        };
        let passed = (0..1000u32)
            .filter(|&i| member(&mut g, &mut rng, t0, i) == Verdict::Process)
            .count();
        assert_eq!(passed, GLOBAL_BURST as usize);
        assert_eq!(member(&mut g, &mut rng, t0, 5000), Verdict::OverBudget);
        // Refused, so not remembered: the same bytes are no replay later.
        let t1 = t0 + Duration::from_millis(10);
        assert_eq!(member(&mut g, &mut rng, t1, 5000), Verdict::Process);
        assert_eq!(member(&mut g, &mut rng, t1, 5000), Verdict::Replay);
    }

    #[test]
    fn a_rate_limited_initiation_is_not_remembered() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(4);
        let mut g = Guard::new(&[9; 32], t0);
        let from: SocketAddr = "198.18.1.2:51820".parse().unwrap();
        let passed = (0..20u32)
            .filter(|&i| {
                check(
                    &mut g,
                    &mut rng,
                    t0,
                    Some(from),
                    src(from),
                    &initiation(i, 0),
                ) == Verdict::Process
            })
            .count();
        assert!(passed < 20, "the per-source limiter must refuse a burst");
        let refused = initiation(19, 0);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            check(&mut g, &mut rng, t1, Some(from), src(from), &refused),
            Verdict::Process
        );
    }
}
