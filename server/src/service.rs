//! The gRPC services: request conversion and nothing else. `Kv` hands client requests to the
//! [`Coordinator`]; `Replica` serves other nodes from the [`LocalReplica`].

use std::sync::Arc;

use tonic::{Request, Response, Status};

use dynamokv_common::VersionedState;
use dynamokv_proto::v1 as pb;

use crate::coordinator::{Coordinator, FORWARDED_METADATA};
use crate::error::Error;
use crate::replica::LocalReplica;

#[derive(Debug, Clone)]
pub struct KvService {
    coordinator: Arc<Coordinator>,
}

impl KvService {
    pub fn new(coordinator: Arc<Coordinator>) -> Self {
        KvService { coordinator }
    }
}

fn required<T>(field: Option<T>, name: &'static str) -> Result<T, Status> {
    field.ok_or_else(|| Error::MissingField(name).into())
}

fn forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().contains_key(FORWARDED_METADATA)
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let req = req.into_inner();
        let key = required(req.key, "key")?;
        let got = self.coordinator.get(key, req.r).await?;
        Ok(Response::new(pb::GetResponse {
            values: got.values,
            context: got.context,
        }))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let fwd = forwarded(&req);
        let req = req.into_inner();
        let key = required(req.key, "key")?;
        let value = required(req.value, "value")?;
        let context = self
            .coordinator
            .put(key, Some(value), &req.context, req.w, fwd)
            .await?;
        Ok(Response::new(pb::PutResponse { context }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let fwd = forwarded(&req);
        let req = req.into_inner();
        let key = required(req.key, "key")?;
        let context = self
            .coordinator
            .put(key, None, &req.context, req.w, fwd)
            .await?;
        Ok(Response::new(pb::DeleteResponse { context }))
    }

    async fn membership(
        &self,
        _req: Request<pb::MembershipRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let view = self.coordinator.membership().current();
        Ok(Response::new(pb::MembershipResponse {
            cluster_name: view.cluster_name.clone(),
            partitions: view.ring.partition_count(),
            n: view.quorums.n,
            r: view.quorums.r,
            w: view.quorums.w,
            members: view.ring.members().iter().map(|m| m.to_proto()).collect(),
            self_id: view.self_id.clone(),
        }))
    }
}

#[derive(Debug, Clone)]
pub struct ReplicaService {
    node_id: String,
    local: Arc<LocalReplica>,
}

impl ReplicaService {
    pub fn new(node_id: String, local: Arc<LocalReplica>) -> Self {
        ReplicaService { node_id, local }
    }
}

#[tonic::async_trait]
impl pb::replica_server::Replica for ReplicaService {
    async fn ping(
        &self,
        _req: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        Ok(Response::new(pb::PingResponse {
            node_id: self.node_id.clone(),
            actor: self.local.actor().0,
            vector_truncations: self.local.truncations(),
        }))
    }

    async fn read_local(
        &self,
        req: Request<pb::ReadLocalRequest>,
    ) -> Result<Response<pb::ReadLocalResponse>, Status> {
        let key = required(req.into_inner().key, "key")?;
        let state = self.local.read(key).await.map_err(Error::from)?;
        Ok(Response::new(pb::ReadLocalResponse {
            state: state.map(|s| s.to_proto()),
            actor: self.local.actor().0,
        }))
    }

    async fn merge_local(
        &self,
        req: Request<pb::MergeLocalRequest>,
    ) -> Result<Response<pb::MergeLocalResponse>, Status> {
        let req = req.into_inner();
        let key = required(req.key, "key")?;
        let state = required(req.state, "state")?;
        let state = VersionedState::from_proto(&state)
            .map_err(|e| Status::invalid_argument(format!("bad replica state: {e}")))?;
        self.local.merge(key, state).await.map_err(Error::from)?;
        Ok(Response::new(pb::MergeLocalResponse {}))
    }
}
