"""Training loops: quantization-aware base models, and NeuralFuse generators with EOPM.

Both are plain functions of a config dataclass. Each epoch is reproducible from
(seed, epoch) alone — data order, augmentation and training chips — so a run resumed
from any epoch checkpoint ends with exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from nf_core.awp import AWPConfig
from nf_core.base_modes import BASE_MODES
from nf_core.ber_conditioned import BERSampledChips
from nf_core.ber_range import BERRange
from nf_core.checkpoint import rng_state, set_rng_state
from nf_core.chips import ChipConfig
from nf_core.data import epoch_seed, make_loader
from nf_core.deployed import BATCHING, DeployedModel
from nf_core.eopm import PerturbedModels, RandomChips, eopm_step, training_chip_seeds
from nf_core.protect import CURRICULUM_THRESHOLD, PERTURBED_GRAD_CLIP, RANDBET_BER, WMAX, check_wmax
from nf_core.validation import check_bits, check_choice, check_fault_model, check_lambda, check_layout, check_n_chips

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("none", "cosine")
EpochCallback = Callable[[int, dict[str, float], dict[str, Any]], None]


@dataclass
class BaseTrainConfig:
    """QAT of a base model. Defaults: the reference's README (SGD 0.9, lr 1e-3, no schedule)."""

    epochs: int = 300
    batch_size: int = 256
    optimizer: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "none"
    bits: int = 8
    seed: int = 0
    training: str = "standard"  # base-training mode, one of nf_core.base_modes.BASE_MODES
    # clip / randbet (nf_core.protect; Stutz et al. 2021's defaults). fault_model and layout are the
    # evaluation chips' so RandBET trains against the faults it is evaluated on.
    wmax: float = WMAX
    randbet_ber: float = RANDBET_BER
    fault_model: str = "stuck_at"
    layout: str = "wrap"
    randbet_grad_clip: float = PERTURBED_GRAD_CLIP
    randbet_threshold: float | None = CURRICULUM_THRESHOLD
    awp: dict[str, Any] = field(default_factory=dict)  # awp mode: AWPConfig fields overriding the published defaults

    def __post_init__(self) -> None:
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_bits(self.bits)
        check_choice("base training", self.training, BASE_MODES)
        check_wmax(self.wmax)
        ChipConfig(self.randbet_ber, self.fault_model, self.layout)  # validates BER, fault model, layout
        self.awp_config()  # validates the AWP options

    def awp_config(self) -> AWPConfig:
        """The AWP settings: the published defaults with this config's overrides."""
        unknown = sorted(set(self.awp) - set(AWPConfig.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"unknown awp option {unknown[0]!r}; valid choices: {', '.join(AWPConfig.__dataclass_fields__)}"
            )
        return AWPConfig(**self.awp)


@dataclass
class GeneratorTrainConfig:
    """EOPM training of a generator. Defaults: the paper's settings (docs/method.md, EOPM).

    ``ber``: the training BER, or a `BERRange` (a BER-conditioned generator: each batch at a BER
    drawn from it)."""

    ber: float | BERRange = 0.01
    lam: float = 5.0
    n_chips: int = 5
    fault_model: str = "stuck_at"
    layout: str = "wrap"
    epochs: int = 150
    batch_size: int = 256
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    step_size: int = 500
    gamma: float = 0.96
    generator_bits: int | None = 8  # the authors' 8-bit fake-quantized generators; None: float
    batching: str = "loop"
    prefetch: bool | None = None  # chips of step k+1 drawn while step k runs; None: on with CUDA
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.ber, BERRange):
            check_fault_model(self.fault_model)
            check_layout(self.layout)
        else:
            _ = self.chip  # building the chip config validates BER, fault model and layout
        check_lambda(self.lam)
        check_n_chips(self.n_chips)
        check_choice("batching", self.batching, BATCHING)
        if self.generator_bits is not None:
            check_bits(self.generator_bits)
        self.betas = tuple(self.betas)  # type: ignore[assignment]

    @property
    def chip(self) -> ChipConfig:
        """The chip config of every batch (a fixed BER only)."""
        if isinstance(self.ber, BERRange):
            raise ValueError(f"BER range {self.ber}: each batch has its own chip config (BERSampledChips)")
        return ChipConfig(self.ber, self.fault_model, self.layout)

    def perturbed_models(self, bases: Sequence[DeployedModel]) -> PerturbedModels:
        """The in-process source of perturbed models: random chips at ``ber``, or at a BER drawn
        per batch from a range."""
        if isinstance(self.ber, BERRange):
            return BERSampledChips(bases, self.ber, self.fault_model, self.layout, self.batching)
        return RandomChips(bases, self.chip, self.batching, self.seed, self.n_chips, self.prefetch)


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _epoch_loader(dataset: Dataset, batch_size: int, seed: int, epoch: int):
    torch.manual_seed(epoch_seed(seed, epoch) + 1)  # augmentation / dropout of this epoch
    return make_loader(dataset, batch_size, shuffle=True, seed=epoch_seed(seed, epoch))


def _resume(ckpt: dict[str, Any] | None, model: nn.Module, opt, sched) -> tuple[int, int, list]:
    if ckpt is None:
        return 0, 0, []
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    if sched is not None and ckpt.get("scheduler") is not None:
        sched.load_state_dict(ckpt["scheduler"])
    set_rng_state(ckpt["rng"])
    return ckpt["epoch"], ckpt["step"], list(ckpt.get("history", []))


def _checkpoint(kind: str, model, opt, sched, epoch: int, step: int, cfg, history, spec) -> dict[str, Any]:
    return {
        "kind": kind,
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict() if sched is not None else None,
        "rng": rng_state(),
        "epoch": epoch,
        "step": step,
        "config": asdict(cfg),
        "history": list(history),
        "spec": dict(spec or {}),
    }


def train_base(
    model: nn.Module,
    train_set: Dataset,
    cfg: BaseTrainConfig,
    resume: dict[str, Any] | None = None,
    on_epoch: EpochCallback | None = None,
    spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Quantization-aware training: forward with fake-quantized b-bit weights, STE gradients;
    ``cfg.training`` picks how each update is made (nf_core.base_modes: standard, clip, randbet).

    ``spec`` (model name, classes, input size, width …) is stored in the checkpoint so the
    model can be rebuilt from it. Returns the final checkpoint.
    """
    device = _device_of(model)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs) if cfg.schedule == "cosine" else None
    start, step, history = _resume(resume, model, opt, sched)
    ckpt = resume
    update = BASE_MODES[cfg.training]
    for epoch in range(start, cfg.epochs):
        model.train()
        t0, seen, correct, loss_sum, n, extra = time.perf_counter(), 0, 0, 0.0, 0, {}
        for x, y in _epoch_loader(train_set, cfg.batch_size, cfg.seed, epoch):
            x, y = x.to(device), y.to(device)
            logits, loss, m = update(model, x, y, opt, step, cfg, epoch)  # one optimizer step of the mode
            step += 1
            n += 1
            seen += len(y)
            correct += (logits.argmax(1) == y).sum().item()
            loss_sum += loss.item() * len(y)
            for k, v in m.items():
                extra[k] = extra.get(k, 0.0) + v
        if sched is not None:
            sched.step()
        metrics = {
            "epoch": epoch + 1,
            "loss": loss_sum / seen,
            "train_acc": 100.0 * correct / seen,
            **{k: v / n for k, v in extra.items()},
            "seconds": time.perf_counter() - t0,
        }
        history.append(metrics)
        ckpt = _checkpoint("base", model, opt, sched, epoch + 1, step, cfg, history, spec)
        if on_epoch is not None:
            on_epoch(epoch + 1, metrics, ckpt)
    return ckpt if ckpt is not None else _checkpoint("base", model, opt, sched, start, step, cfg, history, spec)


def generator_optimizer(generator: nn.Module, cfg: GeneratorTrainConfig):
    """The paper's optimiser: Adam(lr, betas (0.5, 0.999)) with StepLR stepped every iteration."""
    opt = torch.optim.Adam(generator.parameters(), lr=cfg.lr, betas=cfg.betas)
    return opt, torch.optim.lr_scheduler.StepLR(opt, cfg.step_size, cfg.gamma)


def train_generator(
    generator: nn.Module,
    bases: Sequence[DeployedModel],
    train_set: Dataset,
    cfg: GeneratorTrainConfig,
    resume: dict[str, Any] | None = None,
    on_epoch: EpochCallback | None = None,
    spec: dict[str, Any] | None = None,
    models: PerturbedModels | None = None,
) -> dict[str, Any]:
    """EOPM training of ``generator`` against one base model or an ensemble. Returns the final checkpoint.

    ``models`` replaces the in-process perturbed models of ``bases`` (`cfg.perturbed_models`),
    e.g. by pool actors; chips, data order and checkpoints stay this loop's.
    """
    opt, sched = generator_optimizer(generator, cfg)
    start, step, history = _resume(resume, generator, opt, sched)
    models = models if models is not None else cfg.perturbed_models(bases)
    models.start(step)
    try:
        return _generator_epochs(
            generator, models, train_set, cfg, opt, sched, start, step, history, resume, on_epoch, spec
        )
    finally:
        models.close()


def _generator_epochs(generator, models, train_set, cfg, opt, sched, start, step, history, ckpt, on_epoch, spec):
    device = _device_of(generator)
    for epoch in range(start, cfg.epochs):
        t0, n, sums = time.perf_counter(), 0, {}
        for x, y in _epoch_loader(train_set, cfg.batch_size, cfg.seed, epoch):
            x, y = x.to(device), y.to(device)
            seeds = training_chip_seeds(cfg.seed, step, cfg.n_chips)
            m = eopm_step(generator, models, x, y, seeds, cfg.lam, opt, sched, cfg.generator_bits, step)
            step += 1
            n += 1
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v
        metrics = {
            "epoch": epoch + 1,
            **{k: v / max(n, 1) for k, v in sums.items()},
            "lr": opt.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t0,
        }
        history.append(metrics)
        ckpt = _checkpoint("generator", generator, opt, sched, epoch + 1, step, cfg, history, spec)
        if on_epoch is not None:
            on_epoch(epoch + 1, metrics, ckpt)
    return (
        ckpt if ckpt is not None else _checkpoint("generator", generator, opt, sched, start, step, cfg, history, spec)
    )
