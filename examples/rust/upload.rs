//! File uploads with progress and an integrity check.
//!
//! `cargo run -p ferrovia --example upload -- --port 4433 --dir /tmp/uploads`
//!
//! Browsers connect to `https://localhost:4433/upload` and send each file on its own
//! bidirectional stream: a header line `SIZE SHA256HEX NAME\n`, then exactly SIZE bytes,
//! then FIN. The server answers on the same stream with `progress BYTES\n` lines as data
//! arrives, then `ok SIZE SHA256HEX\n` once the file is stored under `--dir` (default: the
//! system temp directory's `ferrovia-uploads`), or `error REASON\n`. A file whose SHA-256
//! differs from the header's is not kept. `--max-size` bounds a file (default 1 GiB).
//!
//! Prints JSON lines: `listening` (with the directory), then one `upload` event per file.

mod util;

use std::path::{Path, PathBuf};

use ferrovia::{Certificate, RecvStream, SendStream, Server, ServerConfig, Session};
use ring::digest::{Context, SHA256};
use tokio::io::AsyncWriteExt;
use util::{emit, json_str};

const PROGRESS_EVERY: u64 = 256 * 1024;
const MAX_HEADER: usize = 1024;

struct Upload {
    name: String,
    size: u64,
    sha256: String,
    path: PathBuf,
}

/// A failed upload: the reason for the client, and what was known about the file.
struct Refused {
    reason: String,
    name: Option<String>,
}

fn refuse(reason: impl Into<String>) -> Refused {
    Refused {
        reason: reason.into(),
        name: None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A name that stays inside the upload directory whatever the client sent.
fn safe_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    let trimmed = cleaned.trim_start_matches('.');
    if trimmed.is_empty() {
        "upload".into()
    } else {
        trimmed.into()
    }
}

async fn receive(
    send: &mut SendStream,
    recv: &mut RecvStream,
    dir: &Path,
    max_size: u64,
) -> Result<Upload, Refused> {
    let mut buffered = Vec::new();
    let header = loop {
        if let Some(newline) = buffered.iter().position(|&b| b == b'\n') {
            let rest = buffered.split_off(newline + 1);
            let line = String::from_utf8_lossy(&buffered[..newline]).into_owned();
            buffered = rest;
            break line;
        }
        if buffered.len() > MAX_HEADER {
            return Err(refuse("header too long"));
        }
        match recv.read_chunk(64 * 1024).await {
            Ok(Some(chunk)) => buffered.extend_from_slice(&chunk),
            _ => return Err(refuse("stream ended before the header")),
        }
    };
    let mut parts = header.splitn(3, ' ');
    let (size, expected, name) = match (parts.next(), parts.next(), parts.next()) {
        (Some(size), Some(hash), Some(name))
            if hash.len() == 64
                && hash
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            match size.parse::<u64>() {
                Ok(size) => (size, hash.to_owned(), safe_name(name)),
                Err(_) => return Err(refuse("bad header: expected \"SIZE SHA256HEX NAME\"")),
            }
        }
        _ => return Err(refuse("bad header: expected \"SIZE SHA256HEX NAME\"")),
    };
    let named = |reason: String| Refused {
        reason,
        name: Some(name.clone()),
    };
    if size > max_size {
        return Err(named(format!(
            "too large: {size} bytes, the limit is {max_size}"
        )));
    }
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| named(format!("failed: {e}")))?;
    let path = dir.join(&name);
    let partial = dir.join(format!("{name}.part-{}-{}", std::process::id(), recv.id()));
    let result = async {
        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(|e| format!("failed: {e}"))?;
        let mut hash = Context::new(&SHA256);
        let (mut received, mut reported) = (0u64, 0u64);
        let mut chunk = Some(bytes::Bytes::from(buffered));
        loop {
            let data = match chunk.take() {
                Some(data) => data,
                None => match recv.read_chunk(64 * 1024).await {
                    Ok(Some(data)) => data,
                    Ok(None) => break,
                    Err(e) => return Err(format!("failed: {e}")),
                },
            };
            received += data.len() as u64;
            if received > size {
                return Err(format!("more than the announced {size} bytes"));
            }
            hash.update(&data);
            // Awaiting the disk keeps QUIC flow control in charge of the pace.
            file.write_all(&data)
                .await
                .map_err(|e| format!("failed: {e}"))?;
            if received - reported >= PROGRESS_EVERY || received == size {
                reported = received;
                send.write_all(format!("progress {received}\n").as_bytes())
                    .await
                    .map_err(|e| format!("failed: {e}"))?;
            }
        }
        file.flush().await.map_err(|e| format!("failed: {e}"))?;
        if received != size {
            return Err(format!("got {received} of {size} bytes"));
        }
        let actual = hex(hash.finish().as_ref());
        if actual != expected {
            return Err(format!(
                "checksum mismatch: received data has SHA-256 {actual}"
            ));
        }
        tokio::fs::rename(&partial, &path)
            .await
            .map_err(|e| format!("failed: {e}"))?;
        Ok(actual)
    }
    .await;
    match result {
        Ok(sha256) => Ok(Upload {
            name,
            size,
            sha256,
            path,
        }),
        Err(reason) => {
            let _ = tokio::fs::remove_file(&partial).await;
            Err(named(reason))
        }
    }
}

async fn upload(mut send: SendStream, mut recv: RecvStream, dir: PathBuf, max_size: u64) {
    match receive(&mut send, &mut recv, &dir, max_size).await {
        Ok(u) => {
            let reply = format!("ok {} {}\n", u.size, u.sha256);
            let _ = send.write_all(reply.as_bytes()).await;
            let _ = send.finish();
            emit(format!(
                r#"{{"event":"upload","ok":true,"name":{},"size":{},"sha256":"{}","path":{}}}"#,
                json_str(&u.name),
                u.size,
                u.sha256,
                json_str(&u.path.to_string_lossy())
            ));
        }
        Err(refused) => {
            emit(format!(
                r#"{{"event":"upload","ok":false,"reason":{},"name":{}}}"#,
                json_str(&refused.reason),
                refused
                    .name
                    .as_deref()
                    .map(json_str)
                    .unwrap_or_else(|| "null".into())
            ));
            let _ = send
                .write_all(format!("error {}\n", refused.reason).as_bytes())
                .await;
            let _ = send.finish();
            // Tell the client to stop sending the rest of a rejected file.
            let _ = recv.stop(1);
        }
    }
}

async fn serve(session: Session, dir: PathBuf, max_size: u64) {
    while let Ok((send, recv)) = session.accept_bi().await {
        tokio::spawn(upload(send, recv, dir.clone(), max_size));
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let flags = util::flags(&["port", "host", "dir", "max-size"])?;
    let dir = match flags.get("dir") {
        Some(d) => std::path::absolute(d)?,
        None => std::env::temp_dir().join("ferrovia-uploads"),
    };
    let max_size: u64 = flags
        .get("max-size")
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(1 << 30);
    let cert = Certificate::self_signed(&["localhost", "127.0.0.1", "::1"])?;
    let server = Server::bind(ServerConfig::new(util::bind_addr(&flags)?, cert.clone()))?;
    let route = server.route("/upload")?;
    emit(format!(
        r#"{{"event":"listening","port":{},"certificateHash":"{}","dir":{}}}"#,
        server.local_addr()?.port(),
        cert.sha256_hex(),
        json_str(&dir.to_string_lossy())
    ));
    while let Some(request) = route.accept().await {
        let Ok(session) = request.accept().await else {
            continue;
        };
        tokio::spawn(serve(session, dir.clone(), max_size));
    }
    Ok(())
}
