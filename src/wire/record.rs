//! Byte layout of the DHT record: the plaintext body a node publishes about
//! itself, and the envelope its encrypted form travels in as a BEP 44 value.
//! The same plaintext body also travels to connected peers inside the
//! `Record` control message (`wire::control`), so there is one codec.
//!
//! Knows nothing of keys or time: sealing, opening, signing and freshness are
//! `discovery::record`'s. Relays are carried as raw 32-byte Ed25519 public
//! keys; `discovery` checks they are keys. Reference: `docs/protocol.md`,
//! "DHT record".
//!
//! ```text
//! Envelope (the BEP 44 value, 41 + n bytes, ≤ 1000)
//!  0  envelope version = 1
//!  1  nonce (24)
//! 25  XChaCha20-Poly1305(plaintext n bytes) | tag (16)
//!
//! Plaintext (11 + 7 per IPv4 + 19 per IPv6 candidate + 32 per relay
//!            + extensions)
//!  0  body version = 2 (1: the same without extensions)
//!  1  timestamp, unix seconds (u64)
//!  9  candidate count (u8), then per candidate:
//!       tag (u8): high nibble family (4 | 6), low nibble kind
//!                 (1 local, 2 reflexive, 3 mapped)
//!       address (4 | 16) | port (u16)
//!  …  relay count (u8), then 32 bytes per relay (Ed25519 public key)
//!  …  version 2 only, to the end of the body, extensions:
//!       type (u8) | len (u8) | value (len); unknown types are skipped
//!
//! NAT extension (type 1, len 5, 11 or 23): the publisher's NAT behaviour
//!  0  mapping (u8): 0 unknown, 1 no NAT, 2 endpoint-independent,
//!                   3 endpoint-dependent
//!  1  flags (u8): bit 0 port preserving; others 0, ignored when read
//!  2  allocator step (i16), 0 = not sequential
//!  4  public address family (u8): 0 none | 4 | 6
//!  5  address (0 | 4 | 16) | port (0 | 2)
//! ```
//!
//! Extensions exist so a newer kith can add facts without a version bump an
//! older one would refuse: an older reader skips what it does not know by
//! its length. Extensions it does know are parsed strictly.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::discovery::{Candidate, CandidateKind};
use crate::nat::{MappingBehaviour, NatBehaviour};

/// Version byte of the plaintext body this code writes (it reads this and
/// [`RECORD_BODY_V1`]).
pub const RECORD_BODY_VERSION: u8 = 2;
/// The first body version: no extensions, strict end.
pub const RECORD_BODY_V1: u8 = 1;
/// Version byte of the envelope (and of its key derivation and AEAD).
pub const RECORD_ENVELOPE_VERSION: u8 = 1;
/// BEP 44: a mutable item's value must be at most 1000 bytes.
pub const MAX_RECORD_VALUE: usize = 1000;
/// XChaCha20-Poly1305 nonce length.
pub const RECORD_NONCE_LEN: usize = 24;
/// Poly1305 tag length.
pub const RECORD_TAG_LEN: usize = 16;
/// Envelope bytes around the plaintext: version + nonce + tag.
pub const RECORD_ENVELOPE_OVERHEAD: usize = 1 + RECORD_NONCE_LEN + RECORD_TAG_LEN;
/// Largest plaintext whose envelope still fits in a BEP 44 value (959).
pub const MAX_RECORD_PLAINTEXT: usize = MAX_RECORD_VALUE - RECORD_ENVELOPE_OVERHEAD;
/// Plaintext bytes that do not depend on the contents: version, timestamp
/// and the two counts.
pub const RECORD_BODY_FIXED_LEN: usize = 1 + 8 + 1 + 1;
/// Bytes of one IPv4 candidate: tag, address, port.
pub const RECORD_CANDIDATE_V4_LEN: usize = 1 + 4 + 2;
/// Bytes of one IPv6 candidate: tag, address, port.
pub const RECORD_CANDIDATE_V6_LEN: usize = 1 + 16 + 2;
/// Bytes of one relay entry: an Ed25519 public key.
pub const RECORD_RELAY_LEN: usize = 32;
/// Bytes in front of every extension's value: type and length.
pub const RECORD_EXT_HEADER_LEN: usize = 2;
/// Extension type of the publisher's NAT behaviour.
pub const RECORD_EXT_NAT: u8 = 1;
/// NAT extension value without the address: mapping, flags, step, family.
pub const RECORD_NAT_FIXED_LEN: usize = 1 + 1 + 2 + 1;
/// Flags bit of the NAT extension: the mapping kept the socket's port.
const NAT_FLAG_PORT_PRESERVING: u8 = 0x01;

const FAMILY_V4: u8 = 0x40;
const FAMILY_V6: u8 = 0x60;

/// Why bytes are not a record body or envelope, or why one cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordWireError {
    #[error("record is empty")]
    Empty,
    #[error(
        "record version {0} is not supported (this kith reads body versions 1 and 2, \
         envelope version 1)"
    )]
    UnsupportedVersion(u8),
    #[error("record ends at byte {len} inside {field}, which needs {need} bytes")]
    Truncated {
        field: &'static str,
        len: usize,
        need: usize,
    },
    #[error("candidate {index} has unknown tag 0x{tag:02x} (expected 0x41-0x43 or 0x61-0x63)")]
    UnknownCandidateTag { index: usize, tag: u8 },
    #[error("record body is {len} bytes but its contents end at byte {end}")]
    TrailingBytes { len: usize, end: usize },
    #[error("envelope is {len} bytes, shorter than version, nonce and tag ({min})")]
    EnvelopeTooShort { len: usize, min: usize },
    #[error("record value is {len} bytes, BEP 44 allows at most {max}")]
    TooLarge { len: usize, max: usize },
    #[error("{count} {what} do not fit a record (at most 255)")]
    TooMany { what: &'static str, count: usize },
    #[error("NAT extension has mapping value {0} (expected 0-3)")]
    UnknownNatMapping(u8),
    #[error("NAT extension has address family {0} (expected 0, 4 or 6)")]
    UnknownNatFamily(u8),
    #[error("extension {ty} is {len} bytes but its fields take {need}")]
    ExtensionLength { ty: u8, len: usize, need: usize },
    #[error("extension {0} appears twice")]
    DuplicateExtension(u8),
    #[error("NAT allocator step {0} cannot be written (it must be non-zero and fit an i16)")]
    UnrepresentableNatStep(i32),
    #[error("output buffer of {have} bytes, need {need}")]
    BufferTooSmall { have: usize, need: usize },
}

/// What a node says about itself in its DHT record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordBody {
    /// When the publisher wrote it, unix seconds (checked for freshness).
    pub timestamp: u64,
    /// Addresses the publisher may be reached at. IPv6 flow info and scope
    /// id are not carried (they read back as 0).
    pub candidates: Vec<Candidate>,
    /// Ed25519 public keys of relays the publisher is reachable through.
    pub relays: Vec<[u8; 32]>,
    /// How the publisher's NAT maps its socket, so a peer can pick a
    /// traversal strategy (port prediction for endpoint-dependent mappings).
    /// `None`: not measured, or a version 1 body. The public address's IPv6
    /// flow info and scope id read back as 0.
    pub nat: Option<NatBehaviour>,
}

/// An envelope split into its fields, borrowing from the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordEnvelope<'a> {
    pub nonce: &'a [u8; RECORD_NONCE_LEN],
    /// Ciphertext including the 16-byte tag (at least the tag).
    pub ciphertext: &'a [u8],
    /// The envelope's first byte (always [`RECORD_ENVELOPE_VERSION`] after
    /// a successful parse), for the associated data.
    pub version: u8,
}

fn kind_code(kind: CandidateKind) -> u8 {
    match kind {
        CandidateKind::Local => 1,
        CandidateKind::Reflexive => 2,
        CandidateKind::Mapped => 3,
    }
}

fn kind_from_code(code: u8) -> Option<CandidateKind> {
    match code {
        1 => Some(CandidateKind::Local),
        2 => Some(CandidateKind::Reflexive),
        3 => Some(CandidateKind::Mapped),
        _ => None,
    }
}

fn mapping_code(mapping: MappingBehaviour) -> u8 {
    match mapping {
        MappingBehaviour::Unknown => 0,
        MappingBehaviour::NoNat => 1,
        MappingBehaviour::EndpointIndependent => 2,
        MappingBehaviour::EndpointDependent => 3,
    }
}

fn mapping_from_code(code: u8) -> Option<MappingBehaviour> {
    match code {
        0 => Some(MappingBehaviour::Unknown),
        1 => Some(MappingBehaviour::NoNat),
        2 => Some(MappingBehaviour::EndpointIndependent),
        3 => Some(MappingBehaviour::EndpointDependent),
        _ => None,
    }
}

/// Bytes one candidate takes in the plaintext.
pub fn record_candidate_len(c: &Candidate) -> usize {
    match c.addr {
        SocketAddr::V4(_) => RECORD_CANDIDATE_V4_LEN,
        SocketAddr::V6(_) => RECORD_CANDIDATE_V6_LEN,
    }
}

/// Bytes of the NAT extension's value (5, 11 or 23).
pub fn record_nat_value_len(nat: &NatBehaviour) -> usize {
    RECORD_NAT_FIXED_LEN
        + match nat.public {
            None => 0,
            Some(SocketAddr::V4(_)) => 4 + 2,
            Some(SocketAddr::V6(_)) => 16 + 2,
        }
}

/// Length of `body`'s plaintext encoding (version 2).
pub fn record_plaintext_len(body: &RecordBody) -> usize {
    RECORD_BODY_FIXED_LEN
        + body
            .candidates
            .iter()
            .map(record_candidate_len)
            .sum::<usize>()
        + RECORD_RELAY_LEN * body.relays.len()
        + body
            .nat
            .as_ref()
            .map_or(0, |n| RECORD_EXT_HEADER_LEN + record_nat_value_len(n))
}

/// A bounds-checked reader: every take names the field it reads.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], RecordWireError> {
        let end = self.at.saturating_add(n);
        let Some(bytes) = self.buf.get(self.at..end) else {
            return Err(RecordWireError::Truncated {
                field,
                len: self.buf.len(),
                need: end,
            });
        };
        self.at = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], RecordWireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(field, N)?);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, RecordWireError> {
        Ok(self.array::<1>(field)?[0])
    }
}

/// Parse a decrypted record body of version 1 or 2. Strict about what it
/// knows: unknown versions, candidate tags, mapping values and address
/// families, short input, a truncated extension, a known extension of the
/// wrong length or given twice, and (version 1) trailing bytes are all
/// errors. Lenient only where forward compatibility needs it: unknown
/// extension types are skipped and unknown NAT flag bits ignored, so `emit`
/// of the result gives back the input only when it had neither (and was
/// version 2).
pub fn parse_record_plaintext(buf: &[u8]) -> Result<RecordBody, RecordWireError> {
    let Some(&version) = buf.first() else {
        return Err(RecordWireError::Empty);
    };
    if version != RECORD_BODY_VERSION && version != RECORD_BODY_V1 {
        return Err(RecordWireError::UnsupportedVersion(version));
    }
    let mut r = Reader { buf, at: 1 };
    let timestamp = u64::from_be_bytes(r.array("timestamp")?);
    let count = usize::from(r.u8("candidate count")?);
    let mut candidates = Vec::with_capacity(count);
    for index in 0..count {
        let tag = r.u8("candidate tag")?;
        let kind = kind_from_code(tag & 0x0f)
            .ok_or(RecordWireError::UnknownCandidateTag { index, tag })?;
        let addr = match tag & 0xf0 {
            FAMILY_V4 => {
                let ip = Ipv4Addr::from(r.array::<4>("IPv4 address")?);
                let port = u16::from_be_bytes(r.array("port")?);
                SocketAddr::V4(SocketAddrV4::new(ip, port))
            }
            FAMILY_V6 => {
                let ip = Ipv6Addr::from(r.array::<16>("IPv6 address")?);
                let port = u16::from_be_bytes(r.array("port")?);
                SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0))
            }
            _ => return Err(RecordWireError::UnknownCandidateTag { index, tag }),
        };
        candidates.push(Candidate { kind, addr });
    }
    let count = usize::from(r.u8("relay count")?);
    let mut relays = Vec::with_capacity(count);
    for _ in 0..count {
        relays.push(r.array::<32>("relay key")?);
    }
    let mut nat = None;
    if version == RECORD_BODY_V1 {
        if r.at != buf.len() {
            return Err(RecordWireError::TrailingBytes {
                len: buf.len(),
                end: r.at,
            });
        }
    } else {
        while r.at < buf.len() {
            let ty = r.u8("extension type")?;
            let len = usize::from(r.u8("extension length")?);
            let value = r.take("extension value", len)?;
            match ty {
                RECORD_EXT_NAT if nat.is_some() => {
                    return Err(RecordWireError::DuplicateExtension(ty));
                }
                RECORD_EXT_NAT => nat = Some(parse_nat(value)?),
                // A fact a newer kith publishes: its length lets us step over it.
                _ => {}
            }
        }
    }
    Ok(RecordBody {
        timestamp,
        candidates,
        relays,
        nat,
    })
}

/// The NAT extension's value, which must be exactly as long as its fields
/// (a wrong length is [`RecordWireError::ExtensionLength`], never
/// `Truncated`: the body itself is whole).
fn parse_nat(value: &[u8]) -> Result<NatBehaviour, RecordWireError> {
    let wrong_len = |need: usize| RecordWireError::ExtensionLength {
        ty: RECORD_EXT_NAT,
        len: value.len(),
        need,
    };
    let Some(&[code, flags, s0, s1, family]) = value.get(..RECORD_NAT_FIXED_LEN) else {
        return Err(wrong_len(RECORD_NAT_FIXED_LEN));
    };
    let mapping = mapping_from_code(code).ok_or(RecordWireError::UnknownNatMapping(code))?;
    let step = i16::from_be_bytes([s0, s1]);
    let addr = &value[RECORD_NAT_FIXED_LEN..];
    let public = match (family, addr) {
        (0, []) => None,
        (4, &[a, b, c, d, p0, p1]) => Some(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(a, b, c, d),
            u16::from_be_bytes([p0, p1]),
        ))),
        (6, &[ref ip @ .., p0, p1]) if ip.len() == 16 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(ip);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(octets),
                u16::from_be_bytes([p0, p1]),
                0,
                0,
            )))
        }
        (0, _) => return Err(wrong_len(RECORD_NAT_FIXED_LEN)),
        (4, _) => return Err(wrong_len(RECORD_NAT_FIXED_LEN + 4 + 2)),
        (6, _) => return Err(wrong_len(RECORD_NAT_FIXED_LEN + 16 + 2)),
        (f, _) => return Err(RecordWireError::UnknownNatFamily(f)),
    };
    Ok(NatBehaviour {
        mapping,
        // Bits other than port preservation belong to later versions.
        port_preserving: flags & NAT_FLAG_PORT_PRESERVING != 0,
        sequential: (step != 0).then_some(i32::from(step)),
        public,
    })
}

fn count_byte(what: &'static str, count: usize) -> Result<u8, RecordWireError> {
    u8::try_from(count).map_err(|_| RecordWireError::TooMany { what, count })
}

/// The NAT step as written: 0 means "not sequential", so `Some(0)` and
/// steps beyond an i16 have no encoding. `classify` never reports either
/// (its steps are non-zero and at most 16 ports); refusing them rather than
/// writing "not sequential" keeps a caller's bug from being published.
fn nat_step(sequential: Option<i32>) -> Result<i16, RecordWireError> {
    match sequential {
        None => Ok(0),
        Some(step) => i16::try_from(step)
            .ok()
            .filter(|s| *s != 0)
            .ok_or(RecordWireError::UnrepresentableNatStep(step)),
    }
}

/// Write `body`'s plaintext (version 2, with the NAT extension when
/// `body.nat` is set) into `out`; returns the length written
/// ([`record_plaintext_len`]). Does not check the 1000-byte limit: the
/// envelope does.
pub fn emit_record_plaintext(out: &mut [u8], body: &RecordBody) -> Result<usize, RecordWireError> {
    let n_candidates = count_byte("candidates", body.candidates.len())?;
    let n_relays = count_byte("relays", body.relays.len())?;
    let nat_step = body.nat.map(|n| nat_step(n.sequential)).transpose()?;
    let need = record_plaintext_len(body);
    let Some(out) = out.get_mut(..need) else {
        return Err(RecordWireError::BufferTooSmall {
            have: out.len(),
            need,
        });
    };
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(&[RECORD_BODY_VERSION]);
    put(&body.timestamp.to_be_bytes());
    put(&[n_candidates]);
    for c in &body.candidates {
        match c.addr {
            SocketAddr::V4(a) => {
                put(&[FAMILY_V4 | kind_code(c.kind)]);
                put(&a.ip().octets());
                put(&a.port().to_be_bytes());
            }
            SocketAddr::V6(a) => {
                put(&[FAMILY_V6 | kind_code(c.kind)]);
                put(&a.ip().octets());
                put(&a.port().to_be_bytes());
            }
        }
    }
    put(&[n_relays]);
    for relay in &body.relays {
        put(relay);
    }
    if let (Some(nat), Some(step)) = (&body.nat, nat_step) {
        // At most 23 bytes: the length always fits its byte.
        let len = record_nat_value_len(nat) as u8;
        let flags = if nat.port_preserving {
            NAT_FLAG_PORT_PRESERVING
        } else {
            0
        };
        put(&[RECORD_EXT_NAT, len, mapping_code(nat.mapping), flags]);
        put(&step.to_be_bytes());
        match nat.public {
            None => put(&[0]),
            Some(SocketAddr::V4(a)) => {
                put(&[4]);
                put(&a.ip().octets());
                put(&a.port().to_be_bytes());
            }
            Some(SocketAddr::V6(a)) => {
                put(&[6]);
                put(&a.ip().octets());
                put(&a.port().to_be_bytes());
            }
        }
    }
    Ok(need)
}

/// `body`'s plaintext as a new vector.
pub fn record_plaintext_to_vec(body: &RecordBody) -> Result<Vec<u8>, RecordWireError> {
    let mut out = vec![0u8; record_plaintext_len(body)];
    emit_record_plaintext(&mut out, body)?;
    Ok(out)
}

/// Split a BEP 44 value into envelope fields. Checks the version, the
/// 1000-byte limit and that there is room for the tag; the ciphertext is
/// not looked into.
pub fn parse_record_envelope(value: &[u8]) -> Result<RecordEnvelope<'_>, RecordWireError> {
    let Some(&version) = value.first() else {
        return Err(RecordWireError::Empty);
    };
    if version != RECORD_ENVELOPE_VERSION {
        return Err(RecordWireError::UnsupportedVersion(version));
    }
    if value.len() > MAX_RECORD_VALUE {
        return Err(RecordWireError::TooLarge {
            len: value.len(),
            max: MAX_RECORD_VALUE,
        });
    }
    if value.len() < RECORD_ENVELOPE_OVERHEAD {
        return Err(RecordWireError::EnvelopeTooShort {
            len: value.len(),
            min: RECORD_ENVELOPE_OVERHEAD,
        });
    }
    let nonce = value[1..1 + RECORD_NONCE_LEN]
        .try_into()
        .map_err(|_| RecordWireError::Empty)?;
    Ok(RecordEnvelope {
        nonce,
        ciphertext: &value[1 + RECORD_NONCE_LEN..],
        version,
    })
}

/// Write an envelope (version, `nonce`, `ciphertext` with its tag) into
/// `out`; returns the length. Refuses values over 1000 bytes and
/// ciphertexts shorter than a tag.
pub fn emit_record_envelope(
    out: &mut [u8],
    nonce: &[u8; RECORD_NONCE_LEN],
    ciphertext: &[u8],
) -> Result<usize, RecordWireError> {
    let len = 1 + RECORD_NONCE_LEN + ciphertext.len();
    if len > MAX_RECORD_VALUE {
        return Err(RecordWireError::TooLarge {
            len,
            max: MAX_RECORD_VALUE,
        });
    }
    if ciphertext.len() < RECORD_TAG_LEN {
        return Err(RecordWireError::EnvelopeTooShort {
            len,
            min: RECORD_ENVELOPE_OVERHEAD,
        });
    }
    let Some(out) = out.get_mut(..len) else {
        return Err(RecordWireError::BufferTooSmall {
            have: out.len(),
            need: len,
        });
    };
    out[0] = RECORD_ENVELOPE_VERSION;
    out[1..1 + RECORD_NONCE_LEN].copy_from_slice(nonce);
    out[1 + RECORD_NONCE_LEN..].copy_from_slice(ciphertext);
    Ok(len)
}

#[cfg(test)]
mod tests;
