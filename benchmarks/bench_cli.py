"""Start-up time of the `nf` command: `nf --help` and `nf sweep plan sweeps/smoke.yaml`.

Each command runs in a fresh interpreter (as a user types it), several times; the median wall
time is printed next to baselines measured in the same run: an empty interpreter (the floor),
`import torch`, and the imports of the old `nf_core.pipeline` (the one-process driver, since
replaced by orchestration/experiment.py), which is what `nf --help` imported before the CLI
moved out of nf_core (~7 s cold). Goal: both commands under 1.5 s.
Run: .venv/bin/python benchmarks/bench_cli.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 1.5


def wall(argv: list[str], repeats: int) -> float:
    """Median seconds of ``argv`` from start to exit (after one untimed warm-up run: the OS file cache)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        dt = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr}")
        if i:
            times.append(dt)
    return statistics.median(times)


# What the old nf_core.pipeline imported (the module is gone; its imports are the baseline).
OLD_HELP_IMPORTS = (
    "import nf_core.checkpoint, nf_core.data, nf_core.deployed, nf_core.eopm, nf_core.evaluate, "
    "nf_core.generators, nf_core.models, nf_core.train"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per command (median reported)")
    a = ap.parse_args()
    py = sys.executable
    cases = [
        ("python -c pass (interpreter floor)", [py, "-c", "pass"], False),
        ("python -c 'import torch' (baseline)", [py, "-c", "import torch"], False),
        ("import nf_core.pipeline (old nf --help)", [py, "-c", OLD_HELP_IMPORTS], False),
        ("nf --help", [py, "-m", "orchestration.cli", "--help"], True),
        (
            "nf sweep plan sweeps/smoke.yaml",
            [py, "-m", "orchestration.cli", "sweep", "plan", "sweeps/smoke.yaml"],
            True,
        ),
    ]
    print(f"median of {a.repeats} runs each, fresh interpreter per run, {os.cpu_count()} CPUs")
    print(f"{'command':<42}{'s':>7}{'÷ import torch':>16}  goal < {GOAL_S} s")
    results = {}
    for label, argv, goal in cases:
        results[label] = s = wall(argv, a.repeats)
        torch_s = results.get("python -c 'import torch' (baseline)")
        ratio = f"{s / torch_s:.2f}" if torch_s else ""
        verdict = ("met" if s < GOAL_S else "NOT met") if goal else ""
        print(f"{label:<42}{s:>7.2f}{ratio:>16}  {verdict}", flush=True)


if __name__ == "__main__":
    main()
