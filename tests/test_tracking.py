"""MLflow tracking (real SQLite store, real `mlflow server`, real Ray Tune) and result tables."""

from __future__ import annotations

import io
import os
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from orchestration.store import results
from orchestration.tracking.server import (
    _group_alive,  # noqa: PLC2701 - checks that no server process survives
    start_mlflow_server,
    stop_mlflow_server,
    ui_command,
)
from orchestration.tracking.tracker import SweepTracker, artifact_uri, is_secret
from orchestration.tracking.tune_callback import MlflowTuneCallback

SWEEP = "sweep-a"
EXPERIMENT = "nf-test"
SECRETS = {
    "api_token": "tok-123",
    "db_password": "pw-456",
    "aws_access_key_id": "AKIA789",
    "storage": {"s3": {"secret_key": "sk-000"}},
    "Credentials_file": "/c",
}
SECRET_VALUES = ("tok-123", "pw-456", "AKIA789", "sk-000", "/c")


@pytest.fixture(scope="module", autouse=True)
def _offline_env():
    # Loopback only: no telemetry or usage reports from MLflow and Ray.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        mp.setenv("no_proxy", "127.0.0.1,localhost")
        yield


@pytest.fixture(scope="module")
def store(tmp_path_factory, _offline_env):
    """A sweep written by one driver, then 'resumed' by a second tracker on the same store."""
    root = tmp_path_factory.mktemp("mlflow")
    uri, art = f"sqlite:///{root / 'mlflow.db'}", root / "artifacts"
    t1 = SweepTracker(uri, EXPERIMENT, str(art))
    parent = t1.parent_run(SWEEP, {"sweep": {"models": ["resnet18"], "bers": [0.01]}, **SECRETS})
    runs = {
        item: t1.child_run(item, "generator", {"item_id": item, "lam": 5.0, "n": 5, **SECRETS})
        for item in ("g-resnet18-p0.01", "g-vgg19-p0.01")
    }
    a = runs["g-resnet18-p0.01"]
    for step in (1, 2):
        t1.log_metrics(a, {"loss": 1.0 / step, "note": "not a number", "done": True}, step)
    t1.log_metrics(a, {"rp.resnet18+vgg19": 12.5}, 1)  # '+' is not allowed in MLflow names
    report = root / "report.txt"
    report.write_text("eval ok\n")
    t1.log_artifact(a, report)
    t1.log_bytes(a, "result.json", b'{"rp": 41.5}', artifact_path="eval")
    return {"root": root, "uri": uri, "art": art, "t1": t1, "parent": parent, "runs": runs}


def _all_runs(client: MlflowClient, exp_id: str) -> list:
    return client.search_runs([exp_id], max_results=1000)


def test_tracker_resume_is_idempotent(store):
    t1 = store["t1"]
    exp_id = t1.ensure_experiment()
    exp = t1.client.get_experiment(exp_id)
    assert exp.artifact_location == artifact_uri(store["art"]) and exp.artifact_location.startswith("file:///")
    n_before = len(_all_runs(t1.client, exp_id))
    assert n_before == 3

    # A resumed driver: a new tracker finds the same runs; new params are added, old ones kept.
    t2 = SweepTracker(store["uri"], EXPERIMENT, str(store["art"]))
    assert t2.ensure_experiment() == exp_id
    assert t2.parent_run(SWEEP, {"sweep": {"models": ["other"]}}) == store["parent"]
    for item, run_id in store["runs"].items():
        assert t2.child_run(item, "generator", {"item_id": item, "resumed": 1}) == run_id
    assert t2.child_runs("generator") == store["runs"]
    assert len(_all_runs(t2.client, exp_id)) == n_before

    a = t2.client.get_run(store["runs"]["g-resnet18-p0.01"])
    assert a.info.run_name == "g-resnet18-p0.01"
    assert a.data.tags["mlflow.parentRunId"] == store["parent"]
    assert a.data.tags["nf.item_id"] == "g-resnet18-p0.01" and a.data.tags["nf.stage"] == "generator"
    assert a.data.params["lam"] == "5.0" and a.data.params["n"] == "5" and a.data.params["resumed"] == "1"
    assert len(a.data.params["code_version"]) >= 5
    parent = t2.client.get_run(store["parent"])
    assert parent.data.params["sweep.models"] == "['resnet18']"  # first value kept: params are immutable
    assert parent.data.tags["nf.role"] == "parent" and parent.data.tags["nf.sweep"] == SWEEP


def test_secrets_never_logged(store):
    client = store["t1"].client
    for run in _all_runs(client, store["t1"].ensure_experiment()):
        for k, v in run.data.params.items():
            assert not is_secret(k), k
            assert not any(s in v for s in SECRET_VALUES), (k, v)
    assert is_secret("S3_SECRET_ACCESS_KEY") and is_secret("storage.s3.secret_key") and not is_secret("lam")


def test_metrics_steps_artifacts_status(store):
    t, a = store["t1"], store["runs"]["g-resnet18-p0.01"]
    hist = t.client.get_metric_history(a, "loss")
    assert sorted((m.step, m.value) for m in hist) == [(1, 1.0), (2, 0.5)]
    assert t.logged_steps(a, "loss") == {1, 2} and t.logged_steps(a, "missing") == set()
    assert set(t.client.get_run(a).data.metrics) == {"loss", "rp.resnet18_vgg19"}  # strings, bools skipped

    run_dir = store["art"] / t.client.get_run(a).info.run_id / "artifacts"
    assert (run_dir / "report.txt").read_text() == "eval ok\n"
    assert (run_dir / "eval" / "result.json").read_bytes() == b'{"rp": 41.5}'

    b = store["runs"]["g-vgg19-p0.01"]
    assert t.run_status(b) == "RUNNING"
    t.finish(b, "FAILED")
    assert t.run_status(b) == "FAILED"
    t.finish(b, "RUNNING")  # a retried item reopens its run
    assert t.get_tag(b, "nf.artifacts") is None
    t.set_tag(b, "nf.artifacts", "1")
    assert t.get_tag(b, "nf.artifacts") == "1"
    assert t.run_status(b) == "RUNNING"
    with pytest.raises(ValueError):
        t.finish(b, "DONE")


def test_mlflow_server_serves_the_sweep(store):
    proc, url = start_mlflow_server(store["uri"], str(store["root"] / "served"))
    try:
        assert url.startswith("http://127.0.0.1:")
        client = MlflowClient(url)
        exp = client.get_experiment_by_name(EXPERIMENT)
        runs = client.search_runs([exp.experiment_id], f"tags.`nf.sweep` = '{SWEEP}'")
        assert len(runs) == 3
        roles = sorted(r.data.tags["nf.role"] for r in runs)
        assert roles == ["child", "child", "parent"]
        assert {r.data.tags.get("nf.item_id") for r in runs} == set(store["runs"]) | {None}
    finally:
        stop_mlflow_server(proc)
    assert proc.poll() is not None and not _group_alive(proc.pid)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(OSError):
        opener.open(f"{url}/health", timeout=2)


def test_ui_command():
    line = ui_command("sqlite:////data/sweeps/a b/mlflow.db")
    assert "mlflow ui --backend-store-uri 'sqlite:////data/sweeps/a b/mlflow.db' --port 5000" in line
    assert ui_command("http://127.0.0.1:5001") == "open http://127.0.0.1:5001"


def test_callback_with_ray_tune(tmp_path, _offline_env, ray_local):
    from ray import tune

    tracker = SweepTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "nf-tune", str(tmp_path / "artifacts"))
    tracker.parent_run("tune-sweep", {})
    items = {"a": 10.0, "b": 20.0, "bad": 0.0}
    runs = {item: tracker.child_run(item, "generator", {"offset": off}) for item, off in items.items()}

    def trainable(config, offsets):  # nested, so Ray pickles it by value (the test module is not importable there)
        from ray import tune as _tune

        item = config["item"]["id"]
        for epoch in (1, 2, 3):
            if item == "bad" and epoch == 2:
                raise RuntimeError("simulated trial failure")
            _tune.report({"epoch": epoch, "loss": offsets[item] + epoch, "tag": "x"})

    # As the runner does: a trial's config is its item; shared settings go through with_parameters.
    tuner = tune.Tuner(
        tune.with_parameters(trainable, offsets=items),
        param_space={"item": tune.grid_search([{"id": item, "stage": "generator"} for item in items])},
        tune_config=tune.TuneConfig(max_concurrent_trials=2),
        run_config=tune.RunConfig(
            name="cb", storage_path=str(tmp_path / "ray"), verbose=0, callbacks=[MlflowTuneCallback(tracker, runs)]
        ),
    )
    grid = tuner.fit()
    assert sorted(r.config["item"]["id"] for r in grid) == sorted(items)
    assert all(set(r.config) == {"item"} for r in grid)  # nothing shared is copied into a trial's config
    assert grid.num_errors == 1
    for item in ("a", "b"):
        hist = tracker.client.get_metric_history(runs[item], "loss")
        assert sorted((m.step, m.value) for m in hist) == [(e, items[item] + e) for e in (1, 2, 3)]
        assert tracker.run_status(runs[item]) == "FINISHED"
        logged = set(tracker.client.get_run(runs[item]).data.metrics)
        assert logged == {"loss"}, logged  # Ray bookkeeping (pid, timestamp, …) not logged
    assert tracker.logged_steps(runs["bad"], "loss") == {1}
    assert tracker.run_status(runs["bad"]) == "FAILED"

    # A replayed result (restored trial / backfill) is not logged twice.
    cb = MlflowTuneCallback(tracker, runs)
    cb.log_result(runs["a"], {"epoch": 3, "loss": 99.0})
    cb.log_result(runs["a"], {"epoch": 4, "loss": 14.0})
    hist = tracker.client.get_metric_history(runs["a"], "loss")
    assert sorted((m.step, m.value) for m in hist) == [(1, 11.0), (2, 12.0), (3, 13.0), (4, 14.0)]


# -- results ---------------------------------------------------------------------------
def _rows() -> list[dict]:
    rows = []
    for src in ("resnet18", "vgg19"):
        for tgt in ("resnet18", "vgg19"):
            for ber in (0.005, 0.01):
                pa = 30.0 + 1000 * ber
                rows.append(
                    dict(
                        item_id=f"t-{src}-{tgt}",
                        stage="transfer",
                        dataset="cifar10",
                        source=src,
                        generator="ConvL",
                        train_ber=0.01,
                        lam=5.0,
                        n=5,
                        fault_model="stuck_at",
                        layout="wrap",
                        bits=8,
                        seed=0,
                        chips=10,
                        eval_ber=ber,
                        target=tgt,
                        ca=92.61,
                        pa_mean=pa,
                        pa_std=2.5,
                        ca_nf=90.12,
                        pa_nf_mean=pa + 37.25,
                        pa_nf_std=1.25,
                        rp=37.25,
                        efficiency=37.25 / 0.72,
                    )
                )
    rows.append(dict(dataset="cifar10", source="resnet18", eval_ber=0.01, ca=92.61, pa_mean=40.0, pa_std=2.5))
    return rows


def test_parquet_round_trip(tmp_path):
    rows = _rows()
    table = results.results_table(rows)
    path = tmp_path / "results.parquet"
    results.write_parquet(table, path)
    back = results.read_parquet(path).to_pylist()
    assert [{k: r[k] for k in rows[0]} for r in back[:-1]] == rows[:-1]
    # Missing optional fields are null; target defaults to the source.
    assert back[-1]["generator"] is None and back[-1]["rp"] is None and back[-1]["target"] == "resnet18"
    buf = io.BytesIO()
    results.write_parquet(table, buf)
    assert results.read_parquet(io.BytesIO(buf.getvalue())).equals(table)
    with pytest.raises(ValueError):
        results.results_table([{"dataset": "cifar10", "eval_ber": 0.01}])


def test_rp_filled_from_accuracies():
    (row,) = results.results_table(
        [dict(dataset="d", source="m", generator="ConvS", eval_ber=0.01, pa_mean=40.0, pa_nf_mean=70.5)]
    ).to_pylist()
    assert row["rp"] == pytest.approx(30.5)


def test_transfer_matrix_and_heatmap(tmp_path):
    rows = _rows()
    tm = results.transfer_matrix(rows, "cifar10").to_pandas()
    assert len(tm) == 8  # 2 sources × 2 targets × 2 eval BERs; the bare base model row is left out
    assert set(tm.columns) >= {"source", "target", "eval_ber", "pa_mean", "pa_nf_mean", "rp"}
    assert (tm["rp"] == 37.25).all()
    assert results.transfer_matrix(rows, "gtsrb").num_rows == 0

    png = tmp_path / "rp.png"
    assert results.heatmap_png(rows, "cifar10", png) == str(png)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    flip = [dict(r, fault_model="flip") for r in rows if r.get("generator")]
    with pytest.raises(ValueError):  # two fault models in one map would mix incomparable numbers
        results.heatmap_png(rows + flip, "cifar10", tmp_path / "mixed.png")
    results.heatmap_png(rows + flip, "cifar10", tmp_path / "flip.png", fault_model="flip")
    assert os.path.getsize(tmp_path / "flip.png") > 1000


def test_format_table():
    text = results.format_table(_rows())
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["source", "generator", "training", "BER", "evaluation"]
    assert "CA (NF)" in lines[0] and "PA (NF)" in lines[0] and lines[0].rstrip().endswith("RP")
    assert "92.61" in text and "90.12" in text and "40.00 ± 2.50" in text and "77.25 ± 1.25" in text
    assert "+37.25" in text and "0.005" in text
    assert len(lines) == 2 + len(_rows())
    assert len({len(l.rstrip()) for l in lines[2:-1]}) == 1  # fixed width


def test_passwords_inside_uris_never_reach_params_or_printed_commands() -> None:
    from orchestration.tracking.server import ui_command
    from orchestration.tracking.tracker import redact_uri, safe_params

    uri = "postgresql://nf:canary-pw-123@db.internal:5432/mlflow"
    assert redact_uri(uri) == "postgresql://nf:***@db.internal:5432/mlflow"
    assert redact_uri("sqlite:////tmp/a:b/mlflow.db") == "sqlite:////tmp/a:b/mlflow.db"  # no user:pw@, unchanged
    params = safe_params({"mlflow": {"tracking_uri": uri}, "note": f"see {uri} and http://u:p2@h/x"})
    assert "canary-pw-123" not in str(params) and ":p2@" not in str(params)
    assert params["mlflow.tracking_uri"] == "postgresql://nf:***@db.internal:5432/mlflow"
    assert "canary-pw-123" not in ui_command(uri) and "canary-pw-123" not in ui_command("https://u:canary-pw-123@h")
