"""The bench spec (a TOML grid) and its cells, each content-addressed by its full configuration.

A spec names datasets x methods x IPC x evaluation models x seeds and the evaluation protocol by name and version;
:func:`load_spec` validates it (unknown keys refused with close matches, a protocol version other than the installed
one refused) and :func:`expand` turns it into cells in grid order: per dataset one ``full_data`` cell, then per IPC
and method a ``method`` cell and the ``random_real`` cell it is compared with (shared by every method with the same
protocol, teachers and data). A cell's id is the first 16 hex digits of the sha256 of the canonical JSON of its
config, so a changed configuration is a new cell and an unchanged one is found again.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from condense.errors import ConfigError
from condense.io import canonical_json, sha256_bytes

__all__ = ["Cell", "Spec", "cell_id", "expand", "load_spec", "parse_spec", "prereq_id"]

TOP_KEYS = {
    "name": str,
    "datasets": list,
    "methods": list,
    "ipc": list,
    "models": list,
    "seeds": int,
    "epochs": int,
    "full_epochs": int,
    "seed": int,
    "protocol": str,
    "protocol_version": int,
    "soft_protocol": str,
    "soft_protocol_version": int,
    "metrics": list,
    "data_root": str,
    "zca": bool,
    "checkpoint_every": int,
    "teacher": dict,
    "method": dict,
}
METHOD_KEYS = {"preset": str, "overrides": dict, "iterations": int, "protocol": str, "buffer": dict, "ipc": list}
TEACHER_KEYS = {"model": str, "model_kwargs": dict, "epochs": int, "recipe": str}
METRICS = ("ior", "hlr", "lrs", "ars")
HARD_PROTOCOLS = ("classic", "classic_noaug", "datm")
TRAJECTORY_METHODS = ("mtt", "ftd", "datm", "ast")
DECOUPLED_METHODS = ("sre2l", "rded", "infer", "cvdd", "nrrdd")


def _close(word: str, known: Any) -> str:
    near = difflib.get_close_matches(word, list(known), n=1, cutoff=0.5)
    return f" (did you mean '{near[0]}'?)" if near else ""


def _check_keys(table: Mapping[str, Any], known: Mapping[str, type], where: str) -> None:
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"unknown key '{where}{key}'{_close(key, known)}; allowed: {', '.join(sorted(known))}")
        want = known[key]
        ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
        if not ok:
            raise ConfigError(f"'{where}{key}' must be a {want.__name__}, got {type(value).__name__} {value!r}")


def cell_id(config: Mapping[str, Any]) -> str:
    """The content address of a cell: the first 16 hex digits of the sha256 of its canonical JSON config."""
    return sha256_bytes(canonical_json(config).encode())[:16]


prereq_id = cell_id


@dataclass
class Spec:
    """A validated bench spec (the TOML's tables, with defaults filled in)."""

    name: str
    datasets: list[str]
    methods: list[str]
    ipc: list[int]
    models: list[str]
    seeds: int = 3
    epochs: int = 300
    full_epochs: int | None = None
    seed: int = 0
    protocol: str = "classic"
    protocol_version: int = 1
    soft_protocol: str = "soft_label"
    soft_protocol_version: int = 1
    metrics: list[str] = field(default_factory=list)
    data_root: str | None = None
    zca: bool = False
    checkpoint_every: int = 0
    teacher: dict[str, Any] | None = None
    method: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: str | None = None


def _check_protocol(name: str, version: int, key: str) -> None:
    from condense.eval import get_protocol, list_protocols

    images = [p for p in list_protocols() if getattr(get_protocol(p), "kind", "") == "images" and p != "transfer"]
    if name not in images:
        raise ConfigError(f"'{key} = \"{name}\"' is not an image protocol{_close(name, images)}; allowed: {images}")
    installed = get_protocol(name).version
    if version != installed:
        raise ConfigError(
            f"'{key}_version = {version}': the installed protocol '{name}' is version {installed}; these numbers "
            f"would not be comparable; set {key}_version = {installed} (and rerun every cell) or install the "
            "condense release that has that version"
        )


def parse_spec(raw: Mapping[str, Any], path: str | None = None) -> Spec:
    """Validate a spec's tables (what ``tomllib`` returns) into a :class:`Spec`.

    Raises:
        ConfigError: an unknown key (with the closest known one), a value of the wrong type, an unknown dataset,
            method, model or metric, an IPC below 1, or a protocol version other than the installed one.
    """
    from condense.data import list_datasets
    from condense.methods import get_method, list_methods
    from condense.models import list_models

    _check_keys(raw, TOP_KEYS, "")
    for key in ("datasets", "methods", "ipc", "models"):
        if not raw.get(key):
            raise ConfigError(f"the spec needs a non-empty '{key}' list")
    spec = Spec(**{"name": Path(path or "bench").stem, **raw}, path=path)
    known = list_datasets()
    for d in spec.datasets:
        if d not in known:
            raise ConfigError(f"datasets: unknown dataset '{d}'{_close(d, known)}; allowed: {', '.join(known)}")
    methods = [
        m for m in list_methods() if get_method(m).data_kind == "images" and get_method(m).teacher_kind != "encoder"
    ]
    for m in spec.methods:
        if m not in methods:
            raise ConfigError(f"methods: unknown method '{m}'{_close(m, methods)}; allowed: {', '.join(methods)}")
    for i in spec.ipc:
        if not isinstance(i, int) or isinstance(i, bool) or i < 1:
            raise ConfigError(f"ipc: {i!r} is not a positive integer; use e.g. ipc = [1, 10, 50]")
    models = list_models()
    for m in spec.models:
        if m not in models and not m.startswith("timm:"):
            raise ConfigError(f"models: unknown model '{m}'{_close(m, models)}; see 'condense models'")
    for m in spec.metrics:
        if m not in METRICS:
            raise ConfigError(f"metrics: unknown metric '{m}'{_close(m, METRICS)}; allowed: {', '.join(METRICS)}")
    for key in ("seeds", "epochs"):
        if getattr(spec, key) < 1:
            raise ConfigError(f"'{key} = {getattr(spec, key)}' must be at least 1")
    _check_protocol(spec.protocol, spec.protocol_version, "protocol")
    _check_protocol(spec.soft_protocol, spec.soft_protocol_version, "soft_protocol")
    if spec.teacher is not None:
        _check_keys(spec.teacher, TEACHER_KEYS, "teacher.")
    for name, opts in spec.method.items():
        if name not in spec.methods:
            raise ConfigError(f"[method.{name}] names a method not in 'methods'{_close(name, spec.methods)}")
        if not isinstance(opts, dict):
            raise ConfigError(f"[method.{name}] must be a table")
        _check_keys(opts, METHOD_KEYS, f"method.{name}.")
        if "protocol" in opts:
            _check_protocol(opts["protocol"], get_protocol_version(opts["protocol"]), f"method.{name}.protocol")
        if "preset" in opts and opts["preset"] not in get_method(name).presets:
            presets = sorted(get_method(name).presets)
            raise ConfigError(
                f"method.{name}.preset: unknown preset '{opts['preset']}'{_close(opts['preset'], presets)}; "
                f"allowed: {', '.join(presets) or 'none'}"
            )
    needs_teacher = [m for m in spec.methods if get_method(m).needs_teacher]
    if needs_teacher and spec.teacher is None and any(d != "digits" for d in spec.datasets):
        raise ConfigError(
            f"methods {needs_teacher} need a teacher: add a [teacher] table (model, epochs, recipe, model_kwargs) "
            "for the datasets other than digits"
        )
    return spec


def get_protocol_version(name: str) -> int:
    """The installed version of protocol ``name``."""
    from condense.eval import get_protocol

    return get_protocol(name).version


def load_spec(path: str | Path) -> Spec:
    """Read and validate a TOML spec file."""
    import tomllib

    p = Path(path)
    if not p.is_file():
        from condense.errors import DataNotFoundError

        raise DataNotFoundError(f"bench spec {p} does not exist; pass a TOML file such as specs/digits.toml")
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"bench spec {p} is not valid TOML: {e}") from None
    return parse_spec(raw, str(p))


@dataclass
class Cell:
    """One row to produce: its role, its hashed config and the cells it is compared with."""

    id: str
    role: str
    config: dict[str, Any]
    baseline_cell: str | None = None
    full_cell: str | None = None
    buffer: dict[str, Any] | None = None  # the prerequisite's spec (also inside config)
    teachers: list[dict[str, Any]] | None = None


def _buffer_spec(method: str, dataset: str, ipc: int, opts: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """The expert buffer a trajectory cell needs and whether the data is ZCA-whitened for it."""
    if dataset == "digits":
        from condense.demo import demo_buffer

        spec = demo_buffer(method) or {}
        zca = False
    else:
        from condense.methods import preset_buffer

        _, _, need, min_epochs = preset_buffer(method=method, dataset=dataset, ipc=ipc)
        spec = {
            "kind": need.get("expert") or need.get("kind") or "vanilla",
            "model": need.get("model") or "convnet",
            "model_kwargs": need.get("model_kwargs") or {},
            "experts": need.get("experts", 10),
            "epochs": need.get("epochs") or min_epochs,
            "config": {},
        }
        zca = bool(need.get("zca", False))
    spec = {**spec, **opts.get("buffer", {})}
    return spec, zca


def _teacher_specs(method: str, dataset: str, spec: Spec) -> list[dict[str, Any]]:
    if dataset == "digits" and spec.teacher is None:
        from condense.demo import DEMO_COMMITTEES, DEMO_TEACHER

        return [dict(t) for t in DEMO_COMMITTEES.get(method, [DEMO_TEACHER])]
    return [dict(spec.teacher or {})]


def expand(spec: Spec) -> list[Cell]:
    """The spec's cells in grid order (dataset, then IPC, then method; baselines just after their first user)."""
    from condense.methods import get_method

    cells: list[Cell] = []
    seen: set[str] = set()

    def add(cell: Cell) -> Cell:
        if cell.id not in seen:
            seen.add(cell.id)
            cells.append(cell)
        return cell

    measure_hard = any(m in spec.metrics for m in ("hlr", "lrs"))
    measure_noaug = "ars" in spec.metrics
    for dataset in spec.datasets:
        evals = {"models": list(spec.models), "seeds": spec.seeds, "seed": spec.seed}
        full_cfg = {
            "role": "full_data",
            "dataset": dataset,
            "zca": spec.zca,
            "eval": {
                **evals,
                "epochs": spec.full_epochs or spec.epochs,
                "protocol": "classic",
                "protocol_version": get_protocol_version("classic"),
            },
        }
        fulls: dict[bool, Cell] = {}
        for ipc in spec.ipc:
            for method in spec.methods:
                opts = spec.method.get(method, {})
                if "ipc" in opts and ipc not in opts["ipc"]:
                    continue
                m = get_method(method)
                buffer, zca = (None, spec.zca)
                if m.needs_buffer:
                    buffer, zca = _buffer_spec(method, dataset, ipc, opts)
                    buffer = {**buffer, "dataset": dataset, "zca": zca, "seed": spec.seed}
                teachers = _teacher_specs(method, dataset, spec) if m.needs_teacher else None
                soft = teachers is not None
                proto = opts.get("protocol") or (spec.soft_protocol if soft else spec.protocol)
                ev = {
                    **evals,
                    "epochs": spec.epochs,
                    "protocol": proto,
                    "protocol_version": get_protocol_version(proto),
                }
                if zca not in fulls:
                    cfg = {**full_cfg, "zca": zca}
                    fulls[zca] = add(Cell(cell_id(cfg), "full_data", cfg))
                base_cfg = {
                    "role": "random_real",
                    "dataset": dataset,
                    "zca": zca,
                    "ipc": ipc,
                    "eval": ev,
                    "teachers": teachers,
                    "noaug": measure_noaug,
                }
                overrides = dict(opts.get("overrides", {}))
                if "iterations" in opts:
                    overrides["num_iterations"] = opts["iterations"]
                cfg = {
                    "role": "method",
                    "dataset": dataset,
                    "zca": zca,
                    "method": method,
                    "ipc": ipc,
                    "preset": opts.get("preset"),
                    "overrides": overrides,
                    "seed": spec.seed,
                    "eval": ev,
                    "buffer": buffer,
                    "teachers": teachers,
                    "hard": measure_hard,
                    "noaug": measure_noaug,
                }
                base = Cell(cell_id(base_cfg), "random_real", base_cfg, teachers=teachers)
                add(Cell(cell_id(cfg), "method", cfg, base.id, fulls[zca].id, buffer, teachers))
                add(base)
    return cells
