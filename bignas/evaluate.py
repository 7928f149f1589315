"""Accuracy of one child: extract it, re-estimate its BN statistics, measure top-1; quantize it as
export and search both do."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch
from torch import Tensor, nn

from bignas.data import Dataset, resize_batch
from bignas.nn import Supernet, extract
from bignas.quantize import Calibration, Int8Format, quantize
from bignas.space import Child


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Tensor], device: torch.device) -> None:
    """Replace every BN layer's running statistics by their average over `batches`, each image
    counting once.

    A child's statistics differ from the supernet's running ones (those mix every child
    trained), so they are re-estimated before the child is evaluated or exported (BigNAS Sec. 3.3).
    PyTorch's cumulative average (`momentum=None`) weights every batch alike, so a short last batch
    (1,000 images in batches of 256 end with 232; 256 in batches of 250 end with 6) would count
    as much as a full one; here each batch's weight is its share of the images seen so far.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
    model.train()
    seen = 0
    try:
        for x in batches:
            seen += len(x)
            for m in norms:
                m.momentum = len(x) / seen  # the running average over images: exact for the mean
            model(x.to(device))
    finally:
        model.eval()
        for m, momentum in zip(norms, momenta):  # a model trained further (finetune) keeps its own momentum
            m.momentum = momentum


@torch.no_grad()
def top1(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], resolution: int,
         device: torch.device) -> float:
    model.eval()
    correct = total = 0
    for images, labels in batches:
        logits = model(resize_batch(images, resolution).to(device))
        correct += (logits.argmax(1).cpu() == labels).sum().item()
        total += len(labels)
    return correct / total


def evaluate_child(supernet: Supernet, child: Child, dataset: Dataset, split: str, *,
                   calibration_images: int, batch_size: int, images: int | None = None) -> tuple[float, nn.Module]:
    """Top-1 of `child` on `split` (or on a fixed subset of `images` of it: `Split.subset`) after BN
    recalibration; also returns the calibrated static child.

    The supernet is left untouched: calibration runs on the extracted copy.
    """
    static = extract(supernet, child)
    return evaluate_static(static, child.resolution, dataset, split, calibration_images=calibration_images,
                           batch_size=batch_size, images=images), static


def evaluate_static(static: nn.Module, resolution: int, dataset: Dataset, split: str, *, calibration_images: int,
                    batch_size: int, images: int | None = None) -> float:
    """Top-1 of a static child running at `resolution` on `split` (or a fixed subset of `images` of
    it) after recalibrating its BN statistics in place on the fixed calibration images."""
    calibrate_static(static, resolution, dataset, calibration_images, batch_size)
    return top1(static, dataset.split(split).eval_batches(batch_size, images), resolution,
                next(static.parameters()).device)


def calibration_count(dataset: Dataset, images: int) -> int:
    """How many calibration images `images` asks of `dataset`: the first `images` of its training
    split, all of them if it holds fewer."""
    return min(images, len(dataset.train))


def calibrate_static(static: nn.Module, resolution: int, dataset: Dataset, calibration_images: int,
                     batch_size: int) -> None:
    """Recalibrate a static child's BN statistics in place on the first `calibration_images` fixed
    calibration images of the training split (all of them if fewer); leaves it in eval mode."""
    n = calibration_count(dataset, calibration_images)
    recalibrate_bn(static, dataset.calibration_batches(n, batch_size, resolution), next(static.parameters()).device)


def quantize_child(fp32: Path, out: Path, dataset: Dataset, batch_size: int, resolution: int, fmt: Int8Format,
                   calibration: Calibration) -> int:
    """Quantize a child's fp32 ONNX file into `out` (see `quantize.quantize`), its activation ranges
    calibrated on the fixed calibration images of the training split (those of BN recalibration,
    the first `calibration.images` of them, in `batch_size` batches): export and search quantize a
    child identically, so the int8 top-1 a search reports is the exported file's. Returns the
    number of images used."""
    images = calibration_count(dataset, calibration.images)
    batches = (x.numpy() for x in dataset.calibration_batches(images, batch_size, resolution))
    quantize(fp32, out, batches, fmt, calibration.method)
    return images
