"""How `nf` fails: one `nf: error: …` line naming the file, object or field, the documented exit codes,
`--debug` tracebacks, MLflow runs never left RUNNING, and `nf --version` / `nf list`.

Real parts: the CLI in a fresh interpreter, MLflow on a SQLite file, moto's S3 server on loopback, and
Ray (local instance) for the sweeps that fail or are interrupted.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from orchestration import errors
from orchestration.cli import build_parser
from tests.sweep_support import alive, descendants, free_port, kill_tree

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "ray", "mlflow", "pandas", "pyarrow", "matplotlib", "sklearn")
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
# The smallest sweep that still has every stage (base → generator → eval); no transfer stage.
SMALL = {
    "name": "small",
    "datasets": [{"name": "digits", "train_subset": 128, "test_subset": 60}],
    "models": ["resnet18"],
    "width": 0.125,
    "generators": ["ConvS"],
    "train_bers": [0.05],
    "ns": [2],
    "base": {"epochs": 2, "batch_size": 32},
    "generator": {"epochs": 1, "batch_size": 64},
    "evaluation": {"bers": [0.05], "chips": 2},
    "transfer": False,
    "resources": {"max_failures": 0},
    "mlflow": {"register_generators": False},  # registration: test_model_registry, test_protection_sweep
}


def run_nf(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`nf ARGS` in a fresh interpreter; stdout and stderr apart."""
    return subprocess.run(
        [sys.executable, "-m", "orchestration.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


def one_error_line(proc: subprocess.CompletedProcess | tuple[str, int], ray_log: bool = False) -> str:
    """The single `nf: error: …` line, last on stderr; fails on a traceback or a second error line.

    ``ray_log``: the command ran Ray Tune, whose own log (above nf's line) reports a failed trial with
    the trial's traceback; nf's error must still be one line and the last one.
    """
    err = proc.stderr if isinstance(proc, subprocess.CompletedProcess) else proc[0]
    if not ray_log:
        assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("nf: error: ")]
    assert len(lines) == 1, err[-3000:]
    assert err.rstrip().splitlines()[-1] == lines[0], err[-3000:]
    return lines[0]


def write_sweep_yaml(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# ------------------------------------------------------------------ --version and nf list
def _heavy_after(*argv: str) -> tuple[str, list[str]]:
    code = (
        "import json, sys\nfrom orchestration.cli import main\ntry:\n    main(sys.argv[1:])\n"
        "except SystemExit:\n    pass\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)), file=sys.stderr)"
    )
    p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT, timeout=120)
    return p.stdout, json.loads(p.stderr.strip().splitlines()[-1])


def test_version_prints_the_package_version_without_heavy_imports() -> None:
    out, heavy = _heavy_after("--version")
    assert out.strip() == f"nf (neuralfuse-sweeps) {importlib.metadata.version('neuralfuse-sweeps')}"
    assert heavy == []


@pytest.mark.parametrize("kind", ["models", "generators", "datasets"])
def test_list_shows_exactly_the_registered_names_with_descriptions(kind: str) -> None:
    from nf_core import catalog
    from nf_core.data import DATASETS
    from nf_core.generators import GENERATORS
    from nf_core.models import MODELS

    registry = {"models": MODELS, "generators": GENERATORS, "datasets": DATASETS}[kind]
    catalog.catalog()  # the registries read once (here) and cached for this source
    out, heavy = _heavy_after("list", kind)
    assert heavy == []  # the names come from the cache of the registries, without torch
    lines = out.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == registry.names()
    for ln in lines:  # a name, then a description of a few words
        assert len(ln.split()) >= 4, ln


def test_list_refuses_an_unknown_kind_naming_the_choices() -> None:
    p = run_nf("list", "optimizers")
    assert p.returncode == 2
    assert "invalid choice: 'optimizers'" in p.stderr and "models" in p.stderr and "datasets" in p.stderr


# ------------------------------------------------------------------ exit codes and the one line
def test_help_documents_every_exit_code() -> None:
    text = build_parser().format_help()
    for code in ("0", "1", "2", "3", "4", "130", "143"):
        assert f"\n  {code} " in text or f"; {code} " in text, code
    assert "--debug" in text and "--version" in text
    doc = (ROOT / "docs" / "cli.md").read_text()
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 3 |", "| 4 |", "| 130 |", "| 143 |", "| 129 |"):
        assert code in doc, code


def test_bad_field_is_one_line_naming_it_exit_2_and_debug_adds_the_traceback(tmp_path) -> None:
    path = write_sweep_yaml(tmp_path, {**SMALL, "storage": str(tmp_path / "s"), "base": {"lr": "fast"}})
    p = run_nf("sweep", "plan", str(path), "--no-data-check")
    assert p.returncode == 2
    line = one_error_line(p)
    assert "base.lr" in line and "fast" in line
    debug = run_nf("--debug", "sweep", "plan", str(path), "--no-data-check")
    assert debug.returncode == 2
    assert "Traceback (most recent call last)" in debug.stderr and debug.stderr.rstrip().endswith(line)


def test_missing_config_file_and_bad_usage_exit_2(tmp_path) -> None:
    p = run_nf("sweep", "run", str(tmp_path / "nope.yaml"))
    assert p.returncode == 2 and "nope.yaml" in one_error_line(p)
    usage = run_nf("sweep", "fly")
    assert usage.returncode == 2 and "invalid choice: 'fly'" in usage.stderr


def test_unwritable_storage_is_one_line_before_ray_starts(tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    path = write_sweep_yaml(tmp_path, {**SMALL, "storage": str(blocker / "sweeps")})
    p = run_nf("sweep", "run", str(path), env={"RAY_TMPDIR": str(tmp_path / "ray")})
    assert p.returncode == errors.EXIT_STORAGE
    line = one_error_line(p)
    assert f"storage {blocker}/sweeps/small is not writable" in line and "Not a directory" in line
    assert not (tmp_path / "ray").exists()  # Ray never started
    assert "MLflow:" not in p.stdout and "stage base" not in p.stdout


def test_unreachable_s3_is_one_line_naming_the_object(tmp_path) -> None:
    port = free_port()  # nothing listens there
    p = run_nf("sweep", "status", "gone", "--storage", "s3://bucket/root", "--s3-endpoint", f"http://127.0.0.1:{port}")
    assert p.returncode == errors.EXIT_STORAGE
    line = one_error_line(p)
    assert "S3 storage unreachable" in line and "s3://bucket/root/gone/sweep.yaml" in line and str(port) in line

    # `nf sweep run` probes the storage with one write before Ray starts
    raw = {**SMALL, "storage": "s3://bucket/root", "s3_endpoint": f"http://127.0.0.1:{port}"}
    run = run_nf("sweep", "run", str(write_sweep_yaml(tmp_path, raw)), env=S3_ENV)
    assert run.returncode == errors.EXIT_STORAGE
    line = one_error_line(run)
    assert line.startswith("nf: error: storage s3://bucket/root/small cannot be written: S3 storage unreachable")
    assert "stage base" not in run.stdout


def test_unreachable_tracking_server_is_one_line_before_ray(tmp_path) -> None:
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    raw = {**SMALL, "storage": str(tmp_path / "sweeps"), "mlflow": {"tracking_uri": uri}}
    p = run_nf("sweep", "run", str(write_sweep_yaml(tmp_path, raw)), env={"RAY_TMPDIR": str(tmp_path / "ray")})
    assert p.returncode == errors.EXIT_STORAGE
    assert one_error_line(p) == (
        f"nf: error: MLflow tracking server {uri} does not answer (GET /health); start it, or fix mlflow.tracking_uri"
    )
    assert not (tmp_path / "ray").exists()


@pytest.fixture(scope="module")
def moto_s3(s3_server):
    url = s3_server  # the session's moto server (tests/conftest.py); this module's bucket
    with pytest.MonkeyPatch.context() as mp:  # module-scoped: restored when the module's tests end
        for k, v in S3_ENV.items():
            mp.setenv(k, v)
        import boto3

        boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket="nf-errors")
        yield url


def test_lost_s3_objects_are_named(moto_s3) -> None:
    from orchestration.spec.config import parse_config
    from orchestration.store.roots import CONFIG_FILE, sweep_store

    cfg = parse_config({**SMALL, "name": "lost", "storage": "s3://nf-errors/root", "s3_endpoint": moto_s3})
    store = sweep_store(cfg)
    store.write_bytes(CONFIG_FILE, yaml.safe_dump(cfg.to_dict()).encode())
    store.write_json("items/base/x/status.json", {"state": "running"})
    ok = run_nf("sweep", "status", "lost", "--storage", "s3://nf-errors/root", "--s3-endpoint", moto_s3, env=S3_ENV)
    assert ok.returncode == 0, ok.stderr

    store.fs.delete_file(store.path(CONFIG_FILE))  # the config object vanished, the items did not
    p = run_nf("sweep", "status", "lost", "--storage", "s3://nf-errors/root", "--s3-endpoint", moto_s3, env=S3_ENV)
    assert p.returncode == errors.EXIT_STORAGE
    line = one_error_line(p)
    assert "missing object s3://nf-errors/root/lost/sweep.yaml" in line and "items" in line
    assert "no sweep" not in line

    # An object that vanishes between listing and reading: pyarrow's error, named and classed as storage.
    with pytest.raises(FileNotFoundError) as info:
        store.read_bytes("items/base/x/done.json")
    code, text = errors.describe(info.value)
    assert code == errors.EXIT_STORAGE and "nf-errors/root/lost/items/base/x/done.json" in text


def test_describe_classes() -> None:
    assert errors.describe(errors.Interrupted(signal.SIGTERM)) == (143, "interrupted by SIGTERM")
    assert errors.describe(errors.Interrupted(signal.SIGHUP))[0] == 129
    assert errors.describe(KeyboardInterrupt())[0] == 130
    code, text = errors.describe(TypeError("unsupported operand\n  type(s)"))
    assert code == errors.EXIT_INTERNAL and "--debug" in text and "\n" not in text
    assert errors.describe(ValueError("unknown model 'x'; valid choices: a, b")) == (
        2,
        "unknown model 'x'; valid choices: a, b",
    )
    assert errors.describe(FileNotFoundError("dataset 'cifar10': under '/d' expected data_batch_1 …"))[0] == 2
    from mlflow.exceptions import MlflowException

    code, text = errors.describe(MlflowException("API request to http://127.0.0.1:1/api failed"))
    assert code == errors.EXIT_STORAGE and text.startswith("MLflow tracking: ")


def test_ray_reraising_a_signal_as_keyboard_interrupt_keeps_its_code() -> None:
    # Ray's C++ core turns any exception from a signal handler into a fresh KeyboardInterrupt.
    with pytest.raises(KeyboardInterrupt) as info:
        with errors.signals_raise():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            except errors.Interrupted:
                raise KeyboardInterrupt() from None
    assert type(info.value) is KeyboardInterrupt
    assert errors.describe(info.value) == (143, "interrupted by SIGTERM")
    with errors.signals_raise():  # a later command starts afresh
        pass
    assert errors.describe(KeyboardInterrupt()) == (130, "interrupted (Ctrl-C)")


# ------------------------------------------------------------------ MLflow runs never left RUNNING
def _tracker(tmp_path: Path):
    from orchestration.tracking.tracker import SweepTracker

    tracker = SweepTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "guard", str(tmp_path / "artifacts"))
    parent = tracker.parent_run("guard")
    child = tracker.child_run("item-1", "base")
    tracker.finish(child, "RUNNING")
    done = tracker.child_run("item-2", "base")
    tracker.finish(done, "FINISHED")
    return tracker, parent, child, done


@pytest.mark.parametrize(
    "raise_it, status",
    [
        (lambda: (_ for _ in ()).throw(RuntimeError("boom")), "FAILED"),
        (lambda: (_ for _ in ()).throw(KeyboardInterrupt()), "KILLED"),
        (lambda: os.kill(os.getpid(), signal.SIGTERM), "KILLED"),
        (lambda: os.kill(os.getpid(), signal.SIGHUP), "KILLED"),
    ],
    ids=["error", "ctrl-c", "sigterm", "sighup"],
)
def test_parent_run_guard_ends_runs(tmp_path, raise_it, status: str) -> None:
    from orchestration.tracking.tracker import parent_run_guard

    tracker, parent, child, done = _tracker(tmp_path)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)
    with pytest.raises(BaseException) as info:
        with parent_run_guard(tracker, parent):
            raise_it()
            time.sleep(5)  # a signal is delivered between bytecodes: the sleep is interrupted at once
    assert not isinstance(info.value, AssertionError)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)) == before  # handlers restored
    assert tracker.run_status(parent) == status
    assert tracker.run_status(child) == status  # the running child too
    assert tracker.run_status(done) == "FINISHED"  # a finished child keeps its status


def test_parent_run_guard_leaves_a_clean_exit_alone(tmp_path) -> None:
    from orchestration.tracking.tracker import parent_run_guard

    tracker, parent, child, _ = _tracker(tmp_path)
    with parent_run_guard(tracker, parent):
        pass
    assert tracker.run_status(parent) == "RUNNING" and tracker.run_status(child) == "RUNNING"


# ------------------------------------------------------------------ real sweeps: exit codes 1, 130, 143
def _runs(storage: Path, name: str) -> dict[str, str]:
    """run name → status of every MLflow run of a local-storage sweep."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{storage / name / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return {}
    return {r.info.run_name: r.info.status for r in client.search_runs([exp.experiment_id])}


def test_failed_trials_exit_1_and_the_parent_run_ends_failed(tmp_path) -> None:
    from orchestration.spec.config import parse_config
    from orchestration.spec.plan import plan
    from orchestration.store.item_files import item_dir
    from orchestration.store.roots import sweep_store

    storage = tmp_path / "sweeps"
    raw = {**SMALL, "storage": str(storage)}
    cfg = parse_config(raw)
    store = sweep_store(cfg)
    (base,) = plan(cfg)["base"]
    # The base model counts as trained, but its checkpoint is garbage: the generator trial fails.
    store.write_bytes(f"{item_dir('base', base.id)}/checkpoint.pt", b"not a checkpoint")
    store.write_json(f"{item_dir('base', base.id)}/done.json", {"item": base.to_dict(), "final": {}})
    p = run_nf("sweep", "run", str(write_sweep_yaml(tmp_path, raw)), timeout=600)
    assert p.returncode == errors.EXIT_FAILED_TRIALS, p.stderr[-3000:]
    line = one_error_line(p, ray_log=True)
    assert "1 trial(s) failed: digits." in line and "nf sweep resume small" in line
    runs = _runs(storage, "small")
    assert runs["small"] == "FAILED"
    assert "RUNNING" not in runs.values(), runs


def _peek_runs(storage: Path, name: str) -> dict[str, str]:
    """run name → status, read-only straight from the SQLite file: an MlflowClient here would run the
    schema migrations itself while the driver is still creating the database (a race, not a test)."""
    import sqlite3

    db = storage / name / "mlflow.db"
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return dict(con.execute("SELECT name, status FROM runs").fetchall())
    except sqlite3.Error:  # the database is being created
        return {}


def _wait_running_child(proc: subprocess.Popen, storage: Path, name: str, timeout: float = 400) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        runs = _peek_runs(storage, name)
        if any(s == "RUNNING" for n, s in runs.items() if n != name):
            return
        time.sleep(0.5)
    raise AssertionError(f"no trial started within {timeout} s")


def _stop(proc: subprocess.Popen, signum: int) -> tuple[str, int, list[int]]:
    tree = descendants(proc.pid)
    os.kill(proc.pid, signum)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        raise
    return err, proc.returncode, tree


def test_ctrl_c_and_sigterm_end_the_sweep_killed_never_running(tmp_path) -> None:
    storage = tmp_path / "sweeps"
    raw = {**SMALL, "storage": str(storage), "base": {"epochs": 500, "batch_size": 32}}  # never ends by itself
    path = write_sweep_yaml(tmp_path, raw)
    popen = dict(cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    for argv, signum in (
        (["sweep", "run", str(path)], signal.SIGINT),
        (["sweep", "resume", "small", "--storage", str(storage)], signal.SIGTERM),
    ):
        proc = subprocess.Popen([sys.executable, "-m", "orchestration.cli", *argv], **popen)
        try:
            _wait_running_child(proc, storage, "small")
            err, code, tree = _stop(proc, signum)
        finally:
            if proc.poll() is None:
                kill_tree(proc)
        assert code == 128 + signum, err[-3000:]
        expected = "interrupted (Ctrl-C)" if signum == signal.SIGINT else "interrupted by SIGTERM"
        assert one_error_line((err, code), ray_log=True) == f"nf: error: {expected}"
        runs = _runs(storage, "small")
        assert runs["small"] == "KILLED", runs
        assert "RUNNING" not in runs.values(), runs
        end = time.monotonic() + 60  # Ray's local processes go with the driver
        while time.monotonic() < end and any(alive(p) for p in tree):
            time.sleep(0.5)
        assert not [p for p in tree if alive(p)]
