"""Soak / leak check: N calls kept up for a long run with churn; the gateway's RSS judged
flat or growing.

Run the gateway on one core with the deterministic providers, as for the load sweep
(`SIP_PORT=0` keeps it off UDP 5060, which another gateway or a test may hold):

    taskset -c 0 env SIP_PORT=0 STT_PROVIDER=scripted TTS_PROVIDER=tone \
        AGENT_PROVIDER=instant .venv/bin/voice-gateway serve --port 8100

and the soak on the other core, with the pid of that `voice-gateway` process:

    taskset -c 1 .venv/bin/python -m bench.soak --calls 50 --minutes 30 \
        --url http://127.0.0.1:8100 --gateway-pid PID [--call-seconds 60] \
        [--api-token TOKEN] [--json soak.json] [--png soak.png]

What it does. `--calls` slots each run calls back to back, every call `--call-seconds` long,
through the load tool's caller (`gateway.load.run_call`: webhook, Media Streams, turn after
turn of synthetic speech, mark echoes). Slot i's first call starts i/N of a call length in,
so from then on calls end and new ones start all the time (N per call length), and leaks in
call setup and teardown show up, not only leaks within a call. A call that fails is followed
by its slot's next one at the time the failed one should have ended: a failing gateway is
not hammered.

What it measures. Before the first call, the idle gateway's RSS. Then every `--sample-seconds`:
the gateway's RSS and CPU, its open file descriptors and threads (from /proc; that pid only,
not children), the calls this tool has up, and the gateway's own view (`live_calls` and the
store writer's backlog from /readyz, `session_sessions_total` from /metrics, and with
`--api-token` the number of sessions its store holds). After the last call, `--cooldown`
seconds more, to see what the gateway gives back. Calls completed and failed, replies
missing and reply latency come from the callers, as in `voice-gateway load`.

The verdict. The first `--warmup` share of the run, and at least two call lengths (every slot
through one full call and into its second), is warm-up: allocator arenas grow to the working
set of N calls, lazy imports and caches fill. Over the rest (the steady part, which ends when
slots stop starting calls the end of the run would cut short) RSS is fitted with a straight
line; growth = slope x steady length. "flat" when the growth is below max(FLAT_MB, FLAT_FRACTION
of the steady RSS), else "growing". Why 5 MB: with the per-call garbage collected, the
gateway's RSS under 50 churning calls stayed within 1 MB over minutes (measured), so 5 MB is
well clear of the noise; and over a 30-minute soak's steady part (~1400 calls ended with the
defaults) it is under 4 KB per call ended, a fraction of a percent of the 2 MB per-call
budget, so a per-call leak of any size that matters shows up. `kb_per_ended_call` (growth /
calls ended in the steady part) is what to read when the verdict is "growing". RSS per live
call = (median steady RSS - idle RSS) / calls; it includes the one-time cost of the first
calls (lazy imports, provider set-up), so it errs high.

Two things that grow RSS with ended calls, to keep in mind when reading a "growing" verdict:
- the embedded store (no `REDIS_URL`) keeps up to 1000 ended calls' records and event logs in
  the gateway's own memory (`infra/store/memory_store.py`), by design: run the gateway with
  `REDIS_URL` to leave them out, or pass `--api-token` and the soak notes how many sessions
  it took;
- a reference cycle through a call's objects. An ended call must be freed by reference
  counting (tests/test_call_memory.py checks it with the collector off): anything left in a
  cycle waits for a full collection, which CPython runs rarely in a large heap, and the
  gateway grew by ~40 KB per ended call while the websocket protocol and cancelled reply
  tasks still held such cycles.

Exit status 0 when RSS was flat and no call failed nor a reply went missing, 1 otherwise,
2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import os
import shlex
import statistics
import sys
import time
from array import array
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from gateway.caller import FRAME_SECONDS
from gateway.load import CallerAudio, new_http_client, run_blocking, run_call, start_offset
from gateway.load_report import MB, CallResult, CallTally, Percentiles, ProcessProbe

__all__ = [
    "LeakVerdict",
    "Sample",
    "SoakReport",
    "Window",
    "judge",
    "main",
    "parse_metric",
    "parse_threads",
    "schedule_end",
    "steady_window",
    "summary_line",
]

FLAT_MB = 5.0
FLAT_FRACTION = 0.03
WARMUP_FRACTION = 0.2
MIN_CALL_SECONDS = 5.0  # a slot does not start a call with less than this left in the soak
IDLE_SAMPLES = 3
PROBE_TIMEOUT = 2.0


# ---------------------------------------------------------------------------------------------
# Samples, and reading them (pure where it can be)


@dataclass(frozen=True, slots=True)
class Sample:
    """The gateway and the soak at one moment; None where it could not be read."""

    t: float  # seconds since the first call was due
    rss_mb: float
    cpu_seconds: float  # the gateway's, cumulative
    live_calls: int  # calls this tool has up
    calls_started: int  # by this tool, so far
    calls_ended: int
    gateway_live: int | None = None  # /readyz live_calls
    store_backlog: int | None = None  # /readyz: events queued for the store, not yet written
    sessions_total: int | None = None  # /metrics session_sessions_total
    stored_sessions: int | None = None  # /api/sessions total (needs --api-token)
    fds: int | None = None
    threads: int | None = None
    cpu_percent: float | None = None  # the gateway's since the previous sample, of one core
    tool_cpu_percent: float | None = None  # this process's, likewise
    late_p99_ms: float | None = None  # this tool's send lateness since the previous sample


def parse_threads(status_text: str) -> int:
    """The thread count from the text of /proc/PID/status."""
    for line in status_text.splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise ValueError("no Threads line")


def parse_metric(text: str, name: str) -> float | None:
    """The value of metric `name` in Prometheus text, summed over its label sets; None when
    it is not there (the gateway exports a metric only once it was recorded)."""
    total, found = 0.0, False
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        rest = line[len(name) :]
        if not rest or rest[0] not in "{ ":
            continue  # a longer name with this one as its prefix
        if rest[0] == "{":
            rest = rest[rest.rindex("}") + 1 :]
        try:
            total += float(rest.split()[0])
        except (IndexError, ValueError):
            continue
        found = True
    return total if found else None


def count_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:  # gone, or not ours to read
        return None


def read_threads(pid: int) -> int | None:
    try:
        return parse_threads(Path(f"/proc/{pid}/status").read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# The verdict (pure)


@dataclass(frozen=True, slots=True)
class Window:
    """The steady part of the run: from the end of the warm-up to the last call's end."""

    start: float
    end: float


def warmup_seconds(run_seconds: float, call_seconds: float, fraction: float) -> float:
    """The first `fraction` of the run, and at least two call lengths (the ramp is one: every
    slot is then through one full call and into its second)."""
    return max(fraction * run_seconds, 2 * call_seconds)


def steady_window(run_seconds: float, call_seconds: float, fraction: float) -> Window:
    """After the warm-up, up to when slots stop starting calls that would be cut too short
    by the end of the run (the number of calls up tapers off there)."""
    return Window(
        warmup_seconds(run_seconds, call_seconds, fraction),
        run_seconds - min(MIN_CALL_SECONDS, call_seconds / 2),
    )


@dataclass(frozen=True, slots=True)
class LeakVerdict:
    verdict: str  # "flat", "growing", or "unknown" (too few steady samples)
    warmup_seconds: float
    steady_end: float  # seconds into the run
    steady_seconds: float
    steady_samples: int
    rss_idle_mb: float
    rss_steady_mb: float | None  # median over the steady part
    rss_steady_min_mb: float | None
    rss_steady_max_mb: float | None
    rss_per_call_mb: float | None  # (steady - idle) / calls
    slope_mb_per_hour: float | None
    growth_mb: float | None  # fitted: slope x steady length
    threshold_mb: float | None
    calls_ended_steady: int
    kb_per_ended_call: float | None  # growth / calls ended in the steady part
    fds_growth: float | None  # fitted, over the steady part
    threads_growth: float | None
    stored_sessions_growth: int | None
    notes: list[str] = field(default_factory=list)


def _fit(ts: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of `values` over `ts`, per second."""
    return float(np.polyfit(np.asarray(ts, dtype=float), np.asarray(values, dtype=float), 1)[0])


def judge(
    samples: Sequence[Sample],
    *,
    rss_idle_mb: float,
    calls: int,
    window: Window,
    flat_mb: float = FLAT_MB,
    flat_fraction: float = FLAT_FRACTION,
) -> LeakVerdict:
    """Fit RSS (and fds, threads) over the samples inside `window` and judge the growth."""
    steady = [s for s in samples if window.start <= s.t <= window.end]
    span = steady[-1].t - steady[0].t if len(steady) >= 2 else 0.0
    notes: list[str] = []
    ended = steady[-1].calls_ended - steady[0].calls_ended if steady else 0
    if len(steady) < 3 or span <= 0:
        return LeakVerdict(
            verdict="unknown",
            warmup_seconds=round(window.start, 1),
            steady_end=round(window.end, 1),
            steady_seconds=round(span, 1),
            steady_samples=len(steady),
            rss_idle_mb=round(rss_idle_mb, 1),
            rss_steady_mb=None,
            rss_steady_min_mb=None,
            rss_steady_max_mb=None,
            rss_per_call_mb=None,
            slope_mb_per_hour=None,
            growth_mb=None,
            threshold_mb=None,
            calls_ended_steady=ended,
            kb_per_ended_call=None,
            fds_growth=None,
            threads_growth=None,
            stored_sessions_growth=None,
            notes=["fewer than 3 samples after the warm-up: run longer or sample more often"],
        )
    ts = [s.t for s in steady]
    rss = [s.rss_mb for s in steady]
    slope = _fit(ts, rss)
    growth = slope * span
    median = statistics.median(rss)
    threshold = max(flat_mb, flat_fraction * median)
    flat = growth < threshold

    def fitted_growth(values: list[int | None]) -> float | None:
        pairs = [(t, v) for t, v in zip(ts, values, strict=True) if v is not None]
        if len(pairs) < 3:
            return None
        return round(_fit([t for t, _ in pairs], [v for _, v in pairs]) * span, 1)

    fds_growth = fitted_growth([s.fds for s in steady])
    threads_growth = fitted_growth([s.threads for s in steady])
    stored = [s.stored_sessions for s in steady if s.stored_sessions is not None]
    stored_growth = stored[-1] - stored[0] if len(stored) >= 2 else None

    if fds_growth is not None and fds_growth > max(5.0, 0.2 * calls):
        notes.append(f"open file descriptors grew by {fds_growth:.0f} over the steady part")
    if threads_growth is not None and threads_growth > 2:
        notes.append(f"threads grew by {threads_growth:.0f} over the steady part")
    if stored_growth:
        notes.append(
            f"the store took {stored_growth} more sessions over the steady part; with the "
            "embedded store (no REDIS_URL) their records and event logs are in the gateway's "
            "RSS, up to 1000 ended calls"
        )
    live = [s.gateway_live for s in steady if s.gateway_live is not None]
    if live and min(live) < 0.9 * calls:
        notes.append(f"the gateway had as few as {min(live)} calls live in the steady part")
    return LeakVerdict(
        verdict="flat" if flat else "growing",
        warmup_seconds=round(window.start, 1),
        steady_end=round(window.end, 1),
        steady_seconds=round(span, 1),
        steady_samples=len(steady),
        rss_idle_mb=round(rss_idle_mb, 1),
        rss_steady_mb=round(median, 1),
        rss_steady_min_mb=round(min(rss), 1),
        rss_steady_max_mb=round(max(rss), 1),
        rss_per_call_mb=round((median - rss_idle_mb) / max(calls, 1), 3),
        slope_mb_per_hour=round(slope * 3600, 2),
        growth_mb=round(growth, 2),
        threshold_mb=round(threshold, 2),
        calls_ended_steady=ended,
        kb_per_ended_call=round(growth * 1024 / ended, 2) if ended > 0 else None,
        fds_growth=fds_growth,
        threads_growth=threads_growth,
        stored_sessions_growth=stored_growth,
        notes=notes,
    )


# ---------------------------------------------------------------------------------------------
# The report


@dataclass(frozen=True, slots=True)
class SoakReport:
    url: str
    pid: int
    calls: int
    minutes: float
    call_seconds: float
    sample_seconds: float
    calls_started: int
    calls_completed: int
    calls_failed: int
    failures: dict[str, int]
    failure_examples: list[str]
    turns: int
    replies: int
    replies_missing: int
    latency_ms: Percentiles
    underruns: int
    underrun_fraction: float
    frames_sent: int
    late_frames: int  # this tool's sends a whole frame or more behind their slot
    late_p99_ms_max: float | None  # the worst sampling window's p99
    gateway_cpu_percent: float | None  # mean over the steady part, of one core
    tool_cpu_percent: float | None
    sessions_started_in_gateway: int | None  # session_sessions_total, end minus start
    rss_after_cooldown_mb: float | None
    leak: LeakVerdict
    samples: list[Sample]

    @property
    def ok(self) -> bool:
        return self.leak.verdict == "flat" and self.calls_failed == 0 and not self.replies_missing

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def summary_line(report: SoakReport) -> str:
    leak, lat = report.leak, report.latency_ms
    parts = [
        f"soak {report.calls} calls x {report.minutes:g} min ({report.call_seconds:g} s each): "
        f"RSS {leak.verdict}",
        f"idle {leak.rss_idle_mb:.1f} MB, steady {_f(leak.rss_steady_mb, '.1f')} MB "
        f"({_f(leak.rss_per_call_mb, '.3f')} MB/call)",
        f"slope {_f(leak.slope_mb_per_hour, '+.1f')} MB/h, growth {_f(leak.growth_mb, '+.2f')} MB "
        f"over {leak.steady_seconds:.0f} s (flat below {_f(leak.threshold_mb, '.1f')} MB; "
        f"{_f(leak.kb_per_ended_call, '+.1f')} KB per call ended)",
        f"calls {report.calls_started} started, {report.calls_completed} completed, "
        f"{report.calls_failed} failed" + (f" {report.failures}" if report.failures else ""),
        f"{report.replies}/{report.turns} replies (p50 {_f(lat.p50, '.0f')} / "
        f"p95 {_f(lat.p95, '.0f')} ms), {report.replies_missing} missing",
        f"gateway CPU {_f(report.gateway_cpu_percent, '.0f')}%, "
        f"tool CPU {_f(report.tool_cpu_percent, '.0f')}%, "
        f"send lateness p99 <= {_f(report.late_p99_ms_max, '.1f')} ms",
    ]
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# The run


def schedule_end(first_start: float, k: int, call_seconds: float, soak_end: float) -> float:
    """When a slot's call k (from 0) hangs up: slot starts stay a fixed call length apart, so
    a late hang-up shortens the next call instead of pushing every later one back."""
    return min(first_start + (k + 1) * call_seconds, soak_end)


class _Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.url = args.url.rstrip("/")
        self.probe = ProcessProbe(args.gateway_pid)
        self.audio = CallerAudio.for_speech(args.speech_seconds)
        self.lateness: array[float] = array("d")
        self.results: list[CallResult] = []
        self.samples: list[Sample] = []
        self.live = self.started = self.ended = 0
        self.frames = self.late_frames = 0
        self.t0 = 0.0
        self.gateway_gone_at: float | None = None

    async def _gateway_counts(
        self, http: httpx.AsyncClient
    ) -> tuple[int | None, int | None, int | None, int | None]:
        """Live calls and the store writer's backlog (/readyz), sessions started (/metrics)
        and, with an API token, sessions in the store (/api/sessions): whatever answers
        within PROBE_TIMEOUT."""
        live = backlog = total = stored = None
        unreadable = (httpx.HTTPError, ValueError, KeyError, TypeError)
        get = functools.partial(http.get, timeout=PROBE_TIMEOUT)
        with contextlib.suppress(*unreadable):
            ready = (await get(f"{self.url}/readyz")).json()
            live = int(ready["live_calls"])
            backlog = int(ready["store_backlog"]["events"])
        with contextlib.suppress(*unreadable):
            value = parse_metric((await get(f"{self.url}/metrics")).text, "session_sessions_total")
            total = None if value is None else int(value)
        if self.args.api_token:
            with contextlib.suppress(*unreadable):
                answer = await get(
                    f"{self.url}/api/sessions",
                    params={"limit": 1},
                    headers={"Authorization": f"Bearer {self.args.api_token}"},
                )
                answer.raise_for_status()
                stored = int(answer.json()["total"])
        return live, backlog, total, stored

    async def _sample(
        self, http: httpx.AsyncClient, previous: tuple[float, float, float] | None
    ) -> tuple[Sample, tuple[float, float, float]]:
        now = time.monotonic()
        cpu = self.probe.cpu_seconds()
        own = time.process_time()
        rss = self.probe.rss_bytes() / MB
        live, backlog, total, stored = await self._gateway_counts(http)
        late_p99 = None
        if self.lateness:
            # A copy, then the shared array emptied: one window at a time, so the tool's
            # memory stays bounded over a long soak.
            late = np.array(self.lateness, dtype=float)
            del self.lateness[:]
            self.frames += len(late)
            self.late_frames += int(np.count_nonzero(late >= FRAME_SECONDS))
            late_p99 = round(float(np.percentile(late, 99)) * 1000, 2)
        cpu_pct = tool_pct = None
        if previous is not None:
            dt = now - previous[0]
            if dt > 0:
                cpu_pct = round(100 * (cpu - previous[1]) / dt, 1)
                tool_pct = round(100 * (own - previous[2]) / dt, 1)
        sample = Sample(
            t=round(now - self.t0, 2),
            rss_mb=round(rss, 2),
            cpu_seconds=round(cpu, 2),
            live_calls=self.live,
            calls_started=self.started,
            calls_ended=self.ended,
            gateway_live=live,
            store_backlog=backlog,
            sessions_total=total,
            stored_sessions=stored,
            fds=count_fds(self.probe.pid),
            threads=read_threads(self.probe.pid),
            cpu_percent=cpu_pct,
            tool_cpu_percent=tool_pct,
            late_p99_ms=late_p99,
        )
        return sample, (now, cpu, own)

    async def _sampler(self, http: httpx.AsyncClient, until: float) -> None:
        previous = None
        interval = self.args.sample_seconds
        next_at = time.monotonic()
        while True:
            try:
                sample, previous = await self._sample(http, previous)
            except ProcessLookupError:
                self.gateway_gone_at = round(time.monotonic() - self.t0, 1)
                return  # the failed calls say the rest
            self.samples.append(sample)
            if self.args.verbose:
                print(
                    f"  t={sample.t:7.1f}s rss={sample.rss_mb:7.1f} MB live={sample.live_calls}"
                    f" gw_live={sample.gateway_live} sessions={sample.sessions_total}"
                    f" fds={sample.fds} cpu={sample.cpu_percent}%",
                    flush=True,
                )
            next_at += interval
            if next_at > until:
                return
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _slot(self, i: int, http: httpx.AsyncClient, soak_end: float) -> None:
        call_seconds = self.args.call_seconds
        first_start = self.t0 + start_offset(i, self.args.calls, call_seconds)
        start = first_start
        k = 0
        while True:
            end = schedule_end(first_start, k, call_seconds, soak_end)
            if end - max(start, time.monotonic()) < min(MIN_CALL_SECONDS, call_seconds / 2):
                return
            await asyncio.sleep(max(0.0, start - time.monotonic()))
            self.live += 1
            self.started += 1
            try:
                result = await run_call(
                    http,
                    self.url,
                    self.audio,
                    self.lateness,
                    start_at=time.monotonic(),
                    end_at=end,
                    auth_token=self.args.auth_token,
                )
            finally:
                self.live -= 1
                self.ended += 1
            self.results.append(result)
            # The next call starts at once after a hang-up; after a failure, when this one
            # should have ended.
            start = end if not result.ok else time.monotonic()
            k += 1

    async def run(self) -> SoakReport:
        args = self.args
        run_seconds = args.minutes * 60
        async with new_http_client() as http:
            idle = []
            for n in range(IDLE_SAMPLES):
                if n:
                    await asyncio.sleep(1.0)
                idle.append(self.probe.rss_bytes() / MB)
            rss_idle = statistics.median(idle)
            _, _, total_before, _ = await self._gateway_counts(http)
            self.t0 = time.monotonic() + 0.5
            soak_end = self.t0 + run_seconds
            sampler = asyncio.create_task(self._sampler(http, soak_end + args.cooldown))
            await asyncio.gather(*(self._slot(i, http, soak_end) for i in range(args.calls)))
            await sampler
        if self.lateness:  # frames sent after the last sample (a run with no cooldown)
            late = np.array(self.lateness, dtype=float)
            self.frames += len(late)
            self.late_frames += int(np.count_nonzero(late >= FRAME_SECONDS))
        window = steady_window(run_seconds, args.call_seconds, args.warmup)
        steady = [s for s in self.samples if window.start <= s.t <= window.end]
        leak = judge(self.samples, rss_idle_mb=rss_idle, calls=args.calls, window=window)
        if self.gateway_gone_at is not None:
            leak.notes.append(f"the gateway process was gone at {self.gateway_gone_at} s")
        cpu = [s.cpu_percent for s in steady if s.cpu_percent is not None]
        tool = [s.tool_cpu_percent for s in steady if s.tool_cpu_percent is not None]
        late = [s.late_p99_ms for s in self.samples if s.late_p99_ms is not None]
        after = [s for s in self.samples if s.t > run_seconds + args.cooldown / 2]
        totals = [s.sessions_total for s in self.samples if s.sessions_total is not None]
        return self._report(
            leak,
            gateway_cpu=round(statistics.fmean(cpu), 1) if cpu else None,
            tool_cpu=round(statistics.fmean(tool), 1) if tool else None,
            late_p99_max=max(late) if late else None,
            sessions_started=(totals[-1] - (total_before or 0)) if totals else None,
            rss_after=after[-1].rss_mb if after else None,
        )

    def _report(
        self,
        leak: LeakVerdict,
        *,
        gateway_cpu: float | None,
        tool_cpu: float | None,
        late_p99_max: float | None,
        sessions_started: int | None,
        rss_after: float | None,
    ) -> SoakReport:
        args, results = self.args, self.results
        tally = CallTally.of(results)
        return SoakReport(
            url=self.url,
            pid=self.probe.pid,
            calls=args.calls,
            minutes=args.minutes,
            call_seconds=args.call_seconds,
            sample_seconds=args.sample_seconds,
            calls_started=self.started,
            calls_completed=tally.completed,
            calls_failed=tally.failed,
            failures=tally.failures,
            failure_examples=tally.failure_examples,
            turns=len(tally.latencies) + tally.missing,
            replies=len(tally.latencies),
            replies_missing=tally.missing,
            latency_ms=Percentiles.of_seconds(tally.latencies),
            underruns=tally.underruns,
            underrun_fraction=tally.underrun_fraction,
            frames_sent=self.frames,
            late_frames=self.late_frames,
            late_p99_ms_max=late_p99_max,
            gateway_cpu_percent=gateway_cpu,
            tool_cpu_percent=tool_cpu,
            sessions_started_in_gateway=sessions_started,
            rss_after_cooldown_mb=rss_after,
            leak=leak,
            samples=self.samples,
        )


# ---------------------------------------------------------------------------------------------
# The plot


def plot(report: SoakReport, path: Path) -> bool:
    """RSS and live calls over time, the warm-up shaded and the steady fit drawn, as a PNG;
    False when matplotlib is not installed (`pip install '.[bench]'`)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    samples, leak = report.samples, report.leak
    minutes = [s.t / 60 for s in samples]
    fig, rss_axis = plt.subplots(figsize=(8, 4))
    rss_axis.plot(minutes, [s.rss_mb for s in samples], "-", color="tab:blue", label="RSS")
    rss_axis.axhline(leak.rss_idle_mb, color="tab:blue", linestyle=":", label="idle RSS")
    rss_axis.axvspan(0, leak.warmup_seconds / 60, color="0.9", label="warm-up")
    steady = [s for s in samples if leak.warmup_seconds <= s.t <= leak.steady_end]
    if len(steady) >= 2 and leak.slope_mb_per_hour is not None:
        ts = np.array([s.t for s in steady])
        intercept = float(np.mean([s.rss_mb for s in steady])) - (
            leak.slope_mb_per_hour / 3600
        ) * float(np.mean(ts))
        fit = intercept + leak.slope_mb_per_hour / 3600 * ts
        rss_axis.plot(
            ts / 60,
            fit,
            "--",
            color="tab:red",
            label=f"fit {leak.slope_mb_per_hour:+.1f} MB/h ({leak.verdict})",
        )
    rss_axis.set_xlabel("minutes")
    rss_axis.set_ylabel("gateway RSS (MB)")
    calls_axis = rss_axis.twinx()
    calls_axis.plot(
        minutes, [s.live_calls for s in samples], color="tab:green", alpha=0.6, label="live calls"
    )
    calls_axis.set_ylabel("live calls")
    calls_axis.set_ylim(0, max(report.calls, 1) * 1.3)
    lines = rss_axis.get_legend_handles_labels()
    more = calls_axis.get_legend_handles_labels()
    rss_axis.legend(lines[0] + more[0], lines[1] + more[1], loc="lower right", fontsize=8)
    rss_axis.set_title(f"soak: {report.calls} calls, {report.call_seconds:g} s each")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------------------
# The command line


def _positive(kind: type[float] | type[int]) -> Any:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--calls", type=_positive(int), default=50, help="calls kept up")
    parser.add_argument("--minutes", type=_positive(float), default=30.0, help="soak length")
    parser.add_argument(
        "--call-seconds", type=_positive(float), default=60.0, help="length of each call"
    )
    parser.add_argument("--url", default="http://127.0.0.1:8100", help="gateway base URL")
    parser.add_argument(
        "--gateway-pid", type=int, required=True, help="the gateway's pid (that process only)"
    )
    parser.add_argument(
        "--sample-seconds", type=_positive(float), default=5.0, help="sampling period"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=WARMUP_FRACTION,
        help="share of the run left out of the fit (at least two call lengths are)",
    )
    parser.add_argument(
        "--cooldown", type=float, default=10.0, help="seconds sampled after the last call"
    )
    parser.add_argument(
        "--auth-token",
        default=os.environ.get("TWILIO_AUTH_TOKEN"),
        help="TWILIO_AUTH_TOKEN, when the gateway checks signatures (default: the env)",
    )
    parser.add_argument(
        "--api-token",
        default=os.environ.get("API_TOKEN"),
        help="the gateway's API_TOKEN, to sample how many sessions its store holds",
    )
    parser.add_argument("--speech-seconds", type=_positive(float), default=1.0)
    parser.add_argument("--json", type=Path, help="write the report (with every sample) here")
    parser.add_argument("--png", type=Path, help="plot RSS and live calls over time here")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every sample")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.warmup < 1:
        parser.error("--warmup is a share of the run, within [0, 1)")
    if args.cooldown < 0:
        parser.error("--cooldown must be >= 0")
    run_seconds = args.minutes * 60
    warmup = warmup_seconds(run_seconds, args.call_seconds, args.warmup)
    if warmup > 0.7 * run_seconds:
        parser.error(
            f"the warm-up ({warmup:.0f} s: two call lengths at least) leaves too little of a "
            f"{run_seconds:.0f} s run to judge: use more --minutes or fewer --call-seconds"
        )
    argv_shown = sys.argv[1:] if argv is None else argv
    print(f"$ {shlex.join([sys.executable, '-m', 'bench.soak', *argv_shown])}", flush=True)
    print(
        f"soak: {args.calls} calls of {args.call_seconds:g} s for {args.minutes:g} min "
        f"(~{args.calls / args.call_seconds * 60:.0f} calls started a minute); warm-up "
        f"{warmup:.0f} s; sampling every {args.sample_seconds:g} s",
        flush=True,
    )
    try:
        report = run_blocking(_Soak(args).run())
    except (ValueError, ProcessLookupError) as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    line = summary_line(report)
    for note in report.leak.notes:
        print(f"note: {note}")
    if args.json:
        args.json.write_text(report.to_json() + "\n")
        print(f"report: {args.json}")
    if args.png:
        if plot(report, args.png):
            print(f"plot: {args.png}")
        else:
            print("no plot: matplotlib is not installed (pip install '.[bench]')")
    print(line)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
