//! The shared truth of DynamoKV: everything the server and client-core must compute identically.
//!
//! Pure code only: no sockets, clocks or files. Callers pass the time in where it matters.
//!
//! - [`ring`]: key hashing (paper 4.2), equal-sized partitions (paper 6.2, strategy 3) and
//!   preference lists over distinct physical nodes (paper 4.3).
//! - [`versioning`]: dotted version vectors, the per-key set of concurrent versions (paper 4.4).
//! - [`context`]: the opaque version context handed to clients, signed by the nodes.
//! - [`sloppy_quorum`]: which nodes a request goes to and which answers count (paper 4.6, 4.9),
//!   for a node's coordinator and for a client coordinating its own reads (paper 6.4).
//! - [`limits`]: input validation shared by client and server.
//! - [`error_code`]: the stable error codes carried on the wire.

pub mod context;
pub mod error_code;
pub mod limits;
pub mod ring;
pub mod sloppy_quorum;
pub mod versioning;

pub use context::{
    ContextError, ContextKey, ContextKeys, KeyLookup, combine_contexts, decode_context,
    inspect_context, sign_context,
};
pub use error_code::ErrorCode;
pub use limits::{InputError, Limits};
pub use ring::{Member, PreferenceList, Ring, RingError, key_position};
pub use versioning::{
    Actor, CausalContext, Dot, HistoryLimits, Sibling, Truncated, UpdateOutcome, VersionVector,
    VersionedState, WriteId,
};
