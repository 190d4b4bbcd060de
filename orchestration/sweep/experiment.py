"""One NeuralFuse experiment's stages, the one driver `nf single` and the sweep's trainables share.

Each stage is a plain function of its trial spec (orchestration/spec/trial.py) and its stage settings
(the config's ``base`` / ``generator`` sections): (a) QAT of a base model, (b) EOPM training of a
generator against deployed base models or any other source of perturbed models (pool actors),
and the trained generator as evaluated. The nf_core training configs are built here and nowhere
else. No Ray, no MLflow, no storage: the trainables add checkpoints in storage and reporting
through ``resume`` / ``on_epoch``; `nf single` runs the stages one after another in-process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from nf_core.data import DatasetInfo
from nf_core.deployed import DeployedModel
from nf_core.eopm import PerturbedModels, deployed_generator
from nf_core.generators import create_generator
from nf_core.models import create_model
from nf_core.train import BaseTrainConfig, EpochCallback, GeneratorTrainConfig, train_base, train_generator
from orchestration.spec.trial import PROTECTION_FIELDS, BaseSpec, GeneratorSpec

if TYPE_CHECKING:
    from orchestration.spec.config import BaseStage, GeneratorStage


# GeneratorStage fields that are GeneratorTrainConfig fields as they are (the others say how trials run).
_GENERATOR_FIELDS = ("epochs", "batch_size", "lr", "step_size", "gamma", "generator_bits", "batching")


def base_train_config(spec: BaseSpec, stage: BaseStage) -> BaseTrainConfig:
    """nf_core's QAT config of a base-model trial: the stage's settings at the spec's bits and seed, in the
    spec's base-training mode with the options it carries (for randbet the sweep's fault model and layout)."""
    settings = {k: v for k, v in stage.model_dump().items() if k not in PROTECTION_FIELDS}
    return BaseTrainConfig(**settings, bits=spec.bits, seed=spec.seed, training=spec.training, **spec.training_options)


def generator_train_config(spec: GeneratorSpec, stage: GeneratorStage) -> GeneratorTrainConfig:
    """nf_core's EOPM config of a generator trial (its BER: one value or a BERRange)."""
    return GeneratorTrainConfig(
        ber=spec.ber,
        lam=spec.lam,
        n_chips=spec.n,
        fault_model=spec.fault_model,
        layout=spec.layout,
        seed=spec.seed,
        betas=tuple(stage.betas),
        prefetch=None if stage.prefetch == "auto" else stage.prefetch,  # None: nf_core's default, on with CUDA
        **{k: getattr(stage, k) for k in _GENERATOR_FIELDS},
    )


def train_base_stage(
    spec: BaseSpec,
    stage: BaseStage,
    ds: DatasetInfo,
    device: str,
    resume: dict[str, Any] | None = None,
    on_epoch: EpochCallback | None = None,
) -> tuple[dict[str, Any], DeployedModel]:
    """Stage (a): QAT of ``spec.model`` on ``ds``; returns the final checkpoint and the deployed model."""
    cfg = base_train_config(spec, stage)
    torch.manual_seed(spec.seed)
    model_spec = {
        "model": spec.model,
        "num_classes": ds.num_classes,
        "input_size": ds.input_size,
        "width": spec.width,
        "dataset": spec.dataset,
    }
    model = create_model(spec.model, ds.num_classes, ds.input_size, spec.width).to(device)
    ck = train_base(model, ds.train, cfg, resume=resume, on_epoch=on_epoch, spec=model_spec)
    return ck, DeployedModel(model, spec.bits, device)


def train_generator_stage(
    spec: GeneratorSpec,
    stage: GeneratorStage,
    ds: DatasetInfo,
    bases: Sequence[DeployedModel],
    device: str,
    resume: dict[str, Any] | None = None,
    on_epoch: EpochCallback | None = None,
    models: PerturbedModels | None = None,
) -> dict[str, Any]:
    """Stage (b): EOPM training of ``spec.generator`` against the source models ``bases`` (or the
    perturbed models of ``models``, e.g. pool actors); returns the final checkpoint."""
    cfg = generator_train_config(spec, stage)
    if models is None and spec.chips != "random":
        models = adversarial_models(spec, cfg, bases)
    torch.manual_seed(spec.seed)
    gen = create_generator(spec.generator, ds.input_size, stage.generator_bits).to(device)
    ck_spec = {"generator": spec.generator, "input_size": ds.input_size, "dataset": spec.dataset}
    ck_spec["source"] = list(spec.source)
    return train_generator(gen, bases, ds.train, cfg, resume=resume, on_epoch=on_epoch, spec=ck_spec, models=models)


def adversarial_models(
    spec: GeneratorSpec, cfg: GeneratorTrainConfig, bases: Sequence[DeployedModel]
) -> PerturbedModels:
    """EOPM's perturbed models from adversarial bit errors (paper App. I): ``spec.budget`` flipped cells per
    chip, all N chips (``chips: adversarial``) or a ``fraction`` of them mixed with random chips."""
    from nf_core.adversarial import AdversarialChips, AdversarialChipsConfig

    adv = AdversarialChipsConfig(spec.chips, spec.budget, spec.attack_steps, spec.fraction or 0.5)
    return AdversarialChips(bases, cfg.chip, adv, cfg.n_chips, cfg.seed, cfg.batching)


def trained_generator(ckpt: dict[str, Any], name: str, input_size: int, device: str = "cpu") -> torch.nn.Module:
    """A generator checkpoint as evaluated: at the precision it was trained at (its config's
    ``generator_bits``), so a quantized generator runs with the b-bit weights it trained with."""
    bits = ckpt["config"].get("generator_bits")
    gen = create_generator(name, input_size, bits).to(device)
    gen.load_state_dict(ckpt["model"])
    return deployed_generator(gen, bits)
