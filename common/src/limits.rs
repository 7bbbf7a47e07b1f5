//! Input limits, checked by client-core before sending and by the server before writing.
//!
//! The paper's objects are "usually less than 1 MB" (section 2.1); the defaults follow it.

use thiserror::Error;

use crate::ErrorCode;

/// Default largest key, in bytes.
pub const DEFAULT_MAX_KEY_BYTES: usize = 4 * 1024;
/// Default largest value, in bytes.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;

/// Default largest total of a key's values, siblings included (Riak's `max_object_size` is 50 MB):
/// past it, blind writes that would grow the key are refused until it is resolved.
pub const DEFAULT_MAX_OBJECT_BYTES: usize = 32 * 1024 * 1024;
/// Default key size (all siblings) past which a node logs a warning.
pub const DEFAULT_WARN_OBJECT_BYTES: usize = 4 * 1024 * 1024;
/// Default largest number of siblings (Riak's `max_siblings`): past it, blind writes are refused.
pub const DEFAULT_MAX_SIBLINGS: usize = 100;
/// Default sibling count past which a node logs a warning (Riak's `warn_siblings`).
pub const DEFAULT_WARN_SIBLINGS: usize = 25;

/// Largest gRPC message either end accepts. A key is kept under the object limit by refusing
/// blind writes, but replicas that each took writes during a partition can merge into more than
/// that; the cap leaves room for several times the largest object, so every key stays readable.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Size limits on keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
        }
    }
}

/// A request that must be refused before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum InputError {
    #[error("the key is empty: keys must be 1 to {max} bytes")]
    EmptyKey { max: usize },
    #[error("the key is {size} bytes, over the limit of {max} bytes: use a shorter key")]
    KeyTooLarge { size: usize, max: usize },
    #[error(
        "the value is {size} bytes, over the limit of {max} bytes: split it or store it elsewhere"
    )]
    ValueTooLarge { size: usize, max: usize },
    #[error("{name} = {value} is outside 1..={n} (N, the replication factor)")]
    InvalidQuorum {
        name: &'static str,
        value: u32,
        n: u32,
    },
    #[error(
        "sync_replicas = {value} is more than W = {w}: only replicas that acknowledge a write can fsync before it is acknowledged"
    )]
    InvalidSyncReplicas { value: u32, w: u32 },
}

impl InputError {
    /// The wire code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            InputError::EmptyKey { .. } => ErrorCode::EmptyKey,
            InputError::KeyTooLarge { .. } => ErrorCode::KeyTooLarge,
            InputError::ValueTooLarge { .. } => ErrorCode::ValueTooLarge,
            InputError::InvalidQuorum { .. } | InputError::InvalidSyncReplicas { .. } => {
                ErrorCode::InvalidQuorum
            }
        }
    }
}

impl Limits {
    /// Checks a key against the limits.
    pub fn check_key(&self, key: &[u8]) -> Result<(), InputError> {
        if key.is_empty() {
            return Err(InputError::EmptyKey {
                max: self.max_key_bytes,
            });
        }
        if key.len() > self.max_key_bytes {
            return Err(InputError::KeyTooLarge {
                size: key.len(),
                max: self.max_key_bytes,
            });
        }
        Ok(())
    }

    /// Checks a value against the limits.
    pub fn check_value(&self, value: &[u8]) -> Result<(), InputError> {
        if value.len() > self.max_value_bytes {
            return Err(InputError::ValueTooLarge {
                size: value.len(),
                max: self.max_value_bytes,
            });
        }
        Ok(())
    }
}

/// Checks a per-request quorum (`name` is "R" or "W") against the replication factor.
pub fn check_quorum(name: &'static str, value: u32, n: u32) -> Result<(), InputError> {
    if value == 0 || value > n {
        return Err(InputError::InvalidQuorum { name, value, n });
    }
    Ok(())
}

/// Checks how many of a write's W acknowledging replicas are to fsync first (0 to W).
pub fn check_sync_replicas(value: u32, w: u32) -> Result<(), InputError> {
    if value > w {
        return Err(InputError::InvalidSyncReplicas { value, w });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_at_both_edges() {
        let limits = Limits {
            max_key_bytes: 4,
            max_value_bytes: 8,
        };
        assert_eq!(limits.check_key(b""), Err(InputError::EmptyKey { max: 4 }));
        assert_eq!(limits.check_key(b"abcd"), Ok(()));
        assert_eq!(
            limits.check_key(b"abcde"),
            Err(InputError::KeyTooLarge { size: 5, max: 4 })
        );
        assert_eq!(limits.check_value(b""), Ok(()));
        assert_eq!(limits.check_value(b"12345678"), Ok(()));
        assert_eq!(
            limits.check_value(b"123456789"),
            Err(InputError::ValueTooLarge { size: 9, max: 8 })
        );
    }

    #[test]
    fn quorums_must_lie_in_one_to_n() {
        assert!(check_quorum("R", 0, 3).is_err());
        assert!(check_quorum("R", 1, 3).is_ok());
        assert!(check_sync_replicas(0, 2).is_ok());
        assert!(check_sync_replicas(2, 2).is_ok());
        let err = check_sync_replicas(3, 2).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidQuorum);
        assert!(err.to_string().contains("sync_replicas = 3"), "{err}");
        assert!(check_quorum("W", 3, 3).is_ok());
        let err = check_quorum("W", 4, 3).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidQuorum);
        assert!(err.to_string().contains("W = 4"));
    }
}
