//! Ordinary HTTP: `GET /json` answered with the small document `{"message":"hello"}`, as
//! fast as a fixed number of requests in flight allows, over HTTP/1.1, HTTP/2 and HTTP/3.
//!
//! - HTTP/1.1: `H1_CONNECTIONS` keep-alive connections, one request at a time on each
//!   (HTTP/1.1 has no multiplexing, and pipelining is off in browsers and most clients).
//! - HTTP/2 and HTTP/3: `MUX_CONNECTIONS` connections with `MUX_STREAMS` requests in flight
//!   on each, as a browser page loading its API calls and assets does.
//!
//! Every worker sends its next request as soon as the previous answer is complete (closed
//! loop), for a warm-up and then a fixed measured time. Requests/s counts the responses
//! completed within the measured time; latencies (request sent to last body byte read) are
//! those of the requests both sent and completed within it. Any error, a status other
//! than 200 or a body other than the expected one fails the run, with one exception: when
//! the server closes an HTTP/1.1 or HTTP/2 connection gracefully (Hypercorn does after
//! 1,000 requests on one by default), the client opens a new one and sends the request
//! again, as a browser would, and counts it in `reconnects`; that request's latency
//! includes the new connection.
//!
//! The clients: hyper's (HTTP/1.1 and HTTP/2) on TLS 1.3 over TCP, and the `h3` crate's on
//! quinn (HTTP/3), each trusting only the certificate whose SHA-256 the server announced,
//! like every other client here. The core serves HTTP/1.1 and HTTP/2 with hyper's server
//! (as it uses tokio-tungstenite's codec for WebSockets), so on TCP the client comes from
//! the same family as the core's codec; the HTTP/3 client shares nothing with the core.
//! The client runs in the load generator's process on the same machine, so it takes CPU
//! from the server under test: figures are for the pair, the same client for every server.

use std::{
    future::Future,
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    net::TcpStream,
    task::{JoinHandle, JoinSet},
};
use tokio_rustls::{rustls::pki_types::ServerName, TlsConnector};
use web_transport_quinn::quinn::{self, crypto::rustls::QuicClientConfig};

use crate::{client::tls_config, measure::percentile, server::Running, Error};

/// The path every HTTP server under test answers.
pub const PATH: &str = "/json";
/// What it answers, byte for byte.
pub const BODY: &[u8] = br#"{"message":"hello"}"#;

/// HTTP/1.1 connections, one request in flight on each.
pub const H1_CONNECTIONS: usize = 16;
/// HTTP/2 and HTTP/3 connections …
pub const MUX_CONNECTIONS: usize = 4;
/// … and requests in flight on each.
pub const MUX_STREAMS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http1,
    Http2,
    Http3,
}

impl Version {
    fn layout(self) -> (usize, usize) {
        match self {
            Version::Http1 => (H1_CONNECTIONS, 1),
            Version::Http2 | Version::Http3 => (MUX_CONNECTIONS, MUX_STREAMS),
        }
    }
}

/// The measured window, shared by every worker of a run.
#[derive(Clone, Copy)]
struct Window {
    from: Instant,
    until: Instant,
}

/// What one worker saw in the measured window.
#[derive(Default)]
struct Tally {
    completed: u64,
    /// Microseconds, for requests sent and completed within the window.
    samples: Vec<f64>,
}

impl Window {
    /// Connection setup belongs to the warm-up: a connection still not ready when the
    /// measured window opens would charge its handshake to the figures.
    fn ready(&self) -> Result<(), Error> {
        if Instant::now() > self.from {
            return Err("a connection was not ready by the end of the warm-up".into());
        }
        Ok(())
    }
}

/// Runs one worker's closed loop of `request` until the window ends.
async fn worker<F, Fut>(window: Window, mut request: F) -> Result<Tally, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), Error>>,
{
    let mut tally = Tally::default();
    loop {
        let sent = Instant::now();
        if sent >= window.until {
            return Ok(tally);
        }
        request().await?;
        let done = Instant::now();
        if done >= window.from && done <= window.until {
            tally.completed += 1;
            if sent >= window.from {
                tally.samples.push((done - sent).as_secs_f64() * 1e6);
            }
        }
    }
}

/// An error with its causes, which hyper keeps out of its own message ("http2 error").
fn explain(e: impl std::error::Error) -> Error {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.into()
}

fn check(status: http::StatusCode, body: &[u8]) -> Result<(), Error> {
    if status != http::StatusCode::OK {
        return Err(format!("GET {PATH} answered {status}").into());
    }
    if body != BODY {
        return Err(format!(
            "GET {PATH} answered {:?}, not {:?}",
            String::from_utf8_lossy(body),
            String::from_utf8_lossy(BODY)
        )
        .into());
    }
    Ok(())
}

/// TLS over TCP to the server's port with these ALPN protocols; returns the stream and the
/// protocol the server chose.
async fn tls(
    port: u16,
    certificate_hash: &[u8],
    alpn: &[u8],
) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, Option<Vec<u8>>), Error> {
    let connector = TlsConnector::from(Arc::new(tls_config(certificate_hash, &[alpn])?));
    let tcp = TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    tcp.set_nodelay(true)?;
    let stream = connector
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let chosen = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    Ok((stream, chosen))
}

/// Whether a request failed because the server had closed (or was closing) the connection
/// gracefully: an HTTP/1.1 connection after `Connection: close`, an HTTP/2 GOAWAY with
/// NO_ERROR, a stream refused by it, or the socket closed under requests that crossed it.
/// Hypercorn does this after 1,000 requests on a connection by default
/// (`keep_alive_max_requests`); a client, a browser included, opens a new connection and
/// sends the request again.
fn gone(e: &hyper::Error) -> bool {
    if e.is_closed() || e.is_canceled() || e.is_incomplete_message() {
        return true;
    }
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(h2) = c.downcast_ref::<h2::Error>() {
            if h2.is_io()
                || h2
                    .reason()
                    .is_some_and(|r| r == h2::Reason::NO_ERROR || r == h2::Reason::REFUSED_STREAM)
            {
                return true;
            }
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof
            ) {
                return true;
            }
        }
        cause = c.source();
    }
    false
}

/// One GET on an HTTP/1.1 or HTTP/2 sender: `Ok(Err(_))` is a wrong answer, `Err(_)` a
/// failed request.
async fn get<B>(
    response: impl Future<Output = Result<http::Response<B>, hyper::Error>>,
) -> Result<Result<(), Error>, hyper::Error>
where
    B: http_body::Body<Data = Bytes, Error = hyper::Error>,
{
    let response = response.await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(check(status, &body))
}

async fn connect_http1(
    port: u16,
    certificate_hash: &[u8],
) -> Result<(http1::SendRequest<Empty<Bytes>>, JoinHandle<()>), Error> {
    let (stream, alpn) = tls(port, certificate_hash, b"http/1.1").await?;
    // A server that offers no ALPN at all (uvicorn) speaks HTTP/1.1.
    if alpn.as_deref().is_some_and(|a| a != b"http/1.1") {
        return Err(format!("the server chose ALPN {alpn:?} for HTTP/1.1").into());
    }
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(explain)?;
    Ok((sender, tokio::spawn(async move { drop(connection.await) })))
}

async fn connect_http2(
    port: u16,
    certificate_hash: &[u8],
) -> Result<(http2::SendRequest<Empty<Bytes>>, JoinHandle<()>), Error> {
    let (stream, alpn) = tls(port, certificate_hash, b"h2").await?;
    if alpn.as_deref() != Some(b"h2") {
        return Err(format!("the server chose ALPN {alpn:?}, not h2").into());
    }
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .map_err(explain)?;
    Ok((sender, tokio::spawn(async move { drop(connection.await) })))
}

/// One HTTP/1.1 connection at a time with one worker on it, sending one request at a time.
async fn http1_connection(
    port: u16,
    certificate_hash: Vec<u8>,
    window: Window,
) -> Result<(Vec<Tally>, u64), Error> {
    let first = connect_http1(port, &certificate_hash).await?;
    window.ready()?;
    let host = format!("localhost:{port}");
    let state = Arc::new(tokio::sync::Mutex::new((first, 0u64)));
    let tally = worker(window, || {
        let (state, host, hash) = (state.clone(), host.clone(), certificate_hash.clone());
        async move {
            let mut state = state.lock().await;
            let ((sender, driver), reconnects) = &mut *state;
            for attempt in 0..2 {
                let request = http::Request::get(PATH)
                    .header(http::header::HOST, &host)
                    .body(Empty::new())?;
                let sent = match sender.ready().await {
                    Ok(()) => get(sender.send_request(request)).await,
                    Err(e) => Err(e),
                };
                match sent {
                    Ok(answer) => return answer,
                    Err(e) if attempt == 0 && gone(&e) => {
                        driver.abort();
                        (*sender, *driver) = connect_http1(port, &hash).await?;
                        *reconnects += 1;
                    }
                    Err(e) => return Err(explain(e)),
                }
            }
            unreachable!("the second attempt returns")
        }
    })
    .await;
    let ((_, driver), reconnects) = &*state.lock().await;
    driver.abort();
    Ok((vec![tally?], *reconnects))
}

/// The HTTP/2 connection the workers of one slot share, replaced by a new one when the
/// server closes it gracefully.
struct Http2Slot {
    port: u16,
    certificate_hash: Vec<u8>,
    /// The current connection's sender and its generation.
    current: std::sync::Mutex<(u64, http2::SendRequest<Empty<Bytes>>)>,
    /// The drivers of every connection so far; held while reconnecting, so one worker
    /// reconnects and the others then use its connection.
    drivers: tokio::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Http2Slot {
    fn sender(&self) -> (u64, http2::SendRequest<Empty<Bytes>>) {
        let current = self.current.lock().expect("not poisoned");
        (current.0, current.1.clone())
    }

    /// Replaces connection `generation` unless another worker already has.
    async fn replace(&self, generation: u64) -> Result<(), Error> {
        let mut drivers = self.drivers.lock().await;
        if self.current.lock().expect("not poisoned").0 != generation {
            return Ok(());
        }
        let (sender, driver) = connect_http2(self.port, &self.certificate_hash).await?;
        drivers.push(driver);
        *self.current.lock().expect("not poisoned") = (generation + 1, sender);
        Ok(())
    }

    async fn get(&self, uri: &http::Uri) -> Result<(), Error> {
        for attempt in 0..2 {
            let (generation, mut sender) = self.sender();
            let request = http::Request::get(uri.clone()).body(Empty::new())?;
            let sent = match sender.ready().await {
                Ok(()) => get(sender.send_request(request)).await,
                Err(e) => Err(e),
            };
            match sent {
                Ok(answer) => return answer,
                Err(e) if attempt == 0 && gone(&e) => self.replace(generation).await?,
                Err(e) => return Err(explain(e)),
            }
        }
        unreachable!("the second attempt returns")
    }
}

/// One HTTP/2 connection at a time with `streams` workers on it, each one request in flight.
async fn http2_connection(
    port: u16,
    certificate_hash: Vec<u8>,
    streams: usize,
    window: Window,
) -> Result<(Vec<Tally>, u64), Error> {
    let (sender, driver) = connect_http2(port, &certificate_hash).await?;
    window.ready()?;
    let slot = Arc::new(Http2Slot {
        port,
        certificate_hash,
        current: std::sync::Mutex::new((0, sender)),
        drivers: tokio::sync::Mutex::new(vec![driver]),
    });
    let uri: http::Uri = format!("https://localhost:{port}{PATH}").parse()?;
    let mut workers = JoinSet::new();
    for _ in 0..streams {
        let (slot, uri) = (slot.clone(), uri.clone());
        workers.spawn(worker(window, move || {
            let (slot, uri) = (slot.clone(), uri.clone());
            async move { slot.get(&uri).await }
        }));
    }
    let tallies = join_all(workers).await;
    for driver in slot.drivers.lock().await.iter() {
        driver.abort();
    }
    let reconnects = slot.current.lock().expect("not poisoned").0;
    Ok((tallies?, reconnects))
}

/// One HTTP/3 connection (its own UDP socket) with `streams` workers on it.
async fn http3_connection(
    port: u16,
    certificate_hash: Vec<u8>,
    streams: usize,
    window: Window,
) -> Result<(Vec<Tally>, u64), Error> {
    let tls = tls_config(&certificate_hash, &[b"h3"])?;
    let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    endpoint.set_default_client_config(config);
    let connection = endpoint
        .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), "localhost")?
        .await?;
    // No GREASE: every server gets exactly the frames a request needs.
    let (mut driver, sender) = h3::client::builder()
        .send_grease(false)
        .build::<_, _, Bytes>(h3_quinn::Connection::new(connection))
        .await?;
    let driver = tokio::spawn(async move { driver.wait_idle().await });
    window.ready()?;
    let uri: http::Uri = format!("https://localhost:{port}{PATH}").parse()?;
    let mut workers = JoinSet::new();
    for _ in 0..streams {
        let (sender, uri) = (sender.clone(), uri.clone());
        workers.spawn(worker(window, move || {
            let (mut sender, uri) = (sender.clone(), uri.clone());
            async move {
                let request = http::Request::get(uri).body(())?;
                let mut stream = sender.send_request(request).await?;
                stream.finish().await?;
                let response = stream.recv_response().await?;
                let mut body = Vec::with_capacity(BODY.len());
                while let Some(mut chunk) = stream.recv_data().await? {
                    while chunk.has_remaining() {
                        let part = chunk.chunk();
                        body.extend_from_slice(part);
                        let n = part.len();
                        chunk.advance(n);
                    }
                }
                check(response.status(), &body)
            }
        }));
    }
    let tallies = join_all(workers).await;
    drop(sender);
    driver.abort();
    endpoint.close(quinn::VarInt::from_u32(0), b"done");
    Ok((tallies?, 0))
}

async fn join_all(mut workers: JoinSet<Result<Tally, Error>>) -> Result<Vec<Tally>, Error> {
    let mut out = Vec::new();
    while let Some(done) = workers.join_next().await {
        out.push(done??);
    }
    Ok(out)
}

/// Connects every connection, then runs the closed loops for `warmup` and `duration`.
pub async fn run(
    server: &Running,
    version: Version,
    warmup: Duration,
    duration: Duration,
) -> Result<Vec<(&'static str, f64)>, Error> {
    let (connections, streams) = version.layout();
    // Connections are set up inside the warm-up, which is long enough for their handshakes
    // (the smoke's too); what the measured window sees is steady request traffic.
    let start = Instant::now();
    let window = Window {
        from: start + warmup,
        until: start + warmup + duration,
    };
    let mut tasks = JoinSet::new();
    for _ in 0..connections {
        let (port, hash) = (server.port, server.certificate_hash.clone());
        match version {
            Version::Http1 => tasks.spawn(http1_connection(port, hash, window)),
            Version::Http2 => tasks.spawn(http2_connection(port, hash, streams, window)),
            Version::Http3 => tasks.spawn(http3_connection(port, hash, streams, window)),
        };
    }
    let (mut tallies, mut reconnects) = (Vec::new(), 0);
    while let Some(done) = tasks.join_next().await {
        let (t, r) = done??;
        tallies.extend(t);
        reconnects += r;
    }
    let completed: u64 = tallies.iter().map(|t| t.completed).sum();
    let mut samples: Vec<f64> = tallies.into_iter().flat_map(|t| t.samples).collect();
    if samples.is_empty() {
        return Err("no request completed within the measured time".into());
    }
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    samples.sort_by(f64::total_cmp);
    let seconds = duration.as_secs_f64();
    Ok(vec![
        ("connections", connections as f64),
        ("streams_per_connection", streams as f64),
        ("seconds", seconds),
        ("requests", completed as f64),
        ("requests_per_s", completed as f64 / seconds),
        ("p50_us", percentile(&samples, 0.50)),
        ("p99_us", percentile(&samples, 0.99)),
        ("mean_us", mean),
        ("reconnects", reconnects as f64),
    ])
}
