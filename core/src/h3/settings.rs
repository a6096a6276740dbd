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

/// The SETTINGS the server sends on its control stream.
///
/// Session-level flow control (draft-13 and later) is not implemented, so the server offers
/// one session per connection to those dialects (`WT_MAX_SESSIONS` = 1, no
/// `WT_INITIAL_MAX_*`): under every draft from 13 to 16 that leaves flow control off, and
/// QUIC's own stream and connection credit bound what a client can send. draft-02 clients
/// (Chrome, Firefox) have no session flow control at all; they may pool up to
/// `Limits::max_sessions_per_connection` sessions on one connection.
pub(crate) fn server_settings() -> Vec<(u64, u64)> {
    vec![
        (id::QPACK_MAX_TABLE_CAPACITY, 0),
        (id::QPACK_BLOCKED_STREAMS, 0),
        (id::ENABLE_CONNECT_PROTOCOL, 1),
        (id::H3_DATAGRAM, 1),
        (id::H3_DATAGRAM_DRAFT04, 1),
        (id::ENABLE_WEBTRANSPORT, 1),
        (id::WEBTRANSPORT_MAX_SESSIONS_DRAFT07, 1),
        (id::WT_MAX_SESSIONS, 1),
        (id::WT_ENABLED, 1),
    ]
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

/// A client's SETTINGS frame broke RFC 9114 §7.2.4.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// The payload ends inside an identifier or value.
    #[error("truncated SETTINGS payload")]
    Truncated,
    /// The same identifier twice.
    #[error("setting {0:#x} sent twice")]
    Duplicate(u64),
    /// An identifier reserved from HTTP/2 (0x02..=0x05).
    #[error("HTTP/2 setting {0:#x} in HTTP/3 SETTINGS")]
    Http2Reserved(u64),
    /// More settings than any real client sends.
    #[error("too many settings")]
    TooMany,
}

/// What a client's SETTINGS tell us.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerSettings {
    /// The client can send and receive HTTP datagrams.
    pub datagrams: bool,
    /// The client announced a WebTransport draft from 13 on (`WT_MAX_SESSIONS`,
    /// `WT_ENABLED` or a `WT_INITIAL_*` setting), whose session flow control the server
    /// opts out of by allowing it one session per connection.
    pub draft13_or_later: bool,
    /// All raw id/value pairs (GREASE removed).
    pub raw: Vec<(u64, u64)>,
}

/// The most settings a client may send; browsers send about ten.
const MAX_SETTINGS: usize = 256;

impl PeerSettings {
    /// Parses a SETTINGS frame payload.
    pub fn from_payload(mut payload: &[u8]) -> Result<Self, SettingsError> {
        let mut raw = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while payload.has_remaining() {
            let k = VarInt::decode(&mut payload).map_err(|_| SettingsError::Truncated)?;
            let v = VarInt::decode(&mut payload).map_err(|_| SettingsError::Truncated)?;
            let (k, v) = (k.into_inner(), v.into_inner());
            if (0x02..=0x05).contains(&k) {
                return Err(SettingsError::Http2Reserved(k));
            }
            if !seen.insert(k) {
                return Err(SettingsError::Duplicate(k));
            }
            if seen.len() > MAX_SETTINGS {
                return Err(SettingsError::TooMany);
            }
            if !Setting(VarInt::from_u64(k).unwrap_or(VarInt::MAX)).is_grease() {
                raw.push((k, v));
            }
        }
        let get = |id| raw.iter().find(|(k, _)| *k == id).map(|(_, v)| *v);
        let datagrams = get(id::H3_DATAGRAM) == Some(1) || get(id::H3_DATAGRAM_DRAFT04) == Some(1);
        let draft13_or_later = [
            id::WT_MAX_SESSIONS,
            id::WT_ENABLED,
            id::WT_INITIAL_MAX_DATA,
            id::WT_INITIAL_MAX_STREAMS_BIDI,
            id::WT_INITIAL_MAX_STREAMS_UNI,
        ]
        .into_iter()
        .any(|i| get(i).is_some());
        Ok(Self {
            datagrams,
            draft13_or_later,
            raw,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safari_and_draft02_settings_are_present() {
        let mut buf = Vec::new();
        encode_control_stream(&server_settings(), &mut buf);
        let got = decode_control_stream(&buf).unwrap();
        let get = |id| got.iter().find(|(k, _)| *k == id).map(|(_, v)| *v);
        assert_eq!(get(id::WT_MAX_SESSIONS), Some(1));
        assert_eq!(get(id::ENABLE_WEBTRANSPORT), Some(1));
        assert_eq!(get(id::ENABLE_CONNECT_PROTOCOL), Some(1));
        assert_eq!(get(id::H3_DATAGRAM), Some(1));
        // No session flow control is offered: no WT_INITIAL_* at all.
        assert_eq!(get(id::WT_INITIAL_MAX_DATA), None);
        assert_eq!(get(id::WT_INITIAL_MAX_STREAMS_BIDI), None);
    }

    #[test]
    fn peer_settings_detect_datagrams() {
        let mut p = Vec::new();
        for (k, v) in [(id::H3_DATAGRAM_DRAFT04, 1u64), (0x21 + 0x1f * 3, 7)] {
            VarInt::from_u64(k).unwrap().encode(&mut p);
            VarInt::from_u64(v).unwrap().encode(&mut p);
        }
        let s = PeerSettings::from_payload(&p).unwrap();
        assert!(s.datagrams && !s.draft13_or_later);
        assert_eq!(s.raw.len(), 1, "grease is dropped");
        let mut dup = p.clone();
        VarInt::from_u64(id::H3_DATAGRAM_DRAFT04)
            .unwrap()
            .encode(&mut dup);
        VarInt::from_u64(0).unwrap().encode(&mut dup);
        assert_eq!(
            PeerSettings::from_payload(&dup),
            Err(SettingsError::Duplicate(id::H3_DATAGRAM_DRAFT04))
        );
        assert_eq!(
            PeerSettings::from_payload(&[0x04, 0x01]),
            Err(SettingsError::Http2Reserved(4))
        );
        assert_eq!(
            PeerSettings::from_payload(&[0x40]),
            Err(SettingsError::Truncated)
        );
        let mut safari = Vec::new();
        VarInt::from_u64(id::WT_MAX_SESSIONS)
            .unwrap()
            .encode(&mut safari);
        VarInt::from_u64(1).unwrap().encode(&mut safari);
        assert!(
            PeerSettings::from_payload(&safari)
                .unwrap()
                .draft13_or_later
        );
    }
}
