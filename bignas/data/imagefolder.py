"""ImageFolder trees (train/<class>/..., val/<class>/...) of image files, decoded by DataLoader workers."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.utils.data
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS

from bignas.data.augment import random_resized_crop_box, stratified_holdout
from bignas.data.dataset import VAL_FRACTION, Dataset
from bignas.data.errors import DataError
from bignas.data.splits import Batch, Chunk, Split
from bignas.seeds import derive_seed

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
EVAL_CROP = 0.875  # ImageFolder eval: resize the short side to size / 0.875, centre crop (224 of 256)
_EXTENSIONS = ", ".join(IMG_EXTENSIONS)
# How a worker's traceback names DataError: its module now, bignas.data before the split, bare.
_WORKER_ERROR_PREFIXES = (f"{DataError.__module__}.DataError: ", "bignas.data.DataError: ", "DataError: ")


def load_imagefolder(root: Path, spec: str, image_size: int, workers: int) -> Dataset:
    if image_size < 1 or workers < 0:
        raise DataError(f"need image_size >= 1 and workers >= 0, got {image_size}, {workers}")
    if not root.is_dir():
        raise DataError(f"{root}: no such directory (expected an ImageFolder tree with train/ and val/)")
    for sub in ("train", "val"):
        if not (root / sub).is_dir():
            raise DataError(
                f"{root}: missing {sub}/ folder"
                f" (expected one folder per class under {root / 'train'} and {root / 'val'})"
            )
    classes = [d.name for d in _class_folders(root / "train")]
    if not classes:
        raise DataError(f"{root / 'train'}: no class folders (expected one folder of images per class)")
    train_files, train_labels = _scan_images(root / "train", classes, every_class=True)
    test_files, test_labels = _scan_images(root / "val", classes, every_class=False)
    keys = [f.relative_to(root / "train").as_posix() for f in train_files]
    keep, held = stratified_holdout(keys, train_labels, VAL_FRACTION)

    labels = torch.tensor(train_labels, dtype=torch.long)

    def split(files: list[Path], split_labels: torch.Tensor) -> FolderSplit:
        return FolderSplit(
            files, split_labels, IMAGENET_MEAN, IMAGENET_STD, image_size=image_size, workers=workers
        )

    return Dataset(
        name="imagefolder",
        spec=spec,
        num_classes=len(classes),
        classes=tuple(classes),
        resolution=image_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        train=split([train_files[i] for i in keep], labels[keep]),
        val=split([train_files[i] for i in held], labels[held]),
        test=split(test_files, torch.tensor(test_labels, dtype=torch.long)),
    )


def _scan_images(folder: Path, classes: list[str], every_class: bool) -> tuple[list[Path], list[int]]:
    """Image files under folder/<class>/ (recursively, sorted) and their labels."""
    files, labels = [], []
    for sub in _class_folders(folder):
        if sub.name not in classes:
            raise DataError(f"{sub}: class {sub.name!r} has no folder in {folder.parent / 'train'}")
    for label, name in enumerate(classes):
        found = sorted(p for p in (folder / name).rglob("*") if p.suffix.lower() in IMG_EXTENSIONS)
        found = [p for p in found if p.is_file()]
        if every_class and not found:
            raise DataError(f"{folder / name}: no images (expected files ending in {_EXTENSIONS})")
        files += found
        labels += [label] * len(found)
    if not files:
        raise DataError(f"{folder}: no images (expected class folders of files ending in {_EXTENSIONS})")
    return files, labels


def _class_folders(folder: Path) -> list[Path]:
    # Hidden folders (.ipynb_checkpoints, .git, ...) are not classes.
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def read_image(path: Path) -> torch.Tensor:
    """Decode an image file to a uint8 3×H×W RGB tensor."""
    try:
        with Image.open(path) as image:
            return TF.pil_to_tensor(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot decode image ({e})") from e


class FolderSplit(Split):
    """A split of image files, decoded by DataLoader workers one whole batch per task.

    Training: random resized crop (scale 0.08-1, aspect 3/4-4/3) to `image_size` and a random
    horizontal flip, drawn from the batch's own generator, so the result does not depend on the
    number of workers. Evaluation: resize the short side to image_size / 0.875, centre crop.
    """

    def __init__(
        self,
        files: list[Path],
        labels: torch.Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        image_size: int,
        workers: int,
    ):
        super().__init__(labels, mean, std)
        self.files = files
        self.image_size = image_size
        self.workers = workers

    def content(self) -> Iterator[bytes]:
        """Each file's class folder, name and size: a file added, removed, renamed or rewritten
        to another size shows, the folder's own location does not."""
        for f in self.files:
            yield f"{f.parent.name}/{f.name}:{f.stat().st_size}\n".encode()

    def _uint8_batches(self, chunks: list[Chunk]) -> Iterator[Batch]:
        tasks = _FolderBatches(self.files, self.labels, chunks, self.image_size)
        try:
            yield from torch.utils.data.DataLoader(tasks, batch_size=None, num_workers=self.workers)
        except DataError as e:
            # A worker's error arrives wrapped in its traceback; its own message is the last line.
            message = str(e).strip().splitlines()[-1]
            for prefix in _WORKER_ERROR_PREFIXES:
                message = message.removeprefix(prefix)
            raise DataError(message) from e


class _FolderBatches(torch.utils.data.Dataset):
    def __init__(self, files: list[Path], labels: torch.Tensor, chunks: list[Chunk], image_size: int):
        self.files, self.labels, self.chunks, self.image_size = files, labels, chunks, image_size

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> Batch:
        idx, seed, offset, _ = self.chunks[i]
        images = []
        for position, j in enumerate(idx.tolist(), start=offset):
            image = read_image(self.files[j])
            # One generator per image, keyed by its place in the global batch (see Chunk).
            gen = None if seed is None else torch.Generator().manual_seed(derive_seed(seed, position))
            if gen is None:
                image = TF.resize(image, [round(self.image_size / EVAL_CROP)], antialias=True)
                image = TF.center_crop(image, [self.image_size, self.image_size])
            else:
                top, left, h, w = random_resized_crop_box(image.shape[-2], image.shape[-1], gen)
                image = TF.resized_crop(image, top, left, h, w, [self.image_size] * 2, antialias=True)
                if torch.rand((), generator=gen) < 0.5:
                    image = TF.horizontal_flip(image)
            images.append(image)
        return torch.stack(images), self.labels[idx]
