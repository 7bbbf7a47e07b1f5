//! The native half of the `dynamokv` Python package: the extension module `dynamokv._native`.
//!
//! Conversion code only. Options, defaults, validation, deadlines, retries, routing and
//! resolution live in client-core; the Python facade (`python/dynamokv/__init__.py`) gives the
//! sync and asyncio APIs, result types and exception classes their Python shape.

mod awaitable;
mod client;
mod convert;
mod error;
mod inspect;
mod resolver;

use pyo3::prelude::*;

/// The extension module. Everything here is private to the `dynamokv` package.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::Client>()?;
    m.add_class::<resolver::Builtin>()?;
    m.add("LAST_WRITER_WINS", resolver::Builtin::last_writer_wins())?;
    m.add("UNION_JSON", resolver::Builtin::union_json())?;
    m.add_function(wrap_pyfunction!(inspect::key_position, m)?)?;
    m.add_function(wrap_pyfunction!(inspect::partition_of, m)?)?;
    m.add_function(wrap_pyfunction!(inspect::preference_list, m)?)?;
    m.add_function(wrap_pyfunction!(inspect::describe_context, m)?)?;
    m.add_function(wrap_pyfunction!(awaitable::await_deliveries, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
