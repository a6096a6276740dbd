//! Two fleet members behind a load balancer that reads QUIC-LB connection IDs.
//!
//! `scripts/test-lb.sh` builds the network: a client namespace, a load-balancer namespace
//! whose nftables rules send each short-header packet to the member named by the server-ID
//! byte of its connection ID (and long-header packets by a hash of the 4-tuple), and a
//! server namespace where two `fleet` example processes run with server IDs 1 and 2. It
//! then runs these tests in the client namespace with
//!
//! - `FERROVIA_LB_VIP`: the address whose rules route by connection ID,
//! - `FERROVIA_LB_TUPLE_VIP`: an address in front of the same two members whose rules hash
//!   the 4-tuple only, as a load balancer that knows nothing of QUIC does,
//! - `FERROVIA_LB_HASHES`: the members' certificate hashes, comma-separated hex,
//! - `FERROVIA_LB_PIDS`: `1=PID,2=PID`, the members' processes (for the restart test, which
//!   the script runs on its own, last: it stops a member).
//!
//! Run outside it, they are ignored; run with `--ignored` but without the variables, they
//! fail.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::*;

/// Enough for a round trip through three namespaces on a loaded machine; a packet that went
/// to the wrong member never gets an answer, so this is also how long a broken session
/// takes to show.
const STEP: Duration = Duration::from_secs(3);

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run these tests with scripts/test-lb.sh"))
}

fn vip(name: &str) -> SocketAddr {
    env(name)
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not an address"))
}

fn hashes() -> Vec<Vec<u8>> {
    env("FERROVIA_LB_HASHES")
        .split(',')
        .map(|h| {
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex hash"))
                .collect()
        })
        .collect()
}

/// A client with its own endpoint, so the test can move it to a new local port: to the
/// load balancer that is a new 4-tuple, as after a NAT rebinding.
struct Client {
    endpoint: quinn::Endpoint,
    session: web_transport_quinn::Session,
}

impl Client {
    async fn connect(vip: SocketAddr) -> Client {
        Client::try_connect(vip).await.expect("session set up")
    }

    async fn try_connect(vip: SocketAddr) -> Result<Client, String> {
        let endpoint = quinn::Endpoint::client("0.0.0.0:0".parse().unwrap()).unwrap();
        let client =
            web_transport_quinn::Client::new(endpoint.clone(), client_config_trusting(hashes()));
        let url: url::Url = format!("https://{vip}/echo").parse().unwrap();
        let session = tokio::time::timeout(STEP, client.connect(url))
            .await
            .map_err(|_| "no session in time".to_string())?
            .map_err(|e| e.to_string())?;
        Ok(Client { endpoint, session })
    }

    /// Closes the session and waits until the member has the close, so the member is not
    /// left holding it until its idle timeout (which would hold up a drain).
    async fn close(self) {
        self.session.close(0, b"done");
        let _ = tokio::time::timeout(STEP, self.endpoint.wait_idle()).await;
    }

    fn rebind(&self) -> u16 {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        self.endpoint.rebind(socket).expect("rebind");
        port
    }

    /// Which member holds the session: it answers a unidirectional stream with its name.
    async fn member(&self) -> Result<String, String> {
        let ask = async {
            let mut send = self.session.open_uni().await.map_err(|e| e.to_string())?;
            send.write_all(b"?").await.map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            let mut recv = self.session.accept_uni().await.map_err(|e| e.to_string())?;
            let answer = recv.read_to_end(64).await.map_err(|e| e.to_string())?;
            String::from_utf8(answer).map_err(|e| e.to_string())
        };
        tokio::time::timeout(STEP, ask)
            .await
            .map_err(|_| "no answer in time".to_string())?
    }

    /// Echoes `len` bytes on a new bidirectional stream and checks they come back intact.
    async fn echo(&self, len: usize, seed: u64) -> Result<(), String> {
        let payload = data(len, seed);
        let round = async {
            let (mut send, mut recv) = self.session.open_bi().await.map_err(|e| e.to_string())?;
            let write = async {
                send.write_all(&payload).await.map_err(|e| e.to_string())?;
                send.finish().map_err(|e| e.to_string())
            };
            let (written, read) = tokio::join!(write, recv.read_to_end(len + 1));
            written?;
            read.map_err(|e| e.to_string())
        };
        let back = tokio::time::timeout(STEP, round)
            .await
            .map_err(|_| "no echo in time".to_string())??;
        if sha256(&back) != sha256(&payload) {
            return Err(format!("echo differs ({} bytes back)", back.len()));
        }
        Ok(())
    }
}

/// Sessions through the QUIC-LB-aware load balancer keep working however often the client's
/// address changes: every packet after the handshake names its member.
#[tokio::test]
#[ignore = "needs the namespaces of scripts/test-lb.sh"]
async fn sessions_survive_address_changes_behind_a_connection_id_load_balancer() {
    let vip = vip("FERROVIA_LB_VIP");
    let mut members_seen = std::collections::BTreeSet::new();
    // The handshake goes by a hash of the client's address, so new clients spread over both
    // members; keep connecting until both hold one (at most 64 tries: the chance that a
    // fair hash puts 64 clients on one member is 2^-63).
    let mut clients = Vec::new();
    for _ in 0..64 {
        let client = Client::connect(vip).await;
        let member = client.member().await.expect("a member answers");
        if members_seen.insert(member.clone()) {
            clients.push((client, member));
        } else {
            client.close().await;
        }
        if members_seen.len() == 2 {
            break;
        }
    }
    assert_eq!(
        members_seen.len(),
        2,
        "the load balancer sent every client to one member: {members_seen:?}"
    );
    for (n, (client, member)) in clients.into_iter().enumerate() {
        for step in 0..8u64 {
            let port = client.rebind();
            client
                .echo(256 * 1024, n as u64 * 100 + step)
                .await
                .unwrap_or_else(|e| panic!("{member}: after moving to port {port}: {e}"));
            assert_eq!(
                client.member().await.as_deref(),
                Ok(member.as_str()),
                "after moving to port {port} the session is still with the same member"
            );
        }
        client.close().await;
    }
}

/// Without routing by connection ID the same move breaks sessions: a new 4-tuple hashes to
/// either member, and the one that does not hold the connection drops its packets (they
/// name the other member, so it does not even reset them).
#[tokio::test]
#[ignore = "needs the namespaces of scripts/test-lb.sh"]
async fn without_connection_id_routing_an_address_change_breaks_sessions() {
    let vip = vip("FERROVIA_LB_TUPLE_VIP");
    let client = Client::connect(vip).await;
    let member = client.member().await.expect("a member answers");
    client.echo(1024, 1).await.expect("echo before any move");
    // Each move lands on the other member with probability one half; 32 moves all landing
    // on the right one has probability 2^-32.
    let mut broke_at = None;
    for step in 0..32 {
        client.rebind();
        if client.echo(1024, step + 2).await.is_err() {
            broke_at = Some(step + 1);
            break;
        }
    }
    assert!(
        broke_at.is_some(),
        "32 address changes behind a 4-tuple hash never reached the other member \
         (session on {member}): the rules are not hashing"
    );
    eprintln!("session on {member} broke at address change {broke_at:?}");
}

/// A deploy restarts the member holding a session while the client keeps sending: the
/// member drains on SIGTERM (new sessions refused, open ones go on), every message sent
/// before, during and after the signal is echoed back intact, the member exits once the
/// client has closed, and the client's next session lands on the other member.
#[tokio::test]
#[ignore = "needs the namespaces of scripts/test-lb.sh; stops a member"]
async fn a_restarting_member_finishes_its_sessions_without_losing_a_message() {
    let vip = vip("FERROVIA_LB_VIP");
    let pids: std::collections::HashMap<String, u32> = env("FERROVIA_LB_PIDS")
        .split(',')
        .map(|kv| {
            let (id, pid) = kv.split_once('=').expect("ID=PID");
            (format!("member {id}"), pid.parse().expect("a process ID"))
        })
        .collect();
    let client = Client::connect(vip).await;
    let member = client.member().await.expect("a member answers");
    let pid = pids[&member];
    for n in 0..24u64 {
        if n == 8 {
            let killed = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .unwrap();
            assert!(killed.success(), "SIGTERM to {member} (pid {pid})");
        }
        client
            .echo(64 * 1024, 1000 + n)
            .await
            .unwrap_or_else(|e| panic!("message {n} to the draining {member}: {e}"));
    }
    client.close().await;
    // Drained, the member exits on its own.
    let alive = |pid: u32| std::path::Path::new(&format!("/proc/{pid}")).exists();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{member} still runs 10 s after its last session closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // New clients whose handshake hashes to the stopped member get no answer (a real
    // balancer's health check takes it out); the others reach the member that is left.
    let mut reached = None;
    for _ in 0..16 {
        if let Ok(next) = Client::try_connect(vip).await {
            let answer = next
                .member()
                .await
                .expect("the new session's member answers");
            next.echo(1024, 7).await.expect("echo on the new session");
            next.close().await;
            reached = Some(answer);
            break;
        }
    }
    let reached = reached.expect("16 new clients and none reached the remaining member");
    assert_ne!(
        reached, member,
        "the stopped member cannot hold a new session"
    );
}
