"""Sweep configuration: one YAML file, validated in full before Ray starts.

This module is the one documented source of every field: each is declared below with its
type, default, allowed range or choices and a docstring (pydantic reads the docstrings into
the schema: ``SweepConfig.model_json_schema()``). A bad value fails with ONE line naming the
field path, the value and the valid range or choices (and, for a misspelled field, the
closest valid name), raised as ``ConfigError``:

    generator.lr: -1 is out of range; expected a number > 0 (Adam learning rate)

The grid (datasets × sources × generators × BER × λ × N × seeds) expands into stage items
with stable ids (orchestration/spec/plan.py), so a resumed sweep recognises its finished work.
Types are strict where YAML would otherwise slip through: ``true`` is not a number, a
string, or a count; ``5`` is not a list. Numbers are stored as floats (``lambdas: [5]`` and
``[5.0]`` are the same config) and counts as ints. This module imports no torch: registered names
(models, generators, datasets, optimizers …) come from the registries through nf_core/catalog.py, read
when a config is validated (cached, so validation stays torch-free after the first read).
Dataset roots on disk or S3 are checked separately (orchestration/sweep/preflight.py), by the CLI,
not on every parse (trials parse the config again).
"""

from __future__ import annotations

import difflib
import math
import os
import re
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from nf_core import catalog, validation

STAGES = ("base", "generator", "eval", "transfer")
ACCESS = ("in_process", "pool")
DEVICES = ("auto", "cpu", "cuda")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ConfigError(ValueError):
    """A sweep config field is invalid (raised before any compute starts)."""


# ------------------------------------------------------------------ value checks
# Each field type below is a plain Python type plus a "before" validator that does the whole
# check (type, range, choices) and raises one readable message; the pydantic constraints
# beside it only document the range in the JSON schema.


def _show(v: Any) -> str:
    """A value as the user wrote it in YAML (true, null, 'fast'), shortened."""
    text = {True: "true", False: "false", None: "null"}.get(v, None) if isinstance(v, (bool, type(None))) else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(msg: str, field: str | None = None) -> PydanticCustomError:
    """An error carrying our own message; ``field`` extends the error's path (model-level checks)."""
    return PydanticCustomError("nf", "{msg}", {"msg": msg, "field": field or ""})


def _suggest(value: Any, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _range_text(integer: bool, gt: float | None, ge: float | None, lt: float | None, le: float | None) -> str:
    kind = "an integer" if integer else "a number"
    lo = f"({gt:g}" if gt is not None else f"[{ge:g}" if ge is not None else None
    hi = f"{lt:g})" if lt is not None else f"{le:g}]" if le is not None else None
    if lo and hi:
        return f"{kind} in {lo}, {hi}"
    if lo:
        return f"{kind} {'>' if gt is not None else '>='} {lo[1:]}"
    if hi:
        return f"{kind} {'<' if lt is not None else '<='} {hi[:-1]}"
    return kind


def _number(
    *,
    integer: bool = False,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    hint: str = "",
) -> Any:
    """A float (or int) field: YAML booleans, strings, NaN and out-of-range values are refused."""
    check = _number_check(integer=integer, gt=gt, ge=ge, lt=lt, le=le, hint=hint)
    return Annotated[int if integer else float, BeforeValidator(check), Field(gt=gt, ge=ge, lt=lt, le=le)]


def _number_check(
    *,
    integer: bool = False,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    hint: str = "",
) -> Any:
    """The check of a `_number` field (also used inside other checks)."""
    expected = _range_text(integer, gt, ge, lt, le) + (f" ({hint})" if hint else "")

    def check(v: Any) -> Any:
        ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok_type or (isinstance(v, float) and not math.isfinite(v)):
            kind = "an integer" if integer else "a finite number" if isinstance(v, float) else "a number"
            raise _fail(f"{_show(v)} is not {kind}; expected {expected}")
        if (
            (gt is not None and not v > gt)
            or (ge is not None and not v >= ge)
            or (lt is not None and not v < lt)
            or (le is not None and not v <= le)
        ):
            raise _fail(f"{_show(v)} is out of range; expected {expected}")
        return v if integer else float(v)

    return check


class _Enum:
    """JSON schema ``enum`` of a registry's names, read when the schema is built (not at import)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        schema = handler(core_schema)
        schema["enum"] = list(catalog.names(self.kind))
        return schema


def _choice(what: str, choices: tuple[str, ...] | str) -> Any:
    """One of a fixed set of names: a tuple, or the name of a registry in nf_core.catalog (read at
    validation, so importing this module stays torch-free); a near miss is named."""

    def check(v: Any) -> Any:
        valid = catalog.names(choices) if isinstance(choices, str) else choices
        if isinstance(v, str) and v in valid:
            return v
        raise _fail(f"{_show(v)} is not a valid {what}{_suggest(v, valid)}; valid choices: {', '.join(valid)}")

    if isinstance(choices, str):
        return Annotated[str, BeforeValidator(check), _Enum(choices)]
    return Annotated[Literal[choices], BeforeValidator(check)]


def _text(what: str, pattern: re.Pattern[str] | None = None, rule: str = "") -> Any:
    """A non-empty string (a YAML number or boolean is not one)."""

    def check(v: Any) -> Any:
        if not isinstance(v, str) or not v:
            raise _fail(f"{_show(v)} is not a non-empty string; expected {what}")
        if pattern is not None and not pattern.match(v):
            raise _fail(f"{_show(v)} is not valid; expected {what}: {rule}")
        return v

    return Annotated[str, BeforeValidator(check)]


def _flag(v: Any) -> Any:
    if not isinstance(v, bool):
        raise _fail(f"{_show(v)} is not a boolean; expected true or false")
    return v


Flag = Annotated[bool, BeforeValidator(_flag)]


def _auto_flag(v: Any) -> Any:
    if v == "auto" or isinstance(v, bool):
        return v
    raise _fail(f"{_show(v)} is not valid; expected auto, true or false")


# "auto": on when the trial runs on a CUDA device, off on the CPU (see `resolve_auto`).
AutoFlag = Annotated[bool | Literal["auto"], BeforeValidator(_auto_flag)]


def resolve_auto(value: bool | str, device: str) -> bool:
    """An ``auto | true | false`` speed option on a trial's device: auto means on with CUDA only."""
    return device == "cuda" if value == "auto" else bool(value)


def _chips_per_pass(v: Any) -> Any:
    if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
        return v
    raise _fail(f"{_show(v)} is not valid; expected auto or an integer >= 1 (chips sharing one forward pass)")


def _grid(item: Any, example: str, *, min_items: int = 1, unique: bool = True) -> Any:
    """A list of grid values: a YAML list, not a scalar; non-empty; each value once (every value
    makes its own trials, and two trials with one id would write the same item folder).
    A ``train_bers`` range ``{range: [lo, hi], log: true}`` is one value (one BER-conditioned
    generator), not expanded; its repeats are caught with the generator pairing."""

    def check(v: Any) -> Any:
        if not isinstance(v, (list, tuple)):
            raise _fail(f"{_show(v)} is not a list; expected a list such as {example}")
        if len(v) < min_items:
            many = {1: "one entry", 2: "two entries"}.get(min_items, f"{min_items} entries")
            raise _fail(f"{_show(v)} is too short; expected a list of at least {many}, as in {example}")
        if unique:
            seen: list[Any] = []
            for x in v:
                # 5 and 5.0 are one value; true is not 1 (the item check refuses it)
                if any(x == s and type(x) is not bool and type(s) is not bool for s in seen):
                    raise _fail(f"{_show(x)} appears more than once in {_show(list(v))}; each value may appear once")
                if not isinstance(x, dict):
                    seen.append(x)
        return list(v)

    return Annotated[list[item], BeforeValidator(check), Field(min_length=min_items)]


# Field types shared by several sections.
Ber = _number(ge=0.0, le=1.0, hint="fraction of faulty memory cells, e.g. 0.01 for 1%")
Bits = _number(integer=True, ge=validation.MIN_BITS, le=validation.MAX_BITS, hint="weight precision in bits")
Count = _number(integer=True, ge=1)
Model = _choice("model", "models")
FaultModel = _choice("fault model", validation.FAULT_MODELS)
Layout = _choice("memory layout", validation.LAYOUTS)


# The field annotations below call these helpers (pydantic evaluates them at class creation);
# static type checkers do not follow calls in annotations and may flag them.
class _Section(BaseModel):
    """Every section: unknown fields are errors; field docstrings document the schema."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_default=False)


_ber_check = _number_check(ge=0.0, le=1.0, hint="fraction of faulty memory cells, e.g. 0.01 for 1%")
_range_end_check = _number_check(gt=0.0, le=1.0, hint="a BER > 0: the range is sampled log-uniformly")
_RANGE_EXAMPLE = "{range: [0.001, 0.0125], log: true}"


class BerRange(_Section):
    """Training BERs of a BER-conditioned (``*_BER``) generator: each batch's chips are drawn at one
    BER from [lo, hi] (nf_core.ber_conditioned.BERRange), so one generator serves every voltage."""

    range: list[float]
    """[lo, hi], 0 < lo <= hi <= 1."""
    log: Flag = True
    """true: each batch's BER is drawn log-uniformly from [lo, hi]; false: uniformly."""

    def tag(self) -> str:
        """The range in item ids: r<lo>-<hi> plus ``log`` when log-uniform (r0.001-0.0125log)."""
        lo, hi = self.range
        return f"r{lo:g}-{hi:g}" + ("log" if self.log else "")


def _train_ber(v: Any) -> Any:
    """A number (the BER of a per-BER generator) or {range: [lo, hi], log: bool} (*_BER generators)."""
    if not isinstance(v, dict):
        return _ber_check(v)
    unknown = sorted(set(v) - {"range", "log"}, key=str)
    if unknown:
        raise _fail(f"{_show(v)} has unknown key {unknown[0]!r}; expected a BER or {_RANGE_EXAMPLE}")
    r = v.get("range")
    if not isinstance(r, (list, tuple)) or len(r) != 2:
        raise _fail(f"{_show(v)}: range {_show(r)} is not a list [lo, hi]; expected {_RANGE_EXAMPLE}")
    lo, hi = (_range_end_check(x) for x in r)
    if lo > hi:
        raise _fail(f"{_show(v)}: range [{lo:g}, {hi:g}] is empty; expected lo <= hi")
    log = v.get("log", True)
    if not isinstance(log, bool):
        raise _fail(f"{_show(v)}: log {_show(log)} is not a boolean; expected true (log-uniform) or false (uniform)")
    return {"range": [lo, hi], "log": log}


TrainBer = Annotated[float | BerRange, BeforeValidator(_train_ber)]


# ------------------------------------------------------------------ sections
class DatasetSpec(_Section):
    """One dataset of the sweep; in YAML a bare name (``- digits``) is short for ``{name: digits}``."""

    name: _choice("dataset", "datasets")
    """Registered dataset name (nf_core/data.py)."""
    root: _text("a local path or s3://bucket/prefix") | None = None
    """Folder holding the dataset's files: a local path (made absolute) or s3://bucket/prefix.
    Required except for digits (embedded in scikit-learn). Checked before Ray starts."""
    download: Flag = False
    """Let torchvision fetch a missing dataset into a local root (CIFAR, GTSRB; not ImageNet-10)."""
    train_subset: _number(integer=True, ge=1) | None = None
    """Use only the first K training images (smoke tests, demos); null: all."""
    test_subset: _number(integer=True, ge=1) | None = None
    """Use only the first K test images; null: all."""

    @model_validator(mode="after")
    def _root_needed(self) -> DatasetSpec:
        if self.name != "digits" and self.root is None:
            raise _fail(
                f"null is not possible: dataset {self.name!r} needs a root folder (local path or s3://bucket/prefix)",
                "root",
            )
        if self.name == "imagenet10" and self.download:
            raise _fail(
                "true is not possible: imagenet10 cannot be downloaded automatically; prepare root with "
                "train/<class>/ and val/<class>/ folders and set download: false",
                "download",
            )
        return self


def _dataset_entry(v: Any) -> Any:
    return {"name": v} if isinstance(v, str) else v


class AwpOptions(_Section):
    """base.awp: overrides of nf_core.awp.AWPConfig (null: the published default)."""

    epsilon: _number(ge=0, hint="PGD radius, pixel units of [0, 1]") | None = None
    """PGD L-inf radius (default 8/255)."""
    step_size: _number(ge=0, hint="PGD step, pixel units of [0, 1]") | None = None
    """PGD step size (default 2/255)."""
    steps: _number(integer=True, ge=0) | None = None
    """PGD steps (default 10)."""
    gamma: _number(ge=0, hint="AWP weight-perturbation size") | None = None
    """AWP relative weight-perturbation size (default 5e-3)."""
    warmup: _number(integer=True, ge=0) | None = None
    """Epochs of plain PGD training before AWP starts (default 0)."""
    proxy_lr: _number(gt=0, hint="AWP proxy learning rate") | None = None
    """Learning rate of the AWP proxy (default 0.01)."""


# The stage sections' defaults are nf_core's training defaults (BaseTrainConfig and
# GeneratorTrainConfig in nf_core/train.py, the paper's settings); they are repeated here so
# this module needs no torch, and tests/test_config_schema.py keeps the two equal.
class BaseStage(_Section):
    """Stage (a): quantization-aware training of the base models."""

    epochs: Count = 300
    """Training epochs."""
    batch_size: Count = 256
    """Training batch size."""
    optimizer: _choice("optimizer", "optimizers") = "sgd"
    """Optimizer."""
    lr: _number(gt=0, hint="learning rate") = 1e-3
    """Learning rate."""
    momentum: _number(ge=0, lt=1, hint="SGD momentum") = 0.9
    """SGD momentum (ignored by Adam)."""
    weight_decay: _number(ge=0, hint="L2 penalty") = 0.0
    """Weight decay."""
    schedule: _choice("schedule", "schedules") = "none"
    """Learning-rate schedule over the epochs."""
    # Weight-side protection (nf_core.base_modes, nf_core.protect): `training` is a grid; each mode
    # other than standard is a base item of its own (id suffix, e.g. .randbet-p0.01-w0.1).
    training: _grid(_choice("base training", "base_modes"), "[standard, randbet]") = ["standard"]
    """Base-training modes, each its own base item: standard (plain QAT), clip (weights clipped to
    [-wmax, wmax]), randbet (clipping + random bit error training at randbet_ber on the sweep's fault
    model and layout; Stutz et al. 2021), awp (PGD + adversarial weight perturbation; Wu et al. 2020)."""
    wmax: _number(gt=0, hint="weight clipping bound") = 0.1
    """clip / randbet: weights are clipped to [-wmax, wmax] (Stutz et al.: 0.1)."""
    randbet_ber: Ber = 0.01
    """randbet: BER of the random chip injected in every training step (Stutz et al.: 0.01)."""
    randbet_grad_clip: _number(gt=0, hint="elementwise bound on the perturbed-loss gradient") = 0.05
    """randbet: elementwise bound on the perturbed-loss gradient (Stutz et al.: 0.05)."""
    randbet_threshold: _number(gt=0, hint="clean-loss threshold of the curriculum") | None = 1.75
    """randbet: the perturbed loss joins once the clean loss is below this (their CIFAR-10 value);
    null: from the first step."""
    awp: Annotated[AwpOptions, BeforeValidator(lambda v: {} if v is None else v)] = Field(
        default_factory=lambda: AwpOptions()
    )
    """awp: PGD + AWP options; fields left out keep the published defaults (nf_core.awp.AWPConfig)."""

    def training_options(self, mode: str, fault_model: str, layout: str) -> dict[str, Any]:
        """The BaseTrainConfig fields a base item of ``mode`` depends on (its spec carries them; empty for
        standard, so standard items keep their ids and checkpoint hashes)."""
        if mode == "clip":
            return {"wmax": self.wmax}
        if mode == "randbet":
            keys = ("wmax", "randbet_ber", "randbet_grad_clip", "randbet_threshold")
            return {**{k: getattr(self, k) for k in keys}, "fault_model": fault_model, "layout": layout}
        if mode == "awp":
            return {"awp": self.awp.model_dump(exclude_none=True)}
        return {}

    def training_tag(self, mode: str) -> str:
        """A base item's id suffix for ``mode`` ('' for standard): clip-w0.1, randbet-p0.01-w0.1, awp."""
        if mode == "standard":
            return ""
        if mode == "clip":
            return f"clip-w{self.wmax:g}"
        if mode == "randbet":
            return f"randbet-p{self.randbet_ber:g}-w{self.wmax:g}"
        return mode


def _budgets(v: Any) -> Any:
    """A budget or a list of budgets (each a grid value: one generator per budget)."""
    check = _number_check(integer=True, ge=1, hint="flipped bit cells per adversarial chip")
    if isinstance(v, (list, tuple)):
        if not v:
            raise _fail("[] is too short; expected a budget such as 100 or a list such as [100, 500]")
        out = [check(x) for x in v]
        dup = next((x for i, x in enumerate(out) if x in out[:i]), None)
        if dup is not None:
            raise _fail(f"{dup} appears more than once in {_show(list(v))}; each value may appear once")
        return out
    return [check(v)]


class AdversarialChips(_Section):
    """Adversarial bit errors in EOPM's place (nf_core.adversarial, after Stutz et al. 2021): each step's
    chips flip the ``budget`` stored-bit cells that most raise the loss (gradient-guided, projected onto
    the budget, under the sweep's layout)."""

    budget: Annotated[list[int], BeforeValidator(_budgets)] = [100]
    """Flipped bit cells per adversarial chip: a number or a list (one generator per budget; Table 25:
    [100, 500, 5000, 20000, 100000])."""
    steps: _number(integer=True, ge=1, hint="projected-ascent steps per adversarial chip") = 5
    """Projected gradient-ascent steps of the attack per chip (1: one-shot gradient ranking)."""
    fraction: _number(gt=0, lt=1, hint="share of the N chips that are adversarial") = 0.5
    """chips: mixed only: round(N·fraction) of each step's N chips are adversarial (at least 1, at most
    N-1), the rest random."""


class GeneratorStage(_Section):
    """Stage (b): EOPM training of the generators (Adam, StepLR stepped every iteration)."""

    epochs: Count = 150
    """Training epochs."""
    batch_size: Count = 256
    """Training batch size."""
    lr: _number(gt=0, hint="Adam learning rate") = 1e-3
    """Adam learning rate."""
    betas: Annotated[
        list[_number(ge=0, lt=1, hint="Adam beta")],
        BeforeValidator(lambda v: _pair(v, "Adam betas, e.g. [0.5, 0.999]")),
        Field(min_length=2, max_length=2),
    ] = [0.5, 0.999]
    """Adam betas, two numbers in [0, 1)."""
    step_size: Count = 500
    """StepLR period in iterations."""
    gamma: _number(gt=0, le=1, hint="StepLR decay factor") = 0.96
    """StepLR decay factor."""
    generator_bits: Bits | None = 8
    """The generator's weights are fake-quantized to this many bits in training and evaluation
    (8: the authors' generators, which run on the same accelerator); null: full precision."""
    access: _choice("access", ACCESS) = "in_process"
    """in_process: the trial holds the base model; pool: relaxed-access pool actors serve the chips."""
    pool_actors: Count = 1
    """Pool actor replicas per base model when access is pool."""
    batching: _choice("batching", "batching") = "loop"
    """How the N perturbed models of a batch run: loop (one after another) or vmap (batched)."""
    # Speed options (nf_core.deployed.DeployedModel, nf_core.prefetch); the defaults leave CPU runs
    # exactly as without them. In-process access only (pool actors build plain models).
    fold_bn: AutoFlag = "auto"
    """Fold each BatchNorm of the frozen base models into the conv before it (on the float copy made
    after the chip's faults; kept only when logits stay within float tolerance). auto: on with CUDA,
    off on the CPU."""
    channels_last: AutoFlag = "auto"
    """Channels-last (NHWC) memory format for the base models' passes. auto: on with CUDA, off on the CPU."""
    amp: _choice("amp", "amp") | None = None
    """bf16: autocast the base models' passes of EOPM training to bfloat16 (opt-in, meant for GPUs;
    chips still perturb the stored int8 codes); null: fp32."""
    prefetch: AutoFlag = "auto"
    """Draw the chips of step k+1 in a background thread while step k computes (bit-identical chips).
    auto: on with CUDA, off on the CPU (nf_core's prefetch=None). Not used by *_BER generators,
    whose chips depend on the batch's sampled BER."""
    chips: _choice("chips source", "chips") = "random"
    """Where EOPM's N perturbed models come from: random (random chips at the training BER, the paper's
    EOPM), adversarial (N adversarial bit-error chips of ``adversarial.budget`` flipped cells each, the
    paper's App. I, Table 25) or mixed (a share ``adversarial.fraction`` adversarial, the rest random).
    Evaluation is on random chips either way. In-process access and per-BER generators only."""
    adversarial: Annotated[AdversarialChips, BeforeValidator(lambda v: {} if v is None else v)] = Field(
        default_factory=lambda: AdversarialChips()
    )
    """Settings of the adversarial chips (used with chips: adversarial or mixed)."""

    def deployed_options(self, device: str) -> dict[str, Any]:
        """DeployedModel keyword arguments of the base models on ``device``."""
        return {
            "fold_bn": resolve_auto(self.fold_bn, device),
            "channels_last": resolve_auto(self.channels_last, device),
            "amp": self.amp,
        }


def _pair(v: Any, example: str) -> Any:
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise _fail(f"{_show(v)} is not a list of two numbers; expected {example}")
    return list(v)


class EvalStage(_Section):
    """Stages (c) and (d): evaluation on fresh chips, on the source models and (transfer) the others."""

    bers: _grid(Ber, "[0.01, 0.005]") = [0.01]
    """BERs to evaluate at, each in [0, 1]."""
    chips: Count = 10
    """Perturbed chips (fault patterns) per BER."""
    fault_model: _choice("fault model", (*validation.FAULT_MODELS, validation.MEASURED)) | None = None
    """Fault model at evaluation; null: the training fault model. measured: the chips are the measured
    fault maps of ``fault_maps`` instead of random ones (generators still train on random chips);
    ``bers`` and ``chips`` are then unused: each map is one chip, at its own measured BER."""
    fault_maps: _text("a local folder or s3://bucket/prefix of fault maps") | None = None
    """Folder or s3://bucket/prefix holding measured fault maps, one chip per .npz or .parquet file
    (format: docs/fault_maps.md); required by, and only with, fault_model measured. Every map is
    read and validated before Ray starts."""
    layout: Layout | None = None
    """Memory layout at evaluation; null: the training layout."""
    bits: _grid(Bits, "[8, 4]") | None = None
    """Precisions to evaluate at: the trained base model re-quantized to b bits (the paper's
    Appendix H applies 8-bit-trained generators to lower-precision copies). null: ``bits``."""
    pool_actors: _number(integer=True, ge=0) = 0
    """Pool actors scoring the chips (restricted access); 0: the trial's own process."""
    batch_size: Count = 256
    """Evaluation batch size."""
    chips_per_pass: Annotated[int | Literal["auto"], BeforeValidator(_chips_per_pass)] = "auto"
    """Random chips sharing one forward pass (vmap over their stacked weights); results are the same
    for any value. auto: 1 on the CPU (the chip-by-chip loop is faster there), 8 with CUDA
    (nf_core.evaluate.chips_per_pass_default)."""
    prefetch: AutoFlag = "auto"
    """Draw the next group of evaluation chips in a background thread. auto: on with CUDA, off on the CPU."""
    fold_bn: AutoFlag = "auto"
    """Fold BatchNorm into the convolutions of the evaluated base models (as generator.fold_bn).
    auto: on with CUDA, off on the CPU."""
    channels_last: AutoFlag = "auto"
    """Channels-last memory format for the evaluated base models. auto: on with CUDA, off on the CPU."""

    @model_validator(mode="after")
    def _measured(self) -> EvalStage:
        if self.fault_model == validation.MEASURED and self.fault_maps is None:
            raise _fail(
                "null is not possible: fault_model measured needs a folder or s3:// prefix of maps", "fault_maps"
            )
        if self.fault_maps is not None and self.fault_model != validation.MEASURED:
            raise _fail(
                f"{self.fault_maps!r} is only used with fault_model measured; set it or remove fault_maps", "fault_maps"
            )
        if self.fault_model == validation.MEASURED and self.pool_actors:
            raise _fail(
                f"{self.pool_actors} is not possible: measured fault maps are evaluated in the trial's process; set 0",
                "pool_actors",
            )
        return self

    def deployed_options(self, device: str) -> dict[str, Any]:
        """DeployedModel keyword arguments of the evaluated base models on ``device`` (fp32 always)."""
        return {
            "fold_bn": resolve_auto(self.fold_bn, device),
            "channels_last": resolve_auto(self.channels_last, device),
        }

    def evaluate_options(self) -> dict[str, Any]:
        """nf_core.evaluate.evaluate keyword arguments (None: nf_core's default for the device)."""
        return {
            "chips_per_pass": None if self.chips_per_pass == "auto" else self.chips_per_pass,
            "prefetch": None if self.prefetch == "auto" else self.prefetch,
        }


class Resources(_Section):
    """What Ray reserves per trial and per pool actor."""

    cpus: _number(gt=0, hint="CPUs per trial") = 1.0
    """CPUs per trial (a trial always needs some)."""
    gpus: _number(ge=0, hint="GPUs per trial; a fraction shares one GPU") = 0.0
    """GPUs per trial; fractions share a GPU between trials, above 1 only whole numbers."""
    pool_actor_cpus: _number(ge=0, hint="CPUs per pool actor") = 0.5
    """CPUs per pool actor."""
    pool_actor_gpus: _number(ge=0, hint="GPUs per pool actor") = 0.0
    """GPUs per pool actor (same rules as gpus)."""
    max_concurrent: Count | None = None
    """Most trials running at once; null: as many as fit."""
    max_failures: _number(integer=True, ge=0) = 2
    """Retries of a failed trial (each resumes from its last epoch checkpoint)."""

    @model_validator(mode="after")
    def _whole_gpus(self) -> Resources:
        for key in ("gpus", "pool_actor_gpus"):
            v = getattr(self, key)
            if v > 1 and v != int(v):
                raise _fail(f"{v!r} is not possible: above 1 GPU per trial only whole numbers are possible", key)
        return self


_TrackingUri = _text("an MLflow tracking URI such as http://127.0.0.1:5000 or sqlite:///path/mlflow.db")


class MlflowSpec(_Section):
    """Where the driver tracks the sweep."""

    tracking_uri: _TrackingUri | None = None
    """MLflow tracking URI; null: a SQLite file under the local sweep folder."""
    experiment: _text("an MLflow experiment name") | None = None
    """MLflow experiment; null: the sweep name."""
    artifact_location: _text("a URI such as s3://bucket/prefix or a local path") | None = None
    """Artifact root of a new experiment; null: <storage>/<name>/mlartifacts."""
    register_generators: Flag = True
    """Log every finished generator as an MLflow model (a torch.export archive, with signature and input
    example) and register it as ``nf-<sweep>-<dataset>-<source>-<generator>``, its evaluation numbers as
    tags (orchestration/sweep/registration.py); false: only the checkpoints are logged."""


def _section(v: Any) -> Any:
    return {} if v is None else v  # `base:` with nothing under it means the defaults


def _source(v: Any) -> Any:
    if not isinstance(v, (str, list)) or (isinstance(v, list) and len(v) < 2):
        raise _fail(f"{_show(v)} is not a model name or a list of at least two model names")
    for m in [v] if isinstance(v, str) else v:
        models = catalog.names("models")
        if not isinstance(m, str) or m not in models:
            raise _fail(f"{_show(m)} is not a valid model{_suggest(m, models)}; valid choices: {', '.join(models)}")
    return v


def _reproduces(v: Any) -> Any:
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) and x.strip() for x in v):
        raise _fail(f"{_show(v)} is not a list of names; expected a list such as [Table 25, Figure 15]")
    return list(v)


_Sources = _grid(Annotated[str | list[str], BeforeValidator(_source)], "[resnet18, [resnet18, vgg11]]")


class SweepConfig(_Section):
    """A whole sweep: the grid, the stage settings, resources, storage and tracking."""

    name: _text("a sweep name", _NAME, "letters, digits, '.', '_' or '-' (it becomes a folder name)")
    """The sweep's name: its folder under storage and its MLflow experiment."""
    reproduces: Annotated[list[str], BeforeValidator(_reproduces)] = []
    """The paper's tables and figures this sweep reproduces, as free text (``[Table 1, Figure 3]``); shown by
    `nf sweep plan`. Documentation only: nothing is computed from it."""
    storage: _text("a local path or s3://bucket/prefix") = "runs/sweeps"
    """Storage root (local path, file:// or s3://bucket/prefix); the sweep lives in <storage>/<name>.
    A relative local path is relative to the working directory of the command and recorded absolute.
    Left out: the default root, the same from every directory: $NF_STORAGE, else runs/sweeps in the
    project checkout (an installed package: ~/.local/share/nf/sweeps). Commands that name an existing
    sweep use their --storage (same default) and never the root its sweep.yaml recorded."""
    s3_endpoint: _text("an endpoint URL such as http://127.0.0.1:9000") | None = None
    """Endpoint of an S3-compatible store, e.g. http://127.0.0.1:9000; null: AWS (or AWS_ENDPOINT_URL)."""
    s3_region: _text("an S3 region such as us-east-1") | None = None
    """S3 region; null: AWS_REGION / AWS_DEFAULT_REGION."""
    device: _choice("device", DEVICES) = "auto"
    """auto: cuda when the trial has a GPU."""
    datasets: Annotated[
        _grid(DatasetSpec, "[digits] or [{name: cifar10, root: data/cifar10}]", unique=False),
        BeforeValidator(lambda v: [_dataset_entry(d) for d in v] if isinstance(v, list) else v),
    ] = Field(default_factory=lambda: [DatasetSpec(name="digits")])
    """Datasets (each once): names or {name, root, download, train_subset, test_subset}."""
    models: _grid(Model, "[resnet18, vgg11]") = ["resnet18"]
    """Base models (registered names, nf_core/models)."""
    width: _number(gt=0, hint="channel multiplier; 1.0 = the paper's architectures") = 1.0
    """Channel-width multiplier of the base models (1.0 = the paper's; small values for CPU tests)."""
    ensembles: _grid(_grid(Model, "[resnet18, vgg11]", min_items=2), "[[resnet18, vgg11]]", min_items=0) = []
    """Ensembles of models (each at least two of ``models``) that generators can be trained against."""
    sources: _Sources | None = None
    """What generators are trained against: model names and/or lists of models (ensembles).
    null: every model and every ensemble. Restricted-access sweeps list only the surrogates."""
    generators: _grid(_choice("generator", "generators"), "[ConvL, UNetS]") = ["ConvL"]
    """Generator architectures (registered names, nf_core/generators)."""
    train_bers: _grid(TrainBer, "[0.01, 0.005]") = [0.01]
    """BERs the generators are trained at (the p of EOPM), each in [0, 1]; or, for BER-conditioned
    generators (names ending in _BER), a range {range: [lo, hi], log: true}. A number pairs only
    with per-BER generators and a range only with *_BER ones (the grid skips other pairs)."""
    lambdas: _grid(_number(ge=0, hint="weight of the perturbed-model loss"), "[1.0, 5.0]") = [5.0]
    """λ of the EOPM loss, each >= 0."""
    ns: _grid(_number(integer=True, ge=1, hint="perturbed models per batch"), "[5, 10]") = [5]
    """N, the perturbed models sampled per batch, each >= 1."""
    fault_model: FaultModel = "stuck_at"
    """Fault model of the training chips (stuck_at is the paper's)."""
    layout: Layout = "wrap"
    """Memory layout mapping weights to faulty cells."""
    bits: Bits = 8
    """Weight precision of the base models (QAT and deployment)."""
    seeds: _grid(_number(integer=True, ge=0), "[0, 1, 2]") = [0]
    """Seeds; each repeats the whole grid."""
    base: Annotated[BaseStage, BeforeValidator(_section)] = Field(default_factory=BaseStage)
    """Stage (a) settings."""
    generator: Annotated[GeneratorStage, BeforeValidator(_section)] = Field(default_factory=GeneratorStage)
    """Stage (b) settings."""
    evaluation: Annotated[EvalStage, BeforeValidator(_section)] = Field(default_factory=EvalStage)
    """Stages (c) and (d) settings."""
    transfer: Flag = True
    """Run stage (d): each generator on the dataset's other models."""
    resources: Annotated[Resources, BeforeValidator(_section)] = Field(default_factory=Resources)
    """Ray resources."""
    mlflow: Annotated[MlflowSpec, BeforeValidator(_section)] = Field(default_factory=MlflowSpec)
    """MLflow tracking."""

    @model_validator(mode="after")
    def _cross_checks(self) -> SweepConfig:
        if self.storage.startswith("s3://") and len(self.storage) <= len("s3://"):
            raise _fail(f"{self.storage!r} needs a bucket, as in s3://bucket/prefix", "storage")
        if "://" in self.storage and not self.storage.startswith(("s3://", "file://")):
            raise _fail(
                f"scheme of {self.storage!r} not supported; valid choices: local path, file://, s3://", "storage"
            )
        seen: set[str] = set()
        for i, d in enumerate(self.datasets):
            if d.name in seen:
                raise _fail(f"{d.name!r} appears more than once; each dataset may appear once", f"datasets[{i}].name")
            seen.add(d.name)
        valid = ", ".join(self.models)
        for i, ens in enumerate(self.ensembles):
            if len(set(ens)) != len(ens):
                raise _fail(f"{ens!r} lists a model twice", f"ensembles[{i}]")
            for m in ens:
                if m not in self.models:
                    raise _fail(f"model {m!r} is not in models; valid choices: {valid}", f"ensembles[{i}]")
        for i, src in enumerate(self.sources or []):
            for m in [src] if isinstance(src, str) else src:
                if m not in self.models:
                    raise _fail(f"model {m!r} is not in models; valid choices: {valid}", f"sources[{i}]")
        self._check_ber_pairs()
        return self

    def _check_ber_pairs(self) -> None:
        """Each train_bers entry trains some generator and each generator has a train_bers entry."""
        conditioned = [g for g in self.generators if catalog.is_ber_conditioned(g)]
        plain = [g for g in self.generators if not catalog.is_ber_conditioned(g)]
        ranges = [b for b in self.train_bers if isinstance(b, BerRange)]
        for i, b in enumerate(self.train_bers):
            if isinstance(b, BerRange):
                if not conditioned:
                    raise _fail(
                        f"{_show(b.model_dump())} is a range, which pairs only with BER-conditioned generators "
                        f"(names ending in {catalog.ber_suffix()}); generators has none: {', '.join(self.generators)}",
                        f"train_bers[{i}]",
                    )
                if b in self.train_bers[:i]:  # two items with one id would write the same folder
                    raise _fail(
                        f"{_show(b.model_dump())} appears more than once; each value may appear once",
                        f"train_bers[{i}]",
                    )
            elif not plain:
                raise _fail(
                    f"{b!r} is a single BER, which pairs only with per-BER generators; generators are all "
                    f"BER-conditioned ({', '.join(conditioned)}): give them a range such as {_RANGE_EXAMPLE}",
                    f"train_bers[{i}]",
                )
        for i, g in enumerate(self.generators):
            if catalog.is_ber_conditioned(g) and not ranges:
                raise _fail(
                    f"{g!r} is BER-conditioned and trains over a range of BERs; train_bers has none: add "
                    f"{_RANGE_EXAMPLE}",
                    f"generators[{i}]",
                )
            if not catalog.is_ber_conditioned(g) and len(ranges) == len(self.train_bers):
                raise _fail(
                    f"{g!r} trains at one BER; train_bers has only ranges (for *{catalog.ber_suffix()} generators): "
                    "add a number such as 0.01",
                    f"generators[{i}]",
                )
        self._check_chips(conditioned)
        if conditioned and self.generator.access == "pool":
            raise _fail(
                f"'pool' is not possible with BER-conditioned generators ({', '.join(conditioned)}); use in_process",
                "generator.access",
            )

    def _check_chips(self, conditioned: list[str]) -> None:
        """Adversarial chips: in-process, per-BER generators, N >= 2 when mixed; settings only when used."""
        g = self.generator
        if g.chips == "random":
            if g.adversarial != AdversarialChips():  # the defaults: what sweep.yaml stores for every sweep
                raise _fail(
                    f"{_show(g.adversarial.model_dump())} is only used with chips adversarial or mixed (chips is "
                    "random); set generator.chips or remove generator.adversarial",
                    "generator.adversarial",
                )
            return
        if g.access == "pool":
            raise _fail(f"'pool' is not possible with chips {g.chips!r}; use in_process", "generator.access")
        if conditioned:
            raise _fail(
                f"{g.chips!r} is not possible with BER-conditioned generators ({', '.join(conditioned)}): "
                "their chips are drawn at each batch's BER; use random",
                "generator.chips",
            )
        if g.chips == "mixed" and min(self.ns) < 2:
            raise _fail(
                f"{min(self.ns)} is not possible with chips mixed (one adversarial and one random chip per step); "
                "use N >= 2",
                "ns",
            )

    def budgets(self) -> list[int | None]:
        """The flipped-bit budgets of the grid: None (random chips) or one per ``generator.adversarial.budget``."""
        return [None] if self.generator.chips == "random" else list(self.generator.adversarial.budget)

    def generator_bers(self) -> list[tuple[str, float | BerRange]]:
        """The (generator, training BER) pairs of the grid: numbers with per-BER generators, ranges
        with *_BER ones; in the order of ``generators``, then ``train_bers``."""
        return [
            (g, b)
            for g in self.generators
            for b in self.train_bers
            if catalog.is_ber_conditioned(g) == isinstance(b, BerRange)
        ]

    def to_dict(self) -> dict[str, Any]:
        """Plain values, field order as declared (what sweep.yaml stores and trials receive)."""
        return self.model_dump()

    def source_list(self) -> list[list[str]]:
        """The generators' training targets, each a list of models (one model, or an ensemble)."""
        if self.sources is None:
            return [[m] for m in self.models] + [list(e) for e in self.ensembles]
        return [[s] if isinstance(s, str) else list(s) for s in self.sources]


# ------------------------------------------------------------------ errors as one line
def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field's annotation holds (directly, in a list, optional …), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel]:
    """The model whose fields sit at ``loc`` (the sections, the dataset entries …)."""
    model: type[BaseModel] = SweepConfig
    for part in loc:
        info = None if isinstance(part, int) else model.model_fields.get(part)
        if info is not None:
            model = _model_in(info.annotation) or model
    return model


def _message(err: dict[str, Any]) -> str:
    loc, kind, value = tuple(err["loc"]), err["type"], err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "nf":
        path = _path(loc + ((ctx["field"],) if ctx.get("field") else ()))
        return f"{path or 'config'}: {ctx['msg']}"
    path = _path(loc) or "config"
    if kind == "extra_forbidden":
        fields = list(_model_at(loc[:-1]).model_fields)
        return f"{path}: unknown field {loc[-1]!r}{_suggest(loc[-1], fields)}; valid fields: {', '.join(fields)}"
    if kind == "missing":
        return f"{path}: required field is missing"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        fields = ", ".join(_model_at(loc).model_fields)
        return f"{path}: {_show(value)} is not a mapping; expected a mapping with fields {fields}"
    return f"{path}: {_show(value)}: {err['msg']}"


def parse_config(raw: dict[str, Any]) -> SweepConfig:
    """Build and validate a SweepConfig from a YAML mapping; raises ConfigError (one line)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"the sweep config must be a mapping, got {type(raw).__name__}")
    if "name" not in raw:
        raise ConfigError("name: every sweep needs a name (it names its folder and MLflow experiment)")
    try:
        cfg = SweepConfig.model_validate(raw)
    except ValidationError as e:
        # An unknown field first: its "did you mean" explains the "missing" error beside it.
        errors = sorted(e.errors(include_url=False), key=lambda err: err["type"] != "extra_forbidden")
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise ConfigError(_message(errors[0]) + more) from None
    for d in cfg.datasets:  # trials run in their own working directories: no relative roots
        if d.root and "://" not in d.root:
            d.root = os.path.abspath(d.root)
    maps = cfg.evaluation.fault_maps
    if maps and "://" not in maps:
        cfg.evaluation.fault_maps = os.path.abspath(maps)
    from orchestration.store.roots import resolve_storage  # the rule for relative roots (documented there)

    cfg.storage = resolve_storage(cfg.storage if "storage" in cfg.model_fields_set else None)
    return cfg


IMPLAUSIBLE_BER = 0.5  # half the cells faulty or more: almost surely a percentage typed as a fraction


def implausible_bers(cfg: SweepConfig) -> list[str]:
    """One line per BER ≥ 0.5 in the config (valid, but a BER is a fraction: ``train_bers: [1]`` is 100 %
    faulty cells, likely meant 1 % = 0.01), naming the field and the value. Warnings, not errors."""
    found: list[tuple[str, float]] = []
    for i, b in enumerate(cfg.train_bers):
        if isinstance(b, BerRange):
            found += [(f"train_bers[{i}].range[{j}]", x) for j, x in enumerate(b.range) if x >= IMPLAUSIBLE_BER]
        elif b >= IMPLAUSIBLE_BER:
            found.append((f"train_bers[{i}]", b))
    found += [(f"evaluation.bers[{i}]", b) for i, b in enumerate(cfg.evaluation.bers) if b >= IMPLAUSIBLE_BER]
    return [
        f"{field}: {v:g} is a BER of {100 * v:g} % (half or more of the memory cells faulty); "
        f"a BER is a fraction: did you mean {v / 100:g} ({v:g} %)?"
        for field, v in found
    ]


def warn_implausible(cfg: SweepConfig, err: Any = None) -> None:
    """Print :func:`implausible_bers` as ``nf: warning: …`` lines on stderr (`nf sweep plan` and `run`)."""
    import sys

    for line in implausible_bers(cfg):
        print(f"nf: warning: {line}", file=err or sys.stderr)


def load_config(path: str) -> SweepConfig:
    """Read and validate a sweep YAML file."""
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"sweep config {path!r} does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"sweep config {path!r} is not valid YAML: {' '.join(str(e).split())}") from None
    return parse_config(raw)
