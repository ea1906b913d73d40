"""The expert-buffer format, one owner: names, constants, the manifest header, expert records, write, scan and check.

Layout of a buffer directory::

    manifest.json              format + version + provenance (``condense.io.stamp``), dataset name and fingerprint,
                               preprocessing (ZCA describe()), model spec, parameter names and shapes, expert kind
                               and its config, augmentation, seeds, snapshot schedule, ``run_key``, and per expert:
                               status, seeds, accuracy curve, sha256; sealed (``condense.io.seal``)
    expert_0000.safetensors    one tensor "params" of shape (S, P): S snapshots (init + one per epoch) of the P
                               flattened parameters in ``param_names`` order (``condense.models.ParamLayout``);
                               header metadata repeats the expert's record, so an interrupted run can be resumed
                               from the files alone
    expert_0001.safetensors    ...

Why not the authors' ``replay_buffer_<n>.pt``: those are pickles (unsafe to load) of anonymous tensor lists with no
record of dataset, ZCA, model or seeds, read whole into RAM.

The recorder (``record.py``) writes with :func:`build_header`, :func:`write_expert` and :func:`write_manifest`, and
resumes with :func:`check_existing` and :func:`scan_experts`; the reader (``buffer.py``) opens with
:func:`read_manifest`. ``run_key`` hashes every header field except the provenance, so a resumed run refuses files
written with any other setting.

Integrity (:func:`condense.io.seal`): each finished expert's record is sealed once, when the expert is written (the
seal covers its ``run_key``); the file header stores it and the manifest lists the same record, seal included, plus
the file's sha256 (the manifest keeps ``run_key`` once, at the top). The manifest as a whole is sealed too. So an
edited manifest field (``num_params``, ``dataset``, ``model``, ``seed``, an expert's ``seeds``...) or an edited
record in an expert file is refused with the name of the field, and the expert files' sha256 are themselves sealed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import struct
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from condense.errors import CondenseError, IntegrityError, MismatchError
from condense.io import (
    SEAL_KEY,
    canonical_json,
    check_fields,
    check_seal,
    check_stamp,
    edited_fields,
    read_json,
    read_metadata,
    save_tensors,
    seal,
    sha256_file,
    stamp,
    write_json_atomic,
)
from condense.seeding import derive_seed as _derive

if TYPE_CHECKING:
    from condense.data import ImageData
    from condense.models.params import ParamLayout

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "TENSOR_KEY",
    "STORAGE_DTYPES",
    "REQUIRED_KEYS",
    "SEED_NAMESPACE",
    "SEED_STREAMS",
    "SEED_DERIVATION",
    "canonical_json",
    "derive_seed",
    "expert_seeds",
    "expert_filename",
    "dataset_record",
    "build_header",
    "expert_record",
    "read_manifest",
    "write_expert",
    "read_expert_record",
    "scan_experts",
    "write_manifest",
    "check_existing",
]

logger = logging.getLogger("condense")

FORMAT = "condense.expert_buffer"
#: 1: the shared stamp; 2: the manifest and every expert record are sealed (``condense.io.seal``).
FORMAT_VERSION = 2
MANIFEST_NAME = "manifest.json"
TENSOR_KEY = "params"
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

REQUIRED_KEYS = (
    "format",
    "format_version",
    "dataset",
    "preprocessing",
    "model",
    "param_names",
    "param_shapes",
    "kind",
    "config",
    "num_snapshots",
    "dtype",
    "experts",
)

# Settings a resumed run must share with the buffer, named in the mismatch message (all of them feed run_key).
_RESUME_KEYS = ("dataset", "preprocessing", "model", "kind", "config", "augment", "epochs", "seed", "dtype")

#: The type of every manifest field a reader uses (:func:`condense.io.check_fields`).
_MANIFEST_FIELDS: dict[str, Any] = {
    "format": str,
    "format_version": int,
    "provenance": dict,
    "dataset": dict,
    "preprocessing": dict,
    "model": dict,
    "param_names": list[str],
    "param_shapes": dict[str, list[int]],
    "num_params": int,
    "kind": str,
    "config": dict,
    "augment": dict,
    "epochs": int,
    "steps_per_epoch": int,
    "save_every_steps": int | None,
    "snapshot_steps": list[int],
    "num_snapshots": int,
    "dtype": str,
    "seed": int,
    "seed_derivation": str,
    "run_key": str,
    "num_experts_done": int,
    "updated": str,
    "experts": list[dict],
}
#: The type of every field of a finished expert's record (file header: with ``run_key``; manifest: with ``sha256``).
_RECORD_FIELDS: dict[str, Any] = {
    "id": int,
    "file": str,
    "status": str,
    "attempt": int,
    "seeds": dict[str, int],
    "accuracy_curve": list[float | None],
    "final_test_acc": float | None,
    "train_loss_curve": list[float | None],
    "seconds": float,
    "rank": int,
}
_REDO = "delete that expert file to train the expert again"


# ----------------------------------------------------------------------------------------------------------------------
# Names and small records
# ----------------------------------------------------------------------------------------------------------------------


def expert_filename(expert_id: int) -> str:
    """File name of expert ``expert_id`` inside a buffer directory."""
    return f"expert_{expert_id:04d}.safetensors"


def dataset_record(data: ImageData) -> dict[str, Any]:
    """What a buffer records about its dataset (and compares in ``ExpertBuffer.check_compatible``)."""
    return {
        "name": data.name,
        "fingerprint": data.fingerprint,
        "num_classes": data.num_classes,
        "channels": data.channels,
        "image_size": list(data.image_size),
        "num_train": int(data.x_train.shape[0]),
    }


# ----------------------------------------------------------------------------------------------------------------------
# Seeds: the rule every manifest records
# ----------------------------------------------------------------------------------------------------------------------

SEED_NAMESPACE = "condense-experts"
SEED_STREAMS = ("init", "order", "aug")  # parameter init, data order, DSA draws
SEED_DERIVATION = "sha256('condense-experts/{seed}/{expert_id}/{attempt}/{init|order|aug}')[:8] LE & 2^63-1"


def derive_seed(seed: int, expert_id: int, attempt: int, stream: str) -> int:
    """A 63-bit seed for one random stream (``init``, ``order``, ``aug``) of one expert's attempt.

    Hash-derived (``condense.seeding.derive_seed`` in the ``condense-experts`` namespace, as ``SEED_DERIVATION``
    states), so experts are independent of each other, of how they are grouped and of the number of ranks.

    Example:
        >>> derive_seed(0, 3, 0, "init") == derive_seed(0, 3, 0, "init") != derive_seed(0, 3, 1, "init")
        True
    """
    return _derive(SEED_NAMESPACE, seed, expert_id, attempt, stream)


def expert_seeds(seed: int, expert_id: int, attempt: int) -> dict[str, int]:
    """The three seeds of one attempt at one expert, ``{"init", "order", "aug"}`` (recorded per expert)."""
    return {s: derive_seed(seed, expert_id, attempt, s) for s in SEED_STREAMS}


# ----------------------------------------------------------------------------------------------------------------------
# Header and records (the write side builds them from plain values)
# ----------------------------------------------------------------------------------------------------------------------


def build_header(
    *,
    data: ImageData,
    model: str,
    model_kwargs: dict[str, Any],
    layout: ParamLayout,
    kind: str,
    config: dict[str, Any],
    augment: dict[str, Any],
    epochs: int,
    steps_per_epoch: int,
    snapshot_steps: list[int],
    save_every_steps: int | None,
    seed: int,
    dtype: str,
) -> dict[str, Any]:
    """Manifest fields shared by all experts; ``run_key`` hashes all of them but the provenance.

    Args:
        data: the training set (name, fingerprint, preprocessing, shapes are recorded).
        model: registered model name.
        model_kwargs: its builder options.
        layout: the model's parameter layout (names, shapes: the flattening order of every snapshot).
        kind: the expert kind (``vanilla``, ``flat``, ``smooth``).
        config: the expert config as a dict (``ExpertConfig.to_dict()``).
        augment: the resolved augmentation's ``config()``.
        epochs: training epochs per expert.
        steps_per_epoch: SGD steps per epoch.
        snapshot_steps: global SGD step of each snapshot.
        save_every_steps: the snapshot interval in steps, or None for per-epoch snapshots.
        seed: the base seed.
        dtype: storage dtype name (a key of :data:`STORAGE_DTYPES`).
    """
    st = stamp(FORMAT, FORMAT_VERSION)
    header: dict[str, Any] = {
        "format": st["format"],
        "format_version": st["format_version"],
        "dataset": dataset_record(data),
        "preprocessing": data.preprocessing(),
        "model": {
            "name": model,
            "in_channels": data.channels,
            "num_classes": data.num_classes,
            "image_size": list(data.image_size),
            "kwargs": model_kwargs,
        },
        "param_names": list(layout.names),
        "param_shapes": {n: list(s) for n, s in zip(layout.names, layout.shapes, strict=True)},
        "num_params": layout.numel,
        "kind": kind,
        "config": config,
        "augment": augment,
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "save_every_steps": save_every_steps,
        "snapshot_steps": snapshot_steps,
        "num_snapshots": len(snapshot_steps),
        "dtype": dtype,
        "seed": seed,
        "seed_derivation": SEED_DERIVATION,
    }
    # the provenance (versions, timestamp) stays out of the key: the same settings resume under a newer condense
    header["run_key"] = hashlib.sha256(canonical_json(header).encode()).hexdigest()[:16]
    header["provenance"] = st["provenance"]
    return header


def expert_record(
    *,
    expert_id: int,
    attempt: int,
    seeds: dict[str, int],
    accuracy_curve: list[float | None],
    train_loss_curve: list[float | None],
    seconds: float,
    run_key: str,
    rank: int,
) -> dict[str, Any]:
    """The record of one finished expert, as its file header stores it (with ``run_key``) and the manifest lists it.

    :func:`write_expert` seals it; the manifest lists the sealed record without ``run_key``, plus ``sha256``.
    """
    return {
        "id": expert_id,
        "file": expert_filename(expert_id),
        "status": "done",
        "attempt": attempt,
        "seeds": seeds,
        "accuracy_curve": accuracy_curve,
        "final_test_acc": accuracy_curve[-1] if accuracy_curve else None,
        "train_loss_curve": train_loss_curve,
        "seconds": round(seconds, 3),
        "run_key": run_key,
        "rank": rank,
    }


# ----------------------------------------------------------------------------------------------------------------------
# Reading the manifest (the check ExpertBuffer.open runs)
# ----------------------------------------------------------------------------------------------------------------------


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read and check ``path`` (a ``manifest.json``): format, version, seal, field types, storage dtype.

    Raises:
        DataNotFoundError: the file is missing.
        IntegrityError: not JSON, not an expert-buffer manifest, another format version (naming the file and both
            versions), edited after it was written (naming the field, ``experts[i].<field>`` for an expert's
            record), missing fields, fields of the wrong type or an unknown dtype.
    """
    path = Path(path)
    manifest = read_json(path)
    if not isinstance(manifest, dict):
        raise IntegrityError(f"'{path}' is not a condense expert-buffer manifest (not a JSON object)")
    check_stamp(manifest, FORMAT, FORMAT_VERSION, path)
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise IntegrityError(f"'{path}' lacks fields {missing}; the manifest is corrupt")
    if not isinstance(manifest["dtype"], str) or manifest["dtype"] not in STORAGE_DTYPES:
        raise IntegrityError(
            f"'{path}': field 'dtype' names unknown dtype {manifest['dtype']!r}; allowed: {', '.join(STORAGE_DTYPES)}"
        )
    hint = "the buffer cannot be trusted: record it again"
    if edited_fields(manifest) == ["experts"]:  # name the expert and the field that changed
        for i, entry in enumerate(manifest["experts"]):
            if isinstance(entry, dict) and SEAL_KEY in entry:
                check_seal(_file_record(entry, manifest.get("run_key")), path, prefix=f"experts[{i}].", hint=hint)
    check_seal(manifest, path, hint=hint)
    check_fields(manifest, _MANIFEST_FIELDS, path, hint=hint)
    for i, entry in enumerate(manifest["experts"]):
        at = f"experts[{i}]."
        check_fields(entry, {"id": int, "file": str, "status": str}, path, prefix=at, hint=hint)
        if entry["status"] == "done":
            check_fields(entry, {**_RECORD_FIELDS, "sha256": str}, path, prefix=at, hint=hint)
    names, shapes = manifest["param_names"], manifest["param_shapes"]
    numel = sum(math.prod(s) for s in shapes.values())
    if set(names) != set(shapes) or numel != manifest["num_params"]:
        raise IntegrityError(
            f"'{path}': fields 'param_names', 'param_shapes' and 'num_params' ({manifest['num_params']}) disagree "
            f"({len(names)} names, {len(shapes)} shapes of {numel} values); {hint}"
        )
    if manifest["num_snapshots"] != len(manifest["snapshot_steps"]):
        raise IntegrityError(
            f"'{path}': field 'num_snapshots' ({manifest['num_snapshots']}) disagrees with 'snapshot_steps' "
            f"({len(manifest['snapshot_steps'])} steps); {hint}"
        )
    return manifest


def _file_record(entry: dict[str, Any], run_key: Any) -> dict[str, Any]:
    """The sealed record an expert file's header holds, rebuilt from its manifest entry and the manifest's run_key."""
    return {**{k: v for k, v in entry.items() if k != "sha256"}, "run_key": run_key}


def _manifest_entry(record: dict[str, Any], sha256: str) -> dict[str, Any]:
    """The manifest's entry of a finished expert: its sealed file record without ``run_key``, plus the file's sha256."""
    return {**{k: v for k, v in record.items() if k != "run_key"}, "sha256": sha256}


# ----------------------------------------------------------------------------------------------------------------------
# Writing: one file per expert, then the manifest
# ----------------------------------------------------------------------------------------------------------------------


def write_expert(out: Path, record: dict[str, Any], snapshots: torch.Tensor) -> dict[str, Any]:
    """Write one finished expert atomically; return its manifest record (``run_key`` dropped, ``sha256`` added).

    The record is sealed (:func:`condense.io.seal`, over its ``run_key`` too) before it goes into the file header;
    the manifest entry keeps that seal.

    Shape:
        snapshots: (S, P), in the storage dtype, on the CPU; row s is the flat parameters at snapshot s.
    """
    record = seal(record)
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "record": json.dumps(record, allow_nan=False)}
    sha = save_tensors(out / record["file"], {TENSOR_KEY: snapshots}, metadata=meta)
    return _manifest_entry(record, sha)


def write_manifest(
    out: Path, header: dict[str, Any], done: dict[int, dict], failed: dict[int, str], n_experts: int
) -> None:
    """Atomically (re)write ``out/manifest.json``: the header plus one entry per expert, done, failed or pending."""
    experts = []
    for i in sorted(set(range(n_experts)) | set(done) | set(failed)):
        if i in done:
            experts.append(done[i])
        elif i in failed:
            experts.append({"id": i, "file": expert_filename(i), "status": "failed", "error": failed[i]})
        else:
            experts.append({"id": i, "file": expert_filename(i), "status": "pending"})
    manifest = dict(header)
    manifest["num_experts_done"] = len(done)
    manifest["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    manifest["experts"] = experts
    write_json_atomic(out / MANIFEST_NAME, seal(manifest))


# ----------------------------------------------------------------------------------------------------------------------
# Resume: what is already in the output folder
# ----------------------------------------------------------------------------------------------------------------------


def read_expert_record(path: Path, data_bytes: int | None = None) -> dict[str, Any] | None:
    """The record stored in an expert file's safetensors header, or None when the file is incomplete.

    An incomplete file (cut, not safetensors, fewer tensor bytes than the buffer needs) means "not finished": resume
    trains that expert again. A complete file whose record was edited, or of another format version, is refused.

    Args:
        path: an ``expert_*.safetensors`` file.
        data_bytes: the tensor bytes the file must hold at least (S x P x itemsize); None skips the check. (The
            header's own offsets are checked against the file size by ``io.read_metadata``.)

    Raises:
        IntegrityError: the file is of another format version, or its record is not JSON, was edited after it was
            written (naming the field) or holds a field of the wrong type.
    """
    try:
        meta = read_metadata(path)
        if meta.get("format") != FORMAT:
            return None
        if data_bytes is not None and path.stat().st_size < data_bytes:
            return None
    except (CondenseError, OSError, struct.error):
        return None  # a corrupt header or file means "not finished": the expert is trained again
    check_stamp(meta, FORMAT, FORMAT_VERSION, path)
    try:
        rec = json.loads(meta["record"])
    except (KeyError, json.JSONDecodeError) as e:
        raise IntegrityError(f"'{path}' holds no readable expert record ({e}); {_REDO}") from e
    if not isinstance(rec, dict):
        raise IntegrityError(f"'{path}' holds an expert record that is not a JSON object; {_REDO}")
    hint = f"the file cannot be trusted: {_REDO}"
    check_seal(rec, path, hint=hint)
    check_fields(rec, {**_RECORD_FIELDS, "run_key": str}, path, hint=hint)
    return rec


def scan_experts(out: Path, header: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Finished experts found in ``out``: id -> manifest record (with the file's sha256).

    Raises:
        MismatchError: a file was recorded with another ``run_key`` (other settings).
    """
    run_key = header["run_key"]
    data_bytes = header["num_snapshots"] * header["num_params"] * STORAGE_DTYPES[header["dtype"]].itemsize
    done: dict[int, dict[str, Any]] = {}
    for path in sorted(out.glob("expert_*.safetensors")):
        rec = read_expert_record(path, data_bytes)
        if rec is None:
            logger.warning("'%s' is unreadable; its expert will be trained again", path)
            continue
        if rec.get("run_key") != run_key:
            raise MismatchError(
                f"'{path}' was recorded with other settings (run key {rec.get('run_key')}, this run {run_key}); "
                "use another output folder or delete it"
            )
        done[rec["id"]] = _manifest_entry(rec, sha256_file(path))
    return done


def check_existing(out: Path, header: dict[str, Any]) -> None:
    """Refuse to resume into ``out`` when its manifest was written with other settings (naming what differs).

    Raises:
        IntegrityError: the manifest is not JSON, has another format version (naming both versions and how to start
            over), or was edited after it was written (naming the field).
        MismatchError: it is not an expert buffer, or differs from ``header`` in a setting resume must keep.
    """
    path = out / MANIFEST_NAME
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise IntegrityError(f"'{path}' exists but is not valid JSON ({e}); delete it or use another folder") from e
    if not isinstance(old, dict) or old.get("format") != FORMAT:
        raise MismatchError(f"'{out}' holds a '{MANIFEST_NAME}' that is not an expert buffer; use another folder")
    try:
        check_stamp(old, FORMAT, FORMAT_VERSION, path)
    except IntegrityError as e:
        raise IntegrityError(
            f"{e}; it cannot be resumed: record into another --out folder, or delete '{out}' to record it afresh"
        ) from e
    check_seal(old, path, hint=f"it cannot be resumed: use another --out folder, or delete '{out}' to start afresh")
    if old.get("run_key") != header["run_key"]:
        diffs = [k for k in _RESUME_KEYS if canonical_json(old.get(k)) != canonical_json(header.get(k))]
        raise MismatchError(
            f"'{out}' holds a buffer recorded with other settings (differs in: {', '.join(diffs) or 'format'}); "
            "resume needs identical settings; use another --out or delete the folder"
        )
