//! The DynamoKV client core, shared by the Rust API and the Python, Node.js and Swift SDKs.
//!
//! All client behaviour lives here so the SDKs behave the same: option defaults, input
//! validation, deadlines, retries, client-driven coordination (paper 6.4: the client pulls the
//! ring, coordinates reads itself and sends writes straight to a replica of the key),
//! reconciliation with resolvers, and batches. The bindings only convert types.
//!
//! ```no_run
//! # async fn demo() -> Result<(), dynamokv_client::Error> {
//! let client = dynamokv_client::Client::connect(["127.0.0.1:7070"]).await?;
//! client.put("cart:1", b"apple".to_vec(), None).await?;
//! let got = client.get("cart:1").await?;
//! assert_eq!(got.values, vec![b"apple".to_vec()]);
//! client.delete("cart:1", &got.context).await?;
//! # Ok(()) }
//! ```

mod client;
mod error;
mod failure_detector;
pub mod inspect;
mod nodes;
mod read_coordination;
pub mod reconciliation;
mod routing;

pub use client::{
    Client, ClientBuilder, ClusterInfo, Context, Coordination, DEFAULT_BATCH_CONCURRENCY,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_RETRIES, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_RING_REFRESH_INTERVAL, DEFAULT_TLS_RELOAD_INTERVAL, GetResult, MemberInfo, NodeHealth,
    PutItem, Resolved, WriteOptions,
};
pub use dynamokv_common::{Limits, Member, PreferenceList, Ring};
pub use error::Error;
pub use reconciliation::{Resolver, ResolverError, Siblings};
