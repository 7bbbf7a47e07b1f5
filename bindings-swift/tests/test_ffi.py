"""Drives the Swift SDK's FFI scaffolding for real, through uniffi's Python bindings.

There is no Swift toolchain on the build machines, so this is how the exact cdylib that Swift
links (libdynamokv_swift) is exercised: uniffi generates Python bindings from the same library
(same exported functions, same RustBuffer serialisation of records and errors, same async
future polling), and these tests mirror Tests/DynamoKVTests against a live memory-engine node.

scripts/check.sh generates the module into a temporary folder and points
DYNAMOKV_SWIFT_PY_BINDINGS at it; without that variable the tests generate it themselves from
$CARGO_TARGET_DIR/release (after `cargo build --release -p dynamokv-swift`).
"""

from __future__ import annotations

import asyncio
import datetime
import importlib
import os
import pathlib
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid

import pytest

# The answer-losing proxy is shared with the Python SDK's tests.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bindings-python" / "tests"))
from losing_proxy import LosingProxy  # noqa: E402

PACKAGE = pathlib.Path(__file__).resolve().parent.parent
REPO = PACKAGE.parent
LIB_NAME = "libdynamokv_swift.dylib" if sys.platform == "darwin" else "libdynamokv_swift.so"
START_DEADLINE_S = 30.0
STOP_DEADLINE_S = 10.0


def _target_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")


def _bindings_dir(tmp_factory) -> pathlib.Path:
    given = os.environ.get("DYNAMOKV_SWIFT_PY_BINDINGS")
    if given:
        return pathlib.Path(given)
    release = _target_dir() / "release"
    out = tmp_factory.mktemp("uniffi-py")
    subprocess.run(
        [str(release / "uniffi-bindgen"), "generate", "--library", str(release / LIB_NAME),
         "--language", "python", "--no-format", "--out-dir", str(out)],
        check=True, cwd=PACKAGE, stdout=subprocess.DEVNULL,
    )
    shutil.copy2(release / LIB_NAME, out / LIB_NAME)
    return out


@pytest.fixture(scope="session")
def kv(tmp_path_factory):
    """The generated module (`dynamokv_swift`), loading the cdylib next to it."""
    folder = _bindings_dir(tmp_path_factory)
    assert (folder / LIB_NAME).exists(), f"{LIB_NAME} must sit next to the generated module"
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module("dynamokv_swift")
    finally:
        sys.path.remove(str(folder))


def _server_binary() -> str:
    candidates = [
        os.environ.get("DYNAMOKV_BIN"),
        str(_target_dir() / "release" / "dynamokv"),
        str(REPO / "target" / "release" / "dynamokv"),
    ]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    pytest.fail(f"no dynamokv server binary; tried {candidates} (set DYNAMOKV_BIN)")


class Node:
    """A single memory-engine node on an ephemeral port, address read from its one stdout line.
    `config` is the text of a TOML config file, which the flags override."""

    def __init__(self, config: "str | None" = None) -> None:
        args = [_server_binary(), "serve", "--listen", "127.0.0.1:0", "--engine", "memory",
                "--node-id", "test-1"]
        self.config_file = None
        if config is not None:
            fd, self.config_file = tempfile.mkstemp(prefix="dynamokv-test-", suffix=".toml")
            with os.fdopen(fd, "w") as f:
                f.write(config)
            args += ["--config", self.config_file]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        # Reads the first line, then drains stdout so the node can never block on it.
        threading.Thread(target=self._drain, args=(lines,), daemon=True).start()
        try:
            line = lines.get(timeout=START_DEADLINE_S)
        except queue.Empty:
            self.stop()
            pytest.fail(f"the node printed no address within {START_DEADLINE_S}s")
        marker = " listening on "
        if marker not in line:
            self.stop()
            pytest.fail(f"unexpected first line from the node: {line!r}")
        self.address = line.split(marker, 1)[1].split()[0]

    def _drain(self, lines: "queue.Queue[str]") -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            lines.put(line)
        lines.put("")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_DEADLINE_S)
        if self.config_file is not None:
            pathlib.Path(self.config_file).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def node():
    n = Node()
    yield n
    n.stop()


@pytest.fixture
def client(kv, node):
    return kv.DynamoKvClient([node.address])


def key(name: str) -> bytes:
    return f"swift-ffi-{name}-{uuid.uuid4().hex}".encode()


def run(coro):
    return asyncio.run(coro)


# 1. Siblings, overwrite, delete.

def test_siblings_then_overwrite_then_delete(client):
    async def scenario():
        k = key("siblings")
        await client.put(k, b"v0")
        first = await client.get(k)
        assert first.values == [b"v0"]
        ctx0 = first.context
        assert isinstance(ctx0, bytes) and ctx0

        # Two writes from the same stale context are concurrent: both survive as siblings.
        await client.put(k, b"a", ctx0)
        await client.put(k, b"b", ctx0)
        siblings = await client.get(k)
        assert sorted(siblings.values) == [b"a", b"b"]

        # A write with the context covering both supersedes them.
        await client.put(k, b"c", siblings.context)
        resolved = await client.get(k)
        assert resolved.values == [b"c"]

        await client.delete(k, resolved.context)
        assert (await client.get(k)).values == []

        await client.put(k, b"d")
        assert (await client.get(k)).values == [b"d"]

    run(scenario())


def test_put_and_delete_return_contexts(client):
    async def scenario():
        k = key("contexts")
        written = await client.put(k, b"x")
        assert isinstance(written, bytes) and written
        # The context a put returns supersedes that put.
        await client.put(k, b"y", written)
        got = await client.get(k)
        assert got.values == [b"y"]
        tombstone = await client.delete(k, got.context, w=1)
        assert isinstance(tombstone, bytes)
        assert (await client.get(k, r=1)).values == []

    run(scenario())


# 2. Every bad-input class: right error, nothing changed.

async def _expect(kv, variant, call):
    with pytest.raises(variant) as info:
        await call
    assert isinstance(info.value, kv.DynamoKvError)
    return info.value


def test_key_and_value_limits_checked_by_client(kv, client):
    E = kv.DynamoKvError

    async def scenario():
        k = key("limits")
        await client.put(k, b"kept")

        err = await _expect(kv, E.EmptyKey, client.put(b"", b"x"))
        assert err.max == 4096
        assert err.code() == "EMPTY_KEY"
        await _expect(kv, E.EmptyKey, client.get(b""))
        await _expect(kv, E.EmptyKey, client.delete(b"", b""))

        err = await _expect(kv, E.KeyTooLarge, client.put(b"k" * 4097, b"x"))
        assert (err.size, err.max) == (4097, 4096)
        assert err.code() == "KEY_TOO_LARGE"

        err = await _expect(kv, E.ValueTooLarge, client.put(k, b"\0" * 1048577))
        assert (err.size, err.max) == (1048577, 1048576)
        assert err.code() == "VALUE_TOO_LARGE"

        assert (await client.get(k)).values == [b"kept"]
        assert (await client.get(b"k" * 4096)).values == []

    run(scenario())


def test_server_checks_sizes_too(kv, node):
    E = kv.DynamoKvError
    lax = kv.DynamoKvClient(
        [node.address], kv.ClientOptions(max_key_bytes=1 << 20, max_value_bytes=8 << 20)
    )

    async def scenario():
        k = key("server-limits")
        await lax.put(k, b"kept")
        err = await _expect(kv, E.KeyTooLarge, lax.put(b"k" * 4097, b"x"))
        assert (err.size, err.max) == (4097, 4096)
        err = await _expect(kv, E.ValueTooLarge, lax.put(k, b"\0" * 1048577))
        assert (err.size, err.max) == (1048577, 1048576)
        assert (await lax.get(k)).values == [b"kept"]

    run(scenario())


def test_invalid_context(kv, client):
    E = kv.DynamoKvError

    async def scenario():
        k, other = key("ctx"), key("ctx-other")
        await client.put(k, b"kept")
        await client.put(other, b"theirs")
        foreign = (await client.get(other)).context

        err = await _expect(kv, E.InvalidContext, client.put(k, b"x", b"garbage"))
        assert err.message and err.code() == "INVALID_CONTEXT"
        await _expect(kv, E.InvalidContext, client.put(k, b"x", foreign))
        await _expect(kv, E.InvalidContext, client.delete(k, b"garbage"))
        await _expect(kv, E.InvalidContext, client.delete(k, foreign))

        assert (await client.get(k)).values == [b"kept"]
        assert (await client.get(other)).values == [b"theirs"]

    run(scenario())


def test_invalid_quorum(kv, client):
    E = kv.DynamoKvError

    async def scenario():
        k = key("quorum")
        await client.put(k, b"kept")
        ctx = (await client.get(k)).context

        # 0 is refused by the client, more than N=1 by the server.
        for call in (
            client.get(k, r=0),
            client.get(k, r=2),
            client.put(k, b"x", w=0),
            client.put(k, b"x", ctx, w=2),
            client.put(k, b"x", w=5),
            client.delete(k, ctx, w=0),
            client.delete(k, ctx, w=2),
        ):
            err = await _expect(kv, E.InvalidQuorum, call)
            assert err.message and err.code() == "INVALID_QUORUM"

        assert (await client.get(k)).values == [b"kept"]

    run(scenario())


def test_sync_replicas(client):
    async def scenario():
        # The test node's W is 1: 0 and 1 are accepted, for puts and deletes alike.
        k = key("sync")
        ctx = await client.put(k, b"synced", sync_replicas=1)
        assert isinstance(ctx, bytes) and ctx
        got = await client.get(k)
        assert got.values == [b"synced"]
        await client.put(k, b"synced-w1", got.context, w=1, sync_replicas=1)
        await client.put(k, b"unsynced", (await client.get(k)).context, None, None, 0)
        got = await client.get(k)
        assert got.values == [b"unsynced"]
        await client.delete(k, got.context, sync_replicas=1)
        assert (await client.get(k)).values == []

    run(scenario())


def test_sync_replicas_above_w_is_invalid_quorum(kv, client):
    E = kv.DynamoKvError

    async def scenario():
        # More than W is refused (by client-core when the call gives w, else by the node) and
        # writes nothing: neither on a fresh key nor over a stored value.
        fresh = key("sync-fresh")
        for n, call in (
            (2, client.put(fresh, b"x", sync_replicas=2)),
            (5, client.put(fresh, b"x", sync_replicas=5)),
            (2, client.put(fresh, b"x", w=1, sync_replicas=2)),
        ):
            err = await _expect(kv, E.InvalidQuorum, call)
            assert f"sync_replicas = {n}" in err.message, err.message
            assert err.code() == "INVALID_QUORUM"
        assert (await client.get(fresh)).values == []

        k = key("sync-above-w")
        await client.put(k, b"kept")
        ctx = (await client.get(k)).context
        for n, call in (
            (2, client.put(k, b"x", ctx, sync_replicas=2)),
            (3, client.put(k, b"x", ctx, w=1, sync_replicas=3)),
            (5, client.delete(k, ctx, sync_replicas=5)),
            (2, client.delete(k, ctx, w=1, sync_replicas=2)),
        ):
            err = await _expect(kv, E.InvalidQuorum, call)
            assert f"sync_replicas = {n}" in err.message, err.message
        got = await client.get(k)
        assert got.values == [b"kept"] and got.context == ctx

    run(scenario())


def test_invalid_config(kv, node):
    E = kv.DynamoKvError
    bad = [
        ([], None),
        (["not-an-address"], None),
        (["127.0.0.1:notaport"], None),
        ([":7070"], None),
        ([node.address], kv.ClientOptions(request_timeout_ms=0)),
        ([node.address], kv.ClientOptions(connect_timeout_ms=0)),
        ([node.address], kv.ClientOptions(attempt_timeout_ms=0)),
        ([node.address], kv.ClientOptions(max_key_bytes=0)),
    ]
    for seeds, options in bad:
        with pytest.raises(E.InvalidConfig) as info:
            kv.DynamoKvClient(seeds, options)
        assert info.value.message
        assert info.value.code() == "INVALID_CONFIG"


def test_attempt_timeout_is_accepted(kv, node):
    c = kv.DynamoKvClient(
        [node.address], kv.ClientOptions(request_timeout_ms=5000, attempt_timeout_ms=1500)
    )
    assert c.node_health() == [kv.NodeHealth(address=node.address, up=True)]


def test_node_health_of_a_fresh_client_lists_every_seed_up(kv):
    seeds = ["127.0.0.1:1", "127.0.0.1:2"]
    c = kv.DynamoKvClient(seeds, kv.ClientOptions(attempt_timeout_ms=1000))
    health = c.node_health()  # synchronous: no I/O
    assert [h.address for h in health] == seeds
    assert all(h.up is True for h in health)


def test_node_health_after_a_call_to_a_live_node(kv, node):
    c = kv.DynamoKvClient(
        [node.address], kv.ClientOptions(request_timeout_ms=5000, attempt_timeout_ms=2000)
    )
    k = key("health")

    async def scenario():
        await c.put(k, b"v")
        assert (await c.get(k)).values == [b"v"]

    run(scenario())
    assert c.node_health() == [kv.NodeHealth(address=node.address, up=True)]


def test_stopped_node_is_unavailable(kv):
    E = kv.DynamoKvError
    doomed = Node()
    address = doomed.address
    doomed.stop()
    c = kv.DynamoKvClient(
        [address], kv.ClientOptions(connect_timeout_ms=500, request_timeout_ms=2000, max_retries=0)
    )

    async def scenario():
        with pytest.raises((E.Unavailable, E.Timeout)) as info:
            await c.get(key("gone"))
        err = info.value
        if isinstance(err, E.Timeout):
            assert err.after == datetime.timedelta(seconds=2)
            assert err.code() == "TIMEOUT"
        else:
            assert address in err.message
            assert err.code() == "UNAVAILABLE"

    run(scenario())


# Records, error plumbing and the async machinery.

def test_cluster_info(client, node):
    info = run(client.cluster_info())
    assert info.n == 1
    assert 1 <= info.r <= info.n and 1 <= info.w <= info.n
    assert info.partitions > 0
    assert info.answered_by == "test-1"
    assert [m.id for m in info.members] == ["test-1"]
    member = info.members[0]
    assert isinstance(member.address, str) and isinstance(member.zone, str)
    assert member.weight > 0
    assert isinstance(info.cluster_name, str)


def test_error_classes_cover_every_client_core_variant(kv):
    E = kv.DynamoKvError
    expected = {
        "InvalidConfig": "INVALID_CONFIG",
        "EmptyKey": "EMPTY_KEY",
        "KeyTooLarge": "KEY_TOO_LARGE",
        "ValueTooLarge": "VALUE_TOO_LARGE",
        "InvalidContext": "INVALID_CONTEXT",
        "InvalidQuorum": "INVALID_QUORUM",
        "MissingField": "MISSING_FIELD",
        "QuorumNotReached": "QUORUM_NOT_REACHED",
        "OutcomeUnknown": "OUTCOME_UNKNOWN",
        "SiblingLimit": "SIBLING_LIMIT",
        "Unavailable": "UNAVAILABLE",
        "Timeout": "TIMEOUT",
        "Internal": "INTERNAL",
    }
    samples = {
        "InvalidConfig": dict(message="m"),
        "EmptyKey": dict(max=1),
        "KeyTooLarge": dict(size=2, max=1),
        "ValueTooLarge": dict(size=2, max=1),
        "InvalidContext": dict(message="m"),
        "InvalidQuorum": dict(message="m"),
        "MissingField": dict(message="m"),
        "QuorumNotReached": dict(needed=2, got=1, message="m"),
        "OutcomeUnknown": dict(write_id=bytes(range(16)), message="m"),
        "SiblingLimit": dict(message="m"),
        "Unavailable": dict(message="m"),
        "Timeout": dict(after=datetime.timedelta(milliseconds=1500)),
        "Internal": dict(message="m"),
    }
    for name, code in expected.items():
        variant = getattr(E, name)
        err = variant(**samples[name])
        assert isinstance(err, E)
        # code() lowers the error back into Rust: every field survives the round trip.
        assert err.code() == code
    err = E.QuorumNotReached(needed=2, got=1, message="m")
    assert (err.needed, err.got, err.message) == (2, 1, "m")
    err = E.OutcomeUnknown(write_id=bytes(range(16)), message="m")
    assert (err.write_id, err.message) == (bytes(range(16)), "m")
    # Every variant has a case: the enum's cases are exactly these.
    assert {name for name in expected} == {
        name for name, v in vars(E).items() if isinstance(v, type) and issubclass(v, E)
    }


def test_concurrent_calls_share_one_client(client):
    async def scenario():
        prefix = key("concurrent").decode()
        keys = [f"{prefix}-{i}".encode() for i in range(32)]
        await asyncio.gather(*(client.put(k, str(i).encode()) for i, k in enumerate(keys)))
        got = await asyncio.gather(*(client.get(k) for k in keys))
        assert [g.values for g in got] == [[str(i).encode()] for i in range(len(keys))]

    run(scenario())


def test_cancelled_call_leaves_client_usable(client):
    async def scenario():
        k = key("cancel")
        task = asyncio.ensure_future(client.put(k, b"x" * 1024))
        await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        await client.put(k, b"after")
        assert b"after" in (await client.get(k)).values

    run(scenario())


def test_client_outlives_event_loops(client):
    # Each asyncio.run makes a new loop; the shared Rust runtime and connections carry over.
    k = key("loops")
    for i in range(3):
        run(client.put(k, str(i).encode()))
    values = run(client.get(k)).values
    assert values and set(values) <= {b"0", b"1", b"2"}


# Write ids, and the two errors about writes.

def test_same_write_id_twice_is_applied_once(client):
    async def scenario():
        k = key("write-id")
        wid = uuid.uuid4().bytes
        await client.put(k, b"once", write_id=wid)
        await client.put(k, b"once", None, None, wid)
        assert (await client.get(k)).values == [b"once"]
        await client.put(k, b"other")
        await client.put(k, b"once", write_id=wid)
        assert sorted((await client.get(k)).values) == [b"once", b"other"]
        ctx = (await client.get(k)).context
        did = uuid.uuid4().bytes
        await client.delete(k, ctx, write_id=did)
        await client.delete(k, ctx, None, did)
        assert (await client.get(k)).values == []

    run(scenario())


def test_malformed_write_id_is_missing_field(kv, client):
    E = kv.DynamoKvError

    async def scenario():
        k = key("bad-write-id")
        await client.put(k, b"kept")
        ctx = (await client.get(k)).context
        for bad in (b"", b"\1" * 15, b"\1" * 17):
            for call in (
                client.put(k, b"x", ctx, write_id=bad),
                client.put(k, b"x", write_id=bad),
                client.delete(k, ctx, write_id=bad),
            ):
                err = await _expect(kv, E.MissingField, call)
                assert "writeId must be 16 bytes" in err.message
                assert f"got {len(bad)} bytes" in err.message
                assert err.code() == "MISSING_FIELD"
        got = await client.get(k)
        assert got.values == [b"kept"] and got.context == ctx

    run(scenario())


def test_blind_write_past_sibling_limit(kv):
    E = kv.DynamoKvError
    limited = Node(config="[limits]\nmax_siblings = 2\n")
    try:
        c = kv.DynamoKvClient([limited.address])

        async def scenario():
            k = key("sibling-limit")
            await c.put(k, b"one")
            await c.put(k, b"two")
            err = await _expect(kv, E.SiblingLimit, c.put(k, b"three"))
            assert err.message and err.code() == "SIBLING_LIMIT"
            got = await c.get(k)
            assert sorted(got.values) == [b"one", b"two"]
            await c.put(k, b"resolved", got.context)
            assert (await c.get(k)).values == [b"resolved"]

        run(scenario())
    finally:
        limited.stop()


def test_lost_answer_is_outcome_unknown_and_its_write_id_retries_once(kv, client, node):
    E = kv.DynamoKvError
    marker = f"lose-the-answer-{uuid.uuid4().hex}".encode()
    value = b"value:" + marker
    proxy = LosingProxy(node.address, marker)
    try:
        # Server-driven: a client-driven client routes to the node's own address, around the
        # proxy.
        only_proxy = kv.DynamoKvClient(
            [proxy.address],
            kv.ClientOptions(max_retries=0, coordination=kv.Coordination.SERVER),
        )
        both = kv.DynamoKvClient([proxy.address, node.address])

        async def scenario():
            k = key("lost")
            err = await _expect(kv, E.OutcomeUnknown, only_proxy.put(k, value))
            assert err.code() == "OUTCOME_UNKNOWN"
            assert isinstance(err.write_id, bytes) and len(err.write_id) == 16
            assert proxy.cut >= 1
            assert (await client.get(k)).values == [value]  # applied, once
            await client.put(k, value, write_id=err.write_id)
            assert (await client.get(k)).values == [value]

            mine = uuid.uuid4().bytes
            ctx = (await client.get(k)).context
            err = await _expect(kv, E.OutcomeUnknown, only_proxy.put(k, value + b"2", ctx, write_id=mine))
            assert err.write_id == mine
            await client.put(k, value + b"2", ctx, write_id=mine)
            assert (await client.get(k)).values == [value + b"2"]

            # Through the proxy first, then the node: the retry finds the first attempt.
            k2 = key("lost-retried")
            try:
                await both.put(k2, value)
            except E.OutcomeUnknown:
                pass
            assert (await client.get(k2)).values == [value]

        run(scenario())
    finally:
        proxy.close()
