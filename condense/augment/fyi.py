"""FYI's flipped concatenation: a synthetic batch and its horizontal mirror, side by side.

FYI concatenates every synthetic batch with its mirror along the width before the augmentation draw, so each update
of a synthetic image sees the original and the flipped version (author reply in ``cvlab-yonsei/FYI#7``: plain random
flipping does not help gradient or distribution matching; the concatenation does). The flip is a fixed permutation of
pixels, so autograd returns ``dL/dx = g_1 + flip_W(g_2)`` for the two halves of the output, with no custom backward.

Every matcher that offers ``fyi=True`` (DC, DSA, DM, MTT, FTD, DATM, AST) calls :func:`flip_concat`; the guard
against datasets whose content must not be mirrored is :func:`condense.augment.check_flip_allowed`.

References:
    Son, Oh, Baek and Ham, "FYI: Flip Your Images for Dataset Distillation", ECCV 2024, arXiv:2407.08113
    (Section 3: concatenating the synthetic set with its flipped copy during distillation only).
"""

from __future__ import annotations

import torch

__all__ = ["flip_concat"]


def flip_concat(
    x: torch.Tensor, labels: torch.Tensor | None = None, *, dim: int = 0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``[x; flip_W(x)]`` along ``dim``, with the labels repeated in the same order.

    The mirror is taken along the last axis (W). The first half of the result is ``x`` itself, the second half its
    mirror, so row ``i`` and row ``i + x.shape[dim]`` are the same synthetic image.

    Args:
        x: images, with W last; gradients flow back to ``x`` through both halves.
        labels: hard labels or soft-label logits of the rows of ``x`` along ``dim``, or None.
        dim: the batch dimension to concatenate along (0 for a flat batch, 1 for a class-wise ``(K, S, ...)`` one).

    Returns:
        ``(images, labels)``: the doubled batch and the doubled labels (None when ``labels`` is None).

    Shape:
        x: (..., B, ..., C, H, W) with B at ``dim``; labels: (B,) or (B, K), concatenated along their first dim.
        return: images with 2B at ``dim``; labels (2B,) or (2B, K).

    Example:
        >>> x = torch.arange(4.0).view(1, 1, 2, 2)
        >>> xx, yy = flip_concat(x, torch.tensor([3]))
        >>> xx[1, 0].tolist(), yy.tolist()
        ([[1.0, 0.0], [3.0, 2.0]], [3, 3])
    """
    if x.ndim < 3:
        raise ValueError(f"flip_concat needs images (..., C, H, W), got shape {tuple(x.shape)}")
    out = torch.cat([x, x.flip(-1)], dim=dim)
    return out, None if labels is None else torch.cat([labels, labels], dim=0)
