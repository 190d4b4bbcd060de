"""Sweep configuration: one YAML file, validated in full before Ray starts.

Every bad value fails with a message naming the field, the value and the valid choices.
The grid (datasets × sources × generators × BER × λ × N × seeds) expands into stage
items with stable ids, so a resumed sweep recognises the work it has already done.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from nf_core.data import DATASETS
from nf_core.generators import GENERATORS
from nf_core.models import MODELS
from nf_core.train import OPTIMIZERS, SCHEDULES, BaseTrainConfig, GeneratorTrainConfig
from nf_core.validation import (FAULT_MODELS, LAYOUTS, check_ber, check_bits, check_choice, check_lambda,
                                check_n_chips)

STAGES = ("base", "generator", "eval", "transfer")
ACCESS = ("in_process", "pool")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ConfigError(ValueError):
    """A sweep config field is invalid (raised before any compute starts)."""


@dataclass
class DatasetSpec:
    name: str
    root: str | None = None
    download: bool = False
    train_subset: int | None = None  # first K training images only (smoke tests, demos)
    test_subset: int | None = None


# The stage sections take their defaults from nf_core's training configs (one source of
# truth for the paper's settings); the grid supplies the rest (bits, seed, BER, λ, N …).
_B, _G = BaseTrainConfig, GeneratorTrainConfig


@dataclass
class BaseStage:
    epochs: int = _B.epochs
    batch_size: int = _B.batch_size
    optimizer: str = _B.optimizer
    lr: float = _B.lr
    momentum: float = _B.momentum
    weight_decay: float = _B.weight_decay
    schedule: str = _B.schedule


@dataclass
class GeneratorStage:
    epochs: int = _G.epochs
    batch_size: int = _G.batch_size
    lr: float = _G.lr
    betas: tuple[float, float] = _G.betas
    step_size: int = _G.step_size
    gamma: float = _G.gamma
    generator_bits: int | None = _G.generator_bits  # 8: the authors' quantized generators; null: float
    access: str = "in_process"  # "pool": relaxed-access pool actors serve the chips
    pool_actors: int = 1  # replicas per base model when access is "pool"
    batching: str = _G.batching


@dataclass
class EvalStage:
    bers: list[float] = field(default_factory=lambda: [0.01])
    chips: int = 10
    fault_model: str | None = None  # None: the training fault model
    layout: str | None = None
    # Precisions to evaluate at: the trained base model re-quantized to b bits (the paper's
    # Appendix H applies 8-bit-trained generators to lower-precision copies). None: `bits`.
    bits: list[int] | None = None
    pool_actors: int = 0  # 0: score chips in the trial's own process
    batch_size: int = 256


@dataclass
class Resources:
    cpus: float = 1.0
    gpus: float = 0.0
    pool_actor_cpus: float = 0.5
    pool_actor_gpus: float = 0.0
    max_concurrent: int | None = None
    max_failures: int = 2


@dataclass
class MlflowSpec:
    tracking_uri: str | None = None  # default: sqlite file under the local sweep folder
    experiment: str | None = None  # default: the sweep name
    artifact_location: str | None = None  # default: <storage>/<name>/mlartifacts


@dataclass
class SweepConfig:
    name: str
    storage: str = "runs/sweeps"
    s3_endpoint: str | None = None  # for S3-compatible stores, e.g. http://127.0.0.1:9000
    s3_region: str | None = None
    device: str = "auto"  # auto: cuda when the trial has a GPU
    datasets: list[DatasetSpec] = field(default_factory=lambda: [DatasetSpec("digits")])
    models: list[str] = field(default_factory=lambda: ["resnet18"])
    width: float = 1.0
    ensembles: list[list[str]] = field(default_factory=list)
    # What generators are trained against: model names and/or lists of models (ensembles).
    # None: every model and every ensemble. Restricted-access sweeps list only the surrogates.
    sources: list[str | list[str]] | None = None
    generators: list[str] = field(default_factory=lambda: ["ConvL"])
    train_bers: list[float] = field(default_factory=lambda: [0.01])
    lambdas: list[float] = field(default_factory=lambda: [5.0])
    ns: list[int] = field(default_factory=lambda: [5])
    fault_model: str = "stuck_at"
    layout: str = "wrap"
    bits: int = 8
    seeds: list[int] = field(default_factory=lambda: [0])
    base: BaseStage = field(default_factory=BaseStage)
    generator: GeneratorStage = field(default_factory=GeneratorStage)
    evaluation: EvalStage = field(default_factory=EvalStage)
    transfer: bool = True
    resources: Resources = field(default_factory=Resources)
    mlflow: MlflowSpec = field(default_factory=MlflowSpec)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def source_list(self) -> list[list[str]]:
        """The generators' training targets, each a list of models (one model, or an ensemble)."""
        if self.sources is None:
            return [[m] for m in self.models] + [list(e) for e in self.ensembles]
        return [[s] if isinstance(s, str) else list(s) for s in self.sources]


_SECTIONS = {"base": BaseStage, "generator": GeneratorStage, "evaluation": EvalStage, "resources": Resources,
             "mlflow": MlflowSpec}


def _check_fields(cls: type, raw: Any, where: str) -> None:
    """``raw`` is a mapping whose keys are all fields of the dataclass ``cls``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {raw!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            raise ConfigError(f"{where + ': ' if where else ''}unknown field {key!r}; valid fields: {', '.join(names)}")


def _build(cls: type, raw: Any, where: str) -> Any:
    _check_fields(cls, raw, where)
    return cls(**raw)


def _list(raw: dict, key: str, default: Any) -> list:
    v = raw.get(key, default)
    if not isinstance(v, list) or not v:
        raise ConfigError(f"{key}: expected a non-empty list, got {v!r}")
    return v


def parse_config(raw: dict[str, Any]) -> SweepConfig:
    """Build and validate a SweepConfig from a YAML mapping."""
    if not isinstance(raw, dict):
        raise ConfigError(f"the sweep config must be a mapping, got {type(raw).__name__}")
    _check_fields(SweepConfig, raw, "")
    if "name" not in raw:
        raise ConfigError("name: every sweep needs a name (it names its folder and MLflow experiment)")
    kw = dict(raw)
    for key, cls in _SECTIONS.items():
        if key in kw:
            kw[key] = _build(cls, kw[key] or {}, key)
    if "datasets" in kw:
        kw["datasets"] = [_build(DatasetSpec, {"name": d} if isinstance(d, str) else d, f"datasets[{i}]")
                          for i, d in enumerate(_list(raw, "datasets", None))]
    for key in ("models", "generators", "train_bers", "lambdas", "ns", "seeds"):
        if key in kw:
            kw[key] = _list(raw, key, None)
    cfg = SweepConfig(**kw)
    validate(cfg)
    for d in cfg.datasets:  # trials run in their own working directories: no relative roots
        if d.root and "://" not in d.root:
            d.root = os.path.abspath(d.root)
    return cfg


def _check(field_name: str, fn, *args) -> None:
    try:
        fn(*args)
    except ValueError as e:
        raise ConfigError(f"{field_name}: {e}") from None


def validate(cfg: SweepConfig) -> None:
    """Check every field; raise ConfigError naming the first bad one."""
    if not isinstance(cfg.name, str) or not _NAME.match(cfg.name):
        raise ConfigError(f"name: {cfg.name!r} must be letters, digits, '.', '_' or '-' (it becomes a folder name)")
    if not isinstance(cfg.storage, str) or not cfg.storage:
        raise ConfigError(f"storage: {cfg.storage!r} must be a local path or s3://bucket/prefix")
    if cfg.storage.startswith("s3://") and len(cfg.storage) <= len("s3://"):
        raise ConfigError(f"storage: {cfg.storage!r} needs a bucket, as in s3://bucket/prefix")
    if "://" in cfg.storage and not cfg.storage.startswith(("s3://", "file://")):
        raise ConfigError(f"storage: scheme of {cfg.storage!r} not supported; valid choices: local path, file://, s3://")
    _check("device", check_choice, "device", cfg.device, ("auto", "cpu", "cuda"))
    for i, d in enumerate(cfg.datasets):
        _check(f"datasets[{i}].name", DATASETS.get, d.name)
        for sub in ("train_subset", "test_subset"):
            v = getattr(d, sub)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ConfigError(f"datasets[{i}].{sub}: {v!r} must be a positive integer or null")
        if d.name != "digits" and d.root is None:
            raise ConfigError(f"datasets[{i}].root: dataset {d.name!r} needs a root folder (local path or s3://…)")
    if len({d.name for d in cfg.datasets}) != len(cfg.datasets):
        raise ConfigError("datasets: each dataset may appear once")
    for m in cfg.models:
        _check("models", MODELS.get, m)
    if len(set(cfg.models)) != len(cfg.models):
        raise ConfigError(f"models: duplicates in {cfg.models}")
    if not isinstance(cfg.width, (int, float)) or cfg.width <= 0:
        raise ConfigError(f"width: {cfg.width!r} must be > 0 (1.0 = the paper's architectures)")
    for i, ens in enumerate(cfg.ensembles):
        if not isinstance(ens, list) or len(ens) < 2:
            raise ConfigError(f"ensembles[{i}]: {ens!r} must list at least two models")
        for m in ens:
            if m not in cfg.models:
                raise ConfigError(f"ensembles[{i}]: model {m!r} is not in models; valid choices: {', '.join(cfg.models)}")
    if cfg.sources is not None:
        if not isinstance(cfg.sources, list) or not cfg.sources:
            raise ConfigError(f"sources: {cfg.sources!r} must be a non-empty list of models or lists of models")
        for i, src in enumerate(cfg.sources):
            members = [src] if isinstance(src, str) else src
            if not isinstance(members, list) or not members or (not isinstance(src, str) and len(members) < 2):
                raise ConfigError(f"sources[{i}]: {src!r} must be a model name or a list of at least two models")
            for m in members:
                if m not in cfg.models:
                    raise ConfigError(f"sources[{i}]: model {m!r} is not in models; valid choices: {', '.join(cfg.models)}")
    for g in cfg.generators:
        _check("generators", GENERATORS.get, g)
    for p in cfg.train_bers:
        _check("train_bers", check_ber, p)
    for p in cfg.evaluation.bers:
        _check("evaluation.bers", check_ber, p)
    for lam in cfg.lambdas:
        _check("lambdas", check_lambda, lam)
    for n in cfg.ns:
        _check("ns", check_n_chips, n)
    _check("fault_model", check_choice, "fault model", cfg.fault_model, FAULT_MODELS)
    _check("layout", check_choice, "memory layout", cfg.layout, LAYOUTS)
    if cfg.evaluation.fault_model is not None:
        _check("evaluation.fault_model", check_choice, "fault model", cfg.evaluation.fault_model, FAULT_MODELS)
    if cfg.evaluation.layout is not None:
        _check("evaluation.layout", check_choice, "memory layout", cfg.evaluation.layout, LAYOUTS)
    _check("bits", check_bits, cfg.bits)
    if cfg.evaluation.bits is not None:
        if not isinstance(cfg.evaluation.bits, list) or not cfg.evaluation.bits:
            raise ConfigError(f"evaluation.bits: {cfg.evaluation.bits!r} must be a non-empty list of bit widths or null")
        for b in cfg.evaluation.bits:
            _check("evaluation.bits", check_bits, b)
    if cfg.generator.generator_bits is not None:
        _check("generator.generator_bits", check_bits, cfg.generator.generator_bits)
    for s in cfg.seeds:
        if not isinstance(s, int) or s < 0:
            raise ConfigError(f"seeds: {s!r} must be a non-negative integer")
    _check("base.optimizer", check_choice, "optimizer", cfg.base.optimizer, OPTIMIZERS)
    _check("base.schedule", check_choice, "schedule", cfg.base.schedule, SCHEDULES)
    _check("generator.access", check_choice, "access", cfg.generator.access, ACCESS)
    _check("generator.batching", check_choice, "batching", cfg.generator.batching, ("loop", "vmap"))
    for where, v in (("base.epochs", cfg.base.epochs), ("generator.epochs", cfg.generator.epochs),
                     ("base.batch_size", cfg.base.batch_size), ("generator.batch_size", cfg.generator.batch_size),
                     ("evaluation.chips", cfg.evaluation.chips), ("generator.pool_actors", cfg.generator.pool_actors),
                     ("evaluation.batch_size", cfg.evaluation.batch_size)):
        if not isinstance(v, int) or v < 1:
            raise ConfigError(f"{where}: {v!r} must be an integer >= 1")
    if not isinstance(cfg.evaluation.pool_actors, int) or cfg.evaluation.pool_actors < 0:
        raise ConfigError(f"evaluation.pool_actors: {cfg.evaluation.pool_actors!r} must be an integer >= 0")
    r = cfg.resources
    for where, v in (("resources.cpus", r.cpus), ("resources.gpus", r.gpus),
                     ("resources.pool_actor_cpus", r.pool_actor_cpus), ("resources.pool_actor_gpus", r.pool_actor_gpus)):
        if not isinstance(v, (int, float)) or v < 0:
            raise ConfigError(f"{where}: {v!r} must be a number >= 0 (fractions share a GPU between trials)")
    if r.gpus > 1 and r.gpus != int(r.gpus):
        raise ConfigError(f"resources.gpus: {r.gpus!r}: above 1 GPU per trial only whole numbers are possible")
    if r.max_concurrent is not None and (not isinstance(r.max_concurrent, int) or r.max_concurrent < 1):
        raise ConfigError(f"resources.max_concurrent: {r.max_concurrent!r} must be an integer >= 1 or null")
    if not isinstance(r.max_failures, int) or r.max_failures < 0:
        raise ConfigError(f"resources.max_failures: {r.max_failures!r} must be an integer >= 0")
    if not isinstance(cfg.transfer, bool):
        raise ConfigError(f"transfer: {cfg.transfer!r} must be true or false")


def load_config(path: str) -> SweepConfig:
    """Read and validate a sweep YAML file."""
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"sweep config {path!r} does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"sweep config {path!r} is not valid YAML: {e}") from None
    return parse_config(raw)
