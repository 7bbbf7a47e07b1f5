//! The server's errors, and the one place they become gRPC statuses.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use dynamokv_common::error_code::ERROR_CODE_METADATA;
use dynamokv_common::{ContextError, ErrorCode, InputError};

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
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the node is shutting down: retry on another node")]
    ShuttingDown,
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
            Error::QuorumNotReached { .. } => ErrorCode::QuorumNotReached,
            Error::Storage(_) => ErrorCode::Internal,
            Error::ShuttingDown => ErrorCode::Unavailable,
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
            ErrorCode::QuorumNotReached | ErrorCode::Unavailable => Code::Unavailable,
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
            _ => {}
        }
        status
    }
}
