"""Norm, activation and pooling layers resolved by name through lookup tables.

The dataset-distillation code bases pick these with long if/elif chains on strings (``_get_normlayer``,
``_get_activation``, ``_get_pooling`` in the DC/MTT ``networks.py``); here each string maps to a small factory in
a dict, as timm's ``create_norm``, so adding one is a one-line change and an unknown name gets a did-you-mean.

Every layer is functional-friendly: no ``inplace=True`` activations and no data-dependent control flow, so a model
built from them works under ``torch.func.vmap`` and ``torch.func.grad`` unless it holds BatchNorm running stats.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from condense.errors import UnknownNameError
from condense.registry import did_you_mean

__all__ = [
    "NORM_LAYERS",
    "ACT_LAYERS",
    "POOL_LAYERS",
    "create_norm",
    "create_act",
    "create_pool",
    "pooled_size",
    "has_running_stats",
]

# factory(num_channels, (h, w)) -> module; the spatial size is only used by the DC-style layer norm.
NormFactory = Callable[[int, tuple[int, int]], nn.Module]

NORM_LAYERS: dict[str, NormFactory] = {
    # "Instance norm" as in the DC/MTT code: one group per channel with a learnable affine, no running stats.
    "instance": lambda c, hw: nn.GroupNorm(c, c, affine=True),
    "batch": lambda c, hw: nn.BatchNorm2d(c),
    # DC's "layernorm" normalizes each sample over (C, H, W) with an element-wise affine of that shape.
    "layer": lambda c, hw: nn.LayerNorm([c, hw[0], hw[1]], elementwise_affine=True),
    # DC's "groupnorm": 4 groups (falls back to 1 group when C is not divisible by 4).
    "group": lambda c, hw: nn.GroupNorm(4 if c % 4 == 0 else 1, c, affine=True),
    "none": lambda c, hw: nn.Identity(),
}

ACT_LAYERS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,  # never inplace: in-place ops break torch.func transforms on tensors that need grad
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
}

POOL_LAYERS: dict[str, Callable[[], nn.Module]] = {
    "avg": lambda: nn.AvgPool2d(kernel_size=2, stride=2),
    "max": lambda: nn.MaxPool2d(kernel_size=2, stride=2),
    "none": nn.Identity,
}


def _lookup(table: dict[str, Callable[..., nn.Module]], kind: str, name: str) -> Callable[..., nn.Module]:
    if name not in table:
        names = sorted(table)
        raise UnknownNameError(f"unknown {kind} '{name}'{did_you_mean(name, names)} available: {', '.join(names)}")
    return table[name]


def create_norm(name: str, num_channels: int, spatial: tuple[int, int]) -> nn.Module:
    """Build the norm layer ``name`` for ``num_channels`` channels on a map of size ``spatial``.

    Args:
        name: one of ``NORM_LAYERS`` (``instance``, ``batch``, ``layer``, ``group``, ``none``).
        num_channels: channels C of the normalized map.
        spatial: (H, W) of the normalized map; only the layer norm uses it.

    Raises:
        UnknownNameError: ``name`` is not in the table.

    Shape:
        input and output: (N, C, H, W).

    Example:
        >>> norm = create_norm("instance", 8, (4, 4))  # GroupNorm with one group per channel
        >>> type(norm).__name__, norm.num_groups
        ('GroupNorm', 8)
    """
    return _lookup(NORM_LAYERS, "norm", name)(num_channels, spatial)


def create_act(name: str) -> nn.Module:
    """Build the activation ``name`` (one of ``ACT_LAYERS``); raises :class:`UnknownNameError` otherwise.

    Example:
        >>> create_act("relu")
        ReLU()
    """
    return _lookup(ACT_LAYERS, "activation", name)()


def create_pool(name: str) -> nn.Module:
    """Build the 2x2, stride-2 pooling ``name`` (``avg``, ``max`` or ``none``).

    Example:
        >>> create_pool("max")
        MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)
    """
    return _lookup(POOL_LAYERS, "pooling", name)()


def pooled_size(hw: tuple[int, int], *, last: bool) -> tuple[int, int] | None:
    """Spatial size after a 2x2 pool, or None when the pool must be skipped.

    Small inputs (8x8 digits) would otherwise shrink to nothing. A pool is skipped when it would leave less than
    1x1, and also when another normalized conv follows (``last=False``) and the map would drop below 2x2: an
    instance norm over a single position outputs its bias for every input, which would cut the signal.

    Args:
        hw: (H, W) before the pool.
        last: True when no convolution follows this pool.
    """
    h, w = hw[0] // 2, hw[1] // 2
    floor = 1 if last else 2
    if h < floor or w < floor:
        return None
    return (h, w)


def has_running_stats(model: nn.Module) -> bool:
    """True if any submodule keeps running statistics (BatchNorm / InstanceNorm with ``track_running_stats``).

    Such models update buffers in training-mode forward passes, so they cannot be vmapped over stacked
    parameters with ``torch.func``; callers fall back to a per-model loop.

    Example:
        >>> has_running_stats(nn.BatchNorm2d(4)), has_running_stats(nn.GroupNorm(4, 4))
        (True, False)
    """
    return any(
        getattr(m, "track_running_stats", False) and getattr(m, "running_mean", None) is not None
        for m in model.modules()
    )
