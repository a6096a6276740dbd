//! The measurements. Each takes a freshly started server so that one scenario's leftovers
//! (allocator high-water marks, congestion state, lingering sessions) never colour the next.

use std::{
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::{sync::Mutex, task::JoinSet};
use web_transport_quinn::Session;

use crate::{
    client::Clients,
    http,
    measure::{percentile, take_one, Measurement, Params},
    server::{Capability, Running},
    tcp::{self, Tcp},
    Error,
};

/// The scenarios, in the order the suite runs them. Each QMux scenario runs right after
/// its WebTransport counterpart, so their ratio on one server comes from the same minutes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Echo of `bulk_mib` through one bidirectional stream.
    BulkSingle,
    /// `BulkSingle` through a QMux session over a WebSocket.
    QmuxBulkSingle,
    /// Echo of `parallel_mib` split over `parallel_streams` concurrent streams.
    BulkParallel,
    /// Ping-pong of 64-byte messages on one stream.
    Latency,
    /// `Latency` through a QMux session over a WebSocket.
    QmuxLatency,
    /// Flood of 1,000-byte datagrams, counting the echoes.
    Datagrams,
    /// `MANY_CONNECTIONS` connections at once, one session each, echoing `parallel_mib` in
    /// all over `MANY_STREAMS` streams per session: what spreads over cores and processes.
    ManyConnectionsStreams,
    /// `MANY_CONNECTIONS` sessions flooding datagrams at once, counting the echoes.
    ManyConnectionsDatagrams,
    /// New connection + session, then the first echoed byte.
    Setup,
    /// Server memory while holding idle sessions.
    Idle,
    /// Echo of `bulk_mib` as 64 KiB binary messages on one plain WebSocket.
    WsThroughput,
    /// Ping-pong of 1 KiB binary messages on one plain WebSocket.
    WsLatency,
    /// Server memory while holding idle plain WebSockets.
    WsIdle,
    /// `GET /json` over HTTP/1.1: requests/s and latency (`http.rs`).
    Http1Json,
    /// The same over HTTP/2.
    Http2Json,
    /// The same over HTTP/3.
    Http3Json,
}

impl Scenario {
    pub const ALL: [Scenario; 16] = [
        Scenario::BulkSingle,
        Scenario::QmuxBulkSingle,
        Scenario::BulkParallel,
        Scenario::Latency,
        Scenario::QmuxLatency,
        Scenario::Datagrams,
        Scenario::ManyConnectionsStreams,
        Scenario::ManyConnectionsDatagrams,
        Scenario::Setup,
        Scenario::Idle,
        Scenario::WsThroughput,
        Scenario::WsLatency,
        Scenario::WsIdle,
        Scenario::Http1Json,
        Scenario::Http2Json,
        Scenario::Http3Json,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::BulkSingle => "bulk_single",
            Scenario::QmuxBulkSingle => "qmux_bulk_single",
            Scenario::BulkParallel => "bulk_parallel",
            Scenario::Latency => "latency",
            Scenario::QmuxLatency => "qmux_latency",
            Scenario::Datagrams => "datagrams",
            Scenario::ManyConnectionsStreams => "conns64_streams",
            Scenario::ManyConnectionsDatagrams => "conns64_datagrams",
            Scenario::Setup => "setup",
            Scenario::Idle => "idle",
            Scenario::WsThroughput => "ws_throughput",
            Scenario::WsLatency => "ws_latency",
            Scenario::WsIdle => "ws_idle",
            Scenario::Http1Json => "http1_json",
            Scenario::Http2Json => "http2_json",
            Scenario::Http3Json => "http3_json",
        }
    }

    /// What a server must serve for this scenario to run against it.
    pub fn needs(self) -> Capability {
        match self {
            Scenario::QmuxBulkSingle | Scenario::QmuxLatency => Capability::Qmux,
            Scenario::WsThroughput | Scenario::WsLatency | Scenario::WsIdle => {
                Capability::WebSocket
            }
            Scenario::Http1Json => Capability::Http1,
            Scenario::Http2Json => Capability::Http2,
            Scenario::Http3Json => Capability::Http3,
            _ => Capability::WebTransport,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|sc| sc.name() == s)
    }

    /// Runs this scenario against a started server.
    pub async fn run(self, server: &mut Running, p: &Params) -> Result<Vec<Measurement>, Error> {
        let one = |name: &str, fields| {
            vec![Measurement {
                name: name.to_owned(),
                fields,
            }]
        };
        match self {
            Scenario::BulkSingle => {
                let clients = Clients::new(server.url(), &server.certificate_hash, 1)?;
                let session = clients.connect().await?;
                let fields = bulk(&session, 1, p.bulk_mib << 20).await?;
                session.close(0, b"done");
                Ok(one(self.name(), fields))
            }
            Scenario::BulkParallel => {
                let clients = Clients::new(server.url(), &server.certificate_hash, 1)?;
                let session = clients.connect().await?;
                let per = (p.parallel_mib << 20) / p.parallel_streams;
                let fields = bulk(&session, p.parallel_streams, per).await?;
                session.close(0, b"done");
                Ok(one(self.name(), fields))
            }
            Scenario::Latency => {
                let clients = Clients::new(server.url(), &server.certificate_hash, 1)?;
                let session = clients.connect().await?;
                let fields = latency(&session, p.latency_messages, p.latency_warmup).await?;
                session.close(0, b"done");
                Ok(one(self.name(), fields))
            }
            Scenario::Datagrams => {
                let clients = Clients::new(server.url(), &server.certificate_hash, 1)?;
                let session = clients.connect().await?;
                let fields = datagrams(&session, p.datagram_time).await?;
                session.close(0, b"done");
                Ok(one(self.name(), fields))
            }
            Scenario::ManyConnectionsStreams => {
                let sessions = many_sessions(server).await?;
                let per = (p.parallel_mib << 20) / (MANY_CONNECTIONS * MANY_STREAMS);
                let start = Instant::now();
                let mut tasks: JoinSet<Result<(), Error>> = JoinSet::new();
                for session in &sessions {
                    let session = session.clone();
                    tasks.spawn(async move { bulk(&session, MANY_STREAMS, per).await.map(drop) });
                }
                while let Some(done) = tasks.join_next().await {
                    done??;
                }
                let secs = start.elapsed().as_secs_f64();
                for session in &sessions {
                    session.close(0, b"done");
                }
                let mib = (MANY_CONNECTIONS * MANY_STREAMS * per) as f64 / (1 << 20) as f64;
                Ok(one(
                    self.name(),
                    vec![
                        ("connections", MANY_CONNECTIONS as f64),
                        ("mib", mib),
                        ("seconds", secs),
                        ("mib_per_s", mib / secs),
                    ],
                ))
            }
            Scenario::ManyConnectionsDatagrams => {
                let sessions = many_sessions(server).await?;
                let mut tasks: JoinSet<Result<Flood, Error>> = JoinSet::new();
                for session in &sessions {
                    let session = session.clone();
                    let time = p.datagram_time;
                    tasks.spawn(async move { datagram_flood(&session, time).await });
                }
                // A slow server may starve some sessions' echoes entirely; only a flood
                // with no echo at all is a failure.
                let (mut sent, mut received, mut secs) = (0.0, 0.0, 0.0f64);
                while let Some(done) = tasks.join_next().await {
                    let flood = done??;
                    sent += flood.sent as f64;
                    received += flood.received as f64;
                    secs = secs.max(flood.seconds);
                }
                if received == 0.0 {
                    return Err("no datagram came back on any session".into());
                }
                for session in &sessions {
                    session.close(0, b"done");
                }
                Ok(one(
                    self.name(),
                    vec![
                        ("connections", MANY_CONNECTIONS as f64),
                        ("seconds", secs),
                        ("sent_per_s", sent / secs),
                        ("received_per_s", received / secs),
                        ("loss_pct", 100.0 * (1.0 - received / sent).max(0.0)),
                    ],
                ))
            }
            Scenario::Setup => {
                let clients = Clients::new(server.url(), &server.certificate_hash, 4)?;
                Ok(one(self.name(), setup(Arc::new(clients), p).await?))
            }
            Scenario::Idle => idle(server, p).await,
            Scenario::QmuxBulkSingle => {
                let session = Tcp::new(server.port, &server.certificate_hash)?
                    .qmux(tcp::SESSION_PATH)
                    .await?;
                let fields = tcp::qmux_bulk(&session, p.bulk_mib << 20).await?;
                web_transport_trait::Session::close(&session, 0, "done");
                Ok(one(self.name(), fields))
            }
            Scenario::QmuxLatency => {
                let session = Tcp::new(server.port, &server.certificate_hash)?
                    .qmux(tcp::SESSION_PATH)
                    .await?;
                let fields =
                    tcp::qmux_latency(&session, p.latency_messages, p.latency_warmup).await?;
                web_transport_trait::Session::close(&session, 0, "done");
                Ok(one(self.name(), fields))
            }
            Scenario::WsThroughput => {
                let (ws, _) = Tcp::new(server.port, &server.certificate_hash)?
                    .websocket(tcp::WS_PATH, &[], None)
                    .await?;
                Ok(one(
                    self.name(),
                    tcp::ws_throughput(ws, p.bulk_mib << 20).await?,
                ))
            }
            Scenario::WsLatency => {
                let (ws, _) = Tcp::new(server.port, &server.certificate_hash)?
                    .websocket(tcp::WS_PATH, &[], None)
                    .await?;
                Ok(one(
                    self.name(),
                    tcp::ws_latency(ws, p.latency_messages, p.latency_warmup).await?,
                ))
            }
            Scenario::WsIdle => tcp::ws_idle(server, p).await,
            Scenario::Http1Json | Scenario::Http2Json | Scenario::Http3Json => {
                let version = match self {
                    Scenario::Http1Json => http::Version::Http1,
                    Scenario::Http2Json => http::Version::Http2,
                    _ => http::Version::Http3,
                };
                Ok(one(
                    self.name(),
                    http::run(server, version, p.http_warmup, p.http_duration).await?,
                ))
            }
        }
    }
}

const CHUNK: usize = 64 * 1024;

/// Connections in the many-connection scenarios, each from its own client socket: a
/// kernel that spreads a reuse-port group by 4-tuple then spreads them too.
const MANY_CONNECTIONS: usize = 64;
/// Streams per session in `conns64_streams`.
const MANY_STREAMS: usize = 4;

/// `MANY_CONNECTIONS` sessions, set up 16 at a time.
async fn many_sessions(server: &Running) -> Result<Vec<Session>, Error> {
    let clients = Arc::new(Clients::new(
        server.url(),
        &server.certificate_hash,
        MANY_CONNECTIONS,
    )?);
    let mut sessions = Vec::with_capacity(MANY_CONNECTIONS);
    for _ in 0..MANY_CONNECTIONS / 16 {
        let mut batch: JoinSet<Result<Session, Error>> = JoinSet::new();
        for _ in 0..16 {
            let clients = clients.clone();
            batch.spawn(async move { clients.connect().await });
        }
        while let Some(done) = batch.join_next().await {
            sessions.push(done??);
        }
    }
    Ok(sessions)
}

/// Sends `per_stream` bytes on each of `streams` bidirectional streams at once and reads
/// every byte back; the clock stops when the last echo has arrived.
async fn bulk(
    session: &Session,
    streams: usize,
    per_stream: usize,
) -> Result<Vec<(&'static str, f64)>, Error> {
    let chunk = Bytes::from(vec![0xa5u8; CHUNK]);
    let mut tasks: JoinSet<Result<(), Error>> = JoinSet::new();
    let start = Instant::now();
    for _ in 0..streams {
        let (mut send, mut recv) = session.open_bi().await?;
        let chunk = chunk.clone();
        tasks.spawn(async move {
            let writer = async {
                let mut sent = 0;
                while sent < per_stream {
                    let n = CHUNK.min(per_stream - sent);
                    send.write_chunk(chunk.slice(..n)).await?;
                    sent += n;
                }
                send.finish()?;
                Ok::<_, Error>(())
            };
            let reader = async {
                let mut got = 0;
                while let Some(c) = recv.read_chunk(usize::MAX, true).await? {
                    got += c.bytes.len();
                }
                Ok::<_, Error>(got)
            };
            let (w, r) = tokio::join!(writer, reader);
            w?;
            let got = r?;
            if got != per_stream {
                return Err(format!("echoed {got} of {per_stream} bytes").into());
            }
            Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let secs = start.elapsed().as_secs_f64();
    let mib = (streams * per_stream) as f64 / (1 << 20) as f64;
    Ok(vec![
        ("streams", streams as f64),
        ("mib", mib),
        ("seconds", secs),
        ("mib_per_s", mib / secs),
    ])
}

/// One 64-byte message in flight at a time on one stream: each sample is a full round trip
/// through the server's stream echo.
async fn latency(
    session: &Session,
    messages: usize,
    warmup: usize,
) -> Result<Vec<(&'static str, f64)>, Error> {
    let (mut send, mut recv) = session.open_bi().await?;
    let msg = [0x5au8; 64];
    let mut buf = [0u8; 64];
    let mut samples = Vec::with_capacity(messages);
    for i in 0..warmup + messages {
        let t = Instant::now();
        send.write_all(&msg).await?;
        recv.read_exact(&mut buf).await?;
        if i >= warmup {
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    send.finish()?;
    let total: f64 = samples.iter().sum();
    samples.sort_by(f64::total_cmp);
    Ok(vec![
        ("messages", messages as f64),
        ("p50_us", percentile(&samples, 0.50)),
        ("p99_us", percentile(&samples, 0.99)),
        ("mean_us", total / messages as f64),
    ])
}

const DATAGRAM: usize = 1000;

/// Sends 1,000-byte datagrams as fast as the client's QUIC stack accepts them for
/// `duration`, counting the echoes until a short grace period after the last send.
async fn datagrams(
    session: &Session,
    duration: Duration,
) -> Result<Vec<(&'static str, f64)>, Error> {
    let flood = datagram_flood(session, duration).await?;
    if flood.received == 0 {
        return Err("no datagram came back".into());
    }
    let (secs, sent, received) = (flood.seconds, flood.sent as f64, flood.received as f64);
    Ok(vec![
        ("seconds", secs),
        ("sent", sent),
        ("received", received),
        ("sent_per_s", sent / secs),
        ("received_per_s", received / secs),
        ("loss_pct", 100.0 * (1.0 - received / sent).max(0.0)),
    ])
}

/// What one session's datagram flood sent and got back.
struct Flood {
    seconds: f64,
    sent: u64,
    received: u64,
}

/// Sends 1,000-byte datagrams for `duration` and counts the echoes until a short grace
/// period after the last send.
async fn datagram_flood(session: &Session, duration: Duration) -> Result<Flood, Error> {
    let max = session.max_datagram_size();
    if max < DATAGRAM {
        return Err(format!("max datagram size {max} is below {DATAGRAM}").into());
    }
    let received = Arc::new(AtomicU64::new(0));
    let reader = {
        let session = session.clone();
        let received = received.clone();
        tokio::spawn(async move {
            while session.read_datagram().await.is_ok() {
                received.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let payload = Bytes::from(vec![0x3cu8; DATAGRAM]);
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < duration {
        // Waiting for buffer space paces the sender at what the connection can carry,
        // rather than dropping most datagrams in the client before they leave.
        session.send_datagram_wait(payload.clone()).await?;
        sent += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    reader.abort();
    Ok(Flood {
        seconds,
        sent,
        received: received.load(Ordering::Relaxed),
    })
}

/// Time to a ready session and to the first echoed byte, for one new connection.
async fn one_session(clients: &Clients) -> Result<(f64, f64), Error> {
    let t = Instant::now();
    let session = clients.connect().await?;
    let ready = t.elapsed().as_secs_f64() * 1e3;
    let (mut send, mut recv) = session.open_bi().await?;
    send.write_all(&[0x42u8; 64]).await?;
    recv.read_chunk(64, true)
        .await?
        .ok_or("stream ended before the echo")?;
    let first_byte = t.elapsed().as_secs_f64() * 1e3;
    session.close(0, b"done");
    Ok((ready, first_byte))
}

/// Sessions one after another (unloaded setup latency), then many at a fixed concurrency
/// (setup rate).
async fn setup(clients: Arc<Clients>, p: &Params) -> Result<Vec<(&'static str, f64)>, Error> {
    let mut ready = Vec::with_capacity(p.setup_sequential);
    let mut first = Vec::with_capacity(p.setup_sequential);
    for _ in 0..p.setup_sequential {
        let (r, f) = one_session(&clients).await?;
        ready.push(r);
        first.push(f);
    }
    ready.sort_by(f64::total_cmp);
    first.sort_by(f64::total_cmp);

    let remaining = Arc::new(AtomicUsize::new(p.setup_concurrent));
    let start = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..p.setup_concurrency {
        let (clients, remaining) = (clients.clone(), remaining.clone());
        workers.spawn(async move {
            while take_one(&remaining) {
                one_session(&clients).await?;
            }
            Ok::<_, Error>(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(vec![
        ("sequential", p.setup_sequential as f64),
        ("ready_p50_ms", percentile(&ready, 0.50)),
        ("ttfb_p50_ms", percentile(&first, 0.50)),
        ("ttfb_p99_ms", percentile(&first, 0.99)),
        ("concurrent", p.setup_concurrent as f64),
        ("concurrency", p.setup_concurrency as f64),
        ("sessions_per_s", p.setup_concurrent as f64 / secs),
    ])
}

/// Client addresses the idle sessions are spread over (100 each at 10,000): the core
/// allows 256 connections and 1,024 sessions per address, limits this scenario is not about.
const IDLE_SOURCES: usize = 100;

/// Server RSS with idle sessions held open, one connection per session as browsers do.
///
/// The baseline is taken with one session already open, so one-time costs (runtime
/// threads, TLS and HTTP/3 state first touched) are not charged to the per-session figure.
async fn idle(server: &mut Running, p: &Params) -> Result<Vec<Measurement>, Error> {
    let clients = Arc::new(Clients::spread(
        server.url(),
        &server.certificate_hash,
        IDLE_SOURCES,
    )?);
    let held = Arc::new(Mutex::new(vec![clients.connect().await?]));
    tokio::time::sleep(p.settle).await;
    let baseline = server.rss_kib()?;
    let mut out = Vec::new();
    for &target in &p.idle_steps {
        let start = Instant::now();
        let have = held.lock().await.len();
        let remaining = Arc::new(AtomicUsize::new(target.saturating_sub(have)));
        let mut workers = JoinSet::new();
        for _ in 0..p.idle_concurrency {
            let (clients, held, remaining) = (clients.clone(), held.clone(), remaining.clone());
            workers.spawn(async move {
                let mut errors = 0u64;
                while take_one(&remaining) {
                    // A rare failed handshake among thousands says nothing about memory;
                    // retry it a few times, count it, and fail only if it persists.
                    let mut attempt = 0;
                    let session = loop {
                        match clients.connect().await {
                            Ok(s) => break s,
                            Err(_) if attempt < 3 => {
                                attempt += 1;
                                errors += 1;
                            }
                            Err(e) => return Err(e),
                        }
                    };
                    held.lock().await.push(session);
                }
                Ok::<_, Error>(errors)
            });
        }
        let mut connect_errors = 0;
        while let Some(done) = workers.join_next().await {
            connect_errors += done??;
        }
        let open_secs = start.elapsed().as_secs_f64();
        tokio::time::sleep(p.settle).await;
        if !server.alive() {
            return Err(format!("server died holding {target} sessions").into());
        }
        let rss = server.rss_kib()?;
        let alive = held
            .lock()
            .await
            .iter()
            .filter(|s| s.close_reason().is_none())
            .count();
        if alive < target {
            return Err(format!("only {alive} of {target} idle sessions stayed open").into());
        }
        let added = (target - 1) as f64;
        out.push(Measurement {
            name: format!("idle_{target}"),
            fields: vec![
                ("sessions", target as f64),
                ("baseline_kib", baseline as f64),
                ("rss_kib", rss as f64),
                ("per_session_kib", (rss as f64 - baseline as f64) / added),
                ("open_seconds", open_secs),
                ("connect_errors", connect_errors as f64),
            ],
        });
    }
    for s in held.lock().await.iter() {
        s.close(0, b"done");
    }
    Ok(out)
}
