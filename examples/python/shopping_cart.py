#!/usr/bin/env python3
"""The paper's shopping cart (Dynamo, SOSP 2007, sections 4.4 and 6.3) with the DynamoKV
Python SDK.

Two shopping sessions add items to the same cart at the same time, each to the cart it read.
Neither write saw the other, so the cart ends up with two concurrent versions (siblings). Reading
it with the built-in ``union_json`` resolver merges them (an added item is never lost) and
writes the merged cart back, so every replica converges to one version.

Run it against the cluster ``make run`` starts::

    DYNAMOKV_SEEDS=127.0.0.1:7070,127.0.0.1:7071,127.0.0.1:7072 \\
        python3 examples/python/shopping_cart.py

Environment:

- ``DYNAMOKV_SEEDS``: comma-separated ``host:port`` of cluster nodes (default
  ``127.0.0.1:7070``).
- ``DYNAMOKV_STOP_PID``: optional, the pid of one node's process (``dynamokv dev`` prints
  them). The example stops it (SIGSTOP: a hung node, connections open but no answers) for the
  concurrent adds and continues it (SIGCONT) before checkout, to show writes and reads routed
  around it.
- ``DYNAMOKV_CART_KEY``: optional, the cart's key (default ``cart:<pid>:<random>``).

It prints what it does and exits non-zero if anything added is missing from the cart.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from typing import List, Optional

import dynamokv
from dynamokv.resolvers import union_json

EXPECTED = ["book", "apple", "pear", "fig", "tea"]


def items_of(value: Optional[bytes]) -> List[str]:
    return [] if value is None else json.loads(value)


async def add(
    session: dynamokv.AsyncClient, name: str, key: str, cart: dynamokv.Resolved, item: str
) -> None:
    """Adds `item` to the cart `session` read, with the context of that read."""
    items = items_of(cart.value) + [item]
    await session.put(key, json.dumps(items).encode(), cart.context)
    print(f"  {name:<5} added {item!r:<8} -> wrote {items}")


def signal_node(pid: Optional[int], sig: signal.Signals, what: str) -> None:
    if pid is not None:
        os.kill(pid, sig)
        print(f"{what} node process {pid} ({sig.name})")


async def shop(seeds: List[str], key: str, stop_pid: Optional[int]) -> None:
    # Each node gets 1.5 s to answer one attempt before the client marks it down and goes on
    # to another replica; a whole call gets 10 s.
    options: dict = dict(request_timeout=10.0, attempt_timeout=1.5)
    # A secure cluster (`dynamokv dev --secure` sets these for its --exec command).
    for option, var in [("ca_cert", "DYNAMOKV_CA_CERT"), ("client_cert", "DYNAMOKV_CLIENT_CERT"),
                        ("client_key", "DYNAMOKV_CLIENT_KEY"), ("token", "DYNAMOKV_TOKEN")]:
        if os.environ.get(var):
            options[option] = os.environ[var]
    alice = dynamokv.AsyncClient(seeds, **options)
    bob = dynamokv.AsyncClient(seeds, **options)
    info = await alice.cluster_info()
    print(
        f"cluster {info.cluster_name!r}: {len(info.members)} node(s) "
        f"({', '.join(m.id for m in info.members)}), N = {info.n}, R = {info.r}, W = {info.w}, "
        f"ring version {info.ring_version}"
    )
    print(f"cart {key}")

    await alice.put(key, json.dumps(["book"]).encode())
    print("  alice put ['book'] in the cart")

    # Both sessions open the cart: both see the book, with the same context.
    cart_a, cart_b = await asyncio.gather(
        alice.get(key, resolver=union_json), bob.get(key, resolver=union_json)
    )
    print(f"  alice and bob both see {items_of(cart_a.value)}")

    signal_node(stop_pid, signal.SIGSTOP, "stopped")
    try:
        # Concurrent adds, each to the cart its session read: neither saw the other's.
        await asyncio.gather(
            add(alice, "alice", key, cart_a, "apple"), add(bob, "bob", key, cart_b, "pear")
        )
        # Each session reopens the cart (merging what it finds and writing it back) and adds
        # one more item, again at the same time.
        cart_a, cart_b = await asyncio.gather(
            alice.get(key, resolver=union_json), bob.get(key, resolver=union_json)
        )
        for name, cart in (("alice", cart_a), ("bob", cart_b)):
            print(
                f"  {name:<5} reopens the cart: {cart.siblings} version(s) merged -> "
                f"{items_of(cart.value)}{' (written back)' if cart.written_back else ''}"
            )
        await asyncio.gather(
            add(alice, "alice", key, cart_a, "fig"), add(bob, "bob", key, cart_b, "tea")
        )
    finally:
        signal_node(stop_pid, signal.SIGCONT, "continued")

    # Checkout: whatever versions the cart has, union_json merges them and writes the result
    # back under a context covering them all.
    final = await alice.get(key, resolver=union_json)
    items = items_of(final.value)
    print(
        f"checkout: {final.siblings} version(s) merged -> {items}"
        f"{' (written back)' if final.written_back else ''}"
    )
    missing = [i for i in EXPECTED if i not in items]
    assert not missing, f"items lost from the cart: {missing}"
    assert sorted(items) == sorted(EXPECTED), f"unexpected cart {items}"

    # After the write-back a plain read (R replicas) sees that one version.
    again = await bob.get(key)
    assert again.values == [final.value], f"the cart did not converge: {again.values}"
    print(f"bob reads the cart: one version, {items_of(again.values[0])}")
    print("nothing added was lost")


def main() -> int:
    seeds = [s.strip() for s in os.environ.get("DYNAMOKV_SEEDS", "127.0.0.1:7070").split(",")]
    seeds = [s for s in seeds if s]
    key = os.environ.get("DYNAMOKV_CART_KEY") or f"cart:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    stop_pid = os.environ.get("DYNAMOKV_STOP_PID")
    try:
        asyncio.run(shop(seeds, key, int(stop_pid) if stop_pid else None))
    except dynamokv.DynamoKVError as e:
        print(f"shopping cart failed: [{e.code}] {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
