"""Versioning and bad-input behaviour, each test run against both the blocking and the asyncio
client (the `kv` / `make_client` fixtures are parametrized; see conftest.py)."""

from __future__ import annotations

import uuid
from typing import Any, Awaitable, Type

import pytest

import dynamokv
from conftest import poll

MAX_KEY = 4096
MAX_VALUE = 1024 * 1024


async def raises(exc: Type[BaseException], call: Awaitable[Any]) -> Any:
    with pytest.raises(exc) as info:
        await call
    assert isinstance(info.value, dynamokv.DynamoKVError)
    return info.value


async def test_siblings_reconcile_delete_and_recreate(kv: Any, key: bytes) -> None:
    first = await kv.put(key, b"v0")
    assert isinstance(first, bytes) and first
    ctx0 = (await kv.get(key)).context

    # Two writers with the same stale context: neither supersedes the other.
    await kv.put(key, b"a", ctx0)
    await kv.put(key, b"b", ctx0)
    got = await kv.get(key)
    assert sorted(got.values) == [b"a", b"b"]
    ctx1 = got.context
    assert ctx1 != ctx0

    # Writing with the context that saw both reconciles them.
    await kv.put(key, b"c", ctx1)
    got = await kv.get(key)
    assert got.values == [b"c"]

    await kv.delete(key, got.context)
    assert (await kv.get(key)).values == []

    await kv.put(key, b"d")
    assert (await kv.get(key)).values == [b"d"]


async def test_missing_key_has_no_values(kv: Any, key: bytes) -> None:
    got = await kv.get(key)
    assert got.values == []
    assert isinstance(got.context, bytes)


async def test_str_keys_are_utf8_and_values_any_bytes_like(kv: Any, key: bytes) -> None:
    text = key.decode() + ":é"
    await kv.put(text, bytearray(b"from bytearray"))
    got = await kv.get(text.encode("utf-8"))
    assert got.values == [b"from bytearray"]
    await kv.put(memoryview(text.encode()), memoryview(b"from memoryview"), bytearray(got.context))
    assert (await kv.get(text)).values == [b"from memoryview"]
    empty = key + b":empty"
    await kv.put(empty, b"")
    assert (await kv.get(empty)).values == [b""]


async def test_wrong_argument_types_raise_type_error(kv: Any, key: bytes) -> None:
    with pytest.raises(TypeError):
        await kv.put(key, "not bytes")
    with pytest.raises(TypeError):
        await kv.get(42)
    with pytest.raises(TypeError):
        await kv.put(key, b"v", context="not bytes")


async def stored(kv: Any, key: bytes) -> dynamokv.GetResult:
    await kv.put(key, b"original")
    return await kv.get(key)


async def test_empty_key(kv: Any, key: bytes) -> None:
    before = await stored(kv, key)
    for call in (kv.get(b""), kv.get(""), kv.put(b"", b"x"), kv.delete(b"", before.context)):
        err = await raises(dynamokv.EmptyKeyError, call)
        assert err.code == "EMPTY_KEY" and err.max == MAX_KEY
        assert isinstance(err, dynamokv.InvalidInputError)
    assert await kv.get(key) == before


async def test_key_too_large(kv: Any, make_client: Any, key: bytes) -> None:
    before = await stored(kv, key)
    long_key = b"k" * (MAX_KEY + 1)
    for call in (kv.put(long_key, b"x"), kv.get(long_key), kv.delete(long_key, before.context)):
        err = await raises(dynamokv.KeyTooLargeError, call)
        assert (err.code, err.size, err.max) == ("KEY_TOO_LARGE", MAX_KEY + 1, MAX_KEY)
    # The server refuses it too (this client's own limit is larger), and stored nothing.
    lax = make_client(max_key_bytes=1 << 20)
    for call in (lax.put(long_key, b"x"), lax.get(long_key)):
        err = await raises(dynamokv.KeyTooLargeError, call)
        assert (err.size, err.max) == (MAX_KEY + 1, MAX_KEY)
    # The limit is inclusive.
    at_limit = (key * MAX_KEY)[:MAX_KEY]
    await kv.put(at_limit, b"fits")
    assert (await kv.get(at_limit)).values == [b"fits"]
    assert await kv.get(key) == before


async def test_value_too_large(kv: Any, make_client: Any, key: bytes) -> None:
    before = await stored(kv, key)
    big = b"v" * (MAX_VALUE + 1)
    err = await raises(dynamokv.ValueTooLargeError, kv.put(key, big, before.context))
    assert (err.code, err.size, err.max) == ("VALUE_TOO_LARGE", MAX_VALUE + 1, MAX_VALUE)
    assert await kv.get(key) == before
    # The server refuses it too.
    lax = make_client(max_value_bytes=4 * MAX_VALUE)
    err = await raises(dynamokv.ValueTooLargeError, lax.put(key, big, before.context))
    assert (err.size, err.max) == (MAX_VALUE + 1, MAX_VALUE)
    assert await kv.get(key) == before
    # The limit is inclusive.
    await kv.put(key, big[:MAX_VALUE], before.context)
    assert (await kv.get(key)).values == [big[:MAX_VALUE]]


async def test_invalid_context(kv: Any, key: bytes) -> None:
    before = await stored(kv, key)
    other = key + b":other"
    await kv.put(other, b"elsewhere")
    foreign = (await kv.get(other)).context
    for ctx in (b"garbage", foreign, before.context[:-1]):
        for call in (kv.put(key, b"x", ctx), kv.delete(key, ctx)):
            err = await raises(dynamokv.InvalidContextError, call)
            assert err.code == "INVALID_CONTEXT" and err.message
    assert await kv.get(key) == before
    assert (await kv.get(other)).values == [b"elsewhere"]


async def test_invalid_quorum(kv: Any, key: bytes) -> None:
    before = await stored(kv, key)
    ctx = before.context
    calls = (
        kv.get(key, r=0),  # refused by client-core
        kv.put(key, b"x", ctx, w=0),
        kv.delete(key, ctx, w=0),
        kv.get(key, r=2),  # refused by the server: N is 1
        kv.put(key, b"x", ctx, w=2),
        kv.put(key, b"x", ctx, w=5),
        kv.delete(key, ctx, w=5),
    )
    for call in calls:
        err = await raises(dynamokv.InvalidQuorumError, call)
        assert err.code == "INVALID_QUORUM"
    assert await kv.get(key) == before
    # A quorum within 1..=N is accepted.
    await kv.put(key, b"w1", ctx, w=1)
    assert (await kv.get(key, r=1)).values == [b"w1"]


async def test_sync_replicas(kv: Any, key: bytes) -> None:
    # The test node's W is 1: 0 and 1 are accepted, for puts and deletes alike.
    ctx = await kv.put(key, b"synced", sync_replicas=1)
    assert isinstance(ctx, bytes) and ctx
    got = await kv.get(key)
    assert got.values == [b"synced"]
    await kv.put(key, b"synced-w1", got.context, w=1, sync_replicas=1)
    await kv.put(key, b"unsynced", (await kv.get(key)).context, sync_replicas=0)
    got = await kv.get(key)
    assert got.values == [b"unsynced"]
    await kv.delete(key, got.context, sync_replicas=1)
    assert (await kv.get(key)).values == []


async def test_sync_replicas_above_w(kv: Any, key: bytes) -> None:
    # More than W is refused (by client-core when the call gives w, else by the node) and
    # writes nothing: neither on a fresh key nor over a stored value.
    fresh = key + b":fresh"
    calls = (
        (2, kv.put(fresh, b"x", sync_replicas=2)),
        (5, kv.put(fresh, b"x", sync_replicas=5)),
        (2, kv.put(fresh, b"x", w=1, sync_replicas=2)),
    )
    for n, call in calls:
        err = await raises(dynamokv.InvalidQuorumError, call)
        assert err.code == "INVALID_QUORUM"
        assert f"sync_replicas = {n}" in str(err), str(err)
    assert (await kv.get(fresh)).values == []

    before = await stored(kv, key)
    ctx = before.context
    calls = (
        (2, kv.put(key, b"x", ctx, sync_replicas=2)),
        (3, kv.put(key, b"x", ctx, w=1, sync_replicas=3)),
        (5, kv.delete(key, ctx, sync_replicas=5)),
        (2, kv.delete(key, ctx, w=1, sync_replicas=2)),
    )
    for n, call in calls:
        err = await raises(dynamokv.InvalidQuorumError, call)
        assert f"sync_replicas = {n}" in str(err), str(err)
    assert await kv.get(key) == before
    with pytest.raises((OverflowError, TypeError)):
        await kv.put(key, b"x", ctx, sync_replicas=-1)
    with pytest.raises(TypeError):
        await kv.put(key, b"x", ctx, sync_replicas="1")
    assert await kv.get(key) == before


async def test_cluster_info(kv: Any, node: Any) -> None:
    info = await kv.cluster_info()
    assert isinstance(info, dynamokv.ClusterInfo)
    assert (info.n, info.r, info.w) == (1, 1, 1)
    assert info.partitions > 0 and info.cluster_name
    assert info.answered_by == "test-1"
    assert isinstance(info.ring_version, int) and info.ring_version >= 1
    assert [(m.id, m.address) for m in info.members] == [("test-1", node.address)]
    assert all(isinstance(m, dynamokv.MemberInfo) and m.weight >= 1 for m in info.members)


async def test_same_write_id_sent_twice_is_applied_once(kv: Any, key: bytes) -> None:
    wid = uuid.uuid4().bytes
    await kv.put(key, b"once", write_id=wid)
    await kv.put(key, b"once", write_id=bytearray(wid))
    assert (await kv.get(key)).values == [b"once"]
    # Still once after a concurrent write to the key.
    await kv.put(key, b"other")
    await kv.put(key, b"once", write_id=memoryview(wid))
    assert sorted((await kv.get(key)).values) == [b"once", b"other"]
    # A delete may be sent twice under one id too.
    ctx = (await kv.get(key)).context
    did = uuid.uuid4().bytes
    await kv.delete(key, ctx, write_id=did)
    await kv.delete(key, ctx, write_id=did)
    assert (await kv.get(key)).values == []


async def test_malformed_write_id(kv: Any, key: bytes) -> None:
    before = await stored(kv, key)
    ctx = before.context
    for bad in (b"", b"\x01" * 15, b"\x01" * 17, bytearray(32)):
        for call in (
            kv.put(key, b"x", ctx, write_id=bad),
            kv.put(key, b"x", write_id=bad),
            kv.delete(key, ctx, write_id=bad),
        ):
            err = await raises(dynamokv.InvalidInputError, call)
            assert type(err) is dynamokv.InvalidInputError
            assert err.code == "INVALID_INPUT"
            assert "write_id must be 16 bytes" in str(err) and f"got {len(bad)} bytes" in str(err)
    for wrong_type in ("0" * 32, 42, uuid.uuid4()):
        with pytest.raises(TypeError, match="write_id"):
            await kv.put(key, b"x", ctx, write_id=wrong_type)
        with pytest.raises(TypeError, match="write_id"):
            await kv.delete(key, ctx, write_id=wrong_type)
    assert await kv.get(key) == before


SIBLING_LIMIT_CONFIG = "[limits]\nmax_siblings = 2\n"


async def test_sibling_limit(make_client: Any, start_node: Any, key: bytes) -> None:
    limited = start_node("test-limited", config=SIBLING_LIMIT_CONFIG)
    kv = make_client([limited.address])

    await kv.put(key, b"one")
    await kv.put(key, b"two")
    err = await raises(dynamokv.SiblingLimitError, kv.put(key, b"three"))
    assert err.code == "SIBLING_LIMIT" and err.message
    assert not isinstance(err, dynamokv.InvalidInputError)
    got = await kv.get(key)
    assert sorted(got.values) == [b"one", b"two"]  # nothing was written

    # A write that resolves the siblings (the get's context) is accepted.
    await kv.put(key, b"resolved", got.context)
    assert (await kv.get(key)).values == [b"resolved"]


async def test_timestamps_and_a_delete_concurrent_with_a_value(kv: Any, key: bytes) -> None:
    await kv.put(key, b"a")
    ctx_a = (await kv.get(key)).context
    await kv.put(key, b"b")  # blind: concurrent with "a"
    got = await kv.get(key)
    assert sorted(got.values) == [b"a", b"b"] and got.tombstone is False
    assert len(got.timestamps_ms) == 2 and all(t > 0 for t in got.timestamps_ms)

    await kv.delete(key, ctx_a)  # deletes what saw "a" only: concurrent with "b"
    got = await kv.get(key)
    assert got.values == [b"b"] and got.tombstone is True

    def never(values: Any) -> bytes:
        raise AssertionError("a resolver is not called for one value")

    # One value and a concurrent delete: written back as it is, superseding the delete.
    resolved = await kv.get(key, resolver=never)
    assert (resolved.value, resolved.siblings, resolved.written_back) == (b"b", 1, True)
    after = await kv.get(key)
    assert after.values == [b"b"] and after.tombstone is False


# One place for connections, and client connections closed after 1 s idle (instead of 5 min)
# so that the place comes free within the test.
OVERLOAD_CONFIG = "[limits]\nmax_connections = 1\nidle_timeout_ms = 1000\n"


def test_a_node_at_its_connection_cap_answers_overloaded(start_node: Any) -> None:
    """Resource limits (issues 11 and 19): at its cap of connections a node closes one that has
    not made a request to make room for a new one, so idle sockets cannot lock clients out;
    when every place is held by a client, it answers OVERLOADED (retry later) instead of
    resetting the connection, and serves again once a place is free."""
    import socket

    capped = start_node("test-capped", config=OVERLOAD_CONFIG, metrics=True)

    def open_connections() -> float:
        return capped.metrics().get(("dynamokv_connections_open", ()), 0.0)

    # The start-up probe's client closes its connection in the background; until it has, the
    # holder below would be the one over the cap.
    poll("the start-up probe's connection to close", lambda: open_connections() == 0)
    host, port = capped.address.rsplit(":", 1)
    holder = socket.create_connection((host, int(port)))
    try:
        poll("the holder to take the one place", lambda: open_connections() == 1)
        first = dynamokv.Client([capped.address], request_timeout=5.0, max_retries=0,
                                coordination="server")
        assert first.get(b"k").values == []
        # The idle socket was closed for it.
        holder.settimeout(5.0)
        closed = False
        try:
            while holder.recv(4096):
                pass
            closed = True
        except ConnectionResetError:
            closed = True
        assert closed
    finally:
        holder.close()
    # Now the one place is the first client's: a second is answered, not reset.
    second = dynamokv.Client([capped.address], request_timeout=5.0, max_retries=0,
                             coordination="server")
    with pytest.raises(dynamokv.OverloadedError, match="connections open, the cap is 1") as info:
        second.get(b"k")
    assert info.value.code == "OVERLOADED" and "retry later" in info.value.message
    # The first client's connection idles past `idle_timeout_ms` and is closed: room again.
    poll("the node to serve again", lambda: second.get(b"k").values == [] or "empty")
