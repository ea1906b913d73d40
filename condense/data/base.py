"""The dataset registry, the in-memory image dataset record, and per-class sampling shared by every data kind.

Every dataset, images or graphs, is registered in :data:`DATASETS` and loaded with :func:`load_dataset`; the
container it returns says what it holds in ``kind`` (``"images"``: :class:`ImageData`, ``"graphs"``:
:class:`condense.data.graph.GraphData`), which methods and evaluation check against their own ``data_kind``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from condense.config import check_range
from condense.errors import DataFormatError
from condense.registry import Registry

if TYPE_CHECKING:
    from condense.data.zca import ZCA

__all__ = [
    "ImageData",
    "DATASETS",
    "register_dataset",
    "load_dataset",
    "list_datasets",
    "sample_per_class",
    "from_uint8_arrays",
    "check_uint8_images",
]

#: Every dataset by name: image and graph loaders alike. A name ending in ``:`` is a prefix (``imagefolder:``,
#: ``tu:``) whose loader receives the rest of the name as its first argument.
DATASETS: Registry[Callable[..., Any]] = Registry("dataset")
register_dataset = DATASETS.register


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset names (prefixes end in ``:``) matching the fnmatch ``pattern``."""
    return DATASETS.list(pattern)


def load_dataset(name: str, root: str | None = None, *, zca: bool = False, download: bool = False, **options: Any):
    """Load any registered dataset by name or ``<prefix>:<arg>`` (``imagefolder:<path>``, ``tu:<NAME>``).

    Args:
        name: a registered name (:func:`list_datasets`) or a prefix plus its argument.
        root: data folder (default ``./data`` for file-backed datasets; embedded ones ignore it).
        zca: ZCA-whiten (image datasets only).
        download: allowed to download (datasets that support it).
        **options: loader-specific keywords, e.g. ``seed`` and ``split`` of graph datasets.

    Returns:
        An :class:`ImageData` (``kind == "images"``) or a :class:`~condense.data.graph.GraphData`
        (``kind == "graphs"``).

    Raises:
        UnknownNameError: no dataset or prefix of that name (the message lists the registered ones).

    Example:
        >>> load_dataset("digits").x_train.shape
        torch.Size([1437, 1, 8, 8])
        >>> load_dataset("synthetic_graphs").kind
        'graphs'
    """
    if ":" in name:
        prefix, arg = name.split(":", 1)
        return DATASETS.get(prefix + ":")(arg, root=root, zca=zca, download=download, **options)
    return DATASETS.get(name)(root, zca=zca, download=download, **options)


def sample_per_class(members: Sequence[torch.Tensor], ipc: int, generator: torch.Generator) -> torch.Tensor:
    """``ipc`` distinct random items of every class (all of a class that has fewer), concatenated in class order.

    The one per-class random draw of the library (random-real and random-graph methods and baselines): class by
    class, ``torch.randperm(len(members[c]), generator=generator)[:ipc]`` picks positions in ``members[c]``.

    Args:
        members: per class c, the indices of its items (``data.indices_of_class(c)``).
        ipc: items per class (>= 1).
        generator: the only source of randomness; advanced by one ``randperm`` per class.

    Shape:
        members[c]: (N_c,) int64. return: (sum_c min(ipc, N_c),) int64, on the device of ``members``.

    Example:
        >>> sample_per_class([torch.tensor([0, 2, 4]), torch.tensor([1, 3])], 2, torch.Generator().manual_seed(0))
        tensor([4, 0, 3, 1])
    """
    check_range("ipc", ipc, 1)
    out = []
    for idx in members:
        perm = torch.randperm(idx.numel(), generator=generator)[:ipc]
        out.append(idx[perm.to(idx.device)])
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)


@dataclass
class ImageData:
    """A whole image-classification dataset held as tensors, already normalized (and ZCA-whitened if set).

    Small datasets (digits, CIFAR) fit in memory and, on a GPU, on the device: methods index tensors
    instead of iterating a DataLoader (airbench's trick: no per-batch Python overhead).

    Shape:
        x_train: (N, C, H, W), float32, normalized by ``mean``/``std`` then ZCA-whitened when ``zca`` is set.
        y_train: (N,), int64 class indices in ``classes`` order.
        x_test: (M, C, H, W), same preprocessing as ``x_train``.
        y_test: (M,), int64.
    """

    kind: ClassVar[str] = "images"

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    zca: ZCA | None = None
    fingerprint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for nm, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.ndim != 4:
                raise DataFormatError(f"{self.name} {nm} images must be (N, C, H, W), got shape {tuple(x.shape)}")
            if y.ndim != 1 or y.shape[0] != x.shape[0]:
                raise DataFormatError(
                    f"{self.name} {nm} labels must be (N,) with N={x.shape[0]}, got shape {tuple(y.shape)}"
                )
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
                raise DataFormatError(
                    f"{self.name} {nm} labels must lie in [0, {len(self.classes) - 1}], "
                    f"got [{int(y.min())}, {int(y.max())}]"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataFormatError(
                f"{self.name} train and test image shapes differ: {tuple(self.x_train.shape[1:])} vs "
                f"{tuple(self.x_test.shape[1:])}"
            )
        if not self.fingerprint:
            self.fingerprint = fingerprint_tensors(self.x_train, self.y_train)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.x_train.shape[2]), int(self.x_train.shape[3])

    def indices_of_class(self, c: int) -> torch.Tensor:
        """Indices into the training set of class ``c``."""
        return torch.nonzero(self.y_train == c, as_tuple=False).flatten()

    def sample_per_class(self, ipc: int, generator: torch.Generator) -> torch.Tensor:
        """Training indices of ``ipc`` random images per class (fewer if a class has fewer), class-sorted.

        Shape:
            return: (<= K * ipc,) int64 indices into ``x_train`` / ``y_train``.

        Example:
            >>> from condense.data import load_dataset
            >>> load_dataset("digits").sample_per_class(2, torch.Generator().manual_seed(0)).shape
            torch.Size([20])
        """
        return sample_per_class([self.indices_of_class(c) for c in range(self.num_classes)], ipc, generator)

    def preprocessing(self) -> dict[str, Any]:
        """JSON description of the preprocessing, stored with every artifact and buffer."""
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "zca": None if self.zca is None else self.zca.describe(),
        }

    def to(self, device: torch.device | str) -> ImageData:
        """Move all tensors to ``device`` (returns self for chaining)."""
        self.x_train = self.x_train.to(device)
        self.y_train = self.y_train.to(device)
        self.x_test = self.x_test.to(device)
        self.y_test = self.y_test.to(device)
        return self


def fingerprint_tensors(x: torch.Tensor, y: torch.Tensor) -> str:
    """Cheap content fingerprint: sha256 over shapes, labels and a strided sample of pixels."""
    h = hashlib.sha256()
    h.update(str(tuple(x.shape)).encode())
    h.update(y.detach().cpu().numpy().astype(np.int64).tobytes())
    flat = x.detach().reshape(-1)
    step = max(1, flat.numel() // 65536)
    h.update(flat[::step].cpu().float().numpy().tobytes())
    return h.hexdigest()[:16]


def check_uint8_images(x: np.ndarray, y: np.ndarray, where: str, channels: int | None = None) -> None:
    """Raise :class:`DataFormatError` unless ``x`` is (N, H, W, C) uint8 and ``y`` integer (N,)."""
    if x.dtype != np.uint8 or x.ndim != 4:
        raise DataFormatError(f"{where}: images must be uint8 (N, H, W, C), got {x.dtype} {x.shape}")
    if channels is not None and x.shape[-1] != channels:
        raise DataFormatError(f"{where}: expected {channels} channels, got shape {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0] or not np.issubdtype(y.dtype, np.integer):
        raise DataFormatError(f"{where}: labels must be integer (N,) with N={x.shape[0]}, got {y.dtype} {y.shape}")


def from_uint8_arrays(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    classes: list[str],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    zca: bool = False,
    zca_eps: float = 0.1,
) -> ImageData:
    """Build :class:`ImageData` from uint8 NHWC arrays: scale to [0, 1], normalize, optionally ZCA-whiten.

    ZCA is fitted on the normalized training set and applied to both splits, as MTT/DATM do.
    """
    check_uint8_images(x_train, y_train, f"{name} train")
    check_uint8_images(x_test, y_test, f"{name} test")

    def prep(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float().div_(255.0)
        m = torch.tensor(mean).view(1, -1, 1, 1)
        s = torch.tensor(std).view(1, -1, 1, 1)
        return ((t - m) / s).contiguous()

    xtr, xte = prep(x_train), prep(x_test)
    ytr = torch.from_numpy(y_train.astype(np.int64))
    yte = torch.from_numpy(y_test.astype(np.int64))
    fp = fingerprint_tensors(xtr, ytr)
    zca_obj = None
    if zca:
        from condense.data.zca import ZCA

        zca_obj = ZCA(eps=zca_eps).fit(xtr)
        xtr, xte = zca_obj(xtr), zca_obj(xte)
    return ImageData(name, xtr, ytr, xte, yte, list(classes), tuple(mean), tuple(std), zca_obj, fingerprint=fp)
