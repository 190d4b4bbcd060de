"""MLflow tracking for sweeps, written by the Ray Tune driver only: parameter flattening
(secrets dropped) and the tracker of a sweep's experiment, parent run and child runs.

The driver is the single MLflow writer: trials only call ``ray.tune.report``. Concurrent
trials creating experiments/runs on one SQLite file race, and an experiment created inside
a trial puts artifacts in the trial's temp dir, so the experiment (with an explicit
artifact location), the parent run and the child runs are all created here, get-or-create,
found again by tags so a resumed driver never duplicates a run. Trial results reach the
tracker through ``orchestration.tracking.tune_callback``; ``orchestration.tracking.server`` runs a server.
"""

from __future__ import annotations

import importlib.metadata
import logging
import numbers
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus
from mlflow.entities.lifecycle_stage import LifecycleStage
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from orchestration.errors import signals_raise

log = logging.getLogger(__name__)

# Keys are matched case-insensitively as substrings, after flattening nested dicts.
SECRET_MARKERS = ("secret", "password", "token", "access_key", "credential")
PARENT_TAG = "mlflow.parentRunId"
_PARAM_VALUE_MAX = 6000  # MLflow's limit on a param value
_BATCH_PARAMS = 100  # MLflow's limit on params per log_batch
_BATCH_METRICS = 1000  # MLflow's limit on metrics per log_batch
_STATUSES = frozenset(RunStatus.to_string(s) for s in RunStatus.all_status())
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")  # what MLflow rejects in param and metric names
_REPO = Path(__file__).resolve().parents[2]


def is_secret(key: str) -> bool:
    """True for keys that must never reach MLflow (params are permanent and widely readable)."""
    k = key.lower()
    return any(m in k for m in SECRET_MARKERS)


_URI_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@")


def redact_uri(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` URI replaced by ``***``.

    Database tracking URIs (``postgresql://user:pw@host/db``) carry their password inline; they are
    printed and recorded as parameters, so the password is dropped wherever they appear.
    """
    return _URI_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


def flatten(d: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Nested dicts to one level with dotted keys (so a nested secret is still caught by its key)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key, sep))
        else:
            out[key] = v
    return out


def clean_key(key: str) -> str:
    """A param/metric name MLflow accepts: other characters become '_' (e.g. 'a+b' → 'a_b')."""
    return _BAD_KEY_CHARS.sub("_", key)


def safe_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Flattened, secret-free, stringified params, clipped to MLflow's value limit."""
    out = {}
    for k, v in flatten(params).items():
        if is_secret(k):
            continue
        s = redact_uri(str(v))
        if len(s) > _PARAM_VALUE_MAX:
            log.warning("param %s clipped to %d characters", k, _PARAM_VALUE_MAX)
            s = s[: _PARAM_VALUE_MAX - 3] + "..."
        out[clean_key(k)] = s
    return out


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Real numbers only (bools and strings skipped; numpy scalars accepted)."""
    return {
        clean_key(k): float(v) for k, v in metrics.items() if isinstance(v, numbers.Real) and not isinstance(v, bool)
    }


@lru_cache(maxsize=1)
def code_version() -> str:
    """Git commit of the repo if there is one, else the installed package version."""
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_REPO, capture_output=True, text=True, timeout=10)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return importlib.metadata.version("neuralfuse-sweeps")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def artifact_uri(location: str | os.PathLike | None) -> str | None:
    """URIs (s3://, file://, …) pass through; a local path becomes an absolute file URI,
    so artifacts never land relative to whichever working dir the process happens to have."""
    if location is None:
        return None
    s = os.fspath(location)
    if "://" in s:
        return s
    return Path(s).expanduser().resolve().as_uri()


def _q(value: str) -> str:
    """Quote a value for an MLflow filter string."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"value {value!r} has both quote kinds; cannot search for it")


class SweepTracker:
    """Experiment, one parent run per sweep and one child run per item, via MlflowClient only."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_location: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.artifact_location = artifact_uri(artifact_location)
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.sweep_name: str | None = None

    # -- experiment and runs -------------------------------------------------------------
    def ensure_experiment(self) -> str:
        """Get or create the experiment; returns its id."""
        if self.experiment_id is not None:
            return self.experiment_id
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is None:
            try:
                self.experiment_id = self.client.create_experiment(
                    self.experiment, artifact_location=self.artifact_location
                )
                return self.experiment_id
            except MlflowException:
                # Another driver won the race: use its experiment.
                exp = self.client.get_experiment_by_name(self.experiment)
                if exp is None:
                    raise
        if exp.lifecycle_stage == LifecycleStage.DELETED:
            self.client.restore_experiment(exp.experiment_id)
        if self.artifact_location and exp.artifact_location.rstrip("/") != self.artifact_location.rstrip("/"):
            # The location is fixed at creation; say so rather than silently writing elsewhere.
            log.warning(
                "experiment %s keeps its artifact location %s (asked for %s)",
                self.experiment,
                exp.artifact_location,
                self.artifact_location,
            )
        self.experiment_id = exp.experiment_id
        return self.experiment_id

    def _find(self, tags: Mapping[str, str]) -> str | None:
        flt = " and ".join(f"tags.`{k}` = {_q(v)}" for k, v in tags.items())
        # Oldest first: if a duplicate ever slipped in, every driver picks the same run.
        runs = self.client.search_runs(
            [self.ensure_experiment()], flt, max_results=1, order_by=["attributes.start_time ASC"]
        )
        return runs[0].info.run_id if runs else None

    def parent_run(self, sweep_name: str, params: Mapping[str, Any] | None = None) -> str:
        """Get or create the sweep's one parent run (tags nf.sweep, nf.role=parent); status RUNNING."""
        tags = {"nf.sweep": sweep_name, "nf.role": "parent"}
        run_id = self._find(tags)
        if run_id is None:
            run_id = self.client.create_run(self.ensure_experiment(), tags=tags, run_name=sweep_name).info.run_id
        elif self.run_status(run_id) != "RUNNING":
            self.finish(run_id, "RUNNING")  # a resumed driver: the sweep is running again
        self._log_params_once(run_id, params or {})
        self.sweep_name, self.parent_run_id = sweep_name, run_id
        return run_id

    def child_run(
        self,
        item_id: str,
        stage: str,
        params: Mapping[str, Any] | None = None,
        parent_run_id: str | None = None,
        known_new: bool = False,
    ) -> str:
        """Get or create the child run of one stage item (run name = item id); params logged once.

        ``known_new``: the caller has just searched the parent's children (``child_runs``) and this item
        has none: create it without a search of its own (two round trips fewer per item)."""
        parent = parent_run_id or self.parent_run_id
        if parent is None:
            raise RuntimeError("call parent_run() before child_run(), or pass parent_run_id")
        tags = {PARENT_TAG: parent, "nf.item_id": item_id, "nf.stage": stage}
        run_id = None if known_new else self._find(tags)
        if run_id is None:
            extra = {"nf.role": "child"}
            if self.sweep_name:
                extra["nf.sweep"] = self.sweep_name
            run_id = self.client.create_run(
                self.ensure_experiment(), tags={**tags, **extra}, run_name=item_id
            ).info.run_id
            if known_new:  # a fresh run has no params yet: log them all, without reading the run back
                new = [Param(k, v) for k, v in {**safe_params(params or {}), "code_version": code_version()}.items()]
                for i in range(0, len(new), _BATCH_PARAMS):
                    self.client.log_batch(run_id, params=new[i : i + _BATCH_PARAMS])
                return run_id
        self._log_params_once(run_id, params or {})
        return run_id

    def child_runs(self, stage: str | None = None, parent_run_id: str | None = None) -> dict[str, str]:
        """item_id → run_id of the parent's children (optionally one stage), in one search."""
        parent = parent_run_id or self.parent_run_id
        if parent is None:
            raise RuntimeError("call parent_run() first, or pass parent_run_id")
        flt = f"tags.`{PARENT_TAG}` = {_q(parent)}"
        if stage is not None:
            flt += f" and tags.`nf.stage` = {_q(stage)}"
        out: dict[str, str] = {}
        token = None
        while True:
            page = self.client.search_runs(
                [self.ensure_experiment()],
                flt,
                max_results=1000,
                order_by=["attributes.start_time ASC"],
                page_token=token,
            )
            for r in page:
                out.setdefault(r.data.tags.get("nf.item_id", ""), r.info.run_id)
            token = page.token
            if not token:
                return out

    def child_runs_tagged(self, tag: str, value: str = "1", stage: str | None = None) -> set[str]:
        """Run ids of the parent's children with ``tag`` = ``value``, in one paged search (not one
        lookup per run: a sweep of thousands of items asks once)."""
        flt = f"tags.`{PARENT_TAG}` = {_q(self.parent_run_id or '')} and tags.`{tag}` = {_q(value)}"
        if stage is not None:
            flt += f" and tags.`nf.stage` = {_q(stage)}"
        out: set[str] = set()
        token = None
        while True:
            page = self.client.search_runs([self.ensure_experiment()], flt, max_results=1000, page_token=token)
            out |= {r.info.run_id for r in page}
            token = page.token
            if not token:
                return out

    def _log_params_once(self, run_id: str, params: Mapping[str, Any]) -> None:
        # Params are immutable in MLflow: log only the keys the run does not have yet.
        wanted = {**safe_params(params), "code_version": code_version()}
        have = self.client.get_run(run_id).data.params
        for k, v in wanted.items():
            if k in have and have[k] != v:
                log.warning("run %s keeps param %s=%r (now %r)", run_id, k, have[k], v)
        new = [Param(k, v) for k, v in wanted.items() if k not in have]
        for i in range(0, len(new), _BATCH_PARAMS):
            self.client.log_batch(run_id, params=new[i : i + _BATCH_PARAMS])

    # -- logging -------------------------------------------------------------------------
    def log_metrics(self, run_id: str, metrics: Mapping[str, Any], step: int) -> None:
        """Log the numeric values of ``metrics`` at ``step``; others are skipped."""
        ts = int(time.time() * 1000)
        ms = [Metric(k, v, ts, int(step)) for k, v in numeric_metrics(metrics).items()]
        for i in range(0, len(ms), _BATCH_METRICS):
            self.client.log_batch(run_id, metrics=ms[i : i + _BATCH_METRICS])

    def log_artifact(self, run_id: str, local_path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Copy a local file (or directory) into the run's artifacts."""
        p = Path(local_path)
        if p.is_dir():
            self.client.log_artifacts(run_id, str(p), artifact_path)
        else:
            self.client.log_artifact(run_id, str(p), artifact_path)

    def log_bytes(self, run_id: str, name: str, data: bytes, artifact_path: str | None = None) -> None:
        """Store ``data`` as artifact ``name`` (via a temp file: MLflow uploads files)."""
        with tempfile.TemporaryDirectory(prefix="nf-artifact-") as d:
            f = Path(d) / name
            f.write_bytes(data)
            self.client.log_artifact(run_id, str(f), artifact_path)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        """Set the run status: FINISHED, FAILED or KILLED end it; RUNNING reopens it."""
        if status not in _STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        if status == "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        else:
            self.client.set_terminated(run_id, status)

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        """Set a (mutable) tag, e.g. a marker that an item's artifacts are uploaded."""
        self.client.set_tag(run_id, key, value)

    def get_tag(self, run_id: str, key: str) -> str | None:
        """A tag's value, or None."""
        return self.client.get_run(run_id).data.tags.get(key)

    def run_status(self, run_id: str) -> str:
        """The run's status string (RUNNING, FINISHED, FAILED, KILLED, SCHEDULED)."""
        return self.client.get_run(run_id).info.status

    def logged_steps(self, run_id: str, key: str) -> set[int]:
        """Steps already logged for metric ``key`` (to backfill what a killed driver missed)."""
        return {m.step for m in self.client.get_metric_history(run_id, key)}


@contextmanager
def parent_run_guard(tracker: SweepTracker, parent: str) -> Iterator[None]:
    """Never leave a sweep's MLflow runs RUNNING: if the block ends by an exception, the parent run and
    its children still RUNNING end KILLED for Ctrl-C / SIGTERM / SIGHUP and FAILED for any other error,
    and the exception goes on. Within the block SIGTERM and SIGHUP raise like Ctrl-C does
    (``orchestration.errors.signals_raise``)."""
    try:
        with signals_raise():
            yield
    except BaseException as e:
        end_open_runs(tracker, parent, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise


def end_open_runs(tracker: SweepTracker, parent: str, status: str) -> None:
    """End the parent run and its children that are still RUNNING with ``status`` (FAILED or KILLED).

    Best effort: when the tracking store itself is the failure, a warning is logged and the caller's
    exception (the real cause) is the one the user sees.
    """
    try:
        exp = tracker.ensure_experiment()
        flt = f"tags.`{PARENT_TAG}` = {_q(parent)} and attributes.status = 'RUNNING'"
        children = [r.info.run_id for r in tracker.client.search_runs([exp], flt, max_results=50000)]
        for run_id in [*children, parent]:
            if run_id == parent and tracker.run_status(parent) != "RUNNING":
                continue  # already ended
            tracker.finish(run_id, status)
    except Exception as e:  # noqa: BLE001 (the original error matters more)
        log.warning("could not mark the sweep's MLflow runs %s: %s", status, " ".join(str(e).split())[:300])
