"""The dataset registry, the in-memory image dataset record, and per-class sampling shared by every data kind.

Every dataset, images or graphs, is registered in :data:`DATASETS` and loaded with :func:`load_dataset`; the
container it returns says what it holds in ``kind`` (``"images"``: :class:`ImageData`, ``"graphs"``:
:class:`condense.data.graph.GraphData`), which methods and evaluation check against their own ``data_kind``.
"""

from __future__ import annotations

import contextvars
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


#: the device ``load_dataset(..., zca_device=...)`` fits ZCA on, read by :func:`from_uint8_arrays` (so no loader has
#: to thread it through)
_ZCA_DEVICE: contextvars.ContextVar[Any] = contextvars.ContextVar("condense_zca_device", default=None)


def load_dataset(
    name: str,
    root: str | None = None,
    *,
    zca: bool = False,
    download: bool = False,
    zca_device: torch.device | str | None = None,
    **options: Any,
):
    """Load any registered dataset by name or ``<prefix>:<arg>`` (``imagefolder:<path>``, ``tu:<NAME>``).

    Args:
        name: a registered name (:func:`list_datasets`) or a prefix plus its argument.
        root: data folder (default ``./data`` for file-backed datasets; embedded ones ignore it).
        zca: ZCA-whiten (image datasets only): the [0, 1] pixels, not normalized, eps 0.1, fitted on the training
            split and applied to both, as MTT/FTD/DATM do (see :func:`from_uint8_arrays`).
        download: allowed to download (datasets that support it).
        zca_device: where the ZCA fit and the whitening run, a chunk at a time (default: the CPU); the data and
            the result stay on the CPU. The CLI passes ``--device``.
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
    token = _ZCA_DEVICE.set(zca_device)
    try:
        if ":" in name:
            prefix, arg = name.split(":", 1)
            return DATASETS.get(prefix + ":")(arg, root=root, zca=zca, download=download, **options)
        return DATASETS.get(name)(root, zca=zca, download=download, **options)
    finally:
        _ZCA_DEVICE.reset(token)


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
        perm = torch.randperm(idx.numel(), generator=generator, device=generator.device)[:ipc]
        out.append(idx[perm.to(idx.device)])
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)


@dataclass
class ImageData:
    """A whole image-classification dataset held as tensors, already preprocessed: normalized, or ZCA-whitened.

    Small datasets (digits, CIFAR) fit in memory and, on a GPU, on the device: methods index tensors
    instead of iterating a DataLoader (airbench's trick: no per-batch Python overhead).

    Two preprocessings, as in the trajectory-matching references (``mtt-distillation:utils.py`` ``get_dataset``):
    without ZCA, ``(x - mean) / std`` of [0, 1] pixels; with ZCA, the whitening of the [0, 1] pixels themselves,
    with ``mean`` zeros and ``std`` ones (the identity normalization), so undoing ``zca`` then ``mean``/``std``
    gives the pixels back in both cases.

    Shape:
        x_train: (N, C, H, W), float32: ``(x - mean) / std`` of [0, 1] pixels, or, when ``zca`` is set, the
            ZCA-whitened [0, 1] pixels (``mean`` = 0, ``std`` = 1).
        y_train: (N,), int64 class indices in ``classes`` order.
        x_test: (M, C, H, W), same preprocessing as ``x_train`` (the ZCA fitted on the training split).
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


def fingerprint_tensors(
    x: torch.Tensor,
    y: torch.Tensor,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> str:
    """Cheap content fingerprint: sha256 over shapes, labels and a strided sample of pixels.

    With ``mean`` and ``std``, ``x`` holds [0, 1] pixels and the sample is normalized as ``(x - mean) / std`` before
    hashing (the same float32 operations as the normalization itself, so the digest equals that of the normalized
    tensor): a ZCA dataset, which is not normalized, keeps the fingerprint of the same data loaded without ZCA.

    Shape:
        x: (N, C, H, W); y: (N,) int64.
    """
    h = hashlib.sha256()
    h.update(str(tuple(x.shape)).encode())
    h.update(y.detach().cpu().numpy().astype(np.int64).tobytes())
    flat = x.detach().reshape(-1)
    step = max(1, flat.numel() // 65536)
    sample = flat[::step].cpu().float()
    if mean is not None and std is not None:
        pos = torch.arange(0, flat.numel(), step)
        channel = (pos // (x.shape[2] * x.shape[3])) % x.shape[1]
        sample = (sample - torch.tensor(mean)[channel]) / torch.tensor(std)[channel]
    h.update(sample.numpy().tobytes())
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
    zca_device: torch.device | str | None = None,
) -> ImageData:
    """Build :class:`ImageData` from uint8 NHWC arrays: scale to [0, 1], then normalize or ZCA-whiten.

    Without ZCA, the [0, 1] pixels are normalized with ``mean``/``std``. With ZCA they are not: the whitening is
    fitted on the [0, 1] training pixels (eps ``zca_eps``) and applied to both splits, and the returned dataset
    records ``mean`` zeros and ``std`` ones. This is what MTT, FTD and DATM do (``ToTensor()`` only under ``--zca``,
    then ``kornia.enhance.ZCAWhitening(eps=0.1)``: ``mtt-distillation:utils.py``, ``DATM:utils/utils_baseline.py``).
    The fingerprint is that of the normalized training set either way (see :func:`fingerprint_tensors`).

    Args:
        zca_device: where the ZCA covariance is accumulated and decomposed and the splits are whitened, a chunk at a
            time (default: the CPU, where the tensors are built).

    Shape:
        x_train, x_test: (N, H, W, C) uint8; y_train, y_test: (N,) integer.
    """
    check_uint8_images(x_train, y_train, f"{name} train")
    check_uint8_images(x_test, y_test, f"{name} test")
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)

    def pixels(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float().div_(255.0)
        return t.contiguous()

    xtr, xte = pixels(x_train), pixels(x_test)
    ytr = torch.from_numpy(y_train.astype(np.int64))
    yte = torch.from_numpy(y_test.astype(np.int64))
    if not zca:
        # in place: the same float32 operations as (t - m) / s, without a second copy of the split
        xtr, xte = xtr.sub_(m).div_(s), xte.sub_(m).div_(s)
        fp = fingerprint_tensors(xtr, ytr)
        return ImageData(name, xtr, ytr, xte, yte, list(classes), tuple(mean), tuple(std), None, fingerprint=fp)

    from condense.data.zca import PIXELS_01, ZCA

    fp = fingerprint_tensors(xtr, ytr, mean, std)
    if zca_device is None:
        zca_device = _ZCA_DEVICE.get()
    zca_obj = ZCA(eps=zca_eps).fit(xtr, input_scale=PIXELS_01, device=zca_device)
    zca_obj.whiten_(xtr, device=zca_device)
    zca_obj.whiten_(xte, device=zca_device)
    c = xtr.shape[1]
    return ImageData(name, xtr, ytr, xte, yte, list(classes), (0.0,) * c, (1.0,) * c, zca_obj, fingerprint=fp)
