//! HTTP/3 SETTINGS: what the server advertises so that every browser finds a WebTransport
//! dialect it speaks, and what we learn from the client's.

use bytes::{Buf, BufMut};
use web_transport_proto::{Frame, Setting, Settings, StreamUni, VarInt};

/// Setting identifiers beyond those `web-transport-proto` names.
pub mod id {
    /// RFC 9220: extended CONNECT.
    pub const ENABLE_CONNECT_PROTOCOL: u64 = 0x08;
    /// RFC 9204: QPACK dynamic table capacity (we use 0).
    pub const QPACK_MAX_TABLE_CAPACITY: u64 = 0x01;
    /// RFC 9204: QPACK blocked streams (we use 0).
    pub const QPACK_BLOCKED_STREAMS: u64 = 0x07;
    /// RFC 9297: HTTP datagrams.
    pub const H3_DATAGRAM: u64 = 0x33;
    /// The pre-RFC HTTP datagram setting some browsers still send.
    pub const H3_DATAGRAM_DRAFT04: u64 = 0xffd277;
    /// draft-02: WebTransport enabled (Chrome and Firefox).
    pub const ENABLE_WEBTRANSPORT: u64 = 0x2b603742;
    /// draft-07..12: sessions per connection.
    pub const WEBTRANSPORT_MAX_SESSIONS_DRAFT07: u64 = 0xc671706a;
    /// draft-13/14: sessions per connection (Safari 26.4+ requires it).
    pub const WT_MAX_SESSIONS: u64 = 0x14e9cd29;
    /// draft-13+: initial per-session unidirectional stream credit.
    pub const WT_INITIAL_MAX_STREAMS_UNI: u64 = 0x2b64;
    /// draft-13+: initial per-session bidirectional stream credit.
    pub const WT_INITIAL_MAX_STREAMS_BIDI: u64 = 0x2b65;
    /// draft-13+: initial per-session data credit.
    pub const WT_INITIAL_MAX_DATA: u64 = 0x2b61;
    /// draft-15+: WebTransport enabled.
    pub const WT_ENABLED: u64 = 0x2c7cf000;
}

/// Session-level flow control (draft-13+) is not enforced by this server: QUIC's per-stream
/// and per-connection limits already bound memory. We grant credit large enough that a
/// client never waits on it.
const UNLIMITED_STREAMS: u32 = 1 << 30;
const UNLIMITED_DATA: u64 = 1 << 60;

/// The SETTINGS the server sends on its control stream.
pub(crate) fn server_settings(max_sessions: u32) -> Vec<(u64, u64)> {
    let max = u64::from(max_sessions.max(1));
    let mut list = vec![
        (id::QPACK_MAX_TABLE_CAPACITY, 0),
        (id::QPACK_BLOCKED_STREAMS, 0),
        (id::ENABLE_CONNECT_PROTOCOL, 1),
        (id::H3_DATAGRAM, 1),
        (id::H3_DATAGRAM_DRAFT04, 1),
        (id::ENABLE_WEBTRANSPORT, 1),
        (id::WEBTRANSPORT_MAX_SESSIONS_DRAFT07, max),
        (id::WT_MAX_SESSIONS, max),
        (id::WT_ENABLED, 1),
    ];
    if max > 1 {
        list.extend([
            (id::WT_INITIAL_MAX_STREAMS_UNI, u64::from(UNLIMITED_STREAMS)),
            (
                id::WT_INITIAL_MAX_STREAMS_BIDI,
                u64::from(UNLIMITED_STREAMS),
            ),
            (id::WT_INITIAL_MAX_DATA, UNLIMITED_DATA),
        ]);
    }
    list
}

/// Encodes the opening bytes of our control stream: its type, then one SETTINGS frame.
pub(crate) fn encode_control_stream(settings: &[(u64, u64)], out: &mut impl BufMut) {
    let mut map = Settings::default();
    for &(k, v) in settings {
        if let (Ok(k), Ok(v)) = (VarInt::from_u64(k), VarInt::from_u64(v)) {
            map.insert(Setting(k), v);
        }
    }
    map.encode(out);
}

/// Decodes a control stream's opening bytes (type and SETTINGS frame) into id/value pairs.
/// Used by tests and tools that inspect the server from the wire.
pub fn decode_control_stream(mut buf: &[u8]) -> Option<Vec<(u64, u64)>> {
    if StreamUni(VarInt::decode(&mut buf).ok()?) != StreamUni::CONTROL {
        return None;
    }
    let typ = Frame(VarInt::decode(&mut buf).ok()?);
    if typ != Frame::SETTINGS {
        return None;
    }
    let len = VarInt::decode(&mut buf).ok()?.into_inner() as usize;
    if buf.remaining() < len {
        return None;
    }
    let mut payload = &buf[..len];
    let mut out = Vec::new();
    while payload.has_remaining() {
        let k = VarInt::decode(&mut payload).ok()?.into_inner();
        let v = VarInt::decode(&mut payload).ok()?.into_inner();
        out.push((k, v));
    }
    Some(out)
}

/// What a client's SETTINGS tell us.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerSettings {
    /// The client can send and receive HTTP datagrams.
    pub datagrams: bool,
    /// All raw id/value pairs (GREASE removed).
    pub raw: Vec<(u64, u64)>,
}

impl PeerSettings {
    pub(crate) fn from_payload(mut payload: &[u8]) -> Option<Self> {
        let mut raw = Vec::new();
        while payload.has_remaining() {
            let k = VarInt::decode(&mut payload).ok()?;
            let v = VarInt::decode(&mut payload).ok()?;
            if !Setting(k).is_grease() {
                raw.push((k.into_inner(), v.into_inner()));
            }
        }
        let get = |id| raw.iter().find(|(k, _)| *k == id).map(|(_, v)| *v);
        let datagrams = get(id::H3_DATAGRAM) == Some(1) || get(id::H3_DATAGRAM_DRAFT04) == Some(1);
        Some(Self { datagrams, raw })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safari_and_draft02_settings_are_present() {
        let mut buf = Vec::new();
        encode_control_stream(&server_settings(4), &mut buf);
        let got = decode_control_stream(&buf).unwrap();
        let get = |id| got.iter().find(|(k, _)| *k == id).map(|(_, v)| *v);
        assert_eq!(get(id::WT_MAX_SESSIONS), Some(4));
        assert_eq!(get(id::ENABLE_WEBTRANSPORT), Some(1));
        assert_eq!(get(id::ENABLE_CONNECT_PROTOCOL), Some(1));
        assert_eq!(get(id::H3_DATAGRAM), Some(1));
        assert!(get(id::WT_INITIAL_MAX_DATA).unwrap() > 0);
        let mut one = Vec::new();
        encode_control_stream(&server_settings(1), &mut one);
        let got = decode_control_stream(&one).unwrap();
        assert!(!got.iter().any(|(k, _)| *k == id::WT_INITIAL_MAX_DATA));
    }

    #[test]
    fn peer_settings_detect_datagrams() {
        let mut p = Vec::new();
        for (k, v) in [(id::H3_DATAGRAM_DRAFT04, 1u64), (0x21 + 0x1f * 3, 7)] {
            VarInt::from_u64(k).unwrap().encode(&mut p);
            VarInt::from_u64(v).unwrap().encode(&mut p);
        }
        let s = PeerSettings::from_payload(&p).unwrap();
        assert!(s.datagrams);
        assert_eq!(s.raw.len(), 1, "grease is dropped");
    }
}
