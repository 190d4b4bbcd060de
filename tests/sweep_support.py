"""Shared pieces of the sweep tests: tiny sweeps, measured fault maps, process-tree cleanup, an S3 server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

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
    # Registering generators (a torch.export per generator, ~1 s each) is checked where it is the point:
    # test_model_registry, test_protection_sweep and the README's own sweep (test_readme).
    "mlflow": {"register_generators": False},
}
TRIALS = {"base": 2, "generator": 8, "eval": 8, "transfer": 8}

# A BER-conditioned generator beside a plain one, measured fault maps and the speed options: the schema
# tests (test_config_options.py) and the in-process trainables (test_trainables.py).
TINY_RANGES: dict[str, Any] = {
    "name": "wiring",
    "device": "cpu",
    "datasets": [{"name": "digits", "train_subset": 192, "test_subset": 90}],
    "models": ["resnet18", "vgg11"],
    "sources": ["resnet18"],
    "width": 0.125,
    "generators": ["ConvS", "ConvS_BER"],
    "train_bers": [0.03, {"range": [0.02, 0.05], "log": True}],
    "ns": [2],
    "base": {"epochs": 4, "batch_size": 16, "optimizer": "adam", "lr": 0.005},  # resnet18: ~70% CA
    "generator": {"epochs": 1, "batch_size": 64},
    "evaluation": {"bers": [0.02, 0.05], "chips": 2},
    "transfer": True,
    "mlflow": {"register_generators": False},  # as TINY
}


def write_fault_maps(folder: Path) -> list[str]:
    """Two measured chips: a_faulty (one in five cells stuck) and b_clean (no faulty cell)."""
    from nf_core.fault_maps import save_fault_map

    folder.mkdir(parents=True, exist_ok=True)
    rows, cols = 64, 128
    rng = np.random.default_rng(0)
    cells = rng.choice(rows * cols, size=rows * cols // 5, replace=False)
    faults = np.stack([cells // cols, cells % cols, rng.integers(0, 2, cells.size)], axis=1)
    save_fault_map(folder / "a_faulty.npz", faults, rows, cols)
    save_fault_map(folder / "b_clean.parquet", np.zeros((0, 3), np.int64), rows, cols)
    return ["a_faulty.npz", "b_clean.parquet"]


def measured_config(tmp_path: Path, maps: Path, **evaluation: Any) -> dict[str, Any]:
    return {
        **TINY_RANGES,
        "evaluation": {**TINY_RANGES["evaluation"], "fault_model": "measured", "fault_maps": str(maps), **evaluation},
    }


def store_trained_generator(store: Any, cfg: Any, item: Any, seed: int = 0) -> Any:
    """A ConvS generator (one training-mode pass, so its BatchNorm statistics are not the initial ones),
    saved as ``item``'s checkpoint the way the generator trainable saves it; returns the generator."""
    import torch

    from nf_core.generators import create_generator
    from orchestration.store.item_files import config_hash, identity, item_dir, save_checkpoint

    torch.manual_seed(seed)
    g = create_generator("ConvS", 32, 8)
    g.train()
    with torch.no_grad():
        g(torch.rand(8, 3, 32, 32) * 2 - 1)
    spec = {"generator": "ConvS", "input_size": 32, "dataset": "digits", "source": ["resnet18"]}
    ck = {"kind": "generator", "model": g.state_dict(), "config": {"generator_bits": 8}, "spec": spec, "epoch": 1}
    save_checkpoint(store, item_dir("generator", item.id), ck, identity(item, config_hash(cfg, item)))
    return g


def ensure_ray() -> Any:
    """The session's local Ray instance (2 CPUs, as the CI box), started on first use.

    Starting Ray costs seconds, so the tests that run Tune or actors in this process share one
    instance (`run_sweep` uses a running instance as it is). A test that needs Ray of its own
    (other CPUs, a killed node) calls ``ray.shutdown()`` first; the next user starts it again.
    """
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            object_store_memory=200 * 2**20,
        )
    return ray


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
    while time.time() < deadline and any(os.path.exists(f"/proc/{p}") and alive(p) for p in pids):
        time.sleep(0.2)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
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


def _files_under(path: str | os.PathLike[str]) -> list[str]:
    """Regular files at or below ``path`` (sockets, FIFOs and links left out)."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return [path]
    out = []
    for root, _, names in os.walk(path):
        out += [p for n in names if os.path.isfile(p := os.path.join(root, n)) and not os.path.islink(p)]
    return out


def assert_secret_nowhere(
    secret: str | list[str],
    *,
    ray_tmp: str | os.PathLike[str],
    s3_client: Any,
    bucket: str,
    mlflow_paths: list[str | os.PathLike[str]],
    output: str,
) -> dict[str, int]:
    """Fail if any of the ``secret`` strings appears, as raw bytes, in any file under Ray's temp dir
    (its logs, session files, spilled objects), any object of ``bucket``, any file of ``mlflow_paths``
    (SQLite files with their -wal/-journal, artifact folders) or the captured ``output``.

    Returns how many files and objects were read, so a test can also check that it grepped something.
    """
    needles = [s.encode() for s in ([secret] if isinstance(secret, str) else secret)]
    hits: list[str] = []
    counts = {"ray_files": 0, "objects": 0, "mlflow_files": 0}

    def grep(where: str, data: bytes) -> None:  # names the secret by its position, never prints it
        hits.extend(f"{where}: secret #{i} ({data.count(n)}x)" for i, n in enumerate(needles) if n in data)

    for kind, roots in (("ray_files", [ray_tmp]), ("mlflow_files", mlflow_paths)):
        for root in roots:
            for path in _files_under(root):
                try:
                    with open(path, "rb") as f:
                        data = f.read()
                except FileNotFoundError:  # a Ray file removed while we walked
                    continue
                counts[kind] += 1
                grep(path, data)
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            counts["objects"] += 1
            grep(f"s3://{bucket}/{obj['Key']}", s3_client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
    grep("captured output", output.encode())
    assert not hits, "secret found in:\n  " + "\n  ".join(hits)
    assert counts["ray_files"] and counts["objects"], f"nothing to grep: {counts}"
    return counts
