//! A request head from the wire to a session request: QPACK decoding, then the extended
//! CONNECT checks, then the origin and authority policy the server applies next.
//!
//! Nothing a peer sends may panic, and a request that passes must be one the session layer
//! can rely on: a path rooted at '/', a WebTransport protocol, and only regular fields left
//! in `headers` (pseudo-headers are consumed, never passed on to the application).
#![no_main]

use ferrovia::wire::origin::{authority_allowed, matches_any, OriginPolicy};
use ferrovia::wire::{connect, qpack};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(fields) = qpack::decode_field_section(data, 16 * 1024) else {
        return;
    };
    let Ok(req) = connect::parse_connect(&fields) else {
        return;
    };
    assert!(req.path.starts_with('/'), "path {:?}", req.path);
    assert!(
        req.protocol == "webtransport" || req.protocol == "webtransport-h3",
        "protocol {:?}",
        req.protocol
    );
    assert!(!req.authority.is_empty());
    for (name, _) in &req.headers {
        assert!(!name.starts_with(':'), "pseudo-header {name:?} in headers");
    }
    // Every regular field survives, in order.
    let regular: Vec<_> = fields.iter().filter(|(n, _)| !n.starts_with(':')).collect();
    assert_eq!(regular.len(), req.headers.len());
    assert!(regular.iter().zip(&req.headers).all(|(a, b)| *a == b));
    assert_eq!(
        req.origin.as_deref(),
        fields
            .iter()
            .find(|(n, _)| n == "origin")
            .map(|(_, v)| v.as_str())
    );

    let names = ["localhost", "example.com", "*.apps.example", "::1"].map(String::from);
    let own = |h: &str| matches_any(&names, h);
    let _ = authority_allowed(&req.authority, own);
    let _ = OriginPolicy::SameHost.allows(req.origin.as_deref(), &req.authority, own);
    let _ = OriginPolicy::AllowList(vec!["https://example.com".into()]).allows(
        req.origin.as_deref(),
        &req.authority,
        own,
    );
});
