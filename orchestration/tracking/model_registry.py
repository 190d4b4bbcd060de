"""Trained generators as MLflow registered models, and read back from a sweep's storage.

Name: ``nf-<sweep>-<dataset>-<source>-<generator>`` (an ensemble's sources joined by ``+``).
One registered model per (sweep, dataset, source models, generator architecture); each trained
generator of that family (training BER, λ, N, fault model, layout, seed) is one *version* of it,
so the versions of a name are the variants a user compares. The sweep's name is part of the
name, so two sweeps never share a registered model even on one tracking server; a generator of a
weight-protected base (``base.training``) has the base's mode in the source part
(``…-resnet18.randbet-p0.01-w0.1-ConvL``). Registering an item again returns its existing version
(tag ``nf.item``) instead of adding one, with evaluation numbers that arrived since added as tags.

The logged model is the `mlflow.pytorch` flavour (a torch.export "pt2" archive) of
x → x' = clamp(x + G(x), -1, 1) with the generator's evaluated (fake-quantized) weights
(`nf_core.export.deployable`), with a signature and an input example;
``mlflow.pyfunc.load_model`` returns x' for a float32 batch (B, 3, S, S).
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import torch
import torch.nn as nn

MODEL_NAME = "generator"  # the artifact name of the logged model inside its run


def registered_model_name(sweep: str, params: dict[str, Any]) -> str:
    """The registered model of a generator item (its ``params`` as in the sweep plan)."""
    source = params["source"]
    source = "+".join(source) if isinstance(source, (list, tuple)) else str(source)
    if params.get("base_tag"):  # a generator for a weight-protected base (e.g. .randbet-p0.01-w0.1): its own name
        source += f".{params['base_tag']}"
    return f"nf-{sweep}-{params['dataset']}-{source}-{params['generator']}"


def generator_from_checkpoint(ckpt: dict[str, Any]) -> tuple[nn.Module, int]:
    """(the generator as evaluated, its input size) from a generator item's checkpoint."""
    from nf_core.eopm import deployed_generator
    from nf_core.generators import create_generator

    spec, bits = ckpt["spec"], ckpt["config"].get("generator_bits")
    gen = create_generator(spec["generator"], spec["input_size"], bits)
    gen.load_state_dict(ckpt["model"])
    return deployed_generator(gen, bits), int(spec["input_size"])


def eval_tags(rows: list[dict[str, Any]]) -> dict[str, str]:
    """The item's evaluation numbers as tags: ``<metric>.<target>.p<eval BER>`` (percent)."""
    out = {}
    for r in rows:
        for k in ("ca", "pa_mean", "pa_std", "ca_nf", "pa_nf_mean", "pa_nf_std", "rp"):
            if r.get(k) is not None:
                out[f"{k}.{r['target']}.p{r['eval_ber']:g}"] = f"{r[k]:.4g}"
    return out


def item_tags(sweep: str, item_id: str, params: dict[str, Any]) -> dict[str, str]:
    """What identifies the generator: sweep, item, and the training BER with its voltage."""
    tags = {"nf.sweep": sweep, "nf.item": item_id}
    for k in ("dataset", "generator", "lam", "n", "fault_model", "layout", "bits", "generator_bits", "seed"):
        if params.get(k) is not None:
            tags[k] = str(params[k])
    tags["source"] = "+".join(params["source"]) if isinstance(params["source"], list) else str(params["source"])
    tags["base_training"] = str(params.get("base_tag") or "standard")
    ber = params.get("ber")
    if ber is not None:
        tags["train_ber"] = f"{ber:g}"
        try:
            from nf_core.voltage import load_voltage_table

            volt = load_voltage_table().point(ber, interpolate=True).voltage
            if volt is not None:
                tags["voltage"] = f"{volt:g}"
        except ValueError:  # a BER outside the shipped table: no voltage to name
            pass
    elif params.get("ber_range"):
        tags["train_ber_range"] = str(params["ber_range"].get("range"))
    return tags


def register_generator(
    tracking_uri: str,
    experiment: str,
    sweep: str,
    item_id: str,
    params: dict[str, Any],
    generator: nn.Module,
    input_size: int,
    metrics: dict[str, str] | None = None,
    run_id: str | None = None,
    artifact_location: str | None = None,
):
    """Log ``generator`` (as evaluated) as an MLflow model and register it; returns the ModelVersion.

    ``run_id``: the MLflow run to log into (else the item's run — tag ``nf.item_id`` — or a new one in
    ``experiment``, created at ``artifact_location`` when missing: the sweep's, never the
    working directory's ./mlruns). Registering an item that is already registered returns its version.
    """
    import mlflow
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    from nf_core.export import check_inputs, deployable

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)  # the sweep's registry, not a global one
    name = registered_model_name(sweep, params)
    if client.search_registered_models(f"name = '{name}'"):
        for v in client.search_model_versions(f"name = '{name}'"):
            if v.tags.get("nf.item") == item_id:
                # registered before its evaluation finished: the numbers join as tags now
                for k, val in (metrics or {}).items():
                    if v.tags.get(k) != val:
                        client.set_model_version_tag(name, v.version, k, val)
                return client.get_model_version(name, v.version) if metrics else v
    module = deployable(generator)
    # two images: torch.export (MLflow's "pt2" format) would fix the batch axis at a batch of one
    example = check_inputs(input_size, n=2).numpy()
    with torch.no_grad():
        signature = infer_signature(example, module(torch.from_numpy(example)).numpy())
    tags = {**item_tags(sweep, item_id, params), **(metrics or {})}
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)  # the sweep's registry, whatever an earlier call in this process set
    if run_id is None:  # the item's own run when the sweep logged one, else a new run for the model
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment, artifact_location)
        runs = client.search_runs([exp_id], f"tags.`nf.item_id` = '{item_id}'", max_results=1)
        if runs:
            run_id = runs[0].info.run_id
        else:
            run_id = client.create_run(exp_id, tags={"nf.item_id": item_id}, run_name=f"model {item_id}").info.run_id
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            module,
            name=MODEL_NAME,
            signature=signature,
            input_example=example,
            serialization_format="pt2",  # torch.export archive: loads without this project's code
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],  # no requirement inference pass
        )
    # MLflow prints "Successfully registered model …" lines itself; the sweep's view says it once, briefly
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        version = mlflow.register_model(info.model_uri, name, tags=tags)
    return client.get_model_version(name, version.version)
