//! WebSocket echo server on tokio-tungstenite, a peer for the Ferrovia benchmarks.
//!
//! `tungstenite-echo --port 0 --host 127.0.0.1`
//!
//! Same contract as every server in the suite: the first stdout line is
//! `{"event":"listening","port":P,"certificateHash":HEX}`. It serves TLS on TCP (rustls
//! through tokio-rustls, ALPN `http/1.1`, a fresh self-signed ECDSA P-256 certificate) and
//! takes a WebSocket (RFC 6455) on any path, echoing its text and binary messages with
//! tokio-tungstenite's own echo loop (`examples/echo-server.rs`: split the socket and
//! forward what it reads). It has no WebTransport and no QMux; tokio-tungstenite's settings
//! stay at their defaults, as a user would run it.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use futures_util::{future, StreamExt, TryStreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{
    rustls::{
        self,
        pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    },
    TlsAcceptor,
};

async fn serve(acceptor: TlsAcceptor, stream: TcpStream) {
    // The Ferrovia core sets TCP_NODELAY on its TCP side too.
    let _ = stream.set_nodelay(true);
    let Ok(tls) = acceptor.accept(stream).await else {
        return;
    };
    let Ok(ws) = tokio_tungstenite::accept_async(tls).await else {
        return;
    };
    let (write, read) = ws.split();
    // We should not forward messages other than text or binary.
    let _ = read
        .try_filter(|msg| future::ready(msg.is_text() || msg.is_binary()))
        .forward(write)
        .await;
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
    // rcgen's default key is ECDSA P-256, as every server in the suite uses.
    let certified = rcgen::generate_simple_self_signed(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])?;
    let der: CertificateDer<'static> = certified.cert.der().clone();
    let hash: String = ring::digest::digest(&ring::digest::SHA256, &der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![der], key)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));

    let listener = TcpListener::bind(SocketAddr::new(host, port)).await?;
    println!(
        r#"{{"event":"listening","port":{},"certificateHash":"{hash}"}}"#,
        listener.local_addr()?.port()
    );
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(acceptor.clone(), stream));
            }
            // Out of descriptors or similar: keep serving the connections we have.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}
