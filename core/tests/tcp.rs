//! The TCP side against independent clients: tokio-tungstenite over HTTP/1.1 (RFC 6455),
//! an `h2` client's extended CONNECT (RFC 8441), and the `qmux` crate's client for QMux
//! sessions over both.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use ferrovia::{CloseInitiator, Transport, WebSocketMessage};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{
    protocol::{frame::coding::CloseCode, CloseFrame},
    Message,
};
use web_transport_trait::{RecvStream as _, SendStream as _, Session as _};

/// Echoes every plain WebSocket accepted on `path` (choosing the first offered
/// subprotocol), reporting each server-side socket.
fn echo_websockets(
    srv: &TestServer,
    path: &str,
) -> tokio::sync::mpsc::UnboundedReceiver<ferrovia::WebSocket> {
    let route = srv.server.route(path).unwrap();
    route.allow_websockets();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(req) = route.accept().await {
            assert_eq!(req.transport(), Transport::WebSocket);
            let protocol = req.subprotocols().first().cloned();
            let ws = req
                .accept_websocket_with(protocol.as_deref(), &[])
                .await
                .unwrap();
            let _ = tx.send(ws.clone());
            tokio::spawn(async move {
                while let Ok(Some(m)) = ws.recv().await {
                    if ws.send(m).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    rx
}

async fn next_data<S>(ws: &mut Ws<S>) -> Message
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let m = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("message timed out")
            .expect("stream ended")
            .expect("read failed");
        if !m.is_ping() && !m.is_pong() {
            return m;
        }
    }
}

async fn echo_and_close<S>(
    mut ws: Ws<S>,
    mut server: tokio::sync::mpsc::UnboundedReceiver<ferrovia::WebSocket>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let server_ws = server.recv().await.unwrap();
    ws.send(Message::text("hello ✓")).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("hello ✓"));
    let big = data(300 * 1024, 9);
    ws.send(Message::binary(big.clone())).await.unwrap();
    match next_data(&mut ws).await {
        Message::Binary(b) => assert_eq!(sha256(&b), sha256(&big)),
        other => panic!("{other:?}"),
    }
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::from(4000),
        reason: "client bye".into(),
    })))
    .await
    .unwrap();
    let info = tokio::time::timeout(TIMEOUT, server_ws.closed())
        .await
        .unwrap();
    assert_eq!((info.code, info.reason.as_str()), (4000, "client bye"));
    assert_eq!(info.initiator, CloseInitiator::Remote);
}

#[tokio::test]
async fn plain_websocket_over_http1_echoes_and_closes_with_codes_both_ways() {
    let srv = start();
    let server = echo_websockets(&srv, "/ws");
    let (ws, chosen) = ws_h1(&srv, "/ws?x=1", &["chat", "other"], &[])
        .await
        .unwrap();
    assert_eq!(chosen.as_deref(), Some("chat"));
    echo_and_close(ws, server).await;
    // The server closes: the client reads its code and reason.
    let mut server = echo_websockets(&srv, "/ws2");
    let (mut ws, _) = ws_h1(&srv, "/ws2", &[], &[]).await.unwrap();
    let server_ws = server.recv().await.unwrap();
    assert_eq!(server_ws.path(), "/ws2");
    server_ws.close(4001, "server bye").unwrap();
    match next_data(&mut ws).await {
        Message::Close(Some(f)) => {
            assert_eq!((u16::from(f.code), f.reason.as_str()), (4001, "server bye"))
        }
        other => panic!("{other:?}"),
    }
    ws.flush().await.unwrap(); // the answering Close frame
    let info = tokio::time::timeout(TIMEOUT, server_ws.closed())
        .await
        .unwrap();
    assert_eq!((info.code, info.initiator), (4001, CloseInitiator::Local));
    assert!(matches!(
        server_ws.send(WebSocketMessage::Text("late".into())).await,
        Err(ferrovia::WebSocketError::Closed(_))
    ));
    // 1006 only describes a lost connection; no endpoint sends it.
    assert_eq!(
        server_ws.close(1006, ""),
        Err(ferrovia::WebSocketError::InvalidCloseCode(1006))
    );
}

/// Messages whose `send` resolved before `close` reach the client before the Close frame,
/// however full the queues were when the close came.
#[tokio::test]
async fn messages_sent_before_a_close_arrive_before_it() {
    let srv = start();
    let route = srv.server.route("/burst").unwrap();
    route.allow_websockets();
    tokio::spawn(async move {
        while let Some(req) = route.accept().await {
            let ws = req.accept_websocket_with(None, &[]).await.unwrap();
            tokio::spawn(async move {
                // More than the outgoing queue and the writer's queue hold together.
                for i in 0..40u32 {
                    ws.send(WebSocketMessage::Binary(Bytes::from(data(
                        20_000, i as u64,
                    ))))
                    .await
                    .unwrap();
                }
                ws.close(4002, "sent all").unwrap();
                // Sending after the close is an error that names the close.
                match ws.send(WebSocketMessage::Text("late".into())).await {
                    Err(ferrovia::WebSocketError::Closed(c)) => assert_eq!(c.code, 4002),
                    other => panic!("{other:?}"),
                }
            });
        }
    });
    for round in 0..5 {
        let (mut ws, _) = ws_h1(&srv, "/burst", &[], &[]).await.unwrap();
        for i in 0..40u32 {
            match next_data(&mut ws).await {
                Message::Binary(b) => assert_eq!(
                    sha256(&b),
                    sha256(&data(20_000, i as u64)),
                    "round {round}, message {i}"
                ),
                other => panic!("round {round}, message {i}: {other:?}"),
            }
        }
        match next_data(&mut ws).await {
            Message::Close(Some(f)) => {
                assert_eq!((u16::from(f.code), f.reason.as_str()), (4002, "sent all"))
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn plain_websocket_over_http2_extended_connect() {
    let srv = start();
    let server = echo_websockets(&srv, "/ws");
    let (ws, chosen) = ws_h2(&srv, "/ws", &["chat"]).await.unwrap();
    assert_eq!(chosen.as_deref(), Some("chat"));
    echo_and_close(ws, server).await;
}

#[tokio::test]
async fn refusals_on_the_tcp_side_have_their_statuses() {
    let srv = start();
    let sessions_only = srv.server.route("/sessions").unwrap();
    // A route that did not ask for plain WebSockets refuses them; unknown paths get 404.
    assert_eq!(ws_h1(&srv, "/sessions", &[], &[]).await.unwrap_err(), 400);
    assert_eq!(ws_h1(&srv, "/nowhere", &[], &[]).await.unwrap_err(), 404);
    assert_eq!(ws_h2(&srv, "/nowhere", &[]).await.unwrap_err(), 404);
    // A foreign origin (403) and a foreign host (421).
    let _ws = echo_websockets(&srv, "/ws");
    assert_eq!(
        ws_h1(&srv, "/ws", &[], &[("origin", "https://evil.example")])
            .await
            .unwrap_err(),
        403
    );
    assert_eq!(
        ws_h1(&srv, "/ws", &[], &[("host", "evil.example")])
            .await
            .unwrap_err(),
        421
    );
    // A QMux request on a session route is a session; the app's rejection reaches the client.
    tokio::spawn(async move {
        while let Some(req) = sessions_only.accept().await {
            assert_eq!(req.transport(), Transport::Qmux);
            req.reject(403).await.unwrap();
        }
    });
    assert_eq!(
        ws_h1(&srv, "/sessions", &["qmux-02"], &[])
            .await
            .unwrap_err(),
        403
    );
}

#[tokio::test]
async fn unclaimed_websocket_paths_go_to_the_application_when_it_takes_them() {
    let srv = start();
    let _claimed = echo_websockets(&srv, "/claimed");
    let sessions_only = srv.server.route("/sessions").unwrap();
    let unclaimed = srv.server.unclaimed_websockets().unwrap();
    assert!(matches!(
        srv.server.unclaimed_websockets(),
        Err(ferrovia::ServerError::RouteTaken(_))
    ));
    let (paths_tx, mut paths) = tokio::sync::mpsc::unbounded_channel();
    let taker = tokio::spawn(async move {
        while let Some(req) = unclaimed.accept().await {
            let _ = paths_tx.send((req.path().to_owned(), req.http_version()));
            if req.path().starts_with("/refuse") {
                req.reject(401).await.unwrap();
                continue;
            }
            let ws = req.accept_websocket_with(None, &[]).await.unwrap();
            tokio::spawn(async move {
                while let Ok(Some(m)) = ws.recv().await {
                    if ws.send(m).await.is_err() {
                        break;
                    }
                }
            });
        }
        unclaimed
    });
    // Unclaimed paths, over HTTP/1.1 and HTTP/2, reach the application's queue.
    for (path, http2) in [("/app/one?x=1", false), ("/app/two", true)] {
        if http2 {
            let mut ws = ws_h2(&srv, path, &[]).await.unwrap().0;
            ws.send(Message::text(path)).await.unwrap();
            assert_eq!(next_data(&mut ws).await, Message::text(path));
        } else {
            let mut ws = ws_h1(&srv, path, &[], &[]).await.unwrap().0;
            ws.send(Message::text(path)).await.unwrap();
            assert_eq!(next_data(&mut ws).await, Message::text(path));
        }
        let (seen, version) = paths.recv().await.unwrap();
        assert_eq!(seen, path);
        let expected = if http2 {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        assert_eq!(version, expected);
    }
    assert_eq!(ws_h1(&srv, "/refuse", &[], &[]).await.unwrap_err(), 401);
    assert_eq!(paths.recv().await.unwrap().0, "/refuse");
    // Claimed paths keep their routes: WebSockets to the route, 400 where only sessions go.
    let (mut ws, _) = ws_h1(&srv, "/claimed", &[], &[]).await.unwrap();
    ws.send(Message::text("claimed")).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("claimed"));
    assert_eq!(ws_h1(&srv, "/sessions", &[], &[]).await.unwrap_err(), 400);
    // The origin policy still applies, and QMux requests on unclaimed paths are not
    // plain WebSockets: they get 404 as before.
    assert_eq!(
        ws_h1(&srv, "/app/x", &[], &[("origin", "https://evil.example")])
            .await
            .unwrap_err(),
        403
    );
    assert_eq!(
        ws_h1(&srv, "/app/x", &["qmux-02"], &[]).await.unwrap_err(),
        404
    );
    assert!(
        paths.try_recv().is_err(),
        "refused requests never reach the queue"
    );
    drop(sessions_only);
    // Dropping the claim gives the 404s back.
    taker.abort();
    let _ = taker.await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(ws_h1(&srv, "/app/again", &[], &[]).await.unwrap_err(), 404);
}

/// Connects the `qmux` crate's client through a WebSocket we opened ourselves.
async fn qmux_client_h1(srv: &TestServer, path: &str, protocols: &[&str]) -> qmux::Session {
    let (ws, chosen) = ws_h1(srv, path, protocols, &[])
        .await
        .expect("QMux handshake");
    let chosen = chosen.expect("a QMux subprotocol was chosen");
    qmux::ws::Upgraded::new(ws).with_alpn(&chosen).connect()
}

async fn qmux_client_h2(srv: &TestServer, path: &str, protocols: &[&str]) -> qmux::Session {
    let (ws, chosen) = ws_h2(srv, path, protocols).await.expect("QMux handshake");
    qmux::ws::Upgraded::new(ws)
        .with_alpn(&chosen.expect("a QMux subprotocol"))
        .connect()
}

/// Accepts QMux sessions on `path` with the first offered protocol and returns them.
fn qmux_sessions(
    srv: &TestServer,
    path: &str,
) -> tokio::sync::mpsc::UnboundedReceiver<ferrovia::Session> {
    let route = srv.server.route(path).unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(req) = route.accept().await {
            assert_eq!(req.transport(), Transport::Qmux);
            let protocol = req.subprotocols().first().cloned();
            let s = req.accept_with(protocol.as_deref(), &[]).await.unwrap();
            assert_eq!(s.transport(), Transport::Qmux);
            let _ = tx.send(s);
        }
    });
    rx
}

async fn qmux_every_stream_kind(client: qmux::Session, session: ferrovia::Session) {
    // Client-opened bidi, echoed by the server.
    let server = session.clone();
    tokio::spawn(async move {
        while let Ok((mut send, mut recv)) = server.accept_bi().await {
            tokio::spawn(async move {
                let data = recv.read_to_end(1 << 20).await.unwrap();
                send.write_all(&data).await.unwrap();
                send.finish().unwrap();
            });
        }
    });
    let (mut send, mut recv) = client.open_bi().await.unwrap();
    send.write_all(b"bidi from client").await.unwrap();
    send.finish().unwrap();
    assert_eq!(&recv.read_all().await.unwrap()[..], b"bidi from client");
    // Client uni to the server.
    let mut uni = client.open_uni().await.unwrap();
    uni.write_all(b"uni from client").await.unwrap();
    uni.finish().unwrap();
    let mut r = session.accept_uni().await.unwrap();
    assert_eq!(r.read_to_end(100).await.unwrap(), b"uni from client");
    // Server uni and bidi to the client.
    let mut s = session.open_uni().await.unwrap();
    s.write_all(b"uni from server").await.unwrap();
    s.finish().unwrap();
    let mut r = client.accept_uni().await.unwrap();
    assert_eq!(&r.read_all().await.unwrap()[..], b"uni from server");
    let (mut s, mut r) = session.open_bi().await.unwrap();
    s.write_all(b"bidi from server").await.unwrap();
    s.finish().unwrap();
    let (mut cs, mut cr) = client.accept_bi().await.unwrap();
    assert_eq!(&cr.read_all().await.unwrap()[..], b"bidi from server");
    cs.write_all(b"answer").await.unwrap();
    cs.finish().unwrap();
    assert_eq!(r.read_to_end(100).await.unwrap(), b"answer");
    // Datagrams both ways (reliable here).
    assert!(session.max_datagram_size() > 1000);
    client
        .send_datagram(Bytes::from_static(b"dgram up"))
        .unwrap();
    assert_eq!(&session.recv_datagram().await.unwrap()[..], b"dgram up");
    session.send_datagram(b"dgram down").await.unwrap();
    assert_eq!(&client.recv_datagram().await.unwrap()[..], b"dgram down");
}

#[tokio::test]
async fn qmux_sessions_carry_every_stream_kind_over_http1_and_http2() {
    let srv = start();
    let mut sessions = qmux_sessions(&srv, "/q");
    let client = qmux_client_h1(&srv, "/q", &["qmux-02.chat", "qmux-02"]).await;
    assert_eq!(client.protocol(), Some("chat"));
    let session = sessions.recv().await.unwrap();
    assert_eq!(session.protocol(), Some("chat"));
    qmux_every_stream_kind(client, session).await;
    let client = qmux_client_h2(&srv, "/q", &["qmux-02"]).await;
    let session = sessions.recv().await.unwrap();
    assert_eq!(session.protocol(), None);
    qmux_every_stream_kind(client, session).await;
}

#[tokio::test]
async fn qmux_close_reset_and_stop_codes_travel_both_ways() {
    let srv = start();
    let mut sessions = qmux_sessions(&srv, "/codes");
    // Server resets and stops: the client sees both codes.
    let client = qmux_client_h1(&srv, "/codes", &["qmux-02"]).await;
    let session = sessions.recv().await.unwrap();
    let (mut s, mut r) = session.open_bi().await.unwrap();
    s.write_all(b"x").await.unwrap();
    let (mut cs, mut cr) = client.accept_bi().await.unwrap();
    s.reset(77).unwrap();
    r.stop(78).unwrap();
    let err = tokio::time::timeout(TIMEOUT, cr.read_all())
        .await
        .expect("client read")
        .unwrap_err();
    assert!(format!("{err:?}").contains("77"), "{err:?}");
    eprintln!("step: client saw the reset");
    let err = loop {
        match cs.write(b"more").await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => break e,
        }
    };
    assert!(format!("{err:?}").contains("78"), "{err:?}");
    eprintln!("step: client saw the stop");
    // Client resets and stops: the server sees both codes.
    let (mut cs, mut cr) = client.open_bi().await.unwrap();
    cs.write_all(b"y").await.unwrap();
    let (mut s, mut r) = session.accept_bi().await.unwrap();
    cs.reset(55);
    cr.stop(56);
    assert_eq!(
        tokio::time::timeout(TIMEOUT, r.read_to_end(100))
            .await
            .expect("server read")
            .unwrap_err(),
        ferrovia::StreamError::Reset { code: 55 }
    );
    eprintln!("step: server saw the reset");
    let err = loop {
        match s.write(b"more").await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => break e,
        }
    };
    assert_eq!(err, ferrovia::StreamError::Stopped { code: 56 });
    // The client closes with a code and reason.
    client.close(4321, "client bye");
    let info = tokio::time::timeout(TIMEOUT, session.closed())
        .await
        .unwrap();
    assert_eq!((info.code, info.reason.as_str()), (4321, "client bye"));
    assert_eq!(info.initiator, CloseInitiator::Remote);
    // The server closes with a code and reason.
    let client = qmux_client_h2(&srv, "/codes", &["qmux-02"]).await;
    let session = sessions.recv().await.unwrap();
    session.close(4322, "server bye");
    let err = tokio::time::timeout(TIMEOUT, client.closed())
        .await
        .unwrap();
    assert!(
        format!("{err:?}").contains("4322") && format!("{err:?}").contains("server bye"),
        "{err:?}"
    );
    eventually_zero(&srv).await;
}

async fn eventually_zero(srv: &TestServer) {
    for _ in 0..250 {
        if srv.server.session_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("sessions left: {}", srv.server.session_count());
}

#[tokio::test]
async fn qmux_64_mib_through_one_stream_and_200_concurrent_streams() {
    let srv = start();
    let mut sessions = qmux_sessions(&srv, "/big");
    let client = qmux_client_h1(&srv, "/big", &["qmux-02"]).await;
    let session = sessions.recv().await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut send, mut recv)) = session.accept_bi().await {
            tokio::spawn(async move {
                while let Some(chunk) = recv.read_chunk(64 * 1024).await.unwrap() {
                    send.write_chunk(chunk).await.unwrap();
                }
                send.finish().unwrap();
            });
        }
    });
    let payload = data(64 << 20, 5);
    let expected = sha256(&payload);
    let (mut send, mut recv) = client.open_bi().await.unwrap();
    let writer = async {
        for chunk in payload.chunks(256 * 1024) {
            send.write_all(chunk).await.unwrap();
        }
        send.finish().unwrap();
    };
    let reader = async {
        let mut out = Vec::with_capacity(64 << 20);
        while let Some(c) = recv.read_chunk(1 << 20).await.unwrap() {
            out.extend_from_slice(&c);
        }
        out
    };
    let ((), echoed) = tokio::time::timeout(TIMEOUT * 4, async { tokio::join!(writer, reader) })
        .await
        .expect("64 MiB timed out");
    assert_eq!(sha256(&echoed), expected);
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let payload = data(16 * 1024 + i as usize * 37, i + 10);
            let (mut send, mut recv) = client.open_bi().await.unwrap();
            send.write_all(&payload).await.unwrap();
            send.finish().unwrap();
            let back = recv.read_all().await.unwrap();
            assert_eq!(sha256(&back), sha256(&payload), "stream {i}");
        }));
    }
    tokio::time::timeout(TIMEOUT, async {
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await
    .expect("200 streams timed out");
}

#[tokio::test]
async fn graceful_shutdown_closes_websockets_with_1001_and_qmux_sessions_with_a_close() {
    let srv = start();
    let _ws = echo_websockets(&srv, "/ws");
    let mut sessions = qmux_sessions(&srv, "/q");
    let (mut ws, _) = ws_h1(&srv, "/ws", &[], &[]).await.unwrap();
    let client = qmux_client_h1(&srv, "/q", &["qmux-02"]).await;
    let _session = sessions.recv().await.unwrap();
    let server = srv.server.clone();
    let closing = tokio::spawn(async move { server.close(Duration::from_millis(300)).await });
    match next_data(&mut ws).await {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1001),
        other => panic!("{other:?}"),
    }
    ws.flush().await.unwrap();
    let err = tokio::time::timeout(TIMEOUT, client.closed())
        .await
        .unwrap();
    assert!(format!("{err:?}").contains("shutting down"), "{err:?}");
    closing.await.unwrap();
    assert_eq!(srv.server.session_count(), 0);
}

// ---- Bad input on the TCP side ----

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends a raw HTTP/1.1 request head over TLS and returns the response head and body read
/// until the server closes or 64 KiB arrived.
async fn raw_http1(srv: &TestServer, head: &str) -> String {
    let mut tls = tls_connect(srv, &["http/1.1"]).await;
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&out);
                // A complete response with a body of known length is enough.
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head.lines().find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    });
                    if len.is_some_and(|l| body.len() >= l) || head.starts_with("HTTP/1.1 101") {
                        break;
                    }
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn upgrade_head(srv: &TestServer, path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{extra}\r\n",
        srv.addr.port()
    )
}

#[tokio::test]
async fn bad_upgrades_get_400_with_the_reason() {
    let srv = start();
    let _ws = echo_websockets(&srv, "/ws");
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let r = raw_http1(
        &srv,
        &upgrade_head(&srv, "/ws", &format!("{key}Sec-WebSocket-Version: 8\r\n")),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(
        r.contains("Sec-WebSocket-Version")
            && r.to_ascii_lowercase().contains("sec-websocket-version: 13"),
        "{r}"
    );
    let r = raw_http1(
        &srv,
        &upgrade_head(&srv, "/ws", "Sec-WebSocket-Version: 13\r\n"),
    )
    .await;
    assert!(
        r.starts_with("HTTP/1.1 400") && r.contains("missing Sec-WebSocket-Key"),
        "{r}"
    );
    let r = raw_http1(
        &srv,
        &upgrade_head(
            &srv,
            "/ws",
            "Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n",
        ),
    )
    .await;
    assert!(
        r.starts_with("HTTP/1.1 400") && r.contains("16 bytes"),
        "{r}"
    );
    // A plain request (no upgrade) is not found: no HTTP handler is configured.
    let r = raw_http1(
        &srv,
        &format!(
            "GET / HTTP/1.1\r\nHost: localhost:{}\r\n\r\n",
            srv.addr.port()
        ),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
}

/// Completes a WebSocket handshake by hand and returns the raw TLS stream after it.
async fn raw_websocket(srv: &TestServer, path: &str) -> TlsStream {
    let mut tls = tls_connect(srv, &["http/1.1"]).await;
    let head = upgrade_head(
        srv,
        path,
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        tls.read_exact(&mut b).await.unwrap();
        got.push(b[0]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    tls
}

/// A client frame: `masked` as RFC 6455 requires of clients, or not.
fn frame(opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n < 65536 => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [1u8, 2, 3, 4];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// Reads server frames until a Close and returns its code.
async fn close_code(tls: &mut TlsStream) -> u16 {
    loop {
        let mut h = [0u8; 2];
        tokio::time::timeout(TIMEOUT, tls.read_exact(&mut h))
            .await
            .expect("no close frame")
            .expect("stream ended before a close frame");
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                tls.read_exact(&mut l).await.unwrap();
                u16::from_be_bytes(l) as usize
            }
            127 => {
                let mut l = [0u8; 8];
                tls.read_exact(&mut l).await.unwrap();
                u64::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        tls.read_exact(&mut payload).await.unwrap();
        if h[0] & 0x0f == 0x8 {
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

#[tokio::test]
async fn protocol_violations_close_with_their_codes() {
    let srv = start_with(|c| c.limits.max_message_size = 1000);
    let mut sockets = echo_websockets(&srv, "/ws");
    // Unmasked client frames: 1002.
    let mut tls = raw_websocket(&srv, "/ws").await;
    tls.write_all(&frame(0x1, b"hi", false)).await.unwrap();
    assert_eq!(close_code(&mut tls).await, 1002);
    let server_side = sockets.recv().await.unwrap();
    assert_eq!(server_side.closed().await.code, 1002);
    // Text that is not UTF-8: 1007.
    let mut tls = raw_websocket(&srv, "/ws").await;
    tls.write_all(&frame(0x1, &[0xff, 0xfe], true))
        .await
        .unwrap();
    assert_eq!(close_code(&mut tls).await, 1007);
    // A message over the limit: 1009.
    let mut tls = raw_websocket(&srv, "/ws").await;
    tls.write_all(&frame(0x2, &[7u8; 2000], true))
        .await
        .unwrap();
    assert_eq!(close_code(&mut tls).await, 1009);
    // Sending over the limit is refused locally.
    let (_client, _) = ws_h1(&srv, "/ws", &[], &[]).await.unwrap();
    let _ = sockets.recv().await;
    let _ = sockets.recv().await;
    let ws = sockets.recv().await.unwrap();
    assert!(matches!(
        ws.send(WebSocketMessage::Binary(Bytes::from(vec![0u8; 2000])))
            .await,
        Err(ferrovia::WebSocketError::TooLarge {
            size: 2000,
            max: 1000
        })
    ));
}

#[tokio::test]
async fn tls_garbage_and_stalled_handshakes_or_headers_are_cut_off() {
    let srv = start_with(|c| c.limits.request_timeout = Duration::from_millis(700));
    let _ws = echo_websockets(&srv, "/ws");
    let t = std::time::Instant::now();
    // Garbage instead of a ClientHello.
    let mut tcp = tokio::net::TcpStream::connect(srv.tcp_addr())
        .await
        .unwrap();
    tcp.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3, 4])
        .await
        .unwrap();
    tcp.write_all(&[0u8; 64]).await.unwrap();
    wait_closed_by_server(
        &mut tcp,
        Duration::from_secs(5),
        "garbage instead of a ClientHello",
    )
    .await;
    let mut b = [0u8; 64];
    // A handshake that never starts.
    let mut silent = tokio::net::TcpStream::connect(srv.tcp_addr())
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut b)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "a silent client was not cut off: {r:?}"
    );
    // Request headers that never end.
    let mut tls = tls_connect(&srv, &["http/1.1"]).await;
    tls.write_all(b"GET /ws HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        let mut out = Vec::new();
        loop {
            match tls.read(&mut b).await {
                Ok(0) | Err(_) => return out,
                Ok(n) => out.extend_from_slice(&b[..n]),
            }
        }
    })
    .await
    .expect("slow headers were not cut off");
    assert!(
        r.is_empty() || r.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&r)
    );
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    // The server still serves.
    let (mut ws, _) = ws_h1(&srv, "/ws", &[], &[]).await.unwrap();
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("still here"));
    for _ in 0..100 {
        if srv.server.connection_count() == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("connections left: {}", srv.server.connection_count());
}

#[tokio::test]
async fn an_http2_client_resetting_streams_in_a_loop_is_bounded_and_harms_no_one() {
    let srv = start();
    let _ws = echo_websockets(&srv, "/ws");
    let tls = tls_connect(&srv, &["h2"]).await;
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    let conn_task = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let mut sent = 0;
    // CVE-2023-44487: open a request and reset it at once, over and over.
    for _ in 0..5000 {
        let request = http::Request::builder()
            .method("GET")
            .uri(format!("https://localhost:{}/ws", srv.addr.port()))
            .body(())
            .unwrap();
        let Ok(mut ready) = client.clone().ready().await else {
            break;
        };
        let Ok((_, mut stream)) = ready.send_request(request, false) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
        client = ready;
    }
    let outcome = tokio::time::timeout(Duration::from_secs(10), conn_task).await;
    println!("rapid reset: {sent} requests opened and reset; connection: {outcome:?}");
    assert!(
        outcome.is_ok(),
        "the server kept the abusive connection open"
    );
    // Other clients are served throughout.
    let (mut ws, _) = ws_h2(&srv, "/ws", &[]).await.unwrap();
    ws.send(Message::text("fine")).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("fine"));
}

#[tokio::test]
async fn the_tcp_side_follows_certificate_rotation_and_can_be_moved_or_turned_off() {
    let srv = start();
    let _ws = echo_websockets(&srv, "/ws");
    let tls = tls_connect(&srv, &["http/1.1"]).await;
    let first = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    assert_eq!(sha256(&first), srv.cert.sha256().to_vec());
    let next = ferrovia::Certificate::self_signed(&["localhost"]).unwrap();
    srv.server.set_certificate(next.clone());
    // Verified by the new hash this time.
    let moved = TestServer {
        server: srv.server.clone(),
        addr: srv.addr,
        cert: next.clone(),
    };
    let tls = tls_connect(&moved, &["http/1.1"]).await;
    assert_eq!(
        sha256(tls.get_ref().1.peer_certificates().unwrap()[0].as_ref()),
        next.sha256().to_vec()
    );
    // Same port number as UDP by default.
    assert_eq!(srv.tcp_addr().port(), srv.addr.port());
    // Off: no TCP side at all.
    let off = start_with(|c| c.tcp = ferrovia::TcpListen::Off);
    assert_eq!(off.server.tcp_local_addr(), None);
}

#[tokio::test]
async fn plain_tcp_behind_a_tls_terminating_proxy() {
    let srv = start_with(|c| {
        c.tcp = ferrovia::TcpListen::PlainBehindTlsProxy("127.0.0.1:0".parse().unwrap())
    });
    let mut sockets = echo_websockets(&srv, "/ws");
    let addr = srv.tcp_addr();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let request = format!("ws://localhost:{}/ws", srv.addr.port())
        .into_client_request()
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    ws.send(Message::text("through the proxy")).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("through the proxy"));
    assert!(sockets.recv().await.is_some());
}

#[tokio::test]
async fn behind_a_proxy_the_forwarded_client_address_counts_not_the_proxys() {
    let srv = start_with(|c| {
        c.tcp = ferrovia::TcpListen::PlainBehindTlsProxy("127.0.0.1:0".parse().unwrap());
        c.limits.max_connections_per_ip = 2;
        c.limits.max_sessions_per_ip = 2;
    });
    let route = srv.server.route("/ws").unwrap();
    route.allow_websockets();
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(req) = route.accept().await {
            let _ = tx.send(req.remote_addr());
            let ws = req.accept_websocket_with(None, &[]).await.unwrap();
            tokio::spawn(async move { while let Ok(Some(_)) = ws.recv().await {} });
        }
    });
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let open = |client: &'static str| {
        let addr = srv.tcp_addr();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut request = "ws://localhost/ws".into_client_request().unwrap();
            // What nginx sends with `proxy_add_x_forwarded_for`: the client's own claim
            // first, the address nginx saw last.
            let value = format!("10.9.9.9, {client}");
            request
                .headers_mut()
                .insert("x-forwarded-for", value.parse().unwrap());
            tokio_tungstenite::client_async(request, tcp).await
        }
    };
    // Five clients through one proxy address: more connections than the per-address limit,
    // all admitted, each session under its client's address.
    let mut sockets = Vec::new();
    for client in [
        "192.0.2.1",
        "192.0.2.2",
        "192.0.2.3",
        "192.0.2.4",
        "192.0.2.5",
    ] {
        let (ws, _) = open(client)
            .await
            .expect("a proxied connection is admitted");
        sockets.push(ws);
        let remote = seen.recv().await.unwrap();
        assert_eq!(remote, format!("{client}:0").parse().unwrap());
    }
    assert_eq!(srv.server.connection_count(), 5);
    // One client's sessions are still capped by its own address.
    let (second, _) = open("192.0.2.1").await.unwrap();
    sockets.push(second);
    assert_eq!(seen.recv().await.unwrap().ip().to_string(), "192.0.2.1");
    match open("192.0.2.1").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        other => panic!("a third session from 192.0.2.1 must get 429, got {other:?}"),
    }
    drop(sockets);
    for _ in 0..200 {
        if srv.server.connection_count() == 0 && srv.server.session_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        (srv.server.connection_count(), srv.server.session_count()),
        (0, 0)
    );
}

/// Forwarding headers from a peer that is not a trusted proxy are the client's own claims:
/// ignored, and the per-address limits apply to the peer. From a trusted proxy, a chain of
/// trusted hops is walked back to the client, and `X-Forwarded-Proto: https` makes the
/// request URL https.
#[tokio::test]
async fn forwarding_headers_count_only_from_trusted_proxies() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let service = || {
        ferrovia::HttpService::new(|request: http::Request<ferrovia::Body>| async move {
            let remote = request.extensions().get::<std::net::SocketAddr>().copied();
            let body = format!(
                "{} {}",
                request.uri(),
                remote.map_or("-".into(), |r| r.to_string())
            );
            http::Response::new(ferrovia::Body::from(body))
        })
    };
    async fn get(addr: std::net::SocketAddr, extra: &str) -> String {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head =
            format!("GET /who HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n{extra}\r\n");
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(TIMEOUT, tcp.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
    }
    let forged = "x-forwarded-for: 192.0.2.1\r\nx-forwarded-proto: https\r\n";

    // Loopback is not trusted here: the peer is a client.
    let srv = start_with(|c| {
        c.tcp = ferrovia::TcpListen::PlainBehindTlsProxy("127.0.0.1:0".parse().unwrap());
        c.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
        c.limits.max_connections_per_ip = 2;
        c.http = Some(service());
    });
    let addr = srv.tcp_addr();
    let body = get(addr, forged).await;
    assert!(
        body.starts_with("http://localhost/who 127.0.0.1:"),
        "{body}"
    );
    // The per-address connection limit applies to the peer: a third connection is refused.
    let _a = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _b = tokio::net::TcpStream::connect(addr).await.unwrap();
    for _ in 0..100 {
        if srv.server.connection_count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(TIMEOUT, third.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(
        n, 0,
        "a third connection from one untrusted peer is closed unanswered"
    );
    assert_eq!(srv.server.connection_count(), 2);

    // Loopback and 10/8 trusted: the chain is walked past the second proxy, the client's
    // own claim before it is ignored, and the forwarded scheme counts.
    let srv = start_with(|c| {
        c.tcp = ferrovia::TcpListen::PlainBehindTlsProxy("127.0.0.1:0".parse().unwrap());
        c.trusted_proxies.push("10.0.0.0/8".parse().unwrap());
        c.http = Some(service());
    });
    let chain = "x-forwarded-for: 6.6.6.6, 192.0.2.9, 10.1.2.3\r\nx-forwarded-proto: https\r\n";
    assert_eq!(
        get(srv.tcp_addr(), chain).await,
        "https://localhost/who 192.0.2.9:0"
    );
    assert_eq!(
        get(srv.tcp_addr(), "").await.split(' ').next(),
        Some("http://localhost/who")
    );
}

#[tokio::test]
async fn websocket_floods_are_capped_per_address_and_counters_return_to_zero() {
    let srv = start_with(|c| c.limits.max_connections_per_ip = 20);
    let mut sockets = echo_websockets(&srv, "/ws");
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        match tokio::time::timeout(Duration::from_secs(5), async {
            let tcp = tokio::net::TcpStream::connect(srv.tcp_addr()).await?;
            let mut b = [0u8; 1];
            // A refused connection is closed at once; an admitted one waits for TLS.
            match tokio::time::timeout(Duration::from_millis(200), tcp.peek(&mut b)).await {
                Ok(Ok(0)) | Ok(Err(_)) => Ok::<_, std::io::Error>(None),
                _ => Ok(Some(tcp)),
            }
        })
        .await
        {
            Ok(Ok(Some(tcp))) => open.push(tcp),
            _ => refused += 1,
        }
    }
    assert_eq!((open.len(), refused), (20, 20));
    assert_eq!(srv.server.connection_count(), 20);
    drop(open);
    for _ in 0..200 {
        if srv.server.connection_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(srv.server.connection_count(), 0);
    // Sessions: twenty WebSockets held, then dropped.
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(ws_h1(&srv, "/ws", &[], &[]).await.unwrap().0);
        sockets.recv().await.unwrap();
    }
    assert_eq!(srv.server.session_count(), 20);
    drop(clients);
    eventually_zero(&srv).await;
}

// ---- Another HTTP server carries the sessions ----

/// A bare HTTP/1.1 server standing in for the application's own (Express, hyper, ...): it
/// reads a request head and hands the handshake to Ferrovia.
async fn foreign_server(server: ferrovia::Server) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, remote)) = listener.accept().await {
            let server = server.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if tcp.read_exact(&mut b).await.is_err() {
                        return;
                    }
                    head.push(b[0]);
                }
                let text = String::from_utf8(head).unwrap();
                let mut lines = text.split("\r\n");
                let mut first = lines.next().unwrap().split(' ');
                let (method, path) = (
                    first.next().unwrap().to_owned(),
                    first.next().unwrap().to_owned(),
                );
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .collect();
                let authority = headers
                    .iter()
                    .find(|(k, _)| k == "host")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                let outcome = server
                    .websocket_handshake(ferrovia::Handshake {
                        method,
                        http2: false,
                        protocol: None,
                        path,
                        authority,
                        headers,
                        remote_addr: remote,
                        secure: false,
                    })
                    .await;
                let (status, headers, socket) = match outcome {
                    ferrovia::HandshakeOutcome::Respond {
                        status, headers, ..
                    } => (status, headers, None),
                    ferrovia::HandshakeOutcome::Upgrade {
                        status,
                        headers,
                        socket,
                    } => (status, headers, Some(socket)),
                };
                let mut response = format!("HTTP/1.1 {status} X\r\n");
                for (k, v) in headers {
                    response.push_str(&format!("{k}: {v}\r\n"));
                }
                if socket.is_none() {
                    response.push_str("content-length: 0\r\n");
                }
                response.push_str("\r\n");
                tcp.write_all(response.as_bytes()).await.unwrap();
                if let Some(socket) = socket {
                    socket.run(tcp).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn another_http_server_carries_websockets_and_qmux_sessions() {
    let srv = start_with(|c| c.tcp = ferrovia::TcpListen::Off);
    let addr = foreign_server(srv.server.clone()).await;
    let mut sockets = echo_websockets(&srv, "/ws");
    let mut sessions = qmux_sessions(&srv, "/q");
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    // A plain WebSocket through the foreign server.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("ws://localhost:{}/ws", srv.addr.port())
        .into_client_request()
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    ws.send(Message::text("via another server")).await.unwrap();
    assert_eq!(
        next_data(&mut ws).await,
        Message::text("via another server")
    );
    assert_eq!(sockets.recv().await.unwrap().path(), "/ws");
    // A QMux session through it, with the qmux crate's client.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("ws://localhost:{}/q", srv.addr.port())
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "qmux-02".parse().unwrap());
    let (ws, response) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    let chosen = response
        .headers()
        .get("sec-websocket-protocol")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let client = qmux::ws::Upgraded::new(ws).with_alpn(&chosen).connect();
    let session = sessions.recv().await.unwrap();
    qmux_every_stream_kind(client, session).await;
    // Refusals come back as statuses for the foreign server to send.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("ws://localhost:{}/nowhere", srv.addr.port())
        .into_client_request()
        .unwrap();
    match tokio_tungstenite::client_async(request, tcp).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 404),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn a_host_that_frames_messages_itself_carries_a_websocket() {
    let srv = start_with(|c| c.tcp = ferrovia::TcpListen::Off);
    let mut sockets = echo_websockets(&srv, "/ws");
    let outcome = srv
        .server
        .websocket_handshake(ferrovia::Handshake {
            method: "GET".into(),
            http2: false,
            protocol: None,
            path: "/ws".into(),
            authority: "localhost".into(),
            headers: vec![
                ("upgrade".into(), "websocket".into()),
                ("connection".into(), "Upgrade".into()),
                (
                    "sec-websocket-key".into(),
                    "dGhlIHNhbXBsZSBub25jZQ==".into(),
                ),
                ("sec-websocket-version".into(), "13".into()),
            ],
            remote_addr: "127.0.0.1:5000".parse().unwrap(),
            secure: true,
        })
        .await;
    let ferrovia::HandshakeOutcome::Upgrade { status, socket, .. } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(status, 101);
    let (to_session, mut from_session) = socket.run_messages();
    to_session
        .send(ferrovia::HostMessage::Text("hi".into()))
        .await
        .unwrap();
    assert_eq!(
        from_session.recv().await,
        Some(ferrovia::HostMessage::Text("hi".into()))
    );
    let server_ws = sockets.recv().await.unwrap();
    to_session
        .send(ferrovia::HostMessage::Close(4002, "host bye".into()))
        .await
        .unwrap();
    let info = tokio::time::timeout(TIMEOUT, server_ws.closed())
        .await
        .unwrap();
    assert_eq!((info.code, info.reason.as_str()), (4002, "host bye"));
}

#[tokio::test]
async fn the_server_counts_what_it_admits_refuses_and_answers_itself() {
    let srv = start_with(|c| {
        c.http = Some(ferrovia::HttpService::new(|_req| async {
            http::Response::new(ferrovia::Body::from("ok"))
        }))
    });
    let before = srv.server.stats();
    assert_eq!(before.sessions_accepted, 0);
    assert!(before.requests_refused.is_empty());
    // A WebTransport session the application accepts.
    let route = srv.server.route("/wt").unwrap();
    let accepted = tokio::spawn(async move {
        let session = route.accept().await.unwrap().accept().await.unwrap();
        (route, session)
    });
    let client = srv.connect("/wt").await;
    let (_route, session) = accepted.await.unwrap();
    // Refusals the server makes itself, over both transports.
    assert_eq!(ws_h1(&srv, "/nowhere", &[], &[]).await.unwrap_err(), 404);
    assert_eq!(ws_h2(&srv, "/nowhere", &[]).await.unwrap_err(), 404);
    let _ws = echo_websockets(&srv, "/ws");
    assert_eq!(
        ws_h1(&srv, "/ws", &[], &[("origin", "https://evil.example")])
            .await
            .unwrap_err(),
        403
    );
    assert!(srv
        .connect_request(srv.url("/nothing-here").into())
        .await
        .is_err());
    // An ordinary request, and a TLS handshake that fails.
    let conn = raw_connection(&srv).await;
    let authority = format!("localhost:{}", srv.addr.port());
    let (_send, _recv, status) = raw_request(
        &conn,
        &[
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", &authority),
            (":path", "/"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let mut tcp = tokio::net::TcpStream::connect(srv.tcp_addr())
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"this is not TLS\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(
        TIMEOUT,
        tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut sink),
    )
    .await;

    let stats = srv.server.stats();
    assert_eq!(stats.sessions_accepted, 1);
    assert_eq!(stats.sessions, 1);
    assert_eq!(stats.http_requests, 1);
    assert_eq!(stats.requests_refused.get(&404), Some(&3), "{stats:?}");
    assert_eq!(stats.requests_refused.get(&403), Some(&1), "{stats:?}");
    assert!(stats.handshakes_failed >= 1, "{stats:?}");
    assert!(stats.connections_accepted >= 6, "{stats:?}");
    let text = stats.to_prometheus();
    assert!(
        text.contains("ferrovia_requests_refused_total{status=\"404\"} 3\n"),
        "{text}"
    );
    assert!(text.contains("ferrovia_sessions 1\n"), "{text}");
    drop(client);
    drop(session);
}

#[tokio::test]
async fn qmux_streams_are_tokio_async_read_and_write() {
    let srv = start();
    let mut sessions = qmux_sessions(&srv, "/copy");
    let client = qmux_client_h1(&srv, "/copy", &["qmux-02"]).await;
    let session = sessions.recv().await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut send, mut recv)) = session.accept_bi().await {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                tokio::io::copy(&mut recv, &mut send).await.unwrap();
                send.shutdown().await.unwrap();
            });
        }
    });
    let payload = data(5 << 20, 11);
    let (mut send, mut recv) = client.open_bi().await.unwrap();
    let writer = async {
        for chunk in payload.chunks(100_000) {
            send.write_all(chunk).await.unwrap();
        }
        send.finish().unwrap();
    };
    let reader = async {
        let mut out = Vec::new();
        while let Some(c) = recv.read_chunk(1 << 20).await.unwrap() {
            out.extend_from_slice(&c);
        }
        out
    };
    let ((), echoed) = tokio::time::timeout(TIMEOUT * 2, async { tokio::join!(writer, reader) })
        .await
        .expect("echo timed out");
    assert_eq!(sha256(&echoed), sha256(&payload));
}

#[tokio::test]
async fn a_rejection_carries_the_applications_response_headers() {
    let srv = start();
    let route = srv.server.route("/auth").unwrap();
    route.allow_websockets();
    tokio::spawn(async move {
        while let Some(request) = route.accept().await {
            // The caller's mistakes hand the request back unanswered, still usable: a
            // header name that is not lowercase, a status that is not a refusal, and (for
            // a plain WebSocket request) a session accept or an unoffered subprotocol.
            let bad = [("WWW-Authenticate", "Bearer")];
            let (request, e) = request.try_reject(401, &bad).unwrap_err();
            assert!(matches!(e, ferrovia::RequestError::InvalidHeader(_)), "{e}");
            let (request, e) = request.try_reject(200, &[]).unwrap_err();
            assert!(
                matches!(e, ferrovia::RequestError::InvalidStatus(200)),
                "{e}"
            );
            let request = if request.transport() == ferrovia::Transport::WebSocket {
                let (request, e) = request.try_accept(None, &[]).unwrap_err();
                assert!(
                    matches!(e, ferrovia::RequestError::WrongTransport(_)),
                    "{e}"
                );
                let (request, e) = request.try_accept_websocket(Some("chat"), &[]).unwrap_err();
                assert!(
                    matches!(e, ferrovia::RequestError::ProtocolNotOffered(_)),
                    "{e}"
                );
                request
            } else {
                let (request, e) = request.try_accept_websocket(None, &[]).unwrap_err();
                assert!(
                    matches!(e, ferrovia::RequestError::WrongTransport(_)),
                    "{e}"
                );
                request
            };
            request
                .try_reject(401, &[("www-authenticate", "Bearer realm=\"chat\"")])
                .unwrap();
        }
    });
    let key = "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let answer = raw_http1(&srv, &upgrade_head(&srv, "/auth", key)).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        answer
            .to_lowercase()
            .contains("www-authenticate: bearer realm=\"chat\""),
        "{answer}"
    );
    // Over HTTP/3 the status reaches the independent client.
    let refused = srv
        .connect_request(srv.url("/auth").into())
        .await
        .unwrap_err();
    assert_eq!(rejected_status(&refused), Some(401));
}

/// The browser connector tags both attempts of one `connect()` with `ferrovia-attempt`: the
/// application never sees the tag, a refusal of the native attempt is replayed to the QMux
/// attempt without asking the application again, and a tagged QMux attempt hears the
/// refusal in-band (WebSocket close 4000 + status, the headers as the reason), since a
/// browser shows a page nothing of a refused WebSocket handshake.
#[tokio::test]
async fn a_refusal_is_final_for_the_connectors_attempts() {
    let srv = start();
    let route = srv.server.route("/auth").unwrap();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(request) = route.accept().await {
            let _ = seen_tx.send((request.path().to_owned(), request.transport()));
            let _ = request
                .reject_with(401, &[("www-authenticate", "Bearer realm=\"chat\"")])
                .await;
        }
    });
    // The native attempt: refused by the application, which sees the path without the tag.
    let url = srv.url("/auth?token=bad&ferrovia-attempt=Abc-123_x");
    let err = srv
        .connect_request(web_transport_quinn::proto::ConnectRequest::new(url))
        .await
        .expect_err("refused");
    assert_eq!(rejected_status(&err), Some(401));
    let (path, transport) = seen.recv().await.unwrap();
    assert_eq!(
        (path.as_str(), transport),
        ("/auth?token=bad", Transport::WebTransport)
    );
    // The QMux attempt of the same connect(): the same refusal, in-band, and the
    // application is not asked.
    let in_band = |mut ws: Ws<TlsStream>| async move {
        match next_data(&mut ws).await {
            Message::Close(Some(f)) => (u16::from(f.code), f.reason.as_str().to_owned()),
            other => panic!("{other:?}"),
        }
    };
    let (ws, chosen) = ws_h1(
        &srv,
        "/auth?token=bad&ferrovia-attempt=Abc-123_x",
        &["qmux-02"],
        &[],
    )
    .await
    .expect("the upgrade succeeds");
    assert_eq!(chosen.as_deref(), Some("qmux-02"));
    assert_eq!(
        in_band(ws).await,
        (
            4401,
            r#"[["www-authenticate","Bearer realm=\"chat\""]]"#.to_owned()
        )
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), seen.recv())
            .await
            .is_err(),
        "the application was asked twice"
    );
    // A tagged QMux attempt on its own (QMux first, as on Safari): the application answers,
    // the page hears it in-band.
    let (ws, _) = ws_h1(&srv, "/auth?ferrovia-attempt=second", &["qmux-02"], &[])
        .await
        .unwrap();
    assert_eq!(in_band(ws).await.0, 4401);
    assert_eq!(
        seen.recv().await.unwrap(),
        ("/auth".to_owned(), Transport::Qmux)
    );
    // Untagged clients get the HTTP status, as before.
    assert_eq!(
        ws_h1(&srv, "/auth", &["qmux-02"], &[]).await.err(),
        Some(401)
    );
    assert_eq!(seen.recv().await.unwrap().0, "/auth");
    // A server-side refusal before the application (a foreign origin) is in-band too.
    let (ws, _) = ws_h1(
        &srv,
        "/auth?ferrovia-attempt=third",
        &["qmux-02"],
        &[("origin", "https://evil.example")],
    )
    .await
    .unwrap();
    assert_eq!(in_band(ws).await.0, 4403);
}

/// Over QMux the connection is the session: when the server closes it, CONNECTION_CLOSE is
/// the first the client hears, not a STOP_SENDING or RESET_STREAM for a stream the
/// application never took (which a page reports as that stream's failure instead). Read on
/// the wire, with the sans-IO QMux machine as the client. Multi-threaded, as in the
/// bindings: the connection's driver runs while `close` is still under way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qmux_server_close_comes_before_any_stream_frame() {
    use ferrovia::wire::qmux::{Config, Connection, Dir, Event, Side};
    let srv = start();
    let mut sessions = qmux_sessions(&srv, "/unaccepted");
    for round in 0..20 {
        let (mut ws, _) = ws_h1(&srv, "/unaccepted", &["qmux-02"], &[]).await.unwrap();
        let mut conn = Connection::new(Side::Client, Config::default());
        let mut events = Vec::new();
        // Parameters both ways, then one bidi stream and one uni stream with data on them.
        while let Some(record) = conn.poll_transmit() {
            ws.send(Message::binary(record)).await.unwrap();
        }
        while !events.contains(&Event::Connected) {
            let Message::Binary(record) = next_data(&mut ws).await else {
                continue;
            };
            conn.handle_record(&record).unwrap();
            while let Some(e) = conn.poll_event() {
                events.push(e);
            }
        }
        for dir in [Dir::Bi, Dir::Uni].repeat(20) {
            let id = conn.open(dir).unwrap();
            conn.write(id, b"hello").unwrap();
        }
        while let Some(record) = conn.poll_transmit() {
            ws.send(Message::binary(record)).await.unwrap();
        }
        let session = sessions.recv().await.unwrap();
        // Let the streams reach the queue of streams the application has not taken.
        tokio::time::sleep(Duration::from_millis(50)).await;
        session.close(4322, "server bye");
        let mut heard = Vec::new();
        while !conn.is_closed() {
            let Message::Binary(record) = tokio::time::timeout(TIMEOUT, next_data(&mut ws))
                .await
                .expect("the close arrives")
            else {
                continue;
            };
            conn.handle_record(&record).unwrap();
            while let Some(e) = conn.poll_event() {
                heard.push(e);
            }
        }
        assert!(
            matches!(
                heard.as_slice(),
                [Event::Closed { code, application: true, remote: true, .. }] if code.into_inner() == 4322
            ),
            "round {round}: the client heard {heard:?}"
        );
    }
    eventually_zero(&srv).await;
}
