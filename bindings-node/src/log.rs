//! The core's log events, handed to one JavaScript callback (the facade publishes them on
//! the `ferrovia:log` diagnostics channel). Records are queued without blocking the thread
//! that emits them; past 1,024 waiting, new ones are dropped. The callback never keeps the
//! process alive.

use std::sync::OnceLock;

use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use tracing::Level;

/// One log event.
#[napi(object)]
pub struct NativeLogRecord {
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub level: String,
    /// The module that emitted it.
    pub target: String,
    /// The message.
    pub message: String,
    /// The message followed by its fields, as one line.
    pub line: String,
    /// Structured fields as `[name, value]` pairs.
    pub fields: Vec<Vec<String>>,
}

type Callback =
    ThreadsafeFunction<NativeLogRecord, (), NativeLogRecord, napi::Status, false, true, 1024>;

static CALLBACK: OnceLock<Callback> = OnceLock::new();

/// Sends every server event at `level` and above (`'off'` for none) to `callback`; the
/// first call installs the callback, later calls only change the level.
#[napi(catch_unwind)]
pub fn forward_logs(level: String, callback: Callback) -> napi::Result<()> {
    let level = match level.as_str() {
        "off" => None,
        "error" => Some(Level::ERROR),
        "warn" => Some(Level::WARN),
        "info" => Some(Level::INFO),
        "debug" => Some(Level::DEBUG),
        "trace" => Some(Level::TRACE),
        other => {
            return Err(napi::Error::new(
                napi::Status::InvalidArg,
                format!("unknown log level {other:?}"),
            ))
        }
    };
    ferrovia::log::set_log_level(level);
    if CALLBACK.set(callback).is_ok() {
        ferrovia::log::forward_logs(|record| {
            if let Some(callback) = CALLBACK.get() {
                let fields = record
                    .fields
                    .iter()
                    .map(|(k, v)| vec![(*k).to_owned(), v.clone()])
                    .collect();
                let _ = callback.call(
                    NativeLogRecord {
                        level: record.level.as_str().to_ascii_lowercase(),
                        target: record.target.to_owned(),
                        line: record.line(),
                        message: record.message,
                        fields,
                    },
                    ThreadsafeFunctionCallMode::NonBlocking,
                );
            }
        });
    }
    Ok(())
}
