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
    "REQUIREMENT_KEYS",
    "buffer_requirement_differences",
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


#: what a preset may require of its buffer (``preset(..., buffer={...})``):
#: ``expert`` an expert preset name (``condense.expert_trajectories.EXPERT_PRESETS``: its kind and every training
#: field), ``kind`` the expert kind alone, ``zca`` whitening on/off, ``model`` / ``model_kwargs`` the architecture,
#: ``epochs`` and ``experts`` the paper's recording length and count
REQUIREMENT_KEYS = ("expert", "kind", "zca", "model", "model_kwargs", "epochs", "experts")
_IGNORED_EXPERT_FIELDS = ("max_attempts",)  # how often a failed expert is retried does not change the experiment


def buffer_requirement_differences(buf: Any, requirements: dict[str, Any] | None) -> tuple[list[str], list[str]]:
    """Compare an opened buffer with a preset's ``buffer`` requirements.

    Returns:
        ``(mismatches, notes)``: each a list of one-phrase strings naming the required and the recorded value.
        Mismatches change the experiment (another expert recipe, ZCA, model, or a shorter decaying schedule); notes
        only change its size (fewer experts than the paper, other constant-lr epochs, another width of the model).

    Raises:
        ConfigError: the requirements hold an unknown key or expert preset (a bug in a preset table).
    """
    from condense.expert_trajectories import get_expert_config

    if not requirements:
        return [], []
    unknown = sorted(set(requirements) - set(REQUIREMENT_KEYS))
    if unknown:
        raise ConfigError(f"buffer requirements hold unknown keys {unknown}; known: {', '.join(REQUIREMENT_KEYS)}")
    man = buf.manifest
    mismatches: list[str] = []
    notes: list[str] = []
    expert = requirements.get("expert")
    want_cfg: dict[str, Any] = {}
    kind = requirements.get("kind")
    if expert is not None:
        cfg = get_expert_config(expert)
        kind = cfg.kind
        want_cfg = {k: v for k, v in cfg.to_dict().items() if k not in _IGNORED_EXPERT_FIELDS}
    if kind is not None and buf.kind != kind:
        mismatches.append(f"expert kind: needs {kind}, buffer has {buf.kind}")
    elif want_cfg:
        have = man.get("config", {})
        for k, v in want_cfg.items():
            if have.get(k) != v:
                mismatches.append(f"expert {k}: needs {v!r} (expert preset '{expert}'), buffer has {have.get(k)!r}")
    if "zca" in requirements:
        has = man.get("preprocessing", {}).get("zca") is not None
        if bool(requirements["zca"]) != has:
            mismatches.append(
                f"ZCA: needs {'on' if requirements['zca'] else 'off'}, buffer has {'on' if has else 'off'}"
            )
    spec = buf.model_spec
    if "model" in requirements and spec["name"] != requirements["model"]:
        mismatches.append(f"model: needs {requirements['model']}, buffer has {spec['name']}")
    if "model_kwargs" in requirements and dict(spec.get("kwargs", {})) != dict(requirements["model_kwargs"]):
        # the student is always the buffer's network, so another width is a smaller (or larger) run of the same
        # recipe, chosen with --model-arg: logged and recorded, not refused
        notes.append(
            f"model options: the paper uses {requirements['model_kwargs']}, buffer has {spec.get('kwargs', {})}"
        )
    epochs = requirements.get("epochs")
    if epochs is not None and buf.epochs != epochs:
        decays = float(man.get("config", {}).get("lr_decay_factor", 1.0)) != 1.0
        if decays:  # the lr decay epoch depends on the length: the snapshots themselves differ
            mismatches.append(f"epochs: needs {epochs} (the lr decays mid-training), buffer has {buf.epochs}")
        else:
            notes.append(f"epochs: the paper records {epochs}, buffer has {buf.epochs} (constant lr: same snapshots)")
    experts = requirements.get("experts")
    if experts is not None and buf.num_experts < experts:
        notes.append(f"experts: the paper records {experts}, buffer has {buf.num_experts}")
    return mismatches, notes


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
    images: torch.Tensor,
    steps: int,
    batch: int | None,
    augment: Any,
    gen: torch.Generator,
    *,
    mirror: bool = False,
) -> list[StepPlan]:
    """The minibatches b_1..b_N and augmentation draws of one student unroll (MTT's ``batch_syn`` chunks).

    Each step takes the next chunk of one random permutation of the synthetic set (the last chunk first, as
    ``list.pop``), drawing a fresh permutation when the chunks run out; its augmentation parameters are drawn right
    after its indices. All draws come from ``gen`` in that order, before the unroll starts.

    With ``mirror`` (FYI, Son et al., ECCV 2024, arXiv:2407.08113) the student sees ``[X[b_n]; flip_W X[b_n]]`` at
    every step (``meta_gradient(..., mirror=True)`` builds it), so the batch is halved first to keep each step at
    ``batch`` images: a chunk holds ``d = min(ceil(B / 2), N_syn)`` distinct images, B = ``batch`` or N_syn when
    None, and the augmentation is drawn for the ``2 d`` images the step sees. For odd B a step therefore sees B + 1
    images; as without ``mirror``, the permutation's remainder chunk (``N_syn mod d`` images, when d does not divide
    N_syn) is one of the steps, so with B = N_syn odd the steps alternate ceil(N_syn/2) and floor(N_syn/2) distinct
    images.

    Args:
        images: the synthetic set X.
        steps: N, student steps.
        batch: images per step; None: all of them.
        augment: an augmentation with ``sample(x, gen)``, or None.
        gen: the only source of randomness.
        mirror: FYI's flipped concatenation (halve the distinct images, draw augmentation for twice as many).

    Shape:
        images: (N_syn, C, H, W); each returned ``StepPlan.idx``: (B,), or (d,) with ``mirror``, int64 on
        ``images``' device; the augmentation parameters cover B, or 2 d, images.
    """
    n = images.shape[0]
    b = n if batch is None else min(batch, n)
    if mirror:  # FYI keeps the step's size: half distinct images, half their mirrors (ceil: never an empty step)
        b = min(-(-(n if batch is None else batch) // 2), n)
    chunks: list[torch.Tensor] = []
    plan = []
    for _ in range(steps):
        if not chunks:
            chunks = list(torch.split(torch.randperm(n, generator=gen, device=gen.device), b))
        idx = chunks.pop().to(images.device)
        seen = images[idx] if not mirror else images[idx].expand(2, *images[idx].shape).flatten(0, 1)
        params = None if augment is None else augment.sample(seen, gen)
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
    perm = torch.randperm(x.shape[0], generator=generator, device=generator.device)[:k].to(x.device)
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
            cand = cand[torch.randperm(cand.numel(), generator=gen, device=gen.device).cpu()]
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
