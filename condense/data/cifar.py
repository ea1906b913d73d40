"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009) from torchvision's pickled batches or from ``.npz`` shards.

Two on-disk layouts are accepted under ``root`` (default ``./data``):

- torchvision's folder: ``cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``, ``batches.meta``) or
  ``cifar-100-python/`` (``train``, ``test``, ``meta``), as unpacked from the official tarballs;
- ``.npz`` shards ``train-*.npz`` + ``test-*.npz``, each with ``x`` uint8 (N, 32, 32, 3) and ``y`` int64 (N,),
  either directly in ``root`` or in ``root/cifar10/`` (``root/cifar100/``).

The official batches are Python pickles. They are never unpickled: :func:`read_pickled_batch` walks the opcode
stream with :func:`pickletools.genops` and rebuilds only dicts, lists, strings, numbers and numpy arrays (from their
raw bytes), refusing every other global, so a tampered file cannot run code on load.
"""

from __future__ import annotations

import pickletools
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from condense.data.base import ImageData, from_uint8_arrays, register_dataset
from condense.errors import DataFormatError, DataNotFoundError

__all__ = ["load_cifar10", "load_cifar100", "read_pickled_batch", "safe_unpickle"]

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
# Reading the pickled batches without unpickling
# ---------------------------------------------------------------------------------------------------------------

# The only callables an official batch names (Python 2 cPickle with numpy 1.x; files re-pickled by Python 3 add
# _codecs.encode at protocol 2 and numpy._core / _frombuffer at protocol 5). They are never imported or called:
# each is a tag the reader below interprets itself.
_GLOBALS = {
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("_codecs", "encode"): "encode",
    ("numpy.core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy._core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy.core.numeric", "_frombuffer"): "frombuffer",
    ("numpy._core.numeric", "_frombuffer"): "frombuffer",
}


class _Tag(str):
    """An allowed global, by name."""


class _PendingArray:
    """``_reconstruct(ndarray, ...)`` before its BUILD: the array is filled in by the state tuple."""

    array: np.ndarray | None = None


class _DType:
    """A numpy dtype under construction (``dtype(str, ...)`` then a BUILD with the byte order)."""

    def __init__(self, code: str) -> None:
        self.dtype = np.dtype(code)
        if self.dtype.hasobject:
            raise ValueError(f"object dtype {code!r} is not allowed")


def _as_bytes(raw: Any) -> bytes:
    if isinstance(raw, str):  # Python 2 str, decoded as latin1 (what torchvision's encoding="latin1" does)
        return raw.encode("latin1")
    if isinstance(raw, bytes | bytearray):
        return bytes(raw)
    raise ValueError(f"array data must be bytes, got {type(raw).__name__}")


def _reduce(tag: str, args: tuple) -> Any:
    if tag == "encode":  # how Python 3 writes bytes at protocol 2: _codecs.encode(str, "latin1")
        if len(args) != 2 or args[1] not in ("latin1", "latin-1") or not isinstance(args[0], str):
            raise ValueError(f"refusing _codecs.encode{args!r}")
        return args[0].encode("latin1")
    if tag == "reconstruct":
        return _PendingArray()
    if tag == "dtype":
        return _DType(str(args[0]))
    if tag == "frombuffer":  # protocol 5: _frombuffer(buffer, dtype, shape, order)
        buf, dt, shape, order = args
        dtype = dt.dtype if isinstance(dt, _DType) else np.dtype(dt)
        return np.frombuffer(_as_bytes(buf), dtype=dtype).reshape(shape, order=order).copy()
    raise ValueError(f"'{tag}' cannot be called")


def _build(obj: Any, state: Any) -> None:
    if isinstance(obj, _PendingArray):  # ndarray.__setstate__: (version, shape, dtype, is_fortran, data)
        _, shape, dt, fortran, raw = state
        dtype = dt.dtype if isinstance(dt, _DType) else np.dtype(dt)
        flat = np.frombuffer(_as_bytes(raw), dtype=dtype)
        obj.array = flat.reshape(shape, order="F" if fortran else "C").copy()
    elif isinstance(obj, _DType):  # dtype.__setstate__: (version, byte order, ...)
        if state[1] in ("<", ">"):
            obj.dtype = obj.dtype.newbyteorder(state[1])
    else:
        raise ValueError(f"cannot set the state of a {type(obj).__name__}")


def _resolve(obj: Any) -> Any:
    if isinstance(obj, _PendingArray):
        if obj.array is None:
            raise ValueError("an array was never given its data")
        return obj.array
    if isinstance(obj, dict):
        return {_resolve(k): _resolve(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve(v) for v in obj)
    if isinstance(obj, _DType):
        return obj.dtype
    return obj


_SCALARS = {
    "BININT", "BININT1", "BININT2", "LONG1", "BINFLOAT", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
    "BINSTRING", "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8",
}  # fmt: skip
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}


def read_pickled_batch(blob: bytes) -> Any:
    """Decode a CIFAR batch pickle **without unpickling it**: no object is imported, constructed or called.

    The opcode stream is parsed by :func:`pickletools.genops` (a disassembler) and interpreted here for the only
    things an official batch holds: dicts, lists, tuples, str/bytes, ints, floats and numpy arrays (rebuilt from
    their raw bytes with ``np.frombuffer``). Any other global (``os.system`` ...), object dtype or opcode is refused.

    Raises:
        ValueError: the stream holds anything else or is malformed.
    """
    stack: list[Any] = []
    marks: list[int] = []
    memo: dict[int, Any] = {}

    def pop_mark() -> list[Any]:
        k = marks.pop()
        items = stack[k:]
        del stack[k:]
        return items

    for op, arg, _ in pickletools.genops(blob):
        name = op.name
        if name in ("PROTO", "FRAME"):
            continue
        if name == "STOP":
            break
        if name in _SCALARS:
            stack.append(arg)
        elif name in _CONSTANTS:
            stack.append(_CONSTANTS[name])
        elif name == "MARK":
            marks.append(len(stack))
        elif name == "EMPTY_DICT":
            stack.append({})
        elif name in ("EMPTY_LIST",):
            stack.append([])
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = tuple(stack[-n:])
            del stack[-n:]
            stack.append(items)
        elif name == "TUPLE":
            stack.append(tuple(pop_mark()))
        elif name == "LIST":
            stack.append(pop_mark())
        elif name == "DICT":
            items = pop_mark()
            stack.append(dict(zip(items[::2], items[1::2], strict=True)))
        elif name == "APPEND":
            v = stack.pop()
            stack[-1].append(v)
        elif name == "APPENDS":
            items = pop_mark()
            stack[-1].extend(items)
        elif name == "SETITEM":
            v, k = stack.pop(), stack.pop()
            stack[-1][k] = v
        elif name == "SETITEMS":
            items = pop_mark()
            stack[-1].update(zip(items[::2], items[1::2], strict=True))
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(arg)] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            stack.append(memo[int(arg)])
        elif name in ("GLOBAL", "STACK_GLOBAL"):
            if name == "GLOBAL":
                module, attr = arg.split(" ", 1)
            else:
                attr, module = stack.pop(), stack.pop()
            tag = _GLOBALS.get((module, attr))
            if tag is None:
                raise ValueError(f"global '{module}.{attr}' is not allowed")
            stack.append(_Tag(tag))
        elif name == "REDUCE":
            args, func = stack.pop(), stack.pop()
            if not isinstance(func, _Tag) or not isinstance(args, tuple):
                raise ValueError("REDUCE on something that is not an allowed global")
            stack.append(_reduce(func, args))
        elif name == "BUILD":
            state = stack.pop()
            _build(stack[-1], state)
        else:
            raise ValueError(f"pickle opcode {name} is not allowed in a CIFAR batch")
    if len(stack) != 1:
        raise ValueError("malformed pickle stream")
    return _resolve(stack[0])


def safe_unpickle(path: Path) -> Any:
    """Read a pickled CIFAR batch with :func:`read_pickled_batch` (nothing in the file is executed).

    Raises:
        DataFormatError: the file holds something else than a CIFAR batch, or is not a valid pickle.
    """
    try:
        return read_pickled_batch(path.read_bytes())
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise DataFormatError(
            f"refusing to load '{path}': {e}; CIFAR batches may contain only dicts, lists, strings, ints and numpy "
            "arrays (the file may be tampered with or truncated; re-download the official archive)"
        ) from e


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
        zca: ZCA-whiten with eps 0.1 (fitted on the training split).
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
        zca: ZCA-whiten with eps 0.1 (fitted on the training split).
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
