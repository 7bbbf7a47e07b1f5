"""Client-driven coordination, resolvers, batches and server-driven mode against a real 3-node
cluster (one per module: the `cluster` fixture in conftest.py), each behaviour run through both
the blocking and the asyncio client where it has both forms.

With 3 nodes and N = 3 every node is a replica of every key; what tells the routing apart is
which node coordinates a put (a client-coordinated put goes to the key's first replica, a
server-driven one to the seed) and which nodes count reads (`read_replica`: a read of the node's
own replica that the client coordinates; `get`: a read the node coordinated). The counters come
from each node's /metrics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any, Dict, List, Optional

import pytest

import dynamokv
from conftest import CLUSTER_ATTEMPT_TIMEOUT_S, REPO, Cluster, SyncAsAsync, poll
from dynamokv import conformance, resolvers

OPTIONS: Dict[str, Any] = dict(request_timeout=10.0, attempt_timeout=CLUSTER_ATTEMPT_TIMEOUT_S)


@pytest.fixture(params=["sync", "async"])
def make_client(request: pytest.FixtureRequest, cluster: Cluster) -> Any:
    """Builds a client of the cluster (every node a seed, unless `seeds` are given); the sync
    one wrapped in `SyncAsAsync`."""

    def make(seeds: Optional[List[str]] = None, **options: Any) -> Any:
        seeds = cluster.seeds if seeds is None else seeds
        options = {**OPTIONS, **options}
        if request.param == "sync":
            return SyncAsAsync(dynamokv.Client(seeds, **options))
        return dynamokv.AsyncClient(seeds, **options)

    return make


@pytest.fixture
def kv(make_client: Any) -> Any:
    return make_client()


def replicas_of(info: dynamokv.ClusterInfo, key: Any) -> List[str]:
    """The key's replicas (node ids, first replica first) on the ring the cluster reports."""
    replicas, fallbacks = conformance.preference_list(info.members, info.partitions, key, info.n)
    assert fallbacks == []  # 3 nodes, N = 3
    return replicas


def keys_first_on(info: dynamokv.ClusterInfo, node_id: str, count: int, tag: str) -> List[bytes]:
    """`count` fresh keys whose first replica is `node_id`."""
    out: List[bytes] = []
    while len(out) < count:
        k = f"{tag}:{uuid.uuid4()}".encode()
        if replicas_of(info, k)[0] == node_id:
            out.append(k)
    return out


def delta(before: Dict[str, float], after: Dict[str, float]) -> Dict[str, float]:
    return {n: after[n] - before[n] for n in before}


def expect_counts(
    cluster: Cluster, op: str, before: Dict[str, float], expected: Dict[str, float]
) -> None:
    """Polls until the nodes' `requests_total{op, outcome="ok"}` moved by exactly `expected`
    since `before` (a counter that moves on a node where it should not never matches)."""
    moved: Dict[str, float] = {}

    def check() -> bool:
        moved.update(delta(before, cluster.requests(op)))
        return moved == expected

    deadline = time.monotonic() + 20.0
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{op} counts moved by {moved}, not by {expected}, within 20 s")
        time.sleep(0.05)


async def make_siblings(kv: Any, key: bytes, a: bytes, b: bytes) -> dynamokv.GetResult:
    """Two blind puts: two concurrent versions, on every replica (checked with R = 3)."""
    await kv.put(key, a)
    await kv.put(key, b)
    got = await kv.get(key, 3)
    assert sorted(got.values) == sorted([a, b])
    return got


# Ring and cluster information.


async def test_cluster_info_and_ring_version(kv: Any, cluster: Cluster) -> None:
    assert kv.coordination == "client"
    assert kv.ring_version() is None  # nothing pulled yet
    assert await kv.refresh_ring() == cluster.ring_version
    assert kv.ring_version() == cluster.ring_version
    info = await kv.cluster_info()
    assert info.ring_version == cluster.ring_version
    assert (info.n, info.r, info.w) == (3, 2, 2)
    assert sorted((m.id, m.address) for m in info.members) == sorted(
        (n.node_id, n.address) for n in cluster.nodes
    )
    # The client watches every member of the ring, not only its one seed.
    one_seed = dynamokv.Client(cluster.seeds[:1], **OPTIONS)
    one_seed.refresh_ring()
    assert sorted(h.address for h in one_seed.node_health()) == sorted(cluster.seeds)


# Client-driven routing.


async def test_client_driven_put_goes_to_the_first_replica_and_get_reads_the_replicas(
    kv: Any, cluster: Cluster
) -> None:
    info = await kv.cluster_info()
    ids = [n.node_id for n in cluster.nodes]
    for first in ids:
        (key,) = keys_first_on(info, first, 1, "routing")
        before = {op: cluster.requests(op) for op in ("put", "get", "read_replica")}
        await kv.put(key, b"routed")
        expect_counts(cluster, "put", before["put"], {n: float(n == first) for n in ids})

        got = await kv.get(key)
        assert got.values == [b"routed"]
        assert len(got.timestamps_ms) == 1 and got.tombstone is False
        # Each of the key's N replicas is read once; no node coordinates a get.
        expect_counts(cluster, "read_replica", before["read_replica"], {n: 1.0 for n in ids})
        assert delta(before["get"], cluster.requests("get")) == {n: 0.0 for n in ids}
        assert delta(before["put"], cluster.requests("put")) == {n: float(n == first) for n in ids}


def test_a_stopped_node_is_routed_around(cluster: Cluster) -> None:
    kv = dynamokv.Client(cluster.seeds, **OPTIONS)
    kv.refresh_ring()
    info = kv.cluster_info()
    victim = cluster.nodes[2]
    on_victim = keys_first_on(info, victim.node_id, 2, "stopped")
    elsewhere = keys_first_on(info, cluster.nodes[0].node_id, 1, "stopped")
    victim.pause()
    try:
        for key in on_victim + elsewhere:
            ctx = kv.put(key, b"v1", w=2)
            assert kv.get(key, r=2).values == [b"v1"]
            kv.put(key, b"v2", ctx, w=2)
            assert kv.get(key, r=2).values == [b"v2"]
        # The client did try the stopped node (its keys' first replica) and now avoids it.
        health = {h.address: h.up for h in kv.node_health()}
        assert health[victim.address] is False, health
        assert all(health[n.address] for n in cluster.nodes if n is not victim), health
        # R = 3 cannot be met without it.
        with pytest.raises((dynamokv.QuorumError, dynamokv.RequestTimeoutError)):
            kv.get(on_victim[0], r=3)
    finally:
        victim.resume()
    # Back, it answers again (R = 3 needs it).
    poll("a read of all three replicas", lambda: kv.get(on_victim[0], r=3).values == [b"v2"])


# Resolvers.


async def test_union_json_merges_siblings_and_the_write_back_converges(
    kv: Any, key: bytes
) -> None:
    got = await make_siblings(kv, key, b'["apple","pear"]', b'["pear","fig"]')
    assert len(got.timestamps_ms) == 2 and got.tombstone is False
    now_ms = time.time() * 1000
    assert all(abs(t - now_ms) < 600_000 for t in got.timestamps_ms), got.timestamps_ms

    resolved = await kv.get(key, resolver=resolvers.union_json)
    assert isinstance(resolved, dynamokv.Resolved)
    assert resolved.siblings == 2 and resolved.written_back is True
    merged = json.loads(resolved.value)
    assert sorted(merged) == ["apple", "fig", "pear"] and len(merged) == 3
    # One version left, on every replica.
    after = await kv.get(key, 3)
    assert after.values == [resolved.value]
    # The resolved context supersedes the merged version.
    await kv.put(key, b'["plum"]', resolved.context)
    assert (await kv.get(key, 3)).values == [b'["plum"]']


async def test_without_write_back_the_siblings_stay(kv: Any, key: bytes) -> None:
    await make_siblings(kv, key, b'["a"]', b'["b"]')
    resolved = await kv.get(key, None, resolvers.union_json, False)
    assert (resolved.siblings, resolved.written_back) == (2, False)
    assert sorted(json.loads(resolved.value)) == ["a", "b"]
    assert len((await kv.get(key, 3)).values) == 2
    # Its context covers both: writing the resolution with it leaves one version.
    await kv.put(key, resolved.value, resolved.context)
    assert (await kv.get(key, 3)).values == [resolved.value]


class Boom(Exception):
    pass


async def test_a_raising_resolver_raises_its_own_exception_and_writes_nothing(
    kv: Any, key: bytes
) -> None:
    before = await make_siblings(kv, key, b"left", b"right")
    boom = Boom("cannot merge these")
    seen: List[Any] = []

    def resolver(values: Any) -> bytes:
        seen.append(values)
        raise boom

    with pytest.raises(Boom) as info:
        await kv.get(key, resolver=resolver)
    assert info.value is boom
    # It got the siblings, with their metadata.
    assert len(seen) == 1
    values = seen[0]
    assert isinstance(values, list) and isinstance(values, resolvers.Siblings)
    assert sorted(values) == [b"left", b"right"]
    assert values.key == key and values.tombstone is False
    assert sorted(values.timestamps_ms) == sorted(before.timestamps_ms)
    # Nothing was written: both versions are still there.
    assert sorted((await kv.get(key, 3)).values) == [b"left", b"right"]


@pytest.mark.parametrize(
    "returned, message",
    [
        (lambda values: "a str", "returned str"),
        (lambda values: None, "returned NoneType"),
        (lambda values: list(values), "returned list"),
    ],
    ids=["str", "None", "list"],
)
async def test_a_resolver_returning_no_bytes_is_a_type_error_and_writes_nothing(
    kv: Any, key: bytes, returned: Any, message: str
) -> None:
    await make_siblings(kv, key, b"x", b"y")
    with pytest.raises(TypeError, match=message):
        await kv.get(key, resolver=returned)
    assert sorted((await kv.get(key, 3)).values) == [b"x", b"y"]


async def test_resolver_edge_cases(kv: Any, key: bytes) -> None:
    async def coroutine_resolver(values: Any) -> bytes:
        return b"never"

    await make_siblings(kv, key, b"x", b"y")
    with pytest.raises(TypeError, match="awaitable"):
        await kv.get(key, resolver=coroutine_resolver)
    with pytest.raises(TypeError, match="resolver must be"):
        await kv.get(key, resolver=42)
    # Bytes-like results are accepted.
    resolved = await kv.get(key, resolver=lambda values: bytearray(b"".join(sorted(values))))
    assert resolved.value == b"xy" and resolved.written_back

    # One value: no resolver call, nothing written. No value: None.
    def never(values: Any) -> bytes:
        raise AssertionError("called with one value")

    one = await kv.get(key, resolver=never)
    assert (one.value, one.siblings, one.written_back) == (b"xy", 1, False)
    missing = await kv.get(key + b":missing", resolver=never)
    assert (missing.value, missing.siblings, missing.written_back) == (None, 0, False)


async def test_a_failing_builtin_is_resolver_error_and_writes_nothing(
    kv: Any, key: bytes
) -> None:
    await make_siblings(kv, key, b'["ok"]', b"not json")
    with pytest.raises(dynamokv.ResolverError) as info:
        await kv.get(key, resolver=resolvers.union_json)
    err = info.value
    assert err.code == "RESOLVER_FAILED" and "not JSON" in str(err)
    assert isinstance(err, dynamokv.DynamoKVError)
    assert sorted((await kv.get(key, 3)).values) == [b'["ok"]', b"not json"]


async def test_last_writer_wins_picks_the_later_write(kv: Any, key: bytes) -> None:
    # The later write has the smaller bytes, so a tie broken by bytes would pick the other.
    await kv.put(key, b"zz-earlier")
    first_ms = (await kv.get(key, 3)).timestamps_ms[0]
    poll("the clock passes the first write's ms", lambda: time.time() * 1000 > first_ms + 2)
    await kv.put(key, b"aa-later")
    got = await kv.get(key, 3)
    stamps = dict(zip(got.values, got.timestamps_ms))
    assert stamps[b"zz-earlier"] < stamps[b"aa-later"], stamps

    resolved = await kv.get(key, resolver=resolvers.last_writer_wins)
    assert (resolved.value, resolved.siblings, resolved.written_back) == (b"aa-later", 2, True)
    assert (await kv.get(key, 3)).values == [b"aa-later"]


# Batches.


async def test_batches_with_one_invalid_key(kv: Any, key: bytes) -> None:
    k1, k3 = key + b":1", key + b":3"
    puts = await kv.put_many([(k1, b"one"), (b"", b"bad"), (k3, b"three", None)])
    assert len(puts) == 3
    assert isinstance(puts[0], bytes) and isinstance(puts[2], bytes)
    assert isinstance(puts[1], dynamokv.EmptyKeyError) and puts[1].code == "EMPTY_KEY"

    gets = await kv.get_many([k1, b"", k3, key + b":missing"])
    assert isinstance(gets[1], dynamokv.EmptyKeyError)
    assert [g.values for g in (gets[0], gets[2], gets[3])] == [[b"one"], [b"three"], []]
    assert all(isinstance(g, dynamokv.GetResult) for g in (gets[0], gets[2], gets[3]))

    # With the contexts of the gets, the writes supersede what they read.
    updates = await kv.put_many(
        [(k1, b"one-2", gets[0].context), (k3, b"three-2", gets[2].context)]
    )
    assert all(isinstance(c, bytes) for c in updates)
    assert [g.values for g in await kv.get_many([k1, k3], 3)] == [[b"one-2"], [b"three-2"]]


async def test_batch_arguments_of_the_wrong_shape_are_type_errors(kv: Any, key: bytes) -> None:
    for items in ([(key,)], [(key, b"v", None, None)], [key], [(key, "not bytes")]):
        with pytest.raises(TypeError):
            await kv.put_many(items)
    with pytest.raises(TypeError, match="iterable of keys"):
        await kv.get_many(key)
    with pytest.raises(TypeError):
        await kv.get_many([key, 42])
    assert (await kv.get(key)).values == []  # nothing was written


async def test_resolving_batch(kv: Any, key: bytes) -> None:
    carts = [key + b":cart:1", key + b":cart:2"]
    for i, k in enumerate(carts):
        await make_siblings(kv, k, json.dumps([f"a{i}"]).encode(), json.dumps([f"b{i}"]).encode())
    single = key + b":single"
    await kv.put(single, b'["only"]')

    results = await kv.get_many(carts + [b"", single], resolver=resolvers.union_json)
    assert [sorted(json.loads(r.value)) for r in results[:2]] == [["a0", "b0"], ["a1", "b1"]]
    assert all(r.siblings == 2 and r.written_back for r in results[:2])
    assert isinstance(results[2], dynamokv.EmptyKeyError)
    assert (results[3].value, results[3].siblings) == (b'["only"]', 1)
    assert [len(g.values) for g in await kv.get_many(carts, 3)] == [1, 1]


async def test_resolving_batch_with_a_raising_resolver(kv: Any, key: bytes) -> None:
    """Each key whose resolver raised gets that very exception; the others resolve."""
    bad = [key + b":bad:1", key + b":bad:2"]
    good = key + b":good"
    for k in bad:
        await make_siblings(kv, k, b"raise", k)
    await make_siblings(kv, good, b"p", b"q")
    raised: Dict[bytes, Boom] = {}

    def resolver(values: Any) -> bytes:
        if b"raise" in values:
            raised[values.key] = Boom(values.key)
            raise raised[values.key]
        return b"+".join(sorted(values))

    results = await kv.get_many([bad[0], good, bad[1]], resolver=resolver)
    assert results[0] is raised[bad[0]] and results[2] is raised[bad[1]]
    assert (results[1].value, results[1].written_back) == (b"p+q", True)
    got = await kv.get_many(bad + [good], 3)
    assert [sorted(g.values) for g in got] == [
        sorted([b"raise", bad[0]]),
        sorted([b"raise", bad[1]]),
        [b"p+q"],
    ]


# Server-driven coordination.


async def test_server_driven_requests_are_coordinated_by_the_seed(
    make_client: Any, cluster: Cluster
) -> None:
    seed = cluster.nodes[1]
    kv = make_client([seed.address], coordination="server")
    assert kv.coordination == "server"
    info = await kv.cluster_info()
    # A key whose first replica is another node: a client-coordinated put would go there.
    (key,) = keys_first_on(info, cluster.nodes[0].node_id, 1, "server")
    ids = [n.node_id for n in cluster.nodes]
    only_seed = {n: float(n == seed.node_id) for n in ids}
    before = {op: cluster.requests(op) for op in ("put", "get", "read_replica")}

    await kv.put(key, b"via the seed")
    expect_counts(cluster, "put", before["put"], only_seed)
    assert (await kv.get(key)).values == [b"via the seed"]
    expect_counts(cluster, "get", before["get"], only_seed)
    assert delta(before["read_replica"], cluster.requests("read_replica")) == {
        n: 0.0 for n in ids
    }
    assert kv.ring_version() is None  # a server-driven client pulls no ring


# Conformance vectors.


def unhex(s: str) -> bytes:
    return bytes.fromhex(s)


def test_conformance_vectors() -> None:
    vectors = json.loads((REPO / "conformance" / "vectors.json").read_text(encoding="utf-8"))
    assert len(vectors["keys"]) >= 20
    for v in vectors["keys"]:
        k = unhex(v["key_hex"])
        assert conformance.key_position(k) == int(v["position"]), v["name"]
        assert len(v["partition"]) == 3
        for q, p in v["partition"].items():
            assert conformance.partition_of(k, int(q)) == p, (v["name"], q)

    assert len(vectors["rings"]) >= 4
    checked_owners = 0
    for ring in vectors["rings"]:
        members = [conformance.RingMember(**m) for m in ring["members"]]
        for v in ring["keys"]:
            at = f"{ring['name']}/{v['name']}"
            k = unhex(v["key_hex"])
            assert conformance.partition_of(k, ring["partitions"]) == v["partition"], at
            replicas, fallbacks = conformance.preference_list(
                members, ring["partitions"], k, ring["n"]
            )
            assert (replicas, fallbacks) == (v["preference_list"], v["fallbacks"]), at
            # Mappings are accepted as members too.
            assert conformance.preference_list(
                ring["members"], ring["partitions"], k, ring["n"]
            ) == (replicas, fallbacks)
            owners = ring["partition_owners"]  # the first partitions' owners only
            if v["partition"] < len(owners):
                assert owners[v["partition"]] == replicas[0], at
                checked_owners += 1

    assert checked_owners >= 1

    assert len(vectors["contexts"]) >= 8
    for v in vectors["contexts"]:
        d = v["decoded"]
        got = conformance.describe_context(unhex(v["key_hex"]), unhex(v["bytes_hex"]))
        assert got == conformance.ContextDescription(
            clock=[(int(e["actor"]), e["counter"]) for e in d["clock"]],
            cloud=[(int(e["actor"]), e["counter"]) for e in d["cloud"]],
            seen_writes=[int(w, 16) for w in d["seen_writes"]],
            fastest_replica=d["fastest_replica"],
        ), v["name"]

    messages = {
        "malformed": "is not a DynamoKV context",
        "wrong_key": "belongs to another key",
        "invalid": "is corrupt",
        "not_issued": "not issued by this cluster",
    }
    assert len(vectors["invalid_contexts"]) >= 6
    for v in vectors["invalid_contexts"]:
        with pytest.raises(dynamokv.InvalidContextError) as info:
            conformance.describe_context(unhex(v["key_hex"]), unhex(v["bytes_hex"]))
        assert messages[v["error"]] in str(info.value), (v["name"], str(info.value))


def test_conformance_helpers_refuse_what_forms_no_ring() -> None:
    for bad in (0, 3, 1 << 21):
        with pytest.raises(dynamokv.InvalidConfigError, match="power of two"):
            conformance.partition_of(b"k", bad)
    with pytest.raises(dynamokv.InvalidConfigError):
        conformance.preference_list([], 8, b"k", 3)
    with pytest.raises(dynamokv.InvalidConfigError):
        conformance.preference_list([conformance.RingMember("a", "a:1")], 8, b"k", 0)


async def test_a_real_context_describes_the_replica_that_answered_first(
    kv: Any, key: bytes, cluster: Cluster
) -> None:
    await kv.put(key, b"v")
    got = await kv.get(key)
    d = conformance.describe_context(key, got.context)
    assert len(d.seen_writes) == 1 and d.clock
    assert d.fastest_replica in {n.node_id for n in cluster.nodes}


# The example.


def test_shopping_cart_example_with_a_stopped_node(cluster: Cluster) -> None:
    """examples/python/shopping_cart.py against the cluster; it stops (SIGSTOP) the cart's first
    replica for the concurrent adds (the DYNAMOKV_STOP_PID hook) and continues it after."""
    info = dynamokv.Client(cluster.seeds, **OPTIONS).cluster_info()
    key = f"cart:{uuid.uuid4()}"
    victim = cluster.by_id(replicas_of(info, key)[0])
    env = {
        **os.environ,
        "DYNAMOKV_SEEDS": ",".join(cluster.seeds),
        "DYNAMOKV_CART_KEY": key,
        "DYNAMOKV_STOP_PID": str(victim.pid),
    }
    try:
        done = subprocess.run(
            [sys.executable, str(REPO / "examples" / "python" / "shopping_cart.py")],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
        )
    finally:
        victim.resume()
    out = done.stdout.decode()
    assert done.returncode == 0, f"stdout:\n{out}\nstderr:\n{done.stderr.decode()}"
    assert f"stopped node process {victim.pid} (SIGSTOP)" in out, out
    assert f"continued node process {victim.pid} (SIGCONT)" in out, out
    assert "nothing added was lost" in out, out
    # Independently of the example's own checks: one version on every replica, nothing lost.
    check = dynamokv.Client(cluster.seeds, **OPTIONS)
    got = poll("the cart read from all three replicas", lambda: check.get(key, r=3))
    assert len(got.values) == 1, got.values
    assert sorted(json.loads(got.values[0])) == sorted(["book", "apple", "pear", "fig", "tea"])


EXITS_RIGHT_AFTER_ITS_LAST_AWAIT = """
import asyncio, os, sys
import dynamokv

async def main():
    client = dynamokv.AsyncClient(os.environ["DYNAMOKV_SEEDS"].split(","))
    for i in range(20):
        await client.put(b"exit-%d" % i, b"v")
        await client.get(b"exit-%d" % i)

asyncio.run(main())
"""


def test_an_asyncio_program_exits_cleanly_right_after_its_last_await(cluster: Cluster) -> None:
    """A program that ends right after its last await used to crash at exit now and then
    (SIGSEGV or SIGABRT, about one run in ten): a result was still being handed to asyncio by
    a client thread while the interpreter was torn down. Ten runs, each must exit 0."""
    env = {**os.environ, "DYNAMOKV_SEEDS": ",".join(cluster.seeds)}
    for run in range(10):
        done = subprocess.run(
            [sys.executable, "-c", EXITS_RIGHT_AFTER_ITS_LAST_AWAIT],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 0, (
            f"run {run} exited with {done.returncode}: {done.stderr.decode()}"
        )
