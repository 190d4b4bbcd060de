"""Sweeps end to end on real components: local Ray, MLflow on SQLite (and a real server), S3 on moto.

Each test runs the same tiny sweep (2 models × 2 generators × 2 BERs, transfer on: 26 trials).
"""

from __future__ import annotations

import glob
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient

from orchestration.cli import main as cli_main
from orchestration.spec.config import parse_config
from orchestration.spec.plan import plan
from orchestration.store.item_files import item_done
from orchestration.store.results import format_table
from orchestration.store.roots import sweep_store
from orchestration.sweep.runner import collect_rows, run_sweep, stage_states, tracking_uri
from orchestration.tracking.server import start_mlflow_server, stop_mlflow_server
from tests.sweep_support import (
    TINY,
    TRIALS,
    assert_secret_nowhere,
    descendants,
    ensure_ray,
    kill_tree,
    nf,
    start_moto,
)

REPO = str(Path(__file__).resolve().parents[1])


def _runs(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=1000)


def _check_no_epoch_trained_twice(store, cfg) -> int:
    """Every base/generator item trained each epoch once; restarts continued from their checkpoint.
    Returns how many attempts resumed from a checkpoint."""
    resumed = 0
    for stage in ("base", "generator"):
        for item in store.list(f"items/{stage}"):
            attempts = store.read_json(f"items/{stage}/{item}/attempts.json")
            done: list[int] = []
            for a in attempts:
                assert a["from_epoch"] >= max(done, default=0), (item, attempts)  # never back to scratch
                resumed += a["from_epoch"] > 0
                done += a["completed"]
            assert len(done) == len(set(done)), (item, attempts)
            epochs = cfg.base.epochs if stage == "base" else cfg.generator.epochs
            assert store.load_torch(f"items/{stage}/{item}/checkpoint.pt")["epoch"] == epochs
    return resumed


def _wait(pred, proc, timeout: float = 400) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        if proc.poll() is not None:
            raise AssertionError(f"sweep ended before the kill point:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.5)
    raise AssertionError("kill point not reached in time")


def _check_compact_progress(out: str, wall: float, interval: float, trials: int) -> None:
    """The default live view, read from a pipe: plain lines, a status line at most every
    ``interval`` seconds plus one per finished trial (not a table per epoch), with per-stage
    counts and ETAs; none of Ray Tune's own tables or Ray's start-up lines."""
    assert "\x1b[" not in out and "\r" not in out  # no cursor movement in a log file
    for noise in ("Configuration for experiment", "Trial status", "View detailed results", "Started a local Ray"):
        assert noise not in out, noise
    lines = out.split("\n\n")[0].splitlines()  # up to the results table
    status = [ln for ln in lines if re.match(r"\[\d\d:\d\d:\d\d \+\w+\] ", ln)]
    done = [ln for ln in lines if ln.startswith("done ")]
    assert len(done) == trials, lines  # one line per finished trial
    assert 2 <= len(status) <= wall / interval + 6, (wall, status)  # + one as each Tune run ends
    assert len(lines) <= len(done) + len(status) + 12, lines  # little else: bounded, whatever the epochs
    assert re.search(r"\beval 0/8 done, 8 pending\b", status[0]), status[0]
    assert any(re.search(r"\bgenerator \d/8 done, \d running.*\), ETA ~?\d", ln) for ln in status), status
    assert any(re.search(r"\| sweep ETA ~?\d", ln) for ln in status[:-1]), status
    assert re.search(r"base 2/2 done \| generator 8/8 done \| eval 8/8 done \| transfer 8/8 done", status[-1])


def _generator_mid_training(store) -> bool:
    for item in store.list("items/generator"):
        d = f"items/generator/{item}"
        if store.exists(f"{d}/checkpoint.pt") and not store.exists(f"{d}/done.json"):
            return True
    return False


# The tiny sweep, also evaluated at a lower precision (the base model re-quantized to 4 bits).
REFERENCE = {**TINY, "evaluation": {**TINY["evaluation"], "bits": [8, 4]}}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple:
    """One uninterrupted run of REFERENCE (in-process, on the session's Ray): checked in detail by the
    end-to-end test, and the result that every interrupted run of the same config must reproduce exactly."""
    ensure_ray()
    cfg = parse_config({**REFERENCE, "storage": str(tmp_path_factory.mktemp("reference") / "sweeps")})
    rows = run_sweep(cfg, verbose=0)
    return cfg, rows


def test_tiny_sweep_end_to_end(reference, tmp_path, capsys, ray_local) -> None:
    cfg, rows = reference
    store = sweep_store(cfg)
    uri = tracking_uri(cfg, store)
    # MLflow: one parent, one child per trial, all finished, with params, metrics and artifacts.
    runs = _runs(uri, "tiny")
    parents = [r for r in runs if r.data.tags.get("nf.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == sum(TRIALS.values()) == len(runs) - 1
    assert all(r.info.status == "FINISHED" for r in runs)
    client = MlflowClient(uri)
    by_stage: dict[str, list] = {}
    for r in children:
        by_stage.setdefault(r.data.tags["nf.stage"], []).append(r)
    assert {k: len(v) for k, v in by_stage.items()} == TRIALS
    g = by_stage["generator"][0]
    for key in ("dataset", "generator", "ber", "lam", "n", "fault_model", "bits", "seed", "code_version"):
        assert key in g.data.params, key
    assert [m.step for m in client.get_metric_history(g.info.run_id, "loss")] == [1, 2, 3]
    assert {"checkpoint.pt", "sweep.yaml"} <= {a.path for a in client.list_artifacts(g.info.run_id)}
    e = by_stage["eval"][0]
    assert "results.parquet" in {a.path for a in client.list_artifacts(e.info.run_id)}
    parent_art = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"results.parquet", "transfer_digits.parquet", "transfer_digits.png", "sweep.yaml"} <= parent_art

    # The printed table's numbers are the Parquet artifact's.
    local = client.download_artifacts(parents[0].info.run_id, "results.parquet", str(tmp_path))
    table = pq.read_table(local).to_pylist()
    assert len(table) == len(rows) == (8 + 8) * 2 * 2  # (eval + transfer) × eval BERs × bit widths
    assert {r["bits"] for r in table} == {8, 4}
    ca = {(r["target"], r["bits"]): r["ca"] for r in table}
    assert any(ca[(m, 4)] != ca[(m, 8)] for m in ("resnet18", "vgg11"))  # 4-bit copies really are re-quantized
    key = lambda r: (r["item_id"], r["target"], r["eval_ber"])  # noqa: E731
    for a, b in zip(sorted(rows, key=key), sorted(table, key=key)):
        for col in ("ca", "pa_mean", "pa_std", "ca_nf", "pa_nf_mean", "rp"):
            assert a[col] == pytest.approx(b[col], abs=1e-9)
    text = format_table(table)
    assert f"{table[0]['rp']:+.2f}" in text and f"{table[0]['pa_nf_mean']:.2f}" in text
    assert {r["target"] for r in table if r["stage"] == "transfer"} == {"resnet18", "vgg11"}

    assert all(s == "done" for st in stage_states(cfg).values() for s in st.values())
    # A trial's config (Tune's params.json) is its item, nothing shared; the sweep goes once via with_parameters.
    configs = {
        t: store.read_json(f"tune/{exp}/{t}/params.json")
        for exp in store.list("tune")
        for t in store.list(f"tune/{exp}")
        if store.exists(f"tune/{exp}/{t}/params.json")
    }
    assert len(configs) == sum(TRIALS.values())
    for trial, config in configs.items():
        assert config == {"item": store.read_json(f"items/{config['item']['stage']}/{trial}/done.json")["item"]}
    # `nf select` on the finished sweep: the rows carry per-chip accuracies for --percentile.
    assert all(len(r["pa_per_chip"]) == len(r["pa_nf_per_chip"]) == 3 for r in rows)
    vt = tmp_path / "vt.csv"
    vt.write_text("voltage,ber,energy_ratio\n1,0,1\n0.8,0.03,0.64\n0.78,0.05,0.61\n")
    argv = ["select", "tiny", "--storage", cfg.storage, "--voltage-table", str(vt), "--json"]
    capsys.readouterr()  # drop the sweep's own output
    assert cli_main([*argv, "--min-accuracy", "0", "--percentile", "10"]) == 0
    sel = json.loads(capsys.readouterr().out)
    assert sorted((m["model"], m["bits"]) for m in sel["models"]) == [
        ("resnet18", 4),
        ("resnet18", 8),
        ("vgg11", 4),
        ("vgg11", 8),
    ]
    for m in sel["models"]:  # a 0% floor: the lowest voltage evaluated, and NF never saves less
        assert m["without_nf"]["ber"] == 0.05 and m["with_nf"]["energy_saving"] >= m["without_nf"]["energy_saving"]
    assert store.exists("results/select_0_p10.png")
    # Run again: complete items are never run again, no run is duplicated.
    attempts = store.read_bytes("items/generator/" + store.list("items/generator")[0] + "/attempts.json")
    run_sweep(cfg, verbose=0)
    assert len(_runs(uri, "tiny")) == len(runs)
    assert store.read_bytes("items/generator/" + store.list("items/generator")[0] + "/attempts.json") == attempts

    # A real MLflow server on loopback answers a search for the sweep's runs.
    proc, url = start_mlflow_server(uri, store.url("mlartifacts"))
    try:
        found = _runs(url, "tiny")
        assert len(found) == len(runs)
        assert {r.info.run_id for r in found} == {r.info.run_id for r in runs}
    finally:
        stop_mlflow_server(proc)


def _progress(store) -> int:
    """Work recorded in storage: epochs trained (all attempts) plus items done."""
    n = 0
    for stage in ("base", "generator", "eval", "transfer"):
        for item in store.list(f"items/{stage}"):
            n += item_done(store, stage, item)
            if stage in ("base", "generator"):
                try:
                    n += sum(len(a["completed"]) for a in store.read_json(f"items/{stage}/{item}/attempts.json"))
                except (FileNotFoundError, ValueError):
                    pass
    return n


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _driver(args: list[str], log) -> subprocess.Popen:
    # Output to a file: a pipe nobody reads could fill up and stall the driver.
    return subprocess.Popen(
        [sys.executable, "-m", "orchestration.cli", *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_chaos_driver_killed_at_random_moments(reference, tmp_path) -> None:
    """Kill the driver at random moments (seeded), at least 5 times in one sweep — sometimes with
    every Ray process (a lost node), sometimes the driver alone, its trial workers left to write
    on until they notice — then let it finish: every item done once and no epoch trained twice,
    one MLflow run per item (none lost, duplicated or left RUNNING), every per-epoch metric in
    MLflow, and results identical to the uninterrupted reference run."""
    ref_cfg, ref_rows = reference
    raw = {**REFERENCE, "storage": str(tmp_path / "sweeps")}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = parse_config(raw)
    store = sweep_store(cfg)
    rng = random.Random(20261126)
    orphans: list[tuple[int, str | None]] = []  # processes of drivers killed alone
    kills, moments = 0, []
    t_start = time.monotonic()
    try:
        while kills < 5:
            log = open(tmp_path / f"driver{kills}.log", "w")
            args = ["sweep", "run", str(path)] if kills == 0 else ["sweep", "resume", "tiny", "--storage", cfg.storage]
            proc = _driver(args, log)
            before = _progress(store)
            # A random moment: after the driver made progress (and a random delay on top), or a
            # random time after its start, whatever it is doing then (starting Ray, MLflow, ...).
            if rng.random() < 0.7:
                _wait(lambda b=before: _progress(store) > b, proc)
                time.sleep(rng.uniform(0, 3))
            else:
                time.sleep(rng.uniform(2, 10))
            if proc.poll() is not None:
                raise AssertionError(f"sweep finished after {kills} kills; kill sooner ({moments})")
            alone = rng.random() < 0.5
            moments.append((round(time.monotonic() - t_start, 1), "driver" if alone else "tree", _progress(store)))
            if alone:  # preempted driver; Ray's processes and trial workers die on their own
                orphans += [(p, _start_time(p)) for p in descendants(proc.pid)]
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            else:
                kill_tree(proc)
            log.close()
            kills += 1
        left = sum(v != "done" for st in stage_states(cfg).values() for v in st.values())
        t0 = time.time()
        with open(tmp_path / "last.log", "w") as log:  # not a terminal: the compact view's plain lines
            last = _driver(["sweep", "resume", "tiny", "--storage", cfg.storage, "--progress-interval", "2"], log)
            last.wait(timeout=900)
        out = (tmp_path / "last.log").read_text()
        assert last.returncode == 0, out[-4000:]
        _check_compact_progress(out, time.time() - t0, 2, left)
    finally:
        for pid, started in orphans:  # any still alive (same process: same start time)
            if started is not None and _start_time(pid) == started:
                os.kill(pid, signal.SIGKILL)
    print(f"chaos: {kills} kills at (s, what, progress) {moments}; {time.monotonic() - t_start:.0f} s in all")
    assert kills >= 5 and "RP" in out and "mlflow ui" in out

    # Every item done, once: the attempt that completed it was its last one.
    assert all(s == "done" for st in stage_states(cfg).values() for s in st.values())
    for stage, st in stage_states(cfg).items():
        for item in st:
            attempts = store.read_json(f"items/{stage}/{item}/attempts.json")
            assert store.read_json(f"items/{stage}/{item}/done.json")["attempt"] == attempts[-1]["token"], item
            assert len({a["token"] for a in attempts}) == len(attempts)
    assert _check_no_epoch_trained_twice(store, cfg) >= 1
    # MLflow: one run per item, none lost, duplicated or left RUNNING.
    uri = tracking_uri(cfg, store)
    runs = _runs(uri, "tiny")
    assert len(runs) == 1 + sum(TRIALS.values())
    assert len({r.data.tags["nf.item_id"] for r in runs if "nf.item_id" in r.data.tags}) == sum(TRIALS.values())
    assert all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    # Results identical to the uninterrupted run (every number, bit for bit).
    key = lambda r: (r["item_id"], r["target"], r["eval_ber"], r["bits"])  # noqa: E731
    assert sorted(collect_rows(cfg, store), key=key) == sorted(ref_rows, key=key)
    status = nf("sweep", "status", "tiny", "--storage", cfg.storage)
    out, _ = status.communicate(timeout=120)
    assert status.returncode == 0 and "transfer" in out and " 8 " in out
    # Every epoch's metrics in MLflow, also those of epochs whose report a kill cut off.
    client = MlflowClient(uri)
    missing = []
    for r in runs:
        stage = r.data.tags.get("nf.stage")
        if stage not in ("base", "generator"):
            continue
        history = store.load_torch(f"items/{stage}/{r.data.tags['nf.item_id']}/checkpoint.pt")["history"]
        for metric in (k for k in history[-1] if k != "epoch"):
            steps = {m.step for m in client.get_metric_history(r.info.run_id, metric)}
            if steps != {h["epoch"] for h in history}:
                missing.append((r.data.tags["nf.item_id"], metric, sorted(steps)))
    assert not missing, missing


def _sqlite_copy(s3, key: str, dest) -> str:
    """The MLflow database the sweep keeps in its storage, fetched to ``dest``: a tracking URI."""
    dest.write_bytes(s3.get_object(Bucket="nf-sweeps", Key=key)["Body"].read())
    return f"sqlite:///{dest}"


def test_sweep_on_s3_with_resume(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Head-node loss on S3 storage with the default (SQLite) tracking: run part of the sweep from
    one directory, kill it, delete every local file it made (its working directory, HOME with
    ~/.cache, Ray's temp dir), resume on a "fresh machine" from another directory, and find one
    continuous MLflow history recovered from the storage."""
    server, endpoint = start_moto()
    # Canary credentials: searched for afterwards in every file Ray, the storage and MLflow wrote.
    key_id, secret = f"NFCANARY{uuid.uuid4().hex[:12].upper()}", f"nf-canary-{uuid.uuid4().hex}"
    env = {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": "us-east-1"}
    for k, v in env.items():  # this process too (boto3 below); restored by monkeypatch
        monkeypatch.setenv(k, v)

    def machine(name: str) -> tuple[dict[str, str], list[str]]:
        """A head node's local disk: its working dir, HOME (~/.cache in it), Ray's temp dir."""
        cwd, home = tmp_path / name, tmp_path / f"{name}-home"
        cwd.mkdir()
        home.mkdir()
        ray_tmp = tempfile.mkdtemp(prefix="nfray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
        local = {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "RAY_TMPDIR": ray_tmp}
        local["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)  # any cwd
        return {**env, **local}, [str(cwd), str(home), ray_tmp]

    head1_env, head1_disk = machine("head1")
    head2_env, head2_disk = machine("head2")
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="nf-sweeps")
        # The tiny sweep with one generator at one training BER (8 trials, every stage): what is checked
        # here is the storage and the tracking across a lost head node, not the grid.
        # Five generator epochs: a wide moment to kill the head while a generator is mid-training.
        raw = {**TINY, "name": "tiny-s3", "generators": ["ConvS"], "train_bers": [0.03]}
        raw["generator"] = {**TINY["generator"], "epochs": 5}
        raw |= {"storage": "s3://nf-sweeps/team", "s3_endpoint": endpoint}  # no tracking_uri
        path = tmp_path / "s3.yaml"
        path.write_text(yaml.safe_dump(raw))
        cfg = parse_config(raw)
        store = sweep_store(cfg)
        trials = sum(len(items) for items in plan(cfg).values())
        assert trials == 8
        first = nf("sweep", "run", str(path), env=head1_env, cwd=head1_disk[0])
        try:
            _wait(lambda: _generator_mid_training(store), first)
        finally:
            kill_tree(first)
        # Canary grep of the first head's disk (Ray's logs, the MLflow working copy) before it is lost.
        grep = {"s3_client": s3, "bucket": "nf-sweeps"}
        first_out = first.communicate(timeout=60)[0]
        assert_secret_nowhere(
            [secret, key_id], **grep, ray_tmp=head1_disk[2], mlflow_paths=[head1_disk[1]], output=first_out
        )

        # The head node is lost. What the storage kept of the tracking (uploaded at the base stage's end):
        db_key = "team/tiny-s3/mlflow/mlflow.db"
        kept = _runs(_sqlite_copy(s3, db_key, tmp_path / "kept.db"), "tiny-s3")
        kept_ids = {r.data.tags.get("nf.item_id", "parent"): r.info.run_id for r in kept}
        assert "parent" in kept_ids and {"digits.resnet18.b8.s0", "digits.vgg11.b8.s0"} <= set(kept_ids)
        assert glob.glob(f"{head1_disk[1]}/.cache/nf/mlflow/*/mlflow.db")  # the working copy was on this disk
        for d in head1_disk:
            shutil.rmtree(d)
        assert not any(os.path.exists(d) for d in head1_disk)

        last = nf(
            "sweep",
            "resume",
            "tiny-s3",
            "--storage",
            "s3://nf-sweeps/team",
            "--s3-endpoint",
            endpoint,
            env=head2_env,
            cwd=head2_disk[0],
        )
        out, _ = last.communicate(timeout=900)
        assert last.returncode == 0, out[-4000:]
        assert f"sqlite:///{head2_disk[1]}/.cache/nf/mlflow/" in out, out[-3000:]  # tracked on the new machine

        keys = [
            o["Key"]
            for p in s3.get_paginator("list_objects_v2").paginate(Bucket="nf-sweeps", Prefix="team/tiny-s3/")
            for o in p.get("Contents", [])
        ]
        assert sum(k.startswith("team/tiny-s3/items/") and k.endswith("/done.json") for k in keys) == trials
        assert "team/tiny-s3/results/results.parquet" in keys and "team/tiny-s3/sweep.yaml" in keys
        assert any(k.startswith("team/tiny-s3/mlartifacts/") and k.endswith("checkpoint.pt") for k in keys)
        assert any(k.startswith("team/tiny-s3/tune/") for k in keys)  # Ray Tune's own state on S3 too
        table = pq.read_table(
            io.BytesIO(s3.get_object(Bucket="nf-sweeps", Key="team/tiny-s3/results/results.parquet")["Body"].read())
        )
        assert table.num_rows == 4 * 2  # (2 eval + 2 transfer items) × 2 evaluation BERs
        assert _check_no_epoch_trained_twice(store, cfg) >= 1

        # One continuous MLflow history, read from the storage copy: the runs made before the loss
        # go on, one run per item, none duplicated or left RUNNING, every epoch's metrics present.
        uri = _sqlite_copy(s3, db_key, tmp_path / "final.db")
        runs = _runs(uri, "tiny-s3")
        parents = [r for r in runs if r.data.tags.get("nf.role") == "parent"]
        assert [r.info.run_id for r in parents] == [kept_ids["parent"]]
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == kept_ids["parent"]]
        item_ids = [r.data.tags["nf.item_id"] for r in children]
        assert len(runs) == 1 + len(children) and len(item_ids) == len(set(item_ids)) == trials
        assert all(
            r.info.run_id == kept_ids[r.data.tags["nf.item_id"]]
            for r in children
            if r.data.tags["nf.item_id"] in kept_ids
        )
        assert {r.info.status for r in runs} == {"FINISHED"}
        client = MlflowClient(uri)
        for r in children:
            stage, item = r.data.tags["nf.stage"], r.data.tags["nf.item_id"]
            done = store.read_json(f"items/{stage}/{item}/done.json")
            for epoch in [*done.get("history", []), done["final"]]:
                for key in (k for k, v in epoch.items() if k != "epoch" and isinstance(v, float)):
                    steps = [m.step for m in client.get_metric_history(r.info.run_id, key)]
                    assert epoch["epoch"] in steps and len(steps) == len(set(steps)), (item, key, steps)
            if stage != "eval" and stage != "transfer":
                epochs = cfg.base.epochs if stage == "base" else cfg.generator.epochs
                steps = [m.step for m in client.get_metric_history(r.info.run_id, "loss")]
                assert sorted(steps) == list(range(1, epochs + 1)), (item, steps)
        everything = json.dumps([r.data.params for r in runs]) + json.dumps([r.data.tags for r in runs])
        assert secret not in everything and key_id not in everything  # credentials never recorded
        grepped = assert_secret_nowhere(
            [secret, key_id], **grep, ray_tmp=head2_disk[2], mlflow_paths=[head2_disk[1], tmp_path], output=out
        )
        assert glob.glob(f"{head2_disk[2]}/ray/session_*/logs/runtime_env_agent.log"), grepped  # keys once leaked
    finally:
        server.kill()
        server.wait()
        for d in head1_disk + head2_disk:
            shutil.rmtree(d, ignore_errors=True)


def test_items_start_when_their_needs_are_done(tmp_path) -> None:
    """No stage barriers: digits' generator starts while CIFAR-10's (slower) base model still
    trains, yet no item starts before the items it needs are done; a failure (CIFAR-100's
    unreadable files) blocks only the items that need it."""
    import ray

    from orchestration.sweep.runner import SweepError, collect_rows
    from tests.test_data import write_cifar10, write_cifar100

    write_cifar10(tmp_path / "cifar", per_batch=160, n_test=8)  # 800 32x32 images vs 64 8x8 digits
    write_cifar100(tmp_path / "broken")
    (tmp_path / "broken" / "cifar-100-python" / "train").write_bytes(b"not a pickle")
    raw = {
        "name": "overlap",
        "storage": str(tmp_path / "sweeps"),
        "datasets": [
            {"name": "digits", "train_subset": 64, "test_subset": 30},
            {"name": "cifar10", "root": str(tmp_path / "cifar")},
            {"name": "cifar100", "root": str(tmp_path / "broken")},
        ],
        "models": ["resnet18"],
        "width": 0.125,
        "generators": ["ConvS"],
        "train_bers": [0.05],
        "ns": [2],
        "base": {"epochs": 3, "batch_size": 32, "optimizer": "adam", "lr": 0.01},
        "generator": {"epochs": 1, "batch_size": 32},
        "evaluation": {"bers": [0.05], "chips": 2},
        "transfer": False,
        "resources": {"cpus": 1, "max_failures": 0},
    }
    cfg = parse_config(raw)
    # Three trial slots: the three base models start together (a barrier-free runner needs no free
    # slot to be "unfair"; a stage barrier would hold digits' generator back however many there are).
    ray.shutdown()  # not the session's 2-CPU instance: a Ray of its own
    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
    try:
        with pytest.raises(SweepError, match=r"1 trial\(s\) failed: cifar100\.resnet18\.b8\.s0; 2 item\(s\) blocked"):
            run_sweep(cfg, verbose=0, log=lambda _: None)
    finally:
        ray.shutdown()
    store = sweep_store(cfg)
    states = stage_states(cfg)
    assert {i.split(".")[0]: s for i, s in states["base"].items()} == {
        "digits": "done",
        "cifar10": "done",
        "cifar100": "failed",
    }
    for stage in ("generator", "eval"):  # the failure blocks only its own dataset's items
        assert {i.removeprefix("eval.").split(".")[0]: s for i, s in states[stage].items()} == {
            "digits": "done",
            "cifar10": "done",
            "cifar100": "pending",
        }
    assert {r["dataset"] for r in collect_rows(cfg)} == {"digits", "cifar10"}

    def started(stage: str, item: str) -> float:
        return store.read_json(f"items/{stage}/{item}/attempts.json")[0]["time"]

    def ended(stage: str, item: str) -> float:
        status = store.read_json(f"items/{stage}/{item}/status.json")
        assert status["state"] == "done"
        return status["time"]

    slow_base = "cifar10.resnet18.b8.s0"
    fast_gen = next(i for i in store.list("items/generator") if i.startswith("digits."))
    # The fast dataset's generator started before the slow base model ended (and after it began).
    assert started("base", slow_base) < started("generator", fast_gen) < ended("base", slow_base)
    for item in store.list("items/generator"):  # ... yet none started before its base model ended
        needs = store.read_json(f"items/generator/{item}/done.json")["item"]["needs"]
        assert needs and all(ended("base", need) <= started("generator", item) for need in needs), item
    # MLflow: a child run per item (the blocked ones tagged and ended), per-stage wall time on the parent.
    runs = _runs(tracking_uri(cfg, store), "overlap")
    children = [r for r in runs if r.data.tags.get("nf.item_id")]
    assert len(children) == 9
    blocked = {r.data.tags["nf.item_id"] for r in children if r.data.tags.get("nf.blocked")}
    assert blocked == {i for s in ("generator", "eval") for i, v in states[s].items() if v == "pending"}
    done = {i for st in states.values() for i, v in st.items() if v == "done"}
    assert {r.data.tags["nf.item_id"] for r in children if r.info.status == "FINISHED"} == done
    parent = next(r for r in runs if r.data.tags.get("nf.role") == "parent")
    assert parent.info.status == "FAILED"
    assert {"stage_seconds.base", "stage_seconds.generator", "stage_seconds.eval"} <= set(parent.data.metrics)
