//! Connections to the other nodes, one lazily connected HTTP/2 channel per address.
//!
//! Channels have no overall timeout: each call sets its own (a replica read or merge gets the
//! replica timeout, a forwarded write enough for its coordinator to give a verdict).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use dynamokv_common::limits::MAX_MESSAGE_BYTES;
use dynamokv_proto::v1::kv_client::KvClient;
use dynamokv_proto::v1::replica_client::ReplicaClient;

#[derive(Debug)]
pub struct Peers {
    channels: Mutex<HashMap<String, Channel>>,
    timeout: Duration,
}

impl Peers {
    pub fn new(timeout: Duration) -> Peers {
        Peers {
            channels: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    fn channel(&self, address: &str) -> Result<Channel, String> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = map.get(address) {
            return Ok(ch.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| format!("bad peer address {address:?}: {e}"))?
            .connect_timeout(self.timeout)
            .tcp_nodelay(true);
        let ch = endpoint.connect_lazy();
        map.insert(address.to_string(), ch.clone());
        Ok(ch)
    }

    pub fn replica(&self, address: &str) -> Result<ReplicaClient<Channel>, String> {
        Ok(ReplicaClient::new(self.channel(address)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    pub fn kv(&self, address: &str) -> Result<KvClient<Channel>, String> {
        Ok(KvClient::new(self.channel(address)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }
}
