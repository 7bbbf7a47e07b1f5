//! The DynamoKV client core, shared by the Rust API and the Python, Node.js and Swift SDKs.
//!
//! All client behaviour lives here so the SDKs behave the same: option defaults, input
//! validation, deadlines, retries and (in a later version) client-driven routing (paper 6.4).
//! The bindings only convert types.
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

pub use client::{
    Client, ClientBuilder, ClusterInfo, Context, GetResult, MemberInfo, NodeHealth, WriteOptions,
};
pub use dynamokv_common::{Limits, Member, PreferenceList, Ring};
pub use error::Error;
