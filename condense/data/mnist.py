"""MNIST (LeCun et al., 1998) and Fashion-MNIST (Xiao et al., 2017) from torchvision's raw IDX files.

Expected layout (what ``torchvision.datasets.MNIST(root, download=True)`` leaves behind), default root ``./data``::

    root/MNIST/raw/train-images-idx3-ubyte[.gz]   root/MNIST/raw/train-labels-idx1-ubyte[.gz]
    root/MNIST/raw/t10k-images-idx3-ubyte[.gz]    root/MNIST/raw/t10k-labels-idx1-ubyte[.gz]

(``root/FashionMNIST/raw/`` for Fashion-MNIST). The IDX format is parsed here with numpy: a 4-byte magic number
(two zero bytes, a type code, the number of dimensions), big-endian int32 sizes, then the raw values.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from condense.data.base import ImageData, from_uint8_arrays, register_dataset
from condense.errors import DataFormatError, DataNotFoundError

__all__ = ["load_mnist", "load_fashion_mnist", "read_idx"]

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MEAN, FASHION_STD = (0.2861,), (0.3530,)
MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip

_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_UBYTE = 0x08  # IDX type code of unsigned bytes, the only one MNIST uses


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an IDX file (optionally gzipped) holding unsigned bytes with ``ndim`` dimensions.

    Raises:
        DataFormatError: wrong magic number, type code, dimension count or file length.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise DataFormatError(f"cannot read IDX file '{path}': {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataFormatError(f"'{path}' is not an IDX file: magic number {raw[:4].hex() or 'missing'}")
    if raw[2] != _UBYTE or raw[3] != ndim:
        raise DataFormatError(
            f"'{path}': expected IDX magic 0x0000{_UBYTE:02x}{ndim:02x} (uint8, {ndim}-d), got 0x{raw[:4].hex()}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFormatError(f"'{path}': truncated IDX header ({len(raw)} bytes, need {header})")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataFormatError(f"'{path}': IDX header says shape {shape} ({expected} bytes), file has {len(raw)} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):  # prefer the extracted file when both exist
        if (folder / name).is_file():
            return folder / name
    return None


def _load_idx_dataset(
    name: str,
    display: str,
    tv_folder: str,
    root: str | None,
    classes: list[str],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    zca: bool,
    download: bool,
) -> ImageData:
    base = Path(root if root is not None else "data")
    candidates = [base / tv_folder / "raw", base]

    def locate() -> dict[str, Path] | None:
        for d in candidates:
            paths = {k: _find(d, stem) for k, stem in _FILES.items()}
            if all(p is not None for p in paths.values()):
                return paths  # type: ignore[return-value]
        return None

    paths = locate()
    if paths is None and download:
        import torchvision

        for train in (True, False):
            getattr(torchvision.datasets, tv_folder)(str(base), train=train, download=True)
        paths = locate()
    if paths is None:
        raise DataNotFoundError(
            f"{display} not found under '{base}/'; expected the IDX files {', '.join(_FILES.values())} "
            f"(optionally .gz) in '{candidates[0]}/' (torchvision's layout) or '{base}/'; "
            "pass --data-root DIR (or download=True to fetch it with torchvision)"
        )
    x_tr, y_tr = read_idx(paths["x_train"], 3), read_idx(paths["y_train"], 1)
    x_te, y_te = read_idx(paths["x_test"], 3), read_idx(paths["y_test"], 1)
    for xk, yk, x, y in (("x_train", "y_train", x_tr, y_tr), ("x_test", "y_test", x_te, y_te)):
        if x.shape[0] != y.shape[0]:
            raise DataFormatError(f"'{paths[xk]}' holds {x.shape[0]} images but '{paths[yk]}' {y.shape[0]} labels")
        if y.size and int(y.max()) >= len(classes):
            raise DataFormatError(f"'{paths[yk]}': labels must lie in [0, {len(classes) - 1}], got max {int(y.max())}")
    y_tr, y_te = y_tr.astype(np.int64), y_te.astype(np.int64)
    data = from_uint8_arrays(name, x_tr[..., None], y_tr, x_te[..., None], y_te, classes, mean, std, zca=zca)
    data.extra["source"] = str(paths["x_train"].parent)
    return data


@register_dataset("mnist")
def load_mnist(root: str | None = None, *, zca: bool = False, download: bool = False) -> ImageData:
    """Load MNIST as 1x28x28 images (60,000 train / 10,000 test), normalized.

    Args:
        root: folder holding ``MNIST/raw/`` (torchvision's layout) or the four IDX files; default ``./data``.
        zca: ZCA-whiten with eps 0.1 (fitted on the training split).
        download: when the data is absent, fetch it with ``torchvision.datasets.MNIST`` (needs internet).
    """
    return _load_idx_dataset("mnist", "MNIST", "MNIST", root, MNIST_CLASSES, MNIST_MEAN, MNIST_STD, zca, download)


@register_dataset("fashion_mnist")
def load_fashion_mnist(root: str | None = None, *, zca: bool = False, download: bool = False) -> ImageData:
    """Load Fashion-MNIST as 1x28x28 images (60,000 train / 10,000 test), normalized.

    Args:
        root: folder holding ``FashionMNIST/raw/`` (torchvision's layout) or the four IDX files; default ``./data``.
        zca: ZCA-whiten with eps 0.1 (fitted on the training split).
        download: when the data is absent, fetch it with ``torchvision.datasets.FashionMNIST`` (needs internet).
    """
    args = (FASHION_CLASSES, FASHION_MEAN, FASHION_STD, zca, download)
    return _load_idx_dataset("fashion_mnist", "Fashion-MNIST", "FashionMNIST", root, *args)
