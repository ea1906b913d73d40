"""Differentiable Siamese Augmentation (DSA): explicit random parameters, exact replay, named presets.

DSA (Zhao and Bilen, ICML 2021) augments real and synthetic images with the *same* differentiable transform so that
gradients reach the synthetic pixels through the augmentation. Every matcher (DC/DSA, DM, MTT, FTD, DATM), the expert
recorder and the evaluation trainer of that family use it, so ``dsa`` reproduces the DC code's parameter ranges
exactly (``VICO-UoE/DatasetCondensation:utils.py``, ``ParamDiffAug``/``DiffAugment``, copied unchanged into MTT):

    ==========  ==========================================  ========================
    group       parameters drawn per sample                 module argument
    ==========  ==========================================  ========================
    color       brightness + (U - 0.5) * 1.0,               ``brightness=1.0``
                saturation x U * 2.0, contrast x (U + 0.5)  ``saturation=2.0``, ``contrast=0.5``
    crop        translate by {-s..s} px, s = 0.125 * size   ``crop_ratio=0.125``
    cutout      zero a 0.5 * size square                    ``cutout_ratio=0.5``
    flip        mirror width with p = 0.5                   ``flip_prob=0.5``
    scale       sx, sy ~ U(1/1.2, 1.2), independent         ``scale_ratio=1.2``
    rotate      U(-15, 15) degrees                          ``rotate_degrees=15.0``
    ==========  ==========================================  ========================

Mode ``"S"`` (the published one) picks ONE group per call for the whole batch (the choice is ``params["group"]``)
with per-sample parameters inside it; mode ``"M"`` applies every group in strategy order.

Differences from the DC code, all deliberate:
    - Randomness comes only from a ``torch.Generator`` argument; the DC code reseeds the *global* RNG
      (``torch.random.manual_seed(seed)``) to make the real and synthetic batches share a transform. Here the
      Siamese pairing is explicit: ``params = aug.sample(x_real, generator=g)`` then ``aug(x_syn, params=params)``.
    - ``sample(..., shared=True)`` is the DC code's ``seed != -1`` "batchmode" (one draw for the whole batch). Its
      tensors have leading size 1 and broadcast, so they also apply to a batch of another size (real vs synthetic).
      The DC code seeds sx and sy of ``scale`` from consecutive seeds; here they are simply two independent draws.
    - Color ops act on whatever tensor they receive (normalized, possibly ZCA-whitened), as in the DC code.

Seeds as a leading batch: images of shape (S, B, C, H, W) (or any extra leading dims) are flattened to (S*B, C, H, W)
internally and reshaped back, so per-sample parameters have leading size S*B. In mode "S" one group is drawn for the
whole call, shared by all seeds; call once per seed for independent group choices.

torch.func: ``apply`` is pure given ``params`` (no ``.item()`` on image values; only the CPU ``group`` index is read),
so ``torch.func.grad(lambda x: loss(model(aug(x, params=p))))(x)`` works. Draw ``params`` outside ``vmap``: a
Python-level group choice cannot be batched; with the params captured as constants, the apply also runs under vmap.

kornia: its augmentation modules (``RandomAffine``, ``RandomErasing``, ``ColorJiggle`` with ``same_on_batch`` and
replayed ``_params``) can express the same Siamese contract and are an optional alternative; condense does not need
kornia, and its distributions, fill modes and ``align_corners`` differ from DSA's, so published numbers use this path.

References:
    Zhao and Bilen, "Dataset Condensation with Differentiable Siamese Augmentation", ICML 2021, arXiv:2102.08259,
    Section 3.2 (Siamese augmentation) and the supplementary material (transformation ranges).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from condense.augment import functional as FA
from condense.errors import ConfigError, DataFormatError, MismatchError
from condense.registry import Registry

__all__ = ["DSA", "GROUPS", "PRESETS", "AUGMENTS", "get_augment", "list_augments"]

GROUPS = ("color", "crop", "cutout", "flip", "scale", "rotate")

# The per-sample tensors each group needs, in drawing order.
_GROUP_KEYS = {
    "color": ("brightness", "saturation", "contrast"),
    "crop": ("crop_shift",),
    "cutout": ("cutout_center",),
    "flip": ("flip",),
    "scale": ("scale",),
    "rotate": ("rotate",),
}


class DSA(nn.Module):
    """Differentiable Siamese Augmentation with explicit, replayable random parameters.

    ``forward(x, params=None)`` draws parameters only when none are given (kornia's contract), so passing the
    ``params`` of one call into another applies exactly the same transform: the Siamese pairing of DSA.

    Args:
        strategy: groups joined by ``_`` from ``color, crop, cutout, flip, scale, rotate``; ``""`` is the identity.
        mode: ``"S"`` draws one group per call (published DSA), ``"M"`` applies all groups in order.
        flip_prob: probability of mirroring (DC ``prob_flip``).
        scale_ratio: r, scale factors ~ U(1/r, r) (DC ``ratio_scale``).
        rotate_degrees: maximum rotation in degrees (DC ``ratio_rotate``).
        crop_ratio: maximum translation as a fraction of the image size (DC ``ratio_crop_pad``).
        cutout_ratio: side of the cut square as a fraction of the image size (DC ``ratio_cutout``).
        brightness: brightness offset range, ``(U - 0.5) * brightness`` (DC ``brightness``).
        saturation: saturation factor range, ``U * saturation`` (DC ``saturation``).
        contrast: contrast factor offset, ``U + contrast`` (DC ``contrast``).

    Shape:
        x: (..., C, H, W), float; any leading dims (e.g. (S, B) for seeds x batch) are flattened to N.
        return: same shape as ``x``.

    Example:
        >>> aug = get_augment("dsa")
        >>> g = torch.Generator().manual_seed(0)
        >>> x_real, x_syn = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)
        >>> p = aug.sample(x_real, generator=g)
        >>> y_real, y_syn = aug(x_real, params=p), aug(x_syn, params=p)
        >>> y_real.shape
        torch.Size([4, 3, 8, 8])
    """

    def __init__(
        self,
        strategy: str = "color_crop_cutout_flip_scale_rotate",
        mode: str = "S",
        *,
        flip_prob: float = 0.5,
        scale_ratio: float = 1.2,
        rotate_degrees: float = 15.0,
        crop_ratio: float = 0.125,
        cutout_ratio: float = 0.5,
        brightness: float = 1.0,
        saturation: float = 2.0,
        contrast: float = 0.5,
    ) -> None:
        super().__init__()
        groups = tuple(g for g in strategy.split("_") if g)
        unknown = [g for g in groups if g not in GROUPS]
        if unknown:
            raise ConfigError(
                f"unknown DSA group(s) {unknown} in strategy '{strategy}'; allowed: {', '.join(GROUPS)} joined by '_'"
            )
        if len(set(groups)) != len(groups):
            raise ConfigError(f"DSA strategy '{strategy}' repeats a group; list each at most once")
        if mode not in ("S", "M"):
            raise ConfigError(f"DSA mode must be 'S' (one group per call) or 'M' (all groups), got {mode!r}")
        if not 0.0 <= flip_prob <= 1.0:
            raise ConfigError(f"flip_prob must be in [0, 1], got {flip_prob}")
        if scale_ratio < 1.0:
            raise ConfigError(f"scale_ratio must be >= 1 (factors ~ U(1/r, r)), got {scale_ratio}")
        for name, v in (("crop_ratio", crop_ratio), ("cutout_ratio", cutout_ratio)):
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {v}")
        for name, v in (("rotate_degrees", rotate_degrees), ("brightness", brightness), ("saturation", saturation)):
            if v < 0:
                raise ConfigError(f"{name} must be >= 0, got {v}")
        self.strategy = "_".join(groups)
        self.groups = groups
        self.mode = mode
        self.flip_prob = float(flip_prob)
        self.scale_ratio = float(scale_ratio)
        self.rotate_degrees = float(rotate_degrees)
        self.crop_ratio = float(crop_ratio)
        self.cutout_ratio = float(cutout_ratio)
        self.brightness = float(brightness)
        self.saturation = float(saturation)
        self.contrast = float(contrast)

    # ------------------------------------------------------------------------------------------------------------------
    # Description
    # ------------------------------------------------------------------------------------------------------------------

    @property
    def is_identity(self) -> bool:
        """True when the strategy is empty (the ``none`` preset)."""
        return not self.groups

    def config(self) -> dict[str, Any]:
        """JSON-able settings, recorded in buffers and artifacts; ``DSA(**aug.config())`` rebuilds it."""
        return {
            "strategy": self.strategy,
            "mode": self.mode,
            "flip_prob": self.flip_prob,
            "scale_ratio": self.scale_ratio,
            "rotate_degrees": self.rotate_degrees,
            "crop_ratio": self.crop_ratio,
            "cutout_ratio": self.cutout_ratio,
            "brightness": self.brightness,
            "saturation": self.saturation,
            "contrast": self.contrast,
        }

    def extra_repr(self) -> str:
        return f"strategy={self.strategy!r}, mode={self.mode!r}"

    # ------------------------------------------------------------------------------------------------------------------
    # Sizes derived from the image, exactly as the DC code rounds them
    # ------------------------------------------------------------------------------------------------------------------

    def _crop_range(self, h: int, w: int) -> tuple[int, int]:
        return int(h * self.crop_ratio + 0.5), int(w * self.crop_ratio + 0.5)

    def _cutout_size(self, h: int, w: int) -> tuple[int, int]:
        return int(h * self.cutout_ratio + 0.5), int(w * self.cutout_ratio + 0.5)

    # ------------------------------------------------------------------------------------------------------------------
    # Sampling
    # ------------------------------------------------------------------------------------------------------------------

    def sample(
        self, x: torch.Tensor, generator: torch.Generator | None = None, *, shared: bool = False
    ) -> dict[str, torch.Tensor]:
        """Draw the random parameters for a batch shaped like ``x`` (only its shape and device are read).

        Where the numbers come from: with ``generator=None`` the global CPU RNG; with a CPU generator they are
        drawn on the CPU and moved to ``x.device`` (the same seed gives the same parameters on any device, and a
        CPU generator works with CUDA images); with a generator on ``x.device`` they are drawn there directly.
        Every group of the strategy is drawn on every call, in a fixed order, so the stream does not depend on
        which group mode "S" picks.

        Args:
            x: the images to be augmented.
            generator: source of randomness; never the reseeded global RNG.
            shared: one draw for the whole batch (DC's Siamese seed / "batchmode") instead of one per sample;
                the tensors then have leading size 1 and broadcast over any batch size.

        Returns:
            A dict of tensors (empty for the identity):
            ``group``: () int64 on the CPU, index into ``self.groups`` (mode "S" only);
            ``brightness``, ``saturation``, ``contrast``: (M,) float32 offset / factors;
            ``crop_shift``: (M, 2) int64 ``(dy, dx)`` pixels; ``cutout_center``: (M, 2) int64 ``(cy, cx)``;
            ``flip``: (M,) bool; ``scale``: (M, 2) float32 ``(sx, sy)``; ``rotate``: (M,) float32 degrees.

        Shape:
            x: (..., C, H, W); M = prod of the leading dims, or 1 with ``shared=True``.
        """
        _check_images(x)
        if not self.groups:
            return {}
        draw_device = _draw_device(generator, x.device)
        h, w = int(x.shape[-2]), int(x.shape[-1])
        m = 1 if shared else math.prod(x.shape[:-3])
        g = generator

        def rand(*size: int) -> torch.Tensor:
            return torch.rand(*size, generator=g, device=draw_device)

        def randint(lo: int, hi: int, size: tuple[int, ...]) -> torch.Tensor:
            return torch.randint(lo, hi, size, generator=g, device=draw_device)

        params: dict[str, torch.Tensor] = {}
        if self.mode == "S":
            params["group"] = randint(0, len(self.groups), ()).cpu()
        for group in self.groups:
            if group == "color":
                params["brightness"] = (rand(m) - 0.5) * self.brightness
                params["saturation"] = rand(m) * self.saturation
                params["contrast"] = rand(m) + self.contrast
            elif group == "crop":
                sh, sw = self._crop_range(h, w)
                params["crop_shift"] = torch.stack([randint(-sh, sh + 1, (m,)), randint(-sw, sw + 1, (m,))], dim=1)
            elif group == "cutout":
                ch, cw = self._cutout_size(h, w)
                # DC code: offset ~ randint(0, size + (1 - cut % 2)); the square may hang over the border.
                params["cutout_center"] = torch.stack(
                    [randint(0, h + (1 - ch % 2), (m,)), randint(0, w + (1 - cw % 2), (m,))], dim=1
                )
            elif group == "flip":
                params["flip"] = rand(m) < self.flip_prob
            elif group == "scale":
                r = self.scale_ratio
                params["scale"] = rand(m, 2) * (r - 1.0 / r) + 1.0 / r
            elif group == "rotate":
                params["rotate"] = (rand(m) - 0.5) * 2.0 * self.rotate_degrees
        return {k: (v if k == "group" else v.to(x.device)) for k, v in params.items()}

    # ------------------------------------------------------------------------------------------------------------------
    # Applying
    # ------------------------------------------------------------------------------------------------------------------

    def _apply_group(self, group: str, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if group == "color":
            return FA.color(x, p["brightness"], p["saturation"], p["contrast"])
        if group == "crop":
            return FA.crop(x, p["crop_shift"])
        if group == "cutout":
            return FA.cutout(x, p["cutout_center"], self._cutout_size(h, w))
        if group == "flip":
            return FA.flip(x, p["flip"])
        if group == "scale":
            return FA.scale(x, p["scale"])
        return FA.rotate(x, p["rotate"])

    def selected_groups(self, params: dict[str, torch.Tensor]) -> tuple[str, ...]:
        """The groups ``params`` applies: the drawn one in mode "S", all of them in mode "M"."""
        if not self.groups:
            return ()
        if self.mode == "M":
            return self.groups
        if "group" not in params:
            raise MismatchError(
                "DSA mode 'S' params lack 'group'; pass params from sample() of an augmenter with the same strategy"
            )
        k = int(params["group"])  # a CPU index drawn by sample(), never an image value
        if not 0 <= k < len(self.groups):
            raise MismatchError(f"params['group']={k} is out of range for strategy '{self.strategy}'")
        return (self.groups[k],)

    def apply(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Apply the transform described by ``params`` (pure and differentiable w.r.t. ``x``).

        Shape:
            x: (..., C, H, W), float.
            params: as returned by :meth:`sample`, with leading size N (= prod of x's leading dims) or 1.
            return: same shape as ``x``.
        """
        _check_images(x)
        groups = self.selected_groups(params)
        if not groups:
            return x
        c, h, w = x.shape[-3:]
        n = math.prod(x.shape[:-3])
        flat = x.reshape(n, c, h, w)
        for group in groups:
            for key in _GROUP_KEYS[group]:
                if key not in params:
                    raise MismatchError(f"DSA params lack '{key}' needed by group '{group}'; got {sorted(params)}")
                lead = params[key].shape[0] if params[key].ndim else None
                if lead not in (1, n):
                    raise MismatchError(
                        f"DSA params['{key}'] has leading size {lead}, expected {n} (one per image) or 1 (shared); "
                        f"sample() on a batch of the same size or with shared=True"
                    )
            flat = self._apply_group(group, flat, params)
        return flat.reshape(x.shape)

    def forward(
        self,
        x: torch.Tensor,
        params: dict[str, torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
        return_params: bool = False,
        shared: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Augment ``x``: replay ``params`` when given, otherwise draw them with ``generator`` first.

        Args:
            x: images.
            params: parameters from :meth:`sample` or a previous ``return_params=True`` call.
            generator: used only when ``params`` is None.
            return_params: also return the parameters used, for a Siamese replay on another batch.
            shared: passed to :meth:`sample` when drawing.

        Shape:
            x: (..., C, H, W), float.
            return: same shape as ``x`` (and the params dict when ``return_params``).
        """
        if params is None:
            params = self.sample(x, generator=generator, shared=shared)
        y = self.apply(x, params)
        return (y, params) if return_params else y


def _check_images(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim < 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataFormatError(f"DSA expects images shaped (..., C, H, W) with at least 4 dims, got {shape}")


def _draw_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    """Where to draw: the CPU for no/CPU generators, else the generator's device, which must be the images'."""
    if generator is None or generator.device.type == "cpu":
        return torch.device("cpu")
    gd = generator.device
    if gd.type != device.type or (gd.index or 0) != (device.index or 0):
        raise ConfigError(
            f"generator is on {gd} but the images are on {device}; pass a CPU generator or one on {device}"
        )
    return gd


# ----------------------------------------------------------------------------------------------------------------------
# Presets (data) and the registry
# ----------------------------------------------------------------------------------------------------------------------

PRESETS: dict[str, dict[str, Any]] = {
    "dsa": {
        "strategy": "color_crop_cutout_flip_scale_rotate",
        "mode": "S",
        "source": "DSA paper (arXiv:2102.08259) / DC code ParamDiffAug defaults; used by DSA, DM, MTT, FTD, DATM",
    },
    "dsa_noflip": {
        "strategy": "color_crop_cutout_scale_rotate",
        "mode": "S",
        "source": "DC code main.py: 'flip' removed from the strategy for MNIST (digits must not be mirrored)",
    },
    "dsa_all": {
        "strategy": "color_crop_cutout_flip_scale_rotate",
        "mode": "M",
        "source": "DC code aug_mode 'M': every group applied in sequence (not used for published numbers)",
    },
    "none": {"strategy": "", "mode": "S", "source": "identity with the DSA interface"},
}

AUGMENTS: Registry[dict[str, Any]] = Registry("augmentation")
for _name, _preset in PRESETS.items():
    AUGMENTS.register(_name)(_preset)


def list_augments(pattern: str = "*") -> list[str]:
    """Augmentation preset names matching the fnmatch ``pattern``.

    Example:
        >>> list_augments("dsa*")
        ['dsa', 'dsa_all', 'dsa_noflip']
    """
    return AUGMENTS.list(pattern)


def get_augment(name: str, **overrides: Any) -> DSA:
    """Build the augmentation preset ``name`` (``dsa``, ``dsa_noflip``, ``dsa_all``, ``none``).

    Args:
        name: preset name; unknown names raise :class:`~condense.errors.UnknownNameError` with close matches.
        **overrides: :class:`DSA` arguments replacing the preset's (None values are dropped so defaults win).

    Example:
        >>> get_augment("dsa_noflip").groups
        ('color', 'crop', 'cutout', 'scale', 'rotate')
    """
    preset = {k: v for k, v in AUGMENTS.get(name).items() if k != "source"}
    preset.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return DSA(**preset)
    except TypeError as e:
        raise ConfigError(f"bad argument for augmentation '{name}': {e}") from None
