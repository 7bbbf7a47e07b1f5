//! Access control of the standard gRPC services a node serves beside its own: health and
//! server reflection (issue 19).
//!
//! On a node that serves TLS, health answers any TLS client, with or without credentials:
//! load balancers and orchestrators probe it that way, and it tells no more than whether the
//! node serves. Reflection describes the whole API, operator and node-to-node services
//! included, so it answers an authenticated user only (any user: it needs no grant). Plain text
//! on a TLS port gets `UNAUTHENTICATED` ("this node requires TLS") from both, as from every
//! other service. A plain-text node serves both to anyone, as it serves everything.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;

use crate::access_control::AccessControl;

/// Who may call a guarded service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callers {
    /// Any client over TLS, credentials or not (health).
    TlsClients,
    /// Authenticated users only (reflection).
    Users,
}

/// `inner`, answering only the callers `callers` names (see the module doc).
#[derive(Debug, Clone)]
pub struct Guarded<S> {
    inner: S,
    access: Arc<AccessControl>,
    callers: Callers,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, access: Arc<AccessControl>, callers: Callers) -> Guarded<S> {
        Guarded {
            inner,
            access,
            callers,
        }
    }
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<Body>> for Guarded<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        // The clone that was polled ready serves this request (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (access, callers) = (Arc::clone(&self.access), self.callers);
        Box::pin(async move {
            // What access control reads of a request: its metadata and its connection.
            let probe = tonic::Request::from_parts(
                MetadataMap::from_headers(req.headers().clone()),
                req.extensions().clone(),
                (),
            );
            if let Err(e) = access.check_standard(&probe, S::NAME, callers).await {
                return Ok(tonic::Status::from(e).into_http());
            }
            inner.call(req).await
        })
    }
}
