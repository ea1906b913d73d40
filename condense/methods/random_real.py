"""Random real subset: the baseline every distillation paper compares against.

Picks ``ipc`` real training images per class uniformly at random (no replacement), with the data layer's one
per-class draw (:meth:`condense.data.ImageData.sample_per_class`, which the random-real baseline of
``condense.eval`` uses too). DD-Ranking's "improvement over random" compares a method with this baseline under the
same protocol.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from condense.data.base import ImageData
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
        idx = data.sample_per_class(ipc, generator)
        return SyntheticSet.from_tensors(data.x_train[idx], data.y_train[idx], data, self.name, ipc, cfg)
