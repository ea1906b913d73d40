"""The checkpoint format of the shared matcher runner: what a run saves, how it is verified, and when it may resume.

A checkpoint is two files in the run folder, both written atomically, the tensor file first:

- ``checkpoint.safetensors``: the state's tensors, prefixed ``state/``, plus the generator state as a uint8 tensor
  ``generator``. Its safetensors header metadata embeds the full record (below) under ``"record"``, so a kill that
  lands between the two writes leaves a tensor file that verifies on its own.
- ``checkpoint.json``: the same record plus the tensor file's sha256.

Both records are sealed (:func:`condense.io.seal`: ``meta_sha256`` over every field, ``field_sha256`` per field), so
a record edited after it was written (its config, iteration, scalars...) is refused with the name of the field, and
every field's type is checked before the runner reads it.

The record starts with the stamp every condense format carries (:func:`condense.io.stamp`: ``format``,
``format_version``, ``provenance``), then the run identity (method, resolved config, dataset name and fingerprint,
preprocessing, IPC), the iteration, the state's JSON scalars, each tensor's device, ``requires_grad`` and strides,
the generator's device, the runner's extras (divergence count, elapsed seconds) and ``content_sha256``, a digest of
the tensors themselves (names, dtypes, shapes, bytes), independent of the file layout.

Version history: 1 stamped ``version`` without provenance; 2 uses the shared ``format_version`` stamp; 3 (this)
seals both records.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from condense.config import config_to_dict
from condense.errors import IntegrityError
from condense.io import (
    check_fields,
    check_seal,
    check_stamp,
    read_json,
    read_metadata,
    save_tensors,
    seal,
    sha256_bytes,
    stamp,
    unseal,
    write_json_atomic,
)
from condense.methods.base import Matcher, MatchState

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CHECKPOINT_TENSORS",
    "CHECKPOINT_JSON",
    "run_identity",
    "identity_differences",
    "save_checkpoint",
    "load_checkpoint",
    "restore_state",
]

logger = logging.getLogger("condense")

CHECKPOINT_FORMAT = "condense.checkpoint"
CHECKPOINT_VERSION = 3
CHECKPOINT_TENSORS = "checkpoint.safetensors"
CHECKPOINT_JSON = "checkpoint.json"
_STATE_PREFIX = "state/"
_GEN_KEY = "generator"
#: The type of every field the runner reads from a record (:func:`condense.io.check_fields`).
_RECORD_FIELDS: dict[str, Any] = {
    "format": str,
    "format_version": int,
    "provenance": dict,
    "method": str,
    "config": dict,
    "dataset": str,
    "fingerprint": str,
    "preprocessing": dict,
    "ipc": int,
    "iteration": int,
    "scalars": dict,
    "tensors": dict[str, dict],
    "generator_device": str,
    "extra": dict,
    "content_sha256": str,
}
_START_OVER = "delete the checkpoint files in the run folder to start afresh"


# ----------------------------------------------------------------------------------------------------------------------
# Identity of a run: what a checkpoint must agree with to be resumed
# ----------------------------------------------------------------------------------------------------------------------


def run_identity(matcher: Matcher, data: Any, cfg: Any, ipc: int) -> dict[str, Any]:
    """Method, resolved config, dataset name, fingerprint and preprocessing, and IPC of a run (JSON values)."""
    prep = data.preprocessing() if hasattr(data, "preprocessing") else {}
    return {
        "method": matcher.name,
        "config": config_to_dict(cfg),
        "dataset": getattr(data, "name", ""),
        "fingerprint": getattr(data, "fingerprint", ""),
        "preprocessing": json.loads(json.dumps(prep)),
        "ipc": int(ipc),
    }


def identity_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """One ``"key: checkpoint X, this run Y"`` line per field of :func:`run_identity` that differs (config per key)."""
    out = []
    for key in ("method", "dataset", "fingerprint", "preprocessing", "ipc"):
        if saved.get(key) != current[key]:
            out.append(f"{key}: checkpoint {saved.get(key)!r}, this run {current[key]!r}")
    old_cfg, new_cfg = saved.get("config") or {}, current["config"]
    for key in sorted(set(old_cfg) | set(new_cfg)):
        old, new = old_cfg.get(key, "<absent>"), new_cfg.get(key, "<absent>")
        if old != new:
            out.append(f"config.{key}: checkpoint {old!r}, this run {new!r}")
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------------------


def _content_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and raw bytes (independent of the file layout)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(
    out_dir: Path,
    state: MatchState,
    gen: torch.Generator,
    iteration: int,
    identity: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``checkpoint.safetensors`` then ``checkpoint.json`` atomically; returns the tensor file's path.

    Args:
        out_dir: the run folder.
        state: the matcher state after ``iteration`` completed iterations (must be finite).
        gen: the run's generator; its state is saved so the resumed run draws the same numbers.
        iteration: completed iterations.
        identity: :func:`run_identity` of the run.
        extra: JSON values kept with the checkpoint (divergence count, elapsed seconds).

    Raises:
        IntegrityError: a floating tensor or scalar is non-finite (never saved).
    """
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, dict[str, Any]] = {}
    for name, t in state.tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise IntegrityError(f"refusing to checkpoint non-finite values in state tensor '{name}'")
        tensors[_STATE_PREFIX + name] = t.detach().cpu()
        # strides too: a (N, 1, H, W) tensor is "contiguous" with several stride patterns, and convolution picks
        # different kernels (different float rounding) for them, so exact resume needs the same layout
        layout[name] = {"device": t.device.type, "requires_grad": bool(t.requires_grad), "stride": list(t.stride())}
    tensors[_GEN_KEY] = gen.get_state()
    body = {
        **stamp(CHECKPOINT_FORMAT, CHECKPOINT_VERSION),
        **identity,
        "iteration": int(iteration),
        "scalars": state.scalars,
        "tensors": layout,
        "generator_device": gen.device.type,
        "extra": dict(extra or {}),
        "content_sha256": _content_digest(tensors),
    }
    try:
        record = seal(body)
        text = json.dumps(record, allow_nan=False)  # refuses NaN/inf scalars before anything is written
    except (IntegrityError, ValueError) as e:
        raise IntegrityError(f"refusing to checkpoint a record that JSON cannot hold exactly ({e})") from e
    out_dir = Path(out_dir)
    tpath = out_dir / CHECKPOINT_TENSORS
    digest = save_tensors(tpath, tensors, metadata={"format": CHECKPOINT_FORMAT, "record": text})
    write_json_atomic(out_dir / CHECKPOINT_JSON, seal({**body, "sha256": digest}))
    return tpath


def load_checkpoint(out_dir: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor] | None:
    """Read and verify the checkpoint in ``out_dir``; None when there is none.

    Returns:
        ``(record, state_tensors, generator_state)``; the record without its seal, the tensors on the CPU.

    Raises:
        IntegrityError: the tensor file fails its checksum or its content digest, is of another format or
            version, either record was edited after it was written (the message names the field) or holds a field
            of the wrong type, or ``checkpoint.json`` exists without the tensor file.
    """
    from safetensors.torch import load

    out_dir = Path(out_dir)
    tpath, jpath = out_dir / CHECKPOINT_TENSORS, out_dir / CHECKPOINT_JSON
    if not tpath.is_file():
        if jpath.is_file():
            raise IntegrityError(f"'{jpath}' exists but '{tpath}' is missing; delete '{jpath}' to start afresh")
        return None
    blob = tpath.read_bytes()
    file_sha = sha256_bytes(blob)
    try:
        embedded = json.loads(read_metadata(tpath).get("record", "null"))
        tensors = load(blob)
    except IntegrityError:
        raise
    except Exception as e:  # safetensors and json raise their own error types
        raise IntegrityError(f"'{tpath}' is not a valid condense checkpoint ({e})") from e
    if not isinstance(embedded, dict):
        raise IntegrityError(f"'{tpath}' is not a condense checkpoint (no embedded record)")
    _check_record(embedded, tpath)
    got = _content_digest(tensors)
    if got != embedded.get("content_sha256"):
        raise IntegrityError(
            f"checksum mismatch for the tensors in '{tpath}': recorded {str(embedded.get('content_sha256'))[:16]}..., "
            f"file has {got[:16]}...; the file was modified"
        )
    sidecar = read_json(jpath) if jpath.is_file() else None
    if sidecar is not None:
        if not isinstance(sidecar, dict):
            raise IntegrityError(f"'{jpath}' is not a condense checkpoint record (not a JSON object); {_START_OVER}")
        _check_record(sidecar, jpath, sidecar=True)
    if sidecar is not None and sidecar["sha256"] != file_sha:
        if sidecar["iteration"] >= embedded["iteration"]:
            raise IntegrityError(
                f"checksum mismatch for '{tpath}': '{jpath}' records {str(sidecar.get('sha256'))[:16]}..., file has "
                f"{file_sha[:16]}...; the file was truncated or modified"
            )
        logger.warning(
            "'%s' is older than '%s' (interrupted write); resuming from the tensor file's own record", jpath, tpath
        )
    elif sidecar is None:
        logger.warning("'%s' is missing; resuming from the record embedded in '%s'", jpath, tpath)
    gen_state = tensors.pop(_GEN_KEY)
    state_tensors = {k[len(_STATE_PREFIX) :]: v for k, v in tensors.items() if k.startswith(_STATE_PREFIX)}
    return unseal(embedded), state_tensors, gen_state


def _check_record(record: dict[str, Any], path: Path, sidecar: bool = False) -> None:
    """Stamp, seal and field types of one checkpoint record (the embedded one, or ``checkpoint.json``)."""
    check_stamp(record, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, path)
    hint = f"the checkpoint cannot be trusted; {_START_OVER}"
    check_seal(record, path, hint=hint)
    check_fields(record, {**_RECORD_FIELDS, "sha256": str} if sidecar else _RECORD_FIELDS, path, hint=hint)


def restore_state(record: dict[str, Any], tensors: dict[str, torch.Tensor], device: torch.device) -> MatchState:
    """The :class:`MatchState` a checkpoint holds: tensors back on their device, with their strides and
    ``requires_grad``, and a copy of the scalars (``runtime`` is empty: ``restore_runtime`` rebuilds it)."""
    state = MatchState(scalars=copy.deepcopy(record.get("scalars") or {}))
    layout = record.get("tensors") or {}
    for name, t in tensors.items():
        info = layout.get(name, {})
        target = torch.device("cpu") if info.get("device", "cpu") == "cpu" else device
        stride = info.get("stride")
        if stride is not None and len(stride) == t.ndim and tuple(stride) != t.stride():
            t = torch.empty_strided(t.shape, tuple(stride), dtype=t.dtype).copy_(t)
        t = t.to(target)
        if info.get("requires_grad") and t.is_floating_point():
            t.requires_grad_(True)
        state.tensors[name] = t
    return state
