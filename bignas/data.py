"""Datasets: the embedded mnist5k, CIFAR-10/100 python batches and ImageFolder trees.

`load_dataset(spec)` returns a `Dataset` with `train`, `val` and `test` splits. `val` is held out
of the training images (architecture search reads it); `test` is the dataset's own test set, for
final reports only. Batches are float32 N×3×H×W, normalised, at the dataset's native resolution;
`resize_batch` brings them to the resolution of the child being trained.

Everything random is a pure function of explicit integers: the training order of an epoch depends
on (seed, epoch), the augmentation of a batch on (seed, epoch, step, rank), so training resumed
at (epoch, step) sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import codecs
import hashlib
import math
import pickle
import zipfile
from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.data
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS

from bignas.errors import BignasError
from bignas.seeds import derive_seed
from bignas.seeds import generator as _generator

try:
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer

MNIST5K_FILE = Path(__file__).with_name("data") / "mnist5k.npz"
SPECS = ("mnist5k", "cifar10:PATH", "cifar100:PATH", "imagefolder:PATH")

# Per-channel statistics of the training images, the values commonly used for these datasets.
MNIST_MEAN, MNIST_STD = (0.1307,) * 3, (0.3081,) * 3
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

VAL_FRACTION = 0.1  # of the training images held out as `val` (5,000 of CIFAR's 50,000)
EVAL_CROP = 0.875  # ImageFolder eval: resize the short side to size / 0.875, centre crop (224 of 256)
CALIBRATION_SEED = 0
_EXTENSIONS = ", ".join(IMG_EXTENSIONS)

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


class DataError(BignasError):
    """A dataset spec, path or file that cannot be used; the message names the path."""


# ---------------------------------------------------------------------------------------- splits


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
            raise ValueError(
                f"need batch_size >= 1 and 0 <= rank < world_size, got {batch_size}, {rank}, {world_size}"
            )
        steps = self.steps_per_epoch(batch_size, world_size)
        if steps == 0:
            raise ValueError(
                f"the split has {len(self)} images, fewer than one batch of {batch_size} × {world_size}"
            )
        if not 0 <= start_step <= steps:
            raise ValueError(f"start_step {start_step} outside 0..{steps} (steps per epoch)")
        order = torch.randperm(len(self), generator=_generator("order", seed, epoch))
        chunks = []
        for step in range(start_step, steps):
            first = (step * world_size + rank) * batch_size
            seed_of_batch = derive_seed("augment", seed, epoch, step)
            chunks.append(Chunk(order[first : first + batch_size], seed_of_batch, rank * batch_size,
                                world_size * batch_size))
        return self._batches(chunks)

    def eval_batches(self, batch_size: int) -> Iterator[Batch]:
        """Every image once, in order, without augmentation; the last batch may be smaller."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return self._batches([Chunk(idx, None) for idx in torch.arange(len(self)).split(batch_size)])

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

    def _uint8_batches(self, chunks: list[Chunk]) -> Iterator[Batch]:
        tasks = _FolderBatches(self.files, self.labels, chunks, self.image_size)
        try:
            yield from torch.utils.data.DataLoader(tasks, batch_size=None, num_workers=self.workers)
        except DataError as e:
            # A worker's error arrives wrapped in its traceback; its own message is the last line.
            message = str(e).strip().splitlines()[-1].removeprefix("bignas.data.DataError: ")
            raise DataError(message.removeprefix("DataError: ")) from e


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


# --------------------------------------------------------------------------------------- dataset


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
            raise ValueError(f"unknown split {name!r}: expected train, val or test")
        return getattr(self, name)

    def calibration_batches(
        self, n_images: int, batch_size: int, resolution: int
    ) -> Iterator[torch.Tensor]:
        """A fixed subset of the training split for BN recalibration: the same `n_images` images
        in the same order on every call, without augmentation, resized to `resolution`."""
        if not 0 < n_images <= len(self.train):
            raise ValueError(
                f"n_images must be in 1..{len(self.train)} (training images of {self.spec}), got {n_images}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        order = torch.randperm(len(self.train), generator=_generator("calibration", CALIBRATION_SEED))
        chunks = [Chunk(idx, None) for idx in order[:n_images].split(batch_size)]
        return (resize_batch(images, resolution) for images, _ in self.train._batches(chunks))

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
        }


def load_dataset(spec: str, *, image_size: int = 224, workers: int = 2) -> Dataset:
    """Load `mnist5k`, `cifar10:PATH`, `cifar100:PATH` or `imagefolder:PATH`.

    `image_size` (the decoded square size) and `workers` (DataLoader processes) apply to
    ImageFolder only; MNIST and CIFAR are held in memory at their native 28 / 32 pixels.
    """
    kind, sep, path = spec.partition(":")
    if kind == "mnist5k" and not sep:
        return _load_mnist5k(MNIST5K_FILE, spec)
    if kind in _CIFAR and path:
        return _load_cifar(_CIFAR[kind], Path(path).expanduser(), spec)
    if kind == "imagefolder" and path:
        return _load_imagefolder(Path(path).expanduser(), spec, image_size, workers)
    raise DataError(f"unknown data spec {spec!r}: expected one of {', '.join(SPECS)}")


# ---------------------------------------------------------------------------------------- mnist5k


def _load_mnist5k(path: Path, spec: str) -> Dataset:
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


# ------------------------------------------------------------------------------------------ CIFAR


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


_CIFAR = {
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


def _load_cifar(fmt: _CifarFormat, root: Path, spec: str) -> Dataset:
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


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Python 3 pickles bytes with protocol < 3 as _codecs.encode(text, "latin1").
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(text, "latin1")


# The only globals CIFAR batch files (and numpy arrays pickled by numpy 1.x or 2.x) refer to.
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Loads plain data and numpy arrays; any other global (os.system, eval, ...) is refused."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused global {module}.{name}: only numpy arrays and plain data are allowed"
            ) from None


def safe_unpickle(path: Path) -> Any:
    """Read a CIFAR-style pickle without executing code from it (see `_RestrictedUnpickler`)."""
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, encoding="bytes").load()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    except Exception as e:  # untrusted bytes: every parse failure is reported the same way
        raise DataError(f"{path}: not a valid CIFAR batch file ({type(e).__name__}: {e})") from e


# ------------------------------------------------------------------------------------ ImageFolder


def _load_imagefolder(root: Path, spec: str, image_size: int, workers: int) -> Dataset:
    if image_size < 1 or workers < 0:
        raise ValueError(f"need image_size >= 1 and workers >= 0, got {image_size}, {workers}")
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


# -------------------------------------------------------------------------------- split and augment


def stratified_holdout(
    keys: Sequence[str], labels: Sequence[int], fraction: float
) -> tuple[list[int], list[int]]:
    """Positions (kept, held_out): in each class, round(fraction × size) items are held out (at
    least one if the class has two or more), those whose keys hash lowest. The choice depends only
    on the keys, so it is fixed forever, whatever the library versions."""
    by_class: dict[int, list[tuple[bytes, int]]] = defaultdict(list)
    for position, (key, label) in enumerate(zip(keys, labels)):
        by_class[label].append((hashlib.sha256(f"holdout:{key}".encode()).digest(), position))
    kept, held = [], []
    for members in by_class.values():
        members.sort()
        n_held = max(1, round(len(members) * fraction)) if len(members) > 1 else 0
        held += [position for _, position in members[:n_held]]
        kept += [position for _, position in members[n_held:]]
    return sorted(kept), sorted(held)


def random_shift(images: torch.Tensor, pad: int, gen: torch.Generator, total: int = 0,
                 keep: slice = slice(None)) -> torch.Tensor:
    """Zero-pad each image by `pad` and crop it back to its size at a random offset (per image).

    With `total`, offsets are drawn for `total` images and the `keep` slice of them is used
    (this rank's part of a global batch)."""
    if pad == 0:
        return images
    n, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad)).flatten(2)
    top = torch.randint(0, 2 * pad + 1, (total or n,), generator=gen)[keep]
    left = torch.randint(0, 2 * pad + 1, (total or n,), generator=gen)[keep]
    # Flat index into each padded image of every output pixel; one gather cuts all the crops.
    width = w + 2 * pad
    index = (top * width + left)[:, None, None] + (torch.arange(h) * width)[:, None] + torch.arange(w)
    return padded.gather(2, index.view(n, 1, h * w).expand(n, c, h * w)).view(n, c, h, w)


def random_flip(images: torch.Tensor, gen: torch.Generator, total: int = 0,
                keep: slice = slice(None)) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2 (`total`, `keep`: as in random_shift)."""
    flip = torch.rand(total or len(images), generator=gen)[keep] < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def random_resized_crop_box(
    height: int, width: int, gen: torch.Generator, scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop covering `scale` of the area at aspect ratio in `ratio`;
    torchvision's RandomResizedCrop parameters, drawn from an explicit generator."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * float(torch.empty(()).uniform_(*scale, generator=gen))
        aspect = math.exp(float(torch.empty(()).uniform_(*log_ratio, generator=gen)))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=gen))
            left = int(torch.randint(0, width - w + 1, (), generator=gen))
            return top, left, h, w
    # Fallback after ten misses: the largest centre crop within the allowed aspect ratios.
    if width / height < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif width / height > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resize_batch(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize a float N×C×H×W batch to resolution × resolution: bilinear, antialiased when shrinking."""
    size = (resolution, resolution)
    if tuple(images.shape[-2:]) == size:
        return images
    shrink = resolution < max(images.shape[-2:])
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrink)
