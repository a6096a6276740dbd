//! Fleet options of `listen()` (QUIC-LB connection IDs, fleet keys, `SO_REUSEPORT`) and
//! the socket group `runWorkers()` opens in the parent process.

use std::sync::{Arc, Mutex};

use ferrovia::{
    fleet::{socket_from_fd, FleetKeys, InheritedSocket, QuicLbConfig, ReusePortGroup, Steering},
    ServerConfig,
};
use napi_derive::napi;

use crate::error;

/// QUIC-LB connection IDs, checked by the facade.
#[napi(object)]
pub struct NativeConnectionIds {
    /// The server ID (1 to 15 bytes).
    pub server_id: napi::bindgen_prelude::Buffer,
    /// The config rotation codepoint, 0 to 6.
    pub config_id: Option<u32>,
    /// Nonce bytes, at least 4.
    pub nonce_length: Option<u32>,
}

/// A worker's sockets, inherited from the parent that opened the group.
#[napi(object)]
pub struct NativeWorker {
    /// The worker's index in the group.
    pub index: u32,
    /// The inherited UDP socket.
    pub udp_fd: i32,
    /// The inherited TCP listener, if the group has a TCP side.
    pub tcp_fd: Option<i32>,
}

/// Applies the fleet options to `config`.
pub(crate) fn apply(
    config: &mut ServerConfig,
    reuse_port: Option<bool>,
    connection_ids: Option<&NativeConnectionIds>,
    fleet_secret: Option<&[u8]>,
    worker: Option<&NativeWorker>,
) -> napi::Result<()> {
    config.reuse_port = reuse_port.unwrap_or(false);
    if let Some(ids) = connection_ids {
        let rotation = u8::try_from(ids.config_id.unwrap_or(0))
            .map_err(|_| error::invalid("connectionIds.configId must be 0 to 6"))?;
        let nonce = ids.nonce_length.unwrap_or(8) as usize;
        let lb = QuicLbConfig::new(rotation, &ids.server_id, nonce)
            .map_err(|e| error::invalid(format!("connectionIds: {e}")))?;
        config.connection_ids = Some(lb);
    }
    if let Some(secret) = fleet_secret {
        config.fleet_keys = Some(
            FleetKeys::derive(secret).map_err(|e| error::invalid(format!("fleetSecret: {e}")))?,
        );
    }
    if let Some(w) = worker {
        let udp = match socket_from_fd(w.udp_fd) {
            Ok(InheritedSocket::Udp(s)) => s,
            Ok(_) => return Err(error::invalid("the worker's UDP descriptor is not UDP")),
            Err(e) => return Err(error::from_server(e.into())),
        };
        config.bind = udp
            .local_addr()
            .map_err(|e| error::invalid(format!("the worker's UDP socket: {e}")))?;
        config.udp_socket = Some(Arc::new(udp));
        if let Some(fd) = w.tcp_fd {
            if config.tcp != ferrovia::TcpListen::Off {
                match socket_from_fd(fd) {
                    Ok(InheritedSocket::Tcp(s)) => config.tcp_listener = Some(Arc::new(s)),
                    Ok(_) => return Err(error::invalid("the worker's TCP descriptor is not TCP")),
                    Err(e) => return Err(error::from_server(e.into())),
                }
            }
        } else if config.tcp == ferrovia::TcpListen::SamePort {
            config.tcp = ferrovia::TcpListen::Off;
        }
        config.steering =
            Some(Steering::worker(w.index as usize).map_err(|e| error::from_server(e.into()))?);
    }
    Ok(())
}

/// The sockets of a `SO_REUSEPORT` group with connection ID steering, opened in order by
/// the parent of `runWorkers()`, which hands each worker its descriptors and keeps them
/// open so that a restarted worker takes its predecessor's place.
#[napi]
pub struct NativeReusePortGroup {
    group: Mutex<Option<ReusePortGroup>>,
    port: u16,
}

/// Opens `count` UDP sockets (and with `tcp` as many TCP listeners) on `host`:`port`.
#[napi(catch_unwind)]
pub fn open_reuse_port_group(
    host: String,
    port: u32,
    count: u32,
    tcp: bool,
) -> napi::Result<NativeReusePortGroup> {
    let ip: std::net::IpAddr = host
        .parse()
        .map_err(|_| error::invalid(format!("host {host:?} is not an IP address")))?;
    let port = u16::try_from(port).map_err(|_| error::invalid("port must be 0..65535"))?;
    let group = ReusePortGroup::bind((ip, port).into(), count as usize, tcp)
        .map_err(|e| error::from_server(e.into()))?;
    Ok(NativeReusePortGroup {
        port: group.local_addr().port(),
        group: Mutex::new(Some(group)),
    })
}

#[napi]
impl NativeReusePortGroup {
    /// The bound port.
    #[napi(getter, catch_unwind)]
    pub fn port(&self) -> u32 {
        u32::from(self.port)
    }

    /// Worker `index`'s UDP descriptor, or -1.
    #[napi(catch_unwind)]
    pub fn udp_fd(&self, index: u32) -> i32 {
        let group = self.group.lock().unwrap_or_else(|e| e.into_inner());
        group
            .as_ref()
            .and_then(|g| g.udp_fd(index as usize))
            .unwrap_or(-1)
    }

    /// Worker `index`'s TCP descriptor, or -1.
    #[napi(catch_unwind)]
    pub fn tcp_fd(&self, index: u32) -> i32 {
        let group = self.group.lock().unwrap_or_else(|e| e.into_inner());
        group
            .as_ref()
            .and_then(|g| g.tcp_fd(index as usize))
            .unwrap_or(-1)
    }

    /// Closes the parent's copies of the sockets.
    #[napi(catch_unwind)]
    pub fn close(&self) {
        self.group.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}
