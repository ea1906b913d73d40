"""SVHN cropped digits (Netzer et al., 2011) from torchvision's ``.mat`` files.

Expected layout (what ``torchvision.datasets.SVHN(root, split=..., download=True)`` leaves behind), default root
``./data``: ``root/train_32x32.mat`` and ``root/test_32x32.mat`` (or the same inside ``root/svhn/``). Each holds
``X`` uint8 (32, 32, 3, N) and ``y`` (N, 1) with labels 1..10, where 10 means the digit 0. The ``extra`` split
is not used, as in the DC/MTT protocols.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from condense.data.base import ImageData, from_uint8_arrays, register_dataset
from condense.errors import DataFormatError, DataNotFoundError

__all__ = ["load_svhn"]

SVHN_MEAN = (0.4377, 0.4438, 0.4728)
SVHN_STD = (0.1980, 0.2010, 0.1970)
SVHN_CLASSES = [str(i) for i in range(10)]
_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


def _read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One SVHN ``.mat`` file -> (x uint8 (N, 32, 32, 3), y int64 (N,) in 0..9)."""
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path), variable_names=["X", "y"])
    except (OSError, ValueError, TypeError, NotImplementedError) as e:
        raise DataFormatError(f"cannot read '{path}' as a MATLAB v5 file: {e}") from e
    if "X" not in mat or "y" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataFormatError(f"'{path}': expected variables 'X' and 'y', found {found}")
    x, y = mat["X"], np.asarray(mat["y"])
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DataFormatError(f"'{path}': 'X' must be uint8 (32, 32, 3, N), got {x.dtype} {x.shape}")
    n = x.shape[3]
    if y.size != n or (y.ndim == 2 and 1 not in y.shape) or y.ndim > 2:
        raise DataFormatError(f"'{path}': 'y' must hold {n} labels as (N, 1), got shape {y.shape}")
    y = y.reshape(-1)
    if not np.all(np.equal(np.mod(y, 1), 0)) or (y.size and (y.min() < 1 or y.max() > 10)):
        raise DataFormatError(f"'{path}': labels must be integers in 1..10 (10 = digit 0), got [{y.min()}, {y.max()}]")
    y = y.astype(np.int64)
    y[y == 10] = 0
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), y


@register_dataset("svhn")
def load_svhn(root: str | None = None, *, zca: bool = False, download: bool = False) -> ImageData:
    """Load SVHN as 3x32x32 images (73,257 train / 26,032 test), normalized.

    Args:
        root: folder holding ``train_32x32.mat`` and ``test_32x32.mat`` (or ``svhn/`` with them); default ``./data``.
        zca: ZCA-whiten with eps 0.1 (fitted on the training split).
        download: when the data is absent, fetch it with ``torchvision.datasets.SVHN`` (needs internet).

    Raises:
        DataNotFoundError: the ``.mat`` files are absent.
        DataFormatError: a file holds arrays of the wrong shape, dtype or label range.
    """
    base = Path(root if root is not None else "data")

    def locate() -> Path | None:
        for d in (base, base / "svhn"):
            if all((d / f).is_file() for f in _FILES.values()):
                return d
        return None

    d = locate()
    if d is None and download:
        import torchvision

        for split in _FILES:
            torchvision.datasets.SVHN(str(base), split=split, download=True)
        d = locate()
    if d is None:
        raise DataNotFoundError(
            f"SVHN not found under '{base}/'; expected '{_FILES['train']}' and '{_FILES['test']}' in '{base}/' or "
            f"'{base / 'svhn'}/' (torchvision's layout); pass --data-root DIR (or download=True to fetch it)"
        )
    x_tr, y_tr = _read_mat(d / _FILES["train"])
    x_te, y_te = _read_mat(d / _FILES["test"])
    data = from_uint8_arrays("svhn", x_tr, y_tr, x_te, y_te, SVHN_CLASSES, SVHN_MEAN, SVHN_STD, zca=zca)
    data.extra["source"] = str(d)
    return data
