"""nf_core.embeddings (paper Fig. 15, Figs. 16-17) and their report sections, on tiny models."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from nf_core.chips import ChipConfig
from nf_core.deployed import DeployedModel
from nf_core.embeddings import embedding_panels, gallery, shared_sample
from nf_core.generators import create_generator
from nf_core.models import create_model

CHIP = ChipConfig(ber=0.01, fault_model="flip")


@pytest.fixture(scope="module")
def tiny() -> tuple[DeployedModel, dict, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    base = DeployedModel(create_model("resnet18", num_classes=10, input_size=32, width=0.125), bits=8)
    gens = {"ConvL": create_generator("ConvL").eval(), "ConvS": create_generator("ConvS").eval()}
    data = [(torch.rand(3, 32, 32) * 2 - 1, i % 10) for i in range(200)]
    x, y = shared_sample(data, n=40, seed=3)
    return base, gens, x, y


def test_shared_sample_is_fixed_by_seed() -> None:
    data = [(torch.full((3, 2, 2), float(i)), i % 5) for i in range(50)]
    x1, y1 = shared_sample(data, 12, seed=1)
    x2, y2 = shared_sample(data, 12, seed=1)
    x3, _ = shared_sample(data, 12, seed=2)
    assert x1.shape == (12, 3, 2, 2) and y1.shape == (12,)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and not torch.equal(x1, x3)
    assert len(set(x1[:, 0, 0, 0].tolist())) == 12  # without replacement


def test_panels_shapes_and_determinism(tiny) -> None:
    base, gens, x, y = tiny
    a = embedding_panels(base, x, y, gens, CHIP, chip_seed=5, tsne_seed=0)
    b = embedding_panels(base, x, y, gens, CHIP, chip_seed=5, tsne_seed=0)
    assert [(p["condition"], p["generator"]) for p in a["panels"]] == [
        (c, g) for c in ("clean", "perturbed") for g in (None, "ConvL", "ConvS")
    ]
    assert np.array_equal(a["labels"], y.numpy())
    for pa, pb in zip(a["panels"], b["panels"]):
        assert pa["coords"].shape == (40, 2) and np.isfinite(pa["coords"]).all()
        assert np.array_equal(pa["coords"], pb["coords"]) and pa["accuracy"] == pb["accuracy"]
        assert 0 <= pa["accuracy"] <= 100
    # The chip changes the outputs: another chip seed gives other perturbed coordinates, the same clean ones.
    c = embedding_panels(base, x, y, {}, CHIP, chip_seed=6, tsne_seed=0)
    assert np.array_equal(c["panels"][0]["coords"], a["panels"][0]["coords"])
    assert not np.array_equal(c["panels"][1]["coords"], a["panels"][3]["coords"])


def test_gallery_one_image_per_class_and_x_prime_in_range(tiny) -> None:
    _, gens, x, y = tiny
    gal = gallery(x, y, gens)
    assert gal["classes"] == list(range(10)) and gal["x"].shape == (10, 3, 32, 32)
    for c, img in zip(gal["classes"], gal["x"]):
        assert np.array_equal(img, x[y.tolist().index(c)].numpy())
    for g in ("ConvL", "ConvS"):
        xp, gx = gal["generators"][g]["x_prime"], gal["generators"][g]["g"]
        assert xp.shape == gx.shape == (10, 3, 32, 32)
        assert xp.min() >= -1 and xp.max() <= 1
        assert np.allclose(xp, np.clip(gal["x"] + gx, -1, 1), atol=1e-6)
    with pytest.raises(ValueError, match="classes \\[42\\]"):
        gallery(x, y, gens, classes=[42])


def test_sections_write_png(tiny, tmp_path) -> None:
    from orchestration.report.embeddings import embedding_sections
    from orchestration.report.html import section_html

    base, gens, x, y = tiny
    secs = embedding_sections(base, gens, x, y, tmp_path, CHIP, chip_seed=5)
    assert [s.key for s in secs] == ["embeddings", "transformed_inputs"]
    for s in secs:
        assert s.skipped is None and len(s.figures) == 1
        png = tmp_path / s.figures[0]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and os.path.exists(str(png)[:-4] + ".svg")
        assert s.figures[0] in section_html(s)
    skipped = embedding_sections(base, {}, x, y, tmp_path, CHIP)
    assert all(s.skipped for s in skipped)


def test_modules_from_checkpoints(tiny) -> None:
    from orchestration.report.embeddings import modules_from_checkpoints

    base, gens, x, _ = tiny
    spec = {"model": "resnet18", "num_classes": 10, "input_size": 32, "width": 0.125}
    base_ck = {"spec": spec, "model": base.plain.state_dict()}
    gen_ck = {"config": {"generator_bits": None}, "model": gens["ConvS"].state_dict()}
    dep, got = modules_from_checkpoints(base_ck, {"ConvS": gen_ck})
    with torch.inference_mode():
        assert torch.allclose(dep.logits(x[:4]), base.logits(x[:4]))
        assert torch.allclose(got["ConvS"](x[:4]), gens["ConvS"](x[:4]))
