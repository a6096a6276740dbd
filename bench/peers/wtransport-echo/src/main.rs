//! WebTransport echo server on wtransport, a peer for the Ferrovia benchmarks.
//!
//! `wtransport-echo --port 0 --host 127.0.0.1`
//!
//! Same contract as every server in the suite: the first stdout line is
//! `{"event":"listening","port":P,"certificateHash":HEX}`; on `/echo` it echoes
//! bidirectional streams, unidirectional streams (on a new unidirectional stream) and
//! datagrams. wtransport's transport settings stay at their defaults, as a user would run it.

use std::net::{IpAddr, SocketAddr};

use wtransport::{tls::Sha256DigestFmt, Connection, Endpoint, Identity, ServerConfig};

async fn echo(conn: Connection) {
    let bi = async {
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(Some(n)) = recv.read(&mut buf).await {
                    if send.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
                let _ = send.finish().await;
            });
        }
    };
    let uni = async {
        while let Ok(mut recv) = conn.accept_uni().await {
            let conn = conn.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(Some(n)) = recv.read(&mut buf).await {
                    data.extend_from_slice(&buf[..n]);
                }
                if let Ok(opening) = conn.open_uni().await {
                    if let Ok(mut send) = opening.await {
                        let _ = send.write_all(&data).await;
                        let _ = send.finish().await;
                    }
                }
            });
        }
    };
    let datagrams = async {
        while let Ok(d) = conn.receive_datagram().await {
            let _ = conn.send_datagram(d.payload());
        }
    };
    tokio::join!(bi, uni, datagrams);
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut port = 4433u16;
    let mut host: IpAddr = "127.0.0.1".parse()?;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().ok_or("--port needs a value")?.parse()?,
            "--host" => host = args.next().ok_or("--host needs a value")?.parse()?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let identity = Identity::self_signed(["localhost", "127.0.0.1", "::1"])?;
    let hash = identity.certificate_chain().as_slice()[0]
        .hash()
        .fmt(Sha256DigestFmt::DottedHex)
        .replace(':', "");
    let config = ServerConfig::builder()
        .with_bind_address(SocketAddr::new(host, port))
        .with_identity(identity)
        .build();
    let server = Endpoint::server(config)?;
    println!(
        r#"{{"event":"listening","port":{},"certificateHash":"{hash}"}}"#,
        server.local_addr()?.port()
    );
    loop {
        let incoming = server.accept().await;
        tokio::spawn(async move {
            let Ok(request) = incoming.await else { return };
            if request.path().split('?').next() != Some("/echo") {
                request.not_found().await;
                return;
            }
            if let Ok(conn) = request.accept().await {
                echo(conn).await;
            }
        });
    }
}
