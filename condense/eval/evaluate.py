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

import math
import numbers
import time
from collections.abc import Sequence
from typing import Any

import torch

from condense.config import check_range
from condense.data.base import ImageData
from condense.errors import ArgumentTypeError, ConfigError, MismatchError
from condense.eval import graphs
from condense.eval.images import train_and_test
from condense.eval.metrics import summarize
from condense.eval.protocol import DEFAULT_PROTOCOLS, EvalProtocol, GraphProtocol, get_protocol
from condense.models.gnn import GNNS
from condense.models.registry import MODELS, TIMM_PREFIX
from condense.seeding import generator as seeded_generator
from condense.synthetic import SyntheticSet

__all__ = [
    "evaluate",
    "evaluate_tensors",
    "random_real_baseline",
    "full_data_baseline",
    "check_kind",
    "check_count",
    "check_ipc",
]

DEFAULT_MODELS = ("convnet",)

#: SyntheticSet.kind -> the data.kind it is evaluated on, and how messages name it.
_SYN_KINDS = {"images": ("images", "an image set"), "graph_summary": ("graphs", "a graph summary")}
_DATA_KINDS = ("images", "graphs")


def _data_kind(data: Any) -> str:
    kind = getattr(data, "kind", None)
    if kind not in _DATA_KINDS:
        raise ArgumentTypeError(
            f"cannot evaluate on a {type(data).__name__}: data must be an ImageData or a GraphData "
            "(data.kind 'images' or 'graphs'); load it with condense.data.load_dataset"
        )
    return kind


# ---------------------------------------------------------------------------------------------- argument checks


def check_count(name: str, value: Any, lo: int = 1) -> int:
    """``value`` as an ``int >= lo``: one-line errors for a bool, a float, a string or a value below ``lo``.

    Raises:
        ArgumentTypeError: ``value`` is not an int (``1.5``, ``"3"``, ``True``).
        ConfigError: ``value < lo``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name} must be an int >= {lo}, got {type(value).__name__} {value!r}")
    if value < lo:
        raise ConfigError(f"{name}={value} is out of range; allowed: an int >= {lo}")
    return int(value)


def _class_sizes(data: Any) -> list[int]:
    y = getattr(data, "y_train", None)
    if isinstance(y, torch.Tensor) and y.ndim == 1 and not y.is_floating_point():
        return torch.bincount(y.cpu(), minlength=data.num_classes).tolist()
    return [int(data.indices_of_class(c).numel()) for c in range(data.num_classes)]


def check_ipc(data: Any, ipc: Any) -> int:
    """``ipc`` as an int between 1 and the size of ``data``'s smallest training class.

    A larger ipc cannot be honoured: a per-class draw returns the whole class, so the set would be labelled with an
    ipc it does not have (``random_real`` at ipc 1e9 used to save the whole training set labelled ipc 1e9).

    Raises:
        ArgumentTypeError: ``ipc`` is not an int. ConfigError: ``ipc < 1`` or larger than the smallest class.
    """
    ipc = check_count("ipc", ipc)
    sizes = _class_sizes(data)
    if sizes and ipc > min(sizes):
        k = sizes.index(min(sizes))
        items = "images" if data.kind == "images" else "graphs"
        raise ConfigError(
            f"ipc={ipc} is larger than the smallest class of '{data.name}': class '{data.classes[k]}' holds "
            f"{sizes[k]} training {items}; pass an ipc <= {sizes[k]}"
        )
    return ipc


def _check_seeds(seeds: Any) -> None:
    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, bool):
        check_count("seeds", seeds)
        return
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence):
        raise ArgumentTypeError(
            f"seeds must be a count (an int >= 1) or a list of int seeds, got {type(seeds).__name__} {seeds!r}"
        )
    if not seeds:
        raise ConfigError(f"seeds={seeds!r} gives no run; pass a positive count or a non-empty list")
    for s in seeds:
        check_count("each seed in seeds", s, lo=0)


def _check_models(models: Any, kind: str) -> list[str] | None:
    """``models`` as a list of registered names; a single string is one model name (``"convnet"``)."""
    if models is None:
        return None
    if isinstance(models, str):
        models = [models]
    if not isinstance(models, Sequence) or not all(isinstance(m, str) for m in models):
        raise ArgumentTypeError(
            f"models must be a model name or a list of names (e.g. ['convnet']), got {type(models).__name__} {models!r}"
        )
    if not models or not all(m.strip() for m in models):
        raise ConfigError(f"models={list(models)!r} names no model; pass at least one, e.g. ['convnet']")
    for m in models:
        if kind == "graphs":
            GNNS.get(m)
        elif not m.startswith(TIMM_PREFIX):
            MODELS.get(m)
    return list(models)


def _check_number(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be a positive number, got {type(value).__name__} {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name}={value!r} is out of range; allowed: a finite number > 0")


def _check_device(device: Any) -> None:
    if not isinstance(device, (str, torch.device)):
        raise ArgumentTypeError(
            f"device must be a str or a torch.device (cpu, cuda, cuda:N), got {type(device).__name__} {device!r}"
        )
    try:
        torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None


def _check_args(
    kind: str,
    *,
    models: Any,
    seeds: Any,
    protocol: Any,
    epochs: Any,
    lr: Any,
    batch_size: Any,
    temperature: Any,
    device: Any,
    seed: Any,
) -> list[str] | None:
    """The argument checks every entry point shares; returns ``models`` as a list (or None)."""
    _check_seeds(seeds)
    check_count("seed", seed, lo=0)
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if value is not None:
            check_count(name, value)
    _check_number("lr", lr)
    _check_number("temperature", temperature)
    if protocol is not None and not isinstance(protocol, (str, EvalProtocol, GraphProtocol)):
        raise ArgumentTypeError(
            f"protocol must be a name (e.g. 'classic') or a protocol object, got {type(protocol).__name__}"
        )
    _check_device(device)
    return _check_models(models, kind)


def _check_labels(labels: Any, data: Any, what: str) -> None:
    """Hard labels must be int64 class indices of ``data``, soft labels (N, K) floats with K = its class count."""
    if not isinstance(labels, torch.Tensor):
        raise ArgumentTypeError(f"{what} must be a torch.Tensor, got {type(labels).__name__}")
    k = data.num_classes
    if labels.ndim == 2:
        if not labels.is_floating_point() or labels.shape[1] != k:
            raise MismatchError(
                f"{what} are {labels.dtype} {tuple(labels.shape)} but data '{data.name}' has {k} classes; soft labels "
                f"must be float (N, {k})"
            )
        return
    if labels.ndim != 1 or labels.dtype != torch.int64:
        raise MismatchError(
            f"{what} are {labels.dtype} {tuple(labels.shape)}; pass int64 class indices (N,) or float soft labels "
            f"(N, {k})"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
        bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        raise MismatchError(
            f"{what} hold class {bad} but data '{data.name}' has {k} classes (0..{k - 1}); evaluate the set on the "
            "dataset it was distilled from"
        )


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
    if not isinstance(images, torch.Tensor):
        raise ArgumentTypeError(f"images must be a torch.Tensor (N, C, H, W), got {type(images).__name__}")
    models = _check_args(
        "images",
        models=models,
        seeds=seeds,
        protocol=protocol,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        temperature=temperature,
        device=device,
        seed=seed,
    )
    _check_labels(labels, data, "labels")
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(data.x_test.shape[1:]):
        raise MismatchError(
            f"images have shape {tuple(images.shape)} but data '{data.name}' holds (N, "
            f"{', '.join(map(str, data.x_test.shape[1:]))}) images; evaluate on the dataset they came from"
        )
    if labels.shape[0] != images.shape[0]:
        raise ConfigError(f"got {images.shape[0]} images but {labels.shape[0]} labels; pass one label per image")
    proto = _image_protocol(protocol, epochs, batch_size, temperature)
    seed_list = list(range(seed, seed + seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
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
    if not isinstance(syn, SyntheticSet):
        raise ArgumentTypeError(
            f"syn must be a SyntheticSet (from distill() or SyntheticSet.load), got {type(syn).__name__}; "
            "to score raw tensors use evaluate_tensors(images, labels, data)"
        )
    kind = check_kind(syn, data)
    models = _check_args(
        kind,
        models=models,
        seeds=seeds,
        protocol=protocol,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        temperature=temperature,
        device=device,
        seed=seed,
    )
    if syn.labels.ndim == 1:
        _check_labels(syn.labels, data, "syn.labels")
    if kind == "graphs":
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
    kind = _data_kind(data)
    check_count("seeds", seeds)
    check_ipc(data, ipc)
    models = _check_args(
        kind,
        models=models,
        seeds=seeds,
        protocol=protocol,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        temperature=temperature,
        device=device,
        seed=seed,
    )
    if kind == "graphs":
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
        idx = data.sample_per_class(ipc, seeded_generator("condense-random-real", s))
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
    kind = _data_kind(data)
    models = _check_args(
        kind,
        models=models,
        seeds=seeds,
        protocol=protocol,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        temperature=temperature,
        device=device,
        seed=seed,
    )
    kw = dict(models=models, seeds=seeds, protocol=protocol, epochs=epochs, lr=lr, batch_size=batch_size)
    if kind == "graphs":
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
