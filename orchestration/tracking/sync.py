"""The default MLflow store of a sweep, and keeping it recoverable from the sweep's storage.

With no ``mlflow.tracking_uri`` a sweep is tracked in a SQLite file:

- local storage: ``<storage>/<name>/mlflow.db``, beside the sweep (a copied sweep brings its
  database; its runs' artifact locations are moved along, see :func:`relocate_artifacts`);
- S3 storage: a working copy in the local cache (``$XDG_CACHE_HOME/nf/mlflow/…``, default
  ``~/.cache``), uploaded whole (one PUT) to ``<storage>/<name>/mlflow/mlflow.db`` as trials end
  (at most once a minute, orchestration.sweep.dataflow.TrackingPush) and when the sweep ends or fails.
  A driver starting on a machine without the working copy
  (a new head node, a wiped disk) fetches the storage copy first, so a resume anywhere continues
  the same runs. A working copy is used only if the storage copy is still the one it last
  uploaded (else another head node went on since, and the storage copy wins).

What the storage copy lacks (epochs logged after its last upload) is filled in again from the
items' epoch histories (``done.json``, or their checkpoints) by :func:`backfill_history`.
A user-given ``mlflow.tracking_uri`` is used as is and never synced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import tempfile
import time
from contextlib import closing
from typing import TYPE_CHECKING, Any

import pyarrow.fs as pafs

from orchestration.store.item_files import item_dir

if TYPE_CHECKING:
    from orchestration.spec.config import SweepConfig
    from orchestration.spec.plan import Item
    from orchestration.store.storage import Store

log = logging.getLogger(__name__)

REMOTE_DB = "mlflow/mlflow.db"
HISTORY_TAG = "nf.history"  # "1": every epoch of the (done) item is in MLflow


def is_synced(cfg: SweepConfig, store: Store) -> bool:
    """True when the sweep's MLflow store is the default SQLite file kept in S3 storage."""
    return not cfg.mlflow.tracking_uri and store.is_s3


def cache_dir(cfg: SweepConfig, store: Store) -> str:
    """The local working folder of an S3 sweep's MLflow database (one per storage location)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    key = hashlib.sha1(store.url().encode()).hexdigest()[:12]
    return os.path.join(root, "nf", "mlflow", f"{cfg.name}-{key}")


def default_db_exists(cfg: SweepConfig, store: Store) -> bool:
    """Whether the sweep's default SQLite file exists (here, or for S3 storage in the storage)."""
    if not store.is_s3:
        return os.path.exists(os.path.join(store.path(), "mlflow.db"))
    return os.path.exists(os.path.join(cache_dir(cfg, store), "mlflow.db")) or _remote_stamp(store) is not None


def artifact_location(cfg: SweepConfig, store: Store) -> str:
    """A given ``mlflow.artifact_location``; else the sweep's ``mlartifacts`` folder in its storage."""
    return cfg.mlflow.artifact_location or store.url("mlartifacts")


def default_db(cfg: SweepConfig, store: Store) -> str:
    """Path of the default SQLite file, ready to open: fetched from storage when needed, its
    artifact locations pointing at this storage."""
    from orchestration.tracking.tracker import artifact_uri

    if store.is_s3:
        folder = cache_dir(cfg, store)
        os.makedirs(folder, exist_ok=True)
        db = os.path.join(folder, "mlflow.db")
        fetch(store, db)
    else:
        os.makedirs(store.path(), exist_ok=True)
        db = os.path.join(store.path(), "mlflow.db")
    if not cfg.mlflow.artifact_location:
        relocate_artifacts(db, cfg.mlflow.experiment or cfg.name, artifact_uri(artifact_location(cfg, store)))
    return db


def _remote_stamp(store: Store) -> dict[str, Any] | None:
    info = store.fs.get_file_info(store.path(REMOTE_DB))
    if info.type == pafs.FileType.NotFound:
        return None
    return {"size": info.size, "mtime_ns": info.mtime_ns}


def _read_stamp(db: str) -> dict[str, Any] | None:
    try:
        with open(db + ".sync.json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_stamp(db: str, stamp: dict[str, Any] | None) -> None:
    with open(db + ".sync.json", "w") as f:
        json.dump(stamp, f)


def fetch(store: Store, db: str) -> bool:
    """Bring the storage copy to ``db`` unless the local copy descends from it; True if fetched."""
    remote = _remote_stamp(store)
    if remote is None:
        return False  # nothing uploaded yet: the local copy (if any) is all there is
    if os.path.exists(db) and _read_stamp(db) == remote:
        return False  # our own last upload: the local copy holds that and what came after
    if os.path.exists(db):  # another head node went on from the storage copy: it wins
        stale = f"{db}.{time.strftime('%Y%m%d-%H%M%S')}.stale"
        os.replace(db, stale)
        log.warning("MLflow working copy %s is older than the sweep's storage copy; kept as %s", db, stale)
    data = store.read_bytes(REMOTE_DB)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(db), suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, db)
    _write_stamp(db, remote)
    return True


def push_tracking(cfg: SweepConfig, store: Store) -> None:
    """Upload the working copy of an S3 sweep's MLflow database to its storage (one PUT).

    A failed upload costs only recoverability until the next one: it is logged, not raised."""
    if not is_synced(cfg, store):
        return
    db = os.path.join(cache_dir(cfg, store), "mlflow.db")
    if not os.path.exists(db):
        return
    try:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(db), suffix=".snapshot")
        os.close(fd)
        try:
            # A consistent snapshot even if a connection of the driver is open.
            with closing(sqlite3.connect(db)) as src, closing(sqlite3.connect(tmp)) as dst:
                src.backup(dst)
            with open(tmp, "rb") as f:
                data = f.read()
        finally:
            os.unlink(tmp)
        store.write_bytes(REMOTE_DB, data)
        _write_stamp(db, _remote_stamp(store))
    except Exception as e:  # noqa: BLE001
        log.warning("could not upload the MLflow database to %s: %s", store.url(REMOTE_DB), e)


def relocate_artifacts(db: str, experiment: str, expected: str) -> None:
    """Point a moved sweep's default artifact locations at its own storage.

    MLflow fixes an experiment's artifact location (and each run's) at creation; a sweep whose
    folder was copied elsewhere would otherwise keep writing artifacts into the original."""
    if not os.path.exists(db):
        return
    with closing(sqlite3.connect(db)) as con:
        try:
            row = con.execute("SELECT artifact_location FROM experiments WHERE name = ?", (experiment,)).fetchone()
        except sqlite3.OperationalError:
            return  # no MLflow tables yet
        if row is None or not row[0] or row[0].rstrip("/") == expected.rstrip("/"):
            return
        old = row[0].rstrip("/")
        if not old.endswith("/mlartifacts"):
            return  # not our default location: someone chose it, leave it
        new = expected.rstrip("/")
        with con:
            con.execute("UPDATE experiments SET artifact_location = ? WHERE name = ?", (new, experiment))
            con.execute(
                "UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) WHERE substr(artifact_uri, 1, ?) = ?",
                (new, len(old) + 1, len(old), old),
            )
    log.warning("sweep moved: MLflow artifact location %s is now %s", old, new)


def _history(store: Store, stage: str, item_id: str) -> list[dict[str, Any]] | None:
    """An item's per-epoch results and its final one (None: not done)."""
    d = item_dir(stage, item_id)
    if not store.exists(f"{d}/done.json"):
        return None
    done = store.read_json(f"{d}/done.json")
    history = done.get("history")
    if history is None and store.exists(f"{d}/checkpoint.pt"):  # done before histories were kept there
        try:
            history = store.load_torch(f"{d}/checkpoint.pt").get("history")
        except Exception as e:  # noqa: BLE001 (an unreadable checkpoint is its trials' error, not the driver's)
            log.warning("no epoch history for %s/%s: its checkpoint is unreadable (%s)", stage, item_id, e)
    return [*(history or []), done.get("final") or {}]


def backfill_history(
    tracker: Any, store: Store, stage: str, items: list[Item], runs: dict[str, str], logger: Any = None
) -> int:
    """Log every epoch of the stage's done items that their MLflow runs lack (a driver killed
    between a checkpoint and its MLflow write, or a database fetched from an older upload).

    Items are done once: a run tagged ``nf.history=1`` is skipped, so this costs one search
    per stage after the first pass. ``logger``: the run's live MlflowTuneCallback, whose record of what
    it logged spares one MLflow query per metric of every item trained in this run. Returns how many
    runs were completed."""
    from orchestration.tracking.tune_callback import MlflowTuneCallback

    complete = tracker.child_runs_tagged(HISTORY_TAG, stage=stage)  # one paged search
    logger = logger or MlflowTuneCallback(tracker, runs)
    n = 0
    for it in items:
        run_id = runs.get(it.id)
        if not run_id or run_id in complete:
            continue
        history = _history(store, stage, it.id)
        if history is None:
            continue
        for result in history:
            if "epoch" in result:
                logger.log_result(run_id, result)
        tracker.set_tag(run_id, HISTORY_TAG, "1")
        n += 1
    return n
