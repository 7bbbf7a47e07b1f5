//! Resolvers as JavaScript gives them: a built-in's name, or a function called back from
//! client-core through a napi `ThreadsafeFunction`.
//!
//! The function client-core calls is not the user's resolver but the wrapper `index.js` builds
//! around it: it takes one [`JsSiblings`] object, always returns a Promise, resolves it to the
//! resolver's `Buffer` and rejects it (with an `Error` whose message describes the failure) when
//! the resolver threw, rejected or returned something that is not bytes. The value the resolver
//! threw stays on the JavaScript side, kept by the wrapper per key; here a rejection only becomes
//! a [`ResolverError`], so client-core writes nothing and answers `Error::ResolverFailed`, on
//! which `index.js` rejects with the value it kept.

use std::sync::Arc;

use napi::Status;
use napi::bindgen_prelude::{Buffer, Promise};
use napi::threadsafe_function::ThreadsafeFunction;
use napi_derive::napi;

use dynamokv_client::{Error as CoreError, Resolver, ResolverError, Siblings};

/// What the JavaScript wrapper of a custom resolver is called with: a key's siblings.
#[napi(object)]
#[allow(missing_debug_implementations)] // napi's `Buffer` has no `Debug`.
pub struct JsSiblings {
    pub key: Buffer,
    /// The live values, oldest write first.
    pub values: Vec<Buffer>,
    /// The write time of each value, in milliseconds since the epoch.
    pub timestamps_ms: Vec<f64>,
    /// Whether a delete is concurrent with the values.
    pub tombstone: bool,
}

/// The JavaScript wrapper of a custom resolver: `(siblings) => Promise<Buffer>`, called without
/// an error-first argument (`CalleeHandled = false`).
pub type JsResolver = ThreadsafeFunction<JsSiblings, Promise<Buffer>, JsSiblings, Status, false>;

/// The client-core resolver for a call: the built-in named `builtin` (`"lastWriterWins"` or
/// `"unionJson"`, as `index.js`'s `resolvers` name them), or `custom`. Exactly one is given.
pub(crate) fn resolver(
    builtin: Option<String>,
    custom: Option<JsResolver>,
) -> Result<Resolver, CoreError> {
    match (builtin.as_deref(), custom) {
        (Some("lastWriterWins"), None) => Ok(Resolver::LastWriterWins),
        (Some("unionJson"), None) => Ok(Resolver::UnionJson),
        (None, Some(f)) => Ok(custom_resolver(f)),
        (Some(other), None) => Err(CoreError::InvalidConfig {
            message: format!(
                "no built-in resolver {other:?}: use resolvers.lastWriterWins or resolvers.unionJson"
            ),
        }),
        (None, None) | (Some(_), Some(_)) => Err(CoreError::InvalidConfig {
            message: "give one resolver: a built-in or a function".into(),
        }),
    }
}

/// A resolver that calls the JavaScript wrapper and awaits the Promise it returns.
fn custom_resolver(f: JsResolver) -> Resolver {
    let f = Arc::new(f);
    Resolver::from_async(move |s: Siblings| {
        let f = Arc::clone(&f);
        async move {
            let siblings = JsSiblings {
                key: Buffer::from(s.key),
                values: s.values.into_iter().map(Buffer::from).collect(),
                // Milliseconds since the epoch stay exact in a double until the year 287396.
                timestamps_ms: s.timestamps_ms.into_iter().map(|t| t as f64).collect(),
                tombstone: s.tombstone,
            };
            let promise = f.call_async_catch(siblings).await.map_err(failed)?;
            let value = promise.await.map_err(failed)?;
            Ok(value.to_vec())
        }
    })
}

/// A rejection of the wrapper (or a call that could not be made: the environment is shutting
/// down) as client-core's resolver failure.
fn failed(e: napi::Error) -> ResolverError {
    ResolverError::new(if e.reason.is_empty() {
        format!("the JavaScript resolver failed ({})", e.status)
    } else {
        e.reason.clone()
    })
}
