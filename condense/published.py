"""Import distilled sets published by the authors' repositories into :class:`~condense.synthetic.SyntheticSet`.

Nothing here downloads: point :func:`import_published` (``condense import``) at files you already have. Each format
is read exactly as its authors' code writes it (file and line at HEAD of their repositories):

- ``dc``, ``dsa``, ``dm``: ``res_<DC|DSA|DM>_<dataset>_<model>_<ipc>ipc.pt``, a dict ``{"data": [[image_syn,
  label_syn], ...] (one pair per experiment), "accs_all_exps": {model: [acc, ...]}}`` (``VICO-UoE/
  DatasetCondensation:main.py`` line 225, ``main_DM.py`` line 204). Images normalized with the dataset's mean/std,
  (N,) int64 class-major labels, no lr.
- ``mtt``: ``images_<it>.pt``, ``labels_<it>.pt``, and ``images_best.pt``/``labels_best.pt`` for the iteration
  that scored best (``GeorgeCazenavette/mtt-distillation:distill.py`` lines 238-243). ZCA space with ``--zca``
  (``ToTensor()`` then kornia ZCA, eps 0.1), else normalized; (N,) int64 labels; the learned lr is only logged to
  wandb, pass ``lr=``.
- ``ftd``: MTT's files, and the EMA images ``ema_images_<it>.pt``/``ema_labels_<it>.pt`` in ``ema_logged_files``
  (``AngusDujw/FTD-distillation:distill/distill_FTD.py`` lines 298-303, 367-372; ``ema=True``).
- ``datm``: ``Normal/images_<it>.pt``, ``labels_<it>.pt`` (N, K) float **logits** (the learned soft labels, trained
  as ``softmax(y)``), ``lr_<it>.pt`` a 0-d tensor, and the ``*_best.pt`` triple (``NUS-HPC-AI-Lab/DATM:
  distill/DATM.py`` lines 397-404; its ``evaluation.py`` reads the same three files).
- ``sre2l``: ``syn_data/new<c:03d>/class<c:03d>_id<i:03d>.jpg`` (``VILA-Lab/SRe2L:SRe2L/recover/data_synthesis.py``
  lines 118-136): JPEG of ``uint8(x * 255)`` of the denormalized [0, 1] image; the folder number is the class index.
- ``rded``: ``syn_data/<c:05d>/class<c:05d>_id<i:05d>.jpg`` (``LINs-lab/RDED:synthesize/main.py`` lines 61-69), the
  same pixels.
- ``imagefolder``: ``<class name>/<file>.png|jpg`` (what ``condense export`` writes); folders named by class.
- ``npz``: ``x`` uint8 (N, H, W, C), ``y`` (N,) int, optional ``soft_labels`` (N, K) (``condense export --format
  npz``).

Everything lands in the data's space: pixels are divided by 255 and normalized with the data's mean/std (or
whitened with its ZCA), tensors already in that space are kept as they are, and a file in another space than the data
is refused (load the dataset with or without ``zca=True``). Images of another size are refused, never resized.

Safety: tensor files are read with ``torch.load(weights_only=True, map_location="cpu")`` only. The one addition to
torch's allow-list is numpy's scalar reconstruction (``numpy.core.multiarray.scalar`` and the float/int dtypes),
needed for the accuracies DC/DSA/DM store as numpy floats; it rebuilds a number from a dtype and raw bytes and calls
nothing else. A file that needs anything more (a class, a function, an argparse namespace) is refused with
:class:`~condense.errors.DataFormatError`: unpickling it could run code. ``.npz`` files are read with
``allow_pickle=False``. Each tensor file may also be given as ``.safetensors`` (same stem) after converting it.

Provenance: ``meta["imported"] = {"format", "source", "files": {name: sha256}, "iteration", ...}`` (ImageFolders
also ``num_files`` and ``tree_sha256``, a digest of every file's name and sha256; past 2,000 files only those);
``method`` is the publishing method (``datm``, ``sre2l``; ``imported`` for plain ImageFolder/npz unless ``method=``
says).
Imported DATM sets carry ``meta["label_kind"] = "logits"`` and ``meta["temperature"] = 1.0`` as a native DATM set
does (the evaluation trains on ``softmax(y)``, DATM's soft cross-entropy) and ``meta["eval"] = {"protocol":
"datm"}`` (batch 128, as DATM evaluates its published sets); SRe2L/RDED sets are scored with the ``soft_label``
protocol, which needs a teacher (``condense eval ... --teacher DIR``).

Example:
    >>> from condense.data import load_dataset
    >>> syn = import_published("logged_files/CIFAR10/10/ConvNet/run/Normal", "datm",
    ...                        load_dataset("cifar10", "data", zca=True))  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from condense.errors import ConfigError, DataFormatError, DataNotFoundError, MismatchError
from condense.io import sha256_file
from condense.synthetic import SyntheticSet

__all__ = ["FORMATS", "TRAJECTORY_FORMATS", "import_published", "describe"]

#: Every format :func:`import_published` reads.
FORMATS = ("dc", "dsa", "dm", "mtt", "ftd", "datm", "sre2l", "rded", "imagefolder", "npz")
#: Formats whose images may live in ZCA space (the trajectory-matching repos' ``--zca``).
TRAJECTORY_FORMATS = ("mtt", "ftd", "datm")
_DC_FORMATS = ("dc", "dsa", "dm")
_FOLDER_FORMATS = ("sre2l", "rded", "imagefolder")
#: Folders of more files than this record ``tree_sha256`` (over every file's sha256) without the per-file list.
_MAX_LISTED_FILES = 2000
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_CONVERT_HINT = (
    "if you trust the file, load it yourself in a trusted session (torch.load(path, weights_only=False)) and save "
    "only its tensors, e.g. torch.save(images.detach().cpu(), 'images_best.pt') or "
    "safetensors.torch.save_file({'images': images, 'labels': labels}, 'set.safetensors'), then import that"
)


@dataclass
class _Read:
    """What a reader found, before it is checked and moved into the data's space."""

    images: torch.Tensor  # (N, C, H, W) float, in ``space``
    labels: torch.Tensor  # (N,) int64 or (N, K) float
    space: str  # "normalized", "zca" or "pixels" ([0, 1])
    files: dict[str, Path]
    iteration: Any = None
    lr: float | None = None
    method: str = "imported"
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- safe reading


def _numpy_scalars() -> list[Any]:
    """numpy's scalar reconstruction (numpy 1 and 2 names) and the plain number dtypes: data, no code."""
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    allow: list[Any] = [scalar, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar")]
    allow.append(np.dtype)
    dtypes = getattr(np, "dtypes", None)
    for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType"):
        if dtypes is not None and hasattr(dtypes, name):
            allow.append(getattr(dtypes, name))
    return allow


def _load_torch(path: Path) -> Any:
    """``torch.load(path, weights_only=True, map_location="cpu")``, or a one-line refusal saying why."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise DataFormatError(f"'{path}' is not a valid safetensors file ({e})") from e
        return next(iter(tensors.values())) if len(tensors) == 1 else tensors
    try:
        with torch.serialization.safe_globals(_numpy_scalars()):
            return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f"it holds a '{found.group(1)}' object" if found else "it holds Python objects beyond tensors"
        raise DataFormatError(
            f"'{path}' needs a full unpickler ({what}); condense reads tensor files with torch.load(weights_only=True) "
            f"only, because unpickling anything else can run arbitrary code; {_CONVERT_HINT}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise DataFormatError(f"'{path}' is not a readable torch file ({str(e).splitlines()[0][:120]})") from e


def _tensor(obj: Any, path: Path, what: str) -> torch.Tensor:
    if isinstance(obj, dict) and len(obj) == 1:
        obj = next(iter(obj.values()))
    if not isinstance(obj, torch.Tensor):
        raise DataFormatError(f"'{path}' holds a {type(obj).__name__}, expected one tensor of {what}")
    return obj.detach().cpu()


def _find(directory: Path, stem: str) -> Path | None:
    for suffix in (".pt", ".safetensors"):
        p = directory / (stem + suffix)
        if p.is_file():
            return p
    return None


# ---------------------------------------------------------------------------------------------- readers


_DC_NAME = re.compile(r"res_(DC|DSA|DM)_(.+)_(\w+?)_(\d+)ipc$")


def _read_dc(path: Path, fmt: str, exp: int, **_: Any) -> _Read:
    """``res_<METHOD>_<dataset>_<model>_<ipc>ipc.pt``: ``{"data": [[images, labels], ...], "accs_all_exps"}``."""
    if path.is_dir():
        found = sorted(path.glob(f"res_{fmt.upper()}_*ipc.pt"))
        if len(found) != 1:
            raise DataNotFoundError(
                f"'{path}' holds {len(found)} files res_{fmt.upper()}_*ipc.pt; pass the file itself "
                "(DatasetCondensation writes res_<METHOD>_<DATASET>_<MODEL>_<N>ipc.pt)"
            )
        path = found[0]
    if not path.is_file():
        raise DataNotFoundError(f"'{path}' not found; expected a DC/DSA/DM result file res_<METHOD>_..._<N>ipc.pt")
    extra: dict[str, Any] = {}
    name = _DC_NAME.match(path.stem)
    if name:
        if name.group(1).lower() != fmt:
            raise MismatchError(
                f"'{path.name}' was written by {name.group(1)}, not {fmt.upper()}; "
                f"pass --format {name.group(1).lower()}"
            )
        extra.update(source_dataset=name.group(2), source_model=name.group(3), file_ipc=int(name.group(4)))
    obj = _load_torch(path)
    if isinstance(obj, dict) and "images" in obj and "labels" in obj and "data" not in obj:  # a converted file
        pairs = [[obj["images"], obj["labels"]]]
    elif isinstance(obj, dict) and isinstance(obj.get("data"), (list, tuple)):
        pairs = obj["data"]
    else:
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise DataFormatError(
            f"'{path}' holds {keys}; a DC/DSA/DM result is a dict with 'data' = [[images, labels], ...] "
            "(one pair per experiment)"
        )
    if not pairs:
        raise DataFormatError(f"'{path}' holds no experiments ('data' is empty)")
    if not 0 <= exp < len(pairs):
        raise ConfigError(f"exp={exp} but '{path.name}' holds {len(pairs)} experiments; pass 0..{len(pairs) - 1}")
    pair = pairs[exp]
    if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
        raise DataFormatError(f"'{path}': data[{exp}] is not an [images, labels] pair")
    accs = obj.get("accs_all_exps") if isinstance(obj, dict) else None
    if isinstance(accs, dict):
        extra["reported_accuracy"] = {str(k): [float(a) for a in v] for k, v in accs.items() if isinstance(v, list)}
    extra["exp"] = exp
    extra["experiments"] = len(pairs)
    return _Read(
        images=_tensor(pair[0], path, "images"),
        labels=_tensor(pair[1], path, "labels"),
        space="normalized",
        files={path.name: path},
        method=fmt,
        extra=extra,
    )


def _read_trajectory(path: Path, fmt: str, it: int | str | None, ema: bool, zca: bool, **_: Any) -> _Read:
    """MTT/FTD/DATM: ``[ema_]images_<it>.pt``, ``[ema_]labels_<it>.pt`` (and DATM's ``lr_<it>.pt``) in one folder."""
    if ema and fmt != "ftd":
        raise ConfigError(f"ema=True reads FTD's ema_images_*.pt; format '{fmt}' writes no EMA images")
    prefix = "ema_" if ema else ""
    if path.is_file():
        m = re.fullmatch(rf"{prefix}images_(\w+)", path.stem)
        if m is None:
            raise DataFormatError(
                f"'{path.name}' is not an images file of {fmt}; pass the folder or {prefix}images_<it>.pt"
            )
        if it is not None and str(it) != m.group(1):
            raise ConfigError(f"it={it} but the file given is '{path.name}'; pass one of them")
        it, directory = m.group(1), path.parent
    else:
        directory = path
        if fmt == "datm" and (path / "Normal").is_dir() and _find(path, f"{prefix}images_best") is None:
            directory = path / "Normal"  # DATM writes logged_files/<ds>/<ipc>/<model>/<run>/Normal/
    if not directory.is_dir():
        raise DataNotFoundError(f"'{path}' not found; expected the {fmt} output folder holding images_<it>.pt")
    tag = "best" if it is None else str(it)
    files: dict[str, Path] = {}
    for kind in ("images", "labels"):
        p = _find(directory, f"{prefix}{kind}_{tag}")
        if p is None:
            have = sorted(q.stem.removeprefix(f"{prefix}images_") for q in directory.glob(f"{prefix}images_*.pt"))
            raise DataNotFoundError(
                f"'{directory}' holds no {prefix}{kind}_{tag}.pt; iterations there: {', '.join(have[:12]) or 'none'} "
                "(pass it=N, or ema=True for FTD's ema_logged_files)"
            )
        files[kind] = p
    lr_file = _find(directory, f"lr_{tag}") or _find(directory, f"synthetic_lr_{tag}")
    lr = None
    if lr_file is not None:
        files["lr"] = lr_file
        t = _tensor(_load_torch(lr_file), lr_file, "the learned lr")
        if t.numel() != 1:
            raise DataFormatError(f"'{lr_file}' holds a {tuple(t.shape)} tensor, expected one learned lr")
        lr = float(t.reshape(()))
    elif fmt == "datm":
        raise DataNotFoundError(f"'{directory}' holds no lr_{tag}.pt; DATM saves its learned lr beside the images")
    images = _tensor(_load_torch(files["images"]), files["images"], "images")
    labels = _tensor(_load_torch(files["labels"]), files["labels"], "labels")
    return _Read(
        images=images,
        labels=labels,
        space="zca" if zca else "normalized",
        files={p.name: p for p in files.values()},
        iteration=tag if it is None else (int(tag) if tag.isdigit() else tag),
        lr=lr,
        method=fmt,
        extra={"ema": True} if ema else {},
    )


def _natural(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _safe_name(name: str) -> str:
    """The folder name ``SyntheticSet.export`` gives a class (same rule)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "class"


def _class_of(folder: str, fmt: str, classes: list[str]) -> int | None:
    """Class index of a class folder: its name (or export's safe name), else the author's numbering."""
    if folder in classes:
        return classes.index(folder)
    safe = [_safe_name(c) for c in classes]
    if folder in safe and safe.count(folder) == 1:
        return safe.index(folder)
    pattern = {"sre2l": r"new(\d+)", "rded": r"(\d+)"}.get(fmt)
    m = re.fullmatch(pattern, folder) if pattern else None
    return int(m.group(1)) if m else None


def _read_image(path: Path, channels: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            arr = np.asarray(im.convert("L") if mode in ("L", "I;16", "I", "1", "P") and channels == 1 else im)
    except OSError as e:
        raise DataFormatError(f"'{path}' is not a readable image ({e})") from e
    if arr.dtype != np.uint8:
        raise DataFormatError(f"'{path}' is {mode} ({arr.dtype}); expected 8-bit grey or RGB images")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.shape[-1] != channels:
        if channels == 1 and arr.shape[-1] == 3 and (arr == arr[..., :1]).all():
            arr = arr[..., :1]  # a grey image saved as RGB (SRe2L/RDED always write RGB)
        else:
            raise DataFormatError(
                f"'{path}' has {arr.shape[-1]} channels, the dataset has {channels}; condense does not convert colour"
            )
    return arr


def _read_folder(path: Path, fmt: str, data: Any, ipc: int | None, **_: Any) -> _Read:
    """An ImageFolder: one folder per class, files in name order (SRe2L ``new000``, RDED ``00000``, class names)."""
    if not path.is_dir():
        raise DataNotFoundError(f"'{path}' is not a folder; {fmt} sets are ImageFolders (one folder per class)")
    classes = list(data.classes)
    by_class: dict[int, Path] = {}
    for d in sorted(p for p in path.iterdir() if p.is_dir()):
        c = _class_of(d.name, fmt, classes)
        if c is None or not 0 <= c < len(classes):
            expected = {"sre2l": "new000, new001, ...", "rded": "00000, 00001, ..."}.get(fmt, "the class names")
            raise DataFormatError(
                f"'{path}': class folder '{d.name}' names no class of '{data.name}' (expected {expected}; classes "
                f"{classes[:4]}...)"
            )
        if c in by_class:
            raise DataFormatError(f"'{path}': folders '{by_class[c].name}' and '{d.name}' both hold class {c}")
        by_class[c] = d
    missing = [classes[c] for c in range(len(classes)) if c not in by_class]
    if missing:
        raise DataFormatError(
            f"'{path}' has class folders for {len(by_class)} of the {len(classes)} classes of '{data.name}' "
            f"(missing {missing[:5]}); a distilled set holds every class"
        )
    arrays, labels, files = [], [], {}
    for c in range(len(classes)):
        names = sorted(
            (p for p in by_class[c].iterdir() if p.suffix.lower() in _IMAGE_EXTS), key=lambda p: _natural(p.name)
        )
        if ipc is not None:
            if len(names) < ipc:
                raise DataFormatError(f"'{by_class[c]}' holds {len(names)} images, fewer than ipc={ipc}")
            names = names[:ipc]  # the first ipc per class, as SRe2L's ImageFolderIPC takes them
        for p in names:
            arrays.append(_read_image(p, data.channels))
            labels.append(c)
            files[str(p.relative_to(path))] = p
    if not arrays:
        raise DataFormatError(f"'{path}' holds no images ({', '.join(_IMAGE_EXTS)})")
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataFormatError(f"'{path}': images of different sizes {sorted(shapes)[:3]}; condense does not resize")
    x = np.stack(arrays)
    return _Read(
        images=_pixels(x),
        labels=torch.tensor(labels, dtype=torch.int64),
        space="pixels",
        files=files,
        method=fmt if fmt != "imagefolder" else "imported",
    )


def _pixels(x: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [0, 1], the operations of ``condense.data.from_uint8_arrays``."""
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def _read_npz(path: Path, **_: Any) -> _Read:
    """``condense export --format npz``: ``x`` uint8 (N, H, W, C), ``y`` (N,) int, optional ``soft_labels``."""
    if not path.is_file():
        raise DataNotFoundError(f"'{path}' not found; expected a .npz with x (N, H, W, C) uint8 and y (N,)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:
        raise DataFormatError(f"'{path}' holds object arrays, which need a full unpickler; refused ({e})") from e
    except (OSError, EOFError) as e:
        raise DataFormatError(f"'{path}' is not a readable .npz ({e})") from e
    if "x" not in arrays or "y" not in arrays:
        raise DataFormatError(f"'{path}' holds {sorted(arrays)}; expected 'x' and 'y' (condense export --format npz)")
    x, y = arrays["x"], arrays["y"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DataFormatError(f"'{path}': x must be uint8 (N, H, W, C) with C 1 or 3, got {x.dtype} {x.shape}")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataFormatError(f"'{path}': y must be integer (N,), got {y.dtype} {y.shape}")
    labels = torch.from_numpy(y.astype(np.int64))
    extra: dict[str, Any] = {}
    if "soft_labels" in arrays:
        soft = torch.from_numpy(np.ascontiguousarray(arrays["soft_labels"], dtype=np.float32))
        if soft.ndim != 2 or soft.shape[0] != labels.shape[0] or not torch.equal(soft.argmax(1), labels):
            raise DataFormatError(f"'{path}': soft_labels {tuple(soft.shape)} do not match y (argmax must equal y)")
        labels, extra["label_kind"] = soft, "soft"
    return _Read(images=_pixels(x), labels=labels, space="pixels", files={path.name: path}, extra=extra)


# ---------------------------------------------------------------------------------------------- checks


def _neighbour_corr(x: torch.Tensor) -> float:
    """Mean correlation of horizontally and vertically adjacent pixels (natural images ~0.5-0.9, whitened lower)."""
    x = x.float() - x.float().mean(dim=(2, 3), keepdim=True)
    var = x.pow(2).mean() + 1e-12
    h = (x[..., :, 1:] * x[..., :, :-1]).mean() if x.shape[3] > 1 else var
    v = (x[..., 1:, :] * x[..., :-1, :]).mean() if x.shape[2] > 1 else var
    return float((h + v) / (2 * var))


def _outside(x: torch.Tensor) -> float:
    """Fraction of pixel values outside [-0.5, 1.5]."""
    return float(((x < -0.5) | (x > 1.5)).float().mean())


def _check_space(images: torch.Tensor, space: str, data: Any, fmt: str) -> None:
    """Refuse a set whose values contradict the space it is read as (the statistics are stated in the message)."""
    real = data.x_train[: min(2000, data.x_train.shape[0])].detach().float().cpu()
    bypass = "; if you are sure, pass check_space=False (condense import --no-space-check)"
    below = float((real < 0).float().mean())
    if space != "pixels" and images.min() >= 0 and images.max() <= 1 and below > 0.2:
        raise MismatchError(
            f"every value of the {fmt} images lies in [0, 1] as raw pixels do, but {100 * below:.0f}% of the "
            f"dataset's {space} values are negative; a file of pixels goes through format imagefolder or npz{bypass}"
        )
    if space == "zca" and data.zca is not None:
        zca_out = _outside(data.zca.inverse(images.float()))
        pix = data.zca.inverse(real)
        mean, std = pix.mean(dim=(0, 2, 3), keepdim=True), pix.std(dim=(0, 2, 3), keepdim=True)
        norm_out = _outside(images.float() * std + mean)
        if zca_out > 2 * norm_out + 0.02:
            raise MismatchError(
                f"the {fmt} images do not look ZCA-whitened: undoing the dataset's ZCA puts {100 * zca_out:.1f}% of "
                f"their values outside [-0.5, 1.5], undoing a mean/std normalization only {100 * norm_out:.1f}%; "
                f"a set made without --zca is imported with zca=False into the dataset loaded without ZCA{bypass}"
            )
    if space == "normalized" and fmt in TRAJECTORY_FORMATS and data.zca is None:
        c_set, c_real = _neighbour_corr(images), _neighbour_corr(real)
        s_set, s_real = float(images.float().std()), float(real.std())
        if c_real > 0.3 and c_set < 0.5 * c_real and s_set < 0.75 * s_real:
            raise MismatchError(
                f"the {fmt} images look ZCA-whitened (neighbour-pixel correlation {c_set:.2f} vs {c_real:.2f} for the "
                f"real images, std {s_set:.2f} vs {s_real:.2f}); a set made with --zca is imported with zca=True into "
                f"the dataset loaded with zca=True (condense import --zca){bypass}"
            )


def _check_labels(read: _Read, data: Any, fmt: str, ipc: int | None) -> int:
    """Check the labels against the data and return the set's IPC."""
    k, n = data.num_classes, read.images.shape[0]
    labels = read.labels
    if labels.shape[0] != n:
        raise DataFormatError(f"{fmt}: {labels.shape[0]} labels for {n} images")
    if labels.ndim == 2:
        if labels.shape[1] != k or not labels.is_floating_point():
            raise MismatchError(
                f"{fmt}: soft labels are {labels.dtype} {tuple(labels.shape)}, expected float (N, {k}) for the {k} "
                f"classes of '{data.name}'"
            )
        if not bool(torch.isfinite(labels).all()):
            raise DataFormatError(f"{fmt}: the soft labels hold non-finite values")
        if n % k:
            raise DataFormatError(f"{fmt}: {n} images are not the same number for each of {k} classes")
        per = n // k
    elif labels.ndim == 1:
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise DataFormatError(f"{fmt}: hard labels must be integers, got {labels.dtype}")
        if n and (int(labels.min()) < 0 or int(labels.max()) >= k):
            raise MismatchError(
                f"{fmt}: labels span [{int(labels.min())}, {int(labels.max())}], '{data.name}' has classes 0..{k - 1}"
            )
        counts = torch.bincount(labels.long(), minlength=k)
        if int(counts.min()) != int(counts.max()):
            raise DataFormatError(
                f"{fmt}: images per class differ ({int(counts.min())} to {int(counts.max())}); a set has one IPC"
            )
        per = int(counts[0])
    else:
        raise DataFormatError(f"{fmt}: labels must be (N,) or (N, K), got shape {tuple(labels.shape)}")
    if ipc is not None and ipc != per:
        raise MismatchError(f"{fmt}: the files hold {per} images per class, ipc={ipc} was asked for")
    file_ipc = read.extra.get("file_ipc")
    if file_ipc is not None and file_ipc != per:
        raise DataFormatError(f"{fmt}: the file name says {file_ipc} ipc, it holds {per} images per class")
    return per


def _to_data_space(read: _Read, data: Any, fmt: str) -> torch.Tensor:
    """The images in ``data``'s space: pixels normalized (or whitened), tensors already there kept as they are."""
    x = read.images.float()
    if read.space == "pixels":
        if data.zca is not None:
            return data.zca(x)
        m = torch.tensor(data.mean, dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(data.std, dtype=torch.float32).view(1, -1, 1, 1)
        return x.sub_(m).div_(s)  # the float32 operations of condense.data.from_uint8_arrays
    if read.space == "zca" and data.zca is None:
        raise MismatchError(
            f"the {fmt} images are ZCA-whitened (zca=True) but dataset '{data.name}' is loaded without ZCA; load it "
            "with zca=True (condense import --zca), as the authors' --zca runs did"
        )
    if read.space == "normalized" and data.zca is not None:
        raise MismatchError(
            f"the {fmt} images are mean/std-normalized but dataset '{data.name}' is loaded with ZCA; load it without "
            "zca, or pass zca=True if the set was made with --zca"
        )
    return x


# ---------------------------------------------------------------------------------------------- entry point


def import_published(
    path: str | Path,
    format: str,
    data: Any,
    *,
    ipc: int | None = None,
    zca: bool | None = None,
    it: int | str | None = None,
    exp: int = 0,
    ema: bool = False,
    lr: float | None = None,
    model: str | None = None,
    method: str | None = None,
    check_space: bool = True,
) -> SyntheticSet:
    """Read a distilled set published in one of :data:`FORMATS` into a :class:`SyntheticSet` on ``data``.

    Args:
        path: the authors' output: a DC/DSA/DM ``res_*.pt`` file; an MTT/FTD/DATM run folder (DATM's ``Normal/`` is
            found) or one of its ``images_<it>.pt``; an ImageFolder root (``syn_data``); a ``.npz`` file.
        format: one of :data:`FORMATS`.
        data: the :class:`~condense.data.ImageData` the set was distilled from, loaded with ZCA when the set was made
            with ``--zca`` (MTT/FTD/DATM).
        ipc: images per class expected (checked); for ImageFolders, the first ``ipc`` files per class are taken, as
            SRe2L's ``ImageFolderIPC`` does.
        zca: MTT/FTD/DATM only: the images are ZCA-whitened (None: as ``data`` is loaded).
        it: MTT/FTD/DATM iteration to read (``images_<it>.pt``); None reads ``images_best.pt``.
        exp: DC/DSA/DM experiment index in ``data`` (default the first).
        ema: FTD only: read the EMA images (``ema_images_<it>.pt``).
        lr: the learned lr, for MTT/FTD (their code logs it to wandb and saves no file); refused when a file holds
            one.
        model: the architecture the set was distilled with (recorded as ``meta["model"]``, which evaluation trains
            by default); DC/DSA/DM read it from the file name when it is a registered model.
        method: method name to record (default: the format's, ``imported`` for imagefolder/npz).
        check_space: refuse a set whose statistics contradict the space it is read as (see the module docstring).

    Returns:
        A set in ``data``'s space with its classes and preprocessing; ``meta["imported"]`` records the format,
        absolute source path, the sha256 of every file read and the iteration.

    Raises:
        ConfigError: unknown format or an option that the format does not read.
        DataNotFoundError: the files are not there (the message lists what is).
        DataFormatError: a file needs a full unpickler (refused: it could run code), or holds the wrong shapes,
            non-finite values, unbalanced classes or images of another size.
        MismatchError: classes, label range, IPC or value space disagree with ``data``.

    Shape:
        return.images: (K * ipc, C, H, W) float32 in ``data``'s space; labels (K * ipc,) int64 or (K * ipc, K).
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown import format '{format}'; allowed: {', '.join(FORMATS)}")
    if getattr(data, "kind", None) != "images":
        raise MismatchError(f"import_published reads image sets; data is {type(data).__name__}, not an ImageData")
    if zca is not None and format not in TRAJECTORY_FORMATS:
        raise ConfigError(
            f"zca= says whether MTT/FTD/DATM images are whitened; {format} files hold "
            f"{'normalized tensors' if format in _DC_FORMATS else 'pixels'} (load the dataset with the ZCA you want)"
        )
    if it is not None and format not in TRAJECTORY_FORMATS:
        raise ConfigError(f"it= picks an iteration of MTT/FTD/DATM files; format '{format}' has none")
    if lr is not None and not (isinstance(lr, (int, float)) and lr > 0 and np.isfinite(lr)):
        raise ConfigError(f"lr must be a positive finite number, got {lr!r}")
    src = Path(path).expanduser().resolve()
    if not src.exists():
        raise DataNotFoundError(f"'{src}' not found; pass the published {format} files")
    whitened = (data.zca is not None) if zca is None else bool(zca)
    if format in _DC_FORMATS:
        read = _read_dc(src, format, exp)
    elif format in TRAJECTORY_FORMATS:
        read = _read_trajectory(src, format, it, ema, whitened)
    elif format in _FOLDER_FORMATS:
        read = _read_folder(src, format, data, ipc)
    else:
        read = _read_npz(src)
    if lr is not None:
        if read.lr is not None:
            raise ConfigError(f"the {format} files hold a learned lr ({read.lr:g}); do not pass lr= as well")
        read.lr = float(lr)
    x = read.images
    if x.ndim != 4 or not x.is_floating_point():
        raise DataFormatError(f"{format}: images must be float (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
    want = (data.channels, *data.image_size)
    if tuple(x.shape[1:]) != want:
        raise MismatchError(
            f"{format}: images are {tuple(x.shape[1:])}, dataset '{data.name}' images are {want}; condense does not "
            "resize: import into the dataset (and resolution) the set was distilled on"
        )
    if not bool(torch.isfinite(x).all()):
        raise DataFormatError(f"{format}: the images hold non-finite values (NaN or inf)")
    per = _check_labels(read, data, format, None if format in _FOLDER_FORMATS else ipc)
    if check_space:
        _check_space(x, read.space, data, format)
    images = _to_data_space(read, data, format)
    if read.lr is not None and not (read.lr > 0 and np.isfinite(read.lr)):
        raise DataFormatError(f"{format}: the learned lr is {read.lr}, expected a positive finite number")
    scale = float(data.x_train.abs().max())
    if float(images.abs().max()) > 1e4 * max(scale, 1e-6):
        raise DataFormatError(
            f"{format}: image values reach {float(images.abs().max()):.3g}, over 1e4 x the real data's {scale:.3g}; "
            "the file is not a distilled set of this dataset (or not in its space)"
        )
    digests = {name: sha256_file(p) for name, p in sorted(read.files.items())}
    imported: dict[str, Any] = {"format": format, "source": str(src), "files": digests}
    if format in _FOLDER_FORMATS:  # one digest of the whole tree; the per-file list only while it stays small
        tree = "\n".join(f"{name} {digest}" for name, digest in digests.items())
        imported.update(num_files=len(digests), tree_sha256=hashlib.sha256(tree.encode()).hexdigest())
        if len(digests) > _MAX_LISTED_FILES:
            imported["files"] = {}
    imported.update(iteration=read.iteration, value_space=read.space)
    imported.update({k: v for k, v in read.extra.items() if k != "label_kind"})
    meta: dict[str, Any] = {"imported": imported}
    model = model or _registered_model(read.extra.get("source_model"))
    if model:
        meta["model"] = model
    labels = read.labels.float() if read.labels.ndim == 2 else read.labels.long()
    if format == "datm":
        meta.update(label_kind="logits", temperature=1.0, eval={"protocol": "datm"})
    elif labels.ndim == 2:
        meta["label_kind"] = read.extra.get("label_kind", "soft")
    if format in ("sre2l", "rded"):
        meta["eval"] = {"protocol": "soft_label"}
    zca_obj = data.zca
    return SyntheticSet(
        images=images.contiguous(),
        labels=labels.contiguous(),
        classes=list(data.classes),
        method=method or read.method,
        dataset=data.name,
        ipc=int(per),
        lr=read.lr,
        preprocessing=data.preprocessing(),
        tensors={} if zca_obj is None else {k: v.detach().cpu() for k, v in zca_obj.to_tensors().items()},
        config={},
        meta=meta,
    )


def _registered_model(name: Any) -> str | None:
    """DC's model name (``ConvNet``, ``ConvNetD4``) as condense's, when that model is registered."""
    if not isinstance(name, str):
        return None
    from condense.models.registry import MODELS

    low = name.lower()
    return low if low in MODELS.list() else None


def describe(syn: SyntheticSet) -> str:
    """One line on what an import read: images, classes, ipc, lr, label kind, value space, files."""
    info = syn.meta.get("imported", {})
    kind = syn.meta.get("label_kind", "soft") if syn.soft_labels else "hard"
    lr = "none" if syn.lr is None else f"{syn.lr:.6g}"
    return (
        f"{len(syn)} images {tuple(syn.images.shape[1:])}, {syn.num_classes} classes x ipc {syn.ipc}, labels {kind}, "
        f"lr {lr}, read as {info.get('value_space')} -> {'ZCA' if syn.preprocessing.get('zca') else 'normalized'}, "
        f"{len(info.get('files', {}))} file(s), iteration {info.get('iteration')}"
    )
