"""Augmented views for soft-label training: RandomResizedCrop boxes, flips and CutMix/MixUp, as explicit parameters.

The decoupled methods (SRe2L, RDED, their successors) train students on *views*: each image is cropped with
RandomResizedCrop, maybe flipped, and the batch is mixed (CutMix or MixUp); the teacher labels the mixed batch. FKD
stores those views' parameters with the teacher's logits so a student can be trained later on the same views without
the teacher (``VILA-Lab/SRe2L`` ``SRe2L/relabel/generate_soft_label.py``). Here the parameters are plain tensors
(kornia's explicit-parameter style): :func:`sample_views` draws one epoch of them from a ``torch.Generator``, and
:func:`apply_views` turns images and parameters into the batch, the same way for the labeler and the student. The
label store (:mod:`condense.labels`) writes them next to the logits.

Sampling follows torchvision's ``RandomResizedCrop.get_params`` (area fraction uniform in ``scale``, log aspect
ratio uniform in ``log(ratio)``, ten attempts, else the central crop clamped to ``ratio``), vectorized over the
batch; the box is then resized with ``torchvision.ops.roi_align`` (bilinear, adaptive sampling points, so a crop of the
whole image at its own size is the identity), not with ``torchvision.transforms.functional.resized_crop`` (PIL or
antialiased interpolation): replay is exact either way, the filtering differs slightly. CutMix draws ``lam ~ Beta(a,
a)``, a box of area ``(1 - lam)`` at a uniform centre clipped to the image, and ``lam`` is then corrected to the
clipped area (SRe2L ``utils.py`` ``rand_bbox`` / ``cutmix``); MixUp blends with ``lam ~ Beta(a, a)``. One ``lam``,
one box and one permutation per batch, as in the references.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from condense.config import check_choice, check_range

__all__ = ["ViewRecipe", "Views", "apply_views", "crop_boxes", "sample_views"]


@dataclass(frozen=True, kw_only=True)
class ViewRecipe:
    """How the views of one training step are drawn.

    Args:
        scale: RandomResizedCrop area fraction range (SRe2L FKD: (0.08, 1); RDED: (1/factor, 1)); (1, 1) with
            ``ratio`` (1, 1) keeps whole images.
        ratio: aspect-ratio range (torchvision default (3/4, 4/3)).
        flip: random horizontal flip with probability 0.5 (off on digit datasets).
        mix: ``"cutmix"`` (SRe2L, RDED), ``"mixup"`` (SRe2L's CIFAR script, INFER) or ``"none"``.
        mix_alpha: the Beta(alpha, alpha) of the mixing weight (CutMix 1.0 in SRe2L; MixUp 0.8 in SRe2L CIFAR/INFER).
    """

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    mix: str = "cutmix"
    mix_alpha: float = 1.0

    def __post_init__(self) -> None:
        check_choice("mix", self.mix, ("cutmix", "mixup", "none"))
        check_range("mix_alpha", self.mix_alpha, 0.0, lo_open=True)
        lo, hi = self.scale
        check_range("scale[0]", lo, 0.0, 1.0, lo_open=True)
        check_range("scale[1]", hi, lo, 1.0)
        rlo, rhi = self.ratio
        check_range("ratio[0]", rlo, 0.0, lo_open=True)
        check_range("ratio[1]", rhi, rlo)

    def to_dict(self) -> dict:
        return {
            "scale": list(self.scale),
            "ratio": list(self.ratio),
            "flip": self.flip,
            "mix": self.mix,
            "mix_alpha": self.mix_alpha,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ViewRecipe:
        return cls(
            scale=tuple(d["scale"]),
            ratio=tuple(d["ratio"]),
            flip=bool(d["flip"]),
            mix=str(d["mix"]),
            mix_alpha=float(d["mix_alpha"]),
        )


@dataclass
class Views:
    """The parameters of one batch of views.

    Shape:
        index: (B,) int64, the images of the batch (rows of the image tensor).
        boxes: (B, 4) float32 crop boxes ``(x0, y0, x1, y1)`` in source pixels (the crop covers columns x0..x1-1).
        flip: (B,) bool.
        perm: (B,) int64, the partner of each position inside the batch for mixing.
        lam: () float32, the weight of the un-permuted batch (1 when not mixing).
        mix_box: (4,) int64 CutMix box ``(y0, y1, x0, x1)`` (all 0 unless CutMix).
    """

    index: torch.Tensor
    boxes: torch.Tensor
    flip: torch.Tensor
    perm: torch.Tensor
    lam: torch.Tensor
    mix_box: torch.Tensor

    def __len__(self) -> int:
        return int(self.index.shape[0])


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64, device=gen.device).cpu()


def crop_boxes(b: int, hw: tuple[int, int], recipe: ViewRecipe, gen: torch.Generator) -> torch.Tensor:
    """torchvision ``RandomResizedCrop.get_params`` for ``b`` images at once: (B, 4) float32 (x0, y0, x1, y1)."""
    h, w = hw
    area = h * w
    attempts = 10
    target = area * _uniform(b * attempts, *recipe.scale, gen).view(b, attempts)
    log_r = _uniform(b * attempts, math.log(recipe.ratio[0]), math.log(recipe.ratio[1]), gen).view(b, attempts)
    ar = torch.exp(log_r)
    cw = torch.round(torch.sqrt(target * ar))
    ch = torch.round(torch.sqrt(target / ar))
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((b,), -1))
    # fallback (no attempt fits): the central crop with the aspect ratio clamped to the range
    in_ratio = w / h
    if in_ratio < recipe.ratio[0]:
        fw, fh = w, int(round(w / recipe.ratio[0]))
    elif in_ratio > recipe.ratio[1]:
        fw, fh = int(round(h * recipe.ratio[1])), h
    else:
        fw, fh = w, h
    rows = torch.arange(b)
    pick = first.clamp(min=0)
    bw = torch.where(first >= 0, cw[rows, pick], torch.full((b,), float(fw), dtype=torch.float64))
    bh = torch.where(first >= 0, ch[rows, pick], torch.full((b,), float(fh), dtype=torch.float64))
    u = torch.rand(b, 2, generator=gen, dtype=torch.float64, device=gen.device).cpu()
    y0 = torch.floor(u[:, 0] * (h - bh + 1)).clamp(0, None)
    x0 = torch.floor(u[:, 1] * (w - bw + 1)).clamp(0, None)
    y0 = torch.where(first >= 0, y0, torch.full((b,), float((h - fh) // 2), dtype=torch.float64))
    x0 = torch.where(first >= 0, x0, torch.full((b,), float((w - fw) // 2), dtype=torch.float64))
    return torch.stack([x0, y0, x0 + bw, y0 + bh], 1).float()


def _beta(alpha: float, gen: torch.Generator) -> float:
    """One Beta(alpha, alpha) draw from ``gen`` (numpy's sampler seeded from the generator, so it is replayable)."""
    import numpy as np

    seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def sample_views(
    num_images: int, batch_size: int, hw: tuple[int, int], recipe: ViewRecipe, gen: torch.Generator
) -> list[Views]:
    """One epoch of views: a random order of the ``num_images`` images split into batches, with every batch's
    crops, flips and mix drawn from ``gen`` (a CPU generator), in that order.

    Example:
        >>> vs = sample_views(10, 4, (8, 8), ViewRecipe(), torch.Generator().manual_seed(0))
        >>> [len(v) for v in vs]
        [4, 4, 2]
    """
    check_range("batch_size", batch_size, 1)
    order = torch.randperm(num_images, generator=gen, device=gen.device).cpu()
    out = []
    h, w = hw
    for index in order.split(batch_size):
        b = int(index.shape[0])
        boxes = crop_boxes(b, hw, recipe, gen)
        flip = (
            (torch.rand(b, generator=gen, device=gen.device).cpu() < 0.5)
            if recipe.flip
            else torch.zeros(b, dtype=torch.bool)
        )
        perm = torch.arange(b)
        lam = 1.0
        mix_box = torch.zeros(4, dtype=torch.int64)
        if recipe.mix != "none":
            perm = torch.randperm(b, generator=gen, device=gen.device).cpu()
            lam = _beta(recipe.mix_alpha, gen)
            if recipe.mix == "cutmix":
                cut = math.sqrt(1.0 - lam)
                cw, ch = int(w * cut), int(h * cut)
                c = torch.rand(2, generator=gen, device=gen.device).cpu()
                cy, cx = int(c[0] * h), int(c[1] * w)
                y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
                x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
                mix_box = torch.tensor([y0, y1, x0, x1], dtype=torch.int64)
                lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
        out.append(Views(index, boxes, flip, perm, torch.tensor(lam, dtype=torch.float32), mix_box))
    return out


def apply_views(images: torch.Tensor, views: Views, out_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """The batch of ``views``: crop-and-resize each image's box, flip, then mix the batch.

    Shape:
        images: (N, C, H, W) float, the whole set (``views.index`` picks the rows).
        return: (B, C, h, w) with ``(h, w) = out_hw`` (default: the images' size).
    """
    from torchvision.ops import roi_align

    h, w = out_hw or tuple(images.shape[-2:])
    dev = images.device
    idx = views.index.to(dev)
    b = idx.shape[0]
    rois = torch.cat([torch.arange(b, device=dev, dtype=images.dtype)[:, None], views.boxes.to(dev, images.dtype)], 1)
    x = roi_align(images[idx], rois, output_size=(h, w), spatial_scale=1.0, sampling_ratio=0, aligned=True)
    flip = views.flip.to(dev)
    if bool(flip.any()):
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    lam = float(views.lam)
    if lam < 1.0:
        perm = views.perm.to(dev)
        y0, y1, x0, x1 = (int(v) for v in views.mix_box)
        if y1 > y0 or x1 > x0:  # CutMix: paste the partner's box
            mixed = x.clone()
            mixed[:, :, y0:y1, x0:x1] = x[perm][:, :, y0:y1, x0:x1]
            x = mixed
        else:  # MixUp
            x = lam * x + (1.0 - lam) * x[perm]
    return x
