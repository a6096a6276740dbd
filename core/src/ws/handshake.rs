//! The WebSocket opening handshake, sans-IO: RFC 6455 (HTTP/1.1 Upgrade) and RFC 8441
//! (HTTP/2 extended CONNECT), from a request head to what to answer.

use base64::Engine as _;

/// A request head that is a well-formed WebSocket opening handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// `Sec-WebSocket-Key` (HTTP/1.1 only; RFC 8441 has none).
    pub key: Option<String>,
    /// The subprotocols offered in `Sec-WebSocket-Protocol`, in the client's order.
    pub protocols: Vec<String>,
    /// The extensions offered in `Sec-WebSocket-Extensions` (names only).
    pub extensions: Vec<String>,
}

/// Why a request is not a WebSocket handshake we serve: the status and a reason, sent as
/// the response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {reason}")]
pub struct Rejection {
    /// The HTTP status.
    pub status: u16,
    /// What was wrong.
    pub reason: &'static str,
}

fn reject(status: u16, reason: &'static str) -> Rejection {
    Rejection { status, reason }
}

/// Whether a request head asks for a WebSocket at all (so that other requests can go to an
/// HTTP handler): an `Upgrade: websocket` on HTTP/1.1, or a CONNECT with `:protocol`
/// `websocket` on HTTP/2.
pub fn is_websocket_request(
    method: &str,
    protocol: Option<&str>,
    headers: &[(String, String)],
) -> bool {
    if method.eq_ignore_ascii_case("CONNECT") {
        return protocol.is_some_and(|p| p.eq_ignore_ascii_case("websocket"));
    }
    header_tokens(headers, "upgrade").any(|t| t.eq_ignore_ascii_case("websocket"))
}

/// The comma-separated tokens of every `name` header, trimmed.
fn header_tokens<'a>(
    headers: &'a [(String, String)],
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .iter()
        .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks an opening handshake. `http2` selects RFC 8441 (method CONNECT, `:protocol`
/// websocket) instead of RFC 6455 (method GET, `Upgrade`, `Connection`, a key).
pub fn check(
    http2: bool,
    method: &str,
    protocol: Option<&str>,
    headers: &[(String, String)],
) -> Result<Upgrade, Rejection> {
    let key = if http2 {
        if !method.eq_ignore_ascii_case("CONNECT")
            || !protocol.is_some_and(|p| p.eq_ignore_ascii_case("websocket"))
        {
            return Err(reject(
                400,
                "an HTTP/2 WebSocket is a CONNECT with :protocol websocket",
            ));
        }
        None
    } else {
        if method != "GET" {
            return Err(reject(400, "a WebSocket upgrade must be a GET"));
        }
        if !header_tokens(headers, "upgrade").any(|t| t.eq_ignore_ascii_case("websocket")) {
            return Err(reject(400, "missing Upgrade: websocket"));
        }
        if !header_tokens(headers, "connection").any(|t| t.eq_ignore_ascii_case("upgrade")) {
            return Err(reject(400, "missing Connection: Upgrade"));
        }
        let key = header(headers, "sec-websocket-key")
            .ok_or(reject(400, "missing Sec-WebSocket-Key"))?
            .trim();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(key)
            .map_err(|_| reject(400, "Sec-WebSocket-Key is not base64"))?;
        if decoded.len() != 16 {
            return Err(reject(400, "Sec-WebSocket-Key must encode 16 bytes"));
        }
        Some(key.to_owned())
    };
    match header(headers, "sec-websocket-version").map(str::trim) {
        Some("13") => {}
        Some(_) => {
            return Err(reject(
                400,
                "unsupported Sec-WebSocket-Version (13 is served)",
            ))
        }
        None => return Err(reject(400, "missing Sec-WebSocket-Version")),
    }
    let protocols: Vec<String> = header_tokens(headers, "sec-websocket-protocol")
        .map(str::to_owned)
        .collect();
    if protocols.iter().any(|p| !is_token(p)) {
        return Err(reject(400, "Sec-WebSocket-Protocol holds a non-token"));
    }
    let extensions = header_tokens(headers, "sec-websocket-extensions")
        .map(|e| e.split(';').next().unwrap_or("").trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect();
    Ok(Upgrade {
        key,
        protocols,
        extensions,
    })
}

/// `Sec-WebSocket-Accept` for a key (RFC 6455 §4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(ctx.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    #[test]
    fn the_rfc_6455_example_key() {
        assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn http1_upgrades_parse_and_bad_ones_get_400_with_a_reason() {
        let good = h(&[
            ("host", "localhost"),
            ("upgrade", "websocket"),
            ("connection", "keep-alive, Upgrade"),
            ("sec-websocket-key", KEY),
            ("sec-websocket-version", "13"),
            ("sec-websocket-protocol", "qmux-02.chat, qmux-02"),
            ("sec-websocket-protocol", "chat"),
            (
                "sec-websocket-extensions",
                "permessage-deflate; client_max_window_bits",
            ),
        ]);
        let u = check(false, "GET", None, &good).unwrap();
        assert_eq!(u.key.as_deref(), Some(KEY));
        assert_eq!(u.protocols, ["qmux-02.chat", "qmux-02", "chat"]);
        assert_eq!(u.extensions, ["permessage-deflate"]);
        assert!(is_websocket_request("GET", None, &good));

        let without = |name: &str| {
            let list: Vec<_> = good.iter().filter(|(k, _)| k != name).cloned().collect();
            check(false, "GET", None, &list).unwrap_err()
        };
        assert_eq!(
            without("sec-websocket-key").reason,
            "missing Sec-WebSocket-Key"
        );
        assert_eq!(without("upgrade").status, 400);
        assert_eq!(without("connection").status, 400);
        assert_eq!(without("sec-websocket-version").status, 400);
        let mut bad = good.clone();
        bad[3].1 = "c2hvcnQ=".into();
        assert_eq!(
            check(false, "GET", None, &bad).unwrap_err().reason,
            "Sec-WebSocket-Key must encode 16 bytes"
        );
        let mut old = good.clone();
        old[4].1 = "8".into();
        assert!(check(false, "GET", None, &old)
            .unwrap_err()
            .reason
            .contains("Version"));
        assert_eq!(check(false, "POST", None, &good).unwrap_err().status, 400);
    }

    #[test]
    fn http2_extended_connect() {
        let headers = h(&[("sec-websocket-version", "13"), ("origin", "https://a")]);
        let u = check(true, "CONNECT", Some("websocket"), &headers).unwrap();
        assert_eq!(u.key, None);
        assert!(is_websocket_request("CONNECT", Some("websocket"), &headers));
        assert!(!is_websocket_request("CONNECT", None, &headers));
        assert!(check(true, "CONNECT", Some("webtransport"), &headers).is_err());
        assert!(check(true, "GET", None, &headers).is_err());
    }
}
