import copy
import os
import time

import pytest
import ray
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from nf_core.chips import ChipConfig
from nf_core.deployed import DeployedModel
from nf_core.eopm import RandomChips, eopm_step, training_chip_seeds
from nf_core.evaluate import evaluate
from nf_core.generators import create_generator
from nf_core.models import create_model
from orchestration.sweep.pool import ChipPool, PooledChips, evaluate_pooled, make_pools
from tests.sweep_support import ensure_ray

SPEC = {"model": "resnet18", "num_classes": 10, "input_size": 32, "width": 0.125}
CHIP = ChipConfig(0.02)


@pytest.fixture(scope="module")
def ray_session():
    return ensure_ray()  # the session's local Ray (tests/sweep_support.py)


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    m = _load("resnet18")
    torch.nn.init.zeros_(m.linear.bias)  # else an untrained model predicts one class whatever the chip
    return m.state_dict()


@pytest.fixture(scope="module")
def base(state) -> DeployedModel:
    return DeployedModel(_load("resnet18", state))


@pytest.fixture(scope="module")
def actors(ray_session, state) -> list:
    handles = make_pools(state, SPEC, 8, n_actors=3)  # shared by every test: actors are slow to start
    yield handles
    for h in handles:  # their CPUs back to the session's Ray
        ray.kill(h, no_restart=True)


def _load(name: str, state: dict | None = None) -> torch.nn.Module:
    m = create_model(name, width=0.125)
    if state is not None:
        m.load_state_dict(state)
    return m


def _batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(n, 3, 32, 32) * 2 - 1, torch.randint(0, 10, (n,))


def test_relaxed_access_matches_in_process_autograd(actors, base) -> None:
    x, y = _batch()
    seeds = training_chip_seeds(0, 0, 3)
    r = ray.get(actors[0].relaxed.remote(x, y, seeds, CHIP))
    xr = x.clone().requires_grad_(True)
    clean = F.cross_entropy(base.logits(xr), y)
    assert r["clean_loss"] == pytest.approx(clean.item(), abs=1e-5)
    assert torch.allclose(r["clean_grad"], torch.autograd.grad(clean, xr)[0], atol=1e-5)
    per_chip = torch.stack([F.cross_entropy(base.logits(xr, base.chip_weights(s, CHIP)), y) for s in seeds])
    assert torch.allclose(torch.tensor(r["chip_losses"]), per_chip, atol=1e-5)
    assert torch.allclose(r["chip_grad"], torch.autograd.grad(per_chip.sum(), xr)[0], atol=1e-5)
    assert r["chip_grad"].shape == x.shape and r["chip_grad"].device.type == "cpu"


def test_restricted_access_returns_only_predictions(actors, base) -> None:
    x, _ = _batch()
    p = ray.get(actors[1].restricted.remote(x, [3, 4], CHIP))
    assert p.dtype == torch.int64 and p.shape == (2, 8)
    assert torch.equal(p[1], base.logits(x, base.chip_weights(4, CHIP)).argmax(1))
    clean = ray.get(actors[1].restricted.remote(x, None, CHIP))
    assert clean.shape == (1, 8) and torch.equal(clean[0], base.logits(x).argmax(1))


def _step(models, gen0) -> tuple[torch.nn.Module, dict]:
    """One EOPM step from ``models`` (in-process chips or pools): the same step function."""
    torch.manual_seed(2)
    x, y = _batch()
    g = copy.deepcopy(gen0)
    # SGD, not Adam: Adam's first step is ~lr·sign(grad), which magnifies float noise in
    # near-zero gradients (biases feeding BatchNorm) and hides real differences.
    opt = torch.optim.SGD(g.parameters(), lr=0.1)
    metrics = eopm_step(g, models, x, y, training_chip_seeds(0, 0, 5), 5.0, opt)
    return g, metrics


def _assert_same_generator(a, b, ma, mb) -> None:
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-5)
    for ba, bb in zip(a.buffers(), b.buffers()):  # BatchNorm ran G(x) exactly once in both
        assert torch.equal(ba, bb)
    assert ma == pytest.approx(mb, abs=1e-5)


def test_pooled_eopm_step_matches_in_process(actors, state, base) -> None:
    gen0 = create_generator("ConvS")
    ref, m_ref = _step(RandomChips([base], CHIP), gen0)
    assert any(not torch.equal(p, q) for p, q in zip(ref.parameters(), gen0.parameters()))
    two, m_two = _step(PooledChips([actors[:2]], CHIP), gen0)
    _assert_same_generator(ref, two, m_ref, m_two)
    local, m_local = _step(PooledChips([[ChipPool(state, SPEC)]], CHIP), gen0)
    _assert_same_generator(ref, local, m_ref, m_local)


def test_pooled_ensemble_sums_models(actors, state, base) -> None:
    torch.manual_seed(3)
    other_state = _load("vgg11").state_dict()
    other = DeployedModel(_load("vgg11", other_state))
    gen0 = create_generator("ConvS")
    ref, m_ref = _step(RandomChips([base, other], CHIP), gen0)
    other_pool = ChipPool(other_state, {**SPEC, "model": "vgg11"})
    mixed, m_mixed = _step(PooledChips([actors[:3], [other_pool]], CHIP), gen0)  # actors and local together
    _assert_same_generator(ref, mixed, m_ref, m_mixed)


def test_pooled_evaluation_equals_evaluate_however_spread(actors, base) -> None:
    torch.manual_seed(4)
    x = torch.rand(48, 3, 32, 32) * 2 - 1
    y = base.logits(x).argmax(1)  # CA = 100%, so chips' faults show in PA
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    g = create_generator("ConvS")
    seeds = [0, 1, 2, 3, 4]
    ref = evaluate(base, loader, CHIP, generator=g, chip_seeds=seeds)
    assert len(set(ref["pa_per_chip"])) > 1
    for pools in (actors[:2], actors[:1], actors):
        assert evaluate_pooled(pools, loader, CHIP, generator=g, chip_seeds=seeds) == ref
    no_gen = evaluate_pooled(actors, loader, CHIP, chip_seeds=seeds)
    assert no_gen == evaluate(base, loader, CHIP, chip_seeds=seeds)


def test_killed_actor_restarts_and_answers(actors) -> None:
    x, _ = _batch()
    a = actors[2]
    before = ray.get(a.restricted.remote(x, [0], CHIP))
    pid = lambda: ray.get(a.__ray_call__.remote(lambda self: os.getpid()), timeout=60)  # noqa: E731
    old = pid()
    ray.kill(a, no_restart=False)
    deadline = time.monotonic() + 60
    while pid() == old:  # ray.kill returns before the process is gone
        assert time.monotonic() < deadline, "actor did not restart"
        time.sleep(0.2)
    assert torch.equal(ray.get(a.restricted.remote(x, [0], CHIP), timeout=60), before)
