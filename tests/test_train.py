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
    train_base(part, data, BaseTrainConfig(**{**cfg.__dict__, "epochs": 3}),
               on_epoch=lambda e, m, c: e == 1 and save_checkpoint(c, tmp_path / "base.pt") is None and saved.update(e=e))
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
    train_generator(create_generator("ConvS"), [base], data, GeneratorTrainConfig(**{**cfg.__dict__, "epochs": 2}),
                    on_epoch=lambda e, m, c: save_checkpoint(c, tmp_path / f"g{e}.pt"))
    ckpt = load_checkpoint(tmp_path / "g2.pt")
    assert ckpt["scheduler"]["last_epoch"] == 6  # StepLR stepped per iteration
    resumed = train_generator(create_generator("ConvS"), [base], data, cfg, resume=ckpt)
    assert _same(full["model"], resumed["model"])
    assert full["optimizer"]["state"].keys() == resumed["optimizer"]["state"].keys()
    assert resumed["scheduler"]["last_epoch"] == 9 and resumed["history"][-1]["lr"] == full["history"][-1]["lr"]


def test_generator_defaults_are_the_papers() -> None:
    cfg = GeneratorTrainConfig()
    assert (cfg.lam, cfg.n_chips, cfg.lr, cfg.betas, cfg.step_size, cfg.gamma) == (5.0, 5, 1e-3, (0.5, 0.999), 500, 0.96)
    assert (cfg.fault_model, cfg.layout, cfg.ber) == ("stuck_at", "wrap", 0.01)
