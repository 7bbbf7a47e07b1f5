//! Resolvers across the FFI: client-core's built-ins, and Swift's own as a foreign trait.
//!
//! A [`ConflictResolver`] wraps a `dynamokv_client::Resolver`: the built-ins map to
//! client-core's variants (no call back into Swift), a custom one to `Resolver::from_async`
//! around a [`SiblingResolver`] that Swift implements. Policy (when the resolver is called,
//! the write-back, writing nothing after a failure) stays in client-core.

use std::fmt;
use std::sync::Arc;

use dynamokv_client as kv;

/// What a resolver is given: every concurrent value of one key, with its metadata.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Siblings {
    pub key: Vec<u8>,
    /// The live values, oldest write first.
    pub values: Vec<Vec<u8>>,
    /// The write time of each value, in milliseconds since the epoch (by the clock of the node
    /// that coordinated that write), in the order of `values`.
    pub timestamps_ms: Vec<u64>,
    /// Whether a delete is concurrent with the values (resolving also supersedes it).
    pub tombstone: bool,
}

impl From<kv::Siblings> for Siblings {
    fn from(s: kv::Siblings) -> Self {
        Siblings {
            key: s.key,
            values: s.values,
            timestamps_ms: s.timestamps_ms,
            tombstone: s.tombstone,
        }
    }
}

/// What a [`SiblingResolver`] throws when it cannot resolve. The call that used it then
/// throws `DynamoKvError.ResolverFailed` with `message`, and nothing is written. (The Swift
/// facade keeps the closure's own error aside and rethrows that instead.)
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Error)]
pub enum ResolverError {
    Failed { message: String },
}

impl fmt::Display for ResolverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolverError::Failed { message } => f.write_str(message),
        }
    }
}

impl std::error::Error for ResolverError {}

/// An error the foreign side threw that is not a `ResolverError` (or a value it returned that
/// could not be lowered) also fails the resolver, with its description as the message.
impl From<uniffi::UnexpectedUniFFICallbackError> for ResolverError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        ResolverError::Failed { message: e.reason }
    }
}

/// An application's own resolver, implemented in Swift: turns a key's siblings into one value.
/// Called only when a get returns two or more values.
#[uniffi::export(with_foreign)]
#[async_trait::async_trait]
pub trait SiblingResolver: Send + Sync {
    async fn resolve(&self, siblings: Siblings) -> Result<Vec<u8>, ResolverError>;
}

/// A resolver to hand to `getResolved` / `getManyResolved`: a built-in or a custom one.
#[derive(Debug, uniffi::Object)]
pub struct ConflictResolver {
    pub(crate) inner: kv::Resolver,
}

#[uniffi::export]
impl ConflictResolver {
    /// The value with the latest write timestamp; between equal timestamps, the greatest bytes.
    /// Runs in Rust.
    #[uniffi::constructor]
    pub fn last_writer_wins() -> Arc<Self> {
        Arc::new(ConflictResolver {
            inner: kv::Resolver::LastWriterWins,
        })
    }

    /// Every value is a JSON array; the result is their union (each distinct element once, in
    /// order of first appearance): the paper's shopping cart. Runs in Rust.
    #[uniffi::constructor]
    pub fn union_json() -> Arc<Self> {
        Arc::new(ConflictResolver {
            inner: kv::Resolver::UnionJson,
        })
    }

    /// An application's own resolver. What it throws fails the call with `ResolverFailed`
    /// and nothing is written.
    #[uniffi::constructor]
    pub fn custom(resolver: Arc<dyn SiblingResolver>) -> Arc<Self> {
        let inner = kv::Resolver::from_async(move |siblings: kv::Siblings| {
            let resolver = Arc::clone(&resolver);
            async move {
                resolver
                    .resolve(siblings.into())
                    .await
                    .map_err(|e| kv::ResolverError::new(e.to_string()))
            }
        });
        Arc::new(ConflictResolver { inner })
    }

    /// `"lastWriterWins"`, `"unionJson"` or `"custom"`.
    pub fn kind(&self) -> String {
        match self.inner {
            kv::Resolver::LastWriterWins => "lastWriterWins",
            kv::Resolver::UnionJson => "unionJson",
            _ => "custom",
        }
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Rust stand-in for a Swift resolver: joins the values, or fails on a tombstone.
    #[derive(Debug)]
    struct Joiner;

    #[async_trait::async_trait]
    impl SiblingResolver for Joiner {
        async fn resolve(&self, siblings: Siblings) -> Result<Vec<u8>, ResolverError> {
            if siblings.tombstone {
                return Err(ResolverError::Failed {
                    message: format!("{} values beside a delete", siblings.values.len()),
                });
            }
            Ok(siblings.values.join(&b"+"[..]))
        }
    }

    fn siblings(tombstone: bool) -> kv::Siblings {
        kv::Siblings {
            key: b"k".to_vec(),
            values: vec![b"a".to_vec(), b"b".to_vec()],
            timestamps_ms: vec![1, 2],
            tombstone,
        }
    }

    #[tokio::test]
    async fn a_custom_resolver_gets_the_siblings_and_its_error_becomes_resolver_failed() {
        let custom = ConflictResolver::custom(Arc::new(Joiner));
        assert_eq!(custom.kind(), "custom");
        assert_eq!(
            custom.inner.resolve(siblings(false)).await,
            Ok(b"a+b".to_vec())
        );
        assert_eq!(
            custom.inner.resolve(siblings(true)).await,
            Err(kv::Error::ResolverFailed {
                message: "2 values beside a delete".into()
            })
        );
        let unexpected = ResolverError::from(uniffi::UnexpectedUniFFICallbackError::new("boom"));
        assert_eq!(unexpected.to_string(), "boom");
    }

    #[tokio::test]
    async fn built_ins_are_client_cores() {
        let lww = ConflictResolver::last_writer_wins();
        assert_eq!(lww.kind(), "lastWriterWins");
        assert_eq!(lww.inner.resolve(siblings(false)).await, Ok(b"b".to_vec()));
        assert_eq!(ConflictResolver::union_json().kind(), "unionJson");
        assert!(matches!(
            ConflictResolver::union_json()
                .inner
                .resolve(siblings(false))
                .await,
            Err(kv::Error::ResolverFailed { .. })
        ));
    }
}
