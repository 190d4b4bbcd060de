"""Small hand-made results tables for the report tests (numbers chosen so cells can be checked by hand)."""

from __future__ import annotations

import itertools
from typing import Any


def row(
    model: str,
    gen: str | None,
    ber: float = 0.01,
    source: str | None = None,
    *,
    lam: float = 5.0,
    n: int = 5,
    bits: int = 8,
    seed: int = 0,
    train_ber: float = 0.01,
    ca: float = 90.0,
    pa: float = 40.0,
    pa_std: float = 5.0,
    ca_nf: float = 88.0,
    pa_nf: float = 70.0,
    pa_nf_std: float = 3.0,
    dataset: str = "cifar10",
    stage: str = "eval",
) -> dict[str, Any]:
    return {
        "item_id": f"{stage}.{model}.{gen}",
        "stage": stage,
        "dataset": dataset,
        "source": source or model,
        "generator": gen,
        "train_ber": train_ber,
        "lam": lam,
        "n": n,
        "fault_model": "stuck_at",
        "layout": "wrap",
        "bits": bits,
        "seed": seed,
        "chips": 2,
        "eval_ber": ber,
        "target": model,
        "ca": ca,
        "pa_mean": pa,
        "pa_std": pa_std,
        "ca_nf": ca_nf,
        "pa_nf_mean": pa_nf,
        "pa_nf_std": pa_nf_std,
        "rp": pa_nf - pa,
        "efficiency": (pa_nf - pa) / 1e5,
        # two chips, mean ± population std as above; paired RP per chip: (pa_nf − pa) ∓ (pa_nf_std − pa_std)
        "pa_per_chip": [pa - pa_std, pa + pa_std],
        "pa_nf_per_chip": [pa_nf - pa_nf_std, pa_nf + pa_nf_std],
    }


def plain_rows() -> list[dict[str, Any]]:
    """Two models × two generators × one BER (0.01, in the shipped voltage table), two seeds; no ablations."""
    out = []
    for (m, g), seed in itertools.product(itertools.product(["resnet18", "vgg11"], ["ConvL", "UNetL"]), [0, 1]):
        bump = 2.0 * seed + (10.0 if g == "UNetL" else 0.0) + (5.0 if m == "vgg11" else 0.0)
        out.append(row(m, g, seed=seed, pa=40.0 + seed, pa_nf=60.0 + bump, pa_std=4.0 + seed))
    # transfer: generator trained on resnet18 protecting vgg11
    out.append(row("vgg11", "ConvL", source="resnet18", stage="transfer", pa=45.0, pa_nf=55.0))
    return out


def rich_rows() -> list[dict[str, Any]]:
    """Two eval BERs, λ and N varied, two precisions, UIP and an ensemble source."""
    out = []
    for g, lam, n, ber, bits in itertools.product(["ConvL", "UIP"], [1.0, 5.0], [1, 5], [0.01, 0.02], [6, 8]):
        out.append(
            row(
                "resnet18",
                g,
                ber,
                lam=lam,
                n=n,
                bits=bits,
                pa=50 - 1000 * ber - (8 - bits),
                pa_nf=60 + lam + n - 1000 * ber - (8 - bits) - (15 if g == "UIP" else 0),
            )
        )
    for ber in (0.01, 0.02):
        out.append(row("resnet18", "ConvL", ber, source="resnet18+vgg11", pa=30.0, pa_nf=50.0))
        out.append(row("vgg11", "ConvL", ber, source="resnet18+vgg11", pa=35.0, pa_nf=52.0))
        out.append(row("vgg11", "ConvL", ber, source="resnet18", stage="transfer", pa=35.0, pa_nf=40.0))
    return out
