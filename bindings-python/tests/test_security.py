"""Issue 11 from Python: a secure 3-node cluster (`dynamokv dev --secure`, TLS everywhere) and
every way in and out of it: a client certificate or a token works; no credentials, a wrong
token, a certificate from another authority and a plain-text client are each refused with
their own error; read permission on a prefix; the node-to-node service refuses clients."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

import dynamokv

from conftest import dynamokv_bin, poll


def run(*args: str, env: Optional[Dict[str, str]] = None, check: bool = True) -> subprocess.CompletedProcess:
    """Runs the `dynamokv` command; its result (exit status checked unless `check` is false)."""
    done = subprocess.run(
        [str(dynamokv_bin()), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"dynamokv {' '.join(args)} exited {done.returncode}: {done.stderr.decode(errors='replace')}"
        )
    return done


class SecureCluster:
    """`dynamokv dev --secure --nodes 3 --base-port 0` in a temporary directory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dynamokv-secure-"))
        self.proc = subprocess.Popen(
            [str(dynamokv_bin()), "dev", "--secure", "--nodes", "3", "--base-port", "0",
             "--partitions", "64", "--base-dir", str(self.dir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Unbuffered, so that the selector sees every line still to be read.
            bufsize=0,
        )
        self.output = ""
        self.seeds: List[str] = []
        sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 90
        while not self.seeds:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                pytest.fail(f"dynamokv dev --secure did not come up:\n{self.output}")
            if sel.select(timeout=1):
                line = self.proc.stdout.readline().decode(errors="replace")
                self.output += line
                m = re.match(r"cluster up: \d+ node\(s\), seeds (\S+)", line)
                if m:
                    self.seeds = m.group(1).split(",")
        # It also says how a client connects: with the CA and the superuser's certificate.
        while "DYNAMOKV_CA_CERT" not in self.output:
            if not sel.select(timeout=10):
                break
            self.output += self.proc.stdout.readline().decode(errors="replace")
        sel.close()
        self.certs = self.dir / "certs"

    def path(self, name: str) -> str:
        return str(self.certs / name)

    @property
    def admin_env(self) -> Dict[str, str]:
        return {
            "DYNAMOKV_CA_CERT": self.path("ca.pem"),
            "DYNAMOKV_CLIENT_CERT": self.path("user-admin.pem"),
            "DYNAMOKV_CLIENT_KEY": self.path("user-admin.key"),
        }

    def admin(self, *args: str) -> str:
        """`dynamokv admin ARGS` as the superuser, against the first node."""
        return run("admin", *args, "--node", self.seeds[0], env=self.admin_env).stdout.decode()

    def client(self, **options: object) -> dynamokv.Client:
        return dynamokv.Client(self.seeds, ca_cert=self.path("ca.pem"), request_timeout=5.0, **options)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        subprocess.run(["rm", "-rf", str(self.dir)], check=False)


@pytest.fixture(scope="module")
def secure() -> Iterator[SecureCluster]:
    c = SecureCluster()
    try:
        yield c
    finally:
        c.stop()


def test_dev_secure_says_how_to_connect(secure: SecureCluster) -> None:
    assert "ca_cert=" in secure.output and secure.path("ca.pem") in secure.output
    assert "DYNAMOKV_CLIENT_CERT=" in secure.output


def test_certificate_and_token_clients_work(secure: SecureCluster) -> None:
    admin = secure.client(client_cert=secure.path("user-admin.pem"),
                          client_key=secure.path("user-admin.key"))
    admin.put(b"cart:py", b"apples")
    assert admin.get(b"cart:py").values == [b"apples"]

    out = secure.admin("user", "add", "py-bob")
    token = re.search(r"^(dkv1\.py-bob\.[0-9a-f]{64})$", out, re.M)
    assert token, out
    secure.admin("grant", "py-bob", "read,write")
    bob = secure.client(token=token.group(1))
    bob.put(b"user:py", b"bob")
    assert bob.get(b"cart:py").values == [b"apples"]
    # PEM text works as well as paths.
    pem = Path(secure.path("ca.pem")).read_text()
    assert dynamokv.Client(secure.seeds, ca_cert=pem, token=token.group(1)).get(b"user:py").values == [b"bob"]


def test_each_kind_of_stranger_gets_its_own_error(secure: SecureCluster, tmp_path: Path) -> None:
    with pytest.raises(dynamokv.UnauthenticatedError, match="no credentials"):
        secure.client().get(b"cart:py")
    with pytest.raises(dynamokv.UnauthenticatedError, match="token is not valid"):
        secure.client(token="dkv1.py-bob." + "0" * 64).get(b"cart:py")
    # A certificate from another authority: the node refuses the handshake.
    run("cert", "ca", "--dir", str(tmp_path))
    run("cert", "user", "admin", "--dir", str(tmp_path))
    stranger = secure.client(client_cert=str(tmp_path / "user-admin.pem"),
                             client_key=str(tmp_path / "user-admin.key"))
    with pytest.raises(dynamokv.TlsError, match="refused the TLS handshake"):
        stranger.get(b"cart:py")
    with pytest.raises(dynamokv.TlsError):
        stranger.put(b"cart:py", b"stranger")
    # A client trusting another authority refuses the nodes.
    with pytest.raises(dynamokv.TlsError, match="we refused the certificate"):
        dynamokv.Client(secure.seeds, ca_cert=str(tmp_path / "ca.pem")).get(b"cart:py")
    # Plain text.
    with pytest.raises(dynamokv.UnauthenticatedError, match="requires TLS"):
        dynamokv.Client(secure.seeds).get(b"cart:py")
    # A token without TLS is never sent.
    with pytest.raises(dynamokv.InvalidConfigError, match="only over TLS"):
        dynamokv.Client(secure.seeds, token="dkv1.x." + "0" * 64)


def test_read_permission_on_a_prefix(secure: SecureCluster) -> None:
    admin = secure.client(client_cert=secure.path("user-admin.pem"),
                          client_key=secure.path("user-admin.key"))
    admin.put(b"cart:1", b"apples")
    admin.put(b"user:1", b"ann")
    secure.admin("user", "add", "py-reader", "--no-token")
    run("cert", "user", "py-reader", "--dir", str(secure.certs))
    secure.admin("grant", "py-reader", "read", "--prefix", "cart:")
    reader = secure.client(client_cert=secure.path("user-py-reader.pem"),
                           client_key=secure.path("user-py-reader.key"))
    got = reader.get(b"cart:1")
    assert got.values == [b"apples"]
    with pytest.raises(dynamokv.PermissionDeniedError, match="no write permission"):
        reader.put(b"cart:1", b"pears", got.context)
    with pytest.raises(dynamokv.PermissionDeniedError, match="no read permission"):
        reader.get(b"user:1")
    with pytest.raises(dynamokv.PermissionDeniedError):
        reader.put(b"user:1", b"mallory")
    assert admin.get(b"cart:1").values == [b"apples"]
    assert admin.get(b"user:1").values == [b"ann"]
    listed = secure.admin("user", "list")
    assert re.search(r"^py-reader\s.*read on \"cart:\"", listed, re.M), listed


def test_the_node_to_node_service_refuses_clients_even_an_admin(secure: SecureCluster, tmp_path: Path) -> None:
    # `debug-read` calls the node-to-node service's ReadLocal.
    done = run("debug-read", "--node", secure.seeds[0], "--key", "cart:1",
               env=secure.admin_env, check=False)
    assert done.returncode != 0
    assert "only the nodes of cluster" in done.stderr.decode(), done.stderr
    # A node of another cluster, under another CA, is refused at the handshake.
    run("cert", "ca", "--dir", str(tmp_path), "--cluster", "other")
    run("cert", "node", "node-1", "--dir", str(tmp_path), "--cluster", "other")
    foreign = {
        "DYNAMOKV_CA_CERT": secure.path("ca.pem"),
        "DYNAMOKV_CLIENT_CERT": str(tmp_path / "node-node-1.pem"),
        "DYNAMOKV_CLIENT_KEY": str(tmp_path / "node-node-1.key"),
    }
    done = run("debug-read", "--node", secure.seeds[0], "--key", "cart:1", env=foreign, check=False)
    assert done.returncode != 0
    assert "TLS handshake" in done.stderr.decode(), done.stderr
    # One of ours may.
    ours = {
        "DYNAMOKV_CA_CERT": secure.path("ca.pem"),
        "DYNAMOKV_CLIENT_CERT": secure.path("node-node-2.pem"),
        "DYNAMOKV_CLIENT_KEY": secure.path("node-node-2.key"),
    }
    poll("a member node's debug read", lambda: run(
        "debug-read", "--node", secure.seeds[0], "--key", "cart:1", env=ours, check=False
    ).returncode == 0)


def test_a_token_is_rotated_without_a_gap(secure: SecureCluster) -> None:
    """`admin user token add` issues a second token while the first still works; `token revoke`
    then cuts off the old one alone, by the id `user list` shows."""
    out = secure.admin("user", "add", "py-rotor")
    old = re.search(r"id ([0-9a-f]{12});.*\n(dkv1\.py-rotor\.[0-9a-f]{64})$", out, re.M)
    assert old, out
    old_id, old_token = old.groups()
    secure.admin("grant", "py-rotor", "read,write", "--prefix", "rot:")
    secure.client(token=old_token).put(b"rot:1", b"one")

    out = secure.admin("user", "token", "add", "py-rotor")
    new = re.search(r"id ([0-9a-f]{12});.*\n(dkv1\.py-rotor\.[0-9a-f]{64})$", out, re.M)
    assert new, out
    new_id, new_token = new.groups()
    assert new_id != old_id
    listed = secure.admin("user", "list")
    assert f"py-rotor  tokens: 2 ({old_id}, {new_id})" in listed, listed
    # Both work: applications move to the new token at their own pace.
    assert secure.client(token=old_token).get(b"rot:1").values == [b"one"]
    secure.client(token=new_token).put(b"rot:2", b"two")

    # An id the user has not: a clear error, and nothing changes.
    bad = run("admin", "user", "token", "revoke", "py-rotor", "0123456789ab", "--node",
              secure.seeds[0], env=secure.admin_env, check=False)
    err = bad.stderr.decode(errors="replace")
    assert bad.returncode != 0 and f"its tokens: {old_id}, {new_id}" in err, err
    assert secure.client(token=old_token).get(b"rot:1").values == [b"one"]

    out = secure.admin("user", "token", "revoke", "py-rotor", old_id)
    assert f"py-rotor  tokens: 1 ({new_id})" in out, out

    def old_refused() -> bool:
        try:
            secure.client(token=old_token).get(b"rot:1")
            return False
        except dynamokv.UnauthenticatedError as e:
            return "token is not valid" in str(e)

    poll("the old token to be refused on every node", old_refused)
    for seed in secure.seeds:  # every node answers the new token
        got = dynamokv.Client([seed], ca_cert=secure.path("ca.pem"), token=new_token,
                              coordination="server").get(b"rot:2")
        assert got.values == [b"two"]
    # A user holds at most 8 tokens: the ninth is refused, naming how to make room.
    for _ in range(7):
        secure.admin("user", "token", "add", "py-rotor")
    full = run("admin", "user", "token", "add", "py-rotor", "--node", secure.seeds[0],
               env=secure.admin_env, check=False)
    err = full.stderr.decode(errors="replace")
    assert full.returncode != 0 and "has 8 tokens, the most it may" in err, err
    assert "py-rotor  tokens: 8 (" in secure.admin("user", "list")


def test_a_running_client_picks_up_rotated_certificate_files(secure: SecureCluster, tmp_path: Path) -> None:
    """Certificate files given as paths are read again for a new connection
    (``tls_reload_interval=0``: every one), so a certificate rotated on disk needs no restart."""
    run("cert", "user", "py-nobody", "--dir", str(secure.certs))  # a user without grants
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_bytes(Path(secure.path("user-py-nobody.pem")).read_bytes())
    key.write_bytes(Path(secure.path("user-py-nobody.key")).read_bytes())
    # Server coordination takes the seeds in turn: each of the first three calls opens a
    # connection to another node.
    client = dynamokv.Client(secure.seeds, ca_cert=secure.path("ca.pem"), client_cert=cert,
                             client_key=key, coordination="server", max_retries=0,
                             tls_reload_interval=0)
    with pytest.raises(dynamokv.PermissionDeniedError, match="py-nobody"):
        client.put(b"rotated:1", b"v")
    # Rotated as a tool does it: the new file renamed over the old.
    for src, dst in ((secure.path("user-admin.pem"), cert), (secure.path("user-admin.key"), key)):
        staged = dst.with_suffix(".staged")
        staged.write_bytes(Path(src).read_bytes())
        staged.replace(dst)
    client.put(b"rotated:1", b"v")  # a new connection, as admin
    assert client.get(b"rotated:1").values == [b"v"]
    with pytest.raises(dynamokv.InvalidConfigError, match="tls_reload_interval"):
        dynamokv.Client(secure.seeds, ca_cert=secure.path("ca.pem"), tls_reload_interval=-1)
