"""DynamoKV for Python: a client for a Dynamo-style replicated key-value store.

Two clients with the same methods: :class:`Client` blocks (releasing the GIL while it waits),
:class:`AsyncClient` returns coroutines for asyncio. Both wrap the Rust client core, which holds
every default, check, deadline and retry, so they behave exactly like the Node.js and Swift SDKs.

>>> import dynamokv
>>> kv = dynamokv.Client(["127.0.0.1:7070"])           # doctest: +SKIP
>>> kv.put(b"cart:1", b"apple")                         # doctest: +SKIP
>>> got = kv.get("cart:1")                              # doctest: +SKIP
>>> kv.put("cart:1", b"pear", got.context)              # doctest: +SKIP

Keys are ``bytes``-like or ``str`` (encoded as UTF-8); values are ``bytes``-like. A get returns
every causally concurrent value (siblings) and one opaque ``context``: pass it, unchanged, to the
put or delete that follows so the write supersedes exactly what the get saw.

A put or delete whose answer was lost raises :class:`OutcomeUnknownError`: it was applied once
or not at all. Retrying it with ``write_id=err.write_id`` can never apply it twice:

>>> try:                                                # doctest: +SKIP
...     kv.put("cart:1", b"plum", got.context)
... except dynamokv.OutcomeUnknownError as err:
...     kv.put("cart:1", b"plum", got.context, write_id=err.write_id)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Union

from . import _native
from ._errors import (
    DynamoKVError,
    EmptyKeyError,
    InternalError,
    InvalidConfigError,
    InvalidContextError,
    InvalidInputError,
    InvalidQuorumError,
    KeyTooLargeError,
    MissingFieldError,
    OutcomeUnknownError,
    QuorumError,
    RequestTimeoutError,
    SiblingLimitError,
    UnavailableError,
    ValueTooLargeError,
)

__version__: str = _native.__version__

__all__ = [
    "Client",
    "AsyncClient",
    "GetResult",
    "ClusterInfo",
    "MemberInfo",
    "NodeHealth",
    "DynamoKVError",
    "InvalidConfigError",
    "InvalidInputError",
    "EmptyKeyError",
    "KeyTooLargeError",
    "ValueTooLargeError",
    "InvalidContextError",
    "InvalidQuorumError",
    "MissingFieldError",
    "QuorumError",
    "OutcomeUnknownError",
    "SiblingLimitError",
    "UnavailableError",
    "RequestTimeoutError",
    "InternalError",
]

BytesLike = Union[bytes, bytearray, memoryview]
"""A value, a context or a write id."""
Key = Union[str, bytes, bytearray, memoryview]
"""A key; a ``str`` is encoded as UTF-8."""
Seeds = Union[str, Sequence[str]]
"""One ``"host:port"`` or a sequence of them."""


@dataclass(frozen=True)
class GetResult:
    """What a get saw: every concurrent value (empty if the key is absent or deleted) and one
    context covering all of them."""

    values: List[bytes]
    context: bytes


@dataclass(frozen=True)
class MemberInfo:
    """One cluster member, as a node reported it."""

    id: str
    address: str
    zone: str
    weight: int


@dataclass(frozen=True)
class ClusterInfo:
    """The cluster's settings and membership, as the node ``answered_by`` reported them."""

    cluster_name: str
    partitions: int
    n: int
    r: int
    w: int
    members: List[MemberInfo]
    answered_by: str


@dataclass(frozen=True)
class NodeHealth:
    """Whether the client considers one of its seed nodes up (its own failure detector's
    view): ``up`` turns false when the node fails to answer within ``attempt_timeout``, and true
    again once a background probe gets an answer."""

    address: str
    up: bool


def _cluster_info(raw: Dict[str, Any]) -> ClusterInfo:
    members = [MemberInfo(**m) for m in raw.pop("members")]
    return ClusterInfo(members=members, **raw)


class _Base:
    __slots__ = ("_native", "_seeds")

    def __init__(
        self,
        seeds: Seeds,
        *,
        connect_timeout: Optional[float] = None,
        request_timeout: Optional[float] = None,
        attempt_timeout: Optional[float] = None,
        max_retries: Optional[int] = None,
        max_key_bytes: Optional[int] = None,
        max_value_bytes: Optional[int] = None,
    ) -> None:
        self._seeds = [seeds] if isinstance(seeds, str) else list(seeds)
        self._native = _native.Client(
            self._seeds,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            attempt_timeout=attempt_timeout,
            max_retries=max_retries,
            max_key_bytes=max_key_bytes,
            max_value_bytes=max_value_bytes,
        )

    @property
    def max_key_bytes(self) -> int:
        """The largest key this client sends (the server checks its own limit too)."""
        return self._native.limits[0]

    @property
    def max_value_bytes(self) -> int:
        """The largest value this client sends (the server checks its own limit too)."""
        return self._native.limits[1]

    def node_health(self) -> List[NodeHealth]:
        """The client's own view of its seed nodes, one :class:`NodeHealth` per seed in order:
        which answer and which it avoids (tries last). Local state only: no I/O, so a plain
        method on :class:`AsyncClient` too."""
        return [NodeHealth(address, up) for address, up in self._native.node_health()]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._seeds!r})"


class Client(_Base):
    """A blocking DynamoKV client. Safe to share between threads.

    ``seeds`` are ``"host:port"`` addresses of cluster nodes. Options left as ``None`` keep the
    client core's defaults: ``connect_timeout``, ``request_timeout`` and ``attempt_timeout`` are
    seconds (the request timeout bounds a whole call, retries included; the attempt timeout, by
    default the whole request timeout, is how long one node gets to answer one attempt before
    it is marked down and the call goes on to another node), ``max_retries`` is how many further nodes to
    try when one cannot be reached, ``max_key_bytes``/``max_value_bytes`` are checked before
    sending. Connections are made on first use; a bad option raises :class:`InvalidConfigError`.
    """

    __slots__ = ()

    def get(self, key: Key, r: Optional[int] = None) -> GetResult:
        """Every concurrent value of ``key`` and their context, reading ``r`` replicas (default:
        the cluster's R)."""
        values, context = self._native.get(key, r)
        return GetResult(values, context)

    def put(
        self,
        key: Key,
        value: BytesLike,
        context: Optional[BytesLike] = None,
        w: Optional[int] = None,
        *,
        write_id: Optional[BytesLike] = None,
        sync_replicas: Optional[int] = None,
    ) -> bytes:
        """Writes ``value``, superseding what ``context`` saw (with no context it becomes a
        sibling of whatever is stored). Waits for ``w`` replicas (default: the cluster's W).
        Returns the new version's context.

        ``write_id`` (16 bytes) names the write; left ``None``, a fresh random one is drawn.
        Give the ``write_id`` of an :class:`OutcomeUnknownError` to retry that write: one write
        id is applied at most once, however often it is sent. Another length raises
        :class:`MissingFieldError`, another type ``TypeError``; nothing is sent.

        ``sync_replicas`` is how many of the ``w`` acknowledging replicas fsync their write-ahead
        log before the write is acknowledged, 0 to W (default: the cluster's ``sync_replicas``,
        0 unless configured). 0 survives a crash of any process; 1 or more also a power cut of
        every replica at once. More than W raises :class:`InvalidQuorumError` and writes
        nothing."""
        return self._native.put(
            key, value, context, w, write_id=write_id, sync_replicas=sync_replicas
        )

    def delete(
        self,
        key: Key,
        context: BytesLike,
        w: Optional[int] = None,
        *,
        write_id: Optional[BytesLike] = None,
        sync_replicas: Optional[int] = None,
    ) -> bytes:
        """Deletes what ``context`` saw of ``key``. Returns the tombstone's context.
        ``write_id`` and ``sync_replicas`` are as for :meth:`put`."""
        return self._native.delete(
            key, context, w, write_id=write_id, sync_replicas=sync_replicas
        )

    def cluster_info(self) -> ClusterInfo:
        """The cluster's settings and membership, as one node reports them."""
        return _cluster_info(self._native.cluster_info())


class AsyncClient(_Base):
    """An asyncio DynamoKV client: :class:`Client`'s options and methods, as coroutines.

    Not bound to an event loop: one instance may serve several loops in turn.
    """

    __slots__ = ()

    async def get(self, key: Key, r: Optional[int] = None) -> GetResult:
        """Every concurrent value of ``key`` and their context; see :meth:`Client.get`."""
        values, context = await self._native.get_async(key, r)
        return GetResult(values, context)

    async def put(
        self,
        key: Key,
        value: BytesLike,
        context: Optional[BytesLike] = None,
        w: Optional[int] = None,
        *,
        write_id: Optional[BytesLike] = None,
        sync_replicas: Optional[int] = None,
    ) -> bytes:
        """Writes ``value`` and returns the new context; see :meth:`Client.put` (``write_id``
        and ``sync_replicas`` included)."""
        return await self._native.put_async(
            key, value, context, w, write_id=write_id, sync_replicas=sync_replicas
        )

    async def delete(
        self,
        key: Key,
        context: BytesLike,
        w: Optional[int] = None,
        *,
        write_id: Optional[BytesLike] = None,
        sync_replicas: Optional[int] = None,
    ) -> bytes:
        """Deletes what ``context`` saw of ``key``; see :meth:`Client.delete` (``write_id``
        and ``sync_replicas`` included)."""
        return await self._native.delete_async(
            key, context, w, write_id=write_id, sync_replicas=sync_replicas
        )

    async def cluster_info(self) -> ClusterInfo:
        """The cluster's settings and membership; see :meth:`Client.cluster_info`."""
        return _cluster_info(await self._native.cluster_info_async())
