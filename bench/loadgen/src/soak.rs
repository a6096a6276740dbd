//! `loadgen soak`: the churning client of `scripts/soak.sh`.
//!
//! ```text
//! loadgen soak --port P --hash HEX --seconds S [--rate OPS_PER_SECOND] [--concurrency N]
//! ```
//!
//! Against a `loadgen soak-server` on 127.0.0.1:P it starts `--rate` operations a second
//! (default 20, at most `--concurrency` at once, default 48) for `--seconds`, each one of:
//!
//! - clean (35%): a session on `/echo` that echoes a bidi stream (1 KiB to 1 MiB), a uni
//!   stream each way and ten datagrams, then closes with a code (4000..4999) and reason;
//! - abandoned (15%): a session on `/echo` whose client vanishes mid-transfer: it runs on
//!   a runtime of its own that is dropped while the stream and datagrams are still
//!   flowing, so no packet tells the server (it ends by idle timeout);
//! - sessionless (10%): a QUIC connection with ALPN h3 that never asks for a session; the
//!   server must close it (after its sessionless timeout);
//! - rejected (15%): a CONNECT to `/reject` (the application answers 403) or to an unknown
//!   path (the server answers 404);
//! - websocket (10%): a plain WebSocket on `/ws` over TLS and HTTP/1.1 on the TCP side that
//!   echoes a text and a binary message (1 KiB to 256 KiB), then closes with a code the
//!   server's Close frame must carry back;
//! - qmux (10%): a QMux session on `/echo` over a WebSocket that echoes a bidi stream (1 KiB
//!   to 256 KiB), then closes with a code;
//! - tcp-gone (5%): a WebSocket on `/ws` whose client either drops its TCP connection in the
//!   middle of a message, or goes silent (reads and answers nothing) until the server closes
//!   the connection, which it must within 15 s (idle timeout 5 s).
//!
//! It prints a progress line on stderr each minute and a JSON summary on stdout at the end,
//! and exits non-zero if any operation failed in a way the mix does not intend (wrong
//! bytes back, a refused session, a status other than the expected one, a sessionless
//! connection the server never closed).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::{sync::Semaphore, task::JoinSet};
use web_transport_quinn::quinn;

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::{
    protocol::{frame::coding::CloseCode, CloseFrame},
    Message,
};
use web_transport_trait::{RecvStream as _, SendStream as _, Session as _};

use crate::{client::Clients, tcp::Tcp, Error};

#[derive(Clone, Copy, Debug)]
enum Kind {
    Clean,
    Abandoned,
    Sessionless,
    Rejected,
    WebSocket,
    Qmux,
    TcpGone,
}

#[derive(Default)]
struct Stats {
    started: [AtomicU64; 7],
    done: [AtomicU64; 7],
    errors: AtomicU64,
    skipped: AtomicU64,
    bytes_echoed: AtomicU64,
    datagrams_sent: AtomicU64,
    datagrams_back: AtomicU64,
    first_errors: Mutex<Vec<String>>,
}

impl Stats {
    fn error(&self, kind: Kind, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_errors.lock().unwrap();
        if first.len() < 10 {
            let line = format!("{kind:?}: {e}");
            eprintln!("soak: error: {line}");
            first.push(line);
        }
    }

    fn line(&self, elapsed: Duration) -> String {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            r#"{{"t":{:.1},"clean":{},"abandoned":{},"sessionless":{},"rejected":{},"websocket":{},"qmux":{},"tcp_gone":{},"errors":{},"skipped":{},"bytes_echoed":{},"datagrams_sent":{},"datagrams_back":{}}}"#,
            elapsed.as_secs_f64(),
            n(&self.done[0]),
            n(&self.done[1]),
            n(&self.done[2]),
            n(&self.done[3]),
            n(&self.done[4]),
            n(&self.done[5]),
            n(&self.done[6]),
            n(&self.errors),
            n(&self.skipped),
            n(&self.bytes_echoed),
            n(&self.datagrams_sent),
            n(&self.datagrams_back),
        )
    }
}

/// xorshift64*: enough randomness for a load mix, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

struct Target {
    tcp: Tcp,
    echo: Clients,
    reject: Clients,
    missing: Clients,
    raw: quinn::Endpoint,
    port: u16,
    hash: Vec<u8>,
}

fn url(port: u16, path: &str) -> url::Url {
    url::Url::parse(&format!("https://127.0.0.1:{port}{path}")).unwrap()
}

async fn clean(t: &Target, stats: &Stats, seed: u64) -> Result<(), Error> {
    let session = t.echo.connect().await?;
    // A bidi stream echoed whole.
    let len = 1024 + (seed % (1 << 20)) as usize;
    let payload = bytes(len, seed);
    let (mut send, mut recv) = session.open_bi().await?;
    let writer = async {
        send.write_all(&payload).await?;
        send.finish()?;
        Ok::<_, Error>(())
    };
    let reader = async { Ok::<_, Error>(recv.read_to_end(2 << 20).await?) };
    let (written, back) = tokio::join!(writer, reader);
    written?;
    if back? != payload {
        return Err("bidi echo differs".into());
    }
    // A uni stream up, echoed on a uni stream down.
    let up = bytes(16 * 1024, seed ^ 0xabcd);
    let mut uni = session.open_uni().await?;
    uni.write_all(&up).await?;
    uni.finish()?;
    let mut down = session.accept_uni().await?;
    if down.read_to_end(1 << 20).await? != up {
        return Err("uni echo differs".into());
    }
    stats
        .bytes_echoed
        .fetch_add((len + up.len()) as u64, Ordering::Relaxed);
    // Datagrams: unreliable, so only their content is checked.
    for i in 0..10u8 {
        session.send_datagram(Bytes::from(vec![i; 200]))?;
    }
    stats.datagrams_sent.fetch_add(10, Ordering::Relaxed);
    for _ in 0..10 {
        match tokio::time::timeout(Duration::from_millis(300), session.read_datagram()).await {
            Ok(Ok(d)) => {
                if d.len() != 200 || d.iter().any(|b| *b != d[0]) {
                    return Err("datagram echo differs".into());
                }
                stats.datagrams_back.fetch_add(1, Ordering::Relaxed);
            }
            _ => break,
        }
    }
    let code = 4000 + (seed % 1000) as u32;
    session.close(code, b"soak: done");
    // The client waits for the server to close the connection after the capsule (or a
    // short timeout of its own).
    let _ = tokio::time::timeout(Duration::from_secs(5), session.closed()).await;
    Ok(())
}

/// A session whose client disappears mid-transfer: everything runs on a private runtime
/// that is dropped, without closing anything, while data is still flowing.
async fn abandoned(t: &Target, seed: u64) -> Result<(), Error> {
    let (port, hash) = (t.port, t.hash.clone());
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(Err(Error::from(e)));
                return;
            }
        };
        let result = runtime.block_on(async move {
            let clients = Clients::new(url(port, "/echo"), &hash, 1)?;
            let session = clients.connect().await?;
            let (mut send, mut recv) = session.open_bi().await?;
            let chunk = bytes(64 * 1024, seed);
            // Every handle lives in this task, which never ends: dropped any earlier, they
            // would close the session politely.
            tokio::spawn(async move {
                let _endpoint = clients;
                let write = async { while send.write_all(&chunk).await.is_ok() {} };
                let read =
                    async { while let Ok(Some(_)) = recv.read_chunk(1 << 16, true).await {} };
                let datagrams = async {
                    for i in 0u32.. {
                        if session
                            .send_datagram(Bytes::from(vec![i as u8; 300]))
                            .is_err()
                        {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                };
                tokio::join!(write, read, datagrams);
                std::future::pending::<()>().await;
            });
            // Let the transfer run for 50 to 550 ms, then vanish.
            tokio::time::sleep(Duration::from_millis(50 + seed % 500)).await;
            Ok::<_, Error>(())
        });
        // Dropping the runtime drops every task without polling it again: no CLOSE frame,
        // no capsule, and the UDP socket goes away with the endpoint driver.
        drop(runtime);
        let _ = tx.send(result);
    });
    rx.await
        .map_err(|_| "the abandoning client's thread panicked")?
}

/// A plain WebSocket echo on the TCP side, closed with a code the server must echo.
async fn websocket(t: &Target, stats: &Stats, seed: u64) -> Result<(), Error> {
    let (mut ws, _) = t.tcp.websocket("/ws", &[], None).await?;
    let text = format!("soak {seed} ✓");
    let binary = Bytes::from(bytes(1024 + (seed % (255 * 1024)) as usize, seed));
    ws.send(Message::text(text.clone())).await?;
    ws.send(Message::Binary(binary.clone())).await?;
    for want in [Bytes::from(text.clone()), binary.clone()] {
        if next_message(&mut ws).await? != want {
            return Err("WebSocket echo differs".into());
        }
    }
    stats
        .bytes_echoed
        .fetch_add((text.len() + binary.len()) as u64, Ordering::Relaxed);
    let code = 4000 + (seed % 1000) as u16;
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: "soak: done".into(),
    })))
    .await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(Some(f)))) if u16::from(f.code) == code => return Ok(()),
            Some(Ok(Message::Close(other))) => {
                return Err(format!("the server's Close carried {other:?}, not {code}").into())
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => return Err("the connection ended before the server's Close".into()),
        }
    }
}

/// The next text or binary message, skipping pings and pongs.
async fn next_message(ws: &mut crate::tcp::Ws) -> Result<Bytes, Error> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(Bytes::from(t.as_str().to_owned())),
            Some(Ok(Message::Binary(b))) => return Ok(b),
            Some(Ok(Message::Close(f))) => return Err(format!("server closed: {f:?}").into()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => return Err("WebSocket ended".into()),
        }
    }
}

/// A QMux session over a WebSocket that echoes one bidi stream, then closes with a code.
async fn qmux_session(t: &Target, stats: &Stats, seed: u64) -> Result<(), Error> {
    let session = t.tcp.qmux("/echo").await?;
    let payload = bytes(1024 + (seed % (255 * 1024)) as usize, seed);
    let (mut send, mut recv) = session.open_bi().await?;
    let writer = async {
        send.write_all(&payload).await?;
        send.finish()?;
        Ok::<_, Error>(())
    };
    let reader = async {
        let mut back = Vec::new();
        while let Some(chunk) = recv.read_chunk(usize::MAX).await? {
            back.extend_from_slice(&chunk);
        }
        Ok::<_, Error>(back)
    };
    let ((), back) = tokio::try_join!(writer, reader)?;
    if back != payload {
        return Err("QMux echo differs".into());
    }
    stats
        .bytes_echoed
        .fetch_add(payload.len() as u64, Ordering::Relaxed);
    session.close(4000 + (seed % 1000) as u32, "soak: done");
    let _ = tokio::time::timeout(Duration::from_secs(5), session.closed()).await;
    Ok(())
}

/// A WebSocket client that drops its TCP connection mid-message, or goes silent until the
/// server gives up on it.
async fn tcp_gone(t: &Target, seed: u64) -> Result<(), Error> {
    let (ws, _) = t.tcp.websocket("/ws", &[], None).await?;
    let mut tls = ws.into_inner();
    if seed.is_multiple_of(2) {
        // The header of a 60,000-byte masked binary frame and a few bytes of it; then the
        // connection goes away.
        let mut frame = vec![0x82, 0xFE, 0x00, 0x00, 1, 2, 3, 4];
        frame[2..4].copy_from_slice(&60_000u16.to_be_bytes());
        frame.extend_from_slice(&[0u8; 512]);
        tls.write_all(&frame).await?;
        tls.flush().await?;
        drop(tls);
        return Ok(());
    }
    // Silent: nothing read, nothing answered (the server's pings go unanswered). The
    // server must close the connection; reading shows when it did.
    let mut sink = Vec::new();
    match tokio::time::timeout(Duration::from_secs(15), async {
        use tokio::io::AsyncReadExt;
        tokio::time::sleep(Duration::from_secs(1)).await;
        tls.read_to_end(&mut sink).await
    })
    .await
    {
        Ok(_) => Ok(()),
        Err(_) => Err("the server kept a silent WebSocket open for 15 s".into()),
    }
}

/// A QUIC connection that never asks for a session: the server must close it.
async fn sessionless(t: &Target) -> Result<(), Error> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], t.port));
    let conn = t.raw.connect(addr, "localhost")?.await?;
    match tokio::time::timeout(Duration::from_secs(10), conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(_))
        | Ok(quinn::ConnectionError::ConnectionClosed(_)) => Ok(()),
        Ok(other) => Err(format!("connection without a session ended by {other}").into()),
        Err(_) => Err("the server kept a connection without a session for 10 s".into()),
    }
}

async fn rejected(t: &Target, seed: u64) -> Result<(), Error> {
    let (clients, want) = if seed.is_multiple_of(2) {
        (&t.reject, 403)
    } else {
        (&t.missing, 404)
    };
    match clients.connect().await {
        Ok(_) => Err(format!("a session was accepted where {want} was expected").into()),
        Err(e) => match status(&e) {
            Some(s) if s == want => Ok(()),
            other => Err(format!("expected {want}, got {other:?}: {e}").into()),
        },
    }
}

/// The HTTP status of a refused CONNECT, as web-transport-quinn reports it.
fn status(err: &Error) -> Option<u16> {
    use web_transport_quinn::{proto::ConnectError as P, ClientError, ConnectError};
    match err.downcast_ref::<ClientError>()? {
        ClientError::HttpError(ConnectError::ErrorStatus(s)) => Some(s.as_u16()),
        ClientError::HttpError(ConnectError::ProtoError(P::WrongStatus(Some(s)))) => {
            Some(s.as_u16())
        }
        ClientError::HttpError(ConnectError::ProtoError(P::ErrorStatus(s))) => Some(s.as_u16()),
        _ => None,
    }
}

const KINDS: [Kind; 7] = [
    Kind::Clean,
    Kind::Abandoned,
    Kind::Sessionless,
    Kind::Rejected,
    Kind::WebSocket,
    Kind::Qmux,
    Kind::TcpGone,
];

/// Picks the next operation: 35% clean, 15% abandoned, 10% sessionless, 15% rejected, 10%
/// WebSocket, 10% QMux, 5% TCP client gone.
fn pick(roll: u64) -> Kind {
    match roll % 100 {
        0..=34 => Kind::Clean,
        35..=49 => Kind::Abandoned,
        50..=59 => Kind::Sessionless,
        60..=74 => Kind::Rejected,
        75..=84 => Kind::WebSocket,
        85..=94 => Kind::Qmux,
        _ => Kind::TcpGone,
    }
}

async fn one(t: &Target, stats: &Stats, kind: Kind, seed: u64) {
    let op = async {
        match kind {
            Kind::Clean => clean(t, stats, seed).await,
            Kind::Abandoned => abandoned(t, seed).await,
            Kind::Sessionless => sessionless(t).await,
            Kind::Rejected => rejected(t, seed).await,
            Kind::WebSocket => websocket(t, stats, seed).await,
            Kind::Qmux => qmux_session(t, stats, seed).await,
            Kind::TcpGone => tcp_gone(t, seed).await,
        }
    };
    match tokio::time::timeout(Duration::from_secs(30), op).await {
        Ok(Ok(())) => {
            stats.done[kind as usize].fetch_add(1, Ordering::Relaxed);
        }
        Ok(Err(e)) => stats.error(kind, e),
        Err(_) => stats.error(kind, "timed out after 30 s"),
    }
}

/// Runs the churn; see the module documentation.
pub async fn run(args: impl Iterator<Item = String>) -> Result<(), Error> {
    let (mut port, mut hash, mut seconds) = (None, None, None);
    let (mut rate, mut concurrency) = (20.0f64, 48usize);
    let mut args = args;
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--port" => port = Some(value()?.parse::<u16>()?),
            "--hash" => {
                let hex = value()?;
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("x"), 16))
                    .collect::<Result<Vec<u8>, _>>()
                    .map_err(|_| "--hash takes the certificate's SHA-256 in hex")?;
                hash = Some(bytes);
            }
            "--seconds" => seconds = Some(Duration::from_secs_f64(value()?.parse()?)),
            "--rate" => rate = value()?.parse()?,
            "--concurrency" => concurrency = value()?.parse()?,
            other => return Err(format!("soak: unknown argument {other:?}").into()),
        }
    }
    let usage = "usage: loadgen soak --port P --hash HEX --seconds S [--rate N] [--concurrency N]";
    let (Some(port), Some(hash), Some(seconds)) = (port, hash, seconds) else {
        return Err(usage.into());
    };
    if rate.is_nan() || rate <= 0.0 || concurrency == 0 {
        return Err("--rate and --concurrency must be positive".into());
    }
    let target = Arc::new(Target {
        tcp: Tcp::new(port, &hash)?,
        echo: Clients::new(url(port, "/echo"), &hash, 2)?,
        reject: Clients::new(url(port, "/reject"), &hash, 1)?,
        missing: Clients::new(url(port, "/missing"), &hash, 1)?,
        raw: crate::client::raw_endpoint(&hash)?,
        port,
        hash,
    });
    let stats = Arc::new(Stats::default());
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut rng = Rng(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1);
    let started = Instant::now();
    let mut next_report = started + Duration::from_secs(60);
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = JoinSet::new();
    while started.elapsed() < seconds {
        ticks.tick().await;
        while let Some(joined) = tasks.try_join_next() {
            if let Err(e) = joined {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("soak: an operation panicked: {e}");
            }
        }
        if Instant::now() >= next_report {
            eprintln!("soak: {}", stats.line(started.elapsed()));
            next_report += Duration::from_secs(60);
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            stats.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let kind = pick(rng.next());
        let seed = rng.next();
        stats.started[kind as usize].fetch_add(1, Ordering::Relaxed);
        let (target, stats) = (target.clone(), stats.clone());
        tasks.spawn(async move {
            one(&target, &stats, kind, seed).await;
            drop(permit);
        });
    }
    // Every operation ends within its own 30 s timeout.
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("soak: an operation panicked: {e}");
        }
    }
    target.raw.close(0u32.into(), b"soak over");
    let _ = tokio::time::timeout(Duration::from_secs(5), target.raw.wait_idle()).await;
    println!("{}", stats.line(started.elapsed()));
    let started_total: u64 = KINDS
        .iter()
        .map(|k| stats.started[*k as usize].load(Ordering::Relaxed))
        .sum();
    let errors = stats.errors.load(Ordering::Relaxed);
    if errors > 0 {
        return Err(format!("{errors} of {started_total} operations failed").into());
    }
    Ok(())
}
