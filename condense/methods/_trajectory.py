"""Shared functions of the trajectory-matching family (MTT, FTD, DATM, AST): buffers, students, plans, inits.

The algorithm itself lives in :mod:`condense.methods.mtt` (``MTT.step``, numbered against the paper) and the variants
subclass it (``ftd.py``, ``datm.py``, ``ast.py``). This module holds only functions written in terms of expert
buffers, flat parameters and tensors, so each one can be read and tested on its own:

- :func:`open_expert_buffer`, :func:`student_model`: open and validate a buffer, build the student it was recorded on;
- :func:`minibatch_plan`: the N minibatches and augmentation draws of one student unroll;
- :func:`expert_logits`, :func:`kmeans`, :func:`real_by_class`: helpers of the two special initializations
  :func:`init_correct` (DATM) and :func:`init_representative` (AST).

The student unroll and its meta-gradient are in :mod:`condense.methods._unroll`.

References:
    Cazenavette et al., "Dataset Distillation by Matching Training Trajectories", CVPR 2022, arXiv:2203.11932.
    Guo et al., "Towards Lossless Dataset Distillation via Difficulty-Aligned Trajectory Matching", ICLR 2024,
    arXiv:2310.05773 (correct-sample initialization).
    Shen, Yang and Lam, "AST: Effective Dataset Distillation through Alignment with Smooth and High-Quality Expert
    Trajectories", arXiv:2310.10541 (representative initialization).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from condense.errors import ConfigError, MismatchError
from condense.methods._unroll import StepPlan
from condense.models.params import ParamLayout

__all__ = [
    "expert_logits",
    "init_correct",
    "init_representative",
    "kmeans",
    "minibatch_plan",
    "open_expert_buffer",
    "real_by_class",
    "student_model",
]


# ----------------------------------------------------------------------------------------------------------------------
# Buffer and student
# ----------------------------------------------------------------------------------------------------------------------


def open_expert_buffer(
    path: str | Path | None, data: Any, *, method: str, model: str | None, kind: str, last_epoch: int
) -> Any:
    """Open the expert buffer at ``path`` and check it against the run: dataset, model, expert kind, length.

    Args:
        path: the buffer folder (``RunContext.buffer``); None raises with how to record one.
        data: the :class:`~condense.data.ImageData` being distilled (its name, shape, classes and ZCA must match).
        method: the method's name, for the messages.
        model: the student architecture the config asks for; None accepts the buffer's.
        kind: the required expert kind (``"vanilla"``, ``"flat"``, ``"smooth"``) or ``"any"``.
        last_epoch: the last snapshot the run reads, ``T+ - 1 + M``.

    Returns:
        The opened :class:`~condense.expert_trajectories.ExpertBuffer`.

    Raises:
        ConfigError: no buffer, or the buffer is too short.
        MismatchError: the buffer was recorded on another dataset, model or expert kind.
    """
    from condense.expert_trajectories import ExpertBuffer

    if path is None:
        raise ConfigError(
            f"{method} matches expert trajectories and needs a buffer; record one with `condense experts` "
            "and pass --buffer PATH (RunContext(buffer=...))"
        )
    buf = ExpertBuffer.open(path)
    recorded = buf.model_spec["name"]
    if model is not None and model != recorded:
        raise MismatchError(
            f"{method} config asks for model {model!r} but buffer '{path}' was recorded with "
            f"{recorded!r}; set model={recorded} or record a buffer for {model}"
        )
    buf.check_compatible(data, recorded)
    if kind != "any" and buf.kind != kind:
        raise MismatchError(
            f"{method} with expert_kind={kind!r} needs a {kind} buffer, but '{path}' holds {buf.kind} experts; "
            f"record one with kind={kind!r} or set expert_kind=any"
        )
    if last_epoch > buf.num_snapshots - 1:
        raise ConfigError(
            f"{method} needs snapshot {last_epoch} (max_start_epoch - 1 + expert_epochs), but buffer '{path}' holds "
            f"snapshots 0..{buf.num_snapshots - 1}; record longer experts or lower max_start_epoch / expert_epochs"
        )
    return buf


def student_model(buf: Any, device: torch.device | str) -> nn.Module:
    """The architecture the buffer's experts were recorded with, on ``device`` (only its structure is used).

    Raises:
        MismatchError: the model's parameters do not match the buffer's layout (names, order, shapes).
    """
    from condense.models import create_model

    spec = buf.model_spec
    model = create_model(
        spec["name"],
        in_channels=spec["in_channels"],
        num_classes=spec["num_classes"],
        image_size=tuple(spec["image_size"]),
        seed=0,
        **spec.get("kwargs", {}),
    ).to(device)
    mine = ParamLayout.from_module(model)
    if mine != buf.layout:
        raise MismatchError(
            f"buffer '{buf.path}' parameters {list(buf.layout.names)} do not match model {spec['name']!r} "
            f"parameters {list(mine.names)}; record a new buffer"
        )
    return model


# ----------------------------------------------------------------------------------------------------------------------
# One unroll's minibatches, and the outer update
# ----------------------------------------------------------------------------------------------------------------------


def minibatch_plan(
    images: torch.Tensor, steps: int, batch: int | None, augment: Any, gen: torch.Generator
) -> list[StepPlan]:
    """The minibatches b_1..b_N and augmentation draws of one student unroll (MTT's ``batch_syn`` chunks).

    Each step takes the next chunk of one random permutation of the synthetic set (the last chunk first, as
    ``list.pop``), drawing a fresh permutation when the chunks run out; its augmentation parameters are drawn right
    after its indices. All draws come from ``gen`` in that order, before the unroll starts.

    Args:
        images: the synthetic set X.
        steps: N, student steps.
        batch: images per step; None: all of them.
        augment: an augmentation with ``sample(x, gen)``, or None.
        gen: the only source of randomness.

    Shape:
        images: (N_syn, C, H, W); each returned ``StepPlan.idx``: (B,), int64 on ``images``' device.
    """
    n = images.shape[0]
    b = n if batch is None else min(batch, n)
    chunks: list[torch.Tensor] = []
    plan = []
    for _ in range(steps):
        if not chunks:
            chunks = list(torch.split(torch.randperm(n, generator=gen), b))
        idx = chunks.pop().to(images.device)
        params = None if augment is None else augment.sample(images[idx], gen)
        plan.append(StepPlan(idx, params))
    return plan


# ----------------------------------------------------------------------------------------------------------------------
# Initializations from the experts (DATM, AST)
# ----------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def expert_logits(
    model: nn.Module, layout: ParamLayout, flat: torch.Tensor, x: torch.Tensor, batch: int = 1024
) -> torch.Tensor:
    """Logits of the expert with flat parameters ``flat`` on ``x`` (batched, no augmentation).

    Shape:
        flat: (P,); x: (B, C, H, W); return: (B, K).
    """
    params = layout.unflatten(flat.to(x.device))
    return torch.cat([functional_call(model, params, (x[i : i + batch],)) for i in range(0, x.shape[0], batch)])


def kmeans(x: torch.Tensor, k: int, generator: torch.Generator, iters: int = 25) -> torch.Tensor:
    """Plain Lloyd k-means seeded with k distinct random points (no k-means++); returns the centroids.

    Shape:
        x: (B, D) with B >= k; return: (k, D).

    Example:
        >>> c = kmeans(torch.tensor([[0.0], [0.1], [5.0], [5.1]]), 2, torch.Generator().manual_seed(0))
        >>> sorted(round(float(v), 2) for v in c.flatten())
        [0.05, 5.05]
    """
    perm = torch.randperm(x.shape[0], generator=generator)[:k].to(x.device)
    cent = x[perm].clone()
    for _ in range(iters):
        assign = torch.cdist(x, cent).argmin(1)
        for j in range(k):
            members = x[assign == j]
            if members.shape[0]:
                cent[j] = members.mean(0)
    return cent


def real_by_class(data: Any) -> list[torch.Tensor]:
    """Indices of the real training images of each class.

    Shape:
        return: K tensors of shape (n_c,), int64 on ``data.y_train``'s device.
    """
    y = data.y_train
    return [torch.nonzero(y == c).flatten() for c in range(data.num_classes)]


def init_correct(
    buf: Any, model: nn.Module, data: Any, ipc: int, gen: torch.Generator, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """DATM's ``samples_predicted_correctly``: per class, random real images an expert's final checkpoint gets right.

    Experts are tried in id order until every class has ``ipc`` images; within a class the candidates are drawn in
    a random order from ``gen``.

    Returns:
        ``(images, labels)``: class-major real images on ``data.x_train``'s device and their hard labels.

    Shape:
        images: (K * ipc, C, H, W); labels: (K * ipc,), int64.

    Raises:
        ConfigError: some class has fewer than ``ipc`` correctly classified images under all experts.
    """
    from condense.methods._classwise import class_major_labels

    chosen: list[list[int]] = [[] for _ in range(data.num_classes)]
    pools = real_by_class(data)
    for eid in buf.expert_ids:
        if all(len(c) >= ipc for c in chosen):
            break
        logits = expert_logits(model, buf.layout, buf.snapshot(eid, -1), data.x_train.to(device))
        ok = (logits.argmax(1).cpu() == data.y_train.cpu()).cpu()
        for c, pool in enumerate(pools):
            if len(chosen[c]) >= ipc:
                continue
            pool = pool.cpu()
            cand = pool[ok[pool]]
            cand = cand[~torch.isin(cand, torch.tensor(chosen[c], dtype=torch.long))]
            cand = cand[torch.randperm(cand.numel(), generator=gen)]
            chosen[c].extend(cand[: ipc - len(chosen[c])].tolist())
    short = [c for c, v in enumerate(chosen) if len(v) < ipc]
    if short:
        raise ConfigError(
            f"init='correct' found fewer than {ipc} correctly classified real images for classes {short} with "
            f"the {buf.num_experts} experts of the buffer; use init='real'"
        )
    idx = torch.tensor([i for c in chosen for i in c], dtype=torch.long)
    return data.x_train[idx.to(data.x_train.device)].clone(), class_major_labels(data.num_classes, ipc)


def init_representative(
    buf: Any, model: nn.Module, data: Any, ipc: int, gen: torch.Generator, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """AST's ``--pix_init avg``: per class, k-means (k = ipc) on a final expert's logits; the real image nearest each
    centroid (distinct images; the nearest unused one when two centroids share their nearest image).

    Returns:
        ``(images, labels)``: class-major real images on ``data.x_train``'s device and their hard labels.

    Shape:
        images: (K * ipc, C, H, W); labels: (K * ipc,), int64.

    Raises:
        ConfigError: a class has fewer than ``ipc`` real images.
    """
    from condense.methods._classwise import class_major_labels

    flat = buf.snapshot(buf.expert_ids[0], -1)
    picks: list[int] = []
    for c, pool in enumerate(real_by_class(data)):
        if pool.numel() < ipc:
            raise ConfigError(f"init='representative' needs {ipc} images of class {c}, found {pool.numel()}")
        feats = expert_logits(model, buf.layout, flat, data.x_train[pool].to(device)).float()
        cent = kmeans(feats, ipc, gen)
        dist = torch.cdist(cent, feats)
        taken: list[int] = []
        for j in range(ipc):
            order = dist[j].argsort()
            k = next(int(i) for i in order.tolist() if int(i) not in taken)
            taken.append(k)
        picks.extend(pool[torch.tensor(taken, device=pool.device)].tolist())
    idx = torch.tensor(picks, dtype=torch.long)
    return data.x_train[idx.to(data.x_train.device)].clone(), class_major_labels(data.num_classes, ipc)
