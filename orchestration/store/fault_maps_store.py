"""Measured fault maps from a directory or an S3 prefix (`fault_maps: <dir or s3://bucket/prefix>`).

Listing and reading go through orchestration.store.storage (pyarrow filesystems); parsing and
validation are nf_core.fault_maps'. Every map is validated before any evaluation starts.
"""

from __future__ import annotations

from nf_core.fault_maps import SUFFIXES, MeasuredChip, parse_fault_map
from orchestration.store.storage import Store


def load_fault_maps_uri(uri: str, s3_endpoint: str | None = None, s3_region: str | None = None) -> list[MeasuredChip]:
    """Every .npz / .parquet map under ``uri`` (local folder or s3:// prefix), sorted by name."""
    store = Store(uri, s3_endpoint, s3_region)
    names = sorted(n for n in store.list() if n.lower().endswith(SUFFIXES))
    if not names:
        raise ValueError(f"fault_maps {store.url()!r} holds no {' or '.join(SUFFIXES)} files")
    return [parse_fault_map(store.read_bytes(n), n) for n in names]
