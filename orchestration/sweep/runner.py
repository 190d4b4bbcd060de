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
from collections.abc import Callable
from typing import Any

import yaml

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
    from orchestration.sweep.progress import LiveView
    from orchestration.sweep.resume import ConfigChange, adopt_config, forget_runs, item_params, same_config
    from orchestration.tracking.sync import artifact_location, backfill_history, push_tracking
    from orchestration.tracking.tracker import SweepTracker, flatten, parent_run_guard, redact_uri

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
    items = plan(cfg)
    live = LiveView(cfg, store, verbose, log, progress_interval)
    log = live.log
    tracker = SweepTracker(tracking_uri(cfg, store), cfg.mlflow.experiment or cfg.name, artifact_location(cfg, store))
    tracker.ensure_experiment()
    parent = tracker.parent_run(cfg.name, flatten(cfg.to_dict()))
    try:
        with parent_run_guard(tracker, parent):  # never left RUNNING: FAILED on error, KILLED on Ctrl-C/SIGTERM
            forget_runs(tracker, change)
            log(f"MLflow: {redact_uri(tracker.tracking_uri)} (experiment {cfg.mlflow.experiment or cfg.name!r})")
            _init_ray(ray_address)
            runs: dict[str, str] = {}
            pending: list[Item] = []
            for stage in STAGES:
                existing = tracker.child_runs(stage)  # one search, not one per item, on resume
                for it in items[stage]:
                    runs[it.id] = existing.get(it.id) or tracker.child_run(it.id, stage, item_params(cfg, it))
                todo = [it for it in items[stage] if not item_done(store, stage, it.id)]  # torn done.json: not done
                log(f"stage {stage}: {len(items[stage]) - len(todo)} done, {len(todo)} to run")
                pending += todo
            failed, blocked = _run_items(cfg, store, pending, tracker, parent, runs, live, log)
            for stage in STAGES:
                backfill_history(tracker, store, stage, items[stage], runs)  # epochs a killed driver never logged
                _log_item_artifacts(tracker, store, stage, items[stage], runs)
            register_generators(cfg, store, tracker, items["generator"], runs, log)  # mlflow.register_generators
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
            _log_sweep_artifacts(tracker, parent, store, cfg, rows)
            tracker.finish(parent, "FINISHED")
            return rows
    finally:
        push_tracking(cfg, store)  # however it ended, the storage copy of the tracking holds it


def _run_items(
    cfg: SweepConfig,
    store: Store,
    pending: list[Item],
    tracker: Any,
    parent: str,
    runs: dict[str, str],
    live: Any,
    log: Callable[[str], None],
) -> tuple[list[str], list[str]]:
    """One Tune run for every pending item of every stage; returns the failed and the blocked item ids.

    An item starts as soon as the items it needs are done (orchestration.sweep.dataflow.ReadyItems), so no
    stage waits for the slowest item of the stage before it; a failure blocks only the items downstream
    of it."""
    if not pending:
        return [], []
    from ray import tune

    from orchestration.sweep.dataflow import ReadyItems, StageClock, TrackingPush, item_resources, priorities, run_item
    from orchestration.tracking.tune_callback import MlflowTuneCallback

    pending_ids = {it.id for it in pending}
    stage_of = {it.id: it.stage for it in pending}
    searcher = ReadyItems(
        pending,
        done={i for it in pending for i in it.needs if i not in pending_ids},
        is_done=lambda item_id: item_done(store, stage_of[item_id], item_id),
        priority=priorities(cfg, pending),
    )
    clock = StageClock()
    # A trial's config is its item; the settings every trial shares go once to the object store.
    trainable = tune.with_parameters(run_item, cfg=cfg, store=store.spec())
    tuner = tune.Tuner(
        tune.with_resources(trainable, item_resources(cfg)),  # each item: its stage's bundles
        # reuse_actors: later trials skip the worker start and imports (same bundles only)
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=len(pending),
            # also how many trials Tune keeps pending for a custom searcher (default 1)
            max_concurrent_trials=cfg.resources.max_concurrent or len(pending),
            reuse_actors=True,
            trial_name_creator=lambda t: t.config["item"]["id"],
            trial_dirname_creator=lambda t: t.config["item"]["id"],
        ),
        run_config=tune.RunConfig(
            name=f"sweep-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=store.path("tune"),
            storage_filesystem=store.fs,
            failure_config=tune.FailureConfig(max_failures=cfg.resources.max_failures),
            callbacks=[MlflowTuneCallback(tracker, runs), TrackingPush(cfg, store.spec()), clock, *live.callbacks],
            verbose=live.tune_verbose,
        ),
    )
    grid = tuner.fit()
    # Per stage: wall time from its first trial's start to its last trial's end (stages overlap).
    for stage, seconds in clock.seconds().items():
        tracker.log_metrics(parent, {f"stage_seconds.{stage}": seconds}, step=0)
        log(f"stage {stage}: finished in {seconds:.1f} s (first start to last end)")
    failed = sorted(searcher.failed | {r.config["item"]["id"] for r in grid if r.error is not None})
    return failed, searcher.blocked


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


def _log_item_artifacts(tracker, store: Store, stage: str, items: list[Item], runs: dict[str, str]) -> None:
    """Each finished item's checkpoint / results to its MLflow run, once."""
    config_bytes = store.read_bytes(CONFIG_FILE)
    for it in items:
        d = item_dir(stage, it.id)
        run_id = runs[it.id]
        if not item_done(store, stage, it.id) or tracker.get_tag(run_id, "nf.artifacts") == "1":
            continue
        for name in ("checkpoint.pt", "results.parquet", "done.json"):
            if store.exists(f"{d}/{name}"):
                tracker.log_bytes(run_id, name, store.read_bytes(f"{d}/{name}"))
        tracker.log_bytes(run_id, CONFIG_FILE, config_bytes)
        tracker.set_tag(run_id, "nf.artifacts", "1")
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
