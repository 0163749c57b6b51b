"""Session telemetry against the real OTel SDK, with in-memory readers passed explicitly."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from session.errors import ErrorCode
from session.telemetry import AUDIO_BATCH, INSTRUMENTATION_NAME, SessionTelemetry


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Otel:
    reader: InMemoryMetricReader
    spans: InMemorySpanExporter
    meter_provider: MeterProvider
    tracer_provider: TracerProvider
    clock: FakeClock

    def telemetry(self) -> SessionTelemetry:
        return SessionTelemetry(self.meter_provider, self.tracer_provider, clock=self.clock)

    def metrics(self) -> dict[str, Metric]:
        data = self.reader.get_metrics_data()
        if data is None:
            return {}
        return {
            metric.name: metric
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            if scope.scope.name == INSTRUMENTATION_NAME
            for metric in scope.metrics
        }

    def value(self, name: str, **attributes: str) -> float | None:
        """The summed value of one counter's data point with exactly these attributes."""
        metric = self.metrics().get(name)
        if metric is None:
            return None
        for point in metric.data.data_points:
            assert isinstance(point, NumberDataPoint)
            if dict(point.attributes or {}) == attributes:
                return point.value
        return None

    def latencies(self) -> dict[str, HistogramDataPoint]:
        metric = self.metrics().get("session.latency")
        if metric is None:
            return {}
        points: dict[str, HistogramDataPoint] = {}
        for point in metric.data.data_points:
            assert isinstance(point, HistogramDataPoint)
            points[str((point.attributes or {})["operation"])] = point
        return points

    def finished(self, name: str | None = None) -> list[ReadableSpan]:
        spans = list(self.spans.get_finished_spans())
        return [s for s in spans if name is None or s.name == name]

    def one(self, name: str) -> ReadableSpan:
        (span,) = self.finished(name)
        return span


@pytest.fixture
def otel() -> Iterator[Otel]:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Otel(reader, exporter, meter_provider, tracer_provider, FakeClock())
    meter_provider.shutdown()
    tracer_provider.shutdown()


def whole_session(tel: SessionTelemetry) -> None:
    """Touches every instrument once."""
    tel.session_started("sess-1", {"call.sid": "CA123"})
    for _ in range(3):
        tel.audio_processed()
    tel.turn_started("turn-1")
    tel.turn_mark("end_of_speech", 10.0)
    tel.turn_mark("final_transcript", 10.2)
    with tel.provider_call("agent", "demo"):
        pass
    tel.response_generated()
    tel.error(ErrorCode.TIMEOUT)
    tel.turn_ended(interrupted=False)
    tel.session_ended("hangup")


# ----------------------------------------------------------------- instruments


def test_instruments_have_exactly_the_issue_names_and_kinds(otel: Otel) -> None:
    whole_session(otel.telemetry())
    found = otel.metrics()
    assert set(found) == {
        "session.sessions.total",
        "session.sessions.active",
        "session.audio.processed",
        "session.responses.generated",
        "session.errors.total",
        "session.latency",
    }
    # A counter exports a monotonic sum, an up-down counter a non-monotonic one.
    for name in (
        "session.sessions.total",
        "session.audio.processed",
        "session.responses.generated",
        "session.errors.total",
    ):
        assert isinstance(found[name].data, Sum) and found[name].data.is_monotonic, name
    active = found["session.sessions.active"].data
    assert isinstance(active, Sum) and not active.is_monotonic
    assert isinstance(found["session.latency"].data, HistogramData)
    assert found["session.latency"].unit == "s"


def test_latency_buckets_are_shaped_for_seconds(otel: Otel) -> None:
    tel = otel.telemetry()
    tel.latency("stt", 0.3)
    point = otel.latencies()["stt"]
    # Not the SDK's millisecond-shaped default, which would put 0.3 s in the first bucket.
    assert point.explicit_bounds[0] < 0.3 < point.explicit_bounds[-1]


def test_sessions_total_and_active_go_up_and_back_down_once(otel: Otel) -> None:
    first, second = otel.telemetry(), otel.telemetry()
    first.session_started("a", {})
    second.session_started("b", {})
    assert otel.value("session.sessions.total") == 2
    assert otel.value("session.sessions.active") == 2
    first.session_ended("hangup")
    first.session_ended("hangup")
    assert otel.value("session.sessions.active") == 1
    second.session_ended("timeout")
    assert otel.value("session.sessions.active") == 0
    assert otel.value("session.sessions.total") == 2


def test_session_ended_without_start_counts_nothing(otel: Otel) -> None:
    tel = otel.telemetry()
    tel.session_ended("error")
    assert otel.value("session.sessions.active") is None
    assert otel.finished() == []


def test_a_second_session_started_is_ignored(otel: Otel) -> None:
    tel = otel.telemetry()
    tel.session_started("a", {})
    tel.session_started("a", {})
    tel.session_ended("hangup")
    assert otel.value("session.sessions.total") == 1
    assert len(otel.finished("voice.session")) == 1


def test_audio_frames_batch_but_the_total_is_exact_after_the_end(otel: Otel) -> None:
    tel = otel.telemetry()
    tel.session_started("a", {})
    frames = 2 * AUDIO_BATCH + 23
    for _ in range(frames):
        tel.audio_processed()
    assert otel.value("session.audio.processed") == 2 * AUDIO_BATCH
    tel.session_ended("hangup")
    assert otel.value("session.audio.processed") == frames
    point = otel.metrics()["session.audio.processed"].data.data_points[0]
    assert not point.attributes


def test_flush_hands_over_the_pending_frames(otel: Otel) -> None:
    tel = otel.telemetry()
    for _ in range(7):
        tel.audio_processed()
    assert otel.value("session.audio.processed") is None
    tel.flush()
    tel.flush()
    assert otel.value("session.audio.processed") == 7


def test_responses_generated(otel: Otel) -> None:
    tel = otel.telemetry()
    tel.response_generated()
    tel.response_generated()
    assert otel.value("session.responses.generated") == 2


def test_errors_carry_their_code(otel: Otel) -> None:
    tel = otel.telemetry()
    tel.session_started("a", {})
    tel.error("stt_failed")
    tel.error("stt_failed")
    tel.error(ErrorCode.TIMEOUT)  # the engine's codes are a StrEnum
    assert otel.value("session.errors.total", code="stt_failed") == 2
    assert otel.value("session.errors.total", code=ErrorCode.TIMEOUT.value) == 1
    tel.session_ended("error")
    events = [e for e in otel.one("voice.session").events if e.name == "error"]
    codes = ["stt_failed", "stt_failed", ErrorCode.TIMEOUT.value]
    assert [e.attributes["code"] for e in events] == codes
    assert all(type(e.attributes["code"]) is str for e in events)


def test_latency_is_recorded_by_operation(otel: Otel) -> None:
    tel = otel.telemetry()
    tel.latency("stt", 0.25)
    tel.latency("stt", 0.75)
    tel.latency("tts", 0.1)
    points = otel.latencies()
    assert points["stt"].count == 2 and points["stt"].sum == pytest.approx(1.0)
    assert points["tts"].count == 1


# --------------------------------------------------------------------- turns


def test_turn_timings_produce_the_three_latency_operations(otel: Otel) -> None:
    tel = otel.telemetry()
    tel.session_started("a", {})
    tel.turn_started("t1")
    tel.turn_mark("end_of_speech", 10.0)
    tel.turn_mark("final_transcript", 10.25)
    tel.turn_mark("first_agent_text", 10.75)
    tel.turn_mark("first_audio_out", 11.5)
    # Later marks of the same kind are not "first" any more.
    tel.turn_mark("first_agent_text", 12.0)
    tel.turn_mark("first_audio_out", 13.0)
    tel.turn_ended(interrupted=False)
    points = otel.latencies()
    assert set(points) == {
        "end_of_speech_to_final_transcript",
        "end_of_speech_to_first_agent_text",
        "end_of_speech_to_first_audio",
    }
    assert points["end_of_speech_to_final_transcript"].sum == pytest.approx(0.25)
    assert points["end_of_speech_to_first_agent_text"].sum == pytest.approx(0.75)
    assert points["end_of_speech_to_first_audio"].sum == pytest.approx(1.5)
    assert all(p.count == 1 for p in points.values())

    turn = otel.one("voice.turn")
    assert turn.attributes["latency.end_of_speech_to_first_audio"] == pytest.approx(1.5)
    assert turn.attributes["turn.interrupted"] is False
    names = [e.name for e in turn.events]
    assert names[:4] == list(
        ("end_of_speech", "final_transcript", "first_agent_text", "first_audio_out")
    )
    audio = next(e for e in turn.events if e.name == "first_audio_out")
    assert audio.attributes["latency"] == pytest.approx(1.5)


def test_turn_events_sit_on_the_timeline_by_their_engine_time(otel: Otel) -> None:
    otel.clock.now = 20.0
    tel = otel.telemetry()
    tel.session_started("a", {})
    tel.turn_started("t1", at=17.0)
    # Reported late, at engine time 20, about moments one and two seconds earlier.
    tel.turn_mark("end_of_speech", 18.0)
    tel.turn_mark("final_transcript", 19.0)
    tel.turn_ended(interrupted=False)
    turn = otel.one("voice.turn")
    end_of_speech, final = turn.events[0], turn.events[1]
    assert final.timestamp - end_of_speech.timestamp == pytest.approx(1e9, abs=5e7)
    assert end_of_speech.timestamp - turn.start_time == pytest.approx(1e9, abs=5e7)


def test_a_keypad_turn_records_no_speech_latencies(otel: Otel) -> None:
    tel = otel.telemetry()
    tel.session_started("a", {})
    # A spoken turn whose transcript came back empty: no reply, so nothing measured yet.
    tel.turn_started("t1")
    tel.turn_mark("end_of_speech", 10.0)
    tel.turn_ended(interrupted=False)
    # The keypad turn must not be measured against that older end of speech.
    tel.turn_started("t2")
    tel.turn_mark("first_agent_text", 30.0)
    tel.turn_mark("first_audio_out", 30.5)
    tel.turn_ended(interrupted=False)
    assert otel.latencies() == {}
    dtmf_turn = next(s for s in otel.finished("voice.turn") if s.attributes["turn.id"] == "t2")
    assert [e.name for e in dtmf_turn.events] == ["first_agent_text", "first_audio_out"]


def test_each_end_of_speech_starts_a_fresh_measurement(otel: Otel) -> None:
    tel = otel.telemetry()
    tel.turn_started("t1")
    tel.turn_mark("end_of_speech", 10.0)
    tel.turn_mark("final_transcript", 10.1)
    tel.turn_mark("end_of_speech", 12.0)  # the caller paused, then went on
    tel.turn_mark("final_transcript", 12.3)
    tel.turn_mark("first_audio_out", 13.0)
    point = otel.latencies()["end_of_speech_to_final_transcript"]
    assert point.count == 2 and point.sum == pytest.approx(0.4)
    assert otel.latencies()["end_of_speech_to_first_audio"].sum == pytest.approx(1.0)


def test_a_mark_before_its_reference_is_not_a_negative_latency(otel: Otel) -> None:
    tel = otel.telemetry()
    tel.turn_started("t1")
    tel.turn_mark("end_of_speech", 10.0)
    tel.turn_mark("final_transcript", 9.0)
    assert otel.latencies() == {}


def test_unknown_marks_and_provider_kinds_are_programming_errors(otel: Otel) -> None:
    tel = otel.telemetry()
    with pytest.raises(ValueError, match="turn mark"):
        tel.turn_mark("end_of_sppech", 1.0)
    with pytest.raises(ValueError, match="provider kind"):
        tel.start_provider_span("vad", "webrtc")


def test_starting_a_turn_ends_the_open_one_as_interrupted(otel: Otel) -> None:
    tel = otel.telemetry()
    tel.turn_started("t1")
    tel.turn_started("t2")
    (first,) = otel.finished("voice.turn")
    assert first.attributes["turn.id"] == "t1"
    assert first.attributes["turn.interrupted"] is True


# --------------------------------------------------------------------- spans


def test_session_turn_and_provider_spans_nest(otel: Otel) -> None:
    tel = otel.telemetry()
    tel.session_started("sess-9", {"call.sid": "CA9"})
    tel.turn_started("t1")
    with tel.provider_call("stt", "pocketsphinx"):
        pass
    tel.turn_ended(interrupted=False)
    tel.session_ended("hangup")

    session = otel.one("voice.session")
    turn = otel.one("voice.turn")
    provider = otel.one("voice.provider.stt")
    assert session.parent is None
    assert turn.parent is not None and turn.parent.span_id == session.context.span_id
    assert provider.parent is not None and provider.parent.span_id == turn.context.span_id
    assert {s.context.trace_id for s in (session, turn, provider)} == {session.context.trace_id}

    assert session.attributes["session.id"] == "sess-9"
    assert session.attributes["call.sid"] == "CA9"
    assert session.attributes["end.reason"] == "hangup"
    assert session.status.status_code is StatusCode.UNSET
    assert turn.attributes["session.id"] == "sess-9"
    assert turn.attributes["turn.id"] == "t1"
    assert provider.attributes["session.id"] == "sess-9"
    assert provider.attributes["provider.name"] == "pocketsphinx"
    assert provider.kind is SpanKind.CLIENT
    assert otel.latencies()["stt"].count == 1


def test_a_provider_call_outside_a_turn_hangs_off_the_session(otel: Otel) -> None:
    tel = otel.telemetry()
    tel.session_started("a", {})
    with tel.provider_call("tts", "espeak"):
        pass
    tel.session_ended("hangup")
    provider = otel.one("voice.provider.tts")
    assert provider.parent is not None
    assert provider.parent.span_id == otel.one("voice.session").context.span_id


def test_an_exception_in_a_provider_call_marks_the_span_and_propagates(otel: Otel) -> None:
    tel = otel.telemetry()
    tel.session_started("a", {})
    with pytest.raises(ConnectionError, match="refused"), tel.provider_call("tts", "cloud"):
        raise ConnectionError("refused")
    span = otel.one("voice.provider.tts")
    assert span.status.status_code is StatusCode.ERROR
    assert any(e.name == "exception" for e in span.events)
    # The failed call still took the caller's time.
    assert otel.latencies()["tts"].count == 1


def test_a_cancelled_provider_call_is_not_a_failure(otel: Otel) -> None:
    tel = otel.telemetry()
    with pytest.raises(asyncio.CancelledError), tel.provider_call("tts", "cloud"):
        raise asyncio.CancelledError
    span = otel.one("voice.provider.tts")
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes["provider.cancelled"] is True
    assert "tts" not in otel.latencies()


async def test_a_manual_provider_span_spans_many_awaits(otel: Otel) -> None:
    tel = otel.telemetry()
    tel.session_started("a", {})
    tel.turn_started("t1")
    turn_span_id = trace.get_current_span(tel.context).get_span_context().span_id
    call = tel.start_provider_span("agent", "webhook")

    async def stream() -> None:
        for _ in range(3):
            await asyncio.sleep(0)

    await asyncio.create_task(stream())
    assert otel.finished("voice.provider.agent") == []
    call.end()
    call.end(RuntimeError("late"))  # only the first end counts
    span = otel.one("voice.provider.agent")
    assert span.status.status_code is StatusCode.UNSET
    assert span.parent is not None
    assert span.parent.span_id == turn_span_id
    assert otel.latencies()["agent"].count == 1


def test_a_manual_provider_span_ended_with_an_error(otel: Otel) -> None:
    tel = otel.telemetry()
    call = tel.start_provider_span("stt", "deepgram")
    call.end(TimeoutError("no final"))
    span = otel.one("voice.provider.stt")
    assert span.status.status_code is StatusCode.ERROR


def test_session_end_closes_what_is_still_open(otel: Otel) -> None:
    tel = otel.telemetry()
    tel.session_started("a", {})
    tel.turn_started("t1")
    tel.start_provider_span("tts", "espeak")
    tel.session_ended("error")
    tel.session_ended("hangup")  # harmless, and does not rewrite the reason

    assert len(otel.finished()) == 3
    session = otel.one("voice.session")
    assert session.status.status_code is StatusCode.ERROR
    assert session.attributes["end.reason"] == "error"
    assert otel.one("voice.turn").attributes["turn.interrupted"] is True
    provider = otel.one("voice.provider.tts")
    assert provider.attributes["provider.cancelled"] is True
    assert provider.status.status_code is StatusCode.UNSET


def test_the_session_context_parents_other_spans(otel: Otel) -> None:
    tel = otel.telemetry()
    assert tel.context is None
    tel.session_started("a", {})
    tracer = otel.tracer_provider.get_tracer("elsewhere")
    tracer.start_span("telephony.leg", context=tel.context).end()
    tel.session_ended("hangup")
    leg = otel.one("telephony.leg")
    assert leg.parent is not None
    assert leg.parent.span_id == otel.one("voice.session").context.span_id


def test_a_session_can_sit_under_a_callers_span(otel: Otel) -> None:
    tracer = otel.tracer_provider.get_tracer("gateway")
    request = tracer.start_span("webhook")
    tel = otel.telemetry()
    tel.session_started("a", {}, parent=trace.set_span_in_context(request))
    tel.session_ended("hangup")
    request.end()
    session = otel.one("voice.session")
    assert session.parent is not None
    assert session.parent.span_id == request.get_span_context().span_id


# --------------------------------------------------------------------- no-op


@pytest.mark.parametrize(
    "providers",
    [
        pytest.param({}, id="global-default"),
        pytest.param(
            {
                "meter_provider": metrics.NoOpMeterProvider(),
                "tracer_provider": trace.NoOpTracerProvider(),
            },
            id="explicit-noop",
        ),
    ],
)
def test_everything_works_without_an_sdk(providers: dict[str, Any]) -> None:
    tel = SessionTelemetry(**providers)
    tel.session_started("a", {"call.sid": "CA1"})
    for _ in range(3 * AUDIO_BATCH):
        tel.audio_processed()
    tel.turn_started("t1")
    tel.turn_mark("end_of_speech", 1.0)
    tel.turn_mark("first_audio_out", 2.0)
    with tel.provider_call("agent", "demo") as call:
        assert not call.span.is_recording()
    with pytest.raises(ValueError), tel.provider_call("stt", "x"):
        raise ValueError("boom")
    tel.error("timeout")
    tel.response_generated()
    tel.turn_ended(interrupted=True)
    tel.session_ended("error")
    tel.session_ended("error")
