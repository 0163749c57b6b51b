"""What session telemetry costs, in microseconds per call.

    python -m bench.telemetry_cost [--repeat N] [--frames N]

The figure that matters is `audio_processed()`, called once per 20 ms caller frame: it must
stay well under a microsecond with or without an OpenTelemetry SDK. The rows after it put
that in context: an empty method call (the floor), an unbatched SDK `Counter.add` per frame
(what batching saves), and the per-turn and per-provider-call costs, which run a few times a
turn rather than fifty times a second.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from session.telemetry import SessionTelemetry


def _per_op_us(fn: Callable[[int], None], ops: int, repeat: int) -> float:
    """Median over `repeat` runs of the mean cost per operation."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(ops)
        samples.append((time.perf_counter() - start) / ops * 1e6)
    return statistics.median(samples)


def _frames(call: Callable[[], None]) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            call()

    return run


class _Empty:
    def audio_processed(self) -> None:
        pass


def _sdk() -> tuple[MeterProvider, TracerProvider, InMemorySpanExporter]:
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return meter_provider, tracer_provider, exporter


def _turn(tel: SessionTelemetry, exporter: InMemorySpanExporter | None) -> Callable[[int], None]:
    """One spoken turn: span, four marks (three latencies), one provider call, end."""

    def run(n: int) -> None:
        for i in range(n):
            tel.turn_started(f"t{i}")
            tel.turn_mark("end_of_speech", 1.0)
            tel.turn_mark("final_transcript", 1.2)
            tel.turn_mark("first_agent_text", 1.5)
            with tel.provider_call("tts", "bench"):
                pass
            tel.turn_mark("first_audio_out", 1.8)
            tel.turn_ended(interrupted=False)
        if exporter is not None:
            exporter.clear()  # finished spans pile up in memory otherwise

    return run


def run(repeat: int, frames: int) -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []

    def measure(name: str, fn: Callable[[int], None], ops: int = frames) -> None:
        rows.append((name, _per_op_us(fn, ops, repeat)))

    measure("empty method call (floor)", _frames(_Empty().audio_processed))

    # Nothing installed: the API's global proxy providers, as in a gateway without OTEL_*.
    default = SessionTelemetry()
    default.session_started("bench", {})
    measure("audio_processed, no SDK (global default)", _frames(default.audio_processed))

    noop = SessionTelemetry(metrics.NoOpMeterProvider(), trace.NoOpTracerProvider())
    noop.session_started("bench", {})
    measure("audio_processed, explicit no-op providers", _frames(noop.audio_processed))

    meter_provider, tracer_provider, exporter = _sdk()
    sdk = SessionTelemetry(meter_provider, tracer_provider)
    sdk.session_started("bench", {"call.sid": "CA0"})
    measure("audio_processed, SDK + in-memory reader", _frames(sdk.audio_processed))

    counter = meter_provider.get_meter("bench").create_counter("bench.unbatched")
    unbatched = _frames(lambda: counter.add(1))
    measure("  vs SDK Counter.add(1) every frame", unbatched, max(frames // 20, 1000))

    turns = max(frames // 100, 100)
    measure("one turn, no SDK (per turn)", _turn(default, None), turns)
    measure("one turn, SDK + in-memory spans (per turn)", _turn(sdk, exporter), turns)

    for tel in (default, noop, sdk):
        tel.session_ended("hangup")
    meter_provider.shutdown()
    tracer_provider.shutdown()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--frames", type=int, default=200_000)
    args = parser.parse_args(argv)
    rows = run(args.repeat, args.frames)
    width = max(len(name) for name, _ in rows)
    print(f"{'operation':<{width}}  µs/call (median of {args.repeat})")
    for name, us in rows:
        print(f"{name:<{width}}  {us:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
