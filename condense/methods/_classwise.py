"""Shared pieces of the class-wise matchers (DC, DSA, DM, and the init of MTT/FTD/DATM): synthetic-set
initialization, per-class real batches and per-class Siamese augmentation, all vectorized over classes.

Layout convention: synthetic sets are class-major, ``images[c * ipc:(c + 1) * ipc]`` belong to class ``c``, as in
the DC code (``label_syn = [0, 0, ..., 1, 1, ..., K-1]``).
"""

from __future__ import annotations

from typing import Any

import torch

from condense.augment import get_augment
from condense.config import check_choice
from condense.errors import ConfigError, DataFormatError

__all__ = ["init_images", "class_major_labels", "real_data_runtime", "ClassSampler", "siamese_augment", "INIT_MODES"]

INIT_MODES = ("real", "noise")


def class_major_labels(num_classes: int, ipc: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``[0]*ipc + [1]*ipc + ... + [K-1]*ipc`` as int64.

    Shape:
        return: (K * ipc,), int64.

    Example:
        >>> class_major_labels(3, 2).tolist()
        [0, 0, 1, 1, 2, 2]
    """
    return torch.arange(num_classes, device=device).repeat_interleave(ipc)


def init_images(data: Any, ipc: int, mode: str, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial synthetic images: ``ipc`` distinct random real images per class, or standard normal noise.

    Noise is drawn in the dataset's normalized (and possibly whitened) space, as the DC code's ``torch.randn``.

    Args:
        data: an :class:`~condense.data.ImageData`.
        ipc: images per class.
        mode: ``"real"`` or ``"noise"``.
        generator: the only source of randomness (drawn on its own device, moved to the data's device).

    Returns:
        ``(images, labels)``, class-major, on ``data.x_train``'s device.

    Raises:
        ConfigError: unknown ``mode``, or ``"real"`` with a class holding fewer than ``ipc`` images.

    Shape:
        images: (K * ipc, C, H, W), float32.
        labels: (K * ipc,), int64.

    Example:
        >>> from condense.data import load_dataset
        >>> x, y = init_images(load_dataset("digits"), 2, "real", torch.Generator().manual_seed(0))
        >>> tuple(x.shape), y[:4].tolist()
        ((20, 1, 8, 8), [0, 0, 1, 1])
    """
    check_choice("init", mode, INIT_MODES)
    k, device = data.num_classes, data.x_train.device
    labels = class_major_labels(k, ipc, device)
    if mode == "noise":
        shape = (k * ipc, data.channels, *data.image_size)
        images = torch.randn(shape, generator=generator, device=generator.device).to(device)
        return images.float(), labels
    sampler = ClassSampler(data.y_train, k)
    smallest = int(sampler.counts.min())
    if smallest < ipc:
        c = int(sampler.counts.argmin())
        raise ConfigError(
            f"init='real' needs {ipc} images per class but class {c} ({data.classes[c]!r}) has {smallest}; "
            "lower ipc or use init='noise'"
        )
    idx = sampler.sample(ipc, generator).reshape(-1)
    # copy into a fresh tensor: canonical NCHW strides whatever the dataset's layout (C = 1 admits several)
    real = data.x_train[idx]
    return torch.empty(real.shape, dtype=torch.float32, device=device).copy_(real), labels


def real_data_runtime(data: Any, cfg: Any, device: torch.device | str) -> dict[str, Any]:
    """The objects a real-data matcher (DC, DM) rebuilds on start and resume: the data on ``device``, a per-class
    sampler and the augmentation named by ``cfg.augment``. Nothing here is checkpointed."""
    device = torch.device(device)
    return {
        "data": data,
        "cfg": cfg,
        "device": device,
        "x_train": data.x_train.to(device),
        "sampler": ClassSampler(data.y_train.to(device), data.num_classes),
        "aug": get_augment(cfg.augment),
    }


class ClassSampler:
    """Draws, for every class at once, a batch of distinct random training indices of that class.

    One ``torch.rand(K, max_count)`` and a row-wise top-k replace the DC code's per-class
    ``np.random.permutation(indices_class[c])[:n]`` loop; padding slots of smaller classes get key 2 so they are
    never chosen. Every class gets the same batch size ``min(n, smallest class)`` so batches stack to (K, b)
    (the DC code takes ``min(n, size of class c)``; identical on balanced datasets).

    Args:
        labels: training labels.
        num_classes: K.

    Shape:
        labels: (N,), int64.
        sample(n, g): (K, b) int64 indices into the training set, on ``labels``' device.

    Example:
        >>> s = ClassSampler(torch.tensor([0, 1, 0, 1, 1]), 2)
        >>> s.sample(2, torch.Generator().manual_seed(0)).shape
        torch.Size([2, 2])
    """

    def __init__(self, labels: torch.Tensor, num_classes: int) -> None:
        self.device = labels.device
        y = labels.detach().cpu().long()
        counts = torch.bincount(y, minlength=num_classes)
        if counts.numel() > num_classes or bool((counts == 0).any()):
            empty = torch.nonzero(counts[:num_classes] == 0).flatten().tolist()
            raise DataFormatError(
                f"every class needs training images; classes {empty} have none (labels span {counts.numel()} values)"
            )
        self.counts = counts
        self.order = torch.argsort(y, stable=True)
        self.offsets = torch.cumsum(counts, 0) - counts
        self.max_count = int(counts.max())
        self._pad = torch.arange(self.max_count)[None, :] >= counts[:, None]
        self._cache: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def _on(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        if device not in self._cache:
            self._cache[device] = (self._pad.to(device), self.offsets.to(device), self.order.to(device))
        return self._cache[device]

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``min(n, smallest class)`` distinct random indices per class, without replacement, class-major."""
        b = min(int(n), int(self.counts.min()))
        dev = generator.device
        pad, offsets, order = self._on(dev)
        keys = torch.rand(len(self.counts), self.max_count, generator=generator, device=dev).masked_fill_(pad, 2.0)
        pos = torch.topk(keys, b, dim=1, largest=False, sorted=True).indices
        return order[offsets[:, None] + pos].to(self.device)


def siamese_augment(
    aug: Any, real: torch.Tensor, syn: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class Siamese DSA: class ``c``'s real batch and synthetic images get the same transform.

    As in the DC code's ``DiffAugment(..., seed=seed)``, one parameter draw (``shared=True``) covers a whole class
    and is replayed on both batches; each class draws its own. The classes are then grouped by the augmentation
    group mode "S" chose for them, so the ops run once per group (at most six calls per batch) instead of once per
    class.

    Args:
        aug: a :class:`condense.augment.DSA`.
        real: real images per class.
        syn: synthetic images per class (gradients flow through).
        generator: source of the parameter draws.

    Shape:
        real: (K, B, C, H, W); syn: (K, S, C, H, W); returns the two augmented tensors, same shapes.
    """
    if aug.is_identity:
        return real, syn
    k = real.shape[0]
    # draw against a one-image probe on the generator's device: sample() reads only shape and device, and the
    # per-class draws then stay on the CPU until one transfer per parameter and group in _apply_bucket
    probe_device = real.device if generator.device.type != "cpu" else torch.device("cpu")
    probe = torch.empty((1, *real.shape[2:]), device=probe_device)
    draws = [aug.sample(probe, generator=generator, shared=True) for _ in range(k)]
    if aug.mode == "S":
        buckets: dict[int, list[int]] = {}
        for c, d in enumerate(draws):
            buckets.setdefault(int(d["group"]), []).append(c)
    else:
        buckets = {-1: list(range(k))}
    if len(buckets) == 1:
        classes = next(iter(buckets.values()))
        return _apply_bucket(aug, real, draws, classes), _apply_bucket(aug, syn, draws, classes)
    order = [c for cls in buckets.values() for c in cls]
    inverse = torch.empty(k, dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(k)
    inverse = inverse.to(real.device)
    parts_real, parts_syn = [], []
    for classes in buckets.values():
        idx = torch.tensor(classes, device=real.device)
        parts_real.append(_apply_bucket(aug, real.index_select(0, idx), draws, classes))
        parts_syn.append(_apply_bucket(aug, syn.index_select(0, idx.to(syn.device)), draws, classes))
    return torch.cat(parts_real).index_select(0, inverse), torch.cat(parts_syn).index_select(0, inverse.to(syn.device))


def _apply_bucket(aug: Any, x: torch.Tensor, draws: list[dict[str, torch.Tensor]], classes: list[int]) -> torch.Tensor:
    """Apply the per-class draws of ``classes`` to ``x`` (rows = those classes), one call for all of them."""
    per = x.shape[1]
    first = draws[classes[0]]
    params = {}
    for key, v in first.items():
        if key == "group":
            params[key] = v
        else:
            stacked = torch.cat([draws[c][key] for c in classes]) if len(classes) > 1 else v
            params[key] = stacked.to(x.device).repeat_interleave(per, dim=0)
    return aug(x.reshape(-1, *x.shape[2:]), params=params).reshape(x.shape)
