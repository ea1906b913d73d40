"""The standard ConvNet of dataset distillation and its depth, width, norm and pooling variants.

References:
    Gidaris & Komodakis, "Dynamic Few-Shot Visual Learning without Forgetting", CVPR 2018, arXiv:1804.09458
    (the conv-norm-relu-pool backbone).
    Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient Matching", ICLR 2021, arXiv:2006.05929
    (its use as the distillation network; ``ConvNet`` in the DC code, reused unchanged by MTT, FTD, DATM).
"""

from __future__ import annotations

import torch
from torch import nn

from condense.models.layers import create_act, create_norm, create_pool, pooled_size
from condense.models.registry import register_model

__all__ = ["ConvNet"]


class ConvNet(nn.Module):
    """``depth`` blocks of conv3x3 -> norm -> activation -> 2x2 pool, then one linear classifier.

    With the defaults (depth 3, width 128, instance norm, ReLU, average pooling) this is the MTT/DC ConvNet:
    a 3x32x32 image shrinks 32 -> 16 -> 8 -> 4 and the 128*4*4 = 2048 flattened features feed the classifier,
    about 320k parameters for CIFAR-10 (320,010). "Instance norm" is ``GroupNorm(C, C, affine=True)``, so the
    default model has no running statistics and can be vmapped over seeds.

    Two input-size rules follow the DC code or keep small inputs usable: 1x28x28 inputs get padding 3 on the
    first conv so they are treated as 32x32, and a pool is skipped when it would leave a map smaller than 2x2
    that another block would normalize (or smaller than 1x1 after the last block); see
    :func:`condense.models.layers.pooled_size`. Digits (8x8, depth 3) go 8 -> 4 -> 2 -> 1.

    Args:
        in_channels: image channels C.
        num_classes: number of classes K.
        image_size: (H, W) of the inputs.
        width: channels of every conv layer.
        depth: number of conv blocks.
        norm: key of ``NORM_LAYERS`` (``instance``, ``batch``, ``layer``, ``group``, ``none``).
        act: key of ``ACT_LAYERS``.
        pool: key of ``POOL_LAYERS`` (``avg``, ``max``, ``none``).

    Shape:
        x: (N, C, H, W), float.
        forward(x): (N, K) logits.
        embed(x): (N, D) flattened features before the classifier, D = width * h * w (2048 on CIFAR D3).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        image_size: tuple[int, int],
        width: int = 128,
        depth: int = 3,
        norm: str = "instance",
        act: str = "relu",
        pool: str = "avg",
    ) -> None:
        super().__init__()
        hw = (int(image_size[0]), int(image_size[1]))
        first_pad = 1
        if hw == (28, 28):  # DC code: MNIST-sized inputs are padded to 32x32 by the first conv
            first_pad, hw = 3, (32, 32)
        layers: list[nn.Module] = []
        channels = in_channels
        for d in range(depth):
            layers.append(nn.Conv2d(channels, width, kernel_size=3, padding=first_pad if d == 0 else 1))
            layers.append(create_norm(norm, width, hw))
            layers.append(create_act(act))
            channels = width
            if pool != "none":
                new_hw = pooled_size(hw, last=d == depth - 1)
                if new_hw is not None:
                    layers.append(create_pool(pool))
                    hw = new_hw
        self.features = nn.Sequential(*layers)
        self.num_features = width * hw[0] * hw[1]
        self.classifier = nn.Linear(self.num_features, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened penultimate features, shape (N, width * h * w)."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, shape (N, num_classes)."""
        return self.classifier(self.embed(x))


def _create_convnet(variant_args: dict, **kwargs) -> ConvNet:
    # the caller's kwargs override the variant's defaults
    return ConvNet(**{**variant_args, **kwargs})


# Builders only fill an args dict (timm style).


@register_model("convnet")
def convnet(*, in_channels: int, num_classes: int, image_size: tuple[int, int], **kwargs) -> ConvNet:
    """ConvNet D3, width 128, instance norm, ReLU, average pooling (the MTT/DC default)."""
    args = dict()
    return _create_convnet(args, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


@register_model("convnetd1")
def convnetd1(*, in_channels: int, num_classes: int, image_size: tuple[int, int], **kwargs) -> ConvNet:
    """ConvNet of depth 1."""
    args = dict(depth=1)
    return _create_convnet(args, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


@register_model("convnetd2")
def convnetd2(*, in_channels: int, num_classes: int, image_size: tuple[int, int], **kwargs) -> ConvNet:
    """ConvNet of depth 2."""
    args = dict(depth=2)
    return _create_convnet(args, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


@register_model("convnetd3")
def convnetd3(*, in_channels: int, num_classes: int, image_size: tuple[int, int], **kwargs) -> ConvNet:
    """ConvNet of depth 3 (same as ``convnet``)."""
    args = dict(depth=3)
    return _create_convnet(args, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


@register_model("convnetd4")
def convnetd4(*, in_channels: int, num_classes: int, image_size: tuple[int, int], **kwargs) -> ConvNet:
    """ConvNet of depth 4 (MTT's choice for 64x64 Tiny ImageNet)."""
    args = dict(depth=4)
    return _create_convnet(args, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


@register_model("convnetd5")
def convnetd5(*, in_channels: int, num_classes: int, image_size: tuple[int, int], **kwargs) -> ConvNet:
    """ConvNet of depth 5 (MTT's choice for 128x128 ImageNet subsets)."""
    args = dict(depth=5)
    return _create_convnet(args, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


@register_model("convnet_bn")
def convnet_bn(*, in_channels: int, num_classes: int, image_size: tuple[int, int], **kwargs) -> ConvNet:
    """ConvNet with BatchNorm (keeps running statistics)."""
    args = dict(norm="batch")
    return _create_convnet(args, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


@register_model("convnet_ln")
def convnet_ln(*, in_channels: int, num_classes: int, image_size: tuple[int, int], **kwargs) -> ConvNet:
    """ConvNet with the DC-style layer norm over (C, H, W)."""
    args = dict(norm="layer")
    return _create_convnet(args, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


@register_model("convnet_nonorm")
def convnet_nonorm(*, in_channels: int, num_classes: int, image_size: tuple[int, int], **kwargs) -> ConvNet:
    """ConvNet without normalization."""
    args = dict(norm="none")
    return _create_convnet(args, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


@register_model("convnet_mp")
def convnet_mp(*, in_channels: int, num_classes: int, image_size: tuple[int, int], **kwargs) -> ConvNet:
    """ConvNet with 2x2 max pooling instead of average pooling."""
    args = dict(pool="max")
    return _create_convnet(args, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


@register_model("convnetw32")
def convnetw32(*, in_channels: int, num_classes: int, image_size: tuple[int, int], **kwargs) -> ConvNet:
    """ConvNet of width 32."""
    args = dict(width=32)
    return _create_convnet(args, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


@register_model("convnetw64")
def convnetw64(*, in_channels: int, num_classes: int, image_size: tuple[int, int], **kwargs) -> ConvNet:
    """ConvNet of width 64."""
    args = dict(width=64)
    return _create_convnet(args, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)
