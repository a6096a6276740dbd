//! One QMux connection: stream state, flow control, scheduling and close.
//!
//! Accounting conventions (they keep the invariants below cheap to check):
//! - Send credit is charged when the application *writes*, not when a frame
//!   goes out, so everything in a send buffer is already covered by peer credit
//!   and `poll_transmit` never stalls on flow control.
//! - Data is "acknowledged" once `poll_transmit` hands it out (draft §4): a FIN
//!   or RESET is final as soon as it is in a record.
//! - Receive memory is bounded by our advertised windows: every buffered byte
//!   was admitted against both the stream and the connection limit.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use thiserror::Error;

use super::frame::{stream_header_len, Frame, FrameIter, FrameType, StreamFrame};
use super::params::{TransportParameters, DEFAULT_MAX_RECORD_SIZE, MAX_STREAM_COUNT};
use super::record::RecordError;
use super::{Dir, Side, StreamId, TransportErrorCode};
use crate::varint::{self, VarInt};
// Short alias: error sites are frequent and should stay one line each.
use TransportErrorCode as Code;

#[cfg(test)]
mod tests;

/// Local settings; the flow-control and size fields become our transport parameters.
#[derive(Debug, Clone)]
pub struct Config {
    /// Connection receive window (`initial_max_data`); re-offered as data is read.
    pub initial_max_data: u64,
    /// Receive window of bidi streams we open.
    pub initial_max_stream_data_bidi_local: u64,
    /// Receive window of bidi streams the peer opens.
    pub initial_max_stream_data_bidi_remote: u64,
    /// Receive window of uni streams the peer opens.
    pub initial_max_stream_data_uni: u64,
    /// Concurrent bidi streams the peer may have open; re-issued as they close.
    pub initial_max_streams_bidi: u64,
    /// Concurrent uni streams the peer may have open; re-issued as they close.
    pub initial_max_streams_uni: u64,
    /// Largest DATAGRAM frame we accept (at most `max_record_size`); 0 disables datagrams.
    pub max_datagram_frame_size: u64,
    /// Largest record we accept (clamped to at least 16382).
    pub max_record_size: u64,
    /// Idle timeout to advertise; zero advertises none. Enforcing it is the driver's job.
    pub max_idle_timeout: Duration,
    /// Cap on the records we build, below the peer's limit. Small records keep
    /// the transport's queue shallow so priorities take effect quickly (draft §11).
    pub max_send_record_size: u64,
    /// Unsent bytes buffered per stream; writes beyond it return 0.
    pub send_buffer: usize,
    /// Bytes of outgoing datagrams queued; the oldest are dropped beyond it.
    pub datagram_send_buffer: usize,
    /// Bytes of received datagrams awaiting `poll_event`; newer ones are dropped beyond it.
    pub datagram_receive_buffer: usize,
    /// Advertise support for receiving RESET_STREAM_AT.
    pub reset_stream_at: bool,
}

impl Default for Config {
    /// The moq `qmux` defaults, so both ends of a mixed deployment behave alike.
    fn default() -> Self {
        Config {
            initial_max_data: 1 << 20,
            initial_max_stream_data_bidi_local: 256 << 10,
            initial_max_stream_data_bidi_remote: 256 << 10,
            initial_max_stream_data_uni: 256 << 10,
            initial_max_streams_bidi: 100,
            initial_max_streams_uni: 100,
            max_datagram_frame_size: DEFAULT_MAX_RECORD_SIZE,
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
            max_idle_timeout: Duration::from_secs(30),
            max_send_record_size: DEFAULT_MAX_RECORD_SIZE,
            send_buffer: 128 << 10,
            datagram_send_buffer: 256 << 10,
            datagram_receive_buffer: 256 << 10,
            reset_stream_at: true,
        }
    }
}

impl Config {
    fn transport_parameters(&self) -> TransportParameters {
        let max = VarInt::MAX.into_inner();
        let max_record_size = self.max_record_size.clamp(DEFAULT_MAX_RECORD_SIZE, max);
        TransportParameters {
            max_idle_timeout: u64::try_from(self.max_idle_timeout.as_millis())
                .unwrap_or(max)
                .min(max),
            initial_max_data: self.initial_max_data.min(max),
            initial_max_stream_data_bidi_local: self.initial_max_stream_data_bidi_local.min(max),
            initial_max_stream_data_bidi_remote: self.initial_max_stream_data_bidi_remote.min(max),
            initial_max_stream_data_uni: self.initial_max_stream_data_uni.min(max),
            initial_max_streams_bidi: self.initial_max_streams_bidi.min(MAX_STREAM_COUNT),
            initial_max_streams_uni: self.initial_max_streams_uni.min(MAX_STREAM_COUNT),
            // A DATAGRAM frame can never exceed the record carrying it (draft §9.1).
            max_datagram_frame_size: self.max_datagram_frame_size.min(max_record_size),
            max_record_size,
            reset_stream_at: self.reset_stream_at,
        }
    }
}

/// Something the driver or application should react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The peer's transport parameters arrived; streams and datagrams can be used.
    Connected,
    /// The peer opened a stream.
    NewStream {
        /// The new stream.
        id: StreamId,
        /// Its directionality.
        dir: Dir,
    },
    /// Data or FIN arrived on a stream whose `read` last returned `Blocked`
    /// (or that was never read). Keep reading until `Blocked` to re-arm it.
    Readable(StreamId),
    /// A `write` that returned less than asked can make progress again.
    Writable(StreamId),
    /// The peer sent STOP_SENDING; the stream has been reset with the same code.
    Stopped {
        /// Stream concerned.
        id: StreamId,
        /// The peer's error code.
        code: VarInt,
    },
    /// The peer reset its sending side; `read` yields any reliable prefix, then `Reset`.
    Reset {
        /// Stream concerned.
        id: StreamId,
        /// The peer's error code.
        code: VarInt,
    },
    /// `open` failed with `Blocked` and the peer has since raised the limit.
    StreamsAvailable(Dir),
    /// A datagram arrived.
    Datagram(Bytes),
    /// The peer answered the QX_PING with this sequence number.
    Pong(u64),
    /// The connection is closed; no further events follow. Stop the transport
    /// once `poll_transmit` returns `None`.
    Closed {
        /// Application code (`application`) or transport error code.
        code: VarInt,
        /// Reason phrase.
        reason: Bytes,
        /// CONNECTION_CLOSE 0x1d rather than 0x1c.
        application: bool,
        /// The peer closed, rather than us (by `close` or on a peer error).
        remote: bool,
    },
}

/// What a `read` produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Stream bytes, in order.
    Data(Bytes),
    /// All data has been read and the peer finished the stream.
    Finished,
    /// Nothing to read now; a `Readable` event follows when there is.
    Blocked,
    /// The peer reset the stream with this code.
    Reset(VarInt),
}

/// The peer broke the protocol; the connection is closed with this error.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{code} ({frame_type}): {reason}")]
pub struct ConnectionError {
    /// QUIC transport error code sent in CONNECTION_CLOSE.
    pub code: TransportErrorCode,
    /// Frame that triggered it (PADDING when not frame-specific).
    pub frame_type: FrameType,
    /// Human-readable detail, also sent as the reason phrase.
    pub reason: String,
}

impl From<RecordError> for ConnectionError {
    /// An oversize record announced on a byte stream (draft §5.2).
    fn from(e: RecordError) -> Self {
        err(
            Code::FRAME_ENCODING_ERROR,
            FrameType::PADDING,
            e.to_string(),
        )
    }
}

fn err(
    code: TransportErrorCode,
    frame_type: FrameType,
    reason: impl Into<String>,
) -> ConnectionError {
    ConnectionError {
        code,
        frame_type,
        reason: reason.into(),
    }
}

/// Returns a connection error from the enclosing function.
macro_rules! bail {
    ($code:ident, $ty:expr, $($reason:tt)+) => {
        return Err(err(Code::$code, $ty, format!($($reason)+)))
    };
}

/// Why `open` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum OpenError {
    /// The peer's MAX_STREAMS limit is reached; wait for `StreamsAvailable`.
    #[error("stream limit reached")]
    Blocked,
    /// The connection is closed.
    #[error("connection closed")]
    ConnectionClosed,
}

/// Why `write` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WriteError {
    /// Unknown stream, receive-only stream, or already finished or reset.
    #[error("stream closed")]
    ClosedStream,
    /// The peer sent STOP_SENDING with this code.
    #[error("stopped by peer with code {0}")]
    Stopped(VarInt),
    /// The connection is closed.
    #[error("connection closed")]
    ConnectionClosed,
}

/// Why `read` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ReadError {
    /// Unknown stream, send-only stream, stopped, or already fully read.
    #[error("stream closed")]
    ClosedStream,
    /// The connection is closed.
    #[error("connection closed")]
    ConnectionClosed,
}

/// Why `send_datagram` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DatagramError {
    /// The peer's transport parameters are not known yet; wait for `Connected`.
    #[error("peer transport parameters not received yet")]
    ParametersPending,
    /// The peer does not accept datagrams.
    #[error("peer does not support datagrams")]
    Unsupported,
    /// Larger than `max_datagram_size`.
    #[error("datagram too large")]
    TooLarge,
    /// The connection is closed.
    #[error("connection closed")]
    ConnectionClosed,
}

/// The stream is unknown or that half of it is already closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("unknown or closed stream")]
pub struct ClosedStream;

/// Counters for monitoring. Byte counts are record Frames fields, excluding
/// Size prefixes and WebSocket framing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Records handed out by `poll_transmit`.
    pub records_sent: u64,
    /// Records passed to `handle_record`.
    pub records_received: u64,
    /// Bytes in records sent.
    pub bytes_sent: u64,
    /// Bytes in records received.
    pub bytes_received: u64,
    /// Frames sent.
    pub frames_sent: u64,
    /// Frames received.
    pub frames_received: u64,
    /// STREAM payload bytes sent.
    pub stream_bytes_sent: u64,
    /// New STREAM payload bytes received (duplicates excluded).
    pub stream_bytes_received: u64,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Datagrams received.
    pub datagrams_received: u64,
    /// Datagrams dropped because a datagram buffer was full.
    pub datagrams_dropped: u64,
}

#[derive(Debug)]
struct Send {
    /// Peer's limit for this stream (absolute offset).
    max_data: u64,
    /// Bytes accepted from the application.
    written: u64,
    /// Bytes handed to `poll_transmit`; `written - sent == buf.len()`.
    sent: u64,
    buf: BytesMut,
    fin: bool,
    fin_sent: bool,
    /// Set once RESET_STREAM is queued; the half is then done.
    reset: bool,
    /// STOP_SENDING code from the peer.
    stopped: Option<VarInt>,
    priority: i32,
    /// In the scheduler queue.
    queued: bool,
    /// A write came up short; owed a `Writable` event.
    want_writable: bool,
    /// Limit for which STREAM_DATA_BLOCKED went out, so it is sent once per limit.
    blocked_at: Option<u64>,
}

impl Send {
    fn new(max_data: u64) -> Self {
        Send {
            max_data,
            written: 0,
            sent: 0,
            buf: BytesMut::new(),
            fin: false,
            fin_sent: false,
            reset: false,
            stopped: None,
            priority: 0,
            queued: false,
            want_writable: false,
            blocked_at: None,
        }
    }

    fn done(&self) -> bool {
        self.fin_sent || self.reset
    }
}

#[derive(Debug)]
struct Recv {
    /// Window re-offered as the application reads.
    window: u64,
    /// Limit we advertised (absolute offset).
    max_data: u64,
    /// Next expected offset: everything below has arrived.
    received: u64,
    /// Highest offset charged to connection flow control (the final size once reset).
    counted: u64,
    /// Bytes consumed by the application; `buf` holds `read..`.
    read: u64,
    buf: BytesMut,
    final_size: Option<u64>,
    /// Peer reset: code and the reliable size below which data is still delivered.
    reset: Option<(VarInt, u64)>,
    /// We sent STOP_SENDING; incoming data is discarded.
    stopped: bool,
    /// The application saw the end (Finished or Reset), or stopped and the final size is known.
    done: bool,
    /// `read` returned `Blocked`; owed a `Readable` event.
    notify: bool,
    /// Queued for MAX_STREAM_DATA.
    update_queued: bool,
}

impl Recv {
    fn new(window: u64) -> Self {
        Recv {
            window,
            max_data: window,
            received: 0,
            counted: 0,
            read: 0,
            buf: BytesMut::new(),
            final_size: None,
            reset: None,
            stopped: false,
            done: false,
            notify: true,
            update_queued: false,
        }
    }

    /// Offset below which arriving data is still delivered.
    fn deliver_limit(&self) -> u64 {
        match (self.stopped, self.reset) {
            (true, _) => self.read,
            (false, Some((_, reliable))) => reliable,
            (false, None) => u64::MAX,
        }
    }
}

#[derive(Debug, Default)]
struct Stream {
    send: Option<Send>,
    recv: Option<Recv>,
}

/// Which half of a stream an incoming frame addresses, from our side.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Half {
    Recv,
    Send,
}

/// A QMux connection state machine. See the crate docs for how to drive it.
#[derive(Debug)]
pub struct Connection {
    side: Side,
    config: Config,
    local: TransportParameters,
    peer: Option<TransportParameters>,
    params_sent: bool,
    closed: bool,
    close_frame: Option<Frame>,

    streams: HashMap<StreamId, Stream>,
    /// Per `Dir::index`: streams we opened, the peer's limit on them, and
    /// whether an `open` was refused since the limit last rose.
    local_opened: [u64; 2],
    local_max: [u64; 2],
    open_blocked: [bool; 2],
    streams_blocked_sent: [Option<u64>; 2],
    /// Per `Dir::index`: streams the peer opened, our limit, and the limit last sent.
    remote_opened: [u64; 2],
    remote_max: [u64; 2],
    remote_max_sent: [u64; 2],

    /// Send side of connection flow control.
    peer_max_data: u64,
    data_written: u64,
    data_blocked_sent: Option<u64>,
    conn_blocked: BTreeSet<StreamId>,
    /// Receive side of connection flow control.
    max_data: u64,
    max_data_sent: u64,
    data_counted: u64,
    data_consumed: u64,

    /// Frames sent once, in order: resets, stops, blocked signals.
    control: VecDeque<Frame>,
    max_stream_data_queue: VecDeque<StreamId>,
    /// Streams with data or FIN to send, by priority, round-robin within a level.
    send_queue: BTreeMap<i32, VecDeque<StreamId>>,
    datagrams: VecDeque<Bytes>,
    datagrams_bytes: usize,
    datagrams_in_bytes: usize,

    ping_next: u64,
    ping_pending: Option<u64>,
    ping_max_sent: Option<u64>,
    pong_last: Option<u64>,
    peer_ping_last: Option<u64>,
    pong_pending: Option<u64>,

    events: VecDeque<Event>,
    stats: ConnectionStats,
}

impl Connection {
    /// A connection for our `side` of the transport. Our transport parameters are
    /// the first thing `poll_transmit` returns.
    pub fn new(side: Side, config: Config) -> Self {
        let local = config.transport_parameters();
        Connection {
            side,
            remote_max: [
                local.initial_max_streams_bidi,
                local.initial_max_streams_uni,
            ],
            remote_max_sent: [
                local.initial_max_streams_bidi,
                local.initial_max_streams_uni,
            ],
            max_data: local.initial_max_data,
            max_data_sent: local.initial_max_data,
            local,
            config,
            peer: None,
            params_sent: false,
            closed: false,
            close_frame: None,
            streams: HashMap::new(),
            local_opened: [0; 2],
            local_max: [0; 2],
            open_blocked: [false; 2],
            streams_blocked_sent: [None; 2],
            remote_opened: [0; 2],
            peer_max_data: 0,
            data_written: 0,
            data_blocked_sent: None,
            conn_blocked: BTreeSet::new(),
            data_counted: 0,
            data_consumed: 0,
            control: VecDeque::new(),
            max_stream_data_queue: VecDeque::new(),
            send_queue: BTreeMap::new(),
            datagrams: VecDeque::new(),
            datagrams_bytes: 0,
            datagrams_in_bytes: 0,
            ping_next: 0,
            ping_pending: None,
            ping_max_sent: None,
            pong_last: None,
            peer_ping_last: None,
            pong_pending: None,
            events: VecDeque::new(),
            stats: ConnectionStats::default(),
        }
    }

    /// Our side of the transport.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The transport parameters we advertise.
    pub fn local_params(&self) -> &TransportParameters {
        &self.local
    }

    /// The peer's transport parameters, once received.
    pub fn peer_params(&self) -> Option<&TransportParameters> {
        self.peer.as_ref()
    }

    /// Counters since creation.
    pub fn stats(&self) -> ConnectionStats {
        self.stats
    }

    /// Whether the connection is closed (locally or by the peer).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Effective idle timeout: the smaller of the non-zero advertised values
    /// (RFC 9000 §10.1). The driver restarts its timer whenever a record is
    /// fully sent or received (draft §7.1) and, on expiry, shuts the transport
    /// down without sending anything.
    pub fn idle_timeout(&self) -> Option<Duration> {
        let peer = self.peer.as_ref().map_or(0, |p| p.max_idle_timeout);
        [self.local.max_idle_timeout, peer]
            .into_iter()
            .filter(|&ms| ms != 0)
            .min()
            .map(Duration::from_millis)
    }

    /// Largest record we may send: the peer's `max_record_size` (16382 until known), capped locally.
    fn send_record_size(&self) -> usize {
        let peer = self
            .peer
            .as_ref()
            .map_or(DEFAULT_MAX_RECORD_SIZE, |p| p.max_record_size);
        let cap = self
            .config
            .max_send_record_size
            .max(DEFAULT_MAX_RECORD_SIZE);
        usize::try_from(peer.min(cap)).unwrap_or(usize::MAX)
    }

    // ---------------------------------------------------------------- input

    /// Processes one received record (the Frames field, without Size prefix).
    ///
    /// On a protocol violation the connection closes: the error is returned,
    /// `Event::Closed` is queued and the next `poll_transmit` carries
    /// CONNECTION_CLOSE 0x1c. Records arriving after close are discarded (§7.2).
    pub fn handle_record(&mut self, record: &[u8]) -> Result<(), ConnectionError> {
        if self.closed {
            return Ok(());
        }
        self.stats.records_received += 1;
        self.stats.bytes_received += record.len() as u64;
        if record.len() as u64 > self.local.max_record_size {
            let reason = format!("record of {} bytes exceeds max_record_size", record.len());
            return Err(self.fail(err(Code::FRAME_ENCODING_ERROR, FrameType::PADDING, reason)));
        }
        for frame in FrameIter::new(record) {
            let res = frame
                .map_err(|e| err(e.code(), e.frame_type(), e.to_string()))
                .and_then(|f| {
                    self.stats.frames_received += 1;
                    self.handle_frame(f)
                });
            if let Err(e) = res {
                return Err(self.fail(e));
            }
            if self.closed {
                // The peer's CONNECTION_CLOSE: whatever follows it is moot.
                break;
            }
        }
        Ok(())
    }

    fn handle_frame(&mut self, frame: Frame) -> Result<(), ConnectionError> {
        let ty = frame.ty();
        if self.peer.is_none() {
            return match frame {
                Frame::TransportParameters(p) => {
                    self.on_params(p);
                    Ok(())
                }
                _ => Err(err(
                    Code::PROTOCOL_VIOLATION,
                    ty,
                    "first frame is not QX_TRANSPORT_PARAMETERS",
                )),
            };
        }
        match frame {
            Frame::Padding(_) | Frame::DataBlocked(_) | Frame::StreamsBlocked { .. } => {}
            Frame::TransportParameters(_) => {
                bail!(PROTOCOL_VIOLATION, ty, "second QX_TRANSPORT_PARAMETERS");
            }
            Frame::Ping(seq) => {
                if self.peer_ping_last.is_some_and(|last| seq <= last) {
                    bail!(PROTOCOL_VIOLATION, ty, "QX_PING sequence not increasing");
                }
                self.peer_ping_last = Some(seq);
                // §4.3 lets one response answer every request received so far.
                self.pong_pending = Some(seq);
            }
            Frame::PingResponse(seq) => {
                if self.ping_max_sent.is_none_or(|max| seq > max) {
                    bail!(
                        PROTOCOL_VIOLATION,
                        ty,
                        "QX_PING response for unsent sequence"
                    );
                }
                // Repeats are dropped so a peer cannot grow the event queue at will.
                if self.pong_last.is_none_or(|last| seq > last) {
                    self.pong_last = Some(seq);
                    self.events.push_back(Event::Pong(seq));
                }
            }
            Frame::MaxData(max) => {
                if max > self.peer_max_data {
                    self.peer_max_data = max;
                    self.wake_conn_blocked();
                }
            }
            Frame::MaxStreams { dir, count } => {
                let d = dir.index();
                if count > self.local_max[d] {
                    self.local_max[d] = count;
                    if std::mem::take(&mut self.open_blocked[d]) {
                        self.events.push_back(Event::StreamsAvailable(dir));
                    }
                }
            }
            Frame::StreamDataBlocked { id, .. } => {
                // Informational (we re-offer credit on reads), but still validates the ID.
                self.stream_for(id, Half::Recv, ty)?;
            }
            Frame::Stream(f) => self.on_stream(f, ty)?,
            Frame::ResetStream {
                id,
                error_code,
                final_size,
            } => self.on_reset(id, error_code, final_size, 0, ty)?,
            Frame::ResetStreamAt {
                id,
                error_code,
                final_size,
                reliable_size,
            } => {
                if !self.local.reset_stream_at {
                    bail!(PROTOCOL_VIOLATION, ty, "RESET_STREAM_AT not negotiated");
                }
                self.on_reset(id, error_code, final_size, reliable_size, ty)?;
            }
            Frame::StopSending { id, error_code } => {
                if self.stream_for(id, Half::Send, ty)? {
                    let send = send_of(&mut self.streams, id);
                    if !send.done() && send.stopped.is_none() {
                        let code = VarInt::from_u64(error_code).expect("decoded varint");
                        send.stopped = Some(code);
                        self.events.push_back(Event::Stopped { id, code });
                        // RFC 9000 §3.5: answer with RESET_STREAM, echoing the code.
                        self.reset_send(id, code);
                    }
                }
            }
            Frame::MaxStreamData { id, max } => {
                if self.stream_for(id, Half::Send, ty)? {
                    let send = send_of(&mut self.streams, id);
                    if max > send.max_data {
                        send.max_data = max;
                        self.wake_writable(id);
                    }
                }
            }
            Frame::ConnectionClose {
                error_code, reason, ..
            } => self.enter_closed(error_code, reason, false, true),
            Frame::ApplicationClose { error_code, reason } => {
                self.enter_closed(error_code, reason, true, true)
            }
            Frame::Datagram(data) => {
                // The frame arrived as 0x30 or 0x31; charge the smaller form so we
                // never reject a frame the peer sized exactly to our limit.
                if data.len() as u64 + 1 > self.local.max_datagram_frame_size {
                    bail!(
                        PROTOCOL_VIOLATION,
                        ty,
                        "DATAGRAM exceeds max_datagram_frame_size"
                    );
                }
                self.stats.datagrams_received += 1;
                // Draft §6 allows dropping datagrams the application is not keeping up with.
                if self.datagrams_in_bytes + data.len() > self.config.datagram_receive_buffer {
                    self.stats.datagrams_dropped += 1;
                } else {
                    self.datagrams_in_bytes += data.len();
                    self.events.push_back(Event::Datagram(data));
                }
            }
        }
        Ok(())
    }

    fn on_params(&mut self, p: TransportParameters) {
        self.local_max = [p.initial_max_streams_bidi, p.initial_max_streams_uni];
        self.peer_max_data = p.initial_max_data;
        self.peer = Some(p);
        self.recheck_queued_datagrams();
        // `Connected` is the signal to retry opens refused while waiting for these.
        self.open_blocked = [false; 2];
        self.events.push_back(Event::Connected);
    }

    /// Validates that `id` may carry a frame addressing our `half`, opening
    /// peer streams implicitly (RFC 9000 §3.2). Returns false for streams that
    /// existed but are already closed and forgotten: their late frames are ignored.
    fn stream_for(
        &mut self,
        id: StreamId,
        half: Half,
        ty: FrameType,
    ) -> Result<bool, ConnectionError> {
        let local = id.initiator() == self.side;
        let dir = id.dir();
        if dir == Dir::Uni && (local == (half == Half::Recv)) {
            bail!(
                STREAM_STATE_ERROR,
                ty,
                "wrong direction for uni stream {id}"
            );
        }
        let d = dir.index();
        if local {
            if id.index() >= self.local_opened[d] {
                bail!(STREAM_STATE_ERROR, ty, "stream {id} not opened");
            }
        } else {
            if id.index() >= self.remote_max[d] {
                bail!(STREAM_LIMIT_ERROR, ty, "stream {id} beyond limit");
            }
            let peer = self.peer.as_ref().expect("frames after params");
            while self.remote_opened[d] <= id.index() {
                let new = StreamId::new(!self.side, dir, self.remote_opened[d]);
                self.remote_opened[d] += 1;
                let stream = match dir {
                    Dir::Bi => Stream {
                        send: Some(Send::new(peer.initial_max_stream_data_bidi_local)),
                        recv: Some(Recv::new(self.local.initial_max_stream_data_bidi_remote)),
                    },
                    Dir::Uni => Stream {
                        send: None,
                        recv: Some(Recv::new(self.local.initial_max_stream_data_uni)),
                    },
                };
                self.streams.insert(new, stream);
                self.events.push_back(Event::NewStream { id: new, dir });
            }
        }
        Ok(self.streams.contains_key(&id))
    }

    fn on_stream(&mut self, f: StreamFrame, ty: FrameType) -> Result<(), ConnectionError> {
        if !self.stream_for(f.id, Half::Recv, ty)? {
            return Ok(());
        }
        let id = f.id;
        let r = recv_of(&mut self.streams, id);
        let end = f.offset + f.data.len() as u64;
        if let Some(fs) = r.final_size {
            if end > fs || (f.fin && end != fs) {
                bail!(FINAL_SIZE_ERROR, ty, "final size of {id} changed");
            }
        }
        if f.fin && end < r.received {
            bail!(FINAL_SIZE_ERROR, ty, "FIN of {id} below received data");
        }
        if end > r.max_data {
            bail!(FLOW_CONTROL_ERROR, ty, "{id} exceeds stream credit");
        }
        // Draft §4.1: data must continue where the previous frame ended. Exact
        // repeats are tolerated (QUIC stacks may retransmit); overlaps are trimmed.
        if f.offset > r.received {
            bail!(
                PROTOCOL_VIOLATION,
                ty,
                "gap in {id}: {} > {}",
                f.offset,
                r.received
            );
        }
        let newly_counted = end.saturating_sub(r.counted);
        if self.data_counted + newly_counted > self.max_data {
            bail!(FLOW_CONTROL_ERROR, ty, "connection credit exceeded");
        }
        self.data_counted += newly_counted;
        let counted_before = r.counted;
        r.counted = r.counted.max(end);
        let fresh = r.received.max(f.offset);
        let mut progress = f.fin && r.final_size.is_none();
        if f.fin {
            r.final_size = Some(end);
        }
        if end > fresh {
            let keep_end = end.min(r.deliver_limit()).max(fresh);
            if keep_end > fresh {
                let from = (fresh - f.offset) as usize;
                r.buf
                    .extend_from_slice(&f.data[from..(keep_end - f.offset) as usize]);
                progress = true;
            }
            // Discarded bytes return credit at once, unless a reset already did.
            self.data_consumed += end.saturating_sub(keep_end.max(counted_before));
            self.stats.stream_bytes_received += end - fresh;
            r.received = end;
        }
        if r.stopped && r.final_size.is_some() {
            r.done = true;
        }
        if progress && !r.stopped && std::mem::take(&mut r.notify) {
            self.events.push_back(Event::Readable(id));
        }
        self.maybe_max_data();
        self.maybe_forget(id);
        Ok(())
    }

    fn on_reset(
        &mut self,
        id: StreamId,
        code: u64,
        final_size: u64,
        reliable: u64,
        ty: FrameType,
    ) -> Result<(), ConnectionError> {
        if !self.stream_for(id, Half::Recv, ty)? {
            return Ok(());
        }
        let r = recv_of(&mut self.streams, id);
        if r.final_size.is_some_and(|fs| fs != final_size) || final_size < r.received {
            bail!(FINAL_SIZE_ERROR, ty, "reset of {id} changes final size");
        }
        if final_size > r.max_data {
            bail!(
                FLOW_CONTROL_ERROR,
                ty,
                "reset of {id} exceeds stream credit"
            );
        }
        if let Some((_, prev)) = &mut r.reset {
            // A later reset may only shrink the reliable part (reliable-stream-reset §4).
            *prev = (*prev).min(reliable);
            return Ok(());
        }
        let newly_counted = final_size - r.counted;
        if self.data_counted + newly_counted > self.max_data {
            bail!(FLOW_CONTROL_ERROR, ty, "connection credit exceeded");
        }
        self.data_counted += newly_counted;
        r.counted = final_size;
        r.final_size = Some(final_size);
        if r.done {
            return Ok(());
        }
        let code = VarInt::from_u64(code).expect("decoded varint");
        r.reset = Some((code, reliable));
        // Buffered bytes past the reliable size are dropped; bytes that will
        // never be delivered (not yet arrived, past the reliable size or the
        // read point if stopped) return their connection credit now.
        let limit = r.deliver_limit();
        let keep = (limit.max(r.read) - r.read).min(r.buf.len() as u64) as usize;
        let dropped = (r.buf.len() - keep) as u64;
        r.buf.truncate(keep);
        self.data_consumed += dropped + final_size.saturating_sub(r.received.max(limit));
        if r.stopped {
            r.done = true;
        } else {
            r.notify = false;
            self.events.push_back(Event::Reset { id, code });
        }
        self.maybe_max_data();
        self.maybe_forget(id);
        Ok(())
    }

    // ---------------------------------------------------------------- output

    /// The next record to send (Frames field only), or `None` when idle.
    /// Records never exceed the peer's `max_record_size`; on WebSocket send each
    /// as one binary message, on a byte stream prefix it with [`write_record`](super::write_record).
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        let max = self.send_record_size();
        let mut buf = Vec::new();
        if !self.params_sent {
            // Even an immediate close goes out behind our parameters, so the
            // peer sees a well-formed start (draft §4.2).
            self.params_sent = true;
            self.put(
                &mut buf,
                max,
                &Frame::TransportParameters(self.local.clone()),
            );
        }
        if self.closed {
            if let Some(close) = self.close_frame.take() {
                self.put(&mut buf, max, &close);
            }
        } else {
            self.write_control(&mut buf, max);
            if self.peer.is_some() {
                self.write_datagrams(&mut buf, max);
                self.write_streams(&mut buf, max);
            }
        }
        if buf.is_empty() {
            return None;
        }
        self.stats.records_sent += 1;
        self.stats.bytes_sent += buf.len() as u64;
        Some(buf)
    }

    /// Appends `frame` if it fits; false means the record is full.
    fn put(&mut self, buf: &mut Vec<u8>, max: usize, frame: &Frame) -> bool {
        if buf.len() + frame.encoded_len() > max {
            return false;
        }
        frame.encode(buf);
        self.stats.frames_sent += 1;
        true
    }

    fn write_control(&mut self, buf: &mut Vec<u8>, max: usize) {
        if let Some(seq) = self.pong_pending {
            if !self.put(buf, max, &Frame::PingResponse(seq)) {
                return;
            }
            self.pong_pending = None;
        }
        if let Some(seq) = self.ping_pending {
            if !self.put(buf, max, &Frame::Ping(seq)) {
                return;
            }
            self.ping_pending = None;
            self.ping_max_sent = Some(seq);
        }
        if self.max_data > self.max_data_sent {
            if !self.put(buf, max, &Frame::MaxData(self.max_data)) {
                return;
            }
            self.max_data_sent = self.max_data;
        }
        for dir in [Dir::Bi, Dir::Uni] {
            let d = dir.index();
            if self.remote_max[d] > self.remote_max_sent[d] {
                if !self.put(
                    buf,
                    max,
                    &Frame::MaxStreams {
                        dir,
                        count: self.remote_max[d],
                    },
                ) {
                    return;
                }
                self.remote_max_sent[d] = self.remote_max[d];
            }
        }
        while let Some(&id) = self.max_stream_data_queue.front() {
            let recv = self.streams.get_mut(&id).and_then(|s| s.recv.as_mut());
            // Once the final size is known more credit is pointless.
            if let Some(r) = recv.filter(|r| r.final_size.is_none() && !r.stopped) {
                let frame = Frame::MaxStreamData {
                    id,
                    max: r.max_data,
                };
                if !self.put(buf, max, &frame) {
                    return;
                }
            }
            self.max_stream_data_queue.pop_front();
            if let Some(r) = self.streams.get_mut(&id).and_then(|s| s.recv.as_mut()) {
                r.update_queued = false;
            }
        }
        while let Some(frame) = self.control.pop_front() {
            if !self.put(buf, max, &frame) {
                self.control.push_front(frame);
                return;
            }
        }
    }

    fn write_datagrams(&mut self, buf: &mut Vec<u8>, max: usize) {
        if self.peer.is_none() {
            // Whether the peer takes datagrams at all is not known yet.
            return;
        }
        while let Some(data) = self.datagrams.front() {
            // Cloning Bytes is a refcount bump, cheaper than un-wrapping the frame.
            if !self.put(buf, max, &Frame::Datagram(data.clone())) {
                return;
            }
            let data = self.datagrams.pop_front().expect("front exists");
            self.datagrams_bytes -= data.len();
            self.stats.datagrams_sent += 1;
        }
    }

    /// Fills the record with STREAM frames: strictly by priority, round-robin
    /// within a level, one frame per stream per turn.
    fn write_streams(&mut self, buf: &mut Vec<u8>, max: usize) {
        while let Some(mut level) = self.send_queue.last_entry() {
            let id = *level.get().front().expect("levels are never left empty");
            let send = self.streams.get_mut(&id).and_then(|s| s.send.as_mut());
            let Some(send) =
                send.filter(|s| !s.reset && (!s.buf.is_empty() || s.fin && !s.fin_sent))
            else {
                // Reset or forgotten since it was queued.
                level.get_mut().pop_front();
                if level.get().is_empty() {
                    level.remove();
                }
                if let Some(s) = self.streams.get_mut(&id).and_then(|s| s.send.as_mut()) {
                    s.queued = false;
                }
                continue;
            };
            let room = max.saturating_sub(buf.len());
            let pending = send.buf.len();
            let header = stream_header_len(id, send.sent, pending.min(room));
            if room < header + usize::from(pending > 0) {
                break;
            }
            let n = pending.min(room - header);
            let fin = send.fin && n == pending;
            let frame = StreamFrame {
                id,
                offset: send.sent,
                fin,
                data: send.buf.split_to(n).freeze(),
            };
            Frame::Stream(frame).encode(buf);
            send.sent += n as u64;
            send.fin_sent |= fin;
            let more = !send.buf.is_empty() || send.fin && !send.fin_sent;
            send.queued = more;
            level.get_mut().pop_front();
            if more {
                level.get_mut().push_back(id);
            } else if level.get().is_empty() {
                level.remove();
            }
            self.stats.frames_sent += 1;
            self.stats.stream_bytes_sent += n as u64;
            self.wake_writable(id);
            if fin {
                self.maybe_forget(id);
            }
        }
    }

    /// Drains the event queue.
    pub fn poll_event(&mut self) -> Option<Event> {
        let ev = self.events.pop_front()?;
        if let Event::Datagram(d) = &ev {
            self.datagrams_in_bytes -= d.len();
        }
        Some(ev)
    }

    // ---------------------------------------------------------------- streams

    /// Opens a stream; fails with `Blocked` at the peer's MAX_STREAMS limit
    /// (always, until the peer's parameters arrive).
    pub fn open(&mut self, dir: Dir) -> Result<StreamId, OpenError> {
        if self.closed {
            return Err(OpenError::ConnectionClosed);
        }
        let d = dir.index();
        let Some(peer) = self
            .peer
            .as_ref()
            .filter(|_| self.local_opened[d] < self.local_max[d])
        else {
            self.open_blocked[d] = true;
            // STREAMS_BLOCKED once per limit, and only once the limit is the peer's (§4.2).
            if self.peer.is_some() && self.streams_blocked_sent[d] != Some(self.local_max[d]) {
                self.streams_blocked_sent[d] = Some(self.local_max[d]);
                self.control.push_back(Frame::StreamsBlocked {
                    dir,
                    limit: self.local_max[d],
                });
            }
            return Err(OpenError::Blocked);
        };
        let id = StreamId::new(self.side, dir, self.local_opened[d]);
        self.local_opened[d] += 1;
        let stream = match dir {
            Dir::Bi => Stream {
                send: Some(Send::new(peer.initial_max_stream_data_bidi_remote)),
                recv: Some(Recv::new(self.local.initial_max_stream_data_bidi_local)),
            },
            Dir::Uni => Stream {
                send: Some(Send::new(peer.initial_max_stream_data_uni)),
                recv: None,
            },
        };
        self.streams.insert(id, stream);
        Ok(id)
    }

    /// Bytes `write` would accept on this stream right now.
    fn capacity(&self, send: &Send) -> u64 {
        let room = self.config.send_buffer.saturating_sub(send.buf.len()) as u64;
        (send.max_data - send.written)
            .min(self.peer_max_data - self.data_written)
            .min(room)
    }

    /// Queues as much of `data` as peer credit and the send buffer allow and
    /// returns how much that was. Short or zero writes are followed by a
    /// `Writable` event once more can be taken.
    pub fn write(&mut self, id: StreamId, data: &[u8]) -> Result<usize, WriteError> {
        if self.closed {
            return Err(WriteError::ConnectionClosed);
        }
        let send = self
            .streams
            .get(&id)
            .and_then(|s| s.send.as_ref())
            .ok_or(WriteError::ClosedStream)?;
        if let Some(code) = send.stopped {
            return Err(WriteError::Stopped(code));
        }
        if send.fin || send.reset {
            return Err(WriteError::ClosedStream);
        }
        let n = (data.len() as u64).min(self.capacity(send)) as usize;
        let send = send_of(&mut self.streams, id);
        if n > 0 {
            send.buf.extend_from_slice(&data[..n]);
            send.written += n as u64;
            self.data_written += n as u64;
            Self::enqueue(&mut self.send_queue, id, send);
        }
        if n < data.len() {
            send.want_writable = true;
            // Blocked signals name the limit that is actually exhausted and go
            // out once per limit: they are diagnostics, repeating them only costs bandwidth.
            if send.written == send.max_data && send.blocked_at != Some(send.max_data) {
                send.blocked_at = Some(send.max_data);
                self.control.push_back(Frame::StreamDataBlocked {
                    id,
                    limit: send.max_data,
                });
            }
            if self.data_written == self.peer_max_data {
                self.conn_blocked.insert(id);
                if self.data_blocked_sent != Some(self.peer_max_data) {
                    self.data_blocked_sent = Some(self.peer_max_data);
                    self.control
                        .push_back(Frame::DataBlocked(self.peer_max_data));
                }
            }
        }
        Ok(n)
    }

    fn enqueue(queue: &mut BTreeMap<i32, VecDeque<StreamId>>, id: StreamId, send: &mut Send) {
        if !std::mem::replace(&mut send.queued, true) {
            queue.entry(send.priority).or_default().push_back(id);
        }
    }

    /// Ends the sending side after the data written so far.
    pub fn finish(&mut self, id: StreamId) -> Result<(), ClosedStream> {
        let send = self.send_mut(id)?;
        if send.fin || send.reset || send.stopped.is_some() {
            return Err(ClosedStream);
        }
        send.fin = true;
        let send = send_of(&mut self.streams, id);
        Self::enqueue(&mut self.send_queue, id, send);
        Ok(())
    }

    /// Abandons the sending side: unsent data is dropped and RESET_STREAM sent
    /// with a final size of what already went out.
    pub fn reset(&mut self, id: StreamId, code: VarInt) -> Result<(), ClosedStream> {
        let send = self.send_mut(id)?;
        if send.done() {
            return Err(ClosedStream);
        }
        self.reset_send(id, code);
        Ok(())
    }

    fn reset_send(&mut self, id: StreamId, code: VarInt) {
        let send = send_of(&mut self.streams, id);
        let unsent = send.buf.len() as u64;
        send.buf = BytesMut::new();
        send.written = send.sent;
        send.reset = true;
        send.want_writable = false;
        self.control.push_back(Frame::ResetStream {
            id,
            error_code: code.into_inner(),
            final_size: send.sent,
        });
        // The peer only counts what was sent, so unsent bytes go back into the connection budget.
        self.data_written -= unsent;
        if unsent > 0 {
            self.wake_conn_blocked();
        }
        self.maybe_forget(id);
    }

    /// Sets the stream's send priority: higher goes first; equal levels share round-robin.
    pub fn set_priority(&mut self, id: StreamId, priority: i32) -> Result<(), ClosedStream> {
        let send = self.send_mut(id)?;
        let old = std::mem::replace(&mut send.priority, priority);
        if send.queued && old != priority {
            if let Some(level) = self.send_queue.get_mut(&old) {
                level.retain(|&q| q != id);
                if level.is_empty() {
                    self.send_queue.remove(&old);
                }
            }
            self.send_queue.entry(priority).or_default().push_back(id);
        }
        Ok(())
    }

    fn send_mut(&mut self, id: StreamId) -> Result<&mut Send, ClosedStream> {
        if self.closed {
            return Err(ClosedStream);
        }
        self.streams
            .get_mut(&id)
            .and_then(|s| s.send.as_mut())
            .ok_or(ClosedStream)
    }

    /// Reads up to `max` bytes. Reading returns flow-control credit: once half a
    /// window is consumed, MAX_STREAM_DATA / MAX_DATA go out with the next record.
    pub fn read(&mut self, id: StreamId, max: usize) -> Result<ReadOutcome, ReadError> {
        if self.closed {
            return Err(ReadError::ConnectionClosed);
        }
        let r = self
            .streams
            .get_mut(&id)
            .and_then(|s| s.recv.as_mut())
            .ok_or(ReadError::ClosedStream)?;
        if r.done || r.stopped {
            return Err(ReadError::ClosedStream);
        }
        if !r.buf.is_empty() {
            let data = r.buf.split_to(max.min(r.buf.len())).freeze();
            r.read += data.len() as u64;
            self.data_consumed += data.len() as u64;
            if r.final_size.is_none() && r.max_data - r.read <= r.window / 2 {
                r.max_data = r.read + r.window;
                if !std::mem::replace(&mut r.update_queued, true) {
                    self.max_stream_data_queue.push_back(id);
                }
            }
            self.maybe_max_data();
            return Ok(ReadOutcome::Data(data));
        }
        let outcome = match (r.reset, r.final_size) {
            (Some((code, reliable)), _) if r.read >= reliable => ReadOutcome::Reset(code),
            (None, Some(fs)) if r.read == fs => ReadOutcome::Finished,
            _ => {
                r.notify = true;
                return Ok(ReadOutcome::Blocked);
            }
        };
        r.done = true;
        self.maybe_forget(id);
        Ok(outcome)
    }

    /// Abandons the receiving side: buffered data is dropped, later data is
    /// discarded, and STOP_SENDING asks the peer to reset.
    pub fn stop(&mut self, id: StreamId, code: VarInt) -> Result<(), ClosedStream> {
        if self.closed {
            return Err(ClosedStream);
        }
        let r = self
            .streams
            .get_mut(&id)
            .and_then(|s| s.recv.as_mut())
            .ok_or(ClosedStream)?;
        if r.done || r.stopped {
            return Err(ClosedStream);
        }
        r.stopped = true;
        self.data_consumed += r.buf.len() as u64;
        r.read += r.buf.len() as u64;
        r.buf = BytesMut::new();
        if r.final_size.is_some() {
            // Everything already arrived (or was reset); nothing left to ask for.
            r.done = true;
        } else {
            self.control.push_back(Frame::StopSending {
                id,
                error_code: code.into_inner(),
            });
        }
        self.maybe_max_data();
        self.maybe_forget(id);
        Ok(())
    }

    /// Re-offers connection credit once half the window has been consumed.
    fn maybe_max_data(&mut self) {
        let window = self.local.initial_max_data;
        if self.max_data - self.data_consumed <= window / 2 {
            self.max_data = self.data_consumed + window;
        }
    }

    /// Emits `Writable` for `id` if a short write is pending and capacity exists.
    fn wake_writable(&mut self, id: StreamId) {
        let Some(send) = self.streams.get(&id).and_then(|s| s.send.as_ref()) else {
            return;
        };
        if !send.want_writable {
            return;
        }
        if self.capacity(send) > 0 {
            send_of(&mut self.streams, id).want_writable = false;
            self.events.push_back(Event::Writable(id));
        } else if self.data_written == self.peer_max_data {
            // Stream credit or buffer room came back but the connection is now
            // the bottleneck: wait for MAX_DATA, or the wakeup would be lost.
            self.conn_blocked.insert(id);
        }
    }

    fn wake_conn_blocked(&mut self) {
        for id in std::mem::take(&mut self.conn_blocked) {
            self.wake_writable(id);
        }
    }

    /// Drops a stream once both halves are finished; for peer streams that
    /// frees a slot, re-offered through MAX_STREAMS.
    fn maybe_forget(&mut self, id: StreamId) {
        let Some(s) = self.streams.get(&id) else {
            return;
        };
        let send_done = s.send.as_ref().is_none_or(Send::done);
        let recv_done = s.recv.as_ref().is_none_or(|r| r.done);
        if !(send_done && recv_done) {
            return;
        }
        self.streams.remove(&id);
        if id.initiator() != self.side {
            let d = id.dir().index();
            self.remote_max[d] = (self.remote_max[d] + 1).min(MAX_STREAM_COUNT);
        }
    }

    /// How the send half of `id` ended: `None` while data or FIN still wait to go
    /// out; `Some(None)` once FIN has been handed to the transport (QMux counts that as
    /// delivered, draft §4) or the stream is gone; `Some(Some(code))` when the peer
    /// stopped it.
    pub fn send_outcome(&self, id: StreamId) -> Option<Option<VarInt>> {
        let Some(send) = self.streams.get(&id).and_then(|s| s.send.as_ref()) else {
            return Some(None);
        };
        if let Some(code) = send.stopped {
            return Some(Some(code));
        }
        if send.fin_sent || (send.reset && send.buf.is_empty()) {
            return Some(None);
        }
        None
    }

    // ---------------------------------------------------------------- datagrams

    /// Largest datagram payload `send_datagram` accepts, if the peer takes any. Before the
    /// peer's transport parameters arrive this is the size the default parameters allow:
    /// datagrams queued meanwhile are checked again when the real ones come.
    pub fn max_datagram_size(&self) -> Option<usize> {
        let frame_size = match &self.peer {
            Some(p) if p.max_datagram_frame_size == 0 => return None,
            Some(p) => p.max_datagram_frame_size,
            None => DEFAULT_MAX_RECORD_SIZE,
        };
        let limit = frame_size.min(self.send_record_size() as u64);
        // We send 0x31: a type byte, a length varint, then the payload. The
        // varint may be narrower than one sized for the whole room, which
        // leaves a few bytes to hand back to the payload.
        let room = limit - 1;
        let mut payload = room.saturating_sub(varint::size(room) as u64);
        while payload + 1 + varint::size(payload + 1) as u64 <= room {
            payload += 1;
        }
        usize::try_from(payload).ok()
    }

    /// Queues a datagram. When the send queue is full the oldest queued
    /// datagrams are dropped, since the freshest data is what datagram users want.
    /// Datagrams queued before the peer's transport parameters wait for them; those the
    /// parameters then rule out are dropped and counted as such.
    pub fn send_datagram(&mut self, data: Bytes) -> Result<(), DatagramError> {
        if self.closed {
            return Err(DatagramError::ConnectionClosed);
        }
        let Some(max) = self.max_datagram_size() else {
            return Err(DatagramError::Unsupported);
        };
        if data.len() > max {
            return Err(DatagramError::TooLarge);
        }
        while self.datagrams_bytes + data.len() > self.config.datagram_send_buffer {
            let Some(old) = self.datagrams.pop_front() else {
                break;
            };
            self.datagrams_bytes -= old.len();
            self.stats.datagrams_dropped += 1;
        }
        self.datagrams_bytes += data.len();
        self.datagrams.push_back(data);
        Ok(())
    }

    /// Drops queued datagrams the peer's parameters, now known, do not allow.
    fn recheck_queued_datagrams(&mut self) {
        let max = self.max_datagram_size().unwrap_or(0);
        let before = self.datagrams.len();
        self.datagrams.retain(|d| max > 0 && d.len() <= max);
        self.datagrams_bytes = self.datagrams.iter().map(Bytes::len).sum();
        self.stats.datagrams_dropped += (before - self.datagrams.len()) as u64;
    }

    // ---------------------------------------------------------------- liveness and close

    /// Queues a QX_PING and returns its sequence number; `Event::Pong` reports
    /// the answer, so the driver can time round trips with its own clock.
    pub fn ping(&mut self) -> u64 {
        let seq = self.ping_next;
        self.ping_next += 1;
        // An unsent older request is superseded; the sequence still only grows.
        self.ping_pending = Some(seq);
        seq
    }

    /// Closes the connection with CONNECTION_CLOSE 0x1d. Unsent data is
    /// discarded; the close frame is the last record `poll_transmit` returns.
    pub fn close(&mut self, code: VarInt, reason: &[u8]) {
        if self.closed {
            return;
        }
        // Keep the frame within any record the peer accepts.
        let reason = Bytes::copy_from_slice(&reason[..reason.len().min(1024)]);
        self.close_frame = Some(Frame::ApplicationClose {
            error_code: code.into_inner(),
            reason: reason.clone(),
        });
        self.enter_closed(code.into_inner(), reason, true, false);
    }

    /// Closes with CONNECTION_CLOSE 0x1c for an error found outside
    /// `handle_record`, such as a [`RecordError`] from the byte-stream reader.
    pub fn abort(&mut self, error: ConnectionError) {
        if !self.closed {
            self.fail(error);
        }
    }

    fn fail(&mut self, e: ConnectionError) -> ConnectionError {
        let mut reason = e.reason.clone().into_bytes();
        reason.truncate(1024);
        let reason = Bytes::from(reason);
        self.close_frame = Some(Frame::ConnectionClose {
            error_code: e.code.0,
            frame_type: e.frame_type.0,
            reason: reason.clone(),
        });
        self.enter_closed(e.code.0, reason, false, false);
        e
    }

    fn enter_closed(&mut self, code: u64, reason: Bytes, application: bool, remote: bool) {
        self.closed = true;
        // Nothing else will be sent, so per-stream state is dead weight.
        self.streams.clear();
        self.send_queue.clear();
        self.control.clear();
        self.max_stream_data_queue.clear();
        self.datagrams.clear();
        self.datagrams_bytes = 0;
        let code = VarInt::from_u64(code).expect("decoded or checked varint");
        self.events.push_back(Event::Closed {
            code,
            reason,
            application,
            remote,
        });
    }
}

/// The send half of a stream the caller has validated.
fn send_of(streams: &mut HashMap<StreamId, Stream>, id: StreamId) -> &mut Send {
    streams
        .get_mut(&id)
        .and_then(|s| s.send.as_mut())
        .expect("validated send half")
}

/// The receive half of a stream the caller has validated.
fn recv_of(streams: &mut HashMap<StreamId, Stream>, id: StreamId) -> &mut Recv {
    streams
        .get_mut(&id)
        .and_then(|s| s.recv.as_mut())
        .expect("validated receive half")
}
