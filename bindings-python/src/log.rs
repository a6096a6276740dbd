//! The core's log events on the `ferrovia` Python logger. Events are queued on the thread
//! that emits them (never blocking the network) and logged by one thread of their own
//! that takes the GIL; past 1,024 waiting, new ones are dropped.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    mpsc,
};

use ferrovia::log::LogRecord;
use pyo3::{prelude::*, types::PyDict};
use tracing::Level;

/// Set at interpreter exit: records still queued are dropped rather than logged into a
/// finalizing interpreter.
static STOPPED: AtomicBool = AtomicBool::new(false);

pub(crate) fn install() {
    let (tx, rx) = mpsc::sync_channel::<LogRecord>(1024);
    if !ferrovia::log::forward_logs(move |record| {
        let _ = tx.try_send(record);
    }) {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("ferrovia-log".into())
        .spawn(move || {
            for record in rx {
                if STOPPED.load(Ordering::Acquire) {
                    break;
                }
                Python::attach(|py| {
                    if let Err(e) = emit(py, &record) {
                        // A broken handler must not take the next records with it.
                        e.print(py);
                    }
                });
            }
        });
}

fn emit(py: Python<'_>, record: &LogRecord) -> PyResult<()> {
    let logger = py
        .import("logging")?
        .call_method1("getLogger", ("ferrovia",))?;
    let levelno = match record.level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG => 10,
        Level::TRACE => 5,
    };
    let fields = PyDict::new(py);
    for (k, v) in &record.fields {
        fields.set_item(*k, v)?;
    }
    let extra = PyDict::new(py);
    extra.set_item("ferrovia_target", record.target)?;
    extra.set_item("ferrovia_fields", fields)?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("extra", extra)?;
    logger.call_method("log", (levelno, "%s", record.line()), Some(&kwargs))?;
    Ok(())
}

/// Forwards events at Python's `levelno` and above (WARNING until called).
#[pyfunction]
pub(crate) fn _set_log_level(levelno: i32) {
    let level = match levelno {
        i32::MIN..=5 => Some(Level::TRACE),
        6..=10 => Some(Level::DEBUG),
        11..=20 => Some(Level::INFO),
        21..=30 => Some(Level::WARN),
        31..=40 => Some(Level::ERROR),
        // The server has no event above ERROR.
        _ => None,
    };
    ferrovia::log::set_log_level(level);
}

/// Stops logging (at interpreter exit).
#[pyfunction]
pub(crate) fn _stop_logging() {
    STOPPED.store(true, Ordering::Release);
    ferrovia::log::set_log_level(None);
}
