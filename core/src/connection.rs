//! One QUIC connection speaking HTTP/3: the control streams, the CONNECT requests, and the
//! routing of WebTransport streams and datagrams to their sessions.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use tracing::{debug, trace};
use web_transport_proto::VarInt;

use crate::{
    capsule::{self, Capsule, CapsuleReader},
    qpack,
    request::{write_response, SessionRequest},
    server::{ServerShared, SessionSlot},
    session::{CloseInfo, CloseInitiator, Command, Session, SessionShared},
    settings::PeerSettings,
    stream::{WT_BUFFERED_STREAM_REJECTED, WT_SESSION_GONE},
};

/// HTTP/3 error codes (RFC 9114 §8.1) we send.
mod h3 {
    pub const STREAM_CREATION_ERROR: u32 = 0x103;
    pub const CLOSED_CRITICAL_STREAM: u32 = 0x104;
    pub const FRAME_UNEXPECTED: u32 = 0x105;
    pub const ID_ERROR: u32 = 0x108;
    pub const MESSAGE_ERROR: u32 = 0x10e;
    pub const REQUEST_INCOMPLETE: u32 = 0x10d;
}

/// Upper bound on a request's HEADERS frame; browsers send well under 2 KiB.
const MAX_HEADERS_LEN: u64 = 16 * 1024;
/// A client that opens a stream must say what it is for within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Something that arrived for a session before the application accepted it.
enum Early {
    Bi(quinn::SendStream, quinn::RecvStream),
    Uni(quinn::RecvStream),
    Datagram(Bytes),
}

#[derive(Default)]
struct ConnState {
    sessions: HashMap<u64, Arc<SessionShared>>,
    requested: HashSet<u64>,
    ended: HashSet<u64>,
    buffered: HashMap<u64, Vec<Early>>,
    buffered_streams: usize,
    buffered_datagrams: usize,
    peer: Option<PeerSettings>,
}

/// State shared by the tasks serving one connection.
pub(crate) struct ConnShared {
    pub(crate) conn: quinn::Connection,
    pub(crate) server: Arc<ServerShared>,
    pub(crate) runtime: tokio::runtime::Handle,
    state: Mutex<ConnState>,
}

fn code(v: u64) -> quinn::VarInt {
    quinn::VarInt::from_u64(v).unwrap_or(quinn::VarInt::MAX)
}

fn refuse(early: Early, why: u64) {
    match early {
        Early::Bi(mut s, mut r) => {
            let _ = s.reset(code(why));
            let _ = r.stop(code(why));
        }
        Early::Uni(mut r) => {
            let _ = r.stop(code(why));
        }
        Early::Datagram(_) => {}
    }
}

impl ConnShared {
    fn state(&self) -> std::sync::MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands a stream or datagram to its session, buffers it until the session is
    /// accepted, or refuses it.
    fn route(&self, session_id: u64, early: Early) {
        if session_id % 4 != 0 {
            // Only client-initiated bidirectional streams can be CONNECT streams.
            self.conn.close(h3::ID_ERROR.into(), b"invalid session id");
            return;
        }
        let mut st = self.state();
        if let Some(session) = st.sessions.get(&session_id).cloned() {
            drop(st);
            deliver(&session, early);
            return;
        }
        if st.ended.contains(&session_id) {
            drop(st);
            refuse(early, WT_SESSION_GONE);
            return;
        }
        let limits = &self.server.limits;
        let fits = match early {
            Early::Datagram(_) => st.buffered_datagrams < limits.max_buffered_datagrams,
            _ => st.buffered_streams < limits.max_buffered_streams,
        };
        if !fits {
            drop(st);
            trace!(session_id, "early buffer full; refusing");
            refuse(early, WT_BUFFERED_STREAM_REJECTED);
            return;
        }
        match early {
            Early::Datagram(_) => st.buffered_datagrams += 1,
            _ => st.buffered_streams += 1,
        }
        st.buffered.entry(session_id).or_default().push(early);
    }

    fn take_buffered(st: &mut ConnState, session_id: u64) -> Vec<Early> {
        let items = st.buffered.remove(&session_id).unwrap_or_default();
        for e in &items {
            match e {
                Early::Datagram(_) => st.buffered_datagrams -= 1,
                _ => st.buffered_streams -= 1,
            }
        }
        items
    }

    /// The request was rejected or abandoned: its early arrivals are refused.
    pub(crate) fn forget_request(&self, session_id: u64) {
        let items = {
            let mut st = self.state();
            st.requested.remove(&session_id);
            st.ended.insert(session_id);
            Self::take_buffered(&mut st, session_id)
        };
        for e in items {
            refuse(e, WT_BUFFERED_STREAM_REJECTED);
        }
    }

    /// Claims a server-wide session slot, or `None` at the limit.
    pub(crate) fn reserve_session(&self) -> Option<SessionSlot> {
        self.server.reserve_session()
    }

    /// Registers an accepted session and starts the task that watches its CONNECT stream.
    pub(crate) fn start_session(
        self: &Arc<Self>,
        session_id: u64,
        path: String,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        slot: SessionSlot,
    ) -> Session {
        let (shared, commands) = SessionShared::new(
            session_id,
            self.conn.clone(),
            path,
            self.server.limits.datagram_queue,
        );
        slot.register(&shared);
        let early = {
            let mut st = self.state();
            st.requested.remove(&session_id);
            st.sessions.insert(session_id, shared.clone());
            Self::take_buffered(&mut st, session_id)
        };
        for e in early {
            deliver(&shared, e);
        }
        let session = Session::new(shared.clone());
        let conn = self.clone();
        self.runtime.spawn(async move {
            drive_session(&shared, send, recv, commands).await;
            let mut st = conn.state();
            st.sessions.remove(&session_id);
            st.ended.insert(session_id);
            drop(st);
            drop(slot);
        });
        session
    }
}

fn deliver(session: &SessionShared, early: Early) {
    match early {
        Early::Bi(s, r) => session.push_bi(s, r),
        Early::Uni(r) => session.push_uni(r),
        Early::Datagram(d) => session.push_datagram(d),
    }
}

/// Watches a session's CONNECT stream for capsules and the application's commands, until
/// the session ends one way or another.
async fn drive_session(
    shared: &SessionShared,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    mut commands: tokio::sync::mpsc::UnboundedReceiver<Command>,
) {
    let mut reader = CapsuleReader::default();
    let mut commands_open = true;
    loop {
        tokio::select! {
            cmd = commands.recv(), if commands_open => match cmd {
                Some(Command::Drain) => {
                    let mut buf = Vec::new();
                    capsule::encode(&Capsule::Drain, &mut buf);
                    let _ = send.write_all(&buf).await;
                }
                Some(Command::Close { code, reason }) => {
                    shared.set_closed(CloseInfo {
                        code,
                        reason: reason.clone(),
                        initiator: CloseInitiator::Local,
                    });
                    let mut buf = Vec::new();
                    capsule::encode(&Capsule::Close { code, reason }, &mut buf);
                    let _ = send.write_all(&buf).await;
                    let _ = send.finish();
                    // Give the client a moment to read the capsule and answer with FIN,
                    // so our STOP_SENDING does not race the capsule.
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        while let Ok(Some(_)) = recv.read_chunk(4096, true).await {}
                    })
                    .await;
                    return;
                }
                None => commands_open = false,
            },
            chunk = recv.read_chunk(16 * 1024, true) => match chunk {
                Ok(Some(chunk)) => {
                    reader.push(&chunk.bytes);
                    loop {
                        match reader.next() {
                            Ok(Some(Capsule::Close { code, reason })) => {
                                shared.set_closed(CloseInfo {
                                    code,
                                    reason,
                                    initiator: CloseInitiator::Remote,
                                });
                                let _ = send.finish();
                                return;
                            }
                            Ok(Some(Capsule::Drain)) => shared.set_draining(),
                            Ok(Some(Capsule::Unknown)) => {}
                            Ok(None) => break,
                            Err(e) => {
                                debug!(session = shared.id, "malformed capsule: {e}");
                                shared.set_closed(CloseInfo {
                                    code: 0,
                                    reason: format!("protocol error: {e}"),
                                    initiator: CloseInitiator::Remote,
                                });
                                let _ = send.reset(code(h3::MESSAGE_ERROR.into()));
                                let _ = recv.stop(code(h3::MESSAGE_ERROR.into()));
                                return;
                            }
                        }
                    }
                }
                Ok(None) => {
                    shared.set_closed(CloseInfo {
                        code: 0,
                        reason: String::new(),
                        initiator: CloseInitiator::Remote,
                    });
                    let _ = send.finish();
                    return;
                }
                Err(quinn::ReadError::ConnectionLost(e)) => {
                    shared.set_closed(CloseInfo::connection_lost(e.to_string()));
                    return;
                }
                Err(e) => {
                    shared.set_closed(CloseInfo {
                        code: 0,
                        reason: format!("CONNECT stream aborted: {e}"),
                        initiator: CloseInitiator::Remote,
                    });
                    let _ = send.reset(code(h3::REQUEST_INCOMPLETE.into()));
                    return;
                }
            },
        }
    }
}

/// Reads one QUIC variable-length integer; `Ok(None)` on a clean end of stream first.
async fn read_varint(recv: &mut quinn::RecvStream) -> Result<Option<u64>, ()> {
    let mut first = [0u8; 1];
    match recv.read_exact(&mut first).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(_) => return Err(()),
    }
    let len = 1usize << (first[0] >> 6);
    let mut buf = [0u8; 8];
    buf[0] = first[0] & 0x3f;
    if len > 1 {
        recv.read_exact(&mut buf[1..len]).await.map_err(|_| ())?;
    }
    Ok(Some(
        buf[..len]
            .iter()
            .fold(0u64, |v, b| (v << 8) | u64::from(*b)),
    ))
}

async fn read_bytes(recv: &mut quinn::RecvStream, len: u64) -> Result<Vec<u8>, ()> {
    let mut buf = vec![0u8; len as usize];
    recv.read_exact(&mut buf).await.map_err(|_| ())?;
    Ok(buf)
}

/// Serves one incoming connection until it closes.
pub(crate) async fn run(incoming: quinn::Incoming, server: Arc<ServerShared>) {
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            debug!("handshake failed: {e}");
            return;
        }
    };
    let shared = Arc::new(ConnShared {
        conn: conn.clone(),
        runtime: server.runtime.clone(),
        server,
        state: Mutex::new(ConnState::default()),
    });
    // Our control stream must stay open for the connection's lifetime.
    let control = async {
        let mut control = conn.open_uni().await.ok()?;
        control
            .write_all(&shared.server.settings_bytes)
            .await
            .ok()?;
        Some(control)
    };
    let (_control, (), (), ()) = tokio::join!(
        control,
        accept_bi_loop(&shared),
        accept_uni_loop(&shared),
        datagram_loop(&shared),
    );
    debug!(remote = %conn.remote_address(), "connection closed: {:?}", conn.close_reason());
}

async fn accept_bi_loop(shared: &Arc<ConnShared>) {
    while let Ok((send, recv)) = shared.conn.accept_bi().await {
        let shared = shared.clone();
        tokio::spawn(async move { handle_bi(shared, send, recv).await });
    }
}

async fn accept_uni_loop(shared: &Arc<ConnShared>) {
    while let Ok(recv) = shared.conn.accept_uni().await {
        let shared = shared.clone();
        tokio::spawn(async move { handle_uni(shared, recv).await });
    }
}

async fn datagram_loop(shared: &Arc<ConnShared>) {
    while let Ok(mut datagram) = shared.conn.read_datagram().await {
        let Ok(quarter) = VarInt::decode(&mut datagram) else {
            continue;
        };
        let Some(session_id) = quarter.into_inner().checked_mul(4) else {
            continue;
        };
        shared.route(session_id, Early::Datagram(datagram));
    }
}

async fn handle_uni(shared: Arc<ConnShared>, mut recv: quinn::RecvStream) {
    // No time limit here: a browser may open its QPACK streams long before it writes
    // their type, and dropping such a stream sends STOP_SENDING on a critical stream,
    // which the browser answers by closing the connection. The client's uni-stream
    // limit bounds how many can wait.
    let Ok(Some(typ)) = read_varint(&mut recv).await else {
        return;
    };
    match typ {
        0x00 => read_control_stream(&shared, recv).await,
        // QPACK encoder/decoder streams: with a zero-capacity table they carry nothing we
        // need, but must be read so the client's flow control does not stall.
        0x02 | 0x03 => while let Ok(Some(_)) = recv.read_chunk(4096, true).await {},
        0x54 => {
            if let Ok(Ok(Some(session_id))) =
                tokio::time::timeout(HEADER_TIMEOUT, read_varint(&mut recv)).await
            {
                shared.route(session_id, Early::Uni(recv));
            }
        }
        _ => {
            let _ = recv.stop(h3::STREAM_CREATION_ERROR.into());
        }
    }
}

async fn read_control_stream(shared: &ConnShared, mut recv: quinn::RecvStream) {
    let mut first = true;
    loop {
        let typ = match read_varint(&mut recv).await {
            Ok(Some(t)) => t,
            Ok(None) => {
                shared
                    .conn
                    .close(h3::CLOSED_CRITICAL_STREAM.into(), b"control stream closed");
                return;
            }
            Err(()) => return,
        };
        let Ok(Some(len)) = read_varint(&mut recv).await else {
            return;
        };
        if len > 64 * 1024 {
            shared
                .conn
                .close(h3::FRAME_UNEXPECTED.into(), b"control frame too large");
            return;
        }
        let Ok(payload) = read_bytes(&mut recv, len).await else {
            return;
        };
        if first && typ != 0x04 {
            shared.conn.close(0x10a_u32.into(), b"missing SETTINGS"); // H3_MISSING_SETTINGS
            return;
        }
        if first {
            first = false;
            match PeerSettings::from_payload(&payload) {
                Some(peer) => shared.state().peer = Some(peer),
                None => {
                    shared.conn.close(0x109_u32.into(), b"malformed SETTINGS"); // H3_SETTINGS_ERROR
                    return;
                }
            }
        }
    }
}

async fn handle_bi(shared: Arc<ConnShared>, send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let Ok(Ok(Some(typ))) = tokio::time::timeout(HEADER_TIMEOUT, read_varint(&mut recv)).await
    else {
        return;
    };
    if typ == 0x41 {
        if let Ok(Ok(Some(session_id))) =
            tokio::time::timeout(HEADER_TIMEOUT, read_varint(&mut recv)).await
        {
            shared.route(session_id, Early::Bi(send, recv));
        }
        return;
    }
    let fields = match tokio::time::timeout(HEADER_TIMEOUT, read_headers(typ, &mut recv)).await {
        Ok(Ok(fields)) => fields,
        Ok(Err(status)) => {
            debug!(status, "malformed request");
            return respond_and_finish(send, status).await;
        }
        Err(_) => return,
    };
    handle_request(shared, send, recv, fields).await;
}

/// Reads frames up to the request's HEADERS and decodes it; an error is the HTTP status to
/// answer with.
async fn read_headers(
    mut typ: u64,
    recv: &mut quinn::RecvStream,
) -> Result<Vec<(String, String)>, u16> {
    loop {
        let len = read_varint(recv).await.ok().flatten().ok_or(400u16)?;
        match typ {
            0x01 => {
                if len > MAX_HEADERS_LEN {
                    return Err(431);
                }
                let block = read_bytes(recv, len).await.map_err(|_| 400u16)?;
                return qpack::decode_field_section(&block, MAX_HEADERS_LEN as usize).map_err(
                    |e| match e {
                        qpack::QpackError::TooLarge => 431,
                        _ => 400,
                    },
                );
            }
            0x00 | 0x02..=0x0d => return Err(400),
            _ => {
                // GREASE or unknown frame types before HEADERS are skipped.
                if len > 64 * 1024 {
                    return Err(400);
                }
                read_bytes(recv, len).await.map_err(|_| 400u16)?;
            }
        }
        typ = read_varint(recv).await.ok().flatten().ok_or(400u16)?;
    }
}

async fn respond_and_finish(mut send: quinn::SendStream, status: u16) {
    let _ = write_response(&mut send, status, &[]).await;
    let _ = send.finish();
}

/// Parses `wt-available-protocols`: an RFC 8941 list of strings (parameters ignored).
fn parse_protocol_list(value: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        if chars.next()? != '"' {
            return None;
        }
        let mut item = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    c @ ('"' | '\\') => item.push(c),
                    _ => return None,
                },
                c if (' '..='~').contains(&c) => item.push(c),
                _ => return None,
            }
        }
        out.push(item);
        // Skip parameters up to the next comma.
        for c in chars.by_ref() {
            if c == ',' {
                break;
            }
        }
    }
}

async fn handle_request(
    shared: Arc<ConnShared>,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    fields: Vec<(String, String)>,
) {
    let pseudo = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if pseudo(":method") != Some("CONNECT") {
        return respond_and_finish(send, 405).await;
    }
    let valid = matches!(
        pseudo(":protocol"),
        Some("webtransport" | "webtransport-h3")
    ) && pseudo(":scheme") == Some("https")
        && pseudo(":authority").is_some_and(|a| !a.is_empty())
        && pseudo(":path").is_some_and(|p| p.starts_with('/'));
    if !valid {
        return respond_and_finish(send, 400).await;
    }
    let headers: Vec<(String, String)> = fields
        .iter()
        .filter(|(k, _)| !k.starts_with(':'))
        .cloned()
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let protocols = match header("wt-available-protocols").map(parse_protocol_list) {
        None => Vec::new(),
        Some(Some(list)) => list,
        Some(None) => return respond_and_finish(send, 400).await,
    };
    let authority = pseudo(":authority").unwrap_or_default().to_owned();
    let origin = header("origin").map(str::to_owned);
    let session_id: u64 = recv.id().into();
    let server = &shared.server;

    let status = if server.is_closing() {
        Some(503)
    } else if !server.origin_policy.allows(origin.as_deref(), &authority) {
        Some(403)
    } else {
        let mut st = shared.state();
        if st.sessions.len() + st.requested.len()
            >= server.limits.max_sessions_per_connection as usize
        {
            Some(429)
        } else {
            st.requested.insert(session_id);
            None
        }
    };
    debug!(
        session_id,
        path = pseudo(":path"),
        ?status,
        "session request"
    );
    if let Some(status) = status {
        shared.forget_request(session_id);
        return respond_and_finish(send, status).await;
    }
    let request = SessionRequest {
        conn: shared.clone(),
        session_id,
        streams: Some((send, recv)),
        path: pseudo(":path").unwrap_or("/").to_owned(),
        authority,
        origin,
        draft02: header("sec-webtransport-http3-draft02").is_some(),
        headers,
        protocols,
    };
    if let Err((request, status)) = server.dispatch(request) {
        let _ = request.reject(status).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_lists_parse_like_rfc8941() {
        assert_eq!(
            parse_protocol_list(r#""chat.v2", "chat.v1";q=1"#),
            Some(vec!["chat.v2".to_owned(), "chat.v1".to_owned()])
        );
        assert_eq!(parse_protocol_list(""), Some(vec![]));
        assert_eq!(
            parse_protocol_list(r#""a\"b""#),
            Some(vec!["a\"b".to_owned()])
        );
        assert_eq!(parse_protocol_list("token"), None);
        assert_eq!(parse_protocol_list(r#""open"#), None);
    }
}
