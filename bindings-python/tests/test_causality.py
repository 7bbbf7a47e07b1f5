"""Two causality defects, checked through the public SDK (blocking and asyncio clients) against a
real memory-engine node:

1. "A put's reply context covers siblings the writer never saw": the context a put returns must
   cover that put only, so a later write with it supersedes that put and nothing else.
2. "A write whose answer was lost is applied twice": a put that reached the node but whose
   answer never came back must, when the client retries it on another node, be applied once.
   A small TCP proxy (`LosingProxy`) in front of the node loses the answer.

Plus what an application does with such a write: `OutcomeUnknownError.write_id`, given back as
`write_id=`, retries it without ever applying it twice.
"""

from __future__ import annotations

import socket
import threading
import uuid
from typing import Any, Iterator, List, Tuple

import pytest

import dynamokv


# 1. A put's reply context covers that put only.


async def test_put_reply_context_supersedes_only_that_put(make_client: Any, key: bytes) -> None:
    a, b = make_client(), make_client()
    await a.put(key, b"from-a")
    ctx_b = await b.put(key, b"from-b")  # B never saw "from-a"
    await b.put(key, b"from-b-2", ctx_b)
    got = await a.get(key)
    assert sorted(got.values) == [b"from-a", b"from-b-2"]


async def test_delete_with_put_reply_context_removes_only_that_put(
    make_client: Any, key: bytes
) -> None:
    a, b = make_client(), make_client()
    await a.put(key, b"from-a")
    ctx_b = await b.put(key, b"from-b")
    await b.delete(key, ctx_b)
    got = await a.get(key)
    assert got.values == [b"from-a"]


# 2. A write whose answer was lost is applied once.


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


@pytest.fixture
def losing_proxy(node: Any) -> Iterator[Any]:
    """Makes `LosingProxy`s in front of the module's node, closed at the end of the test."""
    proxies: List[LosingProxy] = []

    def make(marker: bytes) -> LosingProxy:
        p = LosingProxy(node.address, marker)
        proxies.append(p)
        return p

    yield make
    for p in proxies:
        p.close()


def marked_value() -> Tuple[bytes, bytes]:
    marker = f"lose-the-answer-{uuid.uuid4().hex}".encode()
    return marker, b"value:" + marker


async def test_write_whose_answer_was_lost_is_applied_once(
    make_client: Any, losing_proxy: Any, node: Any, key: bytes
) -> None:
    marker, value = marked_value()
    proxy = losing_proxy(marker)
    # A fresh client: its first call goes to the first seed, the proxy; the retry to the node.
    kv = make_client([proxy.address, node.address])
    try:
        await kv.put(key, value)
    except dynamokv.OutcomeUnknownError:
        pass
    assert proxy.cut >= 1, "the proxy lost no answer: the test did not test anything"
    got = await make_client().get(key)
    assert got.values == [value]


async def test_lost_answer_is_outcome_unknown_and_retry_with_its_write_id_applies_once(
    make_client: Any, losing_proxy: Any, key: bytes
) -> None:
    marker, value = marked_value()
    proxy = losing_proxy(marker)
    direct = make_client()
    only_proxy = make_client([proxy.address], max_retries=0)

    # A write id the client drew.
    with pytest.raises(dynamokv.OutcomeUnknownError) as info:
        await only_proxy.put(key, value)
    err = info.value
    assert isinstance(err, dynamokv.DynamoKVError) and not isinstance(err, TimeoutError)
    assert err.code == "OUTCOME_UNKNOWN"
    assert isinstance(err.write_id, bytes) and len(err.write_id) == 16
    assert err.write_id.hex() in str(err)
    assert (await direct.get(key)).values == [value]  # it was applied, once

    # Retrying with its write id does not apply it again.
    await direct.put(key, value, write_id=err.write_id)
    assert (await direct.get(key)).values == [value]

    # A write id the caller gave comes back in the error; a delete is the same.
    ctx = (await direct.get(key)).context
    mine = uuid.uuid4().bytes
    with pytest.raises(dynamokv.OutcomeUnknownError) as info:
        await only_proxy.put(key, value + b"-2", ctx, write_id=mine)
    assert info.value.write_id == mine
    await direct.put(key, value + b"-2", ctx, write_id=mine)
    assert (await direct.get(key)).values == [value + b"-2"]
