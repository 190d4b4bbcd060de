import numpy as np
import pytest
import torch

from nf_core.chips import ChipConfig
from nf_core.data import load_dataset, make_loader
from nf_core.deployed import DeployedModel
from nf_core.evaluate import efficiency_ratio, evaluate, evaluation_chip_seeds, recovery
from nf_core.generators import create_generator
from nf_core.models import create_model


@pytest.fixture(scope="module")
def loader():
    ds = load_dataset("digits")
    return make_loader(torch.utils.data.Subset(ds.test, range(100)), 50, shuffle=False)


def test_metrics_are_consistent(loader) -> None:
    base = DeployedModel(create_model("resnet18", width=0.125))
    g = create_generator("UNetS")
    r = evaluate(base, loader, ChipConfig(0.05), generator=g, chip_seeds=evaluation_chip_seeds(4))
    assert r["chips"] == 4 and r["chip_seeds"] == [0, 1, 2, 3]
    assert r["pa_mean"] == pytest.approx(np.mean(r["pa_per_chip"]))
    assert r["pa_std"] == pytest.approx(np.std(r["pa_per_chip"], ddof=0))
    assert r["rp"] == pytest.approx(r["pa_nf_mean"] - r["pa_mean"])
    assert r["efficiency"] == pytest.approx(r["rp"] / (sum(p.numel() for p in g.parameters()) / 1e6))
    assert all(0 <= v <= 100 for v in [r["ca"], r["ca_nf"], *r["pa_per_chip"], *r["pa_nf_per_chip"]])
    assert evaluate(base, loader, ChipConfig(0.05), chip_seeds=[0, 1])["pa_per_chip"] == r["pa_per_chip"][:2]


def test_zero_ber_gives_clean_accuracy(loader) -> None:
    base = DeployedModel(create_model("vgg11", width=0.125))
    r = evaluate(base, loader, ChipConfig(0.0), chip_seeds=[0, 1])
    assert r["pa_per_chip"] == [r["ca"], r["ca"]] and "rp" not in r


def test_transfer_to_other_model_ber_and_fault_model(loader) -> None:
    g = create_generator("ConvS")  # "trained" on some source model; applied unchanged
    target = DeployedModel(create_model("vgg11", width=0.125))
    r = evaluate(target, loader, ChipConfig(0.03, "flip", "flat"), generator=g, chip_seeds=[0, 1, 2])
    assert r["fault_model"] == "flip" and r["layout"] == "flat" and r["ber"] == 0.03 and "rp" in r


def test_helpers() -> None:
    assert recovery(80.0, 30.0) == 50.0
    assert efficiency_ratio(50.0, 500_000) == 100.0
    with pytest.raises(ValueError, match="chips"):
        evaluation_chip_seeds(0)
