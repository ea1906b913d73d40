"""Differentiable augmentation: DSA presets with explicit, replayable random parameters.

``get_augment("dsa")`` is the published DSA; ``functional`` holds the pure ops it is built from.
"""

from __future__ import annotations

from condense.augment import functional
from condense.augment.dsa import AUGMENTS, DSA, GROUPS, PRESETS, get_augment, list_augments

__all__ = [
    "DSA",
    "GROUPS",
    "PRESETS",
    "AUGMENTS",
    "get_augment",
    "list_augments",
    "functional",
    "NO_FLIP_DATASETS",
    "resolve_augment",
]

# Datasets whose digits/characters must not be mirrored (the DC code drops flip for MNIST).
NO_FLIP_DATASETS = ("digits", "mnist", "fashion_mnist", "svhn")


def resolve_augment(name: str, dataset: str) -> str:
    """Resolve ``"auto"`` to the DSA preset for ``dataset`` (no flip on digit datasets); other names pass."""
    if name != "auto":
        return name
    return "dsa_noflip" if dataset in NO_FLIP_DATASETS else "dsa"
