"""Safe file I/O: atomic writes, sha256, safetensors + JSON. Nothing here unpickles."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
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
    "provenance",
    "stamp",
    "check_stamp",
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
