//! The client's address and scheme as a TLS-terminating proxy reports them (`Forwarded`,
//! RFC 7239, or `X-Forwarded-For` and `X-Forwarded-Proto`), for the plain-TCP mode that
//! only runs behind such a proxy. Read only from peers in `trusted_proxies`.
//!
//! The list is read from its end: the last entry is the one the proxy in front of Ferrovia
//! appended, and entries naming other trusted proxies are hops of the same chain. The
//! first untrusted address from the end is the client; everything before it came from the
//! client and may be forged.

use std::net::IpAddr;

/// What the proxy in front reported about a request.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Forwarded {
    /// The client's address; `None` when the headers name none.
    pub(crate) client: Option<IpAddr>,
    /// The scheme the client used, when the proxy named `https` or `http`.
    pub(crate) https: Option<bool>,
}

/// Reads `Forwarded` or, without it, `X-Forwarded-For` and `X-Forwarded-Proto`, skipping
/// from the end the hops that `trusted` accepts.
pub(crate) fn read<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    trusted: impl Fn(IpAddr) -> bool,
) -> Forwarded {
    // A repeated field is one list (RFC 9110 §5.3): the lines are joined in order.
    let mut forwarded: Vec<&str> = Vec::new();
    let mut x_forwarded_for: Vec<&str> = Vec::new();
    let mut x_forwarded_proto = None;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("forwarded") {
            forwarded.extend(value.split(','));
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            x_forwarded_for.extend(value.split(','));
        } else if name.eq_ignore_ascii_case("x-forwarded-proto") {
            x_forwarded_proto = Some(value);
        }
    }
    let elements = |list: Vec<&'a str>| {
        list.into_iter()
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect::<Vec<_>>()
    };
    let forwarded = elements(forwarded);
    if !forwarded.is_empty() {
        let https = forwarded
            .last()
            .and_then(|e| parameter(e, "proto"))
            .and_then(scheme);
        let client = walk(
            forwarded
                .iter()
                .map(|e| parameter(e, "for").and_then(node_ip)),
            &trusted,
        );
        return Forwarded { client, https };
    }
    let hops = elements(x_forwarded_for);
    Forwarded {
        client: walk(hops.into_iter().map(node_ip), &trusted),
        https: x_forwarded_proto
            .and_then(|v| v.rsplit(',').next())
            .and_then(scheme),
    }
}

/// The first hop from the end that is not a trusted proxy; if every hop is one, the
/// earliest. A hop that names no address ends the walk: nothing before it can be placed.
fn walk(
    hops: impl DoubleEndedIterator<Item = Option<IpAddr>>,
    trusted: &impl Fn(IpAddr) -> bool,
) -> Option<IpAddr> {
    let mut earliest = None;
    for hop in hops.rev() {
        let ip = hop?;
        if !trusted(ip) {
            return Some(ip);
        }
        earliest = Some(ip);
    }
    earliest
}

fn scheme(value: &str) -> Option<bool> {
    let v = value.trim().trim_matches('"');
    if v.eq_ignore_ascii_case("https") {
        Some(true)
    } else if v.eq_ignore_ascii_case("http") {
        Some(false)
    } else {
        None
    }
}

/// One parameter of a `Forwarded` element (`for=192.0.2.60;proto=https`), unquoted.
fn parameter<'a>(element: &'a str, name: &str) -> Option<&'a str> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"'))
    })
}

/// An address with or without a port: `192.0.2.60`, `192.0.2.60:47011`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:4711`. Obfuscated and `unknown` nodes are not addresses.
fn node_ip(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    let (host, port) = node.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    /// Only the proxy in front (10.0.0.1) and loopback are trusted in these tests.
    fn client<'a>(h: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<IpAddr> {
        read(h, |ip| {
            ip.is_loopback() || ip == "10.0.0.1".parse::<IpAddr>().unwrap()
        })
        .client
    }

    #[test]
    fn the_last_untrusted_hop_of_x_forwarded_for() {
        let h = [("x-forwarded-for", "203.0.113.7, 198.51.100.2")];
        assert_eq!(client(h), ip("198.51.100.2"));
        assert_eq!(
            client([("X-Forwarded-For", " 2001:db8::1 ")]),
            ip("2001:db8::1")
        );
        // Two lines are one list.
        let h = [
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", "192.0.2.1"),
        ];
        assert_eq!(client(h), ip("192.0.2.1"));
        // A second trusted proxy in the chain is skipped; what the client claimed is not
        // believed.
        let h = [("x-forwarded-for", "6.6.6.6, 192.0.2.9, 10.0.0.1")];
        assert_eq!(client(h), ip("192.0.2.9"));
        // Only trusted hops: the earliest of them.
        assert_eq!(
            client([("x-forwarded-for", "10.0.0.1, 127.0.0.1")]),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn forwarded_wins_and_takes_for_with_ports_and_brackets() {
        let h = [
            ("x-forwarded-for", "192.0.2.1"),
            (
                "forwarded",
                r#"for=203.0.113.7, for="[2001:db8::1]:4711";proto=https"#,
            ),
        ];
        assert_eq!(client(h), ip("2001:db8::1"));
        assert_eq!(
            client([("forwarded", "proto=https;For=192.0.2.60:47011")]),
            ip("192.0.2.60")
        );
        assert_eq!(
            client([("forwarded", "for=192.0.2.60, for=10.0.0.1")]),
            ip("192.0.2.60")
        );
    }

    #[test]
    fn the_scheme_from_the_last_hop() {
        let trusted = |_: IpAddr| true;
        let r = read(
            [(
                "forwarded",
                "for=192.0.2.1;proto=http, for=10.0.0.1;proto=https",
            )],
            trusted,
        );
        assert_eq!(r.https, Some(true));
        let r = read(
            [
                ("x-forwarded-for", "192.0.2.1"),
                ("x-forwarded-proto", "https"),
            ],
            trusted,
        );
        assert_eq!(r.https, Some(true));
        let r = read([("x-forwarded-proto", "HTTP")], trusted);
        assert_eq!(r.https, Some(false));
        assert_eq!(read([("x-forwarded-proto", "gopher")], trusted).https, None);
        assert_eq!(read([("host", "x")], trusted), Forwarded::default());
    }

    #[test]
    fn no_address_means_none() {
        assert_eq!(client([("host", "example.com")]), None);
        assert_eq!(client([("forwarded", "for=unknown")]), None);
        assert_eq!(client([("forwarded", "for=_hidden")]), None);
        assert_eq!(client([("x-forwarded-for", "not an address")]), None);
        assert_eq!(client([("x-forwarded-for", " , ")]), None);
        // An unplaceable hop after the client's claim: the claim is not believed.
        assert_eq!(client([("forwarded", "for=192.0.2.1, for=unknown")]), None);
    }
}
