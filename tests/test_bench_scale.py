"""benchmarks/bench_scale.py at its smallest sizes, so it cannot rot: the real runner on two tiny synthetic
sweeps, every figure printed, the slope between them computed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_scale_smallest_sizes() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_scale.py"), "--items", "8", "20"],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    rows = [ln.split() for ln in lines if re.match(r"\s*\d+ ", ln)]
    assert [int(r[0]) for r in rows] == [8, 20], out.stdout  # the sizes asked for, in plan items
    for r in rows:
        wall, per_item, rss, state, mlflow, status, resume = map(float, r[1:])
        # seconds per item is wall ÷ items (wall printed to 0.1 s, per item to 0.001 s)
        assert abs(per_item - wall / int(r[0])) <= 0.05 / int(r[0]) + 0.0005, r
        assert rss > 50 and state > 0 and 0 < mlflow < wall and status > 0 and resume > 0, r
    slope = next(ln for ln in lines if ln.startswith("slope 8->20:"))
    assert re.search(r"wall_s -?\d+\.\d\d, peak_rss_mb -?\d+\.\d\d", slope), slope
