//! Single-stream loopback throughput of the core: a web-transport-quinn client sends N MiB
//! through one bidirectional stream to a Ferrovia echo session and reads it back.
//!
//! `cargo run --release -p ferrovia --example throughput -- [MiB] [runs]`
//!
//! Prints one JSON record per run. Client and server share one process and runtime, so
//! the figure is a lower bound on what the server alone can do.

use std::time::Instant;

use ferrovia::{Certificate, Server, ServerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(256);
    let runs: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    let cert = Certificate::self_signed(&["localhost"])?;
    let server = Server::bind(ServerConfig::new("127.0.0.1:0".parse()?, cert.clone()))?;
    let port = server.local_addr()?.port();
    tokio::spawn(async move {
        while let Some(req) = server.accept().await {
            let Ok(session) = req.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = session.accept_bi().await {
                    tokio::spawn(async move {
                        while let Ok(Some(chunk)) = recv.read_chunk(1 << 16).await {
                            if send.write_chunk(chunk).await.is_err() {
                                return;
                            }
                        }
                        let _ = send.finish();
                    });
                }
            });
        }
    });
    let client = web_transport_quinn::ClientBuilder::new()
        .with_server_certificate_hashes(vec![cert.sha256().to_vec()])?;
    let url = url::Url::parse(&format!("https://localhost:{port}/bench"))?;
    let session = client.connect(url).await?;
    let chunk = vec![0xa5u8; 256 * 1024];
    let total = mib << 20;
    for run in 0..runs {
        let (mut send, mut recv) = session.open_bi().await?;
        let start = Instant::now();
        let writer = async {
            let mut sent = 0;
            while sent < total {
                send.write_all(&chunk).await?;
                sent += chunk.len();
            }
            send.finish()?;
            Ok::<_, Box<dyn std::error::Error>>(())
        };
        let reader = async {
            let mut got = 0usize;
            let mut buf = vec![0u8; 1 << 16];
            while let Some(n) = recv.read(&mut buf).await? {
                got += n;
            }
            Ok::<_, Box<dyn std::error::Error>>(got)
        };
        let (w, r) = tokio::join!(writer, reader);
        w?;
        let got = r?;
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(got, total);
        println!(
            r#"{{"scenario":"single_stream_echo","run":{run},"mib":{mib},"seconds":{secs:.3},"mib_per_s":{:.1}}}"#,
            mib as f64 / secs
        );
    }
    Ok(())
}
