import pytest
import torch
import torch.nn.functional as F

from nf_core.chips import ChipConfig
from nf_core.deployed import DeployedModel
from nf_core.eopm import TRAIN_SEED_BASE, RandomChips, eopm_loss, eopm_step, training_chip_seeds
from nf_core.evaluate import evaluation_chip_seeds
from nf_core.generators import create_generator
from nf_core.models import create_model
from nf_core.transform import neuralfuse


@pytest.fixture(scope="module")
def base() -> DeployedModel:
    torch.manual_seed(1)
    return DeployedModel(create_model("resnet18", width=0.125))


def _batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(n, 3, 32, 32) * 2 - 1, torch.randint(0, 10, (n,))


def test_transformation_is_clamped() -> None:
    g = create_generator("UNetS")
    torch.nn.init.constant_(g.outc.bias, 5.0)  # G(x) far outside [-1, 1]
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    xt = neuralfuse(x, g)
    assert xt.min() >= -1 and xt.max() <= 1 and not torch.equal(xt, x)
    assert neuralfuse(x, None) is x


def test_loss_matches_the_formula(base: DeployedModel) -> None:
    x, y = _batch()
    seeds = training_chip_seeds(0, 0, 3)
    cfg = ChipConfig(0.02)
    loss, parts = eopm_loss([base], x, y, seeds, cfg, lam=5.0)
    per_chip = [F.cross_entropy(base.logits(x, base.chip_weights(s, cfg)), y) for s in seeds]
    expected = F.cross_entropy(base.logits(x), y) + 5.0 * torch.stack(per_chip).mean()
    assert torch.allclose(loss, expected, atol=1e-5)
    assert parts["ce_perturbed"] > parts["ce_clean"] - 1.0


def test_vmap_and_loop_agree(base: DeployedModel) -> None:
    x, _ = _batch()
    st = base.stacked_chip_weights(training_chip_seeds(0, 1, 4), ChipConfig(0.02))
    assert torch.allclose(base.perturbed_logits(x, st, "vmap"), base.perturbed_logits(x, st, "loop"), atol=1e-5)
    with pytest.raises(ValueError, match="vmap"):
        base.perturbed_logits(x, st, "threads")


def test_gradients_reach_only_the_generator(base: DeployedModel) -> None:
    g = create_generator("ConvS")
    before = {k: v.clone() for k, v in base.module.state_dict().items()}
    opt = torch.optim.Adam(g.parameters(), 1e-3)
    x, y = _batch()
    g0 = [p.clone() for p in g.parameters()]
    eopm_step(g, RandomChips([base], ChipConfig(0.02)), x, y, training_chip_seeds(0, 0, 2), 5.0, opt)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in g.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(g0, g.parameters()))
    assert all(p.grad is None and not p.requires_grad for p in base.module.parameters())
    assert all(torch.equal(before[k], v) for k, v in base.module.state_dict().items())


def test_ensemble_sums_losses(base: DeployedModel) -> None:
    other = DeployedModel(create_model("vgg11", width=0.125))
    x, y = _batch()
    seeds, cfg = training_chip_seeds(0, 0, 2), ChipConfig(0.01)
    both, _ = eopm_loss([base, other], x, y, seeds, cfg, 1.0)
    a, _ = eopm_loss([base], x, y, seeds, cfg, 1.0)
    b, _ = eopm_loss([other], x, y, seeds, cfg, 1.0)
    assert torch.allclose(both, a + b, atol=1e-5)


def test_training_chips_are_seeded_and_disjoint_from_evaluation_chips() -> None:
    a = training_chip_seeds(7, 3, 5)
    assert a == training_chip_seeds(7, 3, 5) and a != training_chip_seeds(7, 4, 5)
    assert len(set(a)) == 5 and min(a) >= TRAIN_SEED_BASE
    assert max(evaluation_chip_seeds(1000)) < TRAIN_SEED_BASE


def test_quantization_aware_generator_uses_quantized_weights() -> None:
    from torch.func import functional_call

    from nf_core.eopm import transform
    from nf_core.quant import fake_quant_params

    g = create_generator("ConvS").eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    q = transform(g, x, generator_bits=2)
    assert torch.equal(q, torch.clamp(x + functional_call(g, fake_quant_params(g, 2), (x,)), -1, 1))
    assert not torch.equal(q, transform(g, x)) and q.abs().max() <= 1


def test_quantized_unets_use_the_authors_transposed_conv_padding() -> None:
    import torch.nn.functional as F

    from nf_core.generators import create_generator

    for name in ("UNetL", "UNetS"):
        plain, quant = create_generator(name), create_generator(name, generator_bits=8)
        assert all(u.padding == (0, 0) for u in plain.ups) and all(u.padding == (1, 1) for u in quant.ups)
        quant.load_state_dict(plain.state_dict())  # same parameters, other forward
        quant.eval()
        up_in, cat_in = [], []
        quant.ups[0].register_forward_hook(lambda m, i, o, acc=up_in: acc.append(i[0]))
        quant.up_convs[0].register_forward_hook(lambda m, i, o, acc=cat_in: acc.append(i[0]))
        x = torch.rand(2, 3, 32, 32) * 2 - 1
        with torch.no_grad():
            out = quant(x)
            assert out.shape == x.shape and not torch.allclose(out, plain.eval()(x))
            # Last up step: ConvT k2 s2 p1 on 16×16 gives 30×30, zero-padded by one pixel back to 32×32.
            u = quant.ups[0]
            want = F.pad(F.conv_transpose2d(up_in[0], u.weight, u.bias, stride=2, padding=1), [1, 1, 1, 1])
            assert want.shape[-2:] == (32, 32)
            assert torch.equal(cat_in[0][:, u.out_channels :], want)
