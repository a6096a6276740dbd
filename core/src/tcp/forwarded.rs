//! The client's address as a TLS-terminating proxy reports it (`Forwarded`, RFC 7239, or
//! `X-Forwarded-For`), for the plain-TCP mode that only runs behind such a proxy.
//!
//! Only the last hop counts: it is the one the proxy in front of Ferrovia appended, while
//! every earlier entry came from the client and may be forged.

use std::net::IpAddr;

/// The client address named by the last hop of `Forwarded` or, without it, of
/// `X-Forwarded-For`; `None` when neither names an IP address.
pub(crate) fn client_ip<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<IpAddr> {
    let mut forwarded = None;
    let mut x_forwarded_for = None;
    for (name, value) in headers {
        // A repeated field is one list (RFC 9110 §5.3): the last line holds the last hop.
        if name.eq_ignore_ascii_case("forwarded") {
            forwarded = Some(value);
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            x_forwarded_for = Some(value);
        }
    }
    if let Some(value) = forwarded {
        return last_element(value).and_then(forwarded_for);
    }
    last_element(x_forwarded_for?).and_then(node_ip)
}

fn last_element(list: &str) -> Option<&str> {
    list.rsplit(',').map(str::trim).find(|e| !e.is_empty())
}

/// The `for=` parameter of one `Forwarded` element (`for=192.0.2.60;proto=https`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("for")
            .then(|| node_ip(v.trim().trim_matches('"')))
            .flatten()
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

    #[test]
    fn the_last_hop_of_x_forwarded_for() {
        let h = [("x-forwarded-for", "203.0.113.7, 198.51.100.2")];
        assert_eq!(client_ip(h), ip("198.51.100.2"));
        assert_eq!(
            client_ip([("X-Forwarded-For", " 2001:db8::1 ")]),
            ip("2001:db8::1")
        );
        // Two lines are one list.
        let h = [
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", "192.0.2.1"),
        ];
        assert_eq!(client_ip(h), ip("192.0.2.1"));
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
        assert_eq!(client_ip(h), ip("2001:db8::1"));
        assert_eq!(
            client_ip([("forwarded", "proto=https;For=192.0.2.60:47011")]),
            ip("192.0.2.60")
        );
    }

    #[test]
    fn no_address_means_none() {
        assert_eq!(client_ip([("host", "example.com")]), None);
        assert_eq!(client_ip([("forwarded", "for=unknown")]), None);
        assert_eq!(client_ip([("forwarded", "for=_hidden")]), None);
        assert_eq!(client_ip([("x-forwarded-for", "not an address")]), None);
        assert_eq!(client_ip([("x-forwarded-for", " , ")]), None);
    }
}
