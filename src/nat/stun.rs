//! A sans-IO STUN Binding client (RFC 8489) for the data socket.
//!
//! `stun-rs` is the codec only; transactions, retransmission, timeouts and
//! demultiplexing are ours. The client never touches a socket or a clock:
//!
//! 1. [`StunClient::add_server`] at `now` with a transaction id the caller
//!    drew from its RNG queues a Binding request for that server;
//! 2. [`StunClient::poll_transmit`] hands out the datagrams to send from the
//!    data socket (the first request and every retransmission);
//! 3. the shell sleeps until [`StunClient::poll_timeout`] and then calls
//!    [`StunClient::handle_timeout`], which queues retransmissions on the
//!    RFC 8489 §6.2.1 schedule and gives up after the last one;
//! 4. every datagram the data socket receives that `kith::wire::is_stun`
//!    accepts goes to [`StunClient::handle_response`]: the header is checked
//!    and the transaction id looked up before anything is decoded, so
//!    datagrams that are not answers to us cost a few comparisons;
//! 5. [`StunClient::poll_event`] reports each finished transaction once:
//!    a reflexive address ([`StunEvent::Mapped`]) or why there is none
//!    ([`StunEvent::Failed`]). [`StunClient::observations`] lists every
//!    server's result in the order the requests were first sent, the input
//!    of [`super::classify::classify`].
//!
//! Hostile input never panics and never changes state unless it carries an
//! outstanding transaction id and comes from the server it was sent to; a
//! malformed answer to a live transaction is reported as an error and the
//! transaction goes on (a forged datagram cannot end it early).

#![cfg_attr(not(test), deny(clippy::disallowed_methods))]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stun_rs::attributes::stun::{ErrorCode, Fingerprint, MappedAddress, XorMappedAddress};
use stun_rs::methods::BINDING;
use stun_rs::{
    MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, StunMessage, StunMessageBuilder,
    TransactionId,
};

/// STUN header length (RFC 8489 §5).
pub const HEADER_LEN: usize = 20;
/// Transaction id length (RFC 8489 §5).
pub const TRANSACTION_ID_LEN: usize = 12;
/// Magic cookie (RFC 8489 §5).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// At most this many transactions per client, so a lookup stays a short scan.
pub const MAX_PROBES: usize = 32;
/// Message type of a Binding request, success and error response (RFC 8489 §5, §18.2).
pub const BINDING_REQUEST: u16 = 0x0001;
pub const BINDING_SUCCESS: u16 = 0x0101;
pub const BINDING_ERROR: u16 = 0x0111;

/// A 12-byte STUN transaction id, drawn by the caller from its RNG.
pub type TxId = [u8; TRANSACTION_ID_LEN];

/// What is wrong with a datagram handed to the client or the responder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    #[error("STUN message of {len} bytes is shorter than the 20-byte header")]
    TooShort { len: usize },
    #[error("not a STUN message (first two bits must be 00, magic cookie 0x2112A442 at offset 4)")]
    NotStun,
    #[error("STUN header says {declared} attribute bytes, the datagram has {actual}")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("STUN attribute length {declared} is not a multiple of 4")]
    Unaligned { declared: usize },
    #[error("STUN message does not decode: {reason}")]
    Decode { reason: &'static str },
    #[error("STUN FINGERPRINT does not match the message")]
    BadFingerprint,
    #[error(
        "Binding success response from {server} has neither XOR-MAPPED-ADDRESS nor MAPPED-ADDRESS"
    )]
    NoMappedAddress { server: SocketAddr },
    #[error("Binding error response from {server} has no valid ERROR-CODE")]
    NoErrorCode { server: SocketAddr },
}

/// Why [`StunClient::add_server`] refused a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddError {
    #[error("transaction id is already in use by this client")]
    DuplicateTransaction,
    #[error("this client already runs {MAX_PROBES} transactions")]
    TooManyProbes,
}

/// Retransmission schedule (RFC 8489 §6.2.1).
///
/// Request `k + 1` follows request `k` after `RTO_k`, with
/// `RTO_1 = initial_rto` and `RTO_(k+1) = min(2 · RTO_k, max_rto)`; after
/// request `max_requests` (Rc) the client waits `last_wait_factor` (Rm) ×
/// `initial_rto` and then gives up. The RFC recommends RTO 500 ms, Rc 7,
/// Rm 16 (39.5 s in all); kith defaults to 250 ms (19.75 s in all) because a
/// netcheck that takes 40 s is not useful and the first answer normally
/// arrives within one RTT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retransmit {
    pub initial_rto: Duration,
    pub max_rto: Duration,
    pub max_requests: u32,
    pub last_wait_factor: u32,
}

impl Default for Retransmit {
    fn default() -> Self {
        Self {
            initial_rto: Duration::from_millis(250),
            max_rto: Duration::from_secs(8),
            max_requests: 7,
            last_wait_factor: 16,
        }
    }
}

/// A server's answer: the reflexive transport address it saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub server: SocketAddr,
    pub reflexive: SocketAddr,
    /// Round-trip time, only when the request was sent once (Karn's rule:
    /// after a retransmission it is unknown which request was answered).
    pub rtt: Option<Duration>,
    /// True when the address came from MAPPED-ADDRESS (an RFC 3489 server)
    /// rather than XOR-MAPPED-ADDRESS; some NATs rewrite plain addresses.
    pub legacy: bool,
}

/// Why a transaction ended without a reflexive address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer after the last retransmission.
    TimedOut { requests: u32 },
    /// The server answered with a Binding error response (RFC 8489 §14.8).
    ErrorResponse { code: u16, reason: String },
}

/// A finished transaction, reported once by [`StunClient::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StunEvent {
    Mapped(Mapping),
    Failed {
        server: SocketAddr,
        failure: Failure,
    },
}

/// What [`StunClient::handle_response`] did with a well-formed datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// It finished the transaction; the result is queued for
    /// [`StunClient::poll_event`] and returned here too.
    Mapped(Mapping),
    /// A Binding error response finished the transaction (see `poll_event`).
    ServerError { server: SocketAddr, code: u16 },
    /// Not for us (or no longer): dropped without decoding.
    Ignored(Ignored),
}

/// Why a STUN datagram was dropped without changing any state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// No transaction of this client has the id.
    UnknownTransaction,
    /// The id is ours but the datagram came from another address than the
    /// server we asked.
    WrongSource { expected: SocketAddr },
    /// The transaction already finished (a duplicate answer to a
    /// retransmission, or an answer after the timeout).
    AlreadyFinished,
    /// The id is ours but the message is not a Binding response.
    NotBindingResponse { message_type: u16 },
}

/// One server's result, in the order requests were first sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub server: SocketAddr,
    /// `None` while pending and when the server failed or stayed silent.
    pub reflexive: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
enum State {
    Pending {
        /// Requests sent so far (≥ 1).
        sent: u32,
        rto: Duration,
        last_sent: Instant,
        /// Next retransmission, or giving up after the last request.
        deadline: Instant,
    },
    Mapped(SocketAddr),
    Failed,
}

#[derive(Debug, Clone)]
struct Probe {
    server: SocketAddr,
    txid: TxId,
    request: Vec<u8>,
    state: State,
    /// A request is due and not yet handed out by `poll_transmit`.
    queued: bool,
}

/// Binding transactions to a set of servers from one socket.
#[derive(Debug, Clone, Default)]
pub struct StunClient {
    policy: Retransmit,
    probes: Vec<Probe>,
    events: std::collections::VecDeque<StunEvent>,
}

impl StunClient {
    pub fn new(policy: Retransmit) -> Self {
        Self {
            policy,
            probes: Vec::new(),
            events: Default::default(),
        }
    }

    /// Start a Binding transaction to `server` at `now`. `txid` must come
    /// from a cryptographically strong RNG (RFC 8489 §5: it also serves as
    /// a nonce against off-path forgery). The first request is queued for
    /// [`Self::poll_transmit`] at once. The same server may be asked more
    /// than once (with different ids), e.g. for extra probes.
    pub fn add_server(
        &mut self,
        now: Instant,
        server: SocketAddr,
        txid: TxId,
    ) -> Result<(), AddError> {
        if self.probes.len() >= MAX_PROBES {
            return Err(AddError::TooManyProbes);
        }
        if self.probes.iter().any(|p| p.txid == txid) {
            return Err(AddError::DuplicateTransaction);
        }
        let rto = self.policy.initial_rto;
        let sent = 1;
        self.probes.push(Probe {
            server,
            txid,
            request: binding_request(txid),
            state: State::Pending {
                sent,
                rto,
                last_sent: now,
                deadline: self.deadline_after(now, sent, rto),
            },
            queued: true,
        });
        Ok(())
    }

    /// The next datagram to send from the data socket: `(server, bytes)`.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        let probe = self.probes.iter_mut().find(|p| p.queued)?;
        probe.queued = false;
        Some((probe.server, probe.request.clone()))
    }

    /// The earliest retransmission or give-up deadline, if any transaction
    /// is still running.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.probes
            .iter()
            .filter_map(|p| match p.state {
                State::Pending { deadline, .. } => Some(deadline),
                _ => None,
            })
            .min()
    }

    /// Run every deadline at or before `now`: queue retransmissions, and
    /// fail transactions whose last request went unanswered.
    pub fn handle_timeout(&mut self, now: Instant) {
        let policy = self.policy;
        for i in 0..self.probes.len() {
            let probe = &mut self.probes[i];
            let State::Pending {
                sent,
                rto,
                deadline,
                ..
            } = probe.state
            else {
                continue;
            };
            if now < deadline {
                continue;
            }
            if sent >= policy.max_requests {
                probe.state = State::Failed;
                probe.queued = false;
                let server = probe.server;
                self.events.push_back(StunEvent::Failed {
                    server,
                    failure: Failure::TimedOut { requests: sent },
                });
                continue;
            }
            let sent = sent + 1;
            let rto = rto.saturating_mul(2).min(policy.max_rto);
            let deadline = self.deadline_after(now, sent, rto);
            let probe = &mut self.probes[i];
            probe.state = State::Pending {
                sent,
                rto,
                last_sent: now,
                deadline,
            };
            probe.queued = true;
        }
    }

    /// When request number `sent` went out at `now` with the current `rto`.
    fn deadline_after(&self, now: Instant, sent: u32, rto: Duration) -> Instant {
        if sent >= self.policy.max_requests {
            now + self
                .policy
                .initial_rto
                .saturating_mul(self.policy.last_wait_factor)
        } else {
            now + rto
        }
    }

    /// A STUN datagram received on the data socket from `from` at `now`.
    ///
    /// `Err` means the datagram is malformed (nothing changed); `Ok` says
    /// whether it finished a transaction or was ignored.
    pub fn handle_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<Handled, StunError> {
        let header = check_header(bytes)?;
        let Some(probe) = self.probes.iter_mut().find(|p| p.txid == header.txid) else {
            return Ok(Handled::Ignored(Ignored::UnknownTransaction));
        };
        if from != probe.server {
            return Ok(Handled::Ignored(Ignored::WrongSource {
                expected: probe.server,
            }));
        }
        let State::Pending {
            sent, last_sent, ..
        } = probe.state
        else {
            return Ok(Handled::Ignored(Ignored::AlreadyFinished));
        };
        if header.message_type != BINDING_SUCCESS && header.message_type != BINDING_ERROR {
            return Ok(Handled::Ignored(Ignored::NotBindingResponse {
                message_type: header.message_type,
            }));
        }
        let msg = decode(bytes)?;
        let server = probe.server;
        match msg.class() {
            MessageClass::SuccessResponse => {
                let (reflexive, legacy) =
                    mapped_address(&msg).ok_or(StunError::NoMappedAddress { server })?;
                let mapping = Mapping {
                    server,
                    reflexive,
                    rtt: (sent == 1).then(|| now.saturating_duration_since(last_sent)),
                    legacy,
                };
                probe.state = State::Mapped(reflexive);
                probe.queued = false;
                self.events.push_back(StunEvent::Mapped(mapping));
                Ok(Handled::Mapped(mapping))
            }
            _ => {
                let (code, reason) = error_code(&msg).ok_or(StunError::NoErrorCode { server })?;
                probe.state = State::Failed;
                probe.queued = false;
                self.events.push_back(StunEvent::Failed {
                    server,
                    failure: Failure::ErrorResponse { code, reason },
                });
                Ok(Handled::ServerError { server, code })
            }
        }
    }

    /// The next finished transaction, each reported once.
    pub fn poll_event(&mut self) -> Option<StunEvent> {
        self.events.pop_front()
    }

    /// True once no transaction is running.
    pub fn is_finished(&self) -> bool {
        self.probes
            .iter()
            .all(|p| !matches!(p.state, State::Pending { .. }))
    }

    /// Every server's result so far, in the order requests were first sent.
    pub fn observations(&self) -> Vec<Observation> {
        self.probes
            .iter()
            .map(|p| Observation {
                server: p.server,
                reflexive: match p.state {
                    State::Mapped(a) => Some(a),
                    _ => None,
                },
            })
            .collect()
    }

    /// Whether `txid` is a transaction of this client that is still running.
    pub fn is_outstanding(&self, txid: &TxId) -> bool {
        self.probes
            .iter()
            .any(|p| &p.txid == txid && matches!(p.state, State::Pending { .. }))
    }
}

/// The fields of a STUN header that passed the length checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub message_type: u16,
    pub txid: TxId,
}

/// RFC 8489 §5 and §6.3: top two bits zero, magic cookie, length equal to
/// the datagram's rest and a multiple of 4. Cheap: no allocation.
pub(crate) fn check_header(bytes: &[u8]) -> Result<Header, StunError> {
    let Some((head, body)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(StunError::TooShort { len: bytes.len() });
    };
    if head[0] & 0xc0 != 0
        || u32::from_be_bytes([head[4], head[5], head[6], head[7]]) != MAGIC_COOKIE
    {
        return Err(StunError::NotStun);
    }
    let declared = usize::from(u16::from_be_bytes([head[2], head[3]]));
    if declared != body.len() {
        return Err(StunError::LengthMismatch {
            declared,
            actual: body.len(),
        });
    }
    if declared % 4 != 0 {
        return Err(StunError::Unaligned { declared });
    }
    let mut txid = [0u8; TRANSACTION_ID_LEN];
    txid.copy_from_slice(&head[8..HEADER_LEN]);
    Ok(Header {
        message_type: u16::from_be_bytes([head[0], head[1]]),
        txid,
    })
}

/// Decode with stun-rs and check FINGERPRINT if present (RFC 8489 §14.7).
/// MESSAGE-INTEGRITY is not checked: kith uses no STUN credentials, and a
/// server that adds it anyway is believed as far as any STUN server is.
pub(crate) fn decode(bytes: &[u8]) -> Result<StunMessage, StunError> {
    let (msg, _) = MessageDecoderBuilder::default()
        .build()
        .decode(bytes)
        .map_err(|_| StunError::Decode {
            reason: "malformed attribute or message",
        })?;
    if let Some(attr) = msg.get::<Fingerprint>() {
        let fingerprint = attr
            .as_fingerprint()
            .map_err(|_| StunError::BadFingerprint)?;
        let input =
            stun_rs::get_input_text::<Fingerprint>(bytes).ok_or(StunError::BadFingerprint)?;
        if !fingerprint.validate(&input) {
            return Err(StunError::BadFingerprint);
        }
    }
    Ok(msg)
}

/// XOR-MAPPED-ADDRESS (RFC 8489 §14.2), else MAPPED-ADDRESS (§14.1);
/// `true` when it was the latter.
fn mapped_address(msg: &StunMessage) -> Option<(SocketAddr, bool)> {
    if let Some(a) = msg
        .get::<XorMappedAddress>()
        .and_then(|a| a.as_xor_mapped_address().ok())
    {
        return Some((*a.socket_address(), false));
    }
    msg.get::<MappedAddress>()
        .and_then(|a| a.as_mapped_address().ok())
        .map(|a| (*a.socket_address(), true))
}

fn error_code(msg: &StunMessage) -> Option<(u16, String)> {
    let e = msg.get::<ErrorCode>()?.as_error_code().ok()?.error_code();
    Some((e.error_code(), e.reason().to_string()))
}

/// A Binding request with FINGERPRINT (RFC 8489 §6.1, §14.7): 28 bytes.
fn binding_request(txid: TxId) -> Vec<u8> {
    let msg = StunMessageBuilder::new(BINDING, MessageClass::Request)
        .with_transaction_id(TransactionId::from(txid))
        .with_attribute(Fingerprint::default())
        .build();
    encode(&msg)
}

/// Encode a message we built ourselves; 512 bytes hold any of them.
pub(crate) fn encode(msg: &StunMessage) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    match MessageEncoderBuilder::default()
        .build()
        .encode(&mut buf, msg)
    {
        Ok(n) => buf.truncate(n),
        // Only a too-small buffer fails, and ours fits every message built
        // in this module; an empty datagram is dropped by any server.
        Err(_) => buf.clear(),
    }
    buf
}

#[cfg(test)]
mod tests;
