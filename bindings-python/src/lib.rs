//! `ferrovia._ferrovia`: the native half of the Python package.
//!
//! Each class wraps one core type and only translates values and errors; the asyncio
//! semantics (buffered readers, iteration, context managers) live in the pure-Python facade
//! `ferrovia/__init__.py`. Every awaitable returned here is an `asyncio.Future` driven by
//! one tokio runtime per process, so the interpreter is never held while the network is
//! awaited, and cancelling the future drops the Rust operation.

use std::{
    future::Future,
    panic::{catch_unwind, AssertUnwindSafe},
    pin::{pin, Pin},
    task::{Context, Poll, Waker},
};

use pyo3::prelude::*;

mod errors;
mod exchange;
mod fleet;
mod handoff;
mod log;
mod message;
mod server;
mod session;
mod stream;
mod upgrade;
mod websocket;

use errors::{Failure, Outcome};

/// The process-wide runtime the core runs on.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
}

/// Native operations whose awaitable has not settled yet.
static IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts an operation in flight for as long as it lives.
struct InFlight;

impl InFlight {
    fn new() -> Self {
        IN_FLIGHT.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Called at interpreter exit: gives operations that are settling (a server just closed
/// ends every pending accept and read) up to `timeout` seconds to hand their results to
/// Python, without the interpreter held. A runtime thread that reaches into Python after
/// finalization has begun would crash the process on its way out.
#[pyfunction]
fn _quiesce(py: Python<'_>, timeout: f64) {
    py.detach(|| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64(timeout);
        while IN_FLIGHT.load(std::sync::atomic::Ordering::Acquire) > 0
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // The result is handed over just after the operation ends.
        std::thread::sleep(std::time::Duration::from_millis(20));
    });
}

/// Turns a core operation into an `asyncio.Future` of the running loop.
pub(crate) fn awaitable<'py, F, T>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Result<T, Failure>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let in_flight = InFlight::new();
    pyo3_async_runtimes::tokio::future_into_py(py, async move {
        let _in_flight = in_flight;
        match CatchPanic(fut).await {
            Ok(result) => Ok(Outcome(result)),
            Err(message) => Err(pyo3::panic::PanicException::new_err(message)),
        }
    })
}

/// Resolves to the panic message instead of unwinding into the runtime, so a bug surfaces
/// as the same `PanicException` a synchronous call raises, with its message intact.
struct CatchPanic<F>(F);

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: the inner future is never moved out of the pinned wrapper.
        let inner = unsafe { self.map_unchecked_mut(|s| &mut s.0) };
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a Rust panic without a message".into());
                Poll::Ready(Err(message))
            }
        }
    }
}

/// Polls a future once, without the interpreter held: `Some` if it finished at once.
/// The fast paths use it so that data already buffered does not cost a round trip through
/// the event loop. Only cancel-safe operations may be tried this way.
pub(crate) fn try_now<F>(py: Python<'_>, fut: F) -> Option<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    py.detach(|| {
        let _guard = runtime().enter();
        let mut fut = pin!(fut);
        let mut cx = Context::from_waker(Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    })
}

/// Panics on purpose, at once or inside a future, so the tests can check that a panic
/// becomes an exception and leaves the process (and its servers) running.
#[pyfunction]
#[pyo3(signature = (in_future = false))]
fn _panic_for_tests(py: Python<'_>, in_future: bool) -> PyResult<Bound<'_, PyAny>> {
    if in_future {
        return awaitable::<_, ()>(py, async {
            panic!("deliberate panic inside a future");
        });
    }
    panic!("deliberate panic in a synchronous call");
}

#[pymodule]
fn _ferrovia(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // The bits of `Session.ready`, the core's `Readiness`: the facade reads them from here.
    for (name, bit) in [
        ("READY_BI", ferrovia::Readiness::BI),
        ("READY_UNI", ferrovia::Readiness::UNI),
        ("READY_DATAGRAM", ferrovia::Readiness::DATAGRAM),
        ("READY_CLOSED", ferrovia::Readiness::CLOSED),
        ("READY_DRAINING", ferrovia::Readiness::DRAINING),
    ] {
        m.add(name, bit.bits())?;
    }
    log::install();
    m.add_function(wrap_pyfunction!(log::_set_log_level, m)?)?;
    m.add_function(wrap_pyfunction!(log::_stop_logging, m)?)?;
    m.add_function(wrap_pyfunction!(_quiesce, m)?)?;
    m.add_class::<server::Certificate>()?;
    m.add_class::<server::Server>()?;
    m.add_class::<fleet::ReusePortGroup>()?;
    m.add_class::<server::Route>()?;
    m.add_class::<server::SessionRequest>()?;
    m.add_class::<session::Session>()?;
    m.add_class::<stream::Reader>()?;
    m.add_class::<stream::Writer>()?;
    m.add_class::<message::MessageDecoder>()?;
    m.add_function(wrap_pyfunction!(message::encode_message_frame, m)?)?;
    m.add_class::<handoff::Handoff>()?;
    m.add_class::<websocket::WebSocket>()?;
    m.add_class::<upgrade::Upgraded>()?;
    m.add_class::<upgrade::MessagePipe>()?;
    m.add_class::<exchange::HttpRequests>()?;
    m.add_class::<exchange::HttpExchange>()?;
    #[cfg(unix)]
    m.add_class::<exchange::HttpInbox>()?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    Ok(())
}
