"""A hand-made finished sweep of the demo's size (orchestration/demo.yaml), written without running
anything: every item's files as trainables.py writes them, eval/transfer rows with per-chip
accuracies. For the reading-command tests and benchmarks/bench_cli.py."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import yaml

from orchestration.spec.plan import plan
from tests.status_support import item_files, write_local

# A voltage table holding the demo's evaluation BERs (0.01, 0.01212883) and two more: hand-made for the tests.
DEMO_VOLTAGE_TABLE = (
    "voltage,ber,energy_ratio\n1.0,0,1.0\n0.83,0.01,0.694\n0.8265,0.01212883,0.683\n0.8,0.03,0.64\n0.78,0.05,0.61\n"
)


def demo_raw(name: str = "demo", storage: str | None = None) -> dict[str, Any]:
    """The demo config as a dict (storage: ``storage`` when given, else the schema's default)."""
    raw = yaml.safe_load(resources.files("orchestration").joinpath("demo.yaml").read_text())
    raw["name"] = name
    if storage is not None:
        raw["storage"] = storage
    return raw


def _accuracy(seed: int, *parts: object) -> float:
    """A deterministic, spread-out accuracy in [20, 99] for one row/chip (no RNG state shared)."""
    import zlib

    return 20.0 + (zlib.crc32(repr((seed, *parts)).encode()) % 7900) / 100.0


def eval_rows(item: Any, chips: int, bers: list[float]) -> list[dict[str, Any]]:
    """The rows of a finished eval/transfer item at evaluation BERs ``bers``, shaped like trainables._row
    (per-chip lists included)."""
    p = item.params
    rows = []
    for target in p["targets"]:
        for ber in bers:
            pa = [_accuracy(1, item.id, target, ber, c) * 0.5 for c in range(chips)]
            nf = [_accuracy(2, item.id, target, ber, c) for c in range(chips)]
            ca = 95.0 + (_accuracy(3, target) % 4)
            rows.append(
                {
                    "item_id": item.id,
                    "stage": item.stage,
                    "dataset": p["dataset"],
                    "source": "+".join(p["source"]),
                    "generator": p["generator"],
                    "train_ber": p["ber"],
                    "lam": p["lam"],
                    "n": p["n"],
                    "fault_model": p["fault_model"],
                    "layout": p["layout"],
                    "bits": p["bits"],
                    "seed": p["seed"],
                    "eval_ber": ber,
                    "target": target,
                    "chips": chips,
                    "ca": ca,
                    "pa_mean": sum(pa) / chips,
                    "pa_std": 1.0,
                    "ca_nf": ca - 1.0,
                    "pa_nf_mean": sum(nf) / chips,
                    "pa_nf_std": 1.0,
                    "rp": sum(nf) / chips - sum(pa) / chips,
                    "efficiency": None,
                    "pa_per_chip": pa,
                    "pa_nf_per_chip": nf,
                }
            )
    return rows


def write_demo_sweep(root: str, name: str = "demo", **changes: Any) -> None:
    """A finished demo-size sweep ``root/name`` (sweep.yaml as `nf sweep run` writes it, every item done);
    ``changes`` override fields of the demo config (e.g. ``width``)."""
    from orchestration.spec.config import parse_config

    cfg = parse_config({**demo_raw(name, root), **changes})
    files: dict[str, bytes] = {"sweep.yaml": yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode()}
    for stage, items in plan(cfg).items():
        for it in items:
            files.update(item_files(it, "done", 3))
            if stage in ("eval", "transfer"):
                rows = eval_rows(it, cfg.evaluation.chips, cfg.evaluation.bers)
                done = {"item": it.to_dict(), "final": {"epoch": 1}, "rows": rows}
                files[f"items/{stage}/{it.id}/done.json"] = json.dumps(done).encode()
    write_local(f"{root}/{name}", files)
