"""`nf sweep plan` and `nf sweep status` at the scale of the paper's programme and beyond.

Plan: the full programme (every valid sweeps/*.yaml) in ONE `nf sweep plan` call against one
call per config (what `nf sweep plan` took before: one file), and plan() of a 5,050-item grid.
Status: a synthetic mid-sweep store of 5,050 items (tests/status_support.py writes the files the
trainables write: ~60% done, 1% running, 1% failed, the rest pending), on a local folder and on
moto's S3 server on loopback. The baseline is the old ``runner.stage_states`` (copied below:
exists() + read per item, sequential, states only) in the same run. The new path is timed cold
(no index: it reads every non-pending item's JSON files once, concurrently, and writes the
index), warm (index present: one listing, the index, the running items) and states-only (what
`nf report` and `nf sweep list` use). The CLI rows are whole `nf` processes, imports included;
the old CLI imported torch and Ray (runner -> trainables) before reading anything.
Run: .venv/bin/python benchmarks/bench_status.py [--items-only] [--no-s3]
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from orchestration.spec.config import ConfigError, load_config, parse_config  # noqa: E402
from orchestration.spec.plan import plan  # noqa: E402
from orchestration.store.storage import Store  # noqa: E402
from orchestration.sweep.status import INDEX_FILE, item_dir, stage_states, sweep_status  # noqa: E402
from tests.status_support import synthetic_store, write_local, write_s3  # noqa: E402
from tests.sweep_support import TINY, start_moto  # noqa: E402

BIG = {
    **TINY,
    "name": "big",
    "models": ["resnet18", "resnet50", "vgg11", "vgg16", "vgg19"],
    "generators": ["ConvL", "ConvS", "DeConvL", "DeConvS", "UNetL", "UNetS"],
    "train_bers": [0.01, 0.02, 0.03, 0.05],
    "lambdas": [0.5, 1, 2, 5, 10, 20, 50],
    "seeds": [0, 1],
    "transfer": True,
}  # 10 base + 3 x 1,680 generator/eval/transfer items = 5,050


def old_stage_states(cfg, store: Store) -> dict[str, dict[str, str]]:
    """The baseline: runner.stage_states before this change (per item: exists() and a read)."""
    out: dict[str, dict[str, str]] = {}
    for stage, items in plan(cfg).items():
        out[stage] = {}
        for it in items:
            d = item_dir(stage, it.id)
            if store.exists(f"{d}/done.json"):
                state = "done"
            elif store.exists(f"{d}/status.json"):
                state = store.read_json(f"{d}/status.json")["state"]
                state = "running" if state == "done" else state
            else:
                state = "pending"
            out[stage][it.id] = state
    return out


def timed(fn: Callable[[], object], repeats: int = 1, before: Callable[[], None] | None = None) -> float:
    times = []
    for _ in range(repeats):
        if before:
            before()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def wall(argv: list[str], env: dict[str, str] | None = None, repeats: int = 3) -> float:
    """Median seconds of a fresh `nf` process (as a user types it)."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        p = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - t0)
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed:\n{p.stderr}")
    return statistics.median(times)


def bench_plan(py: str) -> None:
    paths, skipped = [], []
    for p in sorted(glob.glob(str(ROOT / "sweeps" / "*.yaml"))):
        try:
            load_config(p)
            paths.append(os.path.relpath(p, ROOT))
        except ConfigError as e:
            skipped.append(f"{os.path.basename(p)} ({str(e)[:60]}…)")
    total = sum(sum(len(v) for v in plan(load_config(str(ROOT / p))).values()) for p in paths)
    nf = [py, "-m", "orchestration.cli", "sweep", "plan", "--no-data-check"]
    one = wall(nf + paths)
    each = sum(wall(nf + [p], repeats=1) for p in paths)
    cfg = parse_config(BIG)
    n = sum(len(v) for v in plan(cfg).values())
    t_plan = timed(lambda: plan(cfg), repeats=5)
    print(f"plan: the programme = {len(paths)} sweeps, {total:,} trials" + (f"; skipped {skipped}" if skipped else ""))
    row("one call per config (baseline)", each)
    row("one `nf sweep plan sweeps/*.yaml` call", one, each)
    print(f"  plan() of a {n:,}-item grid, in process: {t_plan * 1e3:.0f} ms")


def requests(log: str | None) -> int:
    """Requests moto has served so far (its log: one line each), once the log stops growing."""
    if log is None:
        return 0
    last = -1
    while True:
        with open(log) as f:
            n = sum(1 for line in f if " HTTP/1.1" in line)
        if n == last:
            return n
        last = n
        time.sleep(0.2)


def bench_status(label: str, root: str, endpoint: str | None, cfg, py: str, repeats: int, log: str | None) -> None:
    store = Store(root, endpoint).sub(cfg.name)
    calls: dict[str, int] = {}

    def run(name: str, fn: Callable[[], object], n: int, before: Callable[[], None] | None = None) -> float:
        """Median seconds of ``n`` runs; the requests of one run go to ``calls``."""
        times = []
        for _ in range(n):
            if before:
                before()
            r0 = requests(log)
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
            calls[name] = requests(log) - r0
            results[name] = result
        return statistics.median(times)

    def drop_index() -> None:
        if store.exists(INDEX_FILE):
            store.fs.delete_file(store.path(INDEX_FILE))

    results: dict[str, object] = {}
    slow = 1 if endpoint else repeats  # the S3 baseline takes minutes on moto
    t_old = run("old", lambda: old_stage_states(cfg, store), slow)
    t_cold = run("cold", lambda: sweep_status(cfg, store), slow, before=drop_index)
    t_warm = run("warm", lambda: sweep_status(cfg, store), repeats)
    t_states = run("states", lambda: stage_states(cfg, store), repeats)
    new = results["states"]
    assert results["old"] == new, "the new states differ from the baseline's"
    where = ["--storage", root] + (["--s3-endpoint", endpoint] if endpoint else [])
    cli_new = wall([py, "-m", "orchestration.cli", "sweep", "status", cfg.name, *where])
    cli_list = wall([py, "-m", "orchestration.cli", "sweep", "list", *where])
    imports = wall([py, "-c", "import orchestration.sweep.trainables"])  # what the old `nf sweep status` imported
    counts = {k: sum(s == k for st in new.values() for s in st.values()) for k in ("done", "running", "failed")}
    n = sum(len(v) for v in new.values())
    print(f"status, {label}: {n:,} items", "({done:,} done, {running} running, {failed} failed)".format(**counts))
    req = (lambda k: f"   {calls[k]:,} requests") if log else (lambda k: "")
    row("old stage_states (per item exists+read)", t_old, extra=req("old"))
    row("new, details, cold (no index yet)", t_cold, t_old, req("cold"))
    row("new, details, warm (index)", t_warm, t_old, req("warm"))
    row("new, states only", t_states, t_old, req("states"))
    row("`nf sweep status` (process, warm)", cli_new)
    row("old `nf sweep status` ~ imports + old states", imports + t_old, None)
    row("  ... ÷ new `nf sweep status`", None, (imports + t_old) / cli_new)
    row("`nf sweep list` (process)", cli_list)


def row(label: str, seconds: float | None, base: float | None = None, extra: str = "") -> None:
    """One result line: seconds, and the baseline's time divided by it (above 1: faster)."""
    left = f"  {label:<46}" + ("" if seconds is None else f"{seconds:7.2f} s")
    if base is not None:
        left += f"   ÷ {base / seconds:5.1f}" if seconds is not None else f"{'':9}   ÷ {base:5.1f}"
    elif extra:
        left += " " * 10
    print(left + extra)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-s3", action="store_true", help="skip the moto S3 part")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of the fast cases (median)")
    a = ap.parse_args()
    py = sys.executable
    print(f"{os.cpu_count()} CPUs; medians of {a.repeats} runs (one run for the slow S3 baseline and cold case)")
    bench_plan(py)
    cfg = parse_config(BIG)
    files = synthetic_store(plan(cfg), {"base": cfg.base.epochs, "generator": cfg.generator.epochs})
    files["sweep.yaml"] = yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode()
    with tempfile.TemporaryDirectory() as tmp:
        write_local(os.path.join(tmp, cfg.name), files)
        bench_status("local folder", tmp, None, cfg, py, a.repeats, None)
    if a.no_s3:
        return
    log = os.path.join(tempfile.gettempdir(), f"bench_status_moto_{os.getpid()}.log")
    server, endpoint = start_moto(log)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    try:
        t0 = time.perf_counter()
        write_s3(endpoint, "nf-bench", "sweeps/big", files)
        print(f"(S3 store: {len(files):,} objects uploaded in {time.perf_counter() - t0:.0f} s, not timed)")
        bench_status("moto S3 on loopback", "s3://nf-bench/sweeps", endpoint, cfg, py, a.repeats, log)
    finally:
        server.kill()
        server.wait()
        os.remove(log)


if __name__ == "__main__":
    main()
