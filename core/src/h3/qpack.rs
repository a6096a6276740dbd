//! QPACK (RFC 9204) field sections for HTTP/3, restricted to what a server
//! needs when it advertises `QPACK_MAX_TABLE_CAPACITY = 0` and
//! `QPACK_BLOCKED_STREAMS = 0`.
//!
//! With a zero-capacity dynamic table the encoder and decoder streams never
//! carry instructions and no field section can ever block, so a field section
//! is self-contained: it may only use the static table and literals. Anything
//! that points into the dynamic table is therefore a peer error (RFC 9204
//! §2.2.3, QPACK_DECOMPRESSION_FAILED) rather than something to wait for.
//!
//! Huffman decoding is done here instead of through `httlib-huffman`: that
//! crate accepts padding made of zero bits (e.g. `0x18` decodes to "a"),
//! which RFC 7541 §5.2 requires a decoder to reject.

/// Errors decoding a field section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QpackError {
    /// The input ended inside the prefix, a field line, or a string literal.
    #[error("field section is truncated")]
    UnexpectedEnd,
    /// A reference to the dynamic table (relative or post-base), or a
    /// non-zero Required Insert Count. We advertised a capacity of 0, so a
    /// peer sending one is broken.
    #[error("reference to the QPACK dynamic table, which is disabled")]
    DynamicTableReference,
    /// The sign bit of the Base was set while Required Insert Count is not
    /// greater than Delta Base, i.e. the Base would be negative
    /// (RFC 9204 §4.5.1.2).
    #[error("negative QPACK Base")]
    InvalidBase,
    /// A static table index outside 0..=98.
    #[error("QPACK static table index {0} out of range")]
    InvalidStaticIndex(u64),
    /// A Huffman-coded string contained the EOS symbol or had padding that
    /// was longer than 7 bits or not made of ones (RFC 7541 §5.2).
    #[error("invalid Huffman-coded string")]
    InvalidHuffman,
    /// A field value is not valid UTF-8. RFC 9110 allows `obs-text`, but
    /// nothing this server handles (CONNECT requests) needs it, and the
    /// decoded form is `String`.
    #[error("field value is not valid UTF-8")]
    InvalidUtf8,
    /// A field name that is empty, contains uppercase letters (forbidden in
    /// HTTP/3, RFC 9114 §4.2) or characters outside the token grammar.
    #[error("invalid field name")]
    InvalidFieldName,
    /// A field value containing a control character other than horizontal
    /// tab (RFC 9114 §10.3: such messages must be treated as malformed).
    #[error("invalid field value")]
    InvalidFieldValue,
    /// A prefix integer that does not fit in 64 bits.
    #[error("QPACK integer overflow")]
    IntegerOverflow,
    /// The decoded field section exceeds the size limit.
    #[error("field section exceeds the size limit")]
    TooLarge,
}

impl QpackError {
    /// Whether the section was well-formed QPACK but the HTTP message it
    /// carries is malformed (RFC 9114 §4.1.2).
    ///
    /// This decides the scope of the error: a malformed message only costs
    /// the request stream (H3_MESSAGE_ERROR), whereas every other variant
    /// (except `TooLarge`, which the caller may answer with a 431 or
    /// H3_EXCESSIVE_LOAD) is a QPACK_DECOMPRESSION_FAILED connection error.
    pub fn is_malformed_message(&self) -> bool {
        matches!(
            self,
            QpackError::InvalidFieldName | QpackError::InvalidFieldValue | QpackError::InvalidUtf8
        )
    }
}

/// Per-field overhead that RFC 9114 §4.2.2 adds to name and value lengths
/// when sizing a field section (the same 32 octets as the HPACK entry size).
const FIELD_OVERHEAD: usize = 32;

/// The QPACK static table, RFC 9204 Appendix A. The position is the index.
const STATIC_TABLE: [(&str, &str); 99] = [
    (":authority", ""),
    (":path", "/"),
    ("age", "0"),
    ("content-disposition", ""),
    ("content-length", "0"),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("referer", ""),
    ("set-cookie", ""),
    (":method", "CONNECT"),
    (":method", "DELETE"),
    (":method", "GET"),
    (":method", "HEAD"),
    (":method", "OPTIONS"),
    (":method", "POST"),
    (":method", "PUT"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "103"),
    (":status", "200"),
    (":status", "304"),
    (":status", "404"),
    (":status", "503"),
    ("accept", "*/*"),
    ("accept", "application/dns-message"),
    ("accept-encoding", "gzip, deflate, br"),
    ("accept-ranges", "bytes"),
    ("access-control-allow-headers", "cache-control"),
    ("access-control-allow-headers", "content-type"),
    ("access-control-allow-origin", "*"),
    ("cache-control", "max-age=0"),
    ("cache-control", "max-age=2592000"),
    ("cache-control", "max-age=604800"),
    ("cache-control", "no-cache"),
    ("cache-control", "no-store"),
    ("cache-control", "public, max-age=31536000"),
    ("content-encoding", "br"),
    ("content-encoding", "gzip"),
    ("content-type", "application/dns-message"),
    ("content-type", "application/javascript"),
    ("content-type", "application/json"),
    ("content-type", "application/x-www-form-urlencoded"),
    ("content-type", "image/gif"),
    ("content-type", "image/jpeg"),
    ("content-type", "image/png"),
    ("content-type", "text/css"),
    ("content-type", "text/html; charset=utf-8"),
    ("content-type", "text/plain"),
    ("content-type", "text/plain;charset=utf-8"),
    ("range", "bytes=0-"),
    ("strict-transport-security", "max-age=31536000"),
    (
        "strict-transport-security",
        "max-age=31536000; includesubdomains",
    ),
    (
        "strict-transport-security",
        "max-age=31536000; includesubdomains; preload",
    ),
    ("vary", "accept-encoding"),
    ("vary", "origin"),
    ("x-content-type-options", "nosniff"),
    ("x-xss-protection", "1; mode=block"),
    (":status", "100"),
    (":status", "204"),
    (":status", "206"),
    (":status", "302"),
    (":status", "400"),
    (":status", "403"),
    (":status", "421"),
    (":status", "425"),
    (":status", "500"),
    ("accept-language", ""),
    ("access-control-allow-credentials", "FALSE"),
    ("access-control-allow-credentials", "TRUE"),
    ("access-control-allow-headers", "*"),
    ("access-control-allow-methods", "get"),
    ("access-control-allow-methods", "get, post, options"),
    ("access-control-allow-methods", "options"),
    ("access-control-expose-headers", "content-length"),
    ("access-control-request-headers", "content-type"),
    ("access-control-request-method", "get"),
    ("access-control-request-method", "post"),
    ("alt-svc", "clear"),
    ("authorization", ""),
    (
        "content-security-policy",
        "script-src 'none'; object-src 'none'; base-uri 'none'",
    ),
    ("early-data", "1"),
    ("expect-ct", ""),
    ("forwarded", ""),
    ("if-range", ""),
    ("origin", ""),
    ("purpose", "prefetch"),
    ("server", ""),
    ("timing-allow-origin", "*"),
    ("upgrade-insecure-requests", "1"),
    ("user-agent", ""),
    ("x-forwarded-for", ""),
    ("x-frame-options", "deny"),
    ("x-frame-options", "sameorigin"),
];

/// The HPACK/QPACK Huffman code, RFC 7541 Appendix B: `(code, length in
/// bits)` indexed by symbol, with the code right-aligned. Symbol 256 is EOS.
const HUFFMAN_CODES: [(u32, u8); 257] = [
    (0x1ff8, 13),     // 0
    (0x7fffd8, 23),   // 1
    (0xfffffe2, 28),  // 2
    (0xfffffe3, 28),  // 3
    (0xfffffe4, 28),  // 4
    (0xfffffe5, 28),  // 5
    (0xfffffe6, 28),  // 6
    (0xfffffe7, 28),  // 7
    (0xfffffe8, 28),  // 8
    (0xffffea, 24),   // 9
    (0x3ffffffc, 30), // 10
    (0xfffffe9, 28),  // 11
    (0xfffffea, 28),  // 12
    (0x3ffffffd, 30), // 13
    (0xfffffeb, 28),  // 14
    (0xfffffec, 28),  // 15
    (0xfffffed, 28),  // 16
    (0xfffffee, 28),  // 17
    (0xfffffef, 28),  // 18
    (0xffffff0, 28),  // 19
    (0xffffff1, 28),  // 20
    (0xffffff2, 28),  // 21
    (0x3ffffffe, 30), // 22
    (0xffffff3, 28),  // 23
    (0xffffff4, 28),  // 24
    (0xffffff5, 28),  // 25
    (0xffffff6, 28),  // 26
    (0xffffff7, 28),  // 27
    (0xffffff8, 28),  // 28
    (0xffffff9, 28),  // 29
    (0xffffffa, 28),  // 30
    (0xffffffb, 28),  // 31
    (0x14, 6),        // ' '
    (0x3f8, 10),      // '!'
    (0x3f9, 10),      // '"'
    (0xffa, 12),      // '#'
    (0x1ff9, 13),     // '$'
    (0x15, 6),        // '%'
    (0xf8, 8),        // '&'
    (0x7fa, 11),      // '\''
    (0x3fa, 10),      // '('
    (0x3fb, 10),      // ')'
    (0xf9, 8),        // '*'
    (0x7fb, 11),      // '+'
    (0xfa, 8),        // ','
    (0x16, 6),        // '-'
    (0x17, 6),        // '.'
    (0x18, 6),        // '/'
    (0x0, 5),         // '0'
    (0x1, 5),         // '1'
    (0x2, 5),         // '2'
    (0x19, 6),        // '3'
    (0x1a, 6),        // '4'
    (0x1b, 6),        // '5'
    (0x1c, 6),        // '6'
    (0x1d, 6),        // '7'
    (0x1e, 6),        // '8'
    (0x1f, 6),        // '9'
    (0x5c, 7),        // ':'
    (0xfb, 8),        // ';'
    (0x7ffc, 15),     // '<'
    (0x20, 6),        // '='
    (0xffb, 12),      // '>'
    (0x3fc, 10),      // '?'
    (0x1ffa, 13),     // '@'
    (0x21, 6),        // 'A'
    (0x5d, 7),        // 'B'
    (0x5e, 7),        // 'C'
    (0x5f, 7),        // 'D'
    (0x60, 7),        // 'E'
    (0x61, 7),        // 'F'
    (0x62, 7),        // 'G'
    (0x63, 7),        // 'H'
    (0x64, 7),        // 'I'
    (0x65, 7),        // 'J'
    (0x66, 7),        // 'K'
    (0x67, 7),        // 'L'
    (0x68, 7),        // 'M'
    (0x69, 7),        // 'N'
    (0x6a, 7),        // 'O'
    (0x6b, 7),        // 'P'
    (0x6c, 7),        // 'Q'
    (0x6d, 7),        // 'R'
    (0x6e, 7),        // 'S'
    (0x6f, 7),        // 'T'
    (0x70, 7),        // 'U'
    (0x71, 7),        // 'V'
    (0x72, 7),        // 'W'
    (0xfc, 8),        // 'X'
    (0x73, 7),        // 'Y'
    (0xfd, 8),        // 'Z'
    (0x1ffb, 13),     // '['
    (0x7fff0, 19),    // '\\'
    (0x1ffc, 13),     // ']'
    (0x3ffc, 14),     // '^'
    (0x22, 6),        // '_'
    (0x7ffd, 15),     // '`'
    (0x3, 5),         // 'a'
    (0x23, 6),        // 'b'
    (0x4, 5),         // 'c'
    (0x24, 6),        // 'd'
    (0x5, 5),         // 'e'
    (0x25, 6),        // 'f'
    (0x26, 6),        // 'g'
    (0x27, 6),        // 'h'
    (0x6, 5),         // 'i'
    (0x74, 7),        // 'j'
    (0x75, 7),        // 'k'
    (0x28, 6),        // 'l'
    (0x29, 6),        // 'm'
    (0x2a, 6),        // 'n'
    (0x7, 5),         // 'o'
    (0x2b, 6),        // 'p'
    (0x76, 7),        // 'q'
    (0x2c, 6),        // 'r'
    (0x8, 5),         // 's'
    (0x9, 5),         // 't'
    (0x2d, 6),        // 'u'
    (0x77, 7),        // 'v'
    (0x78, 7),        // 'w'
    (0x79, 7),        // 'x'
    (0x7a, 7),        // 'y'
    (0x7b, 7),        // 'z'
    (0x7ffe, 15),     // '{'
    (0x7fc, 11),      // '|'
    (0x3ffd, 14),     // '}'
    (0x1ffd, 13),     // '~'
    (0xffffffc, 28),  // 127
    (0xfffe6, 20),    // 128
    (0x3fffd2, 22),   // 129
    (0xfffe7, 20),    // 130
    (0xfffe8, 20),    // 131
    (0x3fffd3, 22),   // 132
    (0x3fffd4, 22),   // 133
    (0x3fffd5, 22),   // 134
    (0x7fffd9, 23),   // 135
    (0x3fffd6, 22),   // 136
    (0x7fffda, 23),   // 137
    (0x7fffdb, 23),   // 138
    (0x7fffdc, 23),   // 139
    (0x7fffdd, 23),   // 140
    (0x7fffde, 23),   // 141
    (0xffffeb, 24),   // 142
    (0x7fffdf, 23),   // 143
    (0xffffec, 24),   // 144
    (0xffffed, 24),   // 145
    (0x3fffd7, 22),   // 146
    (0x7fffe0, 23),   // 147
    (0xffffee, 24),   // 148
    (0x7fffe1, 23),   // 149
    (0x7fffe2, 23),   // 150
    (0x7fffe3, 23),   // 151
    (0x7fffe4, 23),   // 152
    (0x1fffdc, 21),   // 153
    (0x3fffd8, 22),   // 154
    (0x7fffe5, 23),   // 155
    (0x3fffd9, 22),   // 156
    (0x7fffe6, 23),   // 157
    (0x7fffe7, 23),   // 158
    (0xffffef, 24),   // 159
    (0x3fffda, 22),   // 160
    (0x1fffdd, 21),   // 161
    (0xfffe9, 20),    // 162
    (0x3fffdb, 22),   // 163
    (0x3fffdc, 22),   // 164
    (0x7fffe8, 23),   // 165
    (0x7fffe9, 23),   // 166
    (0x1fffde, 21),   // 167
    (0x7fffea, 23),   // 168
    (0x3fffdd, 22),   // 169
    (0x3fffde, 22),   // 170
    (0xfffff0, 24),   // 171
    (0x1fffdf, 21),   // 172
    (0x3fffdf, 22),   // 173
    (0x7fffeb, 23),   // 174
    (0x7fffec, 23),   // 175
    (0x1fffe0, 21),   // 176
    (0x1fffe1, 21),   // 177
    (0x3fffe0, 22),   // 178
    (0x1fffe2, 21),   // 179
    (0x7fffed, 23),   // 180
    (0x3fffe1, 22),   // 181
    (0x7fffee, 23),   // 182
    (0x7fffef, 23),   // 183
    (0xfffea, 20),    // 184
    (0x3fffe2, 22),   // 185
    (0x3fffe3, 22),   // 186
    (0x3fffe4, 22),   // 187
    (0x7ffff0, 23),   // 188
    (0x3fffe5, 22),   // 189
    (0x3fffe6, 22),   // 190
    (0x7ffff1, 23),   // 191
    (0x3ffffe0, 26),  // 192
    (0x3ffffe1, 26),  // 193
    (0xfffeb, 20),    // 194
    (0x7fff1, 19),    // 195
    (0x3fffe7, 22),   // 196
    (0x7ffff2, 23),   // 197
    (0x3fffe8, 22),   // 198
    (0x1ffffec, 25),  // 199
    (0x3ffffe2, 26),  // 200
    (0x3ffffe3, 26),  // 201
    (0x3ffffe4, 26),  // 202
    (0x7ffffde, 27),  // 203
    (0x7ffffdf, 27),  // 204
    (0x3ffffe5, 26),  // 205
    (0xfffff1, 24),   // 206
    (0x1ffffed, 25),  // 207
    (0x7fff2, 19),    // 208
    (0x1fffe3, 21),   // 209
    (0x3ffffe6, 26),  // 210
    (0x7ffffe0, 27),  // 211
    (0x7ffffe1, 27),  // 212
    (0x3ffffe7, 26),  // 213
    (0x7ffffe2, 27),  // 214
    (0xfffff2, 24),   // 215
    (0x1fffe4, 21),   // 216
    (0x1fffe5, 21),   // 217
    (0x3ffffe8, 26),  // 218
    (0x3ffffe9, 26),  // 219
    (0xffffffd, 28),  // 220
    (0x7ffffe3, 27),  // 221
    (0x7ffffe4, 27),  // 222
    (0x7ffffe5, 27),  // 223
    (0xfffec, 20),    // 224
    (0xfffff3, 24),   // 225
    (0xfffed, 20),    // 226
    (0x1fffe6, 21),   // 227
    (0x3fffe9, 22),   // 228
    (0x1fffe7, 21),   // 229
    (0x1fffe8, 21),   // 230
    (0x7ffff3, 23),   // 231
    (0x3fffea, 22),   // 232
    (0x3fffeb, 22),   // 233
    (0x1ffffee, 25),  // 234
    (0x1ffffef, 25),  // 235
    (0xfffff4, 24),   // 236
    (0xfffff5, 24),   // 237
    (0x3ffffea, 26),  // 238
    (0x7ffff4, 23),   // 239
    (0x3ffffeb, 26),  // 240
    (0x7ffffe6, 27),  // 241
    (0x3ffffec, 26),  // 242
    (0x3ffffed, 26),  // 243
    (0x7ffffe7, 27),  // 244
    (0x7ffffe8, 27),  // 245
    (0x7ffffe9, 27),  // 246
    (0x7ffffea, 27),  // 247
    (0x7ffffeb, 27),  // 248
    (0xffffffe, 28),  // 249
    (0x7ffffec, 27),  // 250
    (0x7ffffed, 27),  // 251
    (0x7ffffee, 27),  // 252
    (0x7ffffef, 27),  // 253
    (0x7fffff0, 27),  // 254
    (0x3ffffee, 26),  // 255
    (0x3fffffff, 30), // EOS
];

/// Symbol index of the end-of-string code, which may only appear (as a
/// prefix) in padding.
const HUFFMAN_EOS: u16 = 256;

/// The longest Huffman code, in bits.
const HUFFMAN_MAX_LEN: usize = 30;

/// Lookup tables for canonical decoding. The RFC 7541 code is canonical:
/// the codes of one length are consecutive integers, so a code of length `L`
/// is recognised by `code - first[L] < count[L]`, and no per-bit tree is
/// needed.
struct HuffmanDecodeTable {
    /// Smallest code of each length.
    first: [u32; HUFFMAN_MAX_LEN + 1],
    /// Number of codes of each length.
    count: [u32; HUFFMAN_MAX_LEN + 1],
    /// Where the symbols of each length start in `symbols`.
    offset: [u16; HUFFMAN_MAX_LEN + 1],
    /// Symbols sorted by (length, code).
    symbols: [u16; 257],
}

/// Built at compile time so that a typo in `HUFFMAN_CODES` that breaks the
/// canonical layout fails the build instead of misdecoding at run time.
static HUFFMAN_DECODE: HuffmanDecodeTable = build_huffman_decode_table();

const fn build_huffman_decode_table() -> HuffmanDecodeTable {
    let mut first = [u32::MAX; HUFFMAN_MAX_LEN + 1];
    let mut count = [0u32; HUFFMAN_MAX_LEN + 1];
    let mut sym = 0;
    while sym < HUFFMAN_CODES.len() {
        let (code, len) = HUFFMAN_CODES[sym];
        let len = len as usize;
        assert!(len >= 1 && len <= HUFFMAN_MAX_LEN && code < (1u32 << len));
        if code < first[len] {
            first[len] = code;
        }
        count[len] += 1;
        sym += 1;
    }

    let mut offset = [0u16; HUFFMAN_MAX_LEN + 1];
    let mut next = 0u16;
    let mut len = 0;
    while len <= HUFFMAN_MAX_LEN {
        offset[len] = next;
        next += count[len] as u16;
        if count[len] == 0 {
            // Keep empty lengths from ever matching in the range check.
            first[len] = 0;
        }
        len += 1;
    }

    const UNSET: u16 = u16::MAX;
    let mut symbols = [UNSET; 257];
    let mut sym = 0;
    while sym < HUFFMAN_CODES.len() {
        let (code, len) = HUFFMAN_CODES[sym];
        let len = len as usize;
        let rank = code - first[len];
        assert!(rank < count[len], "codes of one length are not consecutive");
        let slot = offset[len] as usize + rank as usize;
        assert!(symbols[slot] == UNSET, "duplicate Huffman code");
        symbols[slot] = sym as u16;
        sym += 1;
    }

    HuffmanDecodeTable {
        first,
        count,
        offset,
        symbols,
    }
}

/// Decodes a Huffman-coded string literal (RFC 7541 §5.2).
fn huffman_decode(src: &[u8]) -> Result<Vec<u8>, QpackError> {
    let table = &HUFFMAN_DECODE;
    // Every code is at least 5 bits long, so this is an upper bound.
    let mut out = Vec::with_capacity(src.len() * 8 / 5);
    let mut code = 0u32;
    let mut len = 0usize;
    for &byte in src {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            let rank = code.wrapping_sub(table.first[len]);
            if rank < table.count[len] {
                let sym = table.symbols[table.offset[len] as usize + rank as usize];
                if sym == HUFFMAN_EOS {
                    return Err(QpackError::InvalidHuffman);
                }
                out.push(sym as u8);
                code = 0;
                len = 0;
            } else if len == HUFFMAN_MAX_LEN {
                // Unreachable with a complete code, but it keeps `len` in
                // bounds should the table ever be wrong.
                return Err(QpackError::InvalidHuffman);
            }
        }
    }
    // What is left must be a strict prefix of EOS (all ones) of at most 7
    // bits; anything else means a corrupt or maliciously padded string.
    if len > 7 || code != (1u32 << len) - 1 {
        return Err(QpackError::InvalidHuffman);
    }
    Ok(out)
}

/// Reads the QPACK wire format front to back.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Result<u8, QpackError> {
        self.buf.first().copied().ok_or(QpackError::UnexpectedEnd)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], QpackError> {
        if n > self.buf.len() {
            return Err(QpackError::UnexpectedEnd);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Reads a prefix integer (RFC 7541 §5.1) whose first byte holds flags
    /// in its upper `8 - prefix_bits` bits; the caller has already looked at
    /// them via `peek`.
    fn int(&mut self, prefix_bits: u32) -> Result<u64, QpackError> {
        let max_prefix = (1u64 << prefix_bits) - 1;
        let mut value = u64::from(self.take(1)?[0]) & max_prefix;
        if value < max_prefix {
            return Ok(value);
        }
        let mut shift = 0u32;
        loop {
            let byte = self.take(1)?[0];
            let chunk = u64::from(byte & 0x7f);
            // Reject bits that would be shifted out of a u64 (this also caps
            // runs of redundant zero continuation bytes).
            if shift >= u64::BITS || (chunk << shift) >> shift != chunk {
                return Err(QpackError::IntegerOverflow);
            }
            value = value
                .checked_add(chunk << shift)
                .ok_or(QpackError::IntegerOverflow)?;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
        }
    }

    /// Reads a string literal whose H flag sits just above a
    /// `prefix_bits`-bit length prefix.
    fn string(&mut self, prefix_bits: u32) -> Result<Vec<u8>, QpackError> {
        let huffman = self.peek()? & (1 << prefix_bits) != 0;
        let len = self.int(prefix_bits)?;
        // A length beyond usize cannot be satisfied by the buffer either.
        let len = usize::try_from(len).map_err(|_| QpackError::UnexpectedEnd)?;
        let raw = self.take(len)?;
        if huffman {
            huffman_decode(raw)
        } else {
            Ok(raw.to_vec())
        }
    }
}

/// Looks up a static table entry.
fn static_entry(index: u64) -> Result<(&'static str, &'static str), QpackError> {
    usize::try_from(index)
        .ok()
        .and_then(|i| STATIC_TABLE.get(i).copied())
        .ok_or(QpackError::InvalidStaticIndex(index))
}

/// Accepts a pseudo-header (`:` + token) or a token, lowercase only.
fn validate_name(name: &[u8]) -> Result<(), QpackError> {
    let token = name.strip_prefix(b":").unwrap_or(name);
    let is_tchar =
        |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(b);
    if token.is_empty() || !token.iter().all(is_tchar) {
        return Err(QpackError::InvalidFieldName);
    }
    Ok(())
}

/// Rejects control characters other than HTAB, which would let a value
/// smuggle extra header lines past an HTTP/1.1 hop (RFC 9114 §10.3).
fn validate_value(value: &[u8]) -> Result<(), QpackError> {
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(QpackError::InvalidFieldValue);
    }
    Ok(())
}

fn literal_name(bytes: Vec<u8>) -> Result<String, QpackError> {
    validate_name(&bytes)?;
    // A valid name is ASCII, so this cannot fail.
    String::from_utf8(bytes).map_err(|_| QpackError::InvalidFieldName)
}

fn literal_value(bytes: Vec<u8>) -> Result<String, QpackError> {
    validate_value(&bytes)?;
    String::from_utf8(bytes).map_err(|_| QpackError::InvalidUtf8)
}

/// Decode one field section (the payload of an HTTP/3 HEADERS frame, without the frame header).
/// `max_size` bounds the decoded size the way RFC 9114 §4.2.2 counts it (name + value + 32 per field); exceeding it is TooLarge.
///
/// Only the static table and literals are accepted, matching the
/// zero-capacity dynamic table this server advertises. Field order is
/// preserved and pseudo-header rules are left to the caller.
pub fn decode_field_section(
    buf: &[u8],
    max_size: usize,
) -> Result<Vec<(String, String)>, QpackError> {
    let mut r = Reader { buf };

    // Encoded Required Insert Count (8-bit prefix). With MaxEntries = 0 any
    // value other than 0 is an error (RFC 9204 §4.5.1.1).
    if r.int(8)? != 0 {
        return Err(QpackError::DynamicTableReference);
    }
    // Sign bit and Delta Base (7-bit prefix). With Required Insert Count 0
    // the Base only matters for the negative-Base check.
    let negative = r.peek()? & 0x80 != 0;
    r.int(7)?;
    if negative {
        return Err(QpackError::InvalidBase);
    }

    let mut fields = Vec::new();
    let mut size = 0usize;
    while !r.buf.is_empty() {
        let first = r.peek()?;
        let (name, value) = if first & 0x80 != 0 {
            // Indexed Field Line: 1 T index(6+).
            if first & 0x40 == 0 {
                return Err(QpackError::DynamicTableReference);
            }
            let (name, value) = static_entry(r.int(6)?)?;
            (name.to_owned(), value.to_owned())
        } else if first & 0x40 != 0 {
            // Literal Field Line With Name Reference: 01 N T index(4+).
            // N only restricts re-encoding by intermediaries; ignored.
            if first & 0x10 == 0 {
                return Err(QpackError::DynamicTableReference);
            }
            let (name, _) = static_entry(r.int(4)?)?;
            let value = literal_value(r.string(7)?)?;
            (name.to_owned(), value)
        } else if first & 0x20 != 0 {
            // Literal Field Line With Literal Name: 001 N H len(3+).
            let name = literal_name(r.string(3)?)?;
            let value = literal_value(r.string(7)?)?;
            (name, value)
        } else {
            // 0001xxxx Indexed Field Line With Post-Base Index, or
            // 0000xxxx Literal Field Line With Post-Base Name Reference:
            // both address entries inserted after Base, i.e. dynamic.
            return Err(QpackError::DynamicTableReference);
        };

        size = size
            .checked_add(name.len() + value.len() + FIELD_OVERHEAD)
            .filter(|&s| s <= max_size)
            .ok_or(QpackError::TooLarge)?;
        fields.push((name, value));
    }
    Ok(fields)
}

/// Writes a prefix integer (RFC 7541 §5.1); `flags` fills the bits above
/// the `prefix_bits`-bit prefix of the first byte.
fn encode_int(out: &mut Vec<u8>, flags: u8, prefix_bits: u32, value: u64) {
    let max_prefix = (1u64 << prefix_bits) - 1;
    if value < max_prefix {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max_prefix as u8);
    let mut rest = value - max_prefix;
    while rest >= 0x80 {
        out.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Writes a string literal with H = 0 and a 7-bit length prefix.
fn encode_value(out: &mut Vec<u8>, value: &str) {
    encode_int(out, 0x00, 7, value.len() as u64);
    out.extend_from_slice(value.as_bytes());
}

/// Encode a field section: Required Insert Count 0, Base 0, then for each field the shortest static form:
/// an Indexed Field Line when (name, value) is in the static table, else a Literal Field Line With Name Reference to the static table when the name is there, else a Literal Field Line With Literal Name. String literals are not Huffman-coded (H=0).
///
/// Names must already be lowercase: the peer has to treat an uppercase
/// name as a malformed message (RFC 9114 §4.2). Skipping Huffman coding
/// costs a few bytes on the handful of fields a response carries but keeps
/// the encoder trivially correct.
pub fn encode_field_section(fields: &[(&str, &str)], out: &mut Vec<u8>) {
    debug_assert!(
        fields
            .iter()
            .all(|(n, _)| validate_name(n.as_bytes()).is_ok()),
        "HTTP/3 field names must be lowercase tokens"
    );
    // Required Insert Count 0; sign 0 and Delta Base 0.
    out.extend_from_slice(&[0x00, 0x00]);
    for &(name, value) in fields {
        let mut name_index = None;
        let mut full_index = None;
        for (i, &(n, v)) in STATIC_TABLE.iter().enumerate() {
            if n == name {
                name_index.get_or_insert(i as u64);
                if v == value {
                    full_index = Some(i as u64);
                    break;
                }
            }
        }
        match (full_index, name_index) {
            // 1 T=1 index(6+)
            (Some(i), _) => encode_int(out, 0xc0, 6, i),
            // 01 N=0 T=1 index(4+), then the value
            (None, Some(i)) => {
                encode_int(out, 0x50, 4, i);
                encode_value(out, value);
            }
            // 001 N=0 H=0 len(3+), name, then the value
            (None, None) => {
                encode_int(out, 0x20, 3, name.len() as u64);
                out.extend_from_slice(name.as_bytes());
                encode_value(out, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 16 * 1024;

    fn encode(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_field_section(fields, &mut out);
        out
    }

    fn decode(buf: &[u8]) -> Result<Vec<(String, String)>, QpackError> {
        decode_field_section(buf, LIMIT)
    }

    fn owned(fields: &[(&str, &str)]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|&(n, v)| (n.to_owned(), v.to_owned()))
            .collect()
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn round_trips_connect_request() {
        let request = [
            (":method", "CONNECT"),
            (":protocol", "webtransport"),
            (":scheme", "https"),
            (":authority", "localhost:4433"),
            (":path", "/echo?room=42&token=a%20b"),
            ("origin", "https://example.com"),
            ("sec-webtransport-http3-draft02", "1"),
            ("wt-available-protocols", "\"chat-v1\", \"chat-v2\""),
            ("user-agent", "Mozilla/5.0 (X11; Linux x86_64)"),
        ];
        let buf = encode(&request);
        // :method CONNECT (15) and :scheme https (23) are fully indexed.
        assert_eq!(&buf[..4], &[0x00, 0x00, 0xc0 | 15, 0x20 | 7]);
        assert!(buf.contains(&(0xc0 | 23)));
        assert_eq!(decode(&buf).unwrap(), owned(&request));
    }

    #[test]
    fn round_trips_responses() {
        for status in ["200", "403", "404", "429"] {
            let response = [(":status", status), ("wt-protocol", "\"chat-v1\"")];
            let buf = encode(&response);
            assert_eq!(decode(&buf).unwrap(), owned(&response));
        }
        // 403 is static index 68, which needs a continuation byte.
        assert_eq!(&encode(&[(":status", "403")])[2..], &[0xff, 68 - 63]);
        // 429 is not in the table: name reference to :status (index 24).
        assert_eq!(
            &encode(&[(":status", "429")])[2..],
            &[0x5f, 24 - 15, 3, b'4', b'2', b'9']
        );
    }

    #[test]
    fn round_trips_every_static_entry() {
        for (i, &(name, value)) in STATIC_TABLE.iter().enumerate() {
            let buf = encode(&[(name, value)]);
            let mut expected = vec![0, 0];
            encode_int(&mut expected, 0xc0, 6, i as u64);
            assert_eq!(buf, expected, "static entry {i}");
            assert_eq!(decode(&buf).unwrap(), owned(&[(name, value)]));
        }
    }

    #[test]
    fn static_table_matches_rfc_landmarks() {
        assert_eq!(STATIC_TABLE[0], (":authority", ""));
        assert_eq!(STATIC_TABLE[15], (":method", "CONNECT"));
        assert_eq!(STATIC_TABLE[25], (":status", "200"));
        assert_eq!(STATIC_TABLE[63], (":status", "100"));
        assert_eq!(STATIC_TABLE[90], ("origin", ""));
        assert_eq!(STATIC_TABLE[98], ("x-frame-options", "sameorigin"));
        for (name, value) in STATIC_TABLE {
            assert!(validate_name(name.as_bytes()).is_ok(), "{name}");
            assert!(validate_value(value.as_bytes()).is_ok(), "{value}");
        }
    }

    #[test]
    fn encodes_status_200_as_single_indexed_byte() {
        assert_eq!(encode(&[(":status", "200")]), vec![0x00, 0x00, 0xd9]);
    }

    #[test]
    fn encoder_appends() {
        let mut out = vec![0xaa];
        encode_field_section(&[], &mut out);
        assert_eq!(out, vec![0xaa, 0x00, 0x00]);
        assert_eq!(decode(&out[1..]).unwrap(), vec![]);
    }

    #[test]
    fn decodes_indexed_static() {
        // :method GET (17), :path / (1), :status 403 (68, multi-byte index).
        let buf = [0x00, 0x00, 0xd1, 0xc1, 0xff, 0x05];
        assert_eq!(
            decode(&buf).unwrap(),
            owned(&[(":method", "GET"), (":path", "/"), (":status", "403")])
        );
    }

    #[test]
    fn decodes_name_reference_with_huffman_value() {
        // :authority (0) = huffman("www.example.com"), RFC 7541 C.4.1.
        let mut buf = vec![0x00, 0x00, 0x50, 0x8c];
        buf.extend(hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff"));
        let expected = owned(&[(":authority", "www.example.com")]);
        assert_eq!(decode(&buf).unwrap(), expected);
        // The N (never-index) bit changes nothing for us.
        buf[2] = 0x70;
        assert_eq!(decode(&buf).unwrap(), expected);
    }

    #[test]
    fn decodes_name_reference_with_plain_value_and_long_index() {
        // origin (90 = 15 + 75) with a plain value.
        let mut buf = vec![0x00, 0x00, 0x5f, 75, 19];
        buf.extend_from_slice(b"https://example.com");
        assert_eq!(
            decode(&buf).unwrap(),
            owned(&[("origin", "https://example.com")])
        );
    }

    #[test]
    fn decodes_literal_name() {
        // Plain name and value; the name length 10 overflows the 3-bit prefix.
        let mut plain = vec![0x00, 0x00, 0x27, 0x03];
        plain.extend_from_slice(b"custom-key");
        plain.push(12);
        plain.extend_from_slice(b"custom-value");
        let expected = owned(&[("custom-key", "custom-value")]);
        assert_eq!(decode(&plain).unwrap(), expected);

        // Huffman name and value, RFC 7541 C.4.3; N bit set for good measure.
        let mut huff = vec![0x00, 0x00, 0x3f, 0x01];
        huff.extend(hex("25a8 49e9 5ba9 7d7f"));
        huff.push(0x89);
        huff.extend(hex("25a8 49e9 5bb8 e8b4 bf"));
        assert_eq!(decode(&huff).unwrap(), expected);
    }

    #[test]
    fn decodes_empty_strings() {
        // :protocol-less literal with an empty value, and an empty Huffman value.
        let buf = [0x00, 0x00, 0x21, b'a', 0x00, 0x50, 0x80];
        assert_eq!(
            decode(&buf).unwrap(),
            owned(&[("a", ""), (":authority", "")])
        );
    }

    #[test]
    fn tolerates_non_zero_delta_base() {
        // S = 0 with Delta Base 5: positive Base, unused without references.
        assert_eq!(
            decode(&[0x00, 0x05, 0xd9]).unwrap(),
            owned(&[(":status", "200")])
        );
    }

    #[test]
    fn huffman_decodes_every_byte() {
        // Cross-check our table and decoder against an independent encoder.
        let all: Vec<u8> = (0..=255).collect();
        let mut coded = Vec::new();
        httlib_huffman::encode(&all, &mut coded).unwrap();
        assert_eq!(huffman_decode(&coded).unwrap(), all);
        for b in 0..=255u8 {
            let mut coded = Vec::new();
            httlib_huffman::encode(&[b, b'a', b], &mut coded).unwrap();
            assert_eq!(huffman_decode(&coded).unwrap(), vec![b, b'a', b]);
        }
        assert_eq!(huffman_decode(&[]).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn huffman_table_matches_rfc_rows() {
        assert_eq!(HUFFMAN_CODES[0], (0x1ff8, 13));
        assert_eq!(HUFFMAN_CODES[usize::from(b'0')], (0x0, 5));
        assert_eq!(HUFFMAN_CODES[usize::from(b'a')], (0x3, 5));
        assert_eq!(HUFFMAN_CODES[usize::from(b'A')], (0x21, 6));
        assert_eq!(HUFFMAN_CODES[255], (0x3ffffee, 26));
        assert_eq!(HUFFMAN_CODES[256], (0x3fffffff, 30));
        // A complete prefix code: Kraft sum of exactly 1.
        let kraft: u64 = HUFFMAN_CODES.iter().map(|&(_, l)| 1u64 << (30 - l)).sum();
        assert_eq!(kraft, 1 << 30);
    }

    #[test]
    fn rejects_truncated_input() {
        let cases: &[&[u8]] = &[
            &[],
            &[0x00],
            &[0x00, 0x00, 0xff],             // index continuation missing
            &[0x00, 0x00, 0x50],             // value missing
            &[0x00, 0x00, 0x50, 0x05, b'a'], // value shorter than its length
            &[0x00, 0x00, 0x23, b'a', b'b'], // name shorter than its length
            &[0x00, 0x00, 0x21, b'a'],       // value missing after literal name
        ];
        for &case in cases {
            assert_eq!(decode(case), Err(QpackError::UnexpectedEnd), "{case:02x?}");
        }
        // Every cut inside the prefix or the field line is caught (a cut
        // right after the prefix is a valid empty section).
        let buf = encode(&[("origin", "https://example.com")]);
        for cut in (0..buf.len()).filter(|&cut| cut != 2) {
            assert_eq!(
                decode(&buf[..cut]),
                Err(QpackError::UnexpectedEnd),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn rejects_dynamic_references() {
        let cases: &[&[u8]] = &[
            &[0x01, 0x00, 0xd9],       // Required Insert Count 1
            &[0x00, 0x00, 0x80],       // indexed, T = 0
            &[0x00, 0x00, 0x40, 0x00], // name reference, T = 0
            &[0x00, 0x00, 0x10],       // indexed post-base
            &[0x00, 0x00, 0x00, 0x00], // name reference post-base
            &[0x00, 0x00, 0xd9, 0x80], // valid line, then dynamic
        ];
        for &case in cases {
            assert_eq!(
                decode(case),
                Err(QpackError::DynamicTableReference),
                "{case:02x?}"
            );
        }
        assert_eq!(decode(&[0x00, 0x80, 0xd9]), Err(QpackError::InvalidBase));
    }

    #[test]
    fn rejects_static_index_out_of_range() {
        // Indexed line with index 99 = 63 + 36.
        assert_eq!(
            decode(&[0x00, 0x00, 0xff, 36]),
            Err(QpackError::InvalidStaticIndex(99))
        );
        // Name reference with index 200 = 15 + 185 (two continuation bytes).
        assert_eq!(
            decode(&[0x00, 0x00, 0x5f, 0xb9, 0x01, 0x00]),
            Err(QpackError::InvalidStaticIndex(200))
        );
        assert_eq!(decode(&[0x00, 0x00, 0xff, 35]).unwrap().len(), 1);
    }

    #[test]
    fn rejects_bad_huffman() {
        let bad: &[&[u8]] = &[
            &[0x18],                   // "a" padded with zeros
            &[0x1d],                   // "a" padded with 101
            &[0x1f, 0xff],             // "a" then 11 bits of padding
            &[0xff, 0xff, 0xff, 0xff], // explicit EOS
            &[0xfe],                   // incomplete 8-bit prefix, not all ones
        ];
        for &coded in bad {
            assert_eq!(
                huffman_decode(coded),
                Err(QpackError::InvalidHuffman),
                "{coded:02x?}"
            );
            let mut buf = vec![0x00, 0x00, 0x50, 0x80 | coded.len() as u8];
            buf.extend_from_slice(coded);
            assert_eq!(decode(&buf), Err(QpackError::InvalidHuffman));
        }
        assert_eq!(huffman_decode(&[0x1f]).unwrap(), b"a");
    }

    #[test]
    fn rejects_too_large() {
        let fields = [(":status", "200"), ("wt-protocol", "chat")];
        let buf = encode(&fields);
        let exact = 7 + 3 + 32 + 11 + 4 + 32;
        assert_eq!(decode_field_section(&buf, exact).unwrap(), owned(&fields));
        assert_eq!(
            decode_field_section(&buf, exact - 1),
            Err(QpackError::TooLarge)
        );
        assert_eq!(decode_field_section(&buf, 0), Err(QpackError::TooLarge));
    }

    #[test]
    fn rejects_integer_overflow() {
        let mut buf = vec![0x00, 0x00, 0xff];
        buf.extend([0xff; 9]);
        buf.push(0x01);
        assert_eq!(decode(&buf), Err(QpackError::IntegerOverflow));
        let mut buf = vec![0xff];
        buf.extend([0x80; 12]);
        buf.push(0x00);
        assert_eq!(decode(&buf), Err(QpackError::IntegerOverflow));
        // The largest u64 still decodes (and then fails the table lookup).
        let mut max = vec![0x00, 0x00];
        encode_int(&mut max, 0xc0, 6, u64::MAX);
        assert_eq!(decode(&max), Err(QpackError::InvalidStaticIndex(u64::MAX)));
    }

    #[test]
    fn rejects_uppercase_and_invalid_names() {
        for name in [
            &b"Origin"[..],
            b"",
            b":",
            b"bad name",
            b"a:b",
            b"caf\xc3\xa9",
        ] {
            let mut buf = vec![0x00, 0x00];
            encode_int(&mut buf, 0x20, 3, name.len() as u64);
            buf.extend_from_slice(name);
            buf.push(0x00);
            let err = decode(&buf).unwrap_err();
            assert_eq!(err, QpackError::InvalidFieldName, "{name:?}");
            assert!(err.is_malformed_message());
        }
        // Huffman-coded uppercase name: "A" is 100001, padded with 11.
        assert_eq!(
            decode(&[0x00, 0x00, 0x29, 0x87, 0x00]),
            Err(QpackError::InvalidFieldName)
        );
    }

    #[test]
    fn rejects_invalid_values() {
        for value in [&b"a\r\nb"[..], b"\0", b"\x7f"] {
            let mut buf = vec![0x00, 0x00, 0x50, value.len() as u8];
            buf.extend_from_slice(value);
            assert_eq!(
                decode(&buf),
                Err(QpackError::InvalidFieldValue),
                "{value:?}"
            );
        }
        assert_eq!(
            decode(&[0x00, 0x00, 0x50, 0x02, 0xc3, 0x28]),
            Err(QpackError::InvalidUtf8)
        );
        // Tabs and non-ASCII UTF-8 are fine.
        let fields = [("x-note", "a\tb \u{e9}")];
        assert_eq!(decode(&encode(&fields)).unwrap(), owned(&fields));
    }
}
