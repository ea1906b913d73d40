"""ImageNet-1K (Russakovsky et al., IJCV 2015) and its fast.ai subsets ImageNette and ImageWoof (Howard, 2019),
read from ImageFolder trees and decoded once into a memory-mapped uint8 cache.

**Layout.** ``<tree>/train/<wnid>/*.JPEG`` and ``<tree>/val/<wnid>/*.JPEG`` (any extension torchvision's
``ImageFolder`` accepts). This is the fast.ai download (``imagenette2[-320|-160]/``, ``imagewoof2[-320|-160]/``) as
unpacked, and ImageNet-1K after the usual reorganisation of ``val/`` into class folders. ``<tree>`` is looked up
under ``root`` (default ``./data``): ``imagenette2/``, ``imagenette2-320/``, ``imagenette2-160/``, ``imagenette/``
(``imagewoof2...`` for ImageWoof, ``imagenet1k/``, ``imagenet/`` for ImageNet-1K), then ``root`` itself.

**Class order.** Class ``i`` is line ``i`` of the map shipped in ``condense/data/classmaps/<name>.txt`` (one
``<wnid>\\t<name>`` per line): the sorted WNIDs, which is the order ``ImageFolder`` gives a complete tree and the
order torchvision's and timm's pretrained ImageNet weights index. The folder listing never decides the order: a
split with a missing or an extra class folder is refused with one error naming the folders (a tree missing one
class would otherwise shift every later label by one, the trap behind RDED issue #10). Sources: ImageNet-1K WNIDs
from ``huggingface/pytorch-image-models`` ``timm/data/_info/imagenet_synsets.txt``, checked equal to the Keras
``imagenet_class_index.json`` (copy in ``mythrandire/adversarial_tutorial``), names from ``pytorch/vision``
``torchvision/models/_meta.py``; ImageNette/ImageWoof WNIDs from ``fastai/imagenette`` ``noisy_imagenette.csv`` /
``noisy_imagewoof.csv``, names looked up by WNID.

**Preprocessing** (RDED's validation transform, ``LINs-lab/RDED`` ``validation/main.py``, which at 224 px is also
torchvision's reference ``Resize(256) + CenterCrop(224)``): convert to RGB, resize the shorter side to
``resize_size`` (default ``image_size // 7 * 8``: 256 for 224, 144 for 128) with PIL bilinear (antialiased), then
center-crop ``image_size`` x ``image_size``. Pass ``resize_size=image_size`` for MTT's ImageNet-subset transform
(``Resize(128) + CenterCrop(128)``). Normalization: ImageNet mean/std.

**Cache.** Each split is decoded on first use into uint8 (N, S, S, 3) shards of at most ``shard_size`` images of one
class (``shard-<class>-<k>.safetensors``, written atomically, read back with ``numpy.memmap``), under
``<tree>/.condense_cache/<name>/<split>-<S>px/`` or ``<cache_dir>/<name>/<split>-<S>px/``. A sealed
``manifest.json`` records the file list (path, size, mtime) and the transform; when the tree or the settings no
longer match, the old shards are deleted and rebuilt, and ``ImageFolderCache.invalidated`` says why. Only the
shards that hold requested images are decoded, so a per-class subset decodes about ``shard_size`` images per class.
The cache is about 49 KB per image at 128 px and 150 KB at 224 px (ImageNet-1K train: 63 GB and 193 GB).

**Two ways in.**

- ``load_dataset("imagenette", root, image_size=128)`` returns an in-memory :class:`ImageData` (float32,
  normalized, or ZCA), like every other image dataset, so every existing method and evaluation protocol accepts it.
  ``max_per_class`` / ``max_test_per_class`` keep the first ``n`` images of each class (in sorted file order); a
  request whose float tensors would exceed :data:`IN_MEMORY_LIMIT_BYTES` is refused (ImageNet-1K in full, about
  770 GB at 224 px, never fits).
- :func:`open_imagenet` returns an :class:`ImageFolderCache`: uint8 images by index, per-class index lists, and
  ``__getitem__`` for a ``DataLoader``, for the decoupled methods (RDED patch selection, SRe2L++ initialization) and
  for teacher training at full scale. No method in the library consumes it yet.

Not supported: the flat ImageNet ``val/`` (50,000 files plus a devkit label file; reorganise it into
``val/<wnid>/``), RDED's numbered class folders (``00000/``), and downloading. Beware that fast.ai's ImageNette and
ImageWoof re-split ImageNet's train and val images 70/30, so their ``val/`` holds ImageNet *train* images that a
teacher pretrained on ImageNet-1K has seen. RDED crops its patches from the full-resolution image; the cache holds
the center crop, so crops taken from it cannot reach the cut borders.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from condense.config import check_choice, check_range
from condense.data.base import ImageData, from_uint8_arrays, register_dataset
from condense.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD, IMG_EXTENSIONS
from condense.errors import ArgumentTypeError, ConfigError, DataFormatError, DataNotFoundError, IntegrityError
from condense.io import check_seal, check_stamp, read_json, read_metadata, save_tensors, seal, stamp, write_json_atomic

__all__ = [
    "CLASS_MAPS",
    "IN_MEMORY_LIMIT_BYTES",
    "ImageFolderCache",
    "read_class_map",
    "find_imagenet_tree",
    "open_imagenet",
    "load_imagenette",
    "load_imagewoof",
    "load_imagenet1k",
]

#: the shipped class maps (``condense/data/classmaps/<name>.txt``) and the registered dataset of each
CLASS_MAPS = ("imagenette", "imagewoof", "imagenet1k")
#: refuse an in-memory :class:`ImageData` whose float32 train + test tensors would exceed this many bytes
IN_MEMORY_LIMIT_BYTES = 32 * 2**30
SPLITS = ("train", "val")

_DISPLAY = {"imagenette": "ImageNette", "imagewoof": "ImageWoof", "imagenet1k": "ImageNet-1K"}
_FOLDERS = {
    "imagenette": ("imagenette2", "imagenette2-320", "imagenette2-160", "imagenette"),
    "imagewoof": ("imagewoof2", "imagewoof2-320", "imagewoof2-160", "imagewoof"),
    "imagenet1k": ("imagenet1k", "imagenet"),
}
_NUM_CLASSES = {"imagenette": 10, "imagewoof": 10, "imagenet1k": 1000}
_CACHE_FORMAT = "condense-image-cache"
_CACHE_VERSION = 1
_SHARD_SIZE = 64
_OPEN_SHARDS = 256  # memory maps kept open at once (each holds one mapping; the kernel limits their number)


# ---------------------------------------------------------------------------------------------------------------
# Class maps and the tree
# ---------------------------------------------------------------------------------------------------------------


def read_class_map(name: str) -> tuple[list[str], list[str]]:
    """The shipped class map of ``name``: WNIDs in class-index order and their human names.

    Example:
        >>> wnids, names = read_class_map("imagenette")
        >>> wnids[0], names[0], len(read_class_map("imagenet1k")[0])
        ('n01440764', 'tench', 1000)
    """
    check_choice("name", name, CLASS_MAPS)
    text = (resources.files("condense.data") / "classmaps" / f"{name}.txt").read_text(encoding="utf-8")
    wnids, names = [], []
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            wnid, _, human = line.partition("\t")
            wnids.append(wnid.strip())
            names.append(human.strip() or wnid.strip())
    if len(set(wnids)) != len(wnids) or wnids != sorted(wnids):
        raise DataFormatError(f"the shipped class map '{name}.txt' is damaged (duplicate or unsorted WNIDs)")
    return wnids, names


def find_imagenet_tree(name: str, root: str | os.PathLike | None = None) -> Path:
    """The folder holding ``train/`` and ``val/`` of dataset ``name`` under ``root`` (default ``./data``).

    Raises:
        DataNotFoundError: none of the expected folders holds both ``train/`` and ``val/``.
    """
    check_choice("name", name, CLASS_MAPS)
    base = Path(root if root is not None else "data")
    for d in (*(base / f for f in _FOLDERS[name]), base):
        if (d / "train").is_dir() and (d / "val").is_dir():
            return d
    others = ", ".join(f"'{f}/'" for f in _FOLDERS[name][1:])
    n = _NUM_CLASSES[name]
    raise DataNotFoundError(
        f"{_DISPLAY[name]} not found under '{base}/'; expected '{base / _FOLDERS[name][0]}/' (or {others} there, or "
        f"'{base}/' itself) holding 'train/<wnid>/*.JPEG' and 'val/<wnid>/*.JPEG' with the {n} WNID folders of "
        f"condense/data/classmaps/{name}.txt (the fast.ai download layout); pass --data-root DIR (download by hand: "
        "automatic download is not supported)"
    )


def _scan_split(split_dir: Path, wnids: list[str], name: str) -> list[tuple[str, int, int]]:
    """``(path relative to split_dir, size, mtime_ns)`` of every image, class by class in map order, sorted within.

    Raises:
        DataNotFoundError: a mapped class folder is missing or empty.
        DataFormatError: a class folder the map lacks, or a flat folder of images.
    """
    with os.scandir(split_dir) as it:
        entries = list(it)
    present = {e.name for e in entries if e.is_dir() and not e.name.startswith(".")}
    flat = sum(1 for e in entries if e.is_file() and os.path.splitext(e.name)[1].lower() in IMG_EXTENSIONS)
    where = f"'{split_dir}'"
    if flat and not present:
        raise DataFormatError(
            f"{where} holds {flat} images directly instead of one folder per WNID; reorganise it into "
            f"'{split_dir}/<wnid>/' (for ImageNet's val, with the devkit's labels)"
        )
    missing = [w for w in wnids if w not in present]
    extra = sorted(present - set(wnids))
    if missing or extra:

        def show(xs: list[str]) -> str:
            return ", ".join(xs[:10]) + (f" and {len(xs) - 10} more" if len(xs) > 10 else "")

        parts = ([f"missing class folders {show(missing)}"] if missing else []) + (
            [f"class folders not in the map {show(extra)}"] if extra else []
        )
        msg = (
            f"{where} does not match the {_DISPLAY[name]} class map ({len(wnids)} WNIDs, "
            f"condense/data/classmaps/{name}.txt): {'; '.join(parts)}. Class indices come from the map, not the "
            "folder listing, so the tree must hold exactly the mapped WNID folders"
        )
        raise (DataNotFoundError if missing else DataFormatError)(msg)
    rows: list[tuple[str, int, int]] = []
    for w in wnids:
        with os.scandir(split_dir / w) as it:
            files = sorted(
                (e.name, e.stat()) for e in it if e.is_file() and os.path.splitext(e.name)[1].lower() in IMG_EXTENSIONS
            )
        if not files:
            exts = ", ".join(IMG_EXTENSIONS)
            raise DataNotFoundError(f"no images in '{split_dir / w}/' (class {w}); supported extensions: {exts}")
        rows.extend((f"{w}/{fn}", st.st_size, st.st_mtime_ns) for fn, st in files)
    return rows


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ArgumentTypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    check_range(name, int(value), lo, hi)


def _decode(path: Path, image_size: int, resize_size: int) -> np.ndarray:
    """One image file -> uint8 (image_size, image_size, 3): RGB, shorter side to ``resize_size``, center crop.

    torchvision's functional ``resize`` and ``center_crop`` on the PIL image, the exact operations of the
    references' ``transforms.Resize(resize_size) + transforms.CenterCrop(image_size)``.
    """
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im = TF.resize(im, resize_size, interpolation=InterpolationMode.BILINEAR, antialias=True)
            im = TF.center_crop(im, [image_size, image_size])
            return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise DataFormatError(f"cannot decode image '{path}': {e}") from e


# ---------------------------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------------------------


class ImageFolderCache:
    """One split of an ImageNet-style tree as uint8 images by index, decoded lazily into memory-mapped shards.

    Build it with :func:`open_imagenet`. Index ``i`` is the ``i``-th file in class-map order (class by class, files
    sorted by name), so ``labels`` is sorted and each class is a contiguous range. Images are decoded only when a
    shard holding one of them is first read; a shard is ``shard_size`` consecutive images of one class. Decoding
    happens in this process (``num_workers`` threads: PIL releases the GIL while it decodes).

    It is also a map-style dataset (``len`` and ``cache[i] -> (uint8 (3, S, S) tensor, label)``) for a
    ``torch.utils.data.DataLoader``; it pickles without its open memory maps, so loader workers reopen them.

    Attributes:
        name: the dataset (``"imagenette"``, ...); split: ``"train"`` or ``"val"``.
        folder: the split folder read; cache_dir: where its shards and ``manifest.json`` live.
        classes: WNIDs in class-index order; words: WNID -> human name.
        image_size, resize_size: the transform (shorter side to ``resize_size``, center crop ``image_size``).
        files: ``(path relative to folder, size, mtime_ns)`` per image. labels: (N,) int64 class of each image.
        tree_sha256: digest of the file list, the classes and the transform; fingerprint: its first 16 digits.
        num_decoded: images this object decoded (0 when every shard it read was already cached).
        invalidated: why an existing cache was discarded when this object opened it (None: none was).
    """

    def __init__(
        self,
        name: str,
        split: str,
        folder: Path,
        cache_dir: Path,
        classes: list[str],
        words: dict[str, str],
        files: list[tuple[str, int, int]],
        *,
        image_size: int,
        resize_size: int,
        shard_size: int = _SHARD_SIZE,
        num_workers: int = 1,
    ) -> None:
        self.name, self.split, self.folder, self.cache_dir = name, split, folder, cache_dir
        self.classes, self.words, self.files = classes, words, files
        self.image_size, self.resize_size = image_size, resize_size
        self.shard_size, self.num_workers = shard_size, num_workers
        index = {w: i for i, w in enumerate(classes)}
        self.labels = np.fromiter((index[rel.split("/", 1)[0]] for rel, _, _ in files), np.int64, len(files))
        bounds = np.searchsorted(self.labels, np.arange(len(classes) + 1))
        self._class_bounds = bounds
        # shards: (class, start, stop), class-aligned chunks of shard_size
        self._shards = [
            (c, s, min(s + shard_size, int(bounds[c + 1])))
            for c in range(len(classes))
            for s in range(int(bounds[c]), int(bounds[c + 1]), shard_size)
        ]
        self._shard_starts = np.array([s for _, s, _ in self._shards], dtype=np.int64)
        h = hashlib.sha256()
        h.update(f"{name}\n{split}\n{image_size}\n{resize_size}\n{shard_size}\n".encode())
        h.update("\n".join(classes).encode())
        for rel, size, mtime in files:
            h.update(f"\n{rel}\t{size}\t{mtime}".encode())
        self.tree_sha256 = h.hexdigest()
        self.fingerprint = self.tree_sha256[:16]
        self.num_decoded = 0
        self.invalidated: str | None = None
        self._maps: OrderedDict[int, np.ndarray] = OrderedDict()
        self._open_manifest()

    # -- manifest ------------------------------------------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        return {
            "dataset": self.name,
            "split": self.split,
            "image_size": self.image_size,
            "resize_size": self.resize_size,
            "transform": self.transform,
            "shard_size": self.shard_size,
            "classes": self.classes,
            "tree_sha256": self.tree_sha256,
        }

    def _open_manifest(self) -> None:
        """Keep a cache that matches this tree and these settings; otherwise delete its shards and start anew."""
        path = self.cache_dir / "manifest.json"
        want = self._settings()
        if path.is_file():
            try:
                meta = read_json(path)
                check_stamp(meta, _CACHE_FORMAT, _CACHE_VERSION, path)
                check_seal(meta, path)
            except (IntegrityError, DataNotFoundError) as e:
                self.invalidated = f"unreadable manifest ({e})"
            else:
                changed = [k for k, v in want.items() if meta.get(k) != v]
                if not changed:
                    return
                if changed == ["tree_sha256"]:
                    old = {r[0]: list(r) for r in meta.get("files", []) if isinstance(r, list) and r}
                    now = {r[0] for r in self.files}
                    changed_files = [r[0] for r in self.files if old.get(r[0]) != list(r)]
                    gone = [p for p in old if p not in now]
                    shown = ", ".join(f"'{p}'" for p in (changed_files + gone)[:3])
                    self.invalidated = (
                        f"the tree changed: {len(changed_files)} new or modified and {len(gone)} removed files "
                        f"({shown})"
                    )
                else:
                    self.invalidated = f"the settings changed ({', '.join(changed)})"
            for p in self.cache_dir.glob("shard-*.safetensors"):
                p.unlink(missing_ok=True)
        record = {**stamp(_CACHE_FORMAT, _CACHE_VERSION), **want, "files": [list(r) for r in self.files]}
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, seal(record))
        except PermissionError as e:
            raise ConfigError(
                f"cannot write the image cache in '{self.cache_dir}' ({e.strerror}); pass cache_dir=DIR on a "
                "writable disk"
            ) from e

    @property
    def transform(self) -> str:
        """The preprocessing, in words (recorded in the manifest and in ``ImageData.extra``)."""
        return (
            f"RGB; shorter side resized to {self.resize_size} (PIL bilinear, antialiased); center crop "
            f"{self.image_size}x{self.image_size}"
        )

    # -- indices -------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def indices_of_class(self, c: int) -> torch.Tensor:
        """Indices of class ``c``'s images (a contiguous range).

        Shape:
            return: (N_c,) int64.
        """
        _check_int("c", c, 0, self.num_classes - 1)
        return torch.arange(int(self._class_bounds[c]), int(self._class_bounds[c + 1]), dtype=torch.int64)

    def class_indices(self) -> list[torch.Tensor]:
        """``indices_of_class(c)`` for every class, in class order (the input of ``sample_per_class``)."""
        return [self.indices_of_class(c) for c in range(self.num_classes)]

    def first_per_class(self, n: int | None) -> np.ndarray:
        """The first ``n`` indices of every class (all of a class with fewer; every index when ``n`` is None).

        Shape:
            return: (sum_c min(n, N_c),) int64, class-sorted.
        """
        if n is None:
            return np.arange(len(self), dtype=np.int64)
        _check_int("max_per_class", n, 1)
        b = self._class_bounds
        return np.concatenate([np.arange(b[c], min(b[c] + n, b[c + 1])) for c in range(self.num_classes)]).astype(
            np.int64
        )

    # -- images --------------------------------------------------------------------------------------------------

    def _shard_path(self, sid: int) -> Path:
        c, s, _ = self._shards[sid]
        return self.cache_dir / f"shard-{c:04d}-{(s - int(self._class_bounds[c])) // self.shard_size:05d}.safetensors"

    def _read_shard(self, sid: int) -> np.ndarray | None:
        """The shard as a read-only memory map, or None when it is absent, cut, or from another tree."""
        path = self._shard_path(sid)
        if not path.is_file():
            return None
        _, s, e = self._shards[sid]
        try:
            meta = read_metadata(path)  # checks the file is exactly header + tensor bytes
        except IntegrityError:
            return None
        if (
            meta.get("tree_sha256") != self.tree_sha256
            or meta.get("start") != str(s)
            or meta.get("count") != str(e - s)
        ):
            return None
        S = self.image_size
        nbytes = (e - s) * S * S * 3
        size = path.stat().st_size
        # one tensor, so its bytes end the file (read_metadata checked size == 8 + header + data)
        return np.memmap(path, dtype=np.uint8, mode="r", offset=size - nbytes, shape=(e - s, S, S, 3))

    def _write_shard(self, sid: int) -> None:
        _, s, e = self._shards[sid]
        paths = [self.folder / rel for rel, _, _ in self.files[s:e]]
        S, R = self.image_size, self.resize_size
        if self.num_workers > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(self.num_workers) as pool:
                arrays = list(pool.map(lambda p: _decode(p, S, R), paths))
        else:
            arrays = [_decode(p, S, R) for p in paths]
        self.num_decoded += len(arrays)
        meta = {"tree_sha256": self.tree_sha256, "start": str(s), "count": str(e - s), "image_size": str(S)}
        save_tensors(self._shard_path(sid), {"images": torch.from_numpy(np.stack(arrays))}, meta)

    def _shard(self, sid: int) -> np.ndarray:
        if sid in self._maps:
            self._maps.move_to_end(sid)
            return self._maps[sid]
        arr = self._read_shard(sid)
        if arr is None:
            self._write_shard(sid)
            arr = self._read_shard(sid)
            if arr is None:  # pragma: no cover - a shard written this instant cannot be unreadable
                raise IntegrityError(f"the image cache shard '{self._shard_path(sid)}' could not be read back")
        self._maps[sid] = arr
        if len(self._maps) > _OPEN_SHARDS:
            self._maps.popitem(last=False)
        return arr

    def _as_indices(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
        idx = (indices.cpu().numpy() if isinstance(indices, torch.Tensor) else np.asarray(indices)).reshape(-1)
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise ArgumentTypeError(f"indices must be integers, got {idx.dtype}")
        idx = idx.astype(np.int64)
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise ConfigError(
                f"indices must lie in [0, {len(self) - 1}] ({self.name} {self.split}), got "
                f"[{int(idx.min())}, {int(idx.max())}]"
            )
        return idx

    def images(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
        """The images at ``indices``, in that order, decoding the shards that hold them on first use.

        Shape:
            indices: (n,) integer. return: (n, S, S, 3) uint8 (a copy, not a view of the cache).
        """
        idx = self._as_indices(indices)
        S = self.image_size
        out = np.empty((idx.size, S, S, 3), dtype=np.uint8)
        sids = np.searchsorted(self._shard_starts, idx, side="right") - 1
        for sid in np.unique(sids):
            sel = np.nonzero(sids == sid)[0]
            out[sel] = self._shard(int(sid))[idx[sel] - self._shards[sid][1]]
        return out

    def batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels at ``indices`` as tensors, channels first, still uint8 (normalize on the device).

        Shape:
            indices: (n,). return: x (n, 3, S, S) uint8, y (n,) int64.
        """
        idx = self._as_indices(indices)
        x = torch.from_numpy(self.images(idx)).permute(0, 3, 1, 2).contiguous()
        return x, torch.from_numpy(self.labels[idx].copy())

    def iter_batches(
        self, batch_size: int, indices: Sequence[int] | np.ndarray | torch.Tensor | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """:meth:`batch` over ``indices`` (default: all, in index order) in chunks of ``batch_size``."""
        _check_int("batch_size", batch_size, 1)
        idx = np.arange(len(self), dtype=np.int64) if indices is None else self._as_indices(indices)
        for i in range(0, idx.size, batch_size):
            yield self.batch(idx[i : i + batch_size])

    def build(self) -> int:
        """Decode every shard not cached yet (e.g. once, before a multi-process run); returns the images decoded."""
        before = self.num_decoded
        for sid in range(len(self._shards)):
            if sid not in self._maps and self._read_shard(sid) is None:
                self._write_shard(sid)
        return self.num_decoded - before

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        """Shape: return[0]: (3, S, S) uint8."""
        x, y = self.batch([i])
        return x[0], int(y[0])

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_maps"] = OrderedDict()  # memory maps are reopened by the process that unpickles
        return state

    def __repr__(self) -> str:
        return (
            f"ImageFolderCache({self.name!r}, split={self.split!r}, images={len(self)}, classes={self.num_classes}, "
            f"image_size={self.image_size}, cache='{self.cache_dir}')"
        )


def _check_sizes(image_size: Any, resize_size: Any) -> int:
    _check_int("image_size", image_size, 16, 1024)
    if resize_size is None:
        return int(image_size) // 7 * 8
    _check_int("resize_size", resize_size, int(image_size), 4096)
    return int(resize_size)


def open_imagenet(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    split: str = "train",
    image_size: int = 224,
    resize_size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    shard_size: int = _SHARD_SIZE,
    num_workers: int = 1,
) -> ImageFolderCache:
    """Open one split of ImageNette, ImageWoof or ImageNet-1K as a lazily decoded uint8 cache.

    Opening scans the split (one ``stat`` per file) and checks the class folders against the shipped map; it
    decodes nothing. See the module docstring for the layout, the transform and the cache.

    Args:
        name: ``"imagenette"``, ``"imagewoof"`` or ``"imagenet1k"``.
        root: folder holding the tree (see :func:`find_imagenet_tree`); default ``./data``.
        split: ``"train"`` or ``"val"``.
        image_size: side of the square crop (the references use 128 and 224).
        resize_size: the shorter side before the crop (default ``image_size // 7 * 8``).
        cache_dir: where to keep the shards (default ``<tree>/.condense_cache``); a subfolder per dataset, split
            and size is made inside.
        shard_size: images per shard (each shard holds one class).
        num_workers: decoding threads.

    Raises:
        DataNotFoundError: the tree, a mapped class folder or a class's images are missing.
        DataFormatError: a class folder the map lacks, a flat split folder, or an undecodable image (when read).
        ConfigError: a bad argument, or an unwritable cache folder.

    Example:
        >>> cache = open_imagenet("imagenette", "data", split="val", image_size=128)  # doctest: +SKIP
        >>> x, y = cache.batch(cache.indices_of_class(3)[:8])  # doctest: +SKIP
    """
    check_choice("name", name, CLASS_MAPS)
    check_choice("split", split, SPLITS)
    resize = _check_sizes(image_size, resize_size)
    _check_int("shard_size", shard_size, 1)
    _check_int("num_workers", num_workers, 1)
    tree = find_imagenet_tree(name, root)
    wnids, names = read_class_map(name)
    files = _scan_split(tree / split, wnids, name)
    base = Path(cache_dir) if cache_dir is not None else tree / ".condense_cache"
    suffix = "" if resize_size is None else f"-resize{resize}"
    return ImageFolderCache(
        name,
        split,
        tree / split,
        base / name / f"{split}-{int(image_size)}px{suffix}",
        wnids,
        dict(zip(wnids, names)),
        files,
        image_size=int(image_size),
        resize_size=resize,
        shard_size=int(shard_size),
        num_workers=int(num_workers),
    )


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**27 else f"{n / 2**20:.1f} MiB"


def _load(
    name: str,
    root: str | None,
    *,
    zca: bool,
    image_size: int,
    resize_size: int | None,
    max_per_class: int | None,
    max_test_per_class: int | None,
    cache_dir: str | None,
) -> ImageData:
    opened = {
        s: open_imagenet(name, root, split=s, image_size=image_size, resize_size=resize_size, cache_dir=cache_dir)
        for s in SPLITS
    }
    tr, te = opened["train"], opened["val"]
    idx_tr, idx_te = tr.first_per_class(max_per_class), te.first_per_class(max_test_per_class)
    need = 4 * (idx_tr.size + idx_te.size) * 3 * tr.image_size**2
    if need > IN_MEMORY_LIMIT_BYTES:
        raise ConfigError(
            f"{_DISPLAY[name]} at {tr.image_size} px with max_per_class={max_per_class}, "
            f"max_test_per_class={max_test_per_class} needs {_size(need)} of float32 tensors in memory "
            f"(limit {_size(IN_MEMORY_LIMIT_BYTES)}); pass smaller max_per_class / max_test_per_class, or "
            "use condense.data.imagenet.open_imagenet for the memory-mapped uint8 images"
        )
    data = from_uint8_arrays(
        name,
        tr.images(idx_tr),
        tr.labels[idx_tr],
        te.images(idx_te),
        te.labels[idx_te],
        list(tr.classes),
        IMAGENET_MEAN,
        IMAGENET_STD,
        zca=zca,
    )
    data.extra.update(
        source=str(tr.folder.parent),
        layout="imagefolder",
        words=dict(tr.words),
        transform=tr.transform,
        cache=str(tr.cache_dir.parent),
        tree_sha256={"train": tr.tree_sha256, "val": te.tree_sha256},
        max_per_class=max_per_class,
        max_test_per_class=max_test_per_class,
    )
    return data


_LOADER_DOC = """Load {display} from ``<root>/{folder}/`` ({size_doc}) as an in-memory :class:`ImageData`.

    Classes are the {n} WNIDs of ``condense/data/classmaps/{name}.txt`` in that order (``extra["words"]`` names
    them); ``val/`` is the test split. Images pass through the memory-mapped cache of :func:`open_imagenet`.

    Args:
        root: folder holding the tree (see :func:`find_imagenet_tree`); default ``./data``.
        zca: ZCA-whiten with eps 0.1 (fitted on the training split) instead of normalizing.
        download: not supported (the message of the missing-data error says where to put the files).
        image_size: side of the square crop (default {default}; the references use 128 and 224).
        resize_size: shorter side before the crop (default ``image_size // 7 * 8``).
        max_per_class: keep the first ``n`` training images of each class (sorted file order); default all.
        max_test_per_class: the same for ``val/``.
        cache_dir: where the decoded images are cached (default ``<tree>/.condense_cache``).

    Raises:
        DataNotFoundError: the tree, a mapped class folder or a class's images are missing.
        DataFormatError: a class folder the map lacks, or an image cannot be decoded.
        ConfigError: a bad argument, or a request too large for memory (:data:`IN_MEMORY_LIMIT_BYTES`).
    """


def _loader(name: str, default_size: int, size_doc: str) -> Callable[..., ImageData]:
    """The registered loader of ``name``: one signature for the three datasets, its own default size and docstring."""

    def load(
        root: str | None = None,
        *,
        zca: bool = False,
        download: bool = False,
        image_size: int = default_size,
        resize_size: int | None = None,
        max_per_class: int | None = None,
        max_test_per_class: int | None = None,
        cache_dir: str | None = None,
    ) -> ImageData:
        return _load(
            name,
            root,
            zca=zca,
            image_size=image_size,
            resize_size=resize_size,
            max_per_class=max_per_class,
            max_test_per_class=max_test_per_class,
            cache_dir=cache_dir,
        )

    load.__name__ = load.__qualname__ = f"load_{name}"
    load.__doc__ = _LOADER_DOC.format(
        display=_DISPLAY[name],
        folder=_FOLDERS[name][0],
        size_doc=size_doc,
        n=_NUM_CLASSES[name],
        name=name,
        default=default_size,
    )
    return register_dataset(name)(load)


load_imagenette = _loader("imagenette", 128, "fast.ai imagenette2: 9,469 train / 3,925 val images")
load_imagewoof = _loader("imagewoof", 128, "fast.ai imagewoof2: 9,025 train / 3,929 val images")
load_imagenet1k = _loader(
    "imagenet1k", 224, "ILSVRC 2012: 1,281,167 train / 50,000 val images; in memory only as a subset"
)
