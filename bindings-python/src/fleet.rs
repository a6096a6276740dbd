//! Fleet options of `Server.bind` (QUIC-LB connection IDs, fleet keys, `SO_REUSEPORT`,
//! a worker's inherited sockets) and the socket group `run_workers()` opens in the parent.

use std::sync::{Arc, Mutex};

use ferrovia::{
    fleet::{
        socket_from_fd, FleetKeys, InheritedSocket, QuicLbConfig, ReusePortError,
        ReusePortGroup as CoreGroup, Steering,
    },
    ServerConfig, TcpListen,
};
use pyo3::{
    exceptions::{PyOSError, PyRuntimeError, PyValueError},
    prelude::*,
};

/// A group error as the Python exception for it.
fn group_error(e: ReusePortError) -> PyErr {
    let message = e.to_string();
    match e {
        ReusePortError::Bind { source, .. } | ReusePortError::Fd { source, .. } => {
            PyOSError::new_err((source.raw_os_error().unwrap_or(0), message))
        }
        ReusePortError::Workers(_) | ReusePortError::ConnectionIds { .. } => {
            PyValueError::new_err(message)
        }
        _ => PyRuntimeError::new_err(message),
    }
}

/// Applies the fleet options to `config`.
pub(crate) fn apply(
    config: &mut ServerConfig,
    reuse_port: bool,
    connection_ids: Option<(Vec<u8>, u8, usize)>,
    fleet_secret: Option<Vec<u8>>,
    worker: Option<(usize, i32, Option<i32>)>,
) -> PyResult<()> {
    config.reuse_port = reuse_port;
    if let Some((server_id, rotation, nonce)) = connection_ids {
        let lb = QuicLbConfig::new(rotation, &server_id, nonce)
            .map_err(|e| PyValueError::new_err(format!("connection_ids: {e}")))?;
        config.connection_ids = Some(lb);
    }
    if let Some(secret) = fleet_secret {
        config.fleet_keys = Some(
            FleetKeys::derive(&secret)
                .map_err(|e| PyValueError::new_err(format!("fleet_secret: {e}")))?,
        );
    }
    if let Some((index, udp_fd, tcp_fd)) = worker {
        let InheritedSocket::Udp(udp) = socket_from_fd(udp_fd).map_err(group_error)? else {
            return Err(PyValueError::new_err(
                "the worker's UDP descriptor is not UDP",
            ));
        };
        config.bind = udp.local_addr()?;
        config.udp_socket = Some(Arc::new(udp));
        match tcp_fd {
            Some(fd) if config.tcp != TcpListen::Off => {
                let InheritedSocket::Tcp(tcp) = socket_from_fd(fd).map_err(group_error)? else {
                    return Err(PyValueError::new_err(
                        "the worker's TCP descriptor is not TCP",
                    ));
                };
                config.tcp_listener = Some(Arc::new(tcp));
            }
            None if config.tcp == TcpListen::SamePort => config.tcp = TcpListen::Off,
            _ => {}
        }
        config.steering = Some(Steering::worker(index).map_err(group_error)?);
    }
    Ok(())
}

/// The sockets of a `SO_REUSEPORT` group with connection ID steering, opened in order by
/// the parent of `run_workers()`, which hands each worker its descriptors and keeps them
/// open so that a restarted worker takes its predecessor's place.
#[pyclass(frozen, module = "ferrovia._ferrovia")]
pub(crate) struct ReusePortGroup {
    group: Mutex<Option<CoreGroup>>,
    port: u16,
}

impl ReusePortGroup {
    fn with<T>(&self, f: impl FnOnce(&CoreGroup) -> Option<T>) -> Option<T> {
        let group = self.group.lock().unwrap_or_else(|e| e.into_inner());
        group.as_ref().and_then(f)
    }
}

#[pymethods]
impl ReusePortGroup {
    /// Opens `count` UDP sockets (and with `tcp` as many TCP listeners) on `host`:`port`.
    #[staticmethod]
    fn bind(host: &str, port: u16, count: usize, tcp: bool) -> PyResult<Self> {
        let ip: std::net::IpAddr = host
            .trim_matches(|c| c == '[' || c == ']')
            .parse()
            .map_err(|_| {
                PyValueError::new_err(format!("host must be an IP address, got {host:?}"))
            })?;
        let group = CoreGroup::bind((ip, port).into(), count, tcp).map_err(group_error)?;
        Ok(Self {
            port: group.local_addr().port(),
            group: Mutex::new(Some(group)),
        })
    }

    /// The bound port.
    #[getter]
    fn port(&self) -> u16 {
        self.port
    }

    /// Worker `index`'s UDP descriptor, or -1.
    fn udp_fd(&self, index: usize) -> i32 {
        self.with(|g| g.udp_fd(index)).unwrap_or(-1)
    }

    /// Worker `index`'s TCP descriptor, or -1.
    fn tcp_fd(&self, index: usize) -> i32 {
        self.with(|g| g.tcp_fd(index)).unwrap_or(-1)
    }

    /// Closes this process's copies of the sockets.
    fn close(&self) {
        self.group.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}
