//! client-core's conformance helpers (`dynamokv_client::inspect`), for the vectors test: pure
//! functions, no I/O. 128- and 64-bit integers travel as decimal strings, which `index.js`
//! turns into `BigInt`s; write ids as 32 lowercase hex digits, as in `DynamoKVError.writeId`.

use napi::Result;
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use dynamokv_client::inspect::{self, RingMember};

use crate::error::{invalid_config, to_napi, whole_number};

/// A node of a membership, as `inspect.preferenceList` takes it.
#[napi(object)]
#[derive(Debug)]
pub struct InspectMember {
    pub id: String,
    pub address: String,
    pub zone: String,
    pub weight: f64,
}

#[napi(object)]
#[derive(Debug)]
pub struct InspectPreferenceList {
    pub replicas: Vec<String>,
    pub fallbacks: Vec<String>,
}

/// One `(actor, counter)` of a context's clock or dot cloud, both as decimal strings.
#[napi(object)]
#[derive(Debug)]
pub struct InspectDot {
    pub actor: String,
    pub counter: String,
}

#[napi(object)]
#[derive(Debug)]
pub struct InspectContext {
    pub clock: Vec<InspectDot>,
    pub cloud: Vec<InspectDot>,
    /// 32 lowercase hex digits each.
    pub seen_writes: Vec<String>,
    pub fastest_replica: Option<String>,
}

/// The key's ring position (MD5, big-endian u128) as a decimal string.
#[napi]
pub fn inspect_key_position(key: Buffer) -> String {
    inspect::key_position(&key).to_string()
}

#[napi]
pub fn inspect_partition_of(key: Buffer, partitions: f64) -> Result<u32> {
    let partitions = whole_number("partitions", partitions, invalid_config).map_err(to_napi)?;
    inspect::partition_of(&key, partitions).map_err(to_napi)
}

#[napi]
pub fn inspect_preference_list(
    members: Vec<InspectMember>,
    partitions: f64,
    key: Buffer,
    n: f64,
) -> Result<InspectPreferenceList> {
    let number = |name: &str, v: f64| whole_number(name, v, invalid_config).map_err(to_napi);
    let members = members
        .into_iter()
        .map(|m| {
            Ok(RingMember {
                weight: number("weight", m.weight)?,
                id: m.id,
                address: m.address,
                zone: m.zone,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let (replicas, fallbacks) = inspect::preference_list(
        &members,
        number("partitions", partitions)?,
        &key,
        number("n", n)?,
    )
    .map_err(to_napi)?;
    Ok(InspectPreferenceList {
        replicas,
        fallbacks,
    })
}

#[napi]
pub fn inspect_describe_context(key: Buffer, context: Buffer) -> Result<InspectContext> {
    let d = inspect::describe_context(&key, &context).map_err(to_napi)?;
    let dots = |dots: Vec<(u64, u64)>| {
        dots.into_iter()
            .map(|(actor, counter)| InspectDot {
                actor: actor.to_string(),
                counter: counter.to_string(),
            })
            .collect()
    };
    Ok(InspectContext {
        clock: dots(d.clock),
        cloud: dots(d.cloud),
        seen_writes: d
            .seen_writes
            .into_iter()
            .map(|w| format!("{w:032x}"))
            .collect(),
        fastest_replica: d.fastest_replica,
    })
}
