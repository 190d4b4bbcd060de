"""Fixtures and settings every test shares.

Helpers live beside this file, by what they build: sweep_support.py (tiny sweep configs, measured
fault maps, process trees, moto's S3 server), cli_support.py / status_support.py (hand-made finished
sweep stores), report_support.py (hand-made results tables), cluster_support.py (cluster files),
scalesim_env.py (the real SCALE-SIM).
"""

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from tests.sweep_support import ensure_ray, start_moto

# Two cores in CI: keep torch from oversubscribing them, and make runs repeatable.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# Tests reach nothing beyond loopback: no usage statistics or telemetry from Ray and MLflow
# (subprocesses inherit these).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
# A resumed trial waits until the previous attempt's lease is quiet this long (production: 15 s);
# short here so that tests which kill drivers or workers do not wait.
os.environ.setdefault("NF_LEASE_SECONDS", "2")


# ---------------------------------------------------------------- one local Ray for the session
@pytest.fixture
def ray_local() -> Any:
    """The session's local Ray instance (tests/sweep_support.py: `ensure_ray`)."""
    return ensure_ray()


@pytest.fixture(scope="session", autouse=True)
def _ray_down_at_the_end() -> Iterator[None]:
    yield
    ray = sys.modules.get("ray")  # imported only if some test used it
    if ray is not None and ray.is_initialized():
        ray.shutdown()


# ---------------------------------------------------------------- one S3 server for the session
@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 server on loopback for the whole session (its URL); each test keeps to buckets of its own.
    Tests that count the server's requests or kill it start their own (`sweep_support.start_moto`)."""
    proc, url = start_moto()
    yield url
    proc.terminate()
    proc.wait(timeout=30)
