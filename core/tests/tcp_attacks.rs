//! Hostile clients on the TCP side and on the accept path: clients that leave before the
//! answer, stay silent, stop reading, ignore a close, or send messages at the size limit.
//! Each test states the bound the server holds and checks that a bystander is served.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use ferrovia::{CloseInitiator, Transport, WebSocketMessage};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{protocol::WebSocketConfig, Message};
use web_transport_trait::Session as _;

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}");
}

fn upgrade_head(srv: &TestServer, path: &str, protocol: Option<&str>) -> String {
    let protocol = protocol.map_or(String::new(), |p| {
        format!("Sec-WebSocket-Protocol: {p}\r\n")
    });
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{protocol}\r\n",
        srv.addr.port()
    )
}

/// A handshake whose client is gone by the time the application answers: `accept` gives a
/// session that is already closed, for QMux, plain WebSockets and WebTransport alike, and
/// the loop that awaited it goes on serving.
/// A WebSocket over HTTP/1.1 whose client sends the upgrade and never reads, and the
/// server's side of it. Keep the TLS stream alive for as long as the client should be.
async fn unread_websocket(
    srv: &TestServer,
    route: &ferrovia::Route,
) -> (TlsStream, ferrovia::WebSocket) {
    let mut tls = tls_connect(srv, &["http/1.1"]).await;
    tls.write_all(upgrade_head(srv, "/ws", None).as_bytes())
        .await
        .unwrap();
    let ws = route
        .accept()
        .await
        .unwrap()
        .accept_websocket()
        .await
        .unwrap();
    (tls, ws)
}

#[tokio::test]
async fn accept_never_fails_when_the_client_left_before_the_answer() {
    let srv = start();
    let route = srv.server.route("/r").unwrap();
    route.allow_websockets();
    for protocol in [Some("qmux-02"), None] {
        let mut tls = tls_connect(&srv, &["http/1.1"]).await;
        tls.write_all(upgrade_head(&srv, "/r", protocol).as_bytes())
            .await
            .unwrap();
        let request = tokio::time::timeout(TIMEOUT, route.accept())
            .await
            .unwrap()
            .unwrap();
        drop(tls);
        // Let the server see the connection end before answering.
        tokio::time::sleep(Duration::from_millis(300)).await;
        match request.transport() {
            Transport::Qmux => {
                let session = request.accept().await;
                let session = session.expect("accept must not fail because the client left");
                let info = tokio::time::timeout(TIMEOUT, session.closed())
                    .await
                    .unwrap();
                assert_eq!(info.initiator, CloseInitiator::Connection, "{info}");
            }
            Transport::WebSocket => {
                let ws = request
                    .accept_websocket()
                    .await
                    .expect("accept_websocket must not fail because the client left");
                let info = tokio::time::timeout(TIMEOUT, ws.closed()).await.unwrap();
                assert_eq!(info.code, 1006);
            }
            other => panic!("{other:?}"),
        }
    }
    // WebTransport: a CONNECT whose connection closes before the answer.
    let conn = raw_connection(&srv).await;
    let _control = raw_settings(&conn).await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    let authority = format!("localhost:{}", srv.addr.port());
    send.write_all(&headers_frame(&[
        (":method", "CONNECT"),
        (":protocol", "webtransport"),
        (":scheme", "https"),
        (":authority", &authority),
        (":path", "/r"),
    ]))
    .await
    .unwrap();
    let request = tokio::time::timeout(TIMEOUT, route.accept())
        .await
        .unwrap()
        .unwrap();
    conn.close(0u32.into(), b"bye");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let session = request.accept().await.expect("accept must not fail");
    let info = tokio::time::timeout(TIMEOUT, session.closed())
        .await
        .unwrap();
    assert_eq!(info.initiator, CloseInitiator::Connection, "{info}");
    assert!(srv.server.stats().sessions_failed_to_start >= 3);
    eventually("sessions left open", || srv.server.session_count() == 0).await;
}

/// A session limit reached between the request and the answer: the client gets 503 and the
/// application a session that is already closed, not an error.
#[tokio::test]
async fn a_session_limit_reached_after_the_request_gives_a_closed_session() {
    let srv = start_with(|c| c.limits.max_sessions = 1);
    let route = srv.server.route("/q").unwrap();
    let (a, first) = tokio::join!(ws_h1(&srv, "/q", &["qmux-02"], &[]), async {
        let first = route.accept().await.unwrap();
        let one = first.accept().await.unwrap();
        one
    });
    let a = a.unwrap();
    let one = first;
    let (b, two) = tokio::join!(ws_h1(&srv, "/q", &["qmux-02"], &[]), async {
        let second = route.accept().await.unwrap();
        // The first session holds the only slot by now: this one is refused after the fact.
        second.accept().await.unwrap()
    });
    let second = (one, two);
    let _ = a;
    assert_eq!(b.unwrap_err(), 503);
    let (one, two) = second;
    assert!(one.close_info().is_none());
    let info = two.close_info().expect("the refused session is closed");
    assert_eq!(info.initiator, CloseInitiator::Local);
    assert!(info.reason.contains("limit"), "{info}");
}

/// Silent QMux clients do not hold up `accept`: it answers at once, and each session ends
/// by itself after `response_timeout` without the client's transport parameters (counted),
/// while a real QMux client is served meanwhile.
#[tokio::test]
async fn qmux_accept_answers_at_once_and_silent_clients_end_by_themselves() {
    let srv = start_with(|c| c.limits.response_timeout = Duration::from_millis(600));
    let route = srv.server.route("/q").unwrap();
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(ws_h1(&srv, "/q", &["qmux-02"], &[]));
    }
    let (clients, sessions) = tokio::join!(futures_util::future::join_all(silent), async {
        let mut sessions = Vec::new();
        for _ in 0..5 {
            let request = route.accept().await.unwrap();
            let t = Instant::now();
            let session = request.accept().await.unwrap();
            assert!(
                t.elapsed() < Duration::from_millis(200),
                "accept waited {:?}",
                t.elapsed()
            );
            sessions.push(session);
        }
        sessions
    });
    let _clients: Vec<_> = clients.into_iter().map(|c| c.unwrap()).collect();
    // A well-behaved client is served while the silent ones wait.
    let (ws, served) = tokio::join!(ws_h1(&srv, "/q", &["qmux-02"], &[]), async {
        route.accept().await.unwrap().accept().await.unwrap()
    });
    let client = qmux::ws::Upgraded::new(ws.unwrap().0)
        .with_alpn("qmux-02")
        .connect();
    let mut send = client.open_uni().await.unwrap();
    web_transport_trait::SendStream::write_all(&mut send, b"hi")
        .await
        .unwrap();
    web_transport_trait::SendStream::finish(&mut send).unwrap();
    let mut uni = tokio::time::timeout(TIMEOUT, served.accept_uni())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(uni.read_to_end(16).await.unwrap(), b"hi");
    for s in &sessions {
        let info = tokio::time::timeout(Duration::from_secs(5), s.closed())
            .await
            .expect("a silent QMux session stayed open");
        assert!(info.reason.contains("transport parameters"), "{info}");
    }
    assert!(served.close_info().is_none(), "the bystander was closed");
    assert_eq!(srv.server.stats().sessions_failed_to_start, 5);
    served.close(0, "");
    eventually("sessions left open", || srv.server.session_count() == 0).await;
}

/// TLS connections that say nothing, half an HTTP/2 preface, an HTTP/2 connection that
/// only answers PINGs, and an idle HTTP/1.1 keep-alive connection are all closed: within
/// `request_timeout` of the handshake before any request, `sessionless_timeout` after.
#[tokio::test]
async fn silent_and_idle_tcp_connections_are_closed() {
    let srv = start_with(|c| {
        c.limits.request_timeout = Duration::from_millis(800);
        c.limits.sessionless_timeout = Duration::from_millis(1200);
        c.keep_alive = Some(Duration::from_millis(300));
    });
    let t = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(tls_connect(&srv, &["h2", "http/1.1"]).await);
    }
    let mut preface = tls_connect(&srv, &["h2"]).await;
    preface
        .write_all(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..23])
        .await
        .unwrap();
    for s in &mut silent {
        wait_closed_by_server(s, Duration::from_secs(5), "a silent TLS connection").await;
    }
    wait_closed_by_server(&mut preface, Duration::from_secs(5), "half a preface").await;
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    // HTTP/2 with no streams: the h2 client answers PINGs, and is still sent away.
    let tls = tls_connect(&srv, &["h2"]).await;
    let (_client, connection) = h2::client::handshake(tls).await.unwrap();
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("an idle HTTP/2 connection was kept open")
        .ok();
    assert!(
        t.elapsed() >= Duration::from_millis(700),
        "closed too early: {:?}",
        t.elapsed()
    );
    // HTTP/1.1 keep-alive after one answered request.
    let mut tls = tls_connect(&srv, &["http/1.1"]).await;
    tls.write_all(
        format!(
            "GET /nothing HTTP/1.1\r\nHost: localhost:{}\r\n\r\n",
            srv.addr.port()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut first = [0u8; 12];
    tls.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 404");
    wait_closed_by_server(
        &mut tls,
        Duration::from_secs(5),
        "an idle keep-alive connection",
    )
    .await;
    eventually("connections left open", || {
        srv.server.connection_count() == 0
    })
    .await;
    // The server still serves.
    let route = srv.server.route("/ws").unwrap();
    route.allow_websockets();
    let (client, server_ws) = tokio::join!(ws_h1(&srv, "/ws", &[], &[]), async {
        route
            .accept()
            .await
            .unwrap()
            .accept_websocket()
            .await
            .unwrap()
    });
    let (mut client, _) = client.unwrap();
    server_ws
        .send(WebSocketMessage::Text("still here".into()))
        .await
        .unwrap();
    assert_eq!(
        client.next().await.unwrap().unwrap(),
        Message::text("still here")
    );
}

/// A WebSocket over HTTP/2 whose client grants no stream window: the server's writes park,
/// and yet the application's close works and the session ends within the write timeout.
/// The same over HTTP/1.1 with a client that never reads.
#[tokio::test]
async fn a_client_that_stops_reading_loses_its_session_within_the_write_timeout() {
    let srv = start_with(|c| c.limits.write_timeout = Duration::from_millis(1500));
    let route = srv.server.route("/ws").unwrap();
    route.allow_websockets();
    let big = Bytes::from(vec![5u8; 512 * 1024]);
    // HTTP/2, window 0.
    let tls = tls_connect(&srv, &["h2"]).await;
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(tls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let mut request = http::Request::builder()
        .method("CONNECT")
        .uri(format!("https://localhost:{}/ws", srv.addr.port()))
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap();
    request
        .extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    let (response, send) = client.send_request(request, false).unwrap();
    let ws = route
        .accept()
        .await
        .unwrap()
        .accept_websocket()
        .await
        .unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    let t = Instant::now();
    let sender = {
        let ws = ws.clone();
        let big = big.clone();
        tokio::spawn(async move {
            while ws.send(WebSocketMessage::Binary(big.clone())).await.is_ok() {}
        })
    };
    let info = tokio::time::timeout(Duration::from_secs(10), ws.closed())
        .await
        .expect("the stalled session stayed open");
    assert_eq!(info.code, 1006);
    assert!(info.reason.contains("not reading"), "{info:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    sender.await.unwrap();
    // HTTP/1.1, never read; the application closes while its writes are parked.
    let (tls, ws) = unread_websocket(&srv, &route).await;
    let sender = {
        let ws = ws.clone();
        tokio::spawn(async move {
            while ws.send(WebSocketMessage::Binary(big.clone())).await.is_ok() {}
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    ws.close(4000, "bye").unwrap();
    let info = tokio::time::timeout(Duration::from_secs(10), ws.closed())
        .await
        .expect("close did not work on a stalled socket");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert!(matches!(info.code, 4000 | 1006), "{info:?}");
    sender.await.unwrap();
    drop((tls, client, send));
    eventually("sessions left open", || srv.server.session_count() == 0).await;
    eventually("connections left open", || {
        srv.server.connection_count() == 0
    })
    .await;
}

/// A client that ignores the server's Close and pings every 300 ms cannot hold the
/// WebSocket open past the close wait, and a close asked for while the outgoing queue is
/// full is not lost.
#[tokio::test]
async fn the_close_wait_is_absolute_and_a_close_is_never_dropped() {
    let srv = start();
    let route = srv.server.route("/ws").unwrap();
    route.allow_websockets();
    let (client, ws) = tokio::join!(ws_h1(&srv, "/ws", &[], &[]), async {
        route
            .accept()
            .await
            .unwrap()
            .accept_websocket()
            .await
            .unwrap()
    });
    let (client, _) = client.unwrap();
    let (mut tx, mut rx) = client.split();
    let pinger = tokio::spawn(async move {
        loop {
            if tx
                .send(Message::Ping(Bytes::from_static(b"p")))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    // Read (so tungstenite answers pings) but never answer the Close: the raw reader keeps
    // consuming frames without replying.
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
    let t = Instant::now();
    ws.close(4001, "go").unwrap();
    let info = tokio::time::timeout(Duration::from_secs(10), ws.closed())
        .await
        .unwrap();
    assert_eq!((info.code, info.initiator), (4001, CloseInitiator::Local));
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "close wait {:?}",
        t.elapsed()
    );
    pinger.abort();
    reader.abort();
    // A full outgoing queue toward a client that never reads: the close still happens.
    let (tls, ws) = unread_websocket(&srv, &route).await;
    let filler = {
        let ws = ws.clone();
        tokio::spawn(async move {
            let m = Bytes::from(vec![1u8; 256 * 1024]);
            while ws.send(WebSocketMessage::Binary(m.clone())).await.is_ok() {}
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    ws.close(4002, "full").unwrap();
    let info = tokio::time::timeout(Duration::from_secs(10), ws.closed())
        .await
        .expect("the close was lost");
    assert_eq!(info.code, 4002, "{info:?}");
    filler.await.unwrap();
    drop(tls);
    eventually("sessions left open", || srv.server.session_count() == 0).await;
}

/// Messages up to the limit arrive whole both ways (a frame header does not count against
/// it); one byte more closes with 1009 and a reason.
#[tokio::test]
async fn messages_up_to_the_limit_arrive_and_larger_ones_close_with_1009() {
    let srv = start();
    let limit = 1024 * 1024;
    let route = srv.server.route("/ws").unwrap();
    route.allow_websockets();
    tokio::spawn(async move {
        while let Some(r) = route.accept().await {
            let ws = r.accept_websocket().await.unwrap();
            tokio::spawn(async move {
                while let Ok(Some(m)) = ws.recv().await {
                    if ws.send(m).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let tls = tls_connect(&srv, &["http/1.1"]).await;
    let url = format!("wss://localhost:{}/ws", srv.addr.port());
    let config = WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, tls, Some(config))
        .await
        .unwrap();
    for size in [limit - 6, limit] {
        let body = data(size, size as u64);
        ws.send(Message::binary(body.clone())).await.unwrap();
        match tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Binary(b) => assert_eq!(sha256(&b), sha256(&body), "{size}"),
            other => panic!("{size}: {other:?}"),
        }
    }
    ws.send(Message::binary(vec![0u8; limit + 1]))
        .await
        .unwrap();
    match tokio::time::timeout(TIMEOUT, ws.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(f)))) => {
            assert_eq!(u16::from(f.code), 1009);
            assert!(!f.reason.is_empty());
        }
        other => panic!("{other:?}"),
    }
}
