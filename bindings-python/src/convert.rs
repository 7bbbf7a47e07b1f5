//! Python values to client-core arguments and client-core results to Python values.

use std::time::Duration;

use pyo3::IntoPyObjectExt;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyList, PyMemoryView, PyString, PyTuple};

use dynamokv_client::{ClusterInfo, Context, Error, GetResult, PutItem, Resolved};

use crate::error;

/// A key: any bytes-like object, or a `str`, which is encoded as UTF-8.
pub(crate) struct Key(pub(crate) Vec<u8>);

impl<'a, 'py> FromPyObject<'a, 'py> for Key {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(s) = obj.cast::<PyString>() {
            return Ok(Key(s.to_cow()?.as_bytes().to_vec()));
        }
        bytes_like(obj, "key", "bytes-like or str").map(Key)
    }
}

/// A value or context: `bytes`, `bytearray` or `memoryview`. `str` is refused on purpose:
/// values are bytes, and an implicit encoding would hide bugs.
pub(crate) struct Blob(pub(crate) Vec<u8>);

impl<'a, 'py> FromPyObject<'a, 'py> for Blob {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        bytes_like(obj, "value or context", "bytes-like").map(Blob)
    }
}

impl From<Blob> for Context {
    fn from(blob: Blob) -> Context {
        Context::from_bytes(blob.0)
    }
}

/// A write id: exactly 16 bytes-like bytes, big-endian (the `write_id` of an
/// `OutcomeUnknownError`). Another type is a `TypeError`; another length is refused, before
/// anything is sent, with the `InvalidInputError` (`INVALID_INPUT`) a node gives a malformed
/// write id.
pub(crate) struct WriteId(pub(crate) u128);

impl<'a, 'py> FromPyObject<'a, 'py> for WriteId {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let bytes = bytes_like(obj, "write_id", "bytes-like")?;
        let id: [u8; 16] = bytes.as_slice().try_into().map_err(|_| {
            error::to_py(Error::InvalidInput {
                message: format!(
                    "write_id must be 16 bytes (the write_id of an OutcomeUnknownError, or None for a fresh one), got {} bytes",
                    bytes.len()
                ),
            })
        })?;
        Ok(WriteId(u128::from_be_bytes(id)))
    }
}

/// A write id as the 16 `bytes` Python sees (big-endian, as on the wire).
pub(crate) struct IdBytes(pub(crate) u128);

impl<'py> IntoPyObject<'py> for IdBytes {
    type Target = PyBytes;
    type Output = Bound<'py, PyBytes>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Self::Output> {
        Ok(PyBytes::new(py, &self.0.to_be_bytes()))
    }
}

fn bytes_like(obj: Borrowed<'_, '_, PyAny>, what: &str, expected: &str) -> PyResult<Vec<u8>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(b.to_vec());
    }
    // The buffer protocol is not in the abi3 API before 3.11, so a memoryview is copied out.
    if obj.cast::<PyMemoryView>().is_ok() {
        let bytes = obj.call_method0("tobytes")?;
        return Ok(bytes.cast::<PyBytes>()?.as_bytes().to_vec());
    }
    Err(PyTypeError::new_err(format!(
        "a {what} must be {expected}, not {}",
        obj.get_type().qualname()?
    )))
}

/// Seconds (Python's unit for timeouts) as a `Duration`. Zero passes through so client-core
/// refuses it with its own message.
pub(crate) fn seconds(option: &str, secs: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(secs).map_err(|_| {
        error::invalid_config(format!(
            "invalid client configuration: {option} must be a finite, non-negative number of seconds, got {secs}"
        ))
    })
}

/// A get result as the tuple `(values: list[bytes], context: bytes, timestamps_ms: list[int],
/// tombstone: bool)`; the facade wraps it in `dynamokv.GetResult`.
pub(crate) struct Got(pub(crate) GetResult);

impl<'py> IntoPyObject<'py> for Got {
    type Target = PyTuple;
    type Output = Bound<'py, PyTuple>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Self::Output> {
        let values = PyList::new(py, self.0.values.iter().map(|v| PyBytes::new(py, v)))?;
        let context = PyBytes::new(py, self.0.context.as_bytes());
        let timestamps = PyList::new(py, &self.0.timestamps_ms)?;
        let tombstone = PyBool::new(py, self.0.tombstone).to_owned();
        PyTuple::new(
            py,
            [
                values.into_any(),
                context.into_any(),
                timestamps.into_any(),
                tombstone.into_any(),
            ],
        )
    }
}

/// A resolving get's result as the tuple `(value: bytes | None, context: bytes, siblings: int,
/// written_back: bool)`; the facade wraps it in `dynamokv.Resolved`.
pub(crate) struct Res(pub(crate) Resolved);

impl<'py> IntoPyObject<'py> for Res {
    type Target = PyTuple;
    type Output = Bound<'py, PyTuple>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Self::Output> {
        let r = self.0;
        let value = r.value.map(|v| PyBytes::new(py, &v));
        let context = PyBytes::new(py, r.context.as_bytes());
        (value, context, r.siblings, r.written_back).into_pyobject(py)
    }
}

/// A batch's results, one per input in order: each the converted result or, for an item that
/// failed, the exception instance (as `asyncio.gather(..., return_exceptions=True)` gives).
pub(crate) struct Each<T>(pub(crate) Vec<Result<T, PyErr>>);

impl<'py, T> IntoPyObject<'py> for Each<T>
where
    T: IntoPyObject<'py>,
    PyErr: From<T::Error>,
{
    type Target = PyList;
    type Output = Bound<'py, PyList>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Self::Output> {
        let list = PyList::empty(py);
        for item in self.0 {
            match item {
                Ok(value) => list.append(value.into_bound_py_any(py)?)?,
                Err(err) => list.append(err.into_value(py))?,
            }
        }
        Ok(list)
    }
}

/// One `put_many` item: a `(key, value)` or `(key, value, context)` tuple (context may be
/// `None`).
pub(crate) struct Item(pub(crate) PutItem);

impl<'a, 'py> FromPyObject<'a, 'py> for Item {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let shape = || -> PyResult<PyErr> {
            Ok(PyTypeError::new_err(format!(
                "a put_many item must be a (key, value) or (key, value, context) tuple, not {}",
                describe_item(obj)?
            )))
        };
        let Ok(tuple) = obj.cast::<PyTuple>() else {
            return Err(shape()?);
        };
        let (key, value, context) = match tuple.len() {
            2 => (tuple.get_item(0)?, tuple.get_item(1)?, None),
            3 => (
                tuple.get_item(0)?,
                tuple.get_item(1)?,
                Some(tuple.get_item(2)?),
            ),
            _ => return Err(shape()?),
        };
        let context = match context {
            Some(c) if !c.is_none() => Some(Context::from(c.extract::<Blob>()?)),
            _ => None,
        };
        Ok(Item(PutItem {
            key: key.extract::<Key>()?.0,
            value: value.extract::<Blob>()?.0,
            context,
        }))
    }
}

fn describe_item(obj: Borrowed<'_, '_, PyAny>) -> PyResult<String> {
    Ok(match obj.cast::<PyTuple>() {
        Ok(t) => format!("a tuple of {}", t.len()),
        Err(_) => obj.get_type().qualname()?.to_string(),
    })
}

/// A context as `bytes`.
pub(crate) struct Ctx(pub(crate) Context);

impl<'py> IntoPyObject<'py> for Ctx {
    type Target = PyBytes;
    type Output = Bound<'py, PyBytes>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Self::Output> {
        Ok(PyBytes::new(py, self.0.as_bytes()))
    }
}

/// Cluster information as a dict (members as a list of dicts); the facade wraps it in
/// `dynamokv.ClusterInfo`.
pub(crate) struct Info(pub(crate) ClusterInfo);

impl<'py> IntoPyObject<'py> for Info {
    type Target = PyDict;
    type Output = Bound<'py, PyDict>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Self::Output> {
        let info = self.0;
        let members = PyList::empty(py);
        for m in info.members {
            let member = PyDict::new(py);
            member.set_item("id", m.id)?;
            member.set_item("address", m.address)?;
            member.set_item("zone", m.zone)?;
            member.set_item("weight", m.weight)?;
            members.append(member)?;
        }
        let dict = PyDict::new(py);
        dict.set_item("cluster_name", info.cluster_name)?;
        dict.set_item("partitions", info.partitions)?;
        dict.set_item("n", info.n)?;
        dict.set_item("r", info.r)?;
        dict.set_item("w", info.w)?;
        dict.set_item("members", members)?;
        dict.set_item("answered_by", info.answered_by)?;
        dict.set_item("ring_version", info.ring_version)?;
        Ok(dict)
    }
}
