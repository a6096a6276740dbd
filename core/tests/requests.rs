//! Session requests and the wire: headers, routing, origin policy, rejections, malformed
//! input, SETTINGS, several sessions on one connection, start-up errors.

mod common;

use bytes::BufMut;
use common::*;
use ferrovia::{Certificate, OriginPolicy, Server, ServerConfig, ServerError};
use web_transport_quinn::{
    http::{HeaderName, HeaderValue},
    proto::ConnectRequest,
};

fn request(srv: &TestServer, path: &str) -> ConnectRequest {
    ConnectRequest::new(srv.url(path))
}

fn with_header(r: ConnectRequest, k: &'static str, v: &str) -> ConnectRequest {
    r.with_header(
        HeaderName::from_static(k),
        HeaderValue::from_str(v).unwrap(),
    )
}

#[tokio::test]
async fn the_request_shows_path_headers_origin_and_subprotocols() {
    let srv = start();
    let req = with_header(request(&srv, "/chat?room=7"), "x-token", "secret");
    let req = with_header(req, "origin", "https://localhost");
    let req = req.with_protocols(["chat.v2".to_string(), "chat.v1".to_string()]);
    let client = tokio::spawn({
        let c = srv.client();
        async move { c.connect(req).await }
    });
    let r = srv.server.accept().await.unwrap();
    assert_eq!(r.path(), "/chat?room=7");
    assert_eq!(r.authority(), format!("localhost:{}", srv.addr.port()));
    assert_eq!(r.origin(), Some("https://localhost"));
    assert_eq!(r.header("X-Token"), Some("secret"));
    assert!(r
        .headers()
        .iter()
        .any(|(k, v)| k == "x-token" && v == "secret"));
    assert_eq!(r.subprotocols(), ["chat.v2", "chat.v1"]);
    assert_eq!(r.remote_addr().ip(), srv.addr.ip());
    assert_eq!(r.session_id() % 4, 0);
    let session = r
        .accept_with(Some("chat.v1"), &[("x-server", "ferrovia")])
        .await
        .unwrap();
    let client = client.await.unwrap().unwrap();
    assert_eq!(client.protocol(), Some("chat.v1"));
    assert_eq!(session.path(), "/chat?room=7");
}

#[tokio::test]
async fn choosing_a_protocol_that_was_not_offered_is_an_error() {
    let srv = start();
    let c = srv.client();
    let url = srv.url("/p");
    let client = tokio::spawn(async move { c.connect(url).await });
    let r = srv.server.accept().await.unwrap();
    let err = r.accept_with(Some("nope"), &[]).await.unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    // The dropped request was answered with 404.
    let err = client.await.unwrap().unwrap_err();
    assert_eq!(rejected_status(&err), Some(404), "{err:?}");
}

#[tokio::test]
async fn rejections_unknown_paths_and_origins_get_their_statuses() {
    let srv = start();
    let route = srv.server.route("/only").unwrap();
    // Unknown path: nobody listens, so 404.
    let err = srv
        .connect_request(request(&srv, "/elsewhere"))
        .await
        .unwrap_err();
    assert_eq!(rejected_status(&err), Some(404), "{err:?}");
    // Explicit rejection with any status.
    let (res, ()) = tokio::join!(srv.connect_request(request(&srv, "/only")), async {
        route.accept().await.unwrap().reject(429).await.unwrap();
    });
    assert_eq!(rejected_status(&res.unwrap_err()), Some(429));
    // Another page's origin is refused before the application sees it.
    let req = with_header(request(&srv, "/only"), "origin", "https://evil.example");
    let err = srv.connect_request(req).await.unwrap_err();
    assert_eq!(rejected_status(&err), Some(403), "{err:?}");
    // The same host (any port) is allowed; so is a request with no origin at all.
    let req = with_header(
        request(&srv, "/only?q=1"),
        "origin",
        "http://localhost:8080",
    );
    let (res, session) = tokio::join!(srv.connect_request(req), async {
        let r = route.accept().await.unwrap();
        assert_eq!(r.path(), "/only?q=1");
        r.accept().await.unwrap()
    });
    drop(session);
    drop(res.unwrap());
    // A route cannot be taken twice, but is free again once dropped.
    assert!(matches!(
        srv.server.route("/only"),
        Err(ServerError::RouteTaken(_))
    ));
    drop(route);
    let _again = srv.server.route("/only").unwrap();
    assert!(srv.server.route("relative").is_err());
}

#[tokio::test]
async fn allow_list_policy() {
    let srv = start_with(|c| {
        c.origin_policy = OriginPolicy::AllowList(vec!["https://app.example".into()]);
    });
    let route = srv.server.route("/x").unwrap();
    let ok = with_header(request(&srv, "/x"), "origin", "https://app.example");
    let (res, _s) = tokio::join!(srv.connect_request(ok), async {
        route.accept().await.unwrap().accept().await.unwrap()
    });
    res.unwrap();
    let bad = with_header(request(&srv, "/x"), "origin", "http://localhost");
    assert_eq!(
        rejected_status(&srv.connect_request(bad).await.unwrap_err()),
        Some(403)
    );
}

#[tokio::test]
async fn settings_on_the_wire_carry_every_dialect_safari_included() {
    let srv = start();
    let conn = raw_connection(&srv).await;
    let mut control = conn.accept_uni().await.unwrap();
    let mut bytes = Vec::new();
    while bytes.len() < 512 {
        let mut chunk = [0u8; 64];
        match tokio::time::timeout(
            std::time::Duration::from_millis(300),
            control.read(&mut chunk),
        )
        .await
        {
            Ok(Ok(Some(n))) => bytes.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let settings =
        ferrovia::wire::settings::decode_control_stream(&bytes).expect("control + SETTINGS");
    let get = |id: u64| settings.iter().find(|(k, _)| *k == id).map(|(_, v)| *v);
    // One session per connection for draft-13+ (Safari 26.4+ requires the setting, >= 1):
    // that keeps their session-level flow control off, which the server does not implement.
    assert_eq!(get(0x14e9cd29), Some(1), "WT_MAX_SESSIONS (Safari 26.4+)");
    assert_eq!(get(0x2b603742), Some(1), "ENABLE_WEBTRANSPORT (draft-02)");
    assert_eq!(
        get(0xc671706a),
        Some(1),
        "WEBTRANSPORT_MAX_SESSIONS (draft-07)"
    );
    assert_eq!(get(0x08), Some(1), "ENABLE_CONNECT_PROTOCOL");
    assert_eq!(get(0x33), Some(1), "H3_DATAGRAM");
    assert_eq!(get(0xffd277), Some(1), "H3_DATAGRAM draft-04");
    assert_eq!(get(0x2c7cf000), Some(1), "WT_ENABLED");
    for id in [0x2b64, 0x2b65, 0x2b61] {
        assert_eq!(get(id), None, "no session flow control offered ({id:#x})");
    }
    assert_eq!(get(0x01).unwrap_or(0), 0, "QPACK dynamic table stays off");
}

#[tokio::test]
async fn two_sessions_share_one_connection_and_see_only_their_own_data() {
    let srv = start();
    let conn = raw_connection(&srv).await;
    let _control = raw_settings(&conn).await;
    let authority = format!("localhost:{}", srv.addr.port());
    let (connect_a, server_a) =
        tokio::join!(raw_connect(&conn, &authority, "/a", &[]), srv.accept());
    let (connect_b, server_b) =
        tokio::join!(raw_connect(&conn, &authority, "/b", &[]), srv.accept());
    assert_eq!((connect_a.2, connect_b.2), (200, 200));
    let id_a: u64 = connect_a.0.id().into();
    let id_b: u64 = connect_b.0.id().into();
    assert_eq!((server_a.id(), server_b.id()), (id_a, id_b));

    // A uni stream and a datagram for each session.
    for (id, tag) in [(id_a, b"A"), (id_b, b"B")] {
        let mut s = conn.open_uni().await.unwrap();
        let mut buf = Vec::new();
        varint(0x54, &mut buf);
        varint(id, &mut buf);
        buf.put_slice(tag);
        s.write_all(&buf).await.unwrap();
        s.finish().unwrap();
        let mut d = Vec::new();
        varint(id / 4, &mut d);
        d.put_slice(tag);
        conn.send_datagram(d.into()).unwrap();
    }
    for (session, tag) in [(&server_a, b"A"), (&server_b, b"B")] {
        let mut r = session.accept_uni().await.unwrap();
        assert_eq!(r.read_to_end(10).await.unwrap(), tag);
        assert_eq!(&session.recv_datagram().await.unwrap()[..], tag);
    }
    // Closing A with a capsule leaves B alive.
    let (mut send_a, _recv_a, _) = connect_a;
    let mut capsule = Vec::new();
    varint(0x2843, &mut capsule);
    varint(4 + 2, &mut capsule);
    capsule.put_u32(99);
    capsule.put_slice(b"ok");
    let mut frame = Vec::new();
    varint(0x00, &mut frame);
    varint(capsule.len() as u64, &mut frame);
    frame.extend_from_slice(&capsule);
    send_a.write_all(&frame).await.unwrap();
    send_a.finish().unwrap();
    let info = server_a.closed().await;
    assert_eq!((info.code, info.reason.as_str()), (99, "ok"));
    assert!(server_b.close_info().is_none());
    // Streams for the closed session are refused with WT_SESSION_GONE.
    let mut s = conn.open_uni().await.unwrap();
    let mut buf = Vec::new();
    varint(0x54, &mut buf);
    varint(id_a, &mut buf);
    s.write_all(&buf).await.unwrap();
    assert_eq!(
        s.stopped().await.unwrap(),
        Some(quinn::VarInt::from_u64(ferrovia::WT_SESSION_GONE).unwrap())
    );
    // FIN of B's CONNECT stream without a capsule ends it with code 0.
    let (mut send_b, _recv_b, _) = connect_b;
    send_b.finish().unwrap();
    let info = server_b.closed().await;
    assert_eq!(
        (info.code, info.initiator),
        (0, ferrovia::CloseInitiator::Remote)
    );
}

#[tokio::test]
async fn early_streams_wait_for_their_session_and_excess_is_refused() {
    let srv = start_with(|c| c.limits.max_buffered_streams = 2);
    let conn = raw_connection(&srv).await;
    let _control = raw_settings(&conn).await;
    // Streams naming session 0 before any CONNECT: two are buffered, the third refused.
    let open = |tag: &'static [u8], fin: bool| {
        let conn = conn.clone();
        async move {
            let mut s = conn.open_uni().await.unwrap();
            let mut buf = Vec::new();
            varint(0x54, &mut buf);
            varint(0, &mut buf);
            buf.put_slice(tag);
            s.write_all(&buf).await.unwrap();
            if fin {
                s.finish().unwrap();
            }
            s
        }
    };
    let _one = open(b"1", true).await;
    let _two = open(b"2", true).await;
    // Let both reach the buffer before the third arrives.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let third = open(b"3", false).await;
    assert_eq!(
        third.stopped().await.unwrap(),
        Some(quinn::VarInt::from_u64(ferrovia::WT_BUFFERED_STREAM_REJECTED).unwrap())
    );
    let authority = format!("localhost:{}", srv.addr.port());
    let ((_s, _r, status), session) =
        tokio::join!(raw_connect(&conn, &authority, "/late", &[]), srv.accept());
    assert_eq!(status, 200);
    let mut got = Vec::new();
    for _ in 0..2 {
        let mut r = session.accept_uni().await.unwrap();
        got.push(r.read_to_end(10).await.unwrap());
    }
    got.sort();
    assert_eq!(got, vec![b"1".to_vec(), b"2".to_vec()]);
}

#[tokio::test]
async fn malformed_requests_get_clear_statuses_and_harm_no_one() {
    let srv = start();
    let route = srv.server.route("/ok").unwrap();
    let conn = raw_connection(&srv).await;
    let _control = raw_settings(&conn).await;
    let authority = format!("localhost:{}", srv.addr.port());
    // Not CONNECT.
    let get = [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", authority.as_str()),
        (":path", "/ok"),
    ];
    assert_eq!(raw_request(&conn, &get).await.2, 404);
    // CONNECT without :protocol, and with the wrong scheme.
    let bare = [(":method", "CONNECT"), (":authority", authority.as_str())];
    assert_eq!(raw_request(&conn, &bare).await.2, 400);
    let http = [
        (":method", "CONNECT"),
        (":protocol", "webtransport"),
        (":scheme", "http"),
        (":authority", authority.as_str()),
        (":path", "/ok"),
    ];
    assert_eq!(raw_request(&conn, &http).await.2, 400);
    // An oversized header block.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut frame = Vec::new();
    varint(0x01, &mut frame);
    varint(1 << 20, &mut frame);
    send.write_all(&frame).await.unwrap();
    assert_eq!(read_status(&mut recv).await, 431);
    // A bad subprotocol list.
    let (_s, _r, status) = raw_connect(
        &conn,
        &authority,
        "/ok",
        &[("wt-available-protocols", "not-a-string")],
    )
    .await;
    assert_eq!(status, 400);
    // After all that, the same connection still opens sessions.
    let ((_s, _r, status), _session) =
        tokio::join!(raw_connect(&conn, &authority, "/ok", &[]), async {
            route.accept().await.unwrap().accept().await.unwrap()
        });
    assert_eq!(status, 200);
    // Garbage QPACK is a connection error (QPACK_DECOMPRESSION_FAILED), not a 400.
    let conn = raw_connection(&srv).await;
    let _control = raw_settings(&conn).await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    let mut frame = Vec::new();
    varint(0x01, &mut frame);
    varint(3, &mut frame);
    frame.extend_from_slice(&[0x00, 0x00, 0xff]);
    send.write_all(&frame).await.unwrap();
    match conn.closed().await {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code, quinn::VarInt::from_u32(0x200))
        }
        other => panic!("unexpected close {other:?}"),
    }
}

#[tokio::test]
async fn startup_errors_are_typed() {
    let srv = start();
    let cert = Certificate::self_signed(&["localhost"]).unwrap();
    // Port in use.
    let err = Server::bind(ServerConfig::new(srv.addr, cert.clone())).unwrap_err();
    assert!(matches!(err, ServerError::Bind { .. }), "{err}");
    assert!(err.to_string().contains(&srv.addr.to_string()), "{err}");
    // Nonsense limits.
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), cert.clone());
    config.limits.max_sessions = 0;
    assert!(matches!(
        Server::bind(config),
        Err(ServerError::InvalidConfig(_))
    ));
    // Outside a runtime.
    let err = std::thread::spawn(move || {
        Server::bind(ServerConfig::new("127.0.0.1:0".parse().unwrap(), cert)).unwrap_err()
    })
    .join()
    .unwrap();
    assert!(matches!(err, ServerError::NoRuntime), "{err}");
}

#[tokio::test]
async fn certificates_rotate_for_new_connections() {
    let srv = start();
    let old = srv.cert.clone();
    let new = Certificate::self_signed(&["localhost"]).unwrap();
    srv.server.set_certificate(new.clone());
    assert_eq!(srv.server.certificate().sha256(), new.sha256());
    // A client pinned to the old hash now fails; one pinned to the new hash works.
    let old_client = web_transport_quinn::ClientBuilder::new()
        .with_server_certificate_hashes(vec![old.sha256().to_vec()])
        .unwrap();
    assert!(old_client.connect(srv.url("/r")).await.is_err());
    let new_client = web_transport_quinn::ClientBuilder::new()
        .with_server_certificate_hashes(vec![new.sha256().to_vec()])
        .unwrap();
    let (res, _s) = tokio::join!(new_client.connect(srv.url("/r")), srv.accept());
    res.unwrap();
}

#[tokio::test]
async fn too_many_sessions_are_refused() {
    let srv = start_with(|c| c.limits.max_sessions = 1);
    let (_c, _s) = srv.pair("/one").await;
    let (res, refused) = tokio::join!(srv.connect_request(request(&srv, "/two")), async {
        srv.server
            .accept()
            .await
            .unwrap()
            .accept()
            .await
            .expect("accept never fails for a limit the clients reached")
    });
    // The application gets a session that is already closed, and says why.
    let info = refused.close_info().expect("closed at once");
    assert_eq!(info.initiator, ferrovia::CloseInitiator::Local);
    assert!(info.reason.contains("session limit"), "{info}");
    assert_eq!(rejected_status(&res.unwrap_err()), Some(503));
}

#[tokio::test]
async fn queue_unrouted_holds_requests_before_the_first_accept() {
    let srv = start();
    srv.server.queue_unrouted();
    // The client connects before anyone calls accept(): the request must wait, not 404.
    let connecting = tokio::spawn({
        let client = srv.client();
        let url = srv.url("/early");
        async move { client.connect(url).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let request = tokio::time::timeout(TIMEOUT, srv.server.accept())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(request.path(), "/early");
    let _session = request.accept().await.unwrap();
    assert!(connecting.await.unwrap().is_ok());
}

#[tokio::test]
async fn a_self_signed_certificate_is_renewed_with_both_hashes_listed_ahead_of_the_switch() {
    let mut renewal = ferrovia::SelfSignedRenewal::new(&["localhost", "127.0.0.1"]);
    renewal.validity = std::time::Duration::from_secs(9);
    renewal.overlap = std::time::Duration::from_millis(2500);
    let srv = start_with(move |c| c.self_signed_renewal = Some(renewal));
    // The server made its own certificate.
    let first = srv.server.certificate().sha256();
    assert_ne!(first, srv.cert.sha256());
    assert_eq!(srv.server.certificate_hashes(), vec![first]);
    let route = srv.server.route("/r").unwrap();
    tokio::spawn(async move {
        while let Some(request) = route.accept().await {
            let session = request.accept().await.unwrap();
            tokio::spawn(async move { session.closed().await });
        }
    });
    // A browser-like client that trusts exactly `hashes`.
    let connects = |hashes: Vec<[u8; 32]>| {
        let url = srv.url("/r");
        async move {
            let client = web_transport_quinn::ClientBuilder::new()
                .with_server_certificate_hashes(hashes.iter().map(|h| h.to_vec()).collect())
                .expect("client");
            tokio::time::timeout(TIMEOUT, client.connect(url))
                .await
                .expect("connect timed out")
                .is_ok()
        }
    };
    assert!(connects(vec![first]).await);
    // Announced: both hashes listed, the first certificate still served.
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(8);
    while srv.server.certificate_hashes().len() < 2 {
        assert!(tokio::time::Instant::now() < until, "never announced");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let hashes = srv.server.certificate_hashes();
    let next = hashes[1];
    assert_eq!(hashes[0], first);
    assert_ne!(next, first);
    assert!(connects(vec![first]).await);
    assert!(
        !connects(vec![next]).await,
        "the next certificate is not served yet"
    );
    // Switched: new connections get the next certificate; a page that held both hashes
    // still connects, one that held only the old one does not.
    while srv.server.certificate().sha256() != next {
        assert!(tokio::time::Instant::now() < until, "never switched");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(srv.server.certificate_hashes(), vec![next]);
    assert!(connects(hashes.clone()).await);
    assert!(!connects(vec![first]).await);
    // The application's own certificate ends the renewal.
    let own = ferrovia::Certificate::self_signed(&["localhost"]).unwrap();
    srv.server.set_certificate(own.clone());
    assert_eq!(srv.server.certificate_hashes(), vec![own.sha256()]);
}

#[tokio::test]
async fn a_renewal_whose_overlap_does_not_fit_is_refused_at_bind() {
    let cert = ferrovia::Certificate::self_signed(&["localhost"]).unwrap();
    let mut config = ferrovia::ServerConfig::new("127.0.0.1:0".parse().unwrap(), cert);
    let mut renewal = ferrovia::SelfSignedRenewal::new(&["localhost"]);
    renewal.overlap = renewal.validity / 2;
    config.self_signed_renewal = Some(renewal);
    match ferrovia::Server::bind(config) {
        Err(ferrovia::ServerError::InvalidConfig(why)) => assert!(why.contains("overlap"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_renewal_browsers_would_not_accept_by_hash_is_refused_at_bind() {
    let cert = ferrovia::Certificate::self_signed(&["localhost"]).unwrap();
    let mut config = ferrovia::ServerConfig::new("127.0.0.1:0".parse().unwrap(), cert);
    let mut renewal = ferrovia::SelfSignedRenewal::new(&["localhost"]);
    renewal.validity = std::time::Duration::from_secs(14 * 24 * 3600);
    config.self_signed_renewal = Some(renewal);
    match ferrovia::Server::bind(config) {
        Err(ferrovia::ServerError::InvalidConfig(why)) => assert!(why.contains("14 days"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_closed_server_frees_its_port_at_once() {
    let srv = start();
    let port = srv.addr.port();
    let tcp = srv.tcp_addr();
    srv.server.close(std::time::Duration::from_millis(10)).await;
    // The handle is still alive, as in a language binding before garbage collection; the
    // same UDP and TCP port bind again all the same.
    let cert = ferrovia::Certificate::self_signed(&["localhost"]).unwrap();
    let again = ferrovia::Server::bind(ferrovia::ServerConfig::new(
        format!("127.0.0.1:{port}").parse().unwrap(),
        cert,
    ))
    .expect("the port is free again");
    assert_eq!(again.local_addr().unwrap().port(), port);
    assert_eq!(again.tcp_local_addr(), Some(tcp));
    drop(srv);
}

#[tokio::test]
async fn a_draining_server_refuses_new_sessions_while_open_ones_finish() {
    let srv = start();
    let route = srv.server.route("/d").unwrap();
    route.allow_websockets();
    tokio::spawn(async move {
        while let Some(request) = route.accept().await {
            let session = request.accept().await.unwrap();
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = session.accept_bi().await {
                    let data = recv.read_to_end(1 << 16).await.unwrap();
                    send.write_all(&data).await.unwrap();
                    send.finish().unwrap();
                }
            });
        }
    });
    let client = srv.connect("/d").await;
    srv.server.drain();
    assert!(srv.server.is_draining());
    // New sessions, over HTTP/3 and the TCP side, get 503.
    let refused = srv.connect_request(srv.url("/d").into()).await.unwrap_err();
    assert_eq!(rejected_status(&refused), Some(503));
    assert_eq!(ws_h1(&srv, "/d", &[], &[]).await.unwrap_err(), 503);
    assert_eq!(srv.server.stats().requests_refused.get(&503), Some(&2));
    // The open session goes on.
    let (mut send, mut recv) = client.open_bi().await.unwrap();
    send.write_all(b"still here").await.unwrap();
    send.finish().unwrap();
    assert_eq!(recv.read_to_end(100).await.unwrap(), b"still here");
    // drained() waits for it.
    let server = srv.server.clone();
    let drained = tokio::spawn(async move { server.drained().await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!drained.is_finished(), "a session is still open");
    client.close(0, b"done");
    tokio::time::timeout(TIMEOUT, drained)
        .await
        .expect("drained")
        .unwrap();
    assert_eq!(srv.server.session_count(), 0);
}

/// Reads one HTTP/3 frame (type, payload) from a stream.
async fn read_frame(recv: &mut quinn::RecvStream) -> (u64, Vec<u8>) {
    let typ = read_varint(recv).await;
    let len = read_varint(recv).await;
    let mut payload = vec![0u8; len as usize];
    recv.read_exact(&mut payload).await.unwrap();
    (typ, payload)
}

/// A drain sends GOAWAY on each HTTP/3 connection once it carries no session (RFC 9114
/// §5.2), naming the first request stream it will not process: a request after it is
/// rejected unprocessed (H3_REQUEST_REJECTED, safe to retry on a new connection). While a
/// session is open its connection gets no GOAWAY (Chromium would end the session), and the
/// session's streams are served.
#[tokio::test]
async fn a_drain_sends_goaway_once_sessions_end_and_rejects_later_requests() {
    let srv = start();
    let conn = raw_connection(&srv).await;
    let _control = raw_settings(&conn).await;
    let authority = format!("localhost:{}", srv.addr.port());
    let ((mut connect_send, _connect_recv, status), session) =
        tokio::join!(raw_connect(&conn, &authority, "/g", &[]), srv.accept());
    assert_eq!(status, 200);
    let mut control = conn.accept_uni().await.unwrap();
    assert_eq!(read_varint(&mut control).await, 0x00, "a control stream");
    assert_eq!(read_frame(&mut control).await.0, 0x04, "SETTINGS first");

    srv.server.drain();
    // The session goes on: its new stream is served, and no GOAWAY comes meanwhile.
    let echo = async {
        let (mut send, mut recv) = session.accept_bi().await.unwrap();
        let data = recv.read_to_end(100).await.unwrap();
        send.write_all(&data).await.unwrap();
        send.finish().unwrap();
    };
    let client = async {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let mut head = Vec::new();
        varint(0x41, &mut head);
        varint(session.id(), &mut head);
        head.extend_from_slice(b"while draining");
        send.write_all(&head).await.unwrap();
        send.finish().unwrap();
        recv.read_to_end(100).await.unwrap()
    };
    let ((), back) = tokio::time::timeout(TIMEOUT, async { tokio::join!(echo, client) })
        .await
        .expect("echo in time");
    assert_eq!(back, b"while draining");
    assert!(
        tokio::time::timeout(
            std::time::Duration::from_millis(300),
            read_frame(&mut control)
        )
        .await
        .is_err(),
        "no GOAWAY while a session is open"
    );

    // The client ends the session (FIN on the CONNECT stream): now GOAWAY comes.
    connect_send.finish().unwrap();
    let (typ, payload) = tokio::time::timeout(TIMEOUT, read_frame(&mut control))
        .await
        .expect("GOAWAY in time");
    assert_eq!(typ, 0x07, "GOAWAY");
    let mut goaway = &payload[..];
    let first_unprocessed = web_transport_quinn::proto::VarInt::decode(&mut goaway)
        .unwrap()
        .into_inner();
    assert_eq!(
        first_unprocessed,
        session.id() + 8,
        "the client bidirectional stream after the CONNECT and the session's stream"
    );

    // A request after the GOAWAY: rejected, never answered.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    assert!(u64::from(send.id()) >= first_unprocessed);
    send.write_all(&headers_frame(&[
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", &authority),
        (":path", "/"),
    ]))
    .await
    .unwrap();
    send.finish().unwrap();
    let rejected = quinn::VarInt::from_u32(0x10b);
    match tokio::time::timeout(TIMEOUT, recv.read(&mut [0u8; 16]))
        .await
        .unwrap()
    {
        Err(quinn::ReadError::Reset(code)) => assert_eq!(code, rejected),
        other => panic!("expected H3_REQUEST_REJECTED, got {other:?}"),
    }
}
