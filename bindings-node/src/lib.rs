//! The Node.js binding of the DynamoKV client: conversion code only.
//!
//! Everything a client does (option defaults, validation, deadlines, retries) lives in
//! `dynamokv-client`; this crate converts JavaScript values to its types and back, and maps its
//! errors in `error.rs`. `index.js` is the facade JavaScript users import: it normalises keys and
//! values to `Buffer`s and rethrows errors as `DynamoKVError`.
//!
//! Async methods become Promises and run on napi-rs's tokio runtime (feature `async`): one
//! multi-thread runtime per process, created lazily on the first call.

mod error;

use std::time::Duration;

use napi::Result;
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use dynamokv_client::{
    Client, ClientBuilder, Context, Coordination, Error as CoreError, Limits, WriteOptions,
};

use crate::error::{invalid_config, invalid_quorum, to_napi, whole_number, write_id};

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
    /// "client" (the default) or "server".
    pub coordination: Option<String>,
}

/// The values of a key (siblings when concurrent writes happened) and one context covering them.
#[napi(object)]
#[allow(missing_debug_implementations)] // napi's `Buffer` has no `Debug`.
pub struct GetResult {
    pub values: Vec<Buffer>,
    pub context: Buffer,
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
        Ok(GetResult {
            values: got.values.into_iter().map(Buffer::from).collect(),
            context: Buffer::from(got.context.as_bytes().to_vec()),
        })
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
        Ok(Buffer::from(written.as_bytes().to_vec()))
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
        Ok(Buffer::from(written.as_bytes().to_vec()))
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
    builder.build()
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
