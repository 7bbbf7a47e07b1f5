//! Asyncio awaitables for client-core calls, and a clean interpreter exit.
//!
//! A call runs on the shared tokio runtime; its result is handed to the asyncio future on a
//! blocking thread that attaches to the interpreter and calls `loop.call_soon_threadsafe`. That
//! call releases the GIL while it writes to the loop's wake-up pipe, so the main thread may
//! resume, finish `asyncio.run` and start finalizing the interpreter while the delivering
//! thread still holds references it must drop; CPython then ends that thread mid-way and the
//! drops crash the process (this is what `pyo3_async_runtimes::future_into_py` did, about one
//! exit in ten once client-driven reads left background work running). So deliveries in flight
//! are counted, and an `atexit` handler ([`await_deliveries`], registered by the package) waits,
//! with the GIL released, until none is left before finalization begins.
//!
//! Cancelling the asyncio task does not abort the client-core call: a write that was sent may
//! be applied whether or not the caller still waits for it, and its result is dropped.

use std::future::Future;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use pyo3::IntoPyObjectExt;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// Deliveries of results to asyncio futures under way.
static DELIVERING: Mutex<usize> = Mutex::new(0);
static DELIVERED: Condvar = Condvar::new();

/// `_complete(future, ok, value)`: sets the future's result or exception unless it is done
/// (cancelled) already.
static COMPLETE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn complete(py: Python<'_>) -> PyResult<&Py<PyAny>> {
    COMPLETE.get_or_try_init(py, || {
        let module = PyModule::from_code(
            py,
            c"def _complete(future, ok, value):\n    if not future.done():\n        (future.set_result if ok else future.set_exception)(value)\n",
            c"dynamokv/_awaitable.py",
            c"dynamokv._awaitable",
        )?;
        Ok(module.getattr("_complete")?.unbind())
    })
}

fn deliveries() -> std::sync::MutexGuard<'static, usize> {
    DELIVERING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts `call` on the shared runtime and returns an asyncio future of its result, bound to
/// the running event loop.
pub(crate) fn awaitable_py<'py, T, F>(py: Python<'py>, call: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let future = event_loop.call_method0("create_future")?;
    let complete = complete(py)?.clone_ref(py);
    let (event_loop, target) = (event_loop.unbind(), future.clone().unbind());
    let runtime = pyo3_async_runtimes::tokio::get_runtime();
    runtime.spawn(async move {
        let result = call.await;
        *deliveries() += 1;
        let delivered = tokio::task::spawn_blocking(move || {
            Python::attach(|py| {
                let (ok, value) =
                    match result.and_then(|v| v.into_bound_py_any(py).map(Bound::unbind)) {
                        Ok(v) => (true, v),
                        Err(e) => (false, e.into_value(py).into_any()),
                    };
                // A closed loop (the program moved on) refuses: nobody waits for the result.
                let _ = event_loop.call_method1(
                    py,
                    "call_soon_threadsafe",
                    (complete, target, ok, value),
                );
                drop(event_loop);
            });
        })
        .await;
        // A delivery that panicked has nobody to report to; the count must still go down.
        drop(delivered);
        *deliveries() -= 1;
        DELIVERED.notify_all();
    });
    Ok(future)
}

/// Waits until no result is being handed to asyncio (at most `timeout` seconds), with the GIL
/// released. Registered with `atexit` by the package. Returns whether none is left.
#[pyfunction]
pub(crate) fn await_deliveries(py: Python<'_>, timeout: f64) -> bool {
    let until = Instant::now() + Duration::from_secs_f64(timeout.max(0.0));
    py.detach(|| {
        let mut n = deliveries();
        while *n > 0 {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            n = DELIVERED
                .wait_timeout(n, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    })
}
