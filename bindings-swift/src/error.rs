//! The one place client-core errors become Swift errors: `DynamoKvError`, a uniffi error enum
//! with one case per `dynamokv_client::Error` variant and the same fields. Its message and
//! `code()` come from client-core (by converting back), so no text is duplicated here.

use std::fmt;
use std::time::Duration;

use dynamokv_client as kv;

/// Why a DynamoKV call failed. `code()` gives the stable code shared by every SDK
/// (`EMPTY_KEY`, `QUORUM_NOT_REACHED`, ...).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Error)]
#[uniffi::export(Display)]
pub enum DynamoKvError {
    /// The client was configured wrongly (no seeds, a malformed address, a zero timeout).
    InvalidConfig { message: String },
    /// The key is empty. Nothing was written.
    EmptyKey { max: u64 },
    /// The key is over the limit. Nothing was written.
    KeyTooLarge { size: u64, max: u64 },
    /// The value is over the limit. Nothing was written.
    ValueTooLarge { size: u64, max: u64 },
    /// The context is malformed or belongs to another key. Nothing was written.
    InvalidContext { message: String },
    /// A per-request R or W outside 1..=N. Nothing was written.
    InvalidQuorum { message: String },
    /// A request lacked a required field (only a non-conforming client can cause this).
    MissingField { message: String },
    /// A request field was malformed (a write id that is not 16 bytes). Nothing was done.
    InvalidInput { message: String },
    /// Fewer than the needed replicas answered. For a write, it may be stored on those that did.
    QuorumNotReached {
        needed: u32,
        got: u32,
        message: String,
    },
    /// A put or delete whose answer was lost: it was applied once or not at all. Read the key,
    /// or retry the write passing `writeId` (16 bytes, big-endian): a write is never applied
    /// twice under one write id.
    OutcomeUnknown { write_id: Vec<u8>, message: String },
    /// A blind write would grow the key past its sibling or size limit. Nothing was written:
    /// get the key and put the resolved value with the get's context.
    SiblingLimit { message: String },
    /// No node could be reached, or every node tried was shutting down.
    Unavailable { message: String },
    /// The nodes tried are at their cap of concurrent requests or connections and did
    /// nothing: retry later, with backoff.
    Overloaded { message: String },
    /// No credentials (`token`, or `clientCert` and `clientKey`), or ones the cluster does not
    /// accept. Nothing was done.
    Unauthenticated { message: String },
    /// The user lacks the permission the request needs (the message names it). Nothing was
    /// done.
    PermissionDenied { message: String },
    /// The TLS handshake failed; the message says which side refused and why.
    Tls { message: String },
    /// A read did not finish before its deadline (a write that runs out of time is
    /// `OutcomeUnknown`).
    Timeout { after: Duration },
    /// The resolver of a resolving get failed (a custom resolver threw, or a built-in met
    /// values it cannot merge). Nothing was written. The facade rethrows a Swift closure's own
    /// error instead of this.
    ResolverFailed { message: String },
    /// A server bug or storage failure (or a failure inside this SDK); the message has details.
    Internal { message: String },
}

fn wide(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn narrow(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// A write id as the 16 bytes Swift sees (`Data`, big-endian as on the wire).
pub(crate) fn id_bytes(id: u128) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

/// A write id from 16 bytes; anything else is refused, before anything is sent, with the
/// `InvalidInput` error a node gives a malformed write id.
pub(crate) fn write_id(bytes: &[u8]) -> Result<u128, DynamoKvError> {
    let id: [u8; 16] = bytes
        .try_into()
        .map_err(|_| DynamoKvError::InvalidInput {
            message: format!(
                "writeId must be 16 bytes (the writeId of an OutcomeUnknown error, or nil for a fresh one), got {} bytes",
                bytes.len()
            ),
        })?;
    Ok(u128::from_be_bytes(id))
}

/// The reverse of [`id_bytes`] for an error a Swift caller built: the last 16 bytes, zero-padded
/// on the left when there are fewer (only the message shows it).
fn id_lossy(bytes: &[u8]) -> u128 {
    let tail = &bytes[bytes.len().saturating_sub(16)..];
    let mut id = [0u8; 16];
    id[16 - tail.len()..].copy_from_slice(tail);
    u128::from_be_bytes(id)
}

impl From<kv::Error> for DynamoKvError {
    fn from(e: kv::Error) -> Self {
        use kv::Error as E;
        match e {
            E::InvalidConfig { message } => DynamoKvError::InvalidConfig { message },
            E::EmptyKey { max } => DynamoKvError::EmptyKey { max: wide(max) },
            E::KeyTooLarge { size, max } => DynamoKvError::KeyTooLarge {
                size: wide(size),
                max: wide(max),
            },
            E::ValueTooLarge { size, max } => DynamoKvError::ValueTooLarge {
                size: wide(size),
                max: wide(max),
            },
            E::InvalidContext { message } => DynamoKvError::InvalidContext { message },
            E::InvalidQuorum { message } => DynamoKvError::InvalidQuorum { message },
            E::MissingField { message } => DynamoKvError::MissingField { message },
            E::InvalidInput { message } => DynamoKvError::InvalidInput { message },
            E::QuorumNotReached {
                needed,
                got,
                message,
            } => DynamoKvError::QuorumNotReached {
                needed,
                got,
                message,
            },
            E::OutcomeUnknown { write_id, message } => DynamoKvError::OutcomeUnknown {
                write_id: id_bytes(write_id),
                message,
            },
            E::SiblingLimit { message } => DynamoKvError::SiblingLimit { message },
            E::Unavailable { message } => DynamoKvError::Unavailable { message },
            E::Overloaded { message } => DynamoKvError::Overloaded { message },
            E::Unauthenticated { message } => DynamoKvError::Unauthenticated { message },
            E::PermissionDenied { message } => DynamoKvError::PermissionDenied { message },
            E::Tls { message } => DynamoKvError::Tls { message },
            E::Timeout { after } => DynamoKvError::Timeout { after },
            E::ResolverFailed { message } => DynamoKvError::ResolverFailed { message },
            E::Internal { message } => DynamoKvError::Internal { message },
            // client-core's enum is non-exhaustive: a variant added there surfaces as Internal
            // with its own message until it gets a case here.
            other => DynamoKvError::Internal {
                message: other.to_string(),
            },
        }
    }
}

/// The reverse mapping, so that messages and codes have one source: client-core.
impl From<&DynamoKvError> for kv::Error {
    fn from(e: &DynamoKvError) -> Self {
        use DynamoKvError as D;
        match e.clone() {
            D::InvalidConfig { message } => kv::Error::InvalidConfig { message },
            D::EmptyKey { max } => kv::Error::EmptyKey { max: narrow(max) },
            D::KeyTooLarge { size, max } => kv::Error::KeyTooLarge {
                size: narrow(size),
                max: narrow(max),
            },
            D::ValueTooLarge { size, max } => kv::Error::ValueTooLarge {
                size: narrow(size),
                max: narrow(max),
            },
            D::InvalidContext { message } => kv::Error::InvalidContext { message },
            D::InvalidQuorum { message } => kv::Error::InvalidQuorum { message },
            D::MissingField { message } => kv::Error::MissingField { message },
            D::InvalidInput { message } => kv::Error::InvalidInput { message },
            D::QuorumNotReached {
                needed,
                got,
                message,
            } => kv::Error::QuorumNotReached {
                needed,
                got,
                message,
            },
            D::OutcomeUnknown { write_id, message } => kv::Error::OutcomeUnknown {
                write_id: id_lossy(&write_id),
                message,
            },
            D::SiblingLimit { message } => kv::Error::SiblingLimit { message },
            D::Unavailable { message } => kv::Error::Unavailable { message },
            D::Overloaded { message } => kv::Error::Overloaded { message },
            D::Unauthenticated { message } => kv::Error::Unauthenticated { message },
            D::PermissionDenied { message } => kv::Error::PermissionDenied { message },
            D::Tls { message } => kv::Error::Tls { message },
            D::Timeout { after } => kv::Error::Timeout { after },
            D::ResolverFailed { message } => kv::Error::ResolverFailed { message },
            D::Internal { message } => kv::Error::Internal { message },
        }
    }
}

/// Failures of this SDK's own machinery (the runtime, a panicked task) are internal errors.
impl From<std::io::Error> for DynamoKvError {
    fn from(e: std::io::Error) -> Self {
        DynamoKvError::Internal {
            message: format!("could not start the DynamoKV client runtime: {e}"),
        }
    }
}

impl From<tokio::task::JoinError> for DynamoKvError {
    fn from(e: tokio::task::JoinError) -> Self {
        DynamoKvError::Internal {
            message: format!("the DynamoKV call did not complete: {e}"),
        }
    }
}

impl fmt::Display for DynamoKvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        kv::Error::from(self).fmt(f)
    }
}

impl std::error::Error for DynamoKvError {}

#[uniffi::export]
impl DynamoKvError {
    /// The stable code of this error, the same in every SDK (`EMPTY_KEY`, `TIMEOUT`, ...).
    pub fn code(&self) -> String {
        kv::Error::from(self).code().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_variant() -> Vec<kv::Error> {
        vec![
            kv::Error::InvalidConfig {
                message: "m".into(),
            },
            kv::Error::EmptyKey { max: 4096 },
            kv::Error::KeyTooLarge {
                size: 4097,
                max: 4096,
            },
            kv::Error::ValueTooLarge {
                size: 1_048_577,
                max: 1_048_576,
            },
            kv::Error::InvalidContext {
                message: "m".into(),
            },
            kv::Error::InvalidQuorum {
                message: "m".into(),
            },
            kv::Error::MissingField {
                message: "m".into(),
            },
            kv::Error::InvalidInput {
                message: "m".into(),
            },
            kv::Error::QuorumNotReached {
                needed: 2,
                got: 1,
                message: "m".into(),
            },
            kv::Error::OutcomeUnknown {
                write_id: 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
                message: "m".into(),
            },
            kv::Error::SiblingLimit {
                message: "m".into(),
            },
            kv::Error::Unavailable {
                message: "m".into(),
            },
            kv::Error::Overloaded {
                message: "m".into(),
            },
            kv::Error::Unauthenticated {
                message: "m".into(),
            },
            kv::Error::PermissionDenied {
                message: "m".into(),
            },
            kv::Error::Tls {
                message: "m".into(),
            },
            kv::Error::Timeout {
                after: Duration::from_millis(1500),
            },
            kv::Error::ResolverFailed {
                message: "m".into(),
            },
            kv::Error::Internal {
                message: "m".into(),
            },
        ]
    }

    #[test]
    fn every_variant_round_trips_with_its_fields_code_and_message() {
        for core in every_variant() {
            let swift = DynamoKvError::from(core.clone());
            assert_eq!(kv::Error::from(&swift), core);
            assert_eq!(swift.code(), core.code());
            assert_eq!(swift.to_string(), core.to_string());
        }
    }

    #[test]
    fn write_ids_are_16_big_endian_bytes() {
        let id = 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10_u128;
        let bytes = id_bytes(id);
        assert_eq!(bytes, (1..=16).collect::<Vec<u8>>());
        assert_eq!(write_id(&bytes), Ok(id));
        for bad in [&bytes[..15], &[0u8; 17][..], &[][..]] {
            let err = write_id(bad).err();
            assert!(
                matches!(err, Some(DynamoKvError::InvalidInput { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(id_lossy(&bytes[8..]), 0x090a_0b0c_0d0e_0f10);
    }
}
