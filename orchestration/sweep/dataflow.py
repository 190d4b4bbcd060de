"""One Tune run for a whole sweep, with no stage barriers: items start as soon as the items they need are done.

- ``ReadyItems``: a Tune ``Searcher`` that suggests an item only when every item it needs
  (``Item.needs``) is done, most critical first (the longest chain of epochs behind it); it
  answers None while nothing is ready (Tune asks again after the next trial event) and
  ``Searcher.FINISHED`` once everything is handed out or can never run (a failure upstream).
- ``run_item``: the trainable of every trial; it calls the trainable of the item's stage.
- ``item_resources``: a trial's placement group from its item's stage (capacity.trial_bundles).
- ``StageClock``: a Tune callback noting each stage's first trial start and last trial end.
- ``TrackingPush``: a Tune callback uploading an S3 sweep's MLflow working copy as trials end.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from ray.tune import Callback
from ray.tune.search import Searcher

from orchestration.spec.config import SweepConfig
from orchestration.spec.plan import Item


class ReadyItems(Searcher):
    """Hands Tune the sweep's pending items in dependency order (see the module docstring).

    ``done``: ids already complete (done.json) before this run; ``is_done(id)``: whether an
    item's done.json exists now (a trial that ended without error but wrote none failed);
    ``priority``: higher goes first among ready items (ties: the given order).
    """

    def __init__(
        self,
        items: Sequence[Item],
        done: set[str],
        is_done: Callable[[str], bool],
        priority: dict[str, float] | None = None,
    ) -> None:
        super().__init__(metric=None, mode=None)
        prio = priority or {}
        order = {it.id: i for i, it in enumerate(items)}
        self.todo: list[Item] = sorted(items, key=lambda it: (-prio.get(it.id, 0.0), order[it.id]))
        self.done: set[str] = set(done)
        self.failed: set[str] = set()
        self.live: dict[str, str] = {}  # trial id -> item id
        self.is_done = is_done

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # the items are the search space; Tune's metric/mode do not apply

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        for k, it in enumerate(self.todo):
            if all(n in self.done for n in it.needs):
                del self.todo[k]
                self.live[trial_id] = it.id
                return {"item": it.to_dict()}
        # Nothing ready: wait for a running trial, or stop when none runs (the rest is blocked).
        return None if self.live else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        item = self.live.pop(trial_id, None)
        if item is None:
            return
        if not error and self.is_done(item):
            self.done.add(item)
        else:
            self.failed.add(item)

    @property
    def blocked(self) -> list[str]:
        """Items never handed out: something they need failed."""
        return [it.id for it in self.todo]

    def get_state(self) -> dict[str, Any]:
        return {"done": sorted(self.done), "failed": sorted(self.failed), "todo": [it.id for it in self.todo]}

    def set_state(self, state: dict[str, Any]) -> None:
        self.done, self.failed = set(state["done"]), set(state["failed"])

    # Tune saves a searcher with its experiment state. Resuming a sweep does not restore it (the
    # done.json files are the state), but a readable copy beside the trials helps debugging.
    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w") as f:
            json.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            self.set_state(json.load(f))


def run_item(config: dict[str, Any], cfg: SweepConfig, store: dict[str, Any]) -> None:
    """The trainable of every trial: the item's stage's trainable (orchestration.sweep.trainables)."""
    from orchestration.sweep.trainables import TRAINABLES

    return TRAINABLES[config["item"]["stage"]](config, cfg=cfg, store=store)


def item_resources(cfg: SweepConfig) -> Callable[[dict[str, Any]], Any]:
    """``config -> PlacementGroupFactory`` for tune.with_resources: each stage's own bundles."""
    from ray import tune

    from orchestration.cluster.capacity import trial_bundles

    factories = {
        s: tune.PlacementGroupFactory(trial_bundles(cfg, s)) for s in ("base", "generator", "eval", "transfer")
    }
    return lambda config: factories[config["item"]["stage"]]


def priorities(cfg: SweepConfig, items: Sequence[Item]) -> dict[str, float]:
    """Each item's longest chain of epochs to the end of the sweep (itself included), its priority:
    base models that many generators wait for go before a lone generator."""
    from orchestration.cluster.capacity import stage_epochs
    from orchestration.cluster.schedule import Task, ranks

    ids = {it.id for it in items}
    tasks = [
        Task(it.id, float(stage_epochs(cfg, it.stage)), needs=tuple(n for n in it.needs if n in ids)) for it in items
    ]
    return ranks(tasks)


class StageClock(Callback):
    """Per stage: the first start and the last end of its trials in this run (wall-clock seconds)."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}

    @staticmethod
    def _stage(trial: Any) -> str | None:
        return ((getattr(trial, "config", None) or {}).get("item") or {}).get("stage")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        stage = self._stage(trial)
        if stage:
            self.first.setdefault(stage, time.time())

    def _ended(self, trial: Any) -> None:
        stage = self._stage(trial)
        if stage:
            self.last[stage] = time.time()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)

    def seconds(self) -> dict[str, float]:
        """Each stage's wall time, first start to last end (stages that ran in this run)."""
        return {s: self.last[s] - t0 for s, t0 in self.first.items() if s in self.last}


class TrackingPush(Callback):
    """Uploads an S3 sweep's MLflow working copy while the run goes on (orchestration.tracking.sync).

    With stages no longer run one after another there is no stage end to upload at, so the copy
    goes up when a trial ends, at most every ``every`` seconds (the first time at once): a head
    node lost mid-run loses at most that much tracking, and backfill_history restores the epochs.
    Placed after the MLflow callback, so an upload includes what that trial just logged.
    """

    def __init__(self, cfg: SweepConfig, store: dict[str, Any], every: float = 60.0) -> None:
        self.cfg, self.store, self.every = cfg, store, every
        self._last = -math.inf

    def _maybe_push(self) -> None:
        from orchestration.store.storage import Store
        from orchestration.tracking.sync import push_tracking

        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            push_tracking(self.cfg, Store(**self.store))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._maybe_push()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._maybe_push()
