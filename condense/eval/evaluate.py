"""The shared evaluation entry points: score a SyntheticSet, a random real subset or the full data the same way.

One call per question, for every data kind: :func:`evaluate`, :func:`random_real_baseline` and
:func:`full_data_baseline` read ``data.kind`` and send image datasets to the image trainer
(:mod:`condense.eval.images`) and graph datasets to the GNN trainer (:mod:`condense.eval.graphs`). A synthetic set
of the wrong kind for its dataset is refused with one :class:`~condense.errors.MismatchError`.

Rows keep each kind's format: image rows carry ``protocol`` (a name), ``protocol_version``, ``epochs``, ``lr``,
``augment``, ``seeds`` and ``label_kind``; graph rows carry ``num_graphs``, ``metric``, ``roc_auc`` (binary) and
``protocol`` (the whole recipe as a dict). Both carry ``method``, ``dataset``, ``ipc``, ``accuracy`` (per model
``{"mean", "std", "runs"}``, fractions) and ``seconds``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from condense import seeding
from condense.config import check_range
from condense.data.base import ImageData
from condense.errors import ConfigError, MismatchError
from condense.eval import graphs
from condense.eval.images import train_and_test
from condense.eval.metrics import summarize
from condense.eval.protocol import DEFAULT_PROTOCOLS, EvalProtocol, GraphProtocol, get_protocol

__all__ = ["evaluate", "evaluate_tensors", "random_real_baseline", "full_data_baseline", "check_kind"]

DEFAULT_MODELS = ("convnet",)

#: SyntheticSet.kind -> the data.kind it is evaluated on, and how messages name it.
_SYN_KINDS = {"images": ("images", "an image set"), "graph_summary": ("graphs", "a graph summary")}
_DATA_KINDS = ("images", "graphs")


def _data_kind(data: Any) -> str:
    kind = getattr(data, "kind", None)
    if kind not in _DATA_KINDS:
        raise ConfigError(
            f"cannot evaluate on a {type(data).__name__}: data must be an ImageData or a GraphData "
            "(data.kind 'images' or 'graphs'); load it with condense.data.load_dataset"
        )
    return kind


def check_kind(syn: Any, data: Any) -> str:
    """Return ``data.kind`` after checking that ``syn`` is the kind of set ``data`` can score.

    Raises:
        MismatchError: one line, e.g. ``syn is a graph summary but data 'digits' holds images; ...``.
    """
    kind = _data_kind(data)
    want, what = _SYN_KINDS.get(syn.kind, (None, f"a '{syn.kind}' set"))
    if want != kind:
        raise MismatchError(
            f"syn is {what} ('{syn.method}', distilled from '{syn.dataset}') but data '{data.name}' holds {kind}; "
            f"evaluate it on the dataset it was distilled from"
        )
    return kind


def _images_only(data: Any, **options: Any) -> None:
    given = [k for k, v in options.items() if v is not None]
    if given:
        raise ConfigError(
            f"{', '.join(given)} apply to image evaluation only; data '{data.name}' holds graphs (drop the option)"
        )


def _image_protocol(
    protocol: str | EvalProtocol | GraphProtocol | None,
    epochs: int | None,
    batch_size: int | None,
    temperature: float | None,
) -> EvalProtocol:
    proto = get_protocol(DEFAULT_PROTOCOLS["images"] if protocol is None else protocol)
    if not isinstance(proto, EvalProtocol):
        raise ConfigError(f"protocol '{proto.name}' trains GNNs; image evaluation needs one such as 'classic'")
    return proto.replace(epochs=epochs, batch_size=batch_size, temperature=temperature)


# ---------------------------------------------------------------------------------------------- images


def evaluate_tensors(
    images: torch.Tensor,
    labels: torch.Tensor,
    data: ImageData,
    *,
    models: Sequence[str] | None = None,
    seeds: int | Sequence[int] = 5,
    protocol: str | EvalProtocol | None = None,
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
    """Train fresh image models on ``(images, labels)`` and score them on ``data``'s test split.

    Args:
        images, labels: the training set (synthetic, a random subset or the full data).
        data: an image dataset (its test split is scored; its name resolves ``augment="auto"``).
        models: registered model names (default ``convnet``).
        seeds: models per architecture (seeds ``seed .. seed + seeds - 1``) or an explicit list.
        protocol: the recipe (default ``"classic"``). epochs, batch_size, temperature: overrides of the protocol's.
        lr: the learning rate (default: the protocol's). device: where to train. vmap: see
            :func:`~condense.eval.images.train_and_test`. quiet: hide progress bars. desc: progress-bar label.

    Returns:
        ``{"protocol", "protocol_version", "epochs", "lr", "augment", "seeds", "accuracy": {model: {"mean",
        "std", "runs"}}, "seconds"}`` with accuracies as fractions.

    Shape:
        images: (N, C, H, W) with the (C, H, W) of ``data``. labels: (N,) int64 or (N, K) float soft labels.
    """
    if _data_kind(data) != "images":
        raise MismatchError(f"evaluate_tensors trains image models but data '{data.name}' holds graphs; use evaluate")
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(data.x_test.shape[1:]):
        raise MismatchError(
            f"images have shape {tuple(images.shape)} but data '{data.name}' holds (N, "
            f"{', '.join(map(str, data.x_test.shape[1:]))}) images; evaluate on the dataset they came from"
        )
    if labels.shape[0] != images.shape[0]:
        raise ConfigError(f"got {images.shape[0]} images but {labels.shape[0]} labels; pass one label per image")
    proto = _image_protocol(protocol, epochs, batch_size, temperature)
    seed_list = list(range(seed, seed + seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise ConfigError(f"seeds={seeds!r} gives no run; pass a positive count or a non-empty list")
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


# ---------------------------------------------------------------------------------------------- entry points


def evaluate(
    syn: Any,
    data: Any,
    *,
    models: Sequence[str] | None = None,
    seeds: int | Sequence[int] = 5,
    protocol: str | EvalProtocol | GraphProtocol | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    temperature: float | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    vmap: bool | None = None,
    quiet: bool = True,
) -> dict[str, Any]:
    """Score a :class:`~condense.synthetic.SyntheticSet` with the shared protocol of its kind; returns one row.

    Images (``data.kind == "images"``): fresh ``models`` (default ``convnet``) trained with the ``classic``
    protocol; the learning rate is, in order, ``lr`` if given, the set's learned lr (when the protocol uses it),
    the protocol's lr; soft labels train with the KD loss at the protocol's temperature (or the set's
    ``meta["temperature"]``). Graphs (``data.kind == "graphs"``): fresh GNNs (default ``gcn``) trained with the
    ``graph`` protocol (:func:`condense.eval.graphs.evaluate_graph_set`); ``temperature`` and ``vmap`` do not apply.

    Args:
        syn: the set to score; ``syn.kind`` must match ``data.kind``.
        data: the dataset it was distilled from.
        models: architectures to train. seeds: runs per architecture (a count from ``seed``, or a list).
        protocol: a name in ``PROTOCOLS`` or a protocol object (default: ``classic`` / ``graph`` by kind).
        epochs, lr, batch_size, temperature: overrides of the protocol's values.
        device: where to train. seed: first seed. vmap: images only. quiet: hide progress bars.

    Raises:
        MismatchError: ``syn`` and ``data`` are of different kinds, classes or preprocessing.

    Example:
        >>> from condense.data import load_dataset
        >>> from condense.methods import distill
        >>> data = load_dataset("digits")
        >>> row = evaluate(distill("random_real", data, ipc=1), data, seeds=1, epochs=2)
        >>> 0.0 <= row["accuracy"]["convnet"]["mean"] <= 1.0
        True
    """
    if check_kind(syn, data) == "graphs":
        _images_only(data, temperature=temperature, vmap=vmap)
        return graphs.evaluate_graph_set(
            syn,
            data,
            models=models,
            seeds=seeds,
            protocol=protocol,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            device=device,
            seed=seed,
            quiet=quiet,
        )
    syn.check_compatible(data)
    proto = _image_protocol(protocol, epochs, batch_size, temperature)
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


def random_real_baseline(
    data: Any,
    ipc: int,
    *,
    models: Sequence[str] | None = None,
    seeds: int = 5,
    protocol: str | EvalProtocol | GraphProtocol | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    temperature: float | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    vmap: bool | None = None,
    quiet: bool = True,
) -> dict[str, Any]:
    """Random real subsets at ``ipc`` per class under the shared protocol: seed ``s`` draws its own subset and model.

    The subset of seed ``s`` is ``data.sample_per_class(ipc, seeding.generator("condense-random-real", s))`` for
    both kinds; each run uses a different draw, so the std covers both subset choice and model initialization.

    Returns:
        The row of :func:`evaluate` with ``method="random_real"`` (images) or ``"random_graphs"`` (graphs).
    """
    check_range("seeds", seeds, 1)
    check_range("ipc", ipc, 1)
    if _data_kind(data) == "graphs":
        _images_only(data, temperature=temperature, vmap=vmap)
        return graphs.random_graph_baseline(
            data,
            ipc,
            models=models,
            seeds=seeds,
            protocol=protocol,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            device=device,
            seed=seed,
            quiet=quiet,
        )
    kw = dict(protocol=protocol, epochs=epochs, lr=lr, batch_size=batch_size, temperature=temperature)
    acc: dict[str, list[float]] = {}
    row: dict[str, Any] = {}
    t0 = time.perf_counter()
    for s in range(seed, seed + seeds):
        idx = data.sample_per_class(ipc, seeding.generator("condense-random-real", s))
        x, y = data.x_train[idx].clone(), data.y_train[idx].clone()
        row = evaluate_tensors(
            x, y, data, models=models, seeds=[s], device=device, vmap=vmap, quiet=quiet, desc="random", **kw
        )
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


def full_data_baseline(
    data: Any,
    *,
    models: Sequence[str] | None = None,
    seeds: int | Sequence[int] = 5,
    protocol: str | EvalProtocol | GraphProtocol | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    temperature: float | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    vmap: bool | None = None,
    quiet: bool = True,
) -> dict[str, Any]:
    """The whole training split under the shared protocol (the upper reference; slow on large datasets).

    Returns:
        The row of :func:`evaluate` with ``method="full_data"`` and ``ipc=None``.
    """
    kw = dict(models=models, seeds=seeds, protocol=protocol, epochs=epochs, lr=lr, batch_size=batch_size)
    if _data_kind(data) == "graphs":
        _images_only(data, temperature=temperature, vmap=vmap)
        return graphs.full_graph_baseline(data, device=device, seed=seed, quiet=quiet, **kw)
    row = evaluate_tensors(
        data.x_train,
        data.y_train,
        data,
        temperature=temperature,
        device=device,
        seed=seed,
        vmap=vmap,
        quiet=quiet,
        desc="full",
        **kw,
    )
    return {"method": "full_data", "dataset": data.name, "ipc": None, "label_kind": "hard", **row}
