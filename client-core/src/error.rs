//! The one error type of client-core. Every binding maps its variants one-to-one onto host
//! errors (Python exception classes, JavaScript `code`s, Swift enum cases).

use std::time::Duration;

use tonic::{Code, Status};

use dynamokv_common::error_code::ERROR_CODE_METADATA;
use dynamokv_common::{ErrorCode, InputError};

/// Metadata keys the server sets on quorum failures (see the server's `error.rs`).
const QUORUM_NEEDED_METADATA: &str = "dynamokv-quorum-needed";
const QUORUM_GOT_METADATA: &str = "dynamokv-quorum-got";
const SIZE_METADATA: &str = "dynamokv-size";
const MAX_METADATA: &str = "dynamokv-max";

/// Why a client call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client was configured wrongly (no seeds, a malformed address, a zero timeout).
    #[error("invalid client configuration: {message}")]
    InvalidConfig { message: String },
    /// The key is empty. Nothing was written.
    #[error("the key is empty: keys must be 1 to {max} bytes")]
    EmptyKey { max: usize },
    /// The key is over the limit. Nothing was written.
    #[error("the key is {size} bytes, over the limit of {max} bytes: use a shorter key")]
    KeyTooLarge { size: usize, max: usize },
    /// The value is over the limit. Nothing was written.
    #[error(
        "the value is {size} bytes, over the limit of {max} bytes: split it or store it elsewhere"
    )]
    ValueTooLarge { size: usize, max: usize },
    /// The context is malformed or belongs to another key. Nothing was written.
    #[error("{message}")]
    InvalidContext { message: String },
    /// A per-request R or W outside 1..=N. Nothing was written.
    #[error("{message}")]
    InvalidQuorum { message: String },
    /// A request lacked a required field (only a non-conforming client can cause this).
    #[error("{message}")]
    MissingField { message: String },
    /// A request field was malformed (a write id that is not 16 bytes), or an operator request
    /// cannot be done as asked (a permission that does not exist). Nothing was done.
    #[error("{message}")]
    InvalidInput { message: String },
    /// Fewer than the needed replicas answered. For a write, it may be stored on those that did.
    #[error("{message}")]
    QuorumNotReached {
        needed: u32,
        got: u32,
        message: String,
    },
    /// A write whose answer was lost: it was applied once or not at all, and the client could
    /// not find out which before its deadline. Read the key to see; retrying with the same
    /// `write_id` (see [`WriteOptions`](crate::WriteOptions)) can never apply it twice.
    #[error(
        "the write's outcome is unknown (it is applied at most once; read the key, or retry with write id {write_id:032x}): {message}"
    )]
    OutcomeUnknown { write_id: u128, message: String },
    /// A blind write would grow the key past its sibling or size limit. Nothing was written:
    /// read the key and write a resolution with the read's context.
    #[error("{message}")]
    SiblingLimit { message: String },
    /// No node could be reached, or every node tried was shutting down.
    #[error("no DynamoKV node could serve the request: {message}")]
    Unavailable { message: String },
    /// The node is at its cap of concurrent requests or connections and did nothing: retry
    /// later, with backoff. The client already tried the other nodes it could.
    #[error("{message}")]
    Overloaded { message: String },
    /// The client presented no credentials, or credentials the cluster does not accept (an
    /// unknown or revoked token, a client certificate the cluster does not know). Nothing was
    /// done.
    #[error("{message}")]
    Unauthenticated { message: String },
    /// The client's user lacks the permission the request needs; the message names it.
    /// Nothing was done.
    #[error("{message}")]
    PermissionDenied { message: String },
    /// The TLS handshake failed: the message says which side refused and why (the node's
    /// certificate is not signed by the configured CA, the node wants a client certificate,
    /// the node does not speak TLS, ...). Nothing was sent.
    #[error("TLS failure: {message}")]
    Tls { message: String },
    /// The request did not finish before its deadline.
    #[error(
        "the request did not finish within {after:?}: the cluster may be overloaded or unreachable"
    )]
    Timeout { after: Duration },
    /// The resolver given to a resolving get failed (a host-language resolver's own exception
    /// is raised as itself by the SDKs). Nothing was written.
    #[error("the resolver failed, nothing was written: {message}")]
    ResolverFailed { message: String },
    /// A server bug or storage failure; the message has details.
    #[error("internal server error: {message}")]
    Internal { message: String },
}

impl Error {
    /// A stable code for this error; JavaScript errors carry it as `code`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidConfig { .. } => "INVALID_CONFIG",
            Error::EmptyKey { .. } => ErrorCode::EmptyKey.as_str(),
            Error::KeyTooLarge { .. } => ErrorCode::KeyTooLarge.as_str(),
            Error::ValueTooLarge { .. } => ErrorCode::ValueTooLarge.as_str(),
            Error::InvalidContext { .. } => ErrorCode::InvalidContext.as_str(),
            Error::InvalidQuorum { .. } => ErrorCode::InvalidQuorum.as_str(),
            Error::MissingField { .. } => ErrorCode::MissingField.as_str(),
            Error::InvalidInput { .. } => ErrorCode::InvalidInput.as_str(),
            Error::QuorumNotReached { .. } => ErrorCode::QuorumNotReached.as_str(),
            Error::OutcomeUnknown { .. } => ErrorCode::OutcomeUnknown.as_str(),
            Error::SiblingLimit { .. } => ErrorCode::SiblingLimit.as_str(),
            Error::Unavailable { .. } => ErrorCode::Unavailable.as_str(),
            Error::Overloaded { .. } => ErrorCode::Overloaded.as_str(),
            Error::Unauthenticated { .. } => ErrorCode::Unauthenticated.as_str(),
            Error::PermissionDenied { .. } => ErrorCode::PermissionDenied.as_str(),
            Error::Tls { .. } => "TLS",
            Error::Timeout { .. } => "TIMEOUT",
            Error::ResolverFailed { .. } => "RESOLVER_FAILED",
            Error::Internal { .. } => ErrorCode::Internal.as_str(),
        }
    }
}

impl Error {
    /// The error of a call to the node at `node` that failed with `status`: a TLS failure says
    /// which side refused the handshake and why.
    pub(crate) fn from_status(status: Status, node: &str) -> Error {
        match dynamokv_proto::tls::describe_failure(&status, &format!("the node at {node}")) {
            Some(message) => Error::Tls { message },
            None => Error::from(status),
        }
    }

    /// Whether the cluster refused who the client is or what it may do: another node would
    /// say the same (users and grants are the cluster's), so the call ends here. A TLS failure
    /// is not one: certificates are each node's, and another node may accept the client.
    pub(crate) fn is_refusal(&self) -> bool {
        matches!(
            self,
            Error::Unauthenticated { .. } | Error::PermissionDenied { .. }
        )
    }
}

/// What a failed call tells about the request, for deciding whether and how to retry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The node refused it before doing anything, or it never reached a node: another node may
    /// be tried as if this attempt had not happened.
    NotApplied,
    /// It may have been applied (the answer was lost): a write may be retried only as a
    /// further attempt of the same write id.
    MaybeApplied,
    /// The node's verdict, final.
    Verdict,
}

impl Failure {
    /// Classifies a status a call failed with; `err` is what it became.
    pub(crate) fn of(status: &Status, err: &Error) -> Failure {
        if status.metadata().contains_key(ERROR_CODE_METADATA) {
            return match err {
                Error::Unavailable { .. } | Error::Overloaded { .. } => Failure::NotApplied,
                Error::OutcomeUnknown { .. } => Failure::MaybeApplied,
                _ => Failure::Verdict,
            };
        }
        // A message over the node's size limit is refused from its length prefix, before
        // anything is decoded, let alone applied.
        if status.code() == Code::OutOfRange {
            return Failure::Verdict;
        }
        if dynamokv_proto::transport::certainly_not_sent(status) {
            Failure::NotApplied
        } else {
            Failure::MaybeApplied
        }
    }
}

impl From<InputError> for Error {
    fn from(e: InputError) -> Self {
        match e {
            InputError::EmptyKey { max } => Error::EmptyKey { max },
            InputError::KeyTooLarge { size, max } => Error::KeyTooLarge { size, max },
            InputError::ValueTooLarge { size, max } => Error::ValueTooLarge { size, max },
            other => Error::InvalidQuorum {
                message: other.to_string(),
            },
        }
    }
}

fn md<T: std::str::FromStr + Default>(status: &Status, key: &str) -> T {
    status
        .metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or_default()
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        let message = status.message().to_string();
        let code = status
            .metadata()
            .get(ERROR_CODE_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(ErrorCode::parse);
        match code {
            Some(ErrorCode::EmptyKey) => Error::EmptyKey {
                max: md(&status, MAX_METADATA),
            },
            Some(ErrorCode::KeyTooLarge) => Error::KeyTooLarge {
                size: md(&status, SIZE_METADATA),
                max: md(&status, MAX_METADATA),
            },
            Some(ErrorCode::ValueTooLarge) => Error::ValueTooLarge {
                size: md(&status, SIZE_METADATA),
                max: md(&status, MAX_METADATA),
            },
            Some(ErrorCode::InvalidContext) => Error::InvalidContext { message },
            Some(ErrorCode::InvalidQuorum) => Error::InvalidQuorum { message },
            Some(ErrorCode::MissingField) => Error::MissingField { message },
            Some(ErrorCode::InvalidInput) => Error::InvalidInput { message },
            Some(ErrorCode::QuorumNotReached) => Error::QuorumNotReached {
                needed: md(&status, QUORUM_NEEDED_METADATA),
                got: md(&status, QUORUM_GOT_METADATA),
                message,
            },
            Some(ErrorCode::OutcomeUnknown) => Error::OutcomeUnknown {
                write_id: 0,
                message,
            },
            Some(ErrorCode::SiblingLimit) => Error::SiblingLimit { message },
            Some(ErrorCode::Unavailable) => Error::Unavailable { message },
            Some(ErrorCode::Overloaded) => Error::Overloaded { message },
            Some(ErrorCode::Unauthenticated) => Error::Unauthenticated { message },
            Some(ErrorCode::PermissionDenied) => Error::PermissionDenied { message },
            Some(ErrorCode::Internal) | Some(_) => Error::Internal { message },
            // Not from a DynamoKV node: the transport failed or something else answered.
            None => match status.code() {
                Code::Unavailable | Code::Unknown | Code::Cancelled => Error::Unavailable {
                    message: format!("{message} ({:?})", status.code()),
                },
                Code::DeadlineExceeded => Error::Unavailable { message },
                _ => Error::Internal {
                    message: format!("{:?}: {message}", status.code()),
                },
            },
        }
    }
}
