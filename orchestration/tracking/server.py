"""The MLflow tracking server's lifecycle (`nf ui`, tests, cluster heads) and the UI command line.

The server runs in its own process group; stopping it kills the whole group and waits,
by scanning ``/proc``, until no process of the group is left (uvicorn's worker included).
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from orchestration.errors import PortInUse, TrackingError
from orchestration.tracking.tracker import artifact_uri, redact_uri


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_port_free(port: int, host: str = "127.0.0.1") -> None:
    """Raise :class:`PortInUse` when something answers on ``host:port`` or holds it bound.

    Checked before a server starts: otherwise the health check would find the *other* server healthy
    and report it as the new one (serving another sweep's runs). Port 0 (pick one) is always free.
    """
    if port == 0:
        return
    hint = f"port {port} on {host} is already in use; pick another with --port (e.g. --port {port + 1})"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        if s.connect_ex((host, port)) == 0:
            raise PortInUse(f"{hint}: something answers there (another `nf ui` or MLflow server?)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR as the server sets it: a port with only TIME_WAIT connections is free
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise PortInUse(f"{hint}: {e.strerror or e}") from None


def _loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def check_tracking_reachable(tracking_uri: str) -> None:
    """For an MLflow server URI (http/https): raise :class:`TrackingError` unless it answers at all.

    One request with a short timeout, before Ray starts, instead of MLflow's minutes of retries;
    database URIs (sqlite:///…) are left to MLflow.
    """
    if not tracking_uri.startswith(("http://", "https://")):
        return
    # A loopback server never through HTTP(S)_PROXY; a remote one as MLflow itself would reach it.
    opener = urllib.request.build_opener(*([urllib.request.ProxyHandler({})] if _loopback(tracking_uri) else []))
    try:
        with opener.open(f"{tracking_uri.rstrip('/')}/health", timeout=10):
            return
    except urllib.error.HTTPError:
        return  # it answers (an auth proxy may refuse /health): reachable, MLflow reports the rest
    except (urllib.error.URLError, OSError):
        raise TrackingError(
            f"MLflow tracking server {tracking_uri} does not answer (GET /health); start it, or fix mlflow.tracking_uri"
        ) from None


def server_log_tail(proc: subprocess.Popen, lines: int = 1) -> str:
    """The last non-empty line(s) of a server's output (why it stopped), or ''."""
    log_path = getattr(proc, "nf_log_path", None)
    try:
        text = Path(log_path).read_text(errors="replace") if log_path else ""
    except OSError:
        return ""
    return " | ".join([ln.strip() for ln in text.splitlines() if ln.strip()][-lines:])


def _healthy(url: str) -> bool:
    # No proxies: a loopback health check must never go through HTTP(S)_PROXY.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_mlflow_server(
    backend_uri: str, artifact_root: str, port: int = 0, host: str = "127.0.0.1", timeout: float = 60.0
) -> tuple[subprocess.Popen, str]:
    """Start ``mlflow server`` (1 worker, no job runner: ~0.6 GiB instead of ~3.5) and wait for /health.

    Artifacts of runs created through the server are proxied to ``artifact_root``; the
    sweep's own experiment keeps the explicit location the driver gave it. Returns the
    process (its own process group; stop with ``stop_mlflow_server``) and the base URL.
    The server's output goes to ``proc.nf_log_path``.
    """
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    attempts = 3 if port == 0 else 1  # a picked free port can be taken before the server binds it
    for attempt in range(attempts):
        p = port or _free_port(host)
        url = f"http://{host}:{p}"
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            host,
            "--port",
            str(p),
            "--workers",
            "1",
            "--backend-store-uri",
            backend_uri,
            "--serve-artifacts",
            "--artifacts-destination",
            artifact_uri(artifact_root),
        ]
        logf = tempfile.NamedTemporaryFile(prefix="mlflow-server-", suffix=".log", delete=False)
        proc = subprocess.Popen(
            cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
        logf.close()
        proc.nf_log_path = logf.name  # type: ignore[attr-defined]
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                if _healthy(url):
                    return proc, url
                time.sleep(0.25)
        except BaseException:  # Ctrl-C / SIGTERM while waiting: leave no server behind
            stop_mlflow_server(proc)
            raise
        tail = Path(logf.name).read_text(errors="replace")[-2000:]
        exited = proc.poll() is not None
        stop_mlflow_server(proc)
        last = " | ".join([ln.strip() for ln in tail.splitlines() if ln.strip()][-3:])  # the cause, one line
        if not exited:
            raise TrackingError(f"mlflow server at {url} not healthy after {timeout:.0f} s: {last}")
        if attempt == attempts - 1 or "address already in use" not in tail.lower():
            raise TrackingError(f"mlflow server at {url} exited with code {proc.returncode}: {last}")
    raise AssertionError("unreachable")


def stop_mlflow_server(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate the server's whole process group (uvicorn worker included) and reap it."""
    pgid = proc.pid  # start_new_session=True: the server leads its own group
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        if _wait_gone(proc, pgid, timeout):
            break
    log_path = getattr(proc, "nf_log_path", None)
    if log_path:
        Path(log_path).unlink(missing_ok=True)


def _wait_gone(proc: subprocess.Popen, pgid: int, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None and not _group_alive(pgid):
            return True
        time.sleep(0.1)
    return False


def _group_alive(pgid: int) -> bool:
    """True while a non-zombie process of group ``pgid`` exists (Linux /proc)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state ppid pgrp ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def ui_command(tracking_uri: str, port: int = 5000) -> str:
    """The shell line that opens the MLflow UI on a sweep's tracking store (light settings)."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {redact_uri(tracking_uri)}"  # a server is already the UI
    store = shlex.quote(redact_uri(tracking_uri))
    return f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri {store} --port {port} --workers 1"
