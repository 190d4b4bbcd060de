"""Start-up time of the `nf` command, and the reading commands against the previous commit.

Start-up: `nf --help` and `nf sweep plan sweeps/smoke.yaml`, next to baselines measured in the
same run: an empty interpreter (the floor), `import torch`, and the imports of the old `nf_core.pipeline`, which is
what `nf --help` imported before the CLI moved out of nf_core (~7 s cold). Goal: both under 1.5 s.

Reading commands (issue 16), on a finished demo-size sweep (orchestration/demo.yaml's grid, written
by tests/cli_support.py without training) and a voltage table holding its BERs: `nf sweep status`
(goal ≤ 1 s), `nf select` (≤ 2 s; "first answer": its figure drawn, "again": the same answer, the
figure kept) and `nf profile` of one model + generator (≤ 2 s), each also run from a copy of the
commit BASE (default e3cccbe, exported with `git archive`, nothing checked out in the repository) on
its own copy of the sweep, in the same run; the ratio is old / new.

Each command runs in a fresh interpreter (as a user types it) from a folder outside the checkout,
after one untimed warm-up run (the OS file cache); the median wall time is printed, and for the
reading commands the median CPU time too (user + system), which a busy shared machine barely moves.
Run: .venv/bin/python benchmarks/bench_cli.py [--repeats 7] [--base e3cccbe] [--no-startup]
"""

from __future__ import annotations

import argparse
import glob
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 1.5


def wall(
    argv: list[str],
    repeats: int,
    code: Path = ROOT,
    cwd: Path = ROOT,
    before: Callable[[], None] | None = None,
) -> float:
    """Median seconds of ``argv`` from start to exit (after one untimed warm-up run: the OS file cache),
    with the package at ``code`` first on the path, run from ``cwd``; ``before`` runs untimed before each."""
    return timed(argv, repeats, code, cwd, before)[0]


def timed(
    argv: list[str],
    repeats: int,
    code: Path = ROOT,
    cwd: Path = ROOT,
    before: Callable[[], None] | None = None,
) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds: user + system of the process and its children) of ``argv``.
    CPU time hardly moves when other work shares the machine; wall time is what a user waits on a quiet one."""
    env = {**os.environ, "PYTHONPATH": str(code) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    walls, cpus = [], []
    for i in range(repeats + 1):
        if before is not None:
            before()
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
        dt = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr}")
        if i:
            walls.append(dt)
            cpus.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


BASE = "e3cccbe"  # the commit before issue 16's reading-command work
READING_GOALS = {
    "nf sweep status demo": 1.0,
    "nf select demo (first answer)": 2.0,
    "nf select demo (again)": 2.0,
    "nf report demo": 8.0,
}
PROFILE = ["profile", "--model", "resnet18", "--generator", "ConvS", "--dataset", "digits", "--ber", "0.01"]


def export_commit(commit: str, dest: Path) -> Path:
    """The tree of ``commit`` under ``dest`` (git archive: the repository's worktrees and index untouched)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


# Config fields added after BASE (all at their defaults in the demo): the old code's schema refuses them.
NEW_FIELDS = {
    None: ("reproduces",),
    "base": ("training", "wmax", "randbet_ber", "randbet_grad_clip", "randbet_threshold", "awp"),
    "generator": ("chips", "adversarial"),
    "mlflow": ("register_generators",),
}


def _as_old_config(path: Path) -> None:
    """The demo sweep's config as BASE wrote it: the same sweep, without the fields added since."""
    import yaml

    cfg = yaml.safe_load(path.read_text())
    for section, names in NEW_FIELDS.items():
        d = cfg if section is None else cfg.get(section, {})
        for n in names:
            d.pop(n, None)
    path.write_text(yaml.safe_dump(cfg))


def reading_commands(repeats: int, base: str) -> None:
    """The reading commands now and at ``base``, each on its own copy of a demo-size sweep, in one run."""
    sys.path.insert(0, str(ROOT))
    from tests.cli_support import DEMO_VOLTAGE_TABLE, write_demo_sweep

    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="nf-bench-cli-") as tmp:
        t = Path(tmp)
        old_code = export_commit(base, t / "base")
        vt = t / "vt.csv"
        vt.write_text(DEMO_VOLTAGE_TABLE)
        roots = {"new": t / "new-sweeps", "old": t / "old-sweeps"}
        for r in roots.values():
            write_demo_sweep(str(r))
        _as_old_config(roots["old"] / "demo" / "sweep.yaml")
        elsewhere = t / "elsewhere"  # not the checkout: the commands as a user types them anywhere
        elsewhere.mkdir()

        def forget_answers(root: Path) -> Callable[[], None]:
            return lambda: [os.remove(p) for p in glob.glob(str(root / "demo" / "results" / "select_*"))]

        def cases(which: str) -> list[tuple[str, list[str], Callable[[], None] | None]]:
            store = ["--storage", str(roots[which])]
            select = [py, "-m", "orchestration.cli", "select", "demo", "--min-accuracy", "60", "--voltage-table"]
            return [
                ("nf sweep status demo", [py, "-m", "orchestration.cli", "sweep", "status", "demo", *store], None),
                ("nf select demo (first answer)", [*select, str(vt), *store], forget_answers(roots[which])),
                ("nf select demo (again)", [*select, str(vt), *store], None),
                ("nf profile resnet18 + ConvS", [py, "-m", "orchestration.cli", *PROFILE], None),
                (
                    "nf report demo",
                    [py, "-m", "orchestration.cli", "report", "demo", "--voltage-table", str(vt), *store],
                    None,
                ),
            ]

        print(f"\nreading commands on a demo-size sweep: now vs {base} (median of {repeats} runs, from {elsewhere})")
        head = f"{'command':<31}{'old s':>7}{'new s':>7}{'old/new':>8}{'old CPU s':>11}{'new CPU s':>11}{'old/new':>8}"
        print(f"{head}  goal (wall)")
        for (label, new_argv, new_before), (_, old_argv, old_before) in zip(cases("new"), cases("old")):
            old, old_cpu = timed(old_argv, repeats, old_code, elsewhere, old_before)
            new, new_cpu = timed(new_argv, repeats, ROOT, elsewhere, new_before)
            goal = READING_GOALS.get(label, 2.0)
            verdict = f"≤ {goal:g} s " + ("met" if new <= goal else "NOT met")
            print(
                f"{label:<31}{old:>7.2f}{new:>7.2f}{old / new:>8.1f}{old_cpu:>11.2f}{new_cpu:>11.2f}"
                f"{old_cpu / new_cpu:>8.1f}  {verdict}",
                flush=True,
            )


# What the old nf_core.pipeline imported (the module is gone; its imports are the baseline).
OLD_HELP_IMPORTS = (
    "import nf_core.checkpoint, nf_core.data, nf_core.deployed, nf_core.eopm, nf_core.evaluate, "
    "nf_core.generators, nf_core.models, nf_core.train"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per command (median reported)")
    ap.add_argument("--base", default=BASE, help=f"the commit to compare the reading commands with (default {BASE})")
    ap.add_argument("--no-startup", action="store_true", help="only the reading commands")
    a = ap.parse_args()
    if not a.no_startup:
        startup(a.repeats)
    reading_commands(a.repeats, a.base)


def startup(repeats: int) -> None:
    """`nf --help` and `nf sweep plan` against the interpreter floor and `import torch`."""
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
    print(f"median of {repeats} runs each, fresh interpreter per run, {os.cpu_count()} CPUs")
    print(f"{'command':<42}{'s':>7}{'÷ import torch':>16}  goal < {GOAL_S} s")
    results = {}
    for label, argv, goal in cases:
        results[label] = s = wall(argv, repeats)
        torch_s = results.get("python -c 'import torch' (baseline)")
        ratio = f"{s / torch_s:.2f}" if torch_s else ""
        verdict = ("met" if s < GOAL_S else "NOT met") if goal else ""
        print(f"{label:<42}{s:>7.2f}{ratio:>16}  {verdict}", flush=True)


if __name__ == "__main__":
    main()
