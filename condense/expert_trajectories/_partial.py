"""Mid-expert checkpoints of the experts in training, and the JSONL progress log of a recording.

``record.py`` trains experts in groups; with ``checkpoint_every_epochs`` > 0 a group saves its whole state (parameters,
momentum, buffers, generator states, snapshot rows, curves) into ``out/partial_<run_key>_<first id>_<group digest>/``
(:class:`PartialCheckpoint`), so a kill loses at most that many epochs. On the next run :func:`scan_partials` finds
the folders (refusing one of another run), :func:`drop_finished_partials` deletes those whose experts were written
before the kill, and :func:`load_partial` turns a folder back into the group, its :class:`GroupState` and its writer,
or None when it is unusable. :func:`remove_torn_writes` deletes the temp files a killed atomic write leaves behind.
The JSONL progress log (``out/log.jsonl``, ``log_rank<r>.jsonl`` for ranks > 0) is a :class:`condense.io.JsonlLog`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from condense.errors import CondenseError, MismatchError
from condense.expert_trajectories._train import Expert, GroupState, Trainer
from condense.expert_trajectories.manifest import MANIFEST_NAME
from condense.io import check_seal, check_stamp, load_tensors, read_json, save_tensors, seal, stamp, write_json_atomic

__all__ = [
    "LOG_NAME",
    "PARTIAL_FORMAT",
    "PARTIAL_FORMAT_VERSION",
    "PartialCheckpoint",
    "drop_finished_partials",
    "load_partial",
    "remove_torn_writes",
    "scan_partials",
]

logger = logging.getLogger("condense")

PARTIAL_FORMAT = "condense.expert_partial"
PARTIAL_FORMAT_VERSION = 2  # 2: smooth experts decay after epoch E//2+1 with a fresh momentum buffer (AST)
PARTIAL_PREFIX = "partial_"
PARTIAL_JSON = "checkpoint.json"
LOG_NAME = "log.jsonl"


# ----------------------------------------------------------------------------------------------------------------------
# Mid-expert checkpoints: one folder per group in training
# ----------------------------------------------------------------------------------------------------------------------


def _group_digest(run_key: str, group: list[Expert]) -> str:
    members = [[e.id, e.attempt] for e in group]
    return hashlib.sha256(json.dumps([run_key, members]).encode()).hexdigest()[:8]


class PartialCheckpoint:
    """Writes the checkpoints of one group of experts in training into ``out/partial_<run_key>_<id>_<digest>/``.

    Files (all written atomically, none ever rewritten in place):

    - ``snapshots_<a>_<b>.safetensors``: snapshot rows a..b-1 (tensor ``snapshots``, (b - a, K, P), storage dtype),
      each row written once, so the checkpoints of a whole expert cost its snapshots once, not once per epoch;
    - ``state_<epoch>.safetensors``: ``params/<name>``, ``mom/<name>``, ``buffers/<name>`` (stacked over K when the
      group is vmapped) and ``generator/<i>/order``, ``generator/<i>/aug`` (uint8 generator states of expert i);
    - ``checkpoint.json`` (the commit point, written last and sealed with ``io.seal``): the stamp, ``run_key``, the
      experts (id, attempt, seeds), the epoch counter, step, learning rate, elapsed seconds, which experts are still
      finite, the accuracy and loss curves so far, and the name and sha256 of every tensor file it uses.

    A kill before ``checkpoint.json`` is replaced leaves the previous checkpoint whole: files it does not name are
    deleted when it is loaded.
    """

    def __init__(self, out: Path, run_key: str, group: list[Expert], every: int, written: int = 0) -> None:
        first = min(e.id for e in group)
        self.folder = out / f"{PARTIAL_PREFIX}{run_key}_{first:04d}_{_group_digest(run_key, group)}"
        self.run_key = run_key
        self.every = every
        self.written = written  # snapshot rows already in chunk files
        self.chunks: list[dict[str, Any]] = []

    def due(self, epoch: int, epochs: int) -> bool:
        """Checkpoint after ``epoch`` finished epochs? (never after the last: the experts are then written)."""
        return self.every > 0 and epoch < epochs and epoch % self.every == 0

    def write(self, st: GroupState, group: list[Expert]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = {"format": PARTIAL_FORMAT, "format_version": str(PARTIAL_FORMAT_VERSION), "run_key": self.run_key}
        n = len(st.snapshots)
        if n > self.written:
            name = f"snapshots_{self.written:05d}_{n:05d}.safetensors"
            rows = torch.stack(st.snapshots[self.written :])
            sha = save_tensors(self.folder / name, {"snapshots": rows}, metadata=meta)
            self.chunks.append({"file": name, "rows": [self.written, n], "sha256": sha})
            self.written = n
        tensors = {f"params/{k}": v for k, v in st.params.items()}
        tensors |= {f"mom/{k}": v for k, v in st.mom.items()}
        tensors |= {f"buffers/{k}": v for k, v in st.buffers.items()}
        for i, e in enumerate(group):
            tensors[f"generator/{i}/order"] = e.order_gen.get_state()
            tensors[f"generator/{i}/aug"] = e.aug_gen.get_state()
        state_name = f"state_{st.epoch:05d}.safetensors"
        state_sha = save_tensors(self.folder / state_name, tensors, metadata=meta)
        record = {
            **stamp(PARTIAL_FORMAT, PARTIAL_FORMAT_VERSION),
            "run_key": self.run_key,
            "experts": [{"id": e.id, "attempt": e.attempt, "seeds": e.seeds} for e in group],
            "epoch": st.epoch,
            "step": st.step,
            "lr": st.lr,
            "seconds": st.seconds,
            "finite": [bool(f) for f in st.finite.tolist()],
            "accuracy_curves": st.accuracy_curves,
            "train_loss_curves": st.train_loss_curves,
            "num_snapshots": n,
            "state": {"file": state_name, "sha256": state_sha},
            "snapshots": self.chunks,
        }
        write_json_atomic(self.folder / PARTIAL_JSON, seal(record))
        _drop_unnamed(self.folder, record)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _drop_unnamed(folder: Path, record: dict[str, Any]) -> None:
    """Delete the files of ``folder`` that ``record`` does not use (older states, uncommitted or torn writes)."""
    keep = {PARTIAL_JSON, record["state"]["file"], *(c["file"] for c in record["snapshots"])}
    for f in folder.iterdir():
        if f.name not in keep:
            f.unlink(missing_ok=True)


def scan_partials(out: Path, run_key: str) -> dict[Path, list[int] | None]:
    """Checkpoint folders of experts in training in ``out``: folder -> expert ids (None when unreadable).

    Raises:
        MismatchError: a folder was written by a run with other settings (another ``run_key``).
    """
    found: dict[Path, list[int] | None] = {}
    if not out.is_dir():
        return found
    for folder in sorted(out.glob(f"{PARTIAL_PREFIX}*")):
        if not folder.is_dir():
            continue
        key = folder.name[len(PARTIAL_PREFIX) :].split("_")[0]
        if key != run_key:
            raise MismatchError(
                f"'{folder}' holds experts in training recorded with other settings (run key {key}, this run "
                f"{run_key}); use another output folder or delete it"
            )
        try:
            rec = read_json(folder / PARTIAL_JSON)
            found[folder] = [int(e["id"]) for e in rec["experts"]]
        except (CondenseError, OSError, KeyError, TypeError, ValueError):
            found[folder] = None
    return found


def load_partial(
    folder: Path, run_key: str, seed: int, trainer: Trainer, every: int
) -> tuple[list[Expert], GroupState, PartialCheckpoint] | None:
    """The group, its state and its writer from a checkpoint folder; None (with a warning) when unusable."""
    path = folder / PARTIAL_JSON
    try:
        rec = read_json(path)
        check_stamp(rec, PARTIAL_FORMAT, PARTIAL_FORMAT_VERSION, path)
        check_seal(rec, path)
        if rec["run_key"] != run_key:
            raise MismatchError(f"'{path}' has run key {rec['run_key']}, this run {run_key}")
        group = [Expert.make(seed, int(e["id"]), int(e["attempt"])) for e in rec["experts"]]
        if [e.seeds for e in group] != [e["seeds"] for e in rec["experts"]]:
            raise MismatchError(f"'{path}' records other seeds for its experts")
        _drop_unnamed(folder, rec)
        tensors = load_tensors(folder / rec["state"]["file"], rec["state"]["sha256"])
        rows: list[torch.Tensor] = []
        for c in rec["snapshots"]:
            chunk = load_tensors(folder / c["file"], c["sha256"])["snapshots"]
            if list(c["rows"]) != [len(rows), len(rows) + chunk.shape[0]]:
                raise CondenseError(f"'{folder / c['file']}' holds rows {c['rows']}, expected from {len(rows)}")
            rows.extend(chunk.unbind(0))
        if len(rows) != rec["num_snapshots"] or int(rec["epoch"]) >= trainer.epochs:
            raise CondenseError(f"'{path}' is inconsistent ({len(rows)} snapshots, epoch {rec['epoch']})")
        for i, e in enumerate(group):
            e.order_gen.set_state(tensors[f"generator/{i}/order"])
            e.aug_gen.set_state(tensors[f"generator/{i}/aug"])

        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

        state = GroupState(
            epoch=int(rec["epoch"]),
            step=int(rec["step"]),
            lr=float(rec["lr"]),
            params=part("params/"),
            mom=part("mom/"),
            buffers=part("buffers/"),
            snapshots=rows,
            finite=torch.tensor(rec["finite"], dtype=torch.bool),
            accuracy_curves=rec["accuracy_curves"],
            train_loss_curves=rec["train_loss_curves"],
            seconds=float(rec["seconds"]),
        )
    except (CondenseError, OSError, KeyError, TypeError, ValueError, RuntimeError) as e:
        logger.warning("checkpoint '%s' is unusable (%s); its experts are trained from the start", folder, e)
        return None
    writer = PartialCheckpoint(folder.parent, run_key, group, every, written=len(rows))
    writer.folder, writer.chunks = folder, list(rec["snapshots"])
    return group, state, writer


# ----------------------------------------------------------------------------------------------------------------------
# Progress log
# ----------------------------------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------------------------------
# Cleanup after a kill
# ----------------------------------------------------------------------------------------------------------------------


def remove_torn_writes(out: Path) -> None:
    """Delete the temp files a killed atomic write of an expert file or of the manifest left in ``out``."""
    for pattern in (".expert_*.tmp", f".{MANIFEST_NAME}.*.tmp"):  # left by a killed atomic write
        for tmp in out.glob(pattern):
            tmp.unlink(missing_ok=True)


def drop_finished_partials(partials: dict[Path, list[int] | None], done: dict[int, Any]) -> None:
    """Delete (and forget) the checkpoint folders that are unreadable or whose experts are all in ``done``."""
    for folder, ids in list(partials.items()):
        if ids is None or all(i in done for i in ids):  # killed after its experts were written
            shutil.rmtree(folder, ignore_errors=True)
            del partials[folder]
