//! The core's echo server with `max_bidi_streams` and `max_uni_streams` taken from
//! `STREAMS`, to measure what the stream limits cost per idle session.
//!
//! ```sh
//! CARGO_TARGET_DIR=target/bench-peers/cargo cargo build --release \
//!   --manifest-path bench/experiments/stream-limits/Cargo.toml
//! for n in 512 100 16; do
//!   target/release/loadgen --only idle \
//!     --server "streams$n=env STREAMS=$n target/bench-peers/cargo/release/stream-limits"
//! done
//! ```
//!
//! quinn allocates receive state for every stream a peer is allowed to open as soon as the
//! connection exists, so the limits are paid for by every idle session.

use ferrovia::{Certificate, Server, ServerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let streams: u32 = std::env::var("STREAMS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let cert = Certificate::self_signed(&["localhost", "127.0.0.1"])?;
    let mut config = ServerConfig::new("127.0.0.1:0".parse()?, cert.clone());
    config.limits.max_bidi_streams = streams;
    config.limits.max_uni_streams = streams;
    let server = Server::bind(config)?;
    println!(
        r#"{{"event":"listening","port":{},"certificateHash":"{}"}}"#,
        server.local_addr()?.port(),
        cert.sha256_hex()
    );
    while let Some(request) = server.accept().await {
        let Ok(session) = request.accept().await else {
            continue;
        };
        tokio::spawn(async move {
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
        });
    }
    Ok(())
}
