"""nf_core.data: small files in the real on-disk formats, loaded through load_dataset (offline, CPU)."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nf_core.data import DATASETS, DatasetInfo, epoch_seed, load_dataset, make_loader

rng = np.random.default_rng(0)


def _check_sample(ds, size: int, num_classes: int) -> None:
    x, y = ds[0]
    assert x.shape == (3, size, size) and x.dtype == torch.float32
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.min() < 0  # signed range, not [0, 1]
    assert 0 <= int(y) < num_classes


# ---------------------------------------------------------------- CIFAR
def _pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _images(n: int) -> np.ndarray:
    # CIFAR rows: 3072 uint8 = R plane, G plane, B plane of a 32x32 image.
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar10(root: Path, per_batch: int = 3, n_test: int = 4) -> None:
    d = root / "cifar-10-batches-py"
    for i in range(1, 6):
        _pickle(d / f"data_batch_{i}", {"data": _images(per_batch), "labels": list(rng.integers(0, 10, per_batch))})
    _pickle(d / "test_batch", {"data": _images(n_test), "labels": [9] * n_test})
    _pickle(d / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})


def write_cifar100(root: Path, n_train: int = 7, n_test: int = 5) -> None:
    d = root / "cifar-100-python"
    for name, n in (("train", n_train), ("test", n_test)):
        fine = list(rng.integers(0, 100, n))
        fine[0] = 99
        _pickle(d / name, {"data": _images(n), "fine_labels": fine, "coarse_labels": [f // 5 for f in fine]})
    _pickle(
        d / "meta",
        {"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": [f"k{i}" for i in range(20)]},
    )


def test_cifar10(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    info = load_dataset("cifar10", root=str(tmp_path))
    assert isinstance(info, DatasetInfo)
    assert (info.name, info.num_classes, info.input_size) == ("cifar10", 10, 32)
    assert len(info.train) == 15 and len(info.test) == 4
    _check_sample(info.train, 32, 10)
    _check_sample(info.test, 32, 10)
    assert info.test[0][1] == 9
    pickle.dumps(info.train)  # transforms must pickle for DataLoader workers under spawn


def test_cifar10_test_split_is_exact_scaling(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    info = load_dataset("cifar10", root=str(tmp_path), augment=False)
    raw = pickle.load(open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb"))["data"][0]
    expected = torch.from_numpy(raw.reshape(3, 32, 32).astype(np.float32) / 255) * 2 - 1
    assert torch.allclose(info.test[0][0], expected, atol=1e-6)
    # augment=False: train split is deterministic too
    assert torch.equal(info.train[0][0], info.train[0][0])


def test_cifar100(tmp_path: Path) -> None:
    write_cifar100(tmp_path)
    info = load_dataset("cifar100", root=str(tmp_path))
    assert (info.num_classes, info.input_size) == (100, 32)
    assert len(info.train) == 7 and len(info.test) == 5
    _check_sample(info.train, 32, 100)
    assert info.train[0][1] == 99  # fine labels, not coarse


# ---------------------------------------------------------------- GTSRB
def _ppm(path: Path, w: int, h: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def write_gtsrb(root: Path, n_classes: int = 43) -> None:
    base = root / "gtsrb"
    for c in range(n_classes):  # torchvision numbers classes by sorted folder, so all 43 exist
        _ppm(base / "GTSRB" / "Training" / f"{c:05d}" / f"00000_{c:05d}.ppm", 29 + c % 5, 31 + c % 7)
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for i, (w, h, c) in enumerate([(45, 38, 0), (27, 33, 42), (61, 50, 7)]):
        _ppm(base / "GTSRB" / "Final_Test" / "Images" / f"{i:05d}.ppm", w, h)
        rows.append(f"{i:05d}.ppm;{w};{h};5;5;{w - 5};{h - 5};{c}")
    (base / "GT-final_test.csv").write_text("\n".join(rows) + "\n")


def test_gtsrb(tmp_path: Path) -> None:
    write_gtsrb(tmp_path)
    info = load_dataset("gtsrb", root=str(tmp_path))
    assert (info.num_classes, info.input_size) == (43, 32)
    assert len(info.train) == 43 and len(info.test) == 3
    _check_sample(info.train, 32, 43)
    _check_sample(info.test, 32, 43)
    assert [info.test[i][1] for i in range(3)] == [0, 42, 7]
    assert info.train[42][1] == 42


def test_gtsrb_missing_class_folder_fails(tmp_path: Path) -> None:
    write_gtsrb(tmp_path, n_classes=40)
    with pytest.raises(ValueError, match="40 class folders"):
        load_dataset("gtsrb", root=str(tmp_path))


# ---------------------------------------------------------------- ImageNet-10
def write_imagenet10(root: Path, n_classes: int = 10) -> None:
    for split in ("train", "val"):
        for c in range(n_classes):
            p = root / split / f"n0{c:07d}" / f"{split}_{c}.JPEG"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (40 + c, 57, 3), dtype=np.uint8)).save(p, format="JPEG")


def test_imagenet10(tmp_path: Path) -> None:
    write_imagenet10(tmp_path)
    info = load_dataset("imagenet10", root=str(tmp_path))
    assert (info.num_classes, info.input_size) == (10, 224)
    assert len(info.train) == 10 and len(info.test) == 10
    _check_sample(info.train, 224, 10)
    _check_sample(info.test, 224, 10)


def test_imagenet10_mismatched_classes_fail(tmp_path: Path) -> None:
    write_imagenet10(tmp_path)
    (tmp_path / "val" / "n00000009").rename(tmp_path / "val" / "n99999999")  # a class train lacks
    with pytest.raises(ValueError, match="class folders differ"):
        load_dataset("imagenet10", root=str(tmp_path))


# ---------------------------------------------------------------- digits
def test_digits() -> None:
    info = load_dataset("digits")
    assert (info.num_classes, info.input_size) == (10, 32)
    assert len(info.train) + len(info.test) == 1797
    assert len(info.test) == 450 and len(info.train) == 1347
    x, y = info.train.tensors
    assert x.shape == (1347, 3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.min() == -1
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    assert set(y.tolist()) == set(range(10)) and set(info.test.tensors[1].tolist()) == set(range(10))
    again = load_dataset("digits", augment=False)
    for a, b in zip(info.train.tensors + info.test.tensors, again.train.tensors + again.test.tensors):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- errors
def test_unknown_name_lists_choices() -> None:
    assert set(DATASETS.names()) == {"cifar10", "cifar100", "gtsrb", "imagenet10", "digits"}
    with pytest.raises(ValueError, match="mnist") as e:
        load_dataset("mnist")
    for name in DATASETS.names():
        assert name in str(e.value)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "gtsrb", "imagenet10"])
def test_missing_root(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="root"):
        load_dataset(name, root=None)
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as e:
        load_dataset(name, root=str(missing))
    assert str(missing) in str(e.value)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "gtsrb"])
def test_empty_root_names_expected_files_and_download(tmp_path: Path, name: str) -> None:
    with pytest.raises(FileNotFoundError) as e:
        load_dataset(name, root=str(tmp_path))
    msg = str(e.value)
    assert str(tmp_path) in msg and "download=True" in msg and "missing" in msg


def test_cifar_missing_one_file(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_dataset("cifar10", root=str(tmp_path))


def test_cifar_garbage_file(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="cifar-10-batches-py"):
        load_dataset("cifar10", root=str(tmp_path))


def test_cifar100_files_under_cifar10_name_fail(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    d = tmp_path / "cifar-10-batches-py"
    _pickle(d / "test_batch", {"data": _images(2), "labels": [55, 3]})
    with pytest.raises(ValueError, match="outside 0..9"):
        load_dataset("cifar10", root=str(tmp_path))


def test_imagenet10_without_splits(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match="val/"):
        load_dataset("imagenet10", root=str(tmp_path))


# ---------------------------------------------------------------- loaders
def _order(seed: int | None) -> list[int]:
    ds = torch.utils.data.TensorDataset(torch.arange(100))
    return torch.cat([b[0] for b in make_loader(ds, 16, shuffle=True, seed=seed)]).tolist()


def test_make_loader_seeded_order() -> None:
    assert _order(1) == _order(1)
    assert _order(1) != _order(2)
    assert sorted(_order(1)) == list(range(100))
    ds = torch.utils.data.TensorDataset(torch.arange(10))
    assert torch.cat([b[0] for b in make_loader(ds, 3, shuffle=False)]).tolist() == list(range(10))
    assert len(make_loader(ds, 3, shuffle=False, drop_last=True)) == 3


def test_epoch_reseeding_reproduces_order() -> None:
    ds = torch.utils.data.TensorDataset(torch.arange(50))
    loader = make_loader(ds, 50, shuffle=True, seed=0)

    def epoch_order(epoch: int) -> list[int]:
        loader.generator.manual_seed(epoch_seed(0, epoch))
        return next(iter(loader))[0].tolist()

    assert epoch_order(3) == epoch_order(3) and epoch_order(3) != epoch_order(4)
    assert epoch_seed(5, 1) == epoch_seed(5, 1) != epoch_seed(5, 2)
    assert 0 <= epoch_seed(2**40, 10**6) < 2**63
    with pytest.raises(ValueError):
        epoch_seed(-1, 0)


def test_no_ray_or_mlflow() -> None:
    # A fresh interpreter, so modules imported by other tests do not count.
    code = "import sys, nf_core.data; print(sorted(m for m in ('ray', 'mlflow') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1]
    )
    assert out.stdout.strip() == "[]"
