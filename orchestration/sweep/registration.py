"""Every finished generator item of a sweep as an MLflow registered model (``mlflow.register_generators``).

The driver (the only MLflow writer) calls :func:`register_generators` after each Tune run, beside the
item artifacts: each generator item that is done and not yet registered is logged into its own child
run and registered (orchestration/tracking/model_registry.py: name, flavour, signature, tags); its
evaluation numbers join as tags when its eval item is done, now or on a later resume (registering
again only adds the tags). Registering after the Tune run, not inside it, keeps the export (a
torch.export archive per generator) off the loop that schedules trials.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from orchestration.spec.config import SweepConfig
from orchestration.spec.plan import Item
from orchestration.store.item_files import load_item_checkpoint, read_done
from orchestration.store.storage import Store


def register_generators(
    cfg: SweepConfig,
    store: Store,
    tracker: Any,
    items: list[Item],
    runs: dict[str, str],
    log: Callable[[str], None] = print,
) -> dict[str, float]:
    """Register each done generator item of ``items``; returns item id → seconds it took."""
    from orchestration.tracking.model_registry import eval_tags, generator_from_checkpoint, register_generator

    if not cfg.mlflow.register_generators:
        return {}
    seconds: dict[str, float] = {}
    names: list[str] = []
    # Two searches for the lot, not a run read per item; storage is read only for items with work left.
    registered = tracker.child_runs_tagged("nf.registered")
    with_eval = tracker.child_runs_tagged("nf.registered_eval")
    for it in items:
        if it.stage != "generator" or runs[it.id] in with_eval:
            continue  # registered with its evaluation numbers: nothing left to add
        if runs[it.id] not in registered and read_done(store, "generator", it.id) is None:
            continue  # not trained yet
        done = read_done(store, "eval", f"eval.{it.id}")
        if runs[it.id] in registered and done is None:
            continue  # registered, with every evaluation number there is so far
        t0 = time.perf_counter()
        try:
            gen, size = generator_from_checkpoint(load_item_checkpoint(store, "generator", it.id))
            v = register_generator(
                tracker.tracking_uri,
                tracker.experiment,
                cfg.name,
                it.id,
                it.params,
                gen,
                size,
                eval_tags(done.get("rows", [])) if done else None,
                run_id=runs[it.id],
                artifact_location=tracker.artifact_location,
            )
        except Exception as e:  # noqa: BLE001 (a registry hiccup must not fail a sweep whose work is done)
            log(
                f"nf: warning: registering {it.id} failed ({type(e).__name__}: {e}); the next "
                f"`nf sweep resume {cfg.name}` or `nf export {cfg.name} {it.id} --onnx OUT --register` retries"
            )
            continue
        tracker.set_tag(runs[it.id], "nf.registered", "1")
        if done:
            tracker.set_tag(runs[it.id], "nf.registered_eval", "1")
        seconds[it.id] = time.perf_counter() - t0
        names.append(f"{v.name} v{v.version}")
    if names:  # one line for the lot: the live view stays as short as before
        more = f" (+{len(names) - 3} more)" if len(names) > 3 else ""
        log(f"registered {len(names)} generator(s) in MLflow: {', '.join(names[:3])}{more}")
    return seconds
