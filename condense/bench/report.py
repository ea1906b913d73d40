"""``condense report``: leaderboard tables, a CSV, a self-contained HTML page and PNG plots from bench rows.

A bench row (``condense bench``, one JSON object per line of ``results.jsonl``) records one cell of a grid: a method
(or the random-real or full-data reference) at one IPC, scored under one protocol on every evaluation model, with
the cell ids of the random-real row it is compared with and of the full-data row. This module reads those rows,
refuses any that break the row contract (schema name and version, required fields and types, fractions in [0, 1],
the cell id being the content address of the config, links pointing at rows of the right role, one result per
cell), and writes into ``--out``:

- ``report.md``: per dataset and evaluation model, a table of methods x IPC (mean ± std in percent, the best method
  of each column in bold, a dagger where a method does not beat random real images under the same protocol and
  labels) with the random-real and full-data rows and the DD-Ranking metrics (IOR, HLR, LRS, ARS, fractions;
  :mod:`condense.eval.metrics`) of every method, then the protocol, versions, seeds and hardware read from the rows;
- ``results.csv``: one line per (row, evaluation model) with every number and metric;
- ``report.html``: the same tables and the plots in one file (CSS inline, PNGs as base64 ``data:`` URIs);
- PNGs (matplotlib, optional extra ``plots``): accuracy vs IPC per dataset and model with the random-real and
  full-data lines, a cross-architecture heatmap per dataset and IPC (methods x evaluation models), distillation
  time vs accuracy, and an image grid per set whose artifact is present (``SyntheticSet.grid``, the one
  ``condense show`` writes).

Without matplotlib the tables, the CSV and the image grids (Pillow) are still written and the report says how to
install it.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from condense.errors import (
    CondenseError,
    ConfigError,
    DataFormatError,
    DataNotFoundError,
    IntegrityError,
    MismatchError,
    OutputExistsError,
)
from condense.eval.metrics import ARS_WEIGHT, LRS_WEIGHT, RankingMetrics, ranking_metrics
from condense.io import canonical_json, check_fields, sha256_bytes, sha256_file, write_bytes_atomic

__all__ = [
    "ROW_SCHEMA",
    "ROW_SCHEMA_VERSION",
    "ROLES",
    "PLOTS_HINT",
    "CSV_COLUMNS",
    "BenchRow",
    "validate_row",
    "read_rows",
    "write_report",
]

logger = logging.getLogger("condense")

ROW_SCHEMA = "condense-bench-row"
ROW_SCHEMA_VERSION = 1
ROLES = ("method", "random_real", "full_data")
LABEL_KINDS = ("hard", "soft")
#: what to run when matplotlib is missing (the distribution is ``condense-dd``; ``condense`` on PyPI is another project)
PLOTS_HINT = "pip install 'condense-dd[plots]'"
REPORT_FILES = ("report.md", "results.csv", "report.html")

_ROW_FIELDS: dict[str, Any] = {
    "cell": str,
    "role": str,
    "dataset": str,
    "method": str,
    "ipc": int | None,
    "preset": str | None,
    "label_kind": str,
    "protocol": str,
    "protocol_version": int,
    "models": list[str],
    "seeds": list[int],
    "accuracy": dict[str, dict],
    "accuracy_hard": dict[str, dict] | None,
    "accuracy_noaug": dict[str, dict] | None,
    "baseline_cell": str | None,
    "full_cell": str | None,
    "stages": dict[str, dict],
    "artifact": str | None,
    "artifact_sha256": str | None,
    "config": dict,
    "condense_version": str,
    "torch_version": str,
    "hardware": dict,
    "host": str,
    "finished": str,
}
_ACC_FIELDS: dict[str, Any] = {"mean": float, "std": float, "runs": list[float]}
#: fields that say when and where a cell ran: two rows of one cell may differ there and still be the same result
_VOLATILE = ("finished", "host", "stages", "hardware", "condense_version", "torch_version")
_CELL = re.compile(r"[0-9a-f]{16}")
_FIX = "fix or delete that line (rerunning 'condense bench' on the spec rewrites a missing cell)"
_DASH = "–"


# ---------------------------------------------------------------------------------------------- reading rows


@dataclass(frozen=True)
class BenchRow:
    """One validated bench row and where it was read from.

    Attributes:
        data: the row as written by ``condense bench`` (see the module docstring of :mod:`condense.bench.report`).
        where: ``"results.jsonl:12"`` (file and line) or ``"rows[3]"`` for a row passed in memory.
        base: the folder the row's ``artifact`` path is relative to (the results file's folder).
        source: the results file, or None for a row passed in memory.
    """

    data: dict[str, Any]
    where: str
    base: Path
    source: Path | None = None

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @property
    def cell(self) -> str:
        return self.data["cell"]


def _check_acc(table: Any, name: str, where: str, models: Sequence[str], *, every: bool) -> None:
    if table is None:
        return
    if every and set(table) != set(models):
        raise IntegrityError(
            f"'{where}': field '{name}' scores models {sorted(table)}, but 'models' lists {list(models)}; "
            f"a row scores every model it names; {_FIX}"
        )
    for m, acc in table.items():
        if m not in models:
            raise IntegrityError(
                f"'{where}': field '{name}.{m}' scores a model missing from 'models' {list(models)}; {_FIX}"
            )
        if not isinstance(acc, dict):
            raise IntegrityError(f"'{where}': field '{name}.{m}' is not an object with mean, std, runs; {_FIX}")
        check_fields(acc, _ACC_FIELDS, where, prefix=f"{name}.{m}.", hint=_FIX)
        values = [("mean", acc["mean"])] + [(f"runs[{i}]", v) for i, v in enumerate(acc["runs"])]
        for key, v in values:
            if not (math.isfinite(v) and 0.0 <= v <= 1.0):
                raise IntegrityError(
                    f"'{where}': field '{name}.{m}.{key}' is {v!r}, expected an accuracy as a fraction in [0, 1] "
                    f"(rows hold fractions, not percent); {_FIX}"
                )
        if not (math.isfinite(acc["std"]) and acc["std"] >= 0.0):
            raise IntegrityError(f"'{where}': field '{name}.{m}.std' is {acc['std']!r}, expected >= 0; {_FIX}")
        if not acc["runs"]:
            raise IntegrityError(f"'{where}': field '{name}.{m}.runs' is empty, expected one accuracy per run; {_FIX}")


def validate_row(row: Any, where: str) -> None:
    """Refuse a row that breaks the bench row contract, in one line naming ``where`` and the field.

    Checks the schema name and version, every required field and its type, the role and label kind, ``ipc`` (null
    exactly for full-data rows), accuracies as fractions in [0, 1] for every listed model, stage timings, and that
    ``cell`` is the content address of ``config`` (the first 16 hex digits of the sha256 of its canonical JSON).

    Args:
        row: one parsed JSON line.
        where: named in the message (``"results.jsonl:12"``).

    Raises:
        IntegrityError: a field is missing, of the wrong type or out of range, or the cell id does not match.
        DataFormatError: not a bench row, or a schema version this condense does not read.
    """
    if not isinstance(row, dict):
        raise DataFormatError(f"'{where}': expected a JSON object (one bench row per line), got {type(row).__name__}")
    if row.get("schema") != ROW_SCHEMA:
        raise DataFormatError(
            f"'{where}': field 'schema' is {row.get('schema')!r}, expected {ROW_SCHEMA!r}; this is not a "
            "'condense bench' results file"
        )
    version = row.get("schema_version")
    if version != ROW_SCHEMA_VERSION or isinstance(version, bool):
        raise DataFormatError(
            f"'{where}': field 'schema_version' is {version!r}, this condense reads version {ROW_SCHEMA_VERSION}; "
            "report it with the condense that wrote it, or rerun the bench"
        )
    check_fields(row, _ROW_FIELDS, where, hint=_FIX)
    if not _CELL.fullmatch(row["cell"]):
        raise IntegrityError(f"'{where}': field 'cell' is {row['cell']!r}, expected 16 lowercase hex digits; {_FIX}")
    if row["role"] not in ROLES:
        raise IntegrityError(f"'{where}': field 'role' is {row['role']!r}, expected one of {', '.join(ROLES)}; {_FIX}")
    if row["role"] != "method" and row["method"] != row["role"]:
        raise IntegrityError(
            f"'{where}': field 'method' is {row['method']!r} in a {row['role']} row, expected {row['role']!r}; {_FIX}"
        )
    if row["label_kind"] not in LABEL_KINDS:
        raise IntegrityError(f"'{where}': field 'label_kind' is {row['label_kind']!r}, expected hard or soft; {_FIX}")
    if row["role"] == "full_data":
        if row["ipc"] is not None:
            raise IntegrityError(f"'{where}': field 'ipc' is {row['ipc']!r} in a full_data row, expected null; {_FIX}")
    elif row["ipc"] is None or row["ipc"] < 1:
        raise IntegrityError(f"'{where}': field 'ipc' is {row['ipc']!r}, expected a positive integer; {_FIX}")
    models = row["models"]
    if not models or len(set(models)) != len(models):
        raise IntegrityError(f"'{where}': field 'models' is {models!r}, expected distinct model names; {_FIX}")
    _check_acc(row["accuracy"], "accuracy", where, models, every=True)
    _check_acc(row["accuracy_hard"], "accuracy_hard", where, models, every=False)
    _check_acc(row["accuracy_noaug"], "accuracy_noaug", where, models, every=False)
    for cell_field in ("baseline_cell", "full_cell"):
        if row[cell_field] is not None and not _CELL.fullmatch(row[cell_field]):
            raise IntegrityError(
                f"'{where}': field '{cell_field}' is {row[cell_field]!r}, expected a cell id (16 hex) or null; {_FIX}"
            )
    for stage, info in row["stages"].items():
        if not isinstance(info, dict):
            raise IntegrityError(f"'{where}': field 'stages.{stage}' is not an object; {_FIX}")
        check_fields(info, {"seconds": float}, where, prefix=f"stages.{stage}.", hint=_FIX)
        if not (math.isfinite(info["seconds"]) and info["seconds"] >= 0):
            raise IntegrityError(f"'{where}': field 'stages.{stage}.seconds' is {info['seconds']!r}, expected >= 0")
    try:
        address = sha256_bytes(canonical_json(row["config"]).encode())[:16]
    except (TypeError, ValueError) as e:
        raise IntegrityError(f"'{where}': field 'config' is not plain finite JSON ({e}); {_FIX}") from e
    if address != row["cell"]:
        raise IntegrityError(
            f"'{where}': field 'cell' is {row['cell']!r} but its config hashes to {address!r}: the row was edited "
            f"after the bench wrote it; {_FIX}"
        )


def _read_file(path: Path) -> list[BenchRow]:
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "not found"
        raise DataNotFoundError(f"results file '{path}' {what}; pass the results.jsonl that 'condense bench' wrote")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(
                    f"'{where}': not valid JSON ({e.msg} at column {e.colno}); each line holds one bench row; {_FIX}"
                ) from None
            validate_row(obj, where)
            rows.append(BenchRow(obj, where, path.parent, path))
    return rows


def _differing(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    keys = sorted((set(a) | set(b)) - set(_VOLATILE))
    return [k for k in keys if canonical_json(a.get(k)) != canonical_json(b.get(k))]


def _collect(rows_or_paths: Any, base_dir: str | Path | None) -> tuple[list[BenchRow], list[Path]]:
    """Validated, de-duplicated rows (first copy of a cell kept) and the results files they came from."""
    if isinstance(rows_or_paths, (str, Path, Mapping)):
        rows_or_paths = [rows_or_paths]
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    rows: list[BenchRow] = []
    files: list[Path] = []
    for i, item in enumerate(rows_or_paths):
        if isinstance(item, (str, Path)):
            files.append(Path(item))
            rows += _read_file(Path(item))
        elif isinstance(item, BenchRow):
            rows.append(item)
        else:
            validate_row(item, f"rows[{i}]")
            rows.append(BenchRow(dict(item), f"rows[{i}]", base))
    if not rows:
        raise DataFormatError(
            f"no bench rows in {', '.join(map(str, files)) or 'the input'}; run 'condense bench SPEC.toml' first"
        )
    kept: dict[str, BenchRow] = {}
    for r in rows:
        first = kept.get(r.cell)
        if first is None:
            kept[r.cell] = r
            continue
        diff = _differing(first.data, r.data)
        if diff:
            raise MismatchError(
                f"'{r.where}': cell {r.cell} is also at '{first.where}' with a different {', '.join(diff)}: one "
                "configuration, two results; report one of the files, or delete one of the rows"
            )
    out = list(kept.values())
    by_cell = {r.cell: r for r in out}
    for r in out:
        for link, role in (("baseline_cell", "random_real"), ("full_cell", "full_data")):
            other = by_cell.get(r[link]) if r[link] else None
            if other is None:
                continue
            if other["role"] != role:
                raise MismatchError(
                    f"'{r.where}': field '{link}' points at cell {other.cell} ('{other.where}'), a {other['role']} "
                    f"row, expected a {role} row; {_FIX}"
                )
            same = ("dataset", "ipc", "protocol", "protocol_version") if role == "random_real" else ("dataset",)
            bad = [k for k in same if other[k] != r[k]]
            if bad:
                raise MismatchError(
                    f"'{r.where}': its {role} row '{other.where}' has another {', '.join(bad)} "
                    f"({', '.join(f'{other[k]!r} vs {r[k]!r}' for k in bad)}); a method is compared under the same "
                    f"dataset, IPC and protocol; {_FIX}"
                )
    return out, files


def read_rows(paths: str | Path | Iterable[str | Path]) -> list[dict[str, Any]]:
    """Read, validate and de-duplicate the rows of one or more bench results files.

    Raises:
        DataNotFoundError: a file is missing.
        DataFormatError: a line is not JSON, or not a bench row of this schema version.
        IntegrityError: a row lacks a field or holds a wrong one (the message names the file, line and field).
        MismatchError: one cell with two different results, or a link to a row of the wrong role or IPC.
    """
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    return [r.data for r in _collect(items, None)[0]]


# ---------------------------------------------------------------------------------------------- the table model


@dataclass
class _Key:
    """One table row: a method (variant) under one protocol and label kind, or a reference."""

    role: str
    method: str
    protocol: str
    label_kind: str
    variant: str = ""
    suffix: str = ""

    def ident(self) -> tuple[str, ...]:
        return (self.role, self.method, self.protocol, self.label_kind, self.variant, self.suffix)

    def label(self, show_variant: bool) -> str:
        name = {"random_real": "random real", "full_data": "full data"}.get(self.role, self.method)
        if show_variant and self.variant:
            name += f" ({self.variant})"
        return name + (f" [{self.suffix}]" if self.suffix else "")


def _variant(row: BenchRow) -> str:
    """What tells two cells of one method apart besides IPC: the iterations and overrides of its config."""
    if row["role"] != "method":
        return ""
    cfg = row["config"]
    parts = []
    if cfg.get("iterations") is not None:
        parts.append(f"iterations={cfg['iterations']}")
    overrides = cfg.get("overrides") or {}
    if isinstance(overrides, dict):
        parts += [f"{k}={json.dumps(v)}" for k, v in sorted(overrides.items())]
    return ", ".join(parts)


def _protocol(row: BenchRow) -> str:
    return f"{row['protocol']} v{row['protocol_version']}"


@dataclass
class _Entry:
    """One (row, evaluation model): the numbers a table cell, a CSV line and a plot point need."""

    row: BenchRow
    model: str
    acc: dict[str, Any]
    baseline: BenchRow | None
    full: BenchRow | None
    metrics: RankingMetrics | None

    @property
    def baseline_acc(self) -> dict[str, Any] | None:
        return None if self.baseline is None else self.baseline["accuracy"].get(self.model)

    @property
    def full_acc(self) -> dict[str, Any] | None:
        return None if self.full is None else self.full["accuracy"].get(self.model)

    @property
    def loses_to_random(self) -> bool | None:
        """True where the set does not beat random real (mean <= the linked baseline's mean); None without one."""
        base = self.baseline_acc
        return None if base is None else self.acc["mean"] <= base["mean"]


def _mean(table: Mapping[str, Any] | None, model: str) -> float | None:
    acc = (table or {}).get(model)
    return None if acc is None else acc["mean"]


def _entry(row: BenchRow, model: str, by_cell: Mapping[str, BenchRow]) -> _Entry:
    baseline = by_cell.get(row["baseline_cell"]) if row["baseline_cell"] else None
    full = by_cell.get(row["full_cell"]) if row["full_cell"] else None
    metrics = None
    if row["role"] == "method":
        metrics = ranking_metrics(
            syn=row["accuracy"][model]["mean"],
            random_real=None if baseline is None else _mean(baseline["accuracy"], model),
            syn_hard=_mean(row["accuracy_hard"], model),
            full_hard=None if full is None else _mean(full["accuracy"], model),
            syn_noaug=_mean(row["accuracy_noaug"], model),
            random_noaug=None if baseline is None else _mean(baseline["accuracy_noaug"], model),
        )
    return _Entry(row, model, row["accuracy"][model], baseline, full, metrics)


@dataclass
class _Dataset:
    """Everything reported for one dataset: its table rows, IPCs, models and entries."""

    name: str
    keys: list[_Key] = field(default_factory=list)
    ipcs: list[int] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    #: (key ident, ipc or None for full data, model) -> entry
    entries: dict[tuple[tuple[str, ...], int | None, str], _Entry] = field(default_factory=dict)
    show_variant: set[tuple[str, str, str, str]] = field(default_factory=set)

    def label(self, key: _Key) -> str:
        return key.label((key.role, key.method, key.protocol, key.label_kind) in self.show_variant)

    def get(self, key: _Key, ipc: int | None, model: str) -> _Entry | None:
        return self.entries.get((key.ident(), None if key.role == "full_data" else ipc, model))


_ROLE_ORDER = {"method": 0, "random_real": 1, "full_data": 2}


def _datasets(rows: Sequence[BenchRow], models: Sequence[str] | None) -> list[_Dataset]:
    by_cell = {r.cell: r for r in rows}
    out: dict[str, _Dataset] = {}
    assigned: dict[str, list[tuple[_Key, BenchRow]]] = {}
    for r in rows:
        ds = out.setdefault(r["dataset"], _Dataset(r["dataset"]))
        key = _Key(r["role"], r["method"], _protocol(r), r["label_kind"], _variant(r))
        assigned.setdefault(ds.name, []).append((key, r))
        for m in r["models"]:
            if (models is None or m in models) and m not in ds.models:
                ds.models.append(m)
        if r["ipc"] is not None and r["ipc"] not in ds.ipcs:
            ds.ipcs.append(r["ipc"])
    for ds in out.values():
        ds.ipcs.sort()
        pairs = assigned[ds.name]
        # a method with several variants shows them; two cells on one table cell keep their cell ids apart
        variants: dict[tuple[str, ...], set[str]] = {}
        slots: dict[tuple[tuple[str, ...], int | None], int] = {}
        for key, r in pairs:
            variants.setdefault((key.role, key.method, key.protocol, key.label_kind), set()).add(key.variant)
            slots[(key.ident(), r["ipc"])] = slots.get((key.ident(), r["ipc"]), 0) + 1
        ds.show_variant = {k for k, v in variants.items() if len(v) > 1}
        crowded = {ident for (ident, _), n in slots.items() if n > 1}
        seen: dict[tuple[str, ...], _Key] = {}
        for key, r in pairs:
            if key.ident() in crowded:
                key.suffix = r.cell[:8]
            key = seen.setdefault(key.ident(), key)
            for m in ds.models:
                if m in r["accuracy"]:
                    ds.entries[(key.ident(), r["ipc"], m)] = _entry(r, m, by_cell)
        ds.keys = sorted(seen.values(), key=lambda k: _ROLE_ORDER[k.role])  # stable: first appearance within a role
    return list(out.values())


# ---------------------------------------------------------------------------------------------- tables

_METRICS = ("ior", "hlr", "lrs", "ars")


@dataclass
class _Cell:
    text: str
    bold: bool = False
    dagger: bool = False


def _pct(acc: Mapping[str, Any]) -> str:
    return f"{100 * acc['mean']:.2f} ± {100 * acc['std']:.2f}"


def _frac(x: float | None) -> str:
    return _DASH if x is None else f"{x:.3f}"


def _table(ds: _Dataset, model: str) -> tuple[list[str], list[list[_Cell]], list[str]]:
    """Header, rows and the metric columns left out (never measured) of one dataset x model table."""
    shown = [
        m
        for m in _METRICS
        if any(getattr(e.metrics, m) is not None for e in ds.entries.values() if e.model == model and e.metrics)
    ]
    header = ["Method", "Labels", "Protocol"]
    for ipc in ds.ipcs:
        header += [f"IPC {ipc}"] + [f"{m.upper()}@{ipc}" for m in shown]
    best: dict[int, float] = {}
    for ipc in ds.ipcs:
        means = [e.acc["mean"] for k in ds.keys if k.role == "method" if (e := ds.get(k, ipc, model))]
        if means:
            best[ipc] = max(means)
    body = []
    for key in ds.keys:
        cells = [_Cell(ds.label(key)), _Cell(key.label_kind), _Cell(key.protocol)]
        present = False
        for ipc in ds.ipcs:
            e = ds.get(key, ipc, model)
            if e is None:
                cells.append(_Cell(_DASH))
            else:
                present = True
                is_method = key.role == "method"
                cells.append(
                    _Cell(
                        _pct(e.acc),
                        bold=is_method and e.acc["mean"] == best.get(ipc),
                        dagger=is_method and bool(e.loses_to_random),
                    )
                )
            for m in shown:
                cells.append(_Cell(_frac(getattr(e.metrics, m)) if e is not None and e.metrics else _DASH))
        if present:
            body.append(cells)
    return header, body, [m.upper() for m in _METRICS if m not in shown]


def _md_table(header: list[str], body: list[list[_Cell]]) -> str:
    def fmt(c: _Cell) -> str:
        text = f"**{c.text}**" if c.bold else c.text
        return text + (" †" if c.dagger else "")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|"]
    lines += ["| " + " | ".join(fmt(c).replace("|", "\\|") for c in row) + " |" for row in body]
    return "\n".join(lines)


def _html_table(header: list[str], body: list[list[_Cell]]) -> str:
    def fmt(c: _Cell) -> str:
        text = html.escape(c.text)
        text = f"<b>{text}</b>" if c.bold else text
        return text + ("&nbsp;&dagger;" if c.dagger else "")

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{fmt(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


# ---------------------------------------------------------------------------------------------- CSV

CSV_COLUMNS = (
    "dataset",
    "role",
    "method",
    "variant",
    "ipc",
    "preset",
    "label_kind",
    "protocol",
    "protocol_version",
    "model",
    "cell",
    "mean",
    "std",
    "n_runs",
    "runs",
    "hard_mean",
    "hard_std",
    "noaug_mean",
    "noaug_std",
    "baseline_cell",
    "baseline_mean",
    "baseline_std",
    "baseline_noaug_mean",
    "beats_random",
    "full_cell",
    "full_mean",
    "ior",
    "hlr",
    "lrs_a",
    "lrs",
    "ars_aug_gap",
    "ars_noaug_gap",
    "ars_b",
    "ars",
    "distill_seconds",
    "distill_peak_mem_mb",
    "total_seconds",
    "artifact",
    "seeds",
    "condense_version",
    "torch_version",
    "device",
    "hardware_name",
    "world_size",
    "host",
    "finished",
)


def _csv_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, float) else str(v)


def _csv_line(e: _Entry) -> dict[str, Any]:
    r = e.row
    hard = (r["accuracy_hard"] or {}).get(e.model)
    noaug = (r["accuracy_noaug"] or {}).get(e.model)
    base = e.baseline_acc
    base_noaug = None if e.baseline is None else (e.baseline["accuracy_noaug"] or {}).get(e.model)
    full = e.full_acc
    distill = r["stages"].get("distill", {})
    metrics = e.metrics.to_dict() if e.metrics else dict.fromkeys(RankingMetrics.__dataclass_fields__)
    loses = e.loses_to_random
    return {
        "dataset": r["dataset"],
        "role": r["role"],
        "method": r["method"],
        "variant": _variant(r),
        "ipc": r["ipc"],
        "preset": r["preset"],
        "label_kind": r["label_kind"],
        "protocol": r["protocol"],
        "protocol_version": r["protocol_version"],
        "model": e.model,
        "cell": r.cell,
        "mean": e.acc["mean"],
        "std": e.acc["std"],
        "n_runs": len(e.acc["runs"]),
        "runs": ";".join(repr(float(v)) for v in e.acc["runs"]),
        "hard_mean": None if hard is None else hard["mean"],
        "hard_std": None if hard is None else hard["std"],
        "noaug_mean": None if noaug is None else noaug["mean"],
        "noaug_std": None if noaug is None else noaug["std"],
        "baseline_cell": r["baseline_cell"],
        "baseline_mean": None if base is None else base["mean"],
        "baseline_std": None if base is None else base["std"],
        "baseline_noaug_mean": None if base_noaug is None else base_noaug["mean"],
        "beats_random": None if loses is None or r["role"] != "method" else not loses,
        "full_cell": r["full_cell"],
        "full_mean": None if full is None else full["mean"],
        **metrics,
        "distill_seconds": distill.get("seconds"),
        "distill_peak_mem_mb": distill.get("peak_mem_mb"),
        "total_seconds": sum(s["seconds"] for s in r["stages"].values()) if r["stages"] else None,
        "artifact": r["artifact"],
        "seeds": ";".join(map(str, r["seeds"])),
        "condense_version": r["condense_version"],
        "torch_version": r["torch_version"],
        "device": r["hardware"].get("device"),
        "hardware_name": r["hardware"].get("name"),
        "world_size": r["hardware"].get("world_size"),
        "host": r["host"],
        "finished": r["finished"],
    }


def _csv_text(datasets: Sequence[_Dataset]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for ds in datasets:
        for key in ds.keys:
            for ipc in [None] if key.role == "full_data" else ds.ipcs:
                for m in ds.models:
                    e = ds.get(key, ipc, m)
                    if e is not None:
                        w.writerow({k: _csv_value(v) for k, v in _csv_line(e).items()})
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- plots


@dataclass
class _Figure:
    name: str
    title: str
    png: bytes
    section: str  # dataset name


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def _matplotlib():
    """``matplotlib.figure.Figure`` (Agg, no pyplot state), or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _plot_label(ds: _Dataset, key: _Key) -> str:
    return ds.label(key) + ("" if key.label_kind == "hard" else " (soft)")


def _accuracy_plot(Figure, ds: _Dataset, model: str) -> bytes | None:
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot()
    drawn = False
    dashes = iter(["--", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 1))] * len(ds.keys))
    for key in ds.keys:
        if key.role == "full_data":
            e = ds.get(key, None, model)
            if e is not None:
                ax.axhline(100 * e.acc["mean"], color="black", linestyle=":", label=ds.label(key))
                drawn = True
            continue
        pts = [(ipc, e.acc) for ipc in ds.ipcs if (e := ds.get(key, ipc, model))]
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ys = [100 * p[1]["mean"] for p in pts]
        err = [100 * p[1]["std"] for p in pts]
        style = {"marker": "o"}
        if key.role == "random_real":
            style = {"linestyle": next(dashes), "marker": "x", "color": "gray"}
        ax.errorbar(xs, ys, yerr=err, capsize=3, label=_plot_label(ds, key), **style)
        drawn = True
    if not drawn:
        return None
    if len(ds.ipcs) > 1 and ds.ipcs[-1] / ds.ipcs[0] >= 5:
        ax.set_xscale("log")
    ax.set_xticks(ds.ipcs, [str(i) for i in ds.ipcs])
    ax.minorticks_off()
    ax.set_xlabel("images per class")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{ds.name} · {model}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _png(fig)


def _heatmap(Figure, ds: _Dataset, ipc: int) -> bytes | None:
    keys = [k for k in ds.keys if any(ds.get(k, ipc, m) for m in ds.models)]
    if len(ds.models) < 2 or not keys:
        return None
    import numpy as np

    grid = np.full((len(keys), len(ds.models)), np.nan)
    for i, k in enumerate(keys):
        for j, m in enumerate(ds.models):
            e = ds.get(k, ipc, m)
            if e is not None:
                grid[i, j] = 100 * e.acc["mean"]
    fig = Figure(figsize=(1.2 + 1.1 * len(ds.models), 0.9 + 0.4 * len(keys)))
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(ds.models)), ds.models, rotation=30, ha="right")
    ax.set_yticks(range(len(keys)), [_plot_label(ds, k) for k in keys])
    lo, hi = np.nanmin(grid), np.nanmax(grid)
    for i in range(len(keys)):
        for j in range(len(ds.models)):
            if not np.isnan(grid[i, j]):
                light = hi == lo or (grid[i, j] - lo) / (hi - lo) < 0.5
                ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=8, color="w" if light else "k")
    fig.colorbar(im, ax=ax, label="test accuracy (%)")
    ax.set_title(f"{ds.name} · IPC {ipc} · cross-architecture")
    return _png(fig)


def _cost_plot(Figure, ds: _Dataset, model: str) -> bytes | None:
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot()
    drawn = False
    for key in ds.keys:
        if key.role == "full_data":
            e = ds.get(key, None, model)
            if e is not None:
                ax.axhline(100 * e.acc["mean"], color="black", linestyle=":", label=ds.label(key))
            continue
        pts = []
        for ipc in ds.ipcs:
            e = ds.get(key, ipc, model)
            seconds = None if e is None else e.row["stages"].get("distill", {}).get("seconds")
            if seconds is not None:
                pts.append((max(seconds, 1e-3), 100 * e.acc["mean"], ipc))
        if not pts:
            continue
        marker = "x" if key.role == "random_real" else "o"
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        line = ax.plot(xs, ys, marker=marker, linestyle="-", label=_plot_label(ds, key))[0]
        for x, y, ipc in pts:
            ax.annotate(f"{ipc}", (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7, color=line.get_color())
        drawn = True
    if not drawn:
        return None
    ax.set_xscale("log")
    ax.set_xlabel("distillation time (s, log; numbers: IPC)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{ds.name} · {model} · cost vs accuracy")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best")
    return _png(fig)


def _grids(ds: _Dataset, out: Path, notes: list[str]) -> list[_Figure]:
    """One image grid per set with an artifact (``SyntheticSet.grid``: ZCA and normalization undone)."""
    from condense.synthetic import SyntheticSet

    figs = []
    done: set[str] = set()
    unrecorded = []
    for key in ds.keys:
        if key.role == "full_data":
            continue
        for ipc in ds.ipcs:
            e = next((x for m in ds.models if (x := ds.get(key, ipc, m))), None)
            if e is None or e.row.cell in done:
                continue
            done.add(e.row.cell)
            r = e.row
            what = f"{ds.name} {_plot_label(ds, key)} IPC {ipc}"
            if r["artifact"] is None:
                unrecorded.append(f"{_plot_label(ds, key)} IPC {ipc}")
                continue
            path = Path(r["artifact"])
            path = path if path.is_absolute() else r.base / path
            if not path.is_file():
                notes.append(f"{what}: artifact '{path}' is missing, no image grid")
                continue
            if r["artifact_sha256"] and sha256_file(path) != r["artifact_sha256"]:
                notes.append(f"{what}: artifact '{path}' changed since the bench wrote its row, no image grid")
                continue
            name = f"grids/grid_{_safe(ds.name)}_{_safe(ds.label(key))}_{_safe(key.label_kind)}_ipc{ipc}.png"
            name = name if name not in {f.name for f in figs} else name.replace(".png", f"_{r.cell[:8]}.png")
            try:
                SyntheticSet.load(path).grid(out / name)
            except CondenseError as err:
                notes.append(f"{what}: artifact '{path}' could not be read ({err}), no image grid")
                continue
            figs.append(_Figure(name, f"{what}", (out / name).read_bytes(), ds.name))
    if unrecorded:
        notes.append(f"{ds.name}: no artifact recorded (no image grid) for {', '.join(unrecorded)}")
    return figs


def _plots(datasets: Sequence[_Dataset], out: Path, notes: list[str]) -> list[_Figure]:
    figs: list[_Figure] = []
    Figure = _matplotlib()
    if Figure is None:
        msg = f"matplotlib is not installed: no plots were drawn (tables, CSV and image grids are); {PLOTS_HINT}"
        logger.warning(msg)
        notes.append(msg)
    for ds in datasets:
        if Figure is not None:
            for model in ds.models:
                for kind, draw in (("accuracy", _accuracy_plot), ("cost", _cost_plot)):
                    png = draw(Figure, ds, model)
                    title = {"accuracy": "accuracy vs IPC", "cost": "distillation time vs accuracy"}[kind]
                    if png is not None:
                        figs.append(_Figure(f"{kind}_{_safe(ds.name)}_{_safe(model)}.png", title, png, ds.name))
                    elif kind == "cost":
                        notes.append(f"{ds.name} · {model}: no row records stages.distill.seconds, no cost plot")
            if len(ds.models) < 2:
                notes.append(f"{ds.name}: one evaluation model, no cross-architecture heatmap")
            for ipc in ds.ipcs:
                png = _heatmap(Figure, ds, ipc)
                if png is not None:
                    name = f"heatmap_{_safe(ds.name)}_ipc{ipc}.png"
                    figs.append(_Figure(name, f"cross-architecture, IPC {ipc}", png, ds.name))
        figs += _grids(ds, out, notes)
    for f in figs:
        if not f.name.startswith("grids/"):
            write_bytes_atomic(out / f.name, f.png)
    return figs


# ---------------------------------------------------------------------------------------------- notes and pages


def _distinct(values: Iterable[str]) -> str:
    seen: dict[str, int] = {}
    for v in values:
        seen[v] = seen.get(v, 0) + 1
    return "; ".join(f"{v} ({n} row{'s' * (n != 1)})" if len(seen) > 1 else v for v, n in seen.items())


def _hardware(r: BenchRow) -> str:
    hw = r["hardware"]
    text = f"{hw.get('device', '?')} {hw.get('name', '')}".strip()
    extra = [f"{hw['threads']} threads"] if hw.get("threads") else []
    if hw.get("world_size"):
        extra.append(f"world size {hw['world_size']}")
    return text + (f" ({', '.join(extra)})" if extra else "")


def _about(rows: Sequence[BenchRow], files: Sequence[Path]) -> list[str]:
    specs = [str(s) for r in rows for s in [r.data.get("spec") or r["config"].get("spec")] if isinstance(s, str)]
    finished = sorted(r["finished"] for r in rows)
    return [
        f"Results: {', '.join(f'`{f}`' for f in files) if files else 'rows passed in memory'}; "
        f"spec: {_distinct(f'`{s}`' for s in specs) if specs else 'not recorded in the rows'}.",
        f"Protocols: {_distinct(_protocol(r) for r in rows)}.",
        f"Seeds: {_distinct(', '.join(map(str, r['seeds'])) for r in rows)}.",
        f"Hardware: {_distinct(_hardware(r) for r in rows)}; hosts: {_distinct(r['host'] for r in rows)}.",
        f"condense {_distinct(r['condense_version'] for r in rows)}, "
        f"torch {_distinct(r['torch_version'] for r in rows)}; rows finished {finished[0]} to {finished[-1]}.",
    ]


_LEGEND = (
    "Accuracy: mean ± std over the seeds, in percent: final-epoch test accuracy under a fixed protocol (no checkpoint "
    "or learning rate chosen on the test set). **Bold**: the best method of the column (random real and full data are "
    "references). †: the method does not beat random real images of the same IPC under the same protocol and labels "
    "(its mean ≤ that row's mean). IOR, HLR, LRS, ARS: DD-Ranking (arXiv:2505.13300) as fractions: IOR = acc(syn) − "
    "acc(random real), HLR = acc(full data, hard labels) − acc(syn, hard labels), LRS = s(a) with a = "
    f"{LRS_WEIGHT}·IOR − {1 - LRS_WEIGHT}·HLR, ARS = s(b) with b = {ARS_WEIGHT}·(gap with augmentation) + "
    f"{1 - ARS_WEIGHT}·(gap without), s(x) = (eˣ − e⁻¹)/(e − e⁻¹); – where an input was not measured. results.csv "
    "holds the raw gaps a and b beside the scores."
)


def _markdown(datasets, tables, figs, about, notes) -> str:
    lines = ["# condense bench report", "", _LEGEND, ""]
    for ds in datasets:
        lines += [f"## {ds.name}", ""]
        for model in ds.models:
            header, body, hidden = tables[(ds.name, model)]
            lines += [f"### {ds.name} · {model}", "", _md_table(header, body), ""]
            if hidden:
                lines += [f"Not measured in these rows: {', '.join(hidden)}.", ""]
        for f in figs:
            if f.section == ds.name:
                lines += [f"![{f.title}]({f.name})", ""]
    lines += ["## About these numbers", ""] + [f"- {a}" for a in about]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0;font-size:0.85em}
th,td{border:1px solid #ccc;padding:0.3em 0.6em;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td:nth-child(-n+3),th:nth-child(-n+3){text-align:left}
figure{display:inline-block;margin:0.5em;vertical-align:top}figcaption{font-size:0.8em;color:#555}
img{max-width:100%;image-rendering:pixelated}.legend{font-size:0.85em;color:#444}
"""


def _html(datasets, tables, figs, about, notes) -> str:
    def md_inline(text: str) -> str:
        text = html.escape(text)
        text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", text)

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>condense bench report</title>',
        f"<style>{_CSS}</style></head><body>",
        "<h1>condense bench report</h1>",
        f'<p class="legend">{md_inline(_LEGEND)}</p>',
    ]
    for ds in datasets:
        parts.append(f"<h2>{html.escape(ds.name)}</h2>")
        for model in ds.models:
            header, body, hidden = tables[(ds.name, model)]
            parts.append(f"<h3>{html.escape(ds.name)} · {html.escape(model)}</h3>")
            parts.append(_html_table(header, body))
            if hidden:
                parts.append(f"<p>Not measured in these rows: {html.escape(', '.join(hidden))}.</p>")
        for f in figs:
            if f.section == ds.name:
                data = base64.b64encode(f.png).decode("ascii")
                parts.append(
                    f'<figure><img alt="{html.escape(f.title)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{html.escape(f.title)}</figcaption></figure>"
                )
    parts.append("<h2>About these numbers</h2><ul>" + "".join(f"<li>{md_inline(a)}</li>" for a in about) + "</ul>")
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{md_inline(n)}</li>" for n in notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out: '{out}' is a file where the report folder goes; pass a folder")
    taken = [n for n in REPORT_FILES if (out / n).exists()]
    if taken and not force:
        raise OutputExistsError(
            f"--out: '{out}' already holds a report ({', '.join(taken)}); pass --force to replace it, or choose "
            "another --out"
        )


def write_report(
    rows_or_paths: str | Path | Mapping[str, Any] | Iterable[str | Path | Mapping[str, Any]],
    out: str | Path,
    *,
    models: Sequence[str] | None = None,
    plots: bool = True,
    force: bool = False,
    base_dir: str | Path | None = None,
) -> dict[str, Path]:
    """Write ``report.md``, ``results.csv``, ``report.html`` and the PNG plots for bench rows into ``out``.

    Args:
        rows_or_paths: results files (``results.jsonl`` from ``condense bench``) and/or rows as dicts.
        out: the report folder (created).
        models: report only these evaluation models (default: every model in the rows).
        plots: draw the PNGs (plots need matplotlib; the image grids need only Pillow). With False no PNG is
            written.
        force: replace a report already in ``out``.
        base_dir: the folder artifact paths of rows passed as dicts are relative to (default: the current
            folder); rows read from a file use that file's folder.

    Returns:
        Written file name (relative to ``out``: ``"report.md"``, ``"accuracy_digits_convnetd2.png"``,
        ``"grids/grid_digits_dm_hard_ipc10.png"``, ...) -> its path.

    Raises:
        DataNotFoundError, DataFormatError, IntegrityError, MismatchError: see :func:`read_rows`.
        ConfigError: a name in ``models`` appears in no row.
        OutputExistsError: ``out`` is a file, or already holds a report and ``force`` is False.
    """
    out = Path(out)
    _check_out(out, force)
    rows, files = _collect(rows_or_paths, base_dir)
    if models is not None:
        known = sorted({m for r in rows for m in r["models"]})
        unknown = [m for m in models if m not in known]
        if unknown:
            raise ConfigError(
                f"--models: {', '.join(unknown)} scored in no row; the rows score {', '.join(known)}; "
                "pick among those, or drop --models"
            )
    datasets = _datasets(rows, models)
    notes: list[str] = []
    cells = {r.cell for r in rows}
    for r in rows:
        for link, what in (("baseline_cell", "random-real"), ("full_cell", "full-data")):
            if r[link] and r[link] not in cells:
                notes.append(f"'{r.where}' ({r['method']} IPC {r['ipc']}): its {what} row {r[link]} is not in the rows")
        if r["role"] == "method" and r["baseline_cell"] is None:
            notes.append(f"'{r.where}' ({r['method']} IPC {r['ipc']}): no random-real row linked, no IOR or dagger")
    out.mkdir(parents=True, exist_ok=True)
    figs = _plots(datasets, out, notes) if plots else []
    tables = {(ds.name, m): _table(ds, m) for ds in datasets for m in ds.models}
    about = _about(rows, files)
    written = {
        "report.md": write_bytes_atomic(out / "report.md", _markdown(datasets, tables, figs, about, notes).encode()),
        "results.csv": write_bytes_atomic(out / "results.csv", _csv_text(datasets).encode()),
        "report.html": write_bytes_atomic(out / "report.html", _html(datasets, tables, figs, about, notes).encode()),
    }
    written.update({f.name: out / f.name for f in figs})
    return written
