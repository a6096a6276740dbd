//! Many processes on one port: `SO_REUSEPORT` groups whose packets are steered by
//! connection ID.
//!
//! One quinn endpoint drives all its packets from one task, so a machine with many cores
//! runs several servers, each on its own socket, all bound to the same port with
//! `SO_REUSEPORT`. The kernel picks a socket of the group for every datagram by hashing
//! its 4-tuple. That holds a connection to one server only while the client's address and
//! port stay the same: after a NAT rebinding or a move between networks the hash changes,
//! the datagrams reach a sibling that does not hold the connection, and the connection
//! dies.
//!
//! Steering fixes this the way a QUIC-LB load balancer does, one level down: every server
//! writes its index in the group into the connection IDs it issues (the first octet of the
//! QUIC-LB server ID, see [`Steering::connection_ids`]), and a classic BPF program attached
//! to the group (`SO_ATTACH_REUSEPORT_CBPF`, no capability needed) returns that octet as
//! the index of the socket to deliver to. The kernel falls back to its hash whenever the
//! program returns an index past the end of the group, which the program does for packets
//! it cannot read an index from: so a client's first Initial, whose destination connection
//! ID the client chose at random, is hashed as before, and every later packet follows the
//! connection ID the server that answered it issued.
//!
//! The kernel numbers the sockets of a group in the order they joined it, and when one
//! closes it moves the last one into its place. The numbering is therefore only as good as
//! the discipline of whoever opens the sockets: [`ReusePortGroup`] opens all of them, in
//! order, in one process, and keeps them open for as long as it lives, so a worker that
//! exits and is started again finds its socket where it was.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket},
    sync::Arc,
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, Socket, Type};

use super::{QuicLbConfig, QuicLbError, MAX_SERVER_ID_LEN};
use crate::{ServerConfig, TcpListen};

/// The most servers a steered group can hold: the index is one octet of the connection ID.
pub const MAX_WORKERS: usize = 256;

/// The octets of nonce in the connection IDs of a steered server that has no QUIC-LB
/// configuration of its own: 2^64 IDs before they run out.
const DEFAULT_NONCE_LEN: usize = 8;

/// How long a new socket waits for the probe that proves its place in the group. On
/// loopback the probe arrives before `send_to` returns; this is for a loaded machine.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Backlog of the TCP listeners a group opens.
const TCP_BACKLOG: i32 = 1024;

/// Setting up a `SO_REUSEPORT` group or taking inherited sockets failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReusePortError {
    /// A group holds 1 to [`MAX_WORKERS`] servers, and an index must be below that.
    #[error("a steered group holds 1 to {MAX_WORKERS} workers; {0} is out of range")]
    Workers(usize),
    /// A socket of the group could not be opened or bound.
    #[error("cannot bind {addr} with SO_REUSEPORT: {source}")]
    Bind {
        /// The address that could not be bound.
        addr: SocketAddr,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused the steering program.
    #[error("cannot attach the connection ID steering program: {0}")]
    Attach(#[source] io::Error),
    /// The socket did not land at its index in the group: another group, typically an
    /// earlier generation of the same service that is still running, already holds the
    /// port, or a worker joined out of turn. Steering would send its connections to
    /// strangers, so the server does not start.
    #[error(
        "the socket on {addr} is not member {index} of its SO_REUSEPORT group: another \
         process already listens on the port (an earlier generation still running?), or \
         workers joined out of order"
    )]
    OutOfOrder {
        /// The bound address.
        addr: SocketAddr,
        /// The index the socket should have.
        index: usize,
    },
    /// The worker index does not fit the QUIC-LB configuration's server ID.
    #[error("connection IDs of worker {index}: {source}")]
    ConnectionIds {
        /// The worker index.
        index: usize,
        /// Why the configuration with the index is invalid.
        #[source]
        source: QuicLbError,
    },
    /// An inherited file descriptor is not usable.
    #[error("inherited file descriptor {fd}: {source}")]
    Fd {
        /// The file descriptor.
        fd: i32,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// An inherited file descriptor is a socket, but neither a datagram nor a stream one.
    #[error("inherited file descriptor {0} is neither a UDP socket nor a TCP listener")]
    FdType(i32),
    /// `LISTEN_FDS` or `LISTEN_PID` does not hold a number.
    #[error("{0} is not a number")]
    Environment(&'static str),
    /// `SO_REUSEPORT` steering exists on Linux only.
    #[error("connection ID steering needs Linux")]
    Unsupported,
}

/// A server's place in a `SO_REUSEPORT` group whose packets are steered by connection ID:
/// set [`ServerConfig::steering`] (or let [`ReusePortGroup::configure`] do it).
///
/// At bind the server attaches the steering program to the group, issues connection IDs
/// that carry its index ([`connection_ids`](Self::connection_ids)), and, when it bound the
/// socket itself, checks that the socket really is at `index` in the group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Steering {
    index: u8,
}

impl Steering {
    /// The server that joined the group `index`th (from 0).
    pub fn worker(index: usize) -> Result<Self, ReusePortError> {
        u8::try_from(index)
            .map(|index| Self { index })
            .map_err(|_| ReusePortError::Workers(index))
    }

    /// The index in the group.
    pub fn index(self) -> usize {
        usize::from(self.index)
    }

    /// The QUIC-LB configuration this server issues connection IDs under: `base` with the
    /// index put in front of its server ID (so that the server IDs of one machine's workers
    /// differ in their first octet and share the rest), or without `base` a one-octet server
    /// ID holding the index and an 8-octet nonce.
    ///
    /// A QUIC-LB load balancer in front of the machine then knows each worker by its own
    /// server ID, of one octet more than `base`'s.
    pub fn connection_ids(
        self,
        base: Option<&QuicLbConfig>,
    ) -> Result<QuicLbConfig, ReusePortError> {
        let wrap = |source| ReusePortError::ConnectionIds {
            index: self.index(),
            source,
        };
        let Some(base) = base else {
            return QuicLbConfig::new(0, &[self.index], DEFAULT_NONCE_LEN).map_err(wrap);
        };
        let mut server_id = [0; MAX_SERVER_ID_LEN + 1];
        let len = base.server_id().len() + 1;
        server_id[0] = self.index;
        server_id[1..len].copy_from_slice(base.server_id());
        let mut config = QuicLbConfig::new(
            base.config_rotation().bits(),
            &server_id[..len],
            base.nonce_len(),
        )
        .map_err(wrap)?
        .with_length_self_encoding(base.encodes_length());
        if let Some(lifetime) = base.cid_lifetime() {
            config = config.with_cid_lifetime(lifetime);
        }
        Ok(config)
    }
}

/// The UDP sockets (and TCP listeners) of a `SO_REUSEPORT` group, opened in order by one
/// process, with connection ID steering attached.
///
/// The process that makes the group hands each worker its sockets: a thread with its own
/// runtime through [`configure`](Self::configure), a child process by passing
/// [`udp_socket`](Self::udp_socket)`(i)` and [`tcp_listener`](Self::tcp_listener)`(i)` as
/// inherited file descriptors (taken there with [`socket_from_fd`]). It keeps its own
/// copies open for as long as the group lives: a worker that exits leaves its socket in
/// its place, datagrams for it wait in the socket's buffer, and a new worker given the
/// same socket carries on. Had the worker bound the socket itself, its exit would have
/// moved the last socket of the group into its place and scrambled the routing of every
/// connection on that one.
///
/// Opening all sockets in one place is what makes the order certain; each socket is also
/// checked at once (a probe datagram must reach it through the steering program), so a
/// group cannot quietly join the sockets of an earlier generation that is still running.
#[derive(Debug)]
pub struct ReusePortGroup {
    addr: SocketAddr,
    udp: Vec<Arc<UdpSocket>>,
    tcp: Vec<Arc<TcpListener>>,
}

impl ReusePortGroup {
    /// Opens `workers` UDP sockets bound to `addr` with `SO_REUSEPORT`, attaches the
    /// steering program, checks every socket's place, and with `tcp` opens as many TCP
    /// listeners on the same port (the TCP side needs no steering: its connections do not
    /// move). Port 0 picks a port that is free on both.
    pub fn bind(addr: SocketAddr, workers: usize, tcp: bool) -> Result<Self, ReusePortError> {
        if workers == 0 || workers > MAX_WORKERS {
            return Err(ReusePortError::Workers(workers));
        }
        let (first, first_tcp) = bind_first(addr, tcp)?;
        let addr = first
            .local_addr()
            .map_err(|source| ReusePortError::Bind { addr, source })?;
        attach_steering(&first).map_err(ReusePortError::Attach)?;
        verify_index(&first, 0, addr, false)?;
        let mut udp = vec![Arc::new(first)];
        let mut listeners: Vec<Arc<TcpListener>> = first_tcp.into_iter().map(Arc::new).collect();
        for index in 1..workers {
            let socket =
                bind_udp(addr, true).map_err(|source| ReusePortError::Bind { addr, source })?;
            verify_index(&socket, index, addr, false)?;
            udp.push(Arc::new(socket));
            if tcp {
                let listener =
                    bind_tcp(addr, true).map_err(|source| ReusePortError::Bind { addr, source })?;
                listeners.push(Arc::new(listener));
            }
        }
        Ok(Self {
            addr,
            udp,
            tcp: listeners,
        })
    }

    /// The bound address, with the real port.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The number of workers.
    pub fn len(&self) -> usize {
        self.udp.len()
    }

    /// Always false: a group has at least one worker.
    pub fn is_empty(&self) -> bool {
        self.udp.is_empty()
    }

    /// Worker `index`'s UDP socket.
    pub fn udp_socket(&self, index: usize) -> Option<&Arc<UdpSocket>> {
        self.udp.get(index)
    }

    /// Worker `index`'s TCP listener, if the group has a TCP side.
    pub fn tcp_listener(&self, index: usize) -> Option<&Arc<TcpListener>> {
        self.tcp.get(index)
    }

    /// Worker `index`'s UDP socket as the descriptor a child process inherits (Unix only:
    /// `None` elsewhere, or past the group's end). The group still owns it.
    pub fn udp_fd(&self, index: usize) -> Option<i32> {
        self.udp.get(index).and_then(|s| raw_fd(&**s))
    }

    /// Worker `index`'s TCP listener as the descriptor a child process inherits (Unix only:
    /// `None` elsewhere, past the group's end, or in a group without a TCP side).
    pub fn tcp_fd(&self, index: usize) -> Option<i32> {
        self.tcp.get(index).and_then(|s| raw_fd(&**s))
    }

    /// Makes `config` serve as worker `index`: on its sockets (the address of the group),
    /// with `SO_REUSEPORT` and [`Steering`]. A config whose TCP side is
    /// [`TcpListen::SamePort`] in a group without TCP listeners gets no TCP side.
    pub fn configure(&self, index: usize, config: &mut ServerConfig) -> Result<(), ReusePortError> {
        let udp = self.udp.get(index).ok_or(ReusePortError::Workers(index))?;
        config.bind = self.addr;
        config.reuse_port = true;
        config.udp_socket = Some(udp.clone());
        config.tcp_listener = self.tcp.get(index).cloned();
        if config.tcp_listener.is_none() && config.tcp == TcpListen::SamePort {
            config.tcp = TcpListen::Off;
        }
        config.steering = Some(Steering::worker(index)?);
        Ok(())
    }
}

/// The first socket of a group, and a TCP listener on the same port: for port 0, the
/// kernel picks the UDP port and TCP tries it; a port taken on TCP is given up and another
/// tried.
fn bind_first(
    addr: SocketAddr,
    tcp: bool,
) -> Result<(UdpSocket, Option<TcpListener>), ReusePortError> {
    let bind_error = |source| ReusePortError::Bind { addr, source };
    let mut last = None;
    for _ in 0..32 {
        let udp = bind_udp(addr, true).map_err(bind_error)?;
        if !tcp {
            return Ok((udp, None));
        }
        let at = udp.local_addr().map_err(bind_error)?;
        match bind_tcp(at, true) {
            Ok(listener) => return Ok((udp, Some(listener))),
            Err(e) if addr.port() == 0 => last = Some(e),
            Err(e) => return Err(bind_error(e)),
        }
    }
    Err(bind_error(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::AddrInUse, "no port free on both UDP and TCP")
    })))
}

/// A UDP socket bound to `addr`, with `SO_REUSEPORT` when asked.
pub(crate) fn bind_udp(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
    if !reuse_port {
        return UdpSocket::bind(addr);
    }
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    set_reuse_port(&socket)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A TCP listener on `addr`, with `SO_REUSEPORT` when asked (and `SO_REUSEADDR`, as the
/// standard library sets it, so a restart does not wait out TIME_WAIT).
pub(crate) fn bind_tcp(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    if !reuse_port {
        return TcpListener::bind(addr);
    }
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    set_reuse_port(&socket)?;
    socket.bind(&addr.into())?;
    socket.listen(TCP_BACKLOG)?;
    Ok(socket.into())
}

#[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
fn set_reuse_port(socket: &Socket) -> io::Result<()> {
    socket.set_reuse_port(true)
}

#[cfg(not(all(unix, not(any(target_os = "solaris", target_os = "illumos")))))]
fn set_reuse_port(_: &Socket) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "SO_REUSEPORT is not available on this system",
    ))
}

/// What a steered server does to its socket at bind: attach the program and, for a socket
/// it bound itself (`verify`), check its place in the group.
pub(crate) fn prepare(
    socket: &UdpSocket,
    steering: Steering,
    verify: bool,
) -> Result<(), ReusePortError> {
    attach_steering(socket).map_err(ReusePortError::Attach)?;
    if verify {
        let addr = socket.local_addr().map_err(|source| ReusePortError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
        verify_index(socket, steering.index(), addr, true)?;
    }
    Ok(())
}

/// Sends a short-header datagram whose connection ID names worker `index` to the group and
/// waits for it on `socket`: it arrives there only if the steering program is in place and
/// `socket` is the group's `index`th member. Anything else that arrives meanwhile (a client
/// already sending to the port) is dropped; QUIC resends it.
///
/// An index past the end of the group makes the kernel hash instead, which may pick
/// `socket` all the same; with `lower`, probes for every index below `index` go first, and
/// `socket` must receive none of them, which rules that out (its siblings drop the probes
/// they get: the connection IDs in them are malformed).
fn verify_index(
    socket: &UdpSocket,
    index: usize,
    addr: SocketAddr,
    lower: bool,
) -> Result<(), ReusePortError> {
    let io_error = |source| ReusePortError::Bind { addr, source };
    let target = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    };
    let from = SocketAddr::new(
        match target {
            SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        },
        0,
    );
    let sender = UdpSocket::bind(from).map_err(io_error)?;
    // Flags of a short header, a first octet with config rotation 0, the index, a marker.
    let mut probe = [0u8; 19];
    probe[0] = 0x40;
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut probe[3..])
        .map_err(|_| io_error(io::Error::other("no randomness for the probe")))?;
    let first = if lower { 0 } else { index };
    for k in first..=index {
        probe[2] = k as u8;
        sender.send_to(&probe, target).map_err(io_error)?;
    }

    let restore = socket.read_timeout().map_err(io_error)?;
    // A socket handed in may be non-blocking; the wait below needs it blocking.
    #[cfg(unix)]
    let nonblocking_before = socket2::SockRef::from(socket)
        .nonblocking()
        .map_err(io_error)?;
    #[cfg(not(unix))]
    let nonblocking_before = false;
    socket.set_nonblocking(false).map_err(io_error)?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let mut buf = [0u8; 2048];
    let found = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        socket.set_read_timeout(Some(left)).map_err(io_error)?;
        match socket.recv_from(&mut buf) {
            Ok((n, _)) if n == probe.len() && buf[3..n] == probe[3..] => {
                // Probes arrive in the order they were sent: one for a lower index means
                // this socket is that index, not `index`.
                break buf[2] == probe[2];
            }
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => return Err(io_error(e)),
        }
    };
    socket.set_read_timeout(restore).map_err(io_error)?;
    socket
        .set_nonblocking(nonblocking_before)
        .map_err(io_error)?;
    if found {
        Ok(())
    } else {
        Err(ReusePortError::OutOfOrder { addr, index })
    }
}

/// The steering program, classic BPF run on each datagram's UDP payload. It returns the
/// index octet of the destination connection ID, or `u32::MAX` (past the end of any group,
/// so the kernel hashes the 4-tuple instead) for datagrams too short to carry one and for
/// connection IDs with config rotation `0b111`, which QUIC-LB reserves for unroutable IDs.
///
/// Short header: flags at 0, connection ID from 1, index at 2. Long header: flags at 0,
/// version at 1..5, connection ID length at 5, connection ID from 6, index at 7.
#[cfg(any(target_os = "linux", test))]
fn steering_program() -> [[u32; 4]; 19] {
    // [code, jt, jf, k]: jumps count instructions after the next one.
    const LD_LEN: u32 = 0x80; // BPF_LD | BPF_W | BPF_LEN
    const LDB: u32 = 0x30; // BPF_LD | BPF_B | BPF_ABS
    const JGE: u32 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const JEQ: u32 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JSET: u32 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
    const AND: u32 = 0x54; // BPF_ALU | BPF_AND | BPF_K
    const RET_A: u32 = 0x16; // BPF_RET | BPF_A
    const RET_K: u32 = 0x06; // BPF_RET | BPF_K
    const UNROUTABLE: u32 = 0xe0;
    [
        /* 0 */ [LD_LEN, 0, 0, 0],
        /* 1 */ [JGE, 0, 16, 3], // shorter than 3: hash
        /* 2 */ [LDB, 0, 0, 0],
        /* 3 */ [JSET, 5, 0, 0x80], // long header: 9
        /* 4 */ [LDB, 0, 0, 1],
        /* 5 */ [AND, 0, 0, UNROUTABLE],
        /* 6 */ [JEQ, 11, 0, UNROUTABLE], // unroutable: hash
        /* 7 */ [LDB, 0, 0, 2],
        /* 8 */ [RET_A, 0, 0, 0],
        /* 9 */ [LD_LEN, 0, 0, 0],
        /* 10 */ [JGE, 0, 7, 8], // shorter than 8: hash
        /* 11 */ [LDB, 0, 0, 5],
        /* 12 */ [JGE, 0, 5, 2], // connection ID under 2 octets: hash
        /* 13 */ [LDB, 0, 0, 6],
        /* 14 */ [AND, 0, 0, UNROUTABLE],
        /* 15 */ [JEQ, 2, 0, UNROUTABLE], // unroutable: hash
        /* 16 */ [LDB, 0, 0, 7],
        /* 17 */ [RET_A, 0, 0, 0],
        /* 18 */ [RET_K, 0, 0, u32::MAX],
    ]
}

/// Attaches the steering program to the `SO_REUSEPORT` group of `socket`. The program
/// belongs to the group, not the socket: attaching it again (every server of a group does)
/// replaces it with the same one.
#[cfg(target_os = "linux")]
pub(crate) fn attach_steering(socket: &UdpSocket) -> io::Result<()> {
    use std::os::fd::AsRawFd;

    // SO_ATTACH_REUSEPORT_CBPF from asm-generic/socket.h; SPARC numbers it differently.
    #[cfg(not(target_arch = "sparc64"))]
    const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
    #[cfg(target_arch = "sparc64")]
    const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 0x35;

    let mut filter = steering_program().map(|[code, jt, jf, k]| libc::sock_filter {
        code: code as u16,
        jt: jt as u8,
        jf: jf as u8,
        k,
    });
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: `program` points at `filter`, which outlives the call; the kernel copies the
    // instructions and keeps no pointer to either.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&program as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn attach_steering(_: &UdpSocket) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "connection ID steering needs Linux",
    ))
}

/// A socket a process inherited: see [`socket_from_fd`] and [`systemd_sockets`].
#[derive(Debug)]
#[non_exhaustive]
pub enum InheritedSocket {
    /// A datagram socket.
    Udp(UdpSocket),
    /// A stream socket, presumably listening.
    Tcp(TcpListener),
}

/// The sockets systemd socket activation (or any supervisor that follows its
/// `LISTEN_FDS` protocol) passed to this process, in the order of the socket unit.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct InheritedSockets {
    /// The datagram sockets (`ListenDatagram=`), in order.
    pub udp: Vec<UdpSocket>,
    /// The stream sockets (`ListenStream=`), in order.
    pub tcp: Vec<TcpListener>,
}

#[cfg(unix)]
fn raw_fd(socket: &impl std::os::fd::AsRawFd) -> Option<i32> {
    Some(socket.as_raw_fd())
}

#[cfg(not(unix))]
fn raw_fd<T>(_: &T) -> Option<i32> {
    None
}

/// Takes the socket in inherited file descriptor `fd` (passed by a parent process or a
/// supervisor), telling UDP from TCP by `SO_TYPE`.
///
/// The socket returned is a duplicate with close-on-exec set; `fd` itself stays open, so
/// the socket stays in its group until both are closed.
#[cfg(unix)]
pub fn socket_from_fd(fd: i32) -> Result<InheritedSocket, ReusePortError> {
    use std::os::fd::{FromRawFd, OwnedFd};

    // SAFETY: F_DUPFD_CLOEXEC only reads `fd`; an fd that is not open fails with EBADF.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(ReusePortError::Fd {
            fd,
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: `copy` is a new descriptor that nothing else owns.
    let socket = Socket::from(unsafe { OwnedFd::from_raw_fd(copy) });
    let kind = socket
        .r#type()
        .map_err(|source| ReusePortError::Fd { fd, source })?;
    if kind == Type::DGRAM {
        Ok(InheritedSocket::Udp(socket.into()))
    } else if kind == Type::STREAM {
        Ok(InheritedSocket::Tcp(socket.into()))
    } else {
        Err(ReusePortError::FdType(fd))
    }
}

/// Takes the socket in inherited file descriptor `fd`: Unix only.
#[cfg(not(unix))]
pub fn socket_from_fd(fd: i32) -> Result<InheritedSocket, ReusePortError> {
    Err(ReusePortError::FdType(fd))
}

/// The sockets systemd passed to this process (`LISTEN_PID` is this process and
/// `LISTEN_FDS` counts the descriptors from 3 on), or none if it passed none.
///
/// With `ReusePort=yes` in the socket unit, serve each UDP socket from its own process
/// through [`ServerConfig::udp_socket`]: systemd holds the sockets across restarts of the
/// service, in the order of the unit, which is what steering needs. The sockets are not
/// checked with a probe (that would eat datagrams of live connections).
pub fn systemd_sockets() -> Result<InheritedSockets, ReusePortError> {
    let mut out = InheritedSockets::default();
    let Ok(pid) = std::env::var("LISTEN_PID") else {
        return Ok(out);
    };
    let pid: u32 = pid
        .trim()
        .parse()
        .map_err(|_| ReusePortError::Environment("LISTEN_PID"))?;
    if pid != std::process::id() {
        // Meant for another process: the parent that started this one.
        return Ok(out);
    }
    let count: i32 = std::env::var("LISTEN_FDS")
        .map_err(|_| ReusePortError::Environment("LISTEN_FDS"))?
        .trim()
        .parse()
        .map_err(|_| ReusePortError::Environment("LISTEN_FDS"))?;
    for fd in 3..3 + count.max(0) {
        match socket_from_fd(fd)? {
            InheritedSocket::Udp(s) => out.udp.push(s),
            InheritedSocket::Tcp(s) => out.tcp.push(s),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the steering program the way the kernel runs classic BPF on a payload.
    fn run(payload: &[u8]) -> u32 {
        let program = steering_program();
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let [code, jt, jf, k] = program[pc];
            pc += 1;
            match code {
                0x80 => a = payload.len() as u32,
                0x30 => match payload.get(k as usize) {
                    Some(&b) => a = u32::from(b),
                    // An out-of-bounds load ends a classic BPF program with 0.
                    None => return 0,
                },
                0x54 => a &= k,
                0x35 => pc += if a >= k { jt } else { jf } as usize,
                0x15 => pc += if a == k { jt } else { jf } as usize,
                0x45 => pc += if a & k != 0 { jt } else { jf } as usize,
                0x16 => return a,
                0x06 => return k,
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn the_program_reads_the_index_from_either_header() {
        let config = Steering::worker(3).unwrap().connection_ids(None).unwrap();
        let cid = config.generator().next_cid();
        let mut short = vec![0x41];
        short.extend_from_slice(&cid);
        short.extend_from_slice(&[0; 30]);
        assert_eq!(run(&short), 3);

        let mut long = vec![0xc0, 0, 0, 0, 1, cid.len() as u8];
        long.extend_from_slice(&cid);
        long.extend_from_slice(&[8, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(run(&long), 3);

        // Too short, unroutable, or an ID under two octets: the kernel's hash decides.
        assert_eq!(run(&[0x40, 0]), u32::MAX);
        assert_eq!(run(&[0x40, 0xe3, 1, 2, 3]), u32::MAX);
        assert_eq!(run(&[0xc0, 0, 0, 0, 1, 1, 0x00, 1]), u32::MAX);
        assert_eq!(run(&[0xc0, 0, 0, 1]), u32::MAX);
        assert_eq!(run(&[0xc0, 0, 0, 0, 1, 8, 0xff, 2, 0]), u32::MAX);
        // A client's random Initial ID past the group's end is hashed by the kernel too.
        assert_eq!(run(&[0xc0, 0, 0, 0, 1, 8, 0x10, 200, 0]), 200);
    }

    #[test]
    fn worker_connection_ids_put_the_index_first() {
        let base = QuicLbConfig::new(2, &[0xaa, 0xbb], 6)
            .unwrap()
            .with_cid_lifetime(Duration::from_secs(60));
        let config = Steering::worker(7)
            .unwrap()
            .connection_ids(Some(&base))
            .unwrap();
        assert_eq!(config.server_id(), &[7, 0xaa, 0xbb]);
        assert_eq!(config.config_rotation().bits(), 2);
        assert_eq!(config.nonce_len(), 6);
        assert_eq!(config.cid_lifetime(), Some(Duration::from_secs(60)));
        assert_eq!(config.generator().next_cid()[1], 7);

        let full = QuicLbConfig::new(0, &[1; MAX_SERVER_ID_LEN], 4).unwrap();
        assert!(matches!(
            Steering::worker(0).unwrap().connection_ids(Some(&full)),
            Err(ReusePortError::ConnectionIds { index: 0, .. })
        ));
        assert!(matches!(
            Steering::worker(256),
            Err(ReusePortError::Workers(256))
        ));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_second_group_on_a_held_port_is_refused() {
        let first = ReusePortGroup::bind("127.0.0.1:0".parse().unwrap(), 2, true).unwrap();
        assert_eq!(first.len(), 2);
        let port = first.local_addr().port();
        assert_ne!(port, 0);
        assert_eq!(
            first.tcp_listener(1).unwrap().local_addr().unwrap().port(),
            port
        );
        let again = ReusePortGroup::bind(first.local_addr(), 2, false);
        assert!(
            matches!(again, Err(ReusePortError::OutOfOrder { index: 0, .. })),
            "{again:?}"
        );
        // The descriptors children inherit are the group's sockets, each of its kind.
        for index in 0..2 {
            let udp = socket_from_fd(first.udp_fd(index).unwrap()).unwrap();
            assert!(
                matches!(&udp, InheritedSocket::Udp(s) if s.local_addr().unwrap().port() == port)
            );
            let tcp = socket_from_fd(first.tcp_fd(index).unwrap()).unwrap();
            assert!(
                matches!(&tcp, InheritedSocket::Tcp(s) if s.local_addr().unwrap().port() == port)
            );
        }
        assert_eq!(first.udp_fd(2), None);
        assert_eq!(first.tcp_fd(2), None);
        drop(first);
        // Once the earlier group is gone, the port is free for a new one.
        ReusePortGroup::bind(SocketAddr::from(([127, 0, 0, 1], port)), 2, false).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn inherited_descriptors_are_told_apart() {
        use std::os::fd::AsRawFd;
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(matches!(
            socket_from_fd(udp.as_raw_fd()).unwrap(),
            InheritedSocket::Udp(s) if s.local_addr().unwrap() == udp.local_addr().unwrap()
        ));
        assert!(matches!(
            socket_from_fd(tcp.as_raw_fd()).unwrap(),
            InheritedSocket::Tcp(_)
        ));
        assert!(matches!(
            socket_from_fd(-1),
            Err(ReusePortError::Fd { fd: -1, .. })
        ));
    }
}
