//! Two servers on one port with `SO_REUSEPORT`: a client that moves to a new source port
//! twelve times keeps its session when the group steers by connection ID, and loses it
//! without steering, once the kernel's 4-tuple hash sends it to the sibling.
//!
//! The steered pair runs in two processes, as in production: this process opens the group
//! and serves as worker 0, and a copy of this test binary (re-run with the
//! `child_worker` test selected and the socket passed as an inherited file descriptor)
//! serves as worker 1.

#![cfg(target_os = "linux")]

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    os::fd::AsRawFd,
    process::{Child, ChildStdin, Command, Stdio},
    sync::{mpsc, Arc},
    time::Duration,
};

use ferrovia::{
    fleet::{socket_from_fd, InheritedSocket, ReusePortGroup, Steering},
    Certificate, Server, ServerConfig, TcpListen,
};

const WORKER_FD: &str = "FERROVIA_TEST_WORKER_FD";
const WORKER_CERT: &str = "FERROVIA_TEST_WORKER_CERT";
const WORKER_KEY: &str = "FERROVIA_TEST_WORKER_KEY";
const TIMEOUT: Duration = Duration::from_secs(20);
const REBINDS: usize = 12;

fn certificate() -> Certificate {
    Certificate::self_signed(&["localhost", "127.0.0.1"]).expect("certificate")
}

/// Accepts every session on `/echo` and echoes its bidirectional streams.
fn echo_sessions(server: &Server) {
    let route = server.route("/echo").unwrap();
    tokio::spawn(async move {
        while let Some(request) = route.accept().await {
            let Ok(session) = request.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = session.accept_bi().await {
                    let Ok(data) = recv.read_to_end(1 << 20).await else {
                        break;
                    };
                    let _ = send.write_all(&data).await;
                    let _ = send.finish();
                }
            });
        }
    });
}

/// Worker 1 of the steered test, in its own process: serves on the inherited socket and
/// answers `stats` lines on stdin with its counters until stdin closes.
#[test]
#[ignore = "the second process of the steered test, which runs it with --ignored"]
fn child_worker() {
    let fd: i32 = std::env::var(WORKER_FD)
        .expect("run only by the steered test, which passes the socket")
        .parse()
        .unwrap();
    let InheritedSocket::Udp(socket) = socket_from_fd(fd).expect("inherited socket") else {
        panic!("fd {fd} is not a UDP socket");
    };
    let cert = Certificate::from_pem(
        std::env::var(WORKER_CERT).unwrap().as_bytes(),
        std::env::var(WORKER_KEY).unwrap().as_bytes(),
    )
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let mut config = ServerConfig::new(socket.local_addr().unwrap(), cert);
        config.udp_socket = Some(Arc::new(socket));
        config.tcp = TcpListen::Off;
        config.steering = Some(Steering::worker(1).unwrap());
        let server = Server::bind(config).expect("worker 1 binds");
        echo_sessions(&server);
        println!("ready");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        while let Some(line) = rx.recv().await {
            if line == "stats" {
                let s = server.stats();
                println!("stats {} {}", s.connections_accepted, s.sessions_accepted);
            }
        }
    });
}

/// Worker 1 in a child process, with the group's second socket as an inherited descriptor.
struct ChildWorker {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl ChildWorker {
    fn spawn(group: &ReusePortGroup, cert: &Certificate) -> Self {
        let socket = group.udp_socket(1).unwrap().try_clone().unwrap();
        // The one descriptor the child should inherit: this duplicate, without
        // close-on-exec. (It is closed here once the child has started.)
        socket2::SockRef::from(&socket).set_cloexec(false).unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_worker",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WORKER_FD, socket.as_raw_fd().to_string())
            .env(WORKER_CERT, cert.chain_pem())
            .env(WORKER_KEY, cert.key_pem())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn worker 1");
        drop(socket);
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest may have put "test child_worker ... " in front of a line.
                for word in ["ready", "stats "] {
                    if let Some(at) = line.find(word) {
                        let _ = tx.send(line[at..].to_owned());
                    }
                }
            }
        });
        let worker = Self {
            child,
            stdin,
            lines,
        };
        assert_eq!(worker.line(), "ready");
        worker
    }

    fn line(&self) -> String {
        self.lines.recv_timeout(TIMEOUT).expect("worker 1 answers")
    }

    /// (connections accepted, sessions accepted) of worker 1.
    fn stats(&mut self) -> (u64, u64) {
        writeln!(self.stdin, "stats").unwrap();
        let line = self.line();
        let mut parts = line.split(' ').skip(1).map(|n| n.parse().unwrap());
        (parts.next().unwrap(), parts.next().unwrap())
    }
}

impl Drop for ChildWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebTransport client on an endpoint of its own, so the test can move it to new ports.
fn client(cert: &Certificate) -> (quinn::Endpoint, web_transport_quinn::Client) {
    let mut config = common::client_config_trusting(vec![cert.sha256().to_vec()]);
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(Duration::from_secs(10).try_into().unwrap()));
    config.transport_config(Arc::new(transport));
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let client = web_transport_quinn::Client::new(endpoint.clone(), config);
    (endpoint, client)
}

async fn connect(
    client: &web_transport_quinn::Client,
    addr: SocketAddr,
) -> web_transport_quinn::Session {
    let url: url::Url = format!("https://127.0.0.1:{}/echo", addr.port())
        .parse()
        .unwrap();
    tokio::time::timeout(TIMEOUT, client.connect(url))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// Echoes `data` on a new stream; `None` if no echo came back within `wait`.
async fn echo(
    session: &web_transport_quinn::Session,
    data: &[u8],
    wait: Duration,
) -> Option<Vec<u8>> {
    tokio::time::timeout(wait, async {
        let (mut send, mut recv) = session.open_bi().await.ok()?;
        send.write_all(data).await.ok()?;
        send.finish().ok()?;
        recv.read_to_end(1 << 20).await.ok()
    })
    .await
    .ok()
    .flatten()
}

/// Moves the client to a fresh source port: what a NAT rebinding looks like to a server.
fn rebind(endpoint: &quinn::Endpoint) -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    endpoint.rebind(socket).unwrap();
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_steering_a_session_survives_every_rebinding() {
    let cert = certificate();
    let group = ReusePortGroup::bind("127.0.0.1:0".parse().unwrap(), 2, false).unwrap();
    let addr = group.local_addr();
    let mut config = ServerConfig::new(addr, cert.clone());
    group.configure(0, &mut config).unwrap();
    assert_eq!(
        config.tcp,
        TcpListen::Off,
        "a group without TCP listeners has no TCP side"
    );
    let worker0 = Server::bind(config).expect("worker 0 binds");
    echo_sessions(&worker0);
    let mut worker1 = tokio::task::block_in_place(|| ChildWorker::spawn(&group, &cert));

    // Clients from many ports: the kernel hashes their first packets over both workers,
    // and each session stays with the worker that took it.
    let mut sessions = Vec::new();
    for i in 0..16u8 {
        let (endpoint, client) = client(&cert);
        let session = connect(&client, addr).await;
        let payload = vec![i; 1000];
        assert_eq!(echo(&session, &payload, TIMEOUT).await, Some(payload));
        sessions.push((endpoint, client, session));
    }
    let on0 = worker0.stats().sessions_accepted;
    let (_, on1) = tokio::task::block_in_place(|| worker1.stats());
    assert_eq!(on0 + on1, 16, "every session was accepted once");
    assert!(
        on0 > 0 && on1 > 0,
        "the kernel spread the clients: {on0} and {on1}"
    );

    // Each client moves to a new port again and again; both workers' sessions survive.
    for round in 0..REBINDS {
        for (i, (endpoint, _, session)) in sessions.iter().enumerate() {
            let port = rebind(endpoint);
            let payload = format!("client {i} round {round} from port {port}").into_bytes();
            assert_eq!(
                echo(session, &payload, TIMEOUT).await.as_deref(),
                Some(&payload[..]),
                "client {i} lost its session after rebinding to port {port} (round {round})"
            );
        }
    }
    // Neither worker took a connection that was the other's.
    let stats0 = worker0.stats();
    let (connections1, sessions1) = tokio::task::block_in_place(|| worker1.stats());
    assert_eq!(stats0.connections_accepted + connections1, 16);
    assert_eq!((stats0.sessions_accepted, sessions1), (on0, on1));
}

#[tokio::test]
async fn without_steering_a_rebinding_lands_on_the_sibling_and_the_session_is_lost() {
    let cert = certificate();
    let start = |port: u16| {
        let mut config = ServerConfig::new(SocketAddr::from(([127, 0, 0, 1], port)), cert.clone());
        config.reuse_port = true;
        config.tcp = TcpListen::Off;
        Server::bind(config).expect("bind with reuse_port")
    };
    let a = start(0);
    let addr = a.local_addr().unwrap();
    let b = start(addr.port());
    assert_eq!(b.local_addr().unwrap(), addr, "both servers share the port");
    echo_sessions(&a);
    echo_sessions(&b);

    let (endpoint, client) = client(&cert);
    let session = connect(&client, addr).await;
    assert_eq!(
        echo(&session, b"first", TIMEOUT).await.as_deref(),
        Some(&b"first"[..])
    );
    let holder = if a.stats().sessions_accepted == 1 {
        &a
    } else {
        &b
    };
    let sibling = if std::ptr::eq(holder, &a) { &b } else { &a };
    assert_eq!(holder.stats().sessions_accepted, 1);
    assert_eq!(sibling.stats().sessions_accepted, 0);

    // Each new port is hashed afresh: about half land on the sibling, which does not know
    // the connection ID and cannot help.
    let mut broke_after = None;
    for attempt in 1..=32 {
        rebind(&endpoint);
        if echo(&session, b"again", Duration::from_millis(1500))
            .await
            .is_none()
        {
            broke_after = Some(attempt);
            break;
        }
    }
    assert!(
        broke_after.is_some(),
        "32 rebindings all hashed to the same server"
    );
    assert_eq!(
        sibling.stats().sessions_accepted,
        0,
        "the sibling never held the session"
    );
}

#[tokio::test]
async fn steering_without_a_shared_port_is_a_configuration_error() {
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), certificate());
    config.steering = Some(Steering::worker(0).unwrap());
    let err = Server::bind(config).unwrap_err();
    assert_eq!(err.code(), "ERR_INVALID_CONFIG", "{err}");

    // A worker that binds its own socket must join in turn: index 1 of a group of one is not.
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), certificate());
    config.reuse_port = true;
    config.tcp = TcpListen::Off;
    config.steering = Some(Steering::worker(1).unwrap());
    let err = Server::bind(config).unwrap_err();
    assert_eq!(err.code(), "ERR_REUSE_PORT", "{err}");
    assert!(err.to_string().contains("not member 1"), "{err}");
}
