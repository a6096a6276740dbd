//! Session lifecycle against an independent client: close codes both ways, datagrams,
//! draining, stats, idle timeout, graceful shutdown.

mod common;

use std::time::Duration;

use common::*;
use ferrovia::{CloseInitiator, SessionError};

#[tokio::test]
async fn client_close_code_and_reason_reach_the_server() {
    let srv = start();
    let (client, session) = srv.pair("/close").await;
    client.close(4321, b"client says bye");
    let info = tokio::time::timeout(TIMEOUT, session.closed())
        .await
        .unwrap();
    assert_eq!(info.code, 4321);
    assert_eq!(info.reason, "client says bye");
    assert_eq!(info.initiator, CloseInitiator::Remote);
    // closed() resolves again with the same answer; later operations fail with it.
    assert_eq!(session.closed().await, info);
    assert_eq!(
        session.open_uni().await.unwrap_err(),
        SessionError::Closed(info.clone())
    );
    assert_eq!(
        session.recv_datagram().await.unwrap_err(),
        SessionError::Closed(info)
    );
}

#[tokio::test]
async fn server_close_code_and_reason_reach_the_client() {
    let srv = start();
    let (client, session) = srv.pair("/close").await;
    // An over-long reason is cut to 1024 bytes on a character boundary.
    let reason = "ż".repeat(600);
    session.close(0xdead_beef, &reason);
    let err = tokio::time::timeout(TIMEOUT, client.closed())
        .await
        .unwrap();
    match err {
        web_transport_quinn::SessionError::WebTransportError(
            web_transport_quinn::WebTransportError::Closed(code, got),
        ) => {
            assert_eq!(code, 0xdead_beef);
            assert_eq!(got.len(), 1024);
            assert!(reason.starts_with(&got));
        }
        other => panic!("expected a close capsule, got {other:?}"),
    }
    let info = session.closed().await;
    assert_eq!(
        (info.code, info.initiator),
        (0xdead_beef, CloseInitiator::Local)
    );
}

#[tokio::test]
async fn dropping_every_handle_closes_with_code_zero() {
    let srv = start();
    let (client, session) = srv.pair("/drop").await;
    drop(session);
    let err = tokio::time::timeout(TIMEOUT, client.closed())
        .await
        .unwrap();
    assert!(
        matches!(
            err,
            web_transport_quinn::SessionError::WebTransportError(
                web_transport_quinn::WebTransportError::Closed(0, _)
            )
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn datagrams_echo_and_oversized_ones_are_refused() {
    let srv = start();
    let (client, session) = srv.pair("/dgram").await;
    let max = session.max_datagram_size();
    assert!(max > 1000, "max datagram size {max}");
    let server = session.clone();
    tokio::spawn(async move {
        while let Ok(d) = server.recv_datagram().await {
            server.send_datagram(&d).await.unwrap();
        }
    });
    let mut got = 0;
    for i in 0..50u8 {
        client.send_datagram(vec![i; 100].into()).unwrap();
        if let Ok(Ok(d)) =
            tokio::time::timeout(Duration::from_millis(500), client.read_datagram()).await
        {
            assert_eq!(d.len(), 100);
            assert!(d.iter().all(|b| *b == d[0]));
            got += 1;
        }
    }
    assert!(
        got >= 45,
        "only {got} of 50 datagrams came back on loopback"
    );
    // Path MTU discovery may have grown the limit meanwhile: ask again.
    let max = session.max_datagram_size();
    let err = session.send_datagram(&vec![0u8; 70_000]).await.unwrap_err();
    match err {
        SessionError::DatagramTooLarge {
            size: 70_000,
            max: m,
        } => assert!(m >= max, "{m} < {max}"),
        other => panic!("expected DatagramTooLarge, got {other:?}"),
    }
    // The session is unharmed by the refusal.
    session.send_datagram(&vec![1u8; 1000]).await.unwrap();
    let d = tokio::time::timeout(TIMEOUT, client.read_datagram())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.len(), 1000);
}

#[tokio::test]
async fn drain_is_sent_and_stats_are_live() {
    let srv = start();
    let (client, session) = srv.pair("/drain").await;
    let (mut s, _r) = client.open_bi().await.unwrap();
    s.write_all(&data(100_000, 5)).await.unwrap();
    let (_ss, mut sr) = session.accept_bi().await.unwrap();
    let mut buf = vec![0u8; 100_000];
    sr.read_exact(&mut buf).await.unwrap();
    let stats = session.stats();
    assert!(stats.bytes_received >= 100_000, "{stats:?}");
    assert!(
        stats.rtt > Duration::ZERO && stats.rtt < Duration::from_secs(1),
        "{stats:?}"
    );
    assert!(
        stats.congestion_window > 0 && stats.packets_sent > 0,
        "{stats:?}"
    );
    session.drain();
    // Draining does not close: the session still works afterwards.
    session.send_datagram(b"still here").await.unwrap();
    assert_eq!(&client.read_datagram().await.unwrap()[..], b"still here");
}

#[tokio::test]
async fn a_vanished_client_ends_the_session_by_idle_timeout() {
    let srv = start_with(|c| {
        c.idle_timeout = Some(Duration::from_millis(800));
        c.keep_alive = None;
    });
    let url = srv.url("/vanish");
    let hash = srv.cert.sha256().to_vec();
    // The client lives on its own runtime, which is dropped without closing anything:
    // no packet tells the server it went away.
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let client = rt.block_on(async {
            web_transport_quinn::ClientBuilder::new()
                .with_server_certificate_hashes(vec![hash])
                .unwrap()
        });
        let session = rt.block_on(client.connect(url)).unwrap();
        std::mem::forget(session);
        std::mem::forget(client);
        drop(rt);
    });
    let session = srv.accept().await;
    tokio::task::spawn_blocking(move || handle.join().unwrap())
        .await
        .unwrap();
    let info = tokio::time::timeout(TIMEOUT, session.closed())
        .await
        .unwrap();
    assert_eq!(info.initiator, CloseInitiator::Connection, "{info:?}");
    // The server still serves others.
    let (_c, s) = srv.pair("/after").await;
    assert!(s.close_info().is_none());
}

#[tokio::test]
async fn graceful_shutdown_drains_then_closes() {
    let srv = start();
    let (client, session) = srv.pair("/bye").await;
    let watcher = session.clone();
    let server = srv.server.clone();
    let closing = tokio::spawn(async move { server.close(Duration::from_millis(300)).await });
    let info = tokio::time::timeout(TIMEOUT, watcher.closed())
        .await
        .unwrap();
    assert_eq!(info.reason, "server shutting down");
    closing.await.unwrap();
    assert!(tokio::time::timeout(TIMEOUT, client.closed()).await.is_ok());
    assert!(
        srv.server.accept().await.is_none(),
        "accept ends after close"
    );
    assert_eq!(srv.server.session_count(), 0);
}

#[tokio::test]
async fn two_sessions_of_one_client_stay_apart() {
    let srv = start();
    let (a, sa) = srv.pair("/a").await;
    let (b, sb) = srv.pair("/b").await;
    assert_eq!(srv.server.session_count(), 2);
    let (mut s, _r) = a.open_bi().await.unwrap();
    s.write_all(b"for a").await.unwrap();
    s.finish().unwrap();
    b.send_datagram(b"for b".to_vec().into()).unwrap();
    let (_x, mut r) = sa.accept_bi().await.unwrap();
    assert_eq!(r.read_to_end(100).await.unwrap(), b"for a");
    assert_eq!(&sb.recv_datagram().await.unwrap()[..], b"for b");
    a.close(1, b"a done");
    assert_eq!(sa.closed().await.code, 1);
    assert!(
        sb.close_info().is_none(),
        "closing one session leaves the other"
    );
    sb.close(2, "b done");
    drop(b);
}

#[tokio::test]
async fn datagrams_without_waiting_both_ways() {
    let srv = start();
    let (client, session) = srv.pair("/dgram-now").await;
    assert!(session.try_recv_datagram().is_none(), "nothing queued yet");
    for i in 0..20u8 {
        client.send_datagram(vec![i; 200].into()).unwrap();
    }
    // Wait for the first, then take the rest of what is queued without waiting.
    let first = tokio::time::timeout(TIMEOUT, session.recv_datagram())
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut seen = vec![first[0]];
    while let Some(d) = session.try_recv_datagram() {
        assert_eq!(d.len(), 200);
        seen.push(d[0]);
    }
    assert!(
        seen.len() >= 18,
        "{} of 20 datagrams arrived on loopback",
        seen.len()
    );
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order: {seen:?}");

    session.try_send_datagram(b"now").unwrap();
    let d = tokio::time::timeout(TIMEOUT, client.read_datagram())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&d[..], b"now");
    let max = session.max_datagram_size();
    match session.try_send_datagram(&vec![0u8; max + 1]).unwrap_err() {
        SessionError::DatagramTooLarge { size, .. } => assert_eq!(size, max + 1),
        other => panic!("expected DatagramTooLarge, got {other:?}"),
    }
    session.close(1, "done");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(matches!(
        session.try_send_datagram(b"late"),
        Err(SessionError::Closed(_))
    ));
}

#[tokio::test]
async fn a_pending_ready_with_wait_takes_a_wider_interest_without_ending() {
    use ferrovia::{Interest, Readiness};
    use std::sync::Arc;
    let srv = start();
    let (client, session) = srv.pair("/ready-with").await;
    // One wait, first only for datagrams.
    let interest = Arc::new(Interest::new(Readiness::DATAGRAM));
    let waiting = {
        let (session, interest) = (session.clone(), interest.clone());
        tokio::spawn(async move { session.ready_with(&interest).await })
    };
    // A unidirectional stream is not what it waits for: it keeps waiting.
    let mut uni = client.open_uni().await.unwrap();
    uni.write_all(b"uni").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "ready_with answered for a kind it did not ask for"
    );
    // Widened while pending: the same wait now reports the stream.
    interest.set(Readiness::DATAGRAM | Readiness::UNI);
    let r = tokio::time::timeout(TIMEOUT, waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r, Readiness::UNI);
    assert!(session.try_accept_uni().unwrap().is_some());
    // And the end is reported whatever the interest.
    interest.set(Readiness::NONE);
    client.close(5, b"bye");
    let r = tokio::time::timeout(TIMEOUT, session.ready_with(&interest))
        .await
        .unwrap();
    assert!(r.contains(Readiness::CLOSED), "{r:?}");
}

#[tokio::test]
async fn ready_reports_what_is_queued_and_the_end_for_the_synchronous_tries() {
    use ferrovia::Readiness;
    let srv = start();
    let (client, session) = srv.pair("/ready").await;
    let all = Readiness::BI | Readiness::UNI | Readiness::DATAGRAM | Readiness::DRAINING;
    // Nothing queued: no answer, and the tries find nothing.
    let quiet = tokio::time::timeout(Duration::from_millis(200), session.ready(all)).await;
    assert!(
        quiet.is_err(),
        "ready answered {quiet:?} with nothing queued"
    );
    assert!(session.try_accept_bi().unwrap().is_none());
    assert!(session.try_accept_uni().unwrap().is_none());

    // A unidirectional stream: reported as UNI only, taken once.
    let mut uni = client.open_uni().await.unwrap();
    uni.write_all(b"uni").await.unwrap();
    let r = tokio::time::timeout(TIMEOUT, session.ready(Readiness::BI | Readiness::UNI))
        .await
        .unwrap();
    assert_eq!(r, Readiness::UNI);
    let mut recv = session
        .try_accept_uni()
        .unwrap()
        .expect("a queued uni stream");
    assert!(session.try_accept_uni().unwrap().is_none());
    let mut got = [0u8; 3];
    recv.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"uni");

    // Asked only for what is not there, ready keeps waiting; then a bidi stream and a
    // datagram arrive and are reported together or one after the other.
    let (mut send, _client_recv) = client.open_bi().await.unwrap();
    send.write_all(b"bidi").await.unwrap();
    client.send_datagram(b"dgram".to_vec().into()).unwrap();
    let mut seen = Readiness::NONE;
    while !seen.contains(Readiness::BI | Readiness::DATAGRAM) {
        let r = tokio::time::timeout(TIMEOUT, session.ready(Readiness::BI | Readiness::DATAGRAM))
            .await
            .unwrap();
        assert!(
            !r.is_empty() && (Readiness::BI | Readiness::DATAGRAM).contains(r),
            "{r:?}"
        );
        if r.contains(Readiness::BI) {
            assert!(session.try_accept_bi().unwrap().is_some());
        }
        if r.contains(Readiness::DATAGRAM) {
            assert_eq!(&session.try_recv_datagram().unwrap()[..], b"dgram");
        }
        seen = seen | r;
    }

    // The end: reported whatever was asked for, at once and again; the tries then fail
    // with the close the client sent.
    let waiting = {
        let session = session.clone();
        tokio::spawn(async move { session.ready(Readiness::DRAINING).await })
    };
    client.close(77, b"done");
    let r = tokio::time::timeout(TIMEOUT, waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(r.contains(Readiness::CLOSED), "{r:?}");
    assert!(!r.contains(Readiness::DRAINING), "{r:?}");
    let r = tokio::time::timeout(TIMEOUT, session.ready(Readiness::BI))
        .await
        .unwrap();
    assert_eq!(r, Readiness::BI | Readiness::CLOSED);
    match session.try_accept_bi() {
        Err(SessionError::Closed(info)) => assert_eq!((info.code, &info.reason[..]), (77, "done")),
        other => panic!("expected the close, got {other:?}"),
    }
    assert!(matches!(
        session.try_accept_uni(),
        Err(SessionError::Closed(_))
    ));
}
