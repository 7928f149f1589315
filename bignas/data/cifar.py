"""CIFAR-10 and CIFAR-100 from the official python batch files (read with `safe_unpickle`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bignas.data.augment import stratified_holdout
from bignas.data.dataset import VAL_FRACTION, Dataset
from bignas.data.errors import DataError
from bignas.data.safe_pickle import safe_unpickle
from bignas.data.splits import TensorSplit

# Per-channel statistics of the training images, the values commonly used for these datasets.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


@dataclass(frozen=True)
class _CifarFormat:
    name: str
    folder: str  # the folder the official archive unpacks to
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: bytes
    num_classes: int
    meta_file: str
    names_key: bytes
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


FORMATS = {
    "cifar10": _CifarFormat(
        name="cifar10",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        label_key=b"labels",
        num_classes=10,
        meta_file="batches.meta",
        names_key=b"label_names",
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
    ),
    "cifar100": _CifarFormat(
        name="cifar100",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        label_key=b"fine_labels",  # the 100 classes; "coarse_labels" are the 20 superclasses
        num_classes=100,
        meta_file="meta",
        names_key=b"fine_label_names",
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
    ),
}


def load_cifar(fmt: _CifarFormat, root: Path, spec: str) -> Dataset:
    folder = _find_cifar_folder(fmt, root)
    train_images, train_labels = _read_cifar_files(fmt, [folder / f for f in fmt.train_files])
    test_images, test_labels = _read_cifar_files(fmt, [folder / f for f in fmt.test_files])
    keys = [str(i) for i in range(len(train_labels))]
    keep, held = stratified_holdout(keys, train_labels.tolist(), VAL_FRACTION)

    def split(images: torch.Tensor, labels: torch.Tensor) -> TensorSplit:
        return TensorSplit(images, labels, fmt.mean, fmt.std, pad=4, flip=True)

    return Dataset(
        name=fmt.name,
        spec=spec,
        num_classes=fmt.num_classes,
        classes=_cifar_class_names(fmt, folder / fmt.meta_file),
        resolution=32,
        mean=fmt.mean,
        std=fmt.std,
        train=split(train_images[keep], train_labels[keep]),
        val=split(train_images[held], train_labels[held]),
        test=split(test_images, test_labels),
    )


def _find_cifar_folder(fmt: _CifarFormat, root: Path) -> Path:
    if not root.is_dir():
        raise DataError(f"{root}: no such directory (expected the {fmt.name} python batch files)")
    needed = fmt.train_files + fmt.test_files
    for folder in (root, root / fmt.folder):
        if all((folder / f).is_file() for f in needed):
            return folder
    raise DataError(
        f"{root}: {fmt.name} batch files not found"
        f" (expected {', '.join(needed)} in {root} or in {root / fmt.folder})"
    )


def _read_cifar_files(fmt: _CifarFormat, paths: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for path in paths:
        batch = safe_unpickle(path)
        if not isinstance(batch, dict):
            raise DataError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
        data, label_list = _field(batch, b"data", path), _field(batch, fmt.label_key, path)
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.shape[1:] == (3072,)):
            found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise DataError(f"{path}: field 'data' must be a uint8 array of shape N×3072, got {found}")
        images.append(data.reshape(-1, 3, 32, 32))  # rows are 1024 red, 1024 green, 1024 blue values
        labels.append(_check_labels(label_list, len(data), fmt, path))
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def _check_labels(labels: Any, n: int, fmt: _CifarFormat, path: Path) -> np.ndarray:
    field = fmt.label_key.decode()
    try:
        array = np.asarray(labels)
    except (ValueError, TypeError):  # ragged or odd objects
        array = None
    if array is None or array.shape != (n,) or not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{path}: field {field!r} must be a list of {n} integer labels")
    if n and not 0 <= array.min() <= array.max() < fmt.num_classes:
        raise DataError(f"{path}: field {field!r} has labels outside 0..{fmt.num_classes - 1}")
    return array.astype(np.int64)


def _cifar_class_names(fmt: _CifarFormat, meta: Path) -> tuple[str, ...]:
    """Class names from the archive's meta file; label numbers if it is absent."""
    if not meta.is_file():
        return tuple(str(i) for i in range(fmt.num_classes))
    content = safe_unpickle(meta)
    names = _field(content, fmt.names_key, meta) if isinstance(content, dict) else None
    if not isinstance(names, list) or len(names) != fmt.num_classes:
        raise DataError(f"{meta}: field {fmt.names_key.decode()!r} must list {fmt.num_classes} class names")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def _field(batch: dict, key: bytes, path: Path) -> Any:
    # The official files are Python 2 pickles whose keys load as bytes; accept str keys too.
    for k in (key, key.decode()):
        if k in batch:
            return batch[k]
    raise DataError(f"{path}: missing field {key.decode()!r}")
