"""bench.workers_scaling: its refusals, the quota files it writes and the verdict. The real
run needs root and a cgroup v1 cpu controller, so here a directory stands in for the cgroup
file system; no timing is asserted."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.workers_scaling import BenchError, CpuQuota, check_cgroup, main, parse_quota


def test_a_machine_without_the_cgroup_cpu_controller_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(BenchError, match="no cgroup v1 cpu controller"):
        check_cgroup(tmp_path)
    assert main(["--cgroup-root", str(tmp_path / "nowhere"), "--ns", "1"]) == 2
    assert "no cgroup v1 cpu controller" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["0", "1.5", "half", "-0.2"])
def test_a_quota_outside_one_core_is_refused(bad: str) -> None:
    with pytest.raises(Exception, match="--quota"):
        parse_quota(bad)


@pytest.mark.parametrize(
    "argv",
    [
        ["--quota", "2"],
        ["--ns", "0"],
        ["--workers", "x"],
        ["--duration", "1"],
        ["--baseline-calls", "0"],
    ],
)
def test_bad_arguments_exit_with_status_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2


def test_a_quota_is_written_as_a_share_of_a_10_ms_period(tmp_path: Path) -> None:
    quota = CpuQuota(tmp_path, "worker-1", 0.25)
    assert (quota.path / "cpu.cfs_period_us").read_text() == "10000"
    assert (quota.path / "cpu.cfs_quota_us").read_text() == "2500"
    quota.add(4242)
    assert (quota.path / "cgroup.procs").read_text() == "4242"
    (quota.path / "cpu.stat").write_text("nr_periods 200\nnr_throttled 50\nthrottled_time 9\n")
    assert quota.throttling() == (200, 50)
    for name in ("cpu.cfs_period_us", "cpu.cfs_quota_us", "cgroup.procs", "cpu.stat"):
        (quota.path / name).unlink()  # a real cgroup's files go with it
    quota.remove()
    assert not quota.path.exists()


def test_a_group_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("")  # a file where the group's directory would go
    with pytest.raises(BenchError, match="cannot set a CPU quota"):
        CpuQuota(tmp_path, "taken", 0.5)
