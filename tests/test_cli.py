"""The `nf` command line: one parser in orchestration, fast to start (no torch, Ray or MLflow behind
`nf --help` or `nf sweep plan`), help on every option, and the one table renderer."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestration.cli import build_parser
from orchestration.store.results import format_table
from orchestration.tables import table

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "ray", "mlflow", "pandas", "pyarrow", "matplotlib", "sklearn")

# Run `nf ARGS` in a fresh interpreter, then report which heavy packages it had imported.
_PROBE = """
import json, sys
from orchestration.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)), file=sys.stderr)
"""


def _heavy_loaded(*argv: str, code: str = _PROBE) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", code.format(heavy=HEAVY), *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    return json.loads(proc.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "argv", [["--help"], ["sweep", "plan", "--help"], ["single", "--help"], ["profile", "--help"], ["demo", "--help"]]
)
def test_help_imports_nothing_heavy(argv: list[str]) -> None:
    assert _heavy_loaded(*argv) == []


def test_plan_imports_nothing_heavy_beyond_the_config_schema() -> None:
    # The config module is the one import the plan needs; Ray and MLflow never, and torch only
    # while orchestration.spec.config itself imports it. Registry names: read once, then cached.
    from nf_core import catalog

    catalog.catalog()
    config_only = _heavy_loaded(
        code="import json, sys\nimport orchestration.spec.config\n"
        "print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)), file=sys.stderr)"
    )
    loaded = set(_heavy_loaded("sweep", "plan", "sweeps/smoke.yaml")) - {"pyarrow"}  # pyarrow.fs: storage roots
    assert loaded <= set(config_only), loaded
    assert not {"ray", "mlflow", "pandas", "matplotlib"} & loaded


def _parsers(parser: argparse.ArgumentParser, path: str = "nf"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_option_of_every_command_has_help() -> None:
    seen = set()
    for path, parser in _parsers(build_parser()):
        seen.add(path)
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help, f"`{path}` option {action.option_strings or action.dest} has no help text"
    assert {"nf single", "nf profile", "nf demo", "nf ui", "nf sweep plan", "nf sweep run"} <= seen


def test_single_has_dataset_and_width() -> None:
    args = build_parser().parse_args(["single", "--dataset", "cifar10", "--root", "/data", "--width", "0.5"])
    assert (args.dataset, args.root, args.width) == ("cifar10", "/data", 0.5)


def test_nf_core_holds_no_command_line() -> None:
    for path in (ROOT / "nf_core").rglob("*.py"):
        text = path.read_text()
        assert "import argparse" not in text and "from orchestration" not in text, path


# ---------------------------------------------------------------- the table renderer
def test_results_table_is_unchanged() -> None:
    """The demo's table, as the README shows it, rendered from its rows: byte for byte."""
    expected = """\
source    generator  training BER  evaluation BER  target       CA             PA  CA (NF)        PA (NF)      RP
--------  ---------  ------------  --------------  --------  -----  -------------  -------  -------------  ------
resnet18  ConvS              0.03            0.03  resnet18  98.67  44.47 ± 23.65    90.67  57.04 ± 18.84  +12.58
resnet18  UNetS              0.05            0.05  resnet18  98.67  34.91 ± 15.44    91.78  43.58 ± 10.57   +8.67
vgg11     ConvS              0.03            0.03  vgg11     98.44  72.18 ± 13.51    99.11   88.96 ± 4.05  +16.78"""
    rows = [
        ("resnet18", "ConvS", 0.03, 0.03, "resnet18", 98.67, 44.47, 23.65, 90.67, 57.04, 18.84, 12.58),
        ("resnet18", "UNetS", 0.05, 0.05, "resnet18", 98.67, 34.91, 15.44, 91.78, 43.58, 10.57, 8.67),
        ("vgg11", "ConvS", 0.03, 0.03, "vgg11", 98.44, 72.18, 13.51, 99.11, 88.96, 4.05, 16.78),
    ]
    keys = (
        "source",
        "generator",
        "train_ber",
        "eval_ber",
        "target",
        "ca",
        "pa_mean",
        "pa_std",
        "ca_nf",
        "pa_nf_mean",
        "pa_nf_std",
        "rp",
    )
    assert format_table([dict(zip(keys, r), dataset="digits") for r in rows]) == expected
    assert (
        format_table([]).splitlines()[1]
        == "------  ---------  ------------  --------------  ------  --  --  -------  -------  --"
    )


def test_results_table_rp_has_the_paired_per_chip_std() -> None:
    """RP ± the population std over chips of PA (NF)_chip − PA_chip (not a combination of the two PA stds)."""
    row = dict(
        dataset="digits", source="vgg11", generator="ConvS", train_ber=0.03, eval_ber=0.03, target="vgg11", ca=99.0
    )
    pa, pa_nf = [40.0, 50.0, 45.0], [70.0, 60.0, 80.0]  # per-chip RP 30, 10, 35: mean 25, std √(350/3) ≈ 10.80
    row.update(pa_mean=45.0, pa_std=4.08, ca_nf=98.0, pa_nf_mean=70.0, pa_nf_std=8.16, rp=25.0)
    line = format_table([dict(row, pa_per_chip=pa, pa_nf_per_chip=pa_nf)]).splitlines()[2]
    assert line.endswith("+25.00 ± 10.80")
    assert format_table([row]).splitlines()[2].endswith("+25.00")  # no per-chip lists: no std to show


def test_table_widths_alignment_and_missing_cells() -> None:
    text = table(["name", "n"], [["a", 1], ["bbb", None]], ["left", "right"])
    assert text.splitlines() == ["name  n", "----  -", "a     1", "bbb   -"]
    with pytest.raises(ValueError, match="2 alignments for 3 columns"):
        table(["a", "b", "c"], [], ["left", "right"])


def test_single_prints_its_result_as_a_table() -> None:
    from orchestration.commands.single import format_results

    res = {
        "model": "vgg11",
        "generator": "ConvS",
        "dataset": "digits",
        "ber": 0.04,
        "fault_model": "stuck_at",
        "layout": "wrap",
        "bits": 8,
        "chips": 10,
        "ca": 98.5,
        "pa_mean": 40.0,
        "pa_std": 2.5,
        "ca_nf": 97.25,
        "pa_nf_mean": 80.0,
        "pa_nf_std": 1.25,
        "rp": 40.0,
        "efficiency": 353.4,
    }
    assert format_results(res).splitlines() == [
        "vgg11 + ConvS on digits: BER 0.04 (stuck_at, wrap layout, 8-bit), 10 chips",
        "   CA            PA  CA (NF)       PA (NF)      RP  RP / M params",
        "-----  ------------  -------  ------------  ------  -------------",
        "98.50  40.00 ± 2.50    97.25  80.00 ± 1.25  +40.00          353.4",
    ]
    res.update(pa_per_chip=[37.5, 42.5], pa_nf_per_chip=[81.25, 78.75])  # per-chip RP 43.75, 36.25: std 3.75
    assert (
        format_results(res).splitlines()[-1]
        == "98.50  40.00 ± 2.50    97.25  80.00 ± 1.25  +40.00 ± 3.75          353.4"
    )
