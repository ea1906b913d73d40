"""``timm:<name>`` models: any timm architecture, randomly initialized and sized for small images.

timm is imported inside the functions, so importing condense stays fast. Models whose pretrained config marks a
fixed input size (ViT, DeiT, Swin, ...) get ``img_size`` set to the data's size, and patch-embedding models get a
smaller ``patch_size`` when their native patch would leave fewer than 4 patches per side (e.g. 32x32 CIFAR -> 4,
8x8 digits -> 2). Nothing is downloaded: ``pretrained=False`` always.

References:
    Wightman, "PyTorch Image Models", GitHub 2019, https://github.com/huggingface/pytorch-image-models.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["TimmModel", "create_timm_model", "small_patch_size"]

Size = tuple[int, int]


def small_patch_size(image_size: Size, native: int) -> int | None:
    """Patch size for a patch-embedding model on ``image_size``, or None to keep the model's ``native`` patch.

    The native patch is kept when it tiles the image into at least 4x4 patches. Otherwise the largest power of
    two dividing both sides that leaves at least 8 patches per side is used, but never below 2 when the image
    allows it (one-pixel patches make 8x8 digits a 64-token sequence of single pixels).

    Example:
        >>> small_patch_size((32, 32), 16), small_patch_size((8, 8), 16), small_patch_size((224, 224), 16)
        (4, 2, None)
    """
    h, w = image_size
    if h % native == 0 and w % native == 0 and min(h, w) // native >= 4:
        return None
    candidates = [p for p in (16, 8, 4, 2, 1) if p <= native and h % p == 0 and w % p == 0]
    for p in candidates:
        if min(h, w) // p >= 8:
            return max(p, 2) if h % 2 == 0 and w % 2 == 0 and min(h, w) >= 4 else p
    return 1


class TimmModel(nn.Module):
    """Wraps a timm model to add ``embed`` (timm's pre-logits features) next to ``forward``.

    Args:
        net: a timm model with ``forward_features`` and ``forward_head``.

    Shape:
        x: (N, C, H, W).
        forward(x): (N, K) logits.
        embed(x): (N, D) pre-logits features, ``forward_head(forward_features(x), pre_logits=True)``.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.num_features = int(getattr(net, "head_hidden_size", None) or net.num_features)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-logits features, shape (N, num_features)."""
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, shape (N, num_classes)."""
        return self.net(x)


def create_timm_model(name: str, *, in_channels: int, num_classes: int, image_size: Size, **kwargs: Any) -> TimmModel:
    """Build timm model ``name`` with random weights for ``in_channels`` x ``image_size`` inputs.

    Args:
        name: a timm model name (``resnet18``, ``vit_tiny_patch16_224``, ...).
        in_channels: image channels C (timm's ``in_chans``).
        num_classes: number of classes K.
        image_size: (H, W); passed as ``img_size`` to fixed-input-size models.
        **kwargs: passed to ``timm.create_model``; an explicit ``img_size`` or ``patch_size`` wins.

    Raises:
        UnknownNameError: timm does not know ``name`` (the message suggests close timm names).
        ConfigError: ``pretrained=True`` was passed (nothing is downloaded).

    Shape:
        model(x): (N, C, H, W) -> (N, K).
    """
    import timm
    from timm.models import get_pretrained_cfg_value, is_model

    from condense.errors import ConfigError, UnknownNameError
    from condense.registry import did_you_mean

    if not is_model(name):
        names = timm.list_models()
        raise UnknownNameError(
            f"unknown timm model '{name}'{did_you_mean(name, names)} (timm has {len(names)}; see timm.list_models())"
        )
    if kwargs.pop("pretrained", False):
        raise ConfigError(
            f"pretrained=True is not supported for 'timm:{name}': condense never downloads weights; "
            "build the model and load a local state dict into model.net instead"
        )
    kwargs = {"pretrained": False, "num_classes": num_classes, "in_chans": in_channels, **kwargs}
    if get_pretrained_cfg_value(name, "fixed_input_size"):
        kwargs.setdefault("img_size", tuple(image_size))
        if "patch_size" not in kwargs:
            native = _native_patch_size(timm, name, kwargs)
            patch = None if native is None else small_patch_size(tuple(image_size), native)
            if patch is not None:
                kwargs["patch_size"] = patch
    return TimmModel(timm.create_model(name, **kwargs))


def _native_patch_size(timm: Any, name: str, kwargs: dict[str, Any]) -> int | None:
    # Build on the meta device (no memory, no RNG draws) just to read the patch embedding's patch size.
    try:
        with torch.device("meta"):
            # at the native size: a patch larger than the image may not even construct
            probe = timm.create_model(name, **{k: v for k, v in kwargs.items() if k != "img_size"})
    except (TypeError, ValueError, RuntimeError, AssertionError, NotImplementedError):
        return None
    patch_embed = getattr(probe, "patch_embed", None)
    patch = getattr(patch_embed, "patch_size", None)
    if patch is None:
        return None
    return int(patch[0] if isinstance(patch, (tuple, list)) else patch)
