"""The reading commands as the README shows them: `nf sweep status|list|resume`, `nf select` and
`nf report` without --storage, run from a folder other than the checkout, find the sweep where
`nf sweep run` puts it (one resolution: orchestration.sweep.resume.resolve_storage); and one energy
convention: the same row gives the identical saving in `nf profile`, the report's energy table and
`nf select`."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_support import DEMO_VOLTAGE_TABLE, write_demo_sweep


def nf(*args: str, cwd: Path, storage: str | None) -> subprocess.CompletedProcess:
    """`nf ARGS` in a fresh process from ``cwd``, with NF_STORAGE set to ``storage`` (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != "NF_STORAGE"}
    if storage is not None:
        env["NF_STORAGE"] = storage
    return subprocess.run(
        [sys.executable, "-m", "orchestration.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(storage root holding a finished demo-size sweep 'demo', a folder elsewhere, a voltage table for its BERs)."""
    root = tmp_path_factory.mktemp("root")
    write_demo_sweep(str(root))
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    vt = elsewhere / "vt.csv"
    vt.write_text(DEMO_VOLTAGE_TABLE)
    return root, elsewhere, vt


def test_status_and_list_without_storage(swept):
    root, elsewhere, _ = swept
    for argv in (["sweep", "status", "demo"], ["sweep", "status", "demo", "--failed"]):
        p = nf(*argv, cwd=elsewhere, storage=str(root))
        assert p.returncode == 0, p.stderr
        assert f"sweep 'demo' ({root / 'demo'})" in p.stdout and "total        26" in p.stdout
    p = nf("sweep", "list", cwd=elsewhere, storage=str(root))
    assert p.returncode == 0, p.stderr
    assert f"sweeps under {root}" in p.stdout and "26/26" in p.stdout
    # resume reads the same root (a finished sweep is not rerun here: an unknown name shows where it looked)
    p = nf("sweep", "resume", "nope", cwd=elsewhere, storage=str(root))
    assert p.returncode == 2 and f"no sweep 'nope' under {root}; sweeps there: demo" in p.stderr


def test_default_root_is_the_one_sweep_run_uses(tmp_path, monkeypatch):
    from orchestration.spec.config import load_config
    from orchestration.store.roots import resolve_storage

    monkeypatch.delenv("NF_STORAGE", raising=False)
    config = tmp_path / "c.yaml"  # a config without `storage`: `nf sweep run` puts it in the default root
    config.write_text("name: x\ndatasets: [{name: digits}]\nmodels: [vgg11]\ngenerators: [ConvS]\ntrain_bers: [0.01]\n")
    monkeypatch.chdir(tmp_path)
    default = load_config(str(config)).storage
    assert default == resolve_storage(None) and not default.startswith(str(tmp_path))
    p = nf("sweep", "list", cwd=tmp_path, storage=None)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0].endswith(f"under {default}")
    for argv in (["sweep", "status", "nope"], ["select", "nope", "--min-accuracy", "50"], ["report", "nope"]):
        p = nf(*argv, cwd=tmp_path, storage=None)
        assert p.returncode == 2 and f"no sweep 'nope' under {default};" in p.stderr, (argv, p.stderr)


def test_energy_convention_is_one_across_profile_report_select(swept):
    """resnet18 behind its own ConvS (training BER 0.01) at evaluation BER 0.01: one saving everywhere."""
    root, elsewhere, vt = swept
    row = {"model": "resnet18", "generator": "ConvS", "ber": "0.01"}
    prof = {}
    for flags, width in (([], 1.0), (["--width", "0.125"], 0.125)):
        p = nf("profile", "--model", "resnet18", "--generator", "ConvS", "--dataset", "digits", "--ber", "0.01",
               "--voltage-table", str(vt), "--json", *flags, cwd=elsewhere, storage=None)  # fmt: skip
        assert p.returncode == 0, p.stderr
        prof[width] = json.loads(p.stdout)
    assert prof[0.125]["energy_convention"] == "width 0.125 networks"
    assert prof[1.0]["energy_convention"] == "paper full-size networks (width 1)"

    def selected(*flags: str) -> dict:
        p = nf("select", "demo", "--min-accuracy", "0", "--voltage-table", str(vt), "--json", *flags, cwd=elsewhere,
               storage=str(root))  # fmt: skip
        assert p.returncode == 0, p.stderr
        sel = json.loads(p.stdout)
        (c,) = [
            c
            for c in sel["candidates"]
            if (c["model"], c["generator"], c["source"], c["train_ber"], c["ber"])
            == ("resnet18", "ConvS", "resnet18", 0.01, 0.01)  # fmt: skip
        ]
        return {"saving": c["energy_saving"], "convention": sel["energy_convention"]}

    assert selected() == {"saving": prof[0.125]["energy_saving"], "convention": "width 0.125 networks"}
    full = selected("--full-size")
    assert full == {"saving": prof[1.0]["energy_saving"], "convention": "paper full-size networks (width 1)"}
    assert prof[1.0]["energy_saving"] > 0 > prof[0.125]["energy_saving"]  # the two conventions differ in sign here

    p = nf("report", "demo", "--voltage-table", str(vt), cwd=elsewhere, storage=str(root))
    assert p.returncode == 0, p.stderr
    assert f"report: {root / 'demo' / 'report' / 'index.html'}" in p.stdout
    with open(root / "demo" / "report" / "tables" / "energy.csv", newline="") as f:
        table = list(csv.DictReader(f))
    (r,) = [r for r in table if (r["model"], r["generator"], r["eval_ber"], r["train_ber"]) == (*row.values(), "0.01")]
    assert float(r["energy_saving"]) == prof[0.125]["energy_saving"]
    html = (root / "demo" / "report" / "index.html").read_text()
    assert "energy: width 0.125 networks" in html


def test_counts_of_an_unusual_width_are_cached_beside_the_sweep(tmp_path):
    """A width the shipped counts table lacks is counted once (torch imported), then read from the sweep."""
    from nf_core import cost

    write_demo_sweep(str(tmp_path), "thin", width=0.0625)
    assert 0.0625 not in cost.TABLE_WIDTHS
    vt = tmp_path / "vt.csv"
    vt.write_text(DEMO_VOLTAGE_TABLE)
    code = (
        "import sys; from orchestration.cli import main; "
        f"rc = main(['select', 'thin', '--min-accuracy', '0', '--voltage-table', {str(vt)!r}, '--json']); "
        "assert rc == 0; print('torch' in sys.modules, file=sys.stderr)"
    )
    env = {**os.environ, "NF_STORAGE": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600, check=False) for _ in range(2)]  # fmt: skip
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    assert [r.stderr.strip().splitlines()[-1] for r in runs] == ["True", "False"]  # counted, then cached
    cache = json.loads((tmp_path / "thin" / "cost_counts.json").read_text())
    assert cache["fingerprint"] == cost.counts_fingerprint()
    assert "model/resnet18/10x32/w0.0625" in cache["counts"] and "model/vgg11/10x32/w0.0625" in cache["counts"]
    assert json.loads(runs[0].stdout)["candidates"] == json.loads(runs[1].stdout)["candidates"]
    assert json.loads(runs[1].stdout)["energy_convention"] == "width 0.0625 networks"
