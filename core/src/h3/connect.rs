//! Validating an HTTP/3 request head as a WebTransport session request (extended CONNECT,
//! RFC 9220 and draft-ietf-webtrans-http3), sans-IO: decoded fields in, a request or the
//! status to answer out.

use crate::sfv;

/// A request head that is a well-formed WebTransport CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    /// `:path`, with query.
    pub path: String,
    /// `:authority`.
    pub authority: String,
    /// `:protocol` (`webtransport` or `webtransport-h3`).
    pub protocol: String,
    /// Regular header fields in the order received.
    pub headers: Vec<(String, String)>,
    /// `origin`, if sent.
    pub origin: Option<String>,
    /// The subprotocols offered in `wt-available-protocols`.
    pub subprotocols: Vec<String>,
    /// The client speaks draft-02 (`sec-webtransport-http3-draft02`).
    pub draft02: bool,
}

/// Why a request head is not a session request: the status to answer and a reason for logs.
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

/// Header fields that are specific to an HTTP/1.1 connection and make an HTTP/3 message
/// malformed (RFC 9114 §4.2).
const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// Checks a decoded request head. Malformed messages (RFC 9114 §4.1.2: duplicate, unknown or
/// misplaced pseudo-headers, connection-specific fields) get 400; a method other than
/// CONNECT gets 404 (an ordinary request, with no HTTP handler to answer it, as on the TCP
/// side); a CONNECT that is not a WebTransport request gets 400.
pub fn parse_connect(fields: &[(String, String)]) -> Result<ConnectRequest, Rejection> {
    let mut method = None;
    let mut protocol = None;
    let mut scheme = None;
    let mut authority = None;
    let mut path = None;
    let mut regular = false;
    let mut headers = Vec::new();
    for (name, value) in fields {
        if let Some(pseudo) = name.strip_prefix(':') {
            if regular {
                return Err(reject(400, "pseudo-header after a regular header"));
            }
            let slot = match pseudo {
                "method" => &mut method,
                "protocol" => &mut protocol,
                "scheme" => &mut scheme,
                "authority" => &mut authority,
                "path" => &mut path,
                _ => return Err(reject(400, "unknown pseudo-header")),
            };
            if slot.replace(value.as_str()).is_some() {
                return Err(reject(400, "duplicate pseudo-header"));
            }
            continue;
        }
        regular = true;
        if CONNECTION_SPECIFIC.contains(&name.as_str()) {
            return Err(reject(400, "connection-specific header field"));
        }
        if name == "te" && value != "trailers" {
            return Err(reject(400, "te other than trailers"));
        }
        headers.push((name.clone(), value.clone()));
    }
    let Some(method) = method else {
        return Err(reject(400, "missing :method"));
    };
    if method != "CONNECT" {
        return Err(reject(404, "not found (no HTTP handler)"));
    }
    let protocol = match protocol {
        Some(p @ ("webtransport" | "webtransport-h3")) => p,
        Some(_) => return Err(reject(400, "unsupported :protocol")),
        None => return Err(reject(400, "CONNECT without :protocol")),
    };
    if scheme != Some("https") {
        return Err(reject(400, ":scheme must be https"));
    }
    let authority = match authority {
        Some(a) if !a.is_empty() => a,
        _ => return Err(reject(400, "missing :authority")),
    };
    let path = match path {
        Some(p) if p.starts_with('/') => p,
        _ => return Err(reject(400, ":path must start with '/'")),
    };
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    let subprotocols = match header("wt-available-protocols") {
        None => Vec::new(),
        Some(v) => sfv::parse_string_list(v)
            .map_err(|_| reject(400, "wt-available-protocols is not a list of strings"))?,
    };
    let origin = header("origin").map(str::to_owned);
    let draft02 = header("sec-webtransport-http3-draft02").is_some();
    Ok(ConnectRequest {
        path: path.to_owned(),
        authority: authority.to_owned(),
        protocol: protocol.to_owned(),
        origin,
        subprotocols,
        draft02,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const GOOD: [(&str, &str); 5] = [
        (":method", "CONNECT"),
        (":protocol", "webtransport"),
        (":scheme", "https"),
        (":authority", "localhost:4433"),
        (":path", "/chat?room=1"),
    ];

    #[test]
    fn a_browser_request_parses() {
        let mut f = GOOD.to_vec();
        f.push(("origin", "http://localhost:8080"));
        f.push(("sec-webtransport-http3-draft02", "1"));
        f.push(("wt-available-protocols", r#""a", "b";q=1"#));
        let r = parse_connect(&fields(&f)).unwrap();
        assert_eq!(r.path, "/chat?room=1");
        assert_eq!(r.origin.as_deref(), Some("http://localhost:8080"));
        assert_eq!(r.subprotocols, ["a", "b"]);
        assert!(r.draft02);
        assert_eq!(r.headers.len(), 3);
    }

    #[test]
    fn malformed_heads_are_rejected_with_their_status() {
        let status = |f: &[(&str, &str)]| parse_connect(&fields(f)).unwrap_err().status;
        let mut dup = GOOD.to_vec();
        dup.push((":path", "/other"));
        assert_eq!(status(&dup), 400);
        let mut late = GOOD.to_vec();
        late.insert(1, ("x", "y"));
        assert_eq!(status(&late), 400);
        let mut unknown = GOOD.to_vec();
        unknown.push((":status", "200"));
        assert_eq!(status(&unknown), 400);
        let mut te = GOOD.to_vec();
        te.push(("transfer-encoding", "chunked"));
        assert_eq!(status(&te), 400);
        let mut get = GOOD.to_vec();
        get[0] = (":method", "GET");
        assert_eq!(status(&get), 404);
        let mut http = GOOD.to_vec();
        http[2] = (":scheme", "http");
        assert_eq!(status(&http), 400);
        let mut list = GOOD.to_vec();
        list.push(("wt-available-protocols", "token"));
        assert_eq!(status(&list), 400);
        assert_eq!(status(&GOOD[1..]), 400);
    }
}
