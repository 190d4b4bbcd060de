"""The README's demo block, from a real `nf demo` run: the results table, the progress lines, the
`nf select demo` answer, the report's energy table and its main figure.

    python docs/readme_demo.py run [--min-accuracy A]   # runs `nf demo` in a fresh storage (~4 min on
                                                        # 2 cores), records it in docs/demo_run.json,
                                                        # copies the report's figures to docs/img/
    python docs/readme_demo.py record ROOT LOG          # the same from a finished demo in storage ROOT and
                                                        # its captured output LOG
    python docs/readme_demo.py                          # prints the README blocks from docs/demo_run.json
    python docs/readme_demo.py --update-readme          # writes them into README.md (between markers)

docs/demo_run.json is the record of one run: the machine, the timings, the demo's result rows (every
field, per-chip lists included), the progress lines and the captured `nf select` and energy outputs.
The README's blocks are this script's formatting of that file, byte for byte (tests/test_readme_demo.py);
a rerun on another CPU type gives other numbers (see the README's "What is reproducible").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "docs" / "demo_run.json"
README = ROOT / "README.md"
# report figure (first match) -> docs/img name: the main figure of the demo's first model, and the energy figure
FIGURES = {"bars_digits_resnet18.png": "report_bars.png", "*energy*.png": "report_energy.png"}
DEFAULT_FLOOR = 90.0


def machine() -> str:
    """CPU model, cores, torch build and the CPU kernels it dispatches to (they decide the last bits)."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cap = torch.backends.cpu.get_cpu_capability()
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__} ({cap} kernels), no GPU"


def _stage_seconds(db: Path) -> dict[str, float]:
    """The parent run's `stage_seconds.<stage>` metrics (first start to last end of each stage)."""
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT key, value FROM latest_metrics WHERE key LIKE 'stage_seconds.%'").fetchall()
    return {k.split(".", 1)[1]: round(v, 1) for k, v in rows}


def _parent_run_seconds(db: Path) -> float:
    """Start to end of the sweep's MLflow parent run: the sweep's own time, without the report."""
    with sqlite3.connect(db) as con:
        start, end = con.execute(
            "SELECT start_time, end_time FROM runs WHERE run_uuid NOT IN "
            "(SELECT run_uuid FROM tags WHERE key = 'mlflow.parentRunId')"
        ).fetchone()
    return (end - start) / 1000


def _plain(x: Any) -> Any:
    """JSON-able copies of result rows (numpy scalars and arrays become numbers and lists)."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if hasattr(x, "tolist"):
        return x.tolist()
    return x


def _progress_example(lines: list[str]) -> list[str]:
    """A finished-trial line and the status line after it, from the middle of the generator stage."""
    for i, ln in enumerate(lines):
        if ln.startswith("done    generator"):
            after = next((x for x in lines[i + 1 :] if x.startswith("[") and "generator" in x), None)
            if after:
                return [ln, after]
    raise ValueError("no finished generator followed by a status line in the demo's output")


def run_demo(min_accuracy: float) -> dict[str, Any]:
    """Run `nf demo` in a fresh storage root, time it and record what the README shows."""
    storage = tempfile.mkdtemp(prefix="nf-readme-demo-")
    env = {**os.environ, "NF_STORAGE": storage, "PYTHONUNBUFFERED": "1"}
    nf = [sys.executable, "-m", "orchestration.cli"]
    t0 = time.monotonic()
    proc = subprocess.Popen([*nf, "demo"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, sweep_s = [], None
    for ln in proc.stdout:
        sys.stdout.write(ln)
        lines.append(ln.rstrip("\n"))
        if sweep_s is None and ln.startswith("source "):  # the results table: the sweep has ended
            sweep_s = time.monotonic() - t0
    if proc.wait() != 0:
        raise SystemExit(f"nf demo failed with exit code {proc.returncode}")
    total_s = time.monotonic() - t0
    return record(storage, lines, sweep_s, total_s, min_accuracy)


def record(
    storage: str, lines: list[str], sweep_s: float | None, total_s: float | None, min_accuracy: float
) -> dict[str, Any]:
    """Read the finished demo in ``storage`` and build docs/demo_run.json's record."""
    from orchestration.sweep.runner import collect_rows, open_sweep, sweep_store

    cfg = open_sweep("demo", storage)
    store = sweep_store(cfg)
    rows = [_plain(r) for r in collect_rows(cfg, store)]
    select = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "select", "demo", "--min-accuracy", f"{min_accuracy:g}"],
        env={**os.environ, "NF_STORAGE": storage},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    report = Path(store.path("report"))
    energy = sorted((report / "tables").glob("*energy*.md"))  # the report's energy section, as a table
    for pattern, dst in FIGURES.items():
        found = sorted((report / "figures").glob(pattern))
        if found:
            shutil.copyfile(found[0], ROOT / "docs" / "img" / dst)
    return {
        "machine": machine(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "sweep_seconds": round(_parent_run_seconds(Path(store.path("mlflow.db"))), 1),
        "until_table_seconds": None if sweep_s is None else round(sweep_s, 1),
        "total_seconds": None if total_s is None else round(total_s, 1),
        "load_15min": round(os.getloadavg()[2], 1),  # other jobs on the box stretch every time above
        "stage_seconds": _stage_seconds(Path(store.path("mlflow.db"))),
        "rows": rows,
        "progress": _progress_example(lines),
        "select": {"min_accuracy": min_accuracy, "output": select.replace(storage, "…/runs/sweeps")},
        "energy": energy[0].read_text() if energy else None,
    }


def demo_table(rec: dict[str, Any]) -> str:
    """The results table as `nf demo` prints it: the evaluation rows (each generator on its own source
    model, which `nf demo` prints first) and a one-line summary of the transfer rows after them."""
    from orchestration.store.results import format_table

    rows = rec["rows"]
    own = sum(r["source"] == r["target"] for r in rows)
    rp = sorted(r["rp"] for r in rows if r["source"] != r["target"])
    lines = format_table(rows).splitlines()
    more = f"…  and {len(rows) - own} transfer rows (each generator on the other model"
    more += f": RP {rp[0]:+.2f} … {rp[-1]:+.2f})" if rp else ")"
    return "\n".join(lines[: 2 + own] + [more])


def blocks(rec: dict[str, Any]) -> dict[str, str]:
    """The README's demo blocks, by marker name."""
    out = {"demo-table": demo_table(rec), "demo-progress": "\n".join(rec["progress"])}
    out["demo-select"] = f"$ nf select demo --min-accuracy {rec['select']['min_accuracy']:g}\n" + rec["select"][
        "output"
    ].rstrip("\n")
    if rec.get("energy"):
        out["demo-energy"] = rec["energy"].rstrip("\n")
    return out


def summary(rec: dict[str, Any]) -> str:
    """One sentence for the README: machine, date and timings of the recorded run."""
    st = ", ".join(f"{k} {v:.0f} s" for k, v in rec["stage_seconds"].items())
    total = (
        "" if rec.get("total_seconds") is None else f"; `nf demo` {rec['total_seconds']:.0f} s in all, report included"
    )
    return (
        f"recorded {rec['date']} on {rec['machine']}: sweep {rec['sweep_seconds']:.0f} s (its MLflow parent "
        f"run; first start to last end per stage: {st}){total}; load average over the last 15 minutes "
        f"{rec['load_15min']:g} (on a quiet box ≈ 0)"
    )


MARK = re.compile(r"<!-- (demo-[a-z]+) -->\n```\n.*?\n```", re.S)


def update_readme(text: str, rec: dict[str, Any]) -> str:
    """README text with every marked block replaced by this script's output."""
    b = blocks(rec)
    text = MARK.sub(lambda m: f"<!-- {m.group(1)} -->\n```\n{b[m.group(1)]}\n```", text)
    return re.sub(r"<!-- demo-run -->[^\n]*", f"<!-- demo-run -->{summary(rec)}.", text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", nargs="?", choices=["run", "record", "print"], default="print")
    p.add_argument("storage", nargs="?", help="record: the storage root of a finished demo")
    p.add_argument("log", nargs="?", help="record: the captured output of its `nf demo`")
    p.add_argument("--min-accuracy", type=float, default=DEFAULT_FLOOR, help="the floor of the recorded `nf select`")
    p.add_argument("--update-readme", action="store_true", help="write the blocks into README.md")
    args = p.parse_args(argv)
    if args.what == "run":
        rec = run_demo(args.min_accuracy)
        RECORD.write_text(json.dumps(rec, indent=1) + "\n")
    elif args.what == "record":  # a finished demo run, read back (no timing of the whole command)
        lines = Path(args.log).read_text().splitlines()
        rec = record(args.storage, lines, None, None, args.min_accuracy)
        RECORD.write_text(json.dumps(rec, indent=1) + "\n")
    rec = json.loads(RECORD.read_text())
    if args.update_readme:
        README.write_text(update_readme(README.read_text(), rec))
    print(summary(rec))
    for name, text in blocks(rec).items():
        print(f"\n<!-- {name} -->\n```\n{text}\n```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
