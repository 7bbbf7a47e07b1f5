"""The DynamoKV exception hierarchy.

The native module (``src/error.rs``) raises these, one class per client-core error variant,
with the variant's fields as attributes::

    DynamoKVError (.code, .message)
    ├── InvalidConfigError
    ├── InvalidInputError            nothing was written
    │   ├── EmptyKeyError            .max
    │   ├── KeyTooLargeError         .size, .max
    │   ├── ValueTooLargeError       .size, .max
    │   ├── InvalidContextError
    │   ├── InvalidQuorumError
    │   └── MissingFieldError
    ├── QuorumError                  .needed, .got
    ├── UnavailableError
    ├── RequestTimeoutError          .after (seconds); also a builtin TimeoutError
    └── InternalError
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
    "UnavailableError",
    "RequestTimeoutError",
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
    """The request was refused before anything was written."""

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
    """A request lacked a required field (a client bug)."""

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


class UnavailableError(DynamoKVError):
    """No node could be reached, or every node tried was shutting down."""

    code = "UNAVAILABLE"

    def _fields(self) -> Tuple[Any, ...]:
        return ()


class RequestTimeoutError(DynamoKVError, TimeoutError):
    """The call did not finish within ``after`` seconds (the request timeout)."""

    code = "TIMEOUT"

    def __init__(self, message: str, after: float) -> None:
        super().__init__(message)
        self.after = after

    def _fields(self) -> Tuple[Any, ...]:
        return (self.after,)


class InternalError(DynamoKVError):
    """A server bug or storage failure; the message has details."""

    code = "INTERNAL"

    def _fields(self) -> Tuple[Any, ...]:
        return ()
