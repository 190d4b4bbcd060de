"""The cluster files' path end to end on one machine: a token-auth Ray head and a second node, a
sweep submitted as a Ray job (slow: a minute or more on 2 cores)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestration.spec.config import parse_config
from orchestration.spec.plan import plan
from tests.cluster_support import ROOT


# ------------------------------------------------------------------ two Ray nodes, one machine
def _free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (all sockets held open until every port is picked)."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _get(url: str, token: str) -> bytes:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with opener.open(req, timeout=10) as r:
        return r.read()


def _get_json(url: str, token: str) -> Any:
    return json.loads(_get(url, token))


def _marked_pids(marker: str) -> list[int]:
    """PIDs of live processes whose environment holds ``marker`` (NAME=value): everything the test's
    `ray start` processes started, orphans re-parented away from their tree included."""
    needle = marker.encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        pids.append(int(entry))
            except OSError:  # gone, or a zombie
                continue
    return pids


def _stop_nodes(procs: list[Any], marker: str) -> None:
    """SIGTERM each `ray start --block` (it stops its node), then SIGKILL, by PID, whatever
    the nodes started and left behind."""
    import signal
    import subprocess
    import time

    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    while _marked_pids(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in _marked_pids(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for proc in procs:
        proc.wait(timeout=30)


def test_multinode_sweep_through_ray_job_submit(tmp_path: Path) -> None:
    """The cluster files' path end to end on 127.0.0.1: a token-auth head and a second node
    (separate `ray start` processes, 1 CPU each), a cut of sweeps/smoke.yaml submitted as a
    Ray job, its trials on both nodes, every MLflow run on the (loopback) tracking server
    finished, and no process of the two nodes left behind."""
    import secrets
    import shutil
    import subprocess
    import sys
    import tempfile
    import time
    import uuid

    from mlflow.tracking import MlflowClient

    from orchestration.tracking.server import start_mlflow_server, stop_mlflow_server

    bin_dir = Path(sys.executable).parent
    token = secrets.token_hex(16)
    tag = uuid.uuid4().hex  # in the environment of every process the nodes start
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,  # as the cluster files set them
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_USAGE_STATS_ENABLED": "0",
        "NF_TEST_RAY_NODES": tag,
    }
    marker = f"NF_TEST_RAY_NODES={tag}"
    # A temp dir per node, as separate machines have: nodes sharing one would share the job's
    # unpacked working dir, and the worker's runtime-env agent deletes it under the driver's feet.
    # Short paths: Ray's socket paths must fit 107 bytes.
    temps = [tempfile.mkdtemp(prefix="nfr", dir="/tmp") for _ in range(2)]
    # Every port explicit and free: Ray's fixed defaults (dashboard agent 52365, client server
    # 10001, ...) clash between the two nodes, and with any other Ray on this machine.
    gcs, dash, client_port, *node_ports = _free_ports(11)

    def node_args(i: int) -> list[str]:
        agent, agent_grpc, runtime_env, metrics = node_ports[4 * i : 4 * i + 4]
        return [
            "--block",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=1",
            "--num-gpus=0",
            "--disable-usage-stats",
            f"--temp-dir={temps[i]}",
            f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={runtime_env}",
            f"--metrics-export-port={metrics}",
        ]

    ray = str(bin_dir / "ray")
    procs: list[subprocess.Popen] = []
    server = None
    api = f"http://127.0.0.1:{dash}"
    try:
        procs.append(
            subprocess.Popen(
                [
                    ray,
                    "start",
                    "--head",
                    f"--port={gcs}",
                    f"--dashboard-port={dash}",
                    "--dashboard-host=127.0.0.1",
                    "--include-dashboard=true",
                    f"--ray-client-server-port={client_port}",
                    *node_args(0),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        server, url = start_mlflow_server(f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "artifacts"))
        deadline = time.monotonic() + 120

        def wait_for(what: str, ready: Any) -> None:
            while True:
                try:
                    if ready():
                        return
                except OSError:
                    pass
                assert time.monotonic() < deadline and all(p.poll() is None for p in procs), f"{what}: timed out"
                time.sleep(0.5)

        # The job API answers, and the head's dashboard agent, which runs submitted jobs, is up.
        wait_for(
            "the head",
            lambda: (
                _get_json(f"{api}/api/version", token)
                and _get(f"http://127.0.0.1:{node_ports[0]}/api/healthz", token) is not None
            ),
        )
        procs.append(
            subprocess.Popen(
                [ray, "start", f"--address=127.0.0.1:{gcs}", *node_args(1)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_for(
            "the second node",
            lambda: (
                len(
                    [
                        n
                        for n in _get_json(f"{api}/api/v0/nodes", token)["data"]["result"]["result"]
                        if n["state"] == "ALIVE"
                    ]
                )
                == 2
            ),
        )
        with pytest.raises(OSError):  # token auth is on: the job API refuses callers without it
            _get_json(f"{api}/api/version", "wrong-token")

        sweep = yaml.safe_load((ROOT / "sweeps" / "smoke.yaml").read_text())
        sweep.update(name="smoke_multinode", storage=str(tmp_path / "storage"), mlflow={"tracking_uri": url})
        # Shorter than the smoke sweep: one base epoch, and no transfer stage (the eval stage
        # runs the same trainable). Two trials per stage (one per model), one CPU each.
        sweep["base"]["epochs"] = 1
        sweep["transfer"] = False
        job_dir = tmp_path / "job"
        job_dir.mkdir()
        (job_dir / "smoke.yaml").write_text(yaml.safe_dump(sweep))
        submit = subprocess.run(
            [
                ray,
                "job",
                "submit",
                "--address",
                api,
                "--working-dir",
                str(job_dir),
                "--",
                "nf",
                "sweep",
                "run",
                "smoke.yaml",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert submit.returncode == 0 and "succeeded" in submit.stdout, submit.stdout[-4000:] + submit.stderr[-2000:]

        # Trials ran as Tune actors; their records say on which node.
        actors = _get_json(f"{api}/api/v0/actors?detail=1&limit=10000", token)["data"]["result"]["result"]
        trial_nodes = {a["node_id"] for a in actors if "ImplicitFunc" in (a.get("class_name") or "")}
        assert len(trial_nodes) == 2, [(a["class_name"], a["node_id"]) for a in actors]

        client = MlflowClient(url)
        exp = client.get_experiment_by_name("smoke_multinode")
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        trials = sum(len(v) for v in plan(parse_config(sweep)).values())
        assert trials == 6 and len(runs) == trials + 1  # one child run per trial, plus the parent
        assert {r.info.status for r in runs} == {"FINISHED"}
    finally:
        if server is not None:
            stop_mlflow_server(server)
            Path(server.nf_log_path).unlink(missing_ok=True)
        _stop_nodes(procs, marker)
        for temp in temps:
            shutil.rmtree(temp, ignore_errors=True)
    assert _marked_pids(marker) == []  # every process the two nodes started is gone
