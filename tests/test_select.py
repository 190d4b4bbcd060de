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
    # floor 94.5: only G2 at 0.001 (mean 95, ES 100(1 - (900 + 250)/1000) = -15 %) and nominal (CA 95) meet
    sel = select_operating_points(_rows(), 94.5, TABLE, TWMA)
    m = sel["models"][0]
    assert m["with_nf"]["ber"] == 0.0 and m["without_nf"]["ber"] == 0.0 and "only nominal" in m["message"]
    g2 = next(c for c in sel["candidates"] if c["generator"] == "G2" and c["ber"] == 0.001)
    assert g2["meets"] and g2["energy_saving"] == pytest.approx(-15.0)
    with pytest.raises(ValueError, match="percentile 120"):
        select_operating_points(_rows(), 90, TABLE, TWMA, percentile=120)
    with pytest.raises(ValueError, match="no TWMA for generator 'G2'"):
        select_operating_points(_rows(), 90, TABLE, {"m": 1000, "G": 100})


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
    assert main(["select", "sel", "--storage", str(tmp_path), "--min-accuracy", "99", "--voltage-table", str(vt)]) == 0
    assert "no operating point meets the floor 99%" in capsys.readouterr().out
    assert main(["select", "nope", "--storage", str(tmp_path), "--min-accuracy", "90"]) == 2
