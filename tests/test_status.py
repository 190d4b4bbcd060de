"""`nf sweep status` / `nf sweep list` on hand-made stores (no Ray): states, epochs, metrics,
attempts, errors, --failed, the index cache, and the number of S3 requests (one listing, not
one request per item)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import boto3
import pytest
import yaml

from orchestration.cli import main as cli_main
from orchestration.spec.config import parse_config
from orchestration.spec.plan import plan
from orchestration.store.storage import Store
from orchestration.sweep.runner import stage_states as runner_stage_states
from orchestration.sweep.status import INDEX_FILE, list_sweeps, stage_states, sweep_status
from tests.status_support import item_files, write_local
from tests.sweep_support import TINY, start_moto

ROOT = Path(__file__).resolve().parents[1]
ERROR = "ValueError: generator.lr 'fast' is not a number"


def _tiny_store() -> tuple[dict, dict[str, bytes], dict[str, str]]:
    """TINY (2 base, 8 generator, 8 eval, 8 transfer items) part-way through its generator stage."""
    cfg = parse_config({**TINY, "name": "tiny"})
    items = plan(cfg)
    g = items["generator"]
    files = {"sweep.yaml": yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode()}
    expect = {}
    for it in items["base"]:
        files.update(item_files(it, "done", 6))
        expect[it.id] = "done"
    files.update(item_files(g[0], "done", 3))
    files.update(item_files(g[1], "running", 3, epoch=2))
    files.update(item_files(g[2], "failed", 3, epoch=1, error=ERROR + "\nmore detail", attempts=3))
    files.update(item_files(g[3], "torn", 3, epoch=1))
    files.update(item_files(g[4], "empty_done", 3, epoch=2))
    files.update(item_files(items["eval"][0], "done", 1))
    expect.update({g[0].id: "done", g[1].id: "running", g[2].id: "failed", g[3].id: "running", g[4].id: "running"})
    expect[items["eval"][0].id] = "done"
    return cfg, files, expect


def _check(statuses, cfg, expect: dict[str, str]) -> None:
    by_id = {s.id: s for s in statuses}
    assert len(statuses) == 26
    for s in statuses:
        assert s.state == expect.get(s.id, "pending"), s
    g = plan(cfg)["generator"]
    base = by_id[plan(cfg)["base"][0].id]
    assert (base.epoch, base.epochs, base.attempts) == (6, 6, 1)
    assert base.metrics["test_ca"] == 61.5 and base.metrics["loss"] == pytest.approx(1 / 7)
    run = by_id[g[1].id]
    assert (run.epoch, run.epochs, run.attempts) == (2, 3, 1)
    assert run.metrics["loss"] == pytest.approx(1 / 3)
    fail = by_id[g[2].id]
    assert (fail.attempts, fail.error.splitlines()[0]) == (3, ERROR)
    assert fail.epoch == 1  # from the last attempt's completed epochs
    ev = by_id[plan(cfg)["eval"][0].id]
    assert ev.metrics["rp"] == pytest.approx(15.0) and ev.epoch == 1
    assert by_id[g[5].id].epoch is None and by_id[g[5].id].attempts == 0


def test_status_local(tmp_path, capsys) -> None:
    cfg, files, expect = _tiny_store()
    write_local(str(tmp_path / "tiny"), files)
    store = Store(str(tmp_path)).sub("tiny")
    statuses = sweep_status(cfg, store)
    _check(statuses, cfg, expect)
    assert store.exists(INDEX_FILE)
    # the summary alone reads no details; runner.stage_states is the same function
    assert runner_stage_states is stage_states
    states = stage_states(cfg, store)
    torn = plan(cfg)["generator"][3].id
    assert {i: s for i, s in states["generator"].items() if i != torn} == {
        s.id: s.state for s in statuses if s.stage == "generator" and s.id != torn
    }
    # the summary decides "done" from the listing alone: a zero-byte done.json is not done, a
    # non-empty one is (only the detailed view parses it and finds a torn one unfinished)
    assert states["generator"][plan(cfg)["generator"][4].id] == "running" and states["generator"][torn] == "done"

    assert cli_main(["sweep", "status", "tiny", "--storage", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    summary = next(line for line in out.splitlines() if line.strip().startswith("generator"))
    assert summary.split() == ["generator", "1", "3", "3", "1"]  # done running pending failed
    g = plan(cfg)["generator"]
    line = next(line for line in out.splitlines() if g[1].id in line)
    assert "running" in line and "2/3" in line and "loss 0.3333" in line
    assert ERROR in out and "more detail" not in out

    assert cli_main(["sweep", "status", "tiny", "--storage", str(tmp_path), "--failed"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "items/" not in line and any(it.id in line for it in g)]
    assert len(rows) == 1 and g[2].id in rows[0] and ERROR in rows[0] and "3" in rows[0].split()


def test_index_is_used_and_invalidated(tmp_path) -> None:
    cfg, files, expect = _tiny_store()
    write_local(str(tmp_path / "tiny"), files)
    store = Store(str(tmp_path)).sub("tiny")
    sweep_status(cfg, store)
    index = store.read_json(INDEX_FILE)["items"]
    g = plan(cfg)["generator"]
    # cached: finished and failed items; never running ones, never a torn done.json
    assert f"generator/{g[0].id}" in index and f"generator/{g[2].id}" in index
    assert f"generator/{g[1].id}" not in index and f"generator/{g[3].id}" not in index
    # a cached entry answers without reading the item: make its done.json unreadable but keep size and time
    path = store.path(f"items/generator/{g[0].id}/done.json")
    st = os.stat(path)
    with open(path, "rb+") as f:
        data = f.read()
        f.seek(0)
        f.write(b"X" * len(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert {s.id: s.state for s in sweep_status(cfg, store)}[g[0].id] == "done"
    # a resumed failed item: status.json rewritten, so its entry is stale and the file is read again
    time.sleep(0.01)
    store.write_json(f"items/generator/{g[2].id}/status.json", {"state": "running", "epoch": 2})
    s = {s.id: s for s in sweep_status(cfg, store)}[g[2].id]
    assert (s.state, s.epoch, s.error) == ("running", 2, None)
    assert f"generator/{g[2].id}" not in store.read_json(INDEX_FILE)["items"]


def test_list_local(tmp_path, capsys) -> None:
    cfg, files, _ = _tiny_store()
    write_local(str(tmp_path / "tiny"), files)
    other = parse_config({**TINY, "name": "other", "models": ["resnet18"], "transfer": False})
    write_local(str(tmp_path / "other"), {"sweep.yaml": yaml.safe_dump(other.to_dict()).encode()})
    (tmp_path / "not-a-sweep").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "sweep.yaml").write_text("name: broken\nwidth: true\n")
    rows = {r["name"]: r for r in list_sweeps(Store(str(tmp_path)))}
    assert set(rows) == {"tiny", "other", "broken"}
    t = rows["tiny"]
    # from the listing: the non-empty torn done.json counts as done here (see test_status_local)
    assert (t["done"], t["total"], t["running"], t["failed"], t["pending"]) == (5, 26, 2, 1, 18)
    assert t["updated"] and time.time() - t["updated"] < 600
    assert (rows["other"]["done"], rows["other"]["total"]) == (0, 9)
    assert rows["broken"]["total"] is None and "width" in rows["broken"]["error"]
    assert cli_main(["sweep", "list", "--storage", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "5/26" in out and "0/9" in out and "not-a-sweep" not in out


def _requests(log: str) -> list[str]:
    """The requests moto has logged so far (waits until the log stops growing)."""
    last = -1
    while True:
        with open(log) as f:
            lines = [line for line in f if '"GET ' in line or '"HEAD ' in line or '"PUT ' in line]
        if len(lines) == last:
            return lines
        last = len(lines)
        time.sleep(0.3)


def test_status_on_s3_lists_once(tmp_path, monkeypatch, capsys) -> None:
    log = str(tmp_path / "moto.log")
    server, endpoint = start_moto(log)
    for k, v in {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    try:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="nf-status")
        cfg, files, expect = _tiny_store()
        store = Store("s3://nf-status/team", endpoint).sub("tiny")
        for rel, data in files.items():
            store.write_bytes(rel, data)
        statuses = sweep_status(cfg, store)  # cold: reads the started and finished items, writes the index
        _check(statuses, cfg, expect)

        n0 = len(_requests(log))
        again = sweep_status(cfg, store)  # warm: a listing, the index, the running items
        reqs = _requests(log)[n0:]
        assert [(s.id, s.state, s.epoch, s.attempts) for s in again] == [
            (s.id, s.state, s.epoch, s.attempts) for s in statuses
        ]
        lists = [r for r in reqs if "list-type=2" in r]
        per_item = [r for r in reqs if "/items/" in r.split('"')[1] and r not in lists]
        assert len(lists) == 1, reqs
        # only the 3 started-but-unfinished items are read again (status.json, attempts.json and,
        # for the torn one, its done.json), not the 23 others
        g = plan(cfg)["generator"]
        unfinished = (g[1].id, g[3].id, g[4].id)
        assert per_item and all(any(f"/{i}/" in r for i in unfinished) for r in per_item), per_item
        assert len(per_item) <= 3 * 2 + 1 and len(reqs) <= 1 + 2 + 3 * 2 + 1, reqs  # + listing, index

        n0 = len(_requests(log))
        stage_states(cfg, store)  # the summary: one listing, no done.json read
        reqs = _requests(log)[n0:]
        assert len([r for r in reqs if "list-type=2" in r]) == 1 and not any("done.json" in r for r in reqs)

        assert cli_main(["sweep", "status", "tiny", "--storage", "s3://nf-status/team", "--s3-endpoint", endpoint]) == 0
        out = capsys.readouterr().out
        assert "s3://nf-status/team/tiny" in out and ERROR in out
        assert cli_main(["sweep", "list", "--storage", "s3://nf-status/team", "--s3-endpoint", endpoint]) == 0
        assert "5/26" in capsys.readouterr().out
    finally:
        server.kill()
        server.wait()


def test_status_of_missing_sweep_names_the_others(tmp_path, capsys) -> None:
    cfg, files, _ = _tiny_store()
    write_local(str(tmp_path / "tiny"), files)
    assert cli_main(["sweep", "status", "nope", "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "tiny" in err


def test_status_and_list_import_no_torch_ray_mlflow(tmp_path) -> None:
    """`nf sweep status/list` read storage only: no torch, Ray or MLflow (seconds of imports)."""
    import subprocess
    import sys

    cfg, files, _ = _tiny_store()
    write_local(str(tmp_path / "tiny"), files)
    probe = (
        "import sys\nfrom orchestration.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print(sorted(m for m in ('torch', 'ray', 'mlflow', 'pandas', 'matplotlib') if m in sys.modules))\n"
        "sys.exit(code)"
    )
    for argv in (
        ["sweep", "status", "tiny", "--storage", str(tmp_path)],
        ["sweep", "list", "--storage", str(tmp_path)],
    ):
        p = subprocess.run(
            [sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
        )
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip().splitlines()[-1] == "[]", p.stdout


def test_plan_of_several_configs(tmp_path, capsys) -> None:
    """`nf sweep plan sweeps/*.yaml`: every config's plan and the programme's total; a bad file is named."""
    a, b, bad = tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "bad.yaml"
    a.write_text(yaml.safe_dump({**TINY, "name": "a"}))
    b.write_text(yaml.safe_dump({**TINY, "name": "b", "transfer": False}))
    bad.write_text(yaml.safe_dump({**TINY, "name": "bad", "width": True}))
    assert cli_main(["sweep", "plan", str(a), str(b), "--no-data-check"]) == 0
    out = capsys.readouterr().out
    assert "sweep 'a'" in out and "sweep 'b'" in out and "2 sweeps, 44 trials in all" in out  # 26 + 18
    assert cli_main(["sweep", "plan", str(a), str(bad), "--no-data-check"]) == 2
    captured = capsys.readouterr()
    assert "bad.yaml" in captured.err and "width" in captured.err and "sweep 'a'" not in captured.out
