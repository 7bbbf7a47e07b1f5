# Type stubs for the extension module built from bindings-python/src (private to `dynamokv`).
from typing import Any, Awaitable, Dict, List, Optional, Tuple, Union

_Key = Union[str, bytes, bytearray, memoryview]
_Blob = Union[bytes, bytearray, memoryview]

__version__: str

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
    ) -> None: ...
    @property
    def limits(self) -> Tuple[int, int]: ...
    def node_health(self) -> List[Tuple[str, bool]]: ...
    def get(self, key: _Key, r: Optional[int] = None) -> Tuple[List[bytes], bytes]: ...
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
    def get_async(
        self, key: _Key, r: Optional[int] = None
    ) -> Awaitable[Tuple[List[bytes], bytes]]: ...
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
