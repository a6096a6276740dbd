//! One member of a fleet: with QUIC-LB connection IDs, every short-header packet a client
//! sends names this server in its destination connection ID, which is what a load
//! balancer routes by. A relay written here plays the load balancer's part: it forwards
//! datagrams both ways and decodes the server ID of every client packet, as a QUIC-LB
//! load balancer does, while a session echoes through it.

mod common;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use common::*;
use ferrovia::fleet::QuicLbConfig;

const SERVER_ID: [u8; 8] = [0xfe, 0x77, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05];

/// What the relay saw in client packets: (short-header packets, the server IDs decoded).
#[derive(Default)]
struct Seen {
    short: usize,
    server_ids: Vec<Vec<u8>>,
    unroutable: usize,
}

/// Relays UDP between one client and `server`, decoding client packets' connection IDs.
async fn relay(server: SocketAddr, config: QuicLbConfig, seen: Arc<Mutex<Seen>>) -> SocketAddr {
    let front = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let back = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    back.connect(server).await.unwrap();
    let addr = front.local_addr().unwrap();
    let front = Arc::new(front);
    let back = Arc::new(back);
    let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    {
        let (front, back, client) = (front.clone(), back.clone(), client.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock().unwrap() = Some(from);
                let packet = &buf[..n];
                // Short header: the first bit is 0, the destination ID follows at once.
                if packet[0] & 0x80 == 0 && packet.len() > config.cid_len() {
                    let mut s = seen.lock().unwrap();
                    s.short += 1;
                    match config.decode(&packet[1..1 + config.cid_len()]) {
                        Ok(d) => s.server_ids.push(d.server_id.to_vec()),
                        Err(_) => s.unroutable += 1,
                    }
                }
                let _ = back.send(packet).await;
            }
        });
    }
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = back.recv(&mut buf).await {
            let to = *client.lock().unwrap();
            if let Some(to) = to {
                let _ = front.send_to(&buf[..n], to).await;
            }
        }
    });
    addr
}

#[tokio::test]
async fn every_client_packet_names_this_server_in_its_connection_id() {
    let config = QuicLbConfig::new(1, &SERVER_ID, 6).unwrap();
    let server_config = config.clone();
    let srv = start_with(move |c| c.connection_ids = Some(server_config));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let front = relay(srv.addr, config.clone(), seen.clone()).await;
    let route = srv.server.route("/echo").unwrap();
    tokio::spawn(async move {
        let session = route.accept().await.unwrap().accept().await.unwrap();
        while let Ok((mut send, mut recv)) = session.accept_bi().await {
            let data = recv.read_to_end(1 << 22).await.unwrap();
            send.write_all(&data).await.unwrap();
            send.finish().unwrap();
        }
    });
    let mut url = srv.url("/echo");
    url.set_port(Some(front.port())).unwrap();
    let client = tokio::time::timeout(TIMEOUT, srv.client().connect(url))
        .await
        .expect("connect timed out")
        .expect("connect through the relay");
    let payload = data(1 << 20, 3);
    let (mut send, mut recv) = client.open_bi().await.unwrap();
    send.write_all(&payload).await.unwrap();
    send.finish().unwrap();
    let echoed = tokio::time::timeout(TIMEOUT, recv.read_to_end(1 << 22))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sha256(&echoed), sha256(&payload));
    let seen = seen.lock().unwrap();
    assert!(seen.short > 20, "only {} short-header packets", seen.short);
    assert_eq!(seen.unroutable, 0);
    assert!(
        seen.server_ids.iter().all(|id| id == &SERVER_ID),
        "a packet named another server"
    );
    assert_eq!(seen.server_ids.len(), seen.short);
}

#[tokio::test]
async fn a_stray_short_header_packet_for_another_server_gets_no_stateless_reset() {
    let config = QuicLbConfig::new(1, &SERVER_ID, 6).unwrap();
    let server_config = config.clone();
    let srv = start_with(move |c| c.connection_ids = Some(server_config));
    // A sibling's connection ID: same configuration, another server ID.
    let sibling = QuicLbConfig::new(1, &[9, 9, 9, 9, 9, 9, 9, 9], 6).unwrap();
    let cid = sibling.generator().next_cid();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut packet = vec![0x40u8];
    packet.extend_from_slice(&cid);
    packet.extend_from_slice(&[0u8; 40]);
    socket.send_to(&packet, srv.addr).await.unwrap();
    let mut buf = [0u8; 2048];
    let answer = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        socket.recv_from(&mut buf),
    )
    .await;
    assert!(answer.is_err(), "the sibling's packet was answered");
    // A routable ID of this server that it never issued does get a reset: the control.
    let ours = config.generator().next_cid();
    let mut own = vec![0x40u8];
    own.extend_from_slice(&ours);
    own.extend_from_slice(&[0u8; 40]);
    socket.send_to(&own, srv.addr).await.unwrap();
    let (n, _) = tokio::time::timeout(TIMEOUT, socket.recv_from(&mut buf))
        .await
        .expect("the control packet gets a stateless reset")
        .unwrap();
    assert!(n >= 21, "a stateless reset is at least 21 bytes");
}

/// A relay for one client that sends the client's packets to whichever member `to_b`
/// selects, from one socket (so each member sees the same client address), and returns
/// every member's packets to the client. `switch_on_retry` moves the client to B as soon
/// as A answers with a Retry, as a load balancer whose routing changed in between would.
struct Fleet {
    front: SocketAddr,
    to_b: Arc<std::sync::atomic::AtomicBool>,
}

async fn fleet_relay(a: SocketAddr, b: SocketAddr, switch_on_retry: bool) -> Fleet {
    use std::sync::atomic::{AtomicBool, Ordering};
    let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let to_b = Arc::new(AtomicBool::new(false));
    let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let addr = front.local_addr().unwrap();
    {
        let (front, back, client, to_b) =
            (front.clone(), back.clone(), client.clone(), to_b.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock().unwrap() = Some(from);
                let target = if to_b.load(Ordering::Acquire) { b } else { a };
                let _ = back.send_to(&buf[..n], target).await;
            }
        });
    }
    {
        let to_b = to_b.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, _)) = back.recv_from(&mut buf).await {
                // Long header (first bit 1), QUIC v1 packet type 3: Retry.
                if switch_on_retry && buf[0] & 0x80 != 0 && (buf[0] & 0x30) >> 4 == 3 {
                    to_b.store(true, Ordering::Release);
                }
                let to = *client.lock().unwrap();
                if let Some(to) = to {
                    let _ = front.send_to(&buf[..n], to).await;
                }
            }
        });
    }
    Fleet { front: addr, to_b }
}

/// A fleet member: every one here has the same QUIC-LB server ID, as a member restarted
/// in place of another has (a sibling's IDs are dropped, never reset: see the test above).
fn member(keys: Option<ferrovia::fleet::FleetKeys>, retry: bool) -> TestServer {
    start_with(move |c| {
        c.fleet_keys = keys;
        c.connection_ids = Some(QuicLbConfig::new(1, &SERVER_ID, 6).unwrap());
        if retry {
            c.limits.retry_threshold = 0;
        }
    })
}

/// Accepts every session on `srv` and echoes its bidirectional streams.
fn echo_sessions(srv: &TestServer) {
    let route = srv.server.route("/echo").unwrap();
    tokio::spawn(async move {
        while let Some(request) = route.accept().await {
            let session = request.accept().await.unwrap();
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = session.accept_bi().await {
                    let data = recv.read_to_end(1 << 20).await.unwrap();
                    send.write_all(&data).await.unwrap();
                    send.finish().unwrap();
                }
            });
        }
    });
}

async fn echo(session: &web_transport_quinn::Session, data: &[u8]) -> Vec<u8> {
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    send.write_all(data).await.unwrap();
    send.finish().unwrap();
    tokio::time::timeout(TIMEOUT, recv.read_to_end(1 << 20))
        .await
        .unwrap()
        .unwrap()
}

/// The client's packets move from A to B, which has A's server ID but not the
/// connection (A crashed and B took its place, or A restarted): with the fleet's keys B's
/// stateless reset is one the client believes, so it learns at once that the connection
/// is gone; with keys of its own, B's reset is ignored and the client waits out its idle
/// timeout.
#[tokio::test]
async fn a_member_with_the_fleet_keys_resets_a_connection_it_does_not_hold() {
    for shared in [true, false] {
        let secret = [42u8; 32];
        let keys = |other: u8| {
            let mut s = secret;
            if !shared {
                s[0] = other;
            }
            Some(ferrovia::fleet::FleetKeys::derive(&s).unwrap())
        };
        let (a, b) = (member(keys(1), false), member(keys(2), false));
        let fleet = fleet_relay(a.addr, b.addr, false).await;
        // A bare QUIC client, so the connection's own close reason is what the test reads.
        let conn = raw_connection_to(&a, fleet.front, |_| {})
            .await
            .expect("connect to A");
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(b"ping").await.unwrap();
        // A: the stream is open (HTTP/3 has it as an unknown request; any answer will do).
        let _ = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            recv.read(&mut [0u8; 16]),
        )
        .await;
        // A is gone as far as the network knows: its client's packets now reach B.
        fleet.to_b.store(true, std::sync::atomic::Ordering::Release);
        let (mut more, _) = conn.open_bi().await.unwrap();
        let _ = more.write_all(&[0u8; 2000]).await;
        let closed = tokio::time::timeout(std::time::Duration::from_secs(2), conn.closed()).await;
        if shared {
            assert!(
                matches!(closed, Ok(quinn::ConnectionError::Reset)),
                "expected a stateless reset the client accepts, got {closed:?}"
            );
        } else {
            assert!(
                closed.is_err(),
                "without shared keys B's reset is not believed: {closed:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_retry_token_from_one_member_is_accepted_by_another_with_the_fleet_keys() {
    for shared in [true, false] {
        let keys = |n: u8| {
            let secret = if shared { [9u8; 32] } else { [n; 32] };
            Some(ferrovia::fleet::FleetKeys::derive(&secret).unwrap())
        };
        // Both ask every client to prove its address with a Retry.
        let (a, b) = (member(keys(1), true), member(keys(2), true));
        echo_sessions(&b);
        let fleet = fleet_relay(a.addr, b.addr, true).await;
        let client = web_transport_quinn::ClientBuilder::new()
            .with_server_certificate_hashes(vec![
                a.cert.sha256().to_vec(),
                b.cert.sha256().to_vec(),
            ])
            .expect("client");
        let url: url::Url = format!("https://localhost:{}/echo", fleet.front.port())
            .parse()
            .unwrap();
        let wait = std::time::Duration::from_secs(4);
        let connected = tokio::time::timeout(wait, client.connect(url)).await;
        assert!(
            fleet.to_b.load(std::sync::atomic::Ordering::Acquire),
            "A sent a Retry"
        );
        if shared {
            let session = connected.expect("timed out").expect("B accepts A's token");
            assert_eq!(echo(&session, b"on b").await, b"on b");
        } else {
            // B cannot verify the token: the handshake fails or never completes.
            assert!(
                !matches!(connected, Ok(Ok(_))),
                "B accepted a token it cannot verify"
            );
        }
    }
}
