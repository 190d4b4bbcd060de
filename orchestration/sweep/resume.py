"""Continuing a sweep with a corrected config (where sweeps live: orchestration/store/roots.py).

Changed configs. ``nf sweep resume NAME --config FILE`` accepts a new config when no
completed item's parameters change: items are compared one by one (their grid values,
the settings of their stage, their dataset's subsets, and the items they read, transitively),
never whole configs. Completed items are kept; unfinished items whose parameters changed
lose their checkpoints (and their MLflow runs) and start again; the old ``sweep.yaml`` is
kept as ``sweep.<timestamp>.yaml``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from orchestration.spec.config import STAGES, ConfigError, SweepConfig
from orchestration.store.item_files import item_dir
from orchestration.store.roots import CONFIG_FILE

if TYPE_CHECKING:
    from orchestration.spec.plan import Item
    from orchestration.store.storage import Store

# What says where a sweep is, not what it computes: never a reason to call two configs different.
_LOCATION_FIELDS = ("storage", "s3_endpoint", "s3_region")
_ITEM_FILES = ("checkpoint.pt", "attempts.json", "status.json")  # an unfinished item's progress
_MAX_NAMED = 10


def with_storage(cfg: SweepConfig, storage: str, s3_endpoint: str | None = None) -> SweepConfig:
    """``cfg`` living in ``storage`` (and reached through ``s3_endpoint`` when given)."""
    update: dict[str, Any] = {"storage": storage}
    if s3_endpoint:
        update["s3_endpoint"] = s3_endpoint
    return cfg.model_copy(update=update)


def item_params(cfg: SweepConfig, item: Item) -> dict[str, Any]:
    """Everything a trial's MLflow run records: its grid values and its stage's settings."""
    section = {"base": cfg.base, "generator": cfg.generator, "eval": cfg.evaluation, "transfer": cfg.evaluation}
    from orchestration.tracking.tracker import flatten  # mlflow: only where a run is compared or made

    params = {
        **flatten(item.params),
        **flatten(vars(section[item.stage]), item.stage),
        "stage": item.stage,
        "item_id": item.id,
        "sweep": cfg.name,
        "storage": cfg.storage,
    }
    return {k: ("+".join(map(str, v)) if isinstance(v, list) else v) for k, v in params.items()}


def _normal(d: Any) -> Any:
    """Plain JSON values (tuples become lists), for comparisons."""
    return json.loads(json.dumps(d, default=str))


def same_config(a: SweepConfig, b: SweepConfig) -> bool:
    """Equal configs, wherever each says the sweep lives."""

    def strip(c: SweepConfig) -> Any:
        d = c.to_dict()
        for k in _LOCATION_FIELDS:
            d.pop(k, None)
        return _normal(d)

    return strip(a) == strip(b)


def item_signature(cfg: SweepConfig, item: Any) -> Any:
    """Everything an item's result depends on in ``cfg`` (its location aside)."""
    sig = {k: v for k, v in item_params(cfg, item).items() if k not in ("storage", "sweep")}
    ds = next((d for d in cfg.datasets if d.name == item.params.get("dataset")), None)
    if ds is not None:  # the root may move (a fixed path); the data a trial sees may not change
        sig["dataset.train_subset"], sig["dataset.test_subset"] = ds.train_subset, ds.test_subset
    sig["needs"] = list(item.needs)
    return _normal(sig)


@dataclass
class ConfigChange:
    """What a new config does to a sweep's items (``stage/id`` strings)."""

    invalidated: list[str] = field(default_factory=list)  # completed items whose parameters change
    reset: list[tuple[str, str]] = field(default_factory=list)  # unfinished items to start again
    dropped: list[str] = field(default_factory=list)  # completed items no longer in the plan


def compare_configs(old: SweepConfig, new: SweepConfig, store: Store) -> ConfigChange:
    """Compare item by item: which completed items a switch from ``old`` to ``new`` invalidates."""
    from orchestration.spec.plan import plan

    before = {(s, it.id): it for s, items in plan(old).items() for it in items}
    after = plan(new)
    change = ConfigChange()
    changed: dict[str, set[str]] = {s: set() for s in STAGES}  # per stage: item ids whose results would differ
    ids_by_stage: dict[str, str] = {}
    for stage in STAGES:  # dependency order: an item changes when an item it reads changes
        for it in after[stage]:
            ids_by_stage[it.id] = stage
            prev = before.get((stage, it.id))
            upstream = any(n in changed[ids_by_stage.get(n, "")] for n in it.needs if n in ids_by_stage)
            if prev is None or upstream or item_signature(old, prev) != item_signature(new, it):
                changed[stage].add(it.id)
        for it in after[stage]:
            if it.id not in changed[stage]:
                continue
            d = item_dir(stage, it.id)
            if store.exists(f"{d}/done.json"):
                change.invalidated.append(f"{stage}/{it.id}")
            elif (stage, it.id) in before:
                change.reset.append((stage, it.id))
    planned = {(s, it.id) for s, items in after.items() for it in items}
    for stage, item_id in before:
        if (stage, item_id) in planned:
            continue
        if store.exists(f"{item_dir(stage, item_id)}/done.json"):
            change.dropped.append(f"{stage}/{item_id}")
        else:
            change.reset.append((stage, item_id))  # unfinished and gone: its MLflow run goes too
    return change


def _named(items: list[str]) -> str:
    more = f" (and {len(items) - _MAX_NAMED} more)" if len(items) > _MAX_NAMED else ""
    return ", ".join(items[:_MAX_NAMED]) + more


def adopt_config(old: SweepConfig, new: SweepConfig, store: Store, log: Any = print) -> ConfigChange:
    """Make ``new`` the sweep's config if no completed item changes (else ConfigError, one line).

    The old ``sweep.yaml`` is kept as ``sweep.<timestamp>.yaml``; the new one replaces it in one
    atomic write; unfinished items whose parameters changed lose their progress files."""
    change = compare_configs(old, new, store)
    if change.invalidated:
        n = len(change.invalidated)
        raise ConfigError(
            f"sweep {new.name!r}: the new config changes {n} completed item{'s' if n > 1 else ''}, "
            f"which would have to run again: {_named(change.invalidated)}; keep their settings "
            "(grid values, stage settings, dataset subsets), or run the new config under another name"
        )
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    store.write_bytes(f"sweep.{stamp}.yaml", store.read_bytes(CONFIG_FILE))
    store.write_bytes(CONFIG_FILE, yaml.safe_dump(new.to_dict(), sort_keys=False).encode())
    for stage, item_id in change.reset:
        for name in _ITEM_FILES:
            rel = f"{item_dir(stage, item_id)}/{name}"
            if store.exists(rel):
                store.fs.delete_file(store.path(rel))
    log(f"config of sweep {new.name!r} replaced (the old one kept as sweep.{stamp}.yaml)")
    restarted = [f"{s}/{i}" for s, i in change.reset]
    if restarted:
        log(f"  {len(restarted)} unfinished item(s) changed or left the plan, restarted: {_named(restarted)}")
    if change.dropped:
        log(f"  {len(change.dropped)} completed item(s) left the plan (kept in storage, not in the results)")
    return change


def forget_runs(tracker: Any, change: ConfigChange) -> None:
    """Delete the MLflow runs of restarted items: their params and epochs belong to the old config."""
    if not change.reset:
        return
    runs = tracker.child_runs()
    for _stage, item_id in change.reset:
        if item_id in runs:
            tracker.client.delete_run(runs[item_id])
