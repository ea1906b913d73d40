"""The model registry and the one entry point, :func:`create_model` (the model files register into it).

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

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from condense.errors import ConfigError
from condense.registry import Registry
from condense.seeding import seeded

__all__ = [
    "MODELS",
    "TIMM_PREFIX",
    "create_model",
    "create_model_for",
    "default_model_for",
    "list_models",
    "register_model",
]

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
TIMM_PREFIX = "timm:"


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a keyword-only builder ``(*, in_channels, num_classes, image_size, **kw)``.

    Duplicate names raise ``ValueError``.
    """
    return MODELS.register(name)


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registered model names matching the fnmatch ``pattern`` (``timm:`` names are not listed).

    Example:
        >>> list_models("convnetd*")
        ['convnetd1', 'convnetd2', 'convnetd3', 'convnetd4', 'convnetd5']
    """
    return MODELS.list(pattern)


def _check_positive_int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{field} must be a positive int, got {value!r}")
    return value


def _check_image_size(image_size: Any) -> tuple[int, int]:
    if not isinstance(image_size, Sequence) or len(image_size) != 2:
        raise ConfigError(f"image_size must be a (height, width) pair, got {image_size!r}")
    return (_check_positive_int("image_size[0]", image_size[0]), _check_positive_int("image_size[1]", image_size[1]))


def create_model(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    image_size: tuple[int, int],
    seed: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build the model registered as ``name`` (or ``timm:<name>``) for the given input and class count.

    Args:
        name: a registered name (see :func:`list_models`) or ``timm:<timm model name>``.
        in_channels: image channels C.
        num_classes: number of classes K.
        image_size: (H, W) of the inputs.
        seed: when given, parameters are initialized from ``torch.manual_seed(seed)`` inside a forked RNG, so the
            same seed gives bit-identical parameters and the caller's global RNG is left untouched. None draws
            from the current global RNG.
        **kwargs: builder options (``width``, ``depth``, ``norm``, ...); values set to None are dropped so the
            model's defaults win.

    Returns:
        The model, in training mode, on the default device.

    Raises:
        UnknownNameError: ``name`` is not registered (the message suggests the closest name).
        ConfigError: ``in_channels``, ``num_classes`` or ``image_size`` is not positive.

    Shape:
        model(x): x (N, C, H, W) -> logits (N, K).
        model.embed(x): x (N, C, H, W) -> features (N, D), D = model.num_features.

    Example:
        >>> net = create_model("mlp", in_channels=1, num_classes=10, image_size=(8, 8), seed=0)
        >>> net.num_features
        128
    """
    in_channels = _check_positive_int("in_channels", in_channels)
    num_classes = _check_positive_int("num_classes", num_classes)
    image_size = _check_image_size(image_size)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if name.startswith(TIMM_PREFIX):
        from condense.models.timm_adapter import create_timm_model

        timm_name = name[len(TIMM_PREFIX) :]

        def build() -> nn.Module:
            return create_timm_model(
                timm_name, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs
            )

    else:
        builder = MODELS.get(name)

        def build() -> nn.Module:
            return builder(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)

    with seeded(seed):
        return build()


def create_model_for(name: str, data: Any, *, seed: int | None = None, device: Any = None, **kwargs: Any) -> nn.Module:
    """:func:`create_model` sized for an image dataset (its channels, classes and image size), built on ``device``.

    Example:
        >>> from condense.data import load_dataset
        >>> create_model_for("convnet", load_dataset("digits"), seed=0).num_features
        128
    """
    with torch.device(device) if device is not None else contextlib.nullcontext():
        return create_model(
            name,
            in_channels=data.channels,
            num_classes=data.num_classes,
            image_size=tuple(data.image_size),
            seed=seed,
            **kwargs,
        )


def default_model_for(data: Any) -> str:
    """The ConvNet the papers distill an image dataset with, by resolution: ``convnet`` (depth 3) up to 32 px (MNIST,
    CIFAR), ``convnetd4`` at 64 px (Tiny ImageNet), ``convnetd5`` from 128 px (ImageNet subsets; MTT, FTD, DATM).

    Below 16 px (the 8x8 digits) it is ``convnetd2``, a condense choice: the depth-3 ConvNet instance-normalizes 2x2
    maps in its last block there, and trajectory matching through it collapses (meta-gradient norms jumping between
    1e3 and 6e8 from one iteration to the next, measured on digits); depth 2 normalizes 4x4 maps.

    Example:
        >>> from condense.data import load_dataset
        >>> default_model_for(load_dataset("digits"))
        'convnetd2'
    """
    side = min(int(s) for s in data.image_size)
    if side < 16:
        return "convnetd2"
    if side <= 32:
        return "convnet"
    if side <= 64:
        return "convnetd4"
    return "convnetd5"
