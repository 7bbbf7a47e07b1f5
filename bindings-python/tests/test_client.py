"""Client construction, an unreachable node, the exception hierarchy, and concurrency."""

from __future__ import annotations

import asyncio
import pickle
import threading
from typing import Any, Dict, List

import pytest

import dynamokv

CLIENTS = [dynamokv.Client, dynamokv.AsyncClient]


@pytest.mark.parametrize("cls", CLIENTS)
@pytest.mark.parametrize(
    "seeds, options",
    [
        ([], {}),
        (["not-an-address"], {}),
        (["127.0.0.1:notaport"], {}),
        (["127.0.0.1:70000"], {}),
        ([":7070"], {}),
        (["127.0.0.1:7070"], {"request_timeout": 0}),
        (["127.0.0.1:7070"], {"connect_timeout": 0.0}),
        (["127.0.0.1:7070"], {"request_timeout": -1.0}),
        (["127.0.0.1:7070"], {"connect_timeout": float("nan")}),
        (["127.0.0.1:7070"], {"attempt_timeout": 0}),
        (["127.0.0.1:7070"], {"attempt_timeout": -0.5}),
        (["127.0.0.1:7070"], {"max_key_bytes": 0}),
        (["127.0.0.1:7070"], {"coordination": "nodes"}),
        (["127.0.0.1:7070"], {"coordination": "Client"}),
        (["127.0.0.1:7070"], {"ring_refresh_interval": 0}),
        (["127.0.0.1:7070"], {"ring_refresh_interval": -1.0}),
        (["127.0.0.1:7070"], {"hedge_after": 0.0}),
        (["127.0.0.1:7070"], {"hedge_after": float("inf")}),
        (["127.0.0.1:7070"], {"batch_concurrency": 0}),
    ],
)
def test_invalid_config(cls: Any, seeds: List[str], options: Any) -> None:
    with pytest.raises(dynamokv.InvalidConfigError) as info:
        cls(seeds, **options)
    assert info.value.code == "INVALID_CONFIG"
    assert "invalid client configuration" in str(info.value)


@pytest.mark.parametrize("cls", CLIENTS)
def test_valid_config_needs_no_server(cls: Any) -> None:
    client = cls("127.0.0.1:1", connect_timeout=0.5, request_timeout=1.5, max_retries=0,
                 max_key_bytes=10, max_value_bytes=20)
    assert (client.max_key_bytes, client.max_value_bytes) == (10, 20)
    assert repr(client) == f"{cls.__name__}(['127.0.0.1:1'])"
    assert cls(["127.0.0.1:1"], max_value_bytes=20).max_key_bytes == 4096  # client-core default
    assert cls("127.0.0.1:1", request_timeout=5.0, attempt_timeout=1.5).node_health()
    assert client.coordination == "client" and client.ring_version() is None  # the default
    tuned = cls("127.0.0.1:1", coordination="server", ring_refresh_interval=0.5,
                hedge_after=0.05, batch_concurrency=4)
    assert tuned.coordination == "server" and tuned.ring_version() is None
    assert cls("127.0.0.1:1", coordination="client", hedge_after=None).coordination == "client"


@pytest.mark.parametrize("cls", CLIENTS)
def test_node_health_of_a_fresh_client_lists_every_seed_up(cls: Any) -> None:
    client = cls(["127.0.0.1:1", " 127.0.0.1:2"], attempt_timeout=1.0)
    health = client.node_health()  # a plain method on both clients: no I/O
    assert health == [
        dynamokv.NodeHealth("127.0.0.1:1", True),
        dynamokv.NodeHealth("127.0.0.1:2", True),  # as the client uses it: trimmed
    ]
    assert (health[0].address, health[0].up) == ("127.0.0.1:1", True)


def test_node_health_after_calls_to_a_live_node(node: Any) -> None:
    options: Dict[str, Any] = dict(request_timeout=5.0, attempt_timeout=2.0)
    sync = dynamokv.Client([node.address], **options)
    aio = dynamokv.AsyncClient([node.address], **options)
    sync.put(b"health", b"v")
    assert sync.get(b"health").values == [b"v"]
    assert sync.node_health() == [dynamokv.NodeHealth(node.address, True)]

    async def call() -> None:
        assert (await aio.get(b"health")).values == [b"v"]

    asyncio.run(call())
    assert aio.node_health() == [dynamokv.NodeHealth(node.address, True)]


@pytest.mark.parametrize(
    "coordination, expected",
    [
        ("server", (dynamokv.UnavailableError, dynamokv.RequestTimeoutError)),
        # Coordinating the read itself, the client asked the key's one replica, and it did not
        # answer: no replica answered, which is unavailability as a node would report it.
        ("client", (dynamokv.UnavailableError, dynamokv.RequestTimeoutError)),
    ],
)
def test_stopped_node_is_unavailable(start_node: Any, coordination: str, expected: Any) -> None:
    node = start_node()
    options: Dict[str, Any] = dict(
        connect_timeout=0.5, request_timeout=2.0, max_retries=0, coordination=coordination
    )
    sync = dynamokv.Client([node.address], **options)
    aio = dynamokv.AsyncClient([node.address], **options)
    sync.put(b"k", b"v")

    async def async_put() -> None:
        await aio.put(b"k2", b"v")

    asyncio.run(async_put())
    node.stop()

    with pytest.raises(expected) as info:
        sync.get(b"k")
    assert isinstance(info.value, dynamokv.DynamoKVError)

    async def async_get() -> None:
        await aio.get(b"k")

    with pytest.raises(expected) as info:
        asyncio.run(async_get())
    assert isinstance(info.value, dynamokv.DynamoKVError)


ALL_ERRORS = [
    (dynamokv.InvalidConfigError("m"), "INVALID_CONFIG", {}),
    (dynamokv.EmptyKeyError("m", 4096), "EMPTY_KEY", {"max": 4096}),
    (dynamokv.KeyTooLargeError("m", 5, 4), "KEY_TOO_LARGE", {"size": 5, "max": 4}),
    (dynamokv.ValueTooLargeError("m", 5, 4), "VALUE_TOO_LARGE", {"size": 5, "max": 4}),
    (dynamokv.InvalidContextError("m"), "INVALID_CONTEXT", {}),
    (dynamokv.InvalidQuorumError("m"), "INVALID_QUORUM", {}),
    (dynamokv.MissingFieldError("m"), "MISSING_FIELD", {}),
    (dynamokv.InvalidInputError("m"), "INVALID_INPUT", {}),
    (dynamokv.QuorumError("m", 2, 1), "QUORUM_NOT_REACHED", {"needed": 2, "got": 1}),
    (dynamokv.OutcomeUnknownError("m", bytes(range(16))), "OUTCOME_UNKNOWN",
     {"write_id": bytes(range(16))}),
    (dynamokv.SiblingLimitError("m"), "SIBLING_LIMIT", {}),
    (dynamokv.UnavailableError("m"), "UNAVAILABLE", {}),
    (dynamokv.OverloadedError("m"), "OVERLOADED", {}),
    (dynamokv.UnauthenticatedError("m"), "UNAUTHENTICATED", {}),
    (dynamokv.PermissionDeniedError("m"), "PERMISSION_DENIED", {}),
    (dynamokv.TlsError("m"), "TLS", {}),
    (dynamokv.RequestTimeoutError("m", 1.5), "TIMEOUT", {"after": 1.5}),
    (dynamokv.ResolverError("m"), "RESOLVER_FAILED", {}),
    (dynamokv.InternalError("m"), "INTERNAL", {}),
]


@pytest.mark.parametrize("err, code, fields", ALL_ERRORS, ids=lambda v: type(v).__name__)
def test_exception_hierarchy(err: Any, code: str, fields: Any) -> None:
    assert isinstance(err, dynamokv.DynamoKVError) and isinstance(err, Exception)
    assert err.code == code and str(err) == "m" and err.message == "m"
    for name, value in fields.items():
        assert getattr(err, name) == value
    input_errors = (
        dynamokv.EmptyKeyError,
        dynamokv.KeyTooLargeError,
        dynamokv.ValueTooLargeError,
        dynamokv.InvalidContextError,
        dynamokv.InvalidQuorumError,
        dynamokv.MissingFieldError,
        dynamokv.InvalidInputError,
    )
    assert isinstance(err, dynamokv.InvalidInputError) == isinstance(err, input_errors)
    assert isinstance(err, TimeoutError) == isinstance(err, dynamokv.RequestTimeoutError)
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is type(err) and str(copy) == "m" and copy.code == code
    for name, value in fields.items():
        assert getattr(copy, name) == value


def test_blocking_client_from_many_threads(node: Any) -> None:
    client = dynamokv.Client([node.address])
    errors: List[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(25):
                key = f"thread:{n}:{i}"
                client.put(key, str(i).encode())
                assert client.get(key).values == [str(i).encode()]
        except BaseException as e:  # reported below; a thread cannot fail the test itself
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def test_async_client_concurrent_calls_and_several_loops(node: Any) -> None:
    client = dynamokv.AsyncClient([node.address])

    async def many(tag: str) -> None:
        keys = [f"async:{tag}:{i}" for i in range(50)]
        await asyncio.gather(*(client.put(k, k.encode()) for k in keys))
        got = await asyncio.gather(*(client.get(k) for k in keys))
        assert [g.values for g in got] == [[k.encode()] for k in keys]
        # Coroutines, so tasks work too.
        task = asyncio.create_task(client.get(keys[0]))
        assert (await task).values == [keys[0].encode()]

    asyncio.run(many("first"))
    asyncio.run(many("second"))  # the same client on a new event loop
