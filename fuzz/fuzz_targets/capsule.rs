//! The capsule stream on a CONNECT stream (DATA frames carrying RFC 9297 capsules).
//!
//! QUIC delivers a stream in pieces of any size, so the reader's output must not depend on
//! where the pieces split: the same bytes pushed at once and pushed in fuzzer-chosen chunks
//! must yield the same capsules and the same first error. Memory must stay bounded by one
//! close reason plus what a single push delivers, however large the capsules and frames the
//! peer declares.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use ferrovia::wire::capsule::{Capsule, CapsuleError, CapsuleReader};
use libfuzzer_sys::fuzz_target;

/// A CLOSE capsule (4-byte code, 1024-byte reason) and the frame and capsule headers
/// around it, rounded up.
const SLACK: usize = 1100;

#[derive(Debug)]
struct Input {
    /// Chunk sizes, used in a cycle.
    splits: Vec<usize>,
    stream: Vec<u8>,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let n = u.int_in_range(1..=8)?;
        let mut splits = Vec::with_capacity(n);
        for _ in 0..n {
            // Mostly small pieces, where splits fall inside headers and varints.
            splits.push(usize::from(u.int_in_range(1u16..=2048)?));
        }
        Ok(Self {
            splits,
            stream: u.bytes(u.len())?.to_vec(),
        })
    }
}

#[derive(Debug, PartialEq)]
struct Outcome {
    capsules: Vec<Capsule>,
    error: Option<CapsuleError>,
}

fn run<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> Outcome {
    let mut reader = CapsuleReader::default();
    let mut capsules = Vec::new();
    for chunk in chunks {
        reader.push(chunk);
        loop {
            match reader.next() {
                Ok(Some(c)) => capsules.push(c),
                Ok(None) => break,
                // The reader must not be used after an error.
                Err(e) => {
                    return Outcome {
                        capsules,
                        error: Some(e),
                    }
                }
            }
        }
        assert!(
            reader.buffered() <= chunk.len() + SLACK,
            "{} bytes buffered after a push of {}",
            reader.buffered(),
            chunk.len()
        );
    }
    Outcome {
        capsules,
        error: None,
    }
}

fuzz_target!(|input: Input| {
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
