"""Checks that need the outside world, run by `nf sweep plan/run/resume` before Ray starts.

The schema (orchestration/spec/config.py) checks values; this checks that each dataset root
exists and holds the files its loader (nf_core/data.py) will open, locally or on S3, so a
missing or half-copied dataset is one `nf: error:` line instead of failed trials after Ray
started and files were written. A few metadata requests per dataset: file checks and, for
folders of classes, one listing (never a walk over the images). Measured fault maps
(``evaluation.fault_maps``) are read and validated in full: they are small, and a bad map
must not surface only after every generator has trained.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from orchestration.spec.config import ConfigError, SweepConfig

if TYPE_CHECKING:  # pyarrow is imported when a check runs: `nf sweep plan` starts fast
    import pyarrow.fs as pafs

_CIFAR10 = "cifar-10-batches-py"
_CIFAR100 = "cifar-100-python"
_GTSRB_TRAIN, _GTSRB_TEST = "gtsrb/GTSRB/Training", "gtsrb/GTSRB/Final_Test/Images"
_GTSRB_CSV = "gtsrb/GT-final_test.csv"
GTSRB_CLASSES = 43

# Per dataset: the files and folders its loader opens (relative to root), and the same in words.
LAYOUT: dict[str, tuple[list[str], list[str], str]] = {
    "cifar10": (
        [f"{_CIFAR10}/{f}" for f in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")],
        [],
        f"{_CIFAR10}/ with data_batch_1..5, test_batch, batches.meta (python pickle format)",
    ),
    "cifar100": (
        [f"{_CIFAR100}/{f}" for f in ("train", "test", "meta")],
        [],
        f"{_CIFAR100}/ with train, test, meta (python pickle format)",
    ),
    "gtsrb": (
        [_GTSRB_CSV],
        [_GTSRB_TRAIN, _GTSRB_TEST],
        f"{_GTSRB_TRAIN}/<00000..00042>/, {_GTSRB_TEST}/ and {_GTSRB_CSV}",
    ),
    "imagenet10": ([], ["train", "val"], "train/<class>/ and val/<class>/ (ImageFolder layout)"),
}


def _filesystem(root: str, cfg: SweepConfig) -> tuple[pafs.FileSystem, str]:
    import pyarrow.fs as pafs

    if root.startswith("s3://"):
        from orchestration.store.storage import Store  # S3 through the same client the trials use

        store = Store(root, cfg.s3_endpoint, cfg.s3_region)
        return store.fs, store.root
    return pafs.LocalFileSystem(), os.path.abspath(root.removeprefix("file://"))


def _subdirs(fs: pafs.FileSystem, path: str) -> list[str]:
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(os.path.basename(i.path) for i in infos if i.type == pafs.FileType.Directory)


def check_root(name: str, root: str, cfg: SweepConfig, where: str) -> None:
    """Raise ConfigError (one line, naming ``where``) unless ``root`` holds dataset ``name``."""
    import pyarrow.fs as pafs

    if name not in LAYOUT:
        return
    files, dirs, expected = LAYOUT[name]
    hint = "; download: true fetches it" if name != "imagenet10" else ""
    fs, base = _filesystem(root, cfg)
    info = fs.get_file_info(base)
    if info.type == pafs.FileType.NotFound:
        what = "no object under this prefix" if root.startswith("s3://") else "does not exist"
        raise ConfigError(f"{where}: {root!r}: {what}; expected {expected} there{hint}")
    if info.type != pafs.FileType.Directory:
        raise ConfigError(f"{where}: {root!r} is a file, not a folder; expected {expected} there")
    wanted = [(p, pafs.FileType.File) for p in files] + [(p, pafs.FileType.Directory) for p in dirs]
    found = fs.get_file_info([f"{base}/{p}" for p, _ in wanted])
    missing = [p for (p, kind), i in zip(wanted, found) if i.type != kind]
    if missing:
        raise ConfigError(f"{where}: {root!r} lacks {', '.join(missing)}; expected {expected}{hint}")
    if name == "gtsrb":
        # torchvision numbers classes by sorted folder: a missing one would shift every later label
        n = len(_subdirs(fs, f"{base}/{_GTSRB_TRAIN}"))
        if n != GTSRB_CLASSES:
            raise ConfigError(
                f"{where}: {root!r}: {_GTSRB_TRAIN} has {n} class folders; expected {GTSRB_CLASSES} (00000..00042)"
            )
    if name == "imagenet10":
        train, val = _subdirs(fs, f"{base}/train"), _subdirs(fs, f"{base}/val")
        if not train or train != val:
            raise ConfigError(
                f"{where}: {root!r}: class folders of train/ ({len(train)}) and val/ ({len(val)}) "
                f"must be the same and not empty; expected {expected}"
            )


def check_fault_maps(cfg: SweepConfig) -> int:
    """The measured fault maps of ``evaluation.fault_maps`` exist and each one is valid
    (nf_core.fault_maps: geometry, cells in range, no duplicates, stuck values 0/1); returns
    how many there are (0 when the sweep evaluates on random chips)."""
    uri = cfg.evaluation.fault_maps
    if uri is None:
        return 0
    import pyarrow.fs as pafs

    from orchestration.store.fault_maps_store import load_fault_maps_uri  # torch: only when maps are used

    where = "evaluation.fault_maps"
    try:
        fs, base = _filesystem(uri, cfg)
        if fs.get_file_info(base).type != pafs.FileType.Directory:
            what = "no object under this prefix" if uri.startswith("s3://") else "is not a folder"
            raise ConfigError(f"{where}: {uri!r}: {what}; expected .npz or .parquet fault maps there")
        return len(load_fault_maps_uri(uri, cfg.s3_endpoint, cfg.s3_region))
    except ConfigError:
        raise
    except ValueError as e:  # a bad map, or none there
        raise ConfigError(f"{where}: {' '.join(str(e).split())}") from None
    except OSError as e:  # unreachable endpoint, no credentials, no such bucket …
        raise ConfigError(
            f"{where}: cannot read {uri!r} (check the path, s3_endpoint and credentials): {' '.join(str(e).split())}"
        ) from None


def check_dataset_roots(cfg: SweepConfig) -> None:
    """Every dataset root of the sweep exists and holds its files (a missing local root is fine
    with ``download: true``: torchvision fetches it there), and the measured fault maps, if the
    sweep evaluates on them, are there and valid (`check_fault_maps`)."""
    for i, d in enumerate(cfg.datasets):
        if d.root is None or d.download:
            continue
        where = f"datasets[{i}].root"
        try:
            check_root(d.name, d.root, cfg, where)
        except OSError as e:  # unreachable endpoint, no credentials, no such bucket …
            raise ConfigError(
                f"{where}: cannot read {d.root!r} (check the path, s3_endpoint and credentials): "
                f"{' '.join(str(e).split())}"
            ) from None
    check_fault_maps(cfg)
