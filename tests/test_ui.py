"""`nf ui`: a real `mlflow server` on loopback, stopped with its workers by SIGTERM and SIGHUP (Ctrl-C
takes the same path), and a refused port when something already answers there."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from orchestration.spec.config import parse_config
from orchestration.store.roots import CONFIG_FILE, sweep_store
from tests.sweep_support import TINY, alive, descendants, free_port, kill_tree

ROOT = Path(__file__).resolve().parents[1]


def _sweep(tmp_path: Path) -> str:
    """A sweep's storage holding its config only (what `nf ui` needs to find the tracking store)."""
    storage = str(tmp_path / "sweeps")
    cfg = parse_config({**TINY, "storage": storage})
    sweep_store(cfg).write_bytes(CONFIG_FILE, yaml.safe_dump(cfg.to_dict()).encode())
    return storage


def _nf_ui(storage: str, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestration.cli", "ui", "tiny", "--storage", storage, "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_until(proc: subprocess.Popen, marker: str, timeout: float = 180) -> str:
    """stdout up to the line holding ``marker``; fails if the process ends or time runs out first."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    seen = ""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if sel.select(timeout=1):
            line = proc.stdout.readline()
            if not line:
                break
            seen += line
            if marker in line:
                return seen
    raise AssertionError(f"no {marker!r} from nf ui; stdout: {seen!r}; stderr: {proc.stderr.read()[-2000:]!r}")


def _answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["sigterm", "sighup"])
def test_ui_stops_its_server_and_workers_on_signals(tmp_path, signum: int) -> None:
    storage, port = _sweep(tmp_path), free_port()
    proc = _nf_ui(storage, port)
    try:
        out = _read_until(proc, "MLflow UI for sweep")
        assert f"http://127.0.0.1:{port}" in out
        tree = descendants(proc.pid)
        cmdlines = [Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ") for p in tree if alive(p)]
        assert any(b"mlflow" in c and b"server" in c for c in cmdlines), cmdlines
        assert len(tree) >= 2, cmdlines  # the server and at least its uvicorn worker
        assert _answers(port)
        os.kill(proc.pid, signum)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    assert proc.returncode == 0, proc.stderr.read()[-2000:]
    left = [p for p in tree if alive(p)]  # stop_mlflow_server waited for the whole group already
    assert left == [], [Path(f"/proc/{p}/cmdline").read_bytes() for p in left]
    assert not _answers(port)


def test_ui_refuses_a_port_that_already_answers(tmp_path) -> None:
    storage = _sweep(tmp_path)
    with socket.socket() as other:  # another server: bound and listening (it answers connects)
        other.bind(("127.0.0.1", 0))
        other.listen(8)
        port = other.getsockname()[1]
        t0 = time.monotonic()
        proc = _nf_ui(storage, port)
        try:
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                kill_tree(proc)
        assert proc.returncode == 2, err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("nf: error: "), err
        assert f"port {port}" in lines[0] and "--port" in lines[0] and "already in use" in lines[0]
        assert "MLflow UI" not in out  # no success line for someone else's server
        assert time.monotonic() - t0 < 60  # refused before any server start


def test_ui_refuses_a_bound_port_that_does_not_listen(tmp_path) -> None:
    storage = _sweep(tmp_path)
    with socket.socket() as other:  # bound, not listening: a connect is refused, but the server could not bind
        other.bind(("127.0.0.1", 0))
        port = other.getsockname()[1]
        proc = _nf_ui(storage, port)
        try:
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                kill_tree(proc)
    assert proc.returncode == 2 and f"port {port}" in err and "--port" in err, err
