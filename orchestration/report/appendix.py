"""The report's appendix sections of a stored sweep: the paper beside ours, latency, embeddings and gallery.

* g. the paper beside ours + scorecard (orchestration/report/paper.py): from the results rows, always;
* h. latency (paper Table 9): read from what `nf profile --latency --sweep NAME` stored under the sweep's
  ``latency/`` folder — the report never times anything (timing takes minutes and is machine-bound);
* i./j. t-SNE embeddings (Fig. 15) and transformed inputs (Figs. 16-17): drawn from the stored base and
  generator checkpoints (no training), only with ``nf report NAME --embeddings`` — t-SNE of a 1000-image
  sample takes tens of seconds per panel on a CPU, and the report of a sweep must stay fast by default.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

from orchestration.report.html import Section

LATENCY_DIR = "latency"
FIG15_GENERATORS = ("ConvL", "ConvS")  # the pair the paper's Fig. 15 compares


# ---------------------------------------------------------------- latency (Table 9)
def latency_file(lat: dict[str, Any]) -> str:
    """Where one `nf profile --latency` result lives in a sweep: one file per dataset, model, width and set of
    generators (no suffix: the paper's six), so a later timing of one generator leaves the full table alone."""
    from nf_core.generators import PAPER_GENERATORS

    gens = [r["generator"] for r in lat["rows"] if r.get("generator")]
    tag = "" if sorted(gens) == sorted(PAPER_GENERATORS) else "." + "+".join(gens)
    return f"{LATENCY_DIR}/{lat['dataset']}.{lat['model']}.w{lat.get('width', 1.0):g}{tag}.json"


def store_latency(name: str, lat: dict[str, Any], storage: str | None = None, s3_endpoint: str | None = None) -> str:
    """Keep a latency measurement (nf_core.latency.latency_table's result) in sweep ``name``'s storage,
    replacing an earlier one of the same dataset, model and width; returns its URL."""
    from orchestration.store.roots import sweep_store
    from orchestration.sweep.runner import open_sweep

    store = sweep_store(open_sweep(name, storage, s3_endpoint))
    rel = latency_file(lat)
    store.write_json(rel, lat)
    return store.url(rel)


def stored_latency(store: Any) -> list[dict[str, Any]]:
    """Every latency measurement stored in a sweep (sorted by file name: dataset, model, width)."""
    return [store.read_json(f"{LATENCY_DIR}/{n}") for n in store.list(LATENCY_DIR) if n.endswith(".json")]


# ---------------------------------------------------------------- embeddings and gallery (Figs. 15-17)
def _empty_sections() -> list[Section]:
    return [
        Section("embeddings", "i. Data embeddings: t-SNE of the base model's outputs (paper Fig. 15)"),
        Section("transformed_inputs", "j. Transformed inputs: x, G(x) and x' per class (paper Figs. 16-17)"),
    ]


def _with_reason(why: str) -> list[Section]:
    out = _empty_sections()
    for s in out:
        s.skipped = why
    return out


def pick_generators(cfg: Any, items: list[Any]) -> tuple[list[Any], str]:
    """The generator items Fig. 15 draws: ConvL and ConvS (whichever the sweep has) of one dataset, one
    single-model source (ResNet18 when there is one, as in the paper), the first seed, trained on random
    chips at the training BER nearest 1 %; or ([], the reason in one line)."""
    have = [g for g in FIG15_GENERATORS if g in cfg.generators]
    if not have:
        return [], (
            f"Fig. 15 compares ConvL and ConvS; this sweep trained neither (generators: {', '.join(cfg.generators)})"
        )
    cands = [
        it
        for it in items
        if it.spec.generator in have and len(it.spec.source) == 1 and it.spec.chips == "random" and it.spec.train_ber
    ]
    if not cands:
        return [], "no ConvL/ConvS generator trained on one base model at one BER with random chips"
    first = cands[0].spec
    model = "resnet18" if any(it.spec.source == ("resnet18",) for it in cands) else first.source[0]
    pool = [it for it in cands if it.spec.source == (model,) and it.spec.dataset == first.dataset]
    ber = min({it.spec.train_ber for it in pool}, key=lambda b: abs(b - 0.01))
    pool = [it for it in pool if it.spec.train_ber == ber and it.spec.seed == pool[0].spec.seed]
    pool = [it for it in pool if (it.spec.lam, it.spec.n) == (pool[0].spec.lam, pool[0].spec.n)]
    by_name = {it.spec.generator: it for it in reversed(pool)}  # the first item of each generator
    return [by_name[g] for g in have if g in by_name], ""


def embeddings_from_sweep(cfg: Any, store: Any, out_dir: str) -> list[Section]:
    """Figs. 15-17 of a stored sweep, from its checkpoints: the base model and ConvL/ConvS of `pick_generators`
    on the first ``DEFAULT_SAMPLE`` test images of a seeded shared sample, perturbed panels on one chip at the
    generators' training BER (the sweep's fault model and layout)."""
    from nf_core import embeddings as E
    from nf_core.chips import ChipConfig
    from orchestration.report.embeddings import embedding_sections, modules_from_checkpoints
    from orchestration.spec.plan import base_id, plan
    from orchestration.store.item_files import load_item_checkpoint, read_done
    from orchestration.sweep.trainables import TrialContext

    items = [it for it in plan(cfg)["generator"] if read_done(store, "generator", it.id) is not None]
    chosen, why = pick_generators(cfg, items)
    if not chosen:
        return _with_reason(why or "no finished generator")
    spec = chosen[0].spec
    base_ck = load_item_checkpoint(store, "base", base_id(spec.dataset, spec.source[0], spec.bits, spec.seed))
    gen_cks = {it.spec.generator: load_item_checkpoint(store, "generator", it.id) for it in chosen}
    base, gens = modules_from_checkpoints(base_ck, gen_cks, spec.bits)
    ds = TrialContext.dataset(SimpleNamespace(cfg=cfg), spec.dataset)  # the trials' loader: roots, S3, subsets
    x, y = E.shared_sample(ds.test)
    chip = ChipConfig(spec.train_ber, spec.fault_model, spec.layout)
    title = f"{spec.dataset}, {spec.source[0]}, trained at BER {spec.train_ber:g}"
    return embedding_sections(base, gens, x, y, os.fspath(out_dir), chip, title=title)


def appendix_sections(
    cfg: Any, store: Any, rows: list[dict[str, Any]], out_dir: str, embeddings: bool = False
) -> list[Section]:
    """g-j of a stored sweep's report (module doc): paper + scorecard, latency, embeddings and gallery."""
    from orchestration.report.paper import latency_section, paper_section

    out: list[Section] = []
    if rows:
        out.append(paper_section(rows, out_dir))
    else:
        s = Section("paper", "g. The paper beside ours")
        s.skipped = "no evaluated generator yet"
        out.append(s)
    lat = latency_section(stored_latency(store), out_dir)
    if lat.skipped:
        lat.skipped = (
            f"no latency stored for this sweep; measure it with `nf profile --model NAME --dataset DATASET "
            f"--latency --sweep {cfg.name}` (on the machine whose latency you want)"
        )
    out.append(lat)
    if embeddings:
        out += embeddings_from_sweep(cfg, store, out_dir)
    else:
        out += _with_reason(
            f"not drawn by default (t-SNE takes tens of seconds); `nf report {cfg.name} --embeddings` draws them "
            "from the stored checkpoints"
        )
    return out
