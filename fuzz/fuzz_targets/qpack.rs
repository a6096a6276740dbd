//! QPACK field sections as a peer sends them in HEADERS frames.
//!
//! Decoding arbitrary bytes must never panic, and whatever decodes must survive our own
//! encoder: re-encoding and decoding again gives the same fields. The encoder never uses
//! Huffman coding, so the decoder's Huffman path is checked separately against an
//! independent encoder (httlib-huffman): the input bytes, Huffman-coded into a field value,
//! must decode back to themselves or fail only for the reasons a value may fail.
#![no_main]

use ferrovia::wire::qpack::{decode_field_section, encode_field_section, QpackError};
use libfuzzer_sys::fuzz_target;

/// The limit the server applies to request heads.
const LIMIT: usize = 16 * 1024;

fuzz_target!(|data: &[u8]| {
    round_trip(data);
    huffman_value(data);
});

fn round_trip(data: &[u8]) {
    let Ok(fields) = decode_field_section(data, LIMIT) else {
        return;
    };
    let refs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let mut wire = Vec::new();
    encode_field_section(&refs, &mut wire);
    // The decoded size counts names and values only, so the same limit must still hold.
    match decode_field_section(&wire, LIMIT) {
        Ok(again) => assert_eq!(again, fields, "re-encoded as {wire:02x?}"),
        Err(e) => panic!("re-encoded section fails to decode: {e:?}, {wire:02x?}"),
    }
}

fn huffman_value(data: &[u8]) {
    let mut coded = Vec::new();
    if httlib_huffman::encode(data, &mut coded).is_err() {
        return;
    }
    // Literal Field Line With Name Reference to `user-agent` (static index 95), H = 1.
    let mut section = vec![0x00, 0x00];
    put_int(&mut section, 0x50, 4, 95);
    put_int(&mut section, 0x80, 7, coded.len() as u64);
    section.extend_from_slice(&coded);

    let expected = if data.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        Err(QpackError::InvalidFieldValue)
    } else if let Ok(s) = std::str::from_utf8(data) {
        if "user-agent".len() + s.len() + 32 > LIMIT {
            Err(QpackError::TooLarge)
        } else {
            Ok(vec![("user-agent".to_owned(), s.to_owned())])
        }
    } else {
        Err(QpackError::InvalidUtf8)
    };
    assert_eq!(decode_field_section(&section, LIMIT), expected);
}

/// A prefix integer (RFC 7541 §5.1), written here rather than borrowed from the crate under
/// test so that a bug there cannot hide itself.
fn put_int(out: &mut Vec<u8>, flags: u8, prefix_bits: u32, value: u64) {
    let max = (1u64 << prefix_bits) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    out.push(rest as u8);
}
