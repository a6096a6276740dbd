//! Small helpers shared by the chat, gamestate and upload examples: command-line flags,
//! JSON-lines output and query parameters. Kept dependency-free so each example shows only
//! Ferrovia's API.

// Each example uses a different subset.
#![allow(dead_code)]

use std::{collections::HashMap, net::SocketAddr};

/// Parses `--flag value` pairs; `known` lists the accepted flags (without `--`).
pub fn flags(known: &[&str]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let name = arg
            .strip_prefix("--")
            .filter(|n| known.contains(n))
            .ok_or_else(|| format!("unknown argument {arg:?}"))?;
        let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
        out.insert(name.to_string(), value);
    }
    Ok(out)
}

/// The address to bind from `--host` (default `::`, which serves IPv6 and IPv4: Chromium
/// reaches `localhost` over ::1, Firefox over 127.0.0.1) and `--port` (default 4433).
pub fn bind_addr(flags: &HashMap<String, String>) -> Result<SocketAddr, String> {
    let host = flags.get("host").map(String::as_str).unwrap_or("::");
    let ip = host
        .trim_matches(|c| c == '[' || c == ']')
        .parse()
        .map_err(|_| format!("--host {host:?} is not an IP address"))?;
    let port = match flags.get("port") {
        Some(p) => p
            .parse()
            .map_err(|_| format!("--port {p:?} is not a port"))?,
        None => 4433,
    };
    Ok(SocketAddr::new(ip, port))
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Prints one JSON line on stdout and flushes, so a supervising process sees it at once.
pub fn emit(line: String) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The percent-decoded value of `key` in the query of `path`.
pub fn query_param(path: &str, key: &str) -> Option<String> {
    let query = path.split_once('?')?.1;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (_, Some(b)) => {
                out.push(b);
                i += 3;
                continue;
            }
            (b'+', None) => out.push(b' '),
            (b, None) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
