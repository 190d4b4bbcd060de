"""Run a sweep: all its items in one Ray Tune run, each as soon as the items it needs are done, tracked in MLflow.

The driver is the only MLflow writer (trials report to Tune; a callback logs). Sweep state
lives in storage (``done.json`` per item), so `nf sweep resume` after a driver kill starts
again with only the unfinished items, which continue from their checkpoints; MLflow runs
are found again by their tags rather than created anew.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import yaml

from orchestration.errors import raise_if_interrupted
from orchestration.spec.config import STAGES, ConfigError, SweepConfig, parse_config
from orchestration.spec.plan import Item, plan
from orchestration.store.item_files import item_done, read_done
from orchestration.store.roots import CONFIG_FILE, resolve_storage, sweep_store
from orchestration.store.storage import Store
from orchestration.sweep.registration import register_generators
from orchestration.sweep.status import item_dir, stage_states  # noqa: F401 (stage_states: re-exported)


class SweepError(RuntimeError):
    """Trials failed; the items that need them were not started (blocked), the others ran."""


def tracking_uri(cfg: SweepConfig, store: Store) -> str:
    """A given ``mlflow.tracking_uri`` as is; else the sweep's SQLite file: beside the sweep, or
    for S3 storage a local working copy kept in (and fetched from) the storage
    (orchestration/tracking/sync.py)."""
    if cfg.mlflow.tracking_uri:
        return cfg.mlflow.tracking_uri
    from orchestration.tracking.sync import default_db

    return f"sqlite:///{os.path.abspath(default_db(cfg, store))}"


def open_sweep(
    name: str, storage: str | None = None, s3_endpoint: str | None = None, s3_region: str | None = None
) -> SweepConfig:
    """The config of an existing sweep, read back from its storage.

    ``storage`` is the sweep's identity: the config returned lives there (whatever root its
    sweep.yaml recorded), so a copied sweep is read and written in the copy only. None: the
    default root (orchestration/store/roots.py says how relative roots resolve)."""
    from orchestration.sweep.resume import with_storage

    storage = resolve_storage(storage)
    store = Store(storage, s3_endpoint, s3_region).sub(name)
    if not store.exists(CONFIG_FILE):
        left = store.list()
        if left:  # the sweep is there but its config object is lost: name it, not "no sweep"
            from orchestration.errors import StorageError

            raise StorageError(
                f"missing object {store.url(CONFIG_FILE)}: sweep {name!r} has {', '.join(left[:5])} but not its "
                f"config; restore {CONFIG_FILE}, or run the same config again with `nf sweep run CONFIG`"
            )
        parent = Store(storage, s3_endpoint, s3_region)
        have = [n for n in parent.list() if parent.exists(f"{n}/{CONFIG_FILE}")]
        raise ConfigError(f"no sweep {name!r} under {parent.url()}; sweeps there: {', '.join(have) or 'none'}")
    cfg = with_storage(parse_config(yaml.safe_load(store.read_bytes(CONFIG_FILE))), storage, s3_endpoint)
    return cfg.model_copy(update={"s3_region": s3_region}) if s3_region else cfg


def _init_ray(address: str | None) -> None:
    import ray

    from orchestration.errors import keep_signal_handlers
    from orchestration.store.credentials import keep_credentials_out_of_ray

    # Before any trial starts: workers find credentials on their own node, never in runtime_env.
    keep_credentials_out_of_ray()
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        # "local": always a fresh instance, never a leftover cluster found on this machine
        kw: dict[str, Any] = {"address": address} if address else {"address": "local", "include_dashboard": False}
        with keep_signal_handlers():  # ray.init's SIGTERM handler would exit before MLflow runs are ended
            ray.init(log_to_driver=False, **kw)


def run_sweep(
    cfg: SweepConfig,
    resume: bool = False,
    ray_address: str | None = None,
    verbose: int = 0,
    log: Callable[[str], None] = print,
    progress_interval: float = 30.0,
    new_config: bool = False,
) -> list[dict[str, Any]]:
    """Run (or continue) every item of the sweep, each once the items it needs are done (no stage
    barriers); returns the evaluation and transfer rows. Raises SweepError after the run if
    trials failed (the items that need them are reported blocked; all others ran).

    ``verbose`` 0: a compact live view (orchestration/sweep/progress.py); 1 or 2: Ray Tune's own output.
    ``new_config``: ``cfg`` may differ from the stored config if no completed item changes
    (`nf sweep resume NAME --config FILE`, orchestration/sweep/resume.py)."""
    return run_sweeps([cfg], resume, ray_address, verbose, log, progress_interval, new_config)[cfg.name]


@dataclass
class SweepRun:
    """One sweep's share of a run: its storage, plan, MLflow runs and the items still to run."""

    cfg: SweepConfig
    store: Store
    items: dict[str, list[Item]]
    tracker: Any
    parent: str
    change: Any
    runs: dict[str, str] = field(default_factory=dict)
    pending: list[Item] = field(default_factory=list)
    fresh: set[str] = field(default_factory=set)  # child runs created by this driver (nothing logged yet)
    logger: Any = None  # the live MlflowTuneCallback: what it logged is not asked of MLflow again


def _open_run(cfg: SweepConfig, resume: bool, new_config: bool, log: Callable[[str], None]) -> SweepRun:
    """Check (or write) the sweep's stored config and open its MLflow parent run."""
    from orchestration.sweep.resume import ConfigChange, adopt_config, same_config
    from orchestration.tracking.sync import artifact_location
    from orchestration.tracking.tracker import SweepTracker, flatten

    store = sweep_store(cfg)
    change = ConfigChange()
    if store.exists(CONFIG_FILE):
        stored = parse_config(yaml.safe_load(store.read_bytes(CONFIG_FILE)))
        if not same_config(stored, cfg):
            if not new_config:
                raise ConfigError(
                    f"sweep {cfg.name!r} already exists in {store.url()} with a different config; "
                    f"to go on with this one: `nf sweep resume {cfg.name} --storage {cfg.storage} --config FILE` "
                    "(accepted when no completed item changes), or give the new sweep another name"
                )
            change = adopt_config(stored, cfg, store, log)  # refuses, naming the items it would invalidate
    elif resume:
        raise ConfigError(f"nothing to resume: no sweep {cfg.name!r} in {store.url()}")
    else:
        store.write_bytes(CONFIG_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())
    if store.is_s3 and cfg.s3_endpoint:
        os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", cfg.s3_endpoint)  # MLflow's own S3 client
    tracker = SweepTracker(tracking_uri(cfg, store), cfg.mlflow.experiment or cfg.name, artifact_location(cfg, store))
    tracker.ensure_experiment()
    parent = tracker.parent_run(cfg.name, flatten(cfg.to_dict()))
    return SweepRun(cfg, store, plan(cfg), tracker, parent, change)


def _prepare(run: SweepRun, log: Callable[[str], None], several: bool = False) -> None:
    """The sweep's child runs (found again, else made) and its items not yet done."""
    from orchestration.sweep.resume import forget_runs, item_params
    from orchestration.tracking.tracker import redact_uri

    cfg, tracker = run.cfg, run.tracker
    forget_runs(tracker, run.change)
    log(f"MLflow: {redact_uri(tracker.tracking_uri)} (experiment {cfg.mlflow.experiment or cfg.name!r})")
    done = done_items(run.store)
    for stage in STAGES:
        existing = tracker.child_runs(stage)  # one search, not one per item, on resume
        for it in run.items[stage]:
            if it.id in existing:
                run.runs[it.id] = existing[it.id]
            else:
                run.runs[it.id] = tracker.child_run(it.id, stage, item_params(cfg, it), known_new=True)
                run.fresh.add(run.runs[it.id])
        # one listing of the done.json files, then a read of each (a torn done.json: not done)
        todo = [it for it in run.items[stage] if (stage, it.id) not in done or not item_done(run.store, stage, it.id)]
        who = f"{cfg.name}: " if several else ""
        log(f"{who}stage {stage}: {len(run.items[stage]) - len(todo)} done, {len(todo)} to run")
        run.pending += todo


def _interrupt_check(tune: Any) -> Any:
    """A Tune callback: between steps, a signal whose exception was swallowed (a GC callback) stops the run."""

    class InterruptCheck(tune.Callback):
        def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
            raise_if_interrupted()

    return InterruptCheck()


def _anything_to_do(run: SweepRun) -> bool:
    """Whether an item of the sweep lacks its done.json (one listing; torn files are judged later)."""
    done = done_items(run.store)
    return any((stage, it.id) not in done for stage in STAGES for it in run.items[stage])


def done_items(store: Store) -> set[tuple[str, str]]:
    """(stage, item id) of every item folder holding a done.json, from one listing of the storage
    (not one existence check per item: thousands of round trips on S3)."""
    out: set[tuple[str, str]] = set()
    for rel in store.list_files("items"):
        parts = rel.split("/")
        if len(parts) == 3 and parts[2] == "done.json":
            out.add((parts[0], parts[1]))
    return out


def _finish_run(run: SweepRun, failed: list[str], blocked: list[str], log: Callable[[str], None]) -> list[dict]:
    from orchestration.tracking.sync import backfill_history
    from orchestration.tracking.tune_callback import MlflowTuneCallback

    tracker, runs, store, cfg = run.tracker, run.runs, run.store, run.cfg
    logger = run.logger or MlflowTuneCallback(tracker, runs, fresh=run.fresh)
    logged = tracker.child_runs_tagged("nf.artifacts")  # one search, not one get_tag per item
    for stage in STAGES:
        # epochs a killed driver never logged
        backfill_history(tracker, store, stage, run.items[stage], runs, logger)
        todo = [it for it in run.items[stage] if runs[it.id] not in logged]
        _log_item_artifacts(tracker, store, stage, todo, runs, logger.finished)
    register_generators(cfg, store, tracker, run.items["generator"], runs, log)  # mlflow.register_generators
    for item_id in blocked:  # never started: something it needs failed
        tracker.set_tag(runs[item_id], "nf.blocked", "1")
        tracker.finish(runs[item_id], "KILLED")
    if failed:  # the guard ends the parent run FAILED
        raise SweepError(
            f"{len(failed)} trial(s) failed: {', '.join(failed)}; {len(blocked)} item(s) blocked by them"
            + (f" ({', '.join(blocked[:5])}{', ...' if len(blocked) > 5 else ''})" if blocked else "")
            + f"; see `nf sweep status {cfg.name}`; fix the cause, then `nf sweep resume {cfg.name}` "
            f"(a corrected config: `nf sweep resume {cfg.name} --config FILE`)"
        )
    rows = collect_rows(cfg, store)
    _log_sweep_artifacts(tracker, run.parent, store, cfg, rows)
    tracker.finish(run.parent, "FINISHED")
    return rows


def run_sweeps(
    cfgs: Sequence[SweepConfig],
    resume: bool = False,
    ray_address: str | None = None,
    verbose: int = 0,
    log: Callable[[str], None] = print,
    progress_interval: float = 30.0,
    new_config: bool = False,
    trainables: Mapping[str, Callable[..., None]] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Run (or continue) several sweeps as one dataflow in one Tune run (`nf sweep run a.yaml b.yaml`):
    each keeps its own name, storage, MLflow experiment and results; their items share the cluster,
    most critical first across all of them. Returns each sweep's rows by name; SweepError (after
    every sweep has recorded its state) if trials of any sweep failed.

    ``trainables`` (stage -> trainable): the benchmark's stand-ins (benchmarks/bench_scale.py);
    None: the real ones (orchestration/sweep/trainables.py)."""
    from orchestration.sweep.progress import LiveView
    from orchestration.tracking.sync import push_tracking
    from orchestration.tracking.tracker import parent_run_guard

    names = [c.name for c in cfgs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"sweep name {dup[0]!r} given twice; each sweep of one run needs its own name")
    runs: list[SweepRun] = []
    try:
        for cfg in cfgs:
            runs.append(_open_run(cfg, resume, new_config, log))
        live = LiveView([r.cfg for r in runs], [r.store for r in runs], verbose, log, progress_interval)
        log = live.log
        with ExitStack() as guards:
            for r in runs:  # never left RUNNING: FAILED on error, KILLED on Ctrl-C/SIGTERM
                guards.enter_context(parent_run_guard(r.tracker, r.parent))
            if any(_anything_to_do(r) for r in runs):
                # Ray first, before any child run exists (as a single sweep always did): a Ctrl-C or
                # SIGTERM while Ray starts stops the command; a finished set never starts Ray at all
                _init_ray(ray_address)
            for r in runs:
                _prepare(r, log, len(runs) > 1)
            outcome = _run_items(runs, live, log, trainables, ray_address)
            out: dict[str, list[dict[str, Any]]] = {}
            errors: list[SweepError] = []
            for r in runs:
                failed, blocked = outcome.get(r.cfg.name, ([], []))
                try:
                    out[r.cfg.name] = _finish_run(r, failed, blocked, log)
                except SweepError as e:
                    if len(runs) == 1:
                        raise
                    r.tracker.finish(r.parent, "FAILED")
                    errors.append(e)
            if errors:
                raise SweepError("; ".join(f"{e}" for e in errors))
            return out
    finally:
        for r in runs:
            push_tracking(r.cfg, r.store)  # however it ended, the storage copy of the tracking holds it


def trial_key(sweep: str, item_id: str, several: bool) -> str:
    """A trial's key in the Tune run: the item id, prefixed by its sweep's name when a run holds several
    sweeps (their item ids may be equal); the stored item id never carries the prefix."""
    return f"{sweep}/{item_id}" if several else item_id


def _run_items(
    runs: Sequence[SweepRun],
    live: Any,
    log: Callable[[str], None],
    trainables: Mapping[str, Callable[..., None]] | None = None,
    ray_address: str | None = None,
) -> dict[str, tuple[list[str], list[str]]]:
    """One Tune run for every pending item of every stage of every sweep; returns per sweep the failed
    and the blocked item ids.

    An item starts as soon as the items it needs are done (orchestration.sweep.dataflow.ReadyItems), so no
    stage waits for the slowest item of the stage before it; a failure blocks only the items downstream
    of it (in its own sweep)."""
    pending = [(r.cfg.name, it) for r in runs for it in r.pending]
    if not pending:
        return {}  # nothing to run: Ray is not even started
    _init_ray(ray_address)
    from ray import tune

    from orchestration.sweep.dataflow import (
        ForSweep,
        ReadyItems,
        StageClock,
        TrackingPush,
        item_resources,
        priorities,
        run_item,
    )
    from orchestration.tracking.tune_callback import MlflowTuneCallback

    several = len(runs) > 1
    by_name = {r.cfg.name: r for r in runs}
    prio: dict[str, float] = {}
    done: set[str] = set()
    for r in runs:
        ids = {it.id for it in r.pending}
        prio.update({trial_key(r.cfg.name, i, several): p for i, p in priorities(r.cfg, r.pending).items()})
        done |= {trial_key(r.cfg.name, n, several) for it in r.pending for n in it.needs if n not in ids}
    stage_of = {trial_key(s, it.id, several): (s, it.stage, it.id) for s, it in pending}

    def is_done(key: str) -> bool:
        sweep, stage, item_id = stage_of[key]
        return item_done(by_name[sweep].store, stage, item_id)

    searcher = ReadyItems(
        [it for _, it in pending],
        done=done,
        is_done=is_done,
        priority=prio,
        sweeps=[s for s, _ in pending],
        prefixed=several,
    )
    clocks = {r.cfg.name: StageClock() for r in runs}
    callbacks: list[Any] = []
    for r in runs:
        r.logger = MlflowTuneCallback(r.tracker, r.runs, fresh=r.fresh)
        own = [r.logger, TrackingPush(r.cfg, r.store.spec()), clocks[r.cfg.name]]
        callbacks += [ForSweep(r.cfg.name, c) for c in own] if several else own
    # A trial's config is its item; the settings every trial of a sweep shares go once to the object store.
    sweeps = {r.cfg.name: (r.cfg, r.store.spec()) for r in runs}
    trainable = tune.with_parameters(run_item, sweeps=sweeps, trainables=dict(trainables) if trainables else None)
    first = runs[0]
    caps = [r.cfg.resources.max_concurrent for r in runs]
    tuner = tune.Tuner(
        tune.with_resources(trainable, item_resources([r.cfg for r in runs])),  # each item: its stage's bundles
        # reuse_actors: later trials skip the worker start and imports (same bundles only)
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=len(pending),
            # also how many trials Tune keeps pending for a custom searcher (default 1)
            max_concurrent_trials=sum(caps) if all(caps) else live_trials(len(pending), [r.cfg for r in runs]),
            reuse_actors=True,
            trial_name_creator=lambda t: t.config.get("key") or t.config["item"]["id"],
            trial_dirname_creator=lambda t: (t.config.get("key") or t.config["item"]["id"]).replace("/", "__"),
        ),
        run_config=tune.RunConfig(
            # several sweeps: the Tune state lives with the first one
            name=f"{'programme' if several else 'sweep'}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=first.store.path("tune"),
            storage_filesystem=first.store.fs,
            failure_config=tune.FailureConfig(max_failures=max(r.cfg.resources.max_failures for r in runs)),
            callbacks=[*callbacks, *live.callbacks, _interrupt_check(tune)],
            verbose=live.tune_verbose,
        ),
    )
    grid = tuner.fit()
    raise_if_interrupted()  # a Ctrl-C or kill whose exception a GC callback swallowed still stops the sweep
    for r in runs:
        # Per stage: wall time from its first trial's start to its last trial's end (stages overlap).
        for stage, seconds in clocks[r.cfg.name].seconds().items():
            r.tracker.log_metrics(r.parent, {f"stage_seconds.{stage}": seconds}, step=0)
            who = f"{r.cfg.name}: " if several else ""
            log(f"{who}stage {stage}: finished in {seconds:.1f} s (first start to last end)")
    errored = {r.config.get("key") or r.config["item"]["id"] for r in grid if r.error is not None}
    failed_keys = set(searcher.failed) | errored
    out: dict[str, tuple[list[str], list[str]]] = {r.cfg.name: ([], []) for r in runs}
    for key in sorted(failed_keys):
        sweep, _, item_id = stage_of[key]
        out[sweep][0].append(item_id)
    for key in searcher.blocked:
        sweep, _, item_id = stage_of[key]
        out[sweep][1].append(item_id)
    return out


LIVE_TRIALS_FLOOR = 256  # as Tune's own default of pending trials (200): enough for an autoscaler to see demand


def live_trials(pending: int, cfgs: Sequence[SweepConfig]) -> int:
    """How many trials Tune holds at once (running + waiting for resources) when the config sets no
    ``resources.max_concurrent``: every trial the cluster's CPUs can run now (at the sweeps' smallest
    ``resources.cpus`` per trial), at least ``LIVE_TRIALS_FLOOR`` so that an autoscaling cluster sees the
    demand, never more than the items left. Not all of them: Tune builds each trial it holds before
    it starts any (thousands of trials: a minute before the first one starts) and walks them all
    on every step; the dataflow Searcher hands out the rest as slots free, most critical first."""
    import ray

    slots = ray.cluster_resources().get("CPU", 1.0) / min(c.resources.cpus for c in cfgs)
    return max(1, min(pending, max(LIVE_TRIALS_FLOOR, int(slots))))


def collect_rows(cfg: SweepConfig, store: Store | None = None) -> list[dict[str, Any]]:
    """Every evaluation and transfer row of the finished items."""
    store = store or sweep_store(cfg)
    rows: list[dict[str, Any]] = []
    items = plan(cfg)
    for stage in ("eval", "transfer"):
        for it in items[stage]:
            done = read_done(store, stage, it.id)
            if done is not None:
                rows += done.get("rows", [])
    return rows


def _log_item_artifacts(
    tracker, store: Store, stage: str, items: list[Item], runs: dict[str, str], finished: set[str] = frozenset()
) -> None:
    """Each finished item's checkpoint / results to its MLflow run, once (``items``: those not yet
    tagged ``nf.artifacts``; ``finished``: runs already ended FINISHED in this run)."""
    config_bytes = store.read_bytes(CONFIG_FILE)
    for it in items:
        d = item_dir(stage, it.id)
        run_id = runs[it.id]
        if not item_done(store, stage, it.id):
            continue
        for name in ("checkpoint.pt", "results.parquet", "done.json"):
            if store.exists(f"{d}/{name}"):
                tracker.log_bytes(run_id, name, store.read_bytes(f"{d}/{name}"))
        tracker.log_bytes(run_id, CONFIG_FILE, config_bytes)
        tracker.set_tag(run_id, "nf.artifacts", "1")
        if run_id not in finished:  # done in an earlier run whose driver died before ending it
            tracker.finish(run_id, "FINISHED")


def _log_sweep_artifacts(tracker, parent: str, store: Store, cfg: SweepConfig, rows: list[dict[str, Any]]) -> None:
    from orchestration.store.results import heatmap_png, results_table, transfer_matrix, write_parquet

    buf = io.BytesIO()
    write_parquet(results_table(rows), buf)
    store.write_bytes("results/results.parquet", buf.getvalue())
    tracker.log_bytes(parent, "results.parquet", buf.getvalue())
    tracker.log_bytes(parent, CONFIG_FILE, store.read_bytes(CONFIG_FILE))
    for d in cfg.datasets:
        if not any(r["dataset"] == d.name for r in rows):
            continue
        buf = io.BytesIO()
        write_parquet(transfer_matrix(rows, d.name), buf)
        store.write_bytes(f"results/transfer_{d.name}.parquet", buf.getvalue())
        tracker.log_bytes(parent, f"transfer_{d.name}.parquet", buf.getvalue())
        with tempfile.TemporaryDirectory() as tmp:
            png = os.path.join(tmp, f"transfer_{d.name}.png")
            heatmap_png(rows, d.name, png)
            with open(png, "rb") as f:
                data = f.read()
        store.write_bytes(f"results/transfer_{d.name}.png", data)
        tracker.log_bytes(parent, f"transfer_{d.name}.png", data)
