//! Ordinary HTTP/3 requests (anything but extended CONNECT), answered by the application's
//! [`HttpService`]: the request body streams in from DATA frames, the response streams out
//! as HEADERS and DATA frames, each write under the response deadline.

use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body::Body as _;
use tracing::debug;

use super::{
    body::{data_frame_header, BodyDecoder},
    conn::{write_within, ConnShared, MAX_HEADERS_LEN},
    error_code::{self, code},
    qpack,
};
use crate::{
    origin,
    service::{check_declared_length, status_response, Body, BodyError, HttpService, Progress},
};

/// Header fields that only mean something to one HTTP/1.1 connection; a message that
/// carries one is malformed over HTTP/3 (RFC 9114 §4.2), and a response never sends one.
const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// The handler for this request, when the server has one and the request is not a
/// CONNECT (sessions keep their own path).
pub(crate) fn service_for(shared: &ConnShared, fields: &[(String, String)]) -> Option<HttpService> {
    let method = fields.iter().find(|(k, _)| k == ":method")?;
    if method.1 == "CONNECT" {
        return None;
    }
    shared.server.http_service()
}

/// A request head from decoded HTTP/3 fields, or the status that answers a malformed one.
pub fn parse_request(fields: &[(String, String)]) -> Result<http::Request<()>, u16> {
    let (mut method, mut scheme, mut authority, mut path) = (None, None, None, None);
    let mut builder = http::Request::builder().version(http::Version::HTTP_3);
    let mut regular = false;
    for (name, value) in fields {
        if let Some(pseudo) = name.strip_prefix(':') {
            // Pseudo-header fields come first, once each (RFC 9114 §4.3).
            let slot = match pseudo {
                "method" => &mut method,
                "scheme" => &mut scheme,
                "authority" => &mut authority,
                "path" => &mut path,
                _ => return Err(400),
            };
            if regular || slot.is_some() {
                return Err(400);
            }
            *slot = Some(value.as_str());
            continue;
        }
        regular = true;
        if CONNECTION_SPECIFIC.contains(&name.as_str()) || (name == "te" && value != "trailers") {
            return Err(400);
        }
        let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| 400u16)?;
        let value = http::HeaderValue::from_str(value).map_err(|_| 400u16)?;
        builder = builder.header(name, value);
    }
    let (Some(method), Some(scheme), Some(path)) = (method, scheme, path) else {
        return Err(400);
    };
    if path.is_empty() || !(path.starts_with('/') || (path == "*" && method == "OPTIONS")) {
        return Err(400);
    }
    let method = http::Method::from_bytes(method.as_bytes()).map_err(|_| 400u16)?;
    let mut uri = http::Uri::builder().scheme(scheme).path_and_query(path);
    if let Some(authority) = authority {
        uri = uri.authority(authority);
    }
    let uri = uri.build().map_err(|_| 400u16)?;
    builder.method(method).uri(uri).body(()).map_err(|_| 400)
}

/// Marks the connection busy while an exchange runs, so the sessionless timer does not
/// close it under a request in progress.
struct Busy<'a>(&'a ConnShared);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.http_exchange_ended();
    }
}

pub(crate) async fn serve(
    shared: Arc<ConnShared>,
    service: HttpService,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    fields: Vec<(String, String)>,
    rest: Bytes,
) {
    let with_body = fields
        .iter()
        .any(|(k, v)| k == ":method" && !matches!(v.as_str(), "GET" | "HEAD" | "OPTIONS"));
    shared.http_exchange_started(with_body);
    let _busy = Busy(&shared);
    let server = &shared.server;
    let limits = &server.limits;
    let head = match parse_request(&fields) {
        Ok(head) => head,
        Err(status) => {
            debug!(status, "malformed HTTP/3 request");
            return answer(
                &shared,
                send,
                status_response(status, "malformed request\n"),
                false,
            )
            .await;
        }
    };
    let authority = head.uri().authority().map_or("", |a| a.as_str());
    if !origin::authority_allowed(authority, |h| server.is_own_host(h)) {
        return answer(
            &shared,
            send,
            status_response(421, "misdirected request\n"),
            false,
        )
        .await;
    }
    if let Some(too_large) = check_declared_length(head.headers(), limits.max_request_body) {
        let _ = recv_stop(recv);
        return answer(&shared, send, too_large, false).await;
    }
    let declared = head
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let (tx, body) = Body::channel_with_length(4, declared);
    shared.runtime.spawn(read_body(recv, rest, tx, declared));
    let progress = Progress::new();
    let body = Body::guarded(
        body,
        limits.max_request_body,
        limits.request_timeout,
        progress.clone(),
    );
    let is_head = head.method() == http::Method::HEAD;
    let mut request = head.map(|()| body);
    request
        .extensions_mut()
        .insert::<SocketAddr>(shared.conn.remote_address());
    server.counters.http_request();
    let response = service
        .respond(
            request,
            limits.handler_timeout,
            progress,
            &server.running_requests,
        )
        .await;
    answer(&shared, send, response, is_head).await;
}

fn recv_stop(mut recv: quinn::RecvStream) -> Result<(), quinn::ClosedStream> {
    recv.stop(code(error_code::NO_ERROR.into()))
}

/// Feeds the request body from the stream's DATA frames until its end, an error, or the
/// handler dropping the body.
async fn read_body(
    mut recv: quinn::RecvStream,
    rest: Bytes,
    tx: crate::service::BodySender,
    declared: Option<u64>,
) {
    let mut decoder = BodyDecoder::new(MAX_HEADERS_LEN);
    let mut out = Vec::new();
    let mut total = 0u64;
    let mut next = Some(rest);
    loop {
        if let Some(chunk) = next.take() {
            if let Err(e) = decoder.push(chunk, &mut out) {
                let _ = recv.stop(code(error_code::FRAME_UNEXPECTED.into()));
                return tx.abort(BodyError::Aborted(e.to_string())).await;
            }
            for data in out.drain(..) {
                total += data.len() as u64;
                if data.is_empty() {
                    continue;
                }
                if tx.send(data).await.is_err() {
                    // The handler no longer reads the body: tell the client to stop.
                    let _ = recv.stop(code(error_code::NO_ERROR.into()));
                    return;
                }
            }
        }
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(chunk)) => next = Some(chunk.bytes),
            Ok(None) => break,
            Err(e) => return tx.abort(BodyError::Aborted(e.to_string())).await,
        }
        if tx.is_closed() {
            let _ = recv.stop(code(error_code::NO_ERROR.into()));
            return;
        }
    }
    if let Err(e) = decoder.finish() {
        return tx.abort(BodyError::Aborted(e.to_string())).await;
    }
    if let Some(declared) = declared.filter(|d| *d != total) {
        let why = format!("content-length {declared} but {total} bytes arrived");
        tx.abort(BodyError::Aborted(why)).await;
    }
}

/// Sends the response: HEADERS, then the body as DATA frames, then FIN; a body that fails
/// resets the stream so the client never takes a cut-off body for a whole one.
async fn answer(
    shared: &ConnShared,
    mut send: quinn::SendStream,
    response: http::Response<Body>,
    is_head: bool,
) {
    let deadline = shared.server.limits.response_timeout;
    let (parts, mut body) = response.into_parts();
    let status = parts.status.as_u16().to_string();
    let mut fields: Vec<(&str, &str)> = vec![(":status", status.as_str())];
    for (name, value) in &parts.headers {
        if CONNECTION_SPECIFIC.contains(&name.as_str()) {
            continue;
        }
        match value.to_str() {
            Ok(v) => fields.push((name.as_str(), v)),
            Err(_) => debug!(%name, "response header value is not visible ASCII; dropped"),
        }
    }
    let mut block = Vec::new();
    qpack::encode_field_section(&fields, &mut block);
    let mut out = Vec::with_capacity(block.len() + 8);
    super::frame::put_frame(&mut out, super::frame::HEADERS, &block);
    if !write_within(&mut send, out.into(), deadline).await {
        return;
    }
    if !is_head {
        loop {
            let frame =
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
            match frame {
                None => break,
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    let mut header = Vec::with_capacity(16);
                    data_frame_header(data.len(), &mut header);
                    if !write_within(&mut send, header.into(), deadline).await
                        || !write_within(&mut send, data, deadline).await
                    {
                        return;
                    }
                }
                Some(Err(e)) => {
                    debug!("response body failed: {e}");
                    let _ = send.reset(code(error_code::INTERNAL_ERROR.into()));
                    return;
                }
            }
        }
    }
    let _ = send.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_request_head_becomes_an_http_request() {
        let r = parse_request(&fields(&[
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", "example.com:4433"),
            (":path", "/api/items?x=1"),
            ("content-type", "application/json"),
            ("te", "trailers"),
        ]))
        .unwrap();
        assert_eq!(r.method(), http::Method::POST);
        assert_eq!(
            r.uri().to_string(),
            "https://example.com:4433/api/items?x=1"
        );
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(r.version(), http::Version::HTTP_3);
    }

    #[test]
    fn malformed_heads_get_400() {
        let base = [
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "a"),
            (":path", "/"),
        ];
        let ok = fields(&base);
        assert!(parse_request(&ok).is_ok());
        let mut cases: Vec<Vec<(String, String)>> = Vec::new();
        cases.push(fields(&base[..3])); // no :path
        cases.push(fields(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", ""),
        ]));
        cases.push(fields(&[base[0], base[1], base[3], base[3]])); // duplicate :path
        cases.push(fields(&[base[0], base[1], ("x", "1"), base[3]])); // pseudo after regular
        cases.push(fields(&[base[0], base[1], base[3], (":protocol", "x")]));
        cases.push(fields(&[
            base[0],
            base[1],
            base[3],
            ("connection", "close"),
        ]));
        cases.push(fields(&[
            base[0],
            base[1],
            base[3],
            ("transfer-encoding", "chunked"),
        ]));
        cases.push(fields(&[base[0], base[1], base[3], ("te", "gzip")]));
        cases.push(fields(&[base[0], base[1], base[3], ("x-bad", "a\nb")]));
        cases.push(fields(&[base[0], base[1], (":path", "no-slash")]));
        for case in cases {
            assert_eq!(parse_request(&case).unwrap_err(), 400, "{case:?}");
        }
    }
}
