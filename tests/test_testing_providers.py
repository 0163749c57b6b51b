"""The deterministic providers load tests choose by name: shapes, determinism, one session turn."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import struct

import pytest

from providers.testing import InstantAgent, ScriptedSTT, ToneTTS
from session.config import Config
from session.interfaces import STT, TTS, AgentContext, AgentObject, STTStream, TranscriptEvent
from session.session import VoiceSession
from tests.session_doubles import LevelVAD, MemoryTransport, silence, tone
from tests.test_session_engine import Recorder, feed, wait_for

CTX = AgentContext(session_id="s", metadata={})


async def next_event(stream: STTStream) -> TranscriptEvent:
    return await asyncio.wait_for(anext(aiter(stream)), 1)


async def synthesize(tts: ToneTTS, text: str) -> list[bytes]:
    return [chunk async for chunk in tts.synthesize(text)]


# ---------------------------------------------------------------------------- shapes


async def test_they_have_the_shapes_the_session_needs() -> None:
    # STT, TTS and AgentObject are not runtime-checkable: annotating checks them statically,
    # and the attribute checks below do it at run time.
    stt: STT = ScriptedSTT()
    tts: TTS = ToneTTS()
    agent: AgentObject = InstantAgent()
    assert (stt.name, stt.sample_rate) == ("scripted", 8000)
    assert (tts.name, tts.sample_rate) == ("tone", 8000)
    assert (InstantAgent.name, InstantAgent().greeting) == ("instant", "Hello.")
    assert inspect.iscoroutinefunction(stt.open_stream)
    assert inspect.isasyncgenfunction(ToneTTS.synthesize)
    assert inspect.iscoroutinefunction(agent.respond)
    stream = await stt.open_stream()
    assert isinstance(stream, STTStream)
    await stream.aclose()


# ------------------------------------------------------------------------ ScriptedSTT


async def test_a_flush_after_audio_says_the_line_and_one_without_says_nothing() -> None:
    stream = await ScriptedSTT().open_stream()
    stream.flush()
    assert await next_event(stream) == TranscriptEvent("", is_final=True, confidence=1.0)
    stream.push_audio(b"\0\0" * 160)
    stream.flush()
    assert (await next_event(stream)).text == "hello"
    stream.push_audio(b"")  # no samples: nothing was heard
    stream.flush()
    assert (await next_event(stream)).text == ""
    await stream.aclose()


async def test_a_list_of_lines_is_cycled_and_each_stream_starts_at_the_top() -> None:
    stt = ScriptedSTT(["one", "two"])
    first, second = await stt.open_stream(), await stt.open_stream()
    said = []
    for _ in range(3):
        first.push_audio(b"\1\0")
        first.flush()
        said.append((await next_event(first)).text)
    second.push_audio(b"\1\0")
    second.flush()
    assert said == ["one", "two", "one"]
    assert (await next_event(second)).text == "one"


async def test_aclose_ends_the_iteration() -> None:
    stream = await ScriptedSTT().open_stream()
    await stream.aclose()
    stream.flush()  # after the end: ignored
    assert [event async for event in stream] == []


def test_an_empty_script_is_refused() -> None:
    with pytest.raises(ValueError):
        ScriptedSTT([])


# --------------------------------------------------------------------------- ToneTTS


async def test_each_sentence_gets_the_same_half_second_tone_in_100_ms_chunks() -> None:
    tts = ToneTTS()
    chunks = await synthesize(tts, "Any sentence at all.")
    assert [len(c) for c in chunks] == [1600] * 5  # 0.5 s at 8 kHz, 16-bit
    assert await synthesize(ToneTTS(), "Another one, longer than the first.") == chunks
    samples = struct.unpack(f"<{len(b''.join(chunks)) // 2}h", b"".join(chunks))
    assert 7900 < max(samples) <= 8000 and samples[0] == 0
    crossings = sum(1 for a, b in itertools.pairwise(samples) if a < 0 <= b)
    assert abs(crossings - 220) <= 1  # 440 Hz for half a second


async def test_the_tone_is_computed_once() -> None:
    assert ToneTTS()._chunks is ToneTTS()._chunks
    assert ToneTTS(seconds=0.25)._chunks is not ToneTTS()._chunks
    assert [len(c) for c in await synthesize(ToneTTS(seconds=0.25), "x")] == [1600, 1600, 800]


@pytest.mark.parametrize("text", ["", "  "])
async def test_blank_text_gives_no_audio(text: str) -> None:
    assert await synthesize(ToneTTS(), text) == []


@pytest.mark.parametrize(
    "bad", [{"seconds": 0}, {"frequency": 4000}, {"amplitude": 0}, {"amplitude": 40000}]
)
def test_tone_options_are_checked(bad: dict) -> None:
    with pytest.raises(ValueError):
        ToneTTS(**bad)


# ---------------------------------------------------------------------- InstantAgent


async def test_the_agent_always_gives_its_one_reply() -> None:
    agent = InstantAgent()
    assert await agent.respond(CTX, "anything") == "Sure, here is your answer."
    assert await agent.respond(AgentContext("s", {}, dtmf="1"), "") == "Sure, here is your answer."
    custom = InstantAgent(reply="Okay.", greeting="Hi.")
    assert (await custom.respond(CTX, "x"), custom.greeting) == ("Okay.", "Hi.")


# ------------------------------------------------------------------ in a session


async def test_a_session_turn_completes_with_the_testing_providers() -> None:
    rec = Recorder()
    transport = MemoryTransport()
    session = VoiceSession(
        transport=transport,
        stt=ScriptedSTT("what are the opening hours"),
        tts=ToneTTS(),
        vad=LevelVAD(),
        agent=InstantAgent(),
        config=Config(min_endpointing_delay=0.3, speech_end_silence=0.2),
        on_event=rec.events.append,
    )
    transport.listener = session
    await session.start()
    await feed(session, tone(0.4) + silence(0.6))
    await wait_for(lambda: rec.kinds("agent_text"), within=5)
    assert rec.kinds("user_turn")[0]["text"] == "what are the opening hours"
    assert [e["text"] for e in rec.kinds("agent_text")] == ["Sure, here is your answer."]
    assert transport.audio_bytes == 8000  # one half-second tone
    transport.play_all()
    await wait_for(lambda: rec.kinds("reply_finished"))
    assert rec.kinds("error") == []
    await session.stop()
