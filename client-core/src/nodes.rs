//! The nodes a client talks to: one connection per node address, and the client's local view
//! of which of them answer (paper 4.8.3), with the probes that bring a silent node back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use dynamokv_proto::tls::ClientTls;

use dynamokv_common::limits::MAX_MESSAGE_BYTES;
use dynamokv_proto::v1 as pb;
use dynamokv_proto::v1::kv_client::KvClient;

use crate::Error;
use crate::failure_detector::{FailureDetector, next_backoff};

/// A node's client service over the client's connection to it, every request carrying the
/// client's token (if it has one).
pub(crate) type Kv = KvClient<InterceptedService<Channel, Credentials>>;

/// Adds the client's bearer token to each request.
#[derive(Debug, Clone, Default)]
pub(crate) struct Credentials {
    authorization: Option<MetadataValue<Ascii>>,
}

impl Credentials {
    /// Credentials sending `token` (checked to be header text).
    pub(crate) fn token(token: Option<&str>) -> Result<Credentials, Error> {
        let authorization = match token {
            None => None,
            Some(t) => Some(format!("Bearer {}", t.trim()).parse().map_err(|_| {
                Error::InvalidConfig {
                    message: "the token holds characters a token never has: use the token `dynamokv admin user add` printed".into(),
                }
            })?),
        };
        Ok(Credentials { authorization })
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(a) = &self.authorization {
            req.metadata_mut().insert("authorization", a.clone());
        }
        Ok(req)
    }
}

/// The least time a probe waits for its answer.
const MIN_PROBE_TIMEOUT: Duration = Duration::from_millis(250);

/// Connections and health of every node the client knows, by `host:port` address.
#[derive(Debug)]
pub(crate) struct Nodes {
    connect_timeout: Duration,
    /// The longest a probe waits for an answer.
    probe_timeout: Duration,
    channels: Mutex<HashMap<String, Channel>>,
    pub(crate) health: FailureDetector,
    /// The next request id: every request carries one and every answer echoes it.
    next_request: AtomicU64,
    /// Woken when the client should pull the ring at once (a node stopped answering, or said
    /// the ring moved on).
    pub(crate) pull_ring: Notify,
    /// TLS for every connection, when the cluster serves it.
    tls: Option<ClientTls>,
    credentials: Credentials,
}

impl Nodes {
    pub(crate) fn new(
        connect_timeout: Duration,
        probe_timeout: Duration,
        tls: Option<ClientTls>,
        credentials: Credentials,
    ) -> Nodes {
        Nodes {
            tls,
            credentials,
            connect_timeout,
            probe_timeout,
            channels: Mutex::new(HashMap::new()),
            health: FailureDetector::default(),
            next_request: AtomicU64::new(rand::random::<u64>() >> 1 | 1),
            pull_ring: Notify::new(),
        }
    }

    /// A fresh request id (never 0, which means "none" on the wire).
    pub(crate) fn request_id(&self) -> u64 {
        self.next_request.fetch_add(1, Ordering::Relaxed).max(1)
    }

    /// A client of the node at `address` over its one shared connection, made on first use.
    pub(crate) fn kv(&self, address: &str) -> Result<Kv, Error> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match channels.get(address) {
            Some(c) => c.clone(),
            None => {
                let endpoint = endpoint(address, self.connect_timeout)?;
                let c = match &self.tls {
                    None => endpoint.connect_lazy(),
                    Some(tls) => dynamokv_proto::tls::connect_lazy(&endpoint, tls.clone()),
                };
                channels.insert(address.to_string(), c.clone());
                c
            }
        };
        Ok(
            KvClient::with_interceptor(channel, self.credentials.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
    }

    /// Drops the connections of nodes not in `keep` (members that left the ring).
    pub(crate) fn retain(&self, keep: &[String]) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels.retain(|a, _| keep.iter().any(|k| k == a));
    }

    pub(crate) fn is_up(&self, address: &str) -> bool {
        self.health.is_up(address)
    }

    /// Records that the node answered.
    pub(crate) fn answered(&self, address: &str) {
        if self.health.record_answer(address) {
            tracing::info!(node = %address, "node answers again");
        }
    }

    /// Marks the node down after it failed to answer, and starts probing it.
    pub(crate) fn silent(self: &Arc<Self>, address: &str) {
        if !self.health.record_silence(address) {
            return;
        }
        tracing::info!(node = %address, "node does not answer: avoided until a probe gets an answer");
        self.pull_ring.notify_one();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(probe(Arc::downgrade(self), address.to_string()));
    }
}

/// Probes the node at `address` (a `Membership` call) with exponential backoff until it
/// answers, then marks it up. Ends when the client is dropped.
async fn probe(nodes: Weak<Nodes>, address: String) {
    let mut backoff = None;
    loop {
        let wait = next_backoff(backoff);
        backoff = Some(wait);
        tokio::time::sleep(wait).await;
        let Some(nodes) = nodes.upgrade() else {
            return;
        };
        let timeout = nodes.probe_timeout.min(wait.max(MIN_PROBE_TIMEOUT));
        let mut req = tonic::Request::new(pb::MembershipRequest {});
        req.set_timeout(timeout);
        let Ok(mut kv) = nodes.kv(&address) else {
            return;
        };
        if let Ok(Ok(_)) = tokio::time::timeout(timeout, kv.membership(req)).await {
            nodes.answered(&address);
            return;
        }
    }
}

/// Checks a `host:port` address and makes the endpoint to reach it.
pub(crate) fn endpoint(address: &str, connect_timeout: Duration) -> Result<Endpoint, Error> {
    let trimmed = address.trim();
    let bad = || Error::InvalidConfig {
        message: format!("address {address:?} is not a host:port address"),
    };
    let (host, port) = trimmed.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(Endpoint::from_shared(format!("http://{trimmed}"))
        .map_err(|_| bad())?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true))
}

/// Refuses an answer that echoes another request's id.
pub(crate) fn check_echo(sent: u64, echoed: u64, address: &str) -> Result<(), Error> {
    if echoed == sent {
        return Ok(());
    }
    Err(Error::Internal {
        message: format!(
            "node {address} answered request {sent} with the answer to request {echoed}: the answer was dropped"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_to_another_request_is_refused() {
        assert!(check_echo(7, 7, "n:1").is_ok());
        let e = check_echo(7, 6, "n:1").unwrap_err();
        assert!(matches!(e, Error::Internal { .. }), "{e:?}");
        assert!(
            check_echo(7, 0, "n:1").is_err(),
            "an answer without the id is refused too"
        );
    }

    #[test]
    fn request_ids_are_distinct_and_never_zero() {
        let nodes = Nodes::new(
            Duration::from_secs(1),
            Duration::from_secs(1),
            None,
            Credentials::default(),
        );
        let ids: std::collections::HashSet<u64> = (0..1000).map(|_| nodes.request_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(!ids.contains(&0));
    }
}
