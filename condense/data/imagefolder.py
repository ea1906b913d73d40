"""Folders of image files: any ``imagefolder:<path>`` and Tiny ImageNet (Le & Yang, 2015).

``imagefolder:<path>`` reads ``path/train/<class>/*.png|jpg|...`` and ``path/test/<class>/...`` (or ``val/``),
like ``torchvision.datasets.ImageFolder``: classes are the sorted folder names of ``train/``. Every image is
converted to RGB; all must share one size unless ``image_size`` is given, in which case each is resized.

``tinyimagenet`` reads ``root/tiny-imagenet-200/``: ``train/<wnid>/images/*.JPEG`` and ``val/`` either as the
stock flat ``val/images/`` + ``val/val_annotations.txt`` or reorganised into ``val/<wnid>/[images/]*.JPEG``.
The unlabeled ``test/`` split is not used; ``val`` serves as the test split, as in the DD literature.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from condense.data.base import ImageData, from_uint8_arrays, register_dataset
from condense.errors import DataFormatError, DataNotFoundError

__all__ = ["load_imagefolder", "load_tinyimagenet", "IMG_EXTENSIONS"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's list
_TINY_SIZE = 64


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMG_EXTENSIONS


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _is_image(p))


def _read_images(files: Sequence[Path], image_size: int | None) -> np.ndarray:
    """Decode ``files`` to one uint8 (N, H, W, 3) array; sizes must agree unless ``image_size`` resizes them."""
    from PIL import Image, UnidentifiedImageError

    out: np.ndarray | None = None
    first: Path | None = None
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                im = im.convert("RGB")
                if image_size is not None and im.size != (image_size, image_size):
                    im = im.resize((image_size, image_size), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as e:
            raise DataFormatError(f"cannot decode image '{f}': {e}") from e
        if out is None:
            out = np.empty((len(files), *arr.shape), dtype=np.uint8)
            first = f
        elif arr.shape != out.shape[1:]:
            raise DataFormatError(
                f"image '{f}' is {arr.shape[1]}x{arr.shape[0]} but '{first}' is {out.shape[2]}x{out.shape[1]}; "
                "all images must share one size (pass image_size to resize them)"
            )
        out[i] = arr
    if out is None:
        return np.empty((0, 1, 1, 3), dtype=np.uint8)
    return out


def _class_files(folder: Path, classes: list[str] | None, use_images_subdir: bool = False) -> list[tuple[Path, str]]:
    """(file, class name) pairs from ``folder/<class>/`` (or ``folder/<class>/images/`` when that exists)."""
    pairs: list[tuple[Path, str]] = []
    names = sorted(d.name for d in folder.iterdir() if d.is_dir()) if classes is None else classes
    for c in names:
        d = folder / c
        if use_images_subdir and (d / "images").is_dir():
            d = d / "images"
        files = _list_images(d) if d.is_dir() else []
        pairs.extend((f, c) for f in files)
    return pairs


def _to_arrays(
    pairs: list[tuple[Path, str]], classes: list[str], image_size: int | None
) -> tuple[np.ndarray, np.ndarray]:
    index = {c: i for i, c in enumerate(classes)}
    x = _read_images([f for f, _ in pairs], image_size)
    y = np.array([index[c] for _, c in pairs], dtype=np.int64)
    return x, y


@register_dataset("imagefolder:")
def load_imagefolder(
    path: str,
    root: str | None = None,
    *,
    zca: bool = False,
    download: bool = False,
    image_size: int | None = None,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> ImageData:
    """Load ``path/train/<class>/*`` and ``path/test/<class>/*`` (or ``val/``) as RGB images, normalized.

    Args:
        path: the dataset folder; a relative path is tried as given, then under ``root``.
        root: the data root (``--data-root``), used to resolve a relative ``path``.
        zca: ZCA-whiten with eps 0.1 (fitted on the training split).
        download: ignored (there is nothing to download).
        image_size: resize every image to ``image_size`` x ``image_size``; by default sizes must already agree.
        mean: per-channel mean used for normalization (ImageNet's by default).
        std: per-channel std used for normalization (ImageNet's by default).

    Raises:
        DataNotFoundError: the folder, ``train/`` or ``test/``/``val/`` is missing, or a class has no images.
        DataFormatError: a test class is not a train class, or an image cannot be decoded or differs in size.
    """
    folder = Path(path)
    if not folder.is_dir() and root is not None and not folder.is_absolute() and (Path(root) / path).is_dir():
        folder = Path(root) / path
    layout = f"expected '{folder}/train/<class>/*.png|jpg|...' and '{folder}/test/<class>/...' (or 'val/')"
    train_dir = folder / "train"
    test_dir = next((folder / s for s in ("test", "val") if (folder / s).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        raise DataNotFoundError(f"image folder '{folder}' not found or incomplete; {layout}; pass --data-root DIR")
    classes = sorted(d.name for d in train_dir.iterdir() if d.is_dir())
    if not classes:
        raise DataNotFoundError(f"no class folders in '{train_dir}'; {layout}")
    train_pairs = _class_files(train_dir, classes)
    empty = sorted(set(classes) - {c for _, c in train_pairs})
    if empty:
        raise DataNotFoundError(
            f"no images for classes {empty} in '{train_dir}'; supported extensions are {', '.join(IMG_EXTENSIONS)}"
        )
    unknown = sorted({d.name for d in test_dir.iterdir() if d.is_dir()} - set(classes))
    if unknown:
        raise DataFormatError(f"'{test_dir}' has class folders {unknown} that '{train_dir}' lacks")
    test_pairs = _class_files(test_dir, None)
    if not test_pairs:
        exts = ", ".join(IMG_EXTENSIONS)
        raise DataNotFoundError(f"no images in '{test_dir}/<class>/'; supported extensions: {exts}")
    x_tr, y_tr = _to_arrays(train_pairs, classes, image_size)
    x_te, y_te = _to_arrays(test_pairs, classes, image_size)
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataFormatError(
            f"'{test_pairs[0][0]}' is {x_te.shape[2]}x{x_te.shape[1]} but '{train_pairs[0][0]}' is "
            f"{x_tr.shape[2]}x{x_tr.shape[1]}; all images must share one size (pass image_size to resize them)"
        )
    name = f"imagefolder:{folder.name}"
    data = from_uint8_arrays(name, x_tr, y_tr, x_te, y_te, classes, tuple(mean), tuple(std), zca=zca)
    data.extra["source"] = str(folder)
    return data


def _tiny_val_pairs(val_dir: Path, classes: list[str]) -> list[tuple[Path, str]]:
    """Validation (file, wnid) pairs from the stock flat layout or from class folders."""
    ann = val_dir / "val_annotations.txt"
    if ann.is_file() and (val_dir / "images").is_dir():
        known = set(classes)
        pairs = []
        for lineno, line in enumerate(ann.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 2 or parts[1] not in known:
                raise DataFormatError(
                    f"'{ann}' line {lineno}: expected '<file>\\t<wnid>\\t...' with a train wnid, got {line!r}"
                )
            f = val_dir / "images" / parts[0]
            if not f.is_file():
                raise DataNotFoundError(f"'{ann}' line {lineno} names '{f}', which does not exist")
            pairs.append((f, parts[1]))
        return sorted(pairs)
    unknown = sorted({d.name for d in val_dir.iterdir() if d.is_dir() and d.name != "images"} - set(classes))
    if unknown:
        raise DataFormatError(f"'{val_dir}' has class folders {unknown} that are not train wnids")
    return _class_files(val_dir, classes, use_images_subdir=True)


@register_dataset("tinyimagenet")
def load_tinyimagenet(root: str | None = None, *, zca: bool = False, download: bool = False) -> ImageData:
    """Load Tiny ImageNet as 3x64x64 images (100,000 train / 10,000 val used as test), ImageNet-normalized.

    Classes are the 200 WordNet ids in sorted order (``extra["words"]`` maps them to names when
    ``words.txt`` is present).

    Args:
        root: folder holding ``tiny-imagenet-200/`` (or that folder itself); default ``./data``.
        zca: ZCA-whiten with eps 0.1 (fitted on the training split).
        download: not supported (no torchvision class); get ``tiny-imagenet-200.zip`` from the CS231n site.

    Raises:
        DataNotFoundError: ``train/`` or ``val/`` is missing or a class has no images.
        DataFormatError: an image is not 64x64 or the validation annotations are malformed.
    """
    base = Path(root if root is not None else "data")
    d = next((c for c in (base / "tiny-imagenet-200", base) if (c / "train").is_dir() and (c / "val").is_dir()), None)
    if d is None:
        raise DataNotFoundError(
            f"Tiny ImageNet not found under '{base}/'; expected '{base / 'tiny-imagenet-200'}/' with "
            "'train/<wnid>/images/*.JPEG' and either 'val/images/' + 'val/val_annotations.txt' or "
            "'val/<wnid>/[images/]*.JPEG'; pass --data-root DIR (download tiny-imagenet-200.zip by hand: "
            "automatic download is not supported)"
        )
    train_dir = d / "train"
    classes = sorted(c.name for c in train_dir.iterdir() if c.is_dir())
    train_pairs = _class_files(train_dir, classes, use_images_subdir=True)
    empty = sorted(set(classes) - {c for _, c in train_pairs})
    if not classes or empty:
        raise DataNotFoundError(f"no training images for wnids {empty or '(none)'} in '{train_dir}/<wnid>/images/'")
    val_pairs = _tiny_val_pairs(d / "val", classes)
    if not val_pairs:
        raise DataNotFoundError(f"no validation images in '{d / 'val'}/'")
    x_tr, y_tr = _to_arrays(train_pairs, classes, None)
    x_te, y_te = _to_arrays(val_pairs, classes, None)
    for x, pairs in ((x_tr, train_pairs), (x_te, val_pairs)):
        if x.shape[1:3] != (_TINY_SIZE, _TINY_SIZE):
            raise DataFormatError(f"'{pairs[0][0]}' is {x.shape[2]}x{x.shape[1]}, expected {_TINY_SIZE}x{_TINY_SIZE}")
    data = from_uint8_arrays("tinyimagenet", x_tr, y_tr, x_te, y_te, classes, IMAGENET_MEAN, IMAGENET_STD, zca=zca)
    data.extra["source"] = str(d)
    words = d / "words.txt"
    if words.is_file():
        table = dict(line.split("\t", 1) for line in words.read_text().splitlines() if "\t" in line)
        data.extra["words"] = {w: table.get(w, w).strip() for w in classes}
    return data
