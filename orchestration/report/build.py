"""Assemble a report from results rows (pure), or from a sweep's storage (`nf report NAME`)."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from orchestration.report import figures as F
from orchestration.report import tables as T
from orchestration.report.html import Section, page

FIG_DIR = "figures"
TAB_DIR = "tables"


def _table(section: Section, df: pd.DataFrame, out_dir: str, stem: str, caption: str) -> None:
    paths = T.write_table(df, os.path.join(out_dir, TAB_DIR), stem, caption)
    head, body = T.display_table(df)
    section.tables.append((head, body, {k: os.path.relpath(p, out_dir) for k, p in paths.items()}))


def _figures(section: Section, make: Callable[[str], list[str]], out_dir: str) -> bool:
    """Run one figure builder; on Skip the section is left out with its reason. True when figures came out."""
    try:
        names = make(os.path.join(out_dir, FIG_DIR))
    except F.Skip as why:
        section.skipped = str(why)
        return False
    section.figures += [f"{FIG_DIR}/{n}" for n in names]
    return True


def _cols(df: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    return df[[c for c in df.columns if c not in T._METRICS and c != "runs"] + metrics + ["runs"]]


def build_sections(
    rows: Any,
    out_dir: str,
    energy: F.EnergyFn | None = None,
    energy_convention: str | None = None,
    training_hours: dict[str, float] | None = None,
) -> list[Section]:
    """Every section's figures and tables written under ``out_dir`` (figures/, tables/)."""
    from orchestration.store.results import results_table, transfer_matrix

    table = results_table(rows)  # the Arrow table: what orchestration.store.results' builders take
    df = table.to_pandas()
    main = T.main_table(df)
    out: list[Section] = []

    held = ", ".join(f"{ {'lam': 'λ', 'n': 'N'}.get(k, k) } = {v:g}" for k, v in T.main_values(df).items())
    s = Section(
        "main",
        "a. Main result: CA, PA, CA (NF), PA (NF) per generator",
        "Per dataset × base model, each generator's accuracies; error bars: PA's std over the evaluation "
        "chips. CA/PA without NeuralFuse are the base model's; (NF) with the generator in front. "
        "Numbers are averaged over seeds; RP = PA (NF) − PA in percentage points, ± the std over chips of "
        "each chip's PA (NF) − PA." + (f" Shown at {held}; the ablations below vary them." if held else ""),
    )
    if _figures(s, lambda d: F.bars(df, d), out_dir):
        _table(s, main, out_dir, "main", "Base model × generator: CA, PA, CA (NF), PA (NF), RP, efficiency ratio")
    out.append(s)

    s = Section(
        "ber",
        "b. Perturbed accuracy versus evaluation BER",
        "One panel per generator: solid, PA with that generator in front; dashed, the base model without "
        "NeuralFuse (the same in every panel). Bands: ± std over chips.",
    )
    if _figures(s, lambda d: F.ber_curves(df, d), out_dir):
        _table(
            s,
            _cols(main, ["pa_mean", "pa_std", "pa_nf_mean", "pa_nf_std"]),
            out_dir,
            "pa_vs_ber",
            "PA and PA (NF) versus evaluation BER",
        )
    out.append(s)

    s = Section(
        "transfer",
        "c. Transfer matrices (RP, percentage points)",
        "Rows: the generator and what it was trained on; columns: the model it protects at an evaluation "
        "BER. Off-diagonal cells are transfer to models the generator never saw.",
    )
    if _figures(s, lambda d: F.transfer_heatmaps(table, d), out_dir):
        for ds in sorted(df.loc[df["generator"].notna(), "dataset"].unique()):
            _table(s, transfer_matrix(table, ds).to_pandas(), out_dir, f"transfer_{ds}", f"Transfer matrix, {ds}")
    out.append(s)

    # the networks the saving is priced on (nf_core.cost.energy_convention), printed beside every saving
    convention = energy_convention or "paper full-size networks (width 1)"
    s = Section(
        "energy",
        "d. Energy saving versus recovery",
        f"Energy saving from `nf profile`'s cost model (energy: {convention}; SRAM accesses, generator "
        "at nominal voltage, base model at the evaluation BER's voltage) against RP; ringed points and the "
        "line: the Pareto front, the generators no other beats on both.",
    )
    pts, why = F.energy_points(df, energy or F.cost_model_saving)
    if not pts.empty or not why:
        if _figures(s, lambda d: F.energy_figures(pts, d, convention), out_dir):
            _table(s, pts, out_dir, "energy", f"Energy saving (%, {convention}) and RP (pp); pareto: on the front")
    else:
        s.skipped = "no energy saving could be computed: " + "; ".join(why)
    s.notes += [f"Some points left out: {w}" for w in why] if not s.skipped else []
    out.append(s)

    for key, title in (("lam", "e. Ablation: RP versus λ"), ("n", "e. Ablation: RP versus N")):
        s = Section(f"ablation_{key}", title)
        if _figures(s, lambda d, k=key: F.ablation(df, d, k), out_dir):
            _table(s, _cols(T.main_table(df, key), ["rp", "rp_std"]), out_dir, f"ablation_{key}", title)
        out.append(s)
    s = Section("precision", "e. Precision: PA and PA (NF) versus bits")
    if _figures(s, lambda d: F.precision(df, d), out_dir):
        _table(
            s,
            _cols(T.main_table(df, "bits"), ["pa_mean", "pa_std", "pa_nf_mean", "pa_nf_std", "rp", "rp_std"]),
            out_dir,
            "precision",
            "PA and PA (NF) versus weight precision",
        )
    out.append(s)
    s = Section(
        "uip",
        "e. The UIP baseline beside the generators",
        "UIP (a universal input perturbation, grey hatched) against the trained generators.",
    )
    if _figures(s, lambda d: F.uip(df, d), out_dir):
        _table(
            s, _cols(main, ["ca_nf", "pa_nf_mean", "pa_nf_std", "rp", "rp_std"]), out_dir, "uip", "UIP and generators"
        )
    out.append(s)

    s = Section(
        "ensembles",
        "f. Ensembles beside single-model generators",
        "RP on each base model of a generator trained for it alone, for an ensemble containing it (hatched), "
        "and for another single model (transfer).",
    )
    if _figures(s, lambda d: F.ensembles(df, d), out_dir):
        gen = df[df["generator"].notna()]
        _table(
            s,
            T.average_seeds(gen, ["dataset", "generator", "source", "target", "eval_ber"])[
                [
                    "dataset",
                    "generator",
                    "source",
                    "target",
                    "eval_ber",
                    "pa_mean",
                    "pa_nf_mean",
                    "rp",
                    "rp_std",
                    "runs",
                ]
            ],
            out_dir,
            "ensembles",
            "Ensemble and single-model generators",
        )
    out.append(s)
    from orchestration.report.protection import section as protection_section

    s = protection_section(rows, out_dir, energy or F.cost_model_saving, training_hours, _table, convention)
    if s is not None:  # only sweeps with a base.training other than standard
        out.append(s)
    return out


def config_summary(cfg: dict[str, Any]) -> list[tuple[str, str]]:
    """The config fields a reader needs to interpret the numbers, as (label, value) pairs."""

    def j(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"  # as the sweep's YAML spells it, not Python's True
        if isinstance(v, (list, tuple)):
            return ", ".join(j(x) for x in v)
        if isinstance(v, dict):
            return v.get("name", str(v))
        return str(v)

    ev = cfg.get("evaluation", {})
    pick = [
        ("datasets", cfg.get("datasets")),
        ("base models", cfg.get("models")),
        ("width", cfg.get("width")),
        ("ensembles", cfg.get("ensembles") and ["+".join(e) for e in cfg["ensembles"]]),
        ("generators", cfg.get("generators")),
        ("training BERs", cfg.get("train_bers")),
        ("λ", cfg.get("lambdas")),
        ("N (chips per step)", cfg.get("ns")),
        ("fault model", cfg.get("fault_model")),
        ("layout", cfg.get("layout")),
        ("bits", cfg.get("bits")),
        ("seeds", cfg.get("seeds")),
        ("evaluation BERs", ev.get("bers")),
        ("evaluation chips", ev.get("chips")),
        ("evaluation bits", ev.get("bits")),
        ("base epochs", cfg.get("base", {}).get("epochs")),
        ("base training", cfg.get("base", {}).get("training")),
        ("generator epochs", cfg.get("generator", {}).get("epochs")),
        ("transfer", cfg.get("transfer")),
        ("storage", cfg.get("storage")),
    ]
    return [(k, j(v)) for k, v in pick if v not in (None, [], "")]


def build_report(
    rows: Any,
    out_dir: str | os.PathLike,
    config: dict[str, Any] | None = None,
    missing: list[str] | None = None,
    title: str = "NeuralFuse sweep report",
    energy: F.EnergyFn | None = None,
    energy_convention: str | None = None,
    training_hours: dict[str, float] | None = None,
    extra: list[Section] | None = None,
) -> dict[str, Any]:
    """Write index.html, figures/ (PNG + SVG) and tables/ (CSV, LaTeX, Markdown) under ``out_dir``.

    ``rows``: results rows (dicts, a results table or DataFrame-like); ``missing``: one line per group of
    unfinished items (a partial sweep); ``extra``: sections built elsewhere, after the main ones (a stored
    sweep's appendix sections, orchestration/report/appendix.py).
    Returns {"index", "figures" (absolute PNG/SVG paths), "sections"}."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    if isinstance(rows, pd.DataFrame):
        rows = rows.to_dict("records")
    sections = build_sections(rows, out_dir, energy, energy_convention, training_hours) + list(extra or [])
    n = len(T.frame(rows))
    sub = f"{n} result rows · built {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by nf report"
    index = os.path.join(out_dir, "index.html")
    with open(index, "w", encoding="utf-8") as f:
        f.write(page(title, sub, config_summary(config or {}), missing or [], sections))
    figs = [os.path.join(out_dir, p[:-4] + ext) for s in sections for p in s.figures for ext in (".png", ".svg")]
    return {"index": index, "figures": [p for p in figs if os.path.exists(p)], "sections": sections}


# --- from a sweep's storage -------------------------------------------------------------------------


def missing_items(states: dict[str, dict[str, str]]) -> list[str]:
    """One line per stage with unfinished items: counts by state and the first few ids."""
    lines = []
    for stage, items in states.items():
        left = {i: s for i, s in items.items() if s != "done"}
        if not left:
            continue
        counts = ", ".join(
            f"{sum(1 for s in left.values() if s == k)} {k}"
            for k in ("running", "pending", "failed")
            if k in left.values()
        )
        ids = sorted(left)
        more = f" … and {len(ids) - 5} more" if len(ids) > 5 else ""
        lines.append(f"{stage}: {len(left)} of {len(items)} not done ({counts}): {', '.join(ids[:5])}{more}")
    return lines


REPORT_ARTIFACTS = "report"  # the parent run's artifact folder holding the sweep's own report


def log_to_mlflow(cfg: Any, store: Any, out_dir: str, log: Callable[[str], None] = print) -> str | None:
    """Log the whole report folder (page, figures, tables) to the sweep's parent run under ``report/``,
    replacing what an earlier report left there as one set; returns the run id, or None when the sweep
    has no tracking database or parent run.

    MLflow's client cannot delete artifacts, but every artifact repository (local folder, S3, the
    tracking server's proxy) implements ``delete_artifacts``: the old ``report/`` folder is removed
    through the run's own repository before the new one is logged. Where a repository cannot delete,
    the report goes to a fresh ``report-<UTC time>/`` folder instead; the tag ``nf.report`` always names
    the folder holding the current report."""
    from orchestration.sweep.runner import tracking_uri

    uri = cfg.mlflow.tracking_uri
    if uri is None:  # the embedded SQLite default: only if the sweep's driver created it
        from orchestration.tracking.sync import default_db_exists

        if not default_db_exists(cfg, store):
            return None
        uri = tracking_uri(cfg, store)
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(cfg.mlflow.experiment or cfg.name)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id], f"tags.`nf.sweep` = '{cfg.name}' and tags.`nf.role` = 'parent'", max_results=1
    )
    if not runs:
        return None
    run = runs[0]
    if store.is_s3 and cfg.s3_endpoint:
        os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", cfg.s3_endpoint)
    repo = get_artifact_repository(run.info.artifact_uri, tracking_uri=uri)
    folder = REPORT_ARTIFACTS
    try:
        previous = run.data.tags.get("nf.report")
        for old in {REPORT_ARTIFACTS, previous} - {None}:
            repo.delete_artifacts(old)
    except (NotImplementedError, OSError) as e:  # a store that cannot delete: keep the old set, start a new one
        folder = f"{REPORT_ARTIFACTS}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        log(f"nf: warning: could not replace the MLflow report artifacts ({type(e).__name__}); logging to {folder}/")
    client.log_artifacts(run.info.run_id, out_dir, folder)
    client.set_tag(run.info.run_id, "nf.report", folder)
    log(f"report logged to MLflow run {run.info.run_id} (artifacts/{folder}/, replacing the previous report)")
    return run.info.run_id


def _clear_own(out: str) -> None:
    """Empty the sweep's own report folder (figures/, tables/, index.html) so no file of an earlier report stays."""
    import shutil

    for sub in (FIG_DIR, TAB_DIR):
        shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
    if os.path.exists(os.path.join(out, "index.html")):
        os.remove(os.path.join(out, "index.html"))


def _upload(store: Any, out: str, log: Callable[[str], None]) -> None:
    """Copy the report folder to ``<sweep>/report/`` in S3 and delete the keys an earlier report left there."""
    import pyarrow.fs as pafs

    new = set()
    for root, _, names in os.walk(out):
        for n in names:
            p = os.path.join(root, n)
            rel = "report/" + os.path.relpath(p, out).replace(os.sep, "/")
            with open(p, "rb") as f:
                store.write_bytes(rel, f.read())
            new.add(rel)
    base = store.path("report")
    sel = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    for info in store.fs.get_file_info(sel):
        rel = "report/" + info.path[len(base) :].lstrip("/")
        if info.type == pafs.FileType.File and rel not in new:
            store.delete(rel)
    log(f"report uploaded to {store.url('report/index.html')}")


def report_sweep(
    name: str,
    storage: str | None = None,
    out: str | None = None,
    s3_endpoint: str | None = None,
    voltage_table: str | None = None,
    track: bool = True,
    log: Callable[[str], None] = print,
    full_size: bool = False,
    embeddings: bool = False,
) -> str:
    """Build the report of a stored sweep (complete or partial); returns the index.html path. The energy
    section prices the sweep's own networks (its ``width``), or the paper's with ``full_size``; ``embeddings``
    adds the t-SNE panels and the gallery, drawn from the stored checkpoints (orchestration/report/appendix.py)."""
    from nf_core.cost import energy_convention
    from orchestration.store.roots import sweep_store
    from orchestration.sweep.runner import collect_rows, open_sweep, stage_states

    cfg = open_sweep(name, storage, s3_endpoint)
    store = sweep_store(cfg)
    rows = collect_rows(cfg, store)
    missing = missing_items(stage_states(cfg, store))
    own = out is None  # the sweep's own report: beside the sweep and in its MLflow parent run
    upload = store.is_s3 and own
    if own:
        out = tempfile.mkdtemp(prefix="nf-report-") if upload else store.path("report")
        _clear_own(out)

    from nf_core.voltage import load_voltage_table

    table = load_voltage_table(voltage_table)  # read once (no torch): a BER it lacks skips the cost model

    width = 1.0 if full_size else float(cfg.width)  # the convention `nf select` uses (commands/select.py)

    def energy(model: str, gen: str, ds: str, ber: float) -> float:
        table.energy_ratio(ber)  # ValueError naming the BER, before the cost model (torch) is loaded
        return F.cost_model_saving(model, gen, ds, ber, voltage_table, width)

    from orchestration.report.appendix import appendix_sections
    from orchestration.store.cost_counts import sweep_counts  # the counts cache `nf select` uses too

    extra = appendix_sections(cfg, store, rows, out, embeddings)  # paper, latency (stored), embeddings
    with sweep_counts(store):
        from orchestration.report.protection import training_hours  # measured epoch times (done.json)

        res = build_report(
            rows,
            out,
            cfg.to_dict(),
            missing,
            f"NeuralFuse sweep {cfg.name!r}",
            energy,
            energy_convention(width),
            training_hours(cfg, store),
            extra,
        )
    if upload:  # S3 storage: the report goes beside the sweep's results, replacing the earlier one
        _upload(store, out, log)
    if track and own:  # --out: files only; the sweep's MLflow run is left as it is
        log_to_mlflow(cfg, store, out, log)
    if embeddings:  # asked for: say what came of it (figures, or the one-line reason)
        emb = [s for s in res["sections"] if s.key in ("embeddings", "transformed_inputs")]
        log("embeddings: " + (emb[0].skipped or ", ".join(f for s in emb for f in s.figures)))
    if missing:
        log(f"partial sweep: {len(missing)} stage(s) with unfinished items (listed in the report)")
    return res["index"]
