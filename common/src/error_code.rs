//! Stable, machine-readable error codes.
//!
//! The server puts one of these in the `dynamokv-error` metadata of every error status, and
//! client-core turns it back into the matching error variant, so no client parses messages.

use std::fmt;

/// gRPC metadata key that carries an [`ErrorCode`] on error statuses (part of the wire
/// protocol, so it lives with it).
pub use dynamokv_proto::transport::ERROR_CODE_METADATA;

/// Why a request failed, as both ends name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The key is empty.
    EmptyKey,
    /// The key is longer than the limit.
    KeyTooLarge,
    /// The value is longer than the limit.
    ValueTooLarge,
    /// The version context is not one this cluster issued for this key.
    InvalidContext,
    /// A per-request R or W is outside 1..=N.
    InvalidQuorum,
    /// A required request field is missing.
    MissingField,
    /// A request field is present but malformed (a write id that is not 16 bytes, a replica
    /// state that does not decode), or an operator request that cannot be done as asked (a
    /// permission that does not exist, a user that exists already). Nothing was done.
    InvalidInput,
    /// Fewer replicas than the quorum answered in time.
    QuorumNotReached,
    /// A write's outcome cannot be known (its answer was lost); retrying it with the same write
    /// id is safe.
    OutcomeUnknown,
    /// A blind write would grow a key past its sibling or size limit; read it and resolve.
    SiblingLimit,
    /// The node cannot serve requests now (shutting down, storage failed).
    Unavailable,
    /// The node is at its cap of concurrent requests or connections: nothing was done, retry
    /// later (another node may serve it now).
    Overloaded,
    /// The caller presented no credentials, or credentials this cluster does not accept.
    Unauthenticated,
    /// The caller is known but lacks the permission the request needs (the message names it).
    PermissionDenied,
    /// A bug or storage corruption; the message has details.
    Internal,
}

impl ErrorCode {
    /// All codes, for exhaustive tests.
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::EmptyKey,
        ErrorCode::KeyTooLarge,
        ErrorCode::ValueTooLarge,
        ErrorCode::InvalidContext,
        ErrorCode::InvalidQuorum,
        ErrorCode::MissingField,
        ErrorCode::InvalidInput,
        ErrorCode::QuorumNotReached,
        ErrorCode::OutcomeUnknown,
        ErrorCode::SiblingLimit,
        ErrorCode::Unavailable,
        ErrorCode::Overloaded,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::Internal,
    ];

    /// The wire spelling, also used as the `code` of JavaScript errors.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::EmptyKey => "EMPTY_KEY",
            ErrorCode::KeyTooLarge => "KEY_TOO_LARGE",
            ErrorCode::ValueTooLarge => "VALUE_TOO_LARGE",
            ErrorCode::InvalidContext => "INVALID_CONTEXT",
            ErrorCode::InvalidQuorum => "INVALID_QUORUM",
            ErrorCode::MissingField => "MISSING_FIELD",
            ErrorCode::InvalidInput => "INVALID_INPUT",
            ErrorCode::QuorumNotReached => "QUORUM_NOT_REACHED",
            ErrorCode::OutcomeUnknown => "OUTCOME_UNKNOWN",
            ErrorCode::SiblingLimit => "SIBLING_LIMIT",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Overloaded => "OVERLOADED",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    /// Parses the wire spelling; unknown codes (from a newer server) give `None`.
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_spellings_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            assert!(seen.insert(code.as_str()));
        }
        assert_eq!(ErrorCode::parse("NO_SUCH_CODE"), None);
    }
}
