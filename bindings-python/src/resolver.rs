//! Resolvers for the resolving get and batch get: client-core's built-ins behind native marker
//! objects (`dynamokv.resolvers.last_writer_wins`, `union_json`: no Python round trip), and
//! Python functions wrapped as client-core custom resolvers.
//!
//! A Python resolver runs on a blocking thread of the shared tokio runtime, which attaches to
//! the interpreter (takes the GIL) only while the function runs. When it raises (or returns
//! something that is not bytes-like: a `TypeError`), its exception is kept aside under the
//! key and client-core is told the resolver failed, so it writes nothing; the
//! `Error::ResolverFailed` that comes back is then raised as that original exception object.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyMemoryView, PyType};

use dynamokv_client::{Error, Resolver, ResolverError, Siblings};

use crate::error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    LastWriterWins,
    UnionJson,
}

/// A built-in resolver of client-core, run natively. The two instances are
/// `dynamokv.resolvers.last_writer_wins` and `dynamokv.resolvers.union_json`.
#[pyclass(frozen, module = "dynamokv._native", name = "BuiltinResolver")]
pub(crate) struct Builtin {
    kind: Kind,
}

impl Builtin {
    pub(crate) fn last_writer_wins() -> Builtin {
        Builtin {
            kind: Kind::LastWriterWins,
        }
    }

    pub(crate) fn union_json() -> Builtin {
        Builtin {
            kind: Kind::UnionJson,
        }
    }

    fn resolver(&self) -> Resolver {
        match self.kind {
            Kind::LastWriterWins => Resolver::LastWriterWins,
            Kind::UnionJson => Resolver::UnionJson,
        }
    }
}

#[pymethods]
impl Builtin {
    /// `"last_writer_wins"` or `"union_json"`.
    #[getter]
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::LastWriterWins => "last_writer_wins",
            Kind::UnionJson => "union_json",
        }
    }

    fn __repr__(&self) -> String {
        format!("dynamokv.resolvers.{}", self.name())
    }

    /// Pickled (and copied) as the module constant it is.
    fn __reduce__(&self) -> &'static str {
        match self.kind {
            Kind::LastWriterWins => "LAST_WRITER_WINS",
            Kind::UnionJson => "UNION_JSON",
        }
    }
}

/// The exceptions Python resolvers raised, by key, until the call's error is mapped.
type Raised = Arc<Mutex<HashMap<Vec<u8>, Vec<PyErr>>>>;

/// The resolver of one call.
pub(crate) struct CallResolver {
    pub(crate) resolver: Resolver,
    raised: Option<Raised>,
}

impl CallResolver {
    /// A built-in marker, or any callable taking the values (a `dynamokv.resolvers.Siblings`,
    /// a list of bytes) and returning the resolved bytes.
    pub(crate) fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<CallResolver> {
        if let Ok(builtin) = obj.cast::<Builtin>() {
            return Ok(CallResolver {
                resolver: builtin.get().resolver(),
                raised: None,
            });
        }
        if !obj.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "a resolver must be dynamokv.resolvers.last_writer_wins, \
                 dynamokv.resolvers.union_json or a function of the values returning bytes, not {}",
                obj.get_type().qualname()?
            )));
        }
        let raised = Raised::default();
        Ok(CallResolver {
            resolver: custom(obj.clone().unbind(), Arc::clone(&raised)),
            raised: Some(raised),
        })
    }

    /// The Python exception for the error of a resolving call of `key`: the resolver's own
    /// exception when it raised one for that key, else the mapped client-core error.
    pub(crate) fn error(&self, key: &[u8], err: Error) -> PyErr {
        if let (Error::ResolverFailed { .. }, Some(raised)) = (&err, &self.raised) {
            let mut raised = raised.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(own) = raised.get_mut(key).and_then(Vec::pop) {
                return own;
            }
        }
        error::to_py(err)
    }
}

fn custom(function: Py<PyAny>, raised: Raised) -> Resolver {
    let function = Arc::new(function);
    Resolver::from_async(move |siblings: Siblings| {
        let function = Arc::clone(&function);
        let raised = Arc::clone(&raised);
        async move {
            let key = siblings.key.clone();
            let ran = pyo3_async_runtimes::tokio::get_runtime()
                .spawn_blocking(move || Python::attach(|py| call(py, &function, siblings)))
                .await;
            match ran {
                Ok(Ok(value)) => Ok(value),
                Ok(Err((own, message))) => {
                    raised
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(key)
                        .or_default()
                        .push(own);
                    Err(ResolverError::new(message))
                }
                Err(e) => Err(ResolverError::new(format!(
                    "the Python resolver did not run: {e}"
                ))),
            }
        }
    })
}

static SIBLINGS: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// Calls the Python resolver; on failure, its exception and a message for client-core.
fn call(py: Python<'_>, function: &Py<PyAny>, s: Siblings) -> Result<Vec<u8>, (PyErr, String)> {
    let run = || -> PyResult<Vec<u8>> {
        let values = PyList::new(py, s.values.iter().map(|v| PyBytes::new(py, v)))?;
        let meta = PyDict::new(py);
        meta.set_item("key", PyBytes::new(py, &s.key))?;
        meta.set_item("timestamps_ms", &s.timestamps_ms)?;
        meta.set_item("tombstone", s.tombstone)?;
        let siblings = SIBLINGS
            .import(py, "dynamokv.resolvers", "Siblings")?
            .call((values,), Some(&meta))?;
        let out = function.bind(py).call1((siblings,))?;
        resolved_bytes(&out)
    };
    run().map_err(|e| {
        let message = format!("the Python resolver raised {e}");
        (e, message)
    })
}

/// A resolver's result: bytes-like, else a `TypeError` saying what it returned.
fn resolved_bytes(out: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = out.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    if let Ok(b) = out.cast::<PyByteArray>() {
        return Ok(b.to_vec());
    }
    if out.cast::<PyMemoryView>().is_ok() {
        let bytes = out.call_method0("tobytes")?;
        return Ok(bytes.cast::<PyBytes>()?.as_bytes().to_vec());
    }
    let type_name = out.get_type().qualname()?;
    if out.hasattr("__await__")? {
        // Not awaited: close a coroutine so Python does not warn that it never was.
        if out.hasattr("close")? {
            out.call_method0("close")?;
        }
        return Err(PyTypeError::new_err(format!(
            "the resolver returned an awaitable ({type_name}): a resolver must be a plain \
             function returning the resolved value as bytes; nothing was written"
        )));
    }
    Err(PyTypeError::new_err(format!(
        "the resolver returned {type_name}: a resolver must return the resolved value as bytes \
         (or bytearray or memoryview); nothing was written"
    )))
}
