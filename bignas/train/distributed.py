"""Data parallelism under torchrun: process group, device choice, gradient averaging."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from bignas.errors import BignasError
from bignas.nn import Supernet
from bignas.train.config import DEVICES

# How long a collective waits for the slowest rank before the job is stopped as hung.
PROCESS_GROUP_TIMEOUT = timedelta(hours=1)


class DeviceError(BignasError):
    """A device that was asked for and is not there."""


def pick_device(choice: str, local_rank: int | None = None) -> torch.device:
    """The torch device for `choice`; on CUDA, GPU `local_rank` (default: torchrun's LOCAL_RANK), with
    cuDNN autotuning on."""
    if choice not in DEVICES:
        raise DeviceError(f"device {choice!r}: expected one of {', '.join(DEVICES)}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device 'cuda' was asked for, but no CUDA device is available")
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        rank = int(os.environ.get("LOCAL_RANK", "0")) if local_rank is None else local_rank
        torch.cuda.set_device(rank)
        # Elastic children bring new convolution shapes (width, kernel, resolution) at every
        # sandwich step and every evaluated child. Without autotuning, cuDNN 9 builds each new
        # shape's execution plan on the CPU at every call: an ofa-mbv3 sandwich step at batch 128,
        # bf16, channels_last took 9.2 s on an H200 (89 ms of it on the GPU), 0.28 s with this.
        torch.backends.cudnn.benchmark = True
        return torch.device("cuda", rank)
    return torch.device("cpu")


@dataclass(frozen=True)
class Distributed:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str) -> "Distributed":
        """One process, or the process group torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        dev = pick_device(device, local_rank)
        if world_size > 1 and not dist.is_initialized():
            # At each epoch end the other ranks wait at a barrier while rank 0 evaluates two children
            # on the whole val split: minutes on ImageNet, past NCCL's default 10-minute watchdog.
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=PROCESS_GROUP_TIMEOUT)
        return cls(rank, world_size, local_rank, dev)

    def prepare(self, model: Supernet, sync_bn: bool) -> None:
        """Start every process from rank 0's weights and buffers; with `sync_bn`, batch norm in
        training uses the statistics of the global batch."""
        if self.world_size == 1:
            return
        if sync_bn:
            model.use_sync_batch_norm(dist.group.WORLD)
        with torch.no_grad():
            for t in model.state_dict().values():
                dist.broadcast(t, src=0)

    def average_gradients(self, model: nn.Module) -> None:
        """All-reduce the gradients once per step, as one flat buffer, after the step's backward.

        Not DDP: sliced weights add their gradients straight into `.grad` (bignas.nn.ops.GradSlices),
        past the autograd hooks DDP listens to. Every parameter has a gradient here, because the
        largest child, run every step, uses them all, so no `find_unused_parameters` is needed.
        The price is no overlap of communication with backward, small next to the four forward
        and backward passes of a sandwich step.
        """
        if self.world_size == 1:
            return
        grads = [p.grad for p in model.parameters()]
        flat = self.mean_(torch.cat([g.reshape(-1) for g in grads]))  # the fresh buffer, reduced in place
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean_(self, values: torch.Tensor) -> torch.Tensor:
        """The element-wise mean of `values` over the processes, written into `values` and returned
        (the same tensor on every one; every process must call it)."""
        if self.world_size > 1:
            dist.all_reduce(values)
            values.div_(self.world_size)
        return values

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
