//! A minimal STUN Binding responder (RFC 8489 §6.3) for tests and private
//! deployments (`kith stun-server`).
//!
//! [`respond`] is sans-IO: a request and its source in, the success
//! response out. It answers only well-formed Binding requests (FINGERPRINT
//! checked when present) with XOR-MAPPED-ADDRESS and FINGERPRINT, and says
//! nothing to anything else (indications, responses, garbage), so it can
//! never be made to talk to itself or amplify: the answer is at most 20
//! bytes longer than a minimal request.
//!
//! Unknown comprehension-required attributes are ignored, not answered
//! with 420 (§6.3.1): a plain Binding request carries none.
//!
//! It does not implement RFC 5780 (NAT behaviour discovery: CHANGE-REQUEST,
//! OTHER-ADDRESS, RESPONSE-ORIGIN). kith's own classification does not need
//! it (it compares the mappings several servers see), but miniupnpd's
//! `ext_perform_stun` check does: use coturn (Debian `coturn`, listening on
//! two addresses) where an RFC 5780 server is needed.

#![cfg_attr(not(test), deny(clippy::disallowed_methods))]

use std::net::SocketAddr;

use stun_rs::attributes::stun::{Fingerprint, XorMappedAddress};
use stun_rs::methods::BINDING;
use stun_rs::{MessageClass, StunMessageBuilder, TransactionId};

use super::stun::{BINDING_REQUEST, check_header, decode, encode};

/// The Binding success response to `request` received from `from`, or
/// `None` when `request` is not a well-formed Binding request.
pub fn respond(request: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    let header = check_header(request).ok()?;
    if header.message_type != BINDING_REQUEST {
        return None;
    }
    let msg = decode(request).ok()?;
    if msg.method() != BINDING || msg.class() != MessageClass::Request {
        return None;
    }
    let response = StunMessageBuilder::new(BINDING, MessageClass::SuccessResponse)
        .with_transaction_id(TransactionId::from(header.txid))
        .with_attribute(XorMappedAddress::from(from))
        .with_attribute(Fingerprint::default())
        .build();
    let out = encode(&response);
    (!out.is_empty()).then_some(out)
}
