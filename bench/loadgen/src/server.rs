//! Servers under test: a command line plus the `listening` contract on stdout.
//!
//! Every echo server in the suite, whatever its language, is started the same way and
//! announces itself with a first stdout line such as
//! `{"event":"listening","port":4433,"certificateHash":"ab12…"}`. The load generator needs
//! nothing else from it, which is what lets one client face them all.

use std::{
    collections::VecDeque,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
};

use crate::Error;

/// What a server under test serves; a scenario needs one of these, and is skipped (not
/// failed) for a server without it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    /// `wt`: WebTransport over HTTP/3 on UDP, echoing streams and datagrams on `/echo`.
    WebTransport,
    /// `ws`: TLS on TCP at the same port number (ALPN `http/1.1`), echoing plain
    /// WebSocket messages on `/ws`.
    WebSocket,
    /// `qmux`: QMux sessions (a WebSocket offering `qmux-02`) on the same TCP side, echoing
    /// streams on `/echo` as a WebTransport session does.
    Qmux,
    /// `h1`: ordinary HTTP/1.1 on the TCP side (TLS, ALPN `http/1.1` or none), answering
    /// `GET /json` with `{"message":"hello"}`.
    Http1,
    /// `h2`: the same over HTTP/2 (ALPN `h2`) on the TCP side.
    Http2,
    /// `h3`: the same over HTTP/3 on UDP at the same port number.
    Http3,
}

impl Capability {
    pub fn name(self) -> &'static str {
        match self {
            Capability::WebTransport => "wt",
            Capability::WebSocket => "ws",
            Capability::Qmux => "qmux",
            Capability::Http1 => "h1",
            Capability::Http2 => "h2",
            Capability::Http3 => "h3",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Capability::WebTransport,
            Capability::WebSocket,
            Capability::Qmux,
            Capability::Http1,
            Capability::Http2,
            Capability::Http3,
        ]
        .into_iter()
        .find(|c| c.name() == s)
    }
}

/// How to start one server under test: `NAME=PROGRAM ARG…`, or `NAME[CAP,…]=PROGRAM ARG…`
/// with its capabilities (`wt`, `ws`, `qmux`, `h1`, `h2`, `h3`; `wt` alone when not given).
#[derive(Clone, Debug)]
pub struct ServerSpec {
    /// Short label used in records and table columns (`core`, `node`, `aioquic`, …).
    pub name: String,
    /// What it serves.
    pub capabilities: Vec<Capability>,
    program: String,
    args: Vec<String>,
}

impl ServerSpec {
    pub fn supports(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }
}

impl std::str::FromStr for ServerSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let (name, cmd) = s
            .split_once('=')
            .ok_or("a server is NAME=COMMAND, e.g. core='target/release/examples/echo --port 0'")?;
        let (name, capabilities) = match name.trim().split_once('[') {
            None => (name.trim(), vec![Capability::WebTransport]),
            Some((name, caps)) => {
                let caps = caps
                    .strip_suffix(']')
                    .ok_or("capabilities are NAME[wt,ws,qmux,h1,h2,h3]")?;
                let caps = caps
                    .split(',')
                    .map(|c| {
                        Capability::parse(c.trim()).ok_or_else(|| {
                            format!("unknown capability {c:?} (wt, ws, qmux, h1, h2, h3)")
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                (name.trim(), caps)
            }
        };
        // Whitespace splitting is enough for the commands the scripts pass; a server that
        // needs quoting gets a wrapper script that `exec`s it.
        let mut words = cmd.split_whitespace().map(str::to_owned);
        let program = words.next().ok_or("empty server command")?;
        Ok(Self {
            name: name.to_owned(),
            capabilities,
            program,
            args: words.collect(),
        })
    }
}

/// Lines of stderr kept to explain a server that failed.
const STDERR_TAIL: usize = 20;

/// A started server process.
pub struct Running {
    child: Child,
    /// Process id, for reading its resident memory.
    pub pid: u32,
    /// The port it announced (UDP for WebTransport; TCP, same number, for the TCP side).
    pub port: u16,
    /// SHA-256 of its DER certificate, as announced.
    pub certificate_hash: Vec<u8>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

impl Running {
    /// Starts the server and waits for its `listening` line.
    pub async fn start(spec: &ServerSpec, timeout: Duration) -> Result<Self, Error> {
        let mut child = Command::new(&spec.program)
            .args(&spec.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{}: cannot start {:?}: {e}", spec.name, spec.program))?;
        let pid = child.id().ok_or("server exited at once")?;
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        tokio::spawn(keep_tail(
            child.stderr.take().expect("piped"),
            stderr_tail.clone(),
        ));
        let mut stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        let first = tokio::time::timeout(timeout, async {
            // Tolerate log noise before the announcement.
            while let Some(line) = stdout.next_line().await? {
                if line.contains("\"listening\"") {
                    return Ok(Some(line));
                }
            }
            Ok::<_, std::io::Error>(None)
        })
        .await;
        let line = match first {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) | Ok(Err(_)) => {
                let _ = child.wait().await;
                return Err(format!(
                    "{}: exited before listening; stderr:\n{}",
                    spec.name,
                    tail(&stderr_tail)
                )
                .into());
            }
            Err(_) => {
                return Err(format!(
                    "{}: no listening line within {timeout:?}; stderr:\n{}",
                    spec.name,
                    tail(&stderr_tail)
                )
                .into())
            }
        };
        // Session events follow on stdout; an undrained pipe would stall the server.
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        let port = json_field(&line, "port")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("{}: no port in {line}", spec.name))?;
        let certificate_hash = json_field(&line, "certificateHash")
            .and_then(|h| hex_decode(&h))
            .ok_or_else(|| format!("{}: no certificateHash in {line}", spec.name))?;
        Ok(Self {
            child,
            pid,
            port,
            certificate_hash,
            stderr_tail,
        })
    }

    /// The echo route on loopback.
    pub fn url(&self) -> url::Url {
        url::Url::parse(&format!("https://127.0.0.1:{}/echo", self.port)).expect("valid url")
    }

    /// Resident set size of the server process in KiB, from `/proc/PID/status`.
    pub fn rss_kib(&self) -> Result<u64, Error> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| "no VmRSS in /proc status".into())
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines the server wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        tail(&self.stderr_tail)
    }

    /// Kills the server and reaps it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

async fn keep_tail(stderr: impl AsyncRead + Unpin, buf: Arc<Mutex<VecDeque<String>>>) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut buf = buf.lock().unwrap();
        if buf.len() == STDERR_TAIL {
            buf.pop_front();
        }
        buf.push_back(line);
    }
}

fn tail(buf: &Mutex<VecDeque<String>>) -> String {
    let buf = buf.lock().unwrap();
    buf.iter().cloned().collect::<Vec<_>>().join("\n")
}

/// The value of a top-level scalar field in a flat JSON object, without its quotes.
///
/// The announcement is a flat object of numbers and plain strings, so this avoids pulling
/// a JSON parser into the benchmark for one line.
fn json_field(line: &str, key: &str) -> Option<String> {
    let at = line.find(&format!("\"{key}\""))? + key.len() + 2;
    let rest = line[at..].trim_start().strip_prefix(':')?.trim_start();
    if let Some(s) = rest.strip_prefix('"') {
        Some(s[..s.find('"')?].to_owned())
    } else {
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        Some(rest[..end].trim().to_owned())
    }
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.replace(':', "");
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_announcement() {
        let line = r#"{"event":"listening","port":4433,"certificateHash":"0aff","spki":"x"}"#;
        assert_eq!(json_field(line, "port").as_deref(), Some("4433"));
        assert_eq!(json_field(line, "certificateHash").as_deref(), Some("0aff"));
        assert_eq!(hex_decode("0aff"), Some(vec![0x0a, 0xff]));
        assert_eq!(hex_decode("0A:FF"), Some(vec![0x0a, 0xff]));
    }

    #[test]
    fn parses_a_server_spec() {
        let spec: ServerSpec = "core=target/echo --port 0".parse().unwrap();
        assert_eq!(spec.name, "core");
        assert_eq!(spec.program, "target/echo");
        assert_eq!(spec.args, ["--port", "0"]);
        assert_eq!(spec.capabilities, [Capability::WebTransport]);
        let spec: ServerSpec = "core[wt,ws,qmux]=target/echo --port 0".parse().unwrap();
        assert_eq!(spec.name, "core");
        assert!(spec.supports(Capability::Qmux) && spec.supports(Capability::WebSocket));
        let spec: ServerSpec = "tungstenite[ws]=peer".parse().unwrap();
        assert_eq!(spec.capabilities, [Capability::WebSocket]);
        let spec: ServerSpec = "uvicorn[h1]=peer".parse().unwrap();
        assert_eq!(spec.capabilities, [Capability::Http1]);
        let spec: ServerSpec = "core[h1,h2,h3]=peer".parse().unwrap();
        assert!(spec.supports(Capability::Http3) && !spec.supports(Capability::WebTransport));
        assert!("x[udp]=peer".parse::<ServerSpec>().is_err());
    }
}
