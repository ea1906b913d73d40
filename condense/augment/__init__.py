"""Differentiable augmentation: DSA presets with explicit, replayable random parameters.

``get_augment("dsa")`` is the published DSA; ``functional`` holds the pure ops it is built from.
"""

from __future__ import annotations

from condense.augment import functional
from condense.augment.dsa import AUGMENTS, DSA, GROUPS, PRESETS, get_augment, list_augments

__all__ = ["DSA", "GROUPS", "PRESETS", "AUGMENTS", "get_augment", "list_augments", "functional"]
