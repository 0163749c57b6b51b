"""Fallback lists of TTS, STT and agents, driven with tiny in-test providers and a fake clock."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator

import pytest

from session.config import Config
from session.errors import ErrorCode, ProviderError, SessionError
from session.fallback import FallbackAgent, FallbackSTT, FallbackTTS
from session.interfaces import (
    STT,
    TTS,
    AgentContext,
    AgentObject,
    STTStream,
    TranscriptEvent,
)
from session.session import SessionEvent, VoiceSession
from tests.session_doubles import LevelVAD, MemoryTransport, ScriptedSTT, ToneTTS

CTX = AgentContext(session_id="s1", metadata={})


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class AuthFailure(Exception):
    status_code = 401


# ------------------------------------------------------------------------- TTS doubles


class FlakyTTS:
    """Yields `chunks` per sentence; fails `fail_times` times, after `fail_after` chunks."""

    def __init__(
        self,
        name: str,
        *,
        fail_times: int = 0,
        fail_after: int = 0,
        sample_rate: int = 8000,
        chunks: int = 3,
        error: Exception | None = None,
    ) -> None:
        self.name = name
        self.sample_rate = sample_rate
        self.fail_times = fail_times
        self.fail_after = fail_after
        self.chunks = chunks
        self.error = error or RuntimeError(f"{name} is down")
        self.calls: list[str] = []
        self.closed = 0

    def audio(self, index: int) -> bytes:
        return f"{self.name}{index}".encode()

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self.calls.append(text)
        try:
            for i in range(self.chunks):
                if self.fail_times and i == self.fail_after:
                    self.fail_times -= 1
                    raise self.error
                await asyncio.sleep(0)
                yield self.audio(i)
        finally:
            self.closed += 1


async def collect(stream: AsyncIterator[bytes] | AsyncIterator[str]) -> list:
    return [item async for item in stream]


# ------------------------------------------------------------------------- STT doubles


class ListStream:
    """Emits the given events, then fails with `error` if one is set."""

    def __init__(self, events: list[TranscriptEvent], error: Exception | None = None) -> None:
        self.events = events
        self.error = error
        self.pushed: list[bytes] = []
        self.flushes = 0
        self.closed = False
        self.keep_alives = 0
        self.push_error: Exception | None = None

    def push_audio(self, pcm: bytes) -> None:
        if self.push_error:
            raise self.push_error
        self.pushed.append(pcm)

    def flush(self) -> None:
        self.flushes += 1

    def __aiter__(self) -> AsyncIterator[TranscriptEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[TranscriptEvent]:
        for event in self.events:
            yield event
        if self.error:
            raise self.error

    async def aclose(self) -> None:
        self.closed = True

    async def keep_alive(self) -> None:
        self.keep_alives += 1


class FlakySTT:
    def __init__(
        self,
        name: str,
        *,
        open_failures: int = 0,
        stream_error: Exception | None = None,
        sample_rate: int = 16000,
    ) -> None:
        self.name = name
        self.sample_rate = sample_rate
        self.open_failures = open_failures
        self.stream_error = stream_error
        self.opened: list[ListStream] = []
        self.attempts = 0

    async def open_stream(self) -> ListStream:
        self.attempts += 1
        if self.open_failures:
            self.open_failures -= 1
            raise ConnectionRefusedError(f"{self.name} refused")
        stream = ListStream([TranscriptEvent(f"{self.name} heard", True)], self.stream_error)
        self.opened.append(stream)
        return stream


# ---------------------------------------------------------------------------- helpers


def protocol_members(protocol: type) -> set[str]:
    """The attributes and methods a Protocol declares (typing's own helpers are 3.12+)."""
    declared = set(getattr(protocol, "__annotations__", {}))
    for name, value in vars(protocol).items():
        if inspect.isfunction(value) and (not name.startswith("_") or name == "__aiter__"):
            declared.add(name)
    return declared


def assert_satisfies(obj: object, protocol: type) -> None:
    for name in protocol_members(protocol):
        assert hasattr(obj, name), f"{type(obj).__name__} lacks {protocol.__name__}.{name}"
        declared = getattr(protocol, name, None)
        if inspect.isfunction(declared):
            ours = getattr(obj, name)
            assert callable(ours)
            assert inspect.iscoroutinefunction(ours) == inspect.iscoroutinefunction(declared)


# -------------------------------------------------------------------------------- TTS


async def test_tts_switches_when_the_first_fails_before_any_audio(
    caplog: pytest.LogCaptureFixture,
) -> None:
    primary, backup = FlakyTTS("a", fail_times=99), FlakyTTS("b")
    tts = FallbackTTS([primary, backup], clock=FakeClock())
    with caplog.at_level(logging.WARNING, logger="session.fallback"):
        audio = await collect(tts.synthesize("Hello."))
    assert audio == [backup.audio(i) for i in range(3)]
    assert tts.failures == {"a": 1, "b": 0}
    assert tts.active == "b"
    assert [r.getMessage() for r in caplog.records] == [
        "TTS provider a failed (RuntimeError: a is down); switching to b"
    ]


async def test_tts_failure_after_audio_propagates_without_switching() -> None:
    primary, backup = FlakyTTS("a", fail_times=1, fail_after=1), FlakyTTS("b")
    tts = FallbackTTS([primary, backup], clock=FakeClock())
    received: list[bytes] = []
    with pytest.raises(RuntimeError, match="a is down") as caught:
        async for chunk in tts.synthesize("Half a sentence."):
            received.append(chunk)
    assert caught.value is primary.error
    assert received == [primary.audio(0)]
    assert backup.calls == []
    # The next sentence starts on the backup rather than on the provider that just broke.
    assert tts.failures["a"] == 1 and tts.active == "b"
    assert await collect(tts.synthesize("Next.")) == [backup.audio(i) for i in range(3)]


async def test_tts_tries_the_first_again_after_the_recovery_interval() -> None:
    clock = FakeClock()
    primary, backup = FlakyTTS("a", fail_times=1), FlakyTTS("b")
    tts = FallbackTTS([primary, backup], recovery_interval=30, clock=clock)

    await collect(tts.synthesize("one"))
    clock.now += 29
    await collect(tts.synthesize("two"))
    assert primary.calls == ["one"]  # skipped while cooling down
    assert backup.calls == ["one", "two"]

    clock.now += 1
    assert tts.active == "a"
    assert await collect(tts.synthesize("three")) == [primary.audio(i) for i in range(3)]
    assert primary.calls == ["one", "three"] and backup.calls == ["one", "two"]


async def test_tts_falls_back_to_cooling_providers_rather_than_giving_up() -> None:
    clock = FakeClock()
    primary, backup = FlakyTTS("a", fail_times=1), FlakyTTS("b")
    tts = FallbackTTS([primary, backup], clock=clock)
    await collect(tts.synthesize("one"))  # a fails, b answers
    backup.fail_times = 1
    assert await collect(tts.synthesize("two")) == [primary.audio(i) for i in range(3)]
    assert tts.failures == {"a": 1, "b": 1}


async def test_tts_all_failing_raises_a_provider_error_with_the_last_cause() -> None:
    primary, backup = FlakyTTS("a", fail_times=9), FlakyTTS("b", fail_times=9)
    tts = FallbackTTS([primary, backup], clock=FakeClock())
    with pytest.raises(ProviderError) as caught:
        await collect(tts.synthesize("Hello."))
    error = caught.value
    assert error.code is ErrorCode.PROVIDER_ERROR
    assert error.provider == "fallback"
    assert "all 2 TTS providers failed" in str(error)
    assert "a: RuntimeError: a is down; b: RuntimeError: b is down" in str(error)
    assert error.cause is backup.error and error.__cause__ is backup.error
    assert error.retryable


async def test_tts_all_failing_on_authentication_is_not_retryable() -> None:
    tts = FallbackTTS(
        [FlakyTTS("a", fail_times=9, error=AuthFailure("bad key"))], clock=FakeClock()
    )
    with pytest.raises(ProviderError) as caught:
        await collect(tts.synthesize("Hello."))
    assert not caught.value.retryable


async def test_tts_closing_the_stream_early_closes_the_provider_stream() -> None:
    primary = FlakyTTS("a")
    tts = FallbackTTS([primary, FlakyTTS("b")], clock=FakeClock())
    stream = tts.synthesize("Interrupted.")
    assert await anext(stream) == primary.audio(0)
    await stream.aclose()  # what a barge-in does to the engine's loop
    assert primary.closed == 1
    assert tts.failures == {"a": 0, "b": 0}


async def test_tts_members_at_other_rates_are_resampled_to_the_declared_one() -> None:
    class Wideband:
        name, sample_rate = "wide", 16000

        async def synthesize(self, text: str) -> AsyncIterator[bytes]:
            yield b"\0\0" * 1600  # 0.1 s at 16 kHz

    tts = FallbackTTS([FlakyTTS("a", fail_times=1), Wideband()])
    assert tts.sample_rate == 8000
    audio = b"".join([chunk async for chunk in tts.synthesize("hi")])
    assert len(audio) == 1600  # the same 0.1 s at 8 kHz


def test_an_empty_list_is_invalid() -> None:
    for make in (FallbackTTS, FallbackSTT, FallbackAgent):
        with pytest.raises(SessionError) as caught:
            make([])
        assert caught.value.code is ErrorCode.INVALID_CONFIG


def test_tts_satisfies_the_protocol() -> None:
    tts = FallbackTTS([FlakyTTS("a"), FlakyTTS("a")])
    assert_satisfies(tts, TTS)
    assert tts.name == "fallback(a,a#2)" and tts.sample_rate == 8000
    assert tts.failures == {"a": 0, "a#2": 0}
    typed: TTS = tts  # the static check, for type checkers
    assert typed is tts


# -------------------------------------------------------------------------------- STT


async def test_stt_opens_the_next_provider_when_the_first_refuses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    primary, backup = FlakySTT("a", open_failures=1), FlakySTT("b")
    stt = FallbackSTT([primary, backup], clock=FakeClock())
    with caplog.at_level(logging.WARNING, logger="session.fallback"):
        stream = await stt.open_stream()
    assert isinstance(stream, STTStream)
    assert [e.text async for e in stream] == ["b heard"]
    assert stt.failures == {"a": 1, "b": 0} and stt.active == "b"
    assert len(caplog.records) == 1


async def test_stt_stream_failure_propagates_and_reconnection_picks_the_next() -> None:
    broken = RuntimeError("socket closed")
    primary, backup = FlakySTT("a", stream_error=broken), FlakySTT("b")
    stt = FallbackSTT([primary, backup], clock=FakeClock())

    stream = await stt.open_stream()
    heard: list[str] = []
    with pytest.raises(RuntimeError) as caught:
        async for event in stream:
            heard.append(event.text)
    assert caught.value is broken  # not hidden: the engine decides to reconnect
    assert heard == ["a heard"]
    assert stt.failures == {"a": 1, "b": 0}

    again = await stt.open_stream()  # the engine's reconnection
    assert [e.text async for e in again] == ["b heard"]
    assert primary.attempts == 1


async def test_stt_tries_the_first_again_after_the_recovery_interval() -> None:
    clock = FakeClock()
    primary, backup = FlakySTT("a", open_failures=1), FlakySTT("b")
    stt = FallbackSTT([primary, backup], recovery_interval=5, clock=clock)
    await stt.open_stream()
    clock.now += 4.9
    await stt.open_stream()
    assert (primary.attempts, backup.attempts) == (1, 2)
    clock.now += 0.1
    stream = await stt.open_stream()
    assert [e.text async for e in stream] == ["a heard"]
    assert stt.active == "a"


async def test_stt_all_failing_raises_a_provider_error() -> None:
    stt = FallbackSTT(
        [FlakySTT("a", open_failures=1), FlakySTT("b", open_failures=1)], clock=FakeClock()
    )
    with pytest.raises(ProviderError) as caught:
        await stt.open_stream()
    assert "all 2 STT providers failed" in str(caught.value)
    assert isinstance(caught.value.cause, ConnectionRefusedError)
    assert str(caught.value.cause) == "b refused"


async def test_stt_stream_forwards_audio_flush_keep_alive_and_close() -> None:
    stt = FallbackSTT([FlakySTT("a")], clock=FakeClock())
    stream = await stt.open_stream()
    inner = stt._providers[0].opened[0]  # type: ignore[attr-defined]
    stream.push_audio(b"\x01\x00")
    stream.flush()
    await stream.keep_alive()  # type: ignore[attr-defined]
    await stream.aclose()
    assert inner.pushed == [b"\x01\x00"] and inner.flushes == 1
    assert inner.keep_alives == 1 and inner.closed


async def test_stt_push_failures_count_once_per_stream() -> None:
    primary = FlakySTT("a")
    stt = FallbackSTT([primary, FlakySTT("b")], clock=FakeClock())
    stream = await stt.open_stream()
    primary.opened[0].push_error = BrokenPipeError("gone")
    for _ in range(3):
        with pytest.raises(BrokenPipeError):
            stream.push_audio(b"\0\0")
    assert stt.failures == {"a": 1, "b": 0} and stt.active == "b"


async def test_stt_members_at_other_rates_get_resampled_audio() -> None:
    wideband, narrowband = FlakySTT("a", open_failures=1), FlakySTT("b", sample_rate=8000)
    stt = FallbackSTT([wideband, narrowband])
    assert stt.sample_rate == 16000
    stream = await stt.open_stream()  # "a" refuses: "b" serves at 8 kHz
    stream.push_audio(b"\0\0" * 1600)  # 0.1 s at 16 kHz
    assert sum(map(len, narrowband.opened[0].pushed)) == 1600  # the same 0.1 s at 8 kHz


async def test_batch_members_are_chunked_like_the_session_does() -> None:
    class Batch:
        name, sample_rate, streaming = "batch", 16000, False

        async def transcribe(self, pcm: bytes) -> str:
            return f"{len(pcm)} bytes"

    stt = FallbackSTT([Batch(), FlakySTT("b")])
    stream = await stt.open_stream()
    stream.push_audio(b"\0\0" * 100)
    stream.flush()
    events = aiter(stream)
    assert (await anext(events)) == TranscriptEvent("200 bytes", is_final=True)
    await stream.aclose()


async def test_stt_satisfies_the_protocols() -> None:
    stt = FallbackSTT([FlakySTT("a"), FlakySTT("b")])
    assert_satisfies(stt, STT)
    assert stt.name == "fallback(a,b)" and stt.sample_rate == 16000 and stt.active == "a"
    stream = await stt.open_stream()
    assert_satisfies(stream, STTStream)
    typed: STT = stt
    assert typed is stt


# ------------------------------------------------------------------------------ agents


def agent_shapes(reply: str, fail: bool) -> dict[str, object]:
    """The same agent in every shape the engine accepts."""

    def check() -> None:
        if fail:
            raise RuntimeError("model unavailable")

    async def returns_text(ctx: AgentContext, transcript: str) -> str:
        check()
        return reply

    async def stream() -> AsyncIterator[str]:
        check()
        yield reply

    async def returns_stream(ctx: AgentContext, transcript: str) -> AsyncIterator[str]:
        return stream()

    async def generator(ctx: AgentContext, transcript: str) -> AsyncIterator[str]:
        check()
        yield reply

    def plain(ctx: AgentContext, transcript: str) -> str:
        check()
        return reply

    class WithRespond:
        name = "object"

        async def respond(self, ctx: AgentContext, transcript: str) -> str:
            check()
            return reply

    class WithGeneratorRespond:
        async def respond(self, ctx: AgentContext, transcript: str) -> AsyncIterator[str]:
            check()
            yield reply

    return {
        "coroutine returning text": returns_text,
        "coroutine returning a stream": returns_stream,
        "async generator": generator,
        "plain function": plain,
        "object with respond": WithRespond(),
        "object with generator respond": WithGeneratorRespond(),
    }


SHAPES = list(agent_shapes("", False))


@pytest.mark.parametrize("shape", SHAPES)
async def test_agent_of_any_shape_is_replaced_when_it_fails_before_text(shape: str) -> None:
    broken = agent_shapes("never", fail=True)[shape]
    working = agent_shapes("From the backup.", fail=False)[shape]
    agent = FallbackAgent([broken, working], clock=FakeClock())
    assert await collect(agent.respond(CTX, "hello")) == ["From the backup."]
    assert list(agent.failures.values()) == [1, 0]


async def test_agent_failure_after_text_propagates() -> None:
    backup_calls = 0

    async def half(ctx: AgentContext, transcript: str) -> AsyncIterator[str]:
        yield "Let me check. "
        raise RuntimeError("stream cut")

    async def backup(ctx: AgentContext, transcript: str) -> str:
        nonlocal backup_calls
        backup_calls += 1
        return "unused"

    agent = FallbackAgent([half, backup], clock=FakeClock())
    received: list[str] = []
    with pytest.raises(RuntimeError, match="stream cut"):
        async for piece in agent.respond(CTX, "hello"):
            received.append(piece)
    assert received == ["Let me check. "] and backup_calls == 0
    assert agent.failures == {"half": 1, "backup": 0}


async def test_agent_empty_reply_is_not_a_failure() -> None:
    async def silent(ctx: AgentContext, transcript: str) -> str:
        return ""

    async def backup(ctx: AgentContext, transcript: str) -> str:
        return "unused"

    agent = FallbackAgent([silent, backup], clock=FakeClock())
    assert await collect(agent.respond(CTX, "hello")) == []
    assert agent.failures == {"silent": 0, "backup": 0}


async def test_agent_recovery_and_all_failing() -> None:
    clock = FakeClock()
    outage = {"primary": True, "backup": False}

    async def primary(ctx: AgentContext, transcript: str) -> str:
        if outage["primary"]:
            raise ConnectionResetError("primary reset")
        return "primary"

    async def backup(ctx: AgentContext, transcript: str) -> str:
        if outage["backup"]:
            raise TimeoutError("backup slow")
        return "backup"

    agent = FallbackAgent([primary, backup], recovery_interval=10, clock=clock)
    assert await collect(agent.respond(CTX, "1")) == ["backup"]
    outage["primary"] = False
    assert await collect(agent.respond(CTX, "2")) == ["backup"]
    clock.now += 10
    assert await collect(agent.respond(CTX, "3")) == ["primary"]

    outage.update(primary=True, backup=True)
    with pytest.raises(ProviderError) as caught:
        await collect(agent.respond(CTX, "4"))
    assert "all 2 agent providers failed" in str(caught.value)
    assert isinstance(caught.value.cause, TimeoutError) and caught.value.retryable


def test_agent_names_and_protocol() -> None:
    shapes = agent_shapes("hi", fail=False)
    agent = FallbackAgent([shapes["object with respond"], shapes["async generator"]])
    assert agent.name == "fallback(object,generator)"
    assert_satisfies(agent, AgentObject)
    typed: AgentObject = agent
    assert typed is agent


# --------------------------------------------------------------------- in the engine


async def test_the_engine_uses_fallback_lists_as_plain_providers() -> None:
    """A dead first provider of each kind: the session starts, answers and reports no error."""
    events: list[SessionEvent] = []
    transport = MemoryTransport()

    async def dead_agent(ctx: AgentContext, transcript: str) -> str:
        raise RuntimeError("agent down")

    async def live_agent(ctx: AgentContext, transcript: str) -> str:
        return "Still here."

    session = VoiceSession(
        transport=transport,
        stt=FallbackSTT([FlakySTT("dead", open_failures=9, sample_rate=8000), ScriptedSTT([])]),
        tts=FallbackTTS([FlakyTTS("dead", fail_times=9), ToneTTS()]),
        vad=LevelVAD(),
        agent=FallbackAgent([dead_agent, live_agent]),
        config=Config(retry_delay=0.01),
        on_event=events.append,
    )
    transport.listener = session
    await session.start()
    try:
        session.handle_dtmf("1")
        session.handle_dtmf("#")
        for _ in range(200):
            if transport.pending_marks:
                break
            await asyncio.sleep(0.01)
        assert transport.audio_bytes > 0
        assert [e.data["text"] for e in events if e.kind == "agent_text"] == ["Still here."]
        assert [e for e in events if e.kind == "error"] == []
    finally:
        await session.stop()


async def test_keep_alive_reaches_every_member_and_reports_a_failure() -> None:
    class Warm:
        name = "warm"
        sample_rate = 8000

        def __init__(self, error: Exception | None = None) -> None:
            self.beats = 0
            self.error = error

        async def synthesize(self, text: str) -> AsyncIterator[bytes]:
            yield b"\0\0"

        def keep_alive(self) -> None:  # a synchronous one is accepted as well
            self.beats += 1
            if self.error:
                raise self.error

    broken, fine = Warm(ConnectionResetError("idle socket closed")), Warm()
    tts = FallbackTTS([broken, FlakyTTS("plain", sample_rate=8000), fine])
    with pytest.raises(ConnectionResetError):
        await tts.keep_alive()
    assert (broken.beats, fine.beats) == (1, 1)

    agent = FallbackAgent([fine, lambda ctx, transcript: "hi"])  # type: ignore[list-item]
    await agent.keep_alive()
    assert fine.beats == 2
