//! Core errors as JavaScript errors.
//!
//! napi-rs only lets a native error carry a message, so the message is a JSON record
//! prefixed with `ferrovia:`; the facade parses it back into a `WebTransportError` with
//! `code`, `source`, `streamErrorCode` and, for session errors, `closeCode`/`reason`.

use ferrovia::{
    BodyError, CloseInfo, RequestError, ServerError, SessionError, StreamError, WebSocketError,
};
use serde_json::{json, Map, Value};

/// Prefix the facade looks for.
const PREFIX: &str = "ferrovia:";

fn make(code: &str, message: String, extra: Value) -> napi::Error {
    let mut record = Map::new();
    record.insert("code".into(), Value::from(code));
    record.insert("message".into(), Value::from(message));
    if let Value::Object(extra) = extra {
        record.extend(extra);
    }
    napi::Error::new(
        napi::Status::GenericFailure,
        format!("{PREFIX}{}", Value::Object(record)),
    )
}

fn close_fields(info: &CloseInfo) -> Value {
    json!({ "closeCode": info.code, "reason": info.reason, "source": "session" })
}

/// A bad argument that slipped past the facade's checks.
pub(crate) fn invalid(message: impl Into<String>) -> napi::Error {
    make("ERR_INVALID_ARGUMENT", message.into(), Value::Null)
}

/// The request was already accepted or rejected.
pub(crate) fn request_answered() -> napi::Error {
    make(
        "ERR_REQUEST_ANSWERED",
        "the request was already accepted or rejected".into(),
        Value::Null,
    )
}

/// The stream was already handed off (for example, aborted while an operation was
/// pending).
pub(crate) fn stream_closed() -> napi::Error {
    from_stream(StreamError::ClosedStream)
}

pub(crate) fn from_server(e: ServerError) -> napi::Error {
    make(e.code(), e.to_string(), Value::Null)
}

pub(crate) fn from_request(e: RequestError) -> napi::Error {
    let extra = match &e {
        RequestError::InvalidStatus(s) => json!({ "status": s }),
        _ => Value::Null,
    };
    // The core names its Rust methods; a Node caller needs this package's names.
    let message = match &e {
        RequestError::WrongTransport(ferrovia::Transport::WebSocket) => {
            "this is a plain WebSocket request: use acceptWebSocket() for it".to_owned()
        }
        RequestError::WrongTransport(t) => {
            format!(
                "this is a {} request: use accept() for it, not acceptWebSocket()",
                t.as_str()
            )
        }
        _ => e.to_string(),
    };
    make(e.code(), message, extra)
}

pub(crate) fn from_websocket(e: WebSocketError) -> napi::Error {
    let extra = match &e {
        WebSocketError::Closed(c) => json!({ "closeCode": c.code, "reason": c.reason }),
        WebSocketError::TooLarge { size, max } => json!({ "size": size, "max": max }),
        WebSocketError::InvalidCloseCode(c) => json!({ "closeCode": c }),
        _ => Value::Null,
    };
    make(e.code(), e.to_string(), extra)
}

pub(crate) fn from_session(e: SessionError) -> napi::Error {
    let extra = match &e {
        SessionError::Closed(info) => close_fields(info),
        SessionError::DatagramTooLarge { size, max } => {
            json!({ "size": size, "maxDatagramSize": max, "source": "session" })
        }
        _ => json!({ "source": "session" }),
    };
    make(e.code(), e.to_string(), extra)
}

pub(crate) fn from_stream(e: StreamError) -> napi::Error {
    let extra = match &e {
        StreamError::Reset { code } | StreamError::Stopped { code } => {
            json!({ "streamErrorCode": code, "source": "stream" })
        }
        StreamError::SessionClosed(info) => close_fields(info),
        StreamError::MessageTooLarge { size, max } => json!({ "size": size, "max": max }),
        StreamError::MessageTruncated { received, expected } => {
            json!({ "received": received, "expected": expected })
        }
        _ => json!({ "source": "stream" }),
    };
    make(e.code(), e.to_string(), extra)
}

pub(crate) fn from_body(e: BodyError) -> napi::Error {
    let extra = match &e {
        BodyError::TooLarge { limit } => json!({ "limit": limit }),
        _ => Value::Null,
    };
    make(e.code(), e.to_string(), extra)
}
