//! A session request that arrived on the TCP side: the WebSocket handshake waits in its
//! HTTP handler for the application's answer.

use std::sync::{Arc, Weak};

use tokio::sync::oneshot;

use super::TcpConn;
use crate::{
    error::RequestError,
    qmux::{self, Offer, QmuxShared},
    request::RequestHead,
    server::IpSessionToken,
    session::{Backend, CloseInfo, Session, SessionShared},
    ws::{self, WebSocket},
};

/// What starts once the upgraded socket is there.
pub(crate) enum Start {
    Qmux {
        shared: Arc<QmuxShared>,
        session: Weak<SessionShared>,
    },
    WebSocket {
        pending: ws::Pending,
    },
}

impl Start {
    /// Runs the session over a WebSocket's two halves until it ends.
    pub(crate) async fn run<K, S>(self, sink: K, stream: S, timing: qmux::Timing)
    where
        K: futures_util::Sink<
                tokio_tungstenite::tungstenite::Message,
                Error = tokio_tungstenite::tungstenite::Error,
            > + Unpin
            + Send,
        S: futures_util::Stream<
                Item = Result<
                    tokio_tungstenite::tungstenite::Message,
                    tokio_tungstenite::tungstenite::Error,
                >,
            > + Unpin
            + Send,
    {
        match self {
            Start::Qmux { shared, session } => {
                qmux::drive(shared, session, sink, stream, timing).await
            }
            Start::WebSocket { pending } => {
                ws::drive(pending, sink, stream, timing.keep_alive, timing.idle).await
            }
        }
    }

    /// The upgrade never completed: the session ends as lost.
    pub(crate) fn fail(self, why: String) {
        match self {
            Start::Qmux { session, .. } => {
                if let Some(s) = session.upgrade() {
                    s.set_closed(CloseInfo::connection_lost(why));
                }
            }
            Start::WebSocket { pending } => pending.fail(why),
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
    pub(crate) server: Arc<crate::server::ServerShared>,
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

    pub(crate) async fn accept_qmux(
        &mut self,
        head: &RequestHead,
        protocol: Option<&str>,
        headers: &[(&str, &str)],
        ip: Option<IpSessionToken>,
    ) -> Result<Session, RequestError> {
        let server = self.server.clone();
        let protocol_header = self.protocol_header(head, protocol);
        if protocol_header.is_none() {
            // The client offered only versioned application protocols, and none was
            // chosen: QMux needs a token to answer with.
            return Err(RequestError::ProtocolRequired);
        }
        let Some(slot) = server.reserve_session() else {
            self.answer(503, &[]);
            return Err(RequestError::TooManySessions);
        };
        let shared = QmuxShared::new(qmux::config(&server.limits), head.remote);
        let (session, _commands) = SessionShared::new(
            head.id,
            Backend::Qmux(shared.clone()),
            head.path.clone(),
            protocol.map(str::to_owned),
            &server.limits,
            server.runtime.clone(),
        );
        slot.register(&session);
        let mut hold = Some((slot, ip));
        session.on_close(Box::new(move || drop(hold.take())));
        let qmux_shared = shared.clone();
        let start = Start::Qmux {
            shared,
            session: Arc::downgrade(&session),
        };
        let answer = Answer::Accept {
            protocol_header,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            start,
        };
        if self.send(answer).is_err() {
            session.set_closed(CloseInfo::connection_lost("the client went away".into()));
            return Err(RequestError::ConnectionLost("the client went away".into()));
        }
        let session = Session::new(session);
        // Like an HTTP/3 session, a QMux session is handed over once the client's limits
        // are known (its transport parameters are the first thing it sends), so that
        // streams and datagrams work at once.
        if !qmux_shared.connected(server.limits.response_timeout).await {
            let why = "the client sent no QMux transport parameters in time".to_owned();
            session.close(0, &why);
            return Err(RequestError::ConnectionLost(why));
        }
        Ok(session)
    }

    pub(crate) fn accept_websocket(
        &mut self,
        head: &RequestHead,
        protocol: Option<&str>,
        headers: &[(&str, &str)],
        ip: Option<IpSessionToken>,
    ) -> Result<WebSocket, RequestError> {
        let server = self.server.clone();
        let Some(slot) = server.reserve_session() else {
            self.answer(503, &[]);
            return Err(RequestError::TooManySessions);
        };
        let pending = ws::pending(
            head.path.clone(),
            protocol.map(str::to_owned),
            head.remote,
            server.limits.max_message_size,
        );
        let shared = pending.shared.clone();
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
            pending.fail("the client went away".into());
            return Err(RequestError::ConnectionLost("the client went away".into()));
        }
        Ok(WebSocket::new(shared))
    }
}
