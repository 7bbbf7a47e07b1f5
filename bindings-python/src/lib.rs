//! The native half of the `dynamokv` Python package: the extension module `dynamokv._native`.
//!
//! Conversion code only. Options, defaults, validation, deadlines and retries live in
//! client-core; the Python facade (`python/dynamokv/__init__.py`) gives the sync and asyncio
//! APIs, result types and exception classes their Python shape.

mod client;
mod convert;
mod error;

use pyo3::prelude::*;

/// The extension module. Everything here is private to the `dynamokv` package.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::Client>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
