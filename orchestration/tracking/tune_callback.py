"""The Ray Tune callback that logs trial results into a sweep's MLflow child runs (driver side)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from ray.tune import Callback

from orchestration.tracking.tracker import SweepTracker, flatten, numeric_metrics

log = logging.getLogger(__name__)

# Ray's bookkeeping in every result: not metrics of the experiment.
RAY_RESULT_KEYS = frozenset(
    {
        "done",
        "pid",
        "timestamp",
        "date",
        "hostname",
        "node_ip",
        "trial_id",
        "experiment_tag",
        "training_iteration",
        "iterations_since_restore",
        "time_since_restore",
        "timesteps_since_restore",
        "timesteps_total",
        "episodes_total",
        "episodes_this_iter",
        "timesteps_this_iter",
        "should_checkpoint",
        "checkpoint_dir_name",
        "config",
        "time_this_iter_s",
        "time_total_s",
    }
)


class MlflowTuneCallback(Callback):
    """Logs trial results into the child runs of the driver's SweepTracker.

    A trial's config is its item, ``{"item": {"id": ..., ...}}``; ``runs`` maps item ids to
    child run ids (made by the driver before ``Tuner.fit``).
    Unlike Ray's MLflowLoggerCallback, a resumed trial keeps its
    run, and a (key, step) already in MLflow is not logged again (a restored trial re-reports
    the epochs after its last checkpoint).
    """

    def __init__(
        self,
        tracker: SweepTracker,
        runs: Mapping[str, str],
        step_key: str = "epoch",
        stage: str | None = None,
        exclude: Iterable[str] = RAY_RESULT_KEYS,
        fresh: Iterable[str] = (),
    ) -> None:
        self.tracker = tracker
        self.runs = dict(runs)
        self.step_key = step_key
        self.stage = stage  # if set, items missing from ``runs`` get a child run on first sight
        self.exclude = frozenset(exclude)
        self._steps: dict[tuple[str, str], set[int]] = {}
        # runs the driver created in this session: nothing logged yet, so no history to ask MLflow for
        self.fresh = set(fresh)
        self.finished: set[str] = set()  # runs this callback ended FINISHED

    def run_for(self, trial: Any) -> str | None:
        """The child run of a trial, or None (logged once) if it has no item id / run."""
        item = ((getattr(trial, "config", None) or {}).get("item") or {}).get("id")
        if item is None:
            return None
        if item not in self.runs and self.stage is not None:
            self.runs[item] = self.tracker.child_run(item, self.stage, trial.config)
        if item not in self.runs:
            log.warning("no MLflow run for item %s; its results are not tracked", item)
            self.runs[item] = ""
        return self.runs[item] or None

    def log_result(self, run_id: str, result: Mapping[str, Any]) -> None:
        """Log one result dict at its step, skipping (key, step) pairs MLflow already has.

        Public so a resumed driver can backfill results from the trials' result files.
        """
        step = result.get(self.step_key, result.get("training_iteration", 0))
        step = int(step)
        flat = flatten({k: v for k, v in result.items() if k not in self.exclude and k != self.step_key}, sep="/")
        todo = {}
        for k, v in numeric_metrics(flat).items():
            seen = self._steps.get((run_id, k))
            if seen is None:
                seen = set() if run_id in self.fresh else self.tracker.logged_steps(run_id, k)
                self._steps[(run_id, k)] = seen
            if step not in seen:
                todo[k] = v
        if todo:
            self.tracker.log_metrics(run_id, todo, step)
            for k in todo:  # marked only once logged: a failed write is tried again (backfill)
                self._steps[(run_id, k)].add(step)

    def _status(self, trial: Any, status: str) -> None:
        run_id = self.run_for(trial)
        if run_id:
            self.tracker.finish(run_id, status)
            if status == "FINISHED":
                self.finished.add(run_id)
            else:
                self.finished.discard(run_id)

    def _guarded(self, fn: Any, *args: Any) -> None:
        # An exception in a Tune callback aborts the whole sweep: a tracking hiccup (store busy,
        # server restarting) must cost at most some MLflow records, never the trials' work.
        try:
            fn(*args)
        except Exception:  # noqa: BLE001
            log.warning("MLflow tracking failed in %s; the sweep goes on", getattr(fn, "__name__", fn), exc_info=True)

    # Hook signatures as in ray/tune/callback.py (2.60): (iteration, trials, trial, [result], **info).
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._guarded(self._status, trial, "RUNNING")

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._guarded(self._status, trial, "RUNNING")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._guarded(self._result, trial, result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._guarded(self._status, trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._guarded(self._status, trial, "FAILED")

    def _result(self, trial: Any, result: dict) -> None:
        run_id = self.run_for(trial)
        if run_id:
            self.log_result(run_id, result)
