//! Shared helpers: a server on 127.0.0.1:0, an independent client (web-transport-quinn),
//! and a bare HTTP/3 client for wire-level checks.
#![allow(dead_code)]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::{Buf, BufMut, BytesMut};
use ferrovia::{Certificate, Server, ServerConfig};
use web_transport_quinn::proto::{ConnectRequest, VarInt};

pub const TIMEOUT: Duration = Duration::from_secs(60);

pub struct TestServer {
    pub server: Server,
    pub addr: SocketAddr,
    pub cert: Certificate,
}

pub fn start_with(configure: impl FnOnce(&mut ServerConfig)) -> TestServer {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let cert = Certificate::self_signed(&["localhost", "127.0.0.1"]).expect("certificate");
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), cert.clone());
    configure(&mut config);
    let server = Server::bind(config).expect("bind");
    let addr = server.local_addr().unwrap();
    TestServer { server, addr, cert }
}

pub fn start() -> TestServer {
    start_with(|_| {})
}

impl TestServer {
    pub fn url(&self, path: &str) -> url::Url {
        url::Url::parse(&format!("https://localhost:{}{}", self.addr.port(), path)).unwrap()
    }

    pub fn client(&self) -> web_transport_quinn::Client {
        web_transport_quinn::ClientBuilder::new()
            .with_server_certificate_hashes(vec![self.cert.sha256().to_vec()])
            .expect("client")
    }

    /// Connects with the independent client; the server side is accepted by the caller.
    pub async fn connect(&self, path: &str) -> web_transport_quinn::Session {
        tokio::time::timeout(TIMEOUT, self.client().connect(self.url(path)))
            .await
            .expect("connect timed out")
            .expect("connect")
    }

    pub async fn connect_request(
        &self,
        request: ConnectRequest,
    ) -> Result<web_transport_quinn::Session, web_transport_quinn::ClientError> {
        tokio::time::timeout(TIMEOUT, self.client().connect(request))
            .await
            .expect("connect timed out")
    }

    /// Accepts the next request and session on the server side.
    pub async fn accept(&self) -> ferrovia::Session {
        let request = tokio::time::timeout(TIMEOUT, self.server.accept())
            .await
            .expect("accept timed out")
            .expect("server closed");
        request.accept().await.expect("accept")
    }

    /// One client session and its server side.
    pub async fn pair(&self, path: &str) -> (web_transport_quinn::Session, ferrovia::Session) {
        let (client, server) = tokio::join!(self.connect(path), self.accept());
        (client, server)
    }
}

/// The HTTP status of a failed CONNECT, as the independent client reports it.
pub fn rejected_status(err: &web_transport_quinn::ClientError) -> Option<u16> {
    use web_transport_quinn::{proto::ConnectError as P, ClientError, ConnectError};
    match err {
        ClientError::HttpError(ConnectError::ErrorStatus(s)) => Some(s.as_u16()),
        ClientError::HttpError(ConnectError::ProtoError(P::WrongStatus(Some(s)))) => {
            Some(s.as_u16())
        }
        ClientError::HttpError(ConnectError::ProtoError(P::ErrorStatus(s))) => Some(s.as_u16()),
        _ => None,
    }
}

/// Deterministic pseudo-random bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

// ---- A bare HTTP/3 client for what the independent client cannot do ----

#[derive(Debug)]
struct HashVerifier(Vec<u8>);

impl rustls::client::danger::ServerCertVerifier for HashVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if sha256(end_entity.as_ref()) == self.0 {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("certificate hash mismatch".into()))
        }
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 not used".into()))
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A QUIC connection with ALPN h3 and datagrams, verifying the server by certificate hash.
pub async fn raw_connection(server: &TestServer) -> quinn::Connection {
    raw_connection_with(server, |_| {})
        .await
        .expect("raw connect")
}

/// Like [`raw_connection`], with the client's transport tuned (a hostile client, say);
/// the error is the server's refusal, if any.
pub async fn raw_connection_with(
    server: &TestServer,
    tune: impl FnOnce(&mut quinn::TransportConfig),
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(HashVerifier(server.cert.sha256().to_vec())))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut transport = quinn::TransportConfig::default();
    tune(&mut transport);
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    endpoint.set_default_client_config(config);
    endpoint.connect(server.addr, "localhost").unwrap().await
}

/// The HTTP/3 error code a connection was closed with by the server.
pub async fn closed_with(conn: &quinn::Connection) -> u64 {
    match tokio::time::timeout(TIMEOUT, conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(c)) => c.error_code.into_inner(),
        other => panic!("expected an application close, got {other:?}"),
    }
}

/// A DATA frame carrying one capsule.
pub fn capsule_frame(typ: u64, body: &[u8]) -> Vec<u8> {
    let mut capsule = Vec::new();
    varint(typ, &mut capsule);
    varint(body.len() as u64, &mut capsule);
    capsule.extend_from_slice(body);
    let mut frame = Vec::new();
    varint(0x00, &mut frame);
    varint(capsule.len() as u64, &mut frame);
    frame.extend_from_slice(&capsule);
    frame
}

pub fn varint(v: u64, out: &mut impl BufMut) {
    VarInt::from_u64(v).unwrap().encode(out);
}

/// Opens our control stream with a draft-02 style SETTINGS frame.
pub async fn raw_settings(conn: &quinn::Connection) -> quinn::SendStream {
    raw_settings_with(conn, &[(0x08u64, 1u64), (0x33, 1), (0x2b603742, 1)]).await
}

/// Opens our control stream with a SETTINGS frame holding exactly these pairs.
pub async fn raw_settings_with(
    conn: &quinn::Connection,
    pairs: &[(u64, u64)],
) -> quinn::SendStream {
    let mut payload = BytesMut::new();
    for &(k, v) in pairs {
        varint(k, &mut payload);
        varint(v, &mut payload);
    }
    let mut buf = BytesMut::new();
    varint(0x00, &mut buf);
    varint(0x04, &mut buf);
    varint(payload.len() as u64, &mut buf);
    buf.put_slice(&payload);
    let mut s = conn.open_uni().await.unwrap();
    s.write_all(&buf).await.unwrap();
    s
}

/// Encodes a HEADERS frame with literal field lines (no Huffman), built by hand so the
/// test does not share the server's encoder.
pub fn headers_frame(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = vec![0u8, 0u8]; // Required Insert Count 0, Base 0
    for (name, value) in fields {
        // Literal Field Line With Literal Name: 001N H(0) + 3-bit prefix length.
        prefix_int(&mut block, 0x20, 3, name.len() as u64);
        block.extend_from_slice(name.as_bytes());
        prefix_int(&mut block, 0x00, 7, value.len() as u64);
        block.extend_from_slice(value.as_bytes());
    }
    let mut frame = Vec::new();
    varint(0x01, &mut frame);
    varint(block.len() as u64, &mut frame);
    frame.extend_from_slice(&block);
    frame
}

fn prefix_int(out: &mut Vec<u8>, flags: u8, bits: u8, mut v: u64) {
    let max = (1u64 << bits) - 1;
    if v < max {
        out.push(flags | v as u8);
        return;
    }
    out.push(flags | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// Sends an extended CONNECT on a new bidi stream and returns the response status.
pub async fn raw_connect(
    conn: &quinn::Connection,
    authority: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> (quinn::SendStream, quinn::RecvStream, u16) {
    let mut fields = vec![
        (":method", "CONNECT"),
        (":protocol", "webtransport"),
        (":scheme", "https"),
        (":authority", authority),
        (":path", path),
    ];
    fields.extend_from_slice(extra);
    raw_request(conn, &fields).await
}

/// Sends any request's HEADERS on a new bidi stream and returns the response status.
pub async fn raw_request(
    conn: &quinn::Connection,
    fields: &[(&str, &str)],
) -> (quinn::SendStream, quinn::RecvStream, u16) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&headers_frame(fields)).await.unwrap();
    let status = read_status(&mut recv).await;
    (send, recv, status)
}

/// Reads a response HEADERS frame and returns `:status`, decoded with the static table.
pub async fn read_status(recv: &mut quinn::RecvStream) -> u16 {
    let typ = read_varint(recv).await;
    assert_eq!(typ, 0x01, "expected HEADERS");
    let len = read_varint(recv).await;
    let mut block = vec![0u8; len as usize];
    recv.read_exact(&mut block).await.unwrap();
    let fields = ferrovia::wire::qpack::decode_field_section(&block, 1 << 16).unwrap();
    fields
        .iter()
        .find(|(k, _)| k == ":status")
        .map(|(_, v)| v.parse().unwrap())
        .expect(":status")
}

pub async fn read_varint(recv: &mut quinn::RecvStream) -> u64 {
    let mut first = [0u8; 1];
    recv.read_exact(&mut first).await.unwrap();
    let len = 1usize << (first[0] >> 6);
    let mut buf = vec![first[0] & 0x3f];
    buf.resize(len, 0);
    recv.read_exact(&mut buf[1..]).await.unwrap();
    let mut b = &buf[..];
    let mut v = 0u64;
    while b.has_remaining() {
        v = (v << 8) | u64::from(b.get_u8());
    }
    v
}
