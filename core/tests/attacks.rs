//! A hostile client against the server: each test attacks the way such a client would and
//! checks what a user would see — the server answers within bounds, a bystander session
//! keeps working (bytes compared), memory stays within a stated bound, and the counters
//! (sessions, connections) return to zero.
//!
//! Tests run one at a time (the process's RSS is one of the figures).

mod common;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::BufMut;
use common::*;
use ferrovia::{CloseInitiator, Session};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Waits until `f` holds, or panics after `within`.
async fn eventually(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An honest client with a session on `/bystander`, echoed by the server, used to show an
/// attack harms no one else.
struct Bystander {
    client: web_transport_quinn::Session,
}

impl Bystander {
    async fn start(srv: &TestServer) -> Self {
        let route = srv.server.route("/bystander").unwrap();
        tokio::spawn(async move {
            while let Some(req) = route.accept().await {
                let Ok(session) = req.accept().await else {
                    continue;
                };
                tokio::spawn(echo(session));
            }
        });
        Self {
            client: srv.connect("/bystander").await,
        }
    }

    /// Echoes `len` bytes through a new stream and compares them.
    async fn check(&self, len: usize) {
        let payload = data(len, len as u64);
        let (mut send, mut recv) = self.client.open_bi().await.expect("bystander open");
        let writer = async {
            send.write_all(&payload).await.unwrap();
            send.finish().unwrap();
        };
        let (_, back) = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::join!(writer, recv.read_to_end(len + 1))
        })
        .await
        .expect("bystander echo stalled");
        assert_eq!(sha256(&back.unwrap()), sha256(&payload), "bystander bytes");
    }
}

async fn echo(session: Session) {
    while let Ok((mut send, mut recv)) = session.accept_bi().await {
        tokio::spawn(async move {
            while let Ok(Some(chunk)) = recv.read_chunk(64 * 1024).await {
                if send.write_chunk(chunk).await.is_err() {
                    return;
                }
            }
            let _ = send.finish();
        });
    }
}

fn authority(srv: &TestServer) -> String {
    format!("localhost:{}", srv.addr.port())
}

fn connect_fields<'a>(authority: &'a str, path: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        (":method", "CONNECT"),
        (":protocol", "webtransport"),
        (":scheme", "https"),
        (":authority", authority),
        (":path", path),
    ]
}

// ---- Defects, each reproduced ----

#[tokio::test]
async fn a_client_that_grants_no_credit_cannot_stall_accept_or_reject() {
    let _serial = SERIAL.lock().await;
    let srv = start_with(|c| c.limits.response_timeout = Duration::from_millis(800));
    let route = srv.server.route("/r").unwrap();
    let slowest = Arc::new(AtomicU64::new(0));
    let (tx, mut hostile_sessions) = tokio::sync::mpsc::unbounded_channel::<Session>();
    let s = slowest.clone();
    // The documented accept loop: one request after another.
    tokio::spawn(async move {
        let mut keep = Vec::new();
        while let Some(req) = route.accept().await {
            let t = Instant::now();
            let hostile = req.path().contains("hostile");
            let session = req.accept().await;
            s.fetch_max(t.elapsed().as_millis() as u64, Ordering::Relaxed);
            if let Ok(session) = session {
                if hostile {
                    let _ = tx.send(session);
                } else {
                    keep.push(session);
                }
            }
        }
    });
    let reject_route = srv.server.route("/reject").unwrap();
    let rejects = slowest.clone();
    tokio::spawn(async move {
        while let Some(req) = reject_route.accept().await {
            let t = Instant::now();
            req.reject(403).await.unwrap();
            rejects.fetch_max(t.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
    });
    let a = authority(&srv);
    let mut hostile = Vec::new();
    for path in ["/r?hostile=1", "/r?hostile=2", "/r?hostile=3", "/reject"] {
        // initial_max_stream_data_bidi_local = 0: we may not write a byte of the response.
        let conn = raw_connection_with(&srv, |t| {
            t.stream_receive_window(0u32.into());
        })
        .await
        .unwrap();
        let control = raw_settings(&conn).await;
        let (mut send, recv) = conn.open_bi().await.unwrap();
        send.write_all(&headers_frame(&connect_fields(&a, path)))
            .await
            .unwrap();
        hostile.push((conn, control, send, recv));
    }
    // An honest client on the same route is served at once.
    let honest = tokio::time::timeout(Duration::from_secs(5), srv.client().connect(srv.url("/r")))
        .await
        .expect("honest client stalled behind hostile ones")
        .expect("honest connect");
    assert!(
        slowest.load(Ordering::Relaxed) < 500,
        "accept/reject waited {} ms on a client",
        slowest.load(Ordering::Relaxed)
    );
    // The hostile sessions end once the response deadline passes, releasing their slots.
    for _ in 0..3 {
        let s = tokio::time::timeout(TIMEOUT, hostile_sessions.recv())
            .await
            .unwrap()
            .unwrap();
        let info = tokio::time::timeout(Duration::from_secs(5), s.closed())
            .await
            .expect("hostile session never ended");
        assert_eq!(info.initiator, CloseInitiator::Connection);
        assert!(info.reason.contains("in time"), "{}", info.reason);
    }
    eventually(Duration::from_secs(5), "one session left", || {
        srv.server.session_count() == 1
    })
    .await;
    honest.close(0, b"");
    drop(hostile);
    eventually(Duration::from_secs(15), "sessions back to zero", || {
        srv.server.session_count() == 0
    })
    .await;
}

#[tokio::test]
async fn connections_are_capped_per_address_and_in_all() {
    let _serial = SERIAL.lock().await;
    let srv = start_with(|c| c.limits.max_connections_per_ip = 2);
    let a = raw_connection(&srv).await;
    let _b = raw_connection(&srv).await;
    assert!(
        raw_connection_with(&srv, |_| {}).await.is_err(),
        "a third connection from one address is refused"
    );
    assert_eq!(srv.server.connection_count(), 2);
    a.close(0u32.into(), b"");
    eventually(Duration::from_secs(5), "a slot to free", || {
        srv.server.connection_count() == 1
    })
    .await;
    let _c = raw_connection(&srv).await;

    let srv = start_with(|c| c.limits.max_connections = 1);
    let _one = raw_connection(&srv).await;
    assert!(raw_connection_with(&srv, |_| {}).await.is_err());
}

#[tokio::test]
async fn under_load_clients_prove_their_address_with_retry_and_still_connect() {
    let _serial = SERIAL.lock().await;
    let srv = start_with(|c| c.limits.retry_threshold = 0);
    let (client, session) = srv.pair("/retry").await;
    tokio::spawn(echo(session));
    let (mut send, mut recv) = client.open_bi().await.unwrap();
    send.write_all(b"after retry").await.unwrap();
    send.finish().unwrap();
    assert_eq!(recv.read_to_end(100).await.unwrap(), b"after retry");
}

#[tokio::test]
async fn connections_without_sessions_close_and_keep_alive_does_not_save_them() {
    let _serial = SERIAL.lock().await;
    let srv = start_with(|c| {
        c.keep_alive = Some(Duration::from_millis(100));
        c.idle_timeout = Some(Duration::from_secs(2));
        c.limits.sessionless_timeout = Duration::from_millis(600);
    });
    let t = Instant::now();
    let idle = raw_connection(&srv).await;
    let _control = raw_settings(&idle).await;
    assert_eq!(closed_with(&idle).await, 0x100, "H3_NO_ERROR");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // A session keeps its connection alive past the idle timeout (keep-alive)...
    let (client, session) = srv.pair("/alive").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        session.close_info().is_none(),
        "the session survived idle time"
    );
    // ...and once it ends, the connection goes too.
    client.close(1, b"done");
    session.closed().await;
    eventually(Duration::from_secs(5), "no connections", || {
        srv.server.connection_count() == 0
    })
    .await;
}

#[tokio::test]
async fn before_a_session_a_connection_gets_little_flow_control_credit() {
    let _serial = SERIAL.lock().await;
    let srv = start();
    let conn = raw_connection(&srv).await;
    let _control = raw_settings(&conn).await;
    let accepted = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..32u64 {
        let conn = conn.clone();
        let accepted = accepted.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = conn.open_uni().await.unwrap();
            let mut head = Vec::new();
            varint(0x54, &mut head);
            varint(4 * (1000 + i), &mut head); // sessions that do not exist (yet)
            let chunk = vec![0u8; 64 * 1024];
            let _ = tokio::time::timeout(Duration::from_millis(1500), async {
                if s.write_all(&head).await.is_err() {
                    return;
                }
                loop {
                    match s.write(&chunk).await {
                        Ok(n) => accepted.fetch_add(n as u64, Ordering::Relaxed),
                        Err(_) => return,
                    };
                }
            })
            .await;
            s
        }));
    }
    for t in tasks {
        let _ = t.await.unwrap();
    }
    let got = accepted.load(Ordering::Relaxed);
    // 32 streams x 4 MiB of stream credit, but 256 KiB for the connection until a session.
    assert!(
        got <= 256 * 1024 + 16 * 1024,
        "the server granted {got} bytes"
    );
}

#[tokio::test]
async fn datagram_queues_are_bounded_in_bytes() {
    let _serial = SERIAL.lock().await;
    let srv = start_with(|c| c.limits.datagram_queue_bytes = 10_000);
    let (client, session) = srv.pair("/dgram").await;
    for i in 0..100u8 {
        client.send_datagram(vec![i; 1000].into()).unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got = 0;
    while let Some(d) = session.try_recv_datagram() {
        assert_eq!(d.len(), 1000);
        got += 1;
    }
    assert!(got <= 10, "{got} datagrams queued past 10 kB");
    assert!(session.stats().datagrams_dropped >= 90 - got as u64);
}

#[tokio::test]
async fn foreign_authorities_get_421_and_same_host_checks_scheme_and_host() {
    let _serial = SERIAL.lock().await;
    let srv = start();
    let route = srv.server.route("/o").unwrap();
    tokio::spawn(async move {
        while let Some(req) = route.accept().await {
            let _ = req.accept().await;
        }
    });
    let conn = raw_connection(&srv).await;
    let _control = raw_settings(&conn).await;
    let a = authority(&srv);
    let status = |authority: String, origin: Option<&'static str>| {
        let conn = conn.clone();
        async move {
            let extra: Vec<(&str, &str)> = origin.iter().map(|o| ("origin", *o)).collect();
            raw_connect(&conn, &authority, "/o", &extra).await.2
        }
    };
    assert_eq!(status("evil.example:443".into(), None).await, 421);
    assert_eq!(
        status(a.clone(), Some("https://evil.example")).await,
        403,
        "the client's own :authority does not make its origin same-host"
    );
    assert_eq!(
        status("evil.example".into(), Some("https://evil.example")).await,
        421
    );
    assert_eq!(status(a.clone(), Some("http://localhost:8080")).await, 200);
    assert_eq!(status(a.clone(), Some("https://127.0.0.1")).await, 200);
}

#[tokio::test]
async fn refused_requests_spend_an_allowance_then_the_connection_closes() {
    let _serial = SERIAL.lock().await;
    let srv = start_with(|c| c.limits.max_refused_requests = 8);
    let conn = raw_connection(&srv).await;
    let _control = raw_settings(&conn).await;
    let a = authority(&srv);
    let mut refused = 0;
    for _ in 0..40 {
        let Ok((mut send, mut recv)) = conn.open_bi().await else {
            break;
        };
        if send
            .write_all(&headers_frame(&connect_fields(&a, "/nowhere")))
            .await
            .is_err()
        {
            break;
        }
        let mut first = [0u8; 1];
        if recv.read_exact(&mut first).await.is_err() {
            break;
        }
        refused += 1;
    }
    assert_eq!(closed_with(&conn).await, 0x107, "H3_EXCESSIVE_LOAD");
    assert!((8..=10).contains(&refused), "{refused} refusals answered");
}

#[tokio::test]
async fn sessions_are_capped_per_address() {
    let _serial = SERIAL.lock().await;
    let srv = start_with(|c| c.limits.max_sessions_per_ip = 2);
    let route = srv.server.route("/ip").unwrap();
    tokio::spawn(async move {
        let mut keep = Vec::new();
        while let Some(req) = route.accept().await {
            if let Ok(s) = req.accept().await {
                keep.push(s);
            }
        }
    });
    let _one = srv.connect("/ip").await;
    let _two = srv.connect("/ip").await;
    let err = srv.client().connect(srv.url("/ip")).await.unwrap_err();
    assert_eq!(rejected_status(&err), Some(429), "{err:?}");
}

#[tokio::test]
async fn requests_the_client_abandoned_never_reach_the_application() {
    let _serial = SERIAL.lock().await;
    let srv = start();
    let route = srv.server.route("/q").unwrap();
    let conn = raw_connection(&srv).await;
    let _control = raw_settings(&conn).await;
    let a = authority(&srv);
    for i in 0..5 {
        let path = format!("/q?who=abandoned{i}");
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&headers_frame(&connect_fields(&a, &path)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        send.reset(0u32.into()).unwrap();
        recv.stop(0u32.into()).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let honest = tokio::spawn({
        let client = srv.client();
        let url = srv.url("/q?who=honest");
        async move { client.connect(url).await }
    });
    let req = tokio::time::timeout(TIMEOUT, route.accept())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(req.path(), "/q?who=honest");
    req.accept().await.unwrap();
    honest.await.unwrap().unwrap();
}

#[tokio::test]
async fn draft13_clients_get_one_session_per_connection() {
    let _serial = SERIAL.lock().await;
    let srv = start();
    let route = srv.server.route("/d").unwrap();
    tokio::spawn(async move {
        let mut keep = Vec::new();
        while let Some(req) = route.accept().await {
            if let Ok(s) = req.accept().await {
                keep.push(s);
            }
        }
    });
    let conn = raw_connection(&srv).await;
    // WT_MAX_SESSIONS and WT_ENABLED: a client of draft-13 and later.
    let _control = raw_settings_with(
        &conn,
        &[(0x08, 1), (0x33, 1), (0x14e9cd29, 1), (0x2c7cf000, 1)],
    )
    .await;
    let a = authority(&srv);
    let (_s1, _r1, first) = raw_connect(&conn, &a, "/d", &[]).await;
    let (_s2, _r2, second) = raw_connect(&conn, &a, "/d", &[]).await;
    assert_eq!((first, second), (200, 429));
}

#[tokio::test]
async fn streams_waiting_in_a_closed_session_are_reset() {
    let _serial = SERIAL.lock().await;
    let srv = start();
    let conn = raw_connection(&srv).await;
    let _control = raw_settings(&conn).await;
    let a = authority(&srv);
    let ((_cs, _cr, status), session) =
        tokio::join!(raw_connect(&conn, &a, "/c", &[]), srv.accept());
    assert_eq!(status, 200);
    let id = session.id();
    let mut streams = Vec::new();
    for _ in 0..3 {
        let (mut s, r) = conn.open_bi().await.unwrap();
        let mut head = Vec::new();
        varint(0x41, &mut head);
        varint(id, &mut head);
        s.write_all(&head).await.unwrap();
        streams.push((s, r));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    session.close(5, "bye");
    for (s, mut r) in streams {
        let gone = quinn::VarInt::from_u64(ferrovia::WT_SESSION_GONE).unwrap();
        let mut buf = [0u8; 8];
        match tokio::time::timeout(TIMEOUT, r.read(&mut buf))
            .await
            .unwrap()
        {
            Err(quinn::ReadError::Reset(code)) => assert_eq!(code, gone),
            other => panic!("expected a reset, got {other:?}"),
        }
        assert_eq!(s.stopped().await.unwrap(), Some(gone));
    }
}

#[tokio::test]
async fn a_large_unknown_capsule_does_not_hide_the_close_behind_it() {
    let _serial = SERIAL.lock().await;
    let srv = start();
    let conn = raw_connection(&srv).await;
    let _control = raw_settings(&conn).await;
    let a = authority(&srv);
    let ((mut send, _recv, status), session) =
        tokio::join!(raw_connect(&conn, &a, "/cap", &[]), srv.accept());
    assert_eq!(status, 200);
    send.write_all(&capsule_frame(0x1234, &vec![7u8; 100 * 1024]))
        .await
        .unwrap();
    let mut close = Vec::new();
    close.put_u32(7);
    close.put_slice(b"bye");
    send.write_all(&capsule_frame(0x2843, &close))
        .await
        .unwrap();
    let info = tokio::time::timeout(TIMEOUT, session.closed())
        .await
        .unwrap();
    assert_eq!((info.code, info.reason.as_str()), (7, "bye"));
}

#[tokio::test]
async fn a_peer_connection_close_reason_is_bounded() {
    let _serial = SERIAL.lock().await;
    let srv = start();
    let conn = raw_connection(&srv).await;
    let _control = raw_settings(&conn).await;
    let a = authority(&srv);
    let ((_s, _r, status), session) =
        tokio::join!(raw_connect(&conn, &a, "/reason", &[]), srv.accept());
    assert_eq!(status, 200);
    conn.close(0u32.into(), &[b'x'; 1100]);
    let info = tokio::time::timeout(TIMEOUT, session.closed())
        .await
        .unwrap();
    assert!(info.reason.len() <= 1024, "{} bytes", info.reason.len());
}

#[tokio::test]
async fn requests_wait_for_the_clients_settings() {
    let _serial = SERIAL.lock().await;
    let srv = start_with(|c| c.limits.request_timeout = Duration::from_millis(800));
    let route = srv.server.route("/s").unwrap();
    tokio::spawn(async move {
        while let Some(req) = route.accept().await {
            let _ = req.accept().await;
        }
    });
    let a = authority(&srv);
    let conn = raw_connection(&srv).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&headers_frame(&connect_fields(&a, "/s")))
        .await
        .unwrap();
    let answer = tokio::spawn(async move { read_status(&mut recv).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!answer.is_finished(), "answered before SETTINGS");
    let _control = raw_settings(&conn).await;
    assert_eq!(answer.await.unwrap(), 200);
    // Never sending SETTINGS closes the connection (H3_MISSING_SETTINGS).
    let silent = raw_connection(&srv).await;
    let (mut send, _recv) = silent.open_bi().await.unwrap();
    send.write_all(&headers_frame(&connect_fields(&a, "/s")))
        .await
        .unwrap();
    assert_eq!(closed_with(&silent).await, 0x10a);
}

#[tokio::test]
async fn control_stream_violations_close_the_connection() {
    let _serial = SERIAL.lock().await;
    let srv = start();
    // A setting sent twice: H3_SETTINGS_ERROR.
    let conn = raw_connection(&srv).await;
    let _c = raw_settings_with(&conn, &[(0x33, 1), (0x33, 1)]).await;
    assert_eq!(closed_with(&conn).await, 0x109);
    // The control stream reset: H3_CLOSED_CRITICAL_STREAM.
    let conn = raw_connection(&srv).await;
    let mut control = raw_settings(&conn).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    control.reset(0u32.into()).unwrap();
    assert_eq!(closed_with(&conn).await, 0x104);
    // A second control stream: H3_STREAM_CREATION_ERROR.
    let conn = raw_connection(&srv).await;
    let _one = raw_settings(&conn).await;
    let _two = raw_settings(&conn).await;
    assert_eq!(closed_with(&conn).await, 0x103);
}

#[tokio::test]
async fn duplicate_pseudo_headers_are_malformed() {
    let _serial = SERIAL.lock().await;
    let srv = start();
    let conn = raw_connection(&srv).await;
    let _control = raw_settings(&conn).await;
    let a = authority(&srv);
    let mut fields = connect_fields(&a, "/p");
    fields.push((":path", "/other"));
    assert_eq!(raw_request(&conn, &fields).await.2, 400);
}

#[tokio::test]
async fn the_session_count_is_already_right_when_closed_resolves() {
    let _serial = SERIAL.lock().await;
    let srv = start();
    for i in 0..20u32 {
        let (client, session) = srv.pair("/count").await;
        client.close(i, b"");
        session.closed().await;
        assert_eq!(srv.server.session_count(), 0, "round {i}");
    }
}

#[tokio::test]
async fn a_session_dropped_after_finishing_a_stream_still_delivers_it() {
    let _serial = SERIAL.lock().await;
    let srv = start();
    let (client, session) = srv.pair("/dropped").await;
    let payload = data(4 << 20, 3);
    let expected = sha256(&payload);
    // The handler writes, finishes and returns: every handle goes.
    tokio::spawn(async move {
        let mut s = session.open_uni().await.unwrap();
        s.write_all(&payload).await.unwrap();
        s.finish().unwrap();
    });
    let mut r = tokio::time::timeout(TIMEOUT, client.accept_uni())
        .await
        .unwrap()
        .unwrap();
    let got = tokio::time::timeout(TIMEOUT, r.read_to_end(8 << 20))
        .await
        .unwrap()
        .expect("the finished stream arrives whole");
    assert_eq!(sha256(&got), expected);
    let closed = tokio::time::timeout(TIMEOUT, client.closed())
        .await
        .unwrap();
    assert!(format!("{closed:?}").contains("Closed(0"), "{closed:?}");
    eventually(Duration::from_secs(5), "sessions back to zero", || {
        srv.server.session_count() == 0
    })
    .await;
}

// ---- Attacks with memory bounds and a bystander ----

#[tokio::test]
async fn thousands_of_streams_for_sessions_that_never_exist() {
    let _serial = SERIAL.lock().await;
    let srv = start();
    let bystander = Bystander::start(&srv).await;
    let before = rss_kib();
    let conn = raw_connection(&srv).await;
    let _control = raw_settings(&conn).await;
    let refused = Arc::new(AtomicU64::new(0));
    let attack = {
        let conn = conn.clone();
        let refused = refused.clone();
        async move {
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..5000u64 {
                let conn = conn.clone();
                let refused = refused.clone();
                tasks.spawn(async move {
                    let Ok(mut s) = conn.open_uni().await else {
                        return;
                    };
                    let mut head = Vec::new();
                    varint(0x54, &mut head);
                    varint(4 * (100_000 + i), &mut head);
                    head.extend_from_slice(&[0u8; 1024]);
                    let _ = s.write_all(&head).await;
                    let _ = s.finish();
                    // Refused (STOP_SENDING) or simply acknowledged and dropped: either way
                    // the server let go of it.
                    if let Ok(Ok(_)) =
                        tokio::time::timeout(Duration::from_secs(30), s.stopped()).await
                    {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                });
                if tasks.len() > 400 {
                    tasks.join_next().await;
                }
            }
            while tasks.join_next().await.is_some() {}
        }
    };
    let (_, ()) = tokio::join!(attack, bystander.check(256 * 1024));
    assert!(conn.close_reason().is_none(), "{:?}", conn.close_reason());
    bystander.check(1 << 20).await;
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
    assert_eq!(
        refused.load(Ordering::Relaxed),
        5000,
        "every stream was let go"
    );
    println!(
        "5000 streams for missing sessions: RSS +{grown} KiB, {} let go",
        refused.load(Ordering::Relaxed)
    );
    conn.close(0u32.into(), b"");
    eventually(
        Duration::from_secs(5),
        "the attacker's connection to go",
        || srv.server.connection_count() == 1,
    )
    .await;
}

#[tokio::test]
async fn rapid_connect_and_reset_reaches_no_one_and_costs_nothing() {
    let _serial = SERIAL.lock().await;
    let srv = start();
    let bystander = Bystander::start(&srv).await;
    let route = srv.server.route("/churn").unwrap();
    let before = rss_kib();
    let a = authority(&srv);
    let mut sent = 0;
    let mut connections = 0;
    while sent < 2000 {
        let conn = raw_connection(&srv).await;
        connections += 1;
        let _control = raw_settings(&conn).await;
        loop {
            let Ok((mut send, mut recv)) = conn.open_bi().await else {
                break;
            };
            if send
                .write_all(&headers_frame(&connect_fields(&a, "/churn")))
                .await
                .is_err()
            {
                break;
            }
            let _ = send.reset(0u32.into());
            let _ = recv.stop(0u32.into());
            sent += 1;
            if conn.close_reason().is_some() || sent >= 2000 {
                break;
            }
        }
        conn.close(0u32.into(), b"");
    }
    // The application never sees one of them.
    let seen = tokio::time::timeout(Duration::from_millis(500), route.accept()).await;
    assert!(
        seen.is_err(),
        "an abandoned request reached the application"
    );
    bystander.check(256 * 1024).await;
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 32 * 1024, "RSS grew by {grown} KiB");
    println!("{sent} CONNECT+reset over {connections} connections: RSS +{grown} KiB");
    eventually(Duration::from_secs(10), "counters back", || {
        srv.server.connection_count() == 1 && srv.server.session_count() == 1
    })
    .await;
}

#[tokio::test]
async fn connect_floods_past_every_limit_are_answered_and_forgotten() {
    let _serial = SERIAL.lock().await;
    let srv = start_with(|c| c.limits.request_queue = 32);
    let bystander = Bystander::start(&srv).await;
    let route = srv.server.route("/flood").unwrap();
    let before = rss_kib();
    let a = authority(&srv);
    let mut conns = Vec::new();
    let mut answers = Vec::new();
    for _ in 0..20 {
        let conn = raw_connection(&srv).await;
        let control = raw_settings(&conn).await;
        for _ in 0..20 {
            let conn = conn.clone();
            let a = a.clone();
            answers.push(tokio::spawn(async move {
                let (s, r, status) = raw_connect(&conn, &a, "/flood", &[]).await;
                (status, s, r)
            }));
            // In order, so that each connection's own limit is what answers past 16.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        conns.push((conn, control));
    }
    // Let every request be answered or queued, then serve the queue.
    tokio::time::sleep(Duration::from_millis(500)).await;
    bystander.check(64 * 1024).await;
    let mut served = 0;
    while let Ok(Some(req)) = tokio::time::timeout(Duration::from_millis(300), route.accept()).await
    {
        req.accept().await.unwrap().close(1, "served");
        served += 1;
    }
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    let mut streams = Vec::new();
    for a in answers {
        let (status, s, r) = tokio::time::timeout(TIMEOUT, a).await.unwrap().unwrap();
        *statuses.entry(status).or_default() += 1;
        streams.push((s, r));
    }
    println!("400 CONNECTs from 20 connections: {statuses:?}");
    assert_eq!(served, 32, "the route queue holds 32");
    // The first two connections fill the queue with 16 each (their 17th to 20th get 429:
    // 16 pending per connection); every later request finds the queue full (503).
    assert_eq!(statuses.get(&200), Some(&32));
    assert_eq!(statuses.get(&429), Some(&(2 * 4)));
    assert_eq!(statuses.get(&503), Some(&(18 * 20)));
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
    drop(streams);
    for (conn, _) in &conns {
        conn.close(0u32.into(), b"");
    }
    bystander.check(64 * 1024).await;
    eventually(Duration::from_secs(10), "counters back", || {
        srv.server.connection_count() == 1 && srv.server.session_count() == 1
    })
    .await;
}

#[tokio::test]
async fn slowloris_streams_and_headers_are_cut_off() {
    let _serial = SERIAL.lock().await;
    let srv = start_with(|c| c.limits.request_timeout = Duration::from_secs(1));
    let bystander = Bystander::start(&srv).await;
    let conn = raw_connection(&srv).await;
    let _control = raw_settings(&conn).await;
    let t = Instant::now();
    let mut bidi = Vec::new();
    for i in 0..100 {
        let (mut s, r) = conn.open_bi().await.unwrap();
        if i % 2 == 0 {
            s.write_all(&[0x01]).await.unwrap(); // a HEADERS frame that never comes
        } else {
            let mut head = Vec::new();
            varint(0x01, &mut head);
            varint(1000, &mut head);
            head.extend_from_slice(&[0, 0]);
            s.write_all(&head).await.unwrap(); // a header block that trickles
        }
        bidi.push((s, r));
    }
    let mut uni = Vec::new();
    for _ in 0..50 {
        let mut s = conn.open_uni().await.unwrap();
        s.write_all(&[0x40]).await.unwrap(); // half a stream type
        uni.push(s);
    }
    let trickle = async {
        for _ in 0..10 {
            for (s, _) in bidi.iter_mut().skip(1).step_by(2) {
                let _ = s.write_all(&[0x20]).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let ((), ()) = tokio::join!(trickle, bystander.check(256 * 1024));
    for (_, mut r) in bidi {
        let mut b = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(5), r.read(&mut b)).await {
            Ok(Err(quinn::ReadError::Reset(code))) => {
                assert_eq!(code.into_inner(), 0x10d, "H3_REQUEST_INCOMPLETE")
            }
            other => panic!("a slow request was not cut off: {other:?}"),
        }
    }
    println!("100 slow requests cut off after {:?}", t.elapsed());
    // Half a stream type holds nothing and waits for the client's stream limit only (a
    // browser may open its QPACK streams early); the connection itself goes once it has
    // no session for the sessionless timeout.
    drop(uni);
    assert_eq!(closed_with(&conn).await, 0x100);
    bystander.check(64 * 1024).await;
}

#[tokio::test]
async fn malformed_and_endless_capsules_cost_bounded_memory() {
    let _serial = SERIAL.lock().await;
    let srv = start();
    let bystander = Bystander::start(&srv).await;
    let before = rss_kib();
    let conn = raw_connection(&srv).await;
    let _control = raw_settings(&conn).await;
    let a = authority(&srv);
    // 32 MiB of capsules nobody acts on, then a close: the session reads through them.
    let ((mut send, _recv, status), session) =
        tokio::join!(raw_connect(&conn, &a, "/caps", &[]), srv.accept());
    assert_eq!(status, 200);
    let junk = capsule_frame(0x4242, &vec![1u8; 64 * 1024]);
    for _ in 0..512 {
        send.write_all(&junk).await.unwrap();
    }
    let mut close = Vec::new();
    close.put_u32(11);
    close.put_slice(b"after junk");
    send.write_all(&capsule_frame(0x2843, &close))
        .await
        .unwrap();
    let info = tokio::time::timeout(TIMEOUT, session.closed())
        .await
        .unwrap();
    assert_eq!((info.code, info.reason.as_str()), (11, "after junk"));
    // A close reason over 1024 bytes is a protocol error that ends that session only.
    let ((mut send, mut recv, status), session) =
        tokio::join!(raw_connect(&conn, &a, "/caps", &[]), srv.accept());
    assert_eq!(status, 200);
    let mut long = Vec::new();
    long.put_u32(1);
    long.put_slice(&[b'x'; 2000]);
    send.write_all(&capsule_frame(0x2843, &long)).await.unwrap();
    let info = tokio::time::timeout(TIMEOUT, session.closed())
        .await
        .unwrap();
    assert!(info.reason.contains("protocol error"), "{}", info.reason);
    let mut b = [0u8; 64];
    while let Ok(Some(_)) = recv.read(&mut b).await {}
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 32 * 1024, "RSS grew by {grown} KiB");
    bystander.check(256 * 1024).await;
}

#[tokio::test]
async fn datagram_floods_for_real_and_unknown_sessions_are_dropped_within_bounds() {
    let _serial = SERIAL.lock().await;
    let srv = start();
    let bystander = Bystander::start(&srv).await;
    let before = rss_kib();
    let conn = raw_connection(&srv).await;
    let _control = raw_settings(&conn).await;
    let a = authority(&srv);
    let ((_s, _r, status), session) =
        tokio::join!(raw_connect(&conn, &a, "/flood", &[]), srv.accept());
    assert_eq!(status, 200);
    let id = session.id();
    let mut sent = 0u64;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        for k in 0..64u64 {
            // Every other datagram names a session that does not exist.
            let target = if k % 2 == 0 { id } else { 4 * (5000 + k) };
            let mut d = Vec::new();
            varint(target / 4, &mut d);
            d.extend_from_slice(&[0xaa; 1000]);
            if conn.send_datagram(d.into()).is_ok() {
                sent += 1;
            }
        }
        tokio::task::yield_now().await;
    }
    bystander.check(256 * 1024).await;
    let grown = rss_kib().saturating_sub(before);
    let dropped = session.stats().datagrams_dropped;
    println!("{sent} datagrams in 3 s: RSS +{grown} KiB, {dropped} dropped by the full queue");
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
    assert!(dropped > 0, "the unread queue must have overflowed");
    let mut queued = 0;
    while session.try_recv_datagram().is_some() {
        queued += 1;
    }
    assert!(queued <= 1024, "{queued} queued");
}

#[tokio::test]
async fn clients_that_vanish_mid_transfer_are_forgotten() {
    let _serial = SERIAL.lock().await;
    let srv = start_with(|c| {
        c.idle_timeout = Some(Duration::from_secs(1));
        c.keep_alive = Some(Duration::from_millis(300));
    });
    let bystander = Bystander::start(&srv).await;
    let route = srv.server.route("/upload").unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let r = received.clone();
    tokio::spawn(async move {
        while let Some(req) = route.accept().await {
            let session = req.accept().await.unwrap();
            let r = r.clone();
            tokio::spawn(async move {
                while let Ok((_, mut recv)) = session.accept_bi().await {
                    let r = r.clone();
                    tokio::spawn(async move {
                        while let Ok(Some(c)) = recv.read_chunk(64 * 1024).await {
                            r.fetch_add(c.len() as u64, Ordering::Relaxed);
                        }
                    });
                }
            });
        }
    });
    // The clients live on a runtime of their own that stops without a word: no close,
    // no reset, their socket simply goes silent.
    let client = srv.client();
    let url = srv.url("/upload");
    let vanished = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for _ in 0..10 {
                let session = client.connect(url.clone()).await.unwrap();
                tokio::spawn(async move {
                    let (mut send, _recv) = session.open_bi().await.unwrap();
                    let chunk = vec![5u8; 64 * 1024];
                    for _ in 0..128 {
                        if send.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        });
        rt.shutdown_background();
    });
    vanished.await.unwrap();
    assert!(
        received.load(Ordering::Relaxed) > 0,
        "the uploads had started"
    );
    eventually(Duration::from_secs(10), "vanished sessions to end", || {
        srv.server.session_count() == 1 && srv.server.connection_count() == 1
    })
    .await;
    bystander.check(256 * 1024).await;
}
