"""Fixtures and settings every test shares; the test files, by concern:

* the paper's steps (nf_core): test_chips, test_quant, test_eopm, test_ber_conditioned, test_adversarial,
  test_awp, test_protect, test_train, test_evaluate, test_fault_maps, test_speed_paths, test_end_to_end,
  test_registries, test_preact, test_vit, test_data, test_cost, test_latency, test_select, test_paper,
  test_embeddings, test_export;
* the paper's sweeps end to end: test_adversarial_sweep, test_protection_sweep;
* the config schema and the plan: test_config_schema, test_sweep_config, test_config_options,
  test_trial_spec, test_sweep_library;
* storage: test_storage, test_torn_files, test_credentials, test_resume;
* dataflow (running sweeps): test_trainables, test_pool, test_schedule, test_capacity, test_progress,
  test_sweep_e2e, test_multi_sweep, test_multinode, test_bench_scale;
* tracking: test_tracking, test_model_registry, test_ui;
* report: test_report, test_report_browser, test_appendix_report;
* the command line and its errors: test_cli, test_errors, test_status, test_reading_commands;
* what the repository promises: test_readme, test_readme_demo, test_import_graph, test_cluster_files,
  test_cluster_references.

Helpers live beside this file, by what they build: sweep_support.py (tiny sweep configs, measured
fault maps, the session's Ray, process trees, moto's S3 server), cli_support.py / status_support.py
(hand-made finished sweep stores), report_support.py (hand-made results tables), cluster_support.py
(cluster files), scalesim_env.py (the real SCALE-SIM).
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


# `make test` runs two pytest-xdist workers (--dist worksteal): each starts on one contiguous half of the
# tests and steals from the other's tail when its half is done. The two longest files (sweeps killed and
# resumed; every README command) open the two halves, so both start at once instead of one of them ending
# the run alone; a file's tests keep their order.
LONGEST = ("test_sweep_e2e.py", "test_readme.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    first = [i for i in items if i.path.name == LONGEST[0]]
    second = [i for i in items if i.path.name == LONGEST[1]]
    rest = [i for i in items if i.path.name not in LONGEST]
    half = len(items) // 2
    items[:] = first + rest[: half - len(first)] + second + rest[half - len(first) :]


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
