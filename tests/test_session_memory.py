"""A stopped session is freed by reference counting, however its speech was cut off.

The cut-off cases differ in where the reply task's CancelledError starts: inside the
TaskGroup that synthesises and sends (3.11's `TaskGroup.__aexit__` keeps that error in a
local, so error, traceback and frame hold each other), or after it, waiting for playout.
Run with the collector off: whatever survives the session is held by a cycle.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator

import pytest

from tests.session_doubles import RATE, tone
from tests.test_session_behaviours import build
from tests.test_session_engine import wait_for


class StallingTTS:
    """Sends a first chunk of every sentence, then stalls until cancelled."""

    name = "stalling"
    sample_rate = RATE

    def __init__(self) -> None:
        self.started = 0

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self.started += 1
        yield tone(0.2)
        await asyncio.Event().wait()


async def freed(ref: weakref.ref) -> bool:
    for _ in range(20):  # tasks cancelled by the stop may need a few loop turns to go
        if ref() is None:
            return True
        await asyncio.sleep(0)
    return False


@pytest.mark.parametrize("cut", ["stop", "pause-then-stop"])
async def test_a_session_cut_off_mid_synthesis_is_freed(no_collector: None, cut: str) -> None:
    tts = StallingTTS()
    session, transport, _rec = build(tts=tts)
    await session.start()
    session.say("A reply that never finishes synthesising.")
    await wait_for(lambda: transport.audio_bytes > 0)
    if cut == "pause-then-stop":
        session.pause()  # the speech loop sees the reply task cancelled
        await asyncio.sleep(0.05)
    await session.stop()
    transport.listener = None  # as the gateway's transports do when the call ends
    ref = weakref.ref(session)
    del session, _rec
    assert await freed(ref), [type(r).__name__ for r in gc.get_referrers(ref())]


async def test_a_session_stopped_while_its_reply_plays_out_is_freed(no_collector: None) -> None:
    session, transport, _rec = build()
    await session.start()
    session.say("A short reply.")
    await wait_for(lambda: transport.pending_marks)  # sent, not yet heard
    await session.stop()
    transport.listener = None  # as the gateway's transports do when the call ends
    ref = weakref.ref(session)
    del session, _rec
    assert await freed(ref), [type(r).__name__ for r in gc.get_referrers(ref())]
