"""The speed paths (chip prefetch, chips batched in evaluation, BatchNorm folding, channels-last,
bf16 autocast) against the plain path: same chips bit for bit, same results (within float
tolerance where the arithmetic changes)."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from nf_core.chips import ChipConfig, perturb_codes
from nf_core.deployed import DeployedModel
from nf_core.eopm import RandomChips, eopm_loss, eopm_step, training_chip_seeds, training_chips
from nf_core.evaluate import evaluate
from nf_core.fold import conv_bn_pairs
from nf_core.generators import create_generator
from nf_core.models import create_model
from nf_core.quant import quantize_model
from nf_core.train import GeneratorTrainConfig, train_generator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _model() -> nn.Module:
    """A tiny ResNet18 with non-trivial BatchNorm statistics (fresh ones would fold to the identity)."""
    torch.manual_seed(3)
    m = create_model("resnet18", width=0.125)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(mod.weight, 0.5, 1.5)
            nn.init.uniform_(mod.bias, -0.2, 0.2)
    return m.eval()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return _model()


def _batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g) * 2 - 1, torch.randint(0, 10, (n,), generator=g)


def test_prefetched_training_chips_are_bit_identical(model) -> None:
    base, cfg = DeployedModel(model), ChipConfig(0.02)
    with training_chips([base], cfg, seed=7, n=3, start_step=5, prefetch=True) as pre:
        for step in (5, 6, 7, 9):  # 9: a skipped step (e.g. after a resume) is still right
            (codes,) = pre.get(step)
            direct = torch.stack([perturb_codes(base.qw, s, cfg) for s in training_chip_seeds(7, step, 3)])
            assert codes.dtype == torch.int8 and torch.equal(codes, direct)
    assert training_chips([base], cfg, 7, 3, prefetch=None) is None  # CPU default: drawn in the step


def test_prefetched_training_equals_plain_training(model) -> None:
    x, y = _batch(16)
    ds = TensorDataset(x, y)
    out = []
    for prefetch in (False, True):
        torch.manual_seed(0)
        gen = create_generator("ConvS")
        cfg = GeneratorTrainConfig(ber=0.02, n_chips=2, epochs=1, batch_size=8, prefetch=prefetch)
        train_generator(gen, [DeployedModel(model)], ds, cfg)
        out.append([p.detach().clone() for p in gen.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*out))


@pytest.fixture(scope="module")
def loader() -> DataLoader:
    x, y = _batch(48, seed=1)
    return DataLoader(TensorDataset(x, y), batch_size=16)


def test_batched_and_prefetched_evaluation_equals_chip_by_chip(model, loader) -> None:
    base, cfg, seeds = DeployedModel(model), ChipConfig(0.05), list(range(7))
    gen = create_generator("ConvS")
    plain = evaluate(base, loader, cfg, gen, seeds, chips_per_pass=1, prefetch=False)
    for per, pre in ((3, False), (4, True), (1, True)):
        got = evaluate(base, loader, cfg, gen, seeds, chips_per_pass=per, prefetch=pre)
        assert got["pa_per_chip"] == plain["pa_per_chip"] and got["pa_nf_per_chip"] == plain["pa_nf_per_chip"]
        assert got["ca"] == plain["ca"] and got["ca_nf"] == plain["ca_nf"]
    with pytest.raises(ValueError, match="chips_per_pass"):
        evaluate(base, loader, cfg, None, seeds, chips_per_pass=0)


def test_folding_perturbs_codes_before_folding(model) -> None:
    plain, folded = DeployedModel(model), DeployedModel(model, fold_bn=True)
    assert folded.fold is not None and len(folded.fold.pairs) == len(conv_bn_pairs(model)) > 10
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.module.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the caller's model is untouched
    cfg, seed = ChipConfig(0.05), 11
    clean_codes = folded.qw.flat.clone()
    codes = perturb_codes(folded.qw, seed, cfg)
    assert torch.equal(folded.qw.flat, clean_codes) and torch.equal(folded.qw.flat, plain.qw.flat)
    w = folded.chip_weights(seed, cfg)
    name = folded.fold.pairs[0][0] + ".weight"
    i = folded.qw.names.index(name)
    deq = codes[folded.qw.offsets[i] : folded.qw.offsets[i + 1]].float().view(folded.qw.shapes[i]) * folded.qw.scales[i]
    assert torch.equal(w[name], deq * folded.fold.scale[name].view(-1, 1, 1, 1))  # dequant(perturbed) · g
    x, _ = _batch()
    assert torch.allclose(folded.logits(x), plain.logits(x), atol=1e-4, rtol=1e-4)
    assert torch.allclose(folded.logits(x, w), plain.logits(x, plain.chip_weights(seed, cfg)), atol=1e-4, rtol=1e-4)
    st_f, st_p = folded.stacked_chip_weights([1, 2], cfg), plain.stacked_chip_weights([1, 2], cfg)
    assert torch.allclose(
        folded.perturbed_logits(x, st_f, "vmap"), plain.perturbed_logits(x, st_p, "loop"), atol=1e-4, rtol=1e-4
    )


def test_channels_last_and_bf16_change_results_only_within_tolerance(model) -> None:
    x, y = _batch()
    seeds, cfg = training_chip_seeds(0, 0, 2), ChipConfig(0.02)
    ref, _ = eopm_loss([DeployedModel(model)], x, y, seeds, cfg, 5.0, "loop")
    cl = DeployedModel(model, channels_last=True, fold_bn=True)
    loss_cl, _ = eopm_loss([cl], x, y, seeds, cfg, 5.0, "loop")
    assert torch.allclose(loss_cl, ref, rtol=1e-4)
    loss_bf, _ = eopm_loss([DeployedModel(model, amp="bf16")], x, y, seeds, cfg, 5.0, "loop")
    assert torch.allclose(loss_bf, ref, rtol=0.05) and loss_bf.dtype == torch.float32
    with pytest.raises(ValueError, match="bf16"):
        DeployedModel(model, amp="fp8")


def test_channels_last_generator_step_matches(model) -> None:
    x, y = _batch()
    seeds, cfg = training_chip_seeds(0, 0, 2), ChipConfig(0.02)
    grads = []
    for cl in (False, True):
        torch.manual_seed(0)
        gen = create_generator("ConvS")
        base = DeployedModel(model, channels_last=cl)
        if cl:
            gen = gen.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(gen.parameters(), 0.0)
        eopm_step(
            gen,
            RandomChips([base], cfg, batching="loop"),
            x.contiguous(memory_format=torch.channels_last) if cl else x,
            y,
            seeds,
            5.0,
            opt,
        )
        grads.append([p.grad.clone() for p in gen.parameters()])
    # Summation order differs between the layouts: compare the whole gradient vector (conv biases
    # followed by BatchNorm have a true gradient of 0, so their entries are rounding noise).
    a, b = (torch.cat([g.flatten() for g in gs]) for gs in grads)
    assert (a - b).norm() <= 5e-3 * b.norm()


def test_quantized_codes_do_not_depend_on_options(model) -> None:
    q = quantize_model(model)
    for kw in ({"fold_bn": True}, {"channels_last": True}, {"amp": "bf16"}):
        assert torch.equal(DeployedModel(model, **kw).qw.flat, q.flat)


def test_gpu_benchmark_runs_tiny() -> None:
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "bench_gpu.py"), "--tiny"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "tiny sizes" in r.stdout and "all, vmap" in r.stdout and "150 epochs" in r.stdout
    assert "PA and PA (NF) over 3 chips" in r.stdout
