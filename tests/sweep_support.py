"""Shared pieces of the sweep tests: a tiny sweep, process-tree cleanup, an S3 server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

TINY: dict[str, Any] = {
    "name": "tiny",
    "datasets": [{"name": "digits", "train_subset": 256, "test_subset": 90}],
    "models": ["resnet18", "vgg11"],
    "width": 0.125,
    "generators": ["ConvS", "UNetS"],
    "train_bers": [0.03, 0.05],
    "ns": [2],
    "base": {"epochs": 6, "batch_size": 32, "optimizer": "adam", "lr": 0.01},  # ~60% CA: numbers that mean something
    "generator": {"epochs": 3, "batch_size": 64},
    "evaluation": {"bers": [0.03, 0.05], "chips": 3},
    "transfer": True,
}
TRIALS = {"base": 2, "generator": 8, "eval": 8, "transfer": 8}


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (read from /proc; Ray's helpers are among them)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a driver and everything it started, by PID (as a preemption would)."""
    pids = [proc.pid, *descendants(proc.pid)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
    deadline = time.time() + 30
    while time.time() < deadline and any(os.path.exists(f"/proc/{p}") and _alive(p) for p in pids):
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def nf(*args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestration.cli", *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(log: str | None = None) -> tuple[subprocess.Popen, str]:
    """moto's S3-compatible server on 127.0.0.1 (``log``: a file that gets one line per request)."""
    port = free_port()
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 (the server holds it open)
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=out,
        stderr=out,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("moto server did not start")
