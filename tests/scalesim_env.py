"""Run the real SCALE-SIM 3.0.0 simulator on topology rows (test-only helper for test_cost.py).

SCALE-SIM runs in a subprocess: it calls exit() on bad input, prints, and writes report files.
Its interpreter is this one when it has scalesim and numpy < 2.4 (3.0.0 crashes with numpy >= 2.4);
otherwise an isolated venv with pinned versions is built once under the user's cache directory.
"""

from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from nf_core.cost import Layer

PINS = ("scalesim==3.0.0", "numpy==2.3.5")

# The paper's accelerator: output stationary, 32×32 array, 256 KB filter SRAM.
CONFIG = """\
[general]
run_name = nf

[run_presets]
InterfaceBandwidth = CALC
UseRamulatorTrace = False

[architecture_presets]
ArrayHeight = 32
ArrayWidth = 32
IfmapSramSzkB = 256
FilterSramSzkB = 256
OfmapSramSzkB = 256
IfmapOffset = 0
FilterOffset = 10000000
OfmapOffset = 20000000
Dataflow = os
ReadRequestBuffer = 32
WriteRequestBuffer = 32

[layout]
IfmapCustomLayout = False
IfmapSRAMBankBandwidth = 10
IfmapSRAMBankNum = 10
IfmapSRAMBankPort = 2
FilterCustomLayout = False
FilterSRAMBankBandwidth = 10
FilterSRAMBankNum = 10
FilterSRAMBankPort = 2

[sparsity]
SparsitySupport = false
"""

RUNNER = """\
import sys
from scalesim.scale_sim import scalesim
config, topology, layout, out = sys.argv[1:5]
sim = scalesim(save_disk_space=True, verbose=False, config=config, topology=topology, layout=layout)
sim.run_scale(top_path=out)
"""


def _usable_here() -> bool:
    if importlib.util.find_spec("scalesim") is None:
        return False
    major, minor = (int(x) for x in importlib.metadata.version("numpy").split(".")[:2])
    return (major, minor) < (2, 4)


def scalesim_python() -> str:
    """An interpreter that can import scalesim 3.0.0 with a numpy it works with."""
    if _usable_here():
        return sys.executable
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nf-scalesim-3.0.0"
    python = cache / "bin" / "python"
    if not python.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(prefix="nf-scalesim-build-", dir=cache.parent))  # renamed when complete
        subprocess.run([sys.executable, "-m", "venv", str(build)], check=True)
        subprocess.run([str(build / "bin" / "python"), "-m", "pip", "install", "-q", *PINS], check=True)
        shutil.rmtree(cache, ignore_errors=True)
        build.rename(cache)  # venv scripts hold absolute paths, so run it as `python -m`, never bin/pip
    return str(python)


def topology_csv(layers: list[Layer]) -> str:
    """SCALE-SIM conv topology: one row per layer, each row ending in a comma (SCALE-SIM drops the last field)."""
    lines = ["Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,"]
    for i, l in enumerate(layers):
        lines.append(
            f"L{i}, {l.ifmap_h}, {l.ifmap_w}, {l.filter_h}, {l.filter_w}, {l.channels}, {l.num_filters}, {l.stride},"
        )
    return "\n".join(lines) + "\n"


def run_scalesim(layers: list[Layer], workdir: Path) -> list[int]:
    """SCALE-SIM's "SRAM Filter Reads" for each layer, from its DETAILED_ACCESS_REPORT.csv."""
    workdir.mkdir(parents=True, exist_ok=True)
    files = {"scale.cfg": CONFIG, "topology.csv": topology_csv(layers), "layout.csv": "Layer name,\n", "run.py": RUNNER}
    for name, text in files.items():
        (workdir / name).write_text(text)
    out = workdir / "out"
    proc = subprocess.run(
        [scalesim_python(), "run.py", "scale.cfg", "topology.csv", "layout.csv", str(out)],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    report = out / "nf" / "DETAILED_ACCESS_REPORT.csv"
    if proc.returncode != 0 or not report.exists():
        raise RuntimeError(f"SCALE-SIM failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    with open(report, newline="") as f:
        rows = [{k.strip(): v.strip() for k, v in row.items() if k} for row in csv.DictReader(f)]
    return [int(float(row["SRAM Filter Reads"])) for row in rows]
