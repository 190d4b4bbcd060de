import os

import pytest
import torch

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
