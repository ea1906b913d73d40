"""CIFAR-style MobileNetV2, ShuffleNetV2 and DenseNet-121: the other teachers of the decoupled methods' pools.

INFER and G-VBSM relabel and recover with a pool of architectures (ResNet-18, MobileNetV2, EfficientNet-B0,
ShuffleNet; CV-DD's committee adds DenseNet-121), on CIFAR in their small-image variants. The ImageNet networks
downsample 32x before the last stage; the small-image variants keep the early resolution:

- MobileNetV2 (``mobilenetv2``): 3x3 stride-1 stem (32 channels) and the second bottleneck stage (24 channels) at
  stride 1 instead of 2, so 32x32 images run 32 -> 32 -> 32 -> 16 -> 8 -> 8 -> 4 -> 4 (as the common CIFAR ports,
  e.g. kuangliu/pytorch-cifar). Residual connections only where stride is 1 and the width is unchanged, and
  ReLU6, as the paper; the CIFAR ports differ in both (ReLU, projection shortcuts on every stride-1 block).
- ShuffleNetV2 (``shufflenetv2`` at 1.0x, ``shufflenetv2_x0_5`` at 0.5x, G-VBSM's width): 3x3 stride-1 stem
  (24 channels), no max pool, then the three stages of the paper (4, 8, 4 units), 32 -> 16 -> 8 -> 4.
- DenseNet-121 (``densenet121``): growth 32, blocks of 6, 12, 24, 16 bottleneck layers (BN-ReLU-1x1 to 4 x growth,
  BN-ReLU-3x3 to growth), compression 0.5, a 3x3 stride-1 stem of 2 x growth channels without max pool, so 32x32
  images run 32 -> 16 -> 8 -> 4 through the three transitions.

Every stride 2 (and every transition's pool) is kept only while the map stays at least 2x2 after it
(:func:`condense.models.layers.pooled_size`), so the same networks run on 8x8 digits (8 -> 4 -> 2 -> 2). They use
BatchNorm by default (``norm=`` picks another ``NORM_LAYERS`` entry), out-of-place activations and no
data-dependent control flow, so ``torch.func`` transforms work on them.

References:
    Sandler, Howard, Zhu, Zhmoginov & Chen, "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018,
    arXiv:1801.04381 (Table 2).
    Ma, Zhang, Zheng & Sun, "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design", ECCV 2018,
    arXiv:1807.11164 (Table 5, Figure 3c/d).
    Huang, Liu, van der Maaten & Weinberger, "Densely Connected Convolutional Networks", CVPR 2017,
    arXiv:1608.06993 (Table 1, DenseNet-BC).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from condense.errors import ConfigError
from condense.models.layers import create_norm, pooled_size
from condense.models.registry import register_model

__all__ = ["MobileNetV2", "ShuffleNetV2", "DenseNet"]

Size = tuple[int, int]


def _stride_for(hw: Size, stride: int) -> tuple[int, Size]:
    """The stride actually used at a map of size ``hw`` (2 only while the result stays >= 2x2) and the new size."""
    if stride == 1:
        return 1, hw
    # a 3x3 conv with padding 1 and stride 2 rounds up; pooled_size floors, which only matters for odd sizes
    if pooled_size(hw, last=False) is None:
        return 1, hw
    return 2, ((hw[0] + 1) // 2, (hw[1] + 1) // 2)


class _ConvNorm(nn.Sequential):
    """Conv (no bias) followed by a norm layer, optionally a ReLU/ReLU6."""

    def __init__(
        self, cin: int, cout: int, k: int, stride: int, norm: str, hw: Size, *, groups: int = 1, act: str = "relu"
    ) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)]
        layers.append(create_norm(norm, cout, hw))
        if act == "relu":
            layers.append(nn.ReLU())
        elif act == "relu6":
            layers.append(nn.ReLU6())
        super().__init__(*layers)


def _make_divisible(v: float, divisor: int = 8) -> int:
    # MobileNet's channel rounding: nearest multiple of 8, never more than 10 % below v
    out = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * v else out


# ----------------------------------------------------------------------------------------------------------------------
# MobileNetV2
# ----------------------------------------------------------------------------------------------------------------------


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (t x) + ReLU6, 3x3 depthwise (strided) + ReLU6, 1x1 linear projection.

    Shape:
        x: (N, cin, H, W) -> (N, cout, H', W'); the input is added when stride is 1 and cin == cout.
    """

    def __init__(self, cin: int, cout: int, stride: int, expand: int, norm: str, in_hw: Size, out_hw: Size) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_ConvNorm(cin, hidden, 1, 1, norm, in_hw, act="relu6"))
        layers.append(_ConvNorm(hidden, hidden, 3, stride, norm, out_hw, groups=hidden, act="relu6"))
        layers.append(_ConvNorm(hidden, cout, 1, 1, norm, out_hw, act="none"))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block output (out-of-place add)."""
        out = self.body(x)
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    """Small-image MobileNetV2 (Sandler et al., 2018): stride-1 stem and second stage, see the module docstring.

    Args:
        in_channels, num_classes, image_size: input channels C, classes K, (H, W).
        width_mult: channel multiplier (1.0 in the paper's Table 2), rounded to multiples of 8.
        norm: key of ``NORM_LAYERS`` (``batch``).

    Shape:
        x: (N, C, H, W); forward(x): (N, K); embed(x): (N, 1280) (global average pool of the last 1x1 conv).
    """

    # (expansion t, channels c, blocks n, stride s): Table 2, with the second row's stride 2 -> 1 for small images
    STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(
        self, *, in_channels: int, num_classes: int, image_size: Size, width_mult: float = 1.0, norm: str = "batch"
    ) -> None:
        super().__init__()
        if not width_mult > 0:
            raise ConfigError(f"width_mult must be > 0, got {width_mult!r}")
        hw: Size = (int(image_size[0]), int(image_size[1]))
        cin = _make_divisible(32 * width_mult)
        layers: list[nn.Module] = [_ConvNorm(in_channels, cin, 3, 1, norm, hw, act="relu6")]
        for t, c, n, s in self.STAGES:
            cout = _make_divisible(c * width_mult)
            for i in range(n):
                stride, out_hw = _stride_for(hw, s if i == 0 else 1)
                layers.append(InvertedResidual(cin, cout, stride, t, norm, hw, out_hw))
                cin, hw = cout, out_hw
        self.num_features = _make_divisible(1280 * max(1.0, width_mult))
        layers.append(_ConvNorm(cin, self.num_features, 1, 1, norm, hw, act="relu6"))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(self.num_features, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Globally pooled features, shape (N, num_features)."""
        return F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, shape (N, num_classes)."""
        return self.classifier(self.embed(x))


# ----------------------------------------------------------------------------------------------------------------------
# ShuffleNetV2
# ----------------------------------------------------------------------------------------------------------------------


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` groups (ShuffleNet's channel shuffle), as reshape-transpose-reshape.

    Shape:
        x: (N, C, H, W) -> (N, C, H, W), C divisible by ``groups``.
    """
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit (Ma et al., 2018, Figure 3c/d).

    A basic unit (``split=True``, stride 1, same width) splits the channels in half, transforms one half with
    1x1 -> 3x3 depthwise -> 1x1 and concatenates it with the other. A downsampling unit (``split=False``) feeds
    the whole input to both branches (the left one 3x3 depthwise -> 1x1) and doubles the width; it runs at stride 1
    where the map is too small to halve. Both end with a channel shuffle of the two halves.

    Shape:
        x: (N, cin, H, W) -> (N, cout, H', W').
    """

    def __init__(self, cin: int, cout: int, stride: int, split: bool, norm: str, in_hw: Size, out_hw: Size) -> None:
        super().__init__()
        self.split = split
        half = cout // 2
        if split and (cin != cout or stride != 1):
            raise ConfigError(f"a basic ShuffleNetV2 unit keeps width and size, got {cin}->{cout}, stride {stride}")
        branch_in = cin // 2 if split else cin
        self.left: nn.Module = nn.Identity()
        if not split:
            self.left = nn.Sequential(
                _ConvNorm(cin, cin, 3, stride, norm, out_hw, groups=cin, act="none"),
                _ConvNorm(cin, half, 1, 1, norm, out_hw),
            )
        self.right = nn.Sequential(
            _ConvNorm(branch_in, half, 1, 1, norm, in_hw),
            _ConvNorm(half, half, 3, stride, norm, out_hw, groups=half, act="none"),
            _ConvNorm(half, half, 1, 1, norm, out_hw),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unit output: both branches concatenated, then shuffled."""
        if self.split:
            a, b = x.chunk(2, dim=1)
            out = torch.cat([a, self.right(b)], dim=1)
        else:
            out = torch.cat([self.left(x), self.right(x)], dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """Small-image ShuffleNetV2 (Ma et al., 2018): 3x3 stride-1 stem, no max pool, stages of 4, 8, 4 units.

    Args:
        in_channels, num_classes, image_size: input channels C, classes K, (H, W).
        stage_channels: output widths of the three stages (Table 5: 116, 232, 464 at 1.0x; 48, 96, 192 at 0.5x).
        last_channels: width of the final 1x1 conv (1024).
        norm: key of ``NORM_LAYERS`` (``batch``).

    Shape:
        x: (N, C, H, W); forward(x): (N, K); embed(x): (N, last_channels).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        image_size: Size,
        stage_channels: tuple[int, int, int] = (116, 232, 464),
        stage_units: tuple[int, int, int] = (4, 8, 4),
        last_channels: int = 1024,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if any(c % 2 for c in stage_channels):
            raise ConfigError(f"stage_channels must be even (the units split channels in halves), got {stage_channels}")
        hw: Size = (int(image_size[0]), int(image_size[1]))
        cin = 24
        layers: list[nn.Module] = [_ConvNorm(in_channels, cin, 3, 1, norm, hw)]
        for cout, units in zip(stage_channels, stage_units, strict=True):
            for i in range(units):
                stride, out_hw = _stride_for(hw, 2 if i == 0 else 1)
                layers.append(ShuffleUnit(cin, cout, stride, i > 0, norm, hw, out_hw))
                cin, hw = cout, out_hw
        layers.append(_ConvNorm(cin, last_channels, 1, 1, norm, hw))
        self.features = nn.Sequential(*layers)
        self.num_features = last_channels
        self.classifier = nn.Linear(last_channels, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Globally pooled features, shape (N, num_features)."""
        return F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, shape (N, num_classes)."""
        return self.classifier(self.embed(x))


# ----------------------------------------------------------------------------------------------------------------------
# DenseNet
# ----------------------------------------------------------------------------------------------------------------------


class DenseLayer(nn.Module):
    """DenseNet-BC layer: BN-ReLU-1x1 conv to ``bn_size * growth``, BN-ReLU-3x3 conv to ``growth``, concatenated.

    Shape:
        x: (N, cin, H, W) -> (N, cin + growth, H, W).
    """

    def __init__(self, cin: int, growth: int, bn_size: int, norm: str, hw: Size) -> None:
        super().__init__()
        mid = bn_size * growth
        self.norm1 = create_norm(norm, cin, hw)
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.norm2 = create_norm(norm, mid, hw)
        self.conv2 = nn.Conv2d(mid, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The input with the layer's ``growth`` new channels appended."""
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return torch.cat([x, out], dim=1)


class Transition(nn.Module):
    """DenseNet-BC transition: BN-ReLU-1x1 conv (compression), then 2x2 average pool (skipped on tiny maps).

    Shape:
        x: (N, cin, H, W) -> (N, cout, H / 2, W / 2) or (N, cout, H, W) without the pool.
    """

    def __init__(self, cin: int, cout: int, norm: str, hw: Size, pool: bool) -> None:
        super().__init__()
        self.norm = create_norm(norm, cin, hw)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Compressed (and pooled) map."""
        return self.pool(self.conv(F.relu(self.norm(x))))


class DenseNet(nn.Module):
    """Small-image DenseNet-BC (Huang et al., 2017): 3x3 stride-1 stem, four dense blocks, three transitions.

    Args:
        in_channels, num_classes, image_size: input channels C, classes K, (H, W).
        growth: growth rate k (32 for DenseNet-121).
        blocks: layers per dense block ((6, 12, 24, 16) for DenseNet-121).
        bn_size: bottleneck width factor (4).
        compression: channel factor of the transitions (0.5).
        norm: key of ``NORM_LAYERS`` (``batch``).

    Shape:
        x: (N, C, H, W); forward(x): (N, K); embed(x): (N, D), D = 1024 for DenseNet-121.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        image_size: Size,
        growth: int = 32,
        blocks: tuple[int, ...] = (6, 12, 24, 16),
        bn_size: int = 4,
        compression: float = 0.5,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if not 0 < compression <= 1:
            raise ConfigError(f"compression must be in (0, 1], got {compression!r}")
        hw: Size = (int(image_size[0]), int(image_size[1]))
        c = 2 * growth
        layers: list[nn.Module] = [nn.Conv2d(in_channels, c, 3, padding=1, bias=False)]
        for b, n in enumerate(blocks):
            for _ in range(n):
                layers.append(DenseLayer(c, growth, bn_size, norm, hw))
                c += growth
            if b != len(blocks) - 1:
                cout = int(c * compression)
                new_hw = pooled_size(hw, last=False)
                layers.append(Transition(c, cout, norm, hw, pool=new_hw is not None))
                c, hw = cout, new_hw or hw
        layers.append(create_norm(norm, c, hw))
        layers.append(nn.ReLU())
        self.features = nn.Sequential(*layers)
        self.num_features = c
        self.classifier = nn.Linear(c, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Globally pooled features, shape (N, num_features)."""
        return F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, shape (N, num_classes)."""
        return self.classifier(self.embed(x))


# ----------------------------------------------------------------------------------------------------------------------
# Builders only fill an args dict (timm style).
# ----------------------------------------------------------------------------------------------------------------------


def _build(cls: type[nn.Module], variant_args: dict, **kwargs) -> nn.Module:
    # the caller's kwargs override the variant's defaults
    return cls(**{**variant_args, **kwargs})


@register_model("mobilenetv2")
def mobilenetv2(*, in_channels: int, num_classes: int, image_size: Size, **kwargs) -> nn.Module:
    """Small-image MobileNetV2 1.0x with BatchNorm (INFER's and G-VBSM's CIFAR pool)."""
    args = dict(width_mult=1.0, norm="batch")
    return _build(MobileNetV2, args, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


@register_model("shufflenetv2")
def shufflenetv2(*, in_channels: int, num_classes: int, image_size: Size, **kwargs) -> nn.Module:
    """Small-image ShuffleNetV2 1.0x with BatchNorm."""
    args = dict(stage_channels=(116, 232, 464), norm="batch")
    return _build(ShuffleNetV2, args, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


@register_model("shufflenetv2_x0_5")
def shufflenetv2_x0_5(*, in_channels: int, num_classes: int, image_size: Size, **kwargs) -> nn.Module:
    """Small-image ShuffleNetV2 0.5x with BatchNorm (G-VBSM's ``shufflenet_v2_x0_5`` width)."""
    args = dict(stage_channels=(48, 96, 192), norm="batch")
    return _build(ShuffleNetV2, args, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


@register_model("densenet121")
def densenet121(*, in_channels: int, num_classes: int, image_size: Size, **kwargs) -> nn.Module:
    """Small-image DenseNet-121 (growth 32, blocks 6-12-24-16, 3x3 stem) with BatchNorm."""
    args = dict(growth=32, blocks=(6, 12, 24, 16), norm="batch")
    return _build(DenseNet, args, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)
