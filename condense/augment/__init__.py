"""Differentiable augmentation: DSA presets with explicit, replayable random parameters.

``get_augment("dsa")`` is the published DSA; ``functional`` holds the pure ops it is built from.
"""

from __future__ import annotations

from condense.augment import functional
from condense.augment.dsa import AUGMENTS, DSA, GROUPS, PRESETS, get_augment, list_augments
from condense.augment.fyi import flip_concat
from condense.errors import MismatchError

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
    "flip_concat",
    "check_flip_allowed",
]

# Datasets whose digits/characters must not be mirrored (the DC code drops flip for MNIST).
NO_FLIP_DATASETS = ("digits", "mnist", "fashion_mnist", "svhn")


def resolve_augment(name: str, dataset: str) -> str:
    """Resolve ``"auto"`` to the DSA preset for ``dataset`` (no flip on digit datasets); other names pass."""
    if name != "auto":
        return name
    return "dsa_noflip" if dataset in NO_FLIP_DATASETS else "dsa"


def check_flip_allowed(dataset: str, option: str = "fyi=True") -> None:
    """Refuse an option that mirrors the images (FYI's flipped concatenation) on a dataset in NO_FLIP_DATASETS.

    A mirrored digit or character is another glyph (or none), so the DC code drops flip for MNIST and FYI cannot be
    used there (Son et al., ECCV 2024, arXiv:2407.08113).

    Raises:
        MismatchError: ``dataset`` is one of :data:`NO_FLIP_DATASETS`.

    Example:
        >>> check_flip_allowed("cifar10")
    """
    if dataset in NO_FLIP_DATASETS:
        raise MismatchError(
            f"{option} mirrors the synthetic images, but dataset {dataset!r} must not be flipped (mirrored digits or "
            f"characters are other glyphs; no-flip datasets: {', '.join(NO_FLIP_DATASETS)}); set fyi=false"
        )
