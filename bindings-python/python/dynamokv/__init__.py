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

By default the client coordinates requests itself (paper 6.4): it pulls the ring, reads a key's
replicas directly and sends each write straight to one of them; ``coordination="server"`` sends
every request to a seed node instead. A resolving get collapses siblings into one value and,
by default, writes it back:

>>> from dynamokv import resolvers                      # doctest: +SKIP
>>> cart = kv.get("cart:1", resolver=resolvers.union_json)   # doctest: +SKIP
>>> cart.value, cart.siblings, cart.written_back        # doctest: +SKIP

Batches (``get_many``, ``put_many``) return one result per item, in order: the result, or the
exception that item raised (like ``asyncio.gather(..., return_exceptions=True)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union, overload

import atexit
import os

from . import _native, conformance, resolvers

# Results of AsyncClient calls are handed to asyncio from the client's own threads; at exit,
# let any hand-over under way finish before the interpreter is torn down (see the native
# module's awaitable.rs: otherwise a program that ends right after its last await may crash).
atexit.register(_native.await_deliveries, 2.0)
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
    ResolverError,
    SiblingLimitError,
    UnavailableError,
    OverloadedError,
    UnauthenticatedError,
    PermissionDeniedError,
    TlsError,
    ValueTooLargeError,
)

__version__: str = _native.__version__

__all__ = [
    "Client",
    "AsyncClient",
    "GetResult",
    "Resolved",
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
    "OverloadedError",
    "UnauthenticatedError",
    "PermissionDeniedError",
    "TlsError",
    "RequestTimeoutError",
    "ResolverError",
    "InternalError",
    "resolvers",
    "conformance",
]

BytesLike = Union[bytes, bytearray, memoryview]
"""A value, a context or a write id."""
Key = Union[str, bytes, bytearray, memoryview]
"""A key; a ``str`` is encoded as UTF-8."""
Seeds = Union[str, Sequence[str]]
"""One ``"host:port"`` or a sequence of them."""
PutItem = Union[Tuple[Key, BytesLike], Tuple[Key, BytesLike, Optional[BytesLike]]]
"""One write of :meth:`Client.put_many`: ``(key, value)`` (a blind write) or
``(key, value, context)``."""


@dataclass(frozen=True)
class GetResult:
    """What a get saw: every concurrent value (empty if the key is absent or deleted) and one
    context covering all of them. ``timestamps_ms`` are the values' write times (milliseconds
    since the epoch, by the clock of the node that coordinated each write), in the order of
    ``values``; ``tombstone`` is whether a delete is concurrent with the values."""

    values: List[bytes]
    context: bytes
    timestamps_ms: List[int] = field(default_factory=list)
    tombstone: bool = False


@dataclass(frozen=True)
class Resolved:
    """A resolving get's result: the one ``value`` (the only one, or the resolver's result;
    ``None`` when the key has none), the ``context`` to hand to the next write of the key (it
    covers everything resolved, and the write-back when one was made), how many concurrent
    values the get returned (``siblings``) and whether the resolved value was written back."""

    value: Optional[bytes]
    context: bytes
    siblings: int
    written_back: bool


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
    ring_version: int


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


def _got(raw: Any) -> Any:
    return raw if isinstance(raw, BaseException) else GetResult(*raw)


def _resolved(raw: Any) -> Any:
    return raw if isinstance(raw, BaseException) else Resolved(*raw)


def _keys(keys: Iterable[Key]) -> List[Key]:
    if isinstance(keys, (str, bytes, bytearray, memoryview)):
        raise TypeError(
            f"keys must be an iterable of keys, not a single {type(keys).__name__}: "
            "wrap one key in a list"
        )
    return list(keys)


def _items(items: Iterable[PutItem]) -> List[PutItem]:
    return list(items)


PemOrPath = Union[str, "os.PathLike[str]", bytes]


def _pem(value: Optional[PemOrPath]) -> Optional[str]:
    """PEM text, or a path, as the native client takes it."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("ascii")
    return os.fspath(value)


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
        coordination: Optional[str] = None,
        ring_refresh_interval: Optional[float] = None,
        hedge_after: Optional[float] = None,
        batch_concurrency: Optional[int] = None,
        ca_cert: Optional[PemOrPath] = None,
        client_cert: Optional[PemOrPath] = None,
        client_key: Optional[PemOrPath] = None,
        token: Optional[str] = None,
        tls_reload_interval: Optional[float] = None,
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
            coordination=coordination,
            ring_refresh_interval=ring_refresh_interval,
            hedge_after=hedge_after,
            batch_concurrency=batch_concurrency,
            ca_cert=_pem(ca_cert),
            client_cert=_pem(client_cert),
            client_key=_pem(client_key),
            token=token,
            tls_reload_interval=tls_reload_interval,
        )

    @property
    def coordination(self) -> str:
        """Who coordinates this client's requests: ``"client"`` (the default: the client pulls
        the ring and talks to each key's replicas) or ``"server"`` (a seed node does)."""
        return self._native.coordination

    def ring_version(self) -> Optional[int]:
        """The version of the ring the client routes by; ``None`` before its first pull (and
        always with ``coordination="server"``). Local state only: no I/O, so a plain method on
        :class:`AsyncClient` too."""
        return self._native.ring_version()

    @property
    def max_key_bytes(self) -> int:
        """The largest key this client sends (the server checks its own limit too)."""
        return self._native.limits[0]

    @property
    def max_value_bytes(self) -> int:
        """The largest value this client sends (the server checks its own limit too)."""
        return self._native.limits[1]

    def node_health(self) -> List[NodeHealth]:
        """The client's own view of its nodes, one :class:`NodeHealth` per seed in order and,
        coordinating in the client, then per further member of the ring it routes by: which
        answer and which it avoids (tries last). Local state only: no I/O, so a plain method on
        :class:`AsyncClient` too."""
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
    sending. ``coordination`` is ``"client"`` (default) or ``"server"``;
    ``ring_refresh_interval`` (seconds, default 10) is how often the client pulls the ring;
    ``hedge_after`` (seconds, default ``None``: off) asks one more replica when a read has not
    had its R answers by then; ``batch_concurrency`` (default 32) is how many keys of one batch
    are in flight at once. Connections are made on first use; a bad option raises
    :class:`InvalidConfigError`.

    For a cluster that serves TLS: ``ca_cert`` is the cluster's CA certificate (PEM text, or
    the path of a PEM file: a ``str`` or ``os.PathLike``); ``client_cert`` and ``client_key``
    a client certificate and its key (from ``dynamokv cert user``); or ``token`` a token from
    ``dynamokv admin user add``, sent only over TLS. Refusals raise
    :class:`UnauthenticatedError`, :class:`PermissionDeniedError` or :class:`TlsError`.
    Certificate files given as paths are read again when a connection is made at least
    ``tls_reload_interval`` seconds (default 2) after they were last read, so certificates
    rotated on disk reach a running client's next connection.
    """

    __slots__ = ()

    @overload
    def get(
        self, key: Key, r: Optional[int] = None, resolver: None = None, write_back: bool = True
    ) -> GetResult: ...
    @overload
    def get(
        self, key: Key, r: Optional[int], resolver: resolvers.Resolver, write_back: bool = True
    ) -> Resolved: ...
    @overload
    def get(
        self,
        key: Key,
        r: Optional[int] = None,
        *,
        resolver: resolvers.Resolver,
        write_back: bool = True,
    ) -> Resolved: ...
    def get(
        self,
        key: Key,
        r: Optional[int] = None,
        resolver: Optional[resolvers.Resolver] = None,
        write_back: bool = True,
    ) -> Union[GetResult, Resolved]:
        """Every concurrent value of ``key`` and their context, reading ``r`` replicas (default:
        the cluster's R).

        With a ``resolver`` (see :mod:`dynamokv.resolvers`), a :class:`Resolved` instead: when
        the get returns two or more values the resolver makes one of them, and with
        ``write_back`` (the default) it is written under the context covering them all, so the
        key converges to that one version on every replica (a single value with a concurrent
        delete is written back without calling the resolver). A resolver that raises makes this
        call raise the same exception, and nothing is written."""
        if resolver is None:
            return GetResult(*self._native.get(key, r))
        return Resolved(*self._native.get_resolved(key, resolver, r, write_back))

    @overload
    def get_many(
        self,
        keys: Iterable[Key],
        r: Optional[int] = None,
        resolver: None = None,
        write_back: bool = True,
    ) -> List[Union[GetResult, DynamoKVError]]: ...
    @overload
    def get_many(
        self,
        keys: Iterable[Key],
        r: Optional[int],
        resolver: resolvers.Resolver,
        write_back: bool = True,
    ) -> List[Union[Resolved, Exception]]: ...
    @overload
    def get_many(
        self,
        keys: Iterable[Key],
        r: Optional[int] = None,
        *,
        resolver: resolvers.Resolver,
        write_back: bool = True,
    ) -> List[Union[Resolved, Exception]]: ...
    def get_many(
        self,
        keys: Iterable[Key],
        r: Optional[int] = None,
        resolver: Optional[resolvers.Resolver] = None,
        write_back: bool = True,
    ) -> Union[List[Union[GetResult, DynamoKVError]], List[Union[Resolved, Exception]]]:
        """Gets many keys at once, each from its own replicas (at most ``batch_concurrency`` in
        flight; the request timeout bounds the whole batch). One entry per key, in order: its
        :class:`GetResult` (:class:`Resolved` with a ``resolver``, as :meth:`get`), or the
        exception that key failed with; one key failing does not fail the others. A key of the
        wrong type raises ``TypeError`` before anything is sent."""
        if resolver is None:
            return [_got(x) for x in self._native.get_many(_keys(keys), r)]
        raw = self._native.get_many_resolved(_keys(keys), resolver, r, write_back)
        return [_resolved(x) for x in raw]

    def put_many(
        self,
        items: Iterable[PutItem],
        w: Optional[int] = None,
        *,
        sync_replicas: Optional[int] = None,
    ) -> List[Union[bytes, DynamoKVError]]:
        """Puts many keys at once, each straight to its own replicas (at most
        ``batch_concurrency`` in flight; the request timeout bounds the whole batch). Items are
        ``(key, value)`` (a blind write) or ``(key, value, context)`` tuples; ``w`` and
        ``sync_replicas`` apply to each, as for :meth:`put` (each write gets its own write id).
        One entry per item, in order: the new context, or the exception that item failed with;
        one failing does not fail the others. A malformed item raises ``TypeError`` before
        anything is sent."""
        return self._native.put_many(_items(items), w, sync_replicas=sync_replicas)

    def refresh_ring(self) -> int:
        """Pulls the ring from the cluster now (the client also does every
        ``ring_refresh_interval`` and whenever a node says the ring moved); returns its
        version."""
        return self._native.refresh_ring()

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
        :class:`InvalidInputError` (code ``INVALID_INPUT``), another type ``TypeError``;
        nothing is sent.

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

    @overload
    async def get(
        self, key: Key, r: Optional[int] = None, resolver: None = None, write_back: bool = True
    ) -> GetResult: ...
    @overload
    async def get(
        self, key: Key, r: Optional[int], resolver: resolvers.Resolver, write_back: bool = True
    ) -> Resolved: ...
    @overload
    async def get(
        self,
        key: Key,
        r: Optional[int] = None,
        *,
        resolver: resolvers.Resolver,
        write_back: bool = True,
    ) -> Resolved: ...
    async def get(
        self,
        key: Key,
        r: Optional[int] = None,
        resolver: Optional[resolvers.Resolver] = None,
        write_back: bool = True,
    ) -> Union[GetResult, Resolved]:
        """Every concurrent value of ``key`` and their context, or with a ``resolver`` the one
        resolved value; see :meth:`Client.get`. A Python resolver runs on a worker thread, not
        on the event loop."""
        if resolver is None:
            return GetResult(*await self._native.get_async(key, r))
        return Resolved(*await self._native.get_resolved_async(key, resolver, r, write_back))

    @overload
    async def get_many(
        self,
        keys: Iterable[Key],
        r: Optional[int] = None,
        resolver: None = None,
        write_back: bool = True,
    ) -> List[Union[GetResult, DynamoKVError]]: ...
    @overload
    async def get_many(
        self,
        keys: Iterable[Key],
        r: Optional[int],
        resolver: resolvers.Resolver,
        write_back: bool = True,
    ) -> List[Union[Resolved, Exception]]: ...
    @overload
    async def get_many(
        self,
        keys: Iterable[Key],
        r: Optional[int] = None,
        *,
        resolver: resolvers.Resolver,
        write_back: bool = True,
    ) -> List[Union[Resolved, Exception]]: ...
    async def get_many(
        self,
        keys: Iterable[Key],
        r: Optional[int] = None,
        resolver: Optional[resolvers.Resolver] = None,
        write_back: bool = True,
    ) -> Union[List[Union[GetResult, DynamoKVError]], List[Union[Resolved, Exception]]]:
        """Gets many keys at once: one result or exception per key, in order; see
        :meth:`Client.get_many`."""
        if resolver is None:
            return [_got(x) for x in await self._native.get_many_async(_keys(keys), r)]
        raw = await self._native.get_many_resolved_async(_keys(keys), resolver, r, write_back)
        return [_resolved(x) for x in raw]

    async def put_many(
        self,
        items: Iterable[PutItem],
        w: Optional[int] = None,
        *,
        sync_replicas: Optional[int] = None,
    ) -> List[Union[bytes, DynamoKVError]]:
        """Puts many keys at once: one context or exception per item, in order; see
        :meth:`Client.put_many`."""
        return await self._native.put_many_async(_items(items), w, sync_replicas=sync_replicas)

    async def refresh_ring(self) -> int:
        """Pulls the ring now; returns its version. See :meth:`Client.refresh_ring`."""
        return await self._native.refresh_ring_async()

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
