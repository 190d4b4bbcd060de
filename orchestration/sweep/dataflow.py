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

import heapq
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
    """Hands Tune the pending items in dependency order (see the module docstring).

    ``done``: keys already complete (done.json) before this run; ``is_done(key)``: whether an
    item's done.json exists now (a trial that ended without error but wrote none failed);
    ``priority``: higher goes first among ready items (ties: the given order). ``sweeps``: each
    item's sweep name (a run of several sweeps, `nf sweep run a.yaml b.yaml`); with ``prefixed``
    an item's key is ``sweep/id`` (ids of different sweeps may be equal), else its id.

    Each release costs O(log n): an item waits on a count of its unmet needs, and enters a heap of
    ready items when the count reaches zero (no scan over all items per suggestion).
    """

    def __init__(
        self,
        items: Sequence[Item],
        done: set[str],
        is_done: Callable[[str], bool],
        priority: dict[str, float] | None = None,
        sweeps: Sequence[str] | None = None,
        prefixed: bool = False,
    ) -> None:
        super().__init__(metric=None, mode=None)
        prio = priority or {}
        names = list(sweeps) if sweeps is not None else [""] * len(items)
        self.done: set[str] = set(done)
        self.failed: set[str] = set()
        self.live: dict[str, str] = {}  # trial id -> key
        self.is_done = is_done
        self.prefixed = prefixed
        self.todo: dict[str, tuple[Item, str]] = {}  # key -> (item, sweep): not handed out yet
        self._waiting: dict[str, int] = {}  # key -> needs not done yet
        self._users: dict[str, list[str]] = {}  # key -> keys of the items that need it
        self._rank: dict[str, tuple[float, int]] = {}
        self._ready: list[tuple[tuple[float, int], str]] = []
        for order, (it, sweep) in enumerate(zip(items, names, strict=True)):
            key = f"{sweep}/{it.id}" if prefixed else it.id
            self.todo[key] = (it, sweep)
            self._rank[key] = (-prio.get(key, 0.0), order)
            needs = [f"{sweep}/{n}" if prefixed else n for n in it.needs]
            unmet = [n for n in needs if n not in self.done]
            self._waiting[key] = len(unmet)
            for n in unmet:
                self._users.setdefault(n, []).append(key)
            if not unmet:
                heapq.heappush(self._ready, (self._rank[key], key))

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # the items are the search space; Tune's metric/mode do not apply

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._ready:
            _, key = heapq.heappop(self._ready)
            it, sweep = self.todo.pop(key)
            self.live[trial_id] = key
            # one sweep: the trial's config is its item alone, as before; several: its sweep and key too
            return {"item": it.to_dict(), "sweep": sweep, "key": key} if self.prefixed else {"item": it.to_dict()}
        # Nothing ready: wait for a running trial, or stop when none runs (the rest is blocked).
        return None if self.live else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        key = self.live.pop(trial_id, None)
        if key is None:
            return
        if not error and self.is_done(key):
            self.done.add(key)
            for user in self._users.pop(key, []):
                self._waiting[user] -= 1
                if self._waiting[user] == 0 and user in self.todo:
                    heapq.heappush(self._ready, (self._rank[user], user))
        else:
            self.failed.add(key)

    @property
    def blocked(self) -> list[str]:
        """Keys of the items never handed out: something they need failed."""
        return list(self.todo)

    def get_state(self) -> dict[str, Any]:
        return {"done": sorted(self.done), "failed": sorted(self.failed), "todo": list(self.todo)}

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


def run_item(
    config: dict[str, Any],
    sweeps: dict[str, tuple[SweepConfig, dict[str, Any]]],
    trainables: dict[str, Callable[..., None]] | None = None,
) -> None:
    """The trainable of every trial: the item's stage's trainable (orchestration.sweep.trainables), with
    the config and storage of the item's sweep. ``trainables``: stand-ins (the scaling benchmark only)."""
    if trainables is None:
        from orchestration.sweep.trainables import TRAINABLES as trainables
    cfg, store = sweeps[config.get("sweep") or next(iter(sweeps))]
    return trainables[config["item"]["stage"]](config, cfg=cfg, store=store)


def item_resources(cfgs: SweepConfig | Sequence[SweepConfig]) -> Callable[[dict[str, Any]], Any]:
    """``config -> PlacementGroupFactory`` for tune.with_resources: each stage's own bundles (of the
    item's sweep, when a run holds several)."""
    from ray import tune

    from orchestration.cluster.capacity import trial_bundles

    cfgs = [cfgs] if isinstance(cfgs, SweepConfig) else list(cfgs)
    factories = {
        (c.name, s): tune.PlacementGroupFactory(trial_bundles(c, s))
        for c in cfgs
        for s in ("base", "generator", "eval", "transfer")
    }
    first = cfgs[0].name
    return lambda config: factories[(config.get("sweep") or first, config["item"]["stage"])]


class ForSweep(Callback):
    """Passes a Tune callback the events of one sweep's trials only (a run of several sweeps): each
    sweep's MLflow logger, clock and tracking upload see their own items."""

    def __init__(self, sweep: str, inner: Callback) -> None:
        self.sweep, self.inner = sweep, inner

    def _mine(self, trial: Any) -> bool:
        return (getattr(trial, "config", None) or {}).get("sweep") == self.sweep

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self._mine(trial):
            self.inner.on_trial_start(iteration, trials, trial, **info)

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self._mine(trial):
            self.inner.on_trial_restore(iteration, trials, trial, **info)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self._mine(trial):
            self.inner.on_trial_recover(iteration, trials, trial, **info)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if self._mine(trial):
            self.inner.on_trial_result(iteration, trials, trial, result, **info)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self._mine(trial):
            self.inner.on_trial_complete(iteration, trials, trial, **info)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self._mine(trial):
            self.inner.on_trial_error(iteration, trials, trial, **info)


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
