//! HTTP/3 frames on a request stream, and the QUIC varints they are made of.
//!
//! As for capsules, the decoder's output must not depend on how the stream is chunked, and
//! a frame it skips must not be buffered. The keep rule is the one the server uses for a
//! request head: HEADERS up to a limit, everything else skipped.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use ferrovia::wire::frame::{Frame, FrameDecoder, FrameTooLarge, HEADERS};
use ferrovia::wire::varint;
use libfuzzer_sys::fuzz_target;

const MAX_HEADERS: u64 = 1024;
/// A kept frame still arriving: its two varint headers (8 bytes each at most) and payload.
const BOUND: usize = 16 + MAX_HEADERS as usize;

fn keep(typ: u64) -> Option<u64> {
    (typ == HEADERS).then_some(MAX_HEADERS)
}

#[derive(Debug)]
struct Input {
    varint: u64,
    splits: Vec<usize>,
    stream: Vec<u8>,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let varint = u.arbitrary::<u64>()?;
        let n = u.int_in_range(1..=8)?;
        let mut splits = Vec::with_capacity(n);
        for _ in 0..n {
            splits.push(usize::from(u.int_in_range(1u16..=2048)?));
        }
        Ok(Self {
            varint,
            splits,
            stream: u.bytes(u.len())?.to_vec(),
        })
    }
}

#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<Frame>,
    error: Option<FrameTooLarge>,
}

fn run<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> Outcome {
    let mut decoder = FrameDecoder::default();
    let mut frames = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        loop {
            match decoder.next(keep) {
                Ok(Some(f)) => {
                    assert!(f.skipped || f.typ == HEADERS);
                    assert!(f.payload.len() as u64 <= MAX_HEADERS);
                    frames.push(f);
                }
                Ok(None) => break,
                Err(e) => {
                    return Outcome {
                        frames,
                        error: Some(e),
                    }
                }
            }
        }
        assert!(
            decoder.buffered() < BOUND,
            "{} bytes buffered",
            decoder.buffered()
        );
    }
    Outcome {
        frames,
        error: None,
    }
}

fn varints(v: u64, raw: &[u8]) {
    let v = v & ((1 << 62) - 1);
    let mut buf = Vec::new();
    varint::put(&mut buf, v);
    assert_eq!(varint::decode(&buf), Some((v, buf.len())));
    // Any encoding of a short prefix is incomplete, never a wrong value.
    assert_eq!(varint::decode(&buf[..buf.len() - 1]), None);

    // Arbitrary bytes: a value decoded is below 2^62 and its minimal encoding is no longer
    // than the (possibly padded) one it was read from.
    if let Some((v, n)) = varint::decode(raw) {
        assert!(matches!(n, 1 | 2 | 4 | 8) && n <= raw.len() && v < 1 << 62);
        let mut again = Vec::new();
        varint::put(&mut again, v);
        assert!(again.len() <= n);
        assert_eq!(varint::decode(&again), Some((v, again.len())));
    }
}

fuzz_target!(|input: Input| {
    varints(input.varint, &input.stream);

    let whole = run(std::iter::once(input.stream.as_slice()));
    let mut rest = input.stream.as_slice();
    let mut sizes = input.splits.iter().cycle();
    let chunked = run(std::iter::from_fn(|| {
        if rest.is_empty() {
            return None;
        }
        let n = (*sizes.next()?).min(rest.len());
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Some(head)
    }));
    assert_eq!(whole, chunked, "chunked by {:?}", input.splits);
});
