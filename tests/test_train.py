"""Training loops: a checkpoint saved mid-training and resumed equals an uninterrupted run."""

import torch

from nf_core.checkpoint import load_checkpoint, save_checkpoint
from nf_core.data import load_dataset
from nf_core.deployed import DeployedModel
from nf_core.generators import create_generator
from nf_core.models import create_model
from nf_core.train import BaseTrainConfig, GeneratorTrainConfig, train_base, train_generator


def _small_digits():
    ds = load_dataset("digits")
    return torch.utils.data.Subset(ds.train, range(192))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_base_resume_equals_uninterrupted(tmp_path) -> None:
    data = _small_digits()
    cfg = BaseTrainConfig(epochs=3, batch_size=64, optimizer="sgd", lr=0.05, schedule="cosine", seed=3)
    torch.manual_seed(0)
    full = train_base(create_model("vgg11", width=0.125), data, cfg)

    torch.manual_seed(0)
    saved = {}
    part = create_model("vgg11", width=0.125)
    train_base(
        part,
        data,
        BaseTrainConfig(**{**cfg.__dict__, "epochs": 3}),
        on_epoch=lambda e, m, c: e == 1 and save_checkpoint(c, tmp_path / "base.pt") is None and saved.update(e=e),
    )
    assert saved == {"e": 1}
    ckpt = load_checkpoint(tmp_path / "base.pt")
    assert ckpt["epoch"] == 1 and ckpt["kind"] == "base" and ckpt["config"]["seed"] == 3
    torch.manual_seed(123)  # a fresh process would have some other RNG state
    resumed = train_base(create_model("vgg11", width=0.125), data, cfg, resume=ckpt)
    assert resumed["epoch"] == 3 and len(resumed["history"]) == 3
    assert _same(full["model"], resumed["model"])
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]


def test_generator_resume_equals_uninterrupted(tmp_path) -> None:
    data = _small_digits()
    torch.manual_seed(0)
    base = DeployedModel(create_model("resnet18", width=0.125))
    cfg = GeneratorTrainConfig(ber=0.02, n_chips=2, epochs=3, batch_size=64, step_size=2, seed=5)
    torch.manual_seed(0)
    full = train_generator(create_generator("ConvS"), [base], data, cfg)
    assert full["epoch"] == 3 and full["step"] == 9

    torch.manual_seed(0)
    train_generator(
        create_generator("ConvS"),
        [base],
        data,
        GeneratorTrainConfig(**{**cfg.__dict__, "epochs": 2}),
        on_epoch=lambda e, m, c: save_checkpoint(c, tmp_path / f"g{e}.pt"),
    )
    ckpt = load_checkpoint(tmp_path / "g2.pt")
    assert ckpt["scheduler"]["last_epoch"] == 6  # StepLR stepped per iteration
    resumed = train_generator(create_generator("ConvS"), [base], data, cfg, resume=ckpt)
    assert _same(full["model"], resumed["model"])
    assert full["optimizer"]["state"].keys() == resumed["optimizer"]["state"].keys()
    assert resumed["scheduler"]["last_epoch"] == 9 and resumed["history"][-1]["lr"] == full["history"][-1]["lr"]


def test_generator_defaults_are_the_papers() -> None:
    cfg = GeneratorTrainConfig()
    assert (cfg.lam, cfg.n_chips, cfg.lr, cfg.betas, cfg.step_size, cfg.gamma) == (
        5.0,
        5,
        1e-3,
        (0.5, 0.999),
        500,
        0.96,
    )
    assert (cfg.fault_model, cfg.layout, cfg.ber) == ("stuck_at", "wrap", 0.01)
    assert cfg.generator_bits == 8  # the authors train and run G with 8-bit fake-quantized weights


def _manual_fake_quant(state: dict, names: list[str], bits: int = 8) -> dict:
    """Ŵ = round(W / s) · s with s = max|W| / (2^(b-1) - 1), written out independently of nf_core.quant."""
    out = dict(state)
    top = 2 ** (bits - 1) - 1
    for n in names:
        w = state[n]
        s = w.abs().max() / top
        out[n] = torch.clamp(torch.round(w / s), -top, top) * s
    return out


def test_quantized_generator_evaluates_with_its_training_weights() -> None:
    from nf_core.eopm import transform
    from nf_core.generators import UNetS
    from nf_core.transform import neuralfuse
    from orchestration.sweep.experiment import trained_generator

    data = torch.utils.data.Subset(_small_digits().dataset, range(32))  # one step
    torch.manual_seed(0)
    base = DeployedModel(create_model("resnet18", width=0.125))
    cfg = GeneratorTrainConfig(ber=0.02, n_chips=1, epochs=1, batch_size=32, lr=0.05, seed=1)  # default: 8-bit G
    gen = create_generator("UNetS", generator_bits=cfg.generator_bits)
    ckpt = train_generator(gen, [base], data, cfg)
    assert ckpt["config"]["generator_bits"] == 8

    deployed = trained_generator(ckpt, "UNetS", 32)  # what the evaluation trials run
    manual = UNetS(up_padding=1).eval()
    conv_names = [n for n, m in manual.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    manual.load_state_dict(_manual_fake_quant(ckpt["model"], [f"{n}.weight" for n in conv_names]))
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        got = neuralfuse(x, deployed)
        assert torch.allclose(got, neuralfuse(x, manual), atol=1e-6)
        assert torch.allclose(got, transform(gen.eval(), x, 8), atol=1e-6)  # = the training forward, eval mode
        assert not torch.allclose(got, neuralfuse(x, gen), atol=1e-4)  # the float weights give other outputs
    assert all(not p.requires_grad for p in deployed.parameters())

    float_ckpt = {**ckpt, "config": {**ckpt["config"], "generator_bits": None}}
    with torch.no_grad():  # a float-trained generator stays float (and its UNet unpadded)
        plain = UNetS()
        plain.load_state_dict(ckpt["model"])
        assert torch.equal(neuralfuse(x, trained_generator(float_ckpt, "UNetS", 32)), neuralfuse(x, plain.eval()))
