"""Small classic networks sized for 8x8 to 32x32 images: MLP, LeNet, AlexNet and VGG11.

These follow the small-image versions in the DC code base (``networks.py`` of VICO-UoE/DatasetCondensation), used
for cross-architecture evaluation: no large strides, 3x3 or 5x5 convolutions, a linear classifier on the flattened
final map. The final map's size is computed at construction, and pools that would shrink it below 2x2 while
another normalized conv follows are skipped (:func:`condense.models.layers.pooled_size`), so the same models run
on 8x8 digits and on 32x32 CIFAR images.

References:
    LeCun, Bottou, Bengio & Haffner, "Gradient-Based Learning Applied to Document Recognition", Proc. IEEE 1998.
    Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional Neural Networks",
    NeurIPS 2012.
    Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015,
    arXiv:1409.1556.
    Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient Matching", ICLR 2021, arXiv:2006.05929
    (the small-image variants).
"""

from __future__ import annotations

import torch
from torch import nn

from condense.errors import UnknownNameError
from condense.models.layers import create_act, create_norm, create_pool, pooled_size
from condense.models.registry import register_model
from condense.registry import did_you_mean

__all__ = ["MLP", "LeNet", "AlexNet", "VGG"]

Size = tuple[int, int]


def _conv_out(hw: Size, kernel: int, padding: int) -> Size:
    return (hw[0] + 2 * padding - kernel + 1, hw[1] + 2 * padding - kernel + 1)


class MLP(nn.Module):
    """Three-layer perceptron on flattened pixels (DC's ``MLP``: 128 -> 128 -> K with ReLU).

    Args:
        in_channels: image channels C.
        num_classes: number of classes K.
        image_size: (H, W) of the inputs.
        hidden: width of both hidden layers.
        act: key of ``ACT_LAYERS``.

    Shape:
        x: (N, C, H, W).
        forward(x): (N, K) logits.
        embed(x): (N, hidden), the second hidden layer's activations.
    """

    def __init__(
        self, *, in_channels: int, num_classes: int, image_size: Size, hidden: int = 128, act: str = "relu"
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Flatten(1),
            nn.Linear(in_channels * image_size[0] * image_size[1], hidden),
            create_act(act),
            nn.Linear(hidden, hidden),
            create_act(act),
        )
        self.num_features = hidden
        self.classifier = nn.Linear(hidden, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features, shape (N, hidden)."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, shape (N, num_classes)."""
        return self.classifier(self.embed(x))


class LeNet(nn.Module):
    """LeNet-5: two 5x5 conv + ReLU + 2x2 max-pool stages, then 120 -> 84 -> K (LeCun et al., 1998).

    As in the DC code, 28x28 inputs get padding 2 on the first conv (so 32x32 and 28x28 both end at 16x5x5). A
    conv that would leave too small a map for its pool gets padding 2 ("same"), and a pool that would leave less
    than 1x1 is skipped, so 8x8 digits work (8 -> 4 -> 2 -> 2 -> 1).

    Args:
        in_channels: image channels C.
        num_classes: number of classes K.
        image_size: (H, W) of the inputs.
        act: key of ``ACT_LAYERS``.

    Shape:
        x: (N, C, H, W).
        forward(x): (N, K) logits.
        embed(x): (N, 84), the last hidden layer's activations.
    """

    def __init__(self, *, in_channels: int, num_classes: int, image_size: Size, act: str = "relu") -> None:
        super().__init__()
        hw: Size = (image_size[0], image_size[1])
        layers: list[nn.Module] = []
        channels = in_channels
        for i, out_channels in enumerate((6, 16)):
            valid = _conv_out(hw, 5, 0)
            padding = 2 if (i == 0 and hw == (28, 28)) or min(valid) < 2 else 0
            layers += [nn.Conv2d(channels, out_channels, kernel_size=5, padding=padding), create_act(act)]
            hw = _conv_out(hw, 5, padding)
            new_hw = pooled_size(hw, last=True)  # no norm layers, so only the 1x1 floor applies
            if new_hw is not None:
                layers.append(create_pool("max"))
                hw = new_hw
            channels = out_channels
        layers.append(nn.Flatten(1))
        layers += [nn.Linear(16 * hw[0] * hw[1], 120), create_act(act), nn.Linear(120, 84), create_act(act)]
        self.features = nn.Sequential(*layers)
        self.num_features = 84
        self.classifier = nn.Linear(84, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features, shape (N, 84)."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, shape (N, num_classes)."""
        return self.classifier(self.embed(x))


class AlexNet(nn.Module):
    """Five-conv AlexNet for small images (DC's ``AlexNet`` / ``AlexNetBN``; Krizhevsky et al., 2012).

    Conv 5x5/128, pool, conv 5x5/192, pool, conv 3x3/256, 3x3/192, 3x3/192, pool, then a linear classifier: a
    32x32 input ends at 192x4x4. 28x28 inputs get padding 4 on the first conv (treated as 32x32, as in DC).

    Args:
        in_channels: image channels C.
        num_classes: number of classes K.
        image_size: (H, W) of the inputs.
        norm: key of ``NORM_LAYERS`` placed after each conv (``none`` for AlexNet, ``batch`` for AlexNetBN).
        act: key of ``ACT_LAYERS``.

    Shape:
        x: (N, C, H, W).
        forward(x): (N, K) logits.
        embed(x): (N, 192 * h * w) flattened final map (3072 on 32x32).
    """

    # (out_channels, kernel, pool after)
    _LAYERS = ((128, 5, True), (192, 5, True), (256, 3, False), (192, 3, False), (192, 3, True))

    def __init__(
        self, *, in_channels: int, num_classes: int, image_size: Size, norm: str = "none", act: str = "relu"
    ) -> None:
        super().__init__()
        hw: Size = (image_size[0], image_size[1])
        layers: list[nn.Module] = []
        channels = in_channels
        for i, (out_channels, kernel, pool) in enumerate(self._LAYERS):
            padding = kernel // 2
            if i == 0 and hw == (28, 28):
                padding, hw = 4, (32, 32)
            layers += [
                nn.Conv2d(channels, out_channels, kernel_size=kernel, padding=padding),
                create_norm(norm, out_channels, hw),
                create_act(act),
            ]
            channels = out_channels
            if pool:
                new_hw = pooled_size(hw, last=i == len(self._LAYERS) - 1)
                if new_hw is not None:
                    layers.append(create_pool("max"))
                    hw = new_hw
        self.features = nn.Sequential(*layers)
        self.num_features = channels * hw[0] * hw[1]
        self.classifier = nn.Linear(self.num_features, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened final feature map, shape (N, 192 * h * w)."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, shape (N, num_classes)."""
        return self.classifier(self.embed(x))


# "M" is a 2x2 max pool; numbers are 3x3 conv widths (Simonyan & Zisserman 2015, configuration A).
VGG_CFGS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
}


class VGG(nn.Module):
    """VGG for small images (DC's ``VGG11`` / ``VGG11BN``; Simonyan & Zisserman, ICLR 2015).

    3x3 conv -> norm -> ReLU stacks separated by 2x2 max pools and one linear classifier, without VGG's large
    fully connected head: a 32x32 input ends at 512x1x1. The DC and MTT code default VGG11 to instance norm
    (``GroupNorm(C, C)``); ``vgg11_bn`` uses BatchNorm. 28x28 inputs get padding 3 on the first conv, as in DC.

    Args:
        in_channels: image channels C.
        num_classes: number of classes K.
        image_size: (H, W) of the inputs.
        cfg: key of ``VGG_CFGS``.
        norm: key of ``NORM_LAYERS``.
        act: key of ``ACT_LAYERS``.

    Shape:
        x: (N, C, H, W).
        forward(x): (N, K) logits.
        embed(x): (N, 512 * h * w) flattened final map (512 on 32x32 and 8x8).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        image_size: Size,
        cfg: str = "vgg11",
        norm: str = "instance",
        act: str = "relu",
    ) -> None:
        super().__init__()
        if cfg not in VGG_CFGS:
            names = sorted(VGG_CFGS)
            hint = did_you_mean(cfg, names)
            raise UnknownNameError(f"unknown VGG config '{cfg}'{hint} available: {', '.join(names)}")
        spec = VGG_CFGS[cfg]
        hw: Size = (image_size[0], image_size[1])
        layers: list[nn.Module] = []
        channels = in_channels
        for i, item in enumerate(spec):
            if item == "M":
                new_hw = pooled_size(hw, last=all(s == "M" for s in spec[i + 1 :]))
                if new_hw is not None:
                    layers.append(create_pool("max"))
                    hw = new_hw
                continue
            padding = 1
            if i == 0 and hw == (28, 28):
                padding, hw = 3, (32, 32)
            layers += [
                nn.Conv2d(channels, int(item), kernel_size=3, padding=padding),
                create_norm(norm, int(item), hw),
                create_act(act),
            ]
            channels = int(item)
        self.features = nn.Sequential(*layers)
        self.num_features = channels * hw[0] * hw[1]
        self.classifier = nn.Linear(self.num_features, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened final feature map, shape (N, 512 * h * w)."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, shape (N, num_classes)."""
        return self.classifier(self.embed(x))


def _build(cls: type[nn.Module], variant_args: dict, **kwargs) -> nn.Module:
    # the caller's kwargs override the variant's defaults
    return cls(**{**variant_args, **kwargs})


# Builders only fill an args dict (timm style).


@register_model("mlp")
def mlp(*, in_channels: int, num_classes: int, image_size: Size, **kwargs) -> nn.Module:
    """MLP with two hidden layers of 128 units."""
    args = dict()
    return _build(MLP, args, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


@register_model("lenet")
def lenet(*, in_channels: int, num_classes: int, image_size: Size, **kwargs) -> nn.Module:
    """LeNet-5 with ReLU and max pooling."""
    args = dict()
    return _build(LeNet, args, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


@register_model("alexnet")
def alexnet(*, in_channels: int, num_classes: int, image_size: Size, **kwargs) -> nn.Module:
    """Small-image AlexNet without normalization."""
    args = dict(norm="none")
    return _build(AlexNet, args, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


@register_model("alexnet_bn")
def alexnet_bn(*, in_channels: int, num_classes: int, image_size: Size, **kwargs) -> nn.Module:
    """Small-image AlexNet with BatchNorm after each conv."""
    args = dict(norm="batch")
    return _build(AlexNet, args, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


@register_model("vgg11")
def vgg11(*, in_channels: int, num_classes: int, image_size: Size, **kwargs) -> nn.Module:
    """Small-image VGG11 with instance norm (the DC/MTT default)."""
    args = dict(cfg="vgg11", norm="instance")
    return _build(VGG, args, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


@register_model("vgg11_bn")
def vgg11_bn(*, in_channels: int, num_classes: int, image_size: Size, **kwargs) -> nn.Module:
    """Small-image VGG11 with BatchNorm."""
    args = dict(cfg="vgg11", norm="batch")
    return _build(VGG, args, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)
