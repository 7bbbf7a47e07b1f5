//! Application-side reconciliation (paper 4.4: "the client must perform the reconciliation in
//! order to collapse multiple branches of data evolution back into one ... e.g. merging
//! different versions of a customer's shopping cart").
//!
//! A [`Resolver`] turns a key's causally concurrent values (siblings) into one.
//! [`Client::get_resolved`](crate::Client::get_resolved) calls it when a get returns more than
//! one version and, unless told not to, writes the result back under the context that covers
//! every sibling, so the key converges to one version on every replica. Two resolvers are
//! built in: [`Resolver::LastWriterWins`] (by write timestamp, as Cassandra and Riak's
//! `last_write_wins` do) and [`Resolver::UnionJson`] (the union of JSON arrays: the paper's
//! shopping cart, where an added item is never lost).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::Error;

/// What a resolver is given: every concurrent value of one key, with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Siblings {
    pub key: Vec<u8>,
    /// The live values, oldest write first.
    pub values: Vec<Vec<u8>>,
    /// The write time of each value, in milliseconds since the epoch by the clock of the node
    /// that coordinated that write (clocks of different nodes may disagree by their skew).
    pub timestamps_ms: Vec<u64>,
    /// Whether a delete is concurrent with the values (resolving then also supersedes it).
    pub tombstone: bool,
}

/// A failed resolver: `message` says why. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverError {
    pub message: String,
}

impl ResolverError {
    pub fn new(message: impl Into<String>) -> Self {
        ResolverError {
            message: message.into(),
        }
    }
}

/// The future a custom resolver returns.
pub type ResolveFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, ResolverError>> + Send>>;

type CustomFn = dyn Fn(Siblings) -> ResolveFuture + Send + Sync;

/// Turns a key's siblings into one value.
#[derive(Clone)]
#[non_exhaustive]
pub enum Resolver {
    /// The value with the latest write timestamp; between equal timestamps, the greatest value
    /// bytes (so every client picks the same one). Concurrent updates other than the latest
    /// are dropped: use it where that is what the application wants.
    LastWriterWins,
    /// Every value is a JSON array; the result is their union, in order of first appearance,
    /// each distinct element once (a set). Nothing any sibling added is lost. A value that is
    /// not a JSON array fails the resolver, and nothing is written.
    UnionJson,
    /// An application's own resolver, possibly asynchronous (a host-language callback).
    Custom(Arc<CustomFn>),
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resolver::LastWriterWins => f.write_str("LastWriterWins"),
            Resolver::UnionJson => f.write_str("UnionJson"),
            Resolver::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl Resolver {
    /// A resolver from a plain function of the values.
    pub fn from_fn<F>(f: F) -> Resolver
    where
        F: Fn(&Siblings) -> Result<Vec<u8>, ResolverError> + Send + Sync + 'static,
    {
        Resolver::Custom(Arc::new(move |s: Siblings| {
            let out = f(&s);
            Box::pin(async move { out }) as ResolveFuture
        }))
    }

    /// A resolver from an asynchronous function.
    pub fn from_async<F, Fut>(f: F) -> Resolver
    where
        F: Fn(Siblings) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>, ResolverError>> + Send + 'static,
    {
        Resolver::Custom(Arc::new(move |s: Siblings| Box::pin(f(s)) as ResolveFuture))
    }

    /// Resolves `siblings` to one value.
    pub async fn resolve(&self, siblings: Siblings) -> Result<Vec<u8>, Error> {
        let failed = |e: ResolverError| Error::ResolverFailed { message: e.message };
        match self {
            Resolver::LastWriterWins => last_writer_wins(&siblings).map_err(failed),
            Resolver::UnionJson => union_json(&siblings.values).map_err(failed),
            Resolver::Custom(f) => f(siblings).await.map_err(failed),
        }
    }
}

/// The latest value by timestamp, then by bytes.
pub fn last_writer_wins(siblings: &Siblings) -> Result<Vec<u8>, ResolverError> {
    siblings
        .values
        .iter()
        .enumerate()
        .max_by(|(i, a), (j, b)| {
            let ta = siblings.timestamps_ms.get(*i).copied().unwrap_or(0);
            let tb = siblings.timestamps_ms.get(*j).copied().unwrap_or(0);
            ta.cmp(&tb).then_with(|| a.cmp(b))
        })
        .map(|(_, v)| v.clone())
        .ok_or_else(|| ResolverError::new("there are no values to choose from"))
}

/// The union of JSON arrays, each distinct element once, in order of first appearance.
pub fn union_json(values: &[Vec<u8>]) -> Result<Vec<u8>, ResolverError> {
    let mut out: Vec<serde_json::Value> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, v) in values.iter().enumerate() {
        let parsed: serde_json::Value = serde_json::from_slice(v).map_err(|e| {
            ResolverError::new(format!(
                "union_json: sibling {i} is not JSON ({e}); every value must be a JSON array"
            ))
        })?;
        let serde_json::Value::Array(items) = parsed else {
            return Err(ResolverError::new(format!(
                "union_json: sibling {i} is JSON but not an array; every value must be a JSON array"
            )));
        };
        for item in items {
            // serde_json sorts object keys, so equal objects encode alike.
            if seen.insert(item.to_string()) {
                out.push(item);
            }
        }
    }
    serde_json::to_vec(&serde_json::Value::Array(out))
        .map_err(|e| ResolverError::new(format!("union_json: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn siblings(values: &[&str], ts: &[u64]) -> Siblings {
        Siblings {
            key: b"k".to_vec(),
            values: values.iter().map(|v| v.as_bytes().to_vec()).collect(),
            timestamps_ms: ts.to_vec(),
            tombstone: false,
        }
    }

    #[test]
    fn last_writer_wins_takes_the_latest_then_the_greatest_bytes() {
        let s = siblings(&["old", "new", "mid"], &[1, 3, 2]);
        assert_eq!(last_writer_wins(&s).unwrap(), b"new");
        let tie = siblings(&["a", "c", "b"], &[5, 5, 5]);
        assert_eq!(last_writer_wins(&tie).unwrap(), b"c");
        assert!(last_writer_wins(&siblings(&[], &[])).is_err());
    }

    #[test]
    fn union_json_keeps_every_element_once_in_order_of_first_appearance() {
        let out = union_json(&[
            br#"["apple","pear"]"#.to_vec(),
            br#"["pear","fig",{"b":1,"a":2}]"#.to_vec(),
            br#"[{"a":2,"b":1},"apple"]"#.to_vec(),
        ])
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!(["apple", "pear", "fig", {"a": 2, "b": 1}])
        );
    }

    #[test]
    fn union_json_refuses_what_is_not_an_array() {
        let e = union_json(&[b"[1]".to_vec(), b"{\"a\":1}".to_vec()]).unwrap_err();
        assert!(e.message.contains("sibling 1"), "{}", e.message);
        let e = union_json(&[b"not json".to_vec()]).unwrap_err();
        assert!(e.message.contains("not JSON"), "{}", e.message);
    }

    #[tokio::test]
    async fn a_failing_custom_resolver_is_an_error_that_says_so() {
        let r = Resolver::from_fn(|_| Err(ResolverError::new("no way")));
        let e = r.resolve(siblings(&["a", "b"], &[1, 2])).await.unwrap_err();
        assert_eq!(
            e,
            Error::ResolverFailed {
                message: "no way".into()
            }
        );
    }
}
