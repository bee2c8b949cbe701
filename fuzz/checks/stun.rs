//! STUN datagrams into `kith::nat::StunClient::handle_response` and into the
//! responder `kith::nat::stun_server::respond`.
//!
//! Invariants: nothing panics; the client accepts a success (or error
//! response) only for its outstanding transaction id, from the server it
//! asked, with the Binding response type, and anything it rejects or ignores
//! leaves the transaction running; the responder answers only a well-formed
//! Binding request (header checks, type 0x0001), and its answer, fed back to
//! a client with that id, maps to exactly the request's source address.
//!
//! The first input byte picks the client's transaction id: odd → the id in
//! the message (so the fuzzer reaches the decoder), even → a fixed one.

use std::net::SocketAddr;
use std::time::Instant;

use kith::nat::stun::{BINDING_ERROR, BINDING_REQUEST, BINDING_SUCCESS, MAGIC_COOKIE};
use kith::nat::{Handled, Ignored, Retransmit, StunClient, StunEvent, stun_server};

const FIXED: [u8; 12] = [0x5a; 12];

pub fn run(data: &[u8]) {
    let Some((&mode, msg)) = data.split_first() else {
        return;
    };
    let server: SocketAddr = "198.18.0.10:3478".parse().expect("literal");
    let from: SocketAddr = if mode & 2 == 0 {
        "203.0.113.7:51820".parse().expect("literal")
    } else {
        "[2001:db8::7]:51820".parse().expect("literal")
    };
    let txid = match msg.get(8..20) {
        Some(id) if mode & 1 == 1 => id.try_into().expect("12 bytes"),
        _ => FIXED,
    };
    let now = Instant::now();

    // Client side.
    let mut client = StunClient::new(Retransmit::default());
    client.add_server(now, server, txid).expect("first probe");
    let ours = msg.get(8..20) == Some(&txid[..]);
    match client.handle_response(now, server, msg) {
        Ok(Handled::Mapped(m)) => {
            assert!(ours && well_formed_header(msg));
            assert_eq!(message_type(msg), BINDING_SUCCESS);
            assert_eq!(m.server, server);
            assert!(!client.is_outstanding(&txid));
            assert_eq!(client.poll_event(), Some(StunEvent::Mapped(m)));
        }
        Ok(Handled::ServerError { server: s, .. }) => {
            assert!(ours && well_formed_header(msg));
            assert_eq!(message_type(msg), BINDING_ERROR);
            assert_eq!(s, server);
            assert!(!client.is_outstanding(&txid));
            assert!(matches!(
                client.poll_event(),
                Some(StunEvent::Failed { .. })
            ));
        }
        Ok(Handled::Ignored(why)) => {
            match why {
                Ignored::UnknownTransaction => assert!(!ours),
                Ignored::NotBindingResponse { message_type: t } => {
                    assert!(ours);
                    assert!(t != BINDING_SUCCESS && t != BINDING_ERROR);
                }
                other => panic!("a fresh client cannot say {other:?}"),
            }
            assert!(client.is_outstanding(&txid));
            assert_eq!(client.poll_event(), None);
        }
        Err(_) => {
            assert!(client.is_outstanding(&txid));
            assert_eq!(client.poll_event(), None);
        }
    }
    // The right id from the wrong address never counts.
    let mut other = StunClient::new(Retransmit::default());
    other.add_server(now, server, txid).expect("first probe");
    if let Ok(h) = other.handle_response(now, from, msg) {
        assert!(matches!(h, Handled::Ignored(_)), "{h:?}");
    }
    assert!(other.is_outstanding(&txid));

    // Responder side.
    if let Some(out) = stun_server::respond(msg, from) {
        assert!(well_formed_header(msg));
        assert_eq!(message_type(msg), BINDING_REQUEST);
        assert!(kith::wire::is_stun(&out));
        assert_eq!(&out[8..20], &msg[8..20]);
        let id: [u8; 12] = msg[8..20].try_into().expect("12 bytes");
        let mut c = StunClient::new(Retransmit::default());
        c.add_server(now, from, id).expect("probe");
        match c.handle_response(now, from, &out) {
            Ok(Handled::Mapped(m)) => assert_eq!(m.reflexive, from),
            other => panic!("responder output not accepted: {other:?}"),
        }
    }
}

fn message_type(msg: &[u8]) -> u16 {
    u16::from_be_bytes([msg[0], msg[1]])
}

fn well_formed_header(msg: &[u8]) -> bool {
    msg.len() >= 20
        && msg[0] & 0xc0 == 0
        && u32::from_be_bytes([msg[4], msg[5], msg[6], msg[7]]) == MAGIC_COOKIE
        && usize::from(u16::from_be_bytes([msg[2], msg[3]])) == msg.len() - 20
        && msg.len().is_multiple_of(4)
}
