"""Base-training mode awp (nf_core/awp.py): PGD stays in the ε-ball, the weight perturbation is applied for
the loss and removed exactly before the optimizer step, and a PreAct ResNet18 trains on digits."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from nf_core.awp import INPUT_SCALE, AWPConfig, awp_perturbation, awp_update, pgd_attack
from nf_core.data import load_dataset
from nf_core.models import create_model
from nf_core.quant import fake_quant_params
from nf_core.train import BaseTrainConfig, train_base


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("preact_resnet18", width=0.125).train()


def _batch(n: int = 8, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1, torch.randint(0, 10, (n,), generator=g)


def _qat_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return F.cross_entropy(functional_call(model, fake_quant_params(model, 8), (x,)), y).item()


def test_published_defaults_and_input_scale() -> None:
    cfg = AWPConfig()
    assert (cfg.epsilon, cfg.step_size, cfg.steps, cfg.gamma, cfg.warmup) == (8 / 255, 2 / 255, 10, 5e-3, 0)
    assert INPUT_SCALE == 2.0  # inputs in [-1, 1]


def test_pgd_stays_within_epsilon_and_raises_the_loss() -> None:
    model, (x, y) = _model(), _batch()
    cfg = AWPConfig()
    stats = [b.clone() for b in model.buffers()]
    x_adv = pgd_attack(model, x, y, cfg)
    eps = cfg.epsilon * INPUT_SCALE
    assert (x_adv - x).abs().max().item() <= eps + 1e-6
    assert x_adv.min().item() >= -1 and x_adv.max().item() <= 1
    assert (x_adv - x).abs().max().item() > eps / 2  # it moved
    model.eval()
    assert _qat_loss(model, x_adv, y) > _qat_loss(model, x, y)
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers()))  # running stats untouched


class _Recording(torch.optim.SGD):
    """Plain SGD that records the weights and gradients it is handed."""

    def step(self, closure=None):  # type: ignore[override]
        self.seen = [(p.detach().clone(), p.grad.detach().clone()) for p in self.param_groups[0]["params"]]
        return super().step(closure)


def test_weight_perturbation_is_restored_exactly() -> None:
    model, (x, y) = _model(), _batch()
    cfg = AWPConfig(gamma=5e-3)
    x_adv = pgd_attack(model, x, y, cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    v = awp_perturbation(model, x_adv, y, cfg)
    names = [n for n, p in model.named_parameters() if p.dim() > 1]
    assert sorted(v) == sorted(names)
    for n in names:  # ‖v_l‖ = γ ‖w_l‖ per layer
        assert v[n].norm().item() == pytest.approx(cfg.gamma * before[n].norm().item(), rel=1e-4)

    # The gradient the optimizer must see: the loss at w + v (a manual copy).
    manual = _model()
    manual.load_state_dict({**before, **buffers}, strict=False)
    with torch.no_grad():
        for n in names:
            manual.get_parameter(n).add_(v[n])
    F.cross_entropy(functional_call(manual, fake_quant_params(manual, 8), (x_adv,)), y).backward()

    lr = 0.1
    opt = _Recording(model.parameters(), lr=lr)
    awp_update(model, x_adv, y, opt, cfg)
    params = dict(model.named_parameters())
    for (w_seen, g_seen), (n, p) in zip(opt.seen, params.items()):
        assert torch.equal(w_seen, before[n])  # the perturbation was removed exactly before the step
        torch.testing.assert_close(g_seen, manual.get_parameter(n).grad, rtol=1e-4, atol=1e-6)
        assert torch.equal(p.detach(), torch.add(before[n], g_seen, alpha=-lr))  # weights = the step alone
    assert any(not torch.equal(g, manual.get_parameter(n).grad * 0) for (_, g), n in zip(opt.seen, params))


def test_without_awp_the_gradient_is_the_clean_one() -> None:
    # gamma 0 (or the warm-up) = plain PGD training: the gradient is taken at w itself.
    model, (x, y) = _model(), _batch()
    x_adv = pgd_attack(model, x, y, AWPConfig(steps=2))
    ref = _model()
    F.cross_entropy(functional_call(ref, fake_quant_params(ref, 8), (x_adv,)), y).backward()
    opt = _Recording(model.parameters(), lr=0.1)
    awp_update(model, x_adv, y, opt, AWPConfig(), perturb=False)
    for (_, g), p in zip(opt.seen, ref.parameters()):
        torch.testing.assert_close(g, p.grad)


def test_awp_mode_trains_on_digits() -> None:
    data = torch.utils.data.Subset(load_dataset("digits").train, range(32))  # one batch, four steps
    cfg = BaseTrainConfig(epochs=4, batch_size=32, lr=0.05, training="awp", awp={"steps": 2}, seed=0)
    ckpt = train_base(_model(), data, cfg)
    losses = [h["loss"] for h in ckpt["history"]]
    assert losses[-1] < losses[0], losses
    assert ckpt["config"]["training"] == "awp" and ckpt["config"]["awp"] == {"steps": 2}


def test_bad_options() -> None:
    with pytest.raises(ValueError, match=r"trades.*standard, clip, randbet, awp"):
        BaseTrainConfig(training="trades")
    with pytest.raises(ValueError, match=r"unknown awp option 'eps'; valid choices: epsilon"):
        BaseTrainConfig(training="awp", awp={"eps": 0.1})
    with pytest.raises(ValueError, match=r"awp.gamma -1"):
        AWPConfig(gamma=-1)
