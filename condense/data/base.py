"""The in-memory dataset record every method and the evaluation protocol consume."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from condense.errors import DataFormatError
from condense.registry import Registry

if TYPE_CHECKING:
    from condense.data.zca import ZCA

__all__ = ["ImageData", "DATASETS", "register_dataset", "from_uint8_arrays", "check_uint8_images"]

DATASETS: Registry[Callable[..., ImageData]] = Registry("dataset")
register_dataset = DATASETS.register


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
