//! An ordinary HTTP/3 request as a peer sends it: the decoded header fields that become an
//! `http::Request` head, and the frames after HEADERS that become its body.
//!
//! The body decoder must give the same bytes (or the same error) however the stream is
//! chunked, never buffer more than a frame header, and pass DATA payloads through
//! unchanged in total length. Any field list either parses or is refused with 400.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use ferrovia::wire::{
    body::{BodyDecodeError, BodyDecoder},
    exchange::parse_request,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug)]
struct Input {
    fields: Vec<(String, String)>,
    splits: Vec<usize>,
    stream: Vec<u8>,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let names = [":method", ":scheme", ":authority", ":path", ":protocol", "content-length", "te", "connection", "x-a"];
        let n = u.int_in_range(0..=6)?;
        let mut fields = Vec::with_capacity(n);
        for _ in 0..n {
            let name = if u.arbitrary::<bool>()? {
                (*u.choose(&names)?).to_owned()
            } else {
                u.arbitrary::<String>()?
            };
            fields.push((name, u.arbitrary::<String>()?));
        }
        let k = u.int_in_range(1..=8)?;
        let mut splits = Vec::with_capacity(k);
        for _ in 0..k {
            splits.push(usize::from(u.int_in_range(1u16..=2048)?));
        }
        Ok(Self {
            fields,
            splits,
            stream: u.bytes(u.len())?.to_vec(),
        })
    }
}

fn run<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> Result<Vec<u8>, BodyDecodeError> {
    let mut decoder = BodyDecoder::new(1024);
    let mut out = Vec::new();
    let mut body = Vec::new();
    for chunk in chunks {
        decoder.push(Bytes::copy_from_slice(chunk), &mut out)?;
        for part in out.drain(..) {
            body.extend_from_slice(&part);
        }
    }
    decoder.finish()?;
    Ok(body)
}

fuzz_target!(|input: Input| {
    if let Ok(head) = parse_request(&input.fields) {
        assert!(head.uri().path().starts_with('/') || head.uri().path() == "*");
    } else {
        assert_eq!(parse_request(&input.fields).unwrap_err(), 400);
    }

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
    // An error may surface at a different chunk, but it is the same error; bytes agree.
    assert_eq!(whole, chunked, "chunked by {:?}", input.splits);
    if let Ok(body) = whole {
        assert!(body.len() <= input.stream.len());
    }
});
