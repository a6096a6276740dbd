//! A client's SETTINGS frame payload (RFC 9114 §7.2.4).
//!
//! Parsing never panics, and what it accepts obeys the rules it exists to enforce: no
//! identifier twice (a duplicate is a connection error), none of HTTP/2's 0x02..=0x05, and
//! GREASE identifiers dropped. The flags it derives must match the raw pairs it returns.
#![no_main]

use ferrovia::wire::settings::{id, PeerSettings};
use libfuzzer_sys::fuzz_target;

/// RFC 9114 §7.2.4.1: 0x1f * N + 0x21.
fn is_grease(k: u64) -> bool {
    k >= 0x21 && (k - 0x21).is_multiple_of(0x1f)
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = PeerSettings::from_payload(data) else {
        return;
    };
    let mut ids: Vec<u64> = s.raw.iter().map(|&(k, _)| k).collect();
    ids.sort_unstable();
    for pair in ids.windows(2) {
        assert_ne!(pair[0], pair[1], "duplicate setting {:#x}", pair[0]);
    }
    for &k in &ids {
        assert!(
            !(0x02..=0x05).contains(&k),
            "HTTP/2 setting {k:#x} accepted"
        );
        assert!(!is_grease(k), "GREASE setting {k:#x} kept");
        assert!(k < 1 << 62);
    }
    assert!(s.raw.len() <= data.len() / 2);

    let get = |want| s.raw.iter().find(|&&(k, _)| k == want).map(|&(_, v)| v);
    assert_eq!(
        s.datagrams,
        get(id::H3_DATAGRAM) == Some(1) || get(id::H3_DATAGRAM_DRAFT04) == Some(1)
    );
    let draft13 = [
        id::WT_MAX_SESSIONS,
        id::WT_ENABLED,
        id::WT_INITIAL_MAX_DATA,
        id::WT_INITIAL_MAX_STREAMS_BIDI,
        id::WT_INITIAL_MAX_STREAMS_UNI,
    ];
    assert_eq!(
        s.draft13_or_later,
        draft13.iter().any(|&k| get(k).is_some())
    );
});
