//! The one client every server faces: web-transport-quinn, trusting the server by the
//! SHA-256 of its certificate as a browser does with `serverCertificateHashes`.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use web_transport_quinn::{
    crypto,
    quinn::{
        self,
        crypto::rustls::QuicClientConfig,
        rustls::{
            self,
            client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
            pki_types::{CertificateDer, ServerName, UnixTime},
            DigitallySignedStruct, SignatureScheme,
        },
    },
    Client, Session,
};

use crate::Error;

/// Clients spread over a few UDP sockets, handed out round-robin.
///
/// Thousands of connections through one socket would make the client's single endpoint
/// driver the bottleneck of the session scenarios rather than the server.
pub struct Clients {
    clients: Vec<Client>,
    next: AtomicUsize,
    url: url::Url,
}

impl Clients {
    /// Builds `sockets` client endpoints on 127.0.0.1 that trust only `certificate_hash`.
    pub fn new(url: url::Url, certificate_hash: &[u8], sockets: usize) -> Result<Self, Error> {
        Self::build(url, certificate_hash, sockets, |_| LOOPBACK)
    }

    /// Like [`Clients::new`], but endpoint `i` binds its own loopback address (`127.0.0.1`,
    /// `127.0.0.2`, …), as `sockets` clients on as many hosts would: the connections the
    /// idle scenario holds then stay within a server's per-address limits (the core refuses
    /// a 257th connection from one address), which are not what it measures.
    pub fn spread(url: url::Url, certificate_hash: &[u8], sockets: usize) -> Result<Self, Error> {
        Self::build(url, certificate_hash, sockets, loopback_source)
    }

    fn build(
        url: url::Url,
        certificate_hash: &[u8],
        sockets: usize,
        address: impl Fn(usize) -> std::net::Ipv4Addr,
    ) -> Result<Self, Error> {
        let tls = tls_config(certificate_hash, &[web_transport_quinn::ALPN.as_bytes()])?;
        let mut transport = quinn::TransportConfig::default();
        // Idle sessions must outlive the slowest server's setup of 10,000 of them, whatever
        // idle timeout that server picked; everything else stays at quinn's defaults.
        transport.keep_alive_interval(Some(Duration::from_secs(5)));
        transport.max_idle_timeout(Some(Duration::from_secs(60).try_into()?));
        let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
        config.transport_config(Arc::new(transport));
        let clients = (0..sockets.max(1))
            .map(|i| {
                let endpoint =
                    quinn::Endpoint::client(std::net::SocketAddr::from((address(i), 0)))?;
                Ok(Client::new(endpoint, config.clone()))
            })
            .collect::<Result<_, Error>>()?;
        Ok(Self {
            clients,
            next: AtomicUsize::new(0),
            url,
        })
    }

    /// Opens a new QUIC connection and a WebTransport session on it.
    pub async fn connect(&self) -> Result<Session, Error> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        Ok(self.clients[i].connect(self.url.clone()).await?)
    }
}

const LOOPBACK: std::net::Ipv4Addr = std::net::Ipv4Addr::LOCALHOST;

/// The `i`-th client address on loopback: 127.0.0.1, 127.0.0.2, … (all of 127/8 reaches a
/// server bound to 127.0.0.1 on Linux).
pub fn loopback_source(i: usize) -> std::net::Ipv4Addr {
    let n = 1 + i as u32 % 0xff_fffe;
    std::net::Ipv4Addr::from(0x7f00_0000 | n)
}

/// TLS 1.3 with these ALPN protocols, trusting only the certificate whose SHA-256 is given.
pub fn tls_config(certificate_hash: &[u8], alpn: &[&[u8]]) -> Result<rustls::ClientConfig, Error> {
    let provider = crypto::default_provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedHash {
            provider,
            hash: certificate_hash.to_vec(),
        }))
        .with_no_client_auth();
    tls.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Ok(tls)
}

/// A plain QUIC endpoint (ALPN `h3`, quinn's default transport) for connections that never
/// speak WebTransport, with the same pinned certificate.
pub fn raw_endpoint(certificate_hash: &[u8]) -> Result<quinn::Endpoint, Error> {
    let tls = tls_config(certificate_hash, &[web_transport_quinn::ALPN.as_bytes()])?;
    let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap())?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// Accepts exactly the certificate whose DER SHA-256 matches, and still checks that the
/// server holds its key.
#[derive(Debug)]
struct PinnedHash {
    provider: crypto::Provider,
    hash: Vec<u8>,
}

impl ServerCertVerifier for PinnedHash {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if crypto::sha256(&self.provider, end_entity).as_ref() == self.hash.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
