"""The deterministic batching contract: a `Split` cuts an epoch into `Chunk`s and yields `Batch`es.

The order of an epoch is a pure function of (seed, epoch) and the augmentation of a batch of
(seed, epoch, step), so a resumed run sees exactly the batches an uninterrupted one would have.
`TensorSplit` is the in-memory implementation (MNIST, CIFAR).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterator, NamedTuple, Sequence

import torch

from bignas.data.augment import random_flip, random_shift
from bignas.data.errors import DataError
from bignas.seeds import derive_seed
from bignas.seeds import generator as _generator

Batch = tuple[torch.Tensor, torch.Tensor]


class Chunk(NamedTuple):
    """The images of one rank's batch and how to augment them.

    Augmentation is drawn for the whole global batch of `total` images from `seed` (None: no
    augmentation) and this rank keeps positions offset .. offset + len(indices), so the images a
    data-parallel job sees do not depend on how many processes share the batch.
    """

    indices: torch.Tensor
    seed: int | None
    offset: int = 0
    total: int = 0


class Split(ABC):
    """One split of a dataset: labels in memory, images produced batch by batch."""

    def __init__(self, labels: torch.Tensor, mean: Sequence[float], std: Sequence[float]):
        self.labels = labels
        self.mean, self.std = tuple(mean), tuple(std)
        mean_t, std_t = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in (mean, std))
        # (x / 255 - mean) / std, as one multiply and one subtract
        self._scale, self._shift = 1 / (255 * std_t), mean_t / std_t

    def __len__(self) -> int:
        return len(self.labels)

    @abstractmethod
    def content(self) -> Iterator[bytes]:
        """What identifies this split's images (see `Dataset.fingerprint`), labels excluded."""

    def steps_per_epoch(self, batch_size: int, world_size: int = 1) -> int:
        """Number of full global batches (`batch_size` per rank) in one epoch."""
        return len(self) // (batch_size * world_size)

    def train_batches(
        self,
        batch_size: int,
        *,
        seed: int,
        epoch: int,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> Iterator[Batch]:
        """Shuffled, augmented batches of one epoch for one rank, from `start_step` on.

        All ranks draw the same permutation (from seed and epoch); each global batch of
        batch_size × world_size images is cut into per-rank slices. The last partial batch is dropped.
        """
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise DataError(
                f"need batch_size >= 1 and 0 <= rank < world_size, got {batch_size}, {rank}, {world_size}"
            )
        steps = self.steps_per_epoch(batch_size, world_size)
        if steps == 0:
            raise DataError(
                f"the split has {len(self)} images, fewer than one batch of {batch_size} × {world_size}"
            )
        if not 0 <= start_step <= steps:
            raise DataError(f"start_step {start_step} outside 0..{steps} (steps per epoch)")
        order = torch.randperm(len(self), generator=_generator("order", seed, epoch))
        chunks = []
        for step in range(start_step, steps):
            first = (step * world_size + rank) * batch_size
            seed_of_batch = derive_seed("augment", seed, epoch, step)
            chunks.append(Chunk(order[first : first + batch_size], seed_of_batch, rank * batch_size,
                                world_size * batch_size))
        return self._batches(chunks)

    def eval_batches(self, batch_size: int, images: int | None = None) -> Iterator[Batch]:
        """Every image once, in order, without augmentation; the last batch may be smaller. With
        `images`, only that many (`subset`): a low-fidelity estimate."""
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        return self._batches([Chunk(idx, None) for idx in self.subset(images).split(batch_size)])

    def subset(self, images: int | None = None) -> torch.Tensor:
        """Indices of a fixed subset of `images` images, in order: the first of one seeded permutation,
        so a smaller subset is part of every larger one. None (or at least the split's size): all."""
        if images is None or images >= len(self):
            return torch.arange(len(self))
        if images < 1:
            raise DataError(f"a subset needs at least 1 image, got {images}")
        return torch.randperm(len(self), generator=_generator("subset", 0))[:images].sort().values

    def _batches(self, chunks: list[Chunk]) -> Iterator[Batch]:
        for images, labels in self._uint8_batches(chunks):
            yield images.float().mul_(self._scale).sub_(self._shift), labels

    @abstractmethod
    def _uint8_batches(self, chunks: list[Chunk]) -> Iterator[Batch]:
        """uint8 N×3×H×W images and int64 labels for each chunk, augmented where it has a seed."""


class TensorSplit(Split):
    """A split held in memory as one uint8 tensor; batches are cut and augmented with tensor ops.

    Training augmentation: a random shift of up to `pad` pixels (zero padding, then a random crop
    of the original size) and, if `flip`, a random horizontal flip.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        pad: int,
        flip: bool,
    ):
        super().__init__(labels, mean, std)
        self.images = images
        self.pad = pad
        self.flip = flip

    def content(self) -> Iterator[bytes]:
        yield self.images.contiguous().numpy().tobytes()

    def _uint8_batches(self, chunks: list[Chunk]) -> Iterator[Batch]:
        for idx, seed, offset, total in chunks:
            images = self.images[idx]
            if seed is not None:
                gen = torch.Generator().manual_seed(seed)
                keep = slice(offset, offset + len(idx))
                images = random_shift(images, self.pad, gen, total, keep)
                if self.flip:
                    images = random_flip(images, gen, total, keep)
            yield images, self.labels[idx]
