"""OpenTelemetry metrics and spans for one voice session.

The engine owns one `SessionTelemetry` per call and tells it what happened; this module turns
that into the metrics and spans the gateway exports. Only `opentelemetry-api` is used here: with
no SDK configured the API's no-op providers make every call close to free, and the gateway
decides whether and where anything is exported.

Metrics (meter "voice_gateway.session"):

    session.sessions.total      counter         sessions started
    session.sessions.active     up-down counter sessions running now
    session.audio.processed     counter         caller audio chunks, batched (see below)
    session.responses.generated counter         agent replies
    session.errors.total        counter         by `code`
    session.latency             histogram, s    by `operation`

Spans (tracer "voice_gateway.session"): "voice.session" for the call, "voice.turn" for each
turn under it, "voice.provider.{stt,tts,agent}" for each provider call under the open turn (or
the session when no turn is open). Parents are passed explicitly, never attached to the
ambient context: the engine's work hops between tasks and async generators, and a context
attached in one and detached in another breaks.

Not thread-safe: like the engine, one session's telemetry lives on one event loop.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

INSTRUMENTATION_NAME = "voice_gateway.session"

# The counter is fed once per this many frames: a 20 ms frame arrives 50 times a second per
# call, and an SDK `Counter.add` costs microseconds, far more than the frame budget allows.
AUDIO_BATCH = 50

PROVIDER_KINDS = frozenset({"stt", "tts", "agent"})
TURN_MARKS = ("end_of_speech", "final_transcript", "first_agent_text", "first_audio_out")

# Marks measured from the end of the caller's speech, and the `operation` each is recorded as.
_FROM_END_OF_SPEECH = {
    "final_transcript": "end_of_speech_to_final_transcript",
    "first_agent_text": "end_of_speech_to_first_agent_text",
    "first_audio_out": "end_of_speech_to_first_audio",
}

# Seconds. The SDK's default buckets (0, 5, 10, 25 ...) are shaped for milliseconds and would
# put every conversational latency into the first bucket; these are dense where voice lives.
LATENCY_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8,
    1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Instruments:
    sessions_total: metrics.Counter
    sessions_active: metrics.UpDownCounter
    audio_processed: metrics.Counter
    responses_generated: metrics.Counter
    errors_total: metrics.Counter
    latency: metrics.Histogram


def _create_instruments(provider: metrics.MeterProvider) -> _Instruments:
    meter = provider.get_meter(INSTRUMENTATION_NAME)
    try:
        latency = meter.create_histogram(
            "session.latency",
            unit="s",
            description="Voice pipeline latencies, by operation",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )
    except TypeError:
        # opentelemetry-api before the bucket advisory; an SDK View can still set buckets.
        latency = meter.create_histogram(
            "session.latency", unit="s", description="Voice pipeline latencies, by operation"
        )
    return _Instruments(
        sessions_total=meter.create_counter(
            "session.sessions.total", unit="{session}", description="Sessions started"
        ),
        sessions_active=meter.create_up_down_counter(
            "session.sessions.active", unit="{session}", description="Sessions running now"
        ),
        audio_processed=meter.create_counter(
            "session.audio.processed", unit="{chunk}", description="Caller audio chunks processed"
        ),
        responses_generated=meter.create_counter(
            "session.responses.generated", unit="{response}", description="Agent replies"
        ),
        errors_total=meter.create_counter(
            "session.errors.total", unit="{error}", description="Session errors, by code"
        ),
        latency=latency,
    )


K = TypeVar("K")
V = TypeVar("V")

# Keyed weakly by provider: instruments are made once per meter provider (SDK meters keep
# them anyway, and a test's throwaway provider must not be kept alive by this module).
_instruments_by_provider: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()
_tracer_by_provider: weakref.WeakKeyDictionary[Any, trace.Tracer] = weakref.WeakKeyDictionary()


def _cached(cache: weakref.WeakKeyDictionary[K, V], key: K, make: Callable[[K], V]) -> V:
    try:
        return cache[key]
    except KeyError:
        value = cache[key] = make(key)
        return value
    except TypeError:  # a provider that cannot be weakly referenced: just don't cache
        return make(key)


class ProviderCall:
    """One open provider span; `end()` closes it, and only the first call counts.

    Ending with an `Exception` marks the span as failed. Ending with any other
    `BaseException` (cancellation, `GeneratorExit` from an abandoned stream) means the session
    stopped waiting, typically a barge-in: the span is marked cancelled, not failed, and no
    latency is recorded because the provider never got to finish.
    """

    __slots__ = ("_ended", "_kind", "_owner", "_span", "_started")

    def __init__(self, owner: SessionTelemetry, kind: str, span: Span) -> None:
        self._owner = owner
        self._kind = kind
        self._span = span
        self._started = time.perf_counter()
        self._ended = False

    @property
    def span(self) -> Span:
        return self._span

    @property
    def context(self) -> Context:
        """A context carrying this span, for a provider that wants to parent its own spans."""
        return trace.set_span_in_context(self._span)

    def end(self, error: BaseException | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        self._owner._open_calls.discard(self)
        span = self._span
        if error is None or isinstance(error, Exception):
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            # Failed calls count too: a timeout is time the caller spent waiting.
            self._owner.latency(self._kind, time.perf_counter() - self._started)
        else:
            span.set_attribute("provider.cancelled", True)
        span.end()


class SessionTelemetry:
    """Metrics and spans of one session. Cheap to create; a no-op without an OTel SDK.

    `meter_provider` / `tracer_provider` default to the global ones; tests pass their own so
    they need not fight the set-once global. `clock` must be the clock of the `at` times given
    to `turn_mark` (the engine's loop clock); it places turn events on the span timeline.
    """

    __slots__ = (
        "_active",
        "_audio_counter",
        "_audio_pending",
        "_clock",
        "_ended",
        "_instruments",
        "_marked",
        "_open_calls",
        "_session_ctx",
        "_session_span",
        "_speech_end_at",
        "_tracer",
        "_turn_ctx",
        "_turn_span",
        "session_id",
    )

    def __init__(
        self,
        meter_provider: metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if meter_provider is None:
            meter_provider = metrics.get_meter_provider()
        if tracer_provider is None:
            tracer_provider = trace.get_tracer_provider()
        self._instruments = _cached(_instruments_by_provider, meter_provider, _create_instruments)
        self._tracer = _cached(
            _tracer_by_provider, tracer_provider, lambda p: p.get_tracer(INSTRUMENTATION_NAME)
        )
        self._clock = clock
        # Read on every frame: keep it one attribute lookup away.
        self._audio_counter = self._instruments.audio_processed
        self._audio_pending = 0
        self.session_id: str | None = None
        self._active = False
        self._ended = False
        self._session_span: Span | None = None
        self._session_ctx: Context | None = None
        self._turn_span: Span | None = None
        self._turn_ctx: Context | None = None
        self._speech_end_at: float | None = None
        self._marked: set[str] = set()
        self._open_calls: set[ProviderCall] = set()

    # ------------------------------------------------------------------ session

    def session_started(
        self,
        session_id: str,
        attributes: Mapping[str, str] | None = None,
        *,
        parent: Context | None = None,
    ) -> None:
        """Counts the session and opens its span; later calls are ignored.

        `parent` places the session under a span of the caller's (the webhook request, say);
        without it the ambient context decides, as everywhere in OpenTelemetry.
        """
        if self.session_id is not None:
            return
        self.session_id = session_id
        self._instruments.sessions_total.add(1)
        self._instruments.sessions_active.add(1)
        self._active = True
        span = self._tracer.start_span(
            "voice.session",
            context=parent,
            attributes={**attributes, "session.id": session_id}
            if attributes
            else {"session.id": session_id},
        )
        self._session_span = span
        self._session_ctx = trace.set_span_in_context(span, parent)

    def session_ended(self, reason: str) -> None:
        """Closes everything still open; only the first call counts."""
        if self._ended:
            return
        self._ended = True
        self.flush()
        if self._turn_span is not None:
            self.turn_ended(interrupted=True)
        for call in list(self._open_calls):
            call.end(_SessionEnded())
        if self._active:
            self._active = False
            self._instruments.sessions_active.add(-1)
        span = self._session_span
        if span is not None:
            span.set_attribute("end.reason", reason)
            if reason == "error":
                span.set_status(Status(StatusCode.ERROR, "session ended by an error"))
            span.end()

    @property
    def context(self) -> Context | None:
        """The innermost open span (turn, else session) as a parent context, for others."""
        return self._turn_ctx if self._turn_ctx is not None else self._session_ctx

    # ----------------------------------------------------------------- counters

    def audio_processed(self) -> None:
        """One caller audio chunk. Called per frame: a plain increment, batched to OTel."""
        pending = self._audio_pending + 1
        if pending >= AUDIO_BATCH:
            self._audio_counter.add(pending)
            pending = 0
        self._audio_pending = pending

    def flush(self) -> None:
        """Hands batched audio counts to OTel now (the session end does this by itself)."""
        if self._audio_pending:
            self._audio_counter.add(self._audio_pending)
            self._audio_pending = 0

    def response_generated(self) -> None:
        self._instruments.responses_generated.add(1)

    def error(self, code: str) -> None:
        # str(): an `ErrorCode` is a StrEnum; exporters should see the plain value.
        code = str(code)
        self._instruments.errors_total.add(1, {"code": code})
        span = self._turn_span or self._session_span
        if span is not None and span.is_recording():
            span.add_event("error", {"code": code})

    def latency(self, operation: str, seconds: float) -> None:
        self._instruments.latency.record(seconds, {"operation": operation})

    # -------------------------------------------------------------------- turns

    def turn_started(self, turn_id: str, at: float | None = None) -> None:
        """Opens a turn span under the session; a turn still open is ended as interrupted.

        Turn marks reported before this belong to the previous turn and are forgotten, so a
        keypad turn is never measured against an older turn's end of speech. `at` (engine
        clock) backdates the span's start, for a turn recognised after it began.
        """
        if self._turn_span is not None:
            self.turn_ended(interrupted=True)
        attributes = {"turn.id": turn_id}
        if self.session_id is not None:
            attributes["session.id"] = self.session_id
        span = self._tracer.start_span(
            "voice.turn",
            context=self._session_ctx,
            attributes=attributes,
            start_time=None if at is None else self._wall_ns(at),
        )
        self._turn_span = span
        self._turn_ctx = trace.set_span_in_context(span, self._session_ctx)
        self._speech_end_at = None
        self._marked.clear()

    def turn_mark(self, name: str, at: float) -> None:
        """A moment in the turn, `at` on the engine's clock (marks may be reported late).

        Each of final_transcript / first_agent_text / first_audio_out is measured from the
        latest end_of_speech, once per end_of_speech: a caller who pauses mid-turn produces
        a second end_of_speech, and its final transcript is a fresh measurement.
        """
        if name == "end_of_speech":
            self._speech_end_at = at
            self._marked.clear()
            elapsed = None
        elif name in _FROM_END_OF_SPEECH:
            elapsed = None
            if self._speech_end_at is not None and name not in self._marked:
                self._marked.add(name)
                elapsed = at - self._speech_end_at
                # Negative means marks from different clocks; a histogram cannot take it.
                if elapsed >= 0:
                    self.latency(_FROM_END_OF_SPEECH[name], elapsed)
                else:
                    elapsed = None
        else:
            raise ValueError(f"unknown turn mark {name!r}; expected one of {TURN_MARKS}")
        span = self._turn_span or self._session_span
        if span is None or not span.is_recording():
            return
        if elapsed is None:
            span.add_event(name, timestamp=self._wall_ns(at))
        else:
            span.add_event(name, {"latency": elapsed}, timestamp=self._wall_ns(at))
            span.set_attribute(f"latency.{_FROM_END_OF_SPEECH[name]}", elapsed)

    def turn_ended(self, interrupted: bool) -> None:
        span = self._turn_span
        if span is None:
            return
        self._turn_span = None
        self._turn_ctx = None
        span.set_attribute("turn.interrupted", interrupted)
        span.end()

    # ---------------------------------------------------------------- providers

    def start_provider_span(self, kind: str, provider: str) -> ProviderCall:
        """Opens "voice.provider.{kind}" under the open turn, else the session.

        For calls that outlive one block (a streaming recogniser, a synthesis consumed over
        many awaits); end it with `ProviderCall.end(error)`. The session end closes any left.
        """
        if kind not in PROVIDER_KINDS:
            raise ValueError(f"unknown provider kind {kind!r}; expected one of {PROVIDER_KINDS}")
        attributes = {"provider.name": provider}
        if self.session_id is not None:
            attributes["session.id"] = self.session_id
        span = self._tracer.start_span(
            f"voice.provider.{kind}",
            context=self.context,
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        call = ProviderCall(self, kind, span)
        self._open_calls.add(call)
        return call

    @contextmanager
    def provider_call(self, kind: str, provider: str) -> Iterator[ProviderCall]:
        """`with telemetry.provider_call("tts", name):` around one provider call.

        An exception inside marks the span as failed and propagates unchanged.
        """
        call = self.start_provider_span(kind, provider)
        try:
            yield call
        except BaseException as exc:
            call.end(exc)
            raise
        call.end()

    # ------------------------------------------------------------------ helpers

    def _wall_ns(self, at: float) -> int:
        """`at` on the engine's clock as OTel's wall-clock nanoseconds."""
        return time.time_ns() - round((self._clock() - at) * 1e9)


class _SessionEnded(BaseException):
    """Ends provider spans the session left open: abandoned, so cancelled, not failed."""
