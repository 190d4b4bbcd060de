"""benchmarks/bench_scale.py at its smallest size, so it cannot rot: the real runner on a tiny synthetic
sweep (on a local folder and on S3), every figure printed; and the slope lines it prints between sizes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_scale  # noqa: E402 (benchmarks/ is not a package)


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_bench_scale_smallest_size(storage: str) -> None:
    """The smallest size on a local folder, and on S3 (the benchmark starts moto on loopback itself)."""
    s3 = ["--s3"] if storage == "s3" else []
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_scale.py"), "--items", "8", *s3],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"storage: {'S3 (moto on loopback)' if s3 else 'a local folder'}" in out.stdout, out.stdout
    rows = [ln.split() for ln in out.stdout.splitlines() if re.match(r"\s*\d+ ", ln)]
    assert [int(r[0]) for r in rows] == [8], out.stdout  # the size asked for, in plan items
    wall, per_item, rss, state, mlflow, status, resume = map(float, rows[0][1:])
    # seconds per item is wall ÷ items (wall printed to 0.1 s, per item to 0.001 s)
    assert abs(per_item - wall / 8) <= 0.05 / 8 + 0.0005, rows
    assert rss > 50 and state > 0 and 0 < mlflow < wall and status > 0 and resume > 0, rows


def test_slope_is_the_log_log_growth_between_sizes() -> None:
    keys = ("wall_s", "peak_rss_mb", "tune_state_kb", "mlflow_s", "status_s", "resume_s")
    small = {"items": 100, **dict.fromkeys(keys, 2.0)}
    big = {"items": 1000, "wall_s": 20.0, "peak_rss_mb": 2.0, "tune_state_kb": 200.0}  # linear, flat, quadratic
    big |= {"mlflow_s": 20.0, "status_s": 2.0, "resume_s": 0.2}  # ... and shrinking
    (line,) = bench_scale.slope_lines([small, big])
    assert line == (
        "slope 100->1000: wall_s 1.00, peak_rss_mb 0.00, tune_state_kb 2.00, mlflow_s 1.00, status_s 0.00, "
        "resume_s -1.00"
    )
