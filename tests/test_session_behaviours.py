"""Each behaviour of the session engine, driven with scripted providers and synthetic audio.

Assertions are on what the transport received and on the session's events, in order; time
only ever appears as a lower bound ("not before the delay"), which a slow machine cannot break.
"""

from __future__ import annotations

import asyncio

import pytest

from providers.turn.heuristic import HeuristicTurnDetector
from session.config import Config
from session.errors import ErrorCode, SessionError
from session.fallback import FallbackTTS
from session.interfaces import AgentContext
from session.session import VoiceSession
from session.state import SessionState
from session.telemetry import SessionTelemetry
from tests.session_doubles import (
    ClipSTT,
    LevelVAD,
    MemoryTransport,
    ScriptedSTT,
    ToneTTS,
    frames,
    silence,
    tone,
)
from tests.test_session_engine import Recorder, feed, wait_for
from tests.test_session_telemetry import Otel

S = SessionState
BASE = dict(min_endpointing_delay=0.3, speech_end_silence=0.2, retry_delay=0.01)
# Turn taking as shipped, for the tests that hold the defaults to their promises.
DEFAULT_TURN_TAKING = {
    name: getattr(Config(), name)
    for name in ("min_endpointing_delay", "max_endpointing_delay", "speech_end_silence")
}


def build(
    *,
    stt=None,
    agent=None,
    tts=None,
    turn_detector=None,
    vad=None,
    telemetry=None,
    **config,
) -> tuple[VoiceSession, MemoryTransport, Recorder]:
    rec = Recorder()
    transport = MemoryTransport()

    async def echo(ctx: AgentContext, transcript: str) -> str:
        rec.contexts.append((ctx, transcript))
        return f"You said {transcript or ctx.dtmf}."

    session = VoiceSession(
        transport=transport,
        stt=stt or ScriptedSTT([]),
        tts=tts or ToneTTS(),
        vad=vad or LevelVAD(),
        agent=agent or echo,
        turn_detector=turn_detector,
        config=Config(**{**BASE, **config}),
        on_event=rec.events.append,
        telemetry=telemetry,
    )
    transport.listener = session
    return session, transport, rec


def event_kinds(rec: Recorder) -> list[str]:
    return [e.kind for e in rec.events]


# ------------------------------------------------------------------- turn detection


async def test_unfinished_transcript_waits_for_the_max_endpointing_delay() -> None:
    stt = ScriptedSTT(["I want to book a table and"])
    session, _, rec = build(
        stt=stt,
        turn_detector=HeuristicTurnDetector(),
        min_endpointing_delay=0.3,
        max_endpointing_delay=1.5,
        preemptive_generation=False,
    )
    await session.start()
    await feed(session, tone(0.4))
    await feed(session, silence(0.8))  # past the min delay: an unfinished sentence waits on
    assert rec.kinds("user_turn") == []
    await wait_for(lambda: rec.kinds("user_turn"), within=5)
    ended = next(e.time for e in rec.events if e.kind == "user_speech_ended")
    turn = next(e.time for e in rec.events if e.kind == "user_turn")
    assert turn - ended >= 1.5 - 0.2 - 0.05  # max delay, counted from the last voiced frame
    await session.stop()


async def test_finished_transcript_ends_the_turn_after_the_min_delay() -> None:
    session, _, rec = build(
        stt=ScriptedSTT(["book a table."]),
        turn_detector=HeuristicTurnDetector(),
        max_endpointing_delay=5.0,
    )
    await session.start()
    await feed(session, tone(0.4) + silence(0.6))
    await wait_for(lambda: rec.kinds("user_turn"), within=2)
    await session.stop()


async def test_with_the_defaults_a_caller_who_pauses_mid_sentence_is_not_cut_off() -> None:
    stt = ScriptedSTT(["I would like a table for", "two people."])
    session, transport, rec = build(
        stt=stt, turn_detector=HeuristicTurnDetector(), **DEFAULT_TURN_TAKING
    )
    assert Config().min_endpointing_delay < 1.2 < Config().max_endpointing_delay
    await session.start()
    await feed(session, tone(0.6))
    await feed(session, silence(1.2))  # far past the min delay: the sentence is unfinished
    assert rec.kinds("user_turn") == [] and transport.audio_bytes == 0
    await feed(session, tone(0.5) + silence(0.6))
    await wait_for(lambda: rec.kinds("user_turn"), within=3)
    assert [t["text"] for t in rec.kinds("user_turn")] == ["I would like a table for two people."]
    await session.stop()


class HangoverVAD(LevelVAD):
    """LevelVAD with webrtcvad's habit: it goes on calling `frames` frames speech after the
    voice stops, whatever they hold."""

    def __init__(self, frames: int) -> None:
        self.frames = frames
        self._left = 0

    def is_speech(self, frame: bytes) -> bool:
        if super().is_speech(frame):
            self._left = self.frames
            return True
        if self._left:
            self._left -= 1
            return True
        return False


class MarkRecorder(SessionTelemetry):
    def __init__(self) -> None:
        super().__init__()
        self.marks: dict[str, float] = {}

    def turn_mark(self, name: str, at: float) -> None:
        self.marks[name] = at
        super().turn_mark(name, at)


async def test_the_endpointing_delay_counts_from_the_voice_not_the_vad_hangover() -> None:
    hangover = 5
    telemetry = MarkRecorder()
    session, _, _rec = build(
        stt=ScriptedSTT(["book a table."]),
        vad=HangoverVAD(hangover),
        telemetry=telemetry,
        turn_detector=HeuristicTurnDetector(),
        **DEFAULT_TURN_TAKING,
    )
    loop = asyncio.get_running_loop()
    turn_at: list[float] = []
    session.on_event(lambda e: turn_at.append(loop.time()) if e.kind == "user_turn" else None)
    await session.start()
    voice = frames(tone(0.4))
    processed: list[float] = []  # loop time once each frame was handled
    for frame in voice + frames(silence(0.8)):
        session.process_audio(frame)
        processed.append(loop.time())
        await asyncio.sleep(0.02)
    await wait_for(lambda: turn_at, within=2)
    # The end of speech is the last loud frame, not the last frame the VAD called speech:
    # that one came `hangover` frames of audio later, and nothing of it is counted.
    end = telemetry.marks["end_of_speech"]
    last_voice, last_vad = len(voice) - 1, len(voice) - 1 + hangover
    assert processed[last_voice] - 1e-6 <= end <= processed[last_vad] - hangover * 0.02 + 1e-6
    assert turn_at[0] - end >= Config().min_endpointing_delay - 1e-3
    await session.stop()


# ----------------------------------------------------------------------- barge-in


async def test_min_interruption_words_holds_back_vad_only_interruptions() -> None:
    stt = ScriptedSTT(["one two"])
    session, transport, _rec = build(stt=stt, min_interruption_words=2)
    await session.start()
    handle = session.say("A long reply that the caller will talk over.")
    await wait_for(lambda: transport.pending_marks)
    await feed(session, tone(0.7))
    assert not handle.done  # loud enough and long enough, but no words yet
    stt.streams[-1].interim("one")
    await asyncio.sleep(0.05)
    assert not handle.done
    stt.streams[-1].interim("one two")
    await wait_for(lambda: handle.done)
    assert handle.interrupted and ("clear", None) in transport.sent
    await session.stop()


async def test_false_interruption_resumes_the_unplayed_part() -> None:
    session, transport, rec = build(
        stt=ScriptedSTT([""]), tts=ToneTTS(0.02), false_interruption_timeout=0.5
    )
    await session.start()
    handle = session.say("You hear this. Then this was cut off. And this too.")
    await wait_for(lambda: len(transport.pending_marks) == 3)
    session.handle_playout(transport.pending_marks.pop(0), True)
    await feed(session, tone(0.6) + silence(0.4))  # a cough: speech, but no words
    await wait_for(lambda: handle.done)
    assert handle.interrupted and handle.heard_text == "You hear this."
    await wait_for(lambda: rec.kinds("false_interruption"), within=3)
    assert rec.kinds("false_interruption")[0]["resumed_text"] == (
        "Then this was cut off. And this too."
    )
    await wait_for(lambda: len(transport.pending_marks) == 2)
    transport.play_all()
    await wait_for(lambda: session.metrics.false_interruptions == 1)
    finished = rec.kinds("reply_finished")
    assert finished[-1]["heard_text"] == "Then this was cut off. And this too."
    await session.stop()


async def test_an_interruption_with_words_is_not_resumed() -> None:
    session, transport, rec = build(
        stt=ScriptedSTT(["wait a moment"]), tts=ToneTTS(0.02), false_interruption_timeout=0.3
    )
    await session.start()
    handle = session.say("First part. Second part.")
    await wait_for(lambda: transport.pending_marks)
    await feed(session, tone(0.6) + silence(0.8))
    await wait_for(lambda: handle.done and rec.kinds("user_turn"))
    await asyncio.sleep(0.5)
    assert rec.kinds("false_interruption") == []
    assert rec.contexts[-1][1] == "wait a moment"
    await session.stop()


# ------------------------------------------------------------- preemptive generation


async def test_preemptive_generation_is_used_when_the_transcript_holds() -> None:
    session, _, rec = build(stt=ScriptedSTT(["Book a table."]), min_endpointing_delay=0.6)
    await session.start()
    await feed(session, tone(0.4) + silence(0.3))
    # The caller paused and the final is in, but the turn is not over yet: the agent runs.
    await wait_for(lambda: rec.contexts, within=2)
    assert rec.kinds("user_turn") == []
    await wait_for(lambda: rec.kinds("agent_text"), within=3)
    assert len(rec.contexts) == 1  # the reply was not generated twice
    assert session.metrics.preemptive_hits == 1 and session.metrics.preemptive_misses == 0
    assert event_kinds(rec).index("preemptive_started") < event_kinds(rec).index("user_turn")
    await session.stop()


async def test_preemptive_reply_is_discarded_when_the_caller_goes_on() -> None:
    session, _, rec = build(stt=ScriptedSTT(["book a table", "for two"]), min_endpointing_delay=0.6)
    await session.start()
    await feed(session, tone(0.4) + silence(0.3))
    await wait_for(lambda: rec.contexts, within=2)
    await feed(session, tone(0.4) + silence(0.9))
    await wait_for(lambda: rec.kinds("agent_text"), within=3)
    assert [t for _, t in rec.contexts] == ["book a table", "book a table for two"]
    assert rec.kinds("agent_text")[0]["text"] == "You said book a table for two."
    assert session.metrics.preemptive_misses == 1
    assert session.metrics.preemptive_hits == 1
    await session.stop()


# ---------------------------------------------------------------- long utterances


async def test_batch_recogniser_gets_chunks_while_the_caller_talks() -> None:
    stt = ClipSTT(["first part", "second part", "third part"])
    session, _, rec = build(stt=stt, max_chunk_duration=1.0)
    await session.start()
    await feed(session, tone(2.5))
    # Still talking: two full chunks are already transcribed.
    assert len(stt.clips) >= 2 and not rec.kinds("user_turn")
    interims = [e["text"] for e in rec.kinds("transcript") if not e["is_final"]]
    assert interims[:2] == ["first part", "first part second part"]
    await feed(session, silence(0.6))
    await wait_for(lambda: rec.kinds("user_turn"), within=2)
    assert rec.kinds("user_turn")[0]["text"] == "first part second part third part"
    await session.stop()


@pytest.mark.parametrize("policy", ["process", "interject"])
async def test_a_turn_longer_than_max_turn_duration_is_cut(policy: str) -> None:
    stt = ScriptedSTT(["this goes on and on", "and on"])
    session, _transport, rec = build(stt=stt, max_turn_duration=1.0, long_turn_policy=policy)
    await session.start()
    await feed(session, tone(1.6))
    await wait_for(lambda: rec.kinds("user_turn"), within=2)
    assert rec.kinds("long_turn") == [{"policy": policy}]
    assert rec.kinds("user_turn")[0]["text"] == "this goes on and on"
    await feed(session, tone(0.8))  # the caller is still talking over the reply
    assert rec.kinds("reply_started")
    interrupted = bool(rec.kinds("interrupted"))
    assert interrupted is (policy == "process")
    await session.stop()


# ------------------------------------------------------------------ error recovery


async def test_dropped_recogniser_stream_is_reopened_and_audio_replayed() -> None:
    stt = ScriptedSTT(["nothing lost"], fail_after_bytes=RATE_BYTES_HALF_SECOND)
    session, _, rec = build(stt=stt)
    await session.start()
    await feed(session, tone(0.8) + silence(0.5))
    await wait_for(lambda: rec.kinds("user_turn"), within=3)
    assert rec.kinds("user_turn")[0]["text"] == "nothing lost"
    assert len(stt.streams) == 2
    # The new stream got every byte of the segment, the part sent before the drop included.
    assert stt.streams[1].received >= stt.streams[0].received
    assert session.metrics.stt_reconnects == 1 and rec.kinds("stt_reconnected")
    assert rec.kinds("error")[0]["code"] == "network_error"
    await session.stop()


RATE_BYTES_HALF_SECOND = 8000


async def test_fallback_tts_speaks_when_the_first_provider_fails() -> None:
    broken = ToneTTS(fail_times=100)
    broken.name = "broken"
    working = ToneTTS()
    session, transport, _ = build(tts=FallbackTTS([broken, working]), max_retries=0)
    await session.start()
    handle = session.say("Still heard.")
    await wait_for(lambda: transport.pending_marks)
    transport.play_all()
    await asyncio.wait_for(handle.wait_for_playout(), 2)
    assert handle.heard_text == "Still heard." and working.calls == ["Still heard."]
    await session.stop()


async def test_when_every_attempt_fails_the_session_can_end_with_a_typed_error() -> None:
    async def broken(ctx: AgentContext, transcript: str) -> str:
        raise TimeoutError("model did not answer")

    session, transport, rec = build(
        stt=ScriptedSTT(["hello"]), agent=broken, on_provider_failure="end", max_retries=1
    )
    await session.start()
    await feed(session, tone(0.4) + silence(0.5))
    await wait_for(lambda: session.state is S.ENDED, within=3)
    assert session.end_reason == "error"
    assert isinstance(session.error, SessionError)
    assert session.error.code is ErrorCode.TIMEOUT
    assert isinstance(session.error.__cause__, TimeoutError)
    assert {e["source"] for e in rec.kinds("error")} == {"agent"}
    assert transport.closed and rec.kinds("agent_text") == []


# -------------------------------------------------------------- timeout, keep-alive


async def test_keep_alive_reaches_providers_and_transport_and_beats() -> None:
    stt = ScriptedSTT([])
    session, transport, rec = build(stt=stt, keep_alive_interval=0.2)
    await session.start()
    await wait_for(lambda: len(rec.kinds("keep_alive")) >= 2, within=3)
    assert stt.streams[0].keep_alives >= 2 and transport.keep_alives >= 2
    await session.stop()


async def test_timeout_ends_with_a_timeout_error() -> None:
    session, _, _ = build(timeout=1.0, keep_alive_interval=0.2)
    await session.start()
    await wait_for(lambda: session.state is S.ENDED, within=4)
    assert session.end_reason == "timeout" and session.error is not None
    assert session.error.code is ErrorCode.TIMEOUT


async def test_auto_start_starts_inside_a_running_loop_only() -> None:
    session, _, _ = build(auto_start=True)
    await wait_for(lambda: session.state is S.LISTENING)
    await session.stop()


def test_auto_start_outside_a_loop_is_a_config_error() -> None:
    with pytest.raises(SessionError) as info:
        build(auto_start=True)
    assert info.value.code is ErrorCode.INVALID_CONFIG


# ---------------------------------------------------------------------- isolation


async def test_a_hundred_sessions_in_one_process_do_not_interfere() -> None:
    sessions = [build(stt=ScriptedSTT([f"caller number {i}"])) for i in range(100)]
    for session, _, _ in sessions:
        await session.start()

    async def one_call(session: VoiceSession, transport: MemoryTransport) -> None:
        await feed(session, tone(0.4) + silence(0.5))
        await wait_for(lambda: transport.pending_marks, within=10)
        transport.play_all()

    await asyncio.gather(*(one_call(s, t) for s, t, _ in sessions))
    for i, (session, _, rec) in enumerate(sessions):
        await wait_for(lambda rec=rec: rec.kinds("reply_finished"), within=10)
        assert [t for _, t in rec.contexts] == [f"caller number {i}"]
        assert [m.text for m in session.history] == [
            f"caller number {i}",
            f"You said caller number {i}.",
        ]
    await asyncio.gather(*(s.stop() for s, _, _ in sessions))
    assert all(s.state is S.ENDED for s, _, _ in sessions)


# ------------------------------------------------------------------- observability


async def test_a_turn_is_measured_and_traced(otel: Otel) -> None:
    telemetry = SessionTelemetry(
        otel.meter_provider, otel.tracer_provider, clock=asyncio.get_running_loop().time
    )
    session, transport, _ = build(stt=ScriptedSTT(["hello"]), preemptive_generation=False)
    session.telemetry = telemetry
    await session.start()
    await feed(session, tone(0.4) + silence(0.5))
    await wait_for(lambda: transport.pending_marks, within=3)
    transport.play_all()
    await wait_for(lambda: session.state is S.LISTENING)
    await session.stop("hangup")
    assert otel.value("session.sessions.total") == 1
    assert otel.value("session.sessions.active") == 0
    assert otel.value("session.audio.processed") == 45  # 0.9 s of 20 ms frames
    assert otel.value("session.responses.generated") == 1
    latencies = otel.latencies()
    for operation in (
        "end_of_speech_to_final_transcript",
        "end_of_speech_to_first_agent_text",
        "end_of_speech_to_first_audio",
        "agent",
        "tts",
    ):
        assert latencies[operation].count == 1, operation
    session_span = otel.one("voice.session")
    turn_span = otel.one("voice.turn")
    assert turn_span.parent is not None
    assert turn_span.parent.span_id == session_span.context.span_id
    assert session_span.attributes["session.id"] == session.session_id
    for name in ("voice.provider.agent", "voice.provider.tts"):
        span = otel.finished(name)[0]
        assert span.parent is not None and span.parent.span_id == turn_span.context.span_id
