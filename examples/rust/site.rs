//! A page, an API and a WebTransport endpoint on one port: ordinary HTTP requests go to an
//! HTTP handler over HTTP/3, HTTP/2 and HTTP/1.1; session requests go to a route.
//!
//! `cargo run -p ferrovia --example site -- --port 4433`
//!
//! It prints `{"event":"listening","port":P,"certificateHash":"...","spki":"..."}` on
//! stdout (`spki` is what Chromium's `--ignore-certificate-errors-spki-list` takes).
//!
//! HTTP: `GET /` a page that opens a WebTransport session to `/echo` and echoes a message
//! on a stream; `GET /api/hello` JSON naming the HTTP version it came over; `POST /upload`
//! reads the body as it streams in and answers its length and SHA-256; `GET
//! /download?bytes=N` streams N bytes (byte i is `i % 251`); `GET /panic` panics in the
//! handler (the server answers 500 and goes on); anything else 404. Sessions: `/echo`
//! echoes every bidirectional stream.

use std::net::SocketAddr;

use bytes::Bytes;
use ferrovia::{Body, Certificate, HttpService, Server, ServerConfig};
use http_body::Body as _;

mod util;

use util::{bind_addr, emit, flags, json_str, query_param};

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>ferrovia site</title></head>
<body><p>HTTP version: <b id="version">?</b></p><p>echo: <b id="echo">…</b></p>
<script type="module">
const api = await (await fetch('/api/hello')).json();
document.getElementById('version').textContent = api.version;
const hash = new Uint8Array('__HASH__'.match(/../g).map((h) => parseInt(h, 16)));
const t = new WebTransport(location.origin + '/echo', {
  serverCertificateHashes: [{ algorithm: 'sha-256', value: hash }],
});
await t.ready;
const { readable, writable } = await t.createBidirectionalStream();
const w = writable.getWriter();
await w.write(new TextEncoder().encode('hello over WebTransport'));
await w.close();
let text = '';
for await (const chunk of readable.pipeThrough(new TextDecoderStream())) text += chunk;
document.getElementById('echo').textContent = text;
t.close({ closeCode: 0, reason: 'done' });
</script></body></html>
"#;

fn json(status: u16, body: String) -> http::Response<Body> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("a valid response")
}

fn version_name(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_3 => "HTTP/3",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_11 => "HTTP/1.1",
        _ => "HTTP/1.0",
    }
}

async fn handle(page: String, request: http::Request<Body>) -> http::Response<Body> {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let version = version_name(request.version());
    match (request.method().as_str(), request.uri().path()) {
        ("GET", "/") => http::Response::builder()
            .header("content-type", "text/html; charset=utf-8")
            .body(Body::from(page))
            .expect("a valid response"),
        ("GET", "/api/hello") => {
            let from = request
                .extensions()
                .get::<SocketAddr>()
                .map_or_else(String::new, ToString::to_string);
            json(
                200,
                format!(
                    r#"{{"hello":"world","version":"{version}","from":{}}}"#,
                    json_str(&from)
                ),
            )
        }
        ("POST", "/upload") => {
            let mut body = request.into_body();
            let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
            let mut bytes = 0u64;
            loop {
                match std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
                {
                    None => break,
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            bytes += data.len() as u64;
                            digest.update(data);
                        }
                    }
                    Some(Err(e)) => {
                        return json(400, format!(r#"{{"error":{}}}"#, json_str(&e.to_string())))
                    }
                }
            }
            let hex: String = digest
                .finish()
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            json(200, format!(r#"{{"bytes":{bytes},"sha256":"{hex}"}}"#))
        }
        ("GET", "/download") => {
            let Some(total) = query_param(&path, "bytes").and_then(|n| n.parse::<u64>().ok())
            else {
                return json(400, r#"{"error":"bytes=N is required"}"#.into());
            };
            let (tx, body) = Body::channel(4);
            tokio::spawn(async move {
                let mut sent = 0u64;
                while sent < total {
                    let n = (total - sent).min(64 * 1024);
                    let chunk: Vec<u8> = (sent..sent + n).map(|i| (i % 251) as u8).collect();
                    if tx.send(Bytes::from(chunk)).await.is_err() {
                        return; // the client went away
                    }
                    sent += n;
                }
            });
            http::Response::builder()
                .header("content-type", "application/octet-stream")
                .header("content-length", total)
                .body(body)
                .expect("a valid response")
        }
        ("GET", "/panic") => panic!("the handler panicked on purpose"),
        _ => json(404, r#"{"error":"not found"}"#.into()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let flags = flags(&["host", "port"])?;
    let addr = bind_addr(&flags)?;
    let cert = Certificate::self_signed(&["localhost", "127.0.0.1", "::1"])?;
    let page = PAGE.replace("__HASH__", &cert.sha256_hex());
    let mut config = ServerConfig::new(addr, cert.clone());
    config.limits.max_request_body = 256 * 1024 * 1024;
    config.http = Some(HttpService::new(move |request| {
        handle(page.clone(), request)
    }));
    let server = Server::bind(config)?;
    let echo = server.route("/echo")?;
    emit(format!(
        r#"{{"event":"listening","port":{},"certificateHash":"{}","spki":"{}"}}"#,
        server.local_addr()?.port(),
        cert.sha256_hex(),
        cert.spki_sha256_base64()
    ));
    while let Some(request) = echo.accept().await {
        tokio::spawn(async move {
            let Ok(session) = request.accept().await else {
                return;
            };
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
