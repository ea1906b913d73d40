"""What the decoupled methods share: loading and checking the teachers a run names, and RDED's patch mosaic.

A decoupled method reads one or several trained teachers (``RunContext.teacher``, ``--teacher DIR``), each refused
before any work when its data contract differs from the data (:meth:`condense.teachers.Teacher.check_compatible`:
dataset, fingerprint, class order, preprocessing), when the data is ZCA-whitened (the references normalize with
mean/std), or, for methods that match BatchNorm statistics, when it has none.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from condense.errors import ConfigError, MismatchError
from condense.teachers import Teacher, load_teacher

__all__ = [
    "check_recover_options",
    "check_same_teachers",
    "config_recovery",
    "missing_teacher",
    "mosaic",
    "recover_augment",
    "run_teachers",
]


def missing_teacher(method: str) -> ConfigError:
    """The one-line error of a decoupled method run without a teacher (says how to make one)."""
    return ConfigError(
        f"method '{method}' needs a trained teacher and none was given; make one with "
        "'condense teachers train --dataset D --model convnet_bn --out DIR', then pass '--teacher DIR' "
        "(RunContext(teacher=DIR))"
    )


def recover_augment(cfg: Any) -> Any:
    """The per-batch recover augmentation a recovering method's config describes (``rrc``, ``rrc_scale``, ``flip``,
    ``jitter`` and, where the config has it, ``jitter_signed``)."""
    from condense.recover import RecoverAugment

    return RecoverAugment(
        rrc=cfg.rrc,
        rrc_scale=tuple(cfg.rrc_scale),
        flip=cfg.flip,
        jitter=cfg.jitter,
        jitter_signed=bool(getattr(cfg, "jitter_signed", False)),
    )


def config_recovery(
    cfg: Any, teachers: Any, images: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, *, lr: float, **extra
) -> Any:
    """A :class:`condense.recover.Recovery` with the fields every recovering config shares (``num_iterations``,
    ``adam_betas``, ``r_bn``, ``first_bn_multiplier``, the augmentation, ``batch_groups``, ``amp``); ``lr`` and the
    method's own options (box, mask, teacher weights, Adam moments) are passed by the method."""
    from condense.recover import Recovery

    return Recovery(
        teachers,
        images,
        labels,
        groups,
        num_iterations=cfg.num_iterations,
        lr=lr,
        betas=tuple(cfg.adam_betas),
        r_bn=cfg.r_bn,
        first_bn_multiplier=cfg.first_bn_multiplier,
        augment=recover_augment(cfg),
        batch_groups=cfg.batch_groups,
        amp=cfg.amp,
        **extra,
    )


def check_recover_options(method: str, run: Any, data: Any, *, flip: bool, amp: bool) -> None:
    """What every recovering method refuses before loading anything: no teacher, ZCA data (no pixel box), a flip on
    a no-flip dataset, bf16 autocast off CUDA."""
    from condense.augment import check_flip_allowed
    from condense.recover import pixel_box

    if not run.teachers:
        raise missing_teacher(method)
    pixel_box(data)  # refuses ZCA-whitened data
    if flip:
        check_flip_allowed(data.name, "flip=True")
    if amp and torch.device(run.device).type != "cuda":
        raise ConfigError(f"amp=True needs a CUDA device, this run is on {run.device}; set amp=False")


def check_same_teachers(saved: Any, teachers: list[Teacher]) -> None:
    """Refuse to resume a checkpoint made with other teachers (their sha256, in order)."""
    saved, now = list(saved or []), [t.sha256 for t in teachers]
    if saved != now:
        raise MismatchError(
            f"the checkpoint was made with teachers of sha256 {saved}, this run passes {now}; pass the same "
            "--teacher folders in the same order, or rerun with --restart"
        )


def run_teachers(method: str, run: Any, data: Any, *, need_batchnorm: bool) -> list[Teacher]:
    """Load every teacher of ``run`` onto ``run.device`` and check it against ``data``.

    Raises:
        ConfigError: no teacher, or one without BatchNorm when ``need_batchnorm``.
        MismatchError: ZCA-whitened data, or a teacher trained on other data (class order, preprocessing, ...).
    """
    if not run.teachers:
        raise missing_teacher(method)
    if getattr(data, "zca", None) is not None:
        raise MismatchError(
            f"method '{method}' works on mean/std-normalized images as its references do, not on ZCA-whitened data; "
            "load the data without zca"
        )
    teachers = [load_teacher(p, map_location=run.device) for p in run.teachers]
    for t in teachers:
        t.check_compatible(data)
        if need_batchnorm and not t.has_batchnorm:
            raise ConfigError(
                f"method '{method}' matches BatchNorm statistics, but teacher '{t.path}' ({t.model}) has no "
                "BatchNorm running statistics; train one with 'condense teachers train --model convnet_bn' (or "
                "resnet18_bn)"
            )
    return teachers


def mosaic(patches: torch.Tensor, factor: int, ipc: int, size: tuple[int, int]) -> torch.Tensor:
    """RDED's step 4 (``LINs-lab/RDED`` ``synthesize/utils.py:139-166``; NRR-DD's too): tile ``factor**2 * ipc``
    patches into ``ipc`` images; cell ``k`` of image ``i`` is patch ``k*ipc + i``.

    Cells split ``size`` as evenly as the reference does (the first ``size % factor`` rows/columns one pixel larger),
    each patch resized to its cell with nearest-neighbour interpolation.

    Shape:
        patches: (factor**2 * ipc, C, p, p). return: (ipc, C, H, W).
    """
    h, w = size
    out = torch.zeros(ipc, patches.shape[1], h, w, dtype=patches.dtype)
    k, y = 0, 0
    for i in range(factor):
        ch = h // factor + (1 if i < h % factor else 0)
        x = 0
        for j in range(factor):
            cw = w // factor + (1 if j < w % factor else 0)
            part = patches[k * ipc : (k + 1) * ipc]
            out[:, :, y : y + ch, x : x + cw] = (
                F.interpolate(part, size=(ch, cw)) if part.shape[-2:] != (ch, cw) else part
            )
            x += cw
            k += 1
        y += ch
    return out
