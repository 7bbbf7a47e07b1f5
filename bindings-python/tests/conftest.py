"""Fixtures: a real memory-engine DynamoKV node per test module, clients for it, and a real
3-node cluster (`Cluster`, formed by join + plan + commit as `dynamokv dev` forms one) for the
modules that ask for one.

The node binary comes from $DYNAMOKV_BIN, else $CARGO_TARGET_DIR/release/dynamokv, else
<repo>/target/release/dynamokv. Each node listens on an ephemeral port (and, in a cluster, serves
its metrics on another), parsed from the one line it prints on stdout; every wait polls against
a deadline.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

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
    (e.g. a `[limits]` table setting `max_siblings = 2`), which the flags below override.

    With `metrics`, it serves Prometheus metrics on an ephemeral port (`metrics_url`). With
    `join`, it asks the cluster of that address to admit it; such a node serves no request
    until a commit puts it in the ring, so only its admin status is awaited."""

    def __init__(
        self,
        node_id: str,
        config: Optional[str] = None,
        *,
        metrics: bool = False,
        join: Optional[str] = None,
    ) -> None:
        self.node_id = node_id
        self.address = ""
        self.metrics_url = ""
        self.paused = False
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
        if metrics:
            args += ["--metrics-listen", "127.0.0.1:0"]
        if join is not None:
            args += ["--join", join]
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        try:
            self.address = self._read_address()
            if metrics and not self.metrics_url:
                self._fail("no metrics address on the listening line")
            if join is None:
                self._wait_until_serving()
            else:
                self._wait_until_answering_admin()
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _read_address(self) -> str:
        """Parses `dynamokv node ID listening on HOST:PORT (pid N, ...)[, metrics at URL]` from
        stdout."""
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
        if ", metrics at " in line:
            self.metrics_url = line.split(", metrics at ", 1)[1].strip()
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

    def _wait_until_answering_admin(self) -> None:
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            try:
                admin("status", "--node", self.address)
                return
            except AdminError:
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    raise
                time.sleep(0.05)

    def _fail(self, why: str) -> None:
        self._stderr.seek(0)
        err = self._stderr.read().decode(errors="replace")
        pytest.fail(f"dynamokv node {self.node_id}: {why}\nstderr:\n{err}")

    def pause(self) -> None:
        """SIGSTOP: the process holds its connections but answers nothing (a hung node)."""
        self._proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT (harmless on a running node)."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)
        self.paused = False

    def metrics(self) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
        """The node's /metrics, as {(name, sorted labels): value}."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as answer:
            return parse_metrics(answer.read().decode())

    def requests(self, op: str, outcome: str = "ok") -> float:
        """`dynamokv_requests_total{op, outcome}` (0 before the first such request)."""
        labels = tuple(sorted({"op": op, "outcome": outcome}.items()))
        return self.metrics().get(("dynamokv_requests_total", labels), 0.0)

    def stop(self) -> None:
        if self._proc.poll() is None:
            # A stopped process does not act on SIGTERM until it is continued.
            self.resume()
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


_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
    """Prometheus text exposition as {(name, sorted labels): value}."""
    out: Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            continue
        labels = tuple(sorted(_LABEL.findall(m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


class AdminError(Exception):
    pass


def admin(*args: str) -> str:
    """Runs `dynamokv admin ARGS...`; its stdout, or AdminError with its stderr."""
    try:
        done = subprocess.run(
            [str(dynamokv_bin()), "admin", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=15,
        )
    except subprocess.TimeoutExpired as e:
        raise AdminError(f"dynamokv admin {' '.join(args)}: no answer within 15 s") from e
    if done.returncode != 0:
        raise AdminError(
            f"dynamokv admin {' '.join(args)} exited {done.returncode}: "
            + done.stderr.decode(errors="replace")
        )
    return done.stdout.decode()


def poll(what: str, check: Callable[[], Any], deadline_s: float = 20.0) -> Any:
    """Calls `check` until it returns something truthy (returned) or the deadline passes (the
    test fails, saying `what` and the last value or exception)."""
    deadline = time.monotonic() + deadline_s
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - reported if the deadline passes
            last = e
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {deadline_s} s (last: {last!r})")
        time.sleep(0.05)


# Nodes of the test cluster give a replica 500 ms (instead of 2 s) before counting it out, so
# that a hung (SIGSTOPped) node costs each test little; clients' attempt timeout stays above
# that plus half a second, as client-core asks.
CLUSTER_CONFIG = "replica_timeout_ms = 500\n"
CLUSTER_ATTEMPT_TIMEOUT_S = 1.5


class Cluster:
    """A real cluster of `size` memory-engine nodes, each with a metrics listener: node 1 starts
    alone, the others with `--join` node 1; once node 1 knows all of them, `dynamokv admin plan`
    and `admin commit` put them in the ring, and the cluster is ready when every node reports
    that ring version with no handover. With 3 nodes and N = 3, every node is a replica of every
    key; a key's first replica (its partition's owner) is the node a client-coordinated put
    goes to."""

    def __init__(self, size: int = 3) -> None:
        self.nodes: List[Node] = []
        self.ring_version = 0
        try:
            first = Node("node-1", CLUSTER_CONFIG, metrics=True)
            self.nodes.append(first)
            for i in range(2, size + 1):
                self.nodes.append(
                    Node(f"node-{i}", CLUSTER_CONFIG, metrics=True, join=first.address)
                )
            self._form()
        except BaseException:
            self.stop()
            raise

    def _form(self) -> None:
        first = self.nodes[0].address
        ids = [n.node_id for n in self.nodes]
        poll(
            "node-1 knows every node",
            lambda: all(re.search(rf"^\s+{i}\s", admin("status", "--node", first), re.M)
                        for i in ids),
        )
        plan = admin("plan", "--node", first)
        m = re.search(r"plan from ring version (\d+)", plan)
        assert m is not None, f"unexpected plan output:\n{plan}"
        assert "cannot commit now" not in plan, plan
        committed = admin("commit", "--node", first, "--ring-version", m.group(1))
        m = re.search(r"committed ring version (\d+)", committed)
        assert m is not None, f"unexpected commit output:\n{committed}"
        self.ring_version = int(m.group(1))

        def ready() -> bool:
            for n in self.nodes:
                status = admin("status", "--node", n.address)
                version = re.search(r"ring version (\d+)", status)
                if version is None or int(version.group(1)) != self.ring_version:
                    return False
                if "no handover" not in status:
                    return False
            return True

        poll(f"every node at ring version {self.ring_version} with no handover", ready, 60.0)

    @property
    def seeds(self) -> List[str]:
        return [n.address for n in self.nodes]

    def by_id(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.node_id == node_id)

    def requests(self, op: str, outcome: str = "ok") -> Dict[str, float]:
        """`dynamokv_requests_total{op, outcome}` of every node, by node id."""
        return {n.node_id: n.requests(op, outcome) for n in self.nodes}

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A 3-node cluster for the test module, stopped when the module is done. Tests that pause
    a node resume it (`Node.stop` resumes too)."""
    c = Cluster(3)
    try:
        yield c
    finally:
        c.stop()


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

    def start(node_id: str = "test-1", config: Optional[str] = None, metrics: bool = False) -> Node:
        n = Node(node_id, config, metrics=metrics)
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

    async def get(
        self, key: Any, r: Optional[int] = None, resolver: Any = None, write_back: bool = True
    ) -> Any:
        return self.client.get(key, r, resolver, write_back)

    async def get_many(
        self, keys: Any, r: Optional[int] = None, resolver: Any = None, write_back: bool = True
    ) -> Any:
        return self.client.get_many(keys, r, resolver, write_back)

    async def put_many(self, items: Any, w: Optional[int] = None, **kw: Any) -> Any:
        return self.client.put_many(items, w, **kw)

    async def refresh_ring(self) -> int:
        return self.client.refresh_ring()

    def ring_version(self) -> Optional[int]:
        return self.client.ring_version()

    @property
    def coordination(self) -> str:
        return self.client.coordination

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
