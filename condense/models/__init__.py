"""Models: ConvNets, small nets, ResNets, CIFAR-style teacher nets and GNNs, built by name through one registry.

``create_model(name, in_channels=, num_classes=, image_size=, seed=)`` is the one entry point (see
:mod:`condense.models.registry`); importing this package registers every built-in model.
"""

from __future__ import annotations

from condense.models import convnet, resnet, small, teacher_nets  # noqa: F401  (the model files register themselves)
from condense.models.layers import has_running_stats
from condense.models.params import ParamLayout
from condense.models.registry import (
    MODELS,
    TIMM_PREFIX,
    create_model,
    create_model_for,
    default_model_for,
    list_models,
    register_model,
)

__all__ = [
    "MODELS",
    "TIMM_PREFIX",
    "ParamLayout",
    "create_model",
    "create_model_for",
    "default_model_for",
    "has_running_stats",
    "list_models",
    "register_model",
]
