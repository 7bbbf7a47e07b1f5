"""Resolvers: what turns a key's concurrent values (siblings) into one, for a resolving get
(``get(key, resolver=...)``) and ``get_many(keys, resolver=...)``.

Built in (run natively by the client core, with no call into Python):

- :data:`last_writer_wins`: the value with the latest write timestamp (between equal timestamps,
  the greatest bytes, so every client picks the same one). Other concurrent updates are dropped.
- :data:`union_json`: every value is a JSON array; the result is their union, each distinct
  element once, in order of first appearance (the paper's shopping cart: nothing added is
  lost). A value that is not a JSON array raises :class:`dynamokv.ResolverError`.

Or a plain function of the values, returning the resolved value as ``bytes``::

    def longest(values: dynamokv.resolvers.Siblings) -> bytes:
        return max(values, key=len)

``values`` is a :class:`Siblings`: a ``list`` of ``bytes`` (oldest write first) that also
carries ``key``, ``timestamps_ms`` and ``tombstone``. The function runs on a worker thread with
the GIL held only while it runs. If it raises, the call raises that same exception and writes
nothing; if it returns something that is not bytes-like, the call raises ``TypeError`` and
writes nothing. A resolver is called only when a get returns two or more values.
"""

from __future__ import annotations

from typing import Callable, Iterable, List, Union

from . import _native

__all__ = ["Siblings", "Resolver", "BuiltinResolver", "last_writer_wins", "union_json"]

BuiltinResolver = _native.BuiltinResolver
"""The type of the built-in resolvers."""

last_writer_wins: BuiltinResolver = _native.LAST_WRITER_WINS
"""The latest write wins (by write timestamp, then by bytes)."""

union_json: BuiltinResolver = _native.UNION_JSON
"""The union of JSON arrays, each distinct element once, in order of first appearance."""


class Siblings(List[bytes]):
    """The concurrent values of one key, as a resolver gets them: a list of ``bytes``, oldest
    write first, with ``key`` (bytes), ``timestamps_ms`` (each value's write time in
    milliseconds since the epoch, by the clock of the node that coordinated it, in the order of
    the values) and ``tombstone`` (whether a delete is concurrent with the values)."""

    __slots__ = ("key", "timestamps_ms", "tombstone")

    key: bytes
    timestamps_ms: List[int]
    tombstone: bool

    def __init__(
        self,
        values: Iterable[bytes] = (),
        *,
        key: bytes = b"",
        timestamps_ms: Iterable[int] = (),
        tombstone: bool = False,
    ) -> None:
        super().__init__(values)
        self.key = key
        self.timestamps_ms = list(timestamps_ms)
        self.tombstone = tombstone

    def __repr__(self) -> str:
        return (
            f"Siblings({list(self)!r}, key={self.key!r}, "
            f"timestamps_ms={self.timestamps_ms!r}, tombstone={self.tombstone!r})"
        )


Resolver = Union[BuiltinResolver, Callable[[Siblings], Union[bytes, bytearray, memoryview]]]
"""What ``resolver=`` takes: a built-in or a function of the values."""
