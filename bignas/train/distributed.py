"""Data parallelism under torchrun: process group, device choice, DDP wrapping."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from bignas.nn.ops import ElasticBatchNorm2d


@dataclass(frozen=True)
class Distributed:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @staticmethod
    def pick_device(choice: str, local_rank: int) -> torch.device:
        if choice == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for, but no CUDA device is available")
        if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
            torch.cuda.set_device(local_rank)
            return torch.device("cuda", local_rank)
        return torch.device("cpu")

    @classmethod
    def from_env(cls, device: str) -> "Distributed":
        """One process, or the process group torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        dev = cls.pick_device(device, local_rank)
        if world_size > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        return cls(rank, world_size, local_rank, dev)

    def wrap(self, model: nn.Module, sync_bn: bool) -> nn.Module:
        """DDP around `model` when there are several processes.

        No find_unused_parameters: the sandwich step back-propagates the summed loss of all its
        children once, and the largest child, always among them, uses every parameter, so every
        gradient is ready in that one backward (and all-reduced once per step).
        broadcast_buffers=False: BN statistics are either synchronised (sync_bn) or per rank;
        they are re-estimated before any child is evaluated anyway.
        """
        if self.world_size == 1:
            return model
        if sync_bn:
            for m in model.modules():
                if isinstance(m, ElasticBatchNorm2d):
                    m.process_group = dist.group.WORLD
        ids = [self.local_rank] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
