"""Do worker processes multiply what the gateway carries? `serve --workers K`, each worker
held to the same CPU quota, for K = 1 and 2.

On a 2-core machine the load tool needs a good share of a core itself, so two workers and the
load tool cannot each have a whole core. Instead every worker process is put in its own
cgroup with the same CPU quota, `--quota` of a core (10 ms period): K workers at quota q
stand for K cores scaled by q, and the load tool, unpinned, has what is left. For each K the
tool starts `voice-gateway serve --port PORT --workers K` with the deterministic providers
and `REDIS_URL` (K = 1 is a plain `serve`), caps its workers, and runs the load tool at K x n
calls for every n of `--ns`, each as `voice-gateway load` runs it, after a baseline run of
`--baseline-calls` calls (10). The ratio of the highest call counts sustained is the scaling.

Sustained: no failed call, no missing reply, underruns under 1 % of reply time, and reply
latency p95 within 300 ms of the baseline run's (the issue's one-core targets). The
`throttled` column is the share of quota periods in which a worker used up its quota (the
busiest worker's): near 100 % means the workers are saturated. `split` is each worker's
share of the workers' CPU: the kernel, not the gateway, decides which worker accepts a
connection, and a lopsided split caps the scaling below K.

Needs root and the cgroup v1 cpu controller (`/sys/fs/cgroup/cpu`), and a Redis server:

    .venv/bin/python -m bench.workers_scaling --quota 0.25 --ns 100,150,200,250 \\
        --duration 30 [--redis-url redis://127.0.0.1:6379/15] [--port 8150] [--json FILE]

Exit status 0 when every K sustained at least one n, 1 otherwise, 2 for bad arguments or a
machine where the quota cannot be set.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.load_sweep import aligned, auto_ramp, num, parse_ns
from gateway.load import START_DELAY, run_blocking, run_load
from gateway.load_report import LoadReport, ProcessProbe, summary_line

CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 10_000
LATENCY_HEADROOM_MS = 300.0  # p95 may rise this much above the baseline run's
MAX_UNDERRUN = 0.01
DETERMINISTIC = {"STT_PROVIDER": "scripted", "TTS_PROVIDER": "tone", "AGENT_PROVIDER": "instant"}


class BenchError(Exception):
    """The benchmark cannot run here (a message for the user)."""


class CpuQuota:
    """A cgroup (v1) holding one process to `share` of a core."""

    def __init__(self, root: Path, name: str, share: float) -> None:
        self.path = root / name
        try:
            self.path.mkdir()
        except OSError as exc:
            raise BenchError(f"cannot set a CPU quota in {root}: {exc}") from exc
        try:
            (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(round(share * PERIOD_US)))
        except OSError as exc:
            self.remove()
            raise BenchError(f"cannot set a CPU quota in {root}: {exc}") from exc

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def throttling(self) -> tuple[int, int]:
        """(quota periods, periods in which the quota ran out) so far."""
        stat = dict(
            line.split() for line in (self.path / "cpu.stat").read_text().splitlines() if line
        )
        return int(stat.get("nr_periods", 0)), int(stat.get("nr_throttled", 0))

    def remove(self) -> None:
        try:
            self.path.rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:
            print(f"workers_scaling: could not remove {self.path}: {exc}", file=sys.stderr)


def check_cgroup(root: Path) -> None:
    if not (root / "cpu.cfs_quota_us").exists():
        raise BenchError(
            f"no cgroup v1 cpu controller at {root} (this tool sets quotas there; on cgroup v2 "
            "give each worker a cpu.max instead, by hand)"
        )
    if not os.access(root, os.W_OK):
        raise BenchError(f"cannot write to {root}: run as root")


def worker_pids(server: subprocess.Popen[bytes], workers: int) -> list[int]:
    """The processes that serve calls: the server itself, or the workers uvicorn spawned."""
    if workers == 1:
        return [server.pid]
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    pids = []
    for pid in map(int, children):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline:  # not multiprocessing's resource tracker
            pids.append(pid)
    return pids


@dataclass
class Gateway:
    process: subprocess.Popen[bytes]
    url: str
    pids: list[int]
    quotas: list[CpuQuota] = field(default_factory=list)


@contextmanager
def running_gateway(args: argparse.Namespace, workers: int) -> Iterator[Gateway]:
    env = {
        **os.environ,
        **DETERMINISTIC,
        "SIP_PORT": "0",
        "REDIS_URL": args.redis_url,
        "LOG_LEVEL": "warning",
    }
    command = [sys.executable, "-m", "gateway", "serve", "--port", str(args.port)]
    command += ["--workers", str(workers)]
    print(f"$ {shlex.join(command)}", flush=True)
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{args.port}"
    gateway = Gateway(process, url, [])
    try:
        deadline = time.monotonic() + 60
        while len(gateway.pids) < workers or not _ready(url):
            if process.poll() is not None:
                raise BenchError(f"the gateway exited with status {process.returncode}")
            if time.monotonic() > deadline:
                raise BenchError("the gateway did not become ready within 60 s")
            time.sleep(0.2)
            gateway.pids = worker_pids(process, workers)
        for pid in gateway.pids:
            quota = CpuQuota(args.cgroup_root, f"voice-gateway-bench-{pid}", args.quota)
            gateway.quotas.append(quota)
            quota.add(pid)
        yield gateway
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for quota in gateway.quotas:
            quota.remove()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Run:
    workers: int
    report: LoadReport
    worker_cpu_percent: float  # the workers' CPU over the steady part, % of one core
    throttled: float  # the busiest worker's share of periods that ran out of quota
    split: list[float]  # each worker's share of the workers' CPU
    baseline: bool = False  # the light run the others' latency is judged against
    sustained: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "workers": self.workers,
            "calls": self.report.calls,
            "baseline": self.baseline,
            "sustained": self.sustained,
            "worker_cpu_percent": self.worker_cpu_percent,
            "throttled": self.throttled,
            "split": self.split,
            "report": self.report.to_dict(),
        }


async def measured_load(
    gateway: Gateway, workers: int, calls: int, args: argparse.Namespace
) -> Run:
    """One `run_load`, with the workers' CPU and throttling read over its steady part."""
    ramp = auto_ramp(calls) if args.ramp is None else args.ramp
    words = ["voice-gateway", "load", "--calls", str(calls), "--ramp", f"{ramp:g}"]
    print(f"$ {shlex.join([*words, '--duration', f'{args.duration:g}', '--url', gateway.url])}")
    probes = [ProcessProbe(pid) for pid in gateway.pids]
    steady_start = time.monotonic() + START_DELAY + ramp

    async def steady_usage() -> tuple[list[float], list[tuple[int, int]], float]:
        await asyncio.sleep(max(0.0, steady_start - time.monotonic()))
        cpu0 = [p.cpu_seconds() for p in probes]
        throttle0 = [q.throttling() for q in gateway.quotas]
        t0 = time.monotonic()
        await asyncio.sleep(args.duration - 1)  # the calls hang up at the end
        cpu = [p.cpu_seconds() - c for p, c in zip(probes, cpu0, strict=True)]
        throttling = [
            (periods - p0, throttled - t0_)
            for (periods, throttled), (p0, t0_) in zip(
                (q.throttling() for q in gateway.quotas), throttle0, strict=True
            )
        ]
        return cpu, throttling, time.monotonic() - t0

    usage = asyncio.create_task(steady_usage())
    report = await run_load(gateway.url, calls, ramp, args.duration)
    cpu, throttling, window = await usage
    total = sum(cpu)
    print(summary_line(report), flush=True)
    return Run(
        workers=workers,
        report=report,
        worker_cpu_percent=round(100 * total / window, 1),
        throttled=max((t / p if p else 0.0) for p, t in throttling),
        split=[round(c / total, 3) if total else 0.0 for c in cpu],
    )


def judge(baseline: Run, runs: Sequence[Run]) -> None:
    """Marks each run sustained or not, against the baseline run of its worker count."""
    base = baseline.report.latency_ms.p95
    for run in (baseline, *runs):
        r = run.report
        p95 = r.latency_ms.p95
        run.sustained = (
            r.ok
            and r.underrun_fraction < MAX_UNDERRUN
            and base is not None
            and p95 is not None
            and p95 <= base + LATENCY_HEADROOM_MS
        )


async def scale(args: argparse.Namespace) -> list[Run]:
    runs: list[Run] = []
    for workers in args.workers:
        with running_gateway(args, workers) as gateway:
            baseline = await measured_load(gateway, workers, args.baseline_calls, args)
            baseline.baseline = True
            mine: list[Run] = []
            for n in args.ns:
                await asyncio.sleep(args.gap)  # the previous run's sessions end
                mine.append(await measured_load(gateway, workers, workers * n, args))
                judge(baseline, mine)
                if not mine[-1].sustained and not args.keep_going:
                    break
            runs += [baseline, *mine]
    return runs


def table(runs: Sequence[Run]) -> list[str]:
    head = ["workers", "N", "failed", "missing", "p50", "p95", "underrun", "tool CPU"]
    head += ["wk CPU", "throttled", "split", "sustained"]
    rows = [head]
    for run in runs:
        r = run.report
        rows.append(
            [
                str(run.workers),
                str(r.calls),
                str(r.calls_failed),
                str(r.replies_missing),
                num(r.latency_ms.p50, ".0f"),
                num(r.latency_ms.p95, ".0f"),
                f"{r.underrun_fraction:.2%}",
                "-" if r.client_cpu_percent is None else f"{r.client_cpu_percent:.0f}%",
                f"{run.worker_cpu_percent:.0f}%",
                f"{run.throttled:.0%}",
                "/".join(f"{s:.2f}" for s in run.split),
                "baseline" if run.baseline else "yes" if run.sustained else "no",
            ]
        )
    return aligned(rows)


def verdict(runs: Sequence[Run], workers: Sequence[int]) -> tuple[dict[int, int], str]:
    best = {
        k: max(
            (r.report.calls for r in runs if r.workers == k and r.sustained and not r.baseline),
            default=0,
        )
        for k in workers
    }
    parts = [f"{k} worker{'s' if k > 1 else ''}: {best[k]} calls" for k in workers]
    first = best[workers[0]]
    ratios = [f"{k}/{workers[0]}: {best[k] / first:.2f}x" for k in workers[1:] if first and best[k]]
    return best, "highest sustained: " + ", ".join(parts) + (
        f" ({', '.join(ratios)})" if ratios else ""
    )


def parse_workers(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--workers wants integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--workers wants counts of 1 or more, got {text!r}")
    return values


def parse_quota(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--quota wants a number, got {text!r}") from None
    if not 0.01 <= value <= 1:
        raise argparse.ArgumentTypeError(f"--quota is a share of one core, 0.01 to 1: {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quota", type=parse_quota, default=0.25, help="share of a core/worker")
    parser.add_argument("--ns", type=parse_ns, default=[100, 150, 200], help="calls per worker")
    parser.add_argument(
        "--baseline-calls", type=int, default=10, help="calls of the run latency is judged by"
    )
    parser.add_argument("--workers", type=parse_workers, default=[1, 2], help="e.g. 1,2")
    parser.add_argument("--duration", type=float, default=30.0, help="steady seconds per run")
    parser.add_argument("--ramp", type=float, help="seconds to start the calls (default N/20)")
    parser.add_argument("--port", type=int, default=8150)
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
    )
    parser.add_argument("--cgroup-root", type=Path, default=CGROUP_CPU)
    parser.add_argument("--gap", type=float, default=5.0, help="seconds between runs")
    parser.add_argument("--keep-going", action="store_true", help="go on past an unsustained n")
    parser.add_argument("--json", type=Path, help="write every run here")
    args = parser.parse_args(argv)
    if args.duration <= 2:
        parser.error("--duration must be more than 2 seconds")
    if args.baseline_calls < 1:
        parser.error("--baseline-calls must be at least 1")

    print(f"$ {shlex.join([sys.executable, '-m', 'bench.workers_scaling', *sys.argv[1:]])}")
    try:
        check_cgroup(args.cgroup_root)
        runs = run_blocking(scale(args))
    except BenchError as exc:
        print(f"workers_scaling: {exc}", file=sys.stderr)
        return 2
    print()
    print(f"each worker held to {args.quota:g} of a core; N = calls; p50/p95 reply latency (ms);")
    print("wk CPU = all workers, % of one core; throttled = busiest worker's periods at quota")
    for line in table(runs):
        print(line)
    best, line = verdict(runs, args.workers)
    print(line)
    if args.json:
        payload = {"quota": args.quota, "best": best, "runs": [r.to_dict() for r in runs]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"runs: {args.json}")
    return 0 if all(best.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
