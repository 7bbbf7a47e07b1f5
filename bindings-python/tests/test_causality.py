"""Two causality defects, checked through the public SDK (blocking and asyncio clients) against a
real memory-engine node:

1. "A put's reply context covers siblings the writer never saw": the context a put returns must
   cover that put only, so a later write with it supersedes that put and nothing else.
2. "A write whose answer was lost is applied twice": a put that reached the node but whose
   answer never came back must, when the client retries it on another node, be applied once.
   A small TCP proxy (`LosingProxy`) in front of the node loses the answer. These clients use
   server-driven coordination: coordinating itself, a client would pull the ring and talk to
   the node's own address, past the proxy.

Plus what an application does with such a write: `OutcomeUnknownError.write_id`, given back as
`write_id=`, retries it without ever applying it twice.
"""

from __future__ import annotations

import uuid
from typing import Any, Iterator, List, Tuple

import pytest

import dynamokv
from losing_proxy import LosingProxy


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
    kv = make_client([proxy.address, node.address], coordination="server")
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
    only_proxy = make_client([proxy.address], max_retries=0, coordination="server")

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
