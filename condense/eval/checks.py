"""The argument checks of the evaluation entry points (:mod:`condense.eval.evaluate`): one-line errors, no training.

Each check raises :class:`~condense.errors.ArgumentTypeError` for a value of the wrong type,
:class:`~condense.errors.ConfigError` for a value out of range and :class:`~condense.errors.MismatchError` for a
value that does not fit the dataset. ``check_count`` and ``check_ipc`` are also used by ``condense.methods``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch

from condense.errors import ArgumentTypeError, ConfigError, MismatchError
from condense.eval.protocol import EvalProtocol, GraphProtocol, SoftLabelProtocol
from condense.eval.transfer import TransferProtocol
from condense.models.gnn import GNNS
from condense.models.registry import MODELS, TIMM_PREFIX

__all__ = [
    "data_kind",
    "check_kind",
    "check_count",
    "check_ipc",
    "check_seeds",
    "check_models",
    "check_number",
    "check_device",
    "check_options",
    "check_labels",
    "check_images",
    "images_only",
]

#: SyntheticSet.kind -> the data.kind it is evaluated on, and how messages name it.
_SYN_KINDS = {"images": ("images", "an image set"), "graph_summary": ("graphs", "a graph summary")}
_DATA_KINDS = ("images", "graphs")


def data_kind(data: Any) -> str:
    """Return ``data.kind`` (``"images"`` or ``"graphs"``).

    Raises:
        ArgumentTypeError: ``data`` is not a dataset container (no such ``kind``).
    """
    kind = getattr(data, "kind", None)
    if kind not in _DATA_KINDS:
        raise ArgumentTypeError(
            f"cannot evaluate on a {type(data).__name__}: data must be an ImageData or a GraphData "
            "(data.kind 'images' or 'graphs'); load it with condense.data.load_dataset"
        )
    return kind


def check_kind(syn: Any, data: Any) -> str:
    """Return ``data.kind`` after checking that ``syn`` is the kind of set ``data`` can score.

    Raises:
        MismatchError: one line, e.g. ``syn is a graph summary but data 'digits' holds images; ...``.
    """
    kind = data_kind(data)
    want, what = _SYN_KINDS.get(syn.kind, (None, f"a '{syn.kind}' set"))
    if want != kind:
        raise MismatchError(
            f"syn is {what} ('{syn.method}', distilled from '{syn.dataset}') but data '{data.name}' holds {kind}; "
            f"evaluate it on the dataset it was distilled from"
        )
    return kind


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


def check_seeds(seeds: Any) -> None:
    """Check ``seeds``: a count (an int >= 1) or a non-empty list of int seeds >= 0.

    Raises:
        ArgumentTypeError: not an int or a list of ints. ConfigError: a count below 1, an empty list or a seed < 0.
    """
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


def check_models(models: Any, kind: str) -> list[str] | None:
    """``models`` as a list of registered names; a single string is one model name (``"convnet"``).

    Args:
        models: None (the default models), a name or a list of names.
        kind: ``"graphs"`` looks the names up among the GNNs, ``"images"`` among the image models (``timm:``
            names are not looked up here).

    Raises:
        ArgumentTypeError: not a name or a list of names. ConfigError: no model named.
        UnknownNameError: a name that is not registered.
    """
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


def check_number(name: str, value: Any) -> None:
    """Check that ``value`` is None or a finite real number > 0.

    Raises:
        ArgumentTypeError: not a real number (a bool counts as not). ConfigError: not finite or not > 0.
    """
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be a positive number, got {type(value).__name__} {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name}={value!r} is out of range; allowed: a finite number > 0")


def check_device(device: Any) -> None:
    """Check that ``device`` is a str or a ``torch.device`` that torch can parse.

    Raises:
        ArgumentTypeError: neither a str nor a ``torch.device``. ConfigError: a string torch does not know.
    """
    if not isinstance(device, (str, torch.device)):
        raise ArgumentTypeError(
            f"device must be a str or a torch.device (cpu, cuda, cuda:N), got {type(device).__name__} {device!r}"
        )
    try:
        torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None


def check_options(
    kind: str,
    models: Any,
    seeds: Any,
    protocol: Any,
    epochs: Any,
    lr: Any,
    batch_size: Any,
    temperature: Any,
    device: Any,
    seed: Any,
    /,
) -> dict[str, Any]:
    """Check the options every entry point shares and return them as keyword arguments to forward.

    The arguments are positional, in the order of the entry points' signatures, so each caller checks its options
    in one line: ``kw = check_options(kind, models, seeds, protocol, epochs, lr, batch_size, temperature, device,
    seed)``.

    Args:
        kind: ``data.kind``; the registry ``models`` are looked up in.
        models, seeds, protocol, epochs, lr, batch_size, temperature, device, seed: the entry point's options.

    Returns:
        ``{"models", "seeds", "protocol", "epochs", "lr", "batch_size", "temperature", "device", "seed"}``, the
        values as given except ``models``, which is a list (or None).

    Raises:
        ArgumentTypeError, ConfigError, UnknownNameError: the first option that fails, checked in the order seeds,
        seed, epochs, batch_size, lr, temperature, protocol, device, models.
    """
    check_seeds(seeds)
    check_count("seed", seed, lo=0)
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if value is not None:
            check_count(name, value)
    check_number("lr", lr)
    check_number("temperature", temperature)
    if protocol is not None and not isinstance(
        protocol, (str, EvalProtocol, GraphProtocol, SoftLabelProtocol, TransferProtocol)
    ):
        raise ArgumentTypeError(
            f"protocol must be a name (e.g. 'classic') or a protocol object, got {type(protocol).__name__}"
        )
    check_device(device)
    return {
        "models": check_models(models, kind),
        "seeds": seeds,
        "protocol": protocol,
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "temperature": temperature,
        "device": device,
        "seed": seed,
    }


def check_labels(labels: Any, data: Any, what: str) -> None:
    """Check labels against ``data``: int64 class indices (N,) of its classes, or (N, K) float soft labels.

    Args:
        labels: the labels to check. data: the dataset they are scored on (its ``num_classes`` and ``name``).
        what: how messages name the labels (``"labels"``, ``"syn.labels"``).

    Raises:
        ArgumentTypeError: not a tensor. MismatchError: wrong dtype or shape, or a class outside ``0..K-1``.
    """
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


def check_images(images: torch.Tensor, labels: torch.Tensor, data: Any) -> None:
    """Check that ``images`` are (N, C, H, W) with ``data``'s (C, H, W) and that there is one label per image.

    Raises:
        MismatchError: the image shape is not ``data``'s. ConfigError: the label count is not the image count.
    """
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(data.x_test.shape[1:]):
        raise MismatchError(
            f"images have shape {tuple(images.shape)} but data '{data.name}' holds (N, "
            f"{', '.join(map(str, data.x_test.shape[1:]))}) images; evaluate on the dataset they came from"
        )
    if labels.shape[0] != images.shape[0]:
        raise ConfigError(f"got {images.shape[0]} images but {labels.shape[0]} labels; pass one label per image")


def images_only(data: Any, **options: Any) -> None:
    """Refuse image-only options (``temperature``, ``vmap``) given for graph data.

    Args:
        data: the graph dataset (named in the message). options: name -> value; None means not given.

    Raises:
        ConfigError: one line naming every option that was given.
    """
    given = [k for k, v in options.items() if v is not None]
    if given:
        raise ConfigError(
            f"{', '.join(given)} apply to image evaluation only; data '{data.name}' holds graphs (drop the option)"
        )
