"""Fixtures: a real memory-engine DynamoKV node per test module, and clients for it.

The node binary comes from $DYNAMOKV_BIN, else $CARGO_TARGET_DIR/release/dynamokv, else
<repo>/target/release/dynamokv. Each node listens on an ephemeral port, parsed from the one line
it prints on stdout; every wait polls against a deadline.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, List, Optional

import pytest

import dynamokv

REPO = Path(__file__).resolve().parents[2]
START_DEADLINE_S = 20.0
STOP_DEADLINE_S = 10.0


def dynamokv_bin() -> Path:
    candidates = []
    if os.environ.get("DYNAMOKV_BIN"):
        candidates.append(Path(os.environ["DYNAMOKV_BIN"]))
    if os.environ.get("CARGO_TARGET_DIR"):
        candidates.append(Path(os.environ["CARGO_TARGET_DIR"]) / "release" / "dynamokv")
    candidates.append(REPO / "target" / "release" / "dynamokv")
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    pytest.fail(
        "dynamokv server binary not found (tried "
        + ", ".join(str(p) for p in candidates)
        + "): build it with `cargo build --release -p dynamokv-server --bin dynamokv`"
    )


class Node:
    """One `dynamokv serve --engine memory` process; `config` is the text of a TOML config file
    (e.g. a `[limits]` table setting `max_siblings = 2`), which the flags below override."""

    def __init__(self, node_id: str, config: Optional[str] = None) -> None:
        self.node_id = node_id
        self.address = ""
        self._stderr = tempfile.TemporaryFile()
        self._config: Optional[Path] = None
        args = [
            str(dynamokv_bin()),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--engine",
            "memory",
            "--node-id",
            node_id,
        ]
        if config is not None:
            fd, name = tempfile.mkstemp(prefix="dynamokv-test-", suffix=".toml")
            with os.fdopen(fd, "w") as f:
                f.write(config)
            self._config = Path(name)
            args += ["--config", name]
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        try:
            self.address = self._read_address()
            self._wait_until_serving()
        except BaseException:
            self.stop()
            raise

    def _read_address(self) -> str:
        """Parses `dynamokv node ID listening on HOST:PORT (pid N, ...)` from stdout."""
        assert self._proc.stdout is not None
        deadline = time.monotonic() + START_DEADLINE_S
        fd = self._proc.stdout.fileno()
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._fail(f"no listening line within {START_DEADLINE_S}s (got {buf!r})")
                if sel.select(timeout=left):
                    chunk = os.read(fd, 4096)
                    if not chunk:
                        self._fail(f"node exited before listening (stdout {buf!r})")
                    buf += chunk
        line = buf.split(b"\n", 1)[0].decode()
        prefix = f"dynamokv node {self.node_id} listening on "
        if not line.startswith(prefix):
            self._fail(f"unexpected first line {line!r}")
        return line[len(prefix) :].split(" ", 1)[0]

    def _wait_until_serving(self) -> None:
        client = dynamokv.Client([self.address], request_timeout=1.0)
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            try:
                client.cluster_info()
                return
            except (dynamokv.UnavailableError, dynamokv.RequestTimeoutError):
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    raise
                time.sleep(0.02)

    def _fail(self, why: str) -> None:
        self._stderr.seek(0)
        err = self._stderr.read().decode(errors="replace")
        pytest.fail(f"dynamokv node {self.node_id}: {why}\nstderr:\n{err}")

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._stderr.close()
        if self._config is not None:
            self._config.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    """A fresh node for each test module, stopped when the module is done."""
    n = Node("test-1")
    try:
        yield n
    finally:
        n.stop()


@pytest.fixture
def start_node() -> Iterator[Any]:
    """Starts extra nodes for one test (stopped at its end, if the test did not)."""
    started = []

    def start(node_id: str = "test-1", config: Optional[str] = None) -> Node:
        n = Node(node_id, config)
        started.append(n)
        return n

    yield start
    for n in started:
        n.stop()


class SyncAsAsync:
    """Presents a blocking `dynamokv.Client` with `AsyncClient`'s awaitable methods, so that
    each behaviour test is written once and runs against both clients."""

    def __init__(self, client: dynamokv.Client) -> None:
        self.client = client

    async def get(self, key: Any, r: Optional[int] = None) -> dynamokv.GetResult:
        return self.client.get(key, r=r)

    async def put(
        self, key: Any, value: Any, context: Any = None, w: Optional[int] = None, **kw: Any
    ) -> bytes:
        return self.client.put(key, value, context, w=w, **kw)

    async def delete(self, key: Any, context: Any, w: Optional[int] = None, **kw: Any) -> bytes:
        return self.client.delete(key, context, w=w, **kw)

    async def cluster_info(self) -> dynamokv.ClusterInfo:
        return self.client.cluster_info()


@pytest.fixture(params=["sync", "async"])
def make_client(request: pytest.FixtureRequest, node: Node) -> Any:
    """Builds a client (with options) of the module's node, or of the `seeds` given; the sync
    one wrapped in `SyncAsAsync`."""

    def make(seeds: Optional[List[str]] = None, **options: Any) -> Any:
        seeds = [node.address] if seeds is None else seeds
        if request.param == "sync":
            return SyncAsAsync(dynamokv.Client(seeds, **options))
        return dynamokv.AsyncClient(seeds, **options)

    return make


@pytest.fixture
def kv(make_client: Any) -> Any:
    """A client with default options (see `make_client`)."""
    return make_client()


@pytest.fixture
def key() -> bytes:
    """A key no other test uses (tests share their module's node)."""
    return f"test:{uuid.uuid4()}".encode()
