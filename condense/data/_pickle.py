"""A safe reader for pickled numpy batches: walks the opcode stream, never unpickles.

Python pickles can run arbitrary code on load. The official CIFAR batches are pickles of dicts holding numpy arrays,
so :func:`read_pickled_batch` disassembles the stream with :func:`pickletools.genops` and interprets only the
opcodes such a batch needs, rebuilding dicts, lists, tuples, strings, numbers and numpy arrays (from their raw bytes)
and refusing every other global, object dtype or opcode. A tampered file is an error, never executed code.
"""

from __future__ import annotations

import pickletools
from pathlib import Path
from typing import Any

import numpy as np

from condense.errors import DataFormatError

__all__ = ["read_pickled_batch", "safe_unpickle"]

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
