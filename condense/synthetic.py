"""The SyntheticSet artifact: a distilled set as safetensors + a JSON sidecar, loadable in one line.

Layout on disk for ``path = "cifar10_mtt_ipc10.safetensors"``:

- ``cifar10_mtt_ipc10.safetensors``: tensors ``images`` (N, C, H, W) float32 (absent for graph summaries),
  ``labels`` (N,) int64 hard labels or (N, K) float32 soft labels, optional ``zca_mean``/``zca_matrix``/
  ``zca_inverse`` and any method-specific tensors (graph summaries put theirs here).
- ``cifar10_mtt_ipc10.json``: format version, kind, method, dataset, IPC, classes, label kind, learned lr,
  preprocessing, resolved config, provenance, per-tensor shapes/dtypes and the sha256 of the tensor file.

Both are written atomically (temp file + rename), the tensor file first. The sidecar is sealed
(:func:`condense.io.seal`: ``meta_sha256`` over every field, ``field_sha256`` per field), so an edited ``lr``,
``preprocessing``, ``ipc``, ``method``, ``dataset`` or ``kind`` is refused naming the field, and it records the
tensor file's sha256, so the seal covers the tensors too. Loading checks the version, the seal, every field's type,
the checksum and every recorded shape and dtype; anything else is refused with :class:`IntegrityError`.

Example:
    >>> from condense import SyntheticSet
    >>> syn = SyntheticSet.load("cifar10_mtt_ipc10.safetensors")  # doctest: +SKIP
    >>> loader = syn.to_dataloader(batch_size=256, shuffle=True)   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from condense.errors import DataNotFoundError, IntegrityError, MismatchError
from condense.io import (
    check_fields,
    check_seal,
    check_stamp,
    load_tensors,
    read_json,
    save_tensors,
    seal,
    stamp,
    write_json_atomic,
)

__all__ = ["SyntheticSet", "FORMAT_VERSION", "compose_images", "label_store_path", "sidecar_path"]

FORMAT = "condense.SyntheticSet"
#: 2: the shared stamp (``format_version`` and top-level ``provenance``), as buffers and checkpoints.
#: 3: the sidecar is sealed (``meta_sha256`` and ``field_sha256``, :func:`condense.io.seal`).
FORMAT_VERSION = 3
_KINDS = ("images", "graph_summary")
#: The type of every sidecar field (:func:`condense.io.check_fields`), checked before a save and after a load.
_SIDECAR_FIELDS: dict[str, Any] = {
    "format": str,
    "format_version": int,
    "provenance": dict,
    "kind": str,
    "method": str,
    "dataset": str,
    "ipc": int,
    "classes": list[str],
    "label_kind": str,
    "lr": float | None,
    "preprocessing": dict,
    "config": dict,
    "meta": dict,
    "tensors": dict[str, dict],
    "sha256": str,
}
_ZCA_KEYS = ("zca_mean", "zca_matrix", "zca_inverse")


_COMPOSE_KEYS = ("base", "delta", "base_index", "delta_index")


def _images_sha256(images: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(images.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()).hexdigest()


def compose_images(
    tensors: dict[str, torch.Tensor], compose: dict[str, str], preprocessing: dict[str, Any], where: str = "set"
) -> torch.Tensor:
    """Rebuild the images of a composed set (see :class:`SyntheticSet` ``compose``).

    Shape:
        base: (B, C, H, W); delta: (..., C, H, W); base_index, delta_index: (N,) int; return: (N, C, H, W) float32.
    """
    missing = [compose.get(k) for k in _COMPOSE_KEYS if compose.get(k) not in tensors]
    if missing:
        raise IntegrityError(f"'{where}': compose names tensors {missing} that the file does not hold; re-create it")
    base = tensors[compose["base"]].float()
    delta = tensors[compose["delta"]].float().reshape(-1, *base.shape[1:])
    bi, di = tensors[compose["base_index"]].long(), tensors[compose["delta_index"]].long()
    if bi.shape != di.shape or bi.ndim != 1 or (bi.numel() and (bi.min() < 0 or bi.max() >= base.shape[0])):
        raise IntegrityError(f"'{where}': compose base_index is out of range or mismatched; re-create the artifact")
    if di.numel() and int(di.max()) >= delta.shape[0]:
        raise IntegrityError(f"'{where}': compose delta_index is out of range; re-create the artifact")
    mean = torch.tensor(preprocessing.get("mean") or [0.0] * base.shape[1]).reshape(1, -1, 1, 1)
    std = torch.tensor(preprocessing.get("std") or [1.0] * base.shape[1]).reshape(1, -1, 1, 1)
    lo, hi = (0.0 - mean) / std, (1.0 - mean) / std
    out = base[bi].clone()
    has = di >= 0
    if bool(has.any()):
        added = base[bi[has]] + delta[di[has]]
        out[has] = torch.minimum(torch.maximum(added, lo.to(added.dtype)), hi.to(added.dtype))
    return out


def label_store_path(path: str | Path) -> Path:
    """The folder of an artifact's label store: ``<name>.labels`` beside ``<name>.safetensors``."""
    t = _tensor_path(path)
    return t.with_name(t.name.removesuffix(".safetensors") + ".labels")


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar beside a ``.safetensors`` artifact."""
    return Path(path).with_suffix(".json")


def _tensor_path(path: str | Path) -> Path:
    p = Path(path)
    if p.suffix == ".json":
        p = p.with_suffix(".safetensors")
    elif p.suffix != ".safetensors":
        p = p.with_name(p.name + ".safetensors")
    return p


@dataclass
class SyntheticSet:
    """A distilled dataset with everything needed to train on it the way it was evaluated.

    Args:
        images: synthetic images, or None for graph summaries.
        labels: hard labels (int64 class indices) or soft labels (float logits/probabilities, see
            ``meta["label_kind"]``).
        classes: class names in label order.
        method: registered method name that produced it.
        dataset: dataset name it was distilled from.
        ipc: images (or graphs) per class.
        lr: learned learning rate (MTT family), used by evaluation when set.
        preprocessing: ``{"mean", "std", "zca"}`` as recorded by the dataset; images live in that space.
        tensors: extra named tensors (ZCA matrices, graph summary arrays).
        config: the resolved method config.
        meta: free JSON (label kind, soft-label temperature, notes).
        kind: "images" or "graph_summary".
        provenance: who wrote the file (condense/torch/python versions, time); filled on :meth:`load`, written anew
            by :meth:`save`.
        compose: how ``images`` are rebuilt from smaller stored tensors (INFER: real bases + compensators), or None.
            ``{"base", "delta", "base_index", "delta_index"}`` name entries of ``tensors``: image ``i`` is
            ``base[base_index[i]]`` when ``delta_index[i] < 0``, else ``clamp(base[base_index[i]] +
            delta.flatten(0, -4)[delta_index[i]])`` to the pixel box of ``preprocessing`` (normalized 0 and 1). The
            file then holds no ``images`` tensor: :meth:`save` checks that the rebuild reproduces ``images`` bit for
            bit and records their sha256, :meth:`load` rebuilds and verifies it.
        label_store: soft labels per (image, epoch) view (:class:`condense.labels.LabelStore`, from ``condense
            relabel``); saved beside the artifact as ``<name>.labels/``, verified on load, replayed by
            :meth:`to_dataloader` and by the ``soft_label`` evaluation (no teacher needed then).

    Shape:
        images: (N, C, H, W), float32, normalized by preprocessing["mean"]/["std"], or ZCA-whitened [0, 1] pixels
            when preprocessing["zca"] is set (then mean 0, std 1).
        labels: (N,) int64 or (N, K) float32.
    """

    images: torch.Tensor | None
    labels: torch.Tensor
    classes: list[str]
    method: str
    dataset: str
    ipc: int
    lr: float | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    kind: str = "images"
    provenance: dict[str, Any] = field(default_factory=dict)
    label_store: Any = None
    compose: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise IntegrityError(f"unknown SyntheticSet kind '{self.kind}'; allowed: {', '.join(_KINDS)}")
        if self.kind == "images":
            if self.images is None or self.images.ndim != 4:
                shape = None if self.images is None else tuple(self.images.shape)
                raise IntegrityError(f"images must be (N, C, H, W), got {shape}")
            if self.labels.shape[0] != self.images.shape[0]:
                raise IntegrityError(
                    f"labels have {self.labels.shape[0]} rows but there are {self.images.shape[0]} images"
                )
        if self.labels.ndim == 1 and self.labels.dtype != torch.int64:
            raise IntegrityError(f"hard labels must be int64, got {self.labels.dtype}")
        if self.labels.ndim == 2 and (not self.labels.is_floating_point() or self.labels.shape[1] != len(self.classes)):
            got = f"{self.labels.dtype} {tuple(self.labels.shape)}"
            raise IntegrityError(f"soft labels must be float (N, {len(self.classes)}), got {got}")
        if self.labels.ndim not in (1, 2):
            raise IntegrityError(f"labels must be (N,) or (N, K), got shape {tuple(self.labels.shape)}")
        if self.lr is not None and not (self.lr > 0 and torch.isfinite(torch.tensor(self.lr))):
            raise IntegrityError(f"learned lr must be a positive finite number, got {self.lr}")

    # ------------------------------------------------------------------ properties

    @property
    def soft_labels(self) -> bool:
        return self.labels.ndim == 2

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def hard_labels(self) -> torch.Tensor:
        """(N,) int64 class indices (argmax of soft labels)."""
        return self.labels.argmax(1) if self.soft_labels else self.labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def zca(self):  # -> ZCA | None
        """The fitted ZCA transform stored with the set, or None."""
        if not all(k in self.tensors for k in _ZCA_KEYS):
            return None
        from condense.data.zca import ZCA

        info = self.preprocessing.get("zca") or {}
        return ZCA.from_tensors({k: self.tensors[k] for k in _ZCA_KEYS}, float(info.get("eps", 0.1)), info)

    # ------------------------------------------------------------------ save / load

    def _all_tensors(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if self.images is not None and self.compose is None:
            out["images"] = self.images.detach().float().cpu()
        out["labels"] = self.labels.detach().cpu()
        for k, v in self.tensors.items():
            if k in ("images", "labels"):
                raise IntegrityError(f"extra tensor name '{k}' is reserved")
            out[k] = v.detach().cpu()
        for k, v in out.items():
            if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                raise IntegrityError(f"refusing to save non-finite values in tensor '{k}'")
        return out

    def save(self, path: str | Path) -> Path:
        """Write ``<path>.safetensors`` + ``<path>.json`` atomically; returns the tensor file's path."""
        tpath = _tensor_path(path)
        tensors = self._all_tensors()
        meta = {
            **stamp(FORMAT, FORMAT_VERSION),
            "kind": self.kind,
            "method": self.method,
            "dataset": self.dataset,
            "ipc": self.ipc,
            "classes": list(self.classes),
            "label_kind": "soft" if self.soft_labels else "hard",
            "lr": self.lr,
            "preprocessing": self.preprocessing,
            "config": self.config,
            "meta": self.meta,
            "tensors": {
                k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")} for k, v in tensors.items()
            },
        }
        # refuse a value that would make the file unloadable (ipc "3", classes of ints) before anything is written
        check_fields(
            meta,
            {k: v for k, v in _SIDECAR_FIELDS.items() if k != "sha256"},
            sidecar_path(tpath),
            hint="pass values of that type to SyntheticSet",
        )
        if self.compose is not None:
            rebuilt = compose_images(self.tensors, self.compose, self.preprocessing)
            if rebuilt.shape != self.images.shape or not torch.equal(rebuilt, self.images.detach().float().cpu()):
                raise IntegrityError(
                    "compose does not reproduce the images bit for bit; refusing to save a set that would load "
                    "as other images"
                )
            meta["compose"] = {**self.compose, "images_sha256": _images_sha256(rebuilt)}
        if self.label_store is not None:  # the store first, so the sidecar never names a store that is not there
            self.label_store.check_images(self.images)
            ldir = label_store_path(tpath)
            self.label_store.save(ldir)
            manifest = read_json(ldir / "labels.json")
            meta["meta"] = {**self.meta, "label_store": {"dir": ldir.name, "meta_sha256": manifest["meta_sha256"]}}
        meta["sha256"] = save_tensors(
            tpath, tensors, metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)}
        )
        write_json_atomic(sidecar_path(tpath), seal(meta))
        return tpath

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> SyntheticSet:
        """Load and verify an artifact written by :meth:`save` (pass either file of the pair).

        Raises:
            DataNotFoundError: either file is missing.
            IntegrityError: the sidecar is of another version, was edited after it was written (the message names
                the field), holds a field of the wrong type, or the tensor file's checksum, shapes or dtypes differ
                from it.
        """
        tpath = _tensor_path(path)
        spath = sidecar_path(tpath)
        for p in (tpath, spath):
            if not p.is_file():
                raise DataNotFoundError(
                    f"synthetic set file '{p}' not found; an artifact is a '.safetensors' file plus its '.json' sidecar"
                )
        meta = read_json(spath)
        if not isinstance(meta, dict):
            raise IntegrityError(f"'{spath}' is not a condense SyntheticSet sidecar")
        check_stamp(meta, FORMAT, FORMAT_VERSION, spath)
        check_seal(meta, spath)
        check_fields(meta, _SIDECAR_FIELDS, spath)
        recorded = meta["tensors"]
        for k, spec in recorded.items():
            shape, dtype = spec.get("shape"), spec.get("dtype")
            dims_ok = isinstance(shape, list) and all(type(d) is int for d in shape)  # bool is not a dimension
            if not (dims_ok and isinstance(dtype, str)):
                raise IntegrityError(
                    f"'{spath}': field 'tensors' describes '{k}' as {str(spec)[:60]}, expected "
                    '{"shape": [int, ...], "dtype": str}; the file cannot be trusted: re-create it'
                )
        tensors = load_tensors(tpath, expected_sha256=meta["sha256"])
        if set(recorded) != set(tensors):
            raise IntegrityError(f"'{tpath}' holds tensors {sorted(tensors)}, sidecar lists {sorted(recorded)}")
        for k, spec in recorded.items():
            t = tensors[k]
            if list(t.shape) != spec["shape"] or str(t.dtype).replace("torch.", "") != spec["dtype"]:
                raise IntegrityError(
                    f"tensor '{k}' in '{tpath}' is {t.dtype} {tuple(t.shape)}, sidecar says {spec['dtype']} "
                    f"{tuple(spec['shape'])}"
                )
        if "labels" not in tensors:
            raise IntegrityError(f"'{tpath}' holds no 'labels' tensor; the artifact is incomplete: re-create it")
        compose = meta.get("compose")
        if compose is not None:
            if not isinstance(compose, dict) or "images" in tensors:
                raise IntegrityError(f"'{spath}': field 'compose' is {str(compose)[:80]}; re-create the artifact")
            spec = {k: str(compose.get(k)) for k in _COMPOSE_KEYS}
            rebuilt = compose_images(tensors, spec, meta["preprocessing"], where=str(tpath))
            if _images_sha256(rebuilt) != compose.get("images_sha256"):
                raise IntegrityError(
                    f"'{tpath}': the images rebuilt from {spec['base']} and {spec['delta']} differ from the ones "
                    "that were saved (sha256); the file cannot be trusted: re-create it"
                )
            tensors["images"] = rebuilt
        images = tensors.pop("images", None)
        labels = tensors.pop("labels")
        label_kind = "soft" if labels.ndim == 2 else "hard"
        if meta["label_kind"] != label_kind:
            raise IntegrityError(
                f"'{spath}': field 'label_kind' says {meta['label_kind']!r}, the labels are {label_kind}; "
                "the file cannot be trusted: re-create it"
            )
        syn = cls(
            images=None if images is None else images.to(map_location),
            labels=labels.to(map_location),
            classes=list(meta["classes"]),
            method=meta["method"],
            dataset=meta["dataset"],
            ipc=meta["ipc"],
            lr=meta["lr"],
            preprocessing=dict(meta["preprocessing"]),
            tensors={k: v.to(map_location) for k, v in tensors.items()},
            config=dict(meta["config"]),
            meta=dict(meta["meta"]),
            kind=meta["kind"],
            provenance=dict(meta["provenance"]),
            compose=None if compose is None else {k: str(compose[k]) for k in _COMPOSE_KEYS},
        )
        ref = syn.meta.pop("label_store", None)
        if ref is not None:
            from condense.labels import load_label_store

            ldir = tpath.parent / str(ref.get("dir")) if isinstance(ref, dict) else None
            if ldir is None or ldir != label_store_path(tpath):
                raise IntegrityError(f"'{spath}': field 'meta.label_store' is {str(ref)[:80]}; re-create the artifact")
            store = load_label_store(ldir)
            if read_json(ldir / "labels.json").get("meta_sha256") != ref.get("meta_sha256"):
                raise IntegrityError(
                    f"label store '{ldir}' is not the one '{spath}' was saved with (its manifest changed); relabel"
                )
            store.check_images(syn.images)
            syn.label_store = store
        return syn

    @classmethod
    def from_tensors(
        cls,
        images: torch.Tensor,
        labels: torch.Tensor,
        data: Any,
        method: str,
        ipc: int,
        cfg: Any,
        *,
        lr: float | None = None,
        meta: dict[str, Any] | None = None,
    ) -> SyntheticSet:
        """Wrap a method's final tensors as an artifact carrying ``data``'s classes, preprocessing and ZCA matrices
        (when the data is whitened) and the resolved config ``cfg`` (a config dataclass).

        Shape:
            images: (K * ipc, C, H, W), float; labels: (K * ipc,) int64 or (K * ipc, K) float soft labels.
        """
        from condense.config import config_to_dict

        zca = getattr(data, "zca", None)
        return cls(
            images=images.detach().float().cpu().clone(),
            labels=labels.detach().cpu().clone(),
            classes=list(data.classes),
            method=method,
            dataset=data.name,
            ipc=int(ipc),
            lr=lr,
            preprocessing=data.preprocessing(),
            tensors={} if zca is None else {k: v.detach().cpu() for k, v in zca.to_tensors().items()},
            config=config_to_dict(cfg),
            meta=dict(meta or {}),
        )

    # ------------------------------------------------------------------ use in other code

    def check_compatible(self, data: Any) -> None:
        """Raise :class:`MismatchError` unless ``data`` (an ImageData) has the same classes and preprocessing."""
        if list(data.classes) != list(self.classes):
            raise MismatchError(
                f"synthetic set classes {self.classes[:5]}... differ from dataset '{data.name}' classes "
                f"{list(data.classes)[:5]}...; evaluate it on the dataset it was distilled from ('{self.dataset}')"
            )
        if self.images is not None and tuple(self.images.shape[1:]) != (data.channels, *data.image_size):
            raise MismatchError(
                f"synthetic images are {tuple(self.images.shape[1:])}, dataset '{data.name}' images are "
                f"{(data.channels, *data.image_size)}"
            )
        mine, theirs = self.preprocessing.get("zca"), data.preprocessing().get("zca")
        if (mine is None) != (theirs is None):
            state = lambda s: "ZCA on" if s else "ZCA off"  # noqa: E731
            raise MismatchError(
                f"synthetic set was made with {state(mine)}, dataset '{data.name}' is loaded with {state(theirs)}; "
                "load the dataset with the same --zca setting"
            )
        if mine is not None:
            # recipe and fingerprint exactly, the matrices within a tolerance: the sha256 depends on thread counts
            from condense.data.zca import describe_difference

            diff = describe_difference(mine, theirs, ("synthetic set", f"dataset '{data.name}'"))
            if diff is not None:
                raise MismatchError(
                    f"synthetic set does not fit dataset '{data.name}' ({diff}); load the dataset it was distilled "
                    "from with --zca, or distill the set again with this condense"
                )

    def to_dataset(self) -> torch.utils.data.TensorDataset:
        """A ``TensorDataset(images, labels)`` for ordinary training loops."""
        if self.images is None:
            raise IntegrityError("a graph summary has no images; use condense.methods.mirage to train on it")
        return torch.utils.data.TensorDataset(self.images, self.labels)

    def to_dataloader(
        self, batch_size: int = 256, shuffle: bool = True, *, epoch: int | None = None, **kwargs: Any
    ) -> torch.utils.data.DataLoader:
        """A DataLoader over :meth:`to_dataset`; with ``epoch``, the label store's views of that epoch instead.

        With a label store (``condense relabel``), ``to_dataloader(epoch=e)`` yields ``(views, teacher_logits)``
        batches exactly as they were labeled (the store's batch size and order; ``batch_size`` and ``shuffle`` do not
        apply): train a student for ``e`` in ``range(syn.label_store.epochs)`` on them with a KL loss.
        """
        if epoch is not None:
            if self.label_store is None:
                raise IntegrityError(
                    "this set carries no label store; make one with 'condense relabel' (or leave epoch=None)"
                )
            return self.label_store.dataloader(self.images, epoch, **kwargs)
        return torch.utils.data.DataLoader(self.to_dataset(), batch_size=batch_size, shuffle=shuffle, **kwargs)

    def pixels(self) -> torch.Tensor:
        """Images mapped back to [0, 1] pixel space (ZCA inverted, normalization undone).

        Shape:
            return: (N, C, H, W), float32 in [0, 1] (clamped).
        """
        if self.images is None:
            raise IntegrityError("a graph summary has no images")
        x = self.images.detach().float().cpu()
        z = self.zca()
        if z is not None:
            x = z.inverse(x)
        mean = torch.tensor(self.preprocessing.get("mean", [0.0] * x.shape[1])).view(1, -1, 1, 1)
        std = torch.tensor(self.preprocessing.get("std", [1.0] * x.shape[1])).view(1, -1, 1, 1)
        return (x * std + mean).clamp(0, 1)

    def export(self, out: str | Path, format: str = "imagefolder") -> Path:
        """Export as an ImageFolder of PNGs (``out/<class>/<i>.png``) or one ``.npz`` (uint8 NHWC ``x``, ``y``)."""
        import numpy as np

        out = Path(out)
        x = (self.pixels() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        y = self.hard_labels.cpu().numpy()
        if format == "npz":
            from condense.io import atomic_write

            path = out if out.suffix == ".npz" else out / f"{self.dataset}_{self.method}_ipc{self.ipc}.npz"
            extra = {"soft_labels": self.labels.float().cpu().numpy()} if self.soft_labels else {}
            atomic_write(path, lambda p: np.savez(open(p, "wb"), x=x, y=y, **extra))
            return path
        if format == "imagefolder":
            from PIL import Image

            for i, (img, c) in enumerate(zip(x, y)):
                d = out / _safe_name(self.classes[int(c)])
                d.mkdir(parents=True, exist_ok=True)
                arr = img[..., 0] if img.shape[-1] == 1 else img
                Image.fromarray(arr).save(d / f"{i:05d}.png")
            return out
        raise IntegrityError(f"unknown export format '{format}'; allowed: imagefolder, npz")

    def grid(self, out: str | Path, scale: int | None = None) -> Path:
        """Write a PNG grid, one row per class (``condense show``)."""
        import numpy as np
        from PIL import Image

        x = self.pixels()
        y = self.hard_labels.cpu()
        n, c, h, w = x.shape
        per = max(int((y == k).sum()) for k in range(self.num_classes)) if n else 1
        canvas = np.ones((self.num_classes * (h + 1), per * (w + 1), 3), dtype=np.uint8) * 255
        counts = [0] * self.num_classes
        arr = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for img, k in zip(arr, y.tolist()):
            j = counts[k]
            counts[k] += 1
            rgb = np.repeat(img, 3, axis=2) if c == 1 else img[..., :3]
            canvas[k * (h + 1) : k * (h + 1) + h, j * (w + 1) : j * (w + 1) + w] = rgb
        im = Image.fromarray(canvas)
        scale = scale or max(1, 256 // max(h, 1) // 4)
        if scale > 1:
            im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        from condense.io import atomic_write

        atomic_write(out, lambda p: im.save(p, format="PNG"))
        return out


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "class"
