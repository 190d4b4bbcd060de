"""The README, run as written: every `nf …` command of its bash blocks, from a folder that is not the
checkout, against a small sweep run once (by the README's own `nf sweep run my_sweep.yaml`).

How a README line becomes a test command (`readme_commands`, `as_run`):
* every line of a ```bash block whose command starts with `nf ` (a `\\` continues it on the next line;
  `# …` is a comment); `make demo` / `make test` lines are the Makefile's headline targets (below);
* `[…]` is an optional flag: dropped (the user's first try is without them);
* placeholders: NAME (and the demo's name `demo`) → the small sweep, which is named `demo`;
  `my_sweep.yaml` / `fixed.yaml` → its config; `DIR` → an empty folder, or a small CIFAR-10 folder after
  `--root`; `relaxed_cifar10` with `s3://YOUR-BUCKET/…` → the small sweep copied to moto's S3 on
  loopback (AWS_ENDPOINT_URL), so that line runs as written against a bucket of that name;
* `ITEM` → the small sweep's first generator item (`nf export NAME ITEM`);
* `a|b|c` after `nf list` is three commands;
* what a test cannot wait for runs in a form that still proves the command: `nf ui` gets a free `--port`
  and is stopped once it answers; `nf single` gets `--base-epochs 1 --generator-epochs 1` and, where the line
  names no width, `--width 0.125` (the defaults train for minutes); `nf demo` itself runs in `make demo`
  (~4 min of sweep, outside the suite's budget): the test checks that `make demo` runs `nf demo` and that
  `nf demo --help` works.

Each command must exit 0 and print what its section says it prints (`SHAPES`); a README command that no
rule in `SHAPES` knows fails the test, so a new command cannot slip in untried.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.sweep_support import free_port, kill_tree, start_moto

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NAME = "demo"  # the small sweep takes the demo's name, so `nf select demo …` and NAME both reach it

SMALL = {  # small but complete: two models (so transfer rows exist), evaluated at a BER the voltage table has
    "name": NAME,
    "datasets": [{"name": "digits", "train_subset": 576, "test_subset": 60}],
    "models": ["resnet18", "vgg11"],
    "width": 0.125,
    "generators": ["ConvS"],
    "train_bers": [0.01],
    "ns": [2],
    # vgg11 reaches ~95 % CA: the README's `nf select demo --min-accuracy 90` has an answer (without one
    # it exits 2, as documented)
    "base": {"epochs": 6, "batch_size": 32, "optimizer": "adam", "lr": 0.01},
    "generator": {"epochs": 1, "batch_size": 64},
    "evaluation": {"bers": [0.01], "chips": 2},
    "transfer": True,
    "resources": {"cpus": 1},
}

TABLE_HEADER = re.compile(r"^source\s+generator\s+.*\bCA\b.*\bPA\b.*\bRP\b", re.M)
STAGES = re.compile(r"\bbase\b[\s\S]*\bgenerator\b[\s\S]*\beval\b[\s\S]*\btransfer\b")

# (command prefix, what its output must hold): the first matching prefix applies.
SHAPES: list[tuple[str, list[re.Pattern[str]]]] = [
    # the paper-coverage section's lines (before the general prefixes they share)
    ("nf sweep plan sweeps/*.yaml", [re.compile(r"reproduces: Table 25"), re.compile(r"sweeps, [\d,]+ trials in all")]),
    (
        "nf report demo --embeddings",
        [re.compile(r"index\.html"), re.compile(r"^embeddings: figures/embeddings_tsne\.png", re.M)],
    ),
    (
        "nf profile --model resnet18 --generator ConvL --dataset digits",
        [re.compile(r"latency at batch size 1"), re.compile(r"added ms")],
    ),
    ("nf sweep plan", [re.compile(r"^\s*stage\s+trials", re.M), re.compile(r"^\s*total\s+\d+", re.M)]),
    ("nf sweep run", [TABLE_HEADER, re.compile(r"^results: ", re.M), re.compile(r"^browse: ", re.M)]),
    ("nf sweep resume", [TABLE_HEADER, re.compile(r"^results: ", re.M)]),
    (
        "nf sweep status",
        [re.compile(r"^\s*stage\s+done\s+running\s+pending\s+failed", re.M), STAGES, re.compile(r"digits\.")],
    ),
    ("nf sweep list", [re.compile(rf"^\s*{NAME}\s+\d+/\d+", re.M)]),
    ("nf report", [re.compile(r"index\.html")]),
    ("nf select", [re.compile(r"resnet18"), re.compile(r"vgg11"), re.compile(r"figure: ")]),
    ("nf single", [re.compile(r"^\s*CA\s+PA\s+CA \(NF\)\s+PA \(NF\)\s+RP", re.M)]),
    ("nf profile", [re.compile(r'"twma"|TWMA')]),
    ("nf list models", [re.compile(r"^resnet18\s", re.M), re.compile(r"^vgg11\s", re.M)]),
    ("nf list generators", [re.compile(r"^ConvS\s", re.M), re.compile(r"^UNetS\s", re.M)]),
    ("nf list datasets", [re.compile(r"^digits\s", re.M), re.compile(r"^cifar10\s", re.M)]),
    ("nf --version", [re.compile(r"^nf .*\d+\.\d+", re.M)]),
    ("nf ui", [re.compile(r"MLflow UI for sweep")]),
    ("nf export", [re.compile(r"out\.onnx: generator .* onnxruntime vs PyTorch on \d+ inputs: max abs difference")]),
]


# ---------------------------------------------------------------- reading the README
def bash_blocks(text: str) -> list[tuple[str, str]]:
    """(section heading, block text) of every ```bash block."""
    out, heading, block = [], "", None
    for line in text.splitlines():
        stripped = line.strip()
        if block is None:
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
            elif stripped.startswith("```bash"):
                block = []
        elif stripped.startswith("```"):
            out.append((heading, "\n".join(block)))
            block = None
        else:
            block.append(line)
    return out


def _uncomment(line: str) -> str:
    """The line without a trailing `# comment` (shlex knows quotes; README commands quote nothing with #)."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=False)
    lex.whitespace_split, lex.commenters = True, "#"
    return " ".join(shlex.quote(t) if re.search(r"[\s'\"]", t) else t for t in lex)


def readme_commands(text: str) -> list[tuple[str, str]]:
    """(section, command) of every `nf`/`make` command in the README's bash blocks, continuations joined."""
    out = []
    for heading, block in bash_blocks(text):
        joined = re.sub(r"\\\n\s*", " ", block)  # a trailing backslash continues the command
        for line in joined.splitlines():
            cmd = _uncomment(line).strip()
            if cmd.startswith(("nf ", "make ")):
                out.append((heading, cmd))
    return out


def as_run(cmd: str, places: dict[str, str]) -> list[str]:
    """The command(s) a README line stands for, optional flags dropped and placeholders filled."""
    cmd = re.sub(r"\s*\[[^\]]*\]", "", cmd).strip()
    m = re.fullmatch(r"nf list (\w+(?:\|\w+)+)", cmd)
    if m:
        return [f"nf list {what}" for what in m.group(1).split("|")]
    for word, value in places.items():
        cmd = re.sub(rf"(?<![\w./-]){re.escape(word)}(?![\w/-])", value, cmd)
    return [cmd]


def shape_of(cmd: str) -> list[re.Pattern[str]]:
    for prefix, patterns in SHAPES:
        if cmd == prefix or cmd.startswith(prefix + " "):
            return patterns
    raise AssertionError(f"README command {cmd!r} has no output check in tests/test_readme.py: add one to SHAPES")


# ---------------------------------------------------------------- the small sweep, once
def _env(storage: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "NF_STORAGE": storage, **extra}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the `nf` of this venv
    env.pop("RAY_ADDRESS", None)  # a local Ray, whatever the shell had
    return env


def _sh(cmd: str, cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, object]:
    """A working folder away from the checkout (with copies of its sweeps/ and clusters/, which the README's
    relative paths name) and a storage root ($NF_STORAGE) where the README's `nf sweep run` ran once."""
    base = tmp_path_factory.mktemp("readme")
    cwd, storage = base / "work", base / "sweeps"
    cwd.mkdir()
    for folder in ("sweeps", "clusters"):
        shutil.copytree(ROOT / folder, cwd / folder)
    (cwd / "my_sweep.yaml").write_text(yaml.safe_dump(SMALL))
    (cwd / "fixed.yaml").write_text(yaml.safe_dump(SMALL))  # a "corrected" config that changes no item
    (cwd / "out").mkdir()
    from tests.test_data import write_cifar10

    write_cifar10(cwd / "cifar")
    run = _sh("nf sweep run my_sweep.yaml", cwd, _env(str(storage)))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (storage / NAME / "sweep.yaml").exists()  # the default storage was $NF_STORAGE, not the cwd
    return {"cwd": cwd, "storage": str(storage), "run": run}


def _places(cmd: str) -> dict[str, str]:
    return {
        "NAME": NAME,
        "my_sweep.yaml": "my_sweep.yaml",
        "fixed.yaml": "fixed.yaml",
        "DIR": "cifar" if "--root DIR" in cmd else "out",
        "ITEM": _generator_item(),  # `nf export NAME ITEM`: the small sweep's generator
    }


def _generator_item() -> str:
    from orchestration.spec.config import parse_config
    from orchestration.spec.plan import plan

    return plan(parse_config(SMALL))["generator"][0].id


def _run_ui(cmd: str, cwd: Path, env: dict[str, str]) -> str:
    """`nf ui NAME` on a free port: it must print its URL and answer HTTP there; then SIGTERM, exit 0."""
    port = free_port()
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {cmd} --port {port}"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # blocks until the server answers (or nf ui fails and closes stdout)
        assert f"http://127.0.0.1:{port}" in line, line + proc.stderr.read()[-2000:]
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    assert r.status == 200
                break
            except OSError:
                assert time.monotonic() < deadline, "nf ui printed its URL but nothing answers there"
                time.sleep(0.5)
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    assert proc.returncode == 0, proc.stderr.read()[-2000:]
    return line


def _check_single_outputs(cmd: str, cwd: Path) -> None:
    """`nf single` wrote its default --out folder (runs/single): results.json for the model and width it was
    given, evaluated on the default 10 chips, and both checkpoints."""
    argv = shlex.split(cmd)
    opt = lambda name, default: argv[argv.index(name) + 1] if name in argv else default  # noqa: E731
    out = cwd / "runs" / "single"
    record = json.loads((out / "results.json").read_text())
    assert record["results"]["chips"] == 10 and record["results"]["model"] == opt("--model", "resnet18"), record
    assert record["config"]["width"] == float(opt("--width", "1.0")), record["config"]
    assert (out / "base.pt").exists() and (out / "generator.pt").exists()


def _s3_copy(storage: str, endpoint: str, bucket: str, prefix: str, name: str) -> None:
    """The small sweep's files, as they would be on S3 (a sweep is read where --storage says)."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    src = Path(storage) / NAME
    for path in src.rglob("*"):
        if path.is_file() and "mlartifacts" not in path.parts:
            s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}/{path.relative_to(src)}", Body=path.read_bytes())
    cfg = yaml.safe_load((src / "sweep.yaml").read_text())
    cfg.update(name=name, storage=f"s3://{bucket}/{prefix}")
    s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}/sweep.yaml", Body=yaml.safe_dump(cfg).encode())


def _run_s3_status(cmd: str, world: dict[str, object]) -> str:
    m = re.fullmatch(r"nf sweep status (\w+) --storage s3://([\w.-]+)/([\w./-]+)", cmd)
    assert m, f"an S3 README command this test cannot place: {cmd!r}"
    name, bucket, prefix = m.groups()
    log = Path(str(world["cwd"])) / "moto.log"
    server, endpoint = start_moto(str(log))
    try:
        creds = {"AWS_ACCESS_KEY_ID": "nf-test", "AWS_SECRET_ACCESS_KEY": "nf-test", "AWS_DEFAULT_REGION": "us-east-1"}
        os.environ.update(creds)  # for boto3 in this process only for the copy
        try:
            _s3_copy(str(world["storage"]), endpoint, bucket, prefix, name)
        finally:
            for k in creds:
                os.environ.pop(k, None)
        env = _env(str(world["storage"]), AWS_ENDPOINT_URL=endpoint, **creds)
        res = _sh(cmd, Path(str(world["cwd"])), env, timeout=300)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert res.returncode == 0, f"{cmd}\n{res.stdout[-2000:]}{res.stderr[-2000:]}"
    missing = [p.pattern for p in shape_of("nf sweep status") if not p.search(res.stdout)]
    assert not missing, f"output lacks {missing}:\n{res.stdout[-2000:]}"
    return res.stdout


# ---------------------------------------------------------------- the tests
def test_readme_commands_are_found() -> None:
    """The extraction itself: the headline commands and the usage lines are all seen."""
    cmds = [c for _, c in readme_commands(README.read_text())]
    assert "make demo" in cmds and "make test" in cmds
    for needed in ("nf sweep run", "nf sweep status", "nf report", "nf select", "nf profile", "nf ui"):
        assert any(c.startswith(needed) for c in cmds), (needed, cmds)


def test_make_targets_run_nf_demo_and_the_tests() -> None:
    """`make demo` / `make test` are the two headline commands; `make demo` runs the ~4 min demo sweep and
    `make test` this suite, so neither runs here: `make -n` shows what they run, and `nf demo --help` works."""
    cmds = [c for _, c in readme_commands(README.read_text()) if c.startswith("make ")]
    assert sorted(cmds) == ["make demo", "make test"], cmds
    demo = subprocess.run(["make", "-n", "-W", "pyproject.toml", "demo"], cwd=ROOT, capture_output=True, text=True)
    assert demo.returncode == 0 and re.search(r"\bnf demo\b", demo.stdout), demo.stdout + demo.stderr
    test = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True)
    assert test.returncode == 0 and "pytest" in test.stdout, test.stdout + test.stderr
    help_ = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "demo", "--help"], capture_output=True, text=True, cwd="/"
    )
    assert help_.returncode == 0 and "usage: nf demo" in help_.stdout, help_.stderr


def test_every_readme_command_works_as_written(world) -> None:
    """Each `nf` command of the README, from a folder that is not the checkout: exit 0 and its output's shape."""
    cwd, env = Path(str(world["cwd"])), _env(str(world["storage"]))
    assert TABLE_HEADER.search(world["run"].stdout)  # `nf sweep run my_sweep.yaml` ran in the fixture
    ran, failures = ["nf sweep run my_sweep.yaml"], []
    for section, line in readme_commands(README.read_text()):
        if line.startswith("make ") or line == "nf sweep run my_sweep.yaml":
            continue
        for cmd in as_run(line, _places(line)):
            patterns, t0 = shape_of(cmd), time.monotonic()
            try:
                if cmd.startswith("nf ui"):
                    out = _run_ui(cmd, cwd, env)
                elif "s3://" in cmd:
                    out = _run_s3_status(cmd, world)
                else:
                    if cmd.startswith("nf single"):  # its defaults train for minutes; the path is the same
                        cmd += " --base-epochs 1 --generator-epochs 1" + ("" if "--width" in cmd else " --width 0.125")
                    res = _sh(cmd, cwd, env)
                    out = res.stdout
                    assert res.returncode == 0, f"exit {res.returncode}: {res.stdout[-1500:]}{res.stderr[-1500:]}"
                    if cmd.startswith("nf single"):
                        _check_single_outputs(cmd, cwd)
                missing = [p.pattern for p in patterns if not p.search(out)]
                assert not missing, f"output lacks {missing}:\n{out[-2000:]}"
                if cmd.endswith("--json"):
                    json.loads(out)
            except AssertionError as e:
                failures.append(f"[{section}] {cmd}: {e}")
            ran.append(cmd)
            print(f"{time.monotonic() - t0:6.1f} s  {cmd}")  # pytest -s: where the test's time goes
    assert not failures, "README commands that do not work as written:\n" + "\n\n".join(failures)
    assert len(ran) >= 15, ran
