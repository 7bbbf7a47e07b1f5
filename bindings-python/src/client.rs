//! `dynamokv._native.Client`: one client-core `Client` with a blocking and an awaitable form of
//! each call. The facade's `Client` uses the blocking ones and `AsyncClient` the `*_async` ones.
//!
//! Both run on the one multi-thread tokio runtime of the process (pyo3-async-runtimes',
//! created on first use). Blocking calls release the GIL while they wait.

use std::future::Future;

use pyo3::prelude::*;

use dynamokv_client::{Context, Coordination, Error, Limits, PutItem, WriteOptions};

use crate::convert::{Blob, Ctx, Each, Got, Info, Item, Key, Res, WriteId, seconds};
use crate::error;
use crate::resolver::CallResolver;

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
    run(py, call).map_err(error::to_py)
}

/// Runs a future to completion on the shared runtime, without the GIL.
fn run<T, F>(py: Python<'_>, call: F) -> T
where
    F: Future<Output = T> + Send,
    T: Send,
{
    py.detach(|| pyo3_async_runtimes::tokio::get_runtime().block_on(call))
}

/// `put_many`'s items as client-core takes them.
fn put_items(items: Vec<Item>) -> Vec<PutItem> {
    items.into_iter().map(|i| i.0).collect()
}

/// A batch's client-core results, each error mapped to its Python exception.
fn each<T, U>(results: Vec<Result<T, Error>>, convert: impl Fn(T) -> U) -> Each<U> {
    Each(
        results
            .into_iter()
            .map(|r| r.map(&convert).map_err(error::to_py))
            .collect(),
    )
}

/// A resolving batch's results: a Python resolver's own exception for the key it raised on.
fn each_resolved(
    results: Vec<Result<dynamokv_client::Resolved, Error>>,
    keys: &[Vec<u8>],
    resolver: &CallResolver,
) -> Each<Res> {
    Each(
        results
            .into_iter()
            .zip(keys)
            .map(|(r, key)| r.map(Res).map_err(|e| resolver.error(key, e)))
            .collect(),
    )
}

/// Starts a future on the shared runtime and returns an asyncio awaitable for it; the future
/// maps its own errors.
fn awaitable_py<'py, T, F>(py: Python<'py>, call: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    crate::awaitable::awaitable_py(py, call)
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
    crate::awaitable::awaitable_py(py, async move { call.await.map_err(error::to_py) })
}

#[pymethods]
impl Client {
    /// Options left as `None` keep client-core's defaults.
    #[new]
    #[pyo3(signature = (
        seeds, *, connect_timeout=None, request_timeout=None, attempt_timeout=None,
        max_retries=None, max_key_bytes=None, max_value_bytes=None, coordination=None,
        ring_refresh_interval=None, hedge_after=None, batch_concurrency=None,
        ca_cert=None, client_cert=None, client_key=None, token=None, tls_reload_interval=None,
    ))]
    #[allow(clippy::too_many_arguments)] // One per client option.
    fn new(
        seeds: Vec<String>,
        connect_timeout: Option<f64>,
        request_timeout: Option<f64>,
        attempt_timeout: Option<f64>,
        max_retries: Option<u32>,
        max_key_bytes: Option<usize>,
        max_value_bytes: Option<usize>,
        coordination: Option<&str>,
        ring_refresh_interval: Option<f64>,
        hedge_after: Option<f64>,
        batch_concurrency: Option<usize>,
        ca_cert: Option<String>,
        client_cert: Option<String>,
        client_key: Option<String>,
        token: Option<String>,
        tls_reload_interval: Option<f64>,
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
        if let Some(who) = coordination {
            builder = builder.coordination(Coordination::parse(who).map_err(error::to_py)?);
        }
        if let Some(secs) = ring_refresh_interval {
            builder = builder.ring_refresh_interval(seconds("ring_refresh_interval", secs)?);
        }
        if let Some(secs) = hedge_after {
            builder = builder.hedge_after(Some(seconds("hedge_after", secs)?));
        }
        if let Some(concurrency) = batch_concurrency {
            builder = builder.batch_concurrency(concurrency);
        }
        if let Some(pem) = ca_cert {
            builder = builder.ca_cert(pem);
        }
        if let Some(pem) = client_cert {
            builder = builder.client_cert(pem);
        }
        if let Some(pem) = client_key {
            builder = builder.client_key(pem);
        }
        if let Some(token) = token {
            builder = builder.token(token);
        }
        if let Some(secs) = tls_reload_interval {
            builder = builder.tls_reload_interval(seconds("tls_reload_interval", secs)?);
        }
        let inner = builder.build().map_err(error::to_py)?;
        Ok(Client { inner })
    }

    /// `"client"` or `"server"`: who coordinates this client's requests.
    #[getter]
    fn coordination(&self) -> &'static str {
        self.inner.coordination().as_str()
    }

    /// The version of the ring the client routes by; `None` before its first pull (and always
    /// when coordination is `"server"`). Local state only: no I/O.
    fn ring_version(&self) -> Option<u64> {
        self.inner.ring_version()
    }

    /// Pulls the ring now; returns its version.
    fn refresh_ring(&self, py: Python<'_>) -> PyResult<u64> {
        block_on(py, self.inner.refresh_ring())
    }

    fn refresh_ring_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let client = self.inner.clone();
        awaitable(py, async move { client.refresh_ring().await })
    }

    #[pyo3(signature = (key, resolver, r=None, write_back=true))]
    fn get_resolved(
        &self,
        py: Python<'_>,
        key: Key,
        resolver: &Bound<'_, PyAny>,
        r: Option<u32>,
        write_back: bool,
    ) -> PyResult<Res> {
        let resolver = CallResolver::from_py(resolver)?;
        let got = run(py, async {
            let call = self
                .inner
                .get_resolved(&key.0, &resolver.resolver, r, write_back);
            call.await
        });
        got.map(Res).map_err(|e| resolver.error(&key.0, e))
    }

    #[pyo3(signature = (key, resolver, r=None, write_back=true))]
    fn get_resolved_async<'py>(
        &self,
        py: Python<'py>,
        key: Key,
        resolver: &Bound<'py, PyAny>,
        r: Option<u32>,
        write_back: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let resolver = CallResolver::from_py(resolver)?;
        let client = self.inner.clone();
        awaitable_py(py, async move {
            let got = client
                .get_resolved(&key.0, &resolver.resolver, r, write_back)
                .await;
            got.map(Res).map_err(|e| resolver.error(&key.0, e))
        })
    }

    #[pyo3(signature = (keys, r=None))]
    fn get_many(&self, py: Python<'_>, keys: Vec<Key>, r: Option<u32>) -> Each<Got> {
        let keys: Vec<Vec<u8>> = keys.into_iter().map(|k| k.0).collect();
        each(run(py, self.inner.get_many(&keys, r)), Got)
    }

    #[pyo3(signature = (keys, r=None))]
    fn get_many_async<'py>(
        &self,
        py: Python<'py>,
        keys: Vec<Key>,
        r: Option<u32>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let keys: Vec<Vec<u8>> = keys.into_iter().map(|k| k.0).collect();
        let client = self.inner.clone();
        awaitable_py(
            py,
            async move { Ok(each(client.get_many(&keys, r).await, Got)) },
        )
    }

    #[pyo3(signature = (keys, resolver, r=None, write_back=true))]
    fn get_many_resolved(
        &self,
        py: Python<'_>,
        keys: Vec<Key>,
        resolver: &Bound<'_, PyAny>,
        r: Option<u32>,
        write_back: bool,
    ) -> PyResult<Each<Res>> {
        let resolver = CallResolver::from_py(resolver)?;
        let keys: Vec<Vec<u8>> = keys.into_iter().map(|k| k.0).collect();
        let results = run(py, async {
            let call = self
                .inner
                .get_many_resolved(&keys, &resolver.resolver, r, write_back);
            call.await
        });
        Ok(each_resolved(results, &keys, &resolver))
    }

    #[pyo3(signature = (keys, resolver, r=None, write_back=true))]
    fn get_many_resolved_async<'py>(
        &self,
        py: Python<'py>,
        keys: Vec<Key>,
        resolver: &Bound<'py, PyAny>,
        r: Option<u32>,
        write_back: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let resolver = CallResolver::from_py(resolver)?;
        let keys: Vec<Vec<u8>> = keys.into_iter().map(|k| k.0).collect();
        let client = self.inner.clone();
        awaitable_py(py, async move {
            let results = client
                .get_many_resolved(&keys, &resolver.resolver, r, write_back)
                .await;
            Ok(each_resolved(results, &keys, &resolver))
        })
    }

    #[pyo3(signature = (items, w=None, *, sync_replicas=None))]
    fn put_many(
        &self,
        py: Python<'_>,
        items: Vec<Item>,
        w: Option<u32>,
        sync_replicas: Option<u32>,
    ) -> Each<Ctx> {
        let options = write_options(w, None, sync_replicas);
        each(run(py, self.inner.put_many(put_items(items), options)), Ctx)
    }

    #[pyo3(signature = (items, w=None, *, sync_replicas=None))]
    fn put_many_async<'py>(
        &self,
        py: Python<'py>,
        items: Vec<Item>,
        w: Option<u32>,
        sync_replicas: Option<u32>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let options = write_options(w, None, sync_replicas);
        let items = put_items(items);
        let client = self.inner.clone();
        awaitable_py(py, async move {
            Ok(each(client.put_many(items, options).await, Ctx))
        })
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
