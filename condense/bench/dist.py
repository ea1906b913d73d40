"""torch.distributed for ``condense bench``: a process group when torchrun sets ``WORLD_SIZE`` > 1, else one process.

Cells go to ranks round robin over the grid order of the cells still to run, so the assignment depends only on the
spec and on which rows exist; every evaluation is seeded from the cell's configuration, never from the rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

__all__ = ["Ranks", "assign"]


@dataclass
class Ranks:
    """This process' rank and the world size; barrier/gather do nothing in a single process."""

    rank: int = 0
    world: int = 1
    created: bool = False

    @classmethod
    def from_env(cls, device: str = "cpu") -> Ranks:
        """Join (or create) the process group torchrun describes: nccl on CUDA, gloo on the CPU."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        created = False
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if str(device).startswith("cuda") else "gloo")
            created = True
        return cls(rank=dist.get_rank(), world=dist.get_world_size(), created=created)

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` in rank order."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        """Destroy the process group when this context created it."""
        if self.created:
            import torch.distributed as dist

            dist.destroy_process_group()


def assign(pending: list[str], rank: int, world: int) -> list[str]:
    """The cells of ``rank``: every ``world``-th pending cell, starting at ``rank`` (grid order kept)."""
    return pending[rank::world]
