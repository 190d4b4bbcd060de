"""End to end on the offline digits dataset: QAT base → PA collapse → EOPM generator recovers it."""

import torch

from nf_core.chips import ChipConfig
from nf_core.data import load_dataset, make_loader
from nf_core.deployed import DeployedModel
from nf_core.eopm import deployed_generator
from nf_core.evaluate import evaluate, evaluation_chip_seeds
from nf_core.generators import create_generator
from nf_core.models import create_model
from nf_core.train import BaseTrainConfig, GeneratorTrainConfig, train_base, train_generator


def test_neuralfuse_recovers_perturbed_accuracy_on_digits() -> None:
    ds = load_dataset("digits")
    test = make_loader(ds.test, 256, shuffle=False)
    torch.manual_seed(0)
    model = create_model("resnet18", ds.num_classes, ds.input_size, width=0.25)
    train_base(model, ds.train, BaseTrainConfig(epochs=6, batch_size=64, optimizer="adam", lr=2e-3, schedule="cosine"))
    base = DeployedModel(model)
    chips = evaluation_chip_seeds(10)

    # Pick the lowest BER at which bit errors cost at least 20 points of accuracy.
    ber, before = None, None
    for p in (0.02, 0.03, 0.04, 0.05, 0.07):
        r = evaluate(base, test, ChipConfig(p), chip_seeds=chips)
        if r["ca"] - r["pa_mean"] >= 20:
            ber, before = p, r
            break
    assert ber is not None, "no BER made PA fall 20 points below CA"
    assert before["ca"] > 90

    gen = create_generator("ConvS")
    gcfg = GeneratorTrainConfig(ber=ber, epochs=4, batch_size=64, n_chips=3)  # 8-bit G by default
    train_generator(gen, [base], ds.train, gcfg)
    after = evaluate(base, test, ChipConfig(ber), deployed_generator(gen, gcfg.generator_bits), chip_seeds=chips)
    assert after["pa_mean"] == before["pa_mean"]  # same chips, same base model
    assert after["pa_nf_mean"] - after["pa_mean"] >= 10, after
    assert after["ca_nf"] > 80


def test_nf_single_rejects_bad_input_before_compute(tmp_path, capsys) -> None:
    """Each bad value: exit 2 and one line naming it and the valid choices, before anything is written
    (in-process: the `main` that the `nf` script calls; test_readme runs `nf single` as a command)."""
    from orchestration.cli import main as cli_main

    for args, needle in (
        (["--model", "resnet34"], "resnet18"),
        (["--ber", "2"], "BER"),
        (["--generator", "Conv"], "UNetL"),
        (["--dataset", "mnist"], "digits"),
        (["--width", "0"], "width"),
    ):
        try:
            code = cli_main(["single", "--out", str(tmp_path / "x"), *args])
        except SystemExit as e:  # argparse's own usage errors
            code = e.code
        err = capsys.readouterr().err
        assert code == 2 and needle in err, err
        assert "Traceback" not in err
    assert not (tmp_path / "x").exists()
