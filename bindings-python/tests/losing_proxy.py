"""A loopback TCP proxy that loses a request's answer after the node acted on it.

Shared by the Python SDK's tests (`test_causality.py`) and the Swift SDK's FFI tests
(`bindings-swift/tests/test_ffi.py`, which imports it from here).
"""

from __future__ import annotations

import socket
import threading
from typing import Any, List, Tuple


class AnswerScanner:
    """Follows the HTTP/2 frames a node sends on one connection and finds where an answer
    starts: a HEADERS frame on a request stream (the node's connection-level frames, SETTINGS,
    PING, WINDOW_UPDATE, come on stream 0 and may come before the node has acted)."""

    HEADERS = 0x1

    def __init__(self) -> None:
        self._header = b""
        self._skip = 0

    def answer_at(self, data: bytes) -> "int | None":
        """The offset in `data` where an answer's first frame starts (0 if its frame header began
        in an earlier chunk), or None."""
        i = 0
        while i < len(data):
            if self._skip:
                n = min(self._skip, len(data) - i)
                self._skip -= n
                i += n
                continue
            start = i - len(self._header)
            take = min(9 - len(self._header), len(data) - i)
            self._header += data[i : i + take]
            i += take
            if len(self._header) == 9:
                length = int.from_bytes(self._header[:3], "big")
                kind = self._header[3]
                stream = int.from_bytes(self._header[5:9], "big") & 0x7FFFFFFF
                self._header, self._skip = b"", length
                if kind == self.HEADERS and stream != 0:
                    return max(start, 0)
        return None


class LosingProxy:
    """A loopback TCP proxy in front of `upstream` (`host:port`) that loses answers.

    Bytes are forwarded both ways, except that once the client-to-node bytes of a connection
    have contained `marker`, both sockets are closed when the first bytes of the node's answer
    arrive on that connection (that chunk is not forwarded): the request reached the node, which
    acted on it, and its answer never reaches the client. Every connection behaves so; `cut`
    counts the lost answers.
    """

    def __init__(self, upstream: str, marker: bytes) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream: Tuple[str, int] = (host, int(port))
        self._marker = marker
        self._lock = threading.Lock()
        self._sockets: List[socket.socket] = []
        self._threads: List[threading.Thread] = []
        self._closed = False
        self.cut = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.address = "127.0.0.1:%d" % self._listener.getsockname()[1]
        self._spawn(self._accept)

    def _spawn(self, target: Any, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(t)
        t.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                node = socket.create_connection(self._upstream, timeout=5)
            except OSError:
                self._kill(client)
                continue
            node.settimeout(None)
            with self._lock:
                self._sockets += [client, node]
            seen = threading.Event()
            self._spawn(self._to_node, client, node, seen)
            self._spawn(self._to_client, node, client, seen)

    def _to_node(self, client: socket.socket, node: socket.socket, seen: threading.Event) -> None:
        keep = len(self._marker) - 1
        tail = b""
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                # Set before forwarding, so the answer cannot come back before it is set.
                if self._marker in tail + data:
                    seen.set()
                tail = (tail + data)[-keep:] if keep else b""
                node.sendall(data)
        except OSError:
            pass
        self._kill(client, node)

    def _to_client(self, node: socket.socket, client: socket.socket, seen: threading.Event) -> None:
        scanner = AnswerScanner()
        try:
            while True:
                data = node.recv(65536)
                if not data:
                    break
                if scanner.answer_at(data) is not None and seen.is_set():
                    with self._lock:
                        self.cut += 1
                    break
                client.sendall(data)
        except OSError:
            pass
        self._kill(client, node)

    @staticmethod
    def _kill(*socks: socket.socket) -> None:
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv on it
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            socks, threads = list(self._sockets), list(self._threads)
        self._kill(*socks)
        for t in threads:
            t.join(timeout=5)
        assert not any(t.is_alive() for t in threads), "a proxy thread did not stop"
