"""Pure tensor functions on images and labels: random shift, flip and resized crop, resizing, holdout.

Everything random takes an explicit `torch.Generator`; nothing here reads global random state.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from typing import Sequence

import torch
import torch.nn.functional as F


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
