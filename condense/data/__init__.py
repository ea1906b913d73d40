"""Datasets by name, images and graphs alike: ``load_dataset("digits")``, ``load_dataset("cifar10", root)``,
``imagefolder:<path>``, ``imagenette`` / ``imagewoof`` / ``imagenet1k``, ``tu:<NAME>``, ``synthetic_graphs``."""

from __future__ import annotations

from condense.data import (  # noqa: F401  (registers)
    cifar,
    digits,
    graph_synthetic,
    imagefolder,
    imagenet,
    mnist,
    svhn,
    tu,
)
from condense.data.base import (
    DATASETS,
    ImageData,
    from_uint8_arrays,
    list_datasets,
    load_dataset,
    register_dataset,
    sample_per_class,
)
from condense.data.graph import GraphBatch, GraphData

__all__ = [
    "ImageData",
    "GraphData",
    "GraphBatch",
    "DATASETS",
    "register_dataset",
    "load_dataset",
    "list_datasets",
    "sample_per_class",
    "from_uint8_arrays",
]
