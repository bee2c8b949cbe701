//! kith datagrams over a byte stream (the relay's TCP transport): each
//! datagram is prefixed with its length.
//!
//! ```text
//!  0  n: datagram length (u16), 1 ≤ n
//!  2  the kith datagram (n bytes), exactly what would have gone over UDP
//! ```
//!
//! [`StreamDecoder`] is sans-IO: the shell pushes whatever the socket read
//! and takes complete datagrams out. A zero length is an error (it can only
//! come from a confused or hostile sender), after which the connection is
//! closed: a stream has no way to find the next frame boundary. So is a
//! length above the decoder's limit ([`StreamDecoder::with_max`]).

/// Bytes of the length prefix.
pub const STREAM_PREFIX_LEN: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("stream frame with length 0")]
    ZeroLength,
    #[error("datagram of {0} bytes does not fit a stream frame (at most 65535)")]
    TooLong(usize),
    #[error("empty datagram")]
    Empty,
    #[error("stream frame of {len} bytes is longer than the {max} allowed")]
    Oversized { len: usize, max: usize },
}

/// Append one frame carrying `datagram` to `out`.
pub fn emit_stream_frame(datagram: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
    if datagram.is_empty() {
        return Err(StreamError::Empty);
    }
    let n = u16::try_from(datagram.len()).map_err(|_| StreamError::TooLong(datagram.len()))?;
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(datagram);
    Ok(())
}

/// Reassembles frames from stream reads of any size.
#[derive(Debug)]
pub struct StreamDecoder {
    buf: Vec<u8>,
    /// Start of the unread part of `buf`.
    start: usize,
    failed: Option<StreamError>,
    max: usize,
}

impl Default for StreamDecoder {
    fn default() -> Self {
        Self::with_max(usize::from(u16::MAX))
    }
}

impl StreamDecoder {
    /// A decoder that refuses frames longer than `max` bytes (a peer that
    /// announces more is not sending kith datagrams, and must not make us
    /// buffer 64 KiB per connection).
    pub fn with_max(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            failed: None,
            max,
        }
    }

    /// Bytes read from the stream, in order.
    pub fn push(&mut self, bytes: &[u8]) {
        // Drop what was consumed before growing, so the buffer stays about
        // one frame plus one read long.
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete datagram, `None` when more bytes are needed. After
    /// an error every call returns it again.
    pub fn next_frame(&mut self) -> Option<Result<&[u8], StreamError>> {
        if let Some(e) = self.failed {
            return Some(Err(e));
        }
        let rest = &self.buf[self.start..];
        if rest.len() < STREAM_PREFIX_LEN {
            return None;
        }
        let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        if n == 0 {
            self.failed = Some(StreamError::ZeroLength);
            return self.failed.map(Err);
        }
        if n > self.max {
            self.failed = Some(StreamError::Oversized {
                len: n,
                max: self.max,
            });
            return self.failed.map(Err);
        }
        if rest.len() < STREAM_PREFIX_LEN + n {
            return None;
        }
        let begin = self.start + STREAM_PREFIX_LEN;
        self.start = begin + n;
        Some(Ok(&self.buf[begin..begin + n]))
    }

    /// Bytes held that are not yet a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;
    use proptest::prelude::*;

    #[test]
    fn snapshot() {
        let mut out = Vec::new();
        emit_stream_frame(&[0x84, 0x01, 0x02], &mut out).unwrap();
        emit_stream_frame(&[0x81], &mut out).unwrap();
        assert_eq!(hex(&out), "0003840102000181");
    }

    #[test]
    fn errors() {
        let mut out = Vec::new();
        assert_eq!(emit_stream_frame(&[], &mut out), Err(StreamError::Empty));
        assert_eq!(
            emit_stream_frame(&vec![0; 70_000], &mut out),
            Err(StreamError::TooLong(70_000))
        );
        let mut d = StreamDecoder::default();
        d.push(&[0, 0, 9]);
        assert_eq!(d.next_frame(), Some(Err(StreamError::ZeroLength)));
        d.push(&[0, 1, 7]);
        assert_eq!(
            d.next_frame(),
            Some(Err(StreamError::ZeroLength)),
            "stays failed"
        );
        let mut d = StreamDecoder::with_max(4);
        d.push(&[0, 4, 1, 2, 3, 4, 0, 5]);
        assert_eq!(d.next_frame(), Some(Ok(&[1u8, 2, 3, 4][..])));
        assert_eq!(
            d.next_frame(),
            Some(Err(StreamError::Oversized { len: 5, max: 4 })),
            "refused from its header, before its bytes arrive"
        );
    }

    proptest! {
        /// Any datagrams, cut into reads anywhere, come out whole and in order.
        #[test]
        fn round_trip_across_any_reads(
            datagrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..8),
            cuts in proptest::collection::vec(1usize..64, 1..20),
        ) {
            let mut stream = Vec::new();
            for d in &datagrams {
                emit_stream_frame(d, &mut stream).unwrap();
            }
            let mut dec = StreamDecoder::default();
            let mut got = Vec::new();
            let mut at = 0;
            for c in cuts.iter().cycle() {
                if at >= stream.len() {
                    break;
                }
                let end = (at + c).min(stream.len());
                dec.push(&stream[at..end]);
                at = end;
                while let Some(f) = dec.next_frame() {
                    got.push(f.unwrap().to_vec());
                }
            }
            prop_assert_eq!(got, datagrams);
            prop_assert_eq!(dec.pending(), 0);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut dec = StreamDecoder::default();
            dec.push(&bytes);
            let mut n = 0;
            while let Some(Ok(f)) = dec.next_frame() {
                prop_assert!(!f.is_empty());
                n += 1;
                prop_assert!(n <= bytes.len());
            }
        }
    }
}
