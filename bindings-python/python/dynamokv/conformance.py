"""What the client computes from the shared DynamoKV code, as plain functions (no I/O): a key's
ring position and partition, a key's preference list on a given membership, and what a version
context says. They wrap the client core's ``inspect`` functions, for checking the SDK against
``conformance/vectors.json``; applications have no need of them (contexts are opaque and
routing is the client's business). None checks the key against the size limits.

Positions and write ids are Python ints (128-bit). A membership that forms no ring raises
:class:`dynamokv.InvalidConfigError`; bytes that are not a context of the key raise
:class:`dynamokv.InvalidContextError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

from . import _native

__all__ = [
    "key_position",
    "partition_of",
    "preference_list",
    "describe_context",
    "RingMember",
    "ContextDescription",
]

_Key = Union[str, bytes, bytearray, memoryview]


@dataclass(frozen=True)
class RingMember:
    """A node of a membership: ``id`` and ``address`` non-empty, ``zone`` empty when zones are
    not used, ``weight`` at least 1. :class:`dynamokv.MemberInfo` has the same fields and is
    accepted too, as is a mapping with these keys."""

    id: str
    address: str
    zone: str = ""
    weight: int = 1


@dataclass(frozen=True)
class ContextDescription:
    """What a context says: ``clock`` and ``cloud`` as ``(actor, counter)`` pairs (every event of
    an actor up to its clock counter was seen; cloud entries are single events seen beyond
    it), the ids of the writes the read showed (``seen_writes``, increasing) and the replica that
    answered the read first (``fastest_replica``), when the context records one."""

    clock: List[Tuple[int, int]]
    cloud: List[Tuple[int, int]]
    seen_writes: List[int]
    fastest_replica: Optional[str]


def key_position(key: _Key) -> int:
    """The key's ring position: the MD5 digest of the key as a big-endian 128-bit int."""
    return _native.key_position(key)


def partition_of(key: _Key, partitions: int) -> int:
    """The partition holding ``key`` on a ring of ``partitions`` partitions (a power of two from
    1 to 2**20, else :class:`dynamokv.InvalidConfigError`)."""
    return _native.partition_of(key, partitions)


def _member(m: Any) -> Tuple[str, str, str, int]:
    if isinstance(m, Mapping):
        return (m["id"], m["address"], m.get("zone", ""), m.get("weight", 1))
    return (m.id, m.address, m.zone, m.weight)


def preference_list(
    members: Sequence[Any], partitions: int, key: _Key, n: int
) -> Tuple[List[str], List[str]]:
    """``(replicas, fallbacks)``: the node ids of ``key``'s replicas on the ring of ``members``
    with ``partitions`` partitions and ``n`` replicas (the partition's owner first), then of the
    fallbacks a sloppy quorum uses, in ring order. ``members`` are :class:`RingMember`,
    :class:`dynamokv.MemberInfo` or mappings; ``n`` above their number is capped."""
    return _native.preference_list([_member(m) for m in members], partitions, key, n)


def describe_context(key: _Key, context: Union[bytes, bytearray, memoryview]) -> ContextDescription:
    """Decodes ``context``, one that a get or put of ``key`` returned (empty bytes: the empty
    context)."""
    clock, cloud, seen, fastest = _native.describe_context(key, context)
    return ContextDescription(clock, cloud, seen, fastest)
