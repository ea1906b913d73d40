"""Model registry and the one entry point, :func:`create_model`.

Every model maps images to logits with ``forward(x) -> (N, num_classes)`` and to penultimate features with
``embed(x) -> (N, D)``; ``model.num_features`` is D. Builders are keyword-only functions registered with
``@register_model("name")``; variants are separate builders that fill an args dict (timm style). Names with the
``timm:`` prefix resolve through timm (``timm:resnet18``), sized for small images.

Example:
    >>> import torch
    >>> from condense.models import create_model
    >>> net = create_model("convnet", in_channels=1, num_classes=10, image_size=(8, 8), seed=0)
    >>> net(torch.zeros(2, 1, 8, 8)).shape, net.embed(torch.zeros(2, 1, 8, 8)).shape
    (torch.Size([2, 10]), torch.Size([2, 128]))
"""

from __future__ import annotations

from condense.models import convnet, resnet, small  # noqa: F401  (the model files register themselves)
from condense.models.layers import has_running_stats
from condense.models.params import ParamLayout
from condense.models.registry import MODELS, TIMM_PREFIX, create_model, create_model_for, list_models, register_model

__all__ = [
    "MODELS",
    "TIMM_PREFIX",
    "ParamLayout",
    "create_model",
    "create_model_for",
    "has_running_stats",
    "list_models",
    "register_model",
]
