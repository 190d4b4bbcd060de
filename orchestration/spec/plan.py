"""The sweep grid as stage items with stable ids, in dependency order."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from nf_core.ber_range import BERRange
from orchestration.spec.config import STAGES, BerRange, SweepConfig
from orchestration.spec.trial import BaseSpec, EvalSpec, GeneratorSpec, TrialSpec, spec_from_params


@dataclass
class Item:
    """One unit of work of a stage; ``id`` is stable across runs of the same config. ``spec``
    (orchestration/spec/trial.py) is what it computes, typed and in final form."""

    stage: str
    id: str
    spec: TrialSpec
    needs: list[str] = field(default_factory=list)  # ids of the items whose checkpoints it reads

    @property
    def params(self) -> dict[str, Any]:
        """The spec as plain values: what MLflow records and the checkpoint hash covers."""
        return self.spec.to_params()

    def to_dict(self) -> dict[str, Any]:
        """The transport form across Ray Tune (a trial's config must be JSON)."""
        return {"stage": self.stage, "id": self.id, "params": self.params, "needs": self.needs}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Item:
        """The inverse of ``to_dict``: the same item, its spec rebuilt in one call."""
        return cls(d["stage"], d["id"], spec_from_params(d["stage"], d["params"]), list(d["needs"]))


def base_id(dataset: str, model: str, bits: int, seed: int, tag: str = "") -> str:
    """A base item's id; ``tag``: its training mode's suffix (BaseStage.training_tag, '' for standard)."""
    return f"{dataset}.{model}.b{bits}.s{seed}" + (f".{tag}" if tag else "")


def plan(cfg: SweepConfig) -> dict[str, list[Item]]:
    """Items per stage: base (dataset, model, seed, base-training mode); generator (… × generator × BER × λ × N);
    eval (one per generator, on its source models); transfer (one per generator, on the
    dataset's other models). Every item's spec is built here, once. A BER-conditioned generator's
    BER is a range (a BERRange; its params hold ``ber: None`` and ``ber_range`` {range: [lo, hi], log}),
    its id ``r<lo>-<hi>log`` for ``p<ber>``. A base-training mode other than standard suffixes its base
    ids (``.randbet-p0.01-w0.1``) and the source part of its generator/eval/transfer ids alike.
    Adversarially trained generators (generator.chips) add one item per flipped-bit budget, ids tagged
    ``.adv<budget>`` / ``.mix<budget>f<fraction>`` after ``n<N>``."""
    out: dict[str, list[Item]] = {s: [] for s in STAGES}
    sources = cfg.source_list()
    for d, seed, mode in itertools.product(cfg.datasets, cfg.seeds, cfg.base.training):
        tag = cfg.base.training_tag(mode)  # '' for standard: its ids are the ones before the modes
        opts = cfg.base.training_options(mode, cfg.fault_model, cfg.layout)
        for m in cfg.models:
            out["base"].append(
                Item(
                    "base",
                    base_id(d.name, m, cfg.bits, seed, tag),
                    BaseSpec(d.name, m, cfg.bits, seed, cfg.width, mode, opts),
                )
            )
        src_tag = f".{tag}" if tag else ""
        grid = itertools.product(sources, cfg.generator_bers(), cfg.lambdas, cfg.ns, cfg.budgets())
        for src, (g, ber), lam, n, budget in grid:
            src_id = "+".join(src) + src_tag
            ber_tag = ber.tag() if isinstance(ber, BerRange) else f"p{ber:g}"
            gid = (
                f"{d.name}.{src_id}.{g}.{ber_tag}.l{lam:g}.n{n}{chips_tag(cfg, budget)}.{cfg.fault_model}."
                f"{cfg.layout}.b{bits_tag(cfg)}.s{seed}"
            )
            needs = [base_id(d.name, m, cfg.bits, seed, tag) for m in src]
            spec = GeneratorSpec(
                dataset=d.name,
                source=tuple(src),
                generator=g,
                ber=BERRange(ber.range[0], ber.range[1], ber.log) if isinstance(ber, BerRange) else ber,
                lam=lam,
                n=n,
                fault_model=cfg.fault_model,
                layout=cfg.layout,
                bits=cfg.bits,
                seed=seed,
                width=cfg.width,
                generator_bits=cfg.generator.generator_bits,
                base_tag=tag,
                **_chips_fields(cfg, budget),
            )
            out["generator"].append(Item("generator", gid, spec, needs))
            out["eval"].append(Item("eval", f"eval.{gid}", _eval_spec(spec, src), [gid, *needs]))
            others = [m for m in cfg.models if m not in src]
            if cfg.transfer and others:
                out["transfer"].append(
                    Item(
                        "transfer",
                        f"transfer.{gid}",
                        _eval_spec(spec, others),
                        [gid, *[base_id(d.name, m, cfg.bits, seed, tag) for m in others]],
                    )
                )
    return out


def _eval_spec(spec: GeneratorSpec, targets: list[str]) -> EvalSpec:
    return EvalSpec(**{f: getattr(spec, f) for f in spec.__dataclass_fields__}, targets=tuple(targets))


def chips_tag(cfg: SweepConfig, budget: int | None) -> str:
    """The perturbed-model source in generator ids: nothing for random chips (ids of EOPM sweeps unchanged),
    ``.adv<budget>`` for adversarial chips, ``.mix<budget>f<fraction>`` for mixed ones."""
    c = cfg.generator.chips
    if c == "random":
        return ""
    return f".adv{budget}" if c == "adversarial" else f".mix{budget}f{cfg.generator.adversarial.fraction:g}"


def _chips_fields(cfg: SweepConfig, budget: int | None) -> dict[str, Any]:
    a = cfg.generator.adversarial
    if cfg.generator.chips == "random":
        return {}
    mixed = cfg.generator.chips == "mixed"
    return {
        "chips": cfg.generator.chips,
        "budget": budget,
        "attack_steps": a.steps,
        "fraction": a.fraction if mixed else None,
    }


def bits_tag(cfg: SweepConfig) -> str:
    return str(cfg.bits) if cfg.generator.generator_bits is None else f"{cfg.bits}g{cfg.generator.generator_bits}"


def dependencies(items: dict[str, list[Item]] | list[Item]) -> dict[str, list[str]]:
    """Each item's id -> the ids of the items it needs done first (its ``needs``).

    A generator needs its source base model(s) of the same dataset, bits and seed; eval needs
    its generator (and the source base models it evaluates); transfer needs its generator and
    the target base models. Every need must be an item of the plan (else ValueError): an item
    whose need is missing could never start.
    """
    flat = [it for stage in items.values() for it in stage] if isinstance(items, dict) else list(items)
    ids = {it.id for it in flat}
    out: dict[str, list[str]] = {}
    for it in flat:
        missing = [n for n in it.needs if n not in ids]
        if missing:
            raise ValueError(f"item {it.id!r} needs {', '.join(missing)}, which the plan does not hold")
        out[it.id] = list(it.needs)
    return out


def blocked_by(deps: dict[str, list[str]], failed: set[str] | list[str]) -> set[str]:
    """The ids that can never run because something they (transitively) need failed."""
    users: dict[str, list[str]] = {}
    for item, needs in deps.items():
        for n in needs:
            users.setdefault(n, []).append(item)
    out: set[str] = set()
    todo = list(failed)
    while todo:
        for u in users.get(todo.pop(), []):
            if u not in out:
                out.add(u)
                todo.append(u)
    return out - set(failed)
