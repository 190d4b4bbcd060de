"""Ray Tune trainables, one per stage: plain functions of their config.

A trial's config is its item alone (``{"item": Item.to_dict()}``: stage, id, grid values,
the items it reads); the sweep config and the storage spec are shared by every trial of a
stage and arrive once, through ``tune.with_parameters``. The trial reads the checkpoints it
needs from storage and writes its own there every epoch, so a retried trial (worker died)
or a resumed sweep (driver died) continues from the last completed epoch. ``done.json``
marks an item complete; complete items never run again. Torn files, foreign checkpoints and
workers that outlive their driver are handled in orchestration/store/item_files.py: each attempt
holds the item's lease and checks it before every write.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import time
import traceback
from collections.abc import Callable
from typing import Any

import ray
import torch
from ray import tune
from torch.utils.data import Subset

from nf_core.ber_conditioned import operating_ber
from nf_core.chips import ChipConfig
from nf_core.data import DatasetInfo, load_dataset, make_loader
from nf_core.deployed import DeployedModel
from nf_core.evaluate import evaluate, evaluation_chip_seeds
from nf_core.models import create_model
from nf_core.validation import MEASURED
from orchestration.spec.config import SweepConfig
from orchestration.spec.plan import Item, base_id
from orchestration.spec.trial import EvalSpec
from orchestration.store.item_files import (
    FencedError,
    Lease,
    config_hash,
    identity,
    item_dir,
    load_checkpoint,
    load_item_checkpoint,
    read_done,
    save_checkpoint,
)
from orchestration.store.storage import Store
from orchestration.sweep.experiment import train_base_stage, train_generator_stage, trained_generator


class TrialContext:
    """One trial's item with the sweep's shared settings: its storage, its device."""

    def __init__(self, item: Item, cfg: SweepConfig, store: Store) -> None:
        self.cfg = cfg
        self.store = store
        self.item = item
        self.dir = item_dir(item.stage, item.id)
        self.device = self._device()
        self.lease = Lease(store, self.dir)
        self.ident = identity(item, config_hash(cfg, item))

    def _device(self) -> str:
        if self.cfg.device == "cuda" or (self.cfg.device == "auto" and ray.get_gpu_ids() and torch.cuda.is_available()):
            return "cuda"
        return "cpu"

    def write_json(self, name: str, obj: Any) -> None:
        """Write a file of the item's folder, if this attempt still holds the item (else FencedError)."""
        self.lease.check()
        self.store.write_json(f"{self.dir}/{name}", obj)

    def status(self, state: str, **extra: Any) -> None:
        self.write_json("status.json", {"state": state, "time": time.time(), "attempt": self.lease.token, **extra})

    def record_attempt(self, from_epoch: int = 0, note: str | None = None) -> None:
        """Note this attempt's start in attempts.json (tests check that nothing runs twice)."""
        rel_a = f"{self.dir}/attempts.json"
        try:
            attempts = self.store.read_json(rel_a) if self.store.exists(rel_a) else []
        except ValueError:  # unreadable (written before writes were atomic): start the record again
            attempts = []
        entry = {"token": self.lease.token, "time": time.time(), "from_epoch": from_epoch, "completed": []}
        self.write_json("attempts.json", [*attempts, {**entry, **({"note": note} if note else {})}])

    def checkpoint(self) -> dict[str, Any] | None:
        """The item's last readable epoch checkpoint (None: start from scratch); each start is recorded.

        A torn checkpoint.pt falls back to checkpoint.prev.pt (that epoch is trained again), one
        written under other settings restarts the item, another item's is refused."""
        ckpt, note = load_checkpoint(self.store, self.dir, self.ident)
        if note:
            print(f"{self.item.id}: {note}", flush=True)
        self.record_attempt(ckpt["epoch"] if ckpt else 0, note)
        return ckpt

    def completed_epoch(self, epoch: int) -> None:
        """Note an epoch this attempt trained (tests check that no epoch is trained twice)."""
        attempts = self.store.read_json(f"{self.dir}/attempts.json")
        attempts[-1]["completed"].append(epoch)
        self.write_json("attempts.json", attempts)

    def save_epoch(self, epoch: int, ckpt: dict[str, Any], metrics: dict[str, float] | None = None) -> None:
        """An epoch's checkpoint (the previous one kept), its record and the running status (with the
        epoch's last loss / accuracy for `nf sweep status`)."""
        self.lease.check()
        save_checkpoint(self.store, self.dir, ckpt, self.ident)
        self.completed_epoch(epoch)
        self.status("running", epoch=epoch, metrics=metrics)

    def finish(self, final: dict[str, float], extra: dict[str, Any] | None = None) -> None:
        """Mark the item complete (done.json names the attempt that completed it)."""
        self.write_json(
            "done.json", {"item": self.item.to_dict(), "final": final, "attempt": self.lease.token, **(extra or {})}
        )
        self.status("done")

    @property
    def pool_device(self) -> str:
        # A pool actor sees a GPU only when it asked for one.
        return "cuda" if self.cfg.resources.pool_actor_gpus > 0 and self.device == "cuda" else "cpu"

    def dataset(self, name: str) -> DatasetInfo:
        spec = next(d for d in self.cfg.datasets if d.name == name)
        root = spec.root
        if root and root.startswith("s3://"):  # read once into a local cache, then as usual
            local = os.path.join(
                os.path.expanduser("~/.cache/nf/datasets"), hashlib.sha1(root.encode()).hexdigest()[:12]
            )
            if not os.path.exists(os.path.join(local, ".complete")):
                Store(root, self.cfg.s3_endpoint, self.cfg.s3_region).download_dir("", local)
                open(os.path.join(local, ".complete"), "w").close()
            root = local
        ds = load_dataset(name, root, download=spec.download)
        if spec.train_subset:
            ds.train = Subset(ds.train, range(min(spec.train_subset, len(ds.train))))
        if spec.test_subset:
            ds.test = Subset(ds.test, range(min(spec.test_subset, len(ds.test))))
        return ds

    def base_checkpoint(self, model: str) -> dict[str, Any]:
        p = self.item.spec
        return load_item_checkpoint(self.store, "base", base_id(p.dataset, model, p.bits, p.seed, p.base_tag))

    def deployed(self, model: str, bits: int | None = None, **options: Any) -> DeployedModel:
        """The trained base model quantized to ``bits`` (default: the bits it was trained at);
        ``options``: DeployedModel's speed options (fold_bn, channels_last, amp)."""
        ck = self.base_checkpoint(model)
        module = create_model(**_model_kwargs(ck["spec"]))
        module.load_state_dict(ck["model"])
        return DeployedModel(module, bits or self.item.spec.bits, self.device, **options)


def _model_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The fields that rebuild a base model (as stored in its checkpoint's spec)."""
    return {k: spec[k] for k in ("model", "num_classes", "input_size", "width")}


def _model_kwargs(spec: dict[str, Any]) -> dict[str, Any]:
    s = _model_spec(spec)
    return {"name": s.pop("model"), **s}


def _guard(fn: Callable[[TrialContext], None]) -> Callable[..., None]:
    """The Tune function of a stage: build the trial's context from its item and the shared
    settings, and record running/failed in storage around it (for `nf sweep status`)."""

    def trainable(config: dict[str, Any], cfg: SweepConfig, store: dict[str, Any]) -> None:
        ctx = TrialContext(Item.from_dict(config["item"]), cfg, Store(**store))
        # Wait until no earlier attempt of this item can still write (a worker of a killed driver).
        ctx.lease.acquire(log=lambda m: print(m, flush=True))
        try:
            done = read_done(ctx.store, ctx.item.stage, ctx.item.id)
            if done is not None:  # completed by an earlier attempt (its driver died before it heard)
                tune.report({**done.get("final", {}), "done": 1.0})
                return
            ctx.status("running")
            fn(ctx)
        except FencedError:
            raise  # a newer attempt owns the item: write nothing, not even "failed"
        except Exception as e:
            if not ctx.lease.fenced:
                ctx.status("failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
            raise
        finally:
            ctx.lease.release()

    trainable.__name__ = fn.__name__
    return trainable


def _epoch_reporter(ctx: TrialContext) -> Callable[[int, dict[str, float], dict[str, Any]], None]:
    def on_epoch(epoch: int, metrics: dict[str, float], ckpt: dict[str, Any]) -> None:
        ctx.save_epoch(epoch, ckpt, metrics)  # before reporting: a kill loses no epoch
        tune.report({**metrics, "epoch": epoch})

    return on_epoch


def _finish(ctx: TrialContext, final: dict[str, float], extra: dict[str, Any] | None = None) -> None:
    ctx.finish(final, extra)
    tune.report({**final, "done": 1.0})


@_guard
def base_trainable(ctx: TrialContext) -> None:
    """Stage (a): 8-bit (or b-bit) QAT of one base model on one dataset."""
    spec = ctx.item.spec
    ds = ctx.dataset(spec.dataset)
    ck, base = train_base_stage(spec, ctx.cfg.base, ds, ctx.device, ctx.checkpoint(), _epoch_reporter(ctx))
    ca = evaluate(
        base, make_loader(ds.test, ctx.cfg.evaluation.batch_size, shuffle=False), ChipConfig(0.0), chip_seeds=[0]
    )["ca"]
    final = {"epoch": ck["epoch"], "test_ca": ca, **{k: v for k, v in ck["history"][-1].items() if k != "epoch"}}
    _finish(ctx, final, {"history": ck["history"]})  # history: MLflow's epochs, refilled on resume


@_guard
def generator_trainable(ctx: TrialContext) -> None:
    """Stage (b): EOPM training of one generator against one base model or an ensemble; a
    BER-conditioned generator (its spec's BER is a BERRange) draws each batch's BER from the range."""
    spec, s = ctx.item.spec, ctx.cfg.generator
    ds = ctx.dataset(spec.dataset)
    bases, models, actors = [], None, []
    if s.access == "pool":  # relaxed access: losses and input gradients only
        from orchestration.sweep.pool import PooledChips, make_pools

        pg = ray.util.get_current_placement_group()
        pools = []
        for m in spec.source:
            ck = ctx.base_checkpoint(m)
            pools.append(
                make_pools(
                    ck["model"],
                    _model_spec(ck["spec"]),
                    spec.bits,
                    s.pool_actors,
                    device=ctx.pool_device,
                    num_cpus=ctx.cfg.resources.pool_actor_cpus,
                    num_gpus=ctx.cfg.resources.pool_actor_gpus,
                    placement_group=pg,
                )
            )
            actors += pools[-1]
        # the schema keeps pool access away from *_BER generators
        models = PooledChips(pools, ChipConfig(spec.ber, spec.fault_model, spec.layout))
    else:
        bases = [ctx.deployed(m, **s.deployed_options(ctx.device)) for m in spec.source]
    try:
        ck = train_generator_stage(spec, s, ds, bases, ctx.device, ctx.checkpoint(), _epoch_reporter(ctx), models)
    finally:
        for a in actors:
            ray.kill(a)
    final = {"epoch": ck["epoch"], **{k: v for k, v in ck["history"][-1].items() if k != "epoch"}}
    _finish(ctx, final, {"history": ck["history"]})


@_guard
def evaluation_trainable(ctx: TrialContext) -> None:
    """Stages (c) and (d): CA, PA, CA (NF), PA (NF), RP of one generator on its targets at every
    evaluation BER — the source models (eval) or every other model of the dataset (transfer).
    With ``fault_model: measured`` the chips are the measured fault maps instead (one row per
    target and precision). A BER-conditioned generator runs at each chip's BER."""
    from orchestration.store.results import results_table, write_parquet

    p, e = ctx.item.spec, ctx.cfg.evaluation
    measured = None
    if e.fault_model == MEASURED:  # validated before Ray started; read again here, in the trial
        from orchestration.store.fault_maps_store import load_fault_maps_uri

        measured = load_fault_maps_uri(e.fault_maps, ctx.cfg.s3_endpoint, ctx.cfg.s3_region)
    ds = ctx.dataset(p.dataset)
    gid = ctx.item.needs[0]
    ctx.record_attempt()
    gck = load_item_checkpoint(ctx.store, "generator", gid)
    gen = trained_generator(gck, p.generator, ds.input_size, ctx.device)
    loader = make_loader(ds.test, e.batch_size, shuffle=False)
    seeds = evaluation_chip_seeds(e.chips)
    rows, metrics = [], {}
    bit_widths = e.bits or [p.bits]
    for target, bits in itertools.product(p.targets, bit_widths):
        if e.pool_actors > 0:  # restricted access: pool actors return predictions only
            from orchestration.sweep.pool import evaluate_pooled, make_pools

            ck = ctx.base_checkpoint(target)
            pools = make_pools(
                ck["model"],
                _model_spec(ck["spec"]),
                bits,
                e.pool_actors,
                device=ctx.pool_device,
                num_cpus=ctx.cfg.resources.pool_actor_cpus,
                num_gpus=ctx.cfg.resources.pool_actor_gpus,
                placement_group=ray.util.get_current_placement_group(),
            )
            score = lambda chip: evaluate_pooled(pools, loader, chip, gen, seeds)  # noqa: E731, B023 (used in this iteration)
        else:
            base, pools = ctx.deployed(target, bits, **e.deployed_options(ctx.device)), []
            score = lambda chip: evaluate(base, loader, chip, gen, seeds, **e.evaluate_options())  # noqa: E731, B023 (used in this iteration)
        try:
            if measured is not None:
                from nf_core.fault_maps import evaluate_measured

                mean_ber = sum(c.ber for c in measured) / len(measured)
                with operating_ber(gen, mean_ber):  # CA (NF); each chip's PA (NF) runs at that chip's BER
                    r = evaluate_measured(base, loader, measured, gen, e.layout or p.layout)
                rows.append(_row(ctx, p, target, r))
                tag = f"{target}.measured" + (f".b{bits}" if len(bit_widths) > 1 else "")
                for k in ("ca", "pa_mean", "ca_nf", "pa_nf_mean", "rp"):
                    metrics[f"{k}.{tag}"] = r[k]
            for ber in e.bers if measured is None else []:  # measured maps replace the random chips
                chip = ChipConfig(ber, e.fault_model or p.fault_model, e.layout or p.layout)
                with operating_ber(gen, ber):  # a BER-conditioned generator deploys at the chip's BER
                    r = score(chip)
                rows.append(_row(ctx, p, target, r))
                tag = f"{target}.ber{ber:g}" + (f".b{bits}" if len(bit_widths) > 1 else "")
                for k in ("ca", "pa_mean", "ca_nf", "pa_nf_mean", "rp"):
                    metrics[f"{k}.{tag}"] = r[k]
        finally:
            for a in pools:
                ray.kill(a)
    buf = io.BytesIO()
    write_parquet(results_table(rows), buf)
    ctx.lease.check()
    ctx.store.write_bytes(f"{ctx.dir}/results.parquet", buf.getvalue())
    _finish(ctx, {"epoch": 1, **metrics}, {"rows": rows})


def _row(ctx: TrialContext, p: EvalSpec, target: str, r: dict[str, Any]) -> dict[str, Any]:
    return {
        "item_id": ctx.item.id,
        "stage": ctx.item.stage,
        "dataset": p.dataset,
        "source": "+".join(p.source),
        "base_training": p.base_training,
        "generator": p.generator,
        "train_ber": p.train_ber,
        "lam": p.lam,
        "n": p.n,
        "fault_model": r["fault_model"],
        "layout": r["layout"],
        "bits": r["bits"],
        "seed": p.seed,
        "eval_ber": r["ber"],
        "target": target,
        "chips": r["chips"],
        **{k: r.get(k) for k in ("ca", "pa_mean", "pa_std", "ca_nf", "pa_nf_mean", "pa_nf_std", "rp", "efficiency")},
        # per-chip accuracies (done.json only, not the Parquet schema): `nf select --percentile`
        "pa_per_chip": r.get("pa_per_chip"),
        "pa_nf_per_chip": r.get("pa_nf_per_chip"),
        # BER-conditioned generators (train_ber is null) and measured chips (done.json only)
        "train_ber_range": p.ber_range.to_dict() if p.ber_range is not None else None,
        "fault_maps": r.get("chip_names"),
        "fault_map_bers": r.get("chip_bers"),
        # adversarially trained generators (paper App. I, Table 25): the perturbed models and their budget
        "train_chips": None if p.chips == "random" else p.chips,
        "flipped_bits": p.flipped_bits,
    }


TRAINABLES = {
    "base": base_trainable,
    "generator": generator_trainable,
    "eval": evaluation_trainable,
    "transfer": evaluation_trainable,
}
