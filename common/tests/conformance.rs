//! The conformance vectors: `conformance/vectors.json`, checked here against the shared code
//! and by the Python and Node.js SDK test suites against their bindings, so that a change to
//! key hashing, the ring and preference lists or the context encoding cannot go unnoticed.
//!
//! Every vector is built here from `dynamokv-common` and compared, field by field, with the
//! committed file. `DYNAMOKV_BLESS=1 cargo test --release -p dynamokv-common --test conformance`
//! rewrites the file instead; the vectors describe the wire format, so regenerating them is a
//! wire-format change and needs a CHANGELOG.md entry (see conformance/README.md).

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::path::PathBuf;

use prost::Message;
use serde::{Deserialize, Serialize};

use dynamokv_common::versioning::{Actor, CausalContext, Dot, VersionVector, WriteId};
use dynamokv_common::{
    ContextError, ContextKey, Member, Ring, combine_contexts, decode_context, inspect_context,
    key_position, sign_context,
};
use dynamokv_proto::v1 as pb;

const SCHEMA_VERSION: u32 = 1;
const DESCRIPTION: &str = "DynamoKV conformance vectors: key hashing, the ring and preference \
lists, and the version context encoding. Generated from dynamokv-common by \
common/tests/conformance.rs; do not edit by hand (see conformance/README.md).";
const BLESS_COMMAND: &str =
    "DYNAMOKV_BLESS=1 cargo test --release -p dynamokv-common --test conformance";
/// The partition counts every key's partition is given for.
const KEY_PARTITION_COUNTS: [u32; 3] = [8, 64, 1024];
/// How many partitions' owners each ring vector lists.
const LISTED_OWNERS: u32 = 16;

// ---------------------------------------------------------------------------------------------
// The file's schema. Field order here is the order in the file.

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vectors {
    description: String,
    schema_version: u32,
    keys: Vec<KeyVector>,
    rings: Vec<RingVector>,
    contexts: Vec<ContextVector>,
    invalid_contexts: Vec<InvalidContextVector>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyVector {
    name: String,
    key_hex: String,
    /// The ring position, a u128 in decimal.
    position: String,
    partition: KeyPartitions,
}

/// A key's partition on rings of 8, 64 and 1024 partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyPartitions {
    #[serde(rename = "8")]
    q8: u32,
    #[serde(rename = "64")]
    q64: u32,
    #[serde(rename = "1024")]
    q1024: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RingVector {
    name: String,
    partitions: u32,
    n: u32,
    members: Vec<MemberVector>,
    /// The owner of partitions 0, 1, ... (the first 16, or all when fewer).
    partition_owners: Vec<String>,
    keys: Vec<RingKeyVector>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberVector {
    id: String,
    address: String,
    zone: String,
    weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RingKeyVector {
    name: String,
    key_hex: String,
    partition: u32,
    preference_list: Vec<String>,
    fallbacks: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContextVector {
    name: String,
    key_hex: String,
    /// 3 for signed contexts (`"DKV" 0x03`, signed with the test keys of
    /// common/tests/conformance.rs: clients do not check signatures), 0 for the empty context
    /// (no bytes).
    format: u32,
    bytes_hex: String,
    decoded: DecodedContext,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecodedContext {
    clock: Vec<DotVector>,
    cloud: Vec<DotVector>,
    /// 32 lowercase hex digits each (the u128 write id, big-endian).
    seen_writes: Vec<String>,
    fastest_replica: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DotVector {
    /// A u64 in decimal.
    actor: String,
    counter: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidContextVector {
    name: String,
    key_hex: String,
    bytes_hex: String,
    /// "malformed", "wrong_key", "invalid" (well framed, but a vector no writer produces) or
    /// "not_issued" (an unsigned context of an earlier release).
    error: String,
}

// ---------------------------------------------------------------------------------------------
// The vectors, built from the shared code.

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    assert_eq!(s.len() % 2, 0, "odd-length hex string {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_else(|_| panic!("bad hex string {s:?}"))
        })
        .collect()
}

/// The keys of the `keys` section, by name (1 to 4096 bytes: every length a key may have).
fn keys() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("one-byte-ascii", b"a".to_vec()),
        ("one-byte-0x00", vec![0x00]),
        ("one-byte-0xff", vec![0xff]),
        ("two-bytes-0x00-0xff", vec![0x00, 0xff]),
        ("word", b"hello".to_vec()),
        ("cart-42", b"cart:42".to_vec()),
        ("cart-43", b"cart:43".to_vec()),
        ("user-profile", b"user:1234:profile".to_vec()),
        ("path", b"/tenants/acme/orders/2024-06-01/000123".to_vec()),
        ("digits", b"1234567890".to_vec()),
        ("space-and-control", b" key\twith\nwhitespace ".to_vec()),
        ("utf8-two-byte", "café".as_bytes().to_vec()),
        ("utf8-three-byte", "日本語のキー".as_bytes().to_vec()),
        ("utf8-four-byte", "🔑🗝️".as_bytes().to_vec()),
        ("utf8-mixed", "Grüße, мир, 世界!".as_bytes().to_vec()),
        ("nul-inside-text", b"a\x00b".to_vec()),
        ("binary-zeros-16", vec![0x00; 16]),
        ("binary-ones-16", vec![0xff; 16]),
        (
            "binary-mixed",
            vec![0x00, 0xff, 0x00, 0x80, 0x7f, 0x01, 0xfe, 0x00],
        ),
        ("ascii-255", vec![b'x'; 255]),
        (
            "max-length-4096",
            (0..4096).map(|i| (i % 256) as u8).collect(),
        ),
    ]
}

fn key(name: &str) -> Vec<u8> {
    keys()
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no key named {name}"))
        .1
}

fn partition_of(key: &[u8], partitions: u32) -> u32 {
    let ring = Ring::new(partitions, vec![Member::new("solo", "127.0.0.1:7070")])
        .expect("a ring of one node");
    ring.partition_of(key)
}

fn key_vectors() -> Vec<KeyVector> {
    let [q8, q64, q1024] = KEY_PARTITION_COUNTS;
    keys()
        .into_iter()
        .map(|(name, k)| KeyVector {
            name: name.to_string(),
            key_hex: hex(&k),
            position: key_position(&k).to_string(),
            partition: KeyPartitions {
                q8: partition_of(&k, q8),
                q64: partition_of(&k, q64),
                q1024: partition_of(&k, q1024),
            },
        })
        .collect()
}

struct RingSpec {
    name: &'static str,
    partitions: u32,
    n: u32,
    /// In the order listed in the file (the ring must not depend on it).
    members: Vec<Member>,
    keys: [&'static str; 8],
}

fn ring_specs() -> Vec<RingSpec> {
    let m = |id: &str, i: u32| Member::new(id, format!("10.0.0.{i}:7070"));
    vec![
        RingSpec {
            name: "three-nodes-q64",
            partitions: 64,
            n: 3,
            members: vec![m("node-a", 1), m("node-b", 2), m("node-c", 3)],
            keys: [
                "one-byte-ascii",
                "word",
                "cart-42",
                "cart-43",
                "utf8-three-byte",
                "binary-zeros-16",
                "binary-ones-16",
                "max-length-4096",
            ],
        },
        RingSpec {
            name: "five-nodes-two-zones-q1024",
            partitions: 1024,
            n: 3,
            members: vec![
                m("node-1", 1).with_zone("az-1"),
                m("node-2", 2).with_zone("az-2"),
                m("node-3", 3).with_zone("az-1"),
                m("node-4", 4).with_zone("az-2"),
                m("node-5", 5).with_zone("az-1"),
            ],
            keys: [
                "one-byte-0x00",
                "one-byte-0xff",
                "cart-42",
                "user-profile",
                "path",
                "utf8-two-byte",
                "utf8-four-byte",
                "binary-mixed",
            ],
        },
        RingSpec {
            name: "four-nodes-weighted-q128",
            partitions: 128,
            n: 3,
            members: vec![
                m("alpha", 1),
                m("beta", 2),
                m("gamma", 3).with_weight(2),
                m("delta", 4),
            ],
            keys: [
                "two-bytes-0x00-0xff",
                "digits",
                "cart-42",
                "space-and-control",
                "utf8-mixed",
                "nul-inside-text",
                "ascii-255",
                "max-length-4096",
            ],
        },
        RingSpec {
            name: "one-node-q8",
            partitions: 8,
            n: 3,
            members: vec![m("only", 1)],
            keys: [
                "one-byte-ascii",
                "one-byte-0x00",
                "one-byte-0xff",
                "word",
                "cart-42",
                "utf8-three-byte",
                "binary-ones-16",
                "max-length-4096",
            ],
        },
        RingSpec {
            name: "six-nodes-three-zones-q256",
            partitions: 256,
            n: 3,
            // Deliberately not in id order.
            members: vec![
                m("n5", 6).with_zone("zone-c"),
                m("n2", 3).with_zone("zone-c"),
                m("n0", 1).with_zone("zone-a"),
                m("n4", 5).with_zone("zone-b"),
                m("n1", 2).with_zone("zone-b"),
                m("n3", 4).with_zone("zone-a"),
            ],
            keys: [
                "one-byte-ascii",
                "cart-42",
                "cart-43",
                "user-profile",
                "path",
                "utf8-mixed",
                "binary-zeros-16",
                "binary-mixed",
            ],
        },
    ]
}

fn ids(members: &[&Member]) -> Vec<String> {
    members.iter().map(|m| m.id.clone()).collect()
}

fn ring_vectors() -> Vec<RingVector> {
    ring_specs()
        .into_iter()
        .map(|spec| {
            let ring = Ring::new(spec.partitions, spec.members.clone())
                .unwrap_or_else(|e| panic!("ring {}: {e}", spec.name));
            RingVector {
                name: spec.name.to_string(),
                partitions: spec.partitions,
                n: spec.n,
                members: spec
                    .members
                    .iter()
                    .map(|m| MemberVector {
                        id: m.id.clone(),
                        address: m.address.clone(),
                        zone: m.zone.clone(),
                        weight: m.weight,
                    })
                    .collect(),
                partition_owners: (0..spec.partitions.min(LISTED_OWNERS))
                    .map(|p| ring.owner(p).id.clone())
                    .collect(),
                keys: spec
                    .keys
                    .iter()
                    .map(|name| {
                        let k = key(name);
                        let pl = ring.preference_list(&k, spec.n as usize);
                        RingKeyVector {
                            name: name.to_string(),
                            key_hex: hex(&k),
                            partition: ring.partition_of(&k),
                            preference_list: ids(&pl.nodes),
                            fallbacks: ids(&pl.fallbacks),
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}

fn clock(entries: &[(u64, u64)], cloud: &[(u64, u64)]) -> VersionVector {
    let mut vv = VersionVector::new();
    for &(actor, counter) in entries {
        vv.insert(Actor(actor), counter, 0);
    }
    for &(actor, counter) in cloud {
        vv.add_dot(Dot {
            actor: Actor(actor),
            counter,
        });
    }
    vv
}

fn context(entries: &[(u64, u64)], cloud: &[(u64, u64)], seen: &[u128]) -> CausalContext {
    CausalContext {
        clock: clock(entries, cloud),
        seen: seen.iter().map(|w| WriteId(*w)).collect::<BTreeSet<_>>(),
    }
}

fn describe(
    clock: &VersionVector,
    seen: &BTreeSet<WriteId>,
    fastest: Option<&str>,
) -> DecodedContext {
    let dot = |actor: Actor, counter: u64| DotVector {
        actor: actor.0.to_string(),
        counter,
    };
    DecodedContext {
        clock: clock.iter().map(|(a, c, _)| dot(a, c)).collect(),
        cloud: clock.cloud().map(|d| dot(d.actor, d.counter)).collect(),
        seen_writes: seen.iter().map(|w| format!("{:032x}", w.0)).collect(),
        fastest_replica: fastest.map(str::to_string),
    }
}

fn key_tag(key: &[u8]) -> [u8; 8] {
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&key_position(key).to_be_bytes()[..8]);
    tag
}

/// Frames `body` as an unsigned context of an earlier release: magic, key tag, body, CRC-32
/// (little-endian).
fn old_frame(magic: &[u8; 4], key: &[u8], body: &[u8]) -> Vec<u8> {
    let mut bytes = magic.to_vec();
    bytes.extend_from_slice(&key_tag(key));
    bytes.extend_from_slice(body);
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

/// Frames a signed-context envelope as the current format does: magic, key tag, protobuf.
fn frame(key: &[u8], signed: &pb::SignedContext) -> Vec<u8> {
    let mut bytes = b"DKV\x03".to_vec();
    bytes.extend_from_slice(&key_tag(key));
    bytes.extend_from_slice(&signed.encode_to_vec());
    bytes
}

/// The keys the vectors are signed with (fixed, so the file is reproducible; a real node's
/// keys are random).
fn test_keys() -> Vec<ContextKey> {
    vec![
        ContextKey {
            signer: "node-1".into(),
            id: 0x0123_4567_89ab_cdef,
            secret: [0x5a; 32],
        },
        ContextKey {
            signer: "node-2".into(),
            id: 0xfedc_ba98_7654_3210,
            secret: [0xa5; 32],
        },
    ]
}

/// A context as a node's answer carries it, signed with test key `signer` (0 or 1), with
/// `fastest` added as a client coordinating the read does.
fn signed(key: &[u8], ctx: &CausalContext, signer: usize, fastest: Option<&str>) -> Vec<u8> {
    let one = sign_context(key, ctx, &test_keys()[signer]);
    match fastest {
        None => one,
        Some(_) => combine_contexts(key, [one.as_slice()], fastest)
            .expect("a context of one fragment combines"),
    }
}

/// (name, key, causal context, fastest replica), signed with [`test_keys`].
type ContextSpec = (&'static str, Vec<u8>, CausalContext, Option<&'static str>);

fn context_specs() -> Vec<ContextSpec> {
    vec![
        ("empty", key("cart-42"), CausalContext::new(), None),
        (
            "one-entry",
            key("cart-42"),
            context(&[(7, 3)], &[], &[]),
            None,
        ),
        (
            "several-actors-and-a-write",
            key("user-profile"),
            context(
                &[(1, 1), (7, 3), (0x8000_0000_0000_0000, 42), (u64::MAX, 1)],
                &[],
                &[0x0123_4567_89ab_cdef_fedc_ba98_7654_3210],
            ),
            None,
        ),
        (
            "dot-cloud",
            key("word"),
            // Actor 42 is known only by single events: its entry has counter 0.
            context(&[(7, 3)], &[(7, 9), (42, 5), (42, 7)], &[1]),
            None,
        ),
        (
            "seen-writes-extremes",
            key("utf8-three-byte"),
            context(&[(9, 12)], &[], &[0, 1, u128::MAX]),
            None,
        ),
        (
            "seen-writes-only",
            key("one-byte-0x00"),
            context(&[], &[], &[0xdead_beef]),
            None,
        ),
        (
            "with-fastest-replica",
            key("cart-42"),
            context(&[(7, 3), (u64::MAX, 1)], &[(7, 9)], &[1, u128::MAX]),
            Some("node-2"),
        ),
        (
            "fastest-replica-binary-key",
            key("binary-mixed"),
            context(&[(3, 100), (5, 2)], &[], &[77]),
            Some("zone-b/node-5 \u{fc}"),
        ),
    ]
}

fn context_vectors() -> Vec<ContextVector> {
    let mut out: Vec<ContextVector> = context_specs()
        .into_iter()
        .map(|(name, k, ctx, fastest)| ContextVector {
            name: name.to_string(),
            key_hex: hex(&k),
            format: if ctx.is_empty() { 0 } else { 3 },
            bytes_hex: hex(&signed(&k, &ctx, 0, fastest)),
            decoded: describe(&ctx.clock, &ctx.seen, fastest),
        })
        .collect();
    // A client-coordinated read of two replicas that disagree: each answer signed by its
    // node, side by side; the context is their join.
    let k = key("cart-43");
    let a = context(&[(7, 3)], &[], &[5]);
    let b = context(&[(7, 2), (9, 4)], &[(9, 6)], &[6]);
    let bytes = combine_contexts(
        &k,
        [
            signed(&k, &a, 0, None).as_slice(),
            signed(&k, &b, 1, None).as_slice(),
        ],
        Some("node-2"),
    )
    .expect("two signed contexts of one key combine");
    let mut joined = a.clone();
    joined.join(&b);
    out.push(ContextVector {
        name: "assembled-from-two-replicas".to_string(),
        key_hex: hex(&k),
        format: 3,
        bytes_hex: hex(&bytes),
        decoded: describe(&joined.clock, &joined.seen, Some("node-2")),
    });
    out
}

fn invalid_context_vectors() -> Vec<InvalidContextVector> {
    let k = key("cart-42");
    let ctx = context(&[(7, 3), (u64::MAX, 1)], &[(7, 9)], &[1, u128::MAX]);
    let valid = signed(&k, &ctx, 0, None);
    let last = valid.len() - 1;
    // A fragment signed with test key 0 around `body`, as if a node had signed it.
    let with_body = |body: pb::CausalContext| {
        let key0 = &test_keys()[0];
        let mut envelope =
            pb::SignedContext::decode(&valid[12..]).expect("a signed context's envelope decodes");
        let f = &mut envelope.fragments[0];
        f.signer = key0.signer.clone();
        f.body = body.encode_to_vec().into();
        frame(&k, &envelope)
    };
    let zero_counter = with_body(pb::CausalContext {
        clock: Some(pb::VersionVector {
            entries: vec![pb::ClockEntry {
                actor: 7,
                counter: 0,
                timestamp_ms: 0,
            }],
            cloud: vec![],
        }),
        ..Default::default()
    });
    let short_write_id = with_body(pb::CausalContext {
        seen_writes: vec![vec![0xab; 15].into()],
        ..Default::default()
    });
    let mut first_format_vv = VersionVector::new();
    first_format_vv.insert(Actor(7), 3, 1_000);
    let first_format = old_frame(b"DKV\x01", &k, &first_format_vv.to_proto().encode_to_vec());
    let second_format = old_frame(b"DKV\x02", &k, &ctx.to_proto().encode_to_vec());
    let mut bad_magic = valid.clone();
    bad_magic[3] = 0x04;
    let cases: Vec<(&str, &[u8], Vec<u8>, &str)> = vec![
        (
            "another-keys-context",
            b"cart:43",
            valid.clone(),
            "wrong_key",
        ),
        (
            "truncated-by-one-byte",
            &k,
            valid[..last].to_vec(),
            "malformed",
        ),
        (
            "truncated-below-header",
            &k,
            valid[..10].to_vec(),
            "malformed",
        ),
        ("unknown-format", &k, bad_magic, "malformed"),
        (
            "random-text",
            &k,
            b"this is not a DynamoKV context at all".to_vec(),
            "malformed",
        ),
        (
            "no-fragments",
            &k,
            frame(&k, &pb::SignedContext::default()),
            "malformed",
        ),
        ("zero-counter-entry", &k, zero_counter, "invalid"),
        ("fifteen-byte-write-id", &k, short_write_id, "invalid"),
        ("unsigned-first-format", &k, first_format, "not_issued"),
        ("unsigned-second-format", &k, second_format, "not_issued"),
    ];
    cases
        .into_iter()
        .map(|(name, key, bytes, error)| InvalidContextVector {
            name: name.to_string(),
            key_hex: hex(key),
            bytes_hex: hex(&bytes),
            error: error.to_string(),
        })
        .collect()
}

fn generate() -> Vectors {
    Vectors {
        description: DESCRIPTION.to_string(),
        schema_version: SCHEMA_VERSION,
        keys: key_vectors(),
        rings: ring_vectors(),
        contexts: context_vectors(),
        invalid_contexts: invalid_context_vectors(),
    }
}

// ---------------------------------------------------------------------------------------------
// Checks.

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../conformance/vectors.json")
}

fn render(v: &Vectors) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("vectors serialize");
    s.push('\n');
    s
}

fn committed() -> Vectors {
    let path = path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; generate it with {BLESS_COMMAND}",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{} does not parse as conformance vectors ({e}); regenerate it with {BLESS_COMMAND}",
            path.display()
        )
    })
}

fn blessing() -> bool {
    std::env::var("DYNAMOKV_BLESS").is_ok_and(|v| v == "1")
}

#[track_caller]
fn same<T: PartialEq + Debug>(vector: &str, field: &str, committed: &T, code: &T) {
    assert!(
        committed == code,
        "conformance vector {vector}, field {field}: the committed file has {committed:?} but the \
         code gives {code:?}. The hashing/ring/context format changed: if intended, regenerate \
         with `{BLESS_COMMAND}` and note the wire-format change in CHANGELOG.md"
    );
}

/// The same vectors, by name, in the same order.
#[track_caller]
fn same_names<T>(section: &str, committed: &[T], code: &[T], name: impl Fn(&T) -> &str) {
    let c: Vec<&str> = committed.iter().map(&name).collect();
    let g: Vec<&str> = code.iter().map(&name).collect();
    same(section, "(the list of vector names)", &c, &g);
}

#[test]
fn the_committed_vectors_are_what_the_code_computes() {
    let code = generate();
    if blessing() {
        let path = path();
        let tmp = path.with_extension("json.tmp");
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create conformance/");
        std::fs::write(&tmp, render(&code)).expect("write the vectors");
        std::fs::rename(&tmp, &path).expect("replace the vectors");
        eprintln!("wrote {}", path.display());
        return;
    }
    let file = committed();
    same("file", "description", &file.description, &code.description);
    same(
        "file",
        "schema_version",
        &file.schema_version,
        &code.schema_version,
    );

    same_names("keys", &file.keys, &code.keys, |v| &v.name);
    for (f, g) in file.keys.iter().zip(&code.keys) {
        let at = format!("keys/{}", f.name);
        same(&at, "key_hex", &f.key_hex, &g.key_hex);
        same(&at, "position", &f.position, &g.position);
        same(&at, "partition.8", &f.partition.q8, &g.partition.q8);
        same(&at, "partition.64", &f.partition.q64, &g.partition.q64);
        same(
            &at,
            "partition.1024",
            &f.partition.q1024,
            &g.partition.q1024,
        );
    }

    same_names("rings", &file.rings, &code.rings, |v| &v.name);
    for (f, g) in file.rings.iter().zip(&code.rings) {
        let at = format!("rings/{}", f.name);
        same(&at, "partitions", &f.partitions, &g.partitions);
        same(&at, "n", &f.n, &g.n);
        same(&at, "members", &f.members, &g.members);
        same(
            &at,
            "partition_owners",
            &f.partition_owners,
            &g.partition_owners,
        );
        same_names(&format!("{at}/keys"), &f.keys, &g.keys, |v| &v.name);
        for (fk, gk) in f.keys.iter().zip(&g.keys) {
            let at = format!("{at}/keys/{}", fk.name);
            same(&at, "key_hex", &fk.key_hex, &gk.key_hex);
            same(&at, "partition", &fk.partition, &gk.partition);
            same(
                &at,
                "preference_list",
                &fk.preference_list,
                &gk.preference_list,
            );
            same(&at, "fallbacks", &fk.fallbacks, &gk.fallbacks);
        }
    }

    same_names("contexts", &file.contexts, &code.contexts, |v| &v.name);
    for (f, g) in file.contexts.iter().zip(&code.contexts) {
        let at = format!("contexts/{}", f.name);
        same(&at, "key_hex", &f.key_hex, &g.key_hex);
        same(&at, "format", &f.format, &g.format);
        same(&at, "bytes_hex", &f.bytes_hex, &g.bytes_hex);
        same(&at, "decoded.clock", &f.decoded.clock, &g.decoded.clock);
        same(&at, "decoded.cloud", &f.decoded.cloud, &g.decoded.cloud);
        same(
            &at,
            "decoded.seen_writes",
            &f.decoded.seen_writes,
            &g.decoded.seen_writes,
        );
        same(
            &at,
            "decoded.fastest_replica",
            &f.decoded.fastest_replica,
            &g.decoded.fastest_replica,
        );
    }

    same_names(
        "invalid_contexts",
        &file.invalid_contexts,
        &code.invalid_contexts,
        |v| &v.name,
    );
    for (f, g) in file.invalid_contexts.iter().zip(&code.invalid_contexts) {
        let at = format!("invalid_contexts/{}", f.name);
        same(&at, "key_hex", &f.key_hex, &g.key_hex);
        same(&at, "bytes_hex", &f.bytes_hex, &g.bytes_hex);
        same(&at, "error", &f.error, &g.error);
    }

    // Everything compared field by field; this only guards against a field the loops forgot.
    same("file", "(everything)", &file, &code);
    // And the file is exactly as the generator writes it (formatting and order too).
    let text = std::fs::read_to_string(path()).expect("read the vectors");
    assert!(
        text == render(&file),
        "conformance/vectors.json is not in the generator's layout (hand-edited?): regenerate it \
         with `{BLESS_COMMAND}`"
    );
}

fn error_kind(e: &ContextError) -> &'static str {
    match e {
        ContextError::Malformed => "malformed",
        ContextError::WrongKey => "wrong_key",
        ContextError::Invalid(_) => "invalid",
        ContextError::NotIssued(_) => "not_issued",
        other => panic!("a context error the vectors have no kind for: {other:?}"),
    }
}

/// Decoding the committed bytes gives the committed description, whatever the generator says.
#[test]
fn every_committed_context_decodes_to_its_description() {
    if blessing() {
        return;
    }
    let file = committed();
    assert!(!file.contexts.is_empty());
    for v in &file.contexts {
        let at = format!("contexts/{}", v.name);
        let (k, bytes) = (unhex(&v.key_hex), unhex(&v.bytes_hex));
        // Nodes verify the signatures (with the keys the vectors were signed with)...
        decode_context(&k, &bytes, test_keys().as_slice()).unwrap_or_else(|e| {
            panic!("conformance vector {at}: the committed bytes do not verify ({e})")
        });
        // ...and clients read them.
        let (ctx, fastest) = inspect_context(&k, &bytes).unwrap_or_else(|e| {
            panic!(
                "conformance vector {at}: the committed bytes are refused ({e}). The context \
                     format changed: if intended, regenerate with `{BLESS_COMMAND}` and note the \
                     wire-format change in CHANGELOG.md"
            )
        });
        let decoded = describe(&ctx.clock, &ctx.seen, fastest.as_deref());
        same(&at, "decoded (from bytes_hex)", &v.decoded, &decoded);
    }
}

#[test]
fn every_committed_invalid_context_is_refused_with_its_kind() {
    if blessing() {
        return;
    }
    let file = committed();
    assert!(!file.invalid_contexts.is_empty());
    for v in &file.invalid_contexts {
        let at = format!("invalid_contexts/{}", v.name);
        let got =
            inspect_context(&unhex(&v.key_hex), &unhex(&v.bytes_hex)).map_err(|e| error_kind(&e));
        same(
            &at,
            "error (decoding bytes_hex)",
            &Err(v.error.as_str()),
            &got.map(|_| ()),
        );
    }
}
