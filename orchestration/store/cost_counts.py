"""The sweep's cost-count cache: counts of networks the shipped table lacks (other widths), kept beside
the sweep so `nf select` and `nf report` count each network once."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

COUNTS_CACHE = "cost_counts.json"  # beside the sweep: counts of networks the shipped table lacks (other widths)


@contextlib.contextmanager
def sweep_counts(store: Any) -> Iterator[None]:
    """Within the block, nf_core.cost also answers from the sweep's counts cache; networks counted
    afresh in it (a width the shipped table lacks) are added to the cache afterwards. A storage that
    cannot be written just goes without (the counts are recomputed next time)."""
    from nf_core import cost

    if store.exists(COUNTS_CACHE):
        try:
            cost.load_counts(json.loads(store.read_bytes(COUNTS_CACHE)))
        except ValueError:  # a torn or foreign file: counted again, then replaced
            pass
    before = cost.extra_counts()
    yield
    after = cost.extra_counts()
    if after["counts"] != before["counts"]:
        with contextlib.suppress(OSError):
            store.write_bytes(COUNTS_CACHE, json.dumps(after, indent=0).encode())
