//! The Node.js binding of the DynamoKV client: conversion code only.
//!
//! Everything a client does (option defaults, validation, deadlines, retries) lives in
//! `dynamokv-client`; this crate converts JavaScript values to its types and back, and maps its
//! errors in `error.rs`. `index.js` is the facade JavaScript users import: it normalises keys and
//! values to `Buffer`s and rethrows errors as `DynamoKVError`.
//!
//! Resolvers (`resolver.rs`): the built-ins are client-core's own variants; a JavaScript
//! function is called back through a napi `ThreadsafeFunction` wrapped in
//! `Resolver::from_async`. Batches return one `{ value | error }` per item, the error as the same
//! JSON payload a thrown error carries. `inspect.rs` wraps client-core's conformance helpers.
//!
//! Async methods become Promises and run on napi-rs's tokio runtime (feature `async`): one
//! multi-thread runtime per process, created lazily on the first call.

mod error;
// Public so that its `#[napi]` items count as used when napi registers nothing (`cfg(test)`).
pub mod inspect;
mod resolver;

use std::time::Duration;

use napi::Result;
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use dynamokv_client::{
    Client, ClientBuilder, Context, Coordination, Error as CoreError, Limits, PutItem, Resolved,
    WriteOptions,
};

use crate::error::{invalid_config, invalid_quorum, payload, to_napi, whole_number, write_id};
use crate::resolver::{JsResolver, resolver};

/// Client options; any left out take client-core's defaults.
#[napi(object)]
#[derive(Debug, Default)]
pub struct ClientOptions {
    pub connect_timeout_ms: Option<f64>,
    pub request_timeout_ms: Option<f64>,
    pub attempt_timeout_ms: Option<f64>,
    pub max_retries: Option<f64>,
    pub max_key_bytes: Option<f64>,
    pub max_value_bytes: Option<f64>,
    /// `"client"` or `"server"`.
    pub coordination: Option<String>,
    pub ring_refresh_interval_ms: Option<f64>,
    pub hedge_after_ms: Option<f64>,
    pub batch_concurrency: Option<f64>,
    /// The cluster's CA certificate: PEM text or a path. Connects over TLS.
    pub ca_cert: Option<String>,
    /// A client certificate and its key: PEM text or paths.
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    /// A token from `dynamokv admin user add` (sent only over TLS).
    pub token: Option<String>,
    /// How soon certificate files given as paths are read again when the client connects.
    pub tls_reload_interval_ms: Option<f64>,
}

/// The values of a key (siblings when concurrent writes happened) and one context covering them.
#[napi(object)]
#[allow(missing_debug_implementations)] // napi's `Buffer` has no `Debug`.
pub struct GetResult {
    pub values: Vec<Buffer>,
    pub context: Buffer,
    /// The write time of each value (milliseconds since the epoch), in the order of `values`.
    pub timestamps_ms: Vec<f64>,
    /// Whether a delete is concurrent with the values.
    pub tombstone: bool,
}

impl From<dynamokv_client::GetResult> for GetResult {
    fn from(got: dynamokv_client::GetResult) -> Self {
        GetResult {
            values: got.values.into_iter().map(Buffer::from).collect(),
            context: context_buffer(&got.context),
            // Milliseconds since the epoch stay exact in a double until the year 287396.
            timestamps_ms: got.timestamps_ms.into_iter().map(|t| t as f64).collect(),
            tombstone: got.tombstone,
        }
    }
}

/// A key's value resolved to one (a get with a resolver).
#[napi(object)]
#[allow(missing_debug_implementations)] // napi's `Buffer` has no `Debug`.
pub struct ResolvedResult {
    /// None when the key has no value; `index.js` makes it null.
    pub value: Option<Buffer>,
    pub context: Buffer,
    pub siblings: u32,
    pub written_back: bool,
}

impl From<Resolved> for ResolvedResult {
    fn from(r: Resolved) -> Self {
        ResolvedResult {
            value: r.value.map(Buffer::from),
            context: context_buffer(&r.context),
            siblings: u32::try_from(r.siblings).unwrap_or(u32::MAX),
            written_back: r.written_back,
        }
    }
}

/// One result of a batch: `value` when it succeeded, else `error`, the JSON payload of its
/// DynamoKV error (see `error.rs`), which `index.js` turns into a `DynamoKVError`.
#[napi(object)]
#[allow(missing_debug_implementations)] // napi's `Buffer` has no `Debug`.
pub struct GetItem {
    pub value: Option<GetResult>,
    pub error: Option<String>,
}

/// As [`GetItem`], for a batch of resolving gets.
#[napi(object)]
#[allow(missing_debug_implementations)] // napi's `Buffer` has no `Debug`.
pub struct ResolvedItem {
    pub value: Option<ResolvedResult>,
    pub error: Option<String>,
}

/// As [`GetItem`], for a batch of puts: `value` is the new version's context.
#[napi(object)]
#[allow(missing_debug_implementations)] // napi's `Buffer` has no `Debug`.
pub struct ContextItem {
    pub value: Option<Buffer>,
    pub error: Option<String>,
}

/// One write of a `putMany` batch.
#[napi(object)]
#[allow(missing_debug_implementations)] // napi's `Buffer` has no `Debug`.
pub struct PutManyItem {
    pub key: Buffer,
    pub value: Buffer,
    pub context: Option<Buffer>,
}

#[napi(object)]
#[derive(Debug)]
pub struct MemberInfo {
    pub id: String,
    pub address: String,
    pub zone: String,
    pub weight: u32,
}

/// Whether the client considers one of its seed nodes up (its own failure detector's view).
#[napi(object)]
#[derive(Debug)]
pub struct NodeHealth {
    pub address: String,
    pub up: bool,
}

#[napi(object)]
#[derive(Debug)]
pub struct ClusterInfo {
    pub cluster_name: String,
    pub partitions: u32,
    pub n: u32,
    pub r: u32,
    pub w: u32,
    pub members: Vec<MemberInfo>,
    pub answered_by: String,
    pub ring_version: f64,
}

/// The native client behind `index.js`'s `Client`.
#[napi]
#[derive(Debug)]
pub struct NativeClient {
    inner: Client,
}

#[napi]
impl NativeClient {
    /// Builds a client; no I/O happens until the first call.
    #[napi(constructor)]
    pub fn new(seeds: Vec<String>, options: Option<ClientOptions>) -> Result<Self> {
        build(seeds, options.unwrap_or_default())
            .map(|inner| NativeClient { inner })
            .map_err(to_napi)
    }

    /// The client's own view of its seed nodes, one entry per seed in order. No I/O.
    #[napi]
    pub fn node_health(&self) -> Vec<NodeHealth> {
        self.inner
            .node_health()
            .into_iter()
            .map(|h| NodeHealth {
                address: h.address,
                up: h.up,
            })
            .collect()
    }

    #[napi]
    pub async fn get(&self, key: Buffer, r: Option<f64>) -> Result<GetResult> {
        let r = quorum("r", r).map_err(to_napi)?;
        let got = self
            .inner
            .get_with_quorum(&key[..], r)
            .await
            .map_err(to_napi)?;
        Ok(got.into())
    }

    /// A get whose siblings `builtin` (a built-in's name) or `custom` (the JavaScript wrapper
    /// of a resolver function) resolves to one value, written back when `write_back`.
    #[napi]
    pub async fn get_resolved(
        &self,
        key: Buffer,
        r: Option<f64>,
        builtin: Option<String>,
        custom: Option<JsResolver>,
        write_back: bool,
    ) -> Result<ResolvedResult> {
        let r = quorum("r", r).map_err(to_napi)?;
        let resolver = resolver(builtin, custom).map_err(to_napi)?;
        let resolved = self
            .inner
            .get_resolved(&key[..], &resolver, r, write_back)
            .await
            .map_err(to_napi)?;
        Ok(resolved.into())
    }

    /// One result per key, in order; one failing does not fail the others.
    #[napi]
    pub async fn get_many(&self, keys: Vec<Buffer>, r: Option<f64>) -> Result<Vec<GetItem>> {
        let r = quorum("r", r).map_err(to_napi)?;
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        let got = self.inner.get_many(keys, r).await;
        Ok(got
            .into_iter()
            .map(|g| match g {
                Ok(g) => GetItem {
                    value: Some(g.into()),
                    error: None,
                },
                Err(e) => GetItem {
                    value: None,
                    error: Some(payload(&e)),
                },
            })
            .collect())
    }

    /// As [`get_many`](Self::get_many), each key resolved as by
    /// [`get_resolved`](Self::get_resolved).
    #[napi]
    pub async fn get_many_resolved(
        &self,
        keys: Vec<Buffer>,
        r: Option<f64>,
        builtin: Option<String>,
        custom: Option<JsResolver>,
        write_back: bool,
    ) -> Result<Vec<ResolvedItem>> {
        let r = quorum("r", r).map_err(to_napi)?;
        let resolver = resolver(builtin, custom).map_err(to_napi)?;
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        let got = self
            .inner
            .get_many_resolved(keys, &resolver, r, write_back)
            .await;
        Ok(got
            .into_iter()
            .map(|g| match g {
                Ok(g) => ResolvedItem {
                    value: Some(g.into()),
                    error: None,
                },
                Err(e) => ResolvedItem {
                    value: None,
                    error: Some(payload(&e)),
                },
            })
            .collect())
    }

    /// One result per item, in order; one failing does not fail the others. Each item draws
    /// its own write id.
    #[napi]
    pub async fn put_many(
        &self,
        items: Vec<PutManyItem>,
        w: Option<f64>,
        sync_replicas: Option<f64>,
    ) -> Result<Vec<ContextItem>> {
        let options = write_options(w, None, sync_replicas).map_err(to_napi)?;
        let items: Vec<PutItem> = items
            .into_iter()
            .map(|i| PutItem {
                key: i.key.to_vec(),
                value: i.value.to_vec(),
                context: i.context.map(|c| Context::from_bytes(c.to_vec())),
            })
            .collect();
        let written = self.inner.put_many(items, options).await;
        Ok(written
            .into_iter()
            .map(|w| match w {
                Ok(c) => ContextItem {
                    value: Some(context_buffer(&c)),
                    error: None,
                },
                Err(e) => ContextItem {
                    value: None,
                    error: Some(payload(&e)),
                },
            })
            .collect())
    }

    /// Reaches the cluster once: pulls the ring (client-driven) or asks a node for the
    /// membership (server-driven).
    #[napi]
    pub async fn connected(&self) -> Result<()> {
        self.inner.clone().connected().await.map_err(to_napi)?;
        Ok(())
    }

    /// The version of the ring the client routes by; None before the first pull. No I/O.
    #[napi]
    pub fn ring_version(&self) -> Option<f64> {
        self.inner.ring_version().map(|v| v as f64)
    }

    /// Pulls the ring now; resolves to its version.
    #[napi]
    pub async fn refresh_ring(&self) -> Result<f64> {
        let v = self.inner.refresh_ring().await.map_err(to_napi)?;
        Ok(v as f64)
    }

    /// `"client"` or `"server"`.
    #[napi]
    pub fn coordination(&self) -> String {
        self.inner.coordination().as_str().to_string()
    }

    #[napi]
    pub async fn put(
        &self,
        key: Buffer,
        value: Buffer,
        context: Option<Buffer>,
        w: Option<f64>,
        write_id: Option<String>,
        sync_replicas: Option<f64>,
    ) -> Result<Buffer> {
        let options = write_options(w, write_id, sync_replicas).map_err(to_napi)?;
        let context = context.map(|c| Context::from_bytes(c.to_vec()));
        let written = self
            .inner
            .put_with_options(&key[..], value.to_vec(), context.as_ref(), options)
            .await
            .map_err(to_napi)?;
        Ok(context_buffer(&written))
    }

    #[napi]
    pub async fn delete(
        &self,
        key: Buffer,
        context: Buffer,
        w: Option<f64>,
        write_id: Option<String>,
        sync_replicas: Option<f64>,
    ) -> Result<Buffer> {
        let options = write_options(w, write_id, sync_replicas).map_err(to_napi)?;
        let context = Context::from_bytes(context.to_vec());
        let written = self
            .inner
            .delete_with_options(&key[..], &context, options)
            .await
            .map_err(to_napi)?;
        Ok(context_buffer(&written))
    }

    #[napi]
    pub async fn cluster_info(&self) -> Result<ClusterInfo> {
        let info = self.inner.cluster_info().await.map_err(to_napi)?;
        Ok(ClusterInfo {
            cluster_name: info.cluster_name,
            partitions: info.partitions,
            n: info.n,
            r: info.r,
            w: info.w,
            members: info
                .members
                .into_iter()
                .map(|m| MemberInfo {
                    id: m.id,
                    address: m.address,
                    zone: m.zone,
                    weight: m.weight,
                })
                .collect(),
            answered_by: info.answered_by,
            ring_version: info.ring_version as f64,
        })
    }
}

/// Calls the builder only for options that were given, so defaults stay in client-core.
fn build(seeds: Vec<String>, o: ClientOptions) -> std::result::Result<Client, CoreError> {
    let number = |name: &str, v: f64| whole_number(name, v, invalid_config);
    let mut builder = ClientBuilder::new(seeds);
    if let Some(ms) = o.connect_timeout_ms {
        builder = builder.connect_timeout(Duration::from_millis(
            number("connectTimeoutMs", ms)?.into(),
        ));
    }
    if let Some(ms) = o.request_timeout_ms {
        builder = builder.request_timeout(Duration::from_millis(
            number("requestTimeoutMs", ms)?.into(),
        ));
    }
    if let Some(ms) = o.attempt_timeout_ms {
        builder = builder.attempt_timeout(Duration::from_millis(
            number("attemptTimeoutMs", ms)?.into(),
        ));
    }
    if let Some(n) = o.max_retries {
        builder = builder.max_retries(number("maxRetries", n)?);
    }
    if let Some(c) = &o.coordination {
        builder = builder.coordination(Coordination::parse(c)?);
    }
    if o.max_key_bytes.is_some() || o.max_value_bytes.is_some() {
        let mut limits = Limits::default();
        if let Some(n) = o.max_key_bytes {
            limits.max_key_bytes = number("maxKeyBytes", n)? as usize;
        }
        if let Some(n) = o.max_value_bytes {
            limits.max_value_bytes = number("maxValueBytes", n)? as usize;
        }
        builder = builder.limits(limits);
    }
    if let Some(c) = o.coordination {
        builder = builder.coordination(Coordination::parse(&c)?);
    }
    if let Some(ms) = o.ring_refresh_interval_ms {
        builder = builder.ring_refresh_interval(Duration::from_millis(
            number("ringRefreshIntervalMs", ms)?.into(),
        ));
    }
    if let Some(ms) = o.hedge_after_ms {
        builder = builder.hedge_after(Some(Duration::from_millis(
            number("hedgeAfterMs", ms)?.into(),
        )));
    }
    if let Some(n) = o.batch_concurrency {
        builder = builder.batch_concurrency(number("batchConcurrency", n)? as usize);
    }
    if let Some(pem) = o.ca_cert {
        builder = builder.ca_cert(pem);
    }
    if let Some(pem) = o.client_cert {
        builder = builder.client_cert(pem);
    }
    if let Some(pem) = o.client_key {
        builder = builder.client_key(pem);
    }
    if let Some(token) = o.token {
        builder = builder.token(token);
    }
    if let Some(ms) = o.tls_reload_interval_ms {
        builder = builder.tls_reload_interval(Duration::from_millis(
            number("tlsReloadIntervalMs", ms)?.into(),
        ));
    }
    builder.build()
}

fn context_buffer(c: &Context) -> Buffer {
    Buffer::from(c.as_bytes().to_vec())
}

/// A put's or delete's per-call options: `w` and `syncReplicas` as for [`quorum`] (client-core
/// and the node check `syncReplicas` against W), `writeId` as hex.
fn write_options(
    w: Option<f64>,
    id: Option<String>,
    sync_replicas: Option<f64>,
) -> std::result::Result<WriteOptions, CoreError> {
    Ok(WriteOptions {
        sync_replicas: quorum("syncReplicas", sync_replicas)?,
        w: quorum("w", w)?,
        write_id: id.as_deref().map(write_id).transpose()?,
    })
}

fn quorum(name: &str, value: Option<f64>) -> std::result::Result<Option<u32>, CoreError> {
    value
        .map(|v| whole_number(name, v, invalid_quorum))
        .transpose()
}
