//! The `origin` header and `:authority` checks, against the WHATWG URL parser (`url`).
//!
//! `Origin::parse` reads what a browser sends, a serialized origin, and deliberately refuses
//! what a browser never sends there (paths, queries, userinfo); `url` parses any URL and
//! rewrites hosts on the way (IDNA, IPv4 shorthand such as `1.2.3` or `0x7f.1`,
//! percent-decoding). So the two are compared only where both should agree:
//! - on `url`'s own serialization of an http(s) origin, which is exactly what a browser
//!   sends: ours must accept it and find the same scheme, host and port;
//! - on a `scheme://host[:port]` input built from parts, which `url` accepts without any
//!   path, query or userinfo: ours must accept it too, unless its port is empty or longer
//!   than five digits (browsers never serialize either), and agree on scheme and port, and
//!   on the host wherever `url` did not rewrite it.
//!
//! And whatever the input, the policy checks never panic, and `SameHost` never allows an
//! origin whose host `url` reads as something other than one of the server's names.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use ferrovia::wire::origin::{
    authority_allowed, host_matches, matches_any, split_host_port, Origin, OriginPolicy,
};
use libfuzzer_sys::fuzz_target;
use url::{Host, Url};

#[derive(Arbitrary, Debug)]
enum Scheme {
    Http,
    Https,
    Ws,
    Other(String),
}

/// Pieces of host names: ordinary letters, digits and punctuation, plus the characters
/// that make `url` rewrite or reject a host (non-ASCII, percent signs, brackets, colons).
#[rustfmt::skip]
const PIECES: &[&str] = &[
    "a", "b", "e", "x", "z", "l", "o", "c", "h", "s", "t", "0", "1", "7", "9", "-", "_", ".",
    "*", "~", "!", "$", "&", "'", "(", "+", ",", ";", "=", "%", "%41", "%2e", "é", "ß", "ﬀ",
    "xn--", "localhost", "example", "com", "0x", "[", "]", ":", "<", "|",
];

#[derive(Arbitrary, Debug)]
enum HostPart {
    Name(Vec<u8>),
    V4([u8; 4]),
    V4Shorthand(Vec<u32>),
    V6 { segments: [u16; 8], full: bool },
}

#[derive(Arbitrary, Debug)]
enum PortPart {
    None,
    Number(u16),
    /// Any digit string, leading zeros and overlong ones included.
    Digits(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    scheme: Scheme,
    host: HostPart,
    port: PortPart,
    trailing_slash: bool,
    /// Which letters to uppercase, bit by bit.
    case: u64,
    /// Anything at all, for the no-panic checks.
    raw: String,
}

fn host_text(h: &HostPart) -> String {
    match h {
        HostPart::Name(ix) => ix
            .iter()
            .map(|&i| PIECES[usize::from(i) % PIECES.len()])
            .collect(),
        HostPart::V4(o) => Ipv4Addr::from(*o).to_string(),
        HostPart::V4Shorthand(parts) => parts
            .iter()
            .take(4)
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join("."),
        HostPart::V6 { segments, full } => {
            let a = Ipv6Addr::from(*segments);
            if *full {
                let s: Vec<String> = segments.iter().map(|s| format!("{s:x}")).collect();
                format!("[{}]", s.join(":"))
            } else {
                format!("[{a}]")
            }
        }
    }
}

fn port_text(p: &PortPart) -> Option<String> {
    match p {
        PortPart::None => None,
        PortPart::Number(n) => Some(n.to_string()),
        PortPart::Digits(d) => Some(
            d.iter()
                .take(8)
                .map(|b| char::from(b'0' + b % 10))
                .collect(),
        ),
    }
}

fn mixed_case(s: &str, mut mask: u64) -> String {
    s.chars()
        .map(|c| {
            let up = mask & 1 == 1;
            mask = mask.rotate_right(1);
            if up {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// A host as `Origin` stores it: lowercase, IPv6 without brackets.
fn url_host(h: Host<&str>) -> String {
    match h {
        Host::Domain(d) => d.to_owned(),
        Host::Ipv4(a) => a.to_string(),
        Host::Ipv6(a) => a.to_string(),
    }
}

fn same_host(ours: &str, url: Host<&str>) -> bool {
    match url {
        Host::Domain(d) => ours == d,
        Host::Ipv4(a) => ours.parse::<Ipv4Addr>() == Ok(a),
        Host::Ipv6(a) => ours.parse::<Ipv6Addr>() == Ok(a),
    }
}

const NAMES: [&str; 4] = ["example.com", "localhost", "127.0.0.1", "::1"];

/// `SameHost` is the default policy: whatever it lets through must name one of the
/// server's hosts to a standard URL parser too, or a page could smuggle a foreign origin
/// past it.
fn policy_sound(origin: &str, authority: &str) {
    let names = NAMES.map(String::from);
    let own = |h: &str| matches_any(&names, h);
    let _ = authority_allowed(authority, own);
    if !OriginPolicy::SameHost.allows(Some(origin), authority, own) {
        return;
    }
    let url = Url::parse(origin).unwrap_or_else(|e| panic!("{origin:?} allowed, url: {e}"));
    let host = url.host().expect("allowed origin without host");
    assert!(
        own(&url_host(host.clone())),
        "{origin:?} allowed but url reads host {host:?}"
    );
    assert!(matches!(url.scheme(), "https" | "http"));
}

fn compare(input: &str, host: &str, authority: &str, lower_scheme: &str) {
    let ours = Origin::parse(input);
    if let Some(o) = &ours {
        assert_eq!(o.host, o.host.to_ascii_lowercase());
        assert_eq!(o.scheme, o.scheme.to_ascii_lowercase());
    }
    if !matches!(lower_scheme, "http" | "https") {
        return;
    }
    let Ok(u) = Url::parse(input) else {
        return;
    };
    // Built without '/', '?', '#', '@' or '\', so url must see a bare origin as well.
    assert!(
        u.username().is_empty()
            && u.password().is_none()
            && u.path() == "/"
            && u.query().is_none()
            && u.fragment().is_none(),
        "{input:?} -> {u}"
    );
    let url_host = u.host().expect("special URLs have a host");
    let url_port = u.port_or_known_default();

    // What a browser would send for this URL.
    let serialized = u.origin().ascii_serialization();
    let o = Origin::parse(&serialized)
        .unwrap_or_else(|| panic!("serialized origin {serialized:?} rejected"));
    assert_eq!(o.scheme, u.scheme());
    assert_eq!(o.port, url_port, "{serialized:?}");
    assert!(
        same_host(&o.host, url_host.clone()),
        "{serialized:?}: {o:?}"
    );

    let Some(o) = ours else {
        // The port as url saw it: after the last ':' unless that is inside IPv6 brackets.
        let port = authority
            .rsplit_once(':')
            .map(|(_, p)| p)
            .filter(|p| !p.contains(']'));
        let odd_port = port.is_some_and(|p| p.is_empty() || p.len() > 5);
        assert!(odd_port, "{input:?} rejected, url reads {u}");
        return;
    };
    assert_eq!(o.scheme, u.scheme());
    assert_eq!(o.port, url_port, "{input:?}");
    let rewritten = match url_host {
        Host::Domain(_) => !host.is_ascii() || host.contains('%'),
        // Only a canonical dotted quad comes out of url as it went in.
        Host::Ipv4(_) => host.parse::<Ipv4Addr>().is_err(),
        // Compared by value: url compresses zeros, ours keeps the text.
        Host::Ipv6(_) => false,
    };
    if !rewritten {
        assert!(
            same_host(&o.host, url_host.clone()),
            "{input:?}: {o:?} vs {url_host:?}"
        );
    }
}

fuzz_target!(|input: Input| {
    let scheme = match &input.scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
        Scheme::Ws => "ws",
        Scheme::Other(s) => s.as_str(),
    };
    let lower_scheme = scheme.to_ascii_lowercase();
    let host = mixed_case(&host_text(&input.host), input.case);
    let port = port_text(&input.port);
    let mut authority = host.clone();
    if let Some(p) = &port {
        authority.push(':');
        authority.push_str(p);
    }
    let mut origin = format!(
        "{}://{authority}",
        mixed_case(scheme, input.case.rotate_left(17))
    );
    if input.trailing_slash {
        origin.push('/');
    }

    if !scheme.contains(['/', '?', '#', '@', ':', '\\']) && !scheme.is_empty() {
        compare(&origin, &host, &authority, &lower_scheme);
    }
    policy_sound(&origin, &authority);

    let raw = input.raw.as_str();
    let _ = Origin::parse(raw);
    let _ = host_matches(raw, &host);
    let _ = host_matches(&host, raw);
    if let Some((h, _)) = split_host_port(raw) {
        assert!(raw.contains(h));
    }
    policy_sound(raw, raw);
});
