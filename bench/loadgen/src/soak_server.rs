//! `loadgen soak-server`: one Ferrovia server for `scripts/soak.sh`.
//!
//! ```text
//! loadgen soak-server [--every SECONDS]
//! ```
//!
//! Binds 127.0.0.1:0 (UDP, and TLS on TCP at the same port), echoes bidi streams, uni
//! streams (on a new uni stream) and datagrams on `/echo` (WebTransport and QMux sessions),
//! plain WebSocket messages on `/ws`, rejects `/reject` with 403 and leaves every other path to the server's own
//! 404. It prints `{"event":"listening","port":P,"certificateHash":HEX,"pid":N}` first,
//! then a sample line every `--every` seconds (default 60) and whenever it gets SIGUSR1:
//!
//! ```text
//! {"event":"sample","t":120.0,"rss_kib":…,"sessions":…,"connections":…,"fds":…,
//!  "accepted":…,"rejected":…,"closed_with_code":…,"closed_by_connection":…,"closed_other":…}
//! ```
//!
//! Connections without a session are closed after 2 s (rather than the default 10 s) and
//! silent connections after 5 s (idle timeout, keep-alive 2 s), so what a churning client
//! abandons is gone within seconds and a flat server shows zero sessions and connections
//! soon after the client stops.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use ferrovia::{Certificate, CloseInitiator, Server, ServerConfig, Session, StreamError};

use crate::Error;

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    rejected: AtomicU64,
    /// Sessions the client closed with CLOSE_WEBTRANSPORT_SESSION and a non-zero code.
    closed_with_code: AtomicU64,
    /// Sessions that ended with their connection (idle timeout after an abandoned client).
    closed_by_connection: AtomicU64,
    closed_other: AtomicU64,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn open_fds() -> usize {
    // The directory handle read_dir holds is one of the entries: leave it out.
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count().saturating_sub(1))
        .unwrap_or(0)
}

fn sample(server: &Server, counters: &Counters, started: Instant) -> String {
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    format!(
        r#"{{"event":"sample","t":{:.1},"rss_kib":{},"sessions":{},"connections":{},"fds":{},"accepted":{},"rejected":{},"closed_with_code":{},"closed_by_connection":{},"closed_other":{}}}"#,
        started.elapsed().as_secs_f64(),
        rss_kib(),
        server.session_count(),
        server.connection_count(),
        open_fds(),
        c(&counters.accepted),
        c(&counters.rejected),
        c(&counters.closed_with_code),
        c(&counters.closed_by_connection),
        c(&counters.closed_other),
    )
}

async fn echo(session: Session) {
    let bi = {
        let session = session.clone();
        async move {
            while let Ok((mut send, mut recv)) = session.accept_bi().await {
                tokio::spawn(async move {
                    loop {
                        match recv.read_chunk(64 * 1024).await {
                            Ok(Some(chunk)) => {
                                if send.write_chunk(chunk).await.is_err() {
                                    break;
                                }
                            }
                            Ok(None) => {
                                let _ = send.finish();
                                break;
                            }
                            Err(StreamError::Reset { code }) => {
                                let _ = send.reset(code);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                });
            }
        }
    };
    let uni = {
        let session = session.clone();
        async move {
            while let Ok(mut recv) = session.accept_uni().await {
                let session = session.clone();
                tokio::spawn(async move {
                    if let Ok(data) = recv.read_to_end(4 << 20).await {
                        if let Ok(mut send) = session.open_uni().await {
                            let _ = send.write_all(&data).await;
                            let _ = send.finish();
                        }
                    }
                });
            }
        }
    };
    let datagrams = {
        let session = session.clone();
        async move {
            while let Ok(d) = session.recv_datagram().await {
                let _ = session.send_datagram(&d).await;
            }
        }
    };
    tokio::join!(bi, uni, datagrams);
}

/// Runs until killed (SIGTERM, SIGINT).
pub async fn run(args: impl Iterator<Item = String>) -> Result<(), Error> {
    let mut every = Duration::from_secs(60);
    let mut args = args;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--every" => {
                let v: f64 = args.next().ok_or("--every needs a value")?.parse()?;
                every = Duration::from_secs_f64(v);
            }
            other => return Err(format!("soak-server: unknown argument {other:?}").into()),
        }
    }
    let cert = Certificate::self_signed(&["localhost", "127.0.0.1"])?;
    let mut config = ServerConfig::new("127.0.0.1:0".parse()?, cert.clone());
    config.limits.sessionless_timeout = Duration::from_secs(2);
    config.idle_timeout = Some(Duration::from_secs(5));
    config.keep_alive = Some(Duration::from_secs(2));
    let server = Server::bind(config)?;
    let echo_route = server.route("/echo")?;
    let reject_route = server.route("/reject")?;
    let ws_route = server.route("/ws")?;
    ws_route.allow_websockets();
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    println!(
        r#"{{"event":"listening","port":{},"certificateHash":"{}","pid":{}}}"#,
        server.local_addr()?.port(),
        cert.sha256_hex(),
        std::process::id()
    );

    {
        let counters = counters.clone();
        tokio::spawn(async move {
            while let Some(request) = reject_route.accept().await {
                if request.reject(403).await.is_ok() {
                    counters.rejected.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    {
        let counters = counters.clone();
        tokio::spawn(async move {
            while let Some(request) = echo_route.accept().await {
                let counters = counters.clone();
                tokio::spawn(async move {
                    let Ok(session) = request.accept().await else {
                        return;
                    };
                    counters.accepted.fetch_add(1, Ordering::Relaxed);
                    echo(session.clone()).await;
                    let info = session.closed().await;
                    let counter = match info.initiator {
                        CloseInitiator::Remote if info.code != 0 => &counters.closed_with_code,
                        CloseInitiator::Connection => &counters.closed_by_connection,
                        _ => &counters.closed_other,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                });
            }
        });
    }

    {
        let counters = counters.clone();
        tokio::spawn(async move {
            while let Some(request) = ws_route.accept().await {
                let counters = counters.clone();
                tokio::spawn(async move {
                    let Ok(ws) = request.accept_websocket_with(None, &[]).await else {
                        return;
                    };
                    counters.accepted.fetch_add(1, Ordering::Relaxed);
                    while let Ok(Some(m)) = ws.recv().await {
                        if ws.send(m).await.is_err() {
                            break;
                        }
                    }
                    let info = ws.closed().await;
                    let counter = match info.initiator {
                        CloseInitiator::Remote if info.code != 1005 => &counters.closed_with_code,
                        CloseInitiator::Connection => &counters.closed_by_connection,
                        _ => &counters.closed_other,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                });
            }
        });
    }

    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut ticks = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = usr1.recv() => {}
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
        println!("{}", sample(&server, &counters, started));
    }
    server.close(Duration::from_secs(1)).await;
    Ok(())
}
