//! Streams against an independent client: echo, large transfers, many streams, reset and
//! stop codes both ways.

mod common;

use common::*;
use ferrovia::StreamError;

#[tokio::test]
async fn bidi_echo_of_64_mib_keeps_every_byte() {
    let srv = start();
    let (client, session) = srv.pair("/big").await;
    let server = tokio::spawn(async move {
        let (mut send, mut recv) = session.accept_bi().await.unwrap();
        let mut total = 0usize;
        while let Some(chunk) = recv.read_chunk(1 << 16).await.unwrap() {
            total += chunk.len();
            send.write_chunk(chunk).await.unwrap();
        }
        send.finish().unwrap();
        (total, session)
    });
    let payload = data(64 << 20, 1);
    let expected = sha256(&payload);
    let (mut send, mut recv) = client.open_bi().await.unwrap();
    let writer = async {
        for chunk in payload.chunks(256 * 1024) {
            send.write_all(chunk).await.unwrap();
        }
        send.finish().unwrap();
    };
    let reader = async { recv.read_to_end(128 << 20).await.unwrap() };
    let ((), echoed) = tokio::time::timeout(TIMEOUT * 4, async { tokio::join!(writer, reader) })
        .await
        .expect("transfer timed out");
    assert_eq!(echoed.len(), payload.len());
    assert_eq!(sha256(&echoed), expected);
    let (total, _session) = server.await.unwrap();
    assert_eq!(total, 64 << 20);
}

#[tokio::test]
async fn two_hundred_concurrent_streams_each_echo_their_own_bytes() {
    let srv = start();
    let (client, session) = srv.pair("/many").await;
    tokio::spawn(async move {
        while let Ok((mut send, mut recv)) = session.accept_bi().await {
            tokio::spawn(async move {
                let data = recv.read_to_end(1 << 20).await.unwrap();
                send.write_all(&data).await.unwrap();
                send.finish().unwrap();
            });
        }
    });
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let payload = data(16 * 1024 + i as usize * 37, i + 10);
            let (mut send, mut recv) = client.open_bi().await.unwrap();
            send.write_all(&payload).await.unwrap();
            send.finish().unwrap();
            let back = recv.read_to_end(1 << 20).await.unwrap();
            assert_eq!(sha256(&back), sha256(&payload), "stream {i}");
        }));
    }
    tokio::time::timeout(TIMEOUT, async {
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await
    .expect("streams timed out");
}

#[tokio::test]
async fn uni_streams_both_ways_and_server_opened_bidi() {
    let srv = start();
    let (client, session) = srv.pair("/uni").await;
    // client -> server uni
    let mut up = client.open_uni().await.unwrap();
    up.write_all(b"from client").await.unwrap();
    up.finish().unwrap();
    let mut r = session.accept_uni().await.unwrap();
    assert_eq!(r.read_to_end(1024).await.unwrap(), b"from client");
    // server -> client uni
    let mut down = session.open_uni().await.unwrap();
    down.write_all(b"from server").await.unwrap();
    down.finish().unwrap();
    let mut r = client.accept_uni().await.unwrap();
    assert_eq!(r.read_to_end(1024).await.unwrap(), b"from server");
    // server-opened bidi
    let (mut s, mut r) = session.open_bi().await.unwrap();
    s.write_all(b"ping").await.unwrap();
    s.finish().unwrap();
    let (mut cs, mut cr) = client.accept_bi().await.unwrap();
    assert_eq!(cr.read_to_end(1024).await.unwrap(), b"ping");
    cs.write_all(b"pong").await.unwrap();
    cs.finish().unwrap();
    assert_eq!(r.read_to_end(1024).await.unwrap(), b"pong");
    // priorities are accepted on open streams
    let (s2, _r2) = session.open_bi().await.unwrap();
    s2.set_priority(7).unwrap();
    assert_eq!(s2.priority().unwrap(), 7);
}

#[tokio::test]
async fn reset_and_stop_codes_travel_both_ways() {
    let srv = start();
    let (client, session) = srv.pair("/codes").await;

    // Client resets its send side and stops its receive side.
    let (mut cs, mut cr) = client.open_bi().await.unwrap();
    cs.write_all(b"x").await.unwrap();
    let (mut ss, mut sr) = session.accept_bi().await.unwrap();
    let mut one = [0u8; 1];
    sr.read_exact(&mut one).await.unwrap();
    cs.reset(4001).unwrap();
    cr.stop(4002).unwrap();
    let err = loop {
        match sr.read(&mut one).await {
            Ok(Some(_)) => continue,
            other => break other.unwrap_err(),
        }
    };
    assert_eq!(err, StreamError::Reset { code: 4001 });
    assert_eq!(ss.stopped().await.unwrap(), Some(4002));
    let err = loop {
        match ss.write(b"more").await {
            Ok(_) => tokio::task::yield_now().await,
            Err(e) => break e,
        }
    };
    assert_eq!(err, StreamError::Stopped { code: 4002 });

    // Server resets and stops; the client sees the same codes.
    let (mut cs, mut cr) = client.open_bi().await.unwrap();
    cs.write_all(b"y").await.unwrap();
    let (mut ss, mut sr) = session.accept_bi().await.unwrap();
    sr.read_exact(&mut one).await.unwrap();
    ss.reset(0xfeed_beef).unwrap();
    sr.stop(77).unwrap();
    let mut buf = [0u8; 8];
    match cr.read(&mut buf).await {
        Err(web_transport_quinn::ReadError::Reset(code)) => assert_eq!(code, 0xfeed_beef),
        other => panic!("expected reset, got {other:?}"),
    }
    assert_eq!(cs.stopped().await.unwrap(), Some(77));

    // Writing to a stream that is already finished is a clear error, not a panic.
    let (mut s3, _r3) = session.open_bi().await.unwrap();
    s3.finish().unwrap();
    assert_eq!(
        s3.write(b"late").await.unwrap_err(),
        StreamError::ClosedStream
    );
}

#[tokio::test]
async fn read_to_end_enforces_its_limit() {
    let srv = start();
    let (client, session) = srv.pair("/limit").await;
    let (mut cs, _cr) = client.open_bi().await.unwrap();
    cs.write_all(&data(10_000, 3)).await.unwrap();
    cs.finish().unwrap();
    let (_ss, mut sr) = session.accept_bi().await.unwrap();
    assert_eq!(
        sr.read_to_end(1000).await.unwrap_err(),
        StreamError::TooLong(1000)
    );
}

#[tokio::test]
async fn read_available_coalesces_packets_and_keeps_the_end_and_resets() {
    let srv = start();
    let (client, session) = srv.pair("/coalesce").await;
    let payload = data(4 << 20, 7);
    let expected = sha256(&payload);
    let (mut send, _recv) = client.open_bi().await.unwrap();
    let writer = tokio::spawn(async move {
        send.write_all(&payload).await.unwrap();
        send.finish().unwrap();
        send
    });
    let (_s, mut recv) = session.accept_bi().await.unwrap();
    // Let most of the transfer arrive so that reads find many packets waiting.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut got = Vec::new();
    let mut calls = 0;
    while let Some(chunk) = recv.read_available(256 * 1024).await.unwrap() {
        assert!(chunk.len() <= 256 * 1024);
        got.extend_from_slice(&chunk);
        calls += 1;
    }
    assert_eq!(sha256(&got), expected);
    // Packets carry ~1.2 KB each (3,500 for 4 MiB); coalescing needs far fewer calls.
    assert!(calls < 1000, "{calls} calls for 4 MiB");
    assert!(
        recv.read_available(1024).await.unwrap().is_none(),
        "the end stays the end"
    );
    let _send = writer.await.unwrap();

    // A reset behind buffered data: the data first, then the code.
    let (mut send, _recv) = client.open_bi().await.unwrap();
    send.write_all(&[1u8; 5000]).await.unwrap();
    let (_s, mut recv) = session.accept_bi().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    send.reset(9u32).unwrap();
    let mut total = 0;
    let err = loop {
        match recv.read_available(64 * 1024).await {
            Ok(Some(c)) => total += c.len(),
            Ok(None) => panic!("a reset stream must not end cleanly"),
            Err(e) => break e,
        }
    };
    assert!(total <= 5000);
    assert_eq!(err, StreamError::Reset { code: 9 });
}

/// Echoes every bidirectional stream of `session` with `tokio::io::copy`, through the
/// streams' `AsyncRead` and `AsyncWrite`, then finishes it with `shutdown`.
fn copy_echo(session: ferrovia::Session) {
    tokio::spawn(async move {
        while let Ok((mut send, mut recv)) = session.accept_bi().await {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                tokio::io::copy(&mut recv, &mut send).await.unwrap();
                send.shutdown().await.unwrap();
            });
        }
    });
}

#[tokio::test]
async fn streams_are_tokio_async_read_and_write() {
    let srv = start();
    let (client, session) = srv.pair("/copy").await;
    copy_echo(session.clone());
    let payload = data(5 << 20, 7);
    let (mut send, mut recv) = client.open_bi().await.unwrap();
    let writer = async {
        for chunk in payload.chunks(100_000) {
            send.write_all(chunk).await.unwrap();
        }
        send.finish().unwrap();
    };
    let reader = async { recv.read_to_end(16 << 20).await.unwrap() };
    let ((), echoed) = tokio::time::timeout(TIMEOUT, async { tokio::join!(writer, reader) })
        .await
        .expect("echo timed out");
    assert_eq!(sha256(&echoed), sha256(&payload));

    // A reset reaches a reader as ConnectionReset carrying the code; a stop reaches a
    // writer as BrokenPipe carrying its code. (A second session: the first one's streams
    // all go to the echo.)
    let (client, session) = srv.pair("/errors").await;
    let (mut c_send, _c_recv) = client.open_bi().await.unwrap();
    c_send.write_all(b"partial").await.unwrap();
    let (_s_send, mut s_recv) = session.accept_bi().await.unwrap();
    c_send.reset(77u32).unwrap();
    let mut sink = Vec::new();
    let err = loop {
        let mut buf = [0u8; 64];
        // The trait's read, not the inherent one of the same name.
        let read = tokio::io::AsyncReadExt::read(&mut s_recv, &mut buf);
        match tokio::time::timeout(TIMEOUT, read).await.unwrap() {
            Ok(0) => panic!("a reset stream ended cleanly"),
            Ok(n) => sink.extend_from_slice(&buf[..n]),
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<StreamError>());
    assert!(
        matches!(inner, Some(StreamError::Reset { code: 77 })),
        "{err:?}"
    );

    let (mut s_send, _s_recv2) = session.open_bi().await.unwrap();
    s_send.write_all(b"hello").await.unwrap();
    let (_c_send2, mut c_recv2) = client.accept_bi().await.unwrap();
    c_recv2.stop(33u32).unwrap();
    let err = loop {
        let write = tokio::io::AsyncWriteExt::write(&mut s_send, &[0u8; 4096]);
        match tokio::time::timeout(TIMEOUT, write).await.unwrap() {
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<StreamError>());
    assert!(
        matches!(inner, Some(StreamError::Stopped { code: 33 })),
        "{err:?}"
    );
}

#[tokio::test]
async fn try_write_takes_what_the_window_allows_and_try_read_what_arrived() {
    let srv = start_with(|c| c.limits.stream_receive_window = 256 * 1024);
    let (client, session) = srv.pair("/try").await;
    let payload = data(8 << 20, 3);
    let expected = sha256(&payload);

    // Client to server: whatever has arrived is taken without waiting; the end comes from
    // the awaited read after the tries run dry.
    let (mut send, _recv) = client.open_bi().await.unwrap();
    let upload = payload.clone();
    let writer = tokio::spawn(async move {
        send.write_all(&upload).await.unwrap();
        send.finish().unwrap();
        send
    });
    let (_accepted_send, mut recv) = session.accept_bi().await.unwrap();
    let (mut got, mut tried) = (Vec::new(), 0);
    loop {
        if let Some(chunk) = recv.try_read_available(64 * 1024) {
            assert!(!chunk.is_empty() && chunk.len() <= 64 * 1024);
            got.extend_from_slice(&chunk);
            tried += 1;
            continue;
        }
        match tokio::time::timeout(TIMEOUT, recv.read_available(64 * 1024))
            .await
            .unwrap()
        {
            Ok(Some(chunk)) => got.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => panic!("read failed: {e}"),
        }
    }
    assert_eq!(sha256(&got), expected);
    assert!(tried > 0, "no data was ever found waiting");
    assert!(
        recv.try_read_available(1).is_none(),
        "the end stays with the awaited read"
    );
    let _send = writer.await.unwrap();

    // Server to client with the client not reading: try_write takes no more than the
    // client's window, then nothing, and the rest goes by awaited writes.
    let (mut server_send, _server_recv) = session.open_bi().await.unwrap();
    let first = server_send.try_write(&payload).unwrap();
    assert!(first > 0 && first <= 4 << 20, "took {first} bytes at once");
    let mut taken = first;
    // The window is spent (the client reads nothing): later tries take nothing.
    for _ in 0..3 {
        let n = server_send.try_write(&payload[taken..]).unwrap();
        taken += n;
        if n == 0 {
            break;
        }
    }
    assert_eq!(server_send.try_write(&payload[taken..]).unwrap(), 0);
    let rest = payload[taken..].to_vec();
    let sender = tokio::spawn(async move {
        server_send.write_all(&rest).await.unwrap();
        server_send.finish().unwrap();
        server_send
    });
    let (_client_send, mut client_recv) = tokio::time::timeout(TIMEOUT, client.accept_bi())
        .await
        .unwrap()
        .unwrap();
    let echoed = tokio::time::timeout(TIMEOUT, client_recv.read_to_end(16 << 20))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sha256(&echoed), expected);
    let _ = sender.await.unwrap();
}

/// Writes `payload` with its QUIC varint length in front, encoded here rather than by
/// Ferrovia so the test checks the wire format, not one encoder against its own decoder.
fn framed(payload: &[u8]) -> Vec<u8> {
    let n = payload.len() as u64;
    let mut out = match n {
        0..=63 => vec![n as u8],
        64..=16_383 => (0x4000 | n as u16).to_be_bytes().to_vec(),
        _ => (0x8000_0000 | n as u32).to_be_bytes().to_vec(),
    };
    out.extend_from_slice(payload);
    out
}

#[tokio::test]
async fn messages_on_a_stream_arrive_whole_both_ways() {
    let srv = start();
    let (client, session) = srv.pair("/messages").await;
    let server = tokio::spawn(async move {
        let (mut send, recv) = session.accept_bi().await.unwrap();
        let mut messages = recv.into_messages(100_000);
        let mut count = 0;
        while let Some(m) = messages.next().await.unwrap() {
            send.send_message(&m).await.unwrap();
            count += 1;
        }
        send.finish().unwrap();
        (count, session)
    });
    let sizes: Vec<usize> = (0..300).map(|i| (i * 7919) % 70_000).collect();
    let mut wire = Vec::new();
    for (i, n) in sizes.iter().enumerate() {
        let m = data(*n, i as u64);
        wire.extend_from_slice(&framed(&m));
    }
    let (mut send, mut recv) = client.open_bi().await.unwrap();
    let writer = async {
        // Odd-sized writes so that messages straddle packets and reads.
        for chunk in wire.chunks(4099) {
            send.write_all(chunk).await.unwrap();
        }
        send.finish().unwrap();
    };
    let reader = async { recv.read_to_end(64 << 20).await.unwrap() };
    let ((), echoed) = tokio::time::timeout(TIMEOUT * 2, async { tokio::join!(writer, reader) })
        .await
        .expect("echo timed out");
    // The echo is framed the same way, message for message.
    assert_eq!(echoed.len(), wire.len());
    assert_eq!(sha256(&echoed), sha256(&wire));
    let (count, session) = server.await.unwrap();
    assert_eq!(count, sizes.len());

    // A message above the reader's limit fails at its prefix; the end of the stream inside a
    // message is an error, not a short message.
    let (mut send, _r) = client.open_bi().await.unwrap();
    send.write_all(&framed(&data(200_000, 1))[..4])
        .await
        .unwrap();
    let (_s, recv) = session.accept_bi().await.unwrap();
    let mut messages = recv.into_messages(100_000);
    assert_eq!(
        messages.next().await.unwrap_err(),
        StreamError::MessageTooLarge {
            size: 200_000,
            max: 100_000
        }
    );
    let (mut send, _r) = client.open_bi().await.unwrap();
    send.write_all(&framed(b"whole")).await.unwrap();
    send.write_all(&framed(b"cut short")[..4]).await.unwrap();
    send.finish().unwrap();
    let (_s, recv) = session.accept_bi().await.unwrap();
    let mut messages = recv.into_messages(100);
    assert_eq!(&messages.next().await.unwrap().unwrap()[..], b"whole");
    assert_eq!(
        messages.next().await.unwrap_err(),
        StreamError::MessageTruncated {
            received: 3,
            expected: Some(9)
        }
    );
}
