//! Load generator for the Ferrovia benchmarks.
//!
//! ```text
//! loadgen [--smoke] [--runs N] [--only bulk_single,latency,…] [--json FILE] [--markdown FILE]
//!         --server NAME=COMMAND [--server NAME=COMMAND …]
//! ```
//!
//! Each server is a command line that prints `{"event":"listening","port":P,
//! "certificateHash":HEX}` first on stdout and echoes streams and datagrams on `/echo`.
//! `NAME[wt,ws,qmux,h1,h2,h3]=COMMAND` names what it serves (WebTransport; plain WebSockets
//! on `/ws` on the TCP side of the same port; QMux sessions on `/echo` there; `GET /json`
//! over HTTP/1.1, HTTP/2 on TCP and HTTP/3 on UDP), `wt` alone if not given; a scenario
//! that needs something a server does not serve is skipped for it. A name may be given
//! twice with different capabilities (e.g. the core's echo example for `wt,ws,qmux` and
//! `loadgen http-server` for `h1,h2,h3`): each scenario runs the command that serves it,
//! and both report in the same column.
//! For every run, scenario and server in turn, the load generator starts a fresh server
//! process, measures, and kills it, so servers are interleaved and ratios between them
//! come from the same minutes of machine noise. It prints one JSON record per
//! server × scenario × run on stdout as it goes, then a markdown summary.
//!
//! The client is web-transport-quinn, which none of the servers under test is built on
//! as a server, so every server faces the same independent client; on TCP it is
//! tokio-tungstenite's WebSocket client and the `qmux` crate's QMux client (`tcp.rs`); for
//! ordinary HTTP, hyper's client and the `h3` crate's (`http.rs`).
//!
//! Two subcommands serve `scripts/soak.sh` instead: `loadgen soak-server` (a Ferrovia
//! server that reports its memory, sessions, connections and descriptors) and
//! `loadgen soak` (a client that churns sessions against it); see `soak_server.rs` and
//! `soak.rs`. `loadgen http-server` is the core's server for the HTTP scenarios
//! (`http_server.rs`).

mod client;
mod http;
mod http_server;
mod measure;
mod report;
mod scenarios;
mod server;
mod soak;
mod soak_server;
mod tcp;

use std::{io::Write, time::Duration};

use measure::{Measurement, Params};
use report::Record;
use scenarios::Scenario;
use server::{Running, ServerSpec};

/// Errors are reported, never matched on, in a benchmark.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str = "usage: loadgen [--smoke] [--runs N] [--only SCENARIO,…] [--json FILE] \
                     [--markdown FILE] [--note TEXT] --server NAME[CAP,…]=COMMAND …\n\
                     scenarios: bulk_single qmux_bulk_single bulk_parallel latency \
                     qmux_latency datagrams conns64_streams conns64_datagrams setup idle \
                     ws_throughput ws_latency ws_idle \
                     http1_json http2_json http3_json\n\
                     capabilities: wt (WebTransport, the default) ws (WebSockets on /ws) \
                     qmux (QMux sessions on /echo) h1 h2 h3 (GET /json over HTTP/1.1, 2, 3)\n\
                     soak: loadgen soak-server [--every S] | loadgen soak --port P --hash HEX \
                     --seconds S [--rate N] [--concurrency N]\n\
                     http: loadgen http-server [--host H] [--port P]";

struct Options {
    smoke: bool,
    runs: usize,
    scenarios: Vec<Scenario>,
    servers: Vec<ServerSpec>,
    json: Option<String>,
    markdown: Option<String>,
    note: String,
}

fn options() -> Result<Options, Error> {
    let mut o = Options {
        smoke: false,
        runs: 1,
        scenarios: Scenario::ALL.to_vec(),
        servers: Vec::new(),
        json: None,
        markdown: None,
        note: String::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--smoke" => o.smoke = true,
            "--runs" => o.runs = value()?.parse()?,
            "--only" => {
                o.scenarios = value()?
                    .split(',')
                    .map(|s| Scenario::parse(s.trim()).ok_or(format!("unknown scenario {s:?}")))
                    .collect::<Result<_, _>>()?
            }
            "--server" => o.servers.push(value()?.parse()?),
            "--json" => o.json = Some(value()?),
            "--markdown" => o.markdown = Some(value()?),
            "--note" => o.note = value()?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
    }
    if o.servers.is_empty() {
        return Err(format!("no --server given\n{USAGE}").into());
    }
    Ok(o)
}

/// The first server given under `name`.
fn first_of<'a>(servers: &'a [ServerSpec], name: &str) -> &'a ServerSpec {
    servers
        .iter()
        .find(|s| s.name == name)
        .expect("the name comes from the list")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

async fn measure(
    spec: &ServerSpec,
    scenario: Scenario,
    params: &Params,
) -> Result<Vec<Measurement>, String> {
    let mut server = Running::start(spec, Duration::from_secs(60))
        .await
        .map_err(|e| e.to_string())?;
    let outcome = tokio::time::timeout(params.timeout, scenario.run(&mut server, params)).await;
    let result = match outcome {
        Ok(Ok(m)) => Ok(m),
        Ok(Err(e)) => Err(format!("{e}; server stderr: {}", server.stderr_tail())),
        Err(_) => Err(format!("timed out after {:?}", params.timeout)),
    };
    server.stop().await;
    result
}

#[tokio::main]
async fn main() {
    let sub = std::env::args().nth(1);
    if let Some(run) = match sub.as_deref() {
        Some("soak") => Some(soak::run(std::env::args().skip(2)).await),
        Some("soak-server") => Some(soak_server::run(std::env::args().skip(2)).await),
        Some("http-server") => Some(http_server::run(std::env::args().skip(2)).await),
        _ => None,
    } {
        if let Err(e) = run {
            eprintln!("{}: {e}", sub.unwrap_or_default());
            std::process::exit(1);
        }
        return;
    }
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let (params, mode) = if o.smoke {
        (Params::smoke(), "smoke")
    } else {
        (Params::full(), "full")
    };
    let mut json = o.json.as_ref().map(|path| {
        std::fs::File::create(path).unwrap_or_else(|e| panic!("cannot write {path}: {e}"))
    });
    let load_before = loadavg();
    let mut records = Vec::new();
    let mut skipped = Vec::new();
    for run in 0..o.runs {
        for &scenario in &o.scenarios {
            for spec in &o.servers {
                // The command of this name that serves the scenario: the first one given.
                let serving = o
                    .servers
                    .iter()
                    .find(|s| s.name == spec.name && s.supports(scenario.needs()));
                if serving.is_some_and(|s| !std::ptr::eq(s, spec)) {
                    continue;
                }
                if serving.is_none() {
                    if run == 0 && std::ptr::eq(spec, first_of(&o.servers, &spec.name)) {
                        eprintln!(
                            "skipping {} on {}: it does not serve {}",
                            scenario.name(),
                            spec.name,
                            scenario.needs().name()
                        );
                        let missing = format!("{} ({})", spec.name, scenario.needs().name());
                        if !skipped.contains(&missing) {
                            skipped.push(missing);
                        }
                    }
                    continue;
                }
                let measured = measure(spec, scenario, &params).await;
                let produced: Vec<Record> = match measured {
                    Ok(ms) => ms
                        .into_iter()
                        .map(|m| Record {
                            server: spec.name.clone(),
                            name: m.name,
                            run,
                            mode,
                            result: Ok(m.fields),
                        })
                        .collect(),
                    Err(e) => vec![Record {
                        server: spec.name.clone(),
                        name: scenario.name().to_owned(),
                        run,
                        mode,
                        result: Err(e),
                    }],
                };
                for r in produced {
                    let line = r.to_json();
                    println!("{line}");
                    if let Some(f) = json.as_mut() {
                        let _ = writeln!(f, "{line}");
                    }
                    if let Err(e) = &r.result {
                        eprintln!("FAILED {} {} run {run}: {e}", spec.name, r.name);
                    }
                    records.push(r);
                }
                // Let the kernel and allocator settle between servers.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let mut names: Vec<String> = Vec::new();
    for s in &o.servers {
        if !names.contains(&s.name) {
            names.push(s.name.clone());
        }
    }
    let skipped = if skipped.is_empty() {
        String::new()
    } else {
        format!(
            " Not run (— in the tables), for want of what they need: the scenarios of {}.",
            skipped.join(", ")
        )
    };
    let note = format!(
        "Mode {mode}; 1-minute load average {load_before} before, {} after.{skipped} {}",
        loadavg(),
        o.note
    );
    let md = report::markdown(&records, &names, o.runs, note.trim());
    println!("\n{md}");
    if let Some(path) = &o.markdown {
        if let Err(e) = std::fs::write(path, &md) {
            eprintln!("cannot write {path}: {e}");
        }
    }
    let failed = records.iter().filter(|r| r.result.is_err()).count();
    if failed > 0 {
        eprintln!("{failed} scenario run(s) failed");
        std::process::exit(1);
    }
}
