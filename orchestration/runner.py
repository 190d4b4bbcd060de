"""Run a sweep: its stages as Ray Tune runs, in dependency order, tracked in MLflow.

The driver is the only MLflow writer (trials report to Tune; a callback logs). Sweep state
lives in storage (``done.json`` per item), so `nf sweep resume` after a driver kill starts
each stage again with only the unfinished items, which continue from their checkpoints;
MLflow runs are found again by their tags rather than created anew.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import yaml

from orchestration.config import STAGES, ConfigError, SweepConfig, parse_config
from orchestration.plan import Item, plan
from orchestration.status import item_dir, stage_states  # noqa: F401 (stage_states: re-exported)
from orchestration.storage import Store

CONFIG_FILE = "sweep.yaml"


class SweepError(RuntimeError):
    """A stage ended with failed trials; later stages were not started."""


def sweep_store(cfg: SweepConfig) -> Store:
    return Store(cfg.storage, cfg.s3_endpoint, cfg.s3_region).sub(cfg.name)


def tracking_uri(cfg: SweepConfig, store: Store) -> str:
    """Embedded default: a SQLite file beside the sweep (or under ./runs when storage is S3)."""
    if cfg.mlflow.tracking_uri:
        return cfg.mlflow.tracking_uri
    local = os.path.join("runs", cfg.name) if store.is_s3 else store.path()
    os.makedirs(local, exist_ok=True)
    return f"sqlite:///{os.path.abspath(os.path.join(local, 'mlflow.db'))}"


def artifact_location(cfg: SweepConfig, store: Store) -> str:
    return cfg.mlflow.artifact_location or store.url("mlartifacts")


def open_sweep(
    name: str, storage: str = "runs/sweeps", s3_endpoint: str | None = None, s3_region: str | None = None
) -> SweepConfig:
    """The config of an existing sweep, read back from its storage."""
    store = Store(storage, s3_endpoint, s3_region).sub(name)
    if not store.exists(CONFIG_FILE):
        parent = Store(storage, s3_endpoint, s3_region)
        have = [n for n in parent.list() if parent.exists(f"{n}/{CONFIG_FILE}")]
        raise ConfigError(f"no sweep {name!r} under {parent.url()}; sweeps there: {', '.join(have) or 'none'}")
    return parse_config(yaml.safe_load(store.read_bytes(CONFIG_FILE)))


def _normal(d: dict[str, Any]) -> Any:
    """A config as plain JSON values (tuples become lists), for comparisons."""
    return json.loads(json.dumps(d))


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def item_params(cfg: SweepConfig, item: Item) -> dict[str, Any]:
    """Everything a trial's MLflow run records: its grid values and its stage's settings."""
    section = {"base": cfg.base, "generator": cfg.generator, "eval": cfg.evaluation, "transfer": cfg.evaluation}
    params = {
        **_flat(item.params),
        **_flat(vars(section[item.stage]), f"{item.stage}."),
        "stage": item.stage,
        "item_id": item.id,
        "sweep": cfg.name,
        "storage": cfg.storage,
    }
    return {k: ("+".join(map(str, v)) if isinstance(v, list) else v) for k, v in params.items()}


def _resources(cfg: SweepConfig, stage: str):
    from ray import tune

    from orchestration.capacity import trial_bundles

    return tune.PlacementGroupFactory(trial_bundles(cfg, stage))


def _init_ray(address: str | None) -> None:
    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        # "local": always a fresh instance, never a leftover cluster found on this machine
        kw: dict[str, Any] = {"address": address} if address else {"address": "local", "include_dashboard": False}
        ray.init(log_to_driver=False, **kw)


def run_sweep(
    cfg: SweepConfig,
    resume: bool = False,
    ray_address: str | None = None,
    verbose: int = 1,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run (or continue) every stage of the sweep; returns the evaluation and transfer rows."""
    from ray import tune

    from orchestration.tracking import SweepTracker
    from orchestration.trainables import TRAINABLES  # torch and Ray: only when a sweep runs
    from orchestration.tune_callback import MlflowTuneCallback

    store = sweep_store(cfg)
    if store.exists(CONFIG_FILE):
        stored = yaml.safe_load(store.read_bytes(CONFIG_FILE))
        if _normal(parse_config(stored).to_dict()) != _normal(cfg.to_dict()):
            raise ConfigError(
                f"sweep {cfg.name!r} already exists in {store.url()} with a different config; "
                f"continue it with `nf sweep resume {cfg.name}` or give the new sweep another name"
            )
    elif resume:
        raise ConfigError(f"nothing to resume: no sweep {cfg.name!r} in {store.url()}")
    else:
        store.write_bytes(CONFIG_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())
    if store.is_s3 and cfg.s3_endpoint:
        os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", cfg.s3_endpoint)  # MLflow's own S3 client
    items = plan(cfg)
    tracker = SweepTracker(tracking_uri(cfg, store), cfg.mlflow.experiment or cfg.name, artifact_location(cfg, store))
    tracker.ensure_experiment()
    parent = tracker.parent_run(cfg.name, _flat(cfg.to_dict()))
    log(f"MLflow: {tracker.tracking_uri} (experiment {cfg.mlflow.experiment or cfg.name!r})")
    _init_ray(ray_address)
    for stage in STAGES:
        existing = tracker.child_runs(stage)  # one search, not one per item, on resume
        runs = {
            it.id: existing.get(it.id) or tracker.child_run(it.id, stage, item_params(cfg, it)) for it in items[stage]
        }
        pending = [it for it in items[stage] if not store.exists(f"{item_dir(stage, it.id)}/done.json")]
        log(f"stage {stage}: {len(items[stage]) - len(pending)} done, {len(pending)} to run")
        t0 = time.perf_counter()
        if pending:
            # A trial's config is its item; the settings every trial shares go once to the object store.
            trainable = tune.with_parameters(TRAINABLES[stage], cfg=cfg, store=store.spec())
            tuner = tune.Tuner(
                tune.with_resources(trainable, _resources(cfg, stage)),
                param_space={"item": tune.grid_search([it.to_dict() for it in pending])},
                # reuse_actors: later trials of a stage skip the worker start and imports
                tune_config=tune.TuneConfig(
                    max_concurrent_trials=cfg.resources.max_concurrent,
                    reuse_actors=True,
                    trial_name_creator=lambda t: t.config["item"]["id"],
                    trial_dirname_creator=lambda t: t.config["item"]["id"],
                ),
                run_config=tune.RunConfig(
                    name=f"{stage}-{time.strftime('%Y%m%d-%H%M%S')}",
                    storage_path=store.path("tune"),
                    storage_filesystem=store.fs,
                    failure_config=tune.FailureConfig(max_failures=cfg.resources.max_failures),
                    callbacks=[MlflowTuneCallback(tracker, runs)],
                    verbose=verbose,
                ),
            )
            grid = tuner.fit()
            failed = [r for r in grid if r.error is not None]
        else:
            failed = []
        _log_item_artifacts(tracker, store, stage, items[stage], runs)
        seconds = time.perf_counter() - t0
        tracker.log_metrics(parent, {f"stage_seconds.{stage}": seconds}, step=0)
        log(f"stage {stage}: finished in {seconds:.1f} s")
        if failed:
            tracker.finish(parent, "FAILED")
            ids = [r.config["item"]["id"] for r in failed]
            raise SweepError(
                f"stage {stage}: {len(failed)} trial(s) failed: {', '.join(ids)}; "
                f"see `nf sweep status {cfg.name}`, fix, then `nf sweep resume {cfg.name}`"
            )
    rows = collect_rows(cfg, store)
    _log_sweep_artifacts(tracker, parent, store, cfg, rows)
    tracker.finish(parent, "FINISHED")
    return rows


def collect_rows(cfg: SweepConfig, store: Store | None = None) -> list[dict[str, Any]]:
    """Every evaluation and transfer row of the finished items."""
    store = store or sweep_store(cfg)
    rows: list[dict[str, Any]] = []
    items = plan(cfg)
    for stage in ("eval", "transfer"):
        for it in items[stage]:
            rel = f"{item_dir(stage, it.id)}/done.json"
            if store.exists(rel):
                rows += store.read_json(rel)["rows"]
    return rows


def _log_item_artifacts(tracker, store: Store, stage: str, items: list[Item], runs: dict[str, str]) -> None:
    """Each finished item's checkpoint / results to its MLflow run, once."""
    config_bytes = store.read_bytes(CONFIG_FILE)
    for it in items:
        d = item_dir(stage, it.id)
        run_id = runs[it.id]
        if not store.exists(f"{d}/done.json") or tracker.get_tag(run_id, "nf.artifacts") == "1":
            continue
        for name in ("checkpoint.pt", "results.parquet", "done.json"):
            if store.exists(f"{d}/{name}"):
                tracker.log_bytes(run_id, name, store.read_bytes(f"{d}/{name}"))
        tracker.log_bytes(run_id, CONFIG_FILE, config_bytes)
        tracker.set_tag(run_id, "nf.artifacts", "1")
        tracker.finish(run_id, "FINISHED")


def _log_sweep_artifacts(tracker, parent: str, store: Store, cfg: SweepConfig, rows: list[dict[str, Any]]) -> None:
    from orchestration.results import heatmap_png, results_table, transfer_matrix, write_parquet

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
