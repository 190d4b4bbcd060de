"""nf_core.cost / nf_core.voltage / `nf profile`: TWMA against the real SCALE-SIM, the paper's
calibration, the energy-saving formulas, the JSON schema and the error messages."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import sys

import pytest
import torch.nn as nn

from nf_core import cost
from nf_core.cost import Layer, layer_filter_reads, scalesim_layers
from nf_core.generators import GENERATORS, PAPER_GENERATORS, create_generator
from nf_core.models import MODELS, create_model
from nf_core.voltage import load_voltage_table, parse_voltage_table
from orchestration.commands.profile import add_profile_parser, main, run_profile
from tests.scalesim_env import run_scalesim  # tests/scalesim_env.py

# The paper's Table 6 (TWMA, CIFAR-10); the UNets with generator padding (see nf_core/cost.py).
PAPER_TWMA = {
    "resnet18": 2_755_968,
    "resnet50": 6_182_144,
    "vgg11": 1_334_656,
    "vgg16": 2_366_848,
    "vgg19": 3_104_128,
    "ConvL": 320_256,
    "ConvS": 41_508,
    "DeConvL": 259_264,
    "DeConvS": 86_208,
    "UNetL": 180_894,
    "UNetS": 45_711,
}


def _layer(module: nn.Module, name: str, min_padding: int = 0) -> Layer:
    return next(l for l in scalesim_layers(module, 32, min_padding) if l.name == name)


# ---------------------------------------------------------------- SCALE-SIM itself
def test_closed_form_equals_scalesim_on_real_layers(tmp_path):
    resnet = create_model("resnet18", num_classes=10, input_size=32)
    layers = [
        _layer(create_generator("ConvS"), "net.0.0"),  # padded 3×3 conv, 34×34 → 32×32
        _layer(resnet, "layer2.0.conv1"),  # stride-2 3×3: padded 34×34 → 17×17 in SCALE-SIM
        _layer(resnet, "layer2.0.shortcut.0"),  # 1×1 stride-2 shortcut, unpadded: 32×32 → 17×17
        _layer(resnet, "linear"),  # Linear as a 1×1 conv on a 1×1 input
        _layer(create_generator("DeConvS"), "net.8"),  # ConvT(32→3, k4 s2 p1) stand-in
        _layer(create_generator("UNetS"), "ups.0"),  # ConvT(16→8, k2 s2 p0) stand-in
        _layer(create_generator("UNetS"), "outc"),  # 1×1 output conv
        _layer(create_generator("UNetS"), "ups.0", cost.GENERATOR_PADDING),  # with generator padding: 34×34
        _layer(create_generator("UNetS"), "outc", cost.GENERATOR_PADDING),
    ]
    simulated = run_scalesim(layers, tmp_path)
    assert simulated == [layer_filter_reads(l) for l in layers]


# ---------------------------------------------------------------- topology rows
def test_rows_follow_scalesim_conventions():
    resnet = create_model("resnet18", num_classes=10, input_size=32)
    s2 = _layer(resnet, "layer2.0.conv1")
    assert (s2.ifmap_h, s2.filter_h, s2.stride, s2.ofmap) == (34, 3, 2, (17, 17))  # PyTorch gives 16×16
    assert layer_filter_reads(s2) == 10 * 3 * 3 * 64 * 128  # ceil(289 / 32) folds × weights
    fc = _layer(resnet, "linear")
    assert (fc.ifmap_h, fc.ifmap_w, fc.filter_h, fc.channels, fc.num_filters) == (1, 1, 1, 512, 10)
    deconv = _layer(create_generator("DeConvS"), "net.8")  # ConvTranspose2d(32, 3, 4, 2, 1): 16×16 → 32×32
    assert (deconv.ifmap_h, deconv.channels, deconv.num_filters, deconv.stride, deconv.ofmap) == (
        34,
        3,
        32,
        1,
        (31, 31),
    )


def test_every_conv_and_linear_gets_one_row():
    model = create_model("resnet18", num_classes=10, input_size=32)
    kinds = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    assert [l.name for l in scalesim_layers(model, 32)] == [n for n, m in model.named_modules() if isinstance(m, kinds)]


def test_scalesim_layers_restores_train_mode():
    model = create_generator("ConvL").train()
    scalesim_layers(model, 32)
    assert all(m.training for m in model.modules())


# ---------------------------------------------------------------- calibration against the paper
def test_calibration_resnet18_cifar10():
    model = create_model("resnet18", num_classes=10, input_size=32)
    reads = sum(layer_filter_reads(l) for l in scalesim_layers(model, 32))
    assert reads == 8 * 2_755_968  # what SCALE-SIM 3.0.0 reports for the whole network
    assert cost.twma(model, 32) == 2_755_968 == cost.profile_model("resnet18", "cifar10")["twma"]


@pytest.mark.parametrize("name", list(PAPER_TWMA))
def test_table6(name):
    profile = cost.profile_model if name in MODELS else cost.profile_generator
    assert profile(name, "cifar10")["twma"] == PAPER_TWMA[name]


def test_generator_padding_changes_only_the_unets():
    # Every other generator layer already has padding 1; base models keep their declared padding.
    for name in ("ConvL", "ConvS", "DeConvL", "DeConvS"):
        g = create_generator(name)
        assert cost.twma(g, 32, cost.GENERATOR_PADDING) == cost.twma(g, 32)
    unet = create_generator("UNetL")
    assert (cost.twma(unet, 32), cost.twma(unet, 32, cost.GENERATOR_PADDING)) == (173_696, 180_894)
    up = _layer(unet, "ups.2", cost.GENERATOR_PADDING)  # ConvT(128→64, k2 s2) on 4×4: 8×8 map + 2
    assert (up.ifmap_h, up.channels, up.num_filters, up.ofmap) == (10, 64, 128, (9, 9))


def test_table7():
    # Parameter counts are exact in the paper; MACs follow ptflops <= 0.7 (see nf_core/cost.py).
    assert cost.profile_model("resnet18", "cifar10")["params"] == 11_173_962
    assert cost.profile_model("vgg19", "imagenet10")["params"] == 139_622_218
    assert cost.profile_generator("ConvL", "cifar10")["params"] == 723_273
    assert round(cost.profile_generator("DeConvS", "cifar10")["macs"] / 1e6, 2) == 22.44  # per output position
    assert round(cost.profile_model("vgg11", "cifar10")["macs"] / 1e6, 2) == 153.50


def test_meta_profile_equals_real_module():
    # profile_model builds on the meta device; a real CPU module must give the same figures.
    for module, registered in [
        (create_model("resnet18", num_classes=10, input_size=32), cost.profile_model("resnet18", "cifar10")),
        (create_generator("DeConvS"), cost.profile_generator("DeConvS", "cifar10")),
    ]:
        module.train().requires_grad_(False)  # e.g. the frozen base model during EOPM
        assert cost.profile_module(module, 32) == registered
        assert module.training and not hasattr(module, "start_flops_count")  # counted on a copy


def test_dataset_table_covers_registered_datasets():
    from nf_core.data import DATASETS

    assert set(cost.DATASET_SHAPES) == set(DATASETS.names())


# ---------------------------------------------------------------- energy saving
def test_energy_saving_hand_computed():
    assert cost.energy_saving(1000, 100, 0.7) == pytest.approx(20.0)  # 1 − (700 + 100) / 1000
    assert cost.energy_saving(1000, 0, 1.0) == pytest.approx(0.0)
    assert cost.energy_saving(100, 50, 0.694) == pytest.approx(-19.4)  # a big generator costs energy
    assert cost.mac_energy_saving(2000, 300, 0.5) == pytest.approx(35.0)  # 1 − (1000 + 300) / 2000
    assert round(cost.energy_saving(2_755_968, 320_256, 0.694), 1) == 19.0  # paper Table 2, ResNet18 + ConvL


def test_energy_saving_rejects_bad_input():
    with pytest.raises(ValueError, match="base accesses > 0"):
        cost.energy_saving(0, 10, 0.694)
    with pytest.raises(ValueError, match="energy_ratio"):
        cost.mac_energy_saving(10, 1, 0.0)


def test_shipped_voltage_table():
    table = load_voltage_table()
    assert table.energy_ratio(0.01) == 0.694 and table.energy_ratio(0) == 1.0


def test_missing_ber_lists_existing_ones():
    with pytest.raises(ValueError, match=r"no row for BER 0\.005.*BERs in the table: 0, 0\.01"):
        load_voltage_table().energy_ratio(0.005)


def test_user_voltage_table(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("voltage,ber,energy_ratio\n0.9,0,1\n,0.005,0.8\n")  # voltage may be unknown
    assert load_voltage_table(path).energy_ratio(0.005) == 0.8
    pair = cost.profile_pair("resnet18", "ConvS", "cifar10", ber=0.005, voltage_table=load_voltage_table(path))
    assert pair["energy_saving"] == pytest.approx(100 * (1 - 0.8 - 41_508 / 2_755_968))


@pytest.mark.parametrize(
    "text, message",
    [
        ("voltage,ber\n1,0\n", "lacks column"),
        ("voltage,ber,energy_ratio\n1,0,0.9\n", "nominal"),
        ("voltage,ber,energy_ratio\n1,0.01,0.7\n0.9,0.01,0.6\n", "appears twice"),
        ("voltage,ber,energy_ratio\n1,x,1\n", "not a number"),
    ],
)
def test_bad_voltage_tables(text, message):
    with pytest.raises(ValueError, match=message):
        parse_voltage_table(text, "test")


# ---------------------------------------------------------------- `nf profile`
def _nf(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run through a parser built like the `nf` CLI's, with `profile` as a subcommand."""
    parser = argparse.ArgumentParser(prog="nf")
    add_profile_parser(parser.add_subparsers(dest="command", required=True))
    code = run_profile(parser.parse_args(["profile", *argv]))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_lone_model_and_generator(capsys):
    for argv in (["--model", "vgg11", "--dataset", "cifar100"], ["--generator", "UNetS", "--dataset", "gtsrb"]):
        code, out, _ = _nf([*argv, "--json"], capsys)
        result = json.loads(out)
        assert code == 0 and set(result) == {"params", "macs", "twma"}
        assert all(type(v) is int for v in result.values())


def test_json_model_with_generator(capsys):
    code, out, _ = _nf(["--model", "resnet18", "--generator", "ConvL", "--dataset", "cifar10", "--json"], capsys)
    assert code == 0 and json.loads(out) == {
        "model": cost.profile_model("resnet18", "cifar10"),
        "generator": cost.profile_generator("ConvL", "cifar10"),
    }
    code, out, _ = _nf(
        ["--model", "resnet18", "--generator", "ConvL", "--dataset", "cifar10", "--ber", "0.01", "--json"], capsys
    )
    result = json.loads(out)
    assert set(result) == {"model", "generator", "energy_saving", "mac_energy_saving", "energy_convention"}
    assert result["energy_convention"] == "paper full-size networks (width 1)"
    assert round(result["energy_saving"], 1) == 19.0 and isinstance(result["mac_energy_saving"], float)


def test_table_output_is_readable(capsys):
    code, out, _ = _nf(["--model", "resnet18", "--generator", "ConvL", "--dataset", "cifar10", "--ber", "0.01"], capsys)
    assert code == 0 and "2,755,968" in out and "19.0% by TWMA" in out


def test_standalone_main(capsys):
    assert main(["--generator", "ConvS", "--dataset", "cifar10", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["twma"] == 41_508


@pytest.mark.parametrize(
    "argv, listed",
    [
        (["--model", "resnet19", "--dataset", "cifar10"], "resnet18, resnet50, vgg11, vgg16, vgg19"),
        (["--generator", "ConvXL", "--dataset", "cifar10"], "ConvL, ConvS, DeConvL, DeConvS, UNetL, UNetS"),
        (["--model", "resnet18", "--dataset", "mnist"], "cifar10, cifar100, gtsrb, imagenet10, digits"),
        (
            ["--model", "resnet18", "--generator", "ConvL", "--dataset", "cifar10", "--ber", "0.02"],
            "BERs in the table: 0, 0.01",
        ),
    ],
)
def test_errors_list_what_exists(argv, listed, capsys):
    code, out, err = _nf(argv, capsys)
    assert code == 2 and out == "" and err.startswith("nf: error:") and listed in err


def test_bad_flag_combinations(capsys):
    for argv in (
        ["--dataset", "cifar10"],
        ["--model", "resnet18", "--dataset", "cifar10", "--ber", "0.01"],
        ["--all", "--model", "resnet18", "--dataset", "cifar10"],
        ["--all", "--dataset", "cifar10", "--out", "table.txt"],
        ["--model", "resnet18", "--dataset", "cifar10", "--width", "0"],
        ["--generator", "ConvS", "--dataset", "cifar10", "--width", "0.5"],
    ):
        code, _, err = _nf(argv, capsys)
        assert code == 2 and err.startswith("nf: error:")


def test_all_table_and_csv(tmp_path, capsys):
    out_file = tmp_path / "table.csv"
    code, out, _ = _nf(["--all", "--dataset", "cifar10", "--ber", "0.01", "--out", str(out_file)], capsys)
    assert code == 0 and "paper Table 2" in out and "paper Table 8" in out
    with open(out_file, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(MODELS.names()) * len(PAPER_GENERATORS)
    vgg11_convl = next(r for r in rows if r["model"] == "vgg11" and r["generator"] == "ConvL")
    assert round(float(vgg11_convl["energy_saving"]), 1) == 6.6  # paper Table 2
    assert round(float(vgg11_convl["mac_energy_saving"]), 1) == -21.8  # paper Table 8


def test_all_parquet(tmp_path, capsys):
    out_file = tmp_path / "table.parquet"
    code, _, err = _nf(["--all", "--dataset", "cifar10", "--out", str(out_file)], capsys)
    if importlib.util.find_spec("pyarrow") is None:
        assert code == 2 and "needs pyarrow" in err and not out_file.exists()
    else:
        import pyarrow.parquet as pq

        assert code == 0 and pq.read_table(out_file).num_rows == len(MODELS.names()) * len(PAPER_GENERATORS)


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path, capsys, monkeypatch):
    # A None entry in sys.modules is how Python marks a module as not importable.
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    code, _, err = _nf(["--all", "--dataset", "cifar10", "--out", str(tmp_path / "t.parquet")], capsys)
    assert code == 2 and "needs pyarrow" in err and "write a .csv file" in err


# ---------------------------------------------------------------- widths and the counts table
def test_width_profiles_the_scaled_network(capsys):
    # --width W counts the network a sweep with `width: W` trains: the real module, built at that width
    module = create_model("resnet18", num_classes=10, input_size=32, width=0.125)
    counted = cost.profile_module(module, 32)
    assert cost.profile_model("resnet18", "digits", 0.125) == counted
    assert counted["twma"] < cost.profile_model("resnet18", "digits")["twma"] // 10
    code, out, _ = _nf(["--model", "resnet18", "--generator", "ConvS", "--dataset", "digits", "--width", "0.125",
                        "--ber", "0.01", "--json"], capsys)  # fmt: skip
    result = json.loads(out)
    ratio = load_voltage_table().energy_ratio(0.01)
    expect = 100 * (1 - (counted["twma"] * ratio + PAPER_TWMA["ConvS"]) / counted["twma"])
    assert code == 0 and result["energy_saving"] == pytest.approx(expect) and result["model"] == counted
    assert result["energy_convention"] == "width 0.125 networks"
    code, out, _ = _nf(["--model", "resnet18", "--generator", "ConvS", "--dataset", "digits", "--width", "0.125",
                        "--ber", "0.01"], capsys)  # fmt: skip
    assert code == 0 and f"{expect:.1f}% by TWMA" in out and "(energy: width 0.125 networks)" in out


def test_shipped_counts_table_is_current():
    # The table is a cache of what the meta-device count gives; it is used only under its fingerprint.
    import json as _json

    data = _json.loads(cost.COUNTS_TABLE.read_text())
    assert data["fingerprint"] == cost.counts_fingerprint(), "regenerate it: python -m nf_core.cost"
    shapes = sorted(set(cost.DATASET_SHAPES.values()))
    sizes = {size for _, size in shapes}  # generators depend on the input size only
    models, generators = len(MODELS.names()) * len(cost.TABLE_WIDTHS), len(GENERATORS.names())
    assert len(data["counts"]) == len(shapes) * models + len(sizes) * generators
    sample = [("model", "resnet18", 10, 32, 0.125), ("model", "vgg11", 10, 32, 0.125), ("model", "vit", 100, 32, 0.5),
              ("generator", "UNetS", 10, 32, 1.0), ("generator", "ConvS_BER", 10, 32, 1.0)]  # fmt: skip
    for kind, name, classes, size, width in sample:
        counted = dict(cost._count_registered(kind, name, classes, size, width))  # counted afresh, not looked up
        assert data["counts"][cost.counts_key(kind, name, classes, size, width)] == counted


def test_profile_answers_without_torch(tmp_path):
    # The CLI's profile of a registered network reads the counts table: torch is never imported.
    import subprocess

    code = (
        "import sys; from orchestration.cli import main; "
        "rc = main(['profile', '--model', 'resnet18', '--generator', 'ConvS', '--dataset', 'digits', '--ber', '0.01', "
        "'--width', '0.125']); assert rc == 0; assert 'torch' not in sys.modules, 'torch imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "width 0.125 networks" in proc.stdout
