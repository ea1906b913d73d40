"""The read side of an expert-trajectory buffer: ``ExpertBuffer`` reads a recorded buffer lazily and samples it.

The on-disk format (``manifest.json`` plus one safetensors file per expert) is defined in ``manifest.py``. The
manifest's seal (``condense.io.seal``) and field types are checked on open, so an edited manifest is refused naming
the field; every expert file is checked against its (sealed) sha256 before its first read; a buffer made for another
dataset, preprocessing or model is refused by :meth:`ExpertBuffer.check_compatible`; and snapshots are read by row
from memory-mapped files (``safetensors.safe_open``), so sampling from 100 experts touches only the two rows it
needs. Flat snapshots become named parameters through :attr:`ExpertBuffer.layout` (a ``condense.models.ParamLayout``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from condense.data.zca import describe_difference
from condense.errors import ConfigError, DataNotFoundError, IntegrityError, MismatchError
from condense.expert_trajectories.manifest import (
    MANIFEST_NAME,
    STORAGE_DTYPES,
    TENSOR_KEY,
    canonical_json,
    read_manifest,
)
from condense.io import sha256_file
from condense.models.params import ParamLayout

if TYPE_CHECKING:
    from condense.data import ImageData

__all__ = ["ExpertBuffer", "TrajectorySample"]

logger = logging.getLogger("condense")


@dataclass
class TrajectorySample:
    """One draw from the buffer: an expert's parameters at a start epoch and ``expert_epochs`` later.

    Notation (MTT): ``start`` -> theta*_t, ``target`` -> theta*_{t+M}, ``start_epoch`` -> t.

    Shape:
        start: (P,), float32, flattened in ``ExpertBuffer.param_names`` order (use ``ExpertBuffer.layout.unflatten``).
        target: (P,), float32, same layout.
    """

    start: torch.Tensor
    target: torch.Tensor
    expert_id: int
    start_epoch: int
    target_epoch: int


class ExpertBuffer:
    """A recorded set of expert trajectories: metadata in memory, parameters read lazily from disk.

    Open one with :meth:`open`; record one with :func:`condense.expert_trajectories.record_experts`.

    Attributes:
        path: the buffer directory.
        manifest: the parsed ``manifest.json``.
        model_spec: ``{"name", "in_channels", "num_classes", "image_size", "kwargs"}``; pass it to
            ``create_model(spec["name"], in_channels=..., num_classes=..., image_size=..., **spec["kwargs"])``.
        param_names: parameter names in flattening order (``model.named_parameters()`` order).
        param_shapes: name -> shape.
        num_params: P, the length of one flattened snapshot.
        layout: the :class:`~condense.models.ParamLayout` of ``param_names`` and ``param_shapes``; its
            ``unflatten(flat)`` gives named views for ``torch.func.functional_call``, ``flatten(params)`` the inverse.
        num_snapshots: S, snapshots per expert (epochs + 1 unless recorded every k steps).
        kind: ``vanilla``, ``flat`` or ``smooth``.
        config: the expert config the buffer was recorded with, as a dict.
        expert_ids: ids of the finished experts (the ones :meth:`sample` draws from).

    Example:
        >>> buf = ExpertBuffer.open("buffers/digits_convnet")  # doctest: +SKIP
        >>> s = buf.sample(0, 5, 2, "cpu", generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
        >>> params = buf.layout.unflatten(s.start)  # doctest: +SKIP
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.model_spec: dict[str, Any] = manifest["model"]
        self.param_names: list[str] = list(manifest["param_names"])
        self.param_shapes: dict[str, tuple[int, ...]] = {k: tuple(v) for k, v in manifest["param_shapes"].items()}
        self.layout = ParamLayout(tuple(self.param_names), tuple(self.param_shapes[k] for k in self.param_names))
        self.num_params = self.layout.numel
        self.num_snapshots = int(manifest["num_snapshots"])
        self.kind: str = manifest["kind"]
        self.config: dict[str, Any] = manifest["config"]
        self.dtype = STORAGE_DTYPES[manifest["dtype"]]
        self._records = {int(e["id"]): e for e in manifest["experts"]}
        self.expert_ids = sorted(i for i, e in self._records.items() if e.get("status") == "done")
        self._verified: set[int] = set()
        self._handles: dict[int, Any] = {}

    # ------------------------------------------------------------------------------------------------------------------
    # Opening and validation
    # ------------------------------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path) -> ExpertBuffer:
        """Open the buffer in directory ``path`` (reads only ``manifest.json``; expert files are checked lazily).

        Raises:
            DataNotFoundError: ``path`` or its manifest is missing.
            IntegrityError: the manifest is not a condense expert buffer, has another format version (the message
                names the file and both versions), was edited after it was written (the message names the field),
                or is missing fields or holds one of the wrong type.
        """
        path = Path(path)
        if not path.is_dir():
            raise DataNotFoundError(f"expert buffer '{path}' not found; record one with `condense experts`")
        manifest = read_manifest(path / MANIFEST_NAME)
        buf = cls(path, manifest)
        if not buf.expert_ids:
            raise IntegrityError(f"expert buffer '{path}' holds no finished expert; record (or resume) it")
        pending = [i for i, e in buf._records.items() if e.get("status") != "done"]
        if pending:
            logger.warning("expert buffer '%s': experts %s are not finished and will not be sampled", path, pending)
        return buf

    def check_compatible(self, data: ImageData, model: str, model_kwargs: dict[str, Any] | None = None) -> None:
        """Refuse to use this buffer with another dataset, preprocessing or model.

        Args:
            data: the dataset the caller distills.
            model: the model name the caller's student uses.
            model_kwargs: the student's builder options; None skips comparing them.

        Raises:
            MismatchError: naming what differs (dataset name or fingerprint, ZCA on/off or its matrix, normalization,
                model spec) and telling the user to record a new buffer.
        """
        ds = self.manifest["dataset"]
        diffs: list[str] = []
        if ds["name"] != data.name:
            diffs.append(f"dataset: buffer {ds['name']}, this run {data.name}")
        elif ds["fingerprint"] != data.fingerprint:
            diffs.append(
                f"dataset content of {data.name}: buffer fingerprint {ds['fingerprint']}, this run {data.fingerprint}"
            )
        rec_pre, pre = self.manifest["preprocessing"], data.preprocessing()
        rz, z = rec_pre.get("zca"), pre.get("zca")
        if (rz is None) != (z is None):
            diffs.append(f"ZCA: buffer {'on' if rz else 'off'}, this run {'on' if z else 'off'}")
        elif rz is not None:
            # recipe and fingerprint exactly, the matrices within a tolerance (their sha256 depends on thread counts)
            diff = describe_difference(rz, z, ("buffer", "this run"))
            if diff is not None:
                diffs.append(diff)
        for key in ("mean", "std"):
            if canonical_json(rec_pre.get(key)) != canonical_json(pre.get(key)):
                diffs.append(f"normalization {key}: buffer {rec_pre.get(key)}, this run {pre.get(key)}")
        spec = self.model_spec
        if spec["name"] != model:
            diffs.append(f"model: buffer {spec['name']}, this run {model}")
        if model_kwargs is not None and canonical_json(spec.get("kwargs", {})) != canonical_json(model_kwargs):
            diffs.append(f"model options: buffer {spec.get('kwargs', {})}, this run {model_kwargs}")
        want = {"in_channels": data.channels, "num_classes": data.num_classes, "image_size": list(data.image_size)}
        for key, val in want.items():
            if canonical_json(spec.get(key)) != canonical_json(val):
                diffs.append(f"model {key}: buffer {spec.get(key)}, this run {val}")
        if diffs:
            raise MismatchError(
                f"expert buffer '{self.path}' does not fit this run ({'; '.join(diffs)}); record a new buffer for "
                "this dataset, preprocessing and model"
            )

    # ------------------------------------------------------------------------------------------------------------------
    # Metadata
    # ------------------------------------------------------------------------------------------------------------------

    @property
    def num_experts(self) -> int:
        """Number of finished experts (the ones :meth:`sample` draws from)."""
        return len(self.expert_ids)

    @property
    def epochs(self) -> int:
        """Training epochs of each expert."""
        return int(self.manifest.get("epochs", self.num_snapshots - 1))

    @property
    def snapshot_steps(self) -> list[int]:
        """Global SGD step of each snapshot (``[0, S_e, 2 S_e, ...]`` for per-epoch snapshots)."""
        return list(self.manifest.get("snapshot_steps", range(self.num_snapshots)))

    @property
    def accuracy_curves(self) -> dict[int, list[float]]:
        """Test accuracy (fraction) of each finished expert after each epoch, ``{expert_id: [acc_1, ...]}``."""
        return {i: list(self._records[i].get("accuracy_curve", [])) for i in self.expert_ids}

    def expert_record(self, expert_id: int) -> dict[str, Any]:
        """The manifest's record of one expert (status, seeds, curves, sha256)."""
        return dict(self._record(expert_id))

    def _record(self, expert_id: int) -> dict[str, Any]:
        rec = self._records.get(int(expert_id))
        if rec is None or rec.get("status") != "done":
            raise ConfigError(f"expert {expert_id} is not a finished expert of '{self.path}'; have {self.expert_ids}")
        return rec

    # ------------------------------------------------------------------------------------------------------------------
    # Reading
    # ------------------------------------------------------------------------------------------------------------------

    def _handle(self, expert_id: int) -> Any:
        """Open (and on first use verify) one expert file; the handle memory-maps it."""
        if expert_id in self._handles:
            return self._handles[expert_id]
        rec = self._record(expert_id)
        file = self.path / rec["file"]
        if not file.is_file():
            raise DataNotFoundError(f"expert file '{file}' is missing from buffer '{self.path}'")
        if expert_id not in self._verified:
            got = sha256_file(file)
            if got != rec["sha256"]:
                raise IntegrityError(
                    f"checksum mismatch for '{file}': manifest records sha256 {rec['sha256']}, file has {got}; "
                    "the file was truncated or modified; record the expert again"
                )
            self._verified.add(expert_id)
        from safetensors import safe_open

        try:
            handle = safe_open(str(file), framework="pt", device="cpu")
            shape = tuple(handle.get_slice(TENSOR_KEY).get_shape())
        except Exception as e:  # safetensors raises its own error types
            raise IntegrityError(f"'{file}' is not a valid expert file ({e})") from e
        if shape != (self.num_snapshots, self.num_params):
            raise IntegrityError(
                f"'{file}' holds params of shape {shape}, manifest expects {(self.num_snapshots, self.num_params)}"
            )
        self._handles[expert_id] = handle
        return handle

    def _index(self, epoch: int) -> int:
        idx = epoch + self.num_snapshots if epoch < 0 else epoch
        if not 0 <= idx < self.num_snapshots:
            raise ConfigError(f"snapshot {epoch} is out of range; the buffer holds 0..{self.num_snapshots - 1}")
        return idx

    def snapshot(self, expert_id: int, epoch: int) -> torch.Tensor:
        """Flattened parameters of one expert at one snapshot, read from disk without loading the expert.

        Args:
            expert_id: a finished expert's id (see ``expert_ids``).
            epoch: snapshot index (epoch for per-epoch buffers; 0 is the initialization; negative counts from the
                end, -1 is the final parameters).

        Shape:
            return: (P,), float32 on the CPU.
        """
        row = self._handle(int(expert_id)).get_slice(TENSOR_KEY)[self._index(epoch)]
        return row.reshape(-1).to(torch.float32)

    def trajectory(self, expert_id: int) -> torch.Tensor:
        """All snapshots of one expert (loads that expert's whole file).

        Shape:
            return: (S, P), float32 on the CPU.
        """
        return self._handle(int(expert_id)).get_tensor(TENSOR_KEY).to(torch.float32)

    def sample(
        self,
        min_start: int,
        max_start: int,
        expert_epochs: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> TrajectorySample:
        """Draw an expert and a start epoch t ~ U{min_start, ..., max_start - 1}; return theta*_t and theta*_{t+M}.

        The upper bound is exclusive, as MTT's ``np.random.randint(0, max_start_epoch)`` and DATM's
        ``randint(min_start_epoch, upper_bound)``. Only the two snapshots are read from disk.

        Args:
            min_start: smallest start epoch (inclusive).
            max_start: largest start epoch, exclusive (MTT's ``max_start_epoch``).
            expert_epochs: M, epochs between start and target.
            device: where the returned tensors go.
            generator: generator of the expert and epoch draws, on any device (None: the global RNG).

        Raises:
            ConfigError: the window is empty or reaches past the last snapshot.
        """
        if min_start < 0 or max_start <= min_start:
            raise ConfigError(f"start window [{min_start}, {max_start}) is empty; need 0 <= min_start < max_start")
        if expert_epochs < 1:
            raise ConfigError(f"expert_epochs={expert_epochs} must be >= 1")
        last = self.num_snapshots - 1
        if max_start - 1 + expert_epochs > last:
            raise ConfigError(
                f"start epochs up to {max_start - 1} plus expert_epochs={expert_epochs} need snapshot "
                f"{max_start - 1 + expert_epochs}, but buffer '{self.path}' holds snapshots 0..{last}; lower "
                "max_start or expert_epochs, or record longer experts"
            )
        draw_on = generator.device if generator is not None else None  # a CUDA generator draws on its own device
        k = int(torch.randint(len(self.expert_ids), (), generator=generator, device=draw_on))
        t = int(torch.randint(min_start, max_start, (), generator=generator, device=draw_on))
        eid = self.expert_ids[k]
        start = self.snapshot(eid, t).to(device)
        target = self.snapshot(eid, t + expert_epochs).to(device)
        return TrajectorySample(
            start=start, target=target, expert_id=eid, start_epoch=t, target_epoch=t + expert_epochs
        )

    def __getstate__(self) -> dict[str, Any]:
        # open safetensors handles cannot be pickled (DataLoader workers, multiprocessing); they reopen lazily
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def __repr__(self) -> str:
        ds = self.manifest["dataset"]
        return (
            f"ExpertBuffer('{self.path}', {self.kind}, {ds['name']}/{self.model_spec['name']}, "
            f"experts={self.num_experts}, snapshots={self.num_snapshots}, params={self.num_params})"
        )
