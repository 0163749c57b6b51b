"""The load tool: its pure parts, and small real runs against an in-process gateway.

No timing is asserted beyond "present and positive": these runs share a core with the gateway
and the test runner, so they check that the tool measures, not how fast anything is.
"""

from __future__ import annotations

import math
import os
import time

import pytest

from gateway.load import CallerAudio, media_template, run_load, start_offset
from gateway.load_report import (
    CallResult,
    Percentiles,
    ProcessProbe,
    build_report,
    core_usage,
    parse_core_ticks,
    parse_proc_stat_ticks,
    parse_vm_rss_bytes,
    percentile,
    read_core_ticks,
    summary_line,
)
from providers.vad.webrtc import WebRtcVad
from telephony.g711 import ulaw_to_pcm
from telephony.twilio.peer import encode_inbound_media
from tests.gateway_server import run_gateway

LOAD_PROVIDERS = {"STT_PROVIDER": "scripted", "TTS_PROVIDER": "tone", "AGENT_PROVIDER": "instant"}

# -- percentiles and the report


def test_percentile_interpolates_between_ranks() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 3.0
    assert percentile(values, 100) == 5.0
    assert percentile(values, 95) == pytest.approx(4.8)
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_percentiles_are_reported_in_milliseconds() -> None:
    stats = Percentiles.of_seconds([0.3, 0.1, 0.2])
    assert (stats.count, stats.p50, stats.max) == (3, 200.0, 300.0)
    assert Percentiles.of_seconds([]) == Percentiles(0, None, None, None, None)


def test_report_counts_failures_missing_replies_and_underrun_share() -> None:
    good = CallResult(latencies=[0.5, 0.7], reply_seconds=3.0, underruns=1, underrun_seconds=0.3)
    missing = CallResult(latencies=[0.6], missing=1, reply_seconds=1.0)
    failed = CallResult()
    failed.fail("no greeting", "no greeting within 5 s")
    failed.fail("closed early", "only the first error counts")
    report = build_report(
        [good, missing, failed],
        [0.001, 0.002, 0.025],
        url="http://gw",
        ramp=1.0,
        duration=2.0,
        speech_seconds=1.0,
        event_loop="asyncio",
        client_cpu_percent=12.0,
        gateway=None,
        frame_seconds=0.02,
    )
    assert (report.calls_completed, report.calls_failed) == (2, 1)
    assert report.failures == {"no greeting": 1}
    assert report.failure_examples == ["no greeting within 5 s"]
    assert (report.turns, report.replies, report.replies_missing) == (4, 3, 1)
    assert report.latency_ms.p50 == pytest.approx(600.0)
    assert report.underrun_fraction == pytest.approx(0.3 / 4.0)
    assert report.late_frames == 1
    assert not report.ok
    assert "1 failed" in summary_line(report)


# -- /proc


def test_proc_stat_fields_are_counted_from_the_end_of_the_command_name() -> None:
    # A command name may hold spaces and parentheses; utime and stime are fields 14 and 15.
    fields = ["S", *[str(n) for n in range(4, 14)], "250", "50", *["0"] * 30]
    text = "1234 (odd) name (x)) " + " ".join(fields)
    assert parse_proc_stat_ticks(text) == 300


def test_vm_rss_is_read_in_bytes() -> None:
    text = "Name:\tpython\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\nThreads:\t1\n"
    assert parse_vm_rss_bytes(text) == 2048 * 1024
    with pytest.raises(ValueError):
        parse_vm_rss_bytes("Name:\tkthreadd\n")


def test_core_usage_separates_busy_from_stolen_time() -> None:
    before = parse_core_ticks(
        "cpu  10 0 10 100 0 0 0 0 0 0\n"
        "cpu0 100 0 50 800 50 0 0 0 0 0\n"
        "cpu1 0 0 0 1000 0 0 0 0 0 0\n"
        "intr 1 2 3\n"
    )
    after = parse_core_ticks("cpu0 160 0 70 800 50 5 5 10 0 0\ncpu1 10 0 0 1090 0 0 0 0 0 0\n")
    assert set(before) == {"cpu0", "cpu1"}
    usage = core_usage(before, after)
    assert usage["cpu0"] == {"busy_percent": 90.0, "steal_percent": 10.0}
    assert usage["cpu1"] == {"busy_percent": 10.0, "steal_percent": 0.0}
    assert set(core_usage(read_core_ticks(), read_core_ticks())) <= set(before) | {
        f"cpu{i}" for i in range(os.cpu_count() or 1)
    }


def test_probe_reads_this_process() -> None:
    probe = ProcessProbe(os.getpid())
    before = probe.cpu_seconds()
    end = time.process_time() + 0.05
    while time.process_time() < end:  # burn some CPU so the tick counter moves
        pass
    assert probe.cpu_seconds() > before
    # Within a few ticks of what the interpreter reports for itself.
    assert probe.cpu_seconds() == pytest.approx(time.process_time(), abs=0.5)
    assert 1 * 2**20 < probe.rss_bytes() < 8 * 2**30


def test_probe_refuses_a_pid_that_is_not_running() -> None:
    with pytest.raises(ProcessLookupError):
        ProcessProbe(2**22 + 1)  # above the kernel's pid_max


# -- what the callers send


@pytest.mark.parametrize("aggressiveness", [0, 1, 2, 3])
def test_the_caller_voice_is_speech_to_webrtcvad(aggressiveness: int) -> None:
    audio = CallerAudio.for_speech(1.0)
    assert len(audio.speech) == 50
    pcm = ulaw_to_pcm(audio.speech_ulaw)
    vad = WebRtcVad(8000, aggressiveness)
    frames = [pcm[i : i + vad.frame_bytes] for i in range(0, len(pcm), vad.frame_bytes)]
    voiced = sum(vad.is_speech(frame) for frame in frames)
    assert voiced >= 0.9 * len(frames)


def test_silence_is_not_speech() -> None:
    audio = CallerAudio.for_speech(0.5)
    assert audio.silence == CallerAudio.for_speech(1.0).silence
    assert CallerAudio.for_speech(0.5) is audio  # computed once, shared by every caller


def test_media_template_writes_what_the_peer_codec_writes() -> None:
    sid = "MZ" + "0123456789abcdef" * 2
    audio = CallerAudio.for_speech(0.2)
    ulaw = audio.speech_ulaw[160:320]
    expected = encode_inbound_media(sid, 42, 41, 800, ulaw)
    assert media_template(sid) % (42, 41, 800, audio.speech[1]) == expected.encode()
    with pytest.raises(ValueError):
        media_template('MZ"}')


def test_calls_start_over_the_ramp_in_different_frame_slots() -> None:
    calls, ramp = 50, 5.0  # 100 ms apart: a whole number of frames
    starts = [start_offset(i, calls, ramp) for i in range(calls)]
    assert starts == sorted(starts) and starts[0] == 0
    assert starts[-1] < ramp
    slots = sorted(start % 0.02 for start in starts)
    # Spread over the 20 ms frame: no 2 ms of it holds more than a sixth of the calls.
    assert max(sum(lo <= s < lo + 0.002 for s in slots) for lo in slots) <= calls // 6


# -- real runs


async def test_a_small_run_completes_every_call_and_answers_every_turn() -> None:
    with run_gateway(LOAD_PROVIDERS) as gateway:
        # The gateway runs in this process: its pid exercises the /proc measurement too.
        report = await run_load(gateway.url, 3, 1.0, 6.0, gateway_pid=os.getpid())
    assert report.calls_failed == 0, report.failure_examples
    assert report.calls_completed == 3
    assert report.replies_missing == 0
    assert report.replies == report.turns >= 3  # at least one answered turn per call
    latency = report.latency_ms
    assert latency.count == report.replies
    assert latency.p50 is not None and latency.p95 is not None and latency.p99 is not None
    assert 0 < latency.p50 <= latency.p95 <= latency.p99
    assert report.reply_seconds > 0
    assert report.frames_sent >= 3 * 6 / 0.02
    assert report.lateness_ms.count == report.frames_sent
    gateway_usage = report.gateway
    assert gateway_usage is not None and gateway_usage.pid == os.getpid()
    assert gateway_usage.window_seconds == pytest.approx(6.0, abs=0.5)
    assert gateway_usage.cpu_seconds > 0 and gateway_usage.rss_start_mb > 0
    assert report.client_cpu_percent is not None
    assert report.host_cores
    assert report.ok


async def test_signed_calls_get_through_and_a_wrong_token_is_refused() -> None:
    env = {**LOAD_PROVIDERS, "TWILIO_AUTH_TOKEN": "load-test-token"}
    with run_gateway(env) as gateway:
        signed = await run_load(
            gateway.url, 1, 0.0, 2.5, auth_token="load-test-token", turns_per_call=0
        )
        wrong = await run_load(gateway.url, 2, 0.0, 2.0, auth_token="not-the-token")
    assert signed.calls_completed == 1 and signed.turns == 0, signed.failure_examples
    assert wrong.calls_failed == 2
    assert wrong.failures == {"webhook": 2}
