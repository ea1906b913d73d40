"""torchrun plumbing: the process group when ``WORLD_SIZE`` > 1, and the per-rank device.

A single process (no torchrun) gets a context whose barrier and gather do nothing, so the callers (the expert
recorder, ``condense bench``) have one code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from condense.errors import ConfigError

__all__ = ["DistContext", "resolve_device"]


@dataclass
class DistContext:
    """torch.distributed context when launched by torchrun (WORLD_SIZE > 1), else a single process.

    Attributes:
        rank: this process' rank (0 without torchrun).
        world: number of processes.
        created: whether :meth:`from_env` initialized the process group (and :meth:`close` must destroy it).
    """

    rank: int = 0
    world: int = 1
    created: bool = False

    @classmethod
    def from_env(cls, device: torch.device | str) -> DistContext:
        """Join (or create) the process group torchrun describes: nccl on CUDA, gloo on the CPU."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_available():
            raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        created = False
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if torch.device(device).type == "cuda" else "gloo")
            created = True
        return cls(rank=dist.get_rank(), world=dist.get_world_size(), created=created)

    def barrier(self) -> None:
        """Wait for every rank (no-op in a single process)."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        """Destroy the process group if this context created it."""
        if self.created:
            import torch.distributed as dist

            dist.destroy_process_group()


def resolve_device(device: torch.device | str) -> torch.device:
    """``device`` as a ``torch.device``; a bare ``cuda`` under torchrun becomes ``cuda:LOCAL_RANK`` (and current)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device
