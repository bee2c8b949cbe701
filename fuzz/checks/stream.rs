//! `kith::wire::StreamDecoder` on arbitrary TCP byte streams, cut into
//! reads at arbitrary points (the first byte of the input picks the read
//! size).
//!
//! Invariant: the datagrams decoded are the same whatever the read size,
//! each non-empty, and re-encoding them gives back the consumed prefix of
//! the stream exactly; after a framing error nothing more is decoded.

use kith::wire::{StreamDecoder, emit_stream_frame};

fn decode(stream: &[u8], read: usize) -> (Vec<Vec<u8>>, bool) {
    let mut dec = StreamDecoder::default();
    let mut out = Vec::new();
    let mut failed = false;
    for chunk in stream.chunks(read.max(1)) {
        dec.push(chunk);
        while let Some(f) = dec.next_frame() {
            match f {
                Ok(d) => {
                    assert!(!failed, "a frame after a framing error");
                    out.push(d.to_vec());
                }
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            break;
        }
    }
    (out, failed)
}

pub fn run(data: &[u8]) {
    let Some((&read, stream)) = data.split_first() else {
        return;
    };
    let (frames, failed) = decode(stream, usize::from(read));
    let (whole, whole_failed) = decode(stream, stream.len());
    assert_eq!(frames, whole, "read size changed the datagrams");
    assert_eq!(failed, whole_failed);
    let mut again = Vec::new();
    for f in &frames {
        assert!(!f.is_empty());
        emit_stream_frame(f, &mut again).expect("decoded datagrams fit a frame");
    }
    assert_eq!(&stream[..again.len()], &again[..]);
}
