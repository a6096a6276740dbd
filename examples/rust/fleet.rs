//! One member of a fleet behind a QUIC-LB-aware load balancer.
//!
//! `cargo run -p ferrovia --example fleet -- --server-id 1 --port 4433`
//!
//! Every connection ID this member issues carries its server ID in plaintext
//! (draft-ietf-quic-load-balancers), so a load balancer that reads the ID routes a client
//! back here even after the client's address changes. With `--fleet-secret` (or the
//! `FERROVIA_FLEET_SECRET` environment variable) every member derives the same stateless
//! reset and token keys: a member that restarted resets connections it no longer holds,
//! and an address-validation token from one member is good at all of them.
//!
//! On `/echo` it echoes each bidirectional stream, and answers each unidirectional stream
//! from the client with `member N` on a new unidirectional stream, so a client can ask
//! which member holds its session. SIGTERM or Ctrl-C drains: new sessions get 503, open
//! ones are told to finish (the WebTransport DRAIN capsule), and the process exits when the
//! last one ends or after `--grace` seconds (default 30).
//!
//! `--names a,b` sets the names of the self-signed certificate (default localhost and the
//! loopback addresses): the name or address clients use is the load balancer's.
//!
//! Prints JSON lines: `{"event":"listening","port":P,"serverId":N,"certificateHash":"..."}`,
//! then `session`, `draining` and `drained` events.

use std::time::Duration;

use ferrovia::{
    fleet::{FleetKeys, QuicLbConfig},
    Certificate, Server, ServerConfig, Session,
};

mod util;

use util::{emit, flags};

/// Length of the random part of each connection ID: with the one-byte server ID and the
/// first octet, IDs are 8 bytes, the length most QUIC stacks use.
const NONCE_LEN: usize = 6;

async fn serve(session: Session, member: u8) {
    let bi = {
        let session = session.clone();
        async move {
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
    };
    let uni = {
        let session = session.clone();
        async move {
            while let Ok(mut recv) = session.accept_uni().await {
                let session = session.clone();
                tokio::spawn(async move {
                    // The question's content does not matter; reading it to the end
                    // means the answer follows the whole question.
                    if recv.read_to_end(1024).await.is_err() {
                        return;
                    }
                    if let Ok(mut send) = session.open_uni().await {
                        let _ = send.write_all(format!("member {member}").as_bytes()).await;
                        let _ = send.finish();
                    }
                });
            }
        }
    };
    tokio::join!(bi, uni);
}

async fn shutdown_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let flags = flags(&[
        "port",
        "host",
        "server-id",
        "fleet-secret",
        "cert",
        "key",
        "grace",
        "names",
    ])?;
    let member: u8 = flags
        .get("server-id")
        .ok_or("--server-id is required (1 to 255: this member's byte in every connection ID)")?
        .parse()
        .map_err(|_| "--server-id must be 1 to 255")?;
    let grace = Duration::from_secs(match flags.get("grace") {
        Some(g) => g.parse().map_err(|_| "--grace must be whole seconds")?,
        None => 30,
    });
    let cert = match (flags.get("cert"), flags.get("key")) {
        (Some(c), Some(k)) => Certificate::from_pem_files(c, k)?,
        (None, None) => {
            // The names clients use reach the load balancer, not this member: give them here.
            let names = flags
                .get("names")
                .map(String::as_str)
                .unwrap_or("localhost,127.0.0.1,::1");
            Certificate::self_signed(&names.split(',').collect::<Vec<_>>())?
        }
        _ => return Err("give --cert and --key together".into()),
    };
    let mut config = ServerConfig::new(util::bind_addr(&flags)?, cert.clone());
    // Configuration ID 0; the server ID is one byte, the first after the ID's first octet,
    // which is where a load balancer reads it.
    config.connection_ids = Some(QuicLbConfig::new(0, &[member], NONCE_LEN)?);
    let secret = flags
        .get("fleet-secret")
        .cloned()
        .or_else(|| std::env::var("FERROVIA_FLEET_SECRET").ok());
    if let Some(secret) = secret {
        config.fleet_keys = Some(FleetKeys::derive(secret.as_bytes())?);
    }
    let server = Server::bind(config)?;
    let route = server.route("/echo")?;
    emit(format!(
        r#"{{"event":"listening","port":{},"serverId":{member},"certificateHash":"{}"}}"#,
        server.local_addr()?.port(),
        cert.sha256_hex()
    ));
    let accept = async {
        while let Some(request) = route.accept().await {
            let remote = request.remote_addr();
            if let Ok(session) = request.accept().await {
                emit(format!(r#"{{"event":"session","remote":"{remote}"}}"#));
                tokio::spawn(serve(session, member));
            }
        }
    };
    tokio::select! {
        _ = accept => {}
        r = shutdown_signal() => r?,
    }
    server.drain();
    emit(r#"{"event":"draining"}"#.into());
    let finished = tokio::time::timeout(grace, server.drained()).await.is_ok();
    emit(format!(r#"{{"event":"drained","clean":{finished}}}"#));
    server.close(Duration::from_secs(1)).await;
    Ok(())
}
