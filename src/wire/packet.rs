//! Parse and emit of the kith UDP messages (layout in the module doc).

/// Type byte of a handshake initiation.
pub const TYPE_INITIATION: u8 = 0x81;
/// Type byte of a handshake response.
pub const TYPE_RESPONSE: u8 = 0x82;
/// Type byte of a cookie reply (sent by a responder under load).
pub const TYPE_COOKIE_REPLY: u8 = 0x83;
/// Type byte of a transport data message.
pub const TYPE_DATA: u8 = 0x84;

/// STUN magic cookie (RFC 8489 §6).
pub const STUN_MAGIC_COOKIE: u32 = 0x2112_A442;

pub const MAC_LEN: usize = 16;
/// Noise message 1 of IKpsk2 with a 12-byte timestamp payload:
/// e (32) + enc(s) (32 + 16) + enc(timestamp) (12 + 16).
pub const NOISE_INIT_LEN: usize = 32 + 48 + 28;
/// Noise message 2 of IKpsk2 with an empty payload: e (32) + tag (16).
pub const NOISE_RESPONSE_LEN: usize = 32 + 16;
pub const INITIATION_LEN: usize = 8 + NOISE_INIT_LEN + 2 * MAC_LEN;
pub const RESPONSE_LEN: usize = 12 + NOISE_RESPONSE_LEN + 2 * MAC_LEN;
pub const COOKIE_NONCE_LEN: usize = 24;
pub const COOKIE_REPLY_LEN: usize = 8 + COOKIE_NONCE_LEN + 16 + 16;
pub const DATA_HEADER_LEN: usize = 16;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// Largest datagram kith emits or accepts.
pub const MAX_DATAGRAM: usize = 65_535;

/// Why bytes were not a valid message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty datagram")]
    Empty,
    #[error("unknown message type 0x{0:02x}")]
    UnknownType(u8),
    #[error("{kind} message is {len} bytes, expected {expected}")]
    BadLength {
        kind: &'static str,
        len: usize,
        expected: usize,
    },
    #[error("data message is {len} bytes, shorter than header and tag ({min})")]
    DataTooShort { len: usize, min: usize },
    #[error("reserved bytes are not zero")]
    Reserved,
    #[error("output buffer of {have} bytes, need {need}")]
    BufferTooSmall { have: usize, need: usize },
}

/// A classified datagram, borrowing from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    Stun(&'a [u8]),
    Initiation(Initiation<'a>),
    Response(Response<'a>),
    CookieReply(CookieReply<'a>),
    Data(Data<'a>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Initiation<'a> {
    pub sender: u32,
    pub noise: &'a [u8; NOISE_INIT_LEN],
    pub mac1: [u8; MAC_LEN],
    pub mac2: [u8; MAC_LEN],
    /// The bytes covered by mac1 (everything before it).
    pub mac1_input: &'a [u8],
    /// The bytes covered by mac2 (everything before it, mac1 included).
    pub mac2_input: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    pub sender: u32,
    pub receiver: u32,
    pub noise: &'a [u8; NOISE_RESPONSE_LEN],
    pub mac1: [u8; MAC_LEN],
    pub mac2: [u8; MAC_LEN],
    pub mac1_input: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieReply<'a> {
    pub receiver: u32,
    pub nonce: &'a [u8; COOKIE_NONCE_LEN],
    pub encrypted_cookie: &'a [u8; 32],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Data<'a> {
    pub receiver: u32,
    pub counter: u64,
    /// Ciphertext including the 16-byte tag.
    pub ciphertext: &'a [u8],
}

/// True when the datagram looks like STUN (RFC 8489 §5: top two bits zero,
/// magic cookie at offset 4, length a multiple of 4 after a 20-byte header).
pub fn is_stun(buf: &[u8]) -> bool {
    buf.len() >= 20
        && buf[0] & 0xc0 == 0
        && u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) == STUN_MAGIC_COOKIE
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

fn exact(kind: &'static str, buf: &[u8], expected: usize) -> Result<(), WireError> {
    if buf.len() != expected {
        return Err(WireError::BadLength {
            kind,
            len: buf.len(),
            expected,
        });
    }
    if buf[1..4] != [0, 0, 0] {
        return Err(WireError::Reserved);
    }
    Ok(())
}

/// Classify and parse one datagram.
pub fn parse(buf: &[u8]) -> Result<Packet<'_>, WireError> {
    let Some(&ty) = buf.first() else {
        return Err(WireError::Empty);
    };
    match ty {
        TYPE_DATA => {
            let min = DATA_HEADER_LEN + TAG_LEN;
            if buf.len() < min {
                return Err(WireError::DataTooShort {
                    len: buf.len(),
                    min,
                });
            }
            if buf[1..4] != [0, 0, 0] {
                return Err(WireError::Reserved);
            }
            Ok(Packet::Data(Data {
                receiver: be32(buf, 4),
                counter: u64::from_be_bytes(arr(buf, 8)),
                ciphertext: &buf[DATA_HEADER_LEN..],
            }))
        }
        TYPE_INITIATION => {
            exact("initiation", buf, INITIATION_LEN)?;
            let mac1_at = 8 + NOISE_INIT_LEN;
            Ok(Packet::Initiation(Initiation {
                sender: be32(buf, 4),
                noise: buf[8..mac1_at].try_into().map_err(|_| WireError::Empty)?,
                mac1: arr(buf, mac1_at),
                mac2: arr(buf, mac1_at + MAC_LEN),
                mac1_input: &buf[..mac1_at],
                mac2_input: &buf[..mac1_at + MAC_LEN],
            }))
        }
        TYPE_RESPONSE => {
            exact("response", buf, RESPONSE_LEN)?;
            let mac1_at = 12 + NOISE_RESPONSE_LEN;
            Ok(Packet::Response(Response {
                sender: be32(buf, 4),
                receiver: be32(buf, 8),
                noise: buf[12..mac1_at].try_into().map_err(|_| WireError::Empty)?,
                mac1: arr(buf, mac1_at),
                mac2: arr(buf, mac1_at + MAC_LEN),
                mac1_input: &buf[..mac1_at],
            }))
        }
        TYPE_COOKIE_REPLY => {
            exact("cookie reply", buf, COOKIE_REPLY_LEN)?;
            Ok(Packet::CookieReply(CookieReply {
                receiver: be32(buf, 4),
                nonce: buf[8..32].try_into().map_err(|_| WireError::Empty)?,
                encrypted_cookie: buf[32..64].try_into().map_err(|_| WireError::Empty)?,
            }))
        }
        _ if is_stun(buf) => Ok(Packet::Stun(buf)),
        other => Err(WireError::UnknownType(other)),
    }
}

fn need(out: &[u8], need: usize) -> Result<(), WireError> {
    if out.len() < need {
        return Err(WireError::BufferTooSmall {
            have: out.len(),
            need,
        });
    }
    Ok(())
}

fn header(out: &mut [u8], ty: u8) {
    out[0] = ty;
    out[1..4].fill(0);
}

/// Write an initiation with a zero mac1/mac2 (the caller computes the MACs
/// over the returned `mac1_input` range). Returns the message length.
pub fn emit_initiation(
    out: &mut [u8],
    sender: u32,
    noise: &[u8; NOISE_INIT_LEN],
) -> Result<usize, WireError> {
    need(out, INITIATION_LEN)?;
    header(out, TYPE_INITIATION);
    out[4..8].copy_from_slice(&sender.to_be_bytes());
    out[8..8 + NOISE_INIT_LEN].copy_from_slice(noise);
    out[8 + NOISE_INIT_LEN..INITIATION_LEN].fill(0);
    Ok(INITIATION_LEN)
}

/// Write a response with zero MACs. Returns the message length.
pub fn emit_response(
    out: &mut [u8],
    sender: u32,
    receiver: u32,
    noise: &[u8; NOISE_RESPONSE_LEN],
) -> Result<usize, WireError> {
    need(out, RESPONSE_LEN)?;
    header(out, TYPE_RESPONSE);
    out[4..8].copy_from_slice(&sender.to_be_bytes());
    out[8..12].copy_from_slice(&receiver.to_be_bytes());
    out[12..12 + NOISE_RESPONSE_LEN].copy_from_slice(noise);
    out[12 + NOISE_RESPONSE_LEN..RESPONSE_LEN].fill(0);
    Ok(RESPONSE_LEN)
}

/// Write a cookie reply. Returns the message length.
pub fn emit_cookie_reply(
    out: &mut [u8],
    receiver: u32,
    nonce: &[u8; COOKIE_NONCE_LEN],
    encrypted_cookie: &[u8; 32],
) -> Result<usize, WireError> {
    need(out, COOKIE_REPLY_LEN)?;
    header(out, TYPE_COOKIE_REPLY);
    out[4..8].copy_from_slice(&receiver.to_be_bytes());
    out[8..32].copy_from_slice(nonce);
    out[32..64].copy_from_slice(encrypted_cookie);
    Ok(COOKIE_REPLY_LEN)
}

/// Write the 16-byte data header; the caller encrypts into `out[16..]`.
pub fn emit_data_header(out: &mut [u8], receiver: u32, counter: u64) -> Result<(), WireError> {
    need(out, DATA_HEADER_LEN)?;
    header(out, TYPE_DATA);
    out[4..8].copy_from_slice(&receiver.to_be_bytes());
    out[8..16].copy_from_slice(&counter.to_be_bytes());
    Ok(())
}

/// Offsets of the MAC fields inside a handshake message of length `len`.
pub fn mac_offsets(len: usize) -> (usize, usize) {
    (len - 2 * MAC_LEN, len - MAC_LEN)
}

#[cfg(test)]
mod tests;
