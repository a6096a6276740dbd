//! Records (one JSON line per server × scenario × run) and the markdown summary.

use std::fmt::Write as _;

/// One server × scenario × run outcome.
#[derive(Debug)]
pub struct Record {
    pub server: String,
    pub name: String,
    pub run: usize,
    pub mode: &'static str,
    pub result: Result<Vec<(&'static str, f64)>, String>,
}

impl Record {
    /// The record as one line of JSON.
    pub fn to_json(&self) -> String {
        let mut s = format!(
            r#"{{"server":{},"scenario":{},"run":{},"mode":"{}","ok":{}"#,
            json_str(&self.server),
            json_str(&self.name),
            self.run,
            self.mode,
            self.result.is_ok()
        );
        match &self.result {
            Ok(fields) => {
                for (k, v) in fields {
                    let _ = write!(s, r#","{k}":{}"#, json_num(*v));
                }
            }
            Err(e) => {
                let _ = write!(s, r#","error":{}"#, json_str(e));
            }
        }
        s.push('}');
        s
    }

    fn get(&self, field: &str) -> Option<f64> {
        let fields = self.result.as_ref().ok()?;
        fields.iter().find(|(k, _)| *k == field).map(|(_, v)| *v)
    }
}

fn json_num(v: f64) -> String {
    if !v.is_finite() {
        return "null".into();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Which way a figure improves.
#[derive(Clone, Copy)]
enum Better {
    Higher,
    Lower,
}

/// The rows of the summary: record name, field, label, direction, display scale.
fn metrics(records: &[Record]) -> Vec<(String, &'static str, String, Better, f64)> {
    let mut rows = vec![
        (
            "bulk_single",
            "mib_per_s",
            "1-stream echo, MiB/s".to_owned(),
            Better::Higher,
            1.0,
        ),
        (
            "qmux_bulk_single",
            "mib_per_s",
            "QMux 1-stream echo, MiB/s".into(),
            Better::Higher,
            1.0,
        ),
        (
            "bulk_parallel",
            "mib_per_s",
            "64-stream echo, MiB/s".into(),
            Better::Higher,
            1.0,
        ),
        (
            "latency",
            "p50_us",
            "64 B round trip p50, µs".into(),
            Better::Lower,
            1.0,
        ),
        (
            "latency",
            "p99_us",
            "64 B round trip p99, µs".into(),
            Better::Lower,
            1.0,
        ),
        (
            "qmux_latency",
            "p50_us",
            "QMux 64 B round trip p50, µs".into(),
            Better::Lower,
            1.0,
        ),
        (
            "qmux_latency",
            "p99_us",
            "QMux 64 B round trip p99, µs".into(),
            Better::Lower,
            1.0,
        ),
        (
            "datagrams",
            "sent_per_s",
            "datagrams sent/s".into(),
            Better::Higher,
            1.0,
        ),
        (
            "datagrams",
            "received_per_s",
            "datagrams echoed/s".into(),
            Better::Higher,
            1.0,
        ),
        (
            "datagrams",
            "loss_pct",
            "datagram loss, %".into(),
            Better::Lower,
            1.0,
        ),
        (
            "conns64_streams",
            "mib_per_s",
            "64 connections x 4 streams echo, MiB/s".into(),
            Better::Higher,
            1.0,
        ),
        (
            "conns64_datagrams",
            "received_per_s",
            "64 connections datagrams echoed/s".into(),
            Better::Higher,
            1.0,
        ),
        (
            "setup",
            "sessions_per_s",
            "session setups/s".into(),
            Better::Higher,
            1.0,
        ),
        (
            "setup",
            "ready_p50_ms",
            "session ready p50, ms".into(),
            Better::Lower,
            1.0,
        ),
        (
            "setup",
            "ttfb_p50_ms",
            "first byte p50, ms".into(),
            Better::Lower,
            1.0,
        ),
        (
            "setup",
            "ttfb_p99_ms",
            "first byte p99, ms".into(),
            Better::Lower,
            1.0,
        ),
    ]
    .into_iter()
    .map(|(n, f, l, b, s)| (n.to_owned(), f, l, b, s))
    .collect::<Vec<_>>();
    let mut idle: Vec<usize> = records
        .iter()
        .filter_map(|r| r.name.strip_prefix("idle_")?.parse().ok())
        .collect();
    idle.sort_unstable();
    idle.dedup();
    for n in idle {
        rows.push((
            format!("idle_{n}"),
            "rss_kib",
            format!("RSS with {n} idle sessions, MiB"),
            Better::Lower,
            1.0 / 1024.0,
        ));
        rows.push((
            format!("idle_{n}"),
            "per_session_kib",
            format!("per idle session ({n}), KiB"),
            Better::Lower,
            1.0,
        ));
    }
    let ws = [
        (
            "ws_throughput",
            "mib_per_s",
            "WebSocket echo (64 KiB messages), MiB/s",
            Better::Higher,
        ),
        (
            "ws_latency",
            "p50_us",
            "WebSocket 1 KiB round trip p50, µs",
            Better::Lower,
        ),
        (
            "ws_latency",
            "p99_us",
            "WebSocket 1 KiB round trip p99, µs",
            Better::Lower,
        ),
    ];
    for (n, f, l, b) in ws {
        rows.push((n.to_owned(), f, l.to_owned(), b, 1.0));
    }
    let mut ws_idle: Vec<usize> = records
        .iter()
        .filter_map(|r| r.name.strip_prefix("ws_idle_")?.parse().ok())
        .collect();
    ws_idle.sort_unstable();
    ws_idle.dedup();
    for n in ws_idle {
        rows.push((
            format!("ws_idle_{n}"),
            "rss_kib",
            format!("RSS with {n} idle WebSockets, MiB"),
            Better::Lower,
            1.0 / 1024.0,
        ));
        rows.push((
            format!("ws_idle_{n}"),
            "per_connection_kib",
            format!("per idle WebSocket ({n}), KiB"),
            Better::Lower,
            1.0,
        ));
    }
    let http = [
        ("http1_json", "HTTP/1.1 GET /json (16 conn × 1)"),
        ("http2_json", "HTTP/2 GET /json (4 conn × 16)"),
        ("http3_json", "HTTP/3 GET /json (4 conn × 16)"),
    ];
    for (n, l) in http {
        rows.push((
            n.to_owned(),
            "requests_per_s",
            format!("{l}, requests/s"),
            Better::Higher,
            1.0,
        ));
        rows.push((
            n.to_owned(),
            "p50_us",
            format!("{l}, p50 µs"),
            Better::Lower,
            1.0,
        ));
        rows.push((
            n.to_owned(),
            "p99_us",
            format!("{l}, p99 µs"),
            Better::Lower,
            1.0,
        ));
    }
    // Only what was run: a subset of scenarios (`--only`) gets a table of its own rows.
    rows.retain(|(name, ..)| records.iter().any(|r| &r.name == name));
    rows
}

/// Rows of one transport and of its counterpart on another, for the ratio of one to the
/// other on the same server: (record, counterpart record, field, label).
type SameServer = [(&'static str, &'static str, &'static str, &'static str)];

/// QMux rows and the WebTransport rows they are the counterparts of.
const QMUX_VS_WEBTRANSPORT: [(&str, &str, &str, &str); 3] = [
    (
        "qmux_bulk_single",
        "bulk_single",
        "mib_per_s",
        "1-stream echo, MiB/s ↑",
    ),
    (
        "qmux_latency",
        "latency",
        "p50_us",
        "64 B round trip p50, µs ↓",
    ),
    (
        "qmux_latency",
        "latency",
        "p99_us",
        "64 B round trip p99, µs ↓",
    ),
];

fn fmt(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// "median (min–max)" over the runs, or the single value.
fn spread(mut values: Vec<f64>, suffix: &str) -> String {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => "—".into(),
        1 => format!("{}{suffix}", fmt(values[0])),
        _ => format!(
            "{}{suffix} ({}–{})",
            fmt(median(&values)),
            fmt(values[0]),
            fmt(values[values.len() - 1])
        ),
    }
}

/// HTTP/3 rows and the HTTP/2 rows they are the counterparts of.
const HTTP3_VS_HTTP2: [(&str, &str, &str, &str); 3] = [
    (
        "http3_json",
        "http2_json",
        "requests_per_s",
        "GET /json, requests/s ↑",
    ),
    ("http3_json", "http2_json", "p50_us", "GET /json p50, µs ↓"),
    ("http3_json", "http2_json", "p99_us", "GET /json p99, µs ↓"),
];

/// Each binding and the server of its own language that does the same job, compared
/// directly: the WebSocket libraries, and the HTTP servers (node:http2; uvicorn and
/// Hypercorn hosting the same ASGI application as the Python package).
const BINDING_PEERS: [(&str, &str); 5] = [
    ("node", "ws"),
    ("python", "websockets"),
    ("node", "nodehttp2"),
    ("python", "uvicorn"),
    ("python", "hypercorn"),
];

/// The pairs compared: each binding against the core, the core against each peer, and each
/// binding against its language's WebSocket peer (`BINDING_PEERS`) when both ran.
fn pairs(servers: &[String]) -> Vec<(String, String)> {
    let ours = ["core", "node", "python"];
    let mut out = Vec::new();
    for (binding, peer) in BINDING_PEERS {
        if servers.iter().any(|s| s == binding) && servers.iter().any(|s| s == peer) {
            out.push((binding.to_owned(), peer.to_owned()));
        }
    }
    if servers.iter().any(|s| s == "core") {
        for s in servers {
            if s == "node" || s == "python" {
                out.push((s.clone(), "core".into()));
            }
        }
        for s in servers {
            if !ours.contains(&s.as_str()) {
                out.push(("core".into(), s.clone()));
            }
        }
    }
    out
}

/// One figure of one server's record in one run.
fn value(records: &[Record], server: &str, name: &str, field: &str, run: usize) -> Option<f64> {
    records
        .iter()
        .find(|r| r.server == server && r.name == name && r.run == run)
        .and_then(|r| r.get(field))
}

/// The markdown summary: raw figures per server, then ratios computed run by run.
pub fn markdown(records: &[Record], servers: &[String], runs: usize, note: &str) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Median over {runs} run(s), (min–max) across runs. {note}\n"
    );
    let _ = write!(md, "| figure |");
    for s in servers {
        let _ = write!(md, " {s} |");
    }
    let _ = write!(md, "\n| --- |");
    for _ in servers {
        let _ = write!(md, " --- |");
    }
    md.push('\n');
    let rows = metrics(records);
    for (name, field, label, better, scale) in &rows {
        let arrow = match better {
            Better::Higher => "↑",
            Better::Lower => "↓",
        };
        let _ = write!(md, "| {label} {arrow} |");
        for s in servers {
            let of_server: Vec<&Record> = records
                .iter()
                .filter(|r| &r.server == s && &r.name == name)
                .collect();
            let values: Vec<f64> = of_server
                .iter()
                .filter_map(|r| r.get(field))
                .map(|v| v * scale)
                .collect();
            let failed = of_server.iter().filter(|r| r.result.is_err()).count();
            let cell = if values.is_empty() && failed > 0 {
                "failed".to_owned()
            } else if failed > 0 {
                format!("{} [{failed} failed]", spread(values, ""))
            } else {
                spread(values, "")
            };
            let _ = write!(md, " {cell} |");
        }
        md.push('\n');
    }
    // Failed scenarios whose name never succeeded anywhere (e.g. every idle step of a
    // server that died) still deserve a line.
    let failures: Vec<&Record> = records.iter().filter(|r| r.result.is_err()).collect();

    let pairs = pairs(servers);
    if !pairs.is_empty() {
        let _ = write!(
            md,
            "\nRatios of the raw figures, computed within each run (servers interleaved), \
             median (min–max) across runs. Above 1 means the first named is higher, which \
             is better for ↑ figures and worse for ↓ ones.\n\n| figure |"
        );
        for (a, b) in &pairs {
            let _ = write!(md, " {a}/{b} |");
        }
        let _ = write!(md, "\n| --- |");
        for _ in &pairs {
            let _ = write!(md, " --- |");
        }
        md.push('\n');
        for (name, field, label, better, _) in &rows {
            if *field == "loss_pct" {
                continue; // a ratio of loss percentages says little
            }
            let arrow = match better {
                Better::Higher => "↑",
                Better::Lower => "↓",
            };
            let cells: Vec<Vec<f64>> = pairs
                .iter()
                .map(|(a, b)| {
                    (0..runs)
                        .filter_map(|run| {
                            Some(
                                value(records, a, name, field, run)?
                                    / value(records, b, name, field, run)?,
                            )
                        })
                        .filter(|r| r.is_finite())
                        .collect()
                })
                .collect();
            if cells.iter().all(Vec::is_empty) {
                continue; // e.g. WebSocket rows when no peer serves WebSockets
            }
            let _ = write!(md, "| {label} {arrow} |");
            for ratios in cells {
                let _ = write!(md, " {} |", spread(ratios, "×"));
            }
            md.push('\n');
        }
    }
    // QMux over a WebSocket against WebTransport over HTTP/3, on each server that ran both.
    same_server(
        &mut md,
        records,
        servers,
        runs,
        &QMUX_VS_WEBTRANSPORT,
        "QMux/WebTransport",
        "QMux over a WebSocket (TCP) relative to WebTransport over HTTP/3 (QUIC) on the \
         same server, computed within each run, median (min–max) across runs. Above 1 \
         means QMux is higher, which is better for ↑ figures and worse for ↓ ones.",
    );
    // HTTP/3 against HTTP/2, on each server that ran both.
    same_server(
        &mut md,
        records,
        servers,
        runs,
        &HTTP3_VS_HTTP2,
        "HTTP/3 / HTTP/2",
        "HTTP/3 (QUIC) relative to HTTP/2 (TCP) on the same server, computed within each \
         run, median (min–max) across runs. Above 1 means HTTP/3 is higher, which is \
         better for ↑ figures and worse for ↓ ones.",
    );
    if !failures.is_empty() {
        let _ = writeln!(md, "\nFailures:\n");
        for r in failures {
            let err = r.result.as_ref().err().map(String::as_str).unwrap_or("");
            let first = err.lines().next().unwrap_or("");
            let _ = writeln!(md, "- {} {} run {}: {}", r.server, r.name, r.run, first);
        }
    }
    md
}

/// A table of ratios between two records of the same server, for each server that has
/// both in at least one run.
fn same_server(
    md: &mut String,
    records: &[Record],
    servers: &[String],
    runs: usize,
    rows: &SameServer,
    column: &str,
    intro: &str,
) {
    let both: Vec<&String> = servers
        .iter()
        .filter(|s| {
            rows.iter().any(|(a, b, f, _)| {
                (0..runs).any(|run| {
                    value(records, s, a, f, run).is_some() && value(records, s, b, f, run).is_some()
                })
            })
        })
        .collect();
    if both.is_empty() {
        return;
    }
    let _ = write!(md, "\n{intro}\n\n| figure |");
    for s in &both {
        let _ = write!(md, " {s} {column} |");
    }
    let _ = write!(md, "\n| --- |");
    for _ in &both {
        let _ = write!(md, " --- |");
    }
    md.push('\n');
    for (a, b, f, label) in rows {
        let _ = write!(md, "| {label} |");
        for s in &both {
            let ratios: Vec<f64> = (0..runs)
                .filter_map(|run| {
                    Some(value(records, s, a, f, run)? / value(records, s, b, f, run)?)
                })
                .filter(|r| r.is_finite())
                .collect();
            let _ = write!(md, " {} |", spread(ratios, "×"));
        }
        md.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(server: &str, run: usize, v: f64) -> Record {
        Record {
            server: server.into(),
            name: "bulk_single".into(),
            run,
            mode: "smoke",
            result: Ok(vec![("mib_per_s", v)]),
        }
    }

    #[test]
    fn json_line_is_flat_and_finite() {
        let r = rec("core", 0, 12.5);
        assert_eq!(
            r.to_json(),
            r#"{"server":"core","scenario":"bulk_single","run":0,"mode":"smoke","ok":true,"mib_per_s":12.5000}"#
        );
        let mut bad = rec("x\"", 1, 0.0);
        bad.result = Err("boom\nline".into());
        assert!(bad.to_json().contains(r#""ok":false,"error":"boom\nline""#));
    }

    #[test]
    fn ratios_are_per_run() {
        let records = vec![
            rec("core", 0, 100.0),
            rec("node", 0, 80.0),
            rec("core", 1, 200.0),
            rec("node", 1, 180.0),
        ];
        let servers = vec!["core".to_owned(), "node".to_owned()];
        let md = markdown(&records, &servers, 2, "");
        assert!(md.contains("| 150 (100–200) | 130 (80.0–180) |"), "{md}");
        assert!(md.contains("0.85× (0.80–0.90)"), "{md}");
    }

    #[test]
    fn bindings_are_compared_with_their_languages_websocket_peer() {
        let servers: Vec<String> = ["core", "node", "ws", "python", "websockets"]
            .map(str::to_owned)
            .to_vec();
        let names: Vec<String> = pairs(&servers)
            .into_iter()
            .map(|(a, b)| format!("{a}/{b}"))
            .collect();
        assert_eq!(
            names,
            [
                "node/ws",
                "python/websockets",
                "node/core",
                "python/core",
                "core/ws",
                "core/websockets"
            ]
        );
        // Without the core, the binding-to-peer ratios remain.
        let names: Vec<String> = pairs(&servers[1..3])
            .into_iter()
            .map(|(a, b)| format!("{a}/{b}"))
            .collect();
        assert_eq!(names, ["node/ws"]);
    }

    #[test]
    fn qmux_is_compared_with_webtransport_on_the_same_server() {
        let mut records = vec![rec("core", 0, 200.0), rec("core", 1, 100.0)];
        for (run, v) in [(0, 100.0), (1, 80.0)] {
            let mut r = rec("core", run, v);
            r.name = "qmux_bulk_single".into();
            records.push(r);
        }
        let md = markdown(&records, &["core".to_owned()], 2, "");
        assert!(md.contains("| core QMux/WebTransport |"), "{md}");
        assert!(
            md.contains("| 1-stream echo, MiB/s ↑ | 0.65× (0.50–0.80) |"),
            "{md}"
        );
        // Rows of scenarios that did not run are left out.
        assert!(!md.contains("WebSocket echo"), "{md}");
    }

    #[test]
    fn http_servers_are_compared_with_their_peers_and_http3_with_http2() {
        let rec = |server: &str, name: &str, run, v| Record {
            server: server.into(),
            name: name.into(),
            run,
            mode: "smoke",
            result: Ok(vec![
                ("requests_per_s", v),
                ("p50_us", 100.0),
                ("p99_us", 200.0),
            ]),
        };
        let records = vec![
            rec("python", "http2_json", 0, 1000.0),
            rec("python", "http3_json", 0, 800.0),
            rec("hypercorn", "http2_json", 0, 500.0),
            rec("uvicorn", "http1_json", 0, 900.0),
        ];
        let servers: Vec<String> = ["python", "uvicorn", "hypercorn"]
            .map(str::to_owned)
            .to_vec();
        let names: Vec<String> = pairs(&servers)
            .into_iter()
            .map(|(a, b)| format!("{a}/{b}"))
            .collect();
        assert_eq!(names, ["python/uvicorn", "python/hypercorn"]);
        let md = markdown(&records, &servers, 1, "");
        assert!(
            md.contains("| HTTP/2 GET /json (4 conn × 16), requests/s ↑ | — | 2.00× |"),
            "{md}"
        );
        assert!(md.contains("| python HTTP/3 / HTTP/2 |"), "{md}");
        assert!(md.contains("| GET /json, requests/s ↑ | 0.80× |"), "{md}");
        assert!(!md.contains("QMux/WebTransport"), "{md}");
    }
}
