"""An item folder's files, safe against torn writes, foreign copies and stale workers.

Every item of a sweep lives in ``items/<stage>/<id>/`` in the sweep's storage:

- ``done.json``: the item is complete. Only a readable JSON object of this item counts
  (:func:`read_done`): a truncated or empty file means "not done", so the item runs again.
- ``checkpoint.pt`` (+ ``checkpoint.prev.pt``, the epoch before): each carries its item's id and a
  hash of the settings that shape its numbers (:func:`config_hash`). :func:`load_checkpoint`
  falls back to the previous checkpoint when the last one is unreadable (that epoch is trained
  again), restarts the item when its settings changed, and refuses a checkpoint of another item.
- ``lease.json``: which attempt of the item may write; ``lease.<attempt>.json``: its heartbeat
  (:class:`Lease`).

Fencing (why a lease with heartbeats, and not only a token check). A worker of a killed driver
can outlive it by seconds; if a new attempt of the same item started meanwhile, the old worker's
late checkpoint would overwrite the new one (an epoch back in time, or a checkpoint older than
``done.json``). S3 has no compare-and-swap that pyarrow exposes, so "check the token, then write"
alone leaves a window in which the check passed and the write lands after the new attempt began.
Hence a new attempt first *waits until the previous one is gone*: every attempt heartbeats
(a background thread, every ``ttl/4`` s), and a new attempt takes over only when the previous
one released the lease or its heartbeat has not changed for ``ttl`` seconds *as observed by the
newcomer's own clock* (no clock comparison between machines), or is far in the past. The
heartbeat thread lives and dies with its process, so a quiet lease means the old process is
gone or frozen. Against a frozen process that wakes up later (a paused VM), every write of an
attempt first checks that ``lease.json`` still names it, and stops the attempt with
:class:`FencedError` otherwise; ``lease.json`` itself is written only by an attempt taking over,
never by a heartbeat or a release, so a stale process cannot take ownership back. What remains
is a process frozen for more than ``ttl`` between such a check and its write; S3 conditional
writes would close it, and pyarrow does not offer them.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
import uuid
from typing import Any

from orchestration.store.storage import Store

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
# A lease whose own time is this far behind our clock is stale without waiting (clock skew
# between nodes is far below it; a wrong guess is still caught by the writers' token check).
_SKEW_S = 120.0


def item_dir(stage: str, item_id: str) -> str:
    """An item's folder in its sweep's storage (the layout trainables.py writes)."""
    return f"items/{stage}/{item_id}"


# ------------------------------------------------------------------ done.json
def read_done(store: Store, stage: str, item_id: str) -> dict[str, Any] | None:
    """The item's ``done.json`` when it marks this item complete; None otherwise.

    Missing, empty, truncated (unparsable), not a JSON object, or naming another item: not done.
    """
    rel = f"{item_dir(stage, item_id)}/done.json"
    try:
        data = store.read_bytes(rel)
    except FileNotFoundError:
        return None  # (any other storage error propagates: "unreachable" is not "not done")
    try:
        done = json.loads(data)
    except ValueError:  # empty or torn
        return None
    if not isinstance(done, dict):
        return None
    item = done.get("item")
    if isinstance(item, dict) and item.get("id") not in (None, item_id):
        return None  # another item's file copied here
    return done


def item_done(store: Store, stage: str, item_id: str) -> bool:
    """Whether the item is complete (a valid ``done.json`` of this item): the one check of
    done-ness used by the runner, `nf sweep status`, result collection and the trainables."""
    return read_done(store, stage, item_id) is not None


# ------------------------------------------------------------------ checkpoints
# Fields that say how the work is spread, not what it computes: changing them keeps checkpoints.
_NOT_NUMERIC = {"access", "pool_actors"}
# Base-training mode and its options: a base item's spec carries those its mode reads (item.to_dict()
# below), so standard items hash as before the modes existed (orchestration.spec.trial.PROTECTION_FIELDS).
_IN_SPEC = {"training", "wmax", "randbet_ber", "randbet_grad_clip", "randbet_threshold", "awp"}


def config_hash(cfg: Any, item: Any) -> str:
    """A hash of everything that shapes an item's checkpoint: its grid values, its stage's
    training settings and its dataset's subsets (a checkpoint under other values is not resumed)."""
    section = {"base": getattr(cfg, "base", None), "generator": getattr(cfg, "generator", None)}.get(item.stage)
    skip = _NOT_NUMERIC | _IN_SPEC
    settings = {k: v for k, v in section.model_dump().items() if k not in skip} if section is not None else {}
    dataset = next((d for d in cfg.datasets if d.name == item.params.get("dataset")), None)
    data = {"train_subset": dataset.train_subset, "test_subset": dataset.test_subset} if dataset else {}
    payload = {"item": item.to_dict(), "settings": settings, "dataset": data}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ForeignCheckpointError(RuntimeError):
    """A checkpoint in an item's folder that belongs to another item (or carries no identity)."""


def identity(item: Any, chash: str) -> dict[str, str]:
    return {"id": item.id, "stage": item.stage, "config_hash": chash}


def _check_owner(ckpt: Any, rel: str, item_id: str, stage: str) -> None:
    owner = ckpt.get("nf_item") if isinstance(ckpt, dict) else None
    if not isinstance(owner, dict) or "id" not in owner:
        raise ForeignCheckpointError(
            f"{rel} carries no item identity (written by another tool or an older version); "
            f"delete it to train {stage} item {item_id!r} from scratch"
        )
    if owner["id"] != item_id or owner.get("stage") != stage:
        raise ForeignCheckpointError(
            f"{rel} belongs to {owner.get('stage')} item {owner['id']!r}, not to {stage} item {item_id!r}: "
            f"refusing to resume from another item's checkpoint; delete it to train {item_id!r} from scratch"
        )


def save_checkpoint(store: Store, d: str, ckpt: dict[str, Any], ident: dict[str, str]) -> None:
    """Write an epoch's checkpoint, keeping the one before it as ``checkpoint.prev.pt``.

    Both steps are atomic (rename or hard link locally, one CopyObject / one upload on S3), so
    at any moment the folder holds a complete latest checkpoint, or — after a kill between the
    two steps — two copies of the previous one."""
    if store.exists(f"{d}/{CHECKPOINT}"):
        store.copy(f"{d}/{CHECKPOINT}", f"{d}/{PREVIOUS}")
    store.save_torch(f"{d}/{CHECKPOINT}", {**ckpt, "nf_item": ident})


def _readable(ckpt: Any) -> bool:
    return isinstance(ckpt, dict) and isinstance(ckpt.get("epoch"), int) and "model" in ckpt


def load_checkpoint(store: Store, d: str, ident: dict[str, str]) -> tuple[dict[str, Any] | None, str | None]:
    """The item's newest readable checkpoint and a note on what was skipped (None: all fine).

    An unreadable ``checkpoint.pt`` (truncated, empty) falls back to ``checkpoint.prev.pt``;
    a checkpoint written under other settings (another config hash) is ignored and the item
    restarts; one of another item raises :class:`ForeignCheckpointError`."""
    notes: list[str] = []
    for name in (CHECKPOINT, PREVIOUS):
        rel = f"{d}/{name}"
        if not store.exists(rel):
            continue
        try:
            ckpt = store.load_torch(rel)
            if not _readable(ckpt):
                raise ValueError("not a checkpoint")
        except Exception as e:  # torn file: torch/zip/pickle raise many kinds
            notes.append(f"{name} unreadable ({type(e).__name__}: {str(e)[:120]})")
            continue
        _check_owner(ckpt, rel, ident["id"], ident["stage"])
        if ckpt["nf_item"].get("config_hash") != ident["config_hash"]:
            notes.append(
                f"{name} was written under other settings (config hash {ckpt['nf_item'].get('config_hash')} "
                f"!= {ident['config_hash']}): training from scratch"
            )
            return None, "; ".join(notes)
        if notes:
            notes.append(f"resuming from {name} (epoch {ckpt['epoch']})")
        return ckpt, "; ".join(notes) or None
    return None, "; ".join(notes) or None


def load_item_checkpoint(store: Store, stage: str, item_id: str) -> dict[str, Any]:
    """A finished item's checkpoint, as a later stage reads it: refused if it is another item's."""
    rel = f"{item_dir(stage, item_id)}/{CHECKPOINT}"
    ckpt = store.load_torch(rel)
    _check_owner(ckpt, rel, item_id, stage)
    return ckpt


# ------------------------------------------------------------------ fencing
class FencedError(RuntimeError):
    """This attempt no longer holds the item's lease: a newer attempt took over; stop writing."""


def lease_seconds() -> float:
    """The lease timeout: a holder silent this long is taken to be gone (env NF_LEASE_SECONDS)."""
    return float(os.environ.get("NF_LEASE_SECONDS", "15"))


class Lease:
    """One attempt's exclusive hold on an item folder (see the module docstring).

    ``lease.json`` names the holding attempt and is written only when an attempt takes over
    (after waiting); each attempt heartbeats its own ``lease.<token>.json``, deleted on release.
    So a stale writer can at worst touch its own heartbeat file, never the ownership."""

    def __init__(self, store: Store, d: str, ttl: float | None = None) -> None:
        self.store, self.dir = store, d
        self.rel = f"{d}/lease.json"
        self.ttl = ttl if ttl is not None else lease_seconds()
        self.token = uuid.uuid4().hex[:16]
        self.beat = 0
        self.previous: dict[str, Any] | None = None  # the holder this attempt took over from
        self._fenced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _beat_rel(self, token: str) -> str:
        return f"{self.dir}/lease.{token}.json"

    def _read(self, rel: str) -> dict[str, Any] | None:
        try:
            obj = json.loads(self.store.read_bytes(rel))
        except (FileNotFoundError, ValueError):  # a storage outage raises: it decides nothing
            return None
        return obj if isinstance(obj, dict) and "token" in obj else None

    def _info(self) -> dict[str, Any]:
        return {"token": self.token, "time": time.time(), "host": socket.gethostname(), "pid": os.getpid()}

    def _holder_beat(self) -> dict[str, Any] | None:
        """The current holder's last heartbeat; None when there is no live-looking holder."""
        lease = self._read(self.rel)
        if lease is None:
            return None
        beat = self._read(self._beat_rel(lease["token"]))
        if beat is None or beat.get("time", 0) < time.time() - self.ttl - _SKEW_S:
            return None  # released (its heartbeat file deleted), or silent for ages
        return beat

    def acquire(self, log: Any = None) -> None:
        """Wait until the previous attempt is gone, then hold the lease (and heartbeat it)."""
        seen = self._holder_beat()
        since = told = time.monotonic()
        while seen is not None and time.monotonic() - since < self.ttl:
            time.sleep(min(0.5, self.ttl / 5))
            beat = self._holder_beat()
            if beat is None or (beat["token"], beat.get("beat")) != (seen["token"], seen.get("beat")):
                seen, since = beat, time.monotonic()  # released, or still alive: wait a full ttl again
            if log is not None and seen is not None and time.monotonic() - told > 10 * self.ttl:
                told = time.monotonic()
                who = f"attempt {seen['token']} (pid {seen.get('pid')} on {seen.get('host')})"
                log(f"{self.rel}: waiting for {who} to stop writing")
        self.previous = seen
        self.store.write_json(self._beat_rel(self.token), {**self._info(), "beat": 0})  # before lease.json
        self.store.write_json(self.rel, self._info())
        if seen is not None:  # the silent holder's heartbeat file is litter now
            self.store.delete(self._beat_rel(seen["token"]))
        self._thread = threading.Thread(target=self._heartbeat, name=f"lease-{self.token}", daemon=True)
        self._thread.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                if self._holder() != self.token:
                    self._fenced.set()
                    return
                self.beat += 1
                self.store.write_json(self._beat_rel(self.token), {**self._info(), "beat": self.beat})
            except Exception:  # storage hiccup: the next beat tries again; a long outage means a takeover
                continue

    def _holder(self) -> str | None:
        lease = self._read(self.rel)
        return lease.get("token") if lease else None

    def check(self) -> None:
        """Raise :class:`FencedError` unless this attempt still holds the lease (before each write)."""
        if not self._fenced.is_set():
            if self._holder() == self.token:
                return
            self._fenced.set()
        raise FencedError(f"{self.rel}: attempt {self.token} was superseded by a newer attempt; it stops writing")

    @property
    def fenced(self) -> bool:
        return self._fenced.is_set()

    def release(self) -> None:
        """Stop heartbeating; a successor then takes over at once (no heartbeat file to watch)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.store.delete(self._beat_rel(self.token))
