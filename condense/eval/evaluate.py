"""The shared evaluation entry points: score a SyntheticSet, a random real subset or the full data the same way."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from condense import seeding
from condense.config import check_range
from condense.data.base import ImageData
from condense.eval.metrics import summarize
from condense.eval.protocol import EvalProtocol, get_protocol
from condense.eval.trainer import train_and_test

__all__ = ["evaluate", "evaluate_tensors", "random_real_baseline", "full_data_baseline", "random_subset"]

DEFAULT_MODELS = ("convnet",)


def _resolve(
    protocol: str | EvalProtocol, epochs: int | None, batch_size: int | None, temperature: float | None
) -> EvalProtocol:
    proto = get_protocol(protocol)
    return proto.replace(epochs=epochs, batch_size=batch_size, temperature=temperature)


def evaluate_tensors(
    images: torch.Tensor,
    labels: torch.Tensor,
    data: ImageData,
    *,
    models: Sequence[str] | None = None,
    seeds: int | Sequence[int] = 5,
    protocol: str | EvalProtocol = "classic",
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    temperature: float | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    vmap: bool | None = None,
    quiet: bool = True,
    desc: str = "eval",
) -> dict[str, Any]:
    """Train fresh models on ``(images, labels)`` and score them on ``data``'s test split.

    Returns:
        ``{"protocol", "protocol_version", "epochs", "lr", "augment", "seeds", "accuracy": {model: {"mean",
        "std", "runs"}}, "seconds"}`` with accuracies as fractions.
    """
    proto = _resolve(protocol, epochs, batch_size, temperature)
    seed_list = list(range(seed, seed + seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise ValueError("seeds must be a positive count or a non-empty list")
    use_lr = float(lr) if lr is not None else proto.lr
    check_range("lr", use_lr, 0.0, lo_open=True)
    augment = proto.augment_for(data.name)
    t0 = time.perf_counter()
    acc: dict[str, Any] = {}
    for m in models or DEFAULT_MODELS:
        runs = train_and_test(
            images,
            labels,
            data.x_test,
            data.y_test,
            m,
            num_classes=data.num_classes,
            seeds=seed_list,
            protocol=proto,
            lr=use_lr,
            augment=augment,
            device=device,
            vmap=vmap,
            quiet=quiet,
            desc=desc,
        )
        acc[m] = summarize(runs)
    return {
        "protocol": proto.name,
        "protocol_version": proto.version,
        "epochs": proto.epochs,
        "lr": use_lr,
        "augment": augment,
        "seeds": seed_list,
        "accuracy": acc,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def evaluate(
    syn: Any,
    data: ImageData,
    *,
    models: Sequence[str] | None = None,
    seeds: int | Sequence[int] = 5,
    protocol: str | EvalProtocol = "classic",
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    temperature: float | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    vmap: bool | None = None,
    quiet: bool = True,
) -> dict[str, Any]:
    """Score a :class:`~condense.synthetic.SyntheticSet` with the shared protocol; returns a leaderboard row.

    The learning rate is, in order: ``lr`` if given, the set's learned lr (when the protocol uses it), the
    protocol's lr. Soft labels are trained with the KD loss at the protocol's temperature (or the set's
    ``meta["temperature"]``).

    Example:
        >>> from condense import distill, evaluate, load_dataset
        >>> data = load_dataset("digits")
        >>> row = evaluate(distill("random_real", data, ipc=1), data, seeds=1, epochs=2)
        >>> 0.0 <= row["accuracy"]["convnet"]["mean"] <= 1.0
        True
    """
    syn.check_compatible(data)
    proto = _resolve(protocol, epochs, batch_size, temperature)
    if lr is None and proto.use_learned_lr and syn.lr is not None:
        lr = syn.lr
    if temperature is None and "temperature" in syn.meta:
        proto = proto.replace(temperature=float(syn.meta["temperature"]))
    row = evaluate_tensors(
        syn.images,
        syn.labels,
        data,
        models=models,
        seeds=seeds,
        protocol=proto,
        lr=lr,
        device=device,
        seed=seed,
        vmap=vmap,
        quiet=quiet,
        desc=syn.method,
    )
    return {
        "method": syn.method,
        "dataset": data.name,
        "ipc": syn.ipc,
        "label_kind": "soft" if syn.soft_labels else "hard",
        **row,
    }


def random_subset(data: ImageData, ipc: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``ipc`` random real training images per class (fewer if a class has fewer), class-sorted.

    Shape:
        return: images (K * ipc, C, H, W), labels (K * ipc,) int64.
    """
    check_range("ipc", ipc, 1)
    idx = []
    for c in range(data.num_classes):
        members = data.indices_of_class(c)
        perm = torch.randperm(members.numel(), generator=generator)[:ipc]
        idx.append(members[perm.to(members.device)])
    sel = torch.cat(idx)
    return data.x_train[sel].clone(), data.y_train[sel].clone()


def random_real_baseline(
    data: ImageData,
    ipc: int,
    *,
    models: Sequence[str] | None = None,
    seeds: int = 5,
    seed: int = 0,
    quiet: bool = True,
    **kwargs: Any,
) -> dict[str, Any]:
    """Random real subsets at ``ipc`` under the shared protocol: seed ``s`` draws its own subset and model.

    Returns the same row as :func:`evaluate` with ``method="random_real"``; each run uses a different draw,
    so the std covers both subset choice and model initialization.
    """
    acc: dict[str, list[float]] = {}
    row: dict[str, Any] = {}
    t0 = time.perf_counter()
    for s in range(seed, seed + seeds):
        x, y = random_subset(data, ipc, seeding.generator("condense-random-real", s))
        row = evaluate_tensors(x, y, data, models=models, seeds=[s], quiet=quiet, desc="random", **kwargs)
        for m, r in row["accuracy"].items():
            acc.setdefault(m, []).extend(r["runs"])
    row.update(
        {
            "accuracy": {m: summarize(r) for m, r in acc.items()},
            "seeds": list(range(seed, seed + seeds)),
            "seconds": round(time.perf_counter() - t0, 3),
        }
    )
    return {"method": "random_real", "dataset": data.name, "ipc": ipc, "label_kind": "hard", **row}


def full_data_baseline(data: ImageData, **kwargs: Any) -> dict[str, Any]:
    """The whole training set under the shared protocol (the upper reference; slow on large datasets)."""
    row = evaluate_tensors(data.x_train, data.y_train, data, desc="full", **kwargs)
    return {"method": "full_data", "dataset": data.name, "ipc": None, "label_kind": "hard", **row}
