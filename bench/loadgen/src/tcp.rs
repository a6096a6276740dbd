//! The TCP side: plain WebSockets (RFC 6455 over HTTP/1.1, tokio-tungstenite's client) and
//! QMux sessions over them (the `qmux` crate's client), on TLS that trusts the server by the
//! SHA-256 of its certificate, like the WebTransport client in `client.rs`.
//!
//! The QMux client is not what the core is built on (it has its own draft-02 machine). The
//! WebSocket codec is tokio-tungstenite's on every side, the core's included (behind
//! hyper's upgrade, its own task, keep-alive pings and bounded queues), so the WebSocket
//! comparison with the tokio-tungstenite peer measures what the core adds around that codec.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::{net::TcpStream, sync::Mutex, task::JoinSet};
use tokio_rustls::{client::TlsStream, rustls::pki_types::ServerName, TlsConnector};
use tokio_tungstenite::{
    tungstenite::{self, client::IntoClientRequest, Message},
    WebSocketStream,
};
use web_transport_trait::{RecvStream as _, SendStream as _, Session as _};

use crate::{
    client::{loopback_source, tls_config},
    measure::{percentile, take_one, Measurement, Params},
    server::Running,
    Error,
};

/// A WebSocket over TLS over TCP, client side.
pub type Ws = WebSocketStream<TlsStream<TcpStream>>;

/// Opens WebSockets and QMux sessions to one server's TCP side on 127.0.0.1.
#[derive(Clone)]
pub struct Tcp {
    connector: TlsConnector,
    port: u16,
}

impl Tcp {
    /// TLS 1.3 with ALPN `http/1.1`, trusting only `certificate_hash`.
    pub fn new(port: u16, certificate_hash: &[u8]) -> Result<Self, Error> {
        let tls = tls_config(certificate_hash, &[b"http/1.1"])?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(tls)),
            port,
        })
    }

    /// A WebSocket to `path` offering `protocols`, from `source` (127.0.0.1 if `None`);
    /// also returns the subprotocol the server chose.
    pub async fn websocket(
        &self,
        path: &str,
        protocols: &[&str],
        source: Option<Ipv4Addr>,
    ) -> Result<(Ws, Option<String>), Error> {
        let server = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let tcp = match source {
            None => TcpStream::connect(server).await?,
            Some(ip) => {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(SocketAddr::from((ip, 0)))?;
                socket.connect(server).await?
            }
        };
        // Every message is one write; without this a round trip could wait on Nagle.
        tcp.set_nodelay(true)?;
        let tls = self
            .connector
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        let mut request = format!("wss://localhost:{}{path}", self.port).into_client_request()?;
        if !protocols.is_empty() {
            request
                .headers_mut()
                .insert("sec-websocket-protocol", protocols.join(", ").parse()?);
        }
        match tokio_tungstenite::client_async(request, tls).await {
            Ok((ws, response)) => {
                let chosen = response
                    .headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                Ok((ws, chosen))
            }
            Err(tungstenite::Error::Http(response)) => Err(format!(
                "WebSocket handshake to {path} answered {}",
                response.status()
            )
            .into()),
            Err(e) => Err(e.into()),
        }
    }

    /// A QMux session (draft-02, the subprotocol `qmux-02`) on `path`.
    pub async fn qmux(&self, path: &str) -> Result<qmux::Session, Error> {
        let (ws, chosen) = self.websocket(path, &["qmux-02"], None).await?;
        let chosen = chosen.ok_or("the server chose no QMux subprotocol")?;
        Ok(qmux::ws::Upgraded::new(ws).with_alpn(&chosen).connect())
    }
}

/// The path the servers echo plain WebSockets on.
pub const WS_PATH: &str = "/ws";
/// The path the servers echo sessions on (WebTransport and QMux alike).
pub const SESSION_PATH: &str = "/echo";

const CHUNK: usize = 64 * 1024;

/// The next text or binary message; pings and pongs (the core pings every 10 s) are
/// skipped, and tungstenite answers pings by itself.
async fn next_data(
    read: &mut (impl futures_util::Stream<Item = tungstenite::Result<Message>> + Unpin),
) -> Result<Bytes, Error> {
    loop {
        match read.next().await {
            Some(Ok(Message::Binary(b))) => return Ok(b),
            Some(Ok(Message::Text(t))) => return Ok(Bytes::from(t.as_str().to_owned())),
            Some(Ok(Message::Close(f))) => return Err(format!("server closed: {f:?}").into()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => return Err("WebSocket ended".into()),
        }
    }
}

/// Sends `total` bytes as 64 KiB binary messages on one WebSocket while reading the echoes;
/// the clock stops when the last echoed byte has arrived.
pub async fn ws_throughput(ws: Ws, total: usize) -> Result<Vec<(&'static str, f64)>, Error> {
    let (mut write, mut read) = ws.split();
    let chunk = Bytes::from(vec![0xa5u8; CHUNK]);
    let start = Instant::now();
    let writer = async {
        let (mut sent, mut messages) = (0, 0usize);
        while sent < total {
            let n = CHUNK.min(total - sent);
            write.send(Message::Binary(chunk.slice(..n))).await?;
            sent += n;
            messages += 1;
        }
        Ok::<_, Error>(messages)
    };
    let reader = async {
        let mut got = 0;
        while got < total {
            got += next_data(&mut read).await?.len();
        }
        Ok::<_, Error>(got)
    };
    let (messages, got) = tokio::try_join!(writer, reader)?;
    let secs = start.elapsed().as_secs_f64();
    if got != total {
        return Err(format!("echoed {got} of {total} bytes").into());
    }
    let mut ws = write.reunite(read).map_err(|e| e.to_string())?;
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    let mib = total as f64 / (1 << 20) as f64;
    Ok(vec![
        ("messages", messages as f64),
        ("mib", mib),
        ("seconds", secs),
        ("mib_per_s", mib / secs),
    ])
}

const WS_MESSAGE: usize = 1024;

/// One 1 KiB binary message in flight at a time on one WebSocket: each sample is a full
/// round trip through the server's echo.
pub async fn ws_latency(
    mut ws: Ws,
    messages: usize,
    warmup: usize,
) -> Result<Vec<(&'static str, f64)>, Error> {
    let msg = Bytes::from(vec![0x5au8; WS_MESSAGE]);
    let mut samples = Vec::with_capacity(messages);
    for i in 0..warmup + messages {
        let t = Instant::now();
        ws.send(Message::Binary(msg.clone())).await?;
        let back = next_data(&mut ws).await?;
        if back.len() != WS_MESSAGE {
            return Err(format!("echo of {} bytes for {WS_MESSAGE}", back.len()).into());
        }
        if i >= warmup {
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    latency_fields(samples, messages)
}

fn latency_fields(
    mut samples: Vec<f64>,
    messages: usize,
) -> Result<Vec<(&'static str, f64)>, Error> {
    let total: f64 = samples.iter().sum();
    samples.sort_by(f64::total_cmp);
    Ok(vec![
        ("messages", messages as f64),
        ("p50_us", percentile(&samples, 0.50)),
        ("p99_us", percentile(&samples, 0.99)),
        ("mean_us", total / messages as f64),
    ])
}

/// Idle WebSockets spread over this many client addresses, 100 each at 10,000: the core
/// allows 256 connections per address, a limit this scenario is not about.
const SOURCES: usize = 100;

/// Server RSS with idle WebSockets held open, measured as the `idle` scenario measures
/// sessions: the baseline is taken with one WebSocket open, and the per-connection cost is
/// (RSS − baseline) / (connections − 1) after the same settling time. Each held WebSocket
/// has a task reading it, so pings from the server are answered as a browser would.
pub async fn ws_idle(server: &mut Running, p: &Params) -> Result<Vec<Measurement>, Error> {
    let tcp = Tcp::new(server.port, &server.certificate_hash)?;
    let closed = Arc::new(AtomicUsize::new(0));
    let held = Arc::new(Mutex::new(JoinSet::new()));
    let opened = Arc::new(AtomicUsize::new(0));
    let (first, _) = tcp
        .websocket(WS_PATH, &[], Some(loopback_source(0)))
        .await?;
    opened.fetch_add(1, Ordering::Relaxed);
    hold(first, &mut *held.lock().await, closed.clone());
    tokio::time::sleep(p.settle).await;
    let baseline = server.rss_kib()?;
    let mut out = Vec::new();
    for &target in &p.idle_steps {
        let start = Instant::now();
        let remaining = Arc::new(AtomicUsize::new(
            target.saturating_sub(opened.load(Ordering::Relaxed)),
        ));
        let mut workers = JoinSet::new();
        for _ in 0..p.idle_concurrency {
            let (tcp, held, remaining, opened, closed) = (
                tcp.clone(),
                held.clone(),
                remaining.clone(),
                opened.clone(),
                closed.clone(),
            );
            workers.spawn(async move {
                let mut errors = 0u64;
                while take_one(&remaining) {
                    let source = loopback_source(opened.fetch_add(1, Ordering::Relaxed) % SOURCES);
                    // As in `idle`: retry a rare failed handshake, count it, fail if it
                    // persists.
                    let mut attempt = 0;
                    let ws = loop {
                        match tcp.websocket(WS_PATH, &[], Some(source)).await {
                            Ok((ws, _)) => break ws,
                            Err(_) if attempt < 3 => {
                                attempt += 1;
                                errors += 1;
                            }
                            Err(e) => return Err(e),
                        }
                    };
                    hold(ws, &mut *held.lock().await, closed.clone());
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
            return Err(format!("server died holding {target} WebSockets").into());
        }
        let rss = server.rss_kib()?;
        let alive = target.saturating_sub(closed.load(Ordering::Relaxed));
        if alive < target {
            return Err(format!("only {alive} of {target} idle WebSockets stayed open").into());
        }
        let added = (target - 1) as f64;
        out.push(Measurement {
            name: format!("ws_idle_{target}"),
            fields: vec![
                ("connections", target as f64),
                ("baseline_kib", baseline as f64),
                ("rss_kib", rss as f64),
                ("per_connection_kib", (rss as f64 - baseline as f64) / added),
                ("open_seconds", open_secs),
                ("connect_errors", connect_errors as f64),
            ],
        });
    }
    // Dropping the readers drops the sockets.
    held.lock().await.abort_all();
    Ok(out)
}

/// Keeps reading a held WebSocket (answering pings) and counts it once it ends.
fn hold(mut ws: Ws, held: &mut JoinSet<()>, closed: Arc<AtomicUsize>) {
    held.spawn(async move {
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                break;
            }
        }
        closed.fetch_add(1, Ordering::Relaxed);
    });
}

/// The counterpart of `bulk` with one stream: `total` bytes written through one
/// bidirectional QMux stream in 64 KiB chunks while reading the echo.
pub async fn qmux_bulk(
    session: &qmux::Session,
    total: usize,
) -> Result<Vec<(&'static str, f64)>, Error> {
    let chunk = Bytes::from(vec![0xa5u8; CHUNK]);
    let start = Instant::now();
    let (mut send, mut recv) = session.open_bi().await?;
    let writer = async {
        let mut sent = 0;
        while sent < total {
            let n = CHUNK.min(total - sent);
            send.write_chunk(chunk.slice(..n)).await?;
            sent += n;
        }
        send.finish()?;
        Ok::<_, Error>(())
    };
    let reader = async {
        let mut got = 0;
        while let Some(c) = recv.read_chunk(usize::MAX).await? {
            got += c.len();
        }
        Ok::<_, Error>(got)
    };
    let ((), got) = tokio::try_join!(writer, reader)?;
    let secs = start.elapsed().as_secs_f64();
    if got != total {
        return Err(format!("echoed {got} of {total} bytes").into());
    }
    let mib = total as f64 / (1 << 20) as f64;
    Ok(vec![
        ("streams", 1.0),
        ("mib", mib),
        ("seconds", secs),
        ("mib_per_s", mib / secs),
    ])
}

/// The counterpart of `latency`: 64-byte messages, one in flight, on one QMux stream.
pub async fn qmux_latency(
    session: &qmux::Session,
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
        let mut got = 0;
        while got < buf.len() {
            got += recv
                .read(&mut buf[got..])
                .await?
                .ok_or("stream ended before the echo")?;
        }
        if i >= warmup {
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    send.finish()?;
    latency_fields(samples, messages)
}
