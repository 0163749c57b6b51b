"""Load sweep: the load tool at several call counts in turn, as one table (and a plot).

Run the gateway under test on one core, with the deterministic providers so that the gateway
is what gets measured:

    taskset -c 0 env STT_PROVIDER=scripted TTS_PROVIDER=tone AGENT_PROVIDER=instant \\
        .venv/bin/voice-gateway serve --port 8100

and the sweep on the other core, with the gateway's pid (the pid of that `voice-gateway`
process, e.g. `pgrep -f 'voice-gateway serve --port 8100'`; only that process is measured,
not children):

    taskset -c 1 .venv/bin/python -m bench.load_sweep --ns 10,50,100,200 --duration 30 \\
        --url http://127.0.0.1:8100 --gateway-pid PID [--png sweep.png] [--json sweep.json]

Each N is one `run_load`, exactly what `voice-gateway load --calls N ...` runs (the command
is printed before each). Calls start over `--ramp` seconds (default N/20, at least 5); the
gateway's CPU is measured over the `--duration` seconds that follow, with every call up. The
sweep stops after the first N with a failed call or a missing reply, unless --keep-going.
A run's `lateness p99` near or above 20 ms means the load tool, not the gateway, could not
keep up: check the `tool CPU` column before believing the rest of that row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from gateway.load import run_blocking, run_load
from gateway.load_report import LoadReport, summary_line

COLUMNS = (
    ("N", 5),
    ("completed", 9),
    ("failed", 6),
    ("lat p50", 7),
    ("lat p95", 7),
    ("missing", 7),
    ("underrun", 8),
    ("late p99", 8),
    ("tool CPU", 8),
    ("gw CPU", 6),
    ("ms/call-s", 9),
    ("MB/call", 7),
)


def auto_ramp(calls: int) -> float:
    # About 20 new calls a second: call setup is then a small share of the gateway's work.
    return max(5.0, calls / 20)


def load_command(n: int, ramp: float, args: argparse.Namespace) -> str:
    words = ["voice-gateway", "load", "--calls", str(n), "--ramp", f"{ramp:g}"]
    words += ["--duration", f"{args.duration:g}", "--url", args.url]
    if args.gateway_pid is not None:
        words += ["--gateway-pid", str(args.gateway_pid)]
    if args.speech_seconds != 1.0:
        words += ["--speech-seconds", f"{args.speech_seconds:g}"]
    return shlex.join(words)


def num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def aligned(rows: Sequence[Sequence[str]], min_widths: Sequence[int] | None = None) -> list[str]:
    """Rows of cells as lines, every column right-aligned to its widest cell."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    if min_widths is not None:
        widths = [max(w, m) for w, m in zip(widths, min_widths, strict=True)]
    return ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]


def table(reports: Sequence[LoadReport]) -> list[str]:
    """One row per run; latencies and lateness in ms, underruns as a share of reply time."""
    rows = [[name for name, _ in COLUMNS]]
    for r in reports:
        g = r.gateway
        rows.append(
            [
                str(r.calls),
                str(r.calls_completed),
                str(r.calls_failed),
                num(r.latency_ms.p50, ".0f"),
                num(r.latency_ms.p95, ".0f"),
                str(r.replies_missing),
                f"{r.underrun_fraction:.2%}",
                num(r.lateness_ms.p99, ".1f"),
                num(r.client_cpu_percent, ".0f") + "%",
                (num(g.cpu_percent, ".0f") + "%") if g else "-",
                num(g.cpu_ms_per_call_second, ".2f") if g else "-",
                num(g.rss_per_call_mb, ".3f") if g else "-",
            ]
        )
    return aligned(rows, [width for _, width in COLUMNS])


def plot(reports: Sequence[LoadReport], path: Path) -> bool:
    """Latency and gateway CPU against N, as a PNG; False when matplotlib is not installed
    (it is not a dependency of the gateway)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ns = [r.calls for r in reports]
    fig, latency_axis = plt.subplots(figsize=(7, 4))
    for label, values in (
        ("latency p50", [r.latency_ms.p50 for r in reports]),
        ("latency p95", [r.latency_ms.p95 for r in reports]),
    ):
        latency_axis.plot(
            ns, [v if v is not None else float("nan") for v in values], "o-", label=label
        )
    latency_axis.set_xlabel("concurrent calls")
    latency_axis.set_ylabel("reply latency (ms)")
    cpu_axis = latency_axis.twinx()
    cpu = [r.gateway.cpu_percent if r.gateway else float("nan") for r in reports]
    cpu_axis.plot(ns, cpu, "s--", color="tab:red", label="gateway CPU")
    cpu_axis.set_ylabel("gateway CPU (% of one core)")
    lines = latency_axis.get_legend_handles_labels()
    more = cpu_axis.get_legend_handles_labels()
    latency_axis.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def parse_ns(text: str) -> list[int]:
    try:
        ns = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--ns wants comma-separated integers, got {text!r}"
        ) from None
    if not ns or min(ns) < 1:
        raise argparse.ArgumentTypeError(f"--ns wants call counts of 1 or more, got {text!r}")
    return ns


async def sweep(args: argparse.Namespace) -> list[LoadReport]:
    reports: list[LoadReport] = []
    for i, n in enumerate(args.ns):
        if i:
            # The previous run's sessions end after its callers hang up; let them go first.
            await asyncio.sleep(args.gap)
        ramp = auto_ramp(n) if args.ramp is None else args.ramp
        print(f"$ {load_command(n, ramp, args)}", flush=True)
        report = await run_load(
            args.url,
            n,
            ramp,
            args.duration,
            auth_token=args.auth_token,
            gateway_pid=args.gateway_pid,
            speech_seconds=args.speech_seconds,
        )
        print(summary_line(report), flush=True)
        reports.append(report)
        if not report.ok and not args.keep_going:
            print(f"stopping: N={n} lost calls or replies (--keep-going to go on)")
            break
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ns", type=parse_ns, default=[10, 50, 100], help="e.g. 10,50,100")
    parser.add_argument("--duration", type=float, default=30.0, help="steady seconds per N")
    parser.add_argument("--ramp", type=float, help="seconds to start the calls (default N/20)")
    parser.add_argument("--url", default="http://127.0.0.1:8100", help="gateway base URL")
    parser.add_argument("--gateway-pid", type=int, help="measure this process's CPU and RSS")
    parser.add_argument("--auth-token", help="TWILIO_AUTH_TOKEN, when the gateway checks it")
    parser.add_argument("--speech-seconds", type=float, default=1.0)
    parser.add_argument("--gap", type=float, default=5.0, help="seconds between runs")
    parser.add_argument("--keep-going", action="store_true", help="do not stop on a bad run")
    parser.add_argument("--png", type=Path, help="plot latency and CPU against N here")
    parser.add_argument("--json", type=Path, help="write every run's report here")
    args = parser.parse_args(argv)

    print(f"$ {shlex.join([sys.executable, '-m', 'bench.load_sweep', *sys.argv[1:]])}")
    started = time.monotonic()
    try:
        reports = run_blocking(sweep(args))
    except (ValueError, ProcessLookupError) as exc:
        print(f"load_sweep: {exc}", file=sys.stderr)
        return 2
    print()
    print("latency = first reply audio played - last voiced frame sent (ms); late = the load")
    print("tool's send lateness (ms); gw CPU = % of one core; ms/call-s = gateway CPU per")
    print("call-second; MB/call = (peak - start RSS) / N")
    for line in table(reports):
        print(line)
    print(f"({time.monotonic() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps([r.to_dict() for r in reports], indent=2) + "\n")
        print(f"reports: {args.json}")
    if args.png:
        if plot(reports, args.png):
            print(f"plot: {args.png}")
        else:
            print("no plot: matplotlib is not installed (pip install matplotlib)")
    return 0 if reports and all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
