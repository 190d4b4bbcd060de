"""Datasets and loaders for NeuralFuse: CIFAR-10/100, GTSRB, ImageNet-10 and offline digits.

Every image comes out as a float tensor in [-1, 1] (ToTensor, then x*2-1; no mean/std
normalisation), because the generator's output is added to it and clamped to [-1, 1].
This module is pure PyTorch/torchvision: no ray or mlflow, so it imports anywhere.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision import datasets, transforms

from .registry import Registry

__all__ = ["DATASETS", "DatasetInfo", "load_dataset", "make_loader", "epoch_seed"]

DATASETS: Registry[DatasetInfo] = Registry("dataset")

_DOWNLOAD_HINT = "download=True fetches it where internet is available"


@dataclass
class DatasetInfo:
    """A loaded dataset: both splits plus what a model needs to know about them."""

    name: str
    num_classes: int
    input_size: int  # 32 or 224 (square images)
    train: Dataset
    test: Dataset


def _to_signed(x: torch.Tensor) -> torch.Tensor:
    # A module-level function (not a lambda) so transforms pickle into DataLoader workers.
    return x * 2 - 1


def _finish(steps: list[Callable]) -> transforms.Compose:
    return transforms.Compose([*steps, transforms.ToTensor(), transforms.Lambda(_to_signed)])


def load_dataset(name: str, root: str | None = None, download: bool = False, augment: bool = True) -> DatasetInfo:
    """Load dataset `name` (see DATASETS.names()) from `root`; `augment` affects the train split only."""
    # Registry.get raises ValueError naming the bad value and the valid choices.
    return DATASETS.get(name)(root=root, download=download, augment=augment)


def _require_root(name: str, root: str | None, download: bool, expected: str) -> Path:
    """Fail before any work when the data cannot be there; returns root as a Path."""
    if root is None:
        raise ValueError(f"dataset {name!r} needs root= (a directory holding {expected}); {_DOWNLOAD_HINT}")
    path = Path(root)
    if not download and not path.is_dir():
        raise FileNotFoundError(
            f"dataset {name!r}: root {str(path)!r} does not exist; expected {expected} there; {_DOWNLOAD_HINT}"
        )
    return path


def _require_files(name: str, root: Path, rel_paths: list[str], expected: str) -> None:
    missing = [p for p in rel_paths if not (root / p).exists()]
    if missing:
        raise FileNotFoundError(
            f"dataset {name!r}: under {str(root)!r} expected {expected}; missing: "
            f"{', '.join(missing)}; {_DOWNLOAD_HINT}"
        )


# ---------------------------------------------------------------- CIFAR-10 / CIFAR-100
class _CIFARPresenceMixin:
    """Check only that CIFAR's files exist when download=False; keep torchvision's md5 path otherwise.

    torchvision md5-hashes all ~170 MB of pickles on every construction (slow, once per
    sweep job), and it rejects valid re-packed or subset files (e.g. small test fixtures).
    With download=True we defer to torchvision so a fresh download is still verified.
    """

    def __init__(self, root: Path, train: bool, transform: Callable, download: bool) -> None:
        self._verify_md5 = download
        try:
            super().__init__(str(root), train=train, transform=transform, download=download)  # type: ignore[call-arg]
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as err:
            raise ValueError(
                f"could not read CIFAR files under {str(root / self.base_folder)!r} "  # type: ignore[attr-defined]
                f"(expected torchvision's python pickle format): {err!r}"
            ) from err

    def _check_integrity(self) -> bool:
        if self._verify_md5:
            return super()._check_integrity()  # type: ignore[misc]
        folder = os.path.join(self.root, self.base_folder)  # type: ignore[attr-defined]
        return all(os.path.isfile(os.path.join(folder, f)) for f, _ in self.train_list + self.test_list)  # type: ignore[attr-defined]

    def _load_meta(self) -> None:
        if self._verify_md5:
            return super()._load_meta()  # type: ignore[misc]
        with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:  # type: ignore[attr-defined]
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]  # type: ignore[attr-defined]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class _CIFAR10(_CIFARPresenceMixin, datasets.CIFAR10):
    pass


class _CIFAR100(_CIFARPresenceMixin, datasets.CIFAR100):
    pass


def _load_cifar(name: str, cls: type, num_classes: int, root: str | None, download: bool, augment: bool) -> DatasetInfo:
    folder = cls.base_folder
    files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    expected = f"{folder}/ with {', '.join(files)} (python pickle format)"
    path = _require_root(name, root, download, expected)
    if not download:
        _require_files(name, path, [f"{folder}/{f}" for f in files], expected)
    aug = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if augment else []
    train = cls(path, train=True, transform=_finish(aug), download=download)
    test = cls(path, train=False, transform=_finish([]), download=False)
    for split in (train, test):
        # Catch e.g. CIFAR-100 files under a CIFAR-10 name: labels would silently be wrong.
        if split.targets and not 0 <= min(split.targets) <= max(split.targets) < num_classes:
            raise ValueError(f"dataset {name!r}: labels under {str(path / folder)!r} fall outside 0..{num_classes - 1}")
    return DatasetInfo(name, num_classes, 32, train, test)


@DATASETS.register("cifar10")
def _cifar10(root: str | None, download: bool, augment: bool) -> DatasetInfo:
    """CIFAR-10: 32x32, 10 classes (python pickles under root)."""
    return _load_cifar("cifar10", _CIFAR10, 10, root, download, augment)


@DATASETS.register("cifar100")
def _cifar100(root: str | None, download: bool, augment: bool) -> DatasetInfo:
    """CIFAR-100: 32x32, 100 classes (python pickles under root)."""
    return _load_cifar("cifar100", _CIFAR100, 100, root, download, augment)


# ---------------------------------------------------------------- GTSRB
GTSRB_CLASSES = 43


@DATASETS.register("gtsrb")
def _gtsrb(root: str | None, download: bool, augment: bool) -> DatasetInfo:
    """GTSRB traffic signs: 43 classes at 32x32 (class folders of .ppm and the test CSV under root)."""
    train_dir, test_dir, csv = "gtsrb/GTSRB/Training", "gtsrb/GTSRB/Final_Test/Images", "gtsrb/GT-final_test.csv"
    expected = f"{train_dir}/<00000..00042>/*.ppm, {test_dir}/*.ppm and {csv}"
    path = _require_root("gtsrb", root, download, expected)
    if not download:
        _require_files("gtsrb", path, [train_dir, test_dir, csv], expected)
    resize = transforms.Resize((32, 32))
    # Small affine only: a horizontal flip would mirror arrows and text on the signs.
    aug = [transforms.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))] if augment else []
    train = datasets.GTSRB(str(path), split="train", transform=_finish([resize, *aug]), download=download)
    test = datasets.GTSRB(str(path), split="test", transform=_finish([resize]), download=download)
    # torchvision numbers training classes by sorted folder position, so a missing folder
    # would shift every later label and disagree with the test CSV's ClassId.
    n_dirs = sum(1 for p in (path / train_dir).iterdir() if p.is_dir())
    if n_dirs != GTSRB_CLASSES:
        raise ValueError(
            f"dataset 'gtsrb': {str(path / train_dir)!r} has {n_dirs} class folders, "
            f"expected {GTSRB_CLASSES} (00000..00042)"
        )
    return DatasetInfo("gtsrb", GTSRB_CLASSES, 32, train, test)


# ---------------------------------------------------------------- ImageNet-10
@DATASETS.register("imagenet10")
def _imagenet10(root: str | None, download: bool, augment: bool) -> DatasetInfo:
    """ImageNet-10: 10 ImageNet classes at 224x224 (train/ and val/ image folders under root)."""
    expected = "train/<class>/*.JPEG and val/<class>/*.JPEG (ImageFolder layout)"
    if download:
        # ImageNet has no public download URL; torchvision cannot fetch it.
        raise ValueError(f"dataset 'imagenet10' cannot be downloaded automatically; prepare root with {expected}")
    path = _require_root("imagenet10", root, False, expected)
    if not (path / "train").is_dir() or not (path / "val").is_dir():
        raise FileNotFoundError(f"dataset 'imagenet10': under {str(path)!r} expected {expected}")
    test_tf = _finish([transforms.Resize(256), transforms.CenterCrop(224)])
    train_tf = _finish([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip()]) if augment else test_tf
    train = datasets.ImageFolder(str(path / "train"), transform=train_tf)
    test = datasets.ImageFolder(str(path / "val"), transform=test_tf)
    if train.class_to_idx != test.class_to_idx:
        raise ValueError(
            f"dataset 'imagenet10': class folders differ between {str(path / 'train')!r} "
            f"and {str(path / 'val')!r}, so labels would not match"
        )
    return DatasetInfo("imagenet10", len(train.classes), 224, train, test)


# ---------------------------------------------------------------- digits (offline)
@DATASETS.register("digits")
def _digits(root: str | None, download: bool, augment: bool) -> DatasetInfo:
    """scikit-learn's 1,797 real 8x8 digits: ships with sklearn, so usable offline and in tests.

    root/download are ignored. augment is ignored too: the digits are size-normalised and
    centred, and crops/flips would turn them into other digits (a flipped 2 is not a 2).
    """
    from sklearn.datasets import load_digits  # local import: sklearn is only needed here
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N,1,8,8) in [0,1]
    # Bilinear (align_corners=False) is a convex mix of pixels, so values stay in [0, 1].
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    x = _to_signed(x).contiguous()
    y = torch.from_numpy(digits.target.astype(np.int64))
    # Fixed split (seed 0, stratified) so every run and job sees the same test set.
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=0.25, random_state=0, stratify=digits.target)
    tr, te = torch.from_numpy(idx_train), torch.from_numpy(idx_test)
    return DatasetInfo("digits", 10, 32, TensorDataset(x[tr], y[tr]), TensorDataset(x[te], y[te]))


# ---------------------------------------------------------------- loaders
def epoch_seed(seed: int, epoch: int) -> int:
    """A deterministic, well-mixed 63-bit seed for (seed, epoch); nearby inputs give unrelated seeds."""
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed {seed!r} and epoch {epoch!r} must be >= 0")
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return int(state) & ((1 << 63) - 1)  # non-negative int64: accepted by every torch API


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int | None = None,
    num_workers: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader whose shuffle order (and worker base seeds) is fixed by `seed` when given.

    The generator's state advances each time the loader is iterated; to get a reproducible
    order per epoch, reseed it: `loader.generator.manual_seed(epoch_seed(seed, epoch))`.
    """
    generator = None
    if seed is not None:
        generator = torch.Generator()
        generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        drop_last=drop_last,
    )
