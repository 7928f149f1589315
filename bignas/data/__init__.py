"""Datasets: the embedded mnist5k, CIFAR-10/100 python batches and ImageFolder trees.

`load_dataset(spec)` returns a `Dataset` with `train`, `val` and `test` splits. `val` is held out
of the training images (architecture search reads it); `test` is the dataset's own test set, for
final reports only. Batches are float32 N×3×H×W, normalised, at the dataset's native resolution;
`resize_batch` brings them to the resolution of the child being trained.

Everything random is a pure function of explicit integers: the training order of an epoch depends
on (seed, epoch), the augmentation of a batch on (seed, epoch, step, rank), so training resumed
at (epoch, step) sees exactly the batches an uninterrupted run would have seen.

This package's `__init__` only dispatches a spec to its family module (`mnist5k`, `cifar`,
`imagefolder`) and re-exports the public names.
"""

from __future__ import annotations

from pathlib import Path

from bignas.data.augment import random_flip, random_shift, resize_batch
from bignas.data.cifar import FORMATS, load_cifar
from bignas.data.dataset import CALIBRATION_SEED, VAL_FRACTION, Dataset
from bignas.data.errors import DataError
from bignas.data.imagefolder import load_imagefolder
from bignas.data.mnist5k import MNIST5K_FILE, load_mnist5k
from bignas.data.safe_pickle import safe_unpickle
from bignas.data.splits import TensorSplit

__all__ = [
    "CALIBRATION_SEED",
    "DataError",
    "Dataset",
    "SPECS",
    "TensorSplit",
    "VAL_FRACTION",
    "load_dataset",
    "random_flip",
    "random_shift",
    "resize_batch",
    "safe_unpickle",
]

SPECS = ("mnist5k", "cifar10:PATH", "cifar100:PATH", "imagefolder:PATH")


def load_dataset(spec: str, *, image_size: int = 224, workers: int = 2) -> Dataset:
    """Load `mnist5k`, `cifar10:PATH`, `cifar100:PATH` or `imagefolder:PATH`.

    `image_size` (the decoded square size) and `workers` (DataLoader processes) apply to
    ImageFolder only; MNIST and CIFAR are held in memory at their native 28 / 32 pixels.
    """
    kind, sep, path = spec.partition(":")
    if kind == "mnist5k" and not sep:
        return load_mnist5k(MNIST5K_FILE, spec)
    if kind in FORMATS and path:
        return load_cifar(FORMATS[kind], Path(path).expanduser(), spec)
    if kind == "imagefolder" and path:
        return load_imagefolder(Path(path).expanduser(), spec, image_size, workers)
    raise DataError(f"unknown data spec {spec!r}: expected one of {', '.join(SPECS)}")
