"""A sweep's state read from its storage, fast on S3: `nf sweep status` and `nf sweep list`.

Each item keeps its files in ``items/<stage>/<id>/`` (trainables.py): ``done.json`` when
complete, ``status.json`` (state, epoch, last metrics, error) from its first start,
``attempts.json`` (one entry per start). One *recursive listing* of ``items/`` (a single
paginated LIST request per 1,000 files on S3) tells every item's files with their sizes and
modification times, which already separates done (a non-empty ``done.json``), started and
pending items; no request is made per item for that. (In a local folder, a stat of each
planned item's state files does the same, faster than walking thousands of folders.)

Per-item details (epoch, last loss or accuracy, attempts, error) need the small JSON files
themselves. They are read concurrently, only for items that are not pending, and kept in an
index object beside the sweep (``status_index.json``): an entry for a finished or failed item
records the size and modification time of the file it came from, so the next status reads
only the items whose files changed since (in practice: the running ones). The index is a cache:
a stale entry is never used (its file's size or time differ), deleting it costs one slow call,
and a storage the caller may not write to just goes without it.

States alone (``stage_states``: `nf sweep list`, `nf report`) need no index: the listing, plus
``status.json`` of the started-but-unfinished items (running or failed; few).

Torn files: in the listing a ``done.json`` of size 0 is "not done", a non-empty one "done"
(storage writes are whole-file, so only a foreign copy can be cut short). When details are
read, a ``done.json`` that does not parse is "not done" too (never cached), and the item shows
the state its ``status.json`` gives.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

from orchestration.spec.config import STAGES, SweepConfig
from orchestration.spec.plan import Item, plan
from orchestration.store.item_files import item_dir
from orchestration.store.roots import CONFIG_FILE
from orchestration.store.storage import Store

ITEMS = "items"
INDEX_FILE = "status_index.json"
INDEX_VERSION = 1
STATES = ("done", "running", "pending", "failed")
_TERMINAL = ("done", "failed")  # states whose details do not change until their file does

Files = dict[str, tuple[int, int]]  # file name -> (size, mtime in ns)


@dataclass
class ItemStatus:
    """What `nf sweep status` shows of one item."""

    stage: str
    id: str
    state: str = "pending"
    epoch: int | None = None  # last completed epoch
    epochs: int | None = None  # epochs the stage trains (1 for eval/transfer)
    metrics: dict[str, float] | None = None  # last loss / accuracy / RP, by name
    attempts: int = 0
    error: str | None = None
    updated: float | None = None  # seconds since the epoch: the item's newest state file


def list_items(store: Store, items: dict[str, list[Item]] | None = None) -> dict[tuple[str, str], Files]:
    """Every item's state files: on S3 from ONE recursive listing of ``items/`` (paginated);
    in a local folder from a stat of each planned item's state files (``items``), or a walk."""
    if not store.is_s3:
        return _stat_local(store.path(ITEMS), items) if items is not None else _list_local(store.path(ITEMS))
    base = store.path(ITEMS) + "/"
    sel = pafs.FileSelector(store.path(ITEMS), recursive=True, allow_not_found=True)
    out: dict[tuple[str, str], Files] = {}
    for info in store.fs.get_file_info(sel):
        parts = info.path[len(base) :].split("/")
        # items/<stage>/<id>/<file> only: not the folders, not the checkpoints
        if len(parts) != 3 or parts[2] not in _STATE_FILES or info.type != pafs.FileType.File:
            continue
        out.setdefault((parts[0], parts[1]), {})[parts[2]] = (info.size or 0, info.mtime_ns or 0)
    return out


_STATE_FILES = ("done.json", "status.json", "attempts.json")


def _stat_local(root: str, items: dict[str, list[Item]]) -> dict[tuple[str, str], Files]:
    """Local folders: a stat per state file is cheaper than listing thousands of folders; a
    missing ``status.json`` (never started) ends the item's stats."""
    out: dict[tuple[str, str], Files] = {}
    for stage, its in items.items():
        for it in its:
            d = f"{root}/{stage}/{it.id}/"
            files: Files = {}
            for name in _STATE_FILES:
                try:
                    st = os.stat(d + name)
                except OSError:
                    if name == "status.json" and not files:
                        break  # pending
                    continue
                files[name] = (st.st_size, st.st_mtime_ns)
            if files:
                out[(stage, it.id)] = files
    return out


def _list_local(root: str) -> dict[tuple[str, str], Files]:
    """Every item folder under a local ``items/`` (when there is no plan to go by)."""
    out: dict[tuple[str, str], Files] = {}
    try:
        stages = [e for e in os.scandir(root) if e.is_dir()]
    except FileNotFoundError:
        return out
    for stage in stages:
        for item in os.scandir(stage.path):
            files: Files = {}
            for f in os.scandir(item.path) if item.is_dir() else ():
                if f.name in _STATE_FILES:
                    st = f.stat()
                    files[f.name] = (st.st_size, st.st_mtime_ns)
            if files:
                out[(stage.name, item.name)] = files
    return out


def listed_state(files: Files | None) -> str:
    """The state a listing alone tells: done (non-empty done.json), started, or pending."""
    if not files:
        return "pending"
    if files.get("done.json", (0, 0))[0] > 0:
        return "done"
    return "started" if "status.json" in files else "pending"


def _epochs(cfg: SweepConfig, stage: str) -> int:
    return {"base": cfg.base.epochs, "generator": cfg.generator.epochs}.get(stage, 1)


def _metrics(stage: str, m: dict[str, Any] | None) -> dict[str, float] | None:
    """The few numbers worth a status line: loss and accuracies while training; test CA of a
    base model; mean RP (and PA (NF)) over targets and BERs of an evaluation."""
    if not m:
        return None
    out: dict[str, float] = {}
    for k in ("loss", "train_acc", "test_ca"):
        if isinstance(m.get(k), (int, float)):
            out[k] = float(m[k])
    for key in ("rp", "pa_nf_mean"):
        vals = [float(v) for k, v in m.items() if k.startswith(f"{key}.") and isinstance(v, (int, float))]
        if vals:
            out[key] = sum(vals) / len(vals)
    return out or None


def _read_json(store: Store, rel: str) -> Any:
    """A JSON file, or None when missing, unreadable or torn."""
    try:
        return json.loads(store.read_bytes(rel))
    except (OSError, ValueError):
        return None


def _attempts(store: Store, d: str, files: Files, st: ItemStatus) -> None:
    if "attempts.json" not in files:
        return
    att = _read_json(store, f"{d}/attempts.json")
    if isinstance(att, list) and att:
        st.attempts = len(att)
        last = att[-1] if isinstance(att[-1], dict) else {}
        done = [e for e in last.get("completed", []) if isinstance(e, int)]
        if st.epoch is None:  # started, no epoch reported yet in status.json
            st.epoch = max(done) if done else last.get("from_epoch")


def _detail(store: Store, stage: str, item_id: str, files: Files, epochs: int, full: bool = True) -> ItemStatus:
    """One item's details from its JSON files (a few small GETs; without ``full``, only what
    decides its state)."""
    d = item_dir(stage, item_id)
    st = ItemStatus(stage, item_id, epochs=epochs, updated=max(t for _, t in files.values()) / 1e9)
    if listed_state(files) == "done":
        done = _read_json(store, f"{d}/done.json")
        if isinstance(done, dict):
            final = done.get("final") or {}
            st.state, st.epoch = "done", final.get("epoch")
            st.metrics = _metrics(stage, final)
            if full:
                _attempts(store, d, files, st)
            return st
        # torn done.json: not done; whatever status.json says
    if "status.json" in files:
        s = _read_json(store, f"{d}/status.json")
        if isinstance(s, dict):
            state = s.get("state", "running")
            # status "done" without a valid done.json: the trial was stopped between the two writes
            st.state = "running" if state == "done" else state
            st.epoch = s.get("epoch")
            st.metrics = _metrics(stage, s.get("metrics"))
            st.error = s.get("error")
        else:
            st.state = "running"  # being written, or torn: the next status will tell
    if full:
        _attempts(store, d, files, st)
    return st


def _key(files: Files, state: str) -> list[Any] | None:
    """What an index entry of this state is valid for: the name, size and time of its deciding file."""
    name = "done.json" if state == "done" else "status.json"
    return [name, *files[name]] if name in files else None


# An index entry, compact (thousands of them): the key, then the details.
_ENTRY = ("state", "epoch", "metrics", "attempts", "error", "updated")


def _entry(st: ItemStatus, key: list[Any]) -> list[Any]:
    return [*key, *(getattr(st, f) for f in _ENTRY)]


def read_index(store: Store) -> dict[str, list[Any]]:
    """The index's entries by "stage/id" (empty when there is none or it is unreadable)."""
    idx = _read_json(store, INDEX_FILE)
    if isinstance(idx, dict) and idx.get("version") == INDEX_VERSION and isinstance(idx.get("items"), dict):
        return idx["items"]
    return {}


def _from_index(stage: str, item_id: str, entry: Any, files: Files, epochs: int) -> ItemStatus | None:
    """The cached details, when the entry is well formed and its file unchanged."""
    if not isinstance(entry, list) or len(entry) != 3 + len(_ENTRY) or entry[3] not in _TERMINAL:
        return None
    if _key(files, entry[3]) != entry[:3]:
        return None
    return ItemStatus(stage, item_id, epochs=epochs, **dict(zip(_ENTRY, entry[3:], strict=True)))


def _pool(store: Store) -> int:
    return 32 if store.is_s3 else 8  # S3 requests wait on the network; local reads on the disk


def sweep_status(
    cfg: SweepConfig,
    store: Store,
    items: dict[str, list[Item]] | None = None,
    details: bool = True,
    write_index: bool = True,
) -> list[ItemStatus]:
    """Every item of the sweep in plan order, with its state (and, with ``details``, epoch,
    metrics, attempts and error). Requests: one listing; with ``details`` one index read and
    reads of the non-pending items the index does not cover (the running ones, once it is warm);
    without, reads of the started-but-unfinished items only (``status.json``)."""
    items = items or plan(cfg)
    listing = list_items(store, items)
    index = read_index(store) if details else {}
    out: list[ItemStatus] = []
    todo: list[tuple[int, str, str, Files]] = []
    kept: dict[str, list[Any]] = {}  # index entries still valid
    for stage in STAGES:
        epochs = _epochs(cfg, stage)
        for it in items[stage]:
            files = listing.get((stage, it.id))
            if not files:
                out.append(ItemStatus(stage, it.id, epochs=epochs))
                continue
            state = listed_state(files)
            st = None
            if details and state != "pending":
                name = f"{stage}/{it.id}"
                st = _from_index(stage, it.id, index.get(name), files, epochs)
                if st is not None:
                    kept[name] = index[name]
            if st is None:
                st = ItemStatus(stage, it.id, state, epochs=epochs, updated=max(t for _, t in files.values()) / 1e9)
                if state == "started" or (details and state != "pending"):
                    todo.append((len(out), stage, it.id, files))
            out.append(st)
    if todo:
        with ThreadPoolExecutor(min(_pool(store), len(todo))) as ex:
            read = ex.map(lambda t: _detail(store, t[1], t[2], t[3], _epochs(cfg, t[1]), details), todo)
            for (i, *_), st in zip(todo, read, strict=True):
                out[i] = st
    if details and write_index:
        fresh = {}
        for i, stage, item_id, files in todo:
            key = _key(files, out[i].state) if out[i].state in _TERMINAL else None
            if key is not None:
                fresh[f"{stage}/{item_id}"] = _entry(out[i], key)
        if fresh or len(kept) != len(index):  # new finished/failed items, or stale entries to drop
            _write_index(store, {**kept, **fresh})
    return out


def _write_index(store: Store, entries: dict[str, list[Any]]) -> None:
    body = {"version": INDEX_VERSION, "written": time.time(), "fields": ["file", "size", "mtime_ns", *_ENTRY]}
    try:
        store.write_bytes(INDEX_FILE, json.dumps({**body, "items": entries}, separators=(",", ":")).encode())
    except OSError:
        pass  # a read-only storage: status still works, without the cache


def stage_states(cfg: SweepConfig, store: Store | None = None) -> dict[str, dict[str, str]]:
    """Per stage, each item's state: done / running / pending / failed (from storage).

    One listing, plus a read of ``status.json`` for each started-but-unfinished item (running
    or failed ones; few)."""
    if store is None:
        store = Store(cfg.storage, cfg.s3_endpoint, cfg.s3_region).sub(cfg.name)
    return states_of(sweep_status(cfg, store, details=False))


def states_of(statuses: Iterable[ItemStatus]) -> dict[str, dict[str, str]]:
    """Per stage (every stage, even an empty one), each item's state."""
    out: dict[str, dict[str, str]] = {s: {} for s in STAGES}
    for st in statuses:
        out[st.stage][st.id] = st.state
    return out


# ------------------------------------------------------------------ nf sweep list


def _sweep_row(root: Store, name: str, parse: Callable[[Any], SweepConfig]) -> dict[str, Any] | None:
    import yaml

    store = root.sub(name)
    try:
        raw = store.read_bytes(CONFIG_FILE)
    except (OSError, FileNotFoundError):
        return None  # not a sweep (results of something else, a report folder …)
    row: dict[str, Any] = {"name": name, "total": None, "error": None, "updated": None}
    row.update(dict.fromkeys(STATES, 0))
    try:
        cfg = parse(yaml.safe_load(raw))
    except ValueError as e:
        row["error"] = f"{CONFIG_FILE} does not load: {str(e).splitlines()[0]}"
        return row
    statuses = sweep_status(cfg, store, details=False)
    row["total"] = len(statuses)
    for st in statuses:
        row[st.state] += 1
    times = [st.updated for st in statuses if st.updated]
    row["updated"] = max(times) if times else None
    return row


def list_sweeps(root: Store) -> list[dict[str, Any]]:
    """The sweeps under a storage root with their progress: one listing of the root, then per
    sweep (concurrently) its config, its index and one listing of its items."""
    from orchestration.spec.config import parse_config

    names = root.list()
    if not names:
        return []
    with ThreadPoolExecutor(min(_pool(root), len(names))) as ex:
        rows = list(ex.map(lambda n: _sweep_row(root, n, parse_config), names))
    return [r for r in rows if r is not None]
