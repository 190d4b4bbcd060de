"""Trial specs: what one sweep item computes, as one typed, frozen object.

The plan (orchestration/spec/plan.py) builds every item's spec once, from the validated config, with
each value in its final form (a BER-conditioned generator's BER is an `nf_core.ber_range.BERRange`);
the trainables read the fields, nothing re-parses them. Across Ray Tune a spec travels as its
params dict (``to_params``: what MLflow records, the item's checkpoint hash and done.json hold);
`spec_from_params` rebuilds the same object in one call. Imports only nf_core's torch-free
BERRange, so any layer (plan, runner, commands, trainables) may import it without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nf_core.ber_range import BERRange

# BaseStage fields a base item's spec carries (training mode and its options), not its stage settings:
# the checkpoint hash reads them from the item, so a standard item's hash ignores them.
PROTECTION_FIELDS = ("training", "wmax", "randbet_ber", "randbet_grad_clip", "randbet_threshold", "awp")


@dataclass(frozen=True)
class BaseSpec:
    """Stage (a): QAT of one base model; ``training`` its base-training mode (nf_core.base_modes) and
    ``training_options`` the BaseTrainConfig fields that mode reads (empty for standard)."""

    dataset: str
    model: str
    bits: int
    seed: int
    width: float
    training: str = "standard"
    training_options: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_params(self) -> dict[str, Any]:
        p = {"dataset": self.dataset, "model": self.model, "bits": self.bits, "seed": self.seed, "width": self.width}
        if self.training != "standard":  # standard params as before the modes: ids and hashes unchanged
            p.update(training=self.training, training_options=dict(self.training_options))
        return p


@dataclass(frozen=True)
class GeneratorSpec:
    """Stage (b): EOPM training of one generator against ``source`` (one model or an ensemble) at
    ``ber``: one BER, or a `BERRange` for a BER-conditioned (``*_BER``) generator."""

    dataset: str
    source: tuple[str, ...]
    generator: str
    ber: float | BERRange
    lam: float
    n: int
    fault_model: str
    layout: str
    bits: int
    seed: int
    width: float
    generator_bits: int | None
    base_tag: str = ""  # the source base items' id suffix (BaseStage.training_tag); "": standard QAT
    # Where EOPM's perturbed models come from (orchestration/spec/config.py, generator.chips): random chips,
    # or adversarial bit errors of ``budget`` flipped cells (alone, or a ``fraction`` of N mixed with random).
    chips: str = "random"
    budget: int | None = None
    attack_steps: int | None = None
    fraction: float | None = None

    @property
    def base_training(self) -> str:
        """The source base models' training mode (standard, clip, randbet, awp)."""
        return self.base_tag.split("-")[0] if self.base_tag else "standard"

    @property
    def flipped_bits(self) -> int | None:
        """The adversarial budget the generator was trained against (None: random chips), as results rows name it."""
        return None if self.chips == "random" else self.budget

    @property
    def ber_range(self) -> BERRange | None:
        return self.ber if isinstance(self.ber, BERRange) else None

    @property
    def train_ber(self) -> float | None:
        """The one training BER (None for a BER range)."""
        return None if isinstance(self.ber, BERRange) else self.ber

    def to_params(self) -> dict[str, Any]:
        r = self.ber_range
        return {
            "dataset": self.dataset,
            "source": list(self.source),
            "generator": self.generator,
            "ber": self.train_ber,
            **({"ber_range": r.to_dict()} if r is not None else {}),
            "lam": self.lam,
            "n": self.n,
            "fault_model": self.fault_model,
            "layout": self.layout,
            "bits": self.bits,
            "seed": self.seed,
            "width": self.width,
            "generator_bits": self.generator_bits,
            **({"base_tag": self.base_tag} if self.base_tag else {}),
            # only when not random: the params (and checkpoint hashes) of EOPM generators stay as they were
            **(
                {"chips": self.chips, "budget": self.budget, "attack_steps": self.attack_steps}
                | ({"fraction": self.fraction} if self.chips == "mixed" else {})
                if self.chips != "random"
                else {}
            ),
        }


@dataclass(frozen=True)
class EvalSpec(GeneratorSpec):
    """Stages (c) and (d): the generator of the same grid values, scored on ``targets``."""

    targets: tuple[str, ...] = ()

    def to_params(self) -> dict[str, Any]:
        return {**super().to_params(), "targets": list(self.targets)}


TrialSpec = BaseSpec | GeneratorSpec | EvalSpec


def spec_from_params(stage: str, p: dict[str, Any]) -> TrialSpec:
    """The inverse of ``to_params`` (the transport form across Ray Tune); no validation: the
    values were validated once, when the plan built the spec from the config."""
    if stage == "base":
        return BaseSpec(
            p["dataset"],
            p["model"],
            p["bits"],
            p["seed"],
            p["width"],
            p.get("training", "standard"),
            dict(p.get("training_options", {})),
        )
    r = p.get("ber_range")
    fields = {
        "dataset": p["dataset"],
        "source": tuple(p["source"]),
        "generator": p["generator"],
        "ber": BERRange(r["range"][0], r["range"][1], r["log"]) if r else p["ber"],
        "lam": p["lam"],
        "n": p["n"],
        "fault_model": p["fault_model"],
        "layout": p["layout"],
        "bits": p["bits"],
        "seed": p["seed"],
        "width": p["width"],
        "generator_bits": p["generator_bits"],
        "base_tag": p.get("base_tag", ""),
        **{k: p[k] for k in ("chips", "budget", "attack_steps", "fraction") if k in p},
    }
    if stage == "generator":
        return GeneratorSpec(**fields)
    return EvalSpec(**fields, targets=tuple(p["targets"]))
