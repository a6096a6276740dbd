//! Hands the server's `tracing` events to a host's own logging: the Python package sends
//! them to `logging.getLogger("ferrovia")`, the Node package to a `diagnostics_channel`.
//! Rust applications install any `tracing` subscriber instead and never need this.

use std::sync::{
    atomic::{AtomicU8, Ordering},
    OnceLock,
};

use tracing::{
    field::{Field, Visit},
    span, Event, Level, Metadata, Subscriber,
};
use tracing_core::Interest;

/// One event, as a host logs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Its level.
    pub level: Level,
    /// The module that emitted it (`ferrovia::tcp`, ...).
    pub target: &'static str,
    /// The event's message.
    pub message: String,
    /// Its structured fields (`session_id`, `remote`, `status`, `reason`, ...), in order.
    pub fields: Vec<(&'static str, String)>,
}

impl LogRecord {
    /// The message followed by its fields, `message (key=value key=value)`, for a host
    /// whose log lines are plain text.
    pub fn line(&self) -> String {
        if self.fields.is_empty() {
            return self.message.clone();
        }
        let fields: Vec<String> = self
            .fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("{} ({})", self.message, fields.join(" "))
    }
}

type Sink = Box<dyn Fn(LogRecord) + Send + Sync>;

/// 0 off, 1 error, 2 warn, 3 info, 4 debug, 5 trace.
static MAX_LEVEL: AtomicU8 = AtomicU8::new(2);

fn rank(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

/// Sets the most verbose level forwarded (`None`: nothing); WARN until set. Takes effect
/// for every event from then on.
pub fn set_log_level(level: Option<Level>) {
    MAX_LEVEL.store(level.as_ref().map_or(0, rank), Ordering::Relaxed);
}

/// Installs a process-wide `tracing` subscriber that passes every server event at or above
/// the level of [`set_log_level`] to `sink`, on the thread that emitted it (so the sink
/// must not block: queue the record and log it elsewhere). Returns false, and changes
/// nothing, if a subscriber is already installed.
pub fn forward_logs(sink: impl Fn(LogRecord) + Send + Sync + 'static) -> bool {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    if INSTALLED.set(()).is_err() {
        return false;
    }
    tracing::subscriber::set_global_default(Forwarder {
        sink: Box::new(sink),
    })
    .is_ok()
}

struct Forwarder {
    sink: Sink,
}

struct Fields {
    message: String,
    fields: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields.push((field.name(), value.to_owned()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields.push((field.name(), format!("{value:?}")));
        }
    }
}

impl Subscriber for Forwarder {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // The level can change at any time: ask `enabled` on every event.
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        rank(metadata.level()) <= MAX_LEVEL.load(Ordering::Relaxed)
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        // The server emits no spans; any from elsewhere share one ID and are ignored.
        span::Id::from_u64(1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields {
            message: String::new(),
            fields: Vec::new(),
        };
        event.record(&mut fields);
        let metadata = event.metadata();
        (self.sink)(LogRecord {
            level: *metadata.level(),
            target: metadata.target(),
            message: fields.message,
            fields: fields.fields,
        });
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_message_fields_and_a_plain_line() {
        let records = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = records.clone();
        let subscriber = Forwarder {
            sink: Box::new(move |r| seen.lock().unwrap().push(r)),
        };
        tracing::subscriber::with_default(subscriber, || {
            set_log_level(Some(Level::INFO));
            tracing::info!(status = 404u16, reason = "no route", "request refused");
            tracing::debug!("not forwarded at INFO");
            set_log_level(None);
            tracing::error!("not forwarded when off");
            set_log_level(Some(Level::WARN));
        });
        let records = records.lock().unwrap();
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0].level, Level::INFO);
        assert_eq!(records[0].message, "request refused");
        assert_eq!(
            records[0].fields,
            vec![
                ("status", "404".to_owned()),
                ("reason", "no route".to_owned())
            ]
        );
        assert_eq!(
            records[0].line(),
            "request refused (status=404 reason=no route)"
        );
    }
}
