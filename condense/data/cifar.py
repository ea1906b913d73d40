"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009) from torchvision's pickled batches or from ``.npz`` shards.

Two on-disk layouts are accepted under ``root`` (default ``./data``):

- torchvision's folder: ``cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``, ``batches.meta``) or
  ``cifar-100-python/`` (``train``, ``test``, ``meta``), as unpacked from the official tarballs;
- ``.npz`` shards ``train-*.npz`` + ``test-*.npz``, each with ``x`` uint8 (N, 32, 32, 3) and ``y`` int64 (N,),
  either directly in ``root`` or in ``root/cifar10/`` (``root/cifar100/``).

The official batches are Python pickles. They are never unpickled: :mod:`condense.data._pickle` walks the opcode
stream and rebuilds only dicts, lists, strings, numbers and numpy arrays, so a tampered file cannot run code on load.
This file holds only the on-disk contract (folders, file names, meta keys, classes, normalization).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from condense.data._pickle import safe_unpickle
from condense.data.base import ImageData, from_uint8_arrays, register_dataset
from condense.errors import DataFormatError, DataNotFoundError

__all__ = ["load_cifar10", "load_cifar100"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # DC/MTT convention (DatasetCondensation utils.py)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN = (0.5071, 0.4866, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# Official order of ``fine_label_names`` in cifar-100-python/meta (alphabetical).
CIFAR100_CLASSES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()

_HW = 32


# ---------------------------------------------------------------------------------------------------------------
# Layout readers
# ---------------------------------------------------------------------------------------------------------------


def _check_labels(y: np.ndarray, num_classes: int, where: Path | str) -> None:
    if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        lo, hi = int(y.min()), int(y.max())
        raise DataFormatError(f"{where}: labels must lie in [0, {num_classes - 1}], got [{lo}, {hi}]")


def _read_pickle_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One official batch -> (x uint8 (N, 32, 32, 3), y int64 (N,))."""
    batch = safe_unpickle(path)
    if not isinstance(batch, dict) or "data" not in batch or label_key not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataFormatError(f"'{path}': expected a dict with keys 'data' and '{label_key}', got {keys}")
    data, labels = batch["data"], batch[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * _HW * _HW:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataFormatError(f"'{path}': 'data' must be uint8 (N, {3 * _HW * _HW}), got {got}")
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != data.shape[0] or not np.issubdtype(y.dtype, np.integer):
        raise DataFormatError(
            f"'{path}': '{label_key}' must be {data.shape[0]} integers, got {y.dtype} with shape {y.shape}"
        )
    _check_labels(y, num_classes, f"'{path}'")
    x = data.reshape(-1, 3, _HW, _HW).transpose(0, 2, 3, 1)  # rows are channel-major: R plane, G, B
    return np.ascontiguousarray(x), y.astype(np.int64)


def _read_npz_shards(files: list[Path], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for f in files:
        try:
            with np.load(f, allow_pickle=False) as z:
                if "x" not in z.files or "y" not in z.files:
                    raise DataFormatError(f"'{f}': expected arrays 'x' and 'y', found {sorted(z.files)}")
                x, y = z["x"], z["y"]
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            if isinstance(e, DataFormatError):
                raise
            raise DataFormatError(f"'{f}' is not a readable .npz file without pickled objects: {e}") from e
        if x.dtype != np.uint8 or x.shape[1:] != (_HW, _HW, 3) or x.ndim != 4:
            raise DataFormatError(f"'{f}': 'x' must be uint8 (N, {_HW}, {_HW}, 3), got {x.dtype} {x.shape}")
        if y.ndim != 1 or y.shape[0] != x.shape[0] or not np.issubdtype(y.dtype, np.integer):
            raise DataFormatError(f"'{f}': 'y' must be integer (N,) with N={x.shape[0]}, got {y.dtype} {y.shape}")
        _check_labels(y, num_classes, f"'{f}'")
        xs.append(x)
        ys.append(y.astype(np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def _check_meta(path: Path, key: str, classes: list[str]) -> None:
    """If the official meta file is present, its class names must be the hard-coded official order."""
    if not path.is_file():
        return
    meta = safe_unpickle(path)
    names = meta.get(key) if isinstance(meta, dict) else None
    if names is not None and [str(n) for n in names] != classes:
        raise DataFormatError(f"'{path}': '{key}' {list(names)[:5]}... differ from the official class order")


def _load_cifar(
    name: str,
    display: str,
    root: str | None,
    *,
    pickle_dir: str,
    train_files: list[str],
    test_files: list[str],
    label_key: str,
    meta: tuple[str, str],
    npz_dir: str,
    classes: list[str],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    zca: bool,
    download: bool,
    tv_class: str,
) -> ImageData:
    base = Path(root if root is not None else "data")
    n = len(classes)

    def find() -> tuple[str, Path] | None:
        pdir = base / pickle_dir
        if all((pdir / f).is_file() for f in train_files + test_files):
            return "pickle", pdir
        for d in (base, base / npz_dir):
            if any(d.glob("train-*.npz")) and any(d.glob("test-*.npz")):
                return "npz", d
        return None

    found = find()
    if found is None and download:
        import torchvision

        for train in (True, False):
            getattr(torchvision.datasets, tv_class)(str(base), train=train, download=True)
        found = find()
    if found is None:
        pdir = base / pickle_dir
        partial = [str(pdir / f) for f in train_files + test_files if not (pdir / f).is_file()]
        hint = f" (missing {', '.join(partial[:3])})" if (base / pickle_dir).is_dir() else ""
        raise DataNotFoundError(
            f"{display} not found under '{base}/'; expected '{pickle_dir}/' ({', '.join(train_files + test_files)})"
            f"{hint} or 'train-*.npz' + 'test-*.npz' in '{base}/' or '{base / npz_dir}/'; "
            "pass --data-root DIR (or download=True to fetch it with torchvision)"
        )
    kind, d = found
    if kind == "pickle":
        _check_meta(d / meta[0], meta[1], classes)
        tr = [_read_pickle_batch(d / f, label_key, n) for f in train_files]
        te = [_read_pickle_batch(d / f, label_key, n) for f in test_files]
        x_tr, y_tr = np.concatenate([a for a, _ in tr]), np.concatenate([b for _, b in tr])
        x_te, y_te = np.concatenate([a for a, _ in te]), np.concatenate([b for _, b in te])
    else:
        x_tr, y_tr = _read_npz_shards(sorted(d.glob("train-*.npz")), n)
        x_te, y_te = _read_npz_shards(sorted(d.glob("test-*.npz")), n)
    data = from_uint8_arrays(name, x_tr, y_tr, x_te, y_te, classes, mean, std, zca=zca)
    data.extra["source"] = str(d)
    data.extra["layout"] = kind
    return data


@register_dataset("cifar10")
def load_cifar10(root: str | None = None, *, zca: bool = False, download: bool = False) -> ImageData:
    """Load CIFAR-10 as 3x32x32 images (50,000 train / 10,000 test), normalized with the DC/MTT mean/std.

    Args:
        root: folder holding ``cifar-10-batches-py/`` or the ``.npz`` shards (or ``cifar10/`` with them);
            default ``./data``.
        zca: instead of normalizing, ZCA-whiten the [0, 1] pixels with eps 0.1 (fitted on the training split), as
            MTT/FTD/DATM do.
        download: when the data is absent, fetch it with ``torchvision.datasets.CIFAR10`` (needs internet).

    Raises:
        DataNotFoundError: neither layout is present under ``root``.
        DataFormatError: a file holds arrays of the wrong shape, dtype or label range, or a forbidden pickle.
    """
    return _load_cifar(
        "cifar10",
        "CIFAR-10",
        root,
        pickle_dir="cifar-10-batches-py",
        train_files=[f"data_batch_{i}" for i in range(1, 6)],
        test_files=["test_batch"],
        label_key="labels",
        meta=("batches.meta", "label_names"),
        npz_dir="cifar10",
        classes=CIFAR10_CLASSES,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        zca=zca,
        download=download,
        tv_class="CIFAR10",
    )


@register_dataset("cifar100")
def load_cifar100(root: str | None = None, *, zca: bool = False, download: bool = False) -> ImageData:
    """Load CIFAR-100 (fine labels) as 3x32x32 images (50,000 train / 10,000 test), normalized.

    Args:
        root: folder holding ``cifar-100-python/`` or the ``.npz`` shards (or ``cifar100/`` with them);
            default ``./data``.
        zca: instead of normalizing, ZCA-whiten the [0, 1] pixels with eps 0.1 (fitted on the training split), as
            MTT/FTD/DATM do.
        download: when the data is absent, fetch it with ``torchvision.datasets.CIFAR100`` (needs internet).

    Raises:
        DataNotFoundError: neither layout is present under ``root``.
        DataFormatError: a file holds arrays of the wrong shape, dtype or label range, or a forbidden pickle.
    """
    return _load_cifar(
        "cifar100",
        "CIFAR-100",
        root,
        pickle_dir="cifar-100-python",
        train_files=["train"],
        test_files=["test"],
        label_key="fine_labels",
        meta=("meta", "fine_label_names"),
        npz_dir="cifar100",
        classes=CIFAR100_CLASSES,
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
        zca=zca,
        download=download,
        tv_class="CIFAR100",
    )
