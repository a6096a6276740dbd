//! Running as one member of a fleet of servers behind a load balancer.
//!
//! A QUIC client may change address at any time (a NAT rebinding, Wi-Fi to cellular), and
//! its packets then arrive from a 4-tuple the load balancer has never seen. Only the
//! destination connection ID still says which server holds the connection, so the servers
//! must write something a load balancer can read into every connection ID they issue:
//! that is [QUIC-LB](QuicLbConfig) (draft-ietf-quic-load-balancers).
//!
//! The same holds inside one machine whose server processes share a port with
//! `SO_REUSEPORT`: [`ReusePortGroup`] and [`Steering`] make the kernel route by connection
//! ID too.

mod keys;
mod quic_lb;
mod reuseport;

pub use keys::{FleetKeys, SecretTooShort, MIN_SECRET_LEN};

pub use quic_lb::{
    CidError, ConfigRotation, DecodedCid, QuicLbConfig, QuicLbError, QuicLbGenerator, MAX_CID_LEN,
    MAX_SERVER_ID_LEN, MIN_NONCE_LEN,
};

pub use reuseport::{
    socket_from_fd, systemd_sockets, InheritedSocket, InheritedSockets, ReusePortError,
    ReusePortGroup, Steering, MAX_WORKERS,
};

pub(crate) use reuseport::{bind_tcp, bind_udp, prepare as prepare_steering};
