"""Distillation methods, one file each; importing this package registers them all.

The entry points live here, above the method files (``base.py`` holds only the interface):

- :func:`distill` checks that the method and the dataset are of the same kind, resolves the config and runs the
  method: a :class:`Matcher` through the shared runner, a plain :class:`Method` by its own ``distill``.
- :func:`get_method` / :func:`list_methods` look the registry up (did-you-mean errors, fnmatch filters).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from condense.errors import ArgumentTypeError, MismatchError
from condense.eval.checks import check_count, check_ipc
from condense.methods import (  # noqa: F401  (registers every built-in method)
    ast,
    cvdd,
    datm,
    dc,
    dm,
    doscond,
    ftd,
    herding,
    herding_graphs,
    infer,
    krr_st,
    mirage,
    mtt,
    nrrdd,
    random_graphs,
    random_real,
    rded,
    sre2l,
)
from condense.methods._gate import check_plausible
from condense.methods._runner import run_matcher
from condense.methods.base import METHODS, Matcher, MatchState, Method, RunContext

__all__ = [
    "METHODS",
    "Method",
    "Matcher",
    "MatchState",
    "RunContext",
    "distill",
    "get_method",
    "list_methods",
    "preset_buffer",
]

logger = logging.getLogger("condense")


def get_method(name: str) -> Method:
    """Instantiate the method registered as ``name``.

    Raises:
        UnknownNameError: no such method (the message suggests the closest name and lists all of them).

    Example:
        >>> get_method("dm").data_kind
        'images'
    """
    if not isinstance(name, str):
        raise ArgumentTypeError(f"a method name must be a str (e.g. 'dm'), got {type(name).__name__} {name!r}")
    return METHODS.get(name)()


def list_methods(pattern: str = "*") -> list[str]:
    """Registered method names matching the fnmatch ``pattern``, sorted.

    Example:
        >>> list_methods("d?")
        ['dc', 'dm']
    """
    return METHODS.list(pattern)


def _check_kind(method: Method, data: Any) -> None:
    """One-line :class:`MismatchError` unless ``data.kind`` is the kind of data ``method`` distills."""
    if data is None or isinstance(data, (torch.Tensor, str, bytes, tuple, list, dict)):
        raise ArgumentTypeError(
            f"data must be a dataset from condense.data.load_dataset (an ImageData or a GraphData), got "
            f"{type(data).__name__}"
        )
    kind = getattr(data, "kind", None)
    if kind == method.data_kind:
        return
    label = getattr(data, "name", None) or type(data).__name__
    if kind is None:
        raise MismatchError(
            f"method '{method.name}' distills {method.data_kind} but '{label}' ({type(data).__name__}) has no data "
            "kind; pass a dataset from condense.data.load_dataset"
        )
    same = [n for n in METHODS.list() if METHODS.get(n).data_kind == kind]
    raise MismatchError(
        f"method '{method.name}' distills {method.data_kind} but '{label}' holds {kind}; "
        f"{kind.rstrip('s')} methods: {', '.join(same) or 'none'}"
    )


def _check_arguments(ipc: Any, preset: Any, overrides: Any, generator: Any, run: Any) -> None:
    """One-line errors for arguments of the wrong type, before anything is computed."""
    check_count("ipc", ipc)
    for what, value, want, accepted in (
        ("preset", preset, str, "a preset name or None"),
        ("overrides", overrides, Mapping, "a mapping of config fields to values, or None"),
        ("generator", generator, torch.Generator, "a torch.Generator (torch.Generator().manual_seed(0)) or None"),
        ("run", run, RunContext, "a condense.methods.RunContext or None"),
    ):
        if value is not None and not isinstance(value, want):
            raise ArgumentTypeError(f"{what} must be {accepted}, got {type(value).__name__} {value!r}")


def distill(
    name: str,
    data: Any,
    ipc: int,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    generator: torch.Generator | None = None,
    run: RunContext | None = None,
) -> Any:
    """Distill ``data`` into ``ipc`` items per class with method ``name``.

    Args:
        name: registered method name (``condense methods`` lists them).
        data: a dataset of the kind the method distills: an :class:`~condense.data.ImageData` for image methods,
            a graph dataset for graph methods (``data.kind`` says which).
        ipc: items per class: an int from 1 to the size of the smallest training class (a method whose config has
            ``cap_by_ipc``, Mirage, reads ipc as a cap and takes any positive int).
        preset: preset name; None picks ``"<dataset>-ipc<ipc>"``, then ``"<dataset>"``, when the method has it,
            else the defaults.
        overrides: config field overrides applied after the preset.
        generator: the only source of randomness (None: a generator seeded with 0).
        run: the run environment (None: CPU, nothing written).

    Returns:
        A :class:`~condense.synthetic.SyntheticSet`; ``meta["preset"]`` names the preset used.

    Raises:
        MismatchError: the method distills another kind of data than ``data`` holds.
        UnknownNameError: unknown method or preset.
        ConfigError: ``ipc`` < 1 or larger than the smallest class, or an override is unknown or out of range.
        ArgumentTypeError: an argument of the wrong type (``ipc=1.5``, ``generator="cpu"``, ``data=None``); it is
            also a ``TypeError`` and a ``ConfigError``.

    Example:
        >>> from condense.data import load_dataset
        >>> syn = distill("random_real", load_dataset("digits"), ipc=1)
        >>> syn.images.shape
        torch.Size([10, 1, 8, 8])
    """
    method = get_method(name)
    _check_kind(method, data)
    _check_arguments(ipc, preset, overrides, generator, run)
    if preset is None:
        preset = method.default_preset(getattr(data, "name", ""), ipc)
    cfg = method.resolve_config(preset, overrides)
    if not hasattr(cfg, "cap_by_ipc"):  # Mirage reads ipc as a cap on tree-sets per class, not a count
        check_ipc(data, ipc)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    run = run or RunContext()
    logger.info("distilling %s with %s (ipc %d, preset %s)", getattr(data, "name", "?"), name, ipc, preset)
    if isinstance(method, Matcher):
        syn = run_matcher(method, data, cfg, ipc, generator, run)
    else:
        syn = method.distill(data, cfg, ipc, generator, run)
        check_plausible(syn, data)
    if preset is not None:
        syn.meta.setdefault("preset", preset)
        evaluation = method.presets[preset].get("eval")
        if evaluation:  # how the preset's paper scores its sets (DATM: batch 128); evaluate() defaults to it
            syn.meta.setdefault("eval", dict(evaluation))
    if (
        getattr(method, "needs_teacher", False) and method.teacher_kind == "classifier"
    ):  # decoupled sets are scored with their teacher's soft labels
        syn.meta.setdefault("eval", {"protocol": "soft_label"})
    if getattr(method, "needs_teacher", False) and method.teacher_kind == "encoder":  # self-supervised: transfer
        syn.meta.setdefault("eval", {"protocol": "transfer"})
    return syn


def preset_buffer(
    name: str | None = None, *, method: str | None = None, dataset: str | None = None, ipc: int | None = None
) -> tuple[str, str, dict[str, Any], int]:
    """The expert buffer a trajectory preset needs, by its full name or by method, dataset and IPC.

    Args:
        name: ``"<method>-<preset>"``, e.g. ``"mtt-cifar10-ipc10"`` (``condense experts --preset``).
        method, dataset, ipc: the method and the dataset/IPC whose default preset it is (``condense experts --for``).

    Returns:
        ``(method, preset, requirements, min_epochs)``: requirements as ``preset(..., buffer=...)`` declares them
        (keys in ``condense.methods._trajectory.REQUIREMENT_KEYS``), plus the config's expert kind when the preset
        names none; ``min_epochs`` the last expert epoch the preset reads (``max_start_epoch - 1 + expert_epochs``).

    Raises:
        ConfigError: neither or both ways given, a method that reads no buffer, or a preset without a buffer.
        UnknownNameError: unknown method or preset (did-you-mean).

    Example:
        >>> preset_buffer("mtt-cifar10-ipc10")[2:], preset_buffer(method="ftd", dataset="digits", ipc=1)[2]
        (({'expert': 'mtt', 'zca': True, 'model': 'convnet', 'model_kwargs': {}, 'experts': 100, 'epochs': 50}, 21), \
{'model': 'convnetd2', 'kind': 'flat'})
    """
    from condense.errors import ConfigError, UnknownNameError
    from condense.registry import did_you_mean

    if (name is None) == (method is None):
        raise ConfigError("name the preset either as '<method>-<preset>' or by method, dataset and ipc")
    if name is not None:
        method, _, key = name.partition("-")
        m = get_method(method)
    else:
        m = get_method(method)
        key = m.default_preset(dataset or "", ipc) if ipc is not None else None
        if key is None:
            raise ConfigError(f"method '{method}' has no preset for dataset '{dataset}' at ipc {ipc}")
    if not getattr(m, "needs_buffer", False):
        raise ConfigError(f"method '{method}' reads no expert buffer; only trajectory methods have buffer presets")
    if key not in m.presets:
        names = [f"{method}-{k}" for k in sorted(m.presets)]
        full = f"{method}-{key}"
        raise UnknownNameError(f"unknown preset '{full}'{did_you_mean(full, names)} available: {', '.join(names)}")
    wanted = m.presets[key].get("buffer")
    if not wanted:
        raise ConfigError(f"preset '{method}-{key}' declares no buffer")
    wanted = dict(wanted)
    cfg = m.resolve_config(key)
    if "expert" not in wanted and "kind" not in wanted and cfg.expert_kind != "any":
        wanted["kind"] = cfg.expert_kind
    return str(method), key, wanted, int(cfg.max_start_epoch - 1 + cfg.expert_epochs)
