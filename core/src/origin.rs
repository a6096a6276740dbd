//! Who may open sessions: the `origin` header a browser sends, checked against the server's
//! own names, and the `:authority` the client asked for.
//!
//! Sans-IO: everything here is a pure function of header values and names, so it can be
//! property-tested and fuzzed.

use std::{fmt, future::Future, net::IpAddr, pin::Pin, sync::Arc};

/// A callback deciding an origin: `(origin, authority) -> allowed`. It runs on the server's
/// runtime while a request waits, so it must return quickly and never block; use
/// [`AsyncOriginCheck`] for a decision that has to wait on something.
pub type OriginCheck = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// An asynchronous origin decision: `(origin, authority) -> future of allowed`. The
/// request waits for it up to [`Limits::request_timeout`](crate::Limits::request_timeout)
/// and is refused with 403 if it takes longer.
pub type AsyncOriginCheck =
    Arc<dyn Fn(String, String) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// Decides whether a request's `origin` header is acceptable. A request without `origin`
/// (a non-browser client) is always allowed: the policy exists to stop other web pages from
/// using a visitor's browser against this server, not to authenticate clients.
#[derive(Clone, Default)]
pub enum OriginPolicy {
    /// The origin's host must be one of the server's own names (see
    /// [`ServerConfig::server_names`](crate::ServerConfig::server_names)), and its scheme
    /// `https`, or `http` for a loopback host (`localhost`, `127.0.0.1`, `::1`), which
    /// browsers treat as a secure context. Any port of that host is trusted.
    #[default]
    SameHost,
    /// Any origin is allowed.
    Any,
    /// Only these origins (`scheme://host[:port]`, compared case-insensitively, default
    /// ports normalized).
    AllowList(Vec<String>),
    /// A callback given the origin and the `:authority`.
    Custom(OriginCheck),
    /// An asynchronous callback given the origin and the `:authority` (for example one
    /// that runs in another language's event loop).
    CustomAsync(AsyncOriginCheck),
}

impl fmt::Debug for OriginPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SameHost => f.write_str("SameHost"),
            Self::Any => f.write_str("Any"),
            Self::AllowList(list) => f.debug_tuple("AllowList").field(list).finish(),
            Self::Custom(_) => f.write_str("Custom(..)"),
            Self::CustomAsync(_) => f.write_str("CustomAsync(..)"),
        }
    }
}

/// An origin split into its parts (RFC 6454 serialization: `scheme://host[:port]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The scheme, lowercased.
    pub scheme: String,
    /// The host, lowercased, without brackets for IPv6.
    pub host: String,
    /// The port, or the scheme's default (80 for http, 443 for https) when absent.
    pub port: Option<u16>,
}

impl Origin {
    /// Parses a serialized origin. `None` for `null`, paths, userinfo, or anything a browser
    /// would not send as an `origin` header.
    pub fn parse(origin: &str) -> Option<Self> {
        let (scheme, rest) = origin.split_once("://")?;
        if scheme.is_empty()
            || !scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return None;
        }
        let scheme = scheme.to_ascii_lowercase();
        // A trailing slash is tolerated; any other path, a query or userinfo is not.
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ', '\\']) {
            return None;
        }
        let (host, port) = split_host_port(rest)?;
        if host.is_empty() {
            return None;
        }
        let port = match port {
            Some(p) => Some(p),
            None => match scheme.as_str() {
                "http" | "ws" => Some(80),
                "https" | "wss" => Some(443),
                _ => None,
            },
        };
        Some(Self {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// Splits `host[:port]` or `[v6]:port`; `None` when the port is not a number or the
/// brackets do not match. The host keeps its case.
pub fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        return match after {
            "" => Some((host, None)),
            p => Some((host, Some(parse_port(p.strip_prefix(':')?)?))),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => {
            if host.contains(':') {
                return None; // an unbracketed IPv6 address
            }
            Some((host, Some(parse_port(port)?)))
        }
        None => Some((authority, None)),
    }
}

fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse().ok()
}

/// Whether `host` is a loopback name a browser treats as potentially trustworthy over
/// plain http.
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `host` matches `name`, where `name` may be a `*.` wildcard for one label.
/// Both are compared case-insensitively; IP addresses compare by value.
pub fn host_matches(name: &str, host: &str) -> bool {
    if let (Ok(a), Ok(b)) = (name.parse::<IpAddr>(), host.parse::<IpAddr>()) {
        return a == b;
    }
    if name == "*" {
        return true;
    }
    if let Some(suffix) = name.strip_prefix("*.") {
        return host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(suffix));
    }
    name.eq_ignore_ascii_case(host)
}

impl OriginPolicy {
    /// Whether a request with this `origin` (if any) and `:authority` is allowed;
    /// `own_host(host)` says whether a host is one of the server's own names.
    /// [`CustomAsync`](Self::CustomAsync) cannot be decided here and answers false; the
    /// server awaits it through [`decide`](Self::decide).
    pub fn allows(
        &self,
        origin: Option<&str>,
        authority: &str,
        own_host: impl Fn(&str) -> bool,
    ) -> bool {
        let Some(origin) = origin else { return true };
        match self {
            Self::Any => true,
            Self::SameHost => {
                let Some(o) = Origin::parse(origin) else {
                    return false;
                };
                let scheme_ok = o.scheme == "https" || (o.scheme == "http" && is_loopback(&o.host));
                scheme_ok && own_host(&o.host)
            }
            Self::AllowList(list) => {
                let Some(o) = Origin::parse(origin) else {
                    return false;
                };
                list.iter()
                    .any(|entry| Origin::parse(entry).as_ref() == Some(&o))
            }
            Self::Custom(f) => f(origin, authority),
            Self::CustomAsync(_) => false,
        }
    }

    /// Like [`allows`](Self::allows), awaiting an asynchronous policy for at most
    /// `deadline` (refusing when it takes longer).
    pub async fn decide(
        &self,
        origin: Option<&str>,
        authority: &str,
        own_host: impl Fn(&str) -> bool,
        deadline: std::time::Duration,
    ) -> bool {
        match (self, origin) {
            (Self::CustomAsync(f), Some(origin)) => {
                let verdict = f(origin.to_owned(), authority.to_owned());
                tokio::time::timeout(deadline, verdict)
                    .await
                    .unwrap_or(false)
            }
            _ => self.allows(origin, authority, own_host),
        }
    }
}

/// Whether `:authority` names this server: `own_host` must accept its host. Ports are not
/// compared, because a load balancer or port mapping may put a different public port in
/// front of the one the server binds.
pub fn authority_allowed(authority: &str, own_host: impl Fn(&str) -> bool) -> bool {
    if authority.contains('@') {
        return false; // userinfo is deprecated and never sent by browsers
    }
    let Some((host, _)) = split_host_port(authority) else {
        return false;
    };
    !host.is_empty() && own_host(host)
}

/// Whether `host` matches any of `names` (see [`host_matches`]).
pub fn matches_any(names: &[String], host: &str) -> bool {
    names.iter().any(|n| host_matches(n, host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> impl Fn(&str) -> bool {
        let list = [
            "localhost",
            "127.0.0.1",
            "::1",
            "example.com",
            "*.apps.example",
        ]
        .map(String::from)
        .to_vec();
        move |h| matches_any(&list, h)
    }

    #[test]
    fn same_host_checks_scheme_and_host_against_server_names() {
        let p = OriginPolicy::SameHost;
        let n = names();
        assert!(p.allows(Some("http://localhost:8080"), "localhost:4433", &n));
        assert!(p.allows(Some("https://Example.com"), "example.com", &n));
        assert!(p.allows(Some("http://[::1]:80"), "[::1]:4433", &n));
        assert!(p.allows(Some("https://a.apps.example"), "a.apps.example", &n));
        // The client's :authority does not widen the policy.
        assert!(!p.allows(Some("https://evil.example"), "evil.example", &n));
        // Plain http only on loopback.
        assert!(!p.allows(Some("http://example.com"), "example.com", &n));
        assert!(!p.allows(Some("null"), "example.com", &n));
        assert!(!p.allows(Some("https://x.y.apps.example"), "example.com", &n));
        assert!(p.allows(None, "example.com", &n));
    }

    #[test]
    fn allow_list_normalizes_default_ports_and_case() {
        let p = OriginPolicy::AllowList(vec!["https://App.example".into()]);
        assert!(p.allows(Some("https://app.example:443"), "api.example", |_| false));
        assert!(p.allows(Some("https://app.example/"), "api.example", |_| false));
        assert!(!p.allows(Some("https://app.example:8443"), "api.example", |_| false));
        assert!(!p.allows(Some("http://app.example"), "api.example", |_| false));
        let p = OriginPolicy::Custom(Arc::new(|o, _| o.ends_with(".trusted")));
        assert!(p.allows(Some("https://a.trusted"), "x", |_| false));
        assert!(!p.allows(Some("https://a.untrusted"), "x", |_| false));
    }

    #[test]
    fn authorities_must_name_the_server() {
        let n = names();
        assert!(authority_allowed("localhost:4433", &n));
        assert!(authority_allowed("EXAMPLE.com", &n));
        assert!(authority_allowed("[::1]:4433", &n));
        assert!(authority_allowed("127.0.0.1", &n));
        assert!(!authority_allowed("evil.example:4433", &n));
        assert!(!authority_allowed("user@localhost", &n));
        assert!(!authority_allowed("localhost:99999", &n));
        assert!(!authority_allowed("::1", &n));
        assert!(authority_allowed("anything", |h| host_matches("*", h)));
    }

    #[test]
    fn origins_parse_like_browsers_serialize_them() {
        let o = Origin::parse("HTTPS://Example.COM").unwrap();
        assert_eq!(
            (o.scheme.as_str(), o.host.as_str(), o.port),
            ("https", "example.com", Some(443))
        );
        assert_eq!(Origin::parse("http://[::1]:8080").unwrap().host, "::1");
        assert!(Origin::parse("https://a.example/path").is_none());
        assert!(Origin::parse("https://u@a.example").is_none());
        assert!(Origin::parse("null").is_none());
        assert!(Origin::parse("https://").is_none());
    }
}
