//! `loadgen http-server`: the Ferrovia core answering the HTTP benchmark.
//!
//! ```text
//! loadgen http-server [--host 127.0.0.1] [--port 0]
//! ```
//!
//! A Ferrovia server whose HTTP handler answers `GET /json` with `{"message":"hello"}`
//! (`content-type: application/json`) and anything else with 404, over HTTP/3 on UDP and
//! HTTP/2 and HTTP/1.1 on TCP at the same port; every limit stays at its default. It
//! prints `{"event":"listening","port":P,"certificateHash":HEX}` first, as every server in
//! the suite does. The Node and Python servers of the same benchmark are
//! `bench/servers/node_fetch.mjs` and `bench/peers/asgi_json.py --with ferrovia`.

use std::net::{IpAddr, SocketAddr};

use ferrovia::{Body, Certificate, HttpService, Server, ServerConfig};

use crate::{http::BODY, Error};

async fn handle(request: http::Request<Body>) -> http::Response<Body> {
    let found = request.method() == http::Method::GET && request.uri().path() == "/json";
    let response = if found {
        http::Response::builder()
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(BODY))
    } else {
        http::Response::builder().status(404).body(Body::empty())
    };
    response.expect("a valid response")
}

pub async fn run(mut args: impl Iterator<Item = String>) -> Result<(), Error> {
    let (mut host, mut port): (IpAddr, u16) = ([127, 0, 0, 1].into(), 0);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--host" => host = value.trim_matches(|c| c == '[' || c == ']').parse()?,
            "--port" => port = value.parse()?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let cert = Certificate::self_signed(&["localhost", "127.0.0.1"])?;
    let mut config = ServerConfig::new(SocketAddr::new(host, port), cert.clone());
    config.http = Some(HttpService::new(handle));
    let server = Server::bind(config)?;
    println!(
        r#"{{"event":"listening","port":{},"certificateHash":"{}"}}"#,
        server.local_addr()?.port(),
        cert.sha256_hex()
    );
    std::future::pending::<()>().await;
    drop(server);
    Ok(())
}
