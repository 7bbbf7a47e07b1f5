"""The DynamoKV exception hierarchy.

The native module (``src/error.rs``) raises these, one class per client-core error variant,
with the variant's fields as attributes::

    DynamoKVError (.code, .message)
    ├── InvalidConfigError
    ├── InvalidInputError            nothing was written; raised itself (code INVALID_INPUT)
    │   │                            for a malformed field, e.g. a write_id not 16 bytes
    │   ├── EmptyKeyError            .max
    │   ├── KeyTooLargeError         .size, .max
    │   ├── ValueTooLargeError       .size, .max
    │   ├── InvalidContextError
    │   ├── InvalidQuorumError
    │   └── MissingFieldError        a required field left out (a client bug)
    ├── QuorumError                  .needed, .got
    ├── OutcomeUnknownError          .write_id (16 bytes): a write applied once or not at all
    ├── SiblingLimitError            nothing was written: read the key and resolve it
    ├── UnavailableError
    ├── OverloadedError              the nodes are at their caps and did nothing: retry later
    ├── UnauthenticatedError         no credentials, or ones the cluster does not accept
    ├── PermissionDeniedError        the user lacks the permission (named in the message)
    ├── TlsError                     the TLS handshake failed: which side refused, and why
    ├── RequestTimeoutError          .after (seconds), reads only; also a builtin TimeoutError
    ├── ResolverError                a built-in resolver failed; nothing was written
    └── InternalError

A read that runs out of time raises RequestTimeoutError. A put or delete never does: a write
whose answer was lost (its deadline passed, or its connection broke after it was sent) raises
OutcomeUnknownError instead, because it may have been applied. Pass its ``write_id`` to the
retried put or delete (``put(..., write_id=err.write_id)``): however often a write is sent
under one write id, it is applied at most once.

A resolver of your own (a Python function given as ``resolver=``) that raises does not become a
ResolverError: the resolving call raises that very exception object, and writes nothing.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

__all__ = [
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
]


class DynamoKVError(Exception):
    """Base class of every error a DynamoKV call raises. ``code`` is a stable string."""

    code: str = "DYNAMOKV_ERROR"

    def __init__(self, message: str, code: Optional[str] = None) -> None:
        # Only the message goes to Exception: str(err) is the message, and the builtin
        # TimeoutError base of RequestTimeoutError does not read the fields as errno/strerror.
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def _fields(self) -> Tuple[Any, ...]:
        return () if type(self).code == self.code else (self.code,)

    def __reduce__(self) -> Any:
        return (type(self), (self.message, *self._fields()))


class InvalidConfigError(DynamoKVError):
    """The client options are wrong: no seeds, a seed that is not host:port, a bad timeout."""

    code = "INVALID_CONFIG"

    def _fields(self) -> Tuple[Any, ...]:
        return ()


class InvalidInputError(DynamoKVError):
    """The request was refused before anything was written. The base class of the input
    errors below; raised itself (``code`` ``INVALID_INPUT``) for a malformed field, such as a
    ``write_id`` that is not 16 bytes (refused before sending, as the server refuses one)."""

    code = "INVALID_INPUT"

    def _fields(self) -> Tuple[Any, ...]:
        return ()


class EmptyKeyError(InvalidInputError):
    """The key is empty. ``max`` is the largest key allowed, in bytes."""

    code = "EMPTY_KEY"

    def __init__(self, message: str, max: int) -> None:  # noqa: A002 - the variant's field
        super().__init__(message)
        self.max = max

    def _fields(self) -> Tuple[Any, ...]:
        return (self.max,)


class _SizeError(InvalidInputError):
    def __init__(self, message: str, size: int, max: int) -> None:  # noqa: A002
        super().__init__(message)
        self.size = size
        self.max = max

    def _fields(self) -> Tuple[Any, ...]:
        return (self.size, self.max)


class KeyTooLargeError(_SizeError):
    """The key is ``size`` bytes, over the limit of ``max``."""

    code = "KEY_TOO_LARGE"


class ValueTooLargeError(_SizeError):
    """The value is ``size`` bytes, over the limit of ``max``."""

    code = "VALUE_TOO_LARGE"


class InvalidContextError(InvalidInputError):
    """The context is malformed or belongs to another key."""

    code = "INVALID_CONTEXT"


class InvalidQuorumError(InvalidInputError):
    """A per-call ``r`` or ``w`` outside 1..=N."""

    code = "INVALID_QUORUM"


class MissingFieldError(InvalidInputError):
    """A request lacked a required field: a client bug."""

    code = "MISSING_FIELD"


class QuorumError(DynamoKVError):
    """Only ``got`` of the ``needed`` replicas answered. A write may be stored on those that did."""

    code = "QUORUM_NOT_REACHED"

    def __init__(self, message: str, needed: int, got: int) -> None:
        super().__init__(message)
        self.needed = needed
        self.got = got

    def _fields(self) -> Tuple[Any, ...]:
        return (self.needed, self.got)


class OutcomeUnknownError(DynamoKVError):
    """A put or delete whose answer was lost: it was applied once or not at all, and the client
    could not find out which before the request timeout. Read the key to see, or retry the
    write with ``write_id=err.write_id``: a write is never applied twice under one write id.

    ``write_id`` is the write's id, 16 bytes (big-endian)."""

    code = "OUTCOME_UNKNOWN"

    def __init__(self, message: str, write_id: bytes) -> None:
        super().__init__(message)
        self.write_id = write_id

    def _fields(self) -> Tuple[Any, ...]:
        return (self.write_id,)


class SiblingLimitError(DynamoKVError):
    """A blind write (one whose context does not cover what the key holds) would grow the key
    past the cluster's sibling or size limit. Nothing was written: read the key and write the
    resolved value with the read's context (a write that supersedes the siblings is always
    accepted)."""

    code = "SIBLING_LIMIT"

    def _fields(self) -> Tuple[Any, ...]:
        return ()


class UnavailableError(DynamoKVError):
    """No node could be reached, or every node tried was shutting down."""

    code = "UNAVAILABLE"

    def _fields(self) -> Tuple[Any, ...]:
        return ()


class OverloadedError(DynamoKVError):
    """The nodes tried are at their cap of concurrent requests or connections and did nothing.

    Retry later, with backoff.
    """

    code = "OVERLOADED"


class UnauthenticatedError(DynamoKVError):
    """No credentials (``token``, or ``client_cert`` and ``client_key``), or credentials the
    cluster does not accept (an unknown or revoked token). Nothing was done."""

    code = "UNAUTHENTICATED"


class PermissionDeniedError(DynamoKVError):
    """The user lacks the permission the request needs; the message names it and the key.
    Nothing was done."""

    code = "PERMISSION_DENIED"


class TlsError(DynamoKVError):
    """The TLS handshake failed; the message says which side refused and why (a node
    certificate the configured ``ca_cert`` did not sign, a node that wants a client
    certificate, a node that does not speak TLS). Nothing was sent."""

    code = "TLS"


class RequestTimeoutError(DynamoKVError, TimeoutError):
    """A read (get, cluster_info) did not finish within ``after`` seconds, the request timeout.
    Writes never raise it: a write that runs out of time raises :class:`OutcomeUnknownError`."""

    code = "TIMEOUT"

    def __init__(self, message: str, after: float) -> None:
        super().__init__(message)
        self.after = after

    def _fields(self) -> Tuple[Any, ...]:
        return (self.after,)


class ResolverError(DynamoKVError):
    """A built-in resolver (``dynamokv.resolvers.union_json`` on values that are not JSON
    arrays, say) could not resolve a key's siblings, or the resolved value cannot be stored (over
    the value limit). Nothing was written. A Python resolver's own exception is raised as itself,
    not as this."""

    code = "RESOLVER_FAILED"

    def _fields(self) -> Tuple[Any, ...]:
        return ()


class InternalError(DynamoKVError):
    """A server bug or storage failure; the message has details."""

    code = "INTERNAL"

    def _fields(self) -> Tuple[Any, ...]:
        return ()
