"""The session engine driven frame by frame with in-memory parts."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from session.config import Config
from session.errors import ErrorCode, SessionError
from session.interfaces import AgentContext
from session.session import SessionEvent, VoiceSession
from session.state import TRANSITIONS, SessionState, check_transition
from tests.session_doubles import (
    LevelVAD,
    MemoryTransport,
    ScriptedSTT,
    ToneTTS,
    frames,
    silence,
    tone,
)

S = SessionState
FAST = Config(min_endpointing_delay=0.3, speech_end_silence=0.2, retry_delay=0.01)


class Recorder:
    def __init__(self) -> None:
        self.events: list[SessionEvent] = []
        self.states: list[tuple[SessionState, SessionState]] = []
        self.contexts: list[tuple[AgentContext, str]] = []

    def kinds(self, kind: str) -> list[dict]:
        return [e.data for e in self.events if e.kind == kind]


def make_session(
    finals: list[str] | None = None,
    agent=None,
    tts: ToneTTS | None = None,
    config: Config = FAST,
) -> tuple[VoiceSession, MemoryTransport, Recorder]:
    rec = Recorder()
    transport = MemoryTransport()

    async def echo_agent(ctx: AgentContext, transcript: str) -> str:
        rec.contexts.append((ctx, transcript))
        return f"You said {transcript or ctx.dtmf}. Anything else?"

    session = VoiceSession(
        transport=transport,
        stt=ScriptedSTT(finals or []),
        tts=tts or ToneTTS(),
        vad=LevelVAD(),
        agent=agent or echo_agent,
        config=config,
        on_state_changed=lambda old, new: rec.states.append((old, new)),
        on_event=rec.events.append,
    )
    transport.listener = session
    return session, transport, rec


async def feed(session: VoiceSession, pcm: bytes) -> None:
    """Feeds audio at real-time pace so the session's timers see realistic gaps."""
    for frame in frames(pcm):
        session.process_audio(frame)
        await asyncio.sleep(0.02)


async def wait_for(predicate, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def test_transition_table_allows_exactly_the_listed_moves() -> None:
    for old, new in itertools.product(SessionState, SessionState):
        if new in TRANSITIONS[old]:
            check_transition(old, new)
        else:
            with pytest.raises(SessionError) as info:
                check_transition(old, new)
            assert info.value.code is ErrorCode.INVALID_STATE


def test_config_rejects_bad_values_naming_the_field() -> None:
    with pytest.raises(SessionError, match=r"Config\.timeout"):
        Config(timeout=0)
    with pytest.raises(SessionError, match=r"Config\.max_retries"):
        Config(max_retries=-1)
    with pytest.raises(SessionError, match="max_endpointing_delay"):
        Config(min_endpointing_delay=2.0, max_endpointing_delay=1.0)
    with pytest.raises(SessionError, match=r"Config\.auto_start"):
        Config(auto_start="yes")  # type: ignore[arg-type]
    assert Config().session_id and Config(session_id="abc").session_id == "abc"


async def test_lifecycle_misuse_raises_typed_errors() -> None:
    session, _, _ = make_session()
    with pytest.raises(SessionError) as info:
        session.say("hi")
    assert info.value.code is ErrorCode.SESSION_NOT_ACTIVE
    await session.start()
    with pytest.raises(SessionError) as info:
        await session.start()
    assert info.value.code is ErrorCode.SESSION_ALREADY_ACTIVE
    with pytest.raises(SessionError) as info:
        session.resume()
    assert info.value.code is ErrorCode.INVALID_STATE
    await session.stop()
    with pytest.raises(SessionError) as info:
        session.say("hi")
    assert info.value.code is ErrorCode.SESSION_NOT_ACTIVE
    with pytest.raises(SessionError) as info:
        await session.start()
    assert info.value.code is ErrorCode.SESSION_NOT_ACTIVE
    with pytest.raises(SessionError) as info:
        session.pause()
    assert info.value.code is ErrorCode.INVALID_STATE


async def test_a_turn_runs_listen_process_speak_listen_and_waits_for_playout() -> None:
    session, transport, rec = make_session(finals=["hello there"])
    await session.start()
    await feed(session, silence(0.2) + tone(0.5) + silence(0.5))
    await wait_for(lambda: transport.pending_marks)
    assert session.state is S.SPEAKING
    assert rec.kinds("user_turn") == [{"text": "hello there", "dtmf": ""}]
    assert rec.contexts[0][1] == "hello there"
    assert rec.kinds("reply_finished") == []  # nothing heard yet: no mark came back
    transport.play_all()
    await wait_for(lambda: session.state is S.LISTENING)
    finished = rec.kinds("reply_finished")
    assert finished and finished[0]["interrupted"] is False
    assert finished[0]["heard_text"] == "You said hello there. Anything else?"
    assert [(o.value, n.value) for o, n in rec.states] == [
        ("initial", "starting"),
        ("starting", "listening"),
        ("listening", "processing"),
        ("processing", "speaking"),
        ("speaking", "listening"),
    ]
    assert [m.role for m in session.history] == ["user", "assistant"]
    await session.stop()


async def test_say_handle_resolves_on_playout_and_streams_each_sentence() -> None:
    session, transport, _ = make_session()
    await session.start()
    handle = session.say("First sentence here. Second one follows!")
    await wait_for(lambda: len(transport.pending_marks) == 2)
    assert not handle.done
    transport.play_all()
    await asyncio.wait_for(handle.wait_for_playout(), 2)
    assert handle.done and not handle.interrupted
    assert handle.heard_text == "First sentence here. Second one follows!"
    await session.stop()


async def test_barge_in_clears_audio_and_history_keeps_only_what_was_heard() -> None:
    tts = ToneTTS(seconds_per_char=0.02)
    session, transport, rec = make_session(finals=["stop please"], tts=tts)
    await session.start()
    handle = session.say("This is heard. This part never plays.")
    await wait_for(lambda: len(transport.pending_marks) == 2)
    # The caller hears the first sentence only.
    first = transport.pending_marks.pop(0)
    session.handle_playout(first, True)
    await feed(session, tone(0.7))
    await wait_for(lambda: handle.done)
    assert handle.interrupted
    assert ("clear", None) in transport.sent
    assert handle.heard_text == "This is heard."
    assert session.history[0].text == "This is heard."
    await feed(session, silence(0.5))
    await wait_for(lambda: rec.kinds("user_turn"))
    await session.stop()


async def test_short_noise_does_not_interrupt() -> None:
    session, transport, _ = make_session(finals=[""])
    await session.start()
    handle = session.say("A sentence that keeps playing.")
    await wait_for(lambda: transport.pending_marks)
    await feed(session, tone(0.2) + silence(0.4))
    assert not handle.done and ("clear", None) not in transport.sent
    transport.play_all()
    await asyncio.wait_for(handle.wait_for_playout(), 2)
    assert not handle.interrupted
    await session.stop()


async def test_cancel_stops_a_speech_and_sends_clear() -> None:
    session, transport, _ = make_session()
    await session.start()
    handle = session.say("Long speech to cancel.")
    await wait_for(lambda: transport.pending_marks)
    handle.cancel()
    await asyncio.wait_for(handle.wait_for_playout(), 2)
    assert handle.interrupted
    await wait_for(lambda: ("clear", None) in transport.sent)
    await session.stop()


async def test_dtmf_digits_make_a_turn_for_the_agent() -> None:
    session, _, rec = make_session()
    await session.start()
    for digit in "12#":
        session.handle_dtmf(digit)
    await wait_for(lambda: rec.contexts)
    ctx, transcript = rec.contexts[0]
    assert ctx.dtmf == "12" and transcript == ""
    assert [e["digit"] for e in rec.kinds("dtmf")] == ["1", "2", "#"]
    await session.stop()


async def test_dtmf_turn_ends_after_the_inter_digit_timeout() -> None:
    session, _, rec = make_session(config=Config(dtmf_turn_timeout=0.2))
    await session.start()
    session.handle_dtmf("7")
    await wait_for(lambda: rec.contexts, within=2)
    assert rec.contexts[0][0].dtmf == "7"
    await session.stop()


async def test_agent_failure_is_retried_then_apologised_for() -> None:
    calls = 0

    async def broken(ctx: AgentContext, transcript: str) -> str:
        nonlocal calls
        calls += 1
        raise RuntimeError("model unavailable")

    session, _, rec = make_session(finals=["hi"], agent=broken)
    await session.start()
    await feed(session, tone(0.4) + silence(0.5))
    await wait_for(lambda: len(rec.kinds("agent_text")) == 2)
    assert calls == FAST.max_retries + 1
    assert " ".join(e["text"] for e in rec.kinds("agent_text")) == FAST.apology_text
    assert {e["code"] for e in rec.kinds("error")} == {"agent_error"}
    await session.stop()


async def test_tts_failure_is_retried() -> None:
    tts = ToneTTS(fail_times=2)
    session, transport, rec = make_session(tts=tts)
    await session.start()
    session.say("Retry me.")
    await wait_for(lambda: transport.pending_marks)
    assert tts.calls == ["Retry me."] * 3
    assert len(rec.kinds("error")) == 2
    await session.stop()


async def test_streamed_agent_reply_reaches_tts_sentence_by_sentence() -> None:
    gate = asyncio.Event()

    async def slow_agent(ctx: AgentContext, transcript: str):
        yield "The first sentence is ready. "
        await gate.wait()
        yield "The second comes later."

    tts = ToneTTS()
    session, transport, _ = make_session(finals=["go"], agent=slow_agent, tts=tts)
    await session.start()
    await feed(session, tone(0.4) + silence(0.5))
    # The first sentence is spoken while the agent is still generating the second.
    await wait_for(lambda: transport.pending_marks)
    assert tts.calls == ["The first sentence is ready."]
    gate.set()
    await wait_for(lambda: len(transport.pending_marks) == 2)
    await session.stop()


async def test_failing_callbacks_do_not_break_the_session() -> None:
    session, transport, _ = make_session()

    def bad_callback(old: SessionState, new: SessionState) -> None:
        raise RuntimeError("observer bug")

    session.on_state_changed(bad_callback)
    session.on_event(lambda event: 1 / 0)
    await session.start()
    assert session.state is S.LISTENING
    handle = session.say("Still works.")
    await wait_for(lambda: transport.pending_marks)
    transport.play_all()
    await asyncio.wait_for(handle.wait_for_playout(), 2)
    await session.stop()


async def test_pause_interrupts_and_ignores_audio_until_resume() -> None:
    session, transport, rec = make_session(finals=["after resume"])
    await session.start()
    handle = session.say("Speaking now.")
    await wait_for(lambda: transport.pending_marks)
    session.pause()
    assert session.state is S.PAUSED
    await wait_for(lambda: handle.done)
    assert handle.interrupted
    await feed(session, tone(0.4) + silence(0.4))
    assert rec.kinds("user_speech_started") == []
    session.resume()
    await feed(session, tone(0.4) + silence(0.5))
    await wait_for(lambda: rec.kinds("user_turn"))
    await session.stop()


async def test_inactivity_timeout_ends_the_session() -> None:
    session, transport, _ = make_session(config=Config(timeout=1.0, keep_alive_interval=0.2))
    await session.start()
    await wait_for(lambda: session.state is S.ENDED, within=4)
    assert session.end_reason == "timeout" and transport.closed


async def test_stop_leaves_no_task_running() -> None:
    session, transport, _ = make_session()
    before = asyncio.all_tasks()
    await session.start()
    session.say("Something long enough to still be playing when the call ends.")
    await wait_for(lambda: transport.pending_marks)
    await session.stop("hangup")
    await asyncio.sleep(0)
    leftover = {t for t in asyncio.all_tasks() - before if not t.done()}
    assert leftover == set()
    assert session.state is S.ENDED and session.end_reason == "hangup"
