"""What the orchestration itself costs as a sweep grows: 100, 1,000 (and 5,000) items.

Runs the real runner (``orchestration.sweep.runner.run_sweeps``) — real Ray (local), real Ray Tune,
the real dataflow Searcher, real storage (a local folder), real MLflow (SQLite file) — on synthetic
sweeps with the paper's dependency shape: per seed two base models, and per (base, BER) a generator
whose eval and transfer items need it (items = seeds × (2 + 3 × BERs)).

The trials do NO TRAINING. The stage trainables are swapped (through ``run_sweeps(trainables=…)``, an
argument for this benchmark only; no config field) for stand-ins that run inside the product's own
trial wrapper (``trainables._guard``: lease, status.json, failed/fenced handling) and write exactly the
files a real item writes — attempts.json, an epoch checkpoint.pt (+ checkpoint.prev.pt) per epoch,
status.json, done.json with its history or rows, results.parquet for eval/transfer — and report to Tune
what a real item reports (one result per epoch, then the final one). Their tensors are empty, so what
is timed is the orchestration: scheduling, Tune's trial bookkeeping and experiment-state saves,
storage writes and leases, the MLflow runs and their logging, the live view.

The stand-ins are built in the driver from orchestration.sweep.trainables, so this driver imports torch
(the real one does not): its peak RSS includes torch's few hundred MB.

Per size (each in a fresh driver process) it prints: orchestration seconds per item (wall ÷ items,
no concurrency cap: as many trials at once as the box's CPUs allow at ``--cpus-per-trial``), the
driver's peak RSS, the size of Tune's experiment state, the seconds the driver spent in MLflow calls,
`nf sweep status` and `nf sweep resume` (nothing left to do) as whole processes, and the log-log slope
between consecutive sizes. ``--kill-at F`` also kills the largest run's driver when a fraction F of
its items is done, resumes it, and reports the seconds until a trial starts again and whether any
item or epoch ran twice (from the items' attempts.json).

``--s3``: the same on S3 — moto's server on loopback, started here — instead of a local folder (storage,
Tune's state and the storage copy of the tracking all on S3; MLflow's working copy stays on local disk).

Run: .venv/bin/python benchmarks/bench_scale.py [--items 100 1000] [--kill-at 0.5] [--s3]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BERS_PER_SEED = 33  # generators per seed: items per seed = 2 + 3 × 33 = 101


def synthetic_config(
    items: int, storage: str, cpus_per_trial: float = 0.5, s3_endpoint: str | None = None
) -> dict[str, Any]:
    """A sweep of about ``items`` items (paper shape): seeds × (2 base + BERs × (generator, eval, transfer))."""
    bers = min(BERS_PER_SEED, max(1, (items - 2) // 3))
    seeds = max(1, round(items / (2 + 3 * bers)))
    return {
        "name": f"scale{items}",
        "storage": storage,
        "device": "cpu",
        "datasets": [{"name": "digits", "train_subset": 64, "test_subset": 30}],
        "models": ["resnet18", "vgg11"],
        "sources": ["resnet18"],
        "width": 0.125,
        "generators": ["ConvS"],
        "train_bers": [round(0.001 * (k + 1), 6) for k in range(bers)],
        "seeds": list(range(seeds)),
        "ns": [2],
        "base": {"epochs": 2, "batch_size": 32},
        "generator": {"epochs": 2, "batch_size": 32},
        "evaluation": {"bers": [0.01], "chips": 2},
        "transfer": True,
        "resources": {"cpus": cpus_per_trial, "max_failures": 1},
        # The stand-ins' generators hold no weights to export; registering a real one is product work of
        # ~1 s per generator (a torch.export), linear, measured apart (README, "Running on a cluster").
        "mlflow": {"register_generators": False},
        **({"s3_endpoint": s3_endpoint} if s3_endpoint else {}),
    }


# ---------------------------------------------------------------- the stand-in trainables (no training)
def _train_stand_in(ctx: Any) -> None:
    """Base / generator: the epochs' checkpoints, records and reports of a real trial, empty tensors."""
    from ray import tune

    from orchestration.sweep.trainables import _finish

    epochs = ctx.cfg.base.epochs if ctx.item.stage == "base" else ctx.cfg.generator.epochs
    ck = ctx.checkpoint() or {"epoch": 0, "history": [], "model": {}}
    delay = float(os.environ.get("NF_BENCH_EPOCH_S", "0"))  # the resume check: trials long enough to kill
    for epoch in range(ck["epoch"] + 1, epochs + 1):
        time.sleep(delay)
        metrics = {"loss": 1.0 / epoch, "train_acc": 0.5}
        ck = {"epoch": epoch, "history": [*ck["history"], {"epoch": epoch, **metrics}], "model": {}}
        ctx.save_epoch(epoch, ck, metrics)
        tune.report({**metrics, "epoch": epoch})
    final = {"epoch": ck["epoch"], **{k: v for k, v in ck["history"][-1].items() if k != "epoch"}}
    if ctx.item.stage == "base":
        final["test_ca"] = 0.9
    _finish(ctx, final, {"history": ck["history"]})


def _eval_stand_in(ctx: Any) -> None:
    """Eval / transfer: a row per target and BER in results.parquet and done.json, as a real trial writes."""
    import io

    from orchestration.store.results import results_table, write_parquet
    from orchestration.sweep.trainables import _finish, _row

    ctx.record_attempt()
    p, rows, metrics = ctx.item.spec, [], {}
    for target in p.targets:
        for ber in ctx.cfg.evaluation.bers:
            r = {"ber": ber, "fault_model": p.fault_model, "layout": p.layout, "bits": p.bits, "chips": 2}
            r |= {"ca": 0.9, "pa_mean": 0.5, "pa_std": 0.1, "ca_nf": 0.89, "pa_nf_mean": 0.8, "pa_nf_std": 0.05}
            r |= {"rp": 0.3, "efficiency": 0.6, "pa_per_chip": [0.4, 0.6], "pa_nf_per_chip": [0.75, 0.85]}
            rows.append(_row(ctx, p, target, r))
            metrics |= {f"{k}.{target}.ber{ber:g}": r[k] for k in ("ca", "pa_mean", "ca_nf", "pa_nf_mean", "rp")}
    buf = io.BytesIO()
    write_parquet(results_table(rows), buf)
    ctx.lease.check()
    ctx.store.write_bytes(f"{ctx.dir}/results.parquet", buf.getvalue())
    _finish(ctx, {"epoch": 1, **metrics}, {"rows": rows})


def stand_ins() -> dict[str, Any]:
    """stage -> trainable, each wrapped by the product's trial wrapper."""
    from orchestration.sweep.trainables import _guard

    train, ev = _guard(_train_stand_in), _guard(_eval_stand_in)
    return {"base": train, "generator": train, "eval": ev, "transfer": ev}


# ---------------------------------------------------------------- one size, in its own driver process
def _time_mlflow() -> dict[str, float]:
    """Seconds the driver spends inside SweepTracker calls (outermost calls only)."""
    from orchestration.tracking.tracker import SweepTracker

    spent = {"s": 0.0, "depth": 0}
    for name, fn in list(vars(SweepTracker).items()):
        if name.startswith("_") or not callable(fn):
            continue

        def timed(*a: Any, _fn: Any = fn, **kw: Any) -> Any:
            spent["depth"] += 1
            t0 = time.perf_counter()
            try:
                return _fn(*a, **kw)
            finally:
                spent["depth"] -= 1
                if spent["depth"] == 0:
                    spent["s"] += time.perf_counter() - t0

        setattr(SweepTracker, name, functools.wraps(fn)(timed))
    return spent


def run_one(
    items: int, root: str, cpus_per_trial: float, resume: bool = False, s3_endpoint: str | None = None
) -> dict[str, Any]:
    """Run (or resume) the synthetic sweep of ``items`` items in this process; its measurements."""
    import ray
    from pyarrow import fs as pafs

    from orchestration.spec.config import parse_config
    from orchestration.spec.plan import plan
    from orchestration.store.roots import sweep_store
    from orchestration.sweep.runner import run_sweeps

    cfg = parse_config(synthetic_config(items, root, cpus_per_trial, s3_endpoint))
    n = sum(len(v) for v in plan(cfg).values())
    spent = _time_mlflow()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    t0 = time.perf_counter()
    try:
        run_sweeps([cfg], resume=resume, log=lambda _: None, progress_interval=3600, trainables=stand_ins())
    finally:
        wall = time.perf_counter() - t0
        ray.shutdown()
    store = sweep_store(cfg)  # Tune's state where the sweep keeps it: a local folder or S3
    sel = pafs.FileSelector(store.path("tune"), recursive=True, allow_not_found=True)
    state = sum(
        i.size
        for i in store.fs.get_file_info(sel)
        if i.is_file and os.path.basename(i.path).startswith("experiment_state")
    )
    return {
        "items": n,
        "wall_s": wall,
        "per_item_s": wall / n,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tune_state_kb": state / 1024,
        "mlflow_s": spent["s"],
    }


def _nf(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "orchestration.cli", *args], check=True, capture_output=True, text=True)
    return time.perf_counter() - t0


def measure(items: int, root: str, cpus_per_trial: float, s3_endpoint: str | None = None) -> dict[str, Any]:
    """One size: the run in a fresh driver, then `nf sweep status` and `nf sweep resume` (nothing to do)."""
    cmd = [sys.executable, __file__, "--one", str(items), "--root", root, "--cpus-per-trial", str(cpus_per_trial)]
    s3 = ["--s3-endpoint", s3_endpoint] if s3_endpoint else []
    out = subprocess.run(cmd + s3, check=True, capture_output=True, text=True).stdout
    row = json.loads(out.strip().splitlines()[-1])
    name = f"scale{items}"
    row["status_s"] = _nf("sweep", "status", name, "--storage", root, *s3)
    row["resume_s"] = _nf("sweep", "resume", name, "--storage", root, *s3)  # every item done: no trial runs
    return row


def kill_and_resume(items: int, root: str, cpus_per_trial: float, at: float) -> dict[str, Any]:
    """Kill the driver when ``at`` of the items are done, resume, check that nothing ran twice."""
    from orchestration.spec.config import parse_config
    from orchestration.spec.plan import plan
    from orchestration.store.roots import sweep_store

    cfg = parse_config(synthetic_config(items, root, cpus_per_trial))
    store = sweep_store(cfg)
    every = [(s, it.id) for s, its in plan(cfg).items() for it in its]
    env = {**os.environ, "NF_BENCH_EPOCH_S": "0.2"}
    cmd = [sys.executable, __file__, "--one", str(items), "--root", root, "--cpus-per-trial", str(cpus_per_trial)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    items_dir = Path(root) / cfg.name / "items"
    while sum(1 for _ in items_dir.glob("*/*/done.json")) < at * len(every):
        if proc.poll() is not None:
            raise RuntimeError("the run ended before the kill point")
        time.sleep(0.5)
    from tests.sweep_support import kill_tree

    kill_tree(proc)  # SIGKILL to the driver and every process below it (Ray's too), as a lost head node
    done_before = {(s, i) for s, i in every if store.exists(f"items/{s}/{i}/done.json")}
    t_resume = time.time()
    cmd.append("--resume")
    subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    first_new, twice, epochs_twice = math.inf, [], []
    for s, i in every:
        attempts = store.read_json(f"items/{s}/{i}/attempts.json")
        new = [a for a in attempts if a["time"] >= t_resume]
        first_new = min([first_new, *(a["time"] for a in new)])
        if (s, i) in done_before and new:
            twice.append(i)
        completed = [e for a in attempts for e in a["completed"]]
        if len(completed) != len(set(completed)):
            epochs_twice.append(i)
    return {
        "done_at_kill": len(done_before),
        "items": len(every),
        "restart_s": first_new - t_resume,
        "all_done": all(store.exists(f"items/{s}/{i}/done.json") for s, i in every),
        "ran_twice": twice,
        "epochs_twice": epochs_twice,
    }


def slope(a: dict[str, Any], b: dict[str, Any], key: str) -> float:
    """Growth exponent between two sizes: d log(key) / d log(items)."""
    return math.log(b[key] / a[key]) / math.log(b["items"] / a["items"])


@contextlib.contextmanager
def _storage(s3: bool) -> Iterator[str | None]:
    """None (local folders), or the endpoint of a moto S3 server on loopback with bucket nf-bench."""
    if not s3:
        yield None
        return
    import boto3

    from tests.sweep_support import start_moto

    for k, v in {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(k, v)  # moto's dummy credentials, for the drivers and commands started from here
    server, endpoint = start_moto()
    try:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="nf-bench")
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


def slope_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per pair of consecutive sizes: the growth exponent of every figure."""
    keys = ("wall_s", "peak_rss_mb", "tune_state_kb", "mlflow_s", "status_s", "resume_s")
    return [
        f"slope {a['items']}->{b['items']}: " + ", ".join(f"{k} {slope(a, b, k):.2f}" for k in keys)
        for a, b in zip(rows, rows[1:], strict=False)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, nargs="*", default=[100, 1000], help="sweep sizes (default: 100 1000)")
    ap.add_argument("--cpus-per-trial", type=float, default=0.5)
    ap.add_argument("--kill-at", type=float, default=None, help="also kill/resume the largest size at this fraction")
    ap.add_argument("--kill-items", type=int, default=None, help="the size of the kill/resume run (default: largest)")
    ap.add_argument("--s3", action="store_true", help="storage on S3 (moto's server on loopback) instead of a folder")
    ap.add_argument("--s3-endpoint", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--root", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:  # a child: one run, one JSON line
        from orchestration.sweep.progress import quiet_ray_logs

        quiet_ray_logs()
        print(json.dumps(run_one(args.one, args.root, args.cpus_per_trial, args.resume, args.s3_endpoint)))
        return
    if args.s3 and args.kill_at:
        ap.error("--kill-at watches the items' files on a local disk: run it without --s3")
    where = "S3 (moto on loopback)" if args.s3 else "a local folder"
    cpus = f"{os.cpu_count()} CPUs, {os.uname().machine}"
    print(f"machine: {cpus}; trials at {args.cpus_per_trial} CPU each; storage: {where}")
    head = (
        f"{'items':>6} {'wall s':>8} {'s/item':>7} {'peak RSS MB':>11} {'Tune state KB':>13} "
        f"{'MLflow s':>8} {'status s':>8} {'resume s':>8}"
    )
    print(head)
    rows = []
    with tempfile.TemporaryDirectory(prefix="nf-scale-") as tmp, _storage(args.s3) as s3_endpoint:
        for n in args.items:
            root = f"s3://nf-bench/s{n}" if s3_endpoint else os.path.join(tmp, f"s{n}")
            r = measure(n, root, args.cpus_per_trial, s3_endpoint)
            rows.append(r)
            print(
                f"{r['items']:>6} {r['wall_s']:>8.1f} {r['per_item_s']:>7.3f} {r['peak_rss_mb']:>11.0f} "
                f"{r['tune_state_kb']:>13.0f} {r['mlflow_s']:>8.1f} {r['status_s']:>8.2f} {r['resume_s']:>8.2f}",
                flush=True,
            )
        for line in slope_lines(rows):
            print(line)
        if args.kill_at:
            n = args.kill_items or max(args.items)
            k = kill_and_resume(n, os.path.join(tmp, f"kill{n}"), args.cpus_per_trial, args.kill_at)
            print(
                f"kill at {k['done_at_kill']}/{k['items']} done, resume: first trial after {k['restart_s']:.1f} s; "
                f"all done: {k['all_done']}; items run again: {len(k['ran_twice'])}; "
                f"epochs trained twice: {len(k['epochs_twice'])}"
            )


if __name__ == "__main__":
    main()
