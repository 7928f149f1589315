"""The embedded mnist5k dataset: read and check `mnist5k.npz` (see README.md beside it)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bignas.data.dataset import Dataset
from bignas.data.errors import DataError
from bignas.data.splits import TensorSplit

MNIST5K_FILE = Path(__file__).with_name("mnist5k.npz")

# Per-channel statistics of the training images, the values commonly used for this dataset.
MNIST_MEAN, MNIST_STD = (0.1307,) * 3, (0.3081,) * 3


def load_mnist5k(path: Path, spec: str) -> Dataset:
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: cannot read the embedded mnist5k file ({e})") from e
    splits = {}
    with npz:
        for name in ("train", "val", "test"):
            images = _npz_array(npz, path, f"{name}_images", np.uint8, 3)
            labels = _npz_array(npz, path, f"{name}_labels", np.uint8, 1)
            if images.shape[1:] != (28, 28) or len(labels) != len(images) or labels.max(initial=0) > 9:
                raise DataError(
                    f"{path}: fields {name}_images / {name}_labels must be N×28×28 images and N labels 0-9"
                )
            grey = torch.from_numpy(images).unsqueeze(1)
            # Grayscale repeated to 3 channels so the 3-input-channel search spaces apply unchanged.
            splits[name] = TensorSplit(
                grey.repeat(1, 3, 1, 1),
                torch.from_numpy(labels).long(),
                MNIST_MEAN,
                MNIST_STD,
                pad=2,  # digits are centred with a 4-px margin: shifts of up to 2 px keep them whole
                flip=False,  # a mirrored digit is not the same digit
            )
    classes = tuple(str(d) for d in range(10))
    return Dataset("mnist5k", spec, 10, classes, 28, MNIST_MEAN, MNIST_STD, **splits)


def _npz_array(npz: Any, path: Path, field: str, dtype: type, ndim: int) -> np.ndarray:
    if field not in npz.files:
        raise DataError(f"{path}: missing field {field!r}")
    try:
        array = npz[field]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: field {field!r} is unreadable ({e})") from e
    if array.dtype != dtype or array.ndim != ndim:
        raise DataError(
            f"{path}: field {field!r} must be {np.dtype(dtype)} with {ndim} dims, got {array.dtype} {array.shape}"
        )
    return array
