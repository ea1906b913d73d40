"""scikit-learn's bundled 8x8 handwritten digits: the embedded default dataset (no files, no network)."""

from __future__ import annotations

import numpy as np

from condense.data.base import ImageData, from_uint8_arrays, register_dataset

__all__ = ["load_digits"]

# Fixed, stratified split: 1,437 train / 360 test (20%), seed 0. Changing it changes every recorded number.
_TEST_FRACTION = 0.2
_SPLIT_SEED = 0
MEAN = (0.3063,)  # measured on the training split
STD = (0.3741,)


@register_dataset("digits")
def load_digits(root: str | None = None, *, zca: bool = False, download: bool = False) -> ImageData:
    """Load scikit-learn's digits as 1x8x8 images in [0, 1] (16 grey levels), normalized.

    Args:
        root: ignored (the data ships with scikit-learn).
        zca: ZCA-whiten with eps 0.1.
        download: ignored.
    """
    from sklearn.datasets import load_digits as _load
    from sklearn.model_selection import train_test_split

    bunch = _load()
    x = np.clip(np.round(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[..., None]  # (N, 8, 8, 1)
    y = bunch.target.astype(np.int64)
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=_TEST_FRACTION, random_state=_SPLIT_SEED, stratify=y)
    tr, te = np.sort(tr), np.sort(te)
    classes = [str(i) for i in range(10)]
    return from_uint8_arrays("digits", x[tr], y[tr], x[te], y[te], classes, MEAN, STD, zca=zca)
