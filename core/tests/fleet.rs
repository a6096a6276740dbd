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
