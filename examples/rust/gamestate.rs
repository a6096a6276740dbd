//! A game-state loop over datagrams: clients send their input, the server moves every
//! player at a fixed tick rate and sends the whole state to every client each tick.
//!
//! `cargo run -p ferrovia --example gamestate -- --port 4433 --tick-hz 20`
//!
//! Browsers connect to `https://localhost:4433/game`. The server first sends the player's
//! id on a unidirectional stream (`{"id":N}`). Then, in datagrams (big-endian):
//! - client → server, input: `u32 seq, i8 dx, i8 dy` (the direction held, -1..1);
//! - server → client, state: `u32 tick, u16 count`, then `count` × `(u32 id, i16 x, i16 y,
//!   u32 last input seq)`.
//!
//! Datagrams may be lost: a lost input is replaced by the next one, a lost state by the next
//! tick's, which is why the state is sent whole rather than as changes.
//!
//! Prints JSON lines: `listening`, then `join` and `leave` events.

mod util;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use ferrovia::{Certificate, Server, ServerConfig, Session};
use util::{emit, json_str};

const WORLD: i16 = 1000;
const SPEED: i16 = 10;

struct Player {
    session: Session,
    x: i16,
    y: i16,
    dx: i16,
    dy: i16,
    seq: u32,
}

type Players = Arc<Mutex<BTreeMap<u32, Player>>>;

async fn play(players: Players, id: u32, session: Session) {
    let Ok(mut hello) = session.open_uni().await else {
        return;
    };
    if hello
        .write_all(format!(r#"{{"id":{id}}}"#).as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let _ = hello.finish();
    let player = Player {
        session: session.clone(),
        x: WORLD / 2,
        y: WORLD / 2,
        dx: 0,
        dy: 0,
        seq: 0,
    };
    players.lock().unwrap().insert(id, player);
    emit(format!(r#"{{"event":"join","id":{id}}}"#));
    while let Ok(input) = session.recv_datagram().await {
        if input.len() != 6 {
            continue;
        }
        let seq = u32::from_be_bytes([input[0], input[1], input[2], input[3]]);
        if let Some(p) = players.lock().unwrap().get_mut(&id) {
            // Inputs can arrive out of order; an older one must not undo a newer one.
            if seq > p.seq {
                p.seq = seq;
                p.dx = (input[4] as i8).signum() as i16;
                p.dy = (input[5] as i8).signum() as i16;
            }
        }
    }
    let info = session.closed().await;
    players.lock().unwrap().remove(&id);
    emit(format!(
        r#"{{"event":"leave","id":{id},"code":{},"reason":{}}}"#,
        info.code,
        json_str(&info.reason)
    ));
}

fn step(players: &Players, tick: u32) {
    let mut players = players.lock().unwrap();
    for p in players.values_mut() {
        p.x = (p.x + p.dx * SPEED).clamp(0, WORLD);
        p.y = (p.y + p.dy * SPEED).clamp(0, WORLD);
    }
    for p in players.values() {
        // Whatever fits one datagram; a real game would send each client what is near it.
        let room = p.session.max_datagram_size().saturating_sub(6) / 14;
        let shown: Vec<_> = players.iter().take(room).collect();
        let mut state = Vec::with_capacity(6 + shown.len() * 14);
        state.extend_from_slice(&tick.to_be_bytes());
        state.extend_from_slice(&(shown.len() as u16).to_be_bytes());
        for (id, q) in shown {
            state.extend_from_slice(&id.to_be_bytes());
            state.extend_from_slice(&q.x.to_be_bytes());
            state.extend_from_slice(&q.y.to_be_bytes());
            state.extend_from_slice(&q.seq.to_be_bytes());
        }
        // A full send queue means the client is behind: dropping this tick is the point.
        let _ = p.session.try_send_datagram(&state);
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let flags = util::flags(&["port", "host", "tick-hz"])?;
    let tick_hz: u32 = flags
        .get("tick-hz")
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(20);
    if !(1..=240).contains(&tick_hz) {
        return Err("--tick-hz must be in 1..240".into());
    }
    let cert = Certificate::self_signed(&["localhost", "127.0.0.1", "::1"])?;
    let server = Server::bind(ServerConfig::new(util::bind_addr(&flags)?, cert.clone()))?;
    let route = server.route("/game")?;
    emit(format!(
        r#"{{"event":"listening","port":{},"certificateHash":"{}","tickHz":{tick_hz}}}"#,
        server.local_addr()?.port(),
        cert.sha256_hex()
    ));
    let players: Players = Arc::default();
    {
        let players = players.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1) / tick_hz);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            for tick in 1.. {
                ticker.tick().await;
                step(&players, tick);
            }
        });
    }
    let mut next_id = 0;
    while let Some(request) = route.accept().await {
        let Ok(session) = request.accept().await else {
            continue;
        };
        next_id += 1;
        tokio::spawn(play(players.clone(), next_id, session));
    }
    Ok(())
}
