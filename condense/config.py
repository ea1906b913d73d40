"""Helpers for frozen config dataclasses: strict from_dict/to_dict, ``key=value`` overrides, presets."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from condense.errors import ConfigError, UnknownNameError
from condense.registry import did_you_mean

__all__ = [
    "config_to_dict",
    "config_from_dict",
    "parse_overrides",
    "resolve_config",
    "check_range",
    "check_choice",
    "PRESET_META",
    "preset",
    "preset_key",
]

C = TypeVar("C")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain JSON-able dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def config_from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
    """Build ``cls`` from ``data``, refusing unknown keys with a did-you-mean hint."""
    fields = _fields(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        k = unknown[0]
        raise ConfigError(
            f"unknown {cls.__name__} field '{k}'{did_you_mean(k, list(fields))} fields: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for k, v in data.items():
        if isinstance(v, list) and _is_tuple(hints.get(k)):
            v = tuple(v)
        values[k] = v
    return cls(**values)


def _is_tuple(tp: Any) -> bool:
    return typing.get_origin(tp) is tuple or tp is tuple


def _parse_value(name: str, raw: str, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if raw.lower() in ("none", "null") and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _parse_value(name, raw, a)
            except ConfigError:
                continue
        raise ConfigError(f"cannot parse {name}={raw!r} as {tp}")
    try:
        if tp is bool:
            low = raw.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if tp is int:
            return int(raw)
        if tp is float:
            return float(raw)
        if tp is str:
            return raw
        if origin is tuple or origin is list:
            inner = args[0] if args else str
            items = [s for s in raw.strip("()[]").split(",") if s.strip()]
            vals = [_parse_value(name, s.strip(), inner) for s in items]
            return tuple(vals) if origin is tuple else vals
        if typing.get_origin(tp) is typing.Literal:
            if raw in args:
                return raw
            raise ValueError(raw)
    except ValueError as e:
        raise ConfigError(f"cannot parse {name}={raw!r} as {getattr(tp, '__name__', tp)}") from e
    return json.loads(raw)


def parse_overrides(cls: type, items: list[str] | None) -> dict[str, Any]:
    """Parse CLI ``key=value`` strings by the field types of ``cls``."""
    out: dict[str, Any] = {}
    if not items:
        return out
    fields = _fields(cls)
    hints = typing.get_type_hints(cls)
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key not in fields:
            raise ConfigError(f"unknown {cls.__name__} field '{key}'{did_you_mean(key, list(fields))}")
        out[key] = _parse_value(key, raw.strip(), hints[key])
    return out


def resolve_config(
    cls: type[C], presets: Mapping[str, Mapping[str, Any]], preset: str | None, overrides: Mapping[str, Any] | None
) -> C:
    """Defaults <- preset <- overrides, validated by the dataclass' ``__post_init__``."""
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in presets:
            names = sorted(presets)
            raise UnknownNameError(
                f"unknown preset '{preset}'{did_you_mean(preset, names)} available: {', '.join(names)}"
            )
        values.update({k: v for k, v in presets[preset].items() if k not in PRESET_META})
    values.update(dict(overrides or {}))
    return config_from_dict(cls, values)


def check_range(
    name: str, value: float, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False
) -> None:
    """Raise :class:`ConfigError` unless ``lo <= value <= hi`` (``lo < value`` when ``lo_open``); NaN is refused."""
    if isinstance(value, float) and value != value:
        raise ConfigError(f"{name}=nan is not a number; pass a finite value")
    bad = (lo is not None and (value <= lo if lo_open else value < lo)) or (hi is not None and value > hi)
    if bad:
        lo_s = "-inf" if lo is None else f"{lo}"
        hi_s = "inf" if hi is None else f"{hi}"
        br = "(" if lo_open else "["
        raise ConfigError(f"{name}={value!r} is out of range; allowed {br}{lo_s}, {hi_s}]")


def check_choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``allowed`` (with a did-you-mean for strings)."""
    if value in allowed:
        return
    hint = did_you_mean(value, [str(a) for a in allowed]) if isinstance(value, str) else ""
    raise ConfigError(f"{name}={value!r} is not allowed{hint} choose one of: {', '.join(map(str, allowed))}")


#: preset keys that describe the experiment around a config and are not config fields: ``source`` (where the values
#: come from), ``buffer`` (what expert buffer the preset needs, see ``condense.methods._trajectory.check_requirements``)
#: and ``eval`` (how its sets are scored: ``{"protocol": ...}``)
PRESET_META = ("source", "buffer", "eval")


def preset(
    *, source: str, buffer: Mapping[str, Any] | None = None, eval: Mapping[str, Any] | None = None, **fields: Any
) -> dict[str, Any]:
    """One preset entry: config field overrides plus the ``source`` (paper table, README row) they come from.

    Presets are keyword data (timm's ``_cfg``); a missing source is an error, so every value stays traceable. A preset
    of a method that reads an expert buffer also says which buffer it needs (``buffer``: expert preset, ZCA, model,
    expert count and epochs, as the paper recorded it), and a preset may name how its sets are evaluated (``eval``).

    Example:
        >>> preset(source="MTT Table 6", syn_steps=50, lr_img=1000.0)["syn_steps"]
        50
    """
    if not source:
        raise ConfigError("a preset needs a non-empty source (the paper table or README row its values come from)")
    out: dict[str, Any] = {"source": source, **fields}
    if buffer is not None:
        out["buffer"] = dict(buffer)
    if eval is not None:
        out["eval"] = dict(eval)
    return out


def preset_key(dataset: str, ipc: int | None = None) -> str:
    """The one preset key scheme: ``"<dataset>-ipc<N>"``, or ``"<dataset>"`` for per-dataset settings."""
    return dataset if ipc is None else f"{dataset}-ipc{ipc}"
