"""Random real subset: the baseline every distillation paper compares against.

Picks ``ipc`` real training images per class uniformly at random (no replacement). DD-Ranking's
"improvement over random" compares a method with this baseline under the same protocol.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from condense.data.base import ImageData
from condense.eval.evaluate import random_subset
from condense.methods.base import Method, RunContext, register_method
from condense.synthetic import SyntheticSet

__all__ = ["RandomReal", "RandomRealConfig"]


@dataclass(frozen=True, kw_only=True)
class RandomRealConfig:
    """Random real subset (no hyperparameters)."""


@register_method("random_real")
class RandomReal(Method):
    """Uniform random real images per class."""

    Config = RandomRealConfig
    presets: dict = {}

    def distill(
        self, data: ImageData, cfg: RandomRealConfig, ipc: int, generator: torch.Generator, run: RunContext
    ) -> SyntheticSet:
        x, y = random_subset(data, ipc, generator)
        return SyntheticSet.from_tensors(x, y, data, self.name, ipc, cfg)
