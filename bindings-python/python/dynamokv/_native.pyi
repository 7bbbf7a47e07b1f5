# Type stubs for the extension module built from bindings-python/src (private to `dynamokv`).
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple, Union

_Key = Union[str, bytes, bytearray, memoryview]
_Blob = Union[bytes, bytearray, memoryview]
_Got = Tuple[List[bytes], bytes, List[int], bool]
_Resolved = Tuple[Optional[bytes], bytes, int, bool]
_Resolver = Union["BuiltinResolver", Callable[[Any], _Blob]]
_PutItem = Union[Tuple[_Key, _Blob], Tuple[_Key, _Blob, Optional[_Blob]]]

__version__: str

class BuiltinResolver:
    @property
    def name(self) -> str: ...
    def __reduce__(self) -> str: ...

LAST_WRITER_WINS: BuiltinResolver
UNION_JSON: BuiltinResolver

def await_deliveries(timeout: float) -> bool: ...
def key_position(key: _Key) -> int: ...
def partition_of(key: _Key, partitions: int) -> int: ...
def preference_list(
    members: Sequence[Tuple[str, str, str, int]], partitions: int, key: _Key, n: int
) -> Tuple[List[str], List[str]]: ...
def describe_context(
    key: _Key, context: _Blob
) -> Tuple[List[Tuple[int, int]], List[Tuple[int, int]], List[int], Optional[str]]: ...

class Client:
    def __init__(
        self,
        seeds: List[str],
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
        ca_cert: Optional[str] = None,
        client_cert: Optional[str] = None,
        client_key: Optional[str] = None,
        token: Optional[str] = None,
        tls_reload_interval: Optional[float] = None,
    ) -> None: ...
    @property
    def limits(self) -> Tuple[int, int]: ...
    @property
    def coordination(self) -> str: ...
    def node_health(self) -> List[Tuple[str, bool]]: ...
    def ring_version(self) -> Optional[int]: ...
    def refresh_ring(self) -> int: ...
    def refresh_ring_async(self) -> Awaitable[int]: ...
    def get(self, key: _Key, r: Optional[int] = None) -> _Got: ...
    def put(
        self,
        key: _Key,
        value: _Blob,
        context: Optional[_Blob] = None,
        w: Optional[int] = None,
        *,
        write_id: Optional[_Blob] = None,
        sync_replicas: Optional[int] = None,
    ) -> bytes: ...
    def delete(
        self,
        key: _Key,
        context: _Blob,
        w: Optional[int] = None,
        *,
        write_id: Optional[_Blob] = None,
        sync_replicas: Optional[int] = None,
    ) -> bytes: ...
    def cluster_info(self) -> Dict[str, Any]: ...
    def get_resolved(
        self, key: _Key, resolver: _Resolver, r: Optional[int] = None, write_back: bool = True
    ) -> _Resolved: ...
    def get_many(
        self, keys: List[_Key], r: Optional[int] = None
    ) -> List[Union[_Got, BaseException]]: ...
    def get_many_resolved(
        self,
        keys: List[_Key],
        resolver: _Resolver,
        r: Optional[int] = None,
        write_back: bool = True,
    ) -> List[Union[_Resolved, BaseException]]: ...
    def put_many(
        self, items: List[_PutItem], w: Optional[int] = None, *, sync_replicas: Optional[int] = None
    ) -> List[Any]: ...
    def get_async(self, key: _Key, r: Optional[int] = None) -> Awaitable[_Got]: ...
    def put_async(
        self,
        key: _Key,
        value: _Blob,
        context: Optional[_Blob] = None,
        w: Optional[int] = None,
        *,
        write_id: Optional[_Blob] = None,
        sync_replicas: Optional[int] = None,
    ) -> Awaitable[bytes]: ...
    def delete_async(
        self,
        key: _Key,
        context: _Blob,
        w: Optional[int] = None,
        *,
        write_id: Optional[_Blob] = None,
        sync_replicas: Optional[int] = None,
    ) -> Awaitable[bytes]: ...
    def cluster_info_async(self) -> Awaitable[Dict[str, Any]]: ...
    def get_resolved_async(
        self, key: _Key, resolver: _Resolver, r: Optional[int] = None, write_back: bool = True
    ) -> Awaitable[_Resolved]: ...
    def get_many_async(
        self, keys: List[_Key], r: Optional[int] = None
    ) -> Awaitable[List[Union[_Got, BaseException]]]: ...
    def get_many_resolved_async(
        self,
        keys: List[_Key],
        resolver: _Resolver,
        r: Optional[int] = None,
        write_back: bool = True,
    ) -> Awaitable[List[Union[_Resolved, BaseException]]]: ...
    def put_many_async(
        self, items: List[_PutItem], w: Optional[int] = None, *, sync_replicas: Optional[int] = None
    ) -> Awaitable[List[Any]]: ...
