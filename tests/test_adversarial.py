"""Adversarial bit errors (nf_core/adversarial.py): same cells as flip chips, exact budget, stronger than
random flips, deterministic by seed, and the EOPM source / step built on them."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nf_core.adversarial import (
    AdversarialChips,
    AdversarialChipsConfig,
    PerturbedModelSource,
    bit_error_attack,
    candidate_cells,
    cell_count,
    cells_to_codes,
    random_bit_errors,
)
from nf_core.chips import ChipConfig, faulty_cells, perturb_codes
from nf_core.data import load_dataset
from nf_core.deployed import DeployedModel
from nf_core.eopm import training_chip_seeds
from nf_core.generators import create_generator
from nf_core.models import create_model
from nf_core.train import GeneratorTrainConfig, train_generator


@pytest.fixture(scope="module")
def base() -> DeployedModel:
    torch.manual_seed(0)
    return DeployedModel(create_model("resnet18", width=0.125))


def _batch(seed: int, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    # 16×16 inputs (the CIFAR-style model pools globally): a quarter of the compute of 32×32
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 16, 16, generator=g) * 2 - 1, torch.randint(0, 10, (n,), generator=g)


def _loss(base: DeployedModel, codes: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return F.cross_entropy(base.logits(x, base.weights_from_codes(codes)), y).item()


def _popcount(a: torch.Tensor, b: torch.Tensor, bits: int) -> int:
    x = (a.to(torch.int32) ^ b.to(torch.int32)) & ((1 << bits) - 1)
    return int(sum(((x >> j) & 1).sum().item() for j in range(bits)))


@pytest.mark.parametrize("layout", ["wrap", "flat", "reference"])
@pytest.mark.parametrize("bits", [8, 4])
def test_cells_apply_exactly_as_flip_chips(layout: str, bits: int) -> None:
    # The adversarial chip's representation is the chips' own: the faulty cells of a random flip chip,
    # applied by cells_to_codes, give perturb_codes' stored codes bit for bit.
    qw = DeployedModel(create_model("resnet18", width=0.125), bits=bits).qw
    cfg = ChipConfig(0.01, "flip", layout)
    cells = faulty_cells(7, cfg.ber, cell_count(qw, cfg))
    assert torch.equal(cells_to_codes(qw, cells, cfg), perturb_codes(qw, 7, cfg))


@pytest.mark.parametrize("bits", [8, 4])
def test_budget_is_respected_exactly(base: DeployedModel, bits: int) -> None:
    dm = base if bits == 8 else DeployedModel(base.plain, bits=bits)
    x, y = _batch(0)
    flat = ChipConfig(0.01, "flip", "flat")  # one cell = one weight bit: differing bits = budget
    chip = bit_error_attack(dm, x, y, 25, flat, steps=1, seed=0)
    assert chip.budget == 25 == np.unique(chip.cells).size
    assert _popcount(chip.codes(dm.qw), dm.qw.flat, bits) == 25
    assert np.isin(chip.cells, candidate_cells(dm.qw, flat)).all()  # only cells that hold stored bits
    assert (chip.cells % 8 < bits).all()


def test_wrap_cells_are_valid_and_flip_every_weight_on_them(base: DeployedModel) -> None:
    x, y = _batch(0)
    wrap = ChipConfig(0.01, "flip", "wrap")
    chip = bit_error_attack(base, x, y, 12, wrap, steps=1, seed=0)
    cand = candidate_cells(base.qw, wrap)
    assert chip.budget == 12 and np.isin(chip.cells, cand).all()
    # Each chosen cell changes the stored codes (it holds bits), and together they flip every weight
    # bit laid onto them: at least as many bits as cells differ.
    codes = chip.codes(base.qw)
    assert _popcount(codes, base.qw.flat, 8) >= 12
    for c in chip.cells[:3]:
        assert not torch.equal(cells_to_codes(base.qw, np.array([c]), wrap), base.qw.flat)


def test_attack_raises_the_loss_more_than_random_flips(base: DeployedModel) -> None:
    cfg = ChipConfig(0.01, "flip", "wrap")
    gains_adv, gains_rand = [], []
    for seed in range(3):
        x, y = _batch(seed)
        clean = _loss(base, base.qw.flat, x, y)
        chip = bit_error_attack(base, x, y, 20, cfg, steps=2, seed=seed)
        adv = _loss(base, chip.codes(base.qw), x, y)
        assert adv == pytest.approx(chip.loss, rel=1e-5) and clean == pytest.approx(chip.clean_loss, rel=1e-5)
        rand = _loss(base, cells_to_codes(base.qw, random_bit_errors(base.qw, 20, cfg, seed), cfg), x, y)
        assert adv > clean
        gains_adv.append(adv - clean)
        gains_rand.append(rand - clean)
    assert np.mean(gains_adv) > max(0.0, np.mean(gains_rand))


def test_deterministic_by_seed(base: DeployedModel) -> None:
    x, y = _batch(1)
    cfg = ChipConfig(0.01, "flip", "reference")
    a = bit_error_attack(base, x, y, 15, cfg, steps=1, seed=4, random_start=True)
    b = bit_error_attack(base, x, y, 15, cfg, steps=1, seed=4, random_start=True)
    assert np.array_equal(a.cells, b.cells) and a.loss == b.loss
    assert np.array_equal(random_bit_errors(base.qw, 15, cfg, 4), random_bit_errors(base.qw, 15, cfg, 4))
    assert not np.array_equal(random_bit_errors(base.qw, 15, cfg, 4), random_bit_errors(base.qw, 15, cfg, 5))


def test_source_mixed_keeps_eopm_random_chips(base: DeployedModel) -> None:
    x, y = _batch(2, 8)
    chip = ChipConfig(0.01, "stuck_at", "wrap")
    source = PerturbedModelSource([base], chip, AdversarialChipsConfig("mixed", budget=10, steps=1), n=4, seed=3)
    (codes,) = source.draw(5, x, y)
    assert codes.shape == (4, base.qw.numel) and codes.dtype == torch.int8
    seeds = training_chip_seeds(3, 5, 4)
    for k in (2, 3):  # the random half: EOPM's own chips of that step
        assert torch.equal(codes[k], perturb_codes(base.qw, seeds[k], chip))
    assert [c.budget for c in source.last] == [10, 10]
    (again,) = source.draw(5, x, y)
    assert torch.equal(codes, again)


def test_config_errors() -> None:
    with pytest.raises(ValueError, match=r"chips 'adversary'.*random, adversarial, mixed"):
        AdversarialChipsConfig("adversary")
    with pytest.raises(ValueError, match="budget -1"):
        AdversarialChipsConfig(budget=-1)
    with pytest.raises(ValueError, match="n_chips >= 2"):
        AdversarialChipsConfig("mixed").n_adversarial(1)


def test_generator_trains_against_adversarial_chips(base: DeployedModel) -> None:
    data = torch.utils.data.Subset(load_dataset("digits").train, range(32))
    cfg = GeneratorTrainConfig(ber=0.01, n_chips=2, epochs=1, batch_size=32, seed=0)
    models = AdversarialChips(
        [base], cfg.chip, AdversarialChipsConfig("adversarial", budget=10, steps=1), cfg.n_chips, cfg.seed
    )
    gen = create_generator("ConvS")
    before = [p.detach().clone() for p in gen.parameters()]
    ckpt = train_generator(gen, [base], data, cfg, models=models)
    hist = ckpt["history"][-1]
    assert np.isfinite(hist["loss"]) and hist["attack_loss"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, gen.parameters()))
