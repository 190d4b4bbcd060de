"""The registered names and their one-line descriptions, read from the registries, without torch.

The registries (``nf_core.models.MODELS``, ``nf_core.generators.GENERATORS``, ``nf_core.data.DATASETS``)
and the option tuples beside their users (``nf_core.train``, ``nf_core.deployed``) live in modules that
import torch (1.6 s on a quiet 2-core box). `nf list` and the sweep config's checks need only the names,
so the first call reads them from the real registries and keeps the result in a small JSON file keyed by
a hash of nf_core's source; every later call (any process) reads that file in milliseconds. Editing
nf_core changes the hash, so the next call reads the registries again: nothing here is kept by hand.
A description is the first line of the builder's docstring.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

KINDS = ("models", "generators", "datasets")  # what `nf list` shows
_SOURCE = Path(__file__).resolve().parent


def fingerprint() -> str:
    """A hash of nf_core's source files (what the registries are built from)."""
    h = hashlib.sha1()
    for f in sorted(_SOURCE.rglob("*.py")):
        h.update(str(f.relative_to(_SOURCE)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _first_line(doc: str | None) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0].strip() if lines else ""


def read_registries() -> dict[str, Any]:
    """The names (and descriptions) straight from the registries: imports torch."""
    from nf_core import adversarial, deployed, train
    from nf_core.ber_conditioned import SUFFIX
    from nf_core.data import DATASETS
    from nf_core.generators import GENERATORS
    from nf_core.models import MODELS

    out: dict[str, Any] = {
        kind: {n: _first_line(reg.get(n).__doc__) for n in reg.names()}
        for kind, reg in zip(KINDS, (MODELS, GENERATORS, DATASETS), strict=True)
    }
    out["optimizers"], out["schedules"] = list(train.OPTIMIZERS), list(train.SCHEDULES)
    out["batching"], out["amp"] = list(deployed.BATCHING), [a for a in deployed.AMP if a is not None]
    out["ber_suffix"] = SUFFIX
    from nf_core.base_modes import BASE_MODES

    out["base_modes"] = list(BASE_MODES)
    out["chips"] = list(adversarial.CHIP_MODES)
    return out


def _cache_file(key: str) -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(root) / "nf" / f"registries-{key}.json"


@lru_cache(maxsize=1)
def catalog() -> dict[str, Any]:
    """Every registered name: from the cache file of this source, else from the registries (then cached)."""
    path = _cache_file(fingerprint())
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    out = read_registries()
    try:  # atomic: concurrent first calls each write a whole file
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".registries-")
        with os.fdopen(fd, "w") as f:
            json.dump(out, f)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: read the registries every time
    return out


def names(kind: str) -> tuple[str, ...]:
    """The registered names of ``kind`` (models, generators, datasets, optimizers, schedules, batching, amp,
    base_modes)."""
    entries = catalog()[kind]
    return tuple(entries)


def descriptions(kind: str) -> dict[str, str]:
    """Name → first docstring line of its builder (models, generators, datasets)."""
    return dict(catalog()[kind])


def ber_suffix() -> str:
    """The name suffix of the BER-conditioned generators (nf_core.ber_conditioned)."""
    return catalog()["ber_suffix"]


def is_ber_conditioned(generator: str) -> bool:
    """A generator name of a BER-conditioned variant (trained over a range of BERs)."""
    return generator.endswith(ber_suffix())
