"""Datasets by name: ``load_dataset("digits")``, ``load_dataset("cifar10", root)``, ``imagefolder:<path>``."""

from __future__ import annotations

from condense.data import cifar, digits, imagefolder, mnist, svhn  # noqa: F401  (registers)
from condense.data.base import DATASETS, ImageData, from_uint8_arrays, register_dataset

__all__ = ["ImageData", "DATASETS", "register_dataset", "load_dataset", "list_datasets", "from_uint8_arrays"]


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset names matching ``pattern``."""
    return DATASETS.list(pattern)


def load_dataset(name: str, root: str | None = None, *, zca: bool = False, download: bool = False) -> ImageData:
    """Load a dataset by registered name or ``imagefolder:<path>``.

    Example:
        >>> data = load_dataset("digits")
        >>> data.x_train.shape
        torch.Size([1437, 1, 8, 8])
    """
    if ":" in name:
        prefix, arg = name.split(":", 1)
        return DATASETS.get(prefix + ":")(arg, root=root, zca=zca, download=download)
    return DATASETS.get(name)(root, zca=zca, download=download)
