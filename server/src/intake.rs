//! What a node accepts of a request before it decodes it (issue 19): the caller is known, and
//! the request's body is bounded, before a byte of the body is read.
//!
//! A tower layer in front of every gRPC service (`server.rs`), run for each request as its
//! headers arrive:
//! - **Who.** On a TLS node, a call of the node-to-node service must come from a node of this
//!   cluster (its data calls from a member of the ring), a client or operator call from an
//!   authenticated user (certificate or token), and plain text on the TLS port is refused,
//!   all before the body is read: a stranger can make the node hold a request's headers, never
//!   its body. A connection whose request passed here has proven itself (`connections.rs`).
//! - **How big.** Each service has its own cap on one request: client and operator calls
//!   `limits.max_request_bytes`, health and reflection 64 KiB, and the node-to-node service
//!   (which carries whole key states between replicas) up to 256 MiB, only to member nodes.
//! - **How many bytes at once.** The bodies being received are counted against a budget per
//!   connection (`limits.max_request_bytes_per_connection`, 64 MiB) and one per node for
//!   client and operator calls (`limits.max_request_bytes_in_flight`, 256 MiB), member nodes
//!   having a budget of their own; a request that would go past one is refused with
//!   OVERLOADED (nothing done, the client tries another node), as a request over the cap of
//!   requests in flight is. A unary request keeps its bytes counted until it is answered.
//! - **How long.** A unary request's body must have arrived within
//!   `limits.request_body_timeout_ms` (10 s) of its headers; a body sent a byte at a time holds
//!   nothing longer than that. (A connection that never finishes sending headers is closed by
//!   the connection table's unauthenticated timeout.)

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::access_control::{AccessControl, Principal};
use crate::connections::Class;
use crate::error::Error;
use crate::load_shedding::{Budget, HeldRead};
use crate::metrics::Metrics;
use crate::tls::{ConnInfo, Security};

/// The largest health or reflection request.
const SMALL_REQUEST_BYTES: usize = 64 * 1024;

/// The request's authenticated caller, left in its extensions for the handler (which would
/// otherwise authenticate it a second time).
#[derive(Debug, Clone)]
pub struct Authenticated(pub Principal);

/// Which service a request calls, by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Kv,
    Admin,
    /// The node-to-node service: `data` for calls that read or write replicas, `streaming` for
    /// the long-lived exchange stream.
    Replica {
        data: bool,
        streaming: bool,
    },
    /// Health, reflection, or a path no service serves.
    Other,
}

fn target(path: &str) -> (Target, &str) {
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    let t = match service {
        "dynamokv.v1.Kv" => Target::Kv,
        "dynamokv.v1.Admin" => Target::Admin,
        "dynamokv.v1.Replica" => Target::Replica {
            data: !matches!(method, "Ping" | "Gossip"),
            streaming: method == "Exchange",
        },
        _ => Target::Other,
    };
    (t, method)
}

/// The caps of [`Intake`] (from `limits`).
#[derive(Debug, Clone, Copy)]
pub struct IntakeLimits {
    pub max_request_bytes: usize,
    pub max_node_message_bytes: usize,
    pub body_timeout: Duration,
}

/// The node's intake: see the module doc.
#[derive(Debug)]
pub struct Intake {
    node_id: String,
    tls: bool,
    access: Arc<AccessControl>,
    limits: IntakeLimits,
    /// Bodies of client and operator calls (and, on a plain-text node, of every call).
    clients: Arc<Budget>,
    /// Bodies of member nodes' calls on a TLS node.
    nodes: Arc<Budget>,
    metrics: Arc<Metrics>,
}

/// What a request was granted: its size cap and the budgets its body is counted against.
struct Grant {
    /// Who the caller is, when access control found out.
    principal: Option<Principal>,
    max_bytes: usize,
    budgets: Vec<Arc<Budget>>,
    timeout: Option<Duration>,
    /// Bytes are given back frame by frame (a stream lives long; its messages do not).
    streaming: bool,
}

impl Intake {
    pub fn new(
        node_id: &str,
        tls: bool,
        access: Arc<AccessControl>,
        limits: IntakeLimits,
        client_budget: usize,
        metrics: Arc<Metrics>,
    ) -> Arc<Intake> {
        Arc::new(Intake {
            node_id: node_id.to_string(),
            tls,
            access,
            limits,
            clients: Arc::new(Budget::new(client_budget)),
            nodes: Arc::new(Budget::new(client_budget)),
            metrics,
        })
    }

    /// The bytes of client request bodies held now (tests, metrics).
    pub fn client_bytes(&self) -> u64 {
        self.clients.used()
    }

    fn overloaded(&self, reason: String) -> Status {
        Error::Overloaded {
            node: self.node_id.clone(),
            reason,
        }
        .into()
    }

    /// Decides on a request from its headers alone: who calls, and what its body may be.
    async fn admit(&self, req: &http::request::Parts) -> Result<Grant, Status> {
        let conn = req.extensions.get::<ConnInfo>();
        if let Some((open, cap)) = conn.and_then(|c| c.over_cap) {
            self.metrics.overloaded("connections");
            return Err(self.overloaded(format!(
                "{open} connections open, the cap is {cap}; this one closes"
            )));
        }
        let (target, method) = target(req.uri.path());
        let state = conn.and_then(|c| c.state.as_ref());
        let conn_budget = state.map(|s| Arc::clone(&s.bytes));
        let prove = |class| {
            if let Some(s) = state {
                s.prove(class);
            }
        };
        let mut grant = Grant {
            principal: None,
            max_bytes: self.limits.max_request_bytes,
            budgets: vec![Arc::clone(&self.clients)],
            timeout: Some(self.limits.body_timeout),
            streaming: false,
        };
        let plain_on_tls = matches!(conn.map(|c| &c.security), Some(Security::PlainOnTlsPort));
        if self.tls && plain_on_tls {
            // Nothing is served in plain text on a TLS port: not even health or reflection.
            let who = tonic_request(req);
            return Err(self.access.authenticate(&who).await.err().map_or_else(
                || Status::unauthenticated("this node requires TLS"),
                Status::from,
            ));
        }
        match target {
            Target::Replica { data, streaming } => {
                if self.tls {
                    let who = tonic_request(req);
                    let what = format!("Replica.{method}");
                    self.access.check_peer(&who, &what, data)?;
                    prove(Class::Node);
                    grant.budgets = vec![Arc::clone(&self.nodes)];
                } else {
                    prove(Class::Client);
                }
                grant.max_bytes = self.limits.max_node_message_bytes;
                if streaming {
                    grant.timeout = None;
                    grant.streaming = true;
                }
            }
            Target::Kv | Target::Admin => {
                if self.tls {
                    // The handler reads it from the extensions (see `Authenticated`).
                    let who = self.access.authenticate(&tonic_request(req)).await?;
                    // A node certificate may only forward a client's write, as a member: any
                    // other call of it is refused before its body is read.
                    let forward = matches!(target, Target::Kv)
                        && matches!(method, "Put" | "Delete")
                        && req
                            .headers
                            .contains_key(crate::coordinator::FORWARDED_METADATA);
                    self.access.check_node(&who, forward)?;
                    grant.principal = Some(who);
                }
                prove(Class::Client);
            }
            Target::Other => grant.max_bytes = SMALL_REQUEST_BYTES,
        }
        if let Some(b) = conn_budget
            && !matches!(target, Target::Replica { .. } if self.tls)
        {
            grant.budgets.push(b);
        }
        // A request that declares a body larger than its cap is refused now.
        if let Some(len) = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && len > grant.max_bytes as u64 + 5
        {
            self.metrics.request_refused_early("too_large");
            return Err(too_large(len as usize, grant.max_bytes));
        }
        Ok(grant)
    }
}

fn too_large(size: usize, max: usize) -> Status {
    Status::out_of_range(format!(
        "the request is larger than the {max} bytes this node takes for it (at least {size})"
    ))
}

/// The request's headers and connection as a `tonic::Request`, for access control.
fn tonic_request(req: &http::request::Parts) -> tonic::Request<()> {
    let mut r = tonic::Request::new(());
    *r.metadata_mut() = tonic::metadata::MetadataMap::from_headers(req.headers.clone());
    if let Some(c) = req.extensions.get::<ConnInfo>() {
        r.extensions_mut().insert(c.clone());
    }
    r
}

/// The layer that puts an [`Intake`] in front of a service.
#[derive(Debug, Clone)]
pub struct IntakeLayer(pub Arc<Intake>);

impl<S> Layer<S> for IntakeLayer {
    type Service = IntakeService<S>;

    fn layer(&self, inner: S) -> IntakeService<S> {
        IntakeService {
            inner,
            intake: Arc::clone(&self.0),
        }
    }
}

#[derive(Debug, Clone)]
pub struct IntakeService<S> {
    inner: S,
    intake: Arc<Intake>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S> Service<http::Request<Body>> for IntakeService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let intake = Arc::clone(&self.intake);
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let grant = match intake.admit(&parts).await {
                Ok(grant) => grant,
                Err(status) => return Ok(status.into_http()),
            };
            let held = Arc::new(Held {
                budgets: grant.budgets,
                bytes: AtomicU64::new(0),
            });
            if let Some(who) = grant.principal {
                parts.extensions.insert(Authenticated(who));
            }
            let body = Body::new(Limited {
                inner: body,
                held: Arc::clone(&held),
                received: 0,
                max_bytes: grant.max_bytes,
                deadline: grant.timeout.map(|t| Box::pin(tokio::time::sleep(t))),
                streaming: grant.streaming,
                intake: Arc::clone(&intake),
            });
            let answer = inner.call(http::Request::from_parts(parts, body)).await;
            // A unary request's bytes count until it is answered (its decoded message lives
            // until then).
            drop(held);
            // A large read keeps its place in the read budget until its answer is sent.
            answer.map(
                |mut response| match response.extensions_mut().remove::<HeldRead>() {
                    None => response,
                    Some(permit) => response.map(|b| {
                        Body::new(Holding {
                            inner: b,
                            _permit: permit,
                        })
                    }),
                },
            )
        })
    }
}

/// Bytes a request holds of its budgets, given back when it is dropped.
#[derive(Debug)]
struct Held {
    budgets: Vec<Arc<Budget>>,
    bytes: AtomicU64,
}

impl Held {
    fn take(&self, n: u64) -> Result<(), usize> {
        for (i, b) in self.budgets.iter().enumerate() {
            if !b.try_take(n) {
                for taken in &self.budgets[..i] {
                    taken.give(n);
                }
                return Err(i);
            }
        }
        self.bytes.fetch_add(n, Ordering::AcqRel);
        Ok(())
    }

    fn give_all(&self) {
        let n = self.bytes.swap(0, Ordering::AcqRel);
        if n > 0 {
            for b in &self.budgets {
                b.give(n);
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.give_all();
    }
}

/// A request body read under its grant.
struct Limited {
    inner: Body,
    held: Arc<Held>,
    received: usize,
    max_bytes: usize,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    streaming: bool,
    intake: Arc<Intake>,
}

impl HttpBody for Limited {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.streaming {
            // The last frame was handed on: its bytes are the decoder's now.
            self.held.give_all();
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(f) => f,
            Poll::Pending => {
                if let Some(d) = &mut self.deadline
                    && d.as_mut().poll(cx).is_ready()
                {
                    self.intake.metrics.request_refused_early("body_timeout");
                    self.held.give_all();
                    return Poll::Ready(Some(Err(Status::deadline_exceeded(
                        "the request's body did not arrive in time: nothing was done",
                    ))));
                }
                return Poll::Pending;
            }
        };
        let Some(frame) = frame else {
            self.deadline = None;
            return Poll::Ready(None);
        };
        let frame = match frame {
            Ok(f) => f,
            Err(e) => return Poll::Ready(Some(Err(Status::from_error(e.into())))),
        };
        if let Some(data) = frame.data_ref() {
            let n = data.len();
            self.received += n;
            if !self.streaming && self.received > self.max_bytes.saturating_add(5) {
                self.intake.metrics.request_refused_early("too_large");
                return Poll::Ready(Some(Err(too_large(self.received, self.max_bytes))));
            }
            if let Err(which) = self.held.take(n as u64) {
                self.intake.metrics.request_refused_early("bytes_in_flight");
                let reason = if which == 0 {
                    "request bytes in flight on this node are at the node's cap".to_string()
                } else {
                    "request bytes in flight on this connection are at the connection's cap"
                        .to_string()
                };
                return Poll::Ready(Some(Err(self.intake.overloaded(reason))));
            }
        } else {
            self.deadline = None;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that holds a read permit until it is sent (dropped).
struct Holding {
    inner: Body,
    _permit: HeldRead,
}

impl HttpBody for Holding {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_service_and_whether_they_carry_data() {
        assert_eq!(target("/dynamokv.v1.Kv/Put").0, Target::Kv);
        assert_eq!(target("/dynamokv.v1.Admin/UserAdd").0, Target::Admin);
        assert_eq!(
            target("/dynamokv.v1.Replica/MergeLocal").0,
            Target::Replica {
                data: true,
                streaming: false
            }
        );
        assert_eq!(
            target("/dynamokv.v1.Replica/Gossip").0,
            Target::Replica {
                data: false,
                streaming: false
            }
        );
        assert_eq!(
            target("/dynamokv.v1.Replica/Exchange").0,
            Target::Replica {
                data: true,
                streaming: true
            }
        );
        assert_eq!(target("/grpc.health.v1.Health/Check").0, Target::Other);
        assert_eq!(target("garbage").0, Target::Other);
    }

    #[test]
    fn budgets_refuse_what_would_pass_their_cap_and_take_nothing_then() {
        let node = Arc::new(Budget::new(100));
        let conn = Arc::new(Budget::new(40));
        let a = Held {
            budgets: vec![Arc::clone(&node), Arc::clone(&conn)],
            bytes: AtomicU64::new(0),
        };
        assert!(a.take(30).is_ok());
        assert_eq!(a.take(20), Err(1), "the connection's cap");
        assert_eq!((node.used(), conn.used()), (30, 30));
        let b = Held {
            budgets: vec![Arc::clone(&node)],
            bytes: AtomicU64::new(0),
        };
        assert!(b.take(70).is_ok());
        assert_eq!(a.take(1), Err(0), "the node's cap");
        drop(a);
        assert_eq!((node.used(), conn.used()), (70, 0));
        drop(b);
        assert_eq!(node.used(), 0);
    }
}
