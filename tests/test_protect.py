"""Weight-side baselines (nf_core.protect): RandBET's forward passes carry a chip's faults at the
training BER, clipping holds |W| <= wmax at every step, and both train on digits."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from nf_core.base_modes import BASE_MODES
from nf_core.chips import ChipConfig, faulty_cell_count, perturb_codes
from nf_core.data import load_dataset
from nf_core.eopm import TRAIN_SEED_BASE
from nf_core.models import create_model
from nf_core.protect import randbet_chip_seed
from nf_core.quant import QUANTIZED_TYPES, quantize_model
from nf_core.train import BaseTrainConfig, train_base


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def _record_forward_weights(model: nn.Module) -> list[list[torch.Tensor]]:
    """Every forward's Conv/Linear weights as the module saw them (functional_call's overrides)."""
    seen: list[list[torch.Tensor]] = []
    mods = [m for m in model.modules() if isinstance(m, QUANTIZED_TYPES)]

    def hook(mod, _inp):
        if mod is mods[0]:
            seen.append([])
        seen[-1].append(mod.weight.detach().clone())

    for m in mods:
        m.register_forward_pre_hook(hook)
    return seen


def _codes(weights: list[torch.Tensor], scales: torch.Tensor) -> torch.Tensor:
    """The int8 codes behind dequantized weights (each is code · its layer's scale)."""
    return torch.cat([torch.round(w.flatten() / s).to(torch.int8) for w, s in zip(weights, scales)])


def _bit_changes(a: torch.Tensor, b: torch.Tensor) -> int:
    x = (a.view(torch.uint8) ^ b.view(torch.uint8)).numpy()
    return int(np.unpackbits(x).sum())


def _batch(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 32, 32, generator=g) * 2 - 1, torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("fault_model,layout", [("flip", "flat"), ("stuck_at", "wrap")])
def test_randbet_forward_runs_on_a_fresh_chip_at_the_training_ber(fault_model: str, layout: str) -> None:
    ber = 0.02
    cfg = BaseTrainConfig(
        training="randbet", randbet_ber=ber, fault_model=fault_model, layout=layout, randbet_threshold=None, seed=7
    )
    chip = ChipConfig(ber, fault_model, layout)
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    seen = _record_forward_weights(model)
    x, y = _batch()
    faulty_sets = []
    for step in range(3):
        with torch.no_grad():  # the step clips first; the codes it quantizes are those of the clipped weights
            for m in model.modules():
                if isinstance(m, QUANTIZED_TYPES):
                    m.weight.clamp_(-cfg.wmax, cfg.wmax)
        qw = quantize_model(model, cfg.bits)
        seen.clear()
        BASE_MODES["randbet"](model, x, y, opt, step, cfg)
        assert len(seen) == 2  # one clean and one perturbed forward per step
        clean, perturbed = _codes(seen[0], qw.scales), _codes(seen[1], qw.scales)
        assert torch.equal(clean, qw.flat)  # the clean pass is plain QAT
        seed = randbet_chip_seed(cfg.seed, step)
        assert seed >= TRAIN_SEED_BASE  # never an evaluation chip
        assert torch.equal(perturbed, perturb_codes(qw, seed, chip))  # exactly the chip model's faults
        changed = _bit_changes(clean, perturbed)
        cells = qw.numel * 8
        if fault_model == "flip":  # flat layout: every faulty cell holds one weight bit and flips it
            assert changed == faulty_cell_count(seed, ber, cells)
            expected = ber * cells
        else:  # stuck-at: a faulty cell changes its bit half of the time
            expected = ber / 2 * cells
        assert abs(changed - expected) < 5 * math.sqrt(expected), (changed, expected)
        faulty_sets.append(set(np.flatnonzero((clean != perturbed).numpy()).tolist()))
    assert faulty_sets[0] != faulty_sets[1] != faulty_sets[2]  # a new chip every step


def test_randbet_keeps_the_clean_passes_batchnorm_statistics() -> None:
    cfg = BaseTrainConfig(training="randbet", randbet_ber=0.05, randbet_threshold=None, wmax=10.0)  # no clipping
    a, b = _net(), _net()
    x, y = _batch()
    BASE_MODES["randbet"](a, x, y, torch.optim.SGD(a.parameters(), lr=0.0), 0, cfg)
    BASE_MODES["standard"](b, x, y, torch.optim.SGD(b.parameters(), lr=0.0), 0, cfg)
    for (name, ba), bb in zip(a.named_buffers(), b.buffers()):
        assert torch.equal(ba, bb), name


@pytest.mark.parametrize("mode", ["clip", "randbet"])
def test_clipping_holds_after_every_step(mode: str) -> None:
    wmax = 0.05  # below the initial weights' range, so clipping binds
    bound = float(np.float32(wmax))  # the float32 weights are clipped to float32(wmax)
    cfg = BaseTrainConfig(training=mode, wmax=wmax, randbet_threshold=None)
    model = _net()
    weights = [m.weight for m in model.modules() if isinstance(m, QUANTIZED_TYPES)]
    assert max(w.abs().max().item() for w in weights) > wmax
    seen = _record_forward_weights(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)  # large steps push weights past wmax
    x, y = _batch()
    for step in range(5):
        BASE_MODES[mode](model, x, y, opt, step, cfg)
        top = max(w.abs().max().item() for w in weights)
        assert top <= bound
        assert top == bound  # some weight sits at the bound: the clipping did something
    clean = seen[::2] if mode == "randbet" else seen  # a chip's faults may push a code to -128: not a weight
    assert len(clean) == 5 and all(w.abs().max().item() <= bound for f in clean for w in f)


def test_standard_mode_does_not_clip() -> None:
    cfg = BaseTrainConfig(wmax=0.05)
    model = _net()
    BASE_MODES["standard"](model, *_batch(), torch.optim.SGD(model.parameters(), lr=0.5), 0, cfg)
    assert max(m.weight.abs().max().item() for m in model.modules() if isinstance(m, QUANTIZED_TYPES)) > 0.05


def test_bad_training_mode_and_wmax_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown base training 'awq'; valid choices: standard, clip, randbet"):
        BaseTrainConfig(training="awq")
    with pytest.raises(ValueError, match="wmax 0"):
        BaseTrainConfig(training="clip", wmax=0)
    with pytest.raises(ValueError, match="BER 2"):
        BaseTrainConfig(training="randbet", randbet_ber=2)


def test_randbet_trains_on_digits_and_resumes_exactly(tmp_path) -> None:
    data = torch.utils.data.Subset(load_dataset("digits").train, range(256))
    cfg = BaseTrainConfig(epochs=3, batch_size=64, optimizer="adam", lr=5e-3, training="randbet", seed=2)
    torch.manual_seed(0)
    saved: dict = {}
    keep = lambda e, m, c: e == 1 and saved.update(copy.deepcopy(c))  # noqa: E731
    full = train_base(create_model("vgg11", width=0.125), data, cfg, on_epoch=keep)
    h = full["history"]
    assert h[-1]["loss"] < h[0]["loss"] and h[-1]["loss_perturbed"] < h[0]["loss_perturbed"]
    assert full["config"]["training"] == "randbet" and full["config"]["randbet_ber"] == 0.01
    stored = [w for n, w in full["model"].items() if n.endswith("weight") and w.dim() > 1]  # Conv/Linear
    assert all(w.abs().max() <= np.float32(cfg.wmax) for w in stored)
    torch.manual_seed(99)
    resumed = train_base(create_model("vgg11", width=0.125), data, cfg, resume=saved)
    assert all(torch.equal(full["model"][k], resumed["model"][k]) for k in full["model"])
