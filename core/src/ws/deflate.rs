//! permessage-deflate (RFC 7692) on plain WebSockets: the negotiation (sans-IO), the
//! per-connection compressor and inflater, and the read shim that lets the frame codec
//! carry compressed messages.
//!
//! tungstenite refuses any frame with RSV1 set, so compressed messages reach it through
//! [`DeflateRead`]: it walks the frame headers of the byte stream, clears RSV1 on the first
//! frame of each compressed message (and marks a compressed text message binary, since
//! its payload is not UTF-8 until inflated), and records per message whether it was
//! compressed and whether it was text. The session task inflates those messages, bounded
//! by the message limit as it inflates (a bomb is refused with 1009 once it passes the
//! limit, never inflated whole), and checks UTF-8 itself.

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// permessage-deflate on plain WebSockets. Off by default, as in `ws`; browsers offer it
/// on every WebSocket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WebSocketCompression {
    /// Messages are sent and accepted uncompressed.
    #[default]
    Off,
    /// Each side keeps its compression context from message to message (the best ratio
    /// for a stream of similar messages: chat, JSON). Costs about 220 KiB per connection
    /// once it has sent and received a compressed message (docs/benchmarks.md; `ws` costs
    /// about 245 KiB).
    Deflate,
    /// Every message is compressed on its own (`server_no_context_takeover` and
    /// `client_no_context_takeover`): the state exists only while a message is compressed
    /// or inflated, so an idle connection holds none; small messages gain less.
    DeflateNoContext,
}

impl WebSocketCompression {
    /// The name the language bindings take: `off`, `deflate` or `deflate-no-context`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Deflate => "deflate",
            Self::DeflateNoContext => "deflate-no-context",
        }
    }

    /// The setting named `name` (see [`as_str`](Self::as_str)).
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Off, Self::Deflate, Self::DeflateNoContext]
            .into_iter()
            .find(|m| m.as_str() == name)
    }
}

/// The trailer a sync flush ends with, which RFC 7692 §7.2.1 takes off each message.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The window the server compresses with when the client sets no smaller one.
const DEFAULT_WINDOW_BITS: u8 = 12;

/// Messages shorter than this go out uncompressed: the deflate header costs more than
/// they could save. (Per message, RFC 7692 §6: RSV1 says which are compressed.)
const MIN_COMPRESS: usize = 32;

/// What was agreed for one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server starts each message with a fresh context.
    pub server_no_context_takeover: bool,
    /// The client starts each message with a fresh context.
    pub client_no_context_takeover: bool,
    /// The window the server compresses with (9..=12: 12 unless the client asked for less;
    /// a client's 8 is served with 9, whose matches reach no further than 8's, as zlib
    /// cannot make raw streams with 8).
    pub server_window_bits: u8,
}

/// One offer's parameters (server_no_context_takeover, client_no_context_takeover,
/// server_max_window_bits), or `None` when it is declined.
fn parse_offer(offer: &str) -> Option<(bool, bool, Option<u8>)> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let (mut server_nct, mut client_nct) = (false, false);
    let mut server_bits: Option<u8> = None;
    let mut client_bits_seen = false;
    for p in parts {
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (p, None),
        };
        let bits = |v: Option<&str>| -> Option<u8> {
            let v = v?;
            // RFC 7692's grammar: 1*DIGIT without a leading zero.
            if v.is_empty()
                || v.len() > 2
                || v.starts_with('0')
                || !v.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            v.parse().ok().filter(|b| (8..=15).contains(b))
        };
        match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() && !server_nct => server_nct = true,
            "client_no_context_takeover" if value.is_none() && !client_nct => client_nct = true,
            "server_max_window_bits" if server_bits.is_none() => server_bits = Some(bits(value)?),
            "client_max_window_bits" if !client_bits_seen => {
                client_bits_seen = true;
                if value.is_some() {
                    bits(value)?;
                }
            }
            // Unknown, duplicated or malformed: this offer is declined (§7.1).
            _ => return None,
        }
    }
    Some((server_nct, client_nct, server_bits))
}

/// Picks the first acceptable permessage-deflate offer among the `Sec-WebSocket-Extensions`
/// header values: the agreed parameters and the extension to answer with. `None` when
/// compression is off or no offer is acceptable (the WebSocket then runs uncompressed).
///
/// The answer never carries `client_max_window_bits`: the inflater takes any window, so
/// the client keeps the one it chose (and Firefox, which does not offer the parameter,
/// must not receive it).
pub fn negotiate(
    mode: WebSocketCompression,
    header_values: &[&str],
) -> Option<(DeflateParams, String)> {
    if mode == WebSocketCompression::Off {
        return None;
    }
    let light = mode == WebSocketCompression::DeflateNoContext;
    header_values
        .iter()
        .flat_map(|v| v.split(','))
        .find_map(parse_offer)
        .map(|(server_nct, client_nct, server_bits)| {
            let params = DeflateParams {
                server_no_context_takeover: server_nct || light,
                client_no_context_takeover: client_nct || light,
                // 12 unless the client asked for less: a compressor's window costs
                // 2^(bits+2) bytes, and past 4 KiB it adds little for the messages that
                // compress well (as `websockets` chooses).
                server_window_bits: server_bits
                    .unwrap_or(DEFAULT_WINDOW_BITS)
                    .clamp(9, DEFAULT_WINDOW_BITS),
            };
            let mut answer = String::from("permessage-deflate");
            if params.server_no_context_takeover {
                answer.push_str("; server_no_context_takeover");
            }
            if params.client_no_context_takeover {
                answer.push_str("; client_no_context_takeover");
            }
            if let Some(bits) = server_bits {
                answer.push_str(&format!("; server_max_window_bits={bits}"));
            }
            (params, answer)
        })
}

/// Why a compressed message could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the message limit (close 1009).
    TooLarge,
    /// Not a valid deflate stream (close 1007).
    Corrupt,
}

/// One connection's compression state, owned by its session task.
pub struct Codec {
    params: DeflateParams,
    compress: Option<Compress>,
    decompress: Option<Decompress>,
    /// Per message the shim saw start, in order: (compressed, text).
    starts: Arc<Mutex<VecDeque<(bool, bool)>>>,
}

impl Codec {
    /// A codec for `params`, and the shim to read the socket through.
    pub(crate) fn with_reader<T>(params: DeflateParams, io: T) -> (Self, DeflateRead<T>) {
        let starts = Arc::new(Mutex::new(VecDeque::new()));
        (
            Self {
                params,
                compress: None,
                decompress: None,
                starts: starts.clone(),
            },
            DeflateRead {
                io,
                starts,
                scanner: StartScanner::default(),
            },
        )
    }

    /// A codec on its own, for the fuzz targets (no socket, so `next_start` reports nothing).
    pub fn new(params: DeflateParams) -> Self {
        Self::with_reader(params, ()).0
    }

    /// Whether the next data message tungstenite delivers was compressed, and whether it
    /// was text; `None` if the scanner saw no such message (the two are out of step, which
    /// the session treats as an internal error rather than guess).
    pub fn next_start(&self) -> Option<(bool, bool)> {
        self.starts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    /// Compresses one message's payload, or `None` when it goes out as it is.
    pub fn compress(&mut self, data: &[u8]) -> Option<Vec<u8>> {
        if data.len() < MIN_COMPRESS {
            return None;
        }
        let bits = self.params.server_window_bits;
        let c = self.compress.get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::default(), false, bits)
        });
        let start = c.total_in();
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        loop {
            let consumed = (c.total_in() - start) as usize;
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(256));
            }
            if c.compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
                .is_err()
            {
                // Not reachable with a valid stream state; start afresh and send it plain
                // (only safe without context takeover, so drop the context either way).
                self.compress = None;
                return None;
            }
            let done = (c.total_in() - start) as usize == data.len();
            if done && out.len() < out.capacity() {
                break;
            }
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if self.params.server_no_context_takeover {
            self.compress = None;
        }
        Some(out)
    }

    /// Inflates one compressed message, refusing it once it passes `max` bytes.
    pub fn inflate(&mut self, data: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
        let d = self
            .decompress
            .get_or_insert_with(|| Decompress::new_with_window_bits(false, 15));
        let mut out: Vec<u8> = Vec::new();
        let mut ended = false;
        for input in [data, &TAIL[..]] {
            let mut pos = 0;
            while !ended {
                // Room for at most one byte past the limit: a bomb stops there.
                let room = max.saturating_add(1).saturating_sub(out.len());
                if room == 0 {
                    self.decompress = None;
                    return Err(InflateError::TooLarge);
                }
                // Doubling from about what deflate usually achieves, never past the room
                // left.
                let grow = out.capacity().max(input.len() * 4).max(256).min(room);
                if out.capacity() - out.len() < grow {
                    out.reserve_exact(grow);
                }
                let spare = out.capacity() - out.len();
                let (before_in, before_out) = (d.total_in(), out.len());
                let status = d
                    .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Corrupt);
                let status = match status {
                    Ok(s) => s,
                    Err(e) => {
                        self.decompress = None;
                        return Err(e);
                    }
                };
                pos += (d.total_in() - before_in) as usize;
                if out.len() > max {
                    self.decompress = None;
                    return Err(InflateError::TooLarge);
                }
                if status == Status::StreamEnd {
                    // A final block ends this context; the next message starts a new one.
                    ended = true;
                    break;
                }
                let progressed = d.total_in() > before_in || out.len() > before_out;
                if pos >= input.len() && out.len() - before_out < spare {
                    break;
                }
                if !progressed {
                    if pos < input.len() {
                        // Input left that the inflater will not take: not deflate data.
                        self.decompress = None;
                        return Err(InflateError::Corrupt);
                    }
                    break;
                }
            }
        }
        if ended || self.params.client_no_context_takeover {
            self.decompress = None;
        }
        // The message waits in a queue counted by its length: hold no more than that.
        if out.capacity() > out.len() + out.len() / 4 {
            out.shrink_to_fit();
        }
        Ok(out)
    }
}

/// Finds the first frame of each data message in a client's byte stream, sans-IO: clears
/// RSV1 on a compressed one (and marks compressed text binary, its payload not being UTF-8
/// until inflated) and reports (compressed, text) for every one, in order. Frames may be
/// split across calls anywhere.
#[derive(Debug, Default)]
pub struct StartScanner {
    /// Header bytes seen of the current frame (0 at a frame boundary).
    have: usize,
    /// Header length once its second byte is known.
    need: usize,
    bytes: [u8; 14],
    /// Payload bytes left of the current frame, once its header is whole.
    payload: u64,
}

impl StartScanner {
    /// Scans (and edits) the next bytes of the stream, reporting message starts to `starts`.
    pub fn scan(&mut self, data: &mut [u8], starts: &mut impl Extend<(bool, bool)>) {
        let mut i = 0;
        while i < data.len() {
            if self.payload > 0 {
                let take = self.payload.min((data.len() - i) as u64);
                self.payload -= take;
                i += take as usize;
                continue;
            }
            if self.have == 0 {
                let b = data[i];
                let opcode = b & 0x0f;
                if opcode == 1 || opcode == 2 {
                    let compressed = b & 0x40 != 0;
                    starts.extend([(compressed, opcode == 1)]);
                    if compressed {
                        // RSV1 off; a compressed text message is binary until inflated.
                        data[i] = (b & 0xb0) | 0x02;
                    }
                }
                // RSV1 on a control or continuation frame stays: the codec refuses it.
            }
            self.bytes[self.have] = data[i];
            self.have += 1;
            i += 1;
            if self.have == 2 {
                let b1 = self.bytes[1];
                let ext = match b1 & 0x7f {
                    126 => 2,
                    127 => 8,
                    _ => 0,
                };
                self.need = 2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 };
            }
            if self.have >= 2 && self.have == self.need {
                let b = &self.bytes;
                let len = match b[1] & 0x7f {
                    126 => u64::from(u16::from_be_bytes([b[2], b[3]])),
                    127 => u64::from_be_bytes([b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9]]),
                    n => u64::from(n),
                };
                self.have = 0;
                self.need = 0;
                self.payload = len;
            }
        }
    }
}

/// The socket as tungstenite reads it when compression was agreed: RSV1 cleared on the
/// first frame of every compressed message, which is recorded for the session task.
pub(crate) struct DeflateRead<T> {
    io: T,
    starts: Arc<Mutex<VecDeque<(bool, bool)>>>,
    scanner: StartScanner,
}

impl<T> DeflateRead<T> {
    fn scan(&mut self, data: &mut [u8]) {
        let mut starts = self.starts.lock().unwrap_or_else(|e| e.into_inner());
        self.scanner.scan(data, &mut *starts);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for DeflateRead<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let filled = buf.filled_mut();
            let (_, fresh) = filled.split_at_mut(before);
            this.scan(fresh);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for DeflateRead<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_offers_are_answered_without_client_window_bits() {
        let chromium = "permessage-deflate; client_max_window_bits";
        let (p, answer) = negotiate(WebSocketCompression::Deflate, &[chromium]).unwrap();
        assert_eq!(answer, "permessage-deflate");
        assert_eq!(p.server_window_bits, 12);
        let (_, answer) =
            negotiate(WebSocketCompression::Deflate, &["permessage-deflate"]).unwrap();
        assert_eq!(answer, "permessage-deflate");
        assert!(negotiate(WebSocketCompression::Off, &[chromium]).is_none());
    }

    #[test]
    fn the_light_mode_asks_both_sides_for_no_context_takeover() {
        let (p, answer) = negotiate(
            WebSocketCompression::DeflateNoContext,
            &["permessage-deflate"],
        )
        .unwrap();
        assert!(p.server_no_context_takeover && p.client_no_context_takeover);
        assert_eq!(
            answer,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
    }

    #[test]
    fn server_window_bits_are_answered_and_8_is_served_with_9() {
        let offer = "permessage-deflate; client_no_context_takeover; client_max_window_bits; server_max_window_bits=8";
        let (p, answer) = negotiate(WebSocketCompression::Deflate, &[offer]).unwrap();
        assert_eq!(p.server_window_bits, 9);
        assert_eq!(
            answer,
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=8"
        );
    }

    #[test]
    fn a_bad_offer_is_skipped_for_the_next_one() {
        let offers = "permessage-deflate; server_max_window_bits=16, permessage-deflate; foo, \
                      permessage-deflate; server_no_context_takeover; server_no_context_takeover, \
                      x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=\"10\"";
        let (p, answer) = negotiate(WebSocketCompression::Deflate, &[offers]).unwrap();
        assert_eq!(p.server_window_bits, 10);
        assert_eq!(answer, "permessage-deflate; server_max_window_bits=10");
        assert!(negotiate(
            WebSocketCompression::Deflate,
            &["permessage-deflate; server_max_window_bits"]
        )
        .is_none());
        assert!(negotiate(WebSocketCompression::Deflate, &["x-webkit-deflate-frame"]).is_none());
        assert!(negotiate(
            WebSocketCompression::Deflate,
            &["permessage-deflate; server_max_window_bits=09"]
        )
        .is_none());
    }

    fn codec(params: DeflateParams) -> Codec {
        Codec::new(params)
    }

    fn params(no_context: bool) -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: no_context,
            client_no_context_takeover: no_context,
            server_window_bits: 15,
        }
    }

    #[test]
    fn messages_round_trip_with_and_without_context() {
        for no_context in [false, true] {
            let mut tx = codec(params(no_context));
            let mut rx = codec(params(no_context));
            let mut sizes = Vec::new();
            for i in 0..20 {
                let msg =
                    format!("{{\"user\":\"ana\",\"seq\":{i},\"text\":\"hello there, everyone\"}}")
                        .repeat(4);
                let packed = tx.compress(msg.as_bytes()).unwrap();
                assert!(!packed.ends_with(&TAIL));
                sizes.push(packed.len());
                assert_eq!(rx.inflate(&packed, 1 << 20).unwrap(), msg.as_bytes());
            }
            // With the context kept, later messages cost less than the first.
            if !no_context {
                assert!(sizes[19] < sizes[0] / 2, "{sizes:?}");
            }
        }
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let mut tx = codec(params(true));
        let bomb = vec![0u8; 10 * 1024 * 1024];
        let packed = tx.compress(&bomb).unwrap();
        assert!(packed.len() < 20 * 1024, "{}", packed.len());
        let mut rx = codec(params(true));
        assert_eq!(
            rx.inflate(&packed, 1024 * 1024),
            Err(InflateError::TooLarge)
        );
        // The limit itself is allowed.
        let exact = tx.compress(&bomb[..1024 * 1024]).unwrap();
        assert_eq!(rx.inflate(&exact, 1024 * 1024).unwrap().len(), 1024 * 1024);
        assert_eq!(
            rx.inflate(b"\xff\xff\xff\xff", 1024),
            Err(InflateError::Corrupt)
        );
    }

    #[test]
    fn the_shim_clears_rsv1_on_first_frames_and_records_them_across_reads() {
        let (codec, mut shim) = Codec::with_reader(params(false), ());
        // A masked compressed text frame (RSV1, opcode 1) of 130 bytes (16-bit length),
        // then an uncompressed binary frame, then a ping with RSV1 (left for the codec).
        let mut wire = vec![0xc1, 0x80 | 126, 0, 130, 1, 2, 3, 4];
        wire.extend(vec![7u8; 130]);
        wire.extend([0x82, 0x80 | 3, 1, 2, 3, 4, 9, 9, 9]);
        wire.extend([0xc9, 0x80, 1, 2, 3, 4]);
        let mut copy = wire.clone();
        // Fed one byte at a time, as the slowest socket would.
        for chunk in copy.chunks_mut(1) {
            shim.scan(chunk);
        }
        assert_eq!(copy[0], 0x82, "RSV1 cleared, text marked binary");
        assert_eq!(copy[8 + 130], 0x82);
        assert_eq!(copy[8 + 130 + 9], 0xc9, "a control frame keeps RSV1");
        assert_eq!(codec.next_start(), Some((true, true)));
        assert_eq!(codec.next_start(), Some((false, false)));
        assert_eq!(codec.next_start(), None, "a ping is no message start");
    }
}
