//! A chat room: every message a browser sends is broadcast to every session in the room.
//!
//! `cargo run -p ferrovia --example chat -- --port 4433`
//!
//! Browsers connect to `https://localhost:4433/chat?name=NAME`. A client sends each message
//! on its own unidirectional stream (UTF-8, at most 4 KiB); the server sends every line of
//! the room (`NAME: text`, `* NAME joined`, `* NAME left`) to each member on a new
//! unidirectional stream. Streams are independent, so two lines sent at nearly the same
//! moment may arrive in either order.
//!
//! Prints JSON lines: `{"event":"listening",...}` with the port and certificate hash, then
//! `join`, `message` and `leave` events.

mod util;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use ferrovia::{Certificate, Server, ServerConfig, Session, StreamError};
use util::{emit, json_str};

const MAX_MESSAGE: usize = 4096;
/// Lines on their way to one member. A member that takes no more streams (it never grants
/// stream credit, or reads nothing) would otherwise pile up one pending delivery per line
/// for as long as the room talks: past this many it is closed instead.
const MAX_PENDING: usize = 64;
const SLOW_MEMBER: u32 = 1;

/// A member's session and its count of lines on their way.
type Member = (Session, Arc<AtomicUsize>);

#[derive(Clone, Default)]
struct Room {
    members: Arc<Mutex<HashMap<u64, Member>>>,
}

impl Room {
    fn broadcast(&self, line: &str) {
        let members: Vec<_> = self.members.lock().unwrap().values().cloned().collect();
        for (member, pending) in members {
            if pending.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING {
                pending.fetch_sub(1, Ordering::AcqRel);
                member.close(
                    SLOW_MEMBER,
                    &format!("too slow: {MAX_PENDING} lines waiting"),
                );
                continue;
            }
            let line = line.to_owned();
            // One slow member must not hold up the others: each delivery runs on its own.
            tokio::spawn(async move {
                if let Ok(mut send) = member.open_uni().await {
                    let _ = send.write_all(line.as_bytes()).await;
                    let _ = send.finish();
                }
                pending.fetch_sub(1, Ordering::AcqRel);
            });
        }
    }
}

async fn member(room: Room, key: u64, name: String, session: Session) {
    room.members
        .lock()
        .unwrap()
        .insert(key, (session.clone(), Arc::default()));
    emit(format!(r#"{{"event":"join","name":{}}}"#, json_str(&name)));
    room.broadcast(&format!("* {name} joined"));
    while let Ok(mut recv) = session.accept_uni().await {
        let (room, name) = (room.clone(), name.clone());
        tokio::spawn(async move {
            let text = match recv.read_to_end(MAX_MESSAGE).await {
                Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
                Err(StreamError::TooLong(_)) | Err(_) => return,
            };
            if !text.is_empty() {
                emit(format!(
                    r#"{{"event":"message","name":{},"text":{}}}"#,
                    json_str(&name),
                    json_str(&text)
                ));
                room.broadcast(&format!("{name}: {text}"));
            }
        });
    }
    let info = session.closed().await;
    room.members.lock().unwrap().remove(&key);
    emit(format!(
        r#"{{"event":"leave","name":{},"code":{},"reason":{}}}"#,
        json_str(&name),
        info.code,
        json_str(&info.reason)
    ));
    room.broadcast(&format!("* {name} left"));
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let flags = util::flags(&["port", "host"])?;
    let cert = Certificate::self_signed(&["localhost", "127.0.0.1", "::1"])?;
    let server = Server::bind(ServerConfig::new(util::bind_addr(&flags)?, cert.clone()))?;
    let route = server.route("/chat")?;
    emit(format!(
        r#"{{"event":"listening","port":{},"certificateHash":"{}"}}"#,
        server.local_addr()?.port(),
        cert.sha256_hex()
    ));
    let room = Room::default();
    let mut next_key = 0;
    while let Some(request) = route.accept().await {
        let name: String = util::query_param(request.path(), "name")
            .unwrap_or_else(|| "anonymous".into())
            .chars()
            .take(32)
            .collect();
        let Ok(session) = request.accept().await else {
            continue;
        };
        next_key += 1;
        tokio::spawn(member(room.clone(), next_key, name, session));
    }
    Ok(())
}
