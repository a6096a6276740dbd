//! Two connections wired back to back through `poll_transmit` / `handle_record`,
//! plus hand-built records for the peer violations a well-behaved peer never produces.

use super::super::decode_record;
use super::*;

const MIB: usize = 1 << 20;

fn code(v: u32) -> VarInt {
    VarInt::from_u32(v)
}

fn record(frames: &[Frame]) -> Vec<u8> {
    let mut buf = Vec::new();
    for f in frames {
        f.encode(&mut buf);
    }
    buf
}

struct Pair {
    client: Connection,
    server: Connection,
    client_events: Vec<Event>,
    server_events: Vec<Event>,
}

impl Pair {
    fn new(client: Config, server: Config) -> Self {
        let mut pair = Pair {
            client: Connection::new(Side::Client, client),
            server: Connection::new(Side::Server, server),
            client_events: Vec::new(),
            server_events: Vec::new(),
        };
        pair.drive();
        assert_eq!(pair.client_events.remove(0), Event::Connected);
        assert_eq!(pair.server_events.remove(0), Event::Connected);
        pair
    }

    fn default() -> Self {
        Pair::new(Config::default(), Config::default())
    }

    /// Shuttles records both ways until neither side has anything to send,
    /// checking every record against the receiver's advertised size limit.
    fn drive(&mut self) {
        fn shuttle(from: &mut Connection, to: &mut Connection) -> bool {
            let mut moved = false;
            while let Some(rec) = from.poll_transmit() {
                assert!(
                    rec.len() as u64 <= to.local_params().max_record_size,
                    "record of {}",
                    rec.len()
                );
                to.handle_record(&rec).expect("peer accepted record");
                moved = true;
            }
            moved
        }
        loop {
            let moved = shuttle(&mut self.client, &mut self.server)
                | shuttle(&mut self.server, &mut self.client);
            self.client_events
                .extend(std::iter::from_fn(|| self.client.poll_event()));
            self.server_events
                .extend(std::iter::from_fn(|| self.server.poll_event()));
            if !moved {
                return;
            }
        }
    }

    /// (actor, peer, peer's events) with the client acting when `client_acts`.
    fn roles(&mut self, client_acts: bool) -> (&mut Connection, &mut Connection, &mut Vec<Event>) {
        if client_acts {
            (&mut self.client, &mut self.server, &mut self.server_events)
        } else {
            (&mut self.server, &mut self.client, &mut self.client_events)
        }
    }

    /// Events of the actor in `roles`.
    fn actor_events(&mut self, client_acts: bool) -> &mut Vec<Event> {
        if client_acts {
            &mut self.client_events
        } else {
            &mut self.server_events
        }
    }
}

/// Reads everything currently available; returns the data and whether FIN was seen.
fn read_all(conn: &mut Connection, id: StreamId) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        match conn.read(id, usize::MAX).unwrap() {
            ReadOutcome::Data(d) => out.extend_from_slice(&d),
            ReadOutcome::Finished => return (out, true),
            ReadOutcome::Blocked => return (out, false),
            ReadOutcome::Reset(c) => panic!("unexpected reset {c}"),
        }
    }
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    // xorshift: cheap, deterministic, and not periodic at small strides.
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn transport_parameters_go_first() {
    let mut c = Connection::new(Side::Client, Config::default());
    let rec = c.poll_transmit().unwrap();
    let frames = decode_record(&rec).unwrap();
    assert_eq!(
        frames,
        vec![Frame::TransportParameters(c.local_params().clone())]
    );
    assert!(c.poll_transmit().is_none());
    // Opening waits for the peer's stream credit; a datagram is queued but not sent
    // until the peer says whether it takes datagrams.
    assert_eq!(c.open(Dir::Bi), Err(OpenError::Blocked));
    assert!(c.max_datagram_size().is_some());
    assert_eq!(c.send_datagram("x".into()), Ok(()));
    assert!(c.poll_transmit().is_none());
}

#[test]
fn datagrams_queued_before_the_peers_parameters_follow_them() {
    for peer_takes_datagrams in [true, false] {
        let mut client = Connection::new(Side::Client, Config::default());
        let server_config = Config {
            max_datagram_frame_size: if peer_takes_datagrams { 1200 } else { 0 },
            ..Config::default()
        };
        let mut server = Connection::new(Side::Server, server_config);
        client.send_datagram("early".into()).unwrap();
        client.send_datagram(vec![7; 4000].into()).unwrap();
        // The client's parameters go out; nothing else until the server's arrive.
        let first = client.poll_transmit().unwrap();
        assert!(client.poll_transmit().is_none());
        server.handle_record(&first).unwrap();
        while let Some(r) = server.poll_transmit() {
            client.handle_record(&r).unwrap();
        }
        while let Some(r) = client.poll_transmit() {
            server.handle_record(&r).unwrap();
        }
        let got: Vec<Event> = std::iter::from_fn(|| server.poll_event())
            .filter(|e| matches!(e, Event::Datagram(_)))
            .collect();
        if peer_takes_datagrams {
            // The one too large for the peer's limit is dropped and counted.
            assert_eq!(got, vec![Event::Datagram("early".into())]);
            assert_eq!(client.stats().datagrams_dropped, 1);
        } else {
            assert!(got.is_empty());
            assert_eq!(client.stats().datagrams_dropped, 2);
            assert_eq!(
                client.send_datagram("late".into()),
                Err(DatagramError::Unsupported)
            );
        }
    }
}

#[test]
fn open_bi_and_uni_both_ways() {
    let mut p = Pair::default();
    for client_acts in [true, false] {
        let (a, _, _) = p.roles(client_acts);
        let bi = a.open(Dir::Bi).unwrap();
        let uni = a.open(Dir::Uni).unwrap();
        assert_eq!(bi.initiator(), a.side());
        assert_eq!((bi.dir(), uni.dir()), (Dir::Bi, Dir::Uni));
        assert_eq!(a.write(bi, b"ping").unwrap(), 4);
        assert_eq!(a.write(uni, b"one-way").unwrap(), 7);
        a.finish(uni).unwrap();
        p.drive();
        let (a, b, b_events) = p.roles(client_acts);
        assert!(b_events.contains(&Event::NewStream {
            id: bi,
            dir: Dir::Bi
        }));
        assert!(b_events.contains(&Event::NewStream {
            id: uni,
            dir: Dir::Uni
        }));
        assert!(b_events.contains(&Event::Readable(bi)));
        b_events.clear();
        assert_eq!(read_all(b, bi), (b"ping".to_vec(), false));
        assert_eq!(read_all(b, uni), (b"one-way".to_vec(), true));
        // Uni streams have one direction only.
        assert_eq!(b.write(uni, b"x"), Err(WriteError::ClosedStream));
        assert_eq!(a.read(uni, 10), Err(ReadError::ClosedStream));
        b.write(bi, b"pong").unwrap();
        b.finish(bi).unwrap();
        a.finish(bi).unwrap();
        p.drive();
        let (a, b, _) = p.roles(client_acts);
        assert_eq!(read_all(a, bi), (b"pong".to_vec(), true));
        assert_eq!(read_all(b, bi), (Vec::new(), true));
    }
    p.drive();
    // Every stream is fully closed on both sides, so nothing is retained.
    assert!(p.client.streams.is_empty() && p.server.streams.is_empty());
}

#[test]
fn sixteen_mib_through_small_windows() {
    let window = 64 << 10;
    let cfg = Config {
        initial_max_data: 3 * window,
        initial_max_stream_data_bidi_local: window,
        initial_max_stream_data_bidi_remote: window,
        send_buffer: 48 << 10,
        ..Config::default()
    };
    let mut p = Pair::new(cfg.clone(), cfg);
    let data = pattern(16 * MIB, 7);
    let id = p.client.open(Dir::Bi).unwrap();
    let (mut off, mut got, mut writable, mut short_writes) =
        (0, Vec::with_capacity(data.len()), 0, 0);
    loop {
        if off < data.len() {
            let n = p.client.write(id, &data[off..]).unwrap();
            short_writes += usize::from(off + n < data.len());
            off += n;
            if off == data.len() {
                p.client.finish(id).unwrap();
            }
        }
        p.drive();
        writable += p
            .client_events
            .drain(..)
            .filter(|e| *e == Event::Writable(id))
            .count();
        // The receiver never holds more than its advertised stream window.
        let buffered = p
            .server
            .streams
            .get(&id)
            .map_or(0, |s| s.recv.as_ref().unwrap().buf.len());
        assert!(buffered <= window as usize);
        let (chunk, fin) = read_all(&mut p.server, id);
        got.extend_from_slice(&chunk);
        if fin {
            break;
        }
    }
    assert!(got == data, "16 MiB differ");
    assert!(
        short_writes > 100 && writable > 100,
        "flow control was exercised: {short_writes} {writable}"
    );
    let (c, s) = (p.client.stats(), p.server.stats());
    assert_eq!(c.stream_bytes_sent, 16 * MIB as u64);
    assert_eq!(s.stream_bytes_received, 16 * MIB as u64);
    assert_eq!(
        (c.bytes_sent, c.records_sent),
        (s.bytes_received, s.records_received)
    );
    // Every window's worth needs at least one credit update.
    assert!(s.frames_sent >= 256, "{s:?}");
}

#[test]
fn two_hundred_concurrent_streams() {
    let cfg = Config {
        initial_max_streams_bidi: 200,
        initial_max_data: 8 * MIB as u64,
        ..Config::default()
    };
    let mut p = Pair::new(cfg.clone(), cfg);
    let ids: Vec<_> = (0..200).map(|_| p.client.open(Dir::Bi).unwrap()).collect();
    assert_eq!(p.client.open(Dir::Bi), Err(OpenError::Blocked));
    for (i, &id) in ids.iter().enumerate() {
        let payload = pattern(10_000 + i, i as u64);
        assert_eq!(p.client.write(id, &payload).unwrap(), payload.len());
        p.client.finish(id).unwrap();
    }
    p.drive();
    // Echo each stream back, reversed, so a mix-up between streams shows.
    for (i, &id) in ids.iter().enumerate() {
        let (mut data, fin) = read_all(&mut p.server, id);
        assert!(fin);
        assert_eq!(data, pattern(10_000 + i, i as u64));
        data.reverse();
        assert_eq!(p.server.write(id, &data).unwrap(), data.len());
        p.server.finish(id).unwrap();
    }
    p.drive();
    for (i, &id) in ids.iter().enumerate() {
        let (data, fin) = read_all(&mut p.client, id);
        let mut want = pattern(10_000 + i, i as u64);
        want.reverse();
        assert!(fin && data == want, "stream {id}");
    }
    p.drive();
    assert!(p.client.streams.is_empty() && p.server.streams.is_empty());
    // All 200 slots came back, so the client may open 200 more.
    assert_eq!(p.client.local_max[0], 400);
    assert!(p.client_events.contains(&Event::StreamsAvailable(Dir::Bi)));
}

#[test]
fn reset_and_stop_codes_both_ways() {
    let mut p = Pair::default();
    for client_acts in [true, false] {
        // a resets its sending side: b reads the code.
        let (a, _, _) = p.roles(client_acts);
        let id = a.open(Dir::Uni).unwrap();
        a.write(id, b"partial").unwrap();
        p.drive();
        let (a, _, _) = p.roles(client_acts);
        a.reset(id, code(77)).unwrap();
        assert_eq!(a.write(id, b"more"), Err(WriteError::ClosedStream));
        p.drive();
        let (_, b, b_events) = p.roles(client_acts);
        assert!(b_events.contains(&Event::Reset { id, code: code(77) }));
        assert_eq!(b.read(id, 100), Ok(ReadOutcome::Reset(code(77))));
        assert_eq!(b.read(id, 100), Err(ReadError::ClosedStream));

        // b stops a's bidi stream: a sees Stopped and its writes fail.
        let (a, _, _) = p.roles(client_acts);
        let id = a.open(Dir::Bi).unwrap();
        a.write(id, b"hello").unwrap();
        p.drive();
        let (_, b, _) = p.roles(client_acts);
        b.stop(id, code(99)).unwrap();
        assert_eq!(b.read(id, 10), Err(ReadError::ClosedStream));
        p.drive();
        assert!(p
            .actor_events(client_acts)
            .contains(&Event::Stopped { id, code: code(99) }));
        let (a, b, _) = p.roles(client_acts);
        assert_eq!(a.write(id, b"x"), Err(WriteError::Stopped(code(99))));
        // The other direction of the bidi stream keeps working.
        b.write(id, b"reply").unwrap();
        b.finish(id).unwrap();
        p.drive();
        let (a, _, _) = p.roles(client_acts);
        assert_eq!(read_all(a, id), (b"reply".to_vec(), true));
        p.client_events.clear();
        p.server_events.clear();
    }
    p.drive();
    assert!(p.client.streams.is_empty() && p.server.streams.is_empty());
}

#[test]
fn fin_only_and_reset_stream_at() {
    let mut p = Pair::default();
    let id = p.client.open(Dir::Uni).unwrap();
    p.client.finish(id).unwrap();
    assert_eq!(p.client.finish(id), Err(ClosedStream));
    p.drive();
    assert!(p.server_events.contains(&Event::Readable(id)));
    assert_eq!(p.server.read(id, 10), Ok(ReadOutcome::Finished));

    // RESET_STREAM_AT: the reliable prefix is delivered, the rest is dropped.
    let id = p.client.open(Dir::Uni).unwrap();
    p.client.write(id, b"0123456789").unwrap();
    p.drive();
    let frame = Frame::ResetStreamAt {
        id,
        error_code: 5,
        final_size: 10,
        reliable_size: 4,
    };
    p.server.handle_record(&record(&[frame])).unwrap();
    assert_eq!(p.server.read(id, 2), Ok(ReadOutcome::Data("01".into())));
    assert_eq!(p.server.read(id, 100), Ok(ReadOutcome::Data("23".into())));
    assert_eq!(p.server.read(id, 100), Ok(ReadOutcome::Reset(code(5))));
}

/// The browser connector opens a stream with an empty STREAM frame, as native WebTransport
/// opens one before any data: the server sees the stream at once and may speak first.
#[test]
fn an_empty_stream_frame_opens_the_stream() {
    let mut p = Pair::default();
    p.drive();
    let id = StreamId::new(Side::Client, Dir::Bi, 0);
    let open = Frame::Stream(StreamFrame {
        id,
        offset: 0,
        fin: false,
        data: Vec::new().into(),
    });
    p.server.handle_record(&record(&[open])).unwrap();
    let events: Vec<_> = std::iter::from_fn(|| p.server.poll_event()).collect();
    assert!(
        events.contains(&Event::NewStream { id, dir: Dir::Bi }),
        "{events:?}"
    );
    assert_eq!(p.server.read(id, 10), Ok(ReadOutcome::Blocked));
    assert_eq!(p.server.write(id, b"hello first").unwrap(), 11);
}

#[test]
fn duplicates_ignored_overlaps_trimmed() {
    let mut p = Pair::default();
    let id = StreamId::new(Side::Client, Dir::Uni, 0);
    let frame = |offset: u64, data: &'static [u8], fin| {
        Frame::Stream(StreamFrame {
            id,
            offset,
            fin,
            data: data.into(),
        })
    };
    let rec = record(&[
        frame(0, b"abcde", false),
        frame(0, b"abcde", false),
        frame(2, b"cdefg", false),
        frame(7, b"h", true),
    ]);
    p.server.handle_record(&rec).unwrap();
    assert_eq!(read_all(&mut p.server, id), (b"abcdefgh".to_vec(), true));
    assert_eq!(p.server.stats().stream_bytes_received, 8);
}

#[test]
fn datagrams() {
    let mut p = Pair::default();
    let max = p.client.max_datagram_size().unwrap();
    // One 0x31 frame with a 2-byte length exactly fills a default record.
    assert_eq!(max, 16382 - 3);
    p.client.send_datagram(vec![1; max].into()).unwrap();
    assert_eq!(
        p.client.send_datagram(vec![1; max + 1].into()),
        Err(DatagramError::TooLarge)
    );
    p.server.send_datagram("back".into()).unwrap();
    p.drive();
    assert_eq!(p.server_events, vec![Event::Datagram(vec![1; max].into())]);
    assert_eq!(p.client_events, vec![Event::Datagram("back".into())]);

    let mut p = Pair::new(
        Config::default(),
        Config {
            max_datagram_frame_size: 0,
            ..Config::default()
        },
    );
    assert_eq!(
        p.client.send_datagram("x".into()),
        Err(DatagramError::Unsupported)
    );
    assert_eq!(p.client.max_datagram_size(), None);
    // The server refused datagrams, so receiving one is a violation (RFC 9221 §3).
    let err = p
        .server
        .handle_record(&record(&[Frame::Datagram("x".into())]))
        .unwrap_err();
    assert_eq!(err.code, TransportErrorCode::PROTOCOL_VIOLATION);
}

#[test]
fn max_datagram_size_fills_the_frame_limit() {
    for limit in (3..=70).chain(16_380..=16_390) {
        let mut c = Connection::new(Side::Client, Config::default());
        let peer = TransportParameters {
            max_datagram_frame_size: limit,
            ..Default::default()
        };
        c.handle_record(&record(&[Frame::TransportParameters(peer)]))
            .unwrap();
        let n = c.max_datagram_size().unwrap();
        let frame = |n: usize| Frame::Datagram(vec![0; n].into()).encoded_len() as u64;
        // Tight: the frame fits the limit (and the record), one more byte would not.
        assert!(
            frame(n) <= limit.min(16_382) && frame(n + 1) > limit.min(16_382),
            "{limit}: {n}"
        );
    }
}

#[test]
fn datagram_buffers_are_bounded() {
    let cfg = Config {
        datagram_send_buffer: 10,
        datagram_receive_buffer: 8,
        ..Config::default()
    };
    let mut p = Pair::new(cfg.clone(), cfg);
    for i in 0..5u8 {
        p.client.send_datagram(vec![i; 4].into()).unwrap();
    }
    // Only the newest 10 bytes' worth stayed queued (drop-oldest).
    assert_eq!(p.client.stats().datagrams_dropped, 3);
    p.drive();
    assert_eq!(
        p.server_events,
        vec![
            Event::Datagram(vec![3; 4].into()),
            Event::Datagram(vec![4; 4].into())
        ]
    );
    // The receiver kept 8 bytes undelivered and now drops what does not fit.
    for i in 0..3u8 {
        p.client.send_datagram(vec![i; 4].into()).unwrap();
    }
    p.server
        .handle_record(&record(&[Frame::Datagram(vec![9; 4].into())]))
        .unwrap();
    p.server
        .handle_record(&record(&[Frame::Datagram(vec![9; 4].into())]))
        .unwrap();
    let evs: Vec<_> = std::iter::from_fn(|| p.server.poll_event()).collect();
    assert_eq!(evs.len(), 2);
    assert_eq!(p.server.stats().datagrams_dropped, 0);
    assert_eq!(p.server.stats().datagrams_received, 4);
}

#[test]
fn close_with_code_and_reason() {
    let mut p = Pair::default();
    let id = p.client.open(Dir::Bi).unwrap();
    p.client.write(id, b"unsent").unwrap();
    p.client.close(code(42), b"bye");
    assert!(p.client.is_closed());
    assert_eq!(p.client.write(id, b"x"), Err(WriteError::ConnectionClosed));
    assert_eq!(p.client.open(Dir::Bi), Err(OpenError::ConnectionClosed));
    let rec = p.client.poll_transmit().unwrap();
    assert_eq!(
        decode_record(&rec).unwrap(),
        vec![Frame::ApplicationClose {
            error_code: 42,
            reason: "bye".into()
        }]
    );
    assert!(p.client.poll_transmit().is_none());
    p.server.handle_record(&rec).unwrap();
    let closed = |remote| Event::Closed {
        code: code(42),
        reason: "bye".into(),
        application: true,
        remote,
    };
    assert_eq!(p.client.poll_event(), Some(closed(false)));
    assert_eq!(p.server.poll_event(), Some(closed(true)));
    // The responder sends nothing more (§7.3) and discards what still arrives (§7.2).
    assert!(p.server.poll_transmit().is_none());
    p.server.handle_record(b"\x01garbage").unwrap();
    assert!(p.server.poll_event().is_none());
}

#[test]
fn ping_pong() {
    let mut p = Pair::default();
    let a = p.client.ping();
    let b = p.client.ping();
    assert!(b > a);
    p.drive();
    // The unsent first request was superseded; the answer echoes the latest.
    assert_eq!(p.client_events, vec![Event::Pong(b)]);
    // Coalesced responses: two requests before a reply yield one response.
    p.server
        .handle_record(&record(&[Frame::Ping(10), Frame::Ping(11)]))
        .unwrap();
    let frames = decode_record(&p.server.poll_transmit().unwrap()).unwrap();
    assert_eq!(frames, vec![Frame::PingResponse(11)]);
}

#[test]
fn max_streams_reissued_over_1000_sequential_streams() {
    let cfg = Config {
        initial_max_streams_bidi: 10,
        initial_max_streams_uni: 10,
        ..Config::default()
    };
    let mut p = Pair::new(cfg.clone(), cfg);
    for i in 0..1000u64 {
        for dir in [Dir::Bi, Dir::Uni] {
            let id = p
                .client
                .open(dir)
                .unwrap_or_else(|e| panic!("stream {i} {dir:?}: {e}"));
            p.client.write(id, &i.to_be_bytes()).unwrap();
            p.client.finish(id).unwrap();
            p.drive();
            assert_eq!(
                read_all(&mut p.server, id),
                (i.to_be_bytes().to_vec(), true)
            );
            if dir == Dir::Bi {
                p.server.finish(id).unwrap();
                p.drive();
                assert_eq!(read_all(&mut p.client, id), (Vec::new(), true));
            }
            p.drive();
        }
    }
    assert!(p.client.streams.is_empty() && p.server.streams.is_empty());
    assert_eq!(p.server.remote_max, [1010, 1010]);
    assert_eq!(p.client.local_max, [1010, 1010]);
}

#[test]
fn open_blocked_then_available() {
    let cfg = Config {
        initial_max_streams_uni: 1,
        ..Config::default()
    };
    let mut p = Pair::new(cfg.clone(), cfg);
    let id = p.client.open(Dir::Uni).unwrap();
    assert_eq!(p.client.open(Dir::Uni), Err(OpenError::Blocked));
    assert_eq!(p.client.open(Dir::Uni), Err(OpenError::Blocked));
    p.client.finish(id).unwrap();
    p.drive();
    assert_eq!(read_all(&mut p.server, id), (Vec::new(), true));
    p.drive();
    assert!(p.client_events.contains(&Event::StreamsAvailable(Dir::Uni)));
    assert!(p.client.open(Dir::Uni).is_ok());
}

#[test]
fn priorities_and_round_robin() {
    let cfg = Config {
        initial_max_data: 8 * MIB as u64,
        ..Config::default()
    };
    let mut p = Pair::new(cfg.clone(), cfg);
    let [low, high, rr1, rr2] = [(); 4].map(|_| p.client.open(Dir::Uni).unwrap());
    p.client.set_priority(high, 10).unwrap();
    p.client.set_priority(rr1, 5).unwrap();
    p.client.set_priority(rr2, 5).unwrap();
    // Low is written first, so it is queued first; priority must still win.
    for id in [low, rr1, rr2, high] {
        assert_eq!(p.client.write(id, &[0; 100_000]).unwrap(), 100_000);
    }
    let mut order = Vec::new();
    while let Some(rec) = p.client.poll_transmit() {
        for f in decode_record(&rec).unwrap() {
            if let Frame::Stream(s) = f {
                order.push(s.id);
            }
        }
    }
    let last = |id| order.iter().rposition(|&x| x == id).unwrap();
    let first = |id| order.iter().position(|&x| x == id).unwrap();
    assert!(last(high) < first(rr1).min(first(rr2)), "{order:?}");
    assert!(last(rr1).max(last(rr2)) < first(low), "{order:?}");
    // Equal priority alternates frame by frame.
    let mid: Vec<_> = order.iter().filter(|&&x| x == rr1 || x == rr2).collect();
    assert!(mid.windows(2).all(|w| w[0] != w[1]), "{mid:?}");
    // Re-prioritising a queued stream moves it.
    let cfg = Config {
        initial_max_data: 8 * MIB as u64,
        ..Config::default()
    };
    let mut p = Pair::new(cfg.clone(), cfg);
    let [a, b] = [(); 2].map(|_| p.client.open(Dir::Uni).unwrap());
    p.client.write(a, &[0; 50_000]).unwrap();
    p.client.write(b, &[0; 50_000]).unwrap();
    p.client.set_priority(b, 1).unwrap();
    let first = decode_record(&p.client.poll_transmit().unwrap()).unwrap();
    assert!(matches!(&first[0], Frame::Stream(s) if s.id == b));
}

#[test]
fn records_respect_peer_max_record_size() {
    // The server accepts 20000-byte records; the client would build 1 MiB ones.
    let client = Config {
        max_send_record_size: MIB as u64,
        initial_max_data: 4 * MIB as u64,
        send_buffer: MIB,
        ..Config::default()
    };
    let server = Config {
        max_record_size: 20_000,
        initial_max_data: 4 * MIB as u64,
        ..Config::default()
    };
    let mut p = Pair::new(client, server);
    let id = p.client.open(Dir::Uni).unwrap();
    assert_eq!(p.client.write(id, &[1; 200_000]).unwrap(), 200_000);
    let sizes: Vec<_> = std::iter::from_fn(|| p.client.poll_transmit())
        .map(|r| r.len())
        .collect();
    assert!(sizes.iter().all(|&n| n <= 20_000), "{sizes:?}");
    assert!(
        sizes.iter().filter(|&&n| n > 19_990).count() >= 9,
        "records are filled: {sizes:?}"
    );
    // The other way the client's default 16382 applies even though the server could build larger.
    let id = p.server.open(Dir::Uni).unwrap();
    p.server.write(id, &[2; 100_000]).unwrap();
    let sizes: Vec<_> = std::iter::from_fn(|| p.server.poll_transmit())
        .map(|r| r.len())
        .collect();
    assert!(
        sizes.iter().all(|&n| n <= 16_382) && sizes.contains(&16_382),
        "{sizes:?}"
    );
}

#[test]
fn blocked_frames_sent_once_per_limit() {
    let cfg = Config {
        initial_max_stream_data_uni: 1000,
        initial_max_data: 1500,
        ..Config::default()
    };
    let mut p = Pair::new(cfg.clone(), cfg);
    let a = p.client.open(Dir::Uni).unwrap();
    let b = p.client.open(Dir::Uni).unwrap();
    assert_eq!(p.client.write(a, &[0; 2000]).unwrap(), 1000);
    assert_eq!(p.client.write(a, &[0; 10]).unwrap(), 0);
    assert_eq!(p.client.write(b, &[0; 2000]).unwrap(), 500);
    let frames: Vec<_> = std::iter::from_fn(|| p.client.poll_transmit())
        .flat_map(|r| decode_record(&r).unwrap())
        .collect();
    let blocked: Vec<_> = frames
        .iter()
        .filter(|f| matches!(f, Frame::StreamDataBlocked { .. } | Frame::DataBlocked(_)))
        .collect();
    assert_eq!(
        blocked,
        [
            &Frame::StreamDataBlocked { id: a, limit: 1000 },
            &Frame::DataBlocked(1500)
        ],
        "b hit the connection limit, which was already reported"
    );
}

#[test]
fn writable_after_stream_then_connection_credit() {
    // a is blocked on its stream limit; by the time MAX_STREAM_DATA arrives, b has
    // used up the connection credit, so a's wakeup must wait for MAX_DATA.
    let cfg = Config {
        initial_max_stream_data_uni: 100,
        initial_max_data: 300,
        ..Config::default()
    };
    let mut p = Pair::new(cfg.clone(), cfg);
    let a = p.client.open(Dir::Uni).unwrap();
    let b = p.client.open(Dir::Uni).unwrap();
    assert_eq!(p.client.write(a, &[0; 200]).unwrap(), 100);
    assert_eq!(p.client.write(b, &[0; 100]).unwrap(), 100);
    let c = p.client.open(Dir::Uni).unwrap();
    assert_eq!(p.client.write(c, &[0; 100]).unwrap(), 100);
    p.drive();
    // Server reads a and b: MAX_STREAM_DATA(a) and MAX_DATA both become due.
    read_all(&mut p.server, a);
    read_all(&mut p.server, b);
    let rec = p.server.poll_transmit().unwrap();
    let frames = decode_record(&rec).unwrap();
    // Deliver only a's stream update first.
    let mds: Vec<_> = frames
        .iter()
        .filter(|f| matches!(f, Frame::MaxStreamData { id, .. } if *id == a))
        .cloned()
        .collect();
    let md: Vec<_> = frames
        .iter()
        .filter(|f| matches!(f, Frame::MaxData(_)))
        .cloned()
        .collect();
    assert!(!mds.is_empty() && !md.is_empty(), "{frames:?}");
    p.client.handle_record(&record(&mds)).unwrap();
    assert!(std::iter::from_fn(|| p.client.poll_event()).all(|e| e != Event::Writable(a)));
    p.client.handle_record(&record(&md)).unwrap();
    assert!(std::iter::from_fn(|| p.client.poll_event()).any(|e| e == Event::Writable(a)));
}

#[test]
fn idle_timeout_is_the_minimum() {
    let client = Config {
        max_idle_timeout: Duration::from_secs(10),
        ..Config::default()
    };
    let server = Config {
        max_idle_timeout: Duration::ZERO,
        ..Config::default()
    };
    let p = Pair::new(client, server);
    assert_eq!(p.client.idle_timeout(), Some(Duration::from_secs(10)));
    assert_eq!(p.server.idle_timeout(), Some(Duration::from_secs(10)));
}

// ---------------------------------------------------------------- violations

/// A server that has processed `peer` as the client's transport parameters.
fn server_with(config: Config, peer: TransportParameters) -> Connection {
    let mut s = Connection::new(Side::Server, config);
    s.handle_record(&record(&[Frame::TransportParameters(peer)]))
        .unwrap();
    s
}

fn generous() -> TransportParameters {
    TransportParameters {
        initial_max_data: 1 << 20,
        initial_max_stream_data_bidi_local: 1 << 16,
        initial_max_stream_data_bidi_remote: 1 << 16,
        initial_max_stream_data_uni: 1 << 16,
        initial_max_streams_bidi: 10,
        initial_max_streams_uni: 10,
        ..TransportParameters::default()
    }
}

/// Feeds `records`; the last must fail with `want`, and the connection must
/// answer with CONNECTION_CLOSE 0x1c carrying that code.
fn expect_violation(mut conn: Connection, records: &[Vec<u8>], want: TransportErrorCode) {
    let (last, init) = records.split_last().unwrap();
    for r in init {
        conn.handle_record(r).unwrap();
    }
    let e = conn.handle_record(last).unwrap_err();
    assert_eq!(e.code, want, "{e}");
    let frames: Vec<_> = std::iter::from_fn(|| conn.poll_transmit())
        .flat_map(|r| decode_record(&r).unwrap())
        .collect();
    assert!(
        frames.iter().any(
            |f| matches!(f, Frame::ConnectionClose { error_code, .. } if *error_code == want.0)
        ),
        "{frames:?}"
    );
    let events: Vec<_> = std::iter::from_fn(|| conn.poll_event()).collect();
    assert!(events.iter().any(|e| matches!(e, Event::Closed { application: false, remote: false, code, .. } if code.into_inner() == want.0)));
    assert!(conn.is_closed());
}

fn stream(id: u64, offset: u64, len: usize, fin: bool) -> Vec<u8> {
    record(&[Frame::Stream(StreamFrame {
        id: StreamId(id),
        offset,
        fin,
        data: vec![0; len].into(),
    })])
}

#[test]
fn violation_flow_control() {
    let cfg = Config {
        initial_max_stream_data_bidi_remote: 100,
        initial_max_data: 150,
        ..Config::default()
    };
    // Beyond stream credit, in one frame or across frames.
    expect_violation(
        server_with(cfg.clone(), generous()),
        &[stream(0, 0, 101, false)],
        TransportErrorCode::FLOW_CONTROL_ERROR,
    );
    expect_violation(
        server_with(cfg.clone(), generous()),
        &[stream(0, 0, 100, false), stream(0, 100, 1, false)],
        TransportErrorCode::FLOW_CONTROL_ERROR,
    );
    // Beyond connection credit while each stream stays within its own.
    expect_violation(
        server_with(cfg.clone(), generous()),
        &[stream(0, 0, 100, false), stream(4, 0, 51, false)],
        TransportErrorCode::FLOW_CONTROL_ERROR,
    );
    // A reset's final size counts too.
    let reset = record(&[Frame::ResetStream {
        id: StreamId(4),
        error_code: 0,
        final_size: 51,
    }]);
    expect_violation(
        server_with(cfg.clone(), generous()),
        &[stream(0, 0, 100, false), reset],
        TransportErrorCode::FLOW_CONTROL_ERROR,
    );
    // Exactly at the limit is fine, and buffered memory equals the window.
    let mut s = server_with(cfg, generous());
    s.handle_record(&stream(0, 0, 100, false)).unwrap();
    s.handle_record(&stream(4, 0, 50, false)).unwrap();
    let buffered: usize = s
        .streams
        .values()
        .map(|st| st.recv.as_ref().unwrap().buf.len())
        .sum();
    assert_eq!(buffered, 150);
}

#[test]
fn violation_stream_limit() {
    let cfg = Config {
        initial_max_streams_bidi: 2,
        initial_max_streams_uni: 0,
        ..Config::default()
    };
    expect_violation(
        server_with(cfg.clone(), generous()),
        &[stream(8, 0, 1, false)],
        TransportErrorCode::STREAM_LIMIT_ERROR,
    );
    expect_violation(
        server_with(cfg.clone(), generous()),
        &[stream(2, 0, 1, false)],
        TransportErrorCode::STREAM_LIMIT_ERROR,
    );
    // Streams 0 and 4 are within the limit; 4 implicitly opens 0.
    let mut s = server_with(cfg, generous());
    s.handle_record(&stream(4, 0, 1, false)).unwrap();
    let events: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
    assert!(events.contains(&Event::NewStream {
        id: StreamId(0),
        dir: Dir::Bi
    }));
}

#[test]
fn violation_stream_state() {
    let cfg = Config::default;
    // STREAM on our own uni stream (server uni = 3): we are its only sender.
    let mut s = server_with(cfg(), generous());
    let uni = s.open(Dir::Uni).unwrap();
    assert_eq!(uni, StreamId(3));
    expect_violation(
        s,
        &[stream(3, 0, 1, false)],
        TransportErrorCode::STREAM_STATE_ERROR,
    );
    // A server-initiated stream the server never opened.
    expect_violation(
        server_with(cfg(), generous()),
        &[stream(1, 0, 1, false)],
        TransportErrorCode::STREAM_STATE_ERROR,
    );
    // MAX_STREAM_DATA and STOP_SENDING for the client's uni stream: we never send on it.
    let mds = record(&[Frame::MaxStreamData {
        id: StreamId(2),
        max: 10,
    }]);
    expect_violation(
        server_with(cfg(), generous()),
        &[mds],
        TransportErrorCode::STREAM_STATE_ERROR,
    );
    let stop = record(&[Frame::StopSending {
        id: StreamId(2),
        error_code: 1,
    }]);
    expect_violation(
        server_with(cfg(), generous()),
        &[stop],
        TransportErrorCode::STREAM_STATE_ERROR,
    );
    // RESET_STREAM and STREAM_DATA_BLOCKED on our uni stream.
    let mut s = server_with(cfg(), generous());
    s.open(Dir::Uni).unwrap();
    let reset = record(&[Frame::ResetStream {
        id: StreamId(3),
        error_code: 0,
        final_size: 0,
    }]);
    expect_violation(s, &[reset], TransportErrorCode::STREAM_STATE_ERROR);
    let mut s = server_with(cfg(), generous());
    s.open(Dir::Uni).unwrap();
    let sdb = record(&[Frame::StreamDataBlocked {
        id: StreamId(3),
        limit: 0,
    }]);
    expect_violation(s, &[sdb], TransportErrorCode::STREAM_STATE_ERROR);
}

#[test]
fn violation_final_size() {
    let cfg = Config::default;
    let fin_then_more = [stream(0, 0, 10, true), stream(0, 10, 1, false)];
    expect_violation(
        server_with(cfg(), generous()),
        &fin_then_more,
        TransportErrorCode::FINAL_SIZE_ERROR,
    );
    let two_fins = [stream(0, 0, 10, true), stream(0, 0, 12, true)];
    expect_violation(
        server_with(cfg(), generous()),
        &two_fins,
        TransportErrorCode::FINAL_SIZE_ERROR,
    );
    let fin_below = [stream(0, 0, 10, false), stream(0, 0, 5, true)];
    expect_violation(
        server_with(cfg(), generous()),
        &fin_below,
        TransportErrorCode::FINAL_SIZE_ERROR,
    );
    let reset = |fs| {
        record(&[Frame::ResetStream {
            id: StreamId(0),
            error_code: 0,
            final_size: fs,
        }])
    };
    expect_violation(
        server_with(cfg(), generous()),
        &[stream(0, 0, 10, true), reset(11)],
        TransportErrorCode::FINAL_SIZE_ERROR,
    );
    expect_violation(
        server_with(cfg(), generous()),
        &[stream(0, 0, 10, false), reset(9)],
        TransportErrorCode::FINAL_SIZE_ERROR,
    );
    expect_violation(
        server_with(cfg(), generous()),
        &[reset(5), reset(6)],
        TransportErrorCode::FINAL_SIZE_ERROR,
    );
    // A matching repeat is fine.
    let mut s = server_with(cfg(), generous());
    s.handle_record(&stream(0, 0, 10, true)).unwrap();
    s.handle_record(&reset(10)).unwrap();
    s.handle_record(&reset(10)).unwrap();
}

#[test]
fn violation_gap_and_encoding() {
    let cfg = Config::default;
    expect_violation(
        server_with(cfg(), generous()),
        &[stream(0, 0, 5, false), stream(0, 6, 1, false)],
        TransportErrorCode::PROTOCOL_VIOLATION,
    );
    // Records larger than our max_record_size.
    expect_violation(
        server_with(cfg(), generous()),
        &[vec![0; 16_383]],
        TransportErrorCode::FRAME_ENCODING_ERROR,
    );
    let mut s = server_with(cfg(), generous());
    s.handle_record(&[0; 16_382]).unwrap();
    // Prohibited frames, truncated frames, unknown frames.
    expect_violation(
        server_with(cfg(), generous()),
        &[vec![0x01]],
        TransportErrorCode::FRAME_ENCODING_ERROR,
    );
    expect_violation(
        server_with(cfg(), generous()),
        &[vec![0x06, 0, 1, 0]],
        TransportErrorCode::FRAME_ENCODING_ERROR,
    );
    expect_violation(
        server_with(cfg(), generous()),
        &[vec![0x11, 0x00]],
        TransportErrorCode::FRAME_ENCODING_ERROR,
    );
    expect_violation(
        server_with(cfg(), generous()),
        &[vec![0x21]],
        TransportErrorCode::FRAME_ENCODING_ERROR,
    );
}

#[test]
fn violation_transport_parameters() {
    let cfg = Config::default;
    let fresh = || Connection::new(Side::Server, cfg());
    // First frame must be QX_TRANSPORT_PARAMETERS, even PADDING may not precede it.
    expect_violation(
        fresh(),
        &[vec![0x00]],
        TransportErrorCode::PROTOCOL_VIOLATION,
    );
    expect_violation(
        fresh(),
        &[record(&[Frame::MaxData(5)])],
        TransportErrorCode::PROTOCOL_VIOLATION,
    );
    let tp = record(&[Frame::TransportParameters(generous())]);
    expect_violation(
        fresh(),
        &[tp.clone(), tp],
        TransportErrorCode::PROTOCOL_VIOLATION,
    );
    // max_record_size below 16382 and prohibited parameters.
    let mut small = Vec::new();
    crate::varint::put(&mut small, FrameType::QX_TRANSPORT_PARAMETERS.0);
    let mut block = Vec::new();
    crate::varint::put(&mut block, super::super::MAX_RECORD_SIZE_ID);
    block.extend_from_slice(&[0x02, 0x40, 0x64]);
    crate::varint::put(&mut small, block.len() as u64);
    small.extend_from_slice(&block);
    expect_violation(
        fresh(),
        &[small],
        TransportErrorCode::TRANSPORT_PARAMETER_ERROR,
    );
    let mut ack_delay = Vec::new();
    crate::varint::put(&mut ack_delay, FrameType::QX_TRANSPORT_PARAMETERS.0);
    ack_delay.extend_from_slice(&[0x03, 0x0b, 0x01, 0x19]);
    expect_violation(
        fresh(),
        &[ack_delay],
        TransportErrorCode::TRANSPORT_PARAMETER_ERROR,
    );
}

#[test]
fn violation_ping_and_extensions() {
    let cfg = Config::default;
    let pings = [record(&[Frame::Ping(5)]), record(&[Frame::Ping(5)])];
    expect_violation(
        server_with(cfg(), generous()),
        &pings,
        TransportErrorCode::PROTOCOL_VIOLATION,
    );
    expect_violation(
        server_with(cfg(), generous()),
        &[record(&[Frame::PingResponse(0)])],
        TransportErrorCode::PROTOCOL_VIOLATION,
    );
    let mut s = server_with(cfg(), generous());
    let seq = s.ping();
    s.poll_transmit().unwrap();
    s.handle_record(&record(&[Frame::PingResponse(seq)]))
        .unwrap();
    expect_violation(
        s,
        &[record(&[Frame::PingResponse(seq + 1)])],
        TransportErrorCode::PROTOCOL_VIOLATION,
    );
    let no_rsa = Config {
        reset_stream_at: false,
        ..cfg()
    };
    let rsa = record(&[Frame::ResetStreamAt {
        id: StreamId(0),
        error_code: 0,
        final_size: 0,
        reliable_size: 0,
    }]);
    expect_violation(
        server_with(no_rsa, generous()),
        &[rsa],
        TransportErrorCode::PROTOCOL_VIOLATION,
    );
    let too_big = Config {
        max_datagram_frame_size: 10,
        ..cfg()
    };
    let dg = record(&[Frame::Datagram(vec![0; 10].into())]);
    expect_violation(
        server_with(too_big, generous()),
        &[dg],
        TransportErrorCode::PROTOCOL_VIOLATION,
    );
}

#[test]
fn byte_stream_framing_and_abort() {
    // Drive a pair through Size-prefixed records, as over TCP/TLS.
    let mut client = Connection::new(Side::Client, Config::default());
    let mut server = Connection::new(Side::Server, Config::default());
    let mut reader = super::super::RecordReader::new(server.local_params().max_record_size);
    let mut wire = Vec::new();
    while let Some(rec) = client.poll_transmit() {
        super::super::write_record(&rec, &mut wire);
    }
    reader.push(&wire);
    while let Some(rec) = reader.next_record().unwrap() {
        server.handle_record(&rec).unwrap();
    }
    assert_eq!(server.poll_event(), Some(Event::Connected));
    // A Size beyond our limit is rejected from the header alone.
    reader.push(&[0x80, 0x01, 0x00, 0x00]);
    let e = ConnectionError::from(reader.next_record().unwrap_err());
    assert_eq!(e.code, TransportErrorCode::FRAME_ENCODING_ERROR);
    server.abort(e);
    let frames: Vec<_> = std::iter::from_fn(|| server.poll_transmit())
        .flat_map(|r| decode_record(&r).unwrap())
        .collect();
    assert!(matches!(
        frames.last(),
        Some(Frame::ConnectionClose {
            error_code: 0x07,
            ..
        })
    ));
}

#[test]
fn errors_before_our_params_still_lead_with_them() {
    let mut s = Connection::new(Side::Server, Config::default());
    assert!(s.handle_record(&[0x10, 0x01]).is_err());
    let frames = decode_record(&s.poll_transmit().unwrap()).unwrap();
    assert!(matches!(frames[0], Frame::TransportParameters(_)));
    assert!(matches!(
        frames[1],
        Frame::ConnectionClose {
            error_code: 0x0a,
            frame_type: 0x10,
            ..
        }
    ));
    assert!(s.poll_transmit().is_none());
}

#[test]
fn stopped_stream_returns_credit() {
    // Data for a stream we stopped is discarded but still frees connection credit,
    // otherwise a peer racing its RESET_STREAM could wedge every other stream.
    let cfg = Config {
        initial_max_data: 100,
        initial_max_stream_data_uni: 100,
        ..Config::default()
    };
    let mut p = Pair::new(cfg.clone(), cfg);
    let a = p.client.open(Dir::Uni).unwrap();
    p.client.write(a, &[1; 60]).unwrap();
    p.drive();
    p.server.stop(a, code(3)).unwrap();
    p.client.write(a, &[1; 40]).unwrap_or(0);
    p.drive();
    // The 100 bytes were all consumed (discarded), so fresh credit was offered.
    assert!(p.client.peer_max_data >= 150, "{}", p.client.peer_max_data);
    let b = p.client.open(Dir::Uni).unwrap();
    assert!(p.client.write(b, &[2; 50]).unwrap() > 0);
}
