//! permessage-deflate, as a client reaches it: the `Sec-WebSocket-Extensions` offer, the
//! frame stream the start scanner reads (and edits) under the frame codec, and the inflater.
//!
//! - Negotiation never panics, and what it agrees is within RFC 7692's bounds.
//! - The scanner finds the same message starts and makes the same edits however the
//!   stream is split across reads.
//! - Inflating anything stays within the limit; compressing then inflating gives back the
//!   messages, with and without context takeover.
#![no_main]

use arbitrary::Arbitrary;
use ferrovia::wire::websocket_deflate::{
    negotiate, Codec, DeflateParams, StartScanner, WebSocketCompression,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    offer: String,
    light: bool,
    stream: Vec<u8>,
    /// Where the stream is split into reads.
    cuts: Vec<u16>,
    /// Raw bytes offered to the inflater as one compressed message.
    garbage: Vec<u8>,
    messages: Vec<Vec<u8>>,
    no_context: bool,
}

fuzz_target!(|input: Input| {
    let mode = if input.light {
        WebSocketCompression::DeflateNoContext
    } else {
        WebSocketCompression::Deflate
    };
    if let Some((params, answer)) = negotiate(mode, &[input.offer.as_str()]) {
        assert!(answer.starts_with("permessage-deflate"));
        assert!((9..=12).contains(&params.server_window_bits));
        assert!(!answer.contains("client_max_window_bits"));
        if input.light {
            assert!(params.server_no_context_takeover && params.client_no_context_takeover);
        }
    }

    // The whole stream at once, then in pieces: the same starts, the same bytes.
    let mut whole = input.stream.clone();
    let mut starts_whole = Vec::new();
    StartScanner::default().scan(&mut whole, &mut starts_whole);
    let mut pieces = input.stream.clone();
    let mut starts_pieces = Vec::new();
    let mut scanner = StartScanner::default();
    let mut at = 0;
    for cut in &input.cuts {
        let end = (at + usize::from(*cut) % 64).min(pieces.len());
        scanner.scan(&mut pieces[at..end], &mut starts_pieces);
        at = end;
    }
    scanner.scan(&mut pieces[at..], &mut starts_pieces);
    assert_eq!(starts_whole, starts_pieces);
    assert_eq!(whole, pieces);

    let params = DeflateParams {
        server_no_context_takeover: input.no_context,
        client_no_context_takeover: input.no_context,
        server_window_bits: 9 + (input.garbage.len() % 4) as u8,
    };
    let mut inflater = Codec::new(params);
    if let Ok(out) = inflater.inflate(&input.garbage, 4096) {
        assert!(out.len() <= 4096);
    }

    let (mut tx, mut rx) = (Codec::new(params), Codec::new(params));
    for m in input.messages.iter().take(8) {
        if let Some(packed) = tx.compress(m) {
            let back = rx.inflate(&packed, 1 << 20).expect("our own deflate output inflates");
            assert_eq!(&back, m);
        }
    }
});
