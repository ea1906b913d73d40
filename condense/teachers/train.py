"""Training teachers: one with :func:`train_teacher`, several with :func:`train_teachers`.

Several teachers of one architecture (different seeds) can train at once: their parameters and BatchNorm buffers
are stacked (``torch.func.stack_module_state``) and one forward pass is ``vmap``-ed over them with
``torch.func.functional_call``. The running statistics are updated in place inside ``vmap`` (each teacher's slice of
the stacked buffer), the summed per-teacher losses are backpropagated with ordinary autograd, and one
``torch.optim`` optimizer steps the stacked tensors (SGD and Adam are elementwise, so this is K optimizers). Each
teacher keeps its own initialization, batch order and augmentation streams, so a stacked teacher equals the one
:func:`train_teacher` gives up to float rounding: measured on the CPU after 8 steps, at most 1.2e-7 apart in
every parameter and buffer (``convnet_bn``, ``resnet18_bn``). vmap turns every convolution into a grouped one, which
pays on GPUs and does not on CPUs (1 thread, digits, 4 seeds of ``convnet_bn``: loop 3.5-4.1 s, vmap 4.4-5.1 s per
epoch), so it is the default on CUDA only, as :func:`condense.eval.evaluate` does for evaluation seeds.

Networks with depthwise (grouped) convolutions (``mobilenetv2``, ``shufflenetv2``) are not stacked by default: their
float32 gradients are poorly conditioned at initialization (loop and float64 differ by 0.3-1.5 %, and so do loop and
vmap, while in float64 loop and vmap agree to 1e-15), so stacked and looped teachers drift apart (3e-2 in the stem
weights after 2 steps); the stacked result is as close to exact arithmetic as the looped one, but not the same
teacher. ``vmap=True`` stacks them anyway.

Under torchrun (``WORLD_SIZE`` > 1) :func:`train_teachers` trains rank r's share ``specs[r::world]`` on
``cuda:LOCAL_RANK`` (when training on CUDA) and returns those teachers; no process group is needed, every teacher
has its own folder.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from condense.augment import NO_FLIP_DATASETS
from condense.config import check_range, config_to_dict
from condense.errors import ArgumentTypeError, ConfigError, DivergenceError
from condense.io import canonical_json
from condense.models import create_model_for, has_running_stats
from condense.seeding import derive_seed
from condense.teachers.recipes import TeacherRecipe, augment_batch, black_pixel, default_recipe_for, get_recipe
from condense.teachers.record import Teacher, measure_accuracy

if TYPE_CHECKING:
    from condense.data import ImageData

__all__ = ["TeacherSpec", "train_teacher", "train_teachers"]

logger = logging.getLogger("condense")

_SEED_NAMESPACE = "condense-teacher"


# ----------------------------------------------------------------------------------------------------------------------
# What one training run shares with another: validation, seeds, optimizer, schedule, the saved teacher
# ----------------------------------------------------------------------------------------------------------------------


def _resolve(
    data: ImageData, recipe: str | TeacherRecipe | None, epochs: int | None, who: str
) -> tuple[TeacherRecipe, str | None, int]:
    if getattr(data, "kind", None) != "images":
        raise ArgumentTypeError(f"{who} needs image data (ImageData), got {type(data).__name__}")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int)):
        raise ArgumentTypeError(f"epochs must be an int, got {epochs!r}")
    if recipe is None:
        recipe = default_recipe_for(data.name)
    recipe_name = recipe if isinstance(recipe, str) else None
    cfg = get_recipe(recipe) if isinstance(recipe, str) else recipe
    if not isinstance(cfg, TeacherRecipe):
        raise ArgumentTypeError(f"recipe must be a name or a TeacherRecipe, got {type(recipe).__name__}")
    epochs = cfg.train_epochs if epochs is None else epochs
    check_range("epochs", epochs, 1)
    if cfg.flip and data.name in NO_FLIP_DATASETS:
        raise ConfigError(
            f"recipe {recipe_name or 'given'} flips images, but dataset {data.name!r} must not be flipped (mirrored "
            f"digits are other glyphs; no-flip datasets: {', '.join(NO_FLIP_DATASETS)}); use recipe 'digits' or "
            "a recipe with flip=False"
        )
    return cfg, recipe_name, epochs


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ArgumentTypeError(f"seed must be an int, got {seed!r}")
    check_range("seed", seed, 0)
    return seed


def _build(data: ImageData, model: str, model_kwargs: dict[str, Any], seed: int, device: torch.device) -> nn.Module:
    init = derive_seed(_SEED_NAMESPACE, seed, "init") % (2**63)
    return create_model_for(model, data, seed=init, device=device, **model_kwargs)


def _generators(seed: int) -> tuple[torch.Generator, torch.Generator]:
    """The batch-order and augmentation streams of the teacher with seed ``seed`` (CPU generators)."""
    order = torch.Generator().manual_seed(derive_seed(_SEED_NAMESPACE, seed, "order"))
    aug = torch.Generator().manual_seed(derive_seed(_SEED_NAMESPACE, seed, "augment"))
    return order, aug


def _optimizer(params: Any, cfg: TeacherRecipe) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr_teacher, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr_teacher, weight_decay=cfg.weight_decay)


def _lr_at(cfg: TeacherRecipe, epoch: int, epochs: int) -> float:
    if cfg.schedule == "cosine":  # CosineAnnealingLR(T_max=epochs, eta_min=0), stepped once per epoch
        return 0.5 * cfg.lr_teacher * (1 + math.cos(math.pi * epoch / epochs))
    return cfg.lr_teacher


def _diverged(epoch: int, value: float, cfg: TeacherRecipe, who: str = "teacher") -> DivergenceError:
    return DivergenceError(
        f"{who} training diverged at epoch {epoch} (loss {value}); lower lr_teacher (now {cfg.lr_teacher})"
    )


def _finish(
    module: nn.Module,
    data: ImageData,
    model: str,
    model_kwargs: dict[str, Any],
    cfg: TeacherRecipe,
    recipe_name: str | None,
    epochs: int,
    seed: int,
    seconds: float,
    out: str | Path | None,
    quiet: bool,
) -> Teacher:
    """Measure the final test accuracy, build the :class:`Teacher` and save it to ``out`` (when given)."""
    device = next(module.parameters()).device
    acc = measure_accuracy(module, data.x_test, data.y_test, device)
    module.eval()
    teacher = Teacher(
        module=module,
        model=model,
        model_kwargs=dict(model_kwargs),
        dataset=data.name,
        fingerprint=data.fingerprint,
        classes=list(data.classes),
        preprocessing=data.preprocessing(),
        recipe=config_to_dict(cfg),
        recipe_name=recipe_name,
        epochs=epochs,
        seed=seed,
        test_accuracy=acc,
        input_shape=[data.channels, *data.image_size],
        train_seconds=seconds,
    )
    if out is not None:
        teacher.save(out)
    if not quiet:
        logger.info(
            "teacher %s (seed %d) on %s: test accuracy %.2f %% after %d epochs",
            model,
            seed,
            data.name,
            100 * acc,
            epochs,
        )
    return teacher


# ----------------------------------------------------------------------------------------------------------------------
# One teacher
# ----------------------------------------------------------------------------------------------------------------------


def train_teacher(
    data: ImageData,
    model: str,
    epochs: int | None,
    out: str | Path | None,
    *,
    recipe: str | TeacherRecipe | None = None,
    model_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    quiet: bool = False,
) -> Teacher:
    """Train a teacher on ``data``'s training split, measure its final test accuracy, and save it to ``out``.

    Args:
        data: image data (its class order and preprocessing are recorded and later enforced).
        model: a registered model name (``convnet_bn``, ``resnet18_bn``, ...); decoupled methods need BatchNorm.
        epochs: epochs to train; None: the recipe's ``train_epochs``.
        out: folder for ``teacher.safetensors`` + ``teacher.json`` (files there are replaced); None: not saved.
        recipe: a name in :data:`RECIPES`, a :class:`TeacherRecipe`, or None for :func:`default_recipe_for`.
        model_kwargs: builder options (``width=32``, ``norm="batch"``).
        seed: seeds the initialization, the batch order and the augmentation (independent derived streams).
        device: where training runs.
        quiet: no per-epoch log messages.

    Raises:
        ArgumentTypeError: ``data`` is not image data, or ``epochs``/``seed`` is not an int.
        ConfigError: ``epochs`` < 1, an unknown recipe value, a flip recipe on a no-flip dataset.
    """
    cfg, recipe_name, epochs = _resolve(data, recipe, epochs, "train_teacher")
    seed = _check_seed(seed)
    model_kwargs = dict(model_kwargs or {})
    device = torch.device(device)
    module = _build(data, model, model_kwargs, seed, device)
    order_gen, aug_gen = _generators(seed)
    opt = _optimizer(module.parameters(), cfg)
    fill = black_pixel(data)
    x_train, y_train = data.x_train, data.y_train
    n = x_train.shape[0]
    bn = has_running_stats(module)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        lr = _lr_at(cfg, epoch, epochs)
        for g in opt.param_groups:
            g["lr"] = lr
        module.train()
        perm = torch.randperm(n, generator=order_gen, device=order_gen.device).cpu()
        total, seen = 0.0, 0
        for i in range(0, n, cfg.batch_train):
            idx = perm[i : i + cfg.batch_train]
            if idx.numel() < 2 and bn:
                continue  # BatchNorm cannot train on one image; the reference loaders never meet this at batch 128
            xb = augment_batch(x_train[idx].to(device), cfg, fill, aug_gen)
            loss = F.cross_entropy(module(xb), y_train[idx].to(device))
            value = float(loss.detach())
            if not math.isfinite(value):
                raise _diverged(epoch, value, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += value * idx.numel()
            seen += idx.numel()
        if not quiet:
            logger.info("teacher epoch %d/%d: train loss %.4f, lr %.4g", epoch + 1, epochs, total / max(1, seen), lr)
    seconds = time.perf_counter() - t0
    return _finish(module, data, model, model_kwargs, cfg, recipe_name, epochs, seed, seconds, out, quiet)


# ----------------------------------------------------------------------------------------------------------------------
# Several teachers
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TeacherSpec:
    """One teacher of :func:`train_teachers`: architecture, builder options and seed.

    ``name`` (``<model>-s<seed>``, ``:`` of ``timm:`` names written ``_``) is its folder under ``out_root``.
    """

    model: str
    seed: int = 0
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.model.replace(':', '_')}-s{self.seed}"


def _as_spec(spec: TeacherSpec | str) -> TeacherSpec:
    if isinstance(spec, str):
        return TeacherSpec(spec)
    if not isinstance(spec, TeacherSpec):
        raise ArgumentTypeError(f"a teacher spec is a TeacherSpec or a model name, got {type(spec).__name__}")
    _check_seed(spec.seed)
    if not isinstance(spec.model_kwargs, dict):
        raise ArgumentTypeError(f"TeacherSpec.model_kwargs must be a dict, got {type(spec.model_kwargs).__name__}")
    return spec


def _rank_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0")) if world > 1 else 0
    return rank, world, int(os.environ.get("LOCAL_RANK", str(rank)))


def train_teachers(
    data: ImageData,
    specs: Sequence[TeacherSpec | str],
    out_root: str | Path | None,
    *,
    epochs: int | None = None,
    recipe: str | TeacherRecipe | None = None,
    device: str | torch.device = "cpu",
    vmap: bool | None = None,
    quiet: bool = False,
) -> list[Teacher]:
    """Train several teachers on ``data`` (seeds and/or architectures), each as :func:`train_teacher` would.

    Teachers of the same architecture and builder options are trained together, stacked and vmapped (see the
    module docstring) when ``vmap`` allows; other architectures train one after another. Under torchrun each rank
    trains ``specs[rank::world]``.

    Args:
        data: image data.
        specs: the teachers (:class:`TeacherSpec`, or a model name for seed 0); their ``name``s must differ.
        out_root: each teacher is saved to ``out_root/<spec.name>/``; None: not saved.
        epochs, recipe: as :func:`train_teacher`, shared by all.
        device: where training runs (under torchrun on CUDA: ``cuda:LOCAL_RANK``).
        vmap: train same-architecture teachers stacked (True), one by one (False), or None: stacked on CUDA when
            the network has no grouped convolutions.
        quiet: no log messages.

    Returns:
        The teachers this process trained, in ``specs`` order.

    Raises:
        ArgumentTypeError: a spec of another type, ``vmap`` not a bool or None.
        ConfigError: no specs, or two specs with the same ``name``; and what :func:`train_teacher` raises.
    """
    cfg, recipe_name, epochs = _resolve(data, recipe, epochs, "train_teachers")
    if isinstance(specs, (str, TeacherSpec)) or not isinstance(specs, Sequence):
        raise ArgumentTypeError(f"specs must be a list of TeacherSpec or model names, got {type(specs).__name__}")
    if vmap is not None and not isinstance(vmap, bool):
        raise ArgumentTypeError(f"vmap must be True, False or None, got {vmap!r}")
    specs = [_as_spec(s) for s in specs]
    if not specs:
        raise ConfigError("train_teachers needs at least one teacher spec")
    names = [s.name for s in specs]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise ConfigError(f"two teacher specs share the folder name {dup!r}; give them different seeds or models")
    device = torch.device(device)
    rank, world, local = _rank_world()
    if world > 1:
        specs = specs[rank::world]
        if device.type == "cuda":
            device = torch.device("cuda", local)
    # vmap=None: stacked on CUDA only, and never for grouped (depthwise) convolutions, see the module docstring
    use_vmap = device.type == "cuda" if vmap is None else vmap
    groups: dict[str, list[TeacherSpec]] = {}
    for s in specs:  # same architecture and options -> one group, in first-appearance order
        groups.setdefault(canonical_json({"model": s.model, "kwargs": s.model_kwargs}), []).append(s)
    out = None if out_root is None else Path(out_root)
    done: dict[str, Teacher] = {}
    for group in groups.values():
        if use_vmap and len(group) > 1 and (vmap or not _has_grouped_conv(data, group[0])):
            for s, t in zip(group, _train_stacked(data, group, cfg, recipe_name, epochs, device, out, quiet)):
                done[s.name] = t
        else:
            for s in group:
                where = None if out is None else out / s.name
                done[s.name] = train_teacher(
                    data,
                    s.model,
                    epochs,
                    where,
                    recipe=recipe,
                    model_kwargs=s.model_kwargs,
                    seed=s.seed,
                    device=device,
                    quiet=quiet,
                )
    return [done[s.name] for s in specs]


def _has_grouped_conv(data: ImageData, spec: TeacherSpec) -> bool:
    with torch.device("meta"):
        probe = create_model_for(spec.model, data, seed=0, **spec.model_kwargs)
    return any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in probe.modules())


def _train_stacked(
    data: ImageData,
    specs: list[TeacherSpec],
    cfg: TeacherRecipe,
    recipe_name: str | None,
    epochs: int,
    device: torch.device,
    out: Path | None,
    quiet: bool,
) -> list[Teacher]:
    """K teachers of one architecture trained at once: stacked state, one vmapped forward, one optimizer.

    Every teacher draws its batch order and augmentation from its own generators exactly as :func:`train_teacher`
    does, so only the float rounding of the batched kernels differs from training them one by one.

    Shape (inside): params/buffers name -> (K, *shape); the stacked batch (K, B, C, H, W); logits (K, B, classes).
    """
    from torch.func import functional_call, stack_module_state
    from torch.func import vmap as fvmap

    model, model_kwargs = specs[0].model, dict(specs[0].model_kwargs)
    k = len(specs)
    modules = [_build(data, model, model_kwargs, s.seed, device) for s in specs]
    streams = [_generators(s.seed) for s in specs]
    params, buffers = stack_module_state(modules)  # params: (K, ...) leaves that require grad
    base = copy.deepcopy(modules[0]).to("meta")
    base.train()
    opt = _optimizer(list(params.values()), cfg)
    fill = black_pixel(data)
    x_train, y_train = data.x_train, data.y_train
    n = x_train.shape[0]
    bn = has_running_stats(modules[0])

    def forward(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
        # BatchNorm updates its slice of the stacked running buffers in place (b is batched like x)
        return functional_call(base, (p, b), (x,))

    stacked_forward = fvmap(forward)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        lr = _lr_at(cfg, epoch, epochs)
        for g in opt.param_groups:
            g["lr"] = lr
        perms = [torch.randperm(n, generator=og, device=og.device).cpu() for og, _ in streams]
        total = torch.zeros(k, dtype=torch.float64)
        seen = 0
        for i in range(0, n, cfg.batch_train):
            idx = [perm[i : i + cfg.batch_train] for perm in perms]
            if idx[0].numel() < 2 and bn:
                continue  # as train_teacher: BatchNorm cannot train on one image
            xb = torch.stack([augment_batch(x_train[j].to(device), cfg, fill, ag) for j, (_, ag) in zip(idx, streams)])
            yb = torch.stack([y_train[j] for j in idx]).to(device)
            logits = stacked_forward(params, buffers, xb)
            losses = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none").view(k, -1).mean(1)
            values = losses.detach().double().cpu()
            bad = (~torch.isfinite(values)).nonzero().flatten().tolist()
            if bad:
                raise _diverged(epoch, float(values[bad[0]]), cfg, f"teacher {specs[bad[0]].name}")
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()  # teacher k's loss only reaches its slice k: the gradient is its own
            opt.step()
            total += values * idx[0].numel()
            seen += idx[0].numel()
        if not quiet:
            mean = ", ".join(f"{v:.4f}" for v in (total / max(1, seen)).tolist())
            logger.info("teachers epoch %d/%d: train losses %s, lr %.4g", epoch + 1, epochs, mean, lr)
    seconds = (time.perf_counter() - t0) / k
    teachers = []
    for j, (s, module) in enumerate(zip(specs, modules)):
        state = {name: t[j].detach() for name, t in params.items()} | {name: t[j] for name, t in buffers.items()}
        module.load_state_dict(state, strict=True)
        where = None if out is None else out / s.name
        teachers.append(
            _finish(module, data, model, model_kwargs, cfg, recipe_name, epochs, s.seed, seconds, where, quiet)
        )
    return teachers
