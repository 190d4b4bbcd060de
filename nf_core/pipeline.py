"""One NeuralFuse experiment end to end: QAT base model → EOPM generator → evaluation.

The sweep orchestration runs these stages separately and at scale; this function is the
small, single-process version (`nf single`, and a notebook entry point).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from nf_core.checkpoint import save_checkpoint
from nf_core.data import load_dataset, make_loader
from nf_core.deployed import DeployedModel
from nf_core.eopm import deployed_generator
from nf_core.evaluate import evaluate, evaluation_chip_seeds
from nf_core.generators import create_generator
from nf_core.models import MODELS, create_model
from nf_core.train import BaseTrainConfig, GeneratorTrainConfig, train_base, train_generator


@dataclass
class PipelineConfig:
    dataset: str = "digits"
    root: str | None = None
    model: str = "resnet18"
    width: float = 0.25
    generator: str = "ConvS"
    base: BaseTrainConfig = field(
        default_factory=lambda: BaseTrainConfig(epochs=8, batch_size=64, optimizer="adam", lr=2e-3, schedule="cosine")
    )
    eopm: GeneratorTrainConfig = field(
        default_factory=lambda: GeneratorTrainConfig(ber=0.04, epochs=5, batch_size=64, n_chips=5)
    )
    eval_chips: int = 10
    device: str = "cpu"


def run_pipeline(cfg: PipelineConfig, out_dir: str | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, evaluate and (if ``out_dir``) save checkpoints and results.json. Returns the results."""
    MODELS.get(cfg.model)  # unknown names fail before any compute
    ds = load_dataset(cfg.dataset, cfg.root)
    create_generator(cfg.generator, ds.input_size, cfg.eopm.generator_bits)  # validates the name early
    torch.manual_seed(cfg.base.seed)
    t0 = time.perf_counter()
    spec = {
        "model": cfg.model,
        "num_classes": ds.num_classes,
        "input_size": ds.input_size,
        "width": cfg.width,
        "dataset": cfg.dataset,
    }
    model = create_model(cfg.model, ds.num_classes, ds.input_size, cfg.width).to(cfg.device)
    log(f"[1/3] QAT base model {cfg.model} (width {cfg.width}) on {cfg.dataset}: {cfg.base.epochs} epochs")
    base_ckpt = train_base(
        model,
        ds.train,
        cfg.base,
        spec=spec,
        on_epoch=lambda e, m, c: log(f"  epoch {e}: loss {m['loss']:.3f} train acc {m['train_acc']:.1f}%"),
    )
    base = DeployedModel(model, cfg.base.bits, cfg.device)

    e = cfg.eopm
    gen = create_generator(cfg.generator, ds.input_size, e.generator_bits).to(cfg.device)
    gbits = "float" if e.generator_bits is None else f"{e.generator_bits}-bit"
    log(
        f"[2/3] EOPM generator {cfg.generator} ({gbits}): BER {e.ber:g} ({e.fault_model}, {e.layout}), λ {e.lam:g}, "
        f"N {e.n_chips}, {e.epochs} epochs"
    )
    gen_ckpt = train_generator(
        gen,
        [base],
        ds.train,
        e,
        spec={"generator": cfg.generator, **spec},
        on_epoch=lambda ep, m, c: log(f"  epoch {ep}: loss {m['loss']:.3f}"),
    )
    log(f"[3/3] evaluation on {cfg.eval_chips} chips")
    test = make_loader(ds.test, 256, shuffle=False)
    # G runs with the weights it was trained with: b-bit when it was trained quantized
    res = evaluate(base, test, e.chip, deployed_generator(gen, e.generator_bits), evaluation_chip_seeds(cfg.eval_chips))
    res.update(
        dataset=cfg.dataset,
        model=cfg.model,
        generator=cfg.generator,
        generator_bits=e.generator_bits,
        lam=e.lam,
        n_chips=e.n_chips,
        seconds=time.perf_counter() - t0,
    )
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        save_checkpoint(base_ckpt, os.path.join(out_dir, "base.pt"))
        save_checkpoint(gen_ckpt, os.path.join(out_dir, "generator.pt"))
        with open(os.path.join(out_dir, "results.json"), "w") as f:
            json.dump({"config": asdict(cfg), "results": res}, f, indent=2)
    return res
