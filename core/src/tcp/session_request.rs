//! A session request that arrived on the TCP side: the WebSocket handshake waits in its
//! HTTP handler for the application's answer.

use std::sync::{Arc, Weak};

use tokio::sync::oneshot;

use super::TcpConn;
use crate::{
    close::CloseInfo,
    error::RequestError,
    qmux::{self, Offer, QmuxShared},
    request::{Pending, Refusal, RequestHead, CLIENT_LEFT, SESSION_LIMIT},
    session::{Backend, Session, SessionShared},
    shared::IpSessionToken,
    transport::Transport,
    ws::{self, WebSocket},
};

/// What starts once the upgraded socket is there.
pub(crate) enum Start {
    Qmux {
        shared: Arc<QmuxShared>,
        session: Weak<SessionShared>,
        /// For counting a session whose client never sends its transport parameters.
        server: Weak<crate::shared::ServerShared>,
    },
    WebSocket {
        pending: ws::Pending,
    },
    /// A refusal told in-band: close at once with this code and reason.
    Refuse {
        code: u16,
        reason: String,
    },
}

impl Start {
    /// Runs the session over a WebSocket's two halves until it ends; `codec` is the
    /// permessage-deflate state when a plain WebSocket agreed to it.
    pub(crate) async fn run<K, S>(
        self,
        sink: K,
        stream: S,
        timing: ws::Timing,
        codec: Option<ws::deflate::Codec>,
    ) where
        K: futures_util::Sink<
                tokio_tungstenite::tungstenite::Message,
                Error = tokio_tungstenite::tungstenite::Error,
            > + Unpin
            + Send
            + 'static,
        S: futures_util::Stream<
                Item = Result<
                    tokio_tungstenite::tungstenite::Message,
                    tokio_tungstenite::tungstenite::Error,
                >,
            > + Unpin
            + Send,
    {
        match self {
            Start::Qmux {
                shared,
                session,
                server,
            } => {
                let remote = shared.remote_addr();
                let no_params = move |why: &str| {
                    if let Some(server) = server.upgrade() {
                        server.counters.session_failed_to_start(remote, why);
                    }
                };
                qmux::drive(shared, session, sink, stream, timing, no_params).await
            }
            Start::WebSocket { pending } => ws::drive(pending, sink, stream, timing, codec).await,
            Start::Refuse { code, reason } => {
                use futures_util::{SinkExt, StreamExt};
                use tokio_tungstenite::tungstenite::{protocol::CloseFrame, Message};
                let (mut sink, mut stream) = (sink, stream);
                let close = Message::Close(Some(CloseFrame {
                    code: code.into(),
                    reason: reason.into(),
                }));
                let _ = tokio::time::timeout(timing.write, sink.send(close)).await;
                // The client's answering Close, briefly; then the socket goes.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                    while let Some(Ok(m)) = stream.next().await {
                        if m.is_close() {
                            break;
                        }
                    }
                })
                .await;
                let _ = tokio::time::timeout(timing.write, sink.close()).await;
            }
        }
    }

    /// The upgrade never completed: the session ends as lost.
    pub(crate) fn fail(self, why: String) {
        match self {
            Start::Qmux {
                shared,
                session,
                server,
            } => {
                if let Some(server) = server.upgrade() {
                    server
                        .counters
                        .session_failed_to_start(shared.remote_addr(), &why);
                }
                if let Some(s) = session.upgrade() {
                    s.set_closed(CloseInfo::connection_lost(why));
                }
            }
            Start::WebSocket { pending } => pending.fail(why),
            Start::Refuse { .. } => {}
        }
    }
}

/// The application's answer to a handshake.
pub(crate) enum Answer {
    /// A refusal: its status and response headers.
    Reject(u16, Vec<(String, String)>),
    Accept {
        protocol_header: Option<String>,
        headers: Vec<(String, String)>,
        start: Start,
    },
}

pub(crate) struct TcpRequest {
    /// The request's slot under the per-address session limit, handed to the session;
    /// first, so it is released first, as before the request held it itself.
    pub(crate) ip: Option<IpSessionToken>,
    pub(crate) server: Arc<crate::shared::ServerShared>,
    /// The connection it came on, when it came on this server's own TCP side.
    pub(crate) conn: Option<Arc<TcpConn>>,
    pub(crate) answer: Option<oneshot::Sender<Answer>>,
    pub(crate) offer: Option<Offer>,
}

impl TcpRequest {
    fn send(&mut self, answer: Answer) -> Result<(), Answer> {
        match self.answer.take() {
            Some(tx) => tx.send(answer),
            None => Err(answer),
        }
    }

    fn note_refusal(&self) {
        if let Some(c) = &self.conn {
            c.note_refusal();
        }
    }

    pub(crate) fn answer(&mut self, status: u16, headers: &[(&str, &str)]) {
        if self.answer.is_some() {
            self.note_refusal();
            let headers = headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            let _ = self.send(Answer::Reject(status, headers));
        }
    }

    /// The client's HTTP request is gone (connection closed or stream reset).
    pub(crate) fn poll_abandoned(&mut self) -> bool {
        let gone = self.answer.as_ref().is_none_or(|tx| tx.is_closed());
        if gone && self.answer.take().is_some() {
            self.note_refusal();
        }
        gone
    }

    fn protocol_header(&self, head: &RequestHead, protocol: Option<&str>) -> Option<String> {
        match &self.offer {
            Some(offer) => offer.answer(protocol),
            None => protocol
                .map(str::to_owned)
                .filter(|p| head.protocols.iter().any(|o| o == p)),
        }
    }

    /// Accepts a QMux session. Answers at once and never fails because of the client: a
    /// client that left, or a session limit reached meanwhile, gives a session that is
    /// already closed; a client that then sends no transport parameters within
    /// `response_timeout` ends its session from the driver (counted and logged).
    pub(crate) fn accept_qmux(
        &mut self,
        head: &RequestHead,
        protocol: Option<&str>,
        headers: &[(&str, &str)],
        ip: Option<IpSessionToken>,
        protocol_header: String,
    ) -> Result<Session, RequestError> {
        let server = self.server.clone();
        let shared = QmuxShared::new(qmux::config(&server.limits), head.remote);
        let (session, _commands) = SessionShared::new(
            head.id,
            Backend::Qmux(shared.clone()),
            head.path.clone(),
            protocol.map(str::to_owned),
            &server.limits,
            server.runtime.clone(),
        );
        let Some(slot) = server.reserve_session() else {
            self.answer(503, &[]);
            let why = SESSION_LIMIT;
            server.counters.session_failed_to_start(head.remote, why);
            session.set_closed(CloseInfo::refused(why));
            return Ok(Session::new(session));
        };
        slot.register(&session);
        let mut hold = Some((slot, ip));
        session.on_close(Box::new(move || drop(hold.take())));
        let start = Start::Qmux {
            shared,
            session: Arc::downgrade(&session),
            server: Arc::downgrade(&server),
        };
        let answer = Answer::Accept {
            protocol_header: Some(protocol_header),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            start,
        };
        if self.send(answer).is_err() {
            let why = CLIENT_LEFT;
            server.counters.session_failed_to_start(head.remote, why);
            session.set_closed(CloseInfo::connection_lost(why.into()));
        }
        Ok(Session::new(session))
    }

    /// Accepts a plain WebSocket. Like [`accept_qmux`](Self::accept_qmux), never fails
    /// because of the client.
    pub(crate) fn accept_websocket(
        &mut self,
        head: &RequestHead,
        protocol: Option<&str>,
        headers: &[(&str, &str)],
        ip: Option<IpSessionToken>,
    ) -> WebSocket {
        let server = self.server.clone();
        let pending = ws::pending(
            head.path.clone(),
            protocol.map(str::to_owned),
            head.remote,
            server.limits.max_message_size,
        );
        let shared = pending.shared.clone();
        let Some(slot) = server.reserve_session() else {
            self.answer(503, &[]);
            let why = SESSION_LIMIT;
            server.counters.session_failed_to_start(head.remote, why);
            pending.fail_with(1013, why);
            return WebSocket::new(shared);
        };
        slot.register_websocket(&shared);
        let mut hold = Some((slot, ip));
        shared.on_close(Box::new(move || drop(hold.take())));
        let answer = Answer::Accept {
            protocol_header: self.protocol_header(head, protocol),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            start: Start::WebSocket { pending },
        };
        if let Err(Answer::Accept {
            start: Start::WebSocket { pending },
            ..
        }) = self.send(answer)
        {
            let why = CLIENT_LEFT;
            server.counters.session_failed_to_start(head.remote, why);
            pending.fail(why.into());
        }
        WebSocket::new(shared)
    }
}

impl Pending for TcpRequest {
    fn remember_refusal(&self, id: String, refusal: Refusal) {
        self.server.remember_refusal(id, refusal);
    }

    fn unanswered(&self) -> bool {
        self.answer.is_some()
    }

    fn answer(&mut self, status: u16, headers: &[(&str, &str)]) {
        TcpRequest::answer(self, status, headers);
    }

    fn poll_abandoned(&mut self) -> bool {
        TcpRequest::poll_abandoned(self)
    }

    fn accept(
        &mut self,
        head: &RequestHead,
        protocol: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<Session, RequestError> {
        if head.transport == Transport::WebSocket {
            return Err(RequestError::WrongTransport(Transport::WebSocket));
        }
        // The client offered only versioned application protocols and none was chosen:
        // QMux needs a token to answer with.
        let Some(protocol_header) = self.protocol_header(head, protocol) else {
            return Err(RequestError::ProtocolRequired);
        };
        let ip = self.ip.take();
        self.accept_qmux(head, protocol, headers, ip, protocol_header)
    }

    fn accept_websocket(
        &mut self,
        head: &RequestHead,
        protocol: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<WebSocket, RequestError> {
        if head.transport != Transport::WebSocket {
            return Err(RequestError::WrongTransport(head.transport));
        }
        let ip = self.ip.take();
        Ok(TcpRequest::accept_websocket(
            self, head, protocol, headers, ip,
        ))
    }
}
