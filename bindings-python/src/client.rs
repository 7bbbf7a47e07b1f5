//! `dynamokv._native.Client`: one client-core `Client` with a blocking and an awaitable form of
//! each call. The facade's `Client` uses the blocking ones and `AsyncClient` the `*_async` ones.
//!
//! Both run on the one multi-thread tokio runtime of the process (pyo3-async-runtimes',
//! created on first use). Blocking calls release the GIL while they wait.

use std::future::Future;

use pyo3::prelude::*;

use dynamokv_client::{Context, Error, Limits, WriteOptions};

use crate::convert::{Blob, Ctx, Got, Info, Key, WriteId, seconds};
use crate::error;

/// A DynamoKV client. Cheap to share between threads; calls share connections.
#[pyclass(frozen, module = "dynamokv._native")]
pub(crate) struct Client {
    inner: dynamokv_client::Client,
}

/// Runs a client-core call to completion on the shared runtime, without the GIL.
fn block_on<T, F>(py: Python<'_>, call: F) -> PyResult<T>
where
    F: Future<Output = Result<T, Error>> + Send,
    T: Send,
{
    py.detach(|| pyo3_async_runtimes::tokio::get_runtime().block_on(call))
        .map_err(error::to_py)
}

/// A put's or delete's per-call options.
fn write_options(
    w: Option<u32>,
    write_id: Option<WriteId>,
    sync_replicas: Option<u32>,
) -> WriteOptions {
    WriteOptions {
        sync_replicas,
        w,
        write_id: write_id.map(|id| id.0),
    }
}

/// Starts a client-core call on the shared runtime and returns an asyncio awaitable for it.
fn awaitable<'py, T, F>(py: Python<'py>, call: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Result<T, Error>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    pyo3_async_runtimes::tokio::future_into_py(py, async move { call.await.map_err(error::to_py) })
}

#[pymethods]
impl Client {
    /// Options left as `None` keep client-core's defaults.
    #[new]
    #[pyo3(signature = (
        seeds, *, connect_timeout=None, request_timeout=None, attempt_timeout=None,
        max_retries=None, max_key_bytes=None, max_value_bytes=None,
    ))]
    fn new(
        seeds: Vec<String>,
        connect_timeout: Option<f64>,
        request_timeout: Option<f64>,
        attempt_timeout: Option<f64>,
        max_retries: Option<u32>,
        max_key_bytes: Option<usize>,
        max_value_bytes: Option<usize>,
    ) -> PyResult<Self> {
        let mut builder = dynamokv_client::Client::builder(seeds);
        if let Some(secs) = connect_timeout {
            builder = builder.connect_timeout(seconds("connect_timeout", secs)?);
        }
        if let Some(secs) = request_timeout {
            builder = builder.request_timeout(seconds("request_timeout", secs)?);
        }
        if let Some(secs) = attempt_timeout {
            builder = builder.attempt_timeout(seconds("attempt_timeout", secs)?);
        }
        if let Some(retries) = max_retries {
            builder = builder.max_retries(retries);
        }
        if max_key_bytes.is_some() || max_value_bytes.is_some() {
            let defaults = Limits::default();
            builder = builder.limits(Limits {
                max_key_bytes: max_key_bytes.unwrap_or(defaults.max_key_bytes),
                max_value_bytes: max_value_bytes.unwrap_or(defaults.max_value_bytes),
            });
        }
        let inner = builder.build().map_err(error::to_py)?;
        Ok(Client { inner })
    }

    /// `(max_key_bytes, max_value_bytes)` this client checks before sending.
    #[getter]
    fn limits(&self) -> (usize, usize) {
        let limits = self.inner.limits();
        (limits.max_key_bytes, limits.max_value_bytes)
    }

    /// The client's own view of its seed nodes as `(address, up)` tuples, one per seed in
    /// order; the facade wraps each in `dynamokv.NodeHealth`. Local state only: no I/O.
    fn node_health(&self) -> Vec<(String, bool)> {
        self.inner
            .node_health()
            .into_iter()
            .map(|h| (h.address, h.up))
            .collect()
    }

    #[pyo3(signature = (key, r=None))]
    fn get(&self, py: Python<'_>, key: Key, r: Option<u32>) -> PyResult<Got> {
        block_on(py, async {
            self.inner.get_with_quorum(key.0, r).await.map(Got)
        })
    }

    #[pyo3(signature = (key, value, context=None, w=None, *, write_id=None, sync_replicas=None))]
    #[allow(clippy::too_many_arguments)] // One per argument of the Python method.
    fn put(
        &self,
        py: Python<'_>,
        key: Key,
        value: Blob,
        context: Option<Blob>,
        w: Option<u32>,
        write_id: Option<WriteId>,
        sync_replicas: Option<u32>,
    ) -> PyResult<Ctx> {
        let context = context.map(Context::from);
        let options = write_options(w, write_id, sync_replicas);
        block_on(py, async {
            let put = self
                .inner
                .put_with_options(key.0, value.0, context.as_ref(), options);
            put.await.map(Ctx)
        })
    }

    #[pyo3(signature = (key, context, w=None, *, write_id=None, sync_replicas=None))]
    fn delete(
        &self,
        py: Python<'_>,
        key: Key,
        context: Blob,
        w: Option<u32>,
        write_id: Option<WriteId>,
        sync_replicas: Option<u32>,
    ) -> PyResult<Ctx> {
        let context = Context::from(context);
        let options = write_options(w, write_id, sync_replicas);
        block_on(py, async {
            let delete = self.inner.delete_with_options(key.0, &context, options);
            delete.await.map(Ctx)
        })
    }

    fn cluster_info(&self, py: Python<'_>) -> PyResult<Info> {
        block_on(py, async { self.inner.cluster_info().await.map(Info) })
    }

    #[pyo3(signature = (key, r=None))]
    fn get_async<'py>(
        &self,
        py: Python<'py>,
        key: Key,
        r: Option<u32>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let client = self.inner.clone();
        awaitable(py, async move {
            client.get_with_quorum(key.0, r).await.map(Got)
        })
    }

    #[pyo3(signature = (key, value, context=None, w=None, *, write_id=None, sync_replicas=None))]
    #[allow(clippy::too_many_arguments)] // One per argument of the Python method.
    fn put_async<'py>(
        &self,
        py: Python<'py>,
        key: Key,
        value: Blob,
        context: Option<Blob>,
        w: Option<u32>,
        write_id: Option<WriteId>,
        sync_replicas: Option<u32>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let client = self.inner.clone();
        let context = context.map(Context::from);
        let options = write_options(w, write_id, sync_replicas);
        awaitable(py, async move {
            let put = client.put_with_options(key.0, value.0, context.as_ref(), options);
            put.await.map(Ctx)
        })
    }

    #[pyo3(signature = (key, context, w=None, *, write_id=None, sync_replicas=None))]
    fn delete_async<'py>(
        &self,
        py: Python<'py>,
        key: Key,
        context: Blob,
        w: Option<u32>,
        write_id: Option<WriteId>,
        sync_replicas: Option<u32>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let client = self.inner.clone();
        let context = Context::from(context);
        let options = write_options(w, write_id, sync_replicas);
        awaitable(py, async move {
            let delete = client.delete_with_options(key.0, &context, options);
            delete.await.map(Ctx)
        })
    }

    fn cluster_info_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let client = self.inner.clone();
        awaitable(py, async move { client.cluster_info().await.map(Info) })
    }
}
