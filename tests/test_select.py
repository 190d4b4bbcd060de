"""nf_core.select / `nf select`: the operating point on a hand-made results table with a known answer."""

from __future__ import annotations

import json

import pytest
import yaml

from nf_core.select import format_selection, select_operating_points, selection_figure
from nf_core.voltage import curve_point, load_voltage_table, parse_voltage_table

TABLE = parse_voltage_table("voltage,ber,energy_ratio\n1.0,0,1.0\n0.9,0.001,0.9\n0.8,0.01,0.7\n0.7,0.02,0.6\n", "t")
TWMA = {"m": 1000, "G": 100, "G2": 250}


def _rows() -> list[dict]:
    base = {"dataset": "digits", "source": "m", "target": "m", "fault_model": "stuck_at", "ca": 95.0, "train_ber": 0.01}
    bare = {0.001: [90.0, 92.0, 94.0], 0.01: [60.0, 70.0, 80.0], 0.02: [30.0, 40.0, 50.0]}
    nf = {
        "G": {0.001: [93.0, 94.0, 95.0], 0.01: [85.0, 91.0, 97.0], 0.02: [55.0, 60.0, 65.0]},
        "G2": {0.001: [94.0, 95.0, 96.0], 0.01: [91.0, 92.0, 93.0], 0.02: [70.0, 71.0, 72.0]},
    }
    rows = []
    for g, accs in nf.items():
        for ber, chips in accs.items():
            rows.append(
                {
                    **base,
                    "generator": g,
                    "eval_ber": ber,
                    "pa_mean": sum(bare[ber]) / 3,
                    "pa_per_chip": bare[ber],
                    "pa_nf_mean": sum(chips) / 3,
                    "pa_nf_per_chip": chips,
                }
            )
    return rows


def test_select_mean_known_answer(tmp_path):
    sel = select_operating_points(_rows(), 90.0, TABLE, TWMA)
    (m,) = sel["models"]
    w, n = m["with_nf"], m["without_nf"]
    # BER 0.01 is the lowest voltage meeting 90 with NF; G (cheaper) beats the more accurate G2.
    assert (w["generator"], w["ber"], w["voltage"]) == ("G", 0.01, 0.8)
    assert w["energy_saving"] == pytest.approx(100 * (1 - (1000 * 0.7 + 100) / 1000))  # 20 %
    assert (n["generator"], n["ber"]) == (None, 0.001) and n["energy_saving"] == pytest.approx(10.0)
    assert m["energy_saving_gain"] == pytest.approx(10.0)
    text = format_selection(sel)
    assert "BER 0.01 with G" in text
    assert selection_figure(sel, str(tmp_path / "f.png")) and (tmp_path / "f.png").stat().st_size > 1000


def test_select_percentile_counts_the_generator_cost():
    # 10th percentile: at 0.01 G gives 86.2 and G2 91.2; G2 costs 25% of the base's accesses, so
    # 100(1 - (700 + 250)/1000) = 5 % < the bare model at 0.001 (p10 90.4, ES 10 %): no generator wins.
    sel = select_operating_points(_rows(), 90.0, TABLE, TWMA, percentile=10)
    (m,) = sel["models"]
    w = m["with_nf"]
    assert (w["generator"], w["ber"]) == (None, 0.001) and w["accuracy"] == pytest.approx(90.4)
    assert w == m["without_nf"] and m["energy_saving_gain"] == 0
    assert "without NeuralFuse" in m["message"]
    g2 = next(c for c in sel["candidates"] if c["generator"] == "G2" and c["ber"] == 0.01)
    assert g2["meets"] and g2["accuracy"] == pytest.approx(91.2) and g2["energy_saving"] == pytest.approx(5.0)


def test_select_no_point_meets_floor():
    sel = select_operating_points(_rows(), 96.0, TABLE, TWMA)
    (m,) = sel["models"]
    assert m["with_nf"] is None and m["without_nf"] is None
    assert "no operating point meets the floor 96%" in m["message"]
    assert "no operating point meets the floor" in format_selection(sel)


def test_select_only_nominal_and_bad_inputs():
    # floor 94.5: only G2 at 0.001 (mean 95, ES 100(1 - (900 + 250)/1000) = -15 %) and nominal (CA 95) meet:
    # a lower voltage meets the floor but saves no energy, which is not "only nominal meets it"
    sel = select_operating_points(_rows(), 94.5, TABLE, TWMA)
    m = sel["models"][0]
    assert m["with_nf"]["ber"] == 0.0 and m["without_nf"]["ber"] == 0.0
    assert "1 lower-voltage point(s) meet the floor but none saves energy" in m["message"]
    assert "best: G2 at evaluation BER 0.001, ES -15.00%" in m["message"]
    g2 = next(c for c in sel["candidates"] if c["generator"] == "G2" and c["ber"] == 0.001)
    assert g2["meets"] and g2["energy_saving"] == pytest.approx(-15.0)
    # CA 99, floor 97: no generator reaches 97 at any BER (best: G2 at 0.001, 95): only nominal meets it
    sel = select_operating_points([r | {"ca": 99.0} for r in _rows()], 97.0, TABLE, TWMA)
    assert sel["models"][0]["message"] == "only nominal voltage meets the floor: no energy saving"
    with pytest.raises(ValueError, match="percentile 120"):
        select_operating_points(_rows(), 90, TABLE, TWMA, percentile=120)
    with pytest.raises(ValueError, match="no TWMA for generator 'G2'"):
        select_operating_points(_rows(), 90, TABLE, {"m": 1000, "G": 100})


def test_transferred_generator_is_its_own_candidate():
    # resnet18's own ConvS and vgg11's ConvS transferred onto resnet18: same name, same BERs, two
    # candidates (averaging them gave (64.98 + 32.04) / 2 = 48.51 for resnet18/ConvS 0.03@0.03).
    def row(source, ber, chips):
        return {"dataset": "digits", "source": source, "target": "resnet18", "generator": "ConvS",
                "train_ber": 0.03, "eval_ber": ber, "fault_model": "stuck_at", "bits": 8, "ca": 99.0,
                "pa_mean": 20.0, "pa_per_chip": [10.0, 30.0], "pa_nf_mean": sum(chips) / 2,
                "pa_nf_per_chip": chips}  # fmt: skip

    rows = [
        row("resnet18", 0.03, [64.0, 65.96]),  # mean 64.98
        row("vgg11", 0.03, [32.0, 32.08]),  # mean 32.04
        row("vgg11", 0.02, [66.0, 68.0]),  # only the transferred generator was evaluated at 0.02: mean 67
        row("vgg11", 0.02, [68.0, 70.0]),  # the same candidate again (another seed): averaged, mean 68
    ]
    twma = {"resnet18": 1000, "ConvS": 100}
    table = parse_voltage_table("voltage,ber,energy_ratio\n1.0,0,1.0\n0.7,0.02,0.6\n0.6,0.03,0.5\n", "t3")
    sel = select_operating_points(rows, 60.0, table, twma)
    at = {(c["source"], c["ber"]): c for c in sel["candidates"] if c["generator"] == "ConvS"}
    assert set(at) == {("resnet18", 0.03), ("vgg11", 0.03), ("vgg11", 0.02)}
    assert at["resnet18", 0.03]["accuracy"] == pytest.approx(64.98)
    assert at["vgg11", 0.03]["accuracy"] == pytest.approx(32.04) and not at["vgg11", 0.03]["meets"]
    assert at["vgg11", 0.02]["accuracy"] == pytest.approx(68.0)
    # floor 60: the own ConvS at 0.03 (e 0.5) saves 100(1 - (500 + 100)/1000) = 40 %, more than the
    # transferred one at 0.02 (e 0.6): 100(1 - (600 + 100)/1000) = 30 %
    (m,) = sel["models"]
    w = m["with_nf"]
    assert (w["generator"], w["source"], w["ber"], w["accuracy"]) == ("ConvS", "resnet18", 0.03, pytest.approx(64.98))
    assert w["energy_saving"] == pytest.approx(40.0) and "with ConvS (trained at BER 0.03)" in m["message"]
    # floor 65: the own generator (64.98) misses it; vgg11's ConvS, transferred, meets it at 0.02 (68)
    (m,) = select_operating_points(rows, 65.0, table, twma)["models"]
    w = m["with_nf"]
    assert (w["generator"], w["source"], w["ber"], w["accuracy"]) == ("ConvS", "vgg11", 0.02, pytest.approx(68.0))
    assert w["energy_saving"] == pytest.approx(30.0)
    assert "evaluation BER 0.02 with ConvS from vgg11 (trained at BER 0.03)" in m["message"]
    assert "ConvS from vgg11" in format_selection(select_operating_points(rows, 65.0, table, twma))


def test_no_table_row_for_any_evaluation_ber_is_one_line():
    rows = [r | {"eval_ber": 0.05} for r in _rows()]
    with pytest.raises(ValueError) as e:
        select_operating_points(rows, 90.0, TABLE, TWMA)
    msg = str(e.value)
    assert "no evaluation BER of the sweep (0.05) has a row in voltage table t" in msg and "\n" not in msg
    assert "BERs there: 0, 0.001, 0.01, 0.02" in msg and "--interpolate" in msg


def test_voltage_table_curve_and_interpolation():
    t = load_voltage_table()
    assert t.energy_ratio(0.01) == 0.694 and t.point(0.00397706).voltage == 0.8469
    for ber in (0.01212883, 0.00397706, 0.001214473, 0.00015521, 0.000126225, 4.06934e-05, 1.3119e-05):
        p = curve_point(ber)
        assert t.point(ber).voltage == p.voltage and t.energy_ratio(ber) == pytest.approx(p.voltage**2, abs=1e-3)
    assert curve_point(0.01).voltage == 0.83 and curve_point(2**-20).voltage == 1.0
    mid = TABLE.point(0.005, interpolate=True)  # log-linear between 0.001 and 0.01
    assert 0.8 < mid.voltage < 0.9 and 0.7 < mid.energy_ratio < 0.9
    with pytest.raises(ValueError, match="never extrapolates"):
        TABLE.point(0.05, interpolate=True)
    with pytest.raises(ValueError, match="no row for BER 0.005"):
        TABLE.point(0.005)


def test_nf_select_cli_on_a_stored_sweep(tmp_path, capsys):
    from orchestration.cli import main
    from orchestration.spec.config import parse_config
    from orchestration.spec.plan import plan
    from orchestration.store.item_files import item_dir
    from orchestration.store.roots import CONFIG_FILE, sweep_store

    raw = {
        "name": "sel",
        "storage": str(tmp_path),
        "datasets": [{"name": "digits"}],
        "models": ["resnet18"],
        "width": 1.0,
        "generators": ["ConvS"],
        "train_bers": [0.01],
        "evaluation": {"bers": [0.001, 0.01]},
    }
    cfg = parse_config(raw)
    store = sweep_store(cfg)
    store.write_bytes(CONFIG_FILE, yaml.safe_dump(cfg.to_dict()).encode())
    (item,) = plan(cfg)["eval"]
    rows = [
        r | {"source": "resnet18", "target": "resnet18", "generator": "ConvS"}
        for r in _rows()
        if r["generator"] == "G" and r["eval_ber"] in (0.001, 0.01)
    ]
    store.write_json(f"{item_dir('eval', item.id)}/done.json", {"rows": rows})
    vt = tmp_path / "vt.csv"
    vt.write_text("voltage,ber,energy_ratio\n1.0,0,1.0\n0.9,0.001,0.9\n0.8,0.01,0.7\n")
    assert (
        main(
            ["select", "sel", "--storage", str(tmp_path), "--min-accuracy", "90", "--json", "--voltage-table", str(vt)]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    (m,) = out["models"]
    assert (m["with_nf"]["generator"], m["with_nf"]["ber"]) == ("ConvS", 0.01)
    # priced by the cost model: the paper's TWMA of ResNet18 and ConvS (Table 6)
    assert m["with_nf"]["energy_saving"] == pytest.approx(100 * (1 - (2_755_968 * 0.7 + 41_508) / 2_755_968))
    assert m["without_nf"]["ber"] == 0.001 and store.exists("results/select_90.png")
    # nothing meets the floor: one line saying why, exit 2, no figure
    assert main(["select", "sel", "--storage", str(tmp_path), "--min-accuracy", "99", "--voltage-table", str(vt)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("nf: error: no operating point of any base model meets the floor --min-accuracy 99")
    assert not store.exists("results/select_99.png") and not store.exists("results/select_99.json")
    # no voltage-table row for the evaluation BERs (the shipped table lacks 0.001): the same, naming the BERs
    only = tmp_path / "only.csv"
    only.write_text("voltage,ber,energy_ratio\n1.0,0,1.0\n0.7,0.02,0.6\n")
    argv = ["select", "sel", "--storage", str(tmp_path), "--min-accuracy", "50", "--voltage-table", str(only)]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("nf: error: no evaluation BER of the sweep (0.001, 0.01) has a row")
    assert not store.exists("results/select_50.png")
    assert main(["select", "nope", "--storage", str(tmp_path), "--min-accuracy", "90"]) == 2
