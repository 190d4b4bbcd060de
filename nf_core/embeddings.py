"""Data embeddings (paper App. K, Fig. 15) and transformed inputs (App. L, Figs. 16-17): the numbers.

Fig. 15: the base model's final-layer outputs (logits) for one shared sample of test images, clean and on
one perturbed chip, without NeuralFuse and with each generator, each panel reduced to 2-D by
scikit-learn's t-SNE with a fixed random_state. Figs. 16-17: per class one image x, G(x) and
x' = clamp(x + G(x), -1, 1) for each generator. Pure torch + scikit-learn; the report draws them
(orchestration/report/embeddings.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from nf_core.chips import ChipConfig
from nf_core.deployed import DeployedModel
from nf_core.transform import neuralfuse

DEFAULT_SAMPLE = 1000  # test images in the shared sample (the t-SNE of each panel)
DEFAULT_SAMPLE_SEED = 0
DEFAULT_CHIP_SEED = 0  # the one perturbed chip of the "perturbed" panels
DEFAULT_TSNE_SEED = 0
EXACT_TSNE_MAX = 500  # samples up to this size use t-SNE's exact method


def shared_sample(
    dataset: Any, n: int = DEFAULT_SAMPLE, seed: int = DEFAULT_SAMPLE_SEED
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images and labels drawn without replacement from a (test) dataset by ``seed``: the same images
    in every panel and every report. Returns (x (n, C, H, W), y (n,))."""
    total = len(dataset)
    if n < 1:
        raise ValueError(f"sample size {n!r} must be >= 1")
    idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[: min(n, total)].sort().values
    xs, ys = zip(*(dataset[int(i)] for i in idx))
    return torch.stack([torch.as_tensor(x) for x in xs]), torch.as_tensor(ys, dtype=torch.long)


def _batched_logits(fn: Any, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([fn(x[i : i + batch]) for i in range(0, len(x), batch)]).float().cpu()


def final_layer_outputs(
    base: DeployedModel,
    x: torch.Tensor,
    generators: dict[str, nn.Module],
    chip: ChipConfig,
    chip_seed: int = DEFAULT_CHIP_SEED,
) -> list[dict[str, Any]]:
    """Logits of the deployed base model on ``x``: clean and on chip ``chip_seed``, without NeuralFuse
    (generator None) and behind each generator. One dict per panel: condition, generator, logits (n, classes)."""
    x = x.to(base.device)
    chip_w = base.chip_weights(chip_seed, chip)
    out = []
    for condition, weights in (("clean", None), ("perturbed", chip_w)):
        for name, g in [(None, None), *generators.items()]:
            gen = None if g is None else g.to(base.device).eval()

            def fn(b: torch.Tensor, gen: nn.Module | None = gen, w: Any = weights) -> torch.Tensor:
                return base.logits(neuralfuse(b, gen), w)

            out.append({"condition": condition, "generator": name, "logits": _batched_logits(fn, x)})
    return out


def tsne_2d(features: np.ndarray, seed: int = DEFAULT_TSNE_SEED, perplexity: float = 30.0) -> np.ndarray:
    """scikit-learn t-SNE to 2-D with a fixed random_state (perplexity capped below the sample size)."""
    from sklearn.manifold import TSNE

    n = len(features)
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 points, got {n}")
    perp = min(perplexity, max(1.0, (n - 1) / 3))  # sklearn requires perplexity < n
    # Exact gradients for small samples: faster there than Barnes-Hut's tree (and O(n²) memory is small).
    method = "exact" if n <= EXACT_TSNE_MAX else "barnes_hut"
    tsne = TSNE(n_components=2, random_state=seed, perplexity=perp, init="pca", learning_rate="auto", method=method)
    return tsne.fit_transform(np.asarray(features, dtype=np.float64)).astype(np.float32)


def embedding_panels(
    base: DeployedModel,
    x: torch.Tensor,
    y: torch.Tensor,
    generators: dict[str, nn.Module],
    chip: ChipConfig,
    chip_seed: int = DEFAULT_CHIP_SEED,
    tsne_seed: int = DEFAULT_TSNE_SEED,
    perplexity: float = 30.0,
) -> dict[str, Any]:
    """Fig. 15's panels: for clean/perturbed × (no NF, each generator) the t-SNE coordinates (n, 2) and
    the accuracy on the sample; ``labels`` colour the points. Deterministic given the seeds."""
    panels = final_layer_outputs(base, x, generators, chip, chip_seed)
    labels = y.cpu().numpy()
    for p in panels:
        logits = p.pop("logits")
        p["accuracy"] = float((logits.argmax(1).numpy() == labels).mean() * 100)
        p["coords"] = tsne_2d(logits.numpy(), tsne_seed, perplexity)
    return {
        "labels": labels,
        "ber": chip.ber,
        "chip_seed": chip_seed,
        "tsne_seed": tsne_seed,
        "panels": panels,
    }


def gallery(
    x: torch.Tensor, y: torch.Tensor, generators: dict[str, nn.Module], classes: Sequence[int] | None = None
) -> dict[str, Any]:
    """Figs. 16-17: per class the first image of that class in the sample, G(x) and x' = clamp(x + G(x), -1, 1)
    for each generator. Returns {"classes", "x" (C, 3, H, W), "generators": {name: {"g", "x_prime"}}} (numpy)."""
    labels = y.tolist()
    wanted = sorted(set(labels)) if classes is None else list(classes)
    missing = [c for c in wanted if c not in labels]
    if missing:
        raise ValueError(f"classes {missing} have no image in the sample; valid choices: {sorted(set(labels))}")
    xs = torch.stack([x[labels.index(c)] for c in wanted])
    out: dict[str, Any] = {"classes": wanted, "x": xs.numpy(), "generators": {}}
    with torch.inference_mode():
        for name, g in generators.items():
            g = g.eval()
            dev = next(g.parameters()).device
            xi = xs.to(dev)
            out["generators"][name] = {"g": g(xi).cpu().numpy(), "x_prime": neuralfuse(xi, g).cpu().numpy()}
    return out
