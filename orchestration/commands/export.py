"""`nf export NAME ITEM --onnx OUT`: a trained generator of a sweep as an ONNX graph, verified.

Reads the generator item's checkpoint from the sweep's storage, builds the generator as it was
evaluated (its b-bit weights, x' = clamp(x + G(x), -1, 1)), optionally with its quantized base
model in the same graph (``--with-base``: logits out), writes ONNX, runs it with onnxruntime on
the same inputs as PyTorch and prints the largest difference. ``--register`` also logs the
generator as an MLflow model in the sweep's tracking store (orchestration/tracking/model_registry.py).
"""

from __future__ import annotations

import argparse
from typing import Any

TOLERANCE = 1e-4  # max |ONNX − PyTorch| / (1 + max |output|) accepted as "the same graph"


def _generator_item(cfg, item_id: str):
    from orchestration.spec.plan import plan

    items = plan(cfg)["generator"]
    for it in items:
        if it.id in (item_id, item_id.removeprefix("eval.").removeprefix("transfer.")):
            return it
    shown = ", ".join(it.id for it in items[:5]) + (f" … ({len(items)} in all)" if len(items) > 5 else "")
    raise ValueError(f"sweep {cfg.name!r} has no generator item {item_id!r}; generator items: {shown or 'none'}")


def _base(store, cfg, it, model: str | None):
    from nf_core.models import create_model
    from orchestration.spec.plan import base_id
    from orchestration.store.item_files import load_item_checkpoint

    sources = list(it.params["source"])
    if model is None:
        if len(sources) != 1:
            raise ValueError(f"generator {it.id!r} has sources {', '.join(sources)}: name one with --with-base MODEL")
        model = sources[0]
    if model not in cfg.models:
        raise ValueError(f"unknown base model {model!r} for --with-base; valid choices: {', '.join(cfg.models)}")
    p = it.params
    ck = load_item_checkpoint(store, "base", base_id(p["dataset"], model, p["bits"], p["seed"], p.get("base_tag", "")))
    s = ck["spec"]
    net = create_model(s["model"], s["num_classes"], s["input_size"], s["width"])
    net.load_state_dict(ck["model"])
    return net


def run_export(args: argparse.Namespace) -> int:
    from nf_core.export import check_inputs, deployable, export_onnx, max_abs_difference
    from orchestration.store.item_files import load_item_checkpoint
    from orchestration.store.roots import sweep_store
    from orchestration.sweep.runner import open_sweep
    from orchestration.tracking.model_registry import generator_from_checkpoint

    cfg = open_sweep(args.name, args.storage, args.s3_endpoint)
    store = sweep_store(cfg)
    it = _generator_item(cfg, args.item)
    gen, size = generator_from_checkpoint(load_item_checkpoint(store, "generator", it.id))
    base = None if args.with_base is None else _base(store, cfg, it, args.with_base or None)
    module = deployable(gen, base, it.params["bits"])
    path = export_onnx(module, args.onnx, size, args.opset)
    x = check_inputs(size)
    diff = max_abs_difference(module, path, x)
    what = "generator + quantized base (logits)" if base is not None else "generator (x' = clamp(x + G(x)))"
    print(f"{path}: {what} of {it.id}; onnxruntime vs PyTorch on {len(x)} inputs: max abs difference {diff:.3g}")
    scale = 1.0 + float(module(x).abs().max())
    if diff > TOLERANCE * scale:
        raise RuntimeError(f"ONNX graph {path} differs from PyTorch by {diff:.3g} (> {TOLERANCE * scale:.3g})")
    if args.register:
        _register(cfg, store, it, gen, size)
    return 0


def _register(cfg, store, it, gen, size: int) -> None:
    from orchestration.store.item_files import read_done
    from orchestration.sweep.runner import tracking_uri
    from orchestration.tracking.model_registry import eval_tags, register_generator
    from orchestration.tracking.sync import artifact_location

    done: dict[str, Any] = read_done(store, "eval", f"eval.{it.id}") or {}
    v = register_generator(
        tracking_uri(cfg, store),
        cfg.mlflow.experiment or cfg.name,
        cfg.name,
        it.id,
        it.params,
        gen,
        size,
        eval_tags(done.get("rows", [])),
        artifact_location=artifact_location(cfg, store),
    )
    print(
        f"registered: {v.name} version {v.version} (load with mlflow.pyfunc.load_model('models:/{v.name}/{v.version}'))"
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("export", help="write a trained generator of a sweep as ONNX, checked with onnxruntime")
    s.add_argument("name", help="sweep name")
    s.add_argument("item", help="generator item id (as in `nf sweep status NAME`)")
    s.add_argument("--onnx", required=True, help="output .onnx file")
    s.add_argument(
        "--with-base",
        nargs="?",
        const="",
        default=None,
        metavar="MODEL",
        help="include the quantized base model (default: the generator's source model) in the graph: logits out",
    )
    s.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    s.add_argument("--register", action="store_true", help="also register the generator as an MLflow model")
    s.add_argument(
        "--storage",
        default=None,
        help="storage root the sweep lives in (path or s3://bucket/prefix); default: $NF_STORAGE, else runs/sweeps",
    )
    s.add_argument("--s3-endpoint", default=None, help="endpoint of an S3-compatible store")
    s.set_defaults(func=run_export)
