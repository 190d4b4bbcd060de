"""Report sections for the paper's App. K (Fig. 15, t-SNE of final-layer outputs) and App. L (Figs. 16-17,
transformed inputs), drawn from stored checkpoints — nothing is trained here.

``embedding_sections(base, generators, x, y, out_dir, chip)`` → [Section (t-SNE), Section (gallery)];
``modules_from_checkpoints(base_ckpt, generator_ckpts)`` rebuilds the modules from the checkpoints the sweep
stored (a base checkpoint's ``spec`` + ``model``; generator checkpoints as ``trained_generator`` reads them).
The figure builders take the computed arrays (nf_core.embeddings) and write PNG + SVG.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from orchestration.report.html import Section

FIG_DIR = "figures"
GALLERY_CLASSES = 10  # rows of the gallery: the first classes (CIFAR-100's hundred would be a 100-row figure)


def _plt():
    from orchestration.report.figures import _plt as plt

    return plt()


def _save(fig: Any, out_dir: str, stem: str) -> str:
    from orchestration.report.figures import _save as save

    return save(fig, out_dir, stem)


def _name(c: int, class_names: Sequence[str] | None) -> str:
    return class_names[c] if class_names is not None and c < len(class_names) else str(c)


def tsne_figure(
    result: dict[str, Any], out_dir: str, stem: str = "embeddings_tsne", class_names: Sequence[str] | None = None
) -> str:
    """Fig. 15: rows clean / perturbed, columns no NeuralFuse then each generator; points coloured by class."""
    plt = _plt()
    panels = result["panels"]
    gens = list(dict.fromkeys(p["generator"] for p in panels))
    conds = list(dict.fromkeys(p["condition"] for p in panels))
    labels = np.asarray(result["labels"])
    classes = sorted(set(labels.tolist()))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "turbo", max(len(classes), 1))
    fig, axes = plt.subplots(
        len(conds), len(gens), figsize=(3.3 * len(gens), 3.2 * len(conds) + 0.6), squeeze=False, constrained_layout=True
    )
    for p in panels:
        ax = axes[conds.index(p["condition"])][gens.index(p["generator"])]
        xy = np.asarray(p["coords"])
        for k, c in enumerate(classes):
            sel = labels == c
            ax.scatter(xy[sel, 0], xy[sel, 1], s=6, color=cmap(k), label=_name(c, class_names), alpha=0.85)
        where = (
            "clean" if p["condition"] == "clean" else f"perturbed (BER {result['ber']:g}, chip {result['chip_seed']})"
        )
        ax.set_title(f"{p['generator'] or 'no NeuralFuse'} · {where}\naccuracy {p['accuracy']:.1f}%", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, names = axes[0][0].get_legend_handles_labels()
    if len(classes) <= 20:
        fig.legend(handles, names, loc="outside lower center", ncol=min(len(classes), 10), fontsize=8, markerscale=2)
    return _save(fig, out_dir, stem)


def _show(img: np.ndarray, signed: bool) -> np.ndarray:
    """(3, H, W) → (H, W, 3) in [0, 1]: inputs map [-1, 1] linearly; G(x) is min-max scaled (its range varies)."""
    a = np.asarray(img, dtype=np.float32).transpose(1, 2, 0)
    if signed:
        return np.clip((a + 1) / 2, 0, 1)
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def gallery_figure(
    gal: dict[str, Any], out_dir: str, stem: str = "transformed_inputs", class_names: Sequence[str] | None = None
) -> str:
    """Figs. 16-17: one row per class; columns x, then G(x) and x' for each generator."""
    plt = _plt()
    gens = list(gal["generators"])
    cols = ["x"] + [f"{g}: {part}" for g in gens for part in ("G(x)", "x'")]
    n = len(gal["classes"])
    fig, axes = plt.subplots(
        n, len(cols), figsize=(1.5 * len(cols), 1.5 * n + 0.5), squeeze=False, constrained_layout=True
    )
    for i, c in enumerate(gal["classes"]):
        imgs = [_show(gal["x"][i], True)]
        for g in gens:
            imgs += [_show(gal["generators"][g]["g"][i], False), _show(gal["generators"][g]["x_prime"][i], True)]
        for j, im in enumerate(imgs):
            ax = axes[i][j]
            ax.imshow(im, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=8)
            if j == 0:
                ax.set_ylabel(_name(c, class_names), fontsize=8)
    return _save(fig, out_dir, stem)


def modules_from_checkpoints(
    base_ckpt: dict[str, Any], generator_ckpts: dict[str, dict[str, Any]], bits: int = 8, device: str = "cpu"
) -> tuple[Any, dict[str, Any]]:
    """(DeployedModel, {generator name: G as evaluated}) from stored checkpoints; no training."""
    from nf_core.deployed import DeployedModel
    from nf_core.models import create_model
    from orchestration.sweep.trainables import _model_kwargs, trained_generator

    module = create_model(**_model_kwargs(base_ckpt["spec"]))
    module.load_state_dict(base_ckpt["model"])
    size = base_ckpt["spec"]["input_size"]
    gens = {name: trained_generator(ck, name, size, device) for name, ck in generator_ckpts.items()}
    return DeployedModel(module, bits, device), gens


def embedding_sections(
    base: Any,
    generators: dict[str, Any],
    x: Any,
    y: Any,
    out_dir: str | os.PathLike,
    chip: Any,
    chip_seed: int | None = None,
    tsne_seed: int | None = None,
    class_names: Sequence[str] | None = None,
    title: str = "",
) -> list[Section]:
    """The t-SNE panels (Fig. 15) and the gallery (Figs. 16-17) of one base model and its generators.

    ``base``: a DeployedModel; ``generators``: name → G as evaluated (e.g. ConvL, ConvS); ``x``, ``y``: the
    shared sample (nf_core.embeddings.shared_sample); ``chip``: the ChipConfig of the perturbed panels."""
    from nf_core import embeddings as E

    fig_dir = os.path.join(os.fspath(out_dir), FIG_DIR)
    chip_seed = E.DEFAULT_CHIP_SEED if chip_seed is None else chip_seed
    tsne_seed = E.DEFAULT_TSNE_SEED if tsne_seed is None else tsne_seed
    suffix = f" — {title}" if title else ""
    s1 = Section(
        "embeddings",
        f"i. Data embeddings: t-SNE of the base model's outputs (paper Fig. 15){suffix}",
        f"{len(y)} test images (one shared sample), the base model's final-layer outputs clean and on one chip "
        f"(seed {chip_seed}, BER {chip.ber:g}, {chip.fault_model}), without NeuralFuse and with each generator; "
        f"scikit-learn t-SNE (random_state {tsne_seed}) per panel, coloured by class.",
    )
    s2 = Section(
        "transformed_inputs",
        f"j. Transformed inputs: x, G(x) and x' per class (paper Figs. 16-17){suffix}",
        f"Per class (the first {GALLERY_CLASSES}) the first image of the shared sample; G(x) min-max scaled for "
        "display, x' = clamp(x + G(x), -1, 1).",
    )
    if not generators:
        s1.skipped = s2.skipped = "no generator checkpoint to draw from"
        return [s1, s2]
    res = E.embedding_panels(base, x, y, generators, chip, chip_seed, tsne_seed)
    s1.figures.append(f"{FIG_DIR}/{tsne_figure(res, fig_dir, class_names=class_names)}")
    gal = E.gallery(x, y, generators, sorted(set(y.tolist()))[:GALLERY_CLASSES])
    s2.figures.append(f"{FIG_DIR}/{gallery_figure(gal, fig_dir, class_names=class_names)}")
    return [s1, s2]
