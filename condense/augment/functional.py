"""Pure, differentiable image ops of Differentiable Siamese Augmentation, each taking explicit parameters.

Every function is deterministic given its parameter tensors, differentiable with respect to the images, vectorized
over the batch (no Python loop over samples, no ``.item()``) and therefore usable inside ``torch.func.grad``/``vjp``.
Randomness lives in :class:`condense.augment.DSA`, which draws the parameters; these ops only apply them.

A parameter tensor whose leading size is 1 is broadcast over the batch: that is how one shared ("Siamese") draw is
applied to a real batch and a synthetic batch of different sizes.

Notation follows the DC code (``VICO-UoE/DatasetCondensation:utils.py``): geometry uses ``affine_grid`` +
``grid_sample`` with ``align_corners=True`` and zero fill; crop and cutout use integer pixel offsets.

References:
    Zhao and Bilen, "Dataset Condensation with Differentiable Siamese Augmentation", ICML 2021, arXiv:2102.08259,
    Section 3 and Appendix (augmentation settings).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "brightness",
    "saturation",
    "contrast",
    "color",
    "crop",
    "cutout",
    "cutout_mask",
    "flip",
    "affine",
    "scale",
    "rotate",
]


def _per_sample(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """View a (B,) or (1,) parameter as (B, 1, 1, 1) in ``x``'s dtype and device, for broadcasting."""
    return p.to(device=x.device, dtype=x.dtype).reshape(-1, 1, 1, 1)


# ----------------------------------------------------------------------------------------------------------------------
# Color: these act on whatever tensor they get (normalized, possibly ZCA-whitened), as the DC code does.
# ----------------------------------------------------------------------------------------------------------------------


def brightness(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Add a per-sample constant: ``x + delta``.

    Args:
        x: images.
        delta: additive offsets; DSA draws ``(U - 0.5) * 1.0``.

    Shape:
        x: (B, C, H, W), float.
        delta: (B,) or (1,), float.
        return: (B, C, H, W).

    Example:
        >>> brightness(torch.zeros(2, 1, 2, 2), torch.tensor([0.5, -0.5]))[:, 0, 0, 0]
        tensor([ 0.5000, -0.5000])
    """
    return x + _per_sample(delta, x)


def saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale each pixel's deviation from its channel mean: ``(x - mean_c) * factor + mean_c``.

    Args:
        x: images.
        factor: per-sample factors; DSA draws ``U * 2.0``. A factor of 1 is the identity, 0 gives gray.

    Shape:
        x: (B, C, H, W), float.
        factor: (B,) or (1,), float.
        return: (B, C, H, W).

    Example:
        >>> saturation(torch.rand(2, 3, 4, 4), torch.ones(2)).shape
        torch.Size([2, 3, 4, 4])
    """
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * _per_sample(factor, x) + mean


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale each image's deviation from its global mean: ``(x - mean) * factor + mean``.

    Args:
        x: images.
        factor: per-sample factors; DSA draws ``U + 0.5``.

    Shape:
        x: (B, C, H, W), float.
        factor: (B,) or (1,), float.
        return: (B, C, H, W).

    Example:
        >>> contrast(torch.rand(2, 3, 4, 4), torch.ones(2)).shape
        torch.Size([2, 3, 4, 4])
    """
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _per_sample(factor, x) + mean


def color(
    x: torch.Tensor, brightness_delta: torch.Tensor, saturation_factor: torch.Tensor, contrast_factor: torch.Tensor
) -> torch.Tensor:
    """DSA's "color" group: brightness, then saturation, then contrast (the DC code's order).

    Shape:
        x: (B, C, H, W), float.
        brightness_delta, saturation_factor, contrast_factor: (B,) or (1,), float.
        return: (B, C, H, W).

    Example:
        >>> one = torch.ones(2)
        >>> color(torch.rand(2, 3, 4, 4), one * 0, one, one).shape
        torch.Size([2, 3, 4, 4])
    """
    return contrast(saturation(brightness(x, brightness_delta), saturation_factor), contrast_factor)


# ----------------------------------------------------------------------------------------------------------------------
# Integer-pixel ops: crop (translate with zero fill), cutout, flip.
# ----------------------------------------------------------------------------------------------------------------------


def crop(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Translate by whole pixels with zero fill: ``out[b, :, i, j] = x[b, :, i + dy, j + dx]`` (0 when outside).

    This is DSA's "crop" (pad-and-crop written as a shifted gather), so it is exact, differentiable and cheap.

    Args:
        x: images.
        shift: per-sample ``(dy, dx)`` offsets in pixels along H and W; DSA draws each uniformly from
            ``{-s, ..., s}`` with ``s = int(0.125 * size + 0.5)``.

    Shape:
        x: (B, C, H, W), float.
        shift: (B, 2) or (1, 2), integer.
        return: (B, C, H, W).

    Example:
        >>> x = torch.arange(4.0).reshape(1, 1, 1, 4)
        >>> crop(x, torch.tensor([[0, 1]]))
        tensor([[[[1., 2., 3., 0.]]]])
    """
    b, c, h, w = x.shape
    shift = shift.to(device=x.device, dtype=torch.long).reshape(-1, 2)
    rows = torch.arange(h, device=x.device).unsqueeze(0) + shift[:, :1]  # (B|1, H) source row of each output row
    cols = torch.arange(w, device=x.device).unsqueeze(0) + shift[:, 1:]  # (B|1, W)
    row_ok = (rows >= 0) & (rows < h)
    col_ok = (cols >= 0) & (cols < w)
    rows = rows.clamp(0, h - 1).reshape(-1, 1, h, 1).expand(b, c, h, w)
    cols = cols.clamp(0, w - 1).reshape(-1, 1, 1, w).expand(b, c, h, w)
    out = x.gather(2, rows).gather(3, cols)
    mask = (row_ok.reshape(-1, 1, h, 1) & col_ok.reshape(-1, 1, 1, w)).to(x.dtype)
    return out * mask


def cutout_mask(
    center: torch.Tensor, size: tuple[int, int], image_size: tuple[int, int], device: torch.device | None = None
) -> torch.Tensor:
    """Keep-mask of :func:`cutout`: 0 inside each sample's square, 1 elsewhere.

    Args:
        center: per-sample ``(cy, cx)`` pixel centers of the square.
        size: ``(sh, sw)``, the square's height and width in pixels.
        image_size: ``(H, W)``.
        device: device of the mask (default: ``center``'s).

    Shape:
        center: (B, 2) or (1, 2), integer.
        return: (B, 1, H, W) float32 of 0/1.
    """
    h, w = image_size
    center = center.to(device=device, dtype=torch.long).reshape(-1, 2)
    top = center[:, :1] - size[0] // 2  # (B, 1); DC code: rows offset - size // 2 ... offset - size // 2 + size - 1
    left = center[:, 1:] - size[1] // 2
    r = torch.arange(h, device=center.device).unsqueeze(0)
    q = torch.arange(w, device=center.device).unsqueeze(0)
    in_rows = (r >= top) & (r < top + size[0])  # (B, H)
    in_cols = (q >= left) & (q < left + size[1])  # (B, W)
    cut = in_rows.unsqueeze(2) & in_cols.unsqueeze(1)  # (B, H, W)
    return (~cut).unsqueeze(1).float()


def cutout(x: torch.Tensor, center: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Set a ``size`` rectangle centered at ``center`` to 0 in every channel (clipped at the borders).

    Args:
        x: images.
        center: per-sample ``(cy, cx)``; DSA draws ``cy`` from ``{0, ..., H - (size % 2)}`` (likewise ``cx``) so
            the square may hang over the border, as in the DC code.
        size: ``(sh, sw)`` in pixels; DSA uses ``int(0.5 * H + 0.5)``, ``int(0.5 * W + 0.5)``.

    Shape:
        x: (B, C, H, W), float.
        center: (B, 2) or (1, 2), integer.
        return: (B, C, H, W).

    Example:
        >>> y = cutout(torch.ones(1, 1, 4, 4), torch.tensor([[2, 2]]), (2, 2))
        >>> int((y == 0).sum())
        4
    """
    mask = cutout_mask(center, size, (x.shape[2], x.shape[3]), device=x.device)
    return x * mask.to(x.dtype)


def flip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror the width axis of the samples where ``mask`` is true.

    Args:
        x: images.
        mask: per-sample booleans; DSA draws ``U < 0.5``.

    Shape:
        x: (B, C, H, W).
        mask: (B,) or (1,), bool.
        return: (B, C, H, W).

    Example:
        >>> flip(torch.arange(2.0).reshape(1, 1, 1, 2), torch.tensor([True]))
        tensor([[[[1., 0.]]]])
    """
    return torch.where(mask.to(device=x.device, dtype=torch.bool).reshape(-1, 1, 1, 1), x.flip(3), x)


# ----------------------------------------------------------------------------------------------------------------------
# Sub-pixel geometry: affine_grid + grid_sample (bilinear, zero fill, align_corners=True as in the DC code).
# ----------------------------------------------------------------------------------------------------------------------


def affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample ``x`` through per-sample 2x3 matrices in normalized coordinates (output -> input).

    Shape:
        x: (B, C, H, W), float.
        theta: (B, 2, 3) or (1, 2, 3).
        return: (B, C, H, W).

    Example:
        >>> eye = torch.tensor([[[1.0, 0, 0], [0, 1, 0]]])
        >>> x = torch.rand(1, 1, 3, 3)
        >>> torch.allclose(affine(x, eye), x, atol=1e-6)
        True
    """
    theta = theta.to(device=x.device, dtype=x.dtype).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def scale(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Scale the sampling grid by ``(sx, sy)`` (a factor > 1 zooms out), zero fill.

    Args:
        x: images.
        factors: per-sample ``(sx, sy)`` multiplying the x (width) and y (height) grid coordinates; DSA draws
            each independently from ``U(1/1.2, 1.2)``.

    Shape:
        x: (B, C, H, W), float.
        factors: (B, 2) or (1, 2), float.
        return: (B, C, H, W).

    Example:
        >>> scale(torch.rand(2, 1, 4, 4), torch.ones(2, 2)).shape
        torch.Size([2, 1, 4, 4])
    """
    f = factors.to(device=x.device, dtype=x.dtype).reshape(-1, 2)
    zero = torch.zeros_like(f[:, 0])
    theta = torch.stack(
        [torch.stack([f[:, 0], zero, zero], dim=1), torch.stack([zero, f[:, 1], zero], dim=1)], dim=1
    )  # (B, 2, 3)
    return affine(x, theta)


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate about the image center by ``degrees`` (the DC code's matrix ``[[cos, -sin], [sin, cos]]``), zero fill.

    Args:
        x: images.
        degrees: per-sample angles in degrees; DSA draws ``U(-15, 15)``.

    Shape:
        x: (B, C, H, W), float.
        degrees: (B,) or (1,), float.
        return: (B, C, H, W).

    Example:
        >>> rotate(torch.rand(2, 1, 4, 4), torch.zeros(2)).shape
        torch.Size([2, 1, 4, 4])
    """
    a = degrees.to(device=x.device, dtype=x.dtype).reshape(-1) * (math.pi / 180.0)
    cos, sin, zero = torch.cos(a), torch.sin(a), torch.zeros_like(a)
    theta = torch.stack([torch.stack([cos, -sin, zero], dim=1), torch.stack([sin, cos, zero], dim=1)], dim=1)
    return affine(x, theta)
