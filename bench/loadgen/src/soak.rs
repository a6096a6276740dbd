//! `loadgen soak`: the churning client of `scripts/soak.sh`.
//!
//! ```text
//! loadgen soak --port P --hash HEX --seconds S [--rate OPS_PER_SECOND] [--concurrency N]
//! ```
//!
//! Against a `loadgen soak-server` on 127.0.0.1:P it starts `--rate` operations a second
//! (default 20, at most `--concurrency` at once, default 48) for `--seconds`, each one of:
//!
//! - clean (45%): a session on `/echo` that echoes a bidi stream (1 KiB to 1 MiB), a uni
//!   stream each way and ten datagrams, then closes with a code (4000..4999) and reason;
//! - abandoned (20%): a session on `/echo` whose client vanishes mid-transfer: it runs on
//!   a runtime of its own that is dropped while the stream and datagrams are still
//!   flowing, so no packet tells the server (it ends by idle timeout);
//! - sessionless (15%): a QUIC connection with ALPN h3 that never asks for a session; the
//!   server must close it (after its sessionless timeout);
//! - rejected (20%): a CONNECT to `/reject` (the application answers 403) or to an unknown
//!   path (the server answers 404).
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

use crate::{client::Clients, Error};

#[derive(Clone, Copy, Debug)]
enum Kind {
    Clean,
    Abandoned,
    Sessionless,
    Rejected,
}

#[derive(Default)]
struct Stats {
    started: [AtomicU64; 4],
    done: [AtomicU64; 4],
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
            r#"{{"t":{:.1},"clean":{},"abandoned":{},"sessionless":{},"rejected":{},"errors":{},"skipped":{},"bytes_echoed":{},"datagrams_sent":{},"datagrams_back":{}}}"#,
            elapsed.as_secs_f64(),
            n(&self.done[0]),
            n(&self.done[1]),
            n(&self.done[2]),
            n(&self.done[3]),
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

const KINDS: [Kind; 4] = [
    Kind::Clean,
    Kind::Abandoned,
    Kind::Sessionless,
    Kind::Rejected,
];

/// Picks the next operation: 45% clean, 20% abandoned, 15% sessionless, 20% rejected.
fn pick(roll: u64) -> Kind {
    match roll % 100 {
        0..=44 => Kind::Clean,
        45..=64 => Kind::Abandoned,
        65..=79 => Kind::Sessionless,
        _ => Kind::Rejected,
    }
}

async fn one(t: &Target, stats: &Stats, kind: Kind, seed: u64) {
    let op = async {
        match kind {
            Kind::Clean => clean(t, stats, seed).await,
            Kind::Abandoned => abandoned(t, seed).await,
            Kind::Sessionless => sessionless(t).await,
            Kind::Rejected => rejected(t, seed).await,
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
        while tasks.try_join_next().is_some() {}
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
    while tasks.join_next().await.is_some() {}
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
