"""Where sweeps live: storage roots, the default one, and a sweep's own `Store`.

``--storage DIR`` is a sweep's identity: every command that names a sweep
(``nf sweep status|resume``, ``nf ui``, ``nf report``, ``nf select``) reads and writes
``DIR/NAME`` only, whatever root ``sweep.yaml`` recorded when the sweep was made (a copied
sweep is a sweep of its own). Relative roots:

- an explicit local path (``--storage runs/x`` or ``storage: runs/x`` in a config) is relative
  to the working directory of the command, like every other path typed in a shell, and is
  made absolute at once (that absolute path is what ``sweep.yaml`` records);
- the *default* root, used when neither is given, is the same from every working directory:
  ``$NF_STORAGE`` when set, else ``runs/sweeps`` in the project checkout that holds the
  ``orchestration`` package (a source checkout or an editable install), else
  ``$XDG_DATA_HOME/nf/sweeps`` (``~/.local/share/nf/sweeps``) for an installed package.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestration.store.storage import Store

CONFIG_FILE = "sweep.yaml"  # a sweep's config, in its storage folder
DEFAULT_ROOT = "runs/sweeps"  # the schema's default: stands for default_storage()


def default_storage() -> str:
    """The storage root used when none is given (the same from every working directory)."""
    env = os.environ.get("NF_STORAGE")
    if env:
        return env if "://" in env else os.path.abspath(os.path.expanduser(env))
    project = Path(__file__).resolve().parents[2]
    if (project / "pyproject.toml").is_file():  # a source checkout / editable install
        return str(project / DEFAULT_ROOT)
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(data, "nf", "sweeps")


def resolve_storage(storage: str | None) -> str:
    """A storage root as a sweep's identity: URIs as given, local paths absolute (cwd-relative),
    None for the default root."""
    if not storage:
        return default_storage()
    if storage.startswith("s3://"):
        return storage.rstrip("/")
    path = storage[len("file://") :] if storage.startswith("file://") else storage
    return os.path.abspath(os.path.expanduser(path))


def sweep_store(cfg: Any) -> Store:
    """The folder of sweep ``cfg`` (a SweepConfig) in its storage."""
    from orchestration.store.storage import Store  # pyarrow: only when storage is read

    return Store(cfg.storage, cfg.s3_endpoint, cfg.s3_region).sub(cfg.name)


def add_storage_args(parser: argparse.ArgumentParser) -> None:
    """``--storage`` and ``--s3-endpoint`` for every command that names an existing sweep."""
    parser.add_argument(
        "--storage",
        default=None,
        help="storage root the sweep lives in (path or s3://bucket/prefix; the sweep is read and written "
        "there only); default: $NF_STORAGE, else runs/sweeps in the project checkout",
    )
    parser.add_argument("--s3-endpoint", default=None, help="endpoint URL of an S3-compatible store")
