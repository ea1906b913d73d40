"""Safe file I/O: atomic writes, sha256, safetensors + JSON, and the one integrity scheme. Nothing here unpickles.

The integrity scheme (every JSON record condense writes: artifact sidecars, checkpoint records, buffer manifests and
expert records) is :func:`seal` on write and :func:`check_seal` on read. A sealed record carries
``"meta_sha256"``, the sha256 of the canonical JSON (:func:`canonical_json`: sorted keys, no whitespace, no NaN) of
every other field, and ``"field_sha256"``, the sha256 of each top-level field's canonical JSON, so a record edited
after it was written is refused with the name of the field that changed. Tensor files keep their own sha256, stored
in the sealed record. :func:`check_fields` refuses a field of the wrong type in one line instead of a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from condense.errors import DataNotFoundError, IntegrityError

__all__ = [
    "atomic_write",
    "write_bytes_atomic",
    "write_json_atomic",
    "read_json",
    "sha256_file",
    "sha256_bytes",
    "save_tensors",
    "load_tensors",
    "read_metadata",
    "JsonlLog",
    "provenance",
    "stamp",
    "check_stamp",
    "SEAL_KEY",
    "FIELD_SEAL_KEY",
    "canonical_json",
    "seal",
    "unseal",
    "edited_fields",
    "check_seal",
    "check_fields",
]


def atomic_write(path: str | Path, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` then rename the temp file onto ``path``; a crash never leaves half a file.

    The temp file lives in the target directory, so the final ``os.replace`` is atomic on POSIX.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    return atomic_write(path, lambda p: p.write_bytes(data))


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (NaN/inf refused)."""
    text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n"
    return write_bytes_atomic(path, text.encode())


def read_json(path: str | Path) -> Any:
    """Read a JSON file, raising :class:`DataNotFoundError` / :class:`IntegrityError` with the path."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"file not found: '{path}'")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IntegrityError(f"'{path}' is not valid JSON ({e}); the file is corrupt or truncated") from e


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_tensors(
    path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> str:
    """Atomically save named tensors as safetensors; returns the file's sha256."""
    from safetensors.torch import save

    blob = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=dict(metadata or {}))
    write_bytes_atomic(path, blob)
    return sha256_bytes(blob)


def load_tensors(path: str | Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Load a safetensors file, verifying its sha256 when given.

    Raises:
        DataNotFoundError: the file is absent.
        IntegrityError: the checksum differs or the file is not valid safetensors.
    """
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"file not found: '{path}'")
    blob = path.read_bytes()
    if expected_sha256 is not None:
        got = sha256_bytes(blob)
        if got != expected_sha256:
            raise IntegrityError(
                f"checksum mismatch for '{path}': recorded {expected_sha256[:16]}..., file has {got[:16]}...; "
                "the file was truncated or modified"
            )
    try:
        return load(blob)
    except Exception as e:  # safetensors raises its own error types
        raise IntegrityError(f"'{path}' is not a valid safetensors file ({e})") from e


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` map of a safetensors file's JSON header, read without loading any tensor.

    The file's size is checked against the header's tensor offsets, so a cut or padded file is refused here, as
    ``safetensors.safe_open`` would refuse it, without reading the tensor bytes.

    Raises:
        DataNotFoundError: the file is absent.
        IntegrityError: the header is truncated or not JSON, or the file is not exactly header plus tensor bytes.
    """
    import struct

    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"file not found: '{path}'")
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise IntegrityError(f"'{path}' is not a safetensors file (shorter than its 8-byte header length)")
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000:
            raise IntegrityError(f"'{path}' is not a safetensors file (header length {n} is implausible)")
        raw = f.read(n)
    if len(raw) != n:
        raise IntegrityError(f"'{path}' is truncated inside its safetensors header")
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IntegrityError(f"'{path}' has a corrupt safetensors header ({e})") from e
    if not isinstance(header, dict):
        raise IntegrityError(f"'{path}' has a malformed safetensors header")
    try:
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (TypeError, KeyError, IndexError, ValueError) as e:
        raise IntegrityError(f"'{path}' has a malformed safetensors header ({e})") from e
    size, expected = path.stat().st_size, 8 + n + max(ends, default=0)
    if size != expected:
        raise IntegrityError(f"'{path}' holds {size} bytes, its safetensors header describes {expected}: cut or padded")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise IntegrityError(f"'{path}' has a malformed safetensors metadata block")
    return {str(k): str(v) for k, v in meta.items()}


def provenance() -> dict[str, Any]:
    """Who wrote a file: condense and torch versions, the Python version, the platform and a UTC timestamp."""
    import datetime
    import platform

    from condense._version import __version__

    return {
        "condense": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def stamp(fmt: str, version: int) -> dict[str, Any]:
    """The header every condense file format starts with: ``{"format", "format_version", "provenance"}``."""
    return {"format": fmt, "format_version": int(version), "provenance": provenance()}


def check_stamp(header: Mapping[str, Any], fmt: str, version: int, path: str | Path) -> None:
    """Refuse a header whose ``format`` or ``format_version`` is not ``fmt``/``version``, naming the file.

    Raises:
        IntegrityError: another format, or a version this condense cannot read.
    """
    got_fmt = header.get("format")
    if got_fmt != fmt:
        raise IntegrityError(f"'{path}' is not a {fmt} file (format {got_fmt!r})")
    got = header.get("format_version")
    if got != version and str(got) != str(version):
        raise IntegrityError(
            f"'{path}' has {fmt} format version {got!r}; this condense reads version {version}. "
            "Re-create the file with this version of condense"
        )


# ----------------------------------------------------------------------------------------------------------------------
# The integrity scheme: seal a JSON record on write, check the seal (and the field types) on read
# ----------------------------------------------------------------------------------------------------------------------

#: The digest of the whole record (every field but the two seal fields).
SEAL_KEY = "meta_sha256"
#: The digest of each top-level field, so a broken seal names the field that changed.
FIELD_SEAL_KEY = "field_sha256"
_SEAL_KEYS = (SEAL_KEY, FIELD_SEAL_KEY)
_REFUSE = "the file cannot be trusted: re-create it"


def canonical_json(obj: Any) -> str:
    """The one canonical JSON text condense hashes: sorted keys, no whitespace, ASCII, NaN/inf refused.

    Tuples and lists (and any key order) give the same text, so a value hashes the same before and after a JSON
    round trip.

    Raises:
        ValueError: ``obj`` holds NaN or infinity. TypeError: ``obj`` is not JSON data.

    Example:
        >>> canonical_json({"b": (1, 2), "a": None})
        '{"a":null,"b":[1,2]}'
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _digest(value: Any) -> str:
    return sha256_bytes(canonical_json(value).encode())


def _body(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k not in _SEAL_KEYS}


def seal(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``meta`` plus its seal: ``meta_sha256`` over all its fields and ``field_sha256`` per top-level field.

    An existing seal in ``meta`` is replaced. Key order is kept (the seal fields go last), so written files stay
    readable.

    Raises:
        IntegrityError: a field holds NaN, infinity or a value JSON cannot store (named).

    Example:
        >>> sealed = seal({"lr": 0.01, "ipc": 10})
        >>> sorted(sealed["field_sha256"]) == ["ipc", "lr"] and len(sealed["meta_sha256"]) == 64
        True
    """
    body = _body(meta)
    fields: dict[str, str] = {}
    for name, value in body.items():
        try:
            fields[name] = _digest(value)
        except (ValueError, TypeError) as e:
            raise IntegrityError(f"cannot write field '{name}' ({e}); condense files hold finite JSON values") from e
    return {**body, SEAL_KEY: _digest(body), FIELD_SEAL_KEY: fields}


def unseal(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``meta`` without its seal fields (to compare records, or to re-seal an amended copy)."""
    return _body(meta)


def _seal_report(meta: Mapping[str, Any]) -> tuple[str, list[tuple[str, str, str]]]:
    """What is wrong with ``meta``'s seal: ``("", [])`` when it holds, else a kind and ``(field, recorded, now)``.

    Kinds: ``"missing"`` (no valid seal), ``"nonfinite"`` (a field holds NaN/inf), ``"edited"``, ``"added"``,
    ``"removed"`` (fields), ``"digest"`` (the whole-record digest alone was edited), ``"fields"`` (the per-field map
    alone was edited).
    """
    digest, fields = meta.get(SEAL_KEY), meta.get(FIELD_SEAL_KEY)
    if not (isinstance(digest, str) and isinstance(fields, dict) and all(isinstance(v, str) for v in fields.values())):
        return "missing", []
    body = _body(meta)
    now: dict[str, str] = {}
    for name, value in body.items():
        try:
            now[name] = _digest(value)
        except (ValueError, TypeError):
            return "nonfinite", [(name, "", "")]
    try:
        intact = _digest(body) == digest
    except (ValueError, TypeError):  # unreachable: every field digested above
        intact = False
    for kind, names in (
        ("edited", [k for k in now if k in fields and now[k] != fields[k]]),
        ("added", [k for k in now if k not in fields]),
        ("removed", [k for k in fields if k not in now]),
    ):
        if names:
            # the record hashes as written, so only the per-field map was touched
            return ("fields", []) if intact else (kind, [(k, fields.get(k, ""), now.get(k, "")) for k in names])
    return ("", []) if intact else ("digest", [])


def edited_fields(meta: Mapping[str, Any]) -> list[str]:
    """Top-level fields of a sealed record that were edited, added or removed since :func:`seal`; [] when intact.

    Example:
        >>> sealed = seal({"lr": 0.01, "ipc": 10})
        >>> edited_fields({**sealed, "lr": 0.5})
        ['lr']
    """
    return [name for name, _, _ in _seal_report(meta)[1]]


def _names(fields: list[str], prefix: str) -> str:
    quoted = ", ".join(f"'{prefix}{f}'" for f in fields)
    return f"field {quoted}" if len(fields) == 1 else f"fields {quoted}"


def check_seal(meta: Mapping[str, Any], path: str | Path, *, prefix: str = "", hint: str = _REFUSE) -> None:
    """Refuse a record whose content no longer matches its seal, naming the file and the field that changed.

    Args:
        meta: a record written through :func:`seal` and read back.
        path: the file it came from (named in the message).
        prefix: put before field names in the message (``"experts[3]."`` for a record nested in a manifest).
        hint: what the user should do, appended to the message.

    Raises:
        IntegrityError: no seal, a field edited, added or removed, a NaN/inf value, or the seal itself edited.

    Example:
        >>> check_seal({**seal({"lr": 0.01}), "lr": 0.5}, "x.json")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        condense.errors.IntegrityError: 'x.json': field 'lr' was edited after the file was written (recorded ...
    """
    kind, rows = _seal_report(meta)
    where = f"'{path}'"
    if not kind:
        return
    if kind == "missing":
        raise IntegrityError(
            f"{where}{' (' + prefix.rstrip('.') + ')' if prefix else ''} carries no valid seal ('{SEAL_KEY}' and "
            f"'{FIELD_SEAL_KEY}'): it was written by another tool or its seal was edited; {hint}"
        )
    if kind == "nonfinite":
        raise IntegrityError(
            f"{where}: field '{prefix}{rows[0][0]}' holds NaN or Infinity, which condense never writes; it was edited "
            f"after the file was written; {hint}"
        )
    if kind == "digest":
        raise IntegrityError(f"{where}: its seal '{prefix}{SEAL_KEY}' was edited after the file was written; {hint}")
    if kind == "fields":
        raise IntegrityError(
            f"{where}: its per-field seal '{prefix}{FIELD_SEAL_KEY}' was edited after the file was written; {hint}"
        )
    names = [r[0] for r in rows]
    verb = "was" if len(rows) == 1 else "were"
    detail = ""
    if kind == "edited":
        shas = [f"recorded sha256 {old[:16]}..., now {new[:16]}..." for _, old, new in rows]
        detail = f" ({shas[0]})" if len(rows) == 1 else f" ({'; '.join(f'{n}: {d}' for n, d in zip(names, shas))})"
    raise IntegrityError(f"{where}: {_names(names, prefix)} {verb} {kind} after the file was written{detail}; {hint}")


def _alternatives(spec: Any) -> tuple[Any, ...] | None:
    """The options of ``(A, B)`` or ``A | B`` (``None`` for null), or None when ``spec`` is a single type."""
    if isinstance(spec, tuple):
        return spec
    if isinstance(spec, types.UnionType) or typing.get_origin(spec) is typing.Union:
        return tuple(None if a is type(None) else a for a in typing.get_args(spec))
    return None


def _matches(value: Any, spec: Any) -> bool:
    if spec is None or spec is type(None):
        return value is None
    options = _alternatives(spec)
    if options is not None:
        return any(_matches(value, s) for s in options)
    origin = typing.get_origin(spec)
    if origin is list:
        (item,) = typing.get_args(spec)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict:
        key, item = typing.get_args(spec)
        return isinstance(value, dict) and all(_matches(k, key) and _matches(v, item) for k, v in value.items())
    if isinstance(value, bool) and spec is not bool:  # JSON true is not a count or a rate
        return False
    if spec is float:
        return isinstance(value, (int, float))
    return isinstance(value, spec)


def _spec_name(spec: Any) -> str:
    if spec is None or spec is type(None):
        return "null"
    options = _alternatives(spec)
    if options is not None:
        return " or ".join(_spec_name(s) for s in options)
    origin = typing.get_origin(spec)
    if origin is list:
        return f"a list whose items are each {_spec_name(typing.get_args(spec)[0])}"
    if origin is dict:
        return f"an object whose values are each {_spec_name(typing.get_args(spec)[1])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false", dict: "an object"}.get(
        spec, "a list" if spec is list else getattr(spec, "__name__", str(spec))
    )


def _json_type(value: Any) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }
    return "null" if value is None else names.get(type(value), type(value).__name__)


def check_fields(
    meta: Mapping[str, Any], schema: Mapping[str, Any], path: str | Path, *, prefix: str = "", hint: str = _REFUSE
) -> None:
    """Refuse a record that lacks a field of ``schema`` or holds one of the wrong type, in one line naming it.

    Args:
        meta: the record (read from a file, or about to be written).
        schema: field -> accepted type: a class (``int`` excludes booleans, ``float`` accepts integers), ``None``
            for null, ``list[X]``, ``dict[str, X]``, and ``A | B`` or ``(A, B)`` for either.
        path: the file named in the message.
        prefix: put before field names in the message (``"experts[3]."`` for a record nested in a manifest).
        hint: what the user should do, appended to the message.

    Raises:
        IntegrityError: a field is absent or of another type.

    Example:
        >>> check_fields({"ipc": "3"}, {"ipc": int}, "x.json")
        Traceback (most recent call last):
        condense.errors.IntegrityError: 'x.json': field 'ipc' is a string ('3'), expected an integer; the file ...
    """
    for name, spec in schema.items():
        if name not in meta:
            raise IntegrityError(
                f"'{path}' lacks the field '{prefix}{name}'; the file is incomplete or from another tool; {hint}"
            )
        value = meta[name]
        if not _matches(value, spec):
            shown = repr(value)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise IntegrityError(
                f"'{path}': field '{prefix}{name}' is {_json_type(value)} ({shown}), "
                f"expected {_spec_name(spec)}; {hint}"
            )


class JsonlLog:
    """Append-only JSONL log (a no-op without a path); every line is flushed as it is written.

    A run killed mid-line leaves a partial last line: the next session starts its lines on a fresh one, so every
    complete line stays parseable.
    """

    def __init__(self, path: str | Path | None) -> None:
        self._f = None
        if path is not None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            torn = False
            if path.is_file() and path.stat().st_size > 0:
                with open(path, "rb") as f:
                    f.seek(-1, 2)
                    torn = f.read(1) != b"\n"
            self._f = open(path, "a", encoding="utf-8")  # noqa: SIM115  (closed in close())
            if torn:
                self._f.write("\n")

    def write(self, obj: Mapping[str, Any]) -> None:
        """Append ``obj`` as one JSON line (NaN allowed: a diverged loss is logged as it was)."""
        if self._f is not None:
            self._f.write(json.dumps(obj, allow_nan=True) + "\n")
            self._f.flush()

    def close(self) -> None:
        """Close the file (further writes are dropped)."""
        if self._f is not None:
            self._f.close()
            self._f = None
