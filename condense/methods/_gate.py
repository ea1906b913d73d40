"""The plausibility gate every artifact passes before it is returned (and so before anything can write it).

The runner's NaN rollback catches non-finite steps, but a diverged run can stay finite: ``--set lr_img=1e9`` gives
DM pixels of 8e9 and MTT pixels of 4.7e15, values no network trained on the real data has ever seen. The gate refuses
such a set with one line naming the method, the quantity, its value and the allowed range:

- **images**: finite, and ``max |x| <= IMAGE_RANGE_FACTOR * max |x_real|``, where ``x_real`` is the real training
  set in the same space (normalized by the dataset's mean/std, ZCA-whitened when the data is). Without the training
  tensor the bound comes from the normalization alone: pixels in [0, 1] map to ``(p - mean) / std``. The factor is
  large on purpose, 1e4: the instance-normalized ConvNet that DM (and DC/DSA) match through is blind to the scale of
  its input, so their images drift in scale in proportion to ``lr_img`` without being wrong; DM's own
  ``digits-ipc1`` preset (lr_img 100) ends at 373x the real range (digits-ipc10: 23x); the others stay small (full
  digits presets: dc 2.4x, dsa 2.1x/1.3x, mtt 2.0x/1.4x, ftd 1.9x/1.4x, datm 1.9x/1.3x, ast 4.2x/1.7x at IPC 1/10).
  The bound keeps a margin of 27x over DM's 373x and still refuses what a diverged run leaves (``lr_img=1e9``: DM
  4.4e9x, MTT 2.5e15x). ``tests/methods/test_run_safety.py`` runs every digits preset through the gate.
- **learned lr** (``syn.lr``, the MTT family): finite, positive, and not pinned at its floor: above
  ``LR_FLOOR_MARGIN * lr_min`` when the config has an ``lr_min`` clamp (an lr sitting on the clamp means the
  meta-gradient kept pushing it below zero).
- **labels**: hard labels in ``[0, K)``; soft labels finite.
- **other tensors** (graph summaries, ZCA matrices): floating ones finite.

Methods layer, shared by every method: ``run_matcher`` calls :func:`check_plausible` on the final set of a
Matcher, ``condense.methods.distill`` on the set of a plain Method.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from condense.errors import DivergenceError

__all__ = ["IMAGE_RANGE_FACTOR", "LR_FLOOR_MARGIN", "check_plausible", "real_range"]

#: allowed max |x| of synthetic images, in multiples of the largest |x| of the real (normalized) training data
IMAGE_RANGE_FACTOR = 1e4
#: a learned lr at or below this multiple of the config's ``lr_min`` counts as pinned at the floor
LR_FLOOR_MARGIN = 1.01

_LOWER = "the optimization diverged; lower the learning rates (e.g. --set lr_img=...)"


def real_range(data: Any) -> float | None:
    """The largest |x| of the real training data in its normalized space, or None when it cannot be known.

    Reads ``data.x_train`` when present, else derives it from ``data.preprocessing()`` (pixels in [0, 1] through
    ``(p - mean) / std``; None when the data is ZCA-whitened, which that formula does not describe).
    """
    x = getattr(data, "x_train", None)
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.numel():
        return float(x.detach().abs().amax())
    prep = data.preprocessing() if hasattr(data, "preprocessing") else {}
    mean, std = prep.get("mean"), prep.get("std")
    if not mean or not std or prep.get("zca"):
        return None
    return max(max(abs(-m), abs(1.0 - m)) / s for m, s in zip(mean, std, strict=False))


def _finite(t: torch.Tensor) -> bool:
    return not t.is_floating_point() or bool(torch.isfinite(t.detach()).all())


def check_plausible(syn: Any, data: Any) -> None:
    """Raise :class:`DivergenceError` unless ``syn`` holds plausible values for ``data`` (rules in the module doc).

    Args:
        syn: the :class:`~condense.synthetic.SyntheticSet` about to be returned.
        data: the real dataset it was distilled from.

    Raises:
        DivergenceError: one line naming the method, the offending quantity, its value and the allowed range.
    """
    name = getattr(syn, "method", "") or "?"
    labels = syn.labels
    num_classes = len(syn.classes)
    if labels.is_floating_point():
        if not _finite(labels):
            raise DivergenceError(f"{name}: the soft labels hold non-finite values; {_LOWER}")
    elif labels.numel():
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise DivergenceError(
                f"{name}: labels range over [{lo}, {hi}], allowed [0, {num_classes - 1}] ({num_classes} classes)"
            )
    for key, t in getattr(syn, "tensors", {}).items():
        if isinstance(t, torch.Tensor) and not _finite(t):
            raise DivergenceError(f"{name}: tensor '{key}' holds non-finite values; {_LOWER}")

    images = getattr(syn, "images", None)
    if isinstance(images, torch.Tensor) and images.numel():
        if not _finite(images):
            raise DivergenceError(f"{name}: the synthetic images hold non-finite values; {_LOWER}")
        ref = real_range(data)
        peak = float(images.detach().abs().amax())
        if ref is not None and peak > IMAGE_RANGE_FACTOR * ref:
            raise DivergenceError(
                f"{name}: the synthetic images reach max |x| = {peak:.3g}, allowed <= {IMAGE_RANGE_FACTOR * ref:.3g} "
                f"({IMAGE_RANGE_FACTOR:g} x the real data's max |x| of {ref:.3g}); {_LOWER}"
            )

    lr = getattr(syn, "lr", None)
    if lr is not None:
        lr = float(lr)
        if not math.isfinite(lr) or lr <= 0:
            raise DivergenceError(f"{name}: the learned lr is {lr}, allowed a finite number > 0; {_LOWER}")
        floor = (getattr(syn, "config", None) or {}).get("lr_min")
        if isinstance(floor, (int, float)) and floor > 0 and lr <= LR_FLOOR_MARGIN * floor:
            raise DivergenceError(
                f"{name}: the learned lr is {lr:.3g}, pinned at its floor lr_min={floor:g} (allowed > "
                f"{LR_FLOOR_MARGIN * floor:.3g}); the lr kept being pushed below zero: lower the learning rates "
                "(e.g. --set lr_lr=... or lr_img=...)"
            )
