"""An ended call is freed by reference counting, not left for the cyclic collector.

CPython's full collections are rare in a large heap, so a call whose objects sit in a
reference cycle stays in memory long after it ended: under churn the gateway grew by ~40 KB
per ended call. These calls run with the collector off: whatever survives the end of the call
is held by a cycle (or by a real leak).
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from gateway.caller import run_call
from tests.gateway_server import RunningGateway, run_gateway

API_TOKEN = "test-api-token"
LINE = "I would like to book a table for two people tonight at eight"


@pytest.fixture(scope="module")
def gateway() -> Iterator[RunningGateway]:
    with run_gateway() as running:
        yield running


async def sessions_of(gateway: RunningGateway, calls: asyncio.Task) -> list[weakref.ref]:
    """Weak references to every session that goes live while `calls` runs."""
    seen: dict[str, weakref.ref] = {}
    while not calls.done():
        for call_sid, session in list(gateway.runtime.live.items()):
            if call_sid not in seen:
                seen[call_sid] = weakref.ref(session)
        await asyncio.sleep(0.01)
    return list(seen.values())


async def freed(refs: list[weakref.ref], within: float = 5) -> bool:
    # The socket's own teardown (connection lost) may come a moment after the session ends.
    deadline = asyncio.get_running_loop().time() + within
    while any(ref() is not None for ref in refs):
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"lines": ["hello", "goodbye"]}, id="turns"),
        pytest.param({"lines": [LINE, "hello"], "barge_in": True}, id="barge-in"),
        pytest.param({"lines": [LINE], "hangup_after_reply_start": 0.4}, id="hang-up-mid-reply"),
    ],
)
async def test_an_ended_call_is_freed_without_the_cyclic_collector(
    gateway: RunningGateway, no_collector: None, options: dict
) -> None:
    lines = options.pop("lines")
    calls = asyncio.ensure_future(
        run_call(gateway.url, lines, api_token=API_TOKEN, printer=None, **options)
    )
    refs = await sessions_of(gateway, calls)
    report = calls.result()
    assert len(refs) == 1, report.errors
    del report, calls
    assert await freed(refs), [gc.get_referrers(ref()) for ref in refs if ref() is not None]
