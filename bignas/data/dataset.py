"""`Dataset`: a loaded dataset's three splits, its input description and BN calibration batches."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from bignas.data.augment import resize_batch
from bignas.data.errors import DataError
from bignas.data.splits import Chunk, Split
from bignas.seeds import generator as _generator

VAL_FRACTION = 0.1  # of the training images held out as `val` (5,000 of CIFAR's 50,000)
CALIBRATION_SEED = 0


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: three splits plus what a model needs to know about its input."""

    name: str  # "mnist5k", "cifar10", "cifar100" or "imagefolder"
    spec: str  # the spec it was loaded from
    num_classes: int
    classes: tuple[str, ...]  # class names, by label
    resolution: int  # native (square) resolution of the batches
    mean: tuple[float, float, float]  # per-channel normalisation applied to every batch
    std: tuple[float, float, float]
    train: Split
    val: Split
    test: Split

    def split(self, name: str) -> Split:
        """The split called `name` ("train", "val" or "test")."""
        if name not in ("train", "val", "test"):
            raise DataError(f"unknown split {name!r}: expected train, val or test")
        return getattr(self, name)

    def calibration_batches(
        self, n_images: int, batch_size: int, resolution: int
    ) -> Iterator[torch.Tensor]:
        """A fixed subset of the training split for BN recalibration: the same `n_images` images
        in the same order on every call, without augmentation, resized to `resolution`."""
        if not 0 < n_images <= len(self.train):
            raise DataError(
                f"n_images must be in 1..{len(self.train)} (training images of {self.spec}), got {n_images}"
            )
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        order = torch.randperm(len(self.train), generator=_generator("calibration", CALIBRATION_SEED))
        chunks = [Chunk(idx, None) for idx in order[:n_images].split(batch_size)]
        return (resize_batch(images, resolution) for images, _ in self.train._batches(chunks))

    @functools.cached_property
    def fingerprint(self) -> str:
        """A digest of every split's images and labels: a changed dataset behind the same spec
        is refused on resume and never reuses cached accuracies."""
        h = hashlib.sha256()
        for name in ("train", "val", "test"):
            split = self.split(name)
            h.update(name.encode())
            h.update(split.labels.contiguous().numpy().tobytes())
            for part in split.content():
                h.update(part)
        return h.hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (for run metadata and model cards)."""
        return {
            "name": self.name,
            "spec": self.spec,
            "num_classes": self.num_classes,
            "resolution": self.resolution,
            "mean": list(self.mean),
            "std": list(self.std),
            "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
            "fingerprint": self.fingerprint,
        }
