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
import json
import os
import pathlib
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
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
    `config` is the text of a TOML config file, which the flags override; `extra` are further
    `serve` flags (`--join`, `--metrics-listen`)."""

    def __init__(
        self, config: "str | None" = None, node_id: str = "test-1", extra: "list[str] | None" = None
    ) -> None:
        self.node_id = node_id
        args = [_server_binary(), "serve", "--listen", "127.0.0.1:0", "--engine", "memory",
                "--node-id", node_id, *(extra or [])]
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
        # "... listening on ADDR (pid N, data in memory), metrics at http://HOST:PORT/metrics"
        metrics = line.split("metrics at ", 1)
        self.metrics_url = metrics[1].strip() if len(metrics) == 2 else None

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


def test_tls_options_cross_the_ffi(kv, node, tmp_path):
    """The TLS options and the TLS error, through the FFI: a token is never sent without TLS,
    an unreadable CA file is a configuration error, and a TLS client of a plain-text node gets
    a TLS error saying the node does not speak TLS."""
    E = kv.DynamoKvError
    with pytest.raises(E.InvalidConfig, match="only over TLS"):
        kv.DynamoKvClient([node.address], kv.ClientOptions(token="dkv1.x." + "0" * 64))
    with pytest.raises(E.InvalidConfig, match="ca_cert"):
        kv.DynamoKvClient([node.address], kv.ClientOptions(ca_cert=str(tmp_path / "none.pem")))
    subprocess.run([_server_binary(), "cert", "ca", "--dir", str(tmp_path)], check=True,
                   capture_output=True, timeout=30)
    c = kv.DynamoKvClient(
        [node.address],
        kv.ClientOptions(ca_cert=str(tmp_path / "ca.pem"), request_timeout_ms=5000, max_retries=0,
                         tls_reload_interval_ms=0),
    )

    async def scenario():
        with pytest.raises(E.Tls) as info:
            await c.get(b"k")
        assert info.value.code() == "TLS"
        assert "does not speak TLS" in info.value.message

    run(scenario())


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
        "InvalidInput": "INVALID_INPUT",
        "QuorumNotReached": "QUORUM_NOT_REACHED",
        "OutcomeUnknown": "OUTCOME_UNKNOWN",
        "SiblingLimit": "SIBLING_LIMIT",
        "Unavailable": "UNAVAILABLE",
        "Overloaded": "OVERLOADED",
        "Unauthenticated": "UNAUTHENTICATED",
        "PermissionDenied": "PERMISSION_DENIED",
        "Tls": "TLS",
        "Timeout": "TIMEOUT",
        "ResolverFailed": "RESOLVER_FAILED",
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
        "InvalidInput": dict(message="m"),
        "QuorumNotReached": dict(needed=2, got=1, message="m"),
        "OutcomeUnknown": dict(write_id=bytes(range(16)), message="m"),
        "SiblingLimit": dict(message="m"),
        "Unavailable": dict(message="m"),
        "Overloaded": dict(message="m"),
        "Unauthenticated": dict(message="m"),
        "PermissionDenied": dict(message="m"),
        "Tls": dict(message="m"),
        "Timeout": dict(after=datetime.timedelta(milliseconds=1500)),
        "ResolverFailed": dict(message="m"),
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


def test_malformed_write_id_is_invalid_input(kv, client):
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
                err = await _expect(kv, E.InvalidInput, call)
                assert "writeId must be 16 bytes" in err.message
                assert f"got {len(bad)} bytes" in err.message
                assert err.code() == "INVALID_INPUT"
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
        # Server coordination: coordinating in the client, it would pull the ring through the
        # proxy and then write to the node's own address, around the proxy.
        server = kv.Coordination.SERVER
        only_proxy = kv.DynamoKvClient(
            [proxy.address], kv.ClientOptions(max_retries=0, coordination=server))
        both = kv.DynamoKvClient([proxy.address, node.address], kv.ClientOptions(coordination=server))

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


# Client-driven coordination, resolvers and batches, against a real 3-node cluster formed as an
# operator forms one (node 1 alone, nodes 2 and 3 join it, then `admin plan` and `admin
# commit`), shared by every test below. Python resolvers implement the foreign trait
# `SiblingResolver` that Swift implements (through the facade's closures); Rust calls them on its
# own threads, so the tests hand uniffi their event loop (`run_cb`).

CLUSTER_DEADLINE_S = 60.0
POLL_INTERVAL_S = 0.05
VECTORS = REPO / "conformance" / "vectors.json"
# Gossip and the handover after the commit every 100 ms rather than every second: the cluster
# forms in about a second instead of seven.
FAST_MEMBERSHIP = "[cluster]\ngossip_interval_ms = 100\ntransfer_interval_ms = 100\n"


def poll(what: str, check, deadline_s: float = CLUSTER_DEADLINE_S):
    """Calls `check` until it returns something truthy, which is returned; fails after the
    deadline with the last exception `check` raised."""
    deadline = time.monotonic() + deadline_s
    last: "BaseException | None" = None
    while True:
        try:
            got = check()
        except Exception as e:  # noqa: BLE001 - kept for the failure message
            got, last = None, e
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {deadline_s}s waiting for {what} (last error: {last!r})")
        time.sleep(POLL_INTERVAL_S)


def admin(*args: str) -> str:
    done = subprocess.run(
        [_server_binary(), "admin", *args], capture_output=True, text=True, timeout=30,
    )
    if done.returncode != 0:
        raise RuntimeError(f"dynamokv admin {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


class Cluster:
    """Three memory-engine nodes, node-1 to node-3, on ephemeral ports, with metrics, formed into
    one ring of N = 3."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        try:
            first = Node(config=FAST_MEMBERSHIP, node_id="node-1",
                         extra=["--metrics-listen", "127.0.0.1:0"])
            self.nodes.append(first)
            for i in (2, 3):
                self.nodes.append(Node(
                    config=FAST_MEMBERSHIP,
                    node_id=f"node-{i}",
                    extra=["--metrics-listen", "127.0.0.1:0", "--join", first.address],
                ))
            self.ring_version = self._form()
        except BaseException:
            self.stop()
            raise

    def _form(self) -> int:
        first = self.nodes[0].address
        ids = [n.node_id for n in self.nodes]
        poll(
            "node-1 to know every node",
            lambda: all(
                re.search(rf"^\s+{i}\s", admin("status", "--node", first), re.M) for i in ids
            ),
        )
        plan = poll(
            "a plan that can be committed",
            lambda: re.search(r"--ring-version (\d+)", admin("plan", "--node", first)),
        )
        committed = admin("commit", "--node", first, "--ring-version", plan.group(1))
        version = int(re.search(r"committed ring version (\d+)", committed).group(1))

        def settled(node: Node) -> bool:
            status = admin("status", "--node", node.address)
            return f"ring version {version}," in status and "no handover" in status

        poll(f"every node on ring version {version}, handover done",
             lambda: all(settled(n) for n in self.nodes))
        return version

    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.node_id == node_id)

    def counters(self, op: str) -> "dict[str, int]":
        """Each node's `dynamokv_requests_total{op=OP,outcome="ok"}` (0 before the first)."""
        out = {}
        for n in self.nodes:
            with urllib.request.urlopen(n.metrics_url, timeout=5) as reply:
                text = reply.read().decode()
            value = 0
            for line in text.splitlines():
                if (line.startswith("dynamokv_requests_total{") and f'op="{op}"' in line
                        and 'outcome="ok"' in line):
                    value = int(float(line.rsplit(" ", 1)[1]))
            out[n.node_id] = value
        return out

    def stop(self) -> None:
        for n in self.nodes:
            if n.proc.poll() is None:
                n.proc.send_signal(signal.SIGCONT)  # a node a test left stopped
            n.stop()


def deltas(before: "dict[str, int]", after: "dict[str, int]") -> "dict[str, int]":
    return {k: after[k] - before[k] for k in before}


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    yield c
    c.stop()


def cluster_client(kv, cluster, **options):
    """A client given node-1 only: it learns the other nodes from the ring it pulls."""
    options.setdefault("request_timeout_ms", 10_000)
    return kv.DynamoKvClient([cluster.nodes[0].address], kv.ClientOptions(**options))


@pytest.fixture
def cc(kv, cluster):
    return cluster_client(kv, cluster)


def run_cb(kv, coro):
    """Runs `coro` with uniffi's event loop set to its own: a Python resolver is called from one
    of Rust's threads, and uniffi runs it on that loop."""
    async def main():
        kv.uniffi_set_event_loop(asyncio.get_running_loop())
        try:
            return await coro
        finally:
            kv.uniffi_set_event_loop(None)

    return asyncio.run(main())


async def make_siblings(client, k: bytes, *values: bytes):
    """Blind puts of `values`: each is concurrent with the others, so they become siblings (a
    get with R = 3 shows them all)."""
    for v in values:
        await client.put(k, v)
    got = await client.get(k, r=3)
    assert sorted(got.values) == sorted(values)
    return got


def causal(kv, k: bytes, context: bytes):
    """What a context says, less the replica that answered first (which varies by read)."""
    d = kv.describe_context(k, context)
    return (d.clock, d.cloud, d.seen_writes)


class Recorder:
    """Mixin: records each Siblings a resolver is called with."""

    def __init__(self) -> None:
        self.calls = []


def union_resolver(kv):
    class Union(kv.SiblingResolver, Recorder):
        async def resolve(self, siblings):
            self.calls.append(siblings)
            items: list = []
            for v in siblings.values:
                for item in json.loads(v):
                    if item not in items:
                        items.append(item)
            return json.dumps(sorted(items)).encode()

    return Union()


class Boom(Exception):
    pass


def test_cluster_forms_and_the_client_pulls_its_ring(kv, cluster, cc):
    assert cc.coordination() == kv.Coordination.CLIENT
    assert cc.ring_version() is None  # nothing pulled yet: the constructor does no I/O
    run(cc.connect())
    assert cc.ring_version() == cluster.ring_version
    info = run(cc.cluster_info())
    assert info.ring_version == cluster.ring_version
    assert sorted(m.id for m in info.members) == ["node-1", "node-2", "node-3"]
    assert info.n == 3 and info.partitions > 0
    assert run(cc.refresh_ring()) == cluster.ring_version
    # The client knows every member (not only its one seed).
    assert {h.address for h in cc.node_health()} == {n.address for n in cluster.nodes}


def test_client_driven_puts_and_gets_go_to_the_keys_replicas(kv, cluster, cc):
    info = run(cc.cluster_info())
    first_replicas = set()
    for i in range(8):
        k = key(f"routed-{i}")
        pl = kv.preference_list(info.members, info.partitions, k, info.n)
        assert sorted(pl.replicas) == ["node-1", "node-2", "node-3"] and pl.fallbacks == []
        first = pl.replicas[0]
        first_replicas.add(first)

        before = cluster.counters("put")
        run(cc.put(k, b"routed"))
        # The write went straight to the key's first replica, which coordinated it.
        assert deltas(before, cluster.counters("put")) == {
            n.node_id: int(n.node_id == first) for n in cluster.nodes
        }

        reads, gets = cluster.counters("read_replica"), cluster.counters("get")
        assert run(cc.get(k)).values == [b"routed"]
        # The client read the replicas itself (R answers at least; late ones may still come);
        # no node coordinated a get.
        moved = poll("R replica reads", lambda: (
            d if sum((d := deltas(reads, cluster.counters("read_replica"))).values()) >= info.r
            else None))
        assert set(moved) <= set(pl.replicas) and all(0 <= v <= 1 for v in moved.values())
        assert deltas(gets, cluster.counters("get")) == {n.node_id: 0 for n in cluster.nodes}
    # Eight keys' first replicas are not all one node (the check above could not pass by luck
    # of a client that always writes to one node).
    assert len(first_replicas) > 1


def test_server_driven_mode_sends_everything_to_the_seed(kv, cluster):
    seed = cluster.nodes[0]
    c = kv.DynamoKvClient([seed.address], kv.ClientOptions(coordination=kv.Coordination.SERVER))
    assert c.coordination() == kv.Coordination.SERVER
    assert c.ring_version() is None
    k = key("server-driven")
    puts, gets = cluster.counters("put"), cluster.counters("get")
    run(c.put(k, b"via the seed"))
    assert run(c.get(k)).values == [b"via the seed"]
    only_seed = {n.node_id: int(n is seed) for n in cluster.nodes}
    assert deltas(puts, cluster.counters("put")) == only_seed
    assert deltas(gets, cluster.counters("get")) == only_seed


def test_python_resolver_merges_siblings_and_writes_back(kv, cluster, cc):
    resolver = union_resolver(kv)

    async def scenario():
        k = key("cart")
        await make_siblings(cc, k, b'["apple"]', b'["pear"]')
        res = await cc.get_resolved(k, kv.ConflictResolver.custom(resolver), r=3)
        assert json.loads(res.value) == ["apple", "pear"]
        assert (res.siblings, res.written_back) == (2, True)
        # Called once, with the siblings and their metadata.
        assert len(resolver.calls) == 1
        s = resolver.calls[0]
        assert s.key == k and sorted(s.values) == [b'["apple"]', b'["pear"]']
        assert len(s.timestamps_ms) == 2 and all(t > 0 for t in s.timestamps_ms)
        assert s.tombstone is False
        # The write-back left one version on every replica: R = 3 sees one value.
        after = await cc.get(k, r=3)
        assert after.values == [res.value]
        # The resolved context supersedes the write-back.
        await cc.put(k, b'["fig"]', res.context)
        assert (await cc.get(k, r=3)).values == [b'["fig"]']

        # Without write-back the value is resolved but the siblings stay.
        k2 = key("cart-no-write-back")
        await make_siblings(cc, k2, b'["a"]', b'["b"]')
        res = await cc.get_resolved(
            k2, kv.ConflictResolver.custom(resolver), r=3, write_back=False)
        assert (json.loads(res.value), res.siblings, res.written_back) == (["a", "b"], 2, False)
        assert len((await cc.get(k2, r=3)).values) == 2

        # One value: the resolver is not called, nothing to write.
        k3 = key("cart-single")
        await cc.put(k3, b'["one"]')
        res = await cc.get_resolved(k3, kv.ConflictResolver.custom(resolver), r=3)
        assert (res.value, res.siblings, res.written_back) == (b'["one"]', 1, False)
        # No value at all.
        res = await cc.get_resolved(key("cart-none"), kv.ConflictResolver.custom(resolver))
        assert (res.value, res.siblings, res.written_back) == (None, 0, False)
        assert len(resolver.calls) == 2

    run_cb(kv, scenario())


def test_raising_resolver_surfaces_its_error_and_writes_nothing(kv, cluster, cc):
    E = kv.DynamoKvError

    class Raising(kv.SiblingResolver):
        """As the Swift facade's adapter does: keeps each raised exception aside by key."""

        def __init__(self, make):
            self.make = make
            self.raised = {}

        async def resolve(self, siblings):
            e = self.make(siblings)
            self.raised[siblings.key] = e
            raise e

    async def scenario():
        k = key("raising")
        before = await make_siblings(cc, k, b'["x"]', b'["y"]')

        # An arbitrary Python exception: ResolverFailed, with the exception in its message.
        r = Raising(lambda s: Boom(f"cannot merge {len(s.values)} values"))
        with pytest.raises(E.ResolverFailed) as info:
            await cc.get_resolved(k, kv.ConflictResolver.custom(r), r=3)
        err = info.value
        assert err.code() == "RESOLVER_FAILED"
        assert "Boom" in err.message and "cannot merge 2 values" in err.message
        # The exception kept aside is the one raised, for the caller to rethrow.
        assert isinstance(r.raised[k], Boom)

        # The declared error: its message as is.
        r = Raising(lambda s: kv.ResolverError.Failed("no merge for you"))
        with pytest.raises(E.ResolverFailed) as info:
            await cc.get_resolved(k, kv.ConflictResolver.custom(r), r=3)
        assert info.value.message == "no merge for you"

        # Nothing was written: both siblings are still there, under the same causal context.
        after = await cc.get(k, r=3)
        assert sorted(after.values) == sorted(before.values)
        assert causal(kv, k, after.context) == causal(kv, k, before.context)

    run_cb(kv, scenario())


def test_resolver_returning_no_bytes_fails_and_writes_nothing(kv, cluster, cc):
    E = kv.DynamoKvError

    class NotBytes(kv.SiblingResolver):
        async def resolve(self, siblings):
            return 42

    async def scenario():
        k = key("not-bytes")
        await make_siblings(cc, k, b"1", b"2")
        with pytest.raises(E.ResolverFailed) as info:
            await cc.get_resolved(k, kv.ConflictResolver.custom(NotBytes()), r=3)
        assert "TypeError" in info.value.message, info.value.message
        assert sorted((await cc.get(k, r=3)).values) == [b"1", b"2"]

    run_cb(kv, scenario())


def test_builtin_resolvers(kv, cluster, cc):
    E = kv.DynamoKvError

    async def scenario():
        # last_writer_wins: the later write, even though its bytes sort first.
        k = key("lww")
        await cc.put(k, b"zzz-first")
        first = await cc.get(k, r=3)
        (t0,) = first.timestamps_ms
        # The second write must carry a later millisecond than the first.
        poll("the clock to pass the first write", lambda: time.time() * 1000 > t0 + 2, 5.0)
        await cc.put(k, b"aaa-second")
        got = await cc.get(k, r=3)
        assert len(got.values) == 2 and len(set(got.timestamps_ms)) == 2
        res = await cc.get_resolved(k, kv.ConflictResolver.last_writer_wins(), r=3)
        assert (res.value, res.siblings, res.written_back) == (b"aaa-second", 2, True)
        assert (await cc.get(k, r=3)).values == [b"aaa-second"]
        assert kv.ConflictResolver.last_writer_wins().kind() == "lastWriterWins"

        # union_json: every element once.
        k = key("union")
        await make_siblings(cc, k, b'["apple","pear"]', b'["pear","fig"]')
        res = await cc.get_resolved(k, kv.ConflictResolver.union_json(), r=3)
        merged = json.loads(res.value)
        assert sorted(merged) == ["apple", "fig", "pear"] and res.written_back
        assert (await cc.get(k, r=3)).values == [res.value]

        # union_json on a value that is not a JSON array: ResolverFailed, nothing written.
        k = key("union-bad")
        await make_siblings(cc, k, b'["apple"]', b"not json")
        with pytest.raises(E.ResolverFailed) as info:
            await cc.get_resolved(k, kv.ConflictResolver.union_json(), r=3)
        assert "not JSON" in info.value.message
        assert len((await cc.get(k, r=3)).values) == 2

    run(scenario())


def test_timestamps_tombstone_and_a_lone_value_beside_a_delete(kv, cluster, cc):
    resolver = union_resolver(kv)

    async def scenario():
        k = key("tombstone")
        start = time.time() * 1000
        await cc.put(k, b"v0")
        got = await cc.get(k, r=3)
        assert got.tombstone is False and len(got.timestamps_ms) == 1
        # The node's clock is this machine's.
        assert start - 5_000 <= got.timestamps_ms[0] <= time.time() * 1000 + 5_000
        # A put and a delete from the same context: concurrent, the delete as a tombstone.
        await cc.put(k, b"a", got.context)
        await cc.delete(k, got.context)
        both = await cc.get(k, r=3)
        assert (both.values, both.tombstone, len(both.timestamps_ms)) == ([b"a"], True, 1)
        # One value and a tombstone: written back without calling the resolver.
        res = await cc.get_resolved(k, kv.ConflictResolver.custom(resolver), r=3)
        assert (res.value, res.siblings, res.written_back) == (b"a", 1, True)
        assert resolver.calls == []
        settled = await cc.get(k, r=3)
        assert (settled.values, settled.tombstone) == ([b"a"], False)

    run_cb(kv, scenario())


def test_batches_with_one_bad_key(kv, cluster, cc):
    E = kv.DynamoKvError
    O = kv.GetOutcome  # noqa: E741
    P = kv.PutOutcome
    R = kv.ResolvedOutcome

    async def scenario():
        k1, k2, missing = key("batch-1"), key("batch-2"), key("batch-missing")
        put = await cc.put_many([
            kv.PutItem(key=k1, value=b"1", context=None),
            kv.PutItem(key=b"", value=b"x", context=None),
            kv.PutItem(key=k2, value=b"2", context=None),
        ])
        assert [type(p) for p in put] == [P.SUCCESS, P.FAILURE, P.SUCCESS]
        assert isinstance(put[1].error, E.EmptyKey) and put[1].error.max == 4096
        assert put[0].context and put[2].context

        got = await cc.get_many([k1, b"", k2, missing])
        assert [type(g) for g in got] == [O.SUCCESS, O.FAILURE, O.SUCCESS, O.SUCCESS]
        assert isinstance(got[1].error, E.EmptyKey)
        assert [got[0].value.values, got[2].value.values, got[3].value.values] == [
            [b"1"], [b"2"], []]

        # Contexts from the batch get: these puts supersede, so one value each.
        put = await cc.put_many([
            kv.PutItem(key=k1, value=b"1b", context=got[0].value.context),
            kv.PutItem(key=k2, value=b"2b", context=got[2].value.context),
        ], w=3)
        assert all(p.is_SUCCESS() for p in put)
        assert [g.value.values for g in await cc.get_many([k1, k2], r=3)] == [[b"1b"], [b"2b"]]
        # A quorum outside 1..N fails every item, nothing written.
        put = await cc.put_many([kv.PutItem(key=k1, value=b"no", context=None)], w=0)
        assert isinstance(put[0].error, E.InvalidQuorum)
        assert (await cc.get(k1, r=3)).values == [b"1b"]

        # Resolving batch: a mergeable key, a bad key, one the resolver fails on, one value.
        merge, bad, lone = key("batch-merge"), key("batch-not-json"), key("batch-lone")
        await make_siblings(cc, merge, b'["a"]', b'["b"]')
        await make_siblings(cc, bad, b'["a"]', b"{}")
        await cc.put(lone, b'["lone"]')
        res = await cc.get_many_resolved(
            [merge, b"", bad, lone], kv.ConflictResolver.union_json(), r=3)
        assert [type(x) for x in res] == [R.SUCCESS, R.FAILURE, R.FAILURE, R.SUCCESS]
        assert json.loads(res[0].value.value) == ["a", "b"] and res[0].value.written_back
        assert isinstance(res[1].error, E.EmptyKey)
        assert isinstance(res[2].error, E.ResolverFailed)
        assert (res[3].value.value, res[3].value.siblings) == (b'["lone"]', 1)
        assert (await cc.get(merge, r=3)).values == [res[0].value.value]
        assert len((await cc.get(bad, r=3)).values) == 2

        # A Python resolver that raises for one key only: that key fails, the others resolve.
        class Picky(kv.SiblingResolver, Recorder):
            async def resolve(self, siblings):
                self.calls.append(siblings.key)
                if siblings.key == refused:
                    raise Boom("not this one")
                return b"merged"

        ok, refused = key("batch-ok"), key("batch-refused")
        await make_siblings(cc, ok, b"p", b"q")
        await make_siblings(cc, refused, b"p", b"q")
        picky = Picky()
        res = await cc.get_many_resolved(
            [ok, refused], kv.ConflictResolver.custom(picky), r=3, write_back=True)
        assert sorted(picky.calls) == sorted([ok, refused])
        assert res[0].is_SUCCESS() and res[0].value.value == b"merged"
        assert isinstance(res[1].error, E.ResolverFailed) and "not this one" in res[1].error.message
        assert (await cc.get(ok, r=3)).values == [b"merged"]
        assert sorted((await cc.get(refused, r=3)).values) == [b"p", b"q"]

    run_cb(kv, scenario())


def test_new_client_options(kv, cluster):
    E = kv.DynamoKvError
    seed = cluster.nodes[0].address
    for bad in (
        kv.ClientOptions(ring_refresh_interval_ms=0),
        kv.ClientOptions(hedge_after_ms=0),
        kv.ClientOptions(batch_concurrency=0),
    ):
        with pytest.raises(E.InvalidConfig):
            kv.DynamoKvClient([seed], bad)
    c = kv.DynamoKvClient([seed], kv.ClientOptions(
        coordination=kv.Coordination.CLIENT, ring_refresh_interval_ms=200, hedge_after_ms=20,
        batch_concurrency=2, request_timeout_ms=10_000,
    ))

    async def scenario():
        keys = [key(f"options-{i}") for i in range(10)]
        put = await c.put_many([kv.PutItem(key=k, value=k, context=None) for k in keys])
        assert all(p.is_SUCCESS() for p in put)
        got = await c.get_many(keys)
        assert [g.value.values for g in got] == [[k] for k in keys]
        assert c.ring_version() == cluster.ring_version

    run(scenario())


def _unhex(s: str) -> bytes:
    return bytes.fromhex(s)


def test_conformance_vectors_through_the_inspect_functions(kv):
    E = kv.DynamoKvError
    vectors = json.loads(VECTORS.read_text(encoding="utf-8"))
    checked = 0
    for v in vectors["keys"]:
        k = _unhex(v["key_hex"])
        assert kv.key_position(k) == v["position"], v["name"]
        assert int(kv.key_position(k)) < 1 << 128
        for q, p in v["partition"].items():
            assert kv.partition_of(k, int(q)) == p, (v["name"], q)
        checked += 1
    for ring in vectors["rings"]:
        members = [kv.MemberInfo(id=m["id"], address=m["address"], zone=m["zone"],
                                 weight=m["weight"]) for m in ring["members"]]
        for v in ring["keys"]:
            k = _unhex(v["key_hex"])
            assert kv.partition_of(k, ring["partitions"]) == v["partition"]
            pl = kv.preference_list(members, ring["partitions"], k, ring["n"])
            assert pl.replicas == v["preference_list"], (ring["name"], v["name"])
            assert pl.fallbacks == v["fallbacks"], (ring["name"], v["name"])
            checked += 1
    for v in vectors["contexts"]:
        d = kv.describe_context(_unhex(v["key_hex"]), _unhex(v["bytes_hex"]))
        want = v["decoded"]
        assert [(e.actor, e.counter) for e in d.clock] == [
            (int(e["actor"]), e["counter"]) for e in want["clock"]], v["name"]
        assert [(e.actor, e.counter) for e in d.cloud] == [
            (int(e["actor"]), e["counter"]) for e in want["cloud"]], v["name"]
        assert [w.hex() for w in d.seen_writes] == want["seen_writes"], v["name"]
        assert d.fastest_replica == want["fastest_replica"], v["name"]
        checked += 1
    messages: "dict[str, set[str]]" = {}
    for v in vectors["invalid_contexts"]:
        with pytest.raises(E.InvalidContext) as info:
            kv.describe_context(_unhex(v["key_hex"]), _unhex(v["bytes_hex"]))
        messages.setdefault(v["error"], set()).add(info.value.message)
        checked += 1
    # One message per kind for "malformed" and "wrong_key"; "invalid" ones say something else.
    assert len(messages["malformed"]) == 1 and len(messages["wrong_key"]) == 1
    assert messages["malformed"] != messages["wrong_key"]
    assert not (messages.get("invalid", set()) & (messages["malformed"] | messages["wrong_key"]))
    # Bad inputs are refused as client-core refuses them.
    with pytest.raises(E.InvalidConfig):
        kv.partition_of(b"k", 3)
    with pytest.raises(E.InvalidConfig):
        kv.preference_list([], 8, b"k", 3)
    assert checked >= 20 + 4 + 8 + 6


def test_shopping_cart_as_the_swift_example_runs_it(kv, cluster):
    # examples/swift/ShoppingCart.swift, step by step through the same FFI: two sessions add to
    # the version they read, one while node-2 is paused; unionJson merges; a blind add is merged
    # by an application resolver; nothing added is lost.
    paused = cluster.node("node-2")
    c = cluster_client(kv, cluster, attempt_timeout_ms=3_000, request_timeout_ms=20_000)

    class FirstSeenUnion(kv.SiblingResolver):
        async def resolve(self, siblings):
            items: list = []
            for v in siblings.values:
                items += [i for i in json.loads(v) if i not in items]
            return json.dumps(items).encode()

    async def scenario():
        await c.connect()
        info = await c.cluster_info()
        k = key("cart")
        await c.put(k, b'["milk"]')
        start = await c.get(k)
        seen = json.loads(start.values[0])

        async def add(item):
            await c.put(k, json.dumps(seen + [item]).encode(), start.context)

        first = asyncio.ensure_future(add("eggs"))
        paused.proc.send_signal(signal.SIGSTOP)
        try:
            await add("bread")
        finally:
            paused.proc.send_signal(signal.SIGCONT)
        await first
        assert len((await c.get(k, r=info.n)).values) == 2
        merged = await c.get_resolved(k, kv.ConflictResolver.union_json(), r=info.n)
        assert merged.siblings == 2 and merged.written_back
        assert sorted(json.loads(merged.value)) == ["bread", "eggs", "milk"]
        await c.put(k, b'["jam"]')
        last = await c.get_resolved(k, kv.ConflictResolver.custom(FirstSeenUnion()), r=info.n)
        assert sorted(json.loads(last.value)) == ["bread", "eggs", "jam", "milk"]
        assert (await c.get(k, r=info.n)).values == [last.value]

    run_cb(kv, scenario())


def test_stopped_node_is_routed_around(kv, cluster):
    # Last: it stops node-3 for a while.
    victim = cluster.node("node-3")
    # The attempt timeout stays above a node's replica timeout (2 s) plus half a second.
    c = cluster_client(kv, cluster, attempt_timeout_ms=3_000, request_timeout_ms=20_000)
    run(c.connect())
    info = run(c.cluster_info())
    # A key whose writes go to node-3 first.
    k = next(k for k in (key(f"stopped-{i}") for i in range(1000))
             if kv.preference_list(info.members, info.partitions, k, info.n).replicas[0]
             == "node-3")
    victim.proc.send_signal(signal.SIGSTOP)
    try:
        async def scenario():
            await c.put(k, b'["before"]', w=2)
            got = await c.get(k, r=2)
            assert got.values == [b'["before"]']
            await c.put(k, b'["after"]', got.context, w=2)
            assert (await c.get(k, r=2)).values == [b'["after"]']
            await c.put(k, b'["sibling"]', w=2)
            res = await c.get_resolved(k, kv.ConflictResolver.union_json(), r=2)
            assert set(json.loads(res.value)) == {"after", "sibling"} and res.written_back
            assert {h.address: h.up for h in c.node_health()}[victim.address] is False

        run(scenario())
    finally:
        victim.proc.send_signal(signal.SIGCONT)
