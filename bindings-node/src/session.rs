//! An accepted session.

use ferrovia::{CloseInfo, CloseInitiator, Interest, Readiness, Session, SessionError};
use napi::{
    bindgen_prelude::{Buffer, BufferSlice, Either3, Null, Undefined},
    Env,
};
use napi_derive::napi;

use crate::{
    error,
    stream::{NativeBidiStream, NativeRecvStream, NativeSendStream},
};

/// How a session ended.
#[napi(object)]
pub struct NativeCloseInfo {
    /// The application close code (0 when the session ended without a close capsule).
    pub close_code: u32,
    /// The reason, at most 1024 bytes of UTF-8.
    pub reason: String,
    /// `local`, `remote` or `connection`.
    pub initiator: String,
}

impl From<CloseInfo> for NativeCloseInfo {
    fn from(i: CloseInfo) -> Self {
        Self {
            close_code: i.code,
            reason: i.reason,
            initiator: match i.initiator {
                CloseInitiator::Local => "local",
                CloseInitiator::Remote => "remote",
                CloseInitiator::Connection => "connection",
            }
            .into(),
        }
    }
}

/// Statistics of the session's QUIC connection.
#[napi(object)]
pub struct NativeStats {
    /// Smoothed round-trip time in milliseconds.
    pub smoothed_rtt: f64,
    /// UDP payload bytes sent.
    pub bytes_sent: f64,
    /// UDP payload bytes received.
    pub bytes_received: f64,
    /// Packets sent.
    pub packets_sent: f64,
    /// Packets declared lost.
    pub packets_lost: f64,
    /// Congestion window in bytes.
    pub congestion_window: f64,
    /// Current path MTU in bytes.
    pub mtu: u32,
    /// Incoming datagrams dropped because the queue was full.
    pub datagrams_dropped: f64,
    /// Smallest round-trip time seen in milliseconds (HTTP/3 only).
    pub min_rtt: Option<f64>,
    /// Packets received (UDP datagrams; records over QMux).
    pub packets_received: f64,
    /// Bytes in packets declared lost.
    pub bytes_lost: f64,
}

/// An accepted WebTransport session.
#[napi]
pub struct NativeSession {
    session: Session,
    protocol: Option<String>,
    interest: Interest,
}

impl NativeSession {
    pub(crate) fn new(session: Session, protocol: Option<String>) -> Self {
        Self {
            session,
            protocol,
            interest: Interest::default(),
        }
    }

    /// The datagrams queued, at most `max`, each behind its length.
    fn pack_datagrams(&self, max: u32) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..max.max(1) {
            let Some(d) = self.session.try_recv_datagram() else {
                break;
            };
            // QUIC datagrams fit in one packet; the length fits in two bytes.
            out.extend_from_slice(&(d.len() as u16).to_le_bytes());
            out.extend_from_slice(&d);
        }
        out
    }
}

#[napi]
impl NativeSession {
    /// The session ID (the CONNECT stream's ID).
    #[napi(getter, catch_unwind)]
    pub fn id(&self) -> f64 {
        self.session.id() as f64
    }

    /// The request path, including the query.
    #[napi(getter, catch_unwind)]
    pub fn path(&self) -> String {
        self.session.path().to_owned()
    }

    /// The subprotocol chosen at accept, if any.
    #[napi(getter, catch_unwind)]
    pub fn protocol(&self) -> Option<String> {
        self.protocol.clone()
    }

    /// `webtransport` or `qmux`.
    #[napi(getter, catch_unwind)]
    pub fn transport(&self) -> String {
        self.session.transport().as_str().to_owned()
    }

    /// The client's address as `ip`.
    #[napi(getter, catch_unwind)]
    pub fn remote_address(&self) -> String {
        self.session.remote_addr().ip().to_string()
    }

    /// The client's UDP port.
    #[napi(getter, catch_unwind)]
    pub fn remote_port(&self) -> u32 {
        u32::from(self.session.remote_addr().port())
    }

    /// The largest datagram payload that fits in one packet right now.
    #[napi(getter, catch_unwind)]
    pub fn max_datagram_size(&self) -> u32 {
        self.session.max_datagram_size() as u32
    }

    /// Whether the client asked to drain the session.
    #[napi(getter, catch_unwind)]
    pub fn is_draining(&self) -> bool {
        self.session.is_draining()
    }

    /// How the session ended, if it has.
    #[napi(getter, catch_unwind)]
    pub fn close_info(&self) -> Option<NativeCloseInfo> {
        self.session.close_info().map(Into::into)
    }

    /// Waits until something the session's interest names is ready and resolves with what
    /// is (the bits of [`readiness_bits`]; "closed" is always set once the session has
    /// ended). The facade sets the interest first (`set_interest`, synchronous, so no call
    /// made after it can be overwritten by this one starting late) and keeps one of these
    /// pending per session instead of one wait per kind (each pending call holds a
    /// threadsafe function and a task), widening it in place.
    #[napi]
    pub async fn ready(&self) -> u32 {
        u32::from(self.session.ready_with(&self.interest).await.bits())
    }

    /// Changes what the pending (or the next) `ready` waits for, without ending it.
    #[napi(catch_unwind)]
    pub fn set_interest(&self, interest: u32) {
        self.interest.set(Readiness::from_bits(interest as u8));
    }

    /// The next bidirectional stream the client opened: `undefined` when none is queued,
    /// `null` once the session has ended.
    #[napi(catch_unwind)]
    pub fn try_accept_bi(&self) -> napi::Result<Either3<NativeBidiStream, Null, Undefined>> {
        match self.session.try_accept_bi() {
            Ok(Some((send, recv))) => Ok(Either3::A(NativeBidiStream::new(send, recv))),
            Ok(None) => Ok(Either3::C(())),
            Err(SessionError::Closed(_)) => Ok(Either3::B(Null)),
            Err(e) => Err(error::from_session(e)),
        }
    }

    /// The next unidirectional stream the client opened: `undefined` when none is queued,
    /// `null` once the session has ended.
    #[napi(catch_unwind)]
    pub fn try_accept_uni(&self) -> napi::Result<Either3<NativeRecvStream, Null, Undefined>> {
        match self.session.try_accept_uni() {
            Ok(Some(recv)) => Ok(Either3::A(NativeRecvStream::new(recv))),
            Ok(None) => Ok(Either3::C(())),
            Err(SessionError::Closed(_)) => Ok(Either3::B(Null)),
            Err(e) => Err(error::from_session(e)),
        }
    }

    /// Opens a bidirectional stream toward the client (waits for stream credit).
    #[napi]
    pub async fn open_bi(&self) -> napi::Result<NativeBidiStream> {
        let (send, recv) = self.session.open_bi().await.map_err(error::from_session)?;
        Ok(NativeBidiStream::new(send, recv))
    }

    /// Opens a unidirectional stream toward the client (waits for stream credit).
    #[napi]
    pub async fn open_uni(&self) -> napi::Result<NativeSendStream> {
        let send = self.session.open_uni().await.map_err(error::from_session)?;
        Ok(NativeSendStream::new(send))
    }

    /// Sends one datagram; fails with `ERR_DATAGRAM_TOO_LARGE` if it cannot fit.
    #[napi]
    pub async fn send_datagram(&self, data: Buffer) -> napi::Result<()> {
        self.session
            .send_datagram(&data)
            .await
            .map_err(error::from_session)
    }

    /// Sends one datagram without waiting (the oldest queued one is dropped when the
    /// outgoing buffer is full); throws `ERR_DATAGRAM_TOO_LARGE` if it cannot fit.
    #[napi(catch_unwind)]
    pub fn send_datagram_now(&self, data: &[u8]) -> napi::Result<()> {
        self.session
            .try_send_datagram(data)
            .map_err(error::from_session)
    }

    /// Datagrams already queued, at most `max`, without waiting: `undefined` when none is,
    /// `null` once the session has ended. Packed into one buffer, each datagram behind its
    /// length as two bytes little-endian (a datagram is shorter than 64 KiB), so a batch
    /// costs one JavaScript object.
    #[napi(catch_unwind)]
    pub fn try_recv_datagrams<'env>(
        &self,
        env: &'env Env,
        max: u32,
    ) -> napi::Result<Either3<BufferSlice<'env>, Null, Undefined>> {
        let packed = self.pack_datagrams(max);
        if !packed.is_empty() {
            return BufferSlice::copy_from(env, packed).map(Either3::A);
        }
        // Looked at after the queue: datagrams that came before the end are still read.
        if self.session.close_info().is_some() {
            return Ok(Either3::B(Null));
        }
        Ok(Either3::C(()))
    }

    /// Closes the session with a code and a reason (truncated to 1024 bytes).
    #[napi(catch_unwind)]
    pub fn close(&self, code: u32, reason: String) {
        self.session.close(code, &reason);
    }

    /// Asks the client to wrap up (DRAIN_WEBTRANSPORT_SESSION).
    #[napi(catch_unwind)]
    pub fn drain(&self) {
        self.session.drain();
    }

    /// Connection statistics.
    #[napi(catch_unwind)]
    pub fn stats(&self) -> NativeStats {
        let s = self.session.stats();
        NativeStats {
            smoothed_rtt: s.rtt.as_secs_f64() * 1000.0,
            bytes_sent: s.bytes_sent as f64,
            bytes_received: s.bytes_received as f64,
            packets_sent: s.packets_sent as f64,
            packets_lost: s.packets_lost as f64,
            congestion_window: s.congestion_window as f64,
            mtu: u32::from(s.mtu),
            datagrams_dropped: s.datagrams_dropped as f64,
            min_rtt: s.min_rtt.map(|d| d.as_secs_f64() * 1000.0),
            packets_received: s.packets_received as f64,
            bytes_lost: s.bytes_lost as f64,
        }
    }
}

/// The bits of `NativeSession.ready()`, the core's [`Readiness`]: the facade reads them
/// from here rather than keeping its own copy.
#[napi(object)]
pub struct NativeReadinessBits {
    /// A bidirectional stream is queued.
    pub bi: u32,
    /// A unidirectional stream is queued.
    pub uni: u32,
    /// A datagram is queued.
    pub datagram: u32,
    /// The session has ended.
    pub closed: u32,
    /// The peer asked to drain.
    pub draining: u32,
}

/// The bits of `NativeSession.ready()`.
#[napi(catch_unwind)]
pub fn readiness_bits() -> NativeReadinessBits {
    let bit = |r: Readiness| u32::from(r.bits());
    NativeReadinessBits {
        bi: bit(Readiness::BI),
        uni: bit(Readiness::UNI),
        datagram: bit(Readiness::DATAGRAM),
        closed: bit(Readiness::CLOSED),
        draining: bit(Readiness::DRAINING),
    }
}
