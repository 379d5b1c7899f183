"""Distributed data parallel under ``torchrun`` (env RANK / WORLD_SIZE / LOCAL_RANK), or one process.

Rank 0 alone writes files, logs and progress bars; metrics are all-reduced across ranks.
Backend: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from medseg.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: ``rank`` of ``world_size`` processes, on ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        """True on the process that writes files (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked but no CUDA device is available; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"device '{device}' unknown; use auto, cpu or cuda")
    return torch.device(device)


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group torchrun set up (if WORLD_SIZE > 1), else return a 1-process context.

    Each rank uses ``cuda:LOCAL_RANK`` on GPU; on CPU the gloo backend is used.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if world <= 1:
        return DistContext(0, 1, 0, dev)
    if dev.type == "cuda":
        if torch.cuda.device_count() <= local:
            raise ConfigError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA device(s)")
        dev = torch.device(f"cuda:{local}")
        torch.cuda.set_device(dev)
    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo",
                                rank=rank, world_size=world)
        created = True
    return DistContext(rank, world, local, dev, initialized_here=created)


def cleanup(ctx: DistContext) -> None:
    """Leave the process group if :func:`init_distributed` created it."""
    if ctx.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``t`` over all ranks (a no-op in a single process). Returns a new tensor."""
    out = t.detach().clone().to(ctx.device)
    if ctx.distributed:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Gather one picklable object from every rank (``[obj]`` in a single process)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistContext) -> None:
    """Wait for all ranks."""
    if ctx.distributed:
        dist.barrier()
