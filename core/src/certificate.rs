//! TLS certificates: PEM files, or self-signed ones that browsers accept through
//! `serverCertificateHashes`.

use std::{fmt, path::Path, sync::Arc, time::Duration};

use base64::Engine as _;
use ring::digest;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

use crate::error::CertificateError;

/// The longest validity browsers accept for `serverCertificateHashes` is 14 days; we stay a
/// little under so clock skew between server and browser cannot push it over.
const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(13 * 24 * 3600);

/// A certificate chain and its private key, ready to serve.
///
/// Cheap to clone.
#[derive(Clone)]
pub struct Certificate {
    certified: Arc<CertifiedKey>,
    key_pem: Arc<String>,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("sha256", &self.sha256_hex())
            .finish_non_exhaustive()
    }
}

impl Certificate {
    /// Generates a self-signed ECDSA P-256 certificate valid for 13 days, for the given DNS
    /// names and IP addresses. Browsers accept it through `serverCertificateHashes` with the
    /// hash from [`Certificate::sha256`].
    pub fn self_signed<S: AsRef<str>>(names: &[S]) -> Result<Self, CertificateError> {
        Self::self_signed_for(names, SELF_SIGNED_VALIDITY)
    }

    /// Like [`self_signed`](Self::self_signed), valid for `validity` from now. Its period
    /// starts 5 minutes back, for browsers whose clock runs behind, so it spans `validity`
    /// plus 5 minutes: browsers accept a certificate by hash only when that whole span is 14
    /// days or less ([`accepted_by_hash`](Self::accepted_by_hash)).
    pub fn self_signed_for<S: AsRef<str>>(
        names: &[S],
        validity: Duration,
    ) -> Result<Self, CertificateError> {
        let names: Vec<String> = names.iter().map(|n| n.as_ref().to_owned()).collect();
        if names.is_empty() {
            return Err(CertificateError::Generate(
                "at least one name is required".into(),
            ));
        }
        let mut params = rcgen::CertificateParams::new(names)
            .map_err(|e| CertificateError::Generate(e.to_string()))?;
        let now = time::OffsetDateTime::now_utc();
        // Backdate slightly so a browser whose clock runs a little behind still accepts it.
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now
            + time::Duration::try_from(validity)
                .map_err(|e| CertificateError::Generate(e.to_string()))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ferrovia self-signed");
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CertificateError::Generate(e.to_string()))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| CertificateError::Generate(e.to_string()))?;
        Self::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
    }

    /// Loads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or
    /// SEC1) from files.
    pub fn from_pem_files(
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<Self, CertificateError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| CertificateError::Read {
                path: p.to_owned(),
                source,
            })
        };
        let cert = read(cert_path.as_ref())?;
        let key = read(key_path.as_ref())?;
        Self::from_pem_named(
            &cert,
            &key,
            &cert_path.as_ref().display().to_string(),
            &key_path.as_ref().display().to_string(),
        )
    }

    /// Loads a certificate chain and private key from PEM text.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, CertificateError> {
        Self::from_pem_named(cert_pem, key_pem, "certificate PEM", "key PEM")
    }

    fn from_pem_named(
        cert_pem: &[u8],
        key_pem: &[u8],
        cert_name: &str,
        key_name: &str,
    ) -> Result<Self, CertificateError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| CertificateError::NoCertificate(format!("{cert_name}: {e}")))?;
        if chain.is_empty() {
            return Err(CertificateError::NoCertificate(cert_name.to_owned()));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| CertificateError::NoPrivateKey(format!("{key_name}: {e}")))?;
        let provider = rustls::crypto::ring::default_provider();
        let certified = CertifiedKey::from_der(chain, key, &provider)
            .map_err(|e| CertificateError::Mismatch(e.to_string()))?;
        Ok(Self {
            certified: Arc::new(certified),
            key_pem: Arc::new(String::from_utf8_lossy(key_pem).into_owned()),
        })
    }

    /// The DER bytes of the leaf certificate.
    pub fn der(&self) -> &[u8] {
        self.certified.cert[0].as_ref()
    }

    /// The leaf certificate followed by the rest of the chain, as PEM.
    pub fn chain_pem(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut out = String::new();
        for cert in &self.certified.cert {
            out.push_str("-----BEGIN CERTIFICATE-----\n");
            let text = b64.encode(cert.as_ref());
            for line in text.as_bytes().chunks(64) {
                out.push_str(std::str::from_utf8(line).unwrap_or_default());
                out.push('\n');
            }
            out.push_str("-----END CERTIFICATE-----\n");
        }
        out
    }

    /// The private key as PEM, as it was loaded or generated.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// SHA-256 of the DER leaf certificate: the value for `serverCertificateHashes`.
    pub fn sha256(&self) -> [u8; 32] {
        sha256(self.der())
    }

    /// [`Certificate::sha256`] as lowercase hex.
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256())
    }

    /// Base64 SHA-256 of the leaf's SubjectPublicKeyInfo: the value Chrome's
    /// `--ignore-certificate-errors-spki-list` flag wants.
    pub fn spki_sha256_base64(&self) -> String {
        let spki = self
            .certified
            .key
            .public_key()
            .map(|spki| sha256(spki.as_ref()))
            .unwrap_or_default();
        base64::engine::general_purpose::STANDARD.encode(spki)
    }

    pub(crate) fn certified_key(&self) -> Arc<CertifiedKey> {
        self.certified.clone()
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

impl Certificate {
    /// Whether the leaf certificate is valid for `host` (a DNS name, wildcards included, or
    /// an IP address), as a browser verifying it by name would decide.
    pub fn is_valid_for(&self, host: &str) -> bool {
        let Ok(name) = rustls_pki_types::ServerName::try_from(host) else {
            return false;
        };
        let der = CertificateDer::from(self.der());
        let Ok(cert) = webpki::EndEntityCert::try_from(&der) else {
            return false;
        };
        cert.verify_is_valid_for_subject_name(&name).is_ok()
    }

    /// How long the leaf certificate is valid (notAfter − notBefore), read from its DER;
    /// `None` if that cannot be read.
    pub fn validity(&self) -> Option<Duration> {
        let (before, after) = der_validity(self.der())?;
        Duration::try_from(after - before).ok()
    }

    /// Whether browsers accept this certificate through `serverCertificateHashes`: valid
    /// for at most 14 days (W3C WebTransport). A certificate from a CA is not, and pages
    /// must then connect without hashes.
    pub fn accepted_by_hash(&self) -> bool {
        self.validity()
            .is_some_and(|v| v <= Duration::from_secs(14 * 24 * 3600))
    }
}

/// One DER element: its tag, its contents and what follows it.
fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// notBefore and notAfter of an X.509 certificate (RFC 5280 §4.1).
fn der_validity(der: &[u8]) -> Option<(time::OffsetDateTime, time::OffsetDateTime)> {
    let (0x30, cert, _) = der_element(der)? else {
        return None;
    };
    let (0x30, tbs, _) = der_element(cert)? else {
        return None;
    };
    let (tag, _, mut rest) = der_element(tbs)?;
    // An explicit version comes first in v2 and v3 certificates; the serial number follows.
    if tag == 0xa0 {
        rest = der_element(rest)?.2;
    }
    let rest = der_element(rest)?.2; // signature algorithm
    let rest = der_element(rest)?.2; // issuer
    let (0x30, validity, _) = der_element(rest)? else {
        return None;
    };
    let (t1, before, rest) = der_element(validity)?;
    let (t2, after, _) = der_element(rest)?;
    Some((der_time(t1, before)?, der_time(t2, after)?))
}

/// A UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ), as RFC 5280 §4.1.2.5
/// requires them.
fn der_time(tag: u8, text: &[u8]) -> Option<time::OffsetDateTime> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    // Digits only, so the slices below fall on character boundaries and no sign slips in.
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match (tag, text.len()) {
        (0x17, 12) => {
            let yy: i32 = text[..2].parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        (0x18, 14) => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    let num = |i: usize| rest.get(i..i + 2)?.parse::<u8>().ok();
    let date =
        time::Date::from_calendar_date(year, time::Month::try_from(num(0)?).ok()?, num(2)?).ok()?;
    let at = date.with_hms(num(4)?, num(6)?, num(8)?).ok()?;
    Some(at.assume_utc())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Serves the current certificate and lets it be replaced while the server runs.
#[derive(Debug)]
pub(crate) struct CertificateResolver {
    current: std::sync::RwLock<Certificate>,
    /// The certificate a renewal will switch to, announced ahead (its hash is served
    /// beside the current one).
    next: std::sync::RwLock<Option<Certificate>>,
}

impl CertificateResolver {
    pub(crate) fn new(cert: Certificate) -> Self {
        Self {
            current: std::sync::RwLock::new(cert),
            next: std::sync::RwLock::new(None),
        }
    }

    pub(crate) fn set(&self, cert: Certificate) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = cert;
        *self.next.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub(crate) fn announce(&self, next: Certificate) {
        *self.next.write().unwrap_or_else(|e| e.into_inner()) = Some(next);
    }

    pub(crate) fn next(&self) -> Option<Certificate> {
        self.next.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn get(&self) -> Certificate {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl rustls::server::ResolvesServerCert for CertificateResolver {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get().certified_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_p256_and_short_lived() {
        let cert = Certificate::self_signed(&["localhost", "127.0.0.1"]).unwrap();
        assert_eq!(cert.sha256_hex().len(), 64);
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(cert.spki_sha256_base64())
                .unwrap()
                .len(),
            32
        );
        // Round-trip through PEM gives the same certificate.
        let again =
            Certificate::from_pem(cert.chain_pem().as_bytes(), cert.key_pem().as_bytes()).unwrap();
        assert_eq!(again.sha256(), cert.sha256());
        assert_eq!(again.spki_sha256_base64(), cert.spki_sha256_base64());
    }

    #[test]
    fn validity_is_read_from_the_certificate() {
        // The period starts 5 minutes back (see self_signed_for).
        let backdated = Duration::from_secs(300);
        let short = Certificate::self_signed(&["localhost"]).unwrap();
        assert_eq!(short.validity(), Some(SELF_SIGNED_VALIDITY + backdated));
        assert!(short.accepted_by_hash());
        let day = Duration::from_secs(24 * 3600);
        let long = Certificate::self_signed_for(&["localhost"], 90 * day).unwrap();
        assert_eq!(long.validity(), Some(90 * day + backdated));
        assert!(!long.accepted_by_hash());
        let edge = Certificate::self_signed_for(&["localhost"], 14 * day - backdated).unwrap();
        assert!(edge.accepted_by_hash());
        let over = Certificate::self_signed_for(&["localhost"], 14 * day).unwrap();
        assert!(!over.accepted_by_hash());
        // GeneralizedTime, for dates from 2050 on.
        assert_eq!(
            der_time(0x18, b"20510102030405Z").map(|t| t.unix_timestamp()),
            Some(2_556_241_445)
        );
        assert_eq!(der_time(0x17, b"2601020304Z"), None);
        assert_eq!(der_time(0x17, "1\u{e9}345678901Z".as_bytes()), None);
        assert_eq!(der_time(0x17, b"+60102030405Z"), None);
        assert_eq!(der_validity(b"\x30\x03\x30\x01"), None);
    }

    #[test]
    fn validity_for_names_follows_the_subject_alternative_names() {
        let cert = Certificate::self_signed(&["localhost", "*.example.com", "127.0.0.1"]).unwrap();
        assert!(cert.is_valid_for("localhost"));
        assert!(cert.is_valid_for("a.example.com"));
        assert!(cert.is_valid_for("127.0.0.1"));
        assert!(!cert.is_valid_for("example.com"));
        assert!(!cert.is_valid_for("evil.test"));
        assert!(!cert.is_valid_for("::1"));
    }

    #[test]
    fn mismatched_key_is_rejected() {
        let a = Certificate::self_signed(&["localhost"]).unwrap();
        let b = Certificate::self_signed(&["localhost"]).unwrap();
        let err =
            Certificate::from_pem(a.chain_pem().as_bytes(), b.key_pem().as_bytes()).unwrap_err();
        assert!(matches!(err, CertificateError::Mismatch(_)), "{err}");
    }

    #[test]
    fn missing_files_and_garbage_are_clear_errors() {
        let err = Certificate::from_pem_files("/nonexistent/cert.pem", "/nonexistent/key.pem")
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
        let err = Certificate::from_pem(b"not pem", b"not pem").unwrap_err();
        assert!(matches!(err, CertificateError::NoCertificate(_)), "{err}");
        let a = Certificate::self_signed(&["localhost"]).unwrap();
        let err = Certificate::from_pem(a.chain_pem().as_bytes(), b"junk").unwrap_err();
        assert!(matches!(err, CertificateError::NoPrivateKey(_)), "{err}");
    }

    #[test]
    fn no_names_is_an_error() {
        let names: [&str; 0] = [];
        assert!(Certificate::self_signed(&names).is_err());
    }
}
