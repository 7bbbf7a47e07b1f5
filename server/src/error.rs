//! The server's errors, and the one place they become gRPC statuses.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use dynamokv_common::error_code::ERROR_CODE_METADATA;
use dynamokv_common::{ContextError, ErrorCode, InputError};
use dynamokv_proto::transport::RING_VERSION_METADATA;

use crate::storage::StorageError;

/// Metadata keys carrying the numbers of a quorum failure, for clients to rebuild the error.
pub const QUORUM_NEEDED_METADATA: &str = "dynamokv-quorum-needed";
pub const QUORUM_GOT_METADATA: &str = "dynamokv-quorum-got";
/// Metadata keys carrying the numbers of a size error.
pub const SIZE_METADATA: &str = "dynamokv-size";
pub const MAX_METADATA: &str = "dynamokv-max";

/// Why one replica did not answer a coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFailure {
    pub node: String,
    pub reason: String,
}

/// A request that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error("the request has no {0}: it is required")]
    MissingField(&'static str),
    /// A field that is present but malformed. Nothing was done.
    #[error("the request's {0}")]
    MalformedField(&'static str),
    /// The verdict of the node this one forwarded the request to, passed on unchanged.
    #[error("{}", .0.message())]
    Remote(Status),
    #[error(
        "{op} needed {needed} replica(s) but only {got} answered{}: {}",
        if *.op == "put" || *.op == "delete" { " (the write is stored on those that did and may still spread)" } else { "" },
        describe(.failures)
    )]
    QuorumNotReached {
        op: &'static str,
        needed: u32,
        got: u32,
        failures: Vec<ReplicaFailure>,
    },
    /// The forwarder's replicas and every later attempt failed, and some may have applied the
    /// write: it is stored once or not at all, and may still spread.
    #[error(
        "the outcome of this {op} is unknown: a replica that was sent it did not answer ({}). It is applied at most once; retry with the same write id, or read the key, to find out",
        describe(.failures)
    )]
    OutcomeUnknown {
        op: &'static str,
        failures: Vec<ReplicaFailure>,
    },
    /// This node sees fewer of the key's replicas and fallbacks up than the quorum needs, so it
    /// did nothing (a node cut off from its peers answers at once, and clients try another).
    #[error(
        "{op} needs {needed} replica(s) but this node reaches only {reachable} of the key's replicas and fallbacks ({} unreachable from here): nothing was done; another node may reach more",
        unreachable.join(", ")
    )]
    TooFewReachable {
        op: &'static str,
        needed: u32,
        reachable: u32,
        unreachable: Vec<String>,
    },
    /// The write would grow the key past its sibling limits; nothing was written.
    #[error("{0}")]
    SiblingLimit(String),
    /// A forwarded request reached a node that is not among the key's replicas.
    #[error(
        "node {node} is not a replica of this key (the forwarding node's view of the cluster differs): nothing was written, retry on another node"
    )]
    NotReplica { node: String },
    /// A client routed a replica read by a ring that is not this node's: the node's ring is
    /// newer, or by it the node holds no replica of the key. Nothing was read.
    #[error(
        "node {node} is at ring version {version} and {reason}: nothing was read; pull the ring again and route by it"
    )]
    RingMoved {
        node: String,
        version: u64,
        reason: &'static str,
    },
    /// The node was started to join a cluster and has not heard from it yet.
    #[error(
        "node {node} has not joined a cluster yet (it is waiting to hear from its seeds): retry on another node"
    )]
    NotJoined { node: String },
    /// The node is at a cap (concurrent requests, connections): nothing was done.
    #[error("node {node} is overloaded ({reason}): nothing was done, retry later")]
    Overloaded { node: String, reason: String },
    /// An operator request that makes no sense (a user that exists already, or does not).
    #[error("{0}")]
    Invalid(String),
    /// The records that say who may do what could not be read (too few replicas answered).
    #[error("cannot check the caller's credentials now: {0}; retry")]
    CredentialsUnavailable(String),
    /// No credentials, or credentials this cluster does not accept. Nothing was done.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The caller lacks a permission the request needs. Nothing was done.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("internal error: {0}")]
    Internal(String),
}

fn describe(failures: &[ReplicaFailure]) -> String {
    if failures.is_empty() {
        return "no failures reported (timed out waiting)".into();
    }
    failures
        .iter()
        .map(|f| format!("{}: {}", f.node, f.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Input(e) => e.code(),
            Error::Context(_) => ErrorCode::InvalidContext,
            Error::Remote(status) => status
                .metadata()
                .get(ERROR_CODE_METADATA)
                .and_then(|v| v.to_str().ok())
                .and_then(ErrorCode::parse)
                .unwrap_or(ErrorCode::Internal),
            Error::MissingField(_) => ErrorCode::MissingField,
            Error::MalformedField(_) | Error::Invalid(_) => ErrorCode::InvalidInput,
            Error::CredentialsUnavailable(_) => ErrorCode::Unavailable,
            Error::QuorumNotReached { .. } => ErrorCode::QuorumNotReached,
            Error::OutcomeUnknown { .. } => ErrorCode::OutcomeUnknown,
            Error::SiblingLimit(_) => ErrorCode::SiblingLimit,
            Error::NotReplica { .. }
            | Error::TooFewReachable { .. }
            | Error::NotJoined { .. }
            | Error::RingMoved { .. } => ErrorCode::Unavailable,
            Error::Overloaded { .. } => ErrorCode::Overloaded,
            Error::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Error::PermissionDenied(_) => ErrorCode::PermissionDenied,
            Error::Storage(_) | Error::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        if let Error::Remote(status) = e {
            return status;
        }
        let code = e.code();
        let grpc = match code {
            ErrorCode::QuorumNotReached | ErrorCode::Unavailable | ErrorCode::OutcomeUnknown => {
                Code::Unavailable
            }
            ErrorCode::SiblingLimit => Code::FailedPrecondition,
            ErrorCode::Overloaded => Code::ResourceExhausted,
            ErrorCode::Unauthenticated => Code::Unauthenticated,
            ErrorCode::PermissionDenied => Code::PermissionDenied,
            ErrorCode::Internal => Code::Internal,
            _ => Code::InvalidArgument,
        };
        if grpc == Code::Internal {
            tracing::error!(error = %e, "internal error");
        }
        let mut status = Status::new(grpc, e.to_string());
        let md = status.metadata_mut();
        md.insert(
            ERROR_CODE_METADATA,
            MetadataValue::from_static(code.as_str()),
        );
        match e {
            Error::QuorumNotReached { needed, got, .. } => {
                md.insert(QUORUM_NEEDED_METADATA, MetadataValue::from(needed));
                md.insert(QUORUM_GOT_METADATA, MetadataValue::from(got));
            }
            Error::Input(
                InputError::KeyTooLarge { size, max } | InputError::ValueTooLarge { size, max },
            ) => {
                md.insert(SIZE_METADATA, MetadataValue::from(size as u64));
                md.insert(MAX_METADATA, MetadataValue::from(max as u64));
            }
            Error::Input(InputError::EmptyKey { max }) => {
                md.insert(MAX_METADATA, MetadataValue::from(max as u64));
            }
            Error::RingMoved { version, .. } => {
                md.insert(RING_VERSION_METADATA, MetadataValue::from(version));
            }
            _ => {}
        }
        status
    }
}
