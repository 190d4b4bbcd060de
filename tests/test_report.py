"""`nf report`'s builders on small hand-made results tables: files, numbers, Pareto front, partial sweeps,
and the whole path from a sweep's storage (done.json files) to the page and the MLflow parent run."""

from __future__ import annotations

import os
import re

import pandas as pd
import pytest
import yaml

from orchestration.report import build, figures
from tests.report_support import plain_rows, rich_rows


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    out = tmp_path_factory.mktemp("plain")
    return out, build.build_report(plain_rows(), out, {"name": "t", "models": ["resnet18", "vgg11"]})


@pytest.fixture(scope="module")
def rich(tmp_path_factory):
    out = tmp_path_factory.mktemp("rich")
    return out, build.build_report(rich_rows(), out, missing=["eval: 2 of 9 not done (2 pending): a, b"])


def _sections(res) -> dict:
    return {s.key: s for s in res["sections"]}


def test_pareto_front_leaves_out_dominated_points():
    pts = [(10.0, 5.0), (20.0, 3.0), (15.0, 2.0), (5.0, 5.0), (20.0, 3.0)]
    # (15, 2) is beaten by (20, 3) on both; (5, 5) by (10, 5) on energy; the duplicate (20, 3) is not dominated
    assert figures.pareto_front(pts) == [0, 1, 4]
    assert figures.pareto_front([(1.0, 1.0)]) == [0]
    assert figures.pareto_front([]) == []


def test_main_table_numbers_by_hand(plain):
    out, _ = plain
    csv = pd.read_csv(out / "tables" / "main.csv")
    cell = csv[(csv["model"] == "resnet18") & (csv["generator"] == "ConvL")].iloc[0]
    # seeds 0 and 1: PA 40 and 41, PA (NF) 60 and 62, PA std 4 and 5 → means
    assert cell["pa_mean"] == pytest.approx((40 + 41) / 2)
    assert cell["pa_nf_mean"] == pytest.approx((60 + 62) / 2)
    assert cell["pa_std"] == pytest.approx(4.5)
    assert cell["rp"] == pytest.approx(61 - 40.5)
    # RP's paired per-chip std: chips (PA, PA (NF)) = (36, 57), (44, 63) → RP 21, 19 → std 1 (seed 0);
    # (36, 59), (46, 65) → RP 23, 19 → std 2 (seed 1); averaged over seeds like PA's std
    assert cell["rp_std"] == pytest.approx(1.5)
    assert cell["runs"] == 2
    # vgg11 + UNetL: PA (NF) 60 + 10 + 5 (+ 2 for seed 1) → 76; the transfer row (source resnet18) is not in it
    vgg = csv[(csv["model"] == "vgg11") & (csv["generator"] == "UNetL")].iloc[0]
    assert vgg["pa_nf_mean"] == pytest.approx(76.0)
    assert len(csv) == 4 and "source" not in csv  # every source is its own base model: not a column
    md = (out / "tables" / "main.md").read_text()
    assert "| 40.50 ± 4.50 |" in md and "| +20.50 ± 1.50 |" in md
    assert "RP" in md.splitlines()[0] and "rp_std" not in md  # RP's std shown beside it, not as a column
    tex = (out / "tables" / "main.tex").read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"40.50 $\pm$ 4.50" in tex and r"+20.50 $\pm$ 1.50" in tex and tex.isascii()  # compiles without inputenc


def test_plain_sweep_files_and_reasons(plain):
    out, res = plain
    s = _sections(res)
    for m in ("resnet18", "vgg11"):
        for ext in ("png", "svg"):
            assert (out / "figures" / f"bars_cifar10_{m}.{ext}").stat().st_size > 1000
    assert (out / "figures" / "transfer_cifar10_stuck_at.png").exists()
    assert (out / "tables" / "transfer_cifar10.csv").exists()
    assert (out / "figures" / "energy_cifar10_0.01.png").exists()
    # no ablations, one BER, no UIP, no ensembles: those sections say why they are left out
    for key in ("ber", "ablation_lam", "ablation_n", "precision", "uip", "ensembles"):
        assert s[key].skipped and not s[key].figures
    assert not list(out.glob("figures/ablation_*")) and not list(out.glob("tables/ablation_*"))
    page = (out / "index.html").read_text()
    assert "Left out: the sweep does not vary λ" in page
    assert "Left out: the sweep evaluates at one evaluation BER only (0.01)" in page
    assert "Partial sweep" not in page
    assert "<dt>base models</dt><dd>resnet18, vgg11</dd>" in page
    assert res["index"] == os.path.join(out, "index.html")
    assert len(res["figures"]) == 2 * len([f for sec in res["sections"] for f in sec.figures])


def test_energy_points_use_the_cost_model(plain):
    from nf_core.cost import energy_saving, profile_generator, profile_model

    out, _ = plain
    pts = pd.read_csv(out / "tables" / "energy.csv")
    r = pts[(pts["model"] == "vgg11") & (pts["generator"] == "UNetL")].iloc[0]
    by_hand = 100 * (
        1
        - (profile_model("vgg11", "cifar10")["twma"] * 0.694 + profile_generator("UNetL", "cifar10")["twma"])
        / profile_model("vgg11", "cifar10")["twma"]
    )
    assert r["energy_saving"] == pytest.approx(by_hand)
    assert r["energy_saving"] == pytest.approx(
        energy_saving(profile_model("vgg11", "cifar10")["twma"], profile_generator("UNetL", "cifar10")["twma"], 0.694)
    )
    assert r["rp"] == pytest.approx(76.0 - 40.5)
    front = figures.pareto_front(list(zip(pts["energy_saving"], pts["rp"])))
    assert sorted(pts.index[pts["pareto"]].tolist()) == sorted(front)
    assert 0 < len(front) < len(pts)  # ConvL on resnet18 is beaten by ConvL on vgg11 (same saving order, more RP)


def test_energy_points_with_an_injected_cost_and_a_missing_voltage_row():
    def energy(model, gen, ds, ber):
        if ber != 0.01:
            raise ValueError(f"no row for BER {ber:g}; add one")
        return {"ConvL": 30.0, "UNetL": 20.0}[gen]

    pts, why = figures.energy_points(plain_rows(), energy)
    assert why == []
    r18 = pts[pts["model"] == "resnet18"].set_index("generator")
    # ConvL: 30 % saving, RP 20.5; UNetL: 20 % saving, RP 30.5 — both on the front; vgg11's points dominate them
    assert r18.loc["ConvL", "energy_saving"] == 30.0 and r18.loc["ConvL", "rp"] == pytest.approx(20.5)
    assert not r18["pareto"].any()
    assert pts[pts["model"] == "vgg11"]["pareto"].all()
    rows = [dict(r, eval_ber=0.02) for r in plain_rows()]
    pts, why = figures.energy_points(rows, energy)
    assert pts.empty and why == ["no row for BER 0.02"]


def test_rich_sweep_has_every_section(rich):
    out, res = rich
    s = _sections(res)
    assert not any(sec.skipped for sec in s.values()), {k: v.skipped for k, v in s.items()}
    for f in (
        "ablation_lam_cifar10_resnet18",
        "ablation_n_cifar10_resnet18",
        "precision_cifar10_resnet18",
        "uip",
        "ensembles_cifar10_ConvL",
        "ber_cifar10_resnet18",
    ):
        assert (out / "figures" / f"{f}.png").exists() and (out / "figures" / f"{f}.svg").exists()
    # vgg11 has only the ensemble's generator (one λ): no λ figure for it
    assert not (out / "figures" / "ablation_lam_cifar10_vgg11.png").exists()
    # one point is at BER 0.02, which the shipped voltage table lacks: said, not hidden
    assert any("0.02" in n for n in s["energy"].notes)
    page = (out / "index.html").read_text()
    assert "Partial sweep" in page and "eval: 2 of 9 not done (2 pending): a, b" in page
    # every section link reads differently; the two ablations keep their full titles
    nav = re.search(r'<p class="files">Sections: (.*?)</p>', page).group(1)
    links = re.findall(r">([^<]+)</a>", nav)
    assert len(links) == len(s) and len(set(links)) == len(links)
    assert "e. Ablation: RP versus λ" in links and "e. Ablation: RP versus N" in links
    assert "a. Main result" in links


def test_config_summary_spells_booleans_as_yaml():
    summary = dict(build.config_summary({"transfer": True, "models": ["resnet18"], "width": 0.125}))
    assert summary["transfer"] == "true" and summary["width"] == "0.125"
    assert dict(build.config_summary({"transfer": False}))["transfer"] == "false"


def test_ablation_table_numbers(rich):
    out, _ = rich
    t = pd.read_csv(out / "tables" / "ablation_lam.csv")
    t = t[(t["generator"] == "ConvL") & (t["source"] == "resnet18") & (t["eval_ber"] == 0.01)]
    # RP = (60 + λ + N − 1000·BER) − (50 − 1000·BER) at N = 5, 8 bits (the main setting) = 15 + λ
    assert dict(zip(t["lam"], t["rp"])) == {1.0: pytest.approx(16.0), 5.0: pytest.approx(20.0)}
    tex = (out / "tables" / "ablation_lam.tex").read_text()
    assert tex.isascii() and r"$\lambda$" in tex
    main = pd.read_csv(out / "tables" / "main.csv")
    # the main table holds λ, N and bits at their main values (5, 5, 8): one row per eval BER, RP = 15 + 5
    assert "lam" not in main and "n" not in main and "bits" not in main
    own = main[(main["generator"] == "ConvL") & (main["source"] == "resnet18")]
    assert sorted(own["eval_ber"]) == [0.01, 0.02] and list(own["rp"]) == [pytest.approx(20.0)] * 2


def test_nothing_done_yet(tmp_path):
    res = build.build_report([], tmp_path, missing=["base: 2 of 2 not done (2 pending): x, y"])
    assert all(s.skipped for s in res["sections"])
    page = (tmp_path / "index.html").read_text()
    assert page.count("Left out: no evaluated generator yet") >= 3 and "base: 2 of 2 not done" in page


def test_missing_items_lines():
    states = {
        "base": {"a": "done", "b": "done"},
        "eval": {f"e{i}": s for i, s in enumerate(["done", "failed", "pending", *["pending"] * 6])},
    }
    lines = build.missing_items(states)
    assert lines == ["eval: 8 of 9 not done (7 pending, 1 failed): e1, e2, e3, e4, e5 … and 3 more"]


def _stored_sweep(root, tmp_path, done_evals: int, **extra):
    """A sweep in storage as the driver leaves it: sweep.yaml, some eval items' done.json, a tracked parent run."""
    from orchestration.spec.config import parse_config
    from orchestration.spec.plan import plan
    from orchestration.store.item_files import item_dir
    from orchestration.store.roots import CONFIG_FILE, sweep_store
    from orchestration.sweep.runner import tracking_uri
    from orchestration.tracking.tracker import SweepTracker
    from tests.report_support import row

    cfg = parse_config(
        {
            "name": "rep",
            "storage": str(root),
            "models": ["resnet18", "vgg11"],
            "generators": ["ConvS", "UNetS"],
            "datasets": [{"name": "digits"}],
            "transfer": False,
            **extra,
        }
    )
    store = sweep_store(cfg)
    store.write_bytes(CONFIG_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())
    items = plan(cfg)
    for it in items["base"] + items["generator"]:
        store.write_json(f"{item_dir(it.stage, it.id)}/done.json", {})
    for k, it in enumerate(items["eval"][:done_evals]):
        p = it.params
        store.write_json(
            f"{item_dir('eval', it.id)}/done.json",
            {"rows": [row(p["source"][0], p["generator"], dataset="digits", pa_nf=60.0 + k)]},
        )
    tracker = SweepTracker(tracking_uri(cfg, store), cfg.name, store.url("mlartifacts"))
    tracker.ensure_experiment()
    return cfg, items, tracker, tracker.parent_run(cfg.name)


def test_report_from_storage_partial_and_logged_to_mlflow(tmp_path, capsys):
    from orchestration import cli

    _, items, tracker, parent = _stored_sweep(tmp_path / "sweeps", tmp_path, done_evals=3)
    assert cli.main(["report", "rep", "--storage", str(tmp_path / "sweeps")]) == 0
    out = capsys.readouterr().out
    index = tmp_path / "sweeps" / "rep" / "report" / "index.html"
    assert f"report: {index}" in out
    page = index.read_text()
    missing = items["eval"][3].id
    assert "Partial sweep" in page and f"eval: 1 of 4 not done (1 pending): {missing}" in page
    csv = pd.read_csv(index.parent / "tables" / "main.csv")
    assert len(csv) == 3 and sorted(csv["pa_nf_mean"]) == [60.0, 61.0, 62.0]
    logged = _artifacts(tracker.client, parent)
    assert {"report/figures/bars_digits_resnet18.png", "report/figures/bars_digits_resnet18.svg"} <= logged
    assert "report/index.html" in logged and "report/tables/main.csv" in logged


def _artifacts(client, run_id: str, path: str = "") -> set[str]:
    """Every artifact file of a run (recursively)."""
    out = set()
    for a in client.list_artifacts(run_id, path or None):
        out |= _artifacts(client, run_id, a.path) if a.is_dir else {a.path}
    return out


def _files(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_report_out_leaves_mlflow_alone_and_own_reports_replace_one_set(tmp_path, capsys):
    """`--out DIR` writes files only; the sweep's own report replaces the parent run's report/ artifacts
    (and its own folder) as one set, so nothing of an earlier report stays."""
    from orchestration import cli

    sweeps = tmp_path / "sweeps"
    _, _, tracker, parent = _stored_sweep(sweeps, tmp_path, done_evals=4)
    client = tracker.client
    assert _artifacts(client, parent) == set()
    assert cli.main(["report", "rep", "--storage", str(sweeps), "--out", str(tmp_path / "elsewhere")]) == 0
    assert "MLflow" not in capsys.readouterr().out
    assert (tmp_path / "elsewhere" / "index.html").exists()
    assert _artifacts(client, parent) == set() and "nf.report" not in client.get_run(parent).data.tags

    assert cli.main(["report", "rep", "--storage", str(sweeps)]) == 0
    own = sweeps / "rep" / "report"
    first = _artifacts(client, parent)
    assert first == {f"report/{f}" for f in _files(own)} and "report/index.html" in first
    # an earlier report's leftovers (a figure no longer drawn) in the run and in the folder
    stale = tmp_path / "ber_digits_old.png"
    stale.write_bytes(b"old")
    client.log_artifact(parent, str(stale), "report/figures")
    (own / "figures" / "ber_digits_old.png").write_bytes(b"old")
    assert "report/figures/ber_digits_old.png" in _artifacts(client, parent)

    assert cli.main(["report", "rep", "--storage", str(sweeps)]) == 0
    second = _artifacts(client, parent)
    assert second == first == {f"report/{f}" for f in _files(own)}  # exactly one set, the current one
    assert client.get_run(parent).data.tags["nf.report"] == "report"
    assert cli.main(["report", "rep", "--storage", str(sweeps), "--out", str(tmp_path / "again")]) == 0
    assert _artifacts(client, parent) == second


def test_report_of_unknown_sweep_is_a_clear_error(tmp_path, capsys):
    from orchestration import cli

    assert cli.main(["report", "nope", "--storage", str(tmp_path)]) == 2
    assert "no sweep 'nope'" in capsys.readouterr().err


def test_report_of_a_sweep_on_s3(tmp_path, monkeypatch, capsys, s3_server):
    """S3 storage (moto's server on loopback): the page is written beside the sweep, in the bucket."""
    import boto3

    from orchestration import cli

    for k, v in {
        "AWS_ACCESS_KEY_ID": "nf-test-key",
        "AWS_SECRET_ACCESS_KEY": "nf-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(k, v)
    # nf report sets MLflow's S3 endpoint itself; set-then-delete makes pytest restore the original afterwards
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "unset")
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL")
    endpoint = s3_server  # the session's moto server (tests/conftest.py)
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket="nf-sweeps")
    _, _, tracker, parent = _stored_sweep(
        "s3://nf-sweeps/team",
        tmp_path,
        done_evals=4,
        s3_endpoint=endpoint,
        mlflow={"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"},
    )
    s3.put_object(Bucket="nf-sweeps", Key="team/rep/report/figures/old.png", Body=b"an earlier report's")
    assert cli.main(["report", "rep", "--storage", "s3://nf-sweeps/team", "--s3-endpoint", endpoint]) == 0
    assert "report uploaded to s3://nf-sweeps/team/rep/report/index.html" in capsys.readouterr().out
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="nf-sweeps", Prefix="team/rep/report/")["Contents"]}
    assert {
        "team/rep/report/index.html",
        "team/rep/report/tables/main.csv",
        "team/rep/report/figures/bars_digits_vgg11.png",
    } <= keys
    assert "team/rep/report/figures/old.png" not in keys
    page = s3.get_object(Bucket="nf-sweeps", Key="team/rep/report/index.html")["Body"].read().decode()
    assert "Partial sweep" not in page  # every eval item done (base/generator markers too)
    assert "report/figures/bars_digits_vgg11.png" in _artifacts(tracker.client, parent)
