"""The voice session engine: turn-taking, replies, barge-in and playout for one call.

Audio arrives through `process_audio` (synchronous, called once per transport frame, cheap),
is classified by the VAD, and, while the caller speaks, streamed to the recogniser. When the
caller has been silent for the endpointing delay and the final transcript is in, the turn is
committed and the agent's streamed reply is split into sentences, synthesised and sent to the
transport with a playout mark after each sentence. The transport's marks are the only clock
for what the caller has heard.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from session.audio import SAMPLE_WIDTH, StreamingResampler, audioop
from session.chunking import ChunkedSTTStream
from session.config import Config
from session.errors import ErrorCode, ProviderError, SessionError, classify
from session.interfaces import (
    STT,
    TTS,
    VAD,
    Agent,
    AgentContext,
    ChatMessage,
    NoiseFilter,
    STTStream,
    TranscriptEvent,
    Transport,
    TurnDetector,
)
from session.preemptive import PreemptiveReply
from session.speech import SayHandle, Segment
from session.speech_tracker import SpeechEdge, SpeechTracker
from session.state import SessionState, check_transition
from session.stt_replay import ReplayLog
from session.tasks import forget_cancellation, reap
from session.telemetry import SessionTelemetry
from session.text import SentenceSplitter, normalise_transcript

log = logging.getLogger(__name__)

S = SessionState
StateCallback = Callable[[SessionState, SessionState], Any]
TextSource = Callable[[], AsyncIterator[str]]
_INACTIVE = (S.INITIAL, S.STARTING, S.PAUSED, S.ENDED)


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """Something observable happened; `kind` is stable, `data` is JSON-serialisable."""

    kind: str
    data: dict[str, Any]
    time: float


EventCallback = Callable[[SessionEvent], Any]


@dataclass(slots=True)
class SessionMetrics:
    turns: int = 0
    replies: int = 0
    interruptions: int = 0
    false_interruptions: int = 0
    preemptive_hits: int = 0
    preemptive_misses: int = 0
    long_turns: int = 0
    agent_failures: int = 0
    tts_failures: int = 0
    stt_reconnects: int = 0
    stt_replayed_bytes: int = 0
    reply_latencies: deque[float] = field(default_factory=lambda: deque(maxlen=100))


@dataclass(slots=True)
class _Queued:
    handle: SayHandle
    source: TextSource
    turn_end: float | None = None


class _FixedTurnDetector:
    def endpointing_delay(self, transcript: str, min_delay: float, max_delay: float) -> float:
        return min_delay


class VoiceSession:
    def __init__(
        self,
        *,
        transport: Transport,
        stt: STT,
        tts: TTS,
        vad: VAD,
        agent: Agent,
        turn_detector: TurnDetector | None = None,
        noise_filter: NoiseFilter | None = None,
        config: Config | None = None,
        metadata: dict[str, str] | None = None,
        on_state_changed: StateCallback | None = None,
        on_event: EventCallback | None = None,
        telemetry: SessionTelemetry | None = None,
    ) -> None:
        self.config = cfg = config or Config()
        self.session_id = cfg.session_id
        self.metadata = dict(metadata or {})
        self.metrics = SessionMetrics()
        self.history: list[ChatMessage] = []
        self.end_reason: str | None = None
        self.error: SessionError | None = None
        self._transport = transport
        self._stt = stt
        self._tts = tts
        self._vad = vad
        self._agent = agent
        self._turn_detector = turn_detector or _FixedTurnDetector()
        self._noise_filter = noise_filter
        self._state = S.INITIAL
        self._state_callbacks: list[StateCallback] = [on_state_changed] if on_state_changed else []
        self._event_callbacks: list[EventCallback] = [on_event] if on_event else []
        self._loop: asyncio.AbstractEventLoop | None = None
        # A module function, not the bound `self._now`: a reference back to the session from
        # its telemetry would leave every ended call for the cyclic collector to free.
        self.telemetry = telemetry or SessionTelemetry(clock=_loop_time)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping: asyncio.Future[None] | None = None

        rate = transport.sample_rate
        self._rate = rate
        self._to_vad = StreamingResampler(rate, vad.sample_rate)
        self._to_stt = StreamingResampler(rate, stt.sample_rate)
        self._nf_in = StreamingResampler(rate, noise_filter.sample_rate) if noise_filter else None
        self._nf_out = StreamingResampler(noise_filter.sample_rate, rate) if noise_filter else None
        self._frame_bytes = vad.frame_bytes
        self._vad_buffer = bytearray()
        self._speech = SpeechTracker(
            vad.frame_bytes / (2 * vad.sample_rate), cfg.min_speech_duration, cfg.speech_end_silence
        )
        self._last_voiced_at = 0.0
        self._pre_roll: deque[bytes] = deque()
        self._pre_roll_bytes = 0
        self._pre_roll_limit = int(cfg.pre_roll * rate) * 2

        # Recognition.
        self._stt_stream: STTStream | None = None
        self._replay = ReplayLog(int(cfg.stt_replay_seconds * stt.sample_rate) * 2)

        # Turn assembly.
        self._turn_text: list[str] = []
        self._interim = ""
        self._last_final_at = 0.0
        self._pending_finals = 0
        self._finals_deadline: asyncio.TimerHandle | None = None
        self._endpoint_timer: asyncio.TimerHandle | None = None
        self._turn_started_at: float | None = None
        self._forced_commit: str | None = None  # long-turn policy waiting for its final
        self._dtmf_digits = ""
        self._dtmf_timer: asyncio.TimerHandle | None = None
        self._preemptive: PreemptiveReply | None = None

        # Speech output.
        self._queue: deque[_Queued] = deque()
        self._queue_wakeup = asyncio.Event()
        self._current: SayHandle | None = None
        self._current_task: asyncio.Task[None] | None = None
        self._marks: dict[str, tuple[SayHandle, Segment]] = {}
        self._resume_timer: asyncio.TimerHandle | None = None
        self._resume_text = ""
        self._last_activity = time.monotonic()

        if cfg.auto_start:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise SessionError(
                    ErrorCode.INVALID_CONFIG,
                    "Config.auto_start needs the session to be created inside a running loop",
                ) from None
            self._auto_start = loop.create_task(self.start())

    # ----------------------------------------------------------------- public API

    @property
    def state(self) -> SessionState:
        return self._state

    def on_state_changed(self, callback: StateCallback) -> None:
        self._state_callbacks.append(callback)

    def on_event(self, callback: EventCallback) -> None:
        self._event_callbacks.append(callback)

    async def start(self) -> None:
        if self._state is not S.INITIAL:
            code = ErrorCode.SESSION_NOT_ACTIVE if self._state is S.ENDED else None
            raise SessionError(
                code or ErrorCode.SESSION_ALREADY_ACTIVE,
                f"session {self.session_id} cannot start: it is {self._state.value}",
            )
        self._set_state(S.STARTING)
        self._loop = asyncio.get_running_loop()
        attributes = {f"call.{k}": v for k, v in self.metadata.items() if v}
        self.telemetry.session_started(self.session_id, attributes)
        try:
            self._stt_stream = await self._with_retries(
                self._open_stt_stream, ErrorCode.STT_FAILED, "opening the recogniser"
            )
        except SessionError as exc:
            self._report_error(exc, "stt")
            self.error = exc
            self.end_reason = "error"
            self._set_state(S.ENDED)
            self._emit("ended", reason="error")
            self.telemetry.session_ended("error")
            raise
        self._spawn(self._stt_loop(), "stt")
        self._spawn(self._speech_loop(), "speech")
        self._spawn(self._watchdog(), "watchdog")
        self._touch()
        self._set_state(S.LISTENING)

    async def stop(self, reason: str = "stopped") -> None:
        """Ends the session; every caller waits until its tasks are gone and providers closed."""
        if self._stopping is None:
            if self._state is S.ENDED:
                return
            self._stopping = asyncio.ensure_future(self._shutdown(reason))
        await asyncio.shield(self._stopping)

    def say(self, text: str, allow_interruptions: bool = True) -> SayHandle:
        """Queues `text` to be spoken; the handle resolves once the caller has heard it."""
        if self._state in (S.INITIAL, S.ENDED):
            raise SessionError(
                ErrorCode.SESSION_NOT_ACTIVE,
                f"cannot say() while the session is {self._state.value}",
            )

        async def source() -> AsyncIterator[str]:
            yield text

        return self._enqueue(source, allow_interruptions=allow_interruptions, kind="say")

    def pause(self) -> None:
        """Stops listening and speaking until `resume()`; the current speech is interrupted."""
        self._set_state(S.PAUSED)
        self._reset_input()
        self._cancel_resume()
        if self._current and not self._current.done:
            self._interrupt(self._current, "paused")

    def resume(self) -> None:
        if self._state is not S.PAUSED:
            raise SessionError(ErrorCode.INVALID_STATE, f"cannot resume while {self._state.value}")
        self._set_state(S.LISTENING)
        self._touch()
        self._queue_wakeup.set()

    # ------------------------------------------------------- transport listener API

    def process_audio(self, pcm: bytes) -> None:
        """One chunk of caller audio at the transport's rate. Never blocks."""
        if self._state in _INACTIVE:
            return
        self.telemetry.audio_processed()
        if self._noise_filter is not None:
            assert self._nf_in is not None and self._nf_out is not None
            pcm = self._nf_out.process(self._noise_filter.process(self._nf_in.process(pcm)))
        vad_pcm = self._to_vad.process(pcm)
        fb = self._frame_bytes
        buf = self._vad_buffer
        was_in_speech = self._speech.in_speech
        if not buf and len(vad_pcm) == fb:
            self._on_frame(vad_pcm)
        else:
            buf += vad_pcm
            while len(buf) >= fb:
                frame = bytes(buf[:fb])
                del buf[:fb]
                self._on_frame(frame)
        in_speech = self._speech.in_speech
        if in_speech or was_in_speech:
            if in_speech and not was_in_speech:
                for chunk in self._pre_roll:
                    self._push_stt(chunk)
                self._pre_roll.clear()
                self._pre_roll_bytes = 0
            self._push_stt(pcm)
            if was_in_speech and not in_speech:
                self._end_of_speech()
        else:
            self._pre_roll.append(pcm)
            self._pre_roll_bytes += len(pcm)
            while self._pre_roll_bytes > self._pre_roll_limit and self._pre_roll:
                self._pre_roll_bytes -= len(self._pre_roll.popleft())

    def handle_dtmf(self, digit: str) -> None:
        if self._state in _INACTIVE:
            return
        self._touch()
        self._cancel_resume()
        self._emit("dtmf", digit=digit)
        if self._current and self._current.allow_interruptions and not self._current.done:
            self._interrupt(self._current, "dtmf")
        if digit == "#":
            self._commit_dtmf()
            return
        self._dtmf_digits += digit
        if self._dtmf_timer:
            self._dtmf_timer.cancel()
        assert self._loop is not None
        self._dtmf_timer = self._loop.call_later(self.config.dtmf_turn_timeout, self._commit_dtmf)

    def handle_playout(self, name: str, played: bool) -> None:
        owner = self._marks.pop(name, None)
        if owner is None:
            log.debug("playout mark %s belongs to no live speech", name)
            return
        handle, segment = owner
        segment.settled = True
        segment.played = played
        if played:
            self._touch()
        if not handle.done and handle.all_settled():
            self._finish_speech(handle, interrupted=False)

    def handle_transport_closed(self, reason: str) -> None:
        if self._state is not S.ENDED:
            self._spawn(self.stop(reason), "stop")

    # --------------------------------------------------------------- caller input

    def _on_frame(self, frame: bytes) -> None:
        voiced = self._vad.is_speech(frame)
        # The level tells the VAD's hangover from the voice (SpeechTracker.quiet_tail).
        edge = self._speech.update(voiced, audioop.rms(frame, SAMPLE_WIDTH) if voiced else None)
        if edge is SpeechEdge.START:
            self._start_of_speech()
        elif voiced and self._speech.in_speech:
            now = self._now()
            self._last_voiced_at = now - self._speech.quiet_tail
            self._maybe_interrupt()
            if (
                self._turn_started_at is not None
                and self._forced_commit is None
                and now - self._turn_started_at >= self.config.max_turn_duration
            ):
                self._cut_long_turn()
        # SpeechEdge.END is handled once the chunk's audio has reached the recogniser.

    def _start_of_speech(self) -> None:
        now = self._now()
        self._last_voiced_at = now - self._speech.quiet_tail
        if self._turn_started_at is None:
            self._turn_started_at = now
        if self._endpoint_timer:
            self._endpoint_timer.cancel()
            self._endpoint_timer = None
        self._to_stt.reset()
        self._touch()
        self._emit("user_speech_started")
        self._maybe_interrupt()

    def _end_of_speech(self) -> None:
        self._flush_stt()
        self._emit("user_speech_ended", voiced_seconds=round(self._speech.voiced, 3))
        self._check_endpoint()

    def _push_stt(self, pcm: bytes) -> None:
        data = self._to_stt.process(pcm)
        self._replay.audio(data)
        if self._stt_stream is not None:
            self._stt_stream.push_audio(data)

    def _flush_stt(self) -> None:
        self._replay.flush()
        self._pending_finals += 1
        self._arm_finals_deadline()
        if self._stt_stream is not None:
            self._stt_stream.flush()

    def _reset_input(self) -> None:
        self._speech.reset()
        self._turn_text.clear()
        self._interim = ""
        self._turn_started_at = None
        self._vad_buffer.clear()
        if self._endpoint_timer:
            self._endpoint_timer.cancel()
            self._endpoint_timer = None

    def _maybe_interrupt(self) -> None:
        handle = self._current
        if handle is None or handle.done or not handle.allow_interruptions:
            return
        if self._speech.voiced < self.config.min_interruption_duration:
            return
        words = self.config.min_interruption_words
        if words and len((" ".join(self._turn_text) + " " + self._interim).split()) < words:
            return
        self._interrupt(handle, "barge_in")

    def _cut_long_turn(self) -> None:
        """The caller has talked past max_turn_duration: take what was said so far."""
        policy = self.config.long_turn_policy
        self.metrics.long_turns += 1
        self._forced_commit = policy
        self._emit("long_turn", policy=policy)
        self._flush_stt()  # the rest of the speech starts a new recogniser segment
        self._speech.voiced = 0.0  # and only speech after the cut can interrupt the reply

    # ----------------------------------------------------------------- turn taking

    def _on_transcript(self, event: TranscriptEvent) -> None:
        self._emit("transcript", text=event.text, is_final=event.is_final)
        if event.text.strip():
            self._cancel_resume()  # words followed the interruption: it was real
        if not event.is_final:
            self._interim = event.text
            if self._speech.in_speech:
                self._maybe_interrupt()
            return
        self._replay.final_received()
        self._last_final_at = self._now()
        self._interim = ""
        self._pending_finals = max(0, self._pending_finals - 1)
        if self._pending_finals == 0 and self._finals_deadline:
            self._finals_deadline.cancel()
            self._finals_deadline = None
        if event.text.strip():
            self._turn_text.append(event.text.strip())
        self._check_endpoint()

    def _arm_finals_deadline(self) -> None:
        if self._finals_deadline:
            self._finals_deadline.cancel()
        assert self._loop is not None
        self._finals_deadline = self._loop.call_later(
            self.config.final_transcript_timeout, self._finals_overdue
        )

    def _finals_overdue(self) -> None:
        self._finals_deadline = None
        if self._pending_finals:
            self._report_error(
                SessionError(ErrorCode.TIMEOUT, "the recogniser gave no final transcript in time")
            )
            self._pending_finals = 0
            self._check_endpoint()

    def _check_endpoint(self) -> None:
        if self._endpoint_timer:
            self._endpoint_timer.cancel()
            self._endpoint_timer = None
        if self._pending_finals or self._state in (S.ENDED, S.PAUSED):
            return
        text = " ".join(self._turn_text)
        if self._forced_commit is not None:
            policy, self._forced_commit = self._forced_commit, None
            self._take_turn_text()
            if text:
                self._commit_turn(text, "", interruptible=policy != "interject")
            return
        if self._speech.in_speech:
            return
        cfg = self.config
        delay = self._turn_detector.endpointing_delay(
            text, cfg.min_endpointing_delay, cfg.max_endpointing_delay
        )
        due = self._last_voiced_at + delay
        if self._now() < due:
            assert self._loop is not None
            self._endpoint_timer = self._loop.call_at(due, self._check_endpoint)
            if text and cfg.preemptive_generation:
                self._start_preemptive(text)
            return
        self._take_turn_text()
        if text:
            self._commit_turn(text, "")
        else:
            self._drop_preemptive(hit=False)

    def _take_turn_text(self) -> None:
        self._turn_text.clear()
        self._turn_started_at = self._now() if self._speech.in_speech else None

    def _commit_dtmf(self) -> None:
        if self._dtmf_timer:
            self._dtmf_timer.cancel()
            self._dtmf_timer = None
        digits, self._dtmf_digits = self._dtmf_digits, ""
        if digits and self._state not in (S.ENDED, S.PAUSED):
            self._commit_turn("", digits)

    def _context(self, dtmf: str) -> AgentContext:
        return AgentContext(
            session_id=self.session_id,
            metadata=self.metadata,
            history=list(self.history),
            dtmf=dtmf,
        )

    def _start_preemptive(self, text: str) -> None:
        key = normalise_transcript(text)
        if self._preemptive is not None:
            if self._preemptive.key == key:
                return
            self._drop_preemptive(hit=False)
        reply = PreemptiveReply(key, self._context(""))
        reply.task = self._spawn(reply.collect(self._agent_reply(reply.ctx, text)), "preemptive")
        self._preemptive = reply
        self._emit("preemptive_started", text=text)

    def _drop_preemptive(self, *, hit: bool) -> None:
        reply, self._preemptive = self._preemptive, None
        if reply is None:
            return
        if hit:
            self.metrics.preemptive_hits += 1
        else:
            self.metrics.preemptive_misses += 1
            reply.cancel()

    def _commit_turn(self, text: str, dtmf: str, *, interruptible: bool = True) -> None:
        self.metrics.turns += 1
        self._cancel_resume()
        self._emit("user_turn", text=text, dtmf=dtmf)
        tel = self.telemetry
        tel.turn_started(f"{self.session_id}.{self.metrics.turns}")
        if text:
            tel.turn_mark("end_of_speech", self._last_voiced_at)
            tel.turn_mark("final_transcript", self._last_final_at)
        preemptive = self._preemptive
        if text and preemptive is not None and preemptive.key == normalise_transcript(text):
            self._drop_preemptive(hit=True)

            async def source() -> AsyncIterator[str]:
                try:
                    async for piece in preemptive.stream():
                        yield piece
                finally:
                    preemptive.cancel()

        else:
            self._drop_preemptive(hit=False)
            ctx = self._context(dtmf)

            async def source() -> AsyncIterator[str]:
                async for piece in self._agent_reply(ctx, text):
                    yield piece

        self.history.append(ChatMessage("user", text if text else f"[keypad] {dtmf}"))
        # A new turn replaces any reply still waiting in the queue: it answered older input.
        for item in self._queue:
            if item.handle.source in ("reply", "resume"):
                self._finish_speech(item.handle, interrupted=True)
        self._queue = deque(i for i in self._queue if i.handle.source not in ("reply", "resume"))
        turn_end = self._last_voiced_at if text else self._now()
        self._enqueue(source, allow_interruptions=interruptible, kind="reply", turn_end=turn_end)
        if self._state is S.LISTENING:
            self._set_state(S.PROCESSING)

    async def _agent_reply(self, ctx: AgentContext, transcript: str) -> AsyncIterator[str]:
        """Streams the agent's reply; retried while nothing has been produced yet."""
        attempt = 0
        while True:
            produced = False
            call = self.telemetry.start_provider_span("agent", self._agent_name)
            try:
                agent = self._agent
                respond = agent.respond if hasattr(agent, "respond") else agent
                result = respond(ctx, transcript)
                if inspect.isawaitable(result):
                    result = await result
                if isinstance(result, str):
                    result = _once(result)
                async for piece in result:
                    if piece:
                        produced = True
                        yield piece
                call.end()
                return
            except (asyncio.CancelledError, GeneratorExit) as exc:
                call.end(exc)
                raise
            except Exception as exc:
                call.end(exc)
                self.metrics.agent_failures += 1
                error = classify(exc, ErrorCode.AGENT_ERROR)
                self._report_error(error, "agent")
                if produced:
                    return
                if not error.retryable or attempt >= self.config.max_retries:
                    if self._provider_failed(error):
                        yield self.config.apology_text
                    return
                await asyncio.sleep(self._backoff(attempt, error))
                attempt += 1

    # ----------------------------------------------------------------- speech out

    def _enqueue(
        self,
        source: TextSource,
        *,
        allow_interruptions: bool,
        kind: str,
        turn_end: float | None = None,
    ) -> SayHandle:
        handle = SayHandle(
            allow_interruptions=allow_interruptions,
            source=kind,
            cancel_hook=self._cancel_handle,
        )
        self._queue.append(_Queued(handle, source, turn_end))
        self._queue_wakeup.set()
        return handle

    def _cancel_handle(self, handle: SayHandle) -> None:
        if handle is self._current:
            self._interrupt(handle, "cancelled")
            return
        self._queue = deque(item for item in self._queue if item.handle is not handle)
        self._finish_speech(handle, interrupted=True)

    async def _speech_loop(self) -> None:
        while True:
            while not self._queue or self._state is S.PAUSED:
                self._queue_wakeup.clear()
                await self._queue_wakeup.wait()
            item = self._queue.popleft()
            handle = item.handle
            if handle.done:
                continue
            self._current = handle
            task = asyncio.create_task(self._play(item))
            self._current_task = task
            # asyncio.wait does not raise when `task` is cancelled by an interruption.
            await asyncio.wait({task})
            forget_cancellation(task)
            if not task.cancelled() and (exc := task.exception()) is not None:
                log.error("speech %s failed", handle.id, exc_info=exc)
                self._report_error(classify(exc, ErrorCode.TRANSPORT_ERROR), "transport")
            self._current_task = None
            self._current = None
            if not handle.done:
                self._finish_speech(handle, interrupted=True)
            if not self._queue and self._state in (S.SPEAKING, S.PROCESSING):
                self._set_state(S.LISTENING)

    async def _play(self, item: _Queued) -> None:
        handle = item.handle
        if handle.source == "reply" and self._state is S.SPEAKING:
            self._set_state(S.PROCESSING)
        sentences: asyncio.Queue[str | None] = asyncio.Queue()

        async def produce() -> None:
            splitter = SentenceSplitter()
            first = handle.source == "reply"
            try:
                async for piece in item.source():
                    if first:
                        first = False
                        self.telemetry.turn_mark("first_agent_text", self._now())
                    for sentence in splitter.push(piece):
                        handle.pending.append(sentence)
                        sentences.put_nowait(sentence)
                for sentence in splitter.flush():
                    handle.pending.append(sentence)
                    sentences.put_nowait(sentence)
            finally:
                sentences.put_nowait(None)

        async def speak() -> None:
            resampler = StreamingResampler(self._tts.sample_rate, self._rate)
            while (sentence := await sentences.get()) is not None:
                sent_audio = await self._speak_sentence(handle, sentence, resampler, item.turn_end)
                handle.pending.popleft()
                if not sent_audio:
                    continue
                segment = Segment(mark=f"{handle.id}.{len(handle.segments)}", text=sentence)
                handle.segments.append(segment)
                self._marks[segment.mark] = (handle, segment)
                self._emit("agent_text", text=sentence, speech_id=handle.id)
                await self._transport.mark(segment.mark)

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(produce())
                group.create_task(speak())
            handle.generation_done = True
            if handle.all_settled():
                self._finish_speech(handle, interrupted=False)
            await handle.wait_for_playout()
        except asyncio.CancelledError:
            if handle.audio_started and self._state is not S.ENDED:
                await self._transport.clear()
            raise

    async def _speak_sentence(
        self,
        handle: SayHandle,
        sentence: str,
        resampler: StreamingResampler,
        turn_end: float | None,
    ) -> bool:
        """Synthesises one sentence straight to the transport; True if audio was sent."""
        attempt = 0
        while True:
            sent = False
            call = self.telemetry.start_provider_span("tts", self._tts.name)
            try:
                async for chunk in self._tts.synthesize(sentence):
                    pcm = resampler.process(chunk)
                    if not pcm:
                        continue
                    if not handle.audio_started:
                        handle.audio_started = True
                        self._on_first_audio(handle, turn_end)
                    await self._transport.send_audio(pcm)
                    sent = True
                    self._touch()
                call.end()
                return sent
            except asyncio.CancelledError as exc:
                call.end(exc)
                raise
            except Exception as exc:
                call.end(exc)
                self.metrics.tts_failures += 1
                error = classify(exc, ErrorCode.PROVIDER_ERROR)
                self._report_error(error, "tts")
                # Resending a half-spoken sentence would repeat words: skip the rest.
                if sent:
                    return sent
                if not error.retryable or attempt >= self.config.max_retries:
                    self._provider_failed(error)
                    return False
                await asyncio.sleep(self._backoff(attempt, error))
                attempt += 1

    def _on_first_audio(self, handle: SayHandle, turn_end: float | None) -> None:
        if self._state in (S.LISTENING, S.PROCESSING):
            self._set_state(S.SPEAKING)
        data: dict[str, Any] = {"speech_id": handle.id, "source": handle.source}
        if handle.source == "reply":
            self.telemetry.turn_mark("first_audio_out", self._now())
        if turn_end is not None:
            latency = self._now() - turn_end
            self.metrics.reply_latencies.append(latency)
            data["latency"] = round(latency, 4)
        self._emit("reply_started", **data)

    def _interrupt(self, handle: SayHandle, reason: str) -> None:
        if handle.done:
            return
        self.metrics.interruptions += 1
        self._emit("interrupted", speech_id=handle.id, reason=reason)
        unplayed = [s.text for s in handle.segments if not s.played] + list(handle.pending)
        self._finish_speech(handle, interrupted=True)
        if handle is self._current and self._current_task is not None:
            self._current_task.cancel()
        if self._state is S.SPEAKING and not self._queue:
            self._set_state(S.LISTENING)
        if reason == "barge_in" and unplayed and self.config.false_interruption_timeout > 0:
            self._arm_resume(" ".join(unplayed))

    # A barge-in that no words follow (a cough, a door) was not meant: say the rest.

    def _arm_resume(self, text: str) -> None:
        self._cancel_resume()
        self._resume_text = text
        assert self._loop is not None
        self._resume_timer = self._loop.call_later(
            self.config.false_interruption_timeout, self._resume_if_false
        )

    def _cancel_resume(self) -> None:
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None

    def _resume_if_false(self) -> None:
        self._resume_timer = None
        if self._state in _INACTIVE:
            return
        if self._speech.in_speech or self._pending_finals:
            # Still listening to the interruption: decide once its transcript is in.
            assert self._loop is not None
            self._resume_timer = self._loop.call_later(0.2, self._resume_if_false)
            return
        if self._turn_text or self._current is not None or self._queue:
            return
        text = self._resume_text
        self.metrics.false_interruptions += 1
        self._emit("false_interruption", resumed_text=text)

        async def source() -> AsyncIterator[str]:
            yield text

        self._enqueue(source, allow_interruptions=True, kind="resume")

    def _finish_speech(self, handle: SayHandle, *, interrupted: bool) -> None:
        if handle.done:
            return
        handle._finish(interrupted=interrupted)
        if handle.source == "reply":
            self.metrics.replies += 1
            self.telemetry.response_generated()
            self.telemetry.turn_ended(interrupted)
        heard = handle.heard_text
        if heard:
            self.history.append(ChatMessage("assistant", heard))
        self._emit(
            "reply_finished",
            speech_id=handle.id,
            interrupted=interrupted,
            heard_text=heard,
            text=handle.text,
        )

    # ---------------------------------------------------------------- recogniser

    async def _open_stt_stream(self) -> STTStream:
        if getattr(self._stt, "streaming", True) is False:
            return ChunkedSTTStream(self._stt, self.config.max_chunk_duration)  # type: ignore[arg-type]
        with self.telemetry.provider_call("stt", self._stt.name):
            return await self._stt.open_stream()

    async def _stt_loop(self) -> None:
        failures = 0
        while True:
            stream = self._stt_stream
            try:
                if stream is None:
                    stream = await self._open_stt_stream()
                    self._stt_stream = stream
                    self.metrics.stt_reconnects += 1
                    self.metrics.stt_replayed_bytes += self._replay.replay(stream)
                    self._emit("stt_reconnected", replayed_bytes=self._replay.pending_bytes)
                async for event in stream:
                    failures = 0
                    self._on_transcript(event)
                if self._state is S.ENDED:
                    return
                raise ProviderError(
                    ErrorCode.STT_FAILED, self._stt.name, "the stream ended unexpectedly"
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                error = classify(exc, ErrorCode.PROVIDER_ERROR)
                self._report_error(error, "stt")
                # Audio keeps arriving meanwhile: it goes to the replay log only.
                self._stt_stream = None
                if stream is not None:
                    await self._close_quietly(stream)
                if not error.retryable or failures > self.config.max_retries:
                    if not self._provider_failed(error):
                        return
                    failures = 0  # keep listening: try again, with the longest backoff
                    await asyncio.sleep(self._backoff(self.config.max_retries, error))
                    continue
                await asyncio.sleep(self._backoff(failures - 1, error))

    async def _close_quietly(self, stream: STTStream) -> None:
        try:
            await stream.aclose()
        except Exception:
            log.debug("closing a failed recogniser stream raised", exc_info=True)

    # ------------------------------------------------------------------ plumbing

    def _provider_failed(self, error: SessionError) -> bool:
        """Retries are spent. True: carry on (apologise); False: the session is ending."""
        if self.config.on_provider_failure == "end":
            self.error = error
            if self._state is not S.ENDED:
                self._spawn(self.stop("error"), "stop")
            return False
        return True

    async def _shutdown(self, reason: str) -> None:
        self.end_reason = reason
        self._set_state(S.ENDED)
        for timer in (
            self._endpoint_timer,
            self._dtmf_timer,
            self._finals_deadline,
            self._resume_timer,
        ):
            if timer:
                timer.cancel()
        for item in self._queue:
            self._finish_speech(item.handle, interrupted=True)
        self._queue.clear()
        tasks = list(self._tasks)
        if self._current_task:
            tasks.append(self._current_task)
        for task in tasks:
            task.cancel()
        await reap(*tasks)
        if self._current and not self._current.done:
            self._finish_speech(self._current, interrupted=True)
        if self._stt_stream is not None:
            try:
                await self._stt_stream.aclose()
            except Exception:
                log.exception("closing the recogniser stream failed")
        try:
            await self._transport.close()
        except Exception:
            log.exception("closing the transport failed")
        self._emit("ended", reason=reason)
        self.telemetry.session_ended(reason)
        # Let go of what the ended call no longer needs, so that it is freed by reference
        # counting rather than by a full collection.
        self._current_task = None
        self._current = None
        self._marks.clear()

    async def _watchdog(self) -> None:
        cfg = self.config
        tick = min(1.0, cfg.keep_alive_interval)
        next_keep_alive = time.monotonic() + cfg.keep_alive_interval
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if self._current is None and now - self._last_activity > cfg.timeout:
                self.error = SessionError(
                    ErrorCode.TIMEOUT, f"no activity for {cfg.timeout:g} s", retryable=False
                )
                await self.stop("timeout")
                return
            if cfg.enable_keep_alive and now >= next_keep_alive:
                next_keep_alive = now + cfg.keep_alive_interval
                await self._keep_alive()

    async def _keep_alive(self) -> None:
        """Providers and the transport that idle out get a keep-alive; observers a beat."""
        parts = (self._stt_stream, self._tts, self._agent, self._transport)
        for part in parts:
            keep_alive = getattr(part, "keep_alive", None)
            if keep_alive is None:
                continue
            try:
                result = keep_alive()
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                log.warning("keep-alive of %s failed: %s", type(part).__name__, exc)
        self._emit("keep_alive")

    async def _with_retries(self, call: Callable[[], Any], code: ErrorCode, what: str) -> Any:
        attempt = 0
        while True:
            try:
                return await call()
            except Exception as exc:
                error = classify(exc, code)
                if not error.retryable or attempt >= self.config.max_retries:
                    if error is exc:
                        raise
                    raise SessionError(
                        error.code, f"{what}: {error.message}", retryable=error.retryable
                    ) from exc
                await asyncio.sleep(self._backoff(attempt, error))
                attempt += 1

    def _backoff(self, attempt: int, error: SessionError) -> float:
        delay = self.config.retry_delay * (2**attempt)
        return max(delay, error.retry_after or 0.0)

    def _report_error(self, error: SessionError, source: str = "session") -> None:
        self.telemetry.error(error.code.value)
        self._emit(
            "error",
            code=error.code.value,
            message=error.message,
            source=source,
            retryable=error.retryable,
        )

    def _set_state(self, new: SessionState) -> None:
        old = self._state
        if old is new:
            return
        check_transition(old, new)
        self._state = new
        self._emit("state", old=old.value, new=new.value)
        for callback in list(self._state_callbacks):
            try:
                result = callback(old, new)
                if inspect.isawaitable(result):
                    self._spawn(result, "state-callback")
            except Exception:
                log.exception("state callback failed (%s -> %s)", old, new)

    def _emit(self, kind: str, **data: Any) -> None:
        if not self._event_callbacks:
            return
        event = SessionEvent(kind, data, time.time())
        for callback in self._event_callbacks:
            try:
                callback(event)
            except Exception:
                log.exception("event callback failed for %s", kind)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(f"{self.session_id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        forget_cancellation(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("session task %s failed", task.get_name(), exc_info=task.exception())

    def _touch(self) -> None:
        self._last_activity = time.monotonic()

    def _now(self) -> float:
        return self._loop.time() if self._loop else time.monotonic()

    @property
    def _agent_name(self) -> str:
        return str(getattr(self._agent, "name", None) or getattr(self._agent, "__name__", "agent"))


def _loop_time() -> float:
    """The running loop's clock (the engine's), as `_now` reads it."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


async def _once(text: str) -> AsyncIterator[str]:
    yield text
