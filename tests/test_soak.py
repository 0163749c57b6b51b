"""bench.soak: the leak verdict, the sample parsers and the call schedule, plus one short real
run against an in-process gateway to show that calls churn. No timing is asserted."""

from __future__ import annotations

import math
import os

import pytest

from bench.soak import (
    FLAT_MB,
    MIN_CALL_SECONDS,
    Sample,
    SoakReport,
    Window,
    _Soak,
    build_parser,
    judge,
    main,
    parse_metric,
    parse_threads,
    schedule_end,
    steady_window,
    summary_line,
    warmup_seconds,
)
from gateway.load_report import Percentiles
from tests.gateway_server import run_gateway

LOAD_PROVIDERS = {"STT_PROVIDER": "scripted", "TTS_PROVIDER": "tone", "AGENT_PROVIDER": "instant"}


def series(rss: list[float], *, step: float = 5.0, ended_per_step: int = 5, **extra: object):
    """Samples every `step` seconds with the given RSS values, calls ending at a steady rate."""
    return [
        Sample(
            t=i * step,
            rss_mb=value,
            cpu_seconds=float(i),
            live_calls=50,
            calls_started=50 + i * ended_per_step,
            calls_ended=i * ended_per_step,
            **{k: (v[i] if isinstance(v, list) else v) for k, v in extra.items()},  # type: ignore[arg-type]
        )
        for i, value in enumerate(rss)
    ]


# -- parsing what the gateway exposes


def test_threads_are_read_from_proc_status() -> None:
    assert parse_threads("Name:\tpython\nVmRSS:\t 2048 kB\nThreads:\t7\n") == 7
    with pytest.raises(ValueError):
        parse_threads("Name:\tpython\n")


def test_metric_values_are_summed_over_label_sets_and_prefixes_do_not_match() -> None:
    text = (
        "# HELP session_sessions_total Sessions started\n"
        "# TYPE session_sessions_total counter\n"
        'session_sessions_total{otel_scope_name="a",route="x"} 3.0\n'
        'session_sessions_total{otel_scope_name="a",route="y"} 4.0\n'
        "session_sessions_total_created 1.7e9\n"
        'session_sessions_active{otel_scope_name="a"} 2.0\n'
        "bare_metric 5\n"
    )
    assert parse_metric(text, "session_sessions_total") == 7.0
    assert parse_metric(text, "session_sessions_active") == 2.0
    assert parse_metric(text, "bare_metric") == 5.0
    assert parse_metric(text, "session_sessions") is None
    assert parse_metric("", "session_sessions_total") is None


def test_a_label_value_with_a_brace_does_not_confuse_the_parser() -> None:
    assert parse_metric('m{path="/a}b"} 2\n', "m") == 2.0


# -- the schedule


def test_warmup_is_a_share_of_the_run_and_at_least_two_call_lengths() -> None:
    assert warmup_seconds(1800, 60, 0.2) == 360
    assert warmup_seconds(240, 40, 0.2) == 80
    window = steady_window(1800, 60, 0.2)
    assert (window.start, window.end) == (360, 1800 - MIN_CALL_SECONDS)
    assert steady_window(60, 4, 0.2).end == 58  # half a call when calls are short


def test_a_slot_keeps_a_fixed_grid_of_hang_ups_capped_at_the_end() -> None:
    ends = [schedule_end(100.0, k, 60.0, 300.0) for k in range(5)]
    assert ends == [160.0, 220.0, 280.0, 300.0, 300.0]


# -- the verdict


def test_noise_around_a_flat_line_is_flat() -> None:
    rss = [120.0 + 0.8 * math.sin(i) for i in range(60)]
    verdict = judge(series(rss), rss_idle_mb=100.0, calls=50, window=Window(60, 295))
    assert verdict.verdict == "flat"
    assert verdict.growth_mb is not None and abs(verdict.growth_mb) < 1
    assert verdict.rss_steady_mb == pytest.approx(120.0, abs=1)
    assert verdict.rss_per_call_mb == pytest.approx(20.0 / 50, abs=0.02)
    assert verdict.threshold_mb == FLAT_MB
    assert verdict.notes == []


def test_a_steady_climb_is_growing_with_its_slope_and_cost_per_call() -> None:
    # +0.1 MB every 5 s: 72 MB an hour; 5 calls end per sample.
    rss = [110.0 + 0.1 * i for i in range(121)]
    verdict = judge(series(rss), rss_idle_mb=100.0, calls=50, window=Window(100, 600))
    assert verdict.verdict == "growing"
    assert verdict.slope_mb_per_hour == pytest.approx(72.0, rel=1e-3)
    assert verdict.steady_seconds == 500
    assert verdict.growth_mb == pytest.approx(10.0, rel=1e-3)
    assert verdict.calls_ended_steady == 500
    assert verdict.kb_per_ended_call == pytest.approx(10.0 * 1024 / 500, rel=1e-3)


def test_the_warm_up_climb_is_left_out() -> None:
    rss = [100.0 + 2 * i for i in range(10)] + [120.0] * 50
    assert judge(series(rss), rss_idle_mb=100, calls=50, window=Window(0, 300)).verdict == (
        "growing"
    )
    assert judge(series(rss), rss_idle_mb=100, calls=50, window=Window(50, 300)).verdict == ("flat")


def test_the_threshold_is_a_share_of_a_large_rss() -> None:
    rss = [1000.0 + 0.1 * i for i in range(61)]  # +6 MB on a 1 GB process
    verdict = judge(series(rss), rss_idle_mb=900, calls=50, window=Window(0, 300))
    assert verdict.threshold_mb == pytest.approx(30.0, rel=0.01)
    assert verdict.verdict == "flat"


def test_too_few_steady_samples_give_no_verdict() -> None:
    verdict = judge(series([100.0, 101.0]), rss_idle_mb=90, calls=5, window=Window(0, 10))
    assert verdict.verdict == "unknown"
    assert verdict.slope_mb_per_hour is None and verdict.rss_per_call_mb is None
    assert verdict.notes


def test_descriptors_threads_store_and_missing_calls_are_noted() -> None:
    n = 40
    samples = series(
        [100.0] * n,
        fds=[70 + i for i in range(n)],
        threads=[6 + i // 4 for i in range(n)],
        stored_sessions=[100 + 5 * i for i in range(n)],
        gateway_live=[50] * (n - 1) + [30],
    )
    verdict = judge(samples, rss_idle_mb=90, calls=50, window=Window(0, 1000))
    assert verdict.verdict == "flat"
    assert verdict.fds_growth == pytest.approx(n - 1, abs=0.5)
    assert verdict.stored_sessions_growth == 5 * (n - 1)
    text = " | ".join(verdict.notes)
    assert "file descriptors" in text
    assert "threads" in text
    assert "REDIS_URL" in text
    assert "as few as 30 calls" in text


def test_the_summary_line_says_the_verdict_and_the_calls() -> None:
    rss = [110.0 + 0.1 * i for i in range(61)]
    leak = judge(series(rss), rss_idle_mb=100.0, calls=50, window=Window(0, 300))
    report = SoakReport(
        url="http://gw",
        pid=1,
        calls=50,
        minutes=5,
        call_seconds=40,
        sample_seconds=5,
        calls_started=400,
        calls_completed=398,
        calls_failed=2,
        failures={"webhook": 2},
        failure_examples=["HTTP 503"],
        turns=10,
        replies=9,
        replies_missing=1,
        latency_ms=Percentiles.of_seconds([0.4, 0.5]),
        underruns=0,
        underrun_fraction=0.0,
        frames_sent=1000,
        late_frames=0,
        late_p99_ms_max=3.0,
        gateway_cpu_percent=15.0,
        tool_cpu_percent=12.0,
        sessions_started_in_gateway=400,
        rss_after_cooldown_mb=None,
        leak=leak,
        samples=[],
    )
    line = summary_line(report)
    assert "RSS growing" in line
    assert "400 started, 398 completed, 2 failed" in line
    assert "1 missing" in line
    assert not report.ok
    assert '"verdict": "growing"' in report.to_json()


# -- the command line


def test_a_warm_up_that_leaves_nothing_to_judge_is_refused() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--gateway-pid", "1", "--minutes", "1", "--call-seconds", "60"])
    assert exc.value.code == 2


def test_counts_and_lengths_must_be_positive() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--gateway-pid", "1", "--calls", "0"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--gateway-pid", "1", "--call-seconds", "nan"])


# -- a short real run


async def test_calls_churn_and_every_sample_reads_the_gateway() -> None:
    with run_gateway(LOAD_PROVIDERS) as gateway:
        args = build_parser().parse_args(
            [
                "--url",
                gateway.url,
                "--gateway-pid",
                str(os.getpid()),  # the gateway runs in this process
                "--calls",
                "3",
                "--call-seconds",
                "1.5",
                "--minutes",
                "0.1",
                "--sample-seconds",
                "0.5",
                "--cooldown",
                "0",
                "--api-token",
                "test-api-token",
            ]
        )
        report = await _Soak(args).run()
    assert report.calls_failed == 0, report.failure_examples
    # Each of the 3 slots ran its calls back to back: more calls than slots, all ended.
    assert report.calls_started >= 2 * 3
    assert report.calls_completed == report.calls_started
    # /metrics is only served where telemetry export is set up (not in this in-process app).
    assert report.sessions_started_in_gateway in (None, report.calls_started)
    assert report.samples and all(s.rss_mb > 0 for s in report.samples)
    assert max(s.live_calls for s in report.samples) <= 3
    assert any(s.gateway_live for s in report.samples)
    stored = [s.stored_sessions for s in report.samples if s.stored_sessions is not None]
    assert stored and stored[-1] > stored[0]
    assert report.leak.verdict in ("flat", "growing")  # judged: enough steady samples
    assert report.leak.rss_per_call_mb is not None
