"""Torn and foreign files, and stale writers, without Ray: atomic storage writes (local and a real
moto S3 server), a truncated checkpoint falling back to the previous epoch, truncated done.json,
another item's checkpoint refused, and the lease that fences a worker outliving its driver."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from orchestration.spec.config import parse_config
from orchestration.spec.plan import plan
from orchestration.store.item_files import (
    FencedError,
    ForeignCheckpointError,
    Lease,
    config_hash,
    identity,
    item_dir,
    item_done,
    load_checkpoint,
    load_item_checkpoint,
    save_checkpoint,
)
from orchestration.store.storage import Store
from tests.sweep_support import TINY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(tmp_path, **over):
    raw = {
        **TINY,
        "storage": str(tmp_path / "sweeps"),
        "device": "cpu",
        "datasets": [{"name": "digits", "train_subset": 64, "test_subset": 30}],
        "base": {**TINY["base"], "epochs": 3},
        **over,
    }
    return parse_config(raw)


# ------------------------------------------------------------------ atomic writes
def _payload(i: int, size: int) -> bytes:
    """Self-checking content: its index and length up front, then a fill that depends on i."""
    head = f"{i:08d}{size:012d}".encode()
    return head + bytes([i % 251]) * (size - len(head))


def _valid(data: bytes) -> bool:
    i, size = int(data[:8]), int(data[8:20])
    return len(data) == size and data == _payload(i, size)


def test_local_writes_are_atomic_for_concurrent_readers(tmp_path, monkeypatch) -> None:
    store = Store(str(tmp_path))
    store.write_bytes("d/f.bin", _payload(0, 1000))
    stop, seen, bad = threading.Event(), set(), []

    def reader() -> None:
        while not stop.is_set():
            data = store.read_bytes("d/f.bin")
            if _valid(data):
                seen.add(int(data[:8]))
            else:
                bad.append(len(data))

    t = threading.Thread(target=reader)
    t.start()
    for i in range(1, 60):
        store.write_bytes("d/f.bin", _payload(i, 200_000 + 50_000 * (i % 3)))
    stop.set()
    t.join()
    assert not bad and len(seen) > 1  # readers saw several versions, each whole
    # A write that fails half-way leaves the old file and no temp file.
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        store.write_bytes("d/f.bin", b"new")
    monkeypatch.undo()
    assert _valid(store.read_bytes("d/f.bin")) and os.listdir(tmp_path / "d") == ["f.bin"]
    # copy() is atomic too (a hard link renamed into place) and leaves the source as it was.
    store.copy("d/f.bin", "d/g.bin")
    store.write_bytes("d/f.bin", _payload(99, 500))
    assert _valid(store.read_bytes("d/g.bin")) and int(store.read_bytes("d/g.bin")[:8]) == 59
    assert store.list("d") == ["f.bin", "g.bin"]


_S3_WRITER = """
import sys
from orchestration.store.storage import Store
store = Store(sys.argv[1], endpoint=sys.argv[2])
i = 1
while True:
    size = (4 + 4 * (i % 3)) * 1024 * 1024  # 4, 8, 12 MiB: one part or two
    head = f"{i:08d}{size:012d}".encode()
    store.write_bytes("obj.bin", head + bytes([i % 251]) * (size - len(head)))
    print(i, flush=True)
    i += 1
"""


def test_s3_object_is_whole_after_a_writer_is_killed_mid_upload(tmp_path, monkeypatch, s3_server) -> None:
    import boto3

    for k, v in {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    env = {**os.environ, "PYTHONPATH": ROOT}
    endpoint = s3_server  # the session's moto server (tests/conftest.py)
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket="torn")
    writer = subprocess.Popen(
        [sys.executable, "-c", _S3_WRITER, "s3://torn/t", endpoint], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        for _ in range(4):  # several objects written and replaced, then a kill mid-stream
            assert writer.stdout.readline(), "writer died"
        time.sleep(0.15)
        versions = set()
        for _ in range(3):
            data = s3.get_object(Bucket="torn", Key="t/obj.bin")["Body"].read()
            assert _valid(data)
            versions.add(int(data[:8]))
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    # A request the writer had sent whole before the kill may still complete on the server: wait
    # until the object stops changing, then it is one writer's whole payload, never a partial one.
    data, deadline = b"", time.monotonic() + 30
    while time.monotonic() < deadline:
        again = s3.get_object(Bucket="torn", Key="t/obj.bin")["Body"].read()
        assert _valid(again)
        if again == data:
            break
        data = again
        time.sleep(0.5)
    # A server-side copy is whole as well.
    store = Store("s3://torn/t", endpoint=endpoint)
    store.copy("obj.bin", "copy.bin")
    assert store.read_bytes("copy.bin") == data


# ------------------------------------------------------------------ done.json
@pytest.mark.parametrize("content", [b"", b'{"item": {"id": "x", "stage"', b"[]", b"null"])
def test_torn_or_empty_done_json_means_not_done(tmp_path, content) -> None:
    from orchestration.sweep.runner import collect_rows, stage_states
    from orchestration.sweep.status import sweep_status

    cfg = _cfg(tmp_path)
    store = Store(cfg.storage).sub(cfg.name)
    ev = plan(cfg)["eval"][0]
    good = {"item": ev.to_dict(), "final": {}, "rows": [{"item_id": ev.id}]}
    store.write_json(f"{item_dir('eval', ev.id)}/done.json", good)
    assert item_done(store, "eval", ev.id) and collect_rows(cfg, store) == good["rows"]
    assert stage_states(cfg, store)["eval"][ev.id] == "done"
    store.write_bytes(f"{item_dir('eval', ev.id)}/done.json", content)
    store.write_json(f"{item_dir('eval', ev.id)}/status.json", {"state": "done"})
    assert not item_done(store, "eval", ev.id)
    # The detailed status parses done.json (the states-only listing counts files, see test_status.py).
    detailed = {st.id: st.state for st in sweep_status(cfg, store, write_index=False)}
    assert detailed[ev.id] == "running" and collect_rows(cfg, store) == []


def test_done_json_of_another_item_is_not_done(tmp_path) -> None:
    cfg = _cfg(tmp_path)
    store = Store(cfg.storage).sub(cfg.name)
    a, b = plan(cfg)["eval"][:2]
    store.write_json(f"{item_dir('eval', b.id)}/done.json", {"item": a.to_dict(), "rows": []})
    assert not item_done(store, "eval", b.id)


# ------------------------------------------------------------------ checkpoints through the real trainable
class _Killed(BaseException):
    """A kill of the trial process (not an Exception: the trainable records nothing)."""


def _run_base(cfg, item, store, kill_after: int | None = None) -> list[dict]:
    """Run the real stage-(a) trainable outside Ray; tune.report collects, or "kills" after an epoch."""
    from ray import tune

    from orchestration.sweep import trainables

    reports: list[dict] = []

    def report(metrics: dict) -> None:
        reports.append(metrics)
        if kill_after is not None and metrics.get("epoch") == kill_after:
            raise _Killed

    old = tune.report
    tune.report = report
    try:
        trainables.base_trainable({"item": item.to_dict()}, cfg=cfg, store=store.spec())
    except _Killed:
        pass
    finally:
        tune.report = old
    return reports


def test_torn_checkpoint_falls_back_and_redoes_the_epoch(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NF_LEASE_SECONDS", "0.5")
    cfg = _cfg(tmp_path)
    item = plan(cfg)["base"][0]
    d = item_dir("base", item.id)
    ref = Store(str(tmp_path / "ref"))
    _run_base(cfg, item, ref)  # uninterrupted
    store = Store(str(tmp_path / "torn"))
    _run_base(cfg, item, store, kill_after=2)
    assert store.load_torch(f"{d}/checkpoint.prev.pt")["epoch"] == 1
    raw = store.read_bytes(f"{d}/checkpoint.pt")
    store.write_bytes(f"{d}/checkpoint.pt", raw[: len(raw) // 2])  # torn, as a non-atomic copy leaves it
    reports = _run_base(cfg, item, store)
    assert [r["epoch"] for r in reports] == [2, 3, 3]  # epoch 2 trained again, then the final report
    attempts = store.read_json(f"{d}/attempts.json")
    assert [a["from_epoch"] for a in attempts] == [0, 1] and [a["completed"] for a in attempts] == [[1, 2], [2, 3]]
    assert "checkpoint.pt unreadable" in attempts[1]["note"]
    done, ref_done = store.read_json(f"{d}/done.json"), ref.read_json(f"{d}/done.json")
    assert done["attempt"] == attempts[1]["token"]
    timeless = lambda final: {k: v for k, v in final.items() if k != "seconds"}  # noqa: E731
    assert timeless(done["final"]) == timeless(ref_done["final"])
    a, b = store.load_torch(f"{d}/checkpoint.pt")["model"], ref.load_torch(f"{d}/checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in b)  # bit-identical to the uninterrupted run
    # A complete item is not trained again: the trial only reports its recorded result.
    assert _run_base(cfg, item, store) == [{**done["final"], "done": 1.0}]
    assert len(store.read_json(f"{d}/attempts.json")) == 2


def test_checkpoint_of_another_item_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NF_LEASE_SECONDS", "0.5")
    cfg = _cfg(tmp_path)
    a, b = plan(cfg)["base"]
    store = Store(cfg.storage).sub(cfg.name)
    ident_a, ident_b = identity(a, config_hash(cfg, a)), identity(b, config_hash(cfg, b))
    save_checkpoint(store, item_dir("base", a.id), {"epoch": 1, "model": {}}, ident_a)
    store.copy(f"{item_dir('base', a.id)}/checkpoint.pt", f"{item_dir('base', b.id)}/checkpoint.pt")
    with pytest.raises(
        ForeignCheckpointError, match=re.escape(f"belongs to base item '{a.id}', not to base item '{b.id}'")
    ):
        load_checkpoint(store, item_dir("base", b.id), ident_b)
    with pytest.raises(ForeignCheckpointError, match=re.escape(a.id)):
        load_item_checkpoint(store, "base", b.id)  # a later stage reading it refuses it too
    # Through the trainable: the trial fails with that message, recorded for `nf sweep status`.
    with pytest.raises(ForeignCheckpointError):
        _run_base(cfg, b, store)
    status = store.read_json(f"{item_dir('base', b.id)}/status.json")
    assert status["state"] == "failed" and "refusing to resume from another item's checkpoint" in status["error"]
    # A checkpoint with no identity at all (another tool's) is refused as well.
    store.save_torch(f"{item_dir('base', b.id)}/checkpoint.pt", {"epoch": 1, "model": {}})
    with pytest.raises(ForeignCheckpointError, match="carries no item identity"):
        load_checkpoint(store, item_dir("base", b.id), ident_b)


def test_checkpoint_under_other_settings_restarts_the_item(tmp_path) -> None:
    cfg = _cfg(tmp_path)
    item = plan(cfg)["generator"][0]
    store = Store(cfg.storage).sub(cfg.name)
    d = item_dir("generator", item.id)
    save_checkpoint(store, d, {"epoch": 2, "model": {}}, identity(item, config_hash(cfg, item)))
    assert load_checkpoint(store, d, identity(item, config_hash(cfg, item)))[0]["epoch"] == 2
    changed = _cfg(tmp_path, generator={**TINY["generator"], "lr": 0.02})  # same item id, other numbers
    assert plan(changed)["generator"][0].id == item.id and config_hash(changed, item) != config_hash(cfg, item)
    ckpt, note = load_checkpoint(store, d, identity(item, config_hash(changed, item)))
    assert ckpt is None and "other settings" in note
    moved = _cfg(tmp_path, generator={**TINY["generator"], "access": "pool"})  # how it runs, not what: kept
    assert config_hash(moved, item) == config_hash(cfg, item)


# ------------------------------------------------------------------ fencing
def test_lease_waits_for_a_live_holder_and_takes_over_a_silent_one(tmp_path) -> None:
    store = Store(str(tmp_path))
    a = Lease(store, "items/base/x", ttl=0.6)
    a.acquire()
    b = Lease(store, "items/base/x", ttl=0.6)
    t = threading.Thread(target=b.acquire)
    t.start()
    t.join(timeout=2.0)
    assert t.is_alive()  # a heartbeats: b waits however long that lasts
    a.release()
    t.join(timeout=2.0)
    assert not t.is_alive() and b.previous is None  # released: no wait
    with pytest.raises(FencedError):
        a.check()  # the released attempt may not write any more
    # b goes silent without releasing (its process died): c takes over after ttl.
    b._stop.set()
    b._thread.join()
    c = Lease(store, "items/base/x", ttl=0.6)
    t0 = time.monotonic()
    c.acquire()
    assert 0.5 <= time.monotonic() - t0 < 3 and c.previous["token"] == b.token
    with pytest.raises(FencedError, match="superseded"):
        b.check()
    c.check()
    c.release()


_ORPHAN = """
import sys, time
from orchestration.spec.config import parse_config
from orchestration.spec.plan import plan
from orchestration.store.storage import Store
from orchestration.sweep.trainables import TrialContext
from orchestration.store.item_files import FencedError
cfg = parse_config(__import__("json").loads(sys.argv[1]))
item = plan(cfg)["base"][0]
ctx = TrialContext(item, cfg, Store(cfg.storage).sub(cfg.name))
ctx.lease.acquire()
ctx.checkpoint()
print("holding", flush=True)
epoch = 0
try:
    while True:
        epoch += 1
        ctx.save_epoch(epoch, {"epoch": epoch, "model": {}})
        print("wrote", epoch, time.time(), flush=True)
        time.sleep(0.5)  # the test freezes it here, after a line (not between a check and its write)
except FencedError as e:
    print("fenced", e, flush=True)
    sys.exit(3)
"""


def test_worker_outliving_its_driver_cannot_write_after_a_new_attempt_started(tmp_path, monkeypatch) -> None:
    """A worker of a killed driver keeps writing checkpoints; a new attempt of the same item waits
    while it lives. Frozen (SIGSTOP, silent past the lease time), it is taken over; woken up
    again, it stops at its next write, and nothing it writes lands after the new attempt began."""
    from orchestration.sweep.trainables import TrialContext

    env = {**os.environ, "PYTHONPATH": ROOT, "NF_LEASE_SECONDS": "1"}
    raw = {**TINY, "storage": str(tmp_path / "sweeps"), "device": "cpu"}
    cfg = parse_config(raw)
    orphan = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN, json.dumps(raw)], env=env, stdout=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    try:
        assert orphan.stdout.readline().startswith("holding")
        lines.append(orphan.stdout.readline())
        monkeypatch.setenv("NF_LEASE_SECONDS", "1")
        new = TrialContext(plan(cfg)["base"][0], cfg, Store(cfg.storage).sub(cfg.name))
        waiter = threading.Thread(target=new.lease.acquire)
        waiter.start()
        waiter.join(timeout=2.5)
        assert waiter.is_alive()  # the old worker is alive and writing: wait
        lines.append(orphan.stdout.readline())
        orphan.send_signal(signal.SIGSTOP)  # frozen while it sleeps: its lease goes quiet
        waiter.join(timeout=10)
        assert not waiter.is_alive()
        started = time.time()
        ckpt = new.checkpoint()
        new.save_epoch(1000, {"epoch": 1000, "model": {}})
        orphan.send_signal(signal.SIGCONT)
        out, _ = orphan.communicate(timeout=30)
        lines += out.splitlines()
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()
    assert orphan.returncode == 3 and "superseded" in lines[-1]
    late = [ln for ln in lines if ln.startswith("wrote") and float(ln.split()[2]) >= started]
    assert late == []  # woken up, it wrote nothing more
    d = item_dir("base", plan(cfg)["base"][0].id)
    store = Store(cfg.storage).sub(cfg.name)
    assert ckpt["epoch"] >= 2 and store.load_torch(f"{d}/checkpoint.pt")["epoch"] == 1000
    attempts = store.read_json(f"{d}/attempts.json")
    assert attempts[-1]["token"] == new.lease.token and attempts[-1]["completed"] == [1000]
    new.lease.release()
