"""nf_core.paper: the paper's numbers (Sun et al., NeurIPS 2024, arXiv 2306.16869) beside hand-made results."""

from __future__ import annotations

import math

import pytest

from nf_core import paper


def _one(df, **kw):
    sel = df
    for k, v in kw.items():
        sel = sel[sel[k].isna()] if v is None else sel[sel[k] == v]
    assert len(sel) == 1, sel
    return sel.iloc[0]


@pytest.mark.parametrize(
    ("where", "mean", "std"),
    [
        # Table 12 (F.1 CIFAR-10, relaxed): ResNet18 + DeConvS at 1 % BER: PA (NF) 68.8 ± 6.4, RP 29.9
        (dict(table="12", model="resnet18", generator="DeConvS", eval_ber=0.01, metric="PA_NF"), 68.8, 6.4),
        (dict(table="12", model="resnet18", generator="DeConvS", eval_ber=0.01, metric="RP"), 29.9, None),
        # Table 12: the same base model at 0.5 %: PA 70.1 ± 11.6 (printed in the DeConvL/DeConvS lines)
        (dict(table="12", model="resnet18", generator="", eval_ber=0.005, metric="PA"), 70.1, 11.6),
        # Table 15 (F.4 CIFAR-100): VGG19 + DeConvS at 0.5 %: PA (NF) 39.0 ± 3.7
        (dict(table="15", model="vgg19", generator="DeConvS", eval_ber=0.005, metric="PA_NF"), 39.0, 3.7),
        # Table 21 (G.4 ensembles): ResNet18 + VGG19 → VGG11, ConvL (1.5 %), 1 %: CA (NF) 89.1, PA (NF) 77.0 ± 5.6
        (
            dict(table="21", source="resnet18+vgg19", model="vgg11", generator="ConvL", eval_ber=0.01, metric="PA_NF"),
            77.0,
            5.6,
        ),
        # Table 9 (App. D): VGG19 on ImageNet-10 + UNetS: 18.60 ms (+4.26)
        (dict(table="9", dataset="imagenet10", model="vgg19", generator="UNetS", metric="latency_ms"), 18.60, None),
        (
            dict(table="9", dataset="imagenet10", model="vgg19", generator="UNetS", metric="latency_added_ms"),
            4.26,
            None,
        ),
        # Table 25 (App. I): 20,000 flipped bits: PA (NF) 23.0 ± 8.1
        (dict(table="25", flipped_bits=20000, metric="PA_NF"), 23.0, 8.1),
        # Table 26 (App. J): PreAct ResNet18, 0.5 %, UNetS: PA (NF) 80.4 ± 3.9
        (dict(table="26", model="preact_resnet18", generator="UNetS", eval_ber=0.005, metric="PA_NF"), 80.4, 3.9),
        # Table 3: efficiency ratio of VGG16 + UNetS at 1 %: 292.9
        (dict(table="3", model="vgg16", generator="UNetS", eval_ber=0.01, metric="efficiency"), 292.9, None),
        # Table 24 (H.3 ImageNet-10): VGG19 at 5 bits: PA 15.1 ± 4.4
        (dict(table="24", model="vgg19", generator="", bits=5, metric="PA"), 15.1, 4.4),
        # Table 10 (λ ablation): VGG19, λ = 0.1: PA (NF) 51.2 ± 16
        (dict(table="10", model="vgg19", generator="ConvL", lam=0.1, metric="PA_NF"), 51.2, 16.0),
    ],
)
def test_csv_spot_checks(where: dict, mean: float, std: float | None) -> None:
    """Values copied by hand from the paper's tables (named in each comment)."""
    r = _one(paper.load(), **where)
    assert r["mean"] == mean
    assert math.isnan(r["std"]) if std is None else r["std"] == std


def test_csv_covers_every_table() -> None:
    tables = set(paper.load()["table"])
    assert tables == {"1", "3", *(str(t) for t in range(9, 27))}


def _row(**kw):
    base = dict(
        dataset="cifar10",
        source="resnet18",
        generator="ConvL",
        train_ber=0.01,
        lam=5.0,
        n=10,
        bits=8,
        seed=0,
        eval_ber=0.01,
        fault_model="flip",
        layout="wrap",
    )
    return {**base, **kw}


def test_match_relaxed_row_and_units() -> None:
    # Paper Table 12, ResNet18 + ConvL at 1 % (trained at 1 %): CA (NF) 89.8, PA (NF) 87.8 ± 1.7, RP 48.8;
    # base: CA 92.6, PA 38.9 ± 12.4. Ours over two seeds: PA (NF) 84.4 and 86.0 → 85.2; diff −2.6 = −1.53 std.
    rows = [
        _row(seed=0, ca=92.0, pa_mean=40.0, pa_std=10.0, ca_nf=89.0, pa_nf_mean=84.4, pa_nf_std=2.0, rp=44.4),
        _row(seed=1, ca=93.0, pa_mean=36.0, pa_std=12.0, ca_nf=90.0, pa_nf_mean=86.0, pa_nf_std=3.0, rp=50.0),
    ]
    m = paper.match(rows)
    t12 = m[m["table"] == "12"]
    pa_nf = _one(t12, metric="PA_NF")
    assert pa_nf["runs"] == 2 and pa_nf["ours"] == pytest.approx(85.2) and pa_nf["ours_std"] == pytest.approx(2.5)
    assert pa_nf["std_from"] == "paper" and pa_nf["z"] == pytest.approx(-2.6 / 1.7)
    rp = _one(t12, metric="RP")  # (44.4 + 50.0) / 2 = 47.2; −1.6 in units of the paper's PA (NF) std 1.7
    assert (
        rp["ours"] == pytest.approx(47.2) and rp["std_from"] == "paper PA_NF" and rp["z"] == pytest.approx(-1.6 / 1.7)
    )
    pa = _one(t12, metric="PA")  # (40 + 36) / 2 = 38.0 vs 38.9 ± 12.4
    assert pa["z"] == pytest.approx(-0.9 / 12.4)
    ca_nf = _one(t12, metric="CA_NF")  # clean accuracy: no chip std, no z
    assert ca_nf["ours"] == pytest.approx(89.5) and math.isnan(ca_nf["z"]) and ca_nf["std_from"] == "none"
    # The same configuration is Table 10's λ = 5 row; Table 1 (trained at 1.5 %) does not match.
    assert set(m.loc[m["metric"] == "PA_NF", "table"]) == {"10", "12"}

    card = paper.scorecard(m).set_index("metric")
    # Counted once although printed in Tables 10 and 12 (and the base rows in more): PA (0.07) and RP (0.94)
    # within 1, PA (NF) (1.53) in 1-2, CA and CA (NF) without a chip std.
    assert card.loc["PA", "|Δ| ≤ 1 std"] == 1 and card.loc["RP", "|Δ| ≤ 1 std"] == 1
    assert card.loc["PA_NF", "1 < |Δ| ≤ 2 std"] == 1 and card.loc["CA_NF", "no chip std"] == 1
    assert card.loc["total"].to_dict() == {
        "|Δ| ≤ 1 std": 2,
        "1 < |Δ| ≤ 2 std": 1,
        "|Δ| > 2 std": 0,
        "no chip std": 2,
        "matched": 5,
    }


def test_match_transfer_ensemble_and_beyond_two_std() -> None:
    # Table 21: source ResNet18 + VGG19 (listed in either order), target VGG16, ConvL trained at 1.5 %, 0.5 % BER:
    # PA (NF) 88.2 ± 0.7. Ours 85.0: diff −3.2 = −4.57 std → beyond 2.
    rows = [
        _row(source="vgg19+resnet18", target="vgg16", train_ber=0.015, eval_ber=0.005, pa_nf_mean=85.0, pa_nf_std=1.0)
    ]
    m = paper.match(rows)
    r = _one(m, table="21", metric="PA_NF")
    assert r["paper_mean"] == 88.2 and r["z"] == pytest.approx(-3.2 / 0.7)
    assert paper.bucket(r["z"]) == "|Δ| > 2 std"


def test_no_match_for_other_configurations() -> None:
    rows = [
        _row(lam=3.0, pa_nf_mean=80.0),  # λ the paper never used with ConvL on ResNet18
        _row(dataset="digits", pa_nf_mean=80.0),  # a dataset the paper does not have
        _row(generator="UNetS", train_ber=0.015, pa_nf_mean=80.0),  # UNetS was never trained at 1.5 %
    ]
    assert paper.match(rows).empty
    # An adversarially trained generator (20,000 flipped bits) matches Table 25 only, never the EOPM tables
    # (Table 12 has the same dataset/model/generator/BERs): PA (NF) 23.0 ± 8.1, ours 23.0 → 0 std.
    adv = paper.match([_row(flipped_bits=20000, pa_nf_mean=23.0)])
    assert set(adv["table"]) == {"25"} and _one(adv, metric="PA_NF")["z"] == pytest.approx(0.0)


def test_unit_falls_back_to_ours_when_paper_std_is_zero() -> None:
    # Table 22 (H.1): ResNet18 at 2 bits, PA 10.0 ± 0.0 → the unit is our PA std (2.0): ours 12.0 → +1 std.
    rows = [_row(bits=2, eval_ber=0.005, generator=None, pa_mean=12.0, pa_std=2.0)]
    r = _one(paper.match(rows), table="22", metric="PA")
    assert r["std_from"] == "ours" and r["z"] == pytest.approx(1.0)


def test_paper_section_figure_and_tables(tmp_path) -> None:
    from orchestration.report.html import section_html
    from orchestration.report.paper import paper_section
    from orchestration.store.results import results_table

    rows = [_row(ca=92.0, pa_mean=40.0, pa_std=10.0, ca_nf=89.0, pa_nf_mean=86.1, pa_nf_std=2.0, rp=46.1)]
    s = paper_section(results_table(rows), tmp_path)  # an Arrow results table, as build.py holds it
    assert s.skipped is None and s.figures == ["figures/paper_scatter.png"]
    assert (tmp_path / "figures" / "paper_scatter.png").read_bytes()[:4] == b"\x89PNG"
    (card_head, card_body, files), (head, body, _) = s.tables
    assert card_body[-1][0] == "total" and card_body[-1][-1] == "5"  # CA, PA, CA (NF), PA (NF), RP
    assert (tmp_path / files["csv"]).exists()
    pa_nf = next(r for r in body if r[0] == "12" and r[8] == "PA (NF)")
    assert pa_nf[9] == "87.8 ± 1.7" and pa_nf[12] == "-1.70" and pa_nf[13] == "-1.00"
    assert "paper_scatter.png" in section_html(s)
    assert "no result row" in paper_section([_row(dataset="digits", pa_nf_mean=1.0)], tmp_path).skipped


def test_latency_section_puts_paper_ms_beside(tmp_path) -> None:
    from orchestration.report.paper import latency_section

    res = {
        "model": "resnet18",
        "dataset": "cifar10",
        "device": "cpu (test CPU, 2 torch threads)",
        "runs": 10,
        "rows": [
            {"generator": None, "median_ms": 4.0, "p90_ms": 5.0, "added_ms": None},
            {"generator": "ConvL", "median_ms": 7.5, "p90_ms": 8.0, "added_ms": 3.5},
        ],
    }
    s = latency_section([res], tmp_path)
    (_, body, _) = s.tables[0]
    # Table 9: ResNet18 (CIFAR-10) 5.84 ms alone, 9.37 ms with ConvL
    assert [r[2] for r in body] == ["-", "ConvL"] and [r[6] for r in body] == ["5.84", "9.37"]
    assert body[1][5] == "+3.50" and body[0][8].startswith("cpu (")
    assert latency_section([], tmp_path).skipped
