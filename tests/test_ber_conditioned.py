"""BER-conditioned generators: the output depends on the BER input; EOPM draws chips at the sampled BER."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nf_core.ber_conditioned import BERConditioned, BERRange, BERSampledChips, operating_ber
from nf_core.deployed import DeployedModel
from nf_core.eopm import eopm_step, training_chip_seeds
from nf_core.generators import create_generator
from nf_core.train import GeneratorTrainConfig, generator_optimizer, train_generator


def _trained_a_little() -> BERConditioned:
    g = create_generator("ConvS_BER")
    with torch.no_grad():  # as after training: FiLM and the BER channel carry weight
        g.film.weight.normal_()
        g.adapter.weight[:, 3].normal_()
    return g.eval()


def test_fresh_wrapper_is_the_inner_generator_and_output_changes_with_ber():
    torch.manual_seed(0)
    g = create_generator("ConvS_BER").eval()
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    assert torch.allclose(g(x), g.inner(x), atol=1e-6)  # identity initialisation
    g = _trained_a_little()
    a, b = g(x, ber=0.01), g(x, ber=0.001)
    assert not torch.allclose(a, b, atol=1e-4)
    with operating_ber(g, 0.001):
        assert torch.equal(g(x), b)  # deploy at the chip's BER
    assert float(g.ber) == pytest.approx(0.01)  # restored
    per_sample = g(x, ber=torch.tensor([0.01, 0.001, 0.01, 0.001]))
    assert torch.allclose(per_sample[0], a[0], atol=1e-6) and torch.allclose(per_sample[1], b[1], atol=1e-6)


def test_ber_range_sampling():
    r = BERRange.parse({"range": [1e-4, 1e-2], "log": True})
    assert (
        r.sample(0.0) == pytest.approx(1e-4)
        and r.sample(0.5) == pytest.approx(1e-3)
        and r.sample(1.0) == pytest.approx(1e-2)
    )
    bers = [r.for_batch(training_chip_seeds(0, s, 3)) for s in range(400)]
    assert all(1e-4 <= b <= 1e-2 for b in bers)
    logs = torch.tensor(bers).log10()
    assert abs(float((logs < -3).float().mean()) - 0.5) < 0.1  # log-uniform: half below the geometric middle
    assert r.for_batch([5, 6]) == r.for_batch([5, 6])  # a function of the batch's chips: resumable
    for bad, msg in (
        ({"range": [0, 0.01]}, "lo > 0"),
        ({"range": [0.01]}, r"\[lo, hi\]"),
        ([0.01, 0.02], "expected"),
        ({"range": [0.02, 0.01]}, "lo <= hi"),
    ):
        with pytest.raises(ValueError, match=msg):
            BERRange.parse(bad)


class _Recording(DeployedModel):
    """The real deployed model, recording the chip configs its EOPM chips are drawn at."""

    seen: list

    def chip_codes(self, seeds, cfg):
        self.seen.append((list(seeds), cfg.ber))
        return super().chip_codes(seeds, cfg)


def test_eopm_step_draws_chips_at_the_sampled_ber():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )
    base = _Recording(model)
    base.seen = []
    g = create_generator("ConvS_BER")
    cfg = GeneratorTrainConfig(ber=0.5, n_chips=2, epochs=1, batch_size=8)
    opt, sched = generator_optimizer(g, cfg)
    r = BERRange(1e-3, 1e-1)
    models = BERSampledChips([base], r, cfg.fault_model, cfg.layout, cfg.batching)
    x, y = torch.rand(8, 3, 32, 32) * 2 - 1, torch.randint(0, 3, (8,))
    for step in range(3):
        seeds = training_chip_seeds(0, step, 2)
        m = eopm_step(g, models, x, y, seeds, 5.0, opt, sched, cfg.generator_bits, step)
        assert base.seen[-1] == (seeds, m["ber"]) and m["ber"] == r.for_batch(seeds)
        assert float(g.ber) == pytest.approx(m["ber"]) and 1e-3 <= m["ber"] <= 1e-1
    assert len({b for _, b in base.seen}) == 3  # a different BER every batch, never cfg.ber
    before = {k: v.clone() for k, v in g.state_dict().items()}
    ds = torch.utils.data.TensorDataset(x, y)
    ranged = GeneratorTrainConfig(ber=r, n_chips=2, epochs=1, batch_size=8)
    ck = train_generator(g, [base], ds, ranged)  # a BER range in the config: BER-sampled chips
    assert ck["step"] == 1 and all(b != 0.5 for _, b in base.seen)
    assert any(not torch.equal(before[k], v) for k, v in g.state_dict().items() if k.startswith("film"))
    with pytest.raises(ValueError, match="not BER-conditioned"):
        train_generator(create_generator("ConvS"), [base], ds, ranged)
