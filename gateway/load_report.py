"""What a load run measured: per-call results folded into one report, and the gateway's
CPU and memory read from /proc over the steady part of the run.

Pure functions and plain dataclasses, apart from the /proc readers and the sampling task, so
the arithmetic is tested without a load run. psutil is not a dependency: on Linux, /proc has
everything needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CallResult",
    "CallTally",
    "CoreTicks",
    "GatewayUsage",
    "LoadReport",
    "Percentiles",
    "ProcessProbe",
    "SteadyMeasurement",
    "build_report",
    "core_usage",
    "measure_steady_part",
    "parse_core_ticks",
    "parse_proc_stat_ticks",
    "parse_vm_rss_bytes",
    "percentile",
    "read_core_ticks",
    "summary_line",
]

MB = 1024 * 1024


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of sorted `values`, interpolating between ranks.

    The input must already be sorted: the report sorts each series once and asks for several
    percentiles of it. An empty series has no percentile: NaN.
    """
    if not values:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within [0, 100], got {q}")
    rank = (len(values) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Percentiles:
    """A distribution in milliseconds (None when there were no samples)."""

    count: int
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of_seconds(cls, values: Iterable[float]) -> Percentiles:
        ordered = sorted(values)
        if not ordered:
            return cls(0, None, None, None, None)

        def ms(q: float) -> float:
            return round(percentile(ordered, q) * 1000, 3)

        return cls(len(ordered), ms(50), ms(95), ms(99), ms(100))


@dataclass(slots=True)
class CallResult:
    """What one simulated caller saw. A call fails on its first error and hangs up."""

    error: str | None = None
    failure: str | None = None  # the error's category, for counting like with like
    latencies: list[float] = field(default_factory=list)  # seconds, one per answered turn
    missing: int = 0  # turns with no reply within the reply timeout
    unfinished: int = 0  # turns cut off by the end of the run before they could be judged
    underruns: int = 0
    underrun_seconds: float = 0.0
    reply_seconds: float = 0.0  # audio played plus gaps, greeting included
    frames_sent: int = 0

    def fail(self, failure: str, error: str) -> None:
        if self.error is None:
            self.failure, self.error = failure, error

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(slots=True)
class CallTally:
    """What a set of calls saw, summed: the part of a report every tool builds alike."""

    completed: int
    failed: int
    failures: dict[str, int]  # failure category -> calls
    failure_examples: list[str]  # up to five distinct errors
    latencies: list[float]  # seconds, every answered turn's
    missing: int
    unfinished: int
    underruns: int
    underrun_seconds: float
    reply_seconds: float

    @staticmethod
    def of(results: Sequence[CallResult]) -> CallTally:
        failures: dict[str, int] = {}
        examples: list[str] = []
        for r in results:
            if r.ok:
                continue
            failures[r.failure or "error"] = failures.get(r.failure or "error", 0) + 1
            if r.error not in examples and len(examples) < 5:
                examples.append(r.error or "")
        failed = sum(failures.values())
        return CallTally(
            completed=len(results) - failed,
            failed=failed,
            failures=failures,
            failure_examples=examples,
            latencies=[s for r in results for s in r.latencies],
            missing=sum(r.missing for r in results),
            unfinished=sum(r.unfinished for r in results),
            underruns=sum(r.underruns for r in results),
            underrun_seconds=sum(r.underrun_seconds for r in results),
            reply_seconds=sum(r.reply_seconds for r in results),
        )

    @property
    def underrun_fraction(self) -> float:
        if not self.reply_seconds:
            return 0.0
        return round(self.underrun_seconds / self.reply_seconds, 6)


# -- the gateway process, from /proc


def parse_proc_stat_ticks(text: str) -> int:
    """utime + stime, in clock ticks, from the text of /proc/PID/stat.

    The command name (field 2) is in parentheses and may itself hold spaces or parentheses,
    so the fields are counted from the last ')': the field after it is field 3 (state), which
    puts utime (field 14) and stime (field 15) at offsets 11 and 12.
    """
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def parse_vm_rss_bytes(text: str) -> int:
    """Resident set size from the text of /proc/PID/status (the kernel writes it in kB)."""
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"unexpected VmRSS unit {unit!r}")
            return int(value) * 1024
    raise ValueError("no VmRSS line (a kernel thread, or the process is a zombie)")


class ProcessProbe:
    """CPU time and RSS of one process. Only that pid: a gateway run with worker processes
    needs one probe per worker (children are not summed, since /proc/PID/stat's cutime only
    counts children that have exited and been waited for)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._stat = Path(f"/proc/{pid}/stat")
        self._status = Path(f"/proc/{pid}/status")
        self._tick = 1 / os.sysconf("SC_CLK_TCK")
        self.cpu_seconds()  # fails now, with the pid in the message, if it is not there

    def cpu_seconds(self) -> float:
        try:
            return parse_proc_stat_ticks(self._stat.read_text()) * self._tick
        except FileNotFoundError:
            raise ProcessLookupError(f"no process with pid {self.pid}") from None

    def rss_bytes(self) -> int:
        try:
            return parse_vm_rss_bytes(self._status.read_text())
        except FileNotFoundError:
            raise ProcessLookupError(f"no process with pid {self.pid}") from None


# -- the host, from /proc/stat: is anything else using the cores?

CoreTicks = dict[str, tuple[int, int, int]]  # core -> (busy, steal, total) clock ticks


def parse_core_ticks(text: str) -> CoreTicks:
    """Per-core tick counters from the text of /proc/stat.

    Busy is user + nice + system + irq + softirq (guest time is already inside user); steal is
    time the hypervisor gave this virtual core to someone else, which no process here sees.
    """
    cores: CoreTicks = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, rest.split()[:8])
        busy = user + nice + system + irq + softirq
        cores[name] = (busy, steal, busy + idle + iowait + steal)
    return cores


def read_core_ticks() -> CoreTicks:
    return parse_core_ticks(Path("/proc/stat").read_text())


def core_usage(before: CoreTicks, after: CoreTicks) -> dict[str, dict[str, float]]:
    """Busy and stolen share of each core between two readings, in percent."""
    usage = {}
    for core, (busy1, steal1, total1) in after.items():
        busy0, steal0, total0 = before.get(core, (busy1, steal1, total1))
        total = total1 - total0
        if total > 0:
            usage[core] = {
                "busy_percent": round(100 * (busy1 - busy0) / total, 1),
                "steal_percent": round(100 * (steal1 - steal0) / total, 1),
            }
    return usage


@dataclass(frozen=True, slots=True)
class GatewayUsage:
    """The gateway's cost over the steady part of the run (every call up)."""

    pid: int
    window_seconds: float
    cpu_seconds: float
    cpu_percent: float  # of one core
    cpu_ms_per_call_second: float
    rss_start_mb: float
    rss_peak_mb: float
    rss_per_call_mb: float  # (peak - start) / calls

    @classmethod
    def measure(
        cls,
        pid: int,
        *,
        calls: int,
        window_seconds: float,
        cpu_seconds: float,
        rss_start: int,
        rss_peak: int,
    ) -> GatewayUsage:
        window = max(window_seconds, 1e-9)
        return cls(
            pid=pid,
            window_seconds=round(window_seconds, 3),
            cpu_seconds=round(cpu_seconds, 3),
            cpu_percent=round(100 * cpu_seconds / window, 1),
            cpu_ms_per_call_second=round(1000 * cpu_seconds / (window * max(calls, 1)), 3),
            rss_start_mb=round(rss_start / MB, 1),
            rss_peak_mb=round(rss_peak / MB, 1),
            rss_per_call_mb=round((rss_peak - rss_start) / MB / max(calls, 1), 3),
        )


RSS_SAMPLE_INTERVAL = 0.5


@dataclass(slots=True)
class SteadyMeasurement:
    """What `measure_steady_part` found; None where it could not measure."""

    gateway: GatewayUsage | None = None
    client_cpu_percent: float | None = None
    host_cores: dict[str, dict[str, float]] | None = None


async def measure_steady_part(
    probe: ProcessProbe | None, calls: int, steady_start: float, end_at: float
) -> SteadyMeasurement:
    """CPU of the gateway, of this process and of every core over [steady_start, end_at],
    and the gateway's RSS sampled all along (its peak may come during the ramp)."""
    measured = SteadyMeasurement()
    rss_start = rss_peak = probe.rss_bytes() if probe else 0
    started: tuple[float, float, float, CoreTicks] | None = None
    while (now := time.monotonic()) < end_at:
        if started is None and now >= steady_start:
            cpu = probe.cpu_seconds() if probe else 0.0
            started = (now, time.process_time(), cpu, read_core_ticks())
        if probe:
            with contextlib.suppress(ProcessLookupError):
                rss_peak = max(rss_peak, probe.rss_bytes())
        wake = end_at if started is not None else min(end_at, steady_start)
        await asyncio.sleep(min(RSS_SAMPLE_INTERVAL, max(0.0, wake - now)))
    if started is None:
        return measured
    window_start, own_start, cpu_start, cores_start = started
    window = time.monotonic() - window_start
    if window <= 0:
        return measured
    measured.client_cpu_percent = round(100 * (time.process_time() - own_start) / window, 1)
    measured.host_cores = core_usage(cores_start, read_core_ticks())
    if probe is None:
        return measured
    try:
        cpu = probe.cpu_seconds() - cpu_start
        rss_peak = max(rss_peak, probe.rss_bytes())
    except ProcessLookupError:
        return measured  # the gateway died: the failed calls say so
    measured.gateway = GatewayUsage.measure(
        probe.pid,
        calls=calls,
        window_seconds=window,
        cpu_seconds=cpu,
        rss_start=rss_start,
        rss_peak=rss_peak,
    )
    return measured


# -- the report


@dataclass(frozen=True, slots=True)
class LoadReport:
    url: str
    calls: int
    ramp: float
    duration: float
    speech_seconds: float
    event_loop: str
    calls_completed: int
    calls_failed: int
    failures: dict[str, int]  # category -> calls
    failure_examples: list[str]
    turns: int  # turns judged: answered or missing
    replies: int
    replies_missing: int
    unfinished_turns: int
    latency_ms: Percentiles  # first reply audio played - the caller's last voiced frame sent
    underruns: int
    underrun_seconds: float
    reply_seconds: float
    underrun_fraction: float
    frames_sent: int
    late_frames: int  # sent a whole frame (20 ms) or more behind their slot
    lateness_ms: Percentiles  # the load tool's own sends behind their real-time slot
    client_cpu_percent: float | None  # the load tool over the steady part: near 100 = saturated
    gateway: GatewayUsage | None
    # Every core over the steady part: busy beyond the gateway's and the load tool's own CPU
    # is another process competing; steal is the hypervisor's.
    host_cores: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.calls_failed == 0 and self.replies_missing == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def build_report(
    results: Sequence[CallResult],
    lateness: Sequence[float],
    *,
    url: str,
    ramp: float,
    duration: float,
    speech_seconds: float,
    event_loop: str,
    client_cpu_percent: float | None,
    gateway: GatewayUsage | None,
    frame_seconds: float,
    host_cores: dict[str, dict[str, float]] | None = None,
) -> LoadReport:
    tally = CallTally.of(results)
    return LoadReport(
        url=url,
        calls=len(results),
        ramp=ramp,
        duration=duration,
        speech_seconds=speech_seconds,
        event_loop=event_loop,
        calls_completed=tally.completed,
        calls_failed=tally.failed,
        failures=tally.failures,
        failure_examples=tally.failure_examples,
        turns=len(tally.latencies) + tally.missing,
        replies=len(tally.latencies),
        replies_missing=tally.missing,
        unfinished_turns=tally.unfinished,
        latency_ms=Percentiles.of_seconds(tally.latencies),
        underruns=tally.underruns,
        underrun_seconds=round(tally.underrun_seconds, 3),
        reply_seconds=round(tally.reply_seconds, 3),
        underrun_fraction=tally.underrun_fraction,
        frames_sent=sum(r.frames_sent for r in results),
        late_frames=sum(1 for x in lateness if x >= frame_seconds),
        lateness_ms=Percentiles.of_seconds(lateness),
        client_cpu_percent=client_cpu_percent,
        gateway=gateway,
        host_cores=host_cores or {},
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def summary_line(report: LoadReport) -> str:
    """The run in one line, for a terminal or a log."""
    lat, late = report.latency_ms, report.lateness_ms
    parts = [
        f"load {report.calls} calls: {report.calls_completed} completed, "
        f"{report.calls_failed} failed" + (f" {report.failures}" if report.failures else ""),
        f"{report.replies}/{report.turns} replies "
        f"(p50 {_ms(lat.p50)} / p95 {_ms(lat.p95)} / p99 {_ms(lat.p99)} ms), "
        f"{report.replies_missing} missing",
        f"underruns {report.underruns} ({report.underrun_fraction:.2%} of reply time)",
        f"send lateness p50 {late.p50 or 0:.1f} / p99 {late.p99 or 0:.1f} / "
        f"max {late.max or 0:.1f} ms",
    ]
    if report.client_cpu_percent is not None:
        parts.append(f"load tool CPU {report.client_cpu_percent:.0f}%")
    g = report.gateway
    if g is not None:
        parts.append(
            f"gateway CPU {g.cpu_percent:.0f}% ({g.cpu_ms_per_call_second:.2f} ms/call-s), "
            f"RSS {g.rss_start_mb:.0f}->{g.rss_peak_mb:.0f} MB ({g.rss_per_call_mb:.2f} MB/call)"
        )
    if report.host_cores:
        cores = ", ".join(
            f"{name} {u['busy_percent']:.0f}%"
            + (f" (steal {u['steal_percent']:.0f}%)" if u["steal_percent"] >= 1 else "")
            for name, u in report.host_cores.items()
        )
        parts.append(f"cores busy: {cores}")
    return "; ".join(parts)
