"""Hand-made sweep stores for the status tests and benchmarks/bench_status.py: the files a
sweep's trainables write (done.json, status.json, attempts.json, checkpoint.pt …), without
running anything."""

from __future__ import annotations

import json
import time
from typing import Any

from orchestration.spec.plan import Item


def item_files(
    item: Item, state: str, epochs: int, epoch: int | None = None, error: str | None = None, attempts: int = 1
) -> dict[str, bytes]:
    """The files of one item in ``state`` (done / running / failed / torn), as trainables.py writes them."""
    now = time.time()
    d = f"items/{item.stage}/{item.id}"
    k = epochs if state == "done" else (epoch or 0)
    att = [{"time": now - 60 * (attempts - a), "from_epoch": 0, "completed": []} for a in range(attempts)]
    att[-1]["completed"] = list(range(1, k + 1))
    if item.stage in ("base", "generator"):
        metrics = {"epoch": k, "loss": 1.0 / (1 + k), "seconds": 12.5}
        if item.stage == "base":
            metrics["train_acc"] = 50.0 + k
    else:
        metrics = {
            "epoch": 1,
            "rp.resnet18.ber0.01": 10.0,
            "rp.resnet18.ber0.03": 20.0,
            "pa_nf_mean.resnet18.ber0.01": 70,
        }
    files = {f"{d}/attempts.json": json.dumps(att).encode()}
    if item.stage in ("base", "generator") and k:
        files[f"{d}/checkpoint.pt"] = b"\0" * 256
    if state == "done":
        final = {**metrics, "test_ca": 61.5} if item.stage == "base" else metrics
        done: dict[str, Any] = {"item": item.to_dict(), "final": final}
        if item.stage in ("eval", "transfer"):
            done["rows"] = [{"item_id": item.id, "eval_ber": b, "ca": 90.0, "rp": 10.0} for b in (0.01, 0.03)]
            files[f"{d}/results.parquet"] = b"PAR1" + b"\0" * 512
        files[f"{d}/done.json"] = json.dumps(done).encode()
        files[f"{d}/status.json"] = json.dumps({"state": "done", "time": now}).encode()
    elif state == "torn":  # done.json cut short by a crash of a non-atomic writer: not done
        files[f"{d}/done.json"] = json.dumps({"item": item.to_dict(), "final": metrics}).encode()[:20]
        files[f"{d}/status.json"] = json.dumps({"state": "running", "time": now, "epoch": k}).encode()
    elif state == "empty_done":  # a zero-byte done.json: not done
        files[f"{d}/done.json"] = b""
        files[f"{d}/status.json"] = json.dumps({"state": "running", "time": now, "epoch": k}).encode()
    elif state == "running":
        s = {"state": "running", "time": now, "epoch": k, "metrics": metrics} if k else {"state": "running"}
        files[f"{d}/status.json"] = json.dumps(s).encode()
    elif state == "failed":
        s = {"state": "failed", "time": now, "error": error or "RuntimeError: boom", "traceback": "Traceback …"}
        files[f"{d}/status.json"] = json.dumps(s).encode()
    else:
        raise ValueError(f"unknown state {state!r}")
    return files


def synthetic_store(items: dict[str, list[Item]], epochs: dict[str, int], seed: int = 0) -> dict[str, bytes]:
    """A mid-sweep store for a plan: earlier stages mostly done, a few items running or failed
    in each started stage, the rest pending (about 60% of all items done)."""
    import random

    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    share = {"base": 1.0, "generator": 0.9, "eval": 0.7, "transfer": 0.2}
    for stage, its in items.items():
        for it in its:
            r = rng.random()
            if r < share[stage]:
                state = "done"
            elif r < share[stage] + 0.01:
                state = "running"
            elif r < share[stage] + 0.02:
                state = "failed"
            else:
                continue  # pending: no files
            n = epochs.get(stage, 1)
            files.update(item_files(it, state, n, epoch=rng.randint(1, n), attempts=3 if state == "failed" else 1))
    return files


def write_local(root: str, files: dict[str, bytes]) -> None:
    import os

    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def write_s3(endpoint: str, bucket: str, prefix: str, files: dict[str, bytes], threads: int = 8) -> None:
    """Upload with boto3 from a thread pool (a store of thousands of files in seconds, not minutes)."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3
    from botocore.config import Config

    s3 = boto3.client("s3", endpoint_url=endpoint, config=Config(max_pool_connections=threads))
    names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in names:
        s3.create_bucket(Bucket=bucket)
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(lambda kv: s3.put_object(Bucket=bucket, Key=f"{prefix}/{kv[0]}", Body=kv[1]), files.items()))
