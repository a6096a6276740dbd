//! One QUIC connection speaking HTTP/3: the control streams, the CONNECT requests, and the
//! routing of WebTransport streams and datagrams to their sessions.
//!
//! Everything a client can make this code hold or wait for is bounded: stream headers and
//! SETTINGS have a deadline, every write toward the client has a deadline, early streams and
//! datagrams are capped, refused requests drain a per-connection allowance, and a
//! connection without sessions is closed after a while.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use tokio::sync::watch;
use tracing::{debug, trace};

use super::conn::{
    read_varint, send_and_finish, ConnShared, ConnState, Early, MAX_CONTROL_FRAME, MAX_HEADERS_LEN,
};
use super::{
    connect::parse_connect,
    error_code::{self, code},
    frame::{self, FrameDecoder},
    qpack,
    session_request::H3Request,
    settings::PeerSettings,
};
use crate::{
    request::{RequestHead, SessionRequest},
    shared::{Allowance, ConnSlot, ServerShared},
    transport::Transport,
};

/// Serves one incoming connection until it closes.
pub(crate) async fn run(incoming: quinn::Incoming, server: Arc<ServerShared>, slot: ConnSlot) {
    let _slot = slot;
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            server.counters.handshake_failed(remote, &e);
            return;
        }
    };
    let shared = Arc::new(ConnShared {
        conn: conn.clone(),
        runtime: server.runtime.clone(),
        state: Mutex::new(ConnState {
            sessions: HashMap::new(),
            requested: HashSet::new(),
            parsing: HashSet::new(),
            highest_bidi: None,
            buffered: HashMap::new(),
            buffered_streams: 0,
            buffered_datagrams: 0,
            refusals: Allowance::new(server.limits.max_refused_requests),
            critical: HashSet::new(),
            window_raised: false,
            http_exchanges: 0,
            goaway: None,
        }),
        peer: watch::channel(None).0,
        active: watch::channel(0).0,
        server,
    });
    // Our control stream must stay open for the connection's lifetime.
    let control = async {
        let mut control = conn.open_uni().await.ok()?;
        control
            .write_all(&shared.server.settings_bytes)
            .await
            .ok()?;
        send_goaway_on_drain(&shared, &mut control).await;
        Some(control)
    };
    let (_control, (), (), (), ()) = tokio::join!(
        control,
        accept_bi_loop(&shared),
        accept_uni_loop(&shared),
        datagram_loop(&shared),
        close_when_sessionless(&shared),
    );
    // The tasks of this connection hold it; make sure buffered streams and their memory
    // go now rather than when the last task notices.
    let items: Vec<Early> = {
        let mut st = shared.state();
        let ids: Vec<u64> = st.buffered.keys().copied().collect();
        ids.into_iter()
            .flat_map(|id| ConnShared::take_buffered(&mut st, id))
            .collect()
    };
    drop(items);
    debug!(remote = %conn.remote_address(), "connection closed: {:?}", conn.close_reason());
}

/// Once the server drains or closes, tells the client with GOAWAY (RFC 9114 §5.2) that
/// requests on streams above the last one accepted will not be processed, so new requests
/// and sessions go on a new connection (to another fleet member, where a balancer sends it).
///
/// A connection that carries WebTransport sessions gets its GOAWAY only when the last one
/// ends: draft-ietf-webtrans-http3 lets a session go on after GOAWAY, but Chromium ends
/// every session of the connection when GOAWAY arrives. Those sessions are told to wrap up
/// with the DRAIN capsule instead.
async fn send_goaway_on_drain(shared: &ConnShared, control: &mut quinn::SendStream) {
    let mut winding_down = shared.server.winding_down();
    if *winding_down.borrow_and_update() {
        // Born during a drain: it still serves ordinary HTTP and answers new sessions 503,
        // which a client reports better than a rejected stream.
        return;
    }
    tokio::select! {
        _ = shared.conn.closed() => return,
        r = winding_down.wait_for(|w| *w) => if r.is_err() { return },
    }
    let mut active = shared.active.subscribe();
    tokio::select! {
        _ = shared.conn.closed() => return,
        r = active.wait_for(|n| *n == 0) => if r.is_err() { return },
    }
    let id = {
        let mut st = shared.state();
        // A client's last stream ID can be 2^62 - 4; the next one is past what a varint holds.
        let id = st
            .highest_bidi
            .map_or(0, |h| (h + 4).min(crate::varint::VarInt::MAX.into_inner()));
        st.goaway = Some(id);
        id
    };
    let mut body = Vec::with_capacity(8);
    crate::varint::put(&mut body, id);
    let mut goaway = Vec::with_capacity(10);
    frame::put_header(&mut goaway, frame::GOAWAY, body.len());
    goaway.extend_from_slice(&body);
    trace!(id, "GOAWAY");
    let _ = control.write_all(&goaway).await;
}

/// Closes the connection once it has carried no session and no pending request for
/// `sessionless_timeout`: keep-alives keep sessions alive, not idle connections.
async fn close_when_sessionless(shared: &ConnShared) {
    let mut active = shared.active.subscribe();
    let timeout = shared.server.limits.sessionless_timeout;
    loop {
        tokio::select! {
            _ = shared.conn.closed() => return,
            r = active.wait_for(|n| *n == 0) => if r.is_err() { return },
        }
        tokio::select! {
            _ = shared.conn.closed() => return,
            _ = active.wait_for(|n| *n > 0) => continue,
            () = tokio::time::sleep(timeout) => {
                debug!(remote = %shared.conn.remote_address(), "no session; closing");
                shared.conn.close(error_code::NO_ERROR.into(), b"no session");
                return;
            }
        }
    }
}

async fn accept_bi_loop(shared: &Arc<ConnShared>) {
    while let Ok((send, recv)) = shared.conn.accept_bi().await {
        let id: u64 = recv.id().into();
        {
            let mut st = shared.state();
            st.highest_bidi = Some(id);
            st.parsing.insert(id);
        }
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
    while let Ok(datagram) = shared.conn.read_datagram().await {
        let Some((quarter, n)) = crate::varint::decode(&datagram) else {
            continue;
        };
        let Some(session_id) = quarter.checked_mul(4) else {
            continue;
        };
        // A copy, so that a queued datagram does not pin the whole receive buffer it was
        // cut from.
        let payload = Bytes::copy_from_slice(&datagram[n..]);
        shared.route(session_id, Early::Datagram(payload));
    }
}

async fn handle_uni(shared: Arc<ConnShared>, mut recv: quinn::RecvStream) {
    // No time limit here: a browser may open its QPACK streams long before it writes
    // their type, and dropping such a stream sends STOP_SENDING on a critical stream,
    // which the browser answers by closing the connection. The client's uni-stream
    // limit bounds how many can wait, and a stream that has sent nothing holds nothing.
    let typ = match read_varint(&mut recv).await {
        Ok(Some(t)) => t,
        _ => return,
    };
    match typ {
        0x00 | 0x02 | 0x03 => {
            if !shared.state().critical.insert(typ) {
                shared.conn.close(
                    error_code::STREAM_CREATION_ERROR.into(),
                    b"second control or QPACK stream",
                );
                return;
            }
            if typ == 0x00 {
                read_control_stream(&shared, recv).await;
                return;
            }
            // QPACK encoder/decoder streams: with a zero-capacity table an encoder stream
            // may carry nothing but Set Dynamic Table Capacity 0, and a decoder stream
            // nothing at all that we need; read them so the client's credit never stalls.
            loop {
                match recv.read_chunk(4096, true).await {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(quinn::ReadError::Reset(_)) => {
                        shared.conn.close(
                            error_code::CLOSED_CRITICAL_STREAM.into(),
                            b"QPACK stream closed",
                        );
                        return;
                    }
                    Err(_) => return,
                }
            }
        }
        0x54 => {
            let deadline = shared.server.limits.request_timeout;
            if let Ok(Ok(Some(session_id))) =
                tokio::time::timeout(deadline, read_varint(&mut recv)).await
            {
                shared.route(session_id, Early::Uni(recv));
            }
        }
        0x01 => {
            // Only a server may open push streams (RFC 9114 §6.2.2).
            shared.conn.close(
                error_code::STREAM_CREATION_ERROR.into(),
                b"push stream from a client",
            );
        }
        _ => {
            // Unknown stream types are not for us (RFC 9114 §6.2).
            let _ = recv.stop(error_code::STREAM_CREATION_ERROR.into());
        }
    }
}

async fn read_control_stream(shared: &ConnShared, mut recv: quinn::RecvStream) {
    let mut decoder = FrameDecoder::default();
    let mut first = true;
    loop {
        loop {
            let frame = match decoder.next(|_| Some(MAX_CONTROL_FRAME)) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    debug!("control stream: {e}");
                    shared.conn.close(
                        error_code::EXCESSIVE_LOAD.into(),
                        b"control frame too large",
                    );
                    return;
                }
            };
            if first {
                first = false;
                if frame.typ != frame::SETTINGS {
                    shared
                        .conn
                        .close(error_code::MISSING_SETTINGS.into(), b"missing SETTINGS");
                    return;
                }
                match PeerSettings::from_payload(&frame.payload) {
                    Ok(peer) => {
                        shared.peer.send_replace(Some(peer));
                    }
                    Err(e) => {
                        debug!("client SETTINGS: {e}");
                        shared
                            .conn
                            .close(error_code::SETTINGS_ERROR.into(), b"malformed SETTINGS");
                        return;
                    }
                }
                continue;
            }
            match frame.typ {
                frame::DATA | frame::HEADERS | frame::SETTINGS | frame::PUSH_PROMISE => {
                    shared.conn.close(
                        error_code::FRAME_UNEXPECTED.into(),
                        b"frame not allowed on control stream",
                    );
                    return;
                }
                t if frame::is_http2_reserved(t) => {
                    shared
                        .conn
                        .close(error_code::FRAME_UNEXPECTED.into(), b"HTTP/2 frame type");
                    return;
                }
                frame::GOAWAY => {
                    // The client will open no more requests; sessions carry on.
                    trace!("client GOAWAY");
                }
                // CANCEL_PUSH, MAX_PUSH_ID (no pushes here), GREASE, unknown: ignored.
                _ => {}
            }
        }
        match recv.read_chunk(16 * 1024, true).await {
            Ok(Some(chunk)) => decoder.push(&chunk.bytes),
            Ok(None) | Err(quinn::ReadError::Reset(_)) => {
                shared.conn.close(
                    error_code::CLOSED_CRITICAL_STREAM.into(),
                    b"control stream closed",
                );
                return;
            }
            Err(_) => return,
        }
    }
}

/// Removes a bidirectional stream from the parsing set however its handling ends.
struct Parsing<'a> {
    conn: &'a Arc<ConnShared>,
    id: u64,
    done: bool,
}

impl Drop for Parsing<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.conn.leave_pending(self.id);
        }
    }
}

async fn handle_bi(shared: Arc<ConnShared>, send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let id: u64 = recv.id().into();
    let mut parsing = Parsing {
        conn: &shared,
        id,
        done: false,
    };
    let deadline = shared.server.limits.request_timeout;
    let head = tokio::time::timeout(deadline, read_head(&mut recv)).await;
    let head = match head {
        Ok(Ok(head)) => head,
        Ok(Err(HeadError::Stream)) => return,
        Ok(Err(HeadError::Status(status))) => {
            debug!(status, "malformed request");
            shared.note_refusal();
            return respond(&shared, send, status);
        }
        Ok(Err(HeadError::Connection(code, why))) => {
            shared.conn.close(code.into(), why.as_bytes());
            return;
        }
        Err(_) => {
            let mut send = send;
            let _ = send.reset(code(error_code::REQUEST_INCOMPLETE.into()));
            let _ = recv.stop(code(error_code::REQUEST_INCOMPLETE.into()));
            return;
        }
    };
    match head {
        Head::WebTransportStream(session_id) => {
            drop(parsing);
            shared.route(session_id, Early::Bi(send, recv));
        }
        Head::Request(..) if shared.state().goaway.is_some_and(|g| id >= g) => {
            // After our GOAWAY: unprocessed, so the client can safely send it again on a
            // new connection.
            let mut send = send;
            let _ = send.reset(code(error_code::REQUEST_REJECTED.into()));
            let _ = recv.stop(code(error_code::REQUEST_REJECTED.into()));
        }
        Head::Request(fields, rest) => {
            if let Some(service) = super::exchange::service_for(&shared, &fields) {
                // Not a session: streams naming this ID are refused from now on.
                drop(parsing);
                super::exchange::serve(shared, service, send, recv, fields, rest).await;
            } else {
                handle_request(&shared, &mut parsing, send, recv, fields, rest).await;
            }
        }
    }
}

enum Head {
    /// A WebTransport bidirectional stream (0x41) of this session.
    WebTransportStream(u64),
    /// A request's decoded header fields, and bytes read after them (early capsules).
    Request(Vec<(String, String)>, Bytes),
}

enum HeadError {
    /// The stream ended or was reset; nothing to answer.
    Stream,
    /// Answer with this status.
    Status(u16),
    /// Close the connection with this HTTP/3 error.
    Connection(u32, &'static str),
}

/// Reads a request stream up to its HEADERS frame, or a WebTransport stream's header.
/// Varints are read byte by byte until the stream's kind is known, so that no byte of a
/// WebTransport stream's payload is consumed here.
async fn read_head(recv: &mut quinn::RecvStream) -> Result<Head, HeadError> {
    let typ = match read_varint(recv).await {
        Ok(Some(t)) => t,
        _ => return Err(HeadError::Stream),
    };
    if typ == 0x41 {
        return match read_varint(recv).await {
            Ok(Some(id)) => Ok(Head::WebTransportStream(id)),
            _ => Err(HeadError::Stream),
        };
    }
    let mut decoder = FrameDecoder::default();
    let mut prefix = Vec::new();
    crate::varint::put(&mut prefix, typ);
    decoder.push(&prefix);
    let forbidden = |t: u64| t == frame::DATA || (0x02..=0x0d).contains(&t);
    loop {
        loop {
            let next = decoder.next(|t| match t {
                frame::HEADERS => Some(MAX_HEADERS_LEN),
                t if forbidden(t) => Some(0),
                _ => None,
            });
            let frame = match next {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) if e.typ == frame::HEADERS => return Err(HeadError::Status(431)),
                Err(_) => {
                    return Err(HeadError::Connection(
                        error_code::FRAME_UNEXPECTED,
                        "frame not allowed before HEADERS",
                    ))
                }
            };
            match frame.typ {
                frame::HEADERS => {
                    let rest = decoder.take_buffered();
                    return match qpack::decode_field_section(
                        &frame.payload,
                        MAX_HEADERS_LEN as usize,
                    ) {
                        Ok(fields) => Ok(Head::Request(fields, rest)),
                        Err(qpack::QpackError::TooLarge) => Err(HeadError::Status(431)),
                        Err(e) if e.is_malformed_message() => Err(HeadError::Status(400)),
                        Err(_) => Err(HeadError::Connection(
                            error_code::QPACK_DECOMPRESSION_FAILED,
                            "QPACK decompression failed",
                        )),
                    };
                }
                t if forbidden(t) => {
                    return Err(HeadError::Connection(
                        error_code::FRAME_UNEXPECTED,
                        "frame not allowed before HEADERS",
                    ))
                }
                // GREASE and unknown frame types before HEADERS are skipped.
                _ => {}
            }
        }
        match recv.read_chunk(4096, true).await {
            Ok(Some(c)) => decoder.push(&c.bytes),
            _ => return Err(HeadError::Stream),
        }
    }
}

fn respond(shared: &ConnShared, send: quinn::SendStream, status: u16) {
    let mut block = Vec::new();
    super::session_request::encode_response(status, &[], &mut block);
    send_and_finish(
        &shared.runtime,
        send,
        block.into(),
        shared.server.limits.response_timeout,
    );
}

async fn handle_request(
    shared: &Arc<ConnShared>,
    parsing: &mut Parsing<'_>,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    fields: Vec<(String, String)>,
    early_capsules: Bytes,
) {
    let server = &shared.server;
    let request = match parse_connect(&fields) {
        Ok(r) => r,
        Err(rejection) => {
            debug!(%rejection, "request refused");
            shared.note_refusal();
            return respond(shared, send, rejection.status);
        }
    };
    // Extended CONNECT needs the client's SETTINGS (RFC 9220 §3; the dialect and datagram
    // support come from them); packets may arrive out of order, so wait a little.
    let mut peer = shared.peer.subscribe();
    let settings = tokio::time::timeout(server.limits.request_timeout, async {
        peer.wait_for(Option::is_some)
            .await
            .map(|p| p.clone().unwrap_or_default())
    })
    .await;
    let Ok(Ok(peer)) = settings else {
        shared.conn.close(
            error_code::MISSING_SETTINGS.into(),
            b"request before SETTINGS",
        );
        return;
    };
    let session_id: u64 = recv.id().into();
    let limit = if peer.draft13_or_later {
        1
    } else {
        server.limits.max_sessions_per_connection as usize
    };
    let mut ip_token = None;
    let admitted = server
        .admission(&request.authority, request.origin.as_deref())
        .await;
    let status = if admitted.is_some() {
        admitted
    } else {
        let mut st = shared.state();
        if st.sessions.len() + st.requested.len() >= limit {
            Some(429)
        } else if let Some(token) = server.reserve_ip_session(shared.remote_ip()) {
            ip_token = Some(token);
            st.parsing.remove(&session_id);
            st.requested.insert(session_id);
            shared.update_active(&st);
            parsing.done = true;
            None
        } else {
            Some(429)
        }
    };
    debug!(session_id, path = %request.path, ?status, "session request");
    if let Some(status) = status {
        server.refused(status, &request.path, shared.conn.remote_address());
        shared.note_refusal();
        return respond(shared, send, status);
    }
    let mut path = request.path;
    let attempt = crate::request::take_attempt(&mut path);
    let request = SessionRequest {
        head: RequestHead {
            id: session_id,
            path,
            attempt,
            authority: request.authority,
            origin: request.origin,
            headers: request.headers,
            protocols: request.subprotocols,
            remote: shared.conn.remote_address(),
            version: http::Version::HTTP_3,
            transport: Transport::WebTransport,
        },
        inner: Box::new(H3Request {
            conn: shared.clone(),
            streams: Some((send, recv)),
            early_capsules: early_capsules.to_vec(),
            draft02: request.draft02,
            ip: ip_token,
        }),
    };
    if let Err((request, status)) = server.dispatch(request) {
        request.reject_in_background(status);
    }
}
