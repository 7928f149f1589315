"""ImageFolder trees (train/<class>/..., val/<class>/...) of image files, decoded by DataLoader workers.

Every image is decoded to 8-bit RGB. An image that PIL would convert to RGB silently wrong is
refused, naming the file, when the tree is opened: modes with more than 8 bits a channel or no
exact RGB conversion (16/32-bit integer, float, CMYK, LAB, ...) are known from the header alone;
an alpha channel or a transparency key is decoded and refused only when some pixel is not fully
opaque (dropping the alpha shows the colour stored under it, not the image as seen). The same
check runs again at each decode, in case a file changed after the tree was opened.
"""

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
from bignas.space import MAX_RESOLUTION

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
EVAL_CROP = 0.875  # ImageFolder eval: resize the short side to size / 0.875, centre crop (224 of 256)
_EXTENSIONS = ", ".join(IMG_EXTENSIONS)
# How a worker's traceback names DataError: its module now, bignas.data before the split, bare.
_WORKER_ERROR_PREFIXES = (f"{DataError.__module__}.DataError: ", "bignas.data.DataError: ", "DataError: ")


def load_imagefolder(root: Path, spec: str, image_size: int, workers: int) -> Dataset:
    if image_size < 1 or workers < 0:
        raise DataError(f"need image_size >= 1 and workers >= 0, got {image_size}, {workers}")
    if image_size > MAX_RESOLUTION:  # each decoded image is 3 × size² bytes, before any batch
        raise DataError(f"{spec}: image_size {image_size} is above the largest resolution, {MAX_RESOLUTION}")
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
    _check_images(root, train_files + test_files, workers)
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


# Modes whose conversion to RGB is exact (given opaque pixels). torchvision's pil_loader
# converts any mode, and the rest come out wrong: 16-bit grayscale PNGs saturate to white.
_EXACT_MODES = frozenset({"1", "L", "P", "RGB", "RGBX", "YCbCr"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA"})
_SAVE_AS = "save it as 8-bit RGB or grayscale"
# A tree of more images than this is checked in `workers` processes (header reads cost ~50-100 us each).
PARALLEL_CHECK_MIN, _CHECK_CHUNK = 20_000, 2048
_LISTED = 10  # refused images named in one message


def _mode_problem(image: Image.Image) -> str | None:
    """Why `image` cannot be converted to RGB exactly, from its header alone; None if it can."""
    mode = image.mode
    if mode in _EXACT_MODES or mode in _ALPHA_MODES:
        return None
    if mode.startswith("I"):
        return (f"mode {mode!r} has 16- or 32-bit integer pixels: converting to RGB clips every value "
                f"above 255 to white; {_SAVE_AS}")
    if mode == "F":
        return f"mode 'F' has floating-point pixels: converting to RGB clips them to 0..255; {_SAVE_AS}"
    if mode == "CMYK":
        return ("a CMYK image: PIL converts it to RGB without its colour profile (Adobe CMYK JPEGs come "
                "out inverted); convert it to RGB with a colour-managed tool")
    return f"mode {mode!r} has no exact conversion to RGB; {_SAVE_AS}"


def _opaque_rgb(image: Image.Image) -> Image.Image:
    """`image` as RGB; an image with alpha or a transparency key only when every pixel is opaque."""
    if image.mode not in _ALPHA_MODES and "transparency" not in image.info:
        return image.convert("RGB")
    rgba = image.convert("RGBA")  # applies a palette's or a colour key's transparency
    lowest = rgba.getchannel("A").getextrema()[0]
    if lowest < 255:
        kind = "a transparency key" if "transparency" in image.info else "an alpha channel"
        raise _Refused(f"mode {image.mode!r} with {kind} and pixels that are not opaque (alpha down to "
                       f"{lowest}): converting to RGB would show the colour stored under them, not the "
                       f"image as seen; flatten it onto a background and save it as RGB")
    return rgba.convert("RGB")


class _Refused(Exception):
    """An image that decodes but would convert to RGB wrongly (the message says why)."""


def read_image(path: Path) -> torch.Tensor:
    """Decode an image file to a uint8 3×H×W RGB tensor; refuse one that converts to RGB wrongly."""
    try:
        with Image.open(path) as image:
            problem = _mode_problem(image)
            if problem is None:
                return TF.pil_to_tensor(_opaque_rgb(image))
    except _Refused as e:
        problem = str(e)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot decode image ({e})") from e
    raise DataError(f"{path}: {problem}")


def _image_problem(path: Path) -> str | None:
    """What `read_image` would refuse in `path`, as cheaply as possible: the header, and the pixels
    only of an image with alpha or a transparency key. None when it decodes to RGB exactly."""
    try:
        with Image.open(path) as image:  # lazy: reads the header only
            problem = _mode_problem(image)
            if problem is None and (image.mode in _ALPHA_MODES or "transparency" in image.info):
                _opaque_rgb(image)
            return None if problem is None else f"{path}: {problem}"
    except _Refused as e:
        return f"{path}: {e}"
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        return f"{path}: cannot decode image ({e})"


class _ImageChecks(torch.utils.data.Dataset):
    """One chunk of files per task: the problems `_image_problem` finds in it."""

    def __init__(self, chunks: list[list[Path]]):
        self.chunks = chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> list[str]:
        return [p for f in self.chunks[i] if (p := _image_problem(f)) is not None]


def _check_images(root: Path, files: list[Path], workers: int) -> None:
    """Refuse the tree if any image would not decode to RGB exactly, naming the first few."""
    if workers > 0 and len(files) >= PARALLEL_CHECK_MIN:
        chunks = [files[i : i + _CHECK_CHUNK] for i in range(0, len(files), _CHECK_CHUNK)]
        loader = torch.utils.data.DataLoader(_ImageChecks(chunks), batch_size=None,
                                             num_workers=min(workers, len(chunks)))
        problems = [p for part in loader for p in part]
    else:
        problems = [p for f in files if (p := _image_problem(f)) is not None]
    if len(problems) == 1:
        raise DataError(problems[0])
    if problems:
        more = len(problems) - _LISTED
        raise DataError(f"{root}: {len(problems)} images cannot be decoded to RGB as they are:\n  "
                        + "\n  ".join(problems[:_LISTED]) + (f"\n  ... and {more} more" if more > 0 else ""))


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
