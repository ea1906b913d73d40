"""CIFAR-style ResNets for small images: ResNet-18, its average-pool-downsampling variant (ResNet18_AP), ResNet-50.

As in the DC/MTT code: a 3x3 stride-1 stem without max pool, four stages of two basic blocks (64, 128, 256,
512 channels), "instance norm" (``GroupNorm(C, C)``) by default and BatchNorm in the ``_bn`` variants. ResNet-50
(``resnet50_bn``, a teacher and student of the decoupled methods: SRe2L, INFER) has the same stem and stages of
3, 4, 6, 3 bottleneck blocks (1x1 -> 3x3 -> 1x1, expansion 4, the stride on the 3x3 conv as in torchvision's
"ResNet v1.5"), so its features are 2048-d. A stage
keeps stride 1 when stride 2 would shrink its map below 2x2 (instance norm over one position erases the signal),
so 8x8 digits run 8 -> 4 -> 2 -> 2 while 32x32 images run 32 -> 16 -> 8 -> 4 as in the reference code.

References:
    He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, arXiv:1512.03385
    (bottleneck blocks: Section 4.1, Table 1).
    Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient Matching", ICLR 2021, arXiv:2006.05929
    (``ResNet18``, ``ResNet18BN``, ``ResNet18BN_AP`` in its code base).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from condense.config import check_choice
from condense.errors import ConfigError
from condense.models.layers import create_norm, pooled_size
from condense.models.registry import register_model

__all__ = ["BasicBlock", "Bottleneck", "ResNet"]

Size = tuple[int, int]


def _block_out_hw(hw: Size, stride: int, avg_down: bool) -> Size:
    if stride == 1:
        return hw
    if avg_down:  # 2x2 average pool floors odd sizes
        return (hw[0] // 2, hw[1] // 2)
    return ((hw[0] + 1) // 2, (hw[1] + 1) // 2)  # 3x3 conv, padding 1, stride 2 rounds up


class BasicBlock(nn.Module):
    """Two 3x3 conv-norm layers with an identity or projection shortcut (He et al., 2016).

    With ``avg_down`` (ResNet18_AP) the block downsamples by 2x2 average pooling instead of strided convs: after
    the first conv-norm-ReLU on the main path, and after the 1x1 projection on the shortcut.

    Args:
        in_planes: input channels.
        planes: output channels.
        stride: 1 or 2.
        norm: key of ``NORM_LAYERS``.
        in_hw: (H, W) of the input map (used by size-aware norms).
        avg_down: downsample by average pooling instead of stride.

    Shape:
        x: (N, in_planes, H, W) -> (N, planes, H / stride, W / stride).
    """

    def __init__(self, in_planes: int, planes: int, stride: int, norm: str, in_hw: Size, avg_down: bool) -> None:
        super().__init__()
        self.out_hw = _block_out_hw(in_hw, stride, avg_down)
        out_hw = self.out_hw
        conv_stride = 1 if avg_down else stride
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=conv_stride, padding=1, bias=False)
        self.bn1 = create_norm(norm, planes, in_hw if avg_down else out_hw)
        self.pool = nn.AvgPool2d(2, 2) if avg_down and stride != 1 else nn.Identity()
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = create_norm(norm, planes, out_hw)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            proj: list[nn.Module] = [nn.Conv2d(in_planes, planes, kernel_size=1, stride=conv_stride, bias=False)]
            if avg_down and stride != 1:
                proj.append(nn.AvgPool2d(2, 2))
            proj.append(create_norm(norm, planes, out_hw))
            self.shortcut = nn.Sequential(*proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block output (out-of-place add so torch.func transforms work)."""
        out = self.pool(F.relu(self.bn1(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand, each conv-norm, with an identity or projection shortcut (He et al.).

    Args:
        in_planes: input channels.
        planes: the bottleneck width; the block outputs ``planes * 4`` channels.
        stride: 1 or 2 (on the 3x3 conv and the projection).
        norm: key of ``NORM_LAYERS``.
        in_hw: (H, W) of the input map (used by size-aware norms).

    Shape:
        x: (N, in_planes, H, W) -> (N, 4 * planes, ceil(H / stride), ceil(W / stride)).
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int, norm: str, in_hw: Size) -> None:
        super().__init__()
        self.out_hw = _block_out_hw(in_hw, stride, avg_down=False)
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = create_norm(norm, planes, in_hw)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = create_norm(norm, planes, self.out_hw)
        self.conv3 = nn.Conv2d(planes, out, kernel_size=1, bias=False)
        self.bn3 = create_norm(norm, out, self.out_hw)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out, kernel_size=1, stride=stride, bias=False), create_norm(norm, out, self.out_hw)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block output (out-of-place add so torch.func transforms work)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet with basic blocks (He et al., 2016; DC/MTT ``ResNet`` and ``ResNet_AP``).

    The standard variant ends with global average pooling, so ``embed`` is 512-d. The AP variant flattens the
    final map instead (DC's ``ResNet_AP`` feeds 512*4*4 to the classifier on 32x32 inputs).

    Args:
        in_channels: image channels C.
        num_classes: number of classes K.
        image_size: (H, W) of the inputs.
        layers: blocks per stage ((2, 2, 2, 2) for ResNet-18).
        norm: key of ``NORM_LAYERS`` (``instance`` as in MTT, ``batch`` for the BN variants).
        avg_down: ResNet18_AP: downsample with 2x2 average pooling and flatten the final map.
        block: ``"basic"`` (ResNet-18) or ``"bottleneck"`` (ResNet-50; not with ``avg_down``).

    Shape:
        x: (N, C, H, W).
        forward(x): (N, K) logits.
        embed(x): (N, D); D = 512 (global pool), 512 * h * w (AP; 8192 on 32x32) or 2048 (bottleneck).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        image_size: Size,
        layers: tuple[int, ...] = (2, 2, 2, 2),
        norm: str = "instance",
        avg_down: bool = False,
        block: str = "basic",
    ) -> None:
        super().__init__()
        check_choice("block", block, ("basic", "bottleneck"))
        if block == "bottleneck" and avg_down:
            raise ConfigError("avg_down=True is only implemented for basic blocks (ResNet18_AP), not bottleneck")
        hw: Size = (image_size[0], image_size[1])
        self.avg_down = avg_down
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = create_norm(norm, 64, hw)
        blocks: list[nn.Module] = []
        in_planes = 64
        for stage, num_blocks in enumerate(layers):
            planes = 64 * 2**stage
            for b in range(num_blocks):
                stride = 1
                if stage > 0 and b == 0 and pooled_size(hw, last=False) is not None:
                    stride = 2
                if block == "bottleneck":
                    blocks.append(Bottleneck(in_planes, planes, stride, norm, hw))
                    in_planes = planes * Bottleneck.expansion
                else:
                    blocks.append(BasicBlock(in_planes, planes, stride, norm, hw, avg_down))
                    in_planes = planes
                hw = blocks[-1].out_hw
        self.layers = nn.Sequential(*blocks)
        self.num_features = in_planes * hw[0] * hw[1] if avg_down else in_planes
        self.classifier = nn.Linear(self.num_features, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features, shape (N, num_features)."""
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        if not self.avg_down:
            out = F.adaptive_avg_pool2d(out, 1)
        return out.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, shape (N, num_classes)."""
        return self.classifier(self.embed(x))


def _create_resnet(variant_args: dict, **kwargs) -> ResNet:
    # the caller's kwargs override the variant's defaults
    return ResNet(**{**variant_args, **kwargs})


# Builders only fill an args dict (timm style).


@register_model("resnet18")
def resnet18(*, in_channels: int, num_classes: int, image_size: Size, **kwargs) -> ResNet:
    """ResNet-18 with instance norm (the MTT code base's ``ResNet18``)."""
    args = dict(layers=(2, 2, 2, 2), norm="instance")
    return _create_resnet(args, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


@register_model("resnet18_bn")
def resnet18_bn(*, in_channels: int, num_classes: int, image_size: Size, **kwargs) -> ResNet:
    """ResNet-18 with BatchNorm (DC's ``ResNet18BN``)."""
    args = dict(layers=(2, 2, 2, 2), norm="batch")
    return _create_resnet(args, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


@register_model("resnet18_ap")
def resnet18_ap(*, in_channels: int, num_classes: int, image_size: Size, **kwargs) -> ResNet:
    """ResNet-18 with average-pool downsampling and instance norm (MTT's ``ResNet18_AP`` evaluation model)."""
    args = dict(layers=(2, 2, 2, 2), norm="instance", avg_down=True)
    return _create_resnet(args, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


@register_model("resnet18_bn_ap")
def resnet18_bn_ap(*, in_channels: int, num_classes: int, image_size: Size, **kwargs) -> ResNet:
    """ResNet-18 with average-pool downsampling and BatchNorm (DC's ``ResNet18BN_AP``)."""
    args = dict(layers=(2, 2, 2, 2), norm="batch", avg_down=True)
    return _create_resnet(args, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


@register_model("resnet50_bn")
def resnet50_bn(*, in_channels: int, num_classes: int, image_size: Size, **kwargs) -> ResNet:
    """CIFAR-style ResNet-50 (3x3 stride-1 stem, no max pool, bottleneck blocks) with BatchNorm."""
    args = dict(layers=(3, 4, 6, 3), norm="batch", block="bottleneck")
    return _create_resnet(args, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)
