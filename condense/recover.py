"""The recover engine of the decoupled family: optimize images so a frozen BatchNorm teacher classifies them and sees
its own BatchNorm statistics (SRe2L's "recover" stage).

Yin, Xing, Shen, "Squeeze, Recover and Relabel: Dataset Condensation at ImageNet Scale From A New Perspective",
NeurIPS 2023, arXiv:2306.13092, Eq. 5-7 (code: ``VILA-Lab/SRe2L``, ``SRe2L/recover/data_synthesis.py`` and
``SRe2L/*small_dataset/recover_cifar.py``). For a batch (a *group*) of images x with labels y and a teacher f:

.. code-block:: text

    L(x) = sum_t w_t * [ CE(f_t(A(x)), y) + r_bn * sum_l m_l * ( ||mu_l(A(x)) - mu_l^run||_2
                                                                + ||var_l(A(x)) - var_l^run||_2 ) ]

with A a random augmentation drawn once per group (RandomResizedCrop, flip, roll jitter), mu_l / var_l the batch
mean and biased variance of the input of the l-th BatchNorm2d over the group, mu_l^run / var_l^run its running
statistics, m_1 = ``first_bn_multiplier`` (10) and m_l = 1 after, w_t the committee weights (CV-DD; one teacher:
w = 1). Adam (betas 0.5, 0.9, eps 1e-8) on the pixels with a cosine lr without warmup, then a clamp to the valid
pixel box (``data_synthesis.py:46-47, 51-104``; ``recover/utils.py:24-34, 57-70, 92-104``).

Notation: ``images`` -> x, ``groups`` -> which SRe2L batch each image belongs to, ``r_bn`` -> alpha_BN of Eq. 6,
``first_bn_multiplier`` -> m_1, ``teacher_weights`` -> w_t.

Pieces, each used by SRe2L (``condense.methods.sre2l``) and meant for the methods built on it (SRe2L++, CV-DD's
committee, NRR-DD's masked refinement):

- :class:`BNStatHook`: a context manager that hooks every BatchNorm2d of one or several teachers and computes the
  statistic loss **per group**: G groups in one forward give the same per-group losses as G separate forwards
  (tested to 1e-6), because the teacher runs in eval mode (its outputs do not depend on the batch) and the
  statistics are segment means over each group's images. The hooks exist only inside ``with``.
- :class:`RecoverAugment`: the per-group augmentation (parameters drawn from a ``torch.Generator``).
- :class:`Recovery`: images, Adam moments and the schedule, with :meth:`Recovery.step`; :func:`recover` is the plain
  loop. Extra losses and a pixel mask (the gradient is multiplied by it; NRR-DD's non-critical-region mask) plug in.

Speed (image-iterations per second: one forward + backward + Adam step of one image; CPU, one thread,
``OMP_NUM_THREADS=1 python -m condense.recover``, the ``__main__`` block at the end of this file; 100 images in 10
groups in one forward, roll jitter, untrained teachers with BN statistics; measured on a 2-core machine shared with
other jobs, so read them as lower bounds):

- 8x8 digits, convnet_bn width 64 depth 2 (the demo teacher): ~5400 images/s (digits IPC 10, 300 iterations: ~6 s).
- 3x32x32, convnet_bn width 128 depth 3: ~120 images/s.
- 3x32x32, resnet18_bn: ~24 images/s (CIFAR-100 IPC 50 at 1000 iterations would take ~58 CPU hours: use a GPU).

Known differences from the authors' code (also listed in ``condense/methods/sre2l.py``):

- Groups run together in one forward (``batch_groups``) with per-group statistics; the reference runs one batch at
  a time. Results are equal up to float rounding, and the augmentation is drawn per group in group order, so the
  chunking never changes the randomness.
- The RandomResizedCrop is drawn with torchvision's algorithm (scale, ratio (3/4, 4/3), 10 tries then a centre crop)
  from the run's generator and resized with ``F.interpolate(bilinear, align_corners=False)``; the crop is never
  larger than the image, so torchvision's antialias does not apply.
- The roll offsets are drawn from the generator in ``[0, jitter]`` (``random.randint(0, lim)``,
  ``data_synthesis.py:62-63``, ``recover_cifar.py:79-80``) or, with ``jitter_signed``, in ``[-jitter, jitter]``
  (``recover_tiny.py:56-57``); the reference draws from Python's global ``random``.
- Adam is written out (the same update as ``torch.optim.Adam``, tested) so its moments are plain tensors that a
  checkpoint saves; the reference keeps them inside the optimizer and drops them after each batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from condense.errors import ArgumentTypeError, ConfigError, MismatchError

__all__ = [
    "BNStatHook",
    "LossInputs",
    "RecoverAugment",
    "Recovery",
    "adam_",
    "batchnorm_layers",
    "check_batchnorm",
    "class_batches",
    "cosine_lr",
    "pixel_box",
    "recover",
    "roll_flip",
]

ExtraLoss = Callable[["LossInputs"], torch.Tensor]


# ----------------------------------------------------------------------------------------------------------------------
# Small pieces: BN layers, the pixel box, the schedule, Adam, groups
# ----------------------------------------------------------------------------------------------------------------------


def batchnorm_layers(module: nn.Module) -> list[nn.BatchNorm2d]:
    """The BatchNorm2d layers of ``module`` that keep running statistics, in ``modules()`` order (SRe2L's order:
    ``data_synthesis.py:28-30``; the first one gets ``first_bn_multiplier``)."""
    return [
        m
        for m in module.modules()
        if isinstance(m, nn.BatchNorm2d) and m.track_running_stats and m.running_mean is not None
    ]


def check_batchnorm(module: nn.Module, name: str = "teacher") -> None:
    """Refuse a teacher without BatchNorm2d running statistics (there is nothing to match).

    Raises:
        ConfigError: one line naming the teacher and how to get a BN one.
    """
    if not batchnorm_layers(module):
        raise ConfigError(
            f"{name} ({type(module).__name__}) has no BatchNorm2d layer with running statistics; SRe2L-style recovery "
            "matches BatchNorm statistics: train a BN teacher (condense teachers train --model convnet_bn or "
            "resnet18_bn)"
        )


def pixel_box(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalized values of pixels 0 and 1 per channel, ``((0 - mean) / std, (1 - mean) / std)``: the box the
    recovered images are clamped to after every step (SRe2L ``recover/utils.py:57-70``, ``recover_cifar.py:18-28``).

    Raises:
        MismatchError: ZCA-whitened data (whitened space has no per-channel pixel box, and the reference teachers
            see normalized pixels only).

    Shape:
        return: two (C,) float32 tensors.
    """
    if getattr(data, "zca", None) is not None:
        raise MismatchError(
            f"dataset '{getattr(data, 'name', '?')}' is ZCA-whitened; recovery works on normalized pixels (a teacher "
            "trained on them, clamped to the pixel box): load the data without zca"
        )
    mean = torch.tensor(data.mean, dtype=torch.float32)
    std = torch.tensor(data.std, dtype=torch.float32)
    return -mean / std, (1 - mean) / std


def cosine_lr(base_lr: float, iteration: int, num_iterations: int) -> float:
    """SRe2L's ``lr_cosine_policy(base_lr, 0, iterations)`` (``recover/utils.py:24-34``): no warmup,
    ``0.5 * (1 + cos(pi * it / iterations)) * base_lr``, set before the step of iteration ``it`` (0-based)."""
    return 0.5 * (1.0 + math.cos(math.pi * iteration / max(1, num_iterations))) * base_lr


@torch.no_grad()
def adam_(
    p: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    grad: torch.Tensor,
    lr: float,
    step: int,
    betas: tuple[float, float] = (0.5, 0.9),
    eps: float = 1e-8,
) -> None:
    """One ``torch.optim.Adam`` step in place (no weight decay, no amsgrad), ``step`` counting from 1.

    ``m = b1 m + (1 - b1) g``; ``v = b2 v + (1 - b2) g^2``; ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) +
    eps)``. Written out so the moments are plain tensors a checkpoint keeps (SRe2L: ``Adam([x], lr, betas=[0.5,
    0.9], eps=1e-8)``, ``data_synthesis.py:46``).

    Shape:
        p, exp_avg, exp_avg_sq, grad: the same shape.
    """
    b1, b2 = betas
    exp_avg.mul_(b1).add_(grad, alpha=1 - b1)
    exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
    bias1, bias2 = 1 - b1**step, 1 - b2**step
    denom = (exp_avg_sq.sqrt() / math.sqrt(bias2)).add_(eps)
    p.addcdiv_(exp_avg, denom, value=-lr / bias1)


def class_batches(num_classes: int, ipc: int, batch_classes: int, device: torch.device | str | None = None):
    """Group ids of class-major images (image ``c * ipc + i`` is class c's i-th): SRe2L's batches, one image per
    class for ``batch_classes`` consecutive classes at one IPC slot (``data_synthesis.py:34-37``).

    Group of image ``c * ipc + i`` = ``i * chunks + c // batch_classes`` with ``chunks = ceil(K / batch_classes)``.

    Shape:
        return: (K * ipc,), int64, values in ``[0, ipc * chunks)``.

    Example:
        >>> class_batches(3, 2, 2).tolist()
        [0, 2, 0, 2, 1, 3]
    """
    chunks = -(-num_classes // batch_classes)
    c = torch.arange(num_classes, device=device).repeat_interleave(ipc)
    i = torch.arange(ipc, device=device).repeat(num_classes)
    return i * chunks + c // batch_classes


def _segment_matrix(groups: torch.Tensor, num_groups: int, dtype: torch.dtype) -> torch.Tensor:
    """(G, N) matrix whose row g averages the images of group g (a matmul: deterministic, unlike index_add on CUDA)."""
    onehot = F.one_hot(groups, num_groups).to(dtype).t()  # (G, N)
    return onehot / onehot.sum(1, keepdim=True).clamp_min(1)


# ----------------------------------------------------------------------------------------------------------------------
# The BatchNorm statistic hook
# ----------------------------------------------------------------------------------------------------------------------


class BNStatHook:
    """Forward hooks on every BatchNorm2d of one or several modules: the per-group BN statistic loss.

    For module t, layer l and group g: ``m_l * (||mu_lg - running_mean_l||_2 + ||var_lg - running_var_l||_2)`` with
    ``mu_lg`` / ``var_lg`` the mean and biased variance of the layer's *input* over the images of group g and all
    positions (SRe2L's ``BNFeatureHook``, ``recover/utils.py:92-104``; per group instead of per forward). ``m_l`` is
    ``first_bn_multiplier`` for each module's first layer, else 1 (``data_synthesis.py:74-75``), times
    ``layer_weights[t][l]`` when given. Statistics are computed in float32 whatever the autocast dtype.

    Hooks are registered on ``__enter__`` and removed on ``__exit__`` (also on an exception); the results of the
    last forward are dropped on exit, so nothing leaks from one ``with`` into the next.

    Args:
        modules: one module or several (a committee); each must hold a BatchNorm2d with running statistics.
        first_bn_multiplier: m_1.
        layer_weights: optional per-module sequences of per-layer weights (length = that module's BN count).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)).eval()
        >>> with BNStatHook(net) as hook:
        ...     hook.set_groups(torch.tensor([0, 0, 1, 1]), 2)
        ...     _ = net(torch.randn(4, 1, 5, 5))
        ...     hook.losses().shape
        torch.Size([1, 2])
    """

    def __init__(
        self,
        modules: nn.Module | Sequence[nn.Module],
        first_bn_multiplier: float = 10.0,
        layer_weights: Sequence[Sequence[float] | None] | None = None,
    ) -> None:
        mods = [modules] if isinstance(modules, nn.Module) else list(modules)
        if not mods or not all(isinstance(m, nn.Module) for m in mods):
            raise ArgumentTypeError(f"BNStatHook needs nn.Module(s), got {type(modules).__name__}")
        self.layers: list[list[nn.BatchNorm2d]] = []
        for t, m in enumerate(mods):
            check_batchnorm(m, f"teacher {t}")
            self.layers.append(batchnorm_layers(m))
        self.scales: list[list[float]] = []
        for t, layers in enumerate(self.layers):
            scale = [float(first_bn_multiplier)] + [1.0] * (len(layers) - 1)
            lw = None if layer_weights is None else layer_weights[t]
            if lw is not None:
                if len(lw) != len(layers):
                    raise ConfigError(
                        f"layer_weights[{t}] has {len(lw)} entries, teacher {t} has {len(layers)} BatchNorm2d layers"
                    )
                scale = [s * float(w) for s, w in zip(scale, lw)]
            self.scales.append(scale)
        self._owner = {id(bn): (t, j) for t, layers in enumerate(self.layers) for j, bn in enumerate(layers)}
        self._handles: list[Any] = []
        self._groups: torch.Tensor | None = None
        self._num_groups = 1
        self._segment: torch.Tensor | None = None
        self._values: dict[tuple[int, int], torch.Tensor] = {}

    # -- context -------------------------------------------------------------------------------------------------------

    def __enter__(self) -> BNStatHook:
        if self._handles:
            raise RuntimeError("BNStatHook is already active; it cannot be entered twice")
        for layers in self.layers:
            for bn in layers:
                self._handles.append(bn.register_forward_hook(self._hook))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._values.clear()
        self._groups = self._segment = None
        self._num_groups = 1

    @property
    def active(self) -> bool:
        return bool(self._handles)

    # -- groups and results --------------------------------------------------------------------------------------------

    def set_groups(self, groups: torch.Tensor | None, num_groups: int | None = None) -> None:
        """Name the group of each image of the next forwards (None: all images are one group).

        Shape:
            groups: (N,) int64 in ``[0, num_groups)``; every group should hold at least one image.
        """
        self._values.clear()
        if groups is None:
            self._groups, self._num_groups, self._segment = None, 1, None
            return
        groups = groups.long()
        self._groups = groups
        self._num_groups = int(num_groups) if num_groups is not None else int(groups.max()) + 1
        self._segment = _segment_matrix(groups, self._num_groups, torch.float32)

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        t, j = self._owner[id(module)]
        x = inputs[0].float()
        n, c = x.shape[:2]
        hw = x[0, 0].numel()
        if self._groups is None:
            seg = torch.full((1, n), 1.0 / n, device=x.device)
            gid = torch.zeros(n, dtype=torch.long, device=x.device)
        else:
            if self._groups.numel() != n:
                raise MismatchError(f"BNStatHook: {self._groups.numel()} group ids for a batch of {n} images")
            seg, gid = self._segment.to(x.device), self._groups.to(x.device)
        mean = seg @ x.sum((2, 3)) / hw  # (G, C)
        var = seg @ (x - mean[gid][:, :, None, None]).pow(2).sum((2, 3)) / hw  # biased, as var(unbiased=False)
        rm = module.running_mean.detach().float()
        rv = module.running_var.detach().float()
        loss = torch.linalg.vector_norm(mean - rm, dim=1) + torch.linalg.vector_norm(var - rv, dim=1)
        self._values[(t, j)] = self.scales[t][j] * loss

    def losses(self) -> torch.Tensor:
        """The BN loss of the last forward of each module per group, ``sum_l m_l (...)``.

        Raises:
            RuntimeError: a module's layers saw no forward since :meth:`set_groups` (or the hook is not active).

        Shape:
            return: (num_modules, G).
        """
        return torch.stack([self.module_losses(t) for t in range(len(self.layers))])

    def module_losses(self, t: int) -> torch.Tensor:
        """The BN loss of module ``t``'s last forward per group (the other modules need not have run).

        Raises:
            RuntimeError: a layer of module ``t`` saw no forward since :meth:`set_groups` (or the hook is inactive).

        Shape:
            return: (G,).
        """
        n = len(self.layers[t])
        missing = [j for j in range(n) if (t, j) not in self._values]
        if missing:
            raise RuntimeError(f"BNStatHook: teacher {t} layers {missing} saw no forward inside the hook")
        return torch.stack([self._values[(t, j)] for j in range(n)]).sum(0)

    def loss(self) -> torch.Tensor:
        """All modules and groups summed: () scalar."""
        return self.losses().sum()


# ----------------------------------------------------------------------------------------------------------------------
# Augmentation
# ----------------------------------------------------------------------------------------------------------------------


def roll_flip(x: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Per image: horizontal flip where ``flips``, then ``torch.roll`` by ``(dy, dx)`` along (H, W), as one gather.

    Shape:
        x: (N, C, H, W); shifts: (N, 2) integer; flips: (N,) bool; return: (N, C, H, W).

    Example:
        >>> x = torch.arange(4.0).reshape(1, 1, 1, 4)
        >>> roll_flip(x, torch.tensor([[0, 1]]), torch.tensor([False]))
        tensor([[[[3., 0., 1., 2.]]]])
    """
    n, c, h, w = x.shape
    shifts = shifts.to(x.device, torch.long)
    rows = (torch.arange(h, device=x.device)[None, :] - shifts[:, :1]) % h  # out[i] = in[(i - dy) % H]
    cols = (torch.arange(w, device=x.device)[None, :] - shifts[:, 1:]) % w
    cols = torch.where(flips.to(x.device)[:, None], w - 1 - cols, cols)  # flip first: flipped[j] = in[W - 1 - j]
    x = x.gather(2, rows[:, None, :, None].expand(n, c, h, w))
    return x.gather(3, cols[:, None, None, :].expand(n, c, h, w))


@dataclass(frozen=True, kw_only=True)
class RecoverAugment:
    """The recover augmentation, one draw per group (the reference transforms the whole batch tensor at once).

    Order as ``data_synthesis.py:55-64``: RandomResizedCrop to the full size (``rrc``), horizontal flip with
    probability 0.5 (``flip``), then ``torch.roll`` by offsets in ``[0, jitter]`` (``[-jitter, jitter]`` with
    ``jitter_signed``, ``recover_tiny.py:56-57``).
    """

    rrc: bool = False  # RandomResizedCrop(size) per group (ImageNet: on; CIFAR recover_cifar.py: off)
    rrc_scale: tuple[float, float] = (0.08, 1.0)  # RRC area range (torchvision default, data_synthesis.py:56)
    rrc_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # RRC aspect range (torchvision default)
    flip: bool = False  # RandomHorizontalFlip per group (ImageNet: on; CIFAR: off)
    jitter: int = 0  # roll offset bound in pixels (ImageNet 32, CIFAR/Tiny 4)
    jitter_signed: bool = False  # offsets in [-jitter, jitter] (Tiny) instead of [0, jitter]

    def __post_init__(self) -> None:
        lo, hi = self.rrc_scale
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"rrc_scale must satisfy 0 < lo <= hi <= 1, got {self.rrc_scale}")
        if not 0 < self.rrc_ratio[0] <= self.rrc_ratio[1]:
            raise ConfigError(f"rrc_ratio must satisfy 0 < lo <= hi, got {self.rrc_ratio}")
        if self.jitter < 0:
            raise ConfigError(f"jitter must be >= 0 pixels, got {self.jitter}")

    @property
    def identity(self) -> bool:
        return not (self.rrc or self.flip or self.jitter)

    def draw(self, num_groups: int, size: tuple[int, int], gen: torch.Generator) -> dict[str, Any]:
        """Parameters for ``num_groups`` groups, drawn in a fixed order (crops group by group, then flips, then
        shifts), so any chunking of the groups sees the same draws."""
        h, w = size
        boxes: list[tuple[int, int, int, int]] | None = None
        if self.rrc:
            boxes = [self._rrc_box(h, w, gen) for _ in range(num_groups)]
        flips = torch.zeros(num_groups, dtype=torch.bool)
        if self.flip:
            flips = (torch.rand(num_groups, generator=gen, device=gen.device) < 0.5).cpu()
        shifts = torch.zeros(num_groups, 2, dtype=torch.long)
        if self.jitter:
            lo = -self.jitter if self.jitter_signed else 0
            shifts = torch.randint(lo, self.jitter + 1, (num_groups, 2), generator=gen, device=gen.device).cpu()
        return {"boxes": boxes, "flips": flips, "shifts": shifts}

    def _rrc_box(self, h: int, w: int, gen: torch.Generator) -> tuple[int, int, int, int]:
        """torchvision ``RandomResizedCrop.get_params`` with draws from ``gen``: (top, left, height, width)."""
        area = h * w
        log_lo, log_hi = math.log(self.rrc_ratio[0]), math.log(self.rrc_ratio[1])
        for _ in range(10):
            u = torch.rand(4, generator=gen, device=gen.device, dtype=torch.float64).cpu().tolist()
            target = area * (self.rrc_scale[0] + u[0] * (self.rrc_scale[1] - self.rrc_scale[0]))
            ratio = math.exp(log_lo + u[1] * (log_hi - log_lo))
            cw, ch = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
            if 0 < cw <= w and 0 < ch <= h:
                top = min(int(u[2] * (h - ch + 1)), h - ch)
                left = min(int(u[3] * (w - cw + 1)), w - cw)
                return top, left, ch, cw
        in_ratio = w / h  # fallback: centre crop at the nearest allowed ratio
        if in_ratio < self.rrc_ratio[0]:
            cw, ch = w, int(round(w / self.rrc_ratio[0]))
        elif in_ratio > self.rrc_ratio[1]:
            ch, cw = h, int(round(h * self.rrc_ratio[1]))
        else:
            cw, ch = w, h
        return (h - ch) // 2, (w - cw) // 2, ch, cw

    def apply(self, x: torch.Tensor, groups: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        """Augment ``x`` (images sorted by group, ``groups`` their global group ids) with drawn ``params``.

        Shape:
            x: (n, C, H, W); groups: (n,) int64, non-decreasing; return: (n, C, H, W).
        """
        if self.identity:
            return x
        h, w = x.shape[-2:]
        if params["boxes"] is not None:
            parts = []
            ids, counts = torch.unique_consecutive(groups.cpu(), return_counts=True)
            start = 0
            for g, cnt in zip(ids.tolist(), counts.tolist()):
                top, left, ch, cw = params["boxes"][g]
                crop = x[start : start + cnt, :, top : top + ch, left : left + cw]
                if (ch, cw) != (h, w):
                    crop = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)
                parts.append(crop)
                start += cnt
            x = torch.cat(parts)
        if self.flip or self.jitter:
            g = groups.cpu()
            x = roll_flip(x, params["shifts"][g], params["flips"][g])
        return x


# ----------------------------------------------------------------------------------------------------------------------
# The recovery
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class LossInputs:
    """What an extra loss sees for one chunk of groups (its return value, a () tensor, is added to the loss).

    Shape:
        images: (n, C, H, W) the chunk's images (a leaf that requires grad); augmented: (n, C, H, W) what the
        teachers saw; labels: (n,) int64; groups: (n,) global group ids; logits: one (n, K) tensor per teacher.
    """

    images: torch.Tensor
    augmented: torch.Tensor
    labels: torch.Tensor
    groups: torch.Tensor
    logits: list[torch.Tensor]
    num_groups: int
    iteration: int


@dataclass
class Recovery:
    """Images being recovered, their Adam moments and the schedule; :meth:`step` runs one iteration for all groups.

    ``images``, ``exp_avg`` and ``exp_avg_sq`` are updated in place (a caller that keeps them, such as a matcher's
    checkpointable state, sees every step); ``teachers`` are frozen (eval mode, no parameter gradients).

    Args:
        teachers: nn.Modules (or objects with ``.module``, such as :class:`condense.teachers.Teacher`) on the
            images' device, each with BatchNorm2d.
        images: the initial images (noise for SRe2L, real images or patches for SRe2L++), in normalized space.
        labels: class index per image.
        groups: SRe2L batch of each image (None: all images one group); statistics are per group.
        num_iterations: length of the cosine schedule.
        lr: base lr of the schedule (SRe2L: 0.25).
        betas, eps: Adam's (SRe2L: (0.5, 0.9), 1e-8).
        r_bn: weight of the BN statistic loss (SRe2L: 0.01).
        first_bn_multiplier: m_1 (SRe2L: 10).
        layer_weights: optional per-teacher per-layer weights of the BN loss.
        teacher_weights: w_t per teacher (None: all 1 / T).
        augment: per-group augmentation (None: none).
        box: ``(lo, hi)`` per channel (:func:`pixel_box`); images are clamped after every step (None: no clamp).
        extra_losses: callables ``f(LossInputs) -> () tensor`` added to each chunk's loss (TV/L2 priors, ...).
        mask: gradient multiplier, (N, 1, H, W) or (N, C, H, W) (NRR-DD's non-critical-region mask); a pixel whose
            mask is 0 from the start never moves except by the clamp.
        batch_groups: groups per forward (0: all at once); only memory and speed depend on it.
        amp: run the teachers under ``torch.autocast`` (bfloat16) on CUDA; refused on other devices.
        exp_avg, exp_avg_sq: Adam moments to continue from (None: zeros).

    Shape:
        images: (N, C, H, W) float32; labels, groups: (N,) int64.
    """

    teachers: Sequence[Any]
    images: torch.Tensor
    labels: torch.Tensor
    groups: torch.Tensor | None = None
    num_iterations: int = 1000
    lr: float = 0.25
    betas: tuple[float, float] = (0.5, 0.9)
    eps: float = 1e-8
    r_bn: float = 0.01
    first_bn_multiplier: float = 10.0
    layer_weights: Sequence[Sequence[float] | None] | None = None
    teacher_weights: Sequence[float] | None = None
    augment: RecoverAugment | None = None
    box: tuple[torch.Tensor, torch.Tensor] | None = None
    extra_losses: Sequence[ExtraLoss] = ()
    mask: torch.Tensor | None = None
    batch_groups: int = 0
    amp: bool = False
    exp_avg: torch.Tensor | None = None
    exp_avg_sq: torch.Tensor | None = None
    iteration: int = 0
    modules: list[nn.Module] = field(init=False)

    def __post_init__(self) -> None:
        self.modules = [t if isinstance(t, nn.Module) else getattr(t, "module", None) for t in self.teachers]
        if not self.modules or not all(isinstance(m, nn.Module) for m in self.modules):
            raise ArgumentTypeError("Recovery needs teachers as nn.Modules or Teacher objects (with .module)")
        for i, m in enumerate(self.modules):
            check_batchnorm(m, f"teacher {i}")
            m.eval().requires_grad_(False)  # SRe2L: model_teacher.eval(); p.requires_grad = False
        if not isinstance(self.images, torch.Tensor) or self.images.ndim != 4 or not self.images.is_floating_point():
            raise ArgumentTypeError("images must be a float tensor of shape (N, C, H, W)")
        n = self.images.shape[0]
        dev = self.images.device
        self.labels = self.labels.to(dev, torch.long)
        if self.labels.shape != (n,):
            raise MismatchError(f"labels have shape {tuple(self.labels.shape)}, expected ({n},) for {n} images")
        if self.groups is None:
            self.groups = torch.zeros(n, dtype=torch.long, device=dev)
        self.groups = self.groups.to(dev, torch.long)
        if self.groups.shape != (n,) or (n and int(self.groups.min()) < 0):
            raise MismatchError(f"groups must be ({n},) non-negative ints, got shape {tuple(self.groups.shape)}")
        self.num_groups = int(self.groups.max()) + 1 if n else 0
        k = len(self.modules)
        weights = [1.0 / k] * k if self.teacher_weights is None else [float(w) for w in self.teacher_weights]
        if len(weights) != k or any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(f"teacher_weights must be {k} finite non-negative numbers, not all 0; got {weights}")
        self.weights = weights
        if self.mask is not None:
            self.mask = self.mask.to(dev, self.images.dtype)
            if self.mask.ndim != 4 or self.mask.shape[0] != n or self.mask.shape[1] not in (1, self.images.shape[1]):
                raise MismatchError(
                    f"mask has shape {tuple(self.mask.shape)}, expected ({n}, 1 or {self.images.shape[1]}, H, W)"
                )
        if self.amp and dev.type != "cuda":
            raise ConfigError(f"amp=True runs torch.autocast on CUDA only; the images are on {dev}: set amp=False")
        if self.batch_groups < 0:
            raise ConfigError(f"batch_groups must be >= 0 (0: all groups in one forward), got {self.batch_groups}")
        if self.exp_avg is None:
            self.exp_avg = torch.zeros_like(self.images)
        if self.exp_avg_sq is None:
            self.exp_avg_sq = torch.zeros_like(self.images)
        self.hook = BNStatHook(self.modules, self.first_bn_multiplier, self.layer_weights)
        if self.box is not None:
            lo, hi = (b.to(dev, self.images.dtype).reshape(1, -1, 1, 1) for b in self.box)
            self._box = (lo, hi)

    def _chunks(self) -> list[list[int]]:
        size = self.batch_groups or max(1, self.num_groups)
        return [list(range(s, min(s + size, self.num_groups))) for s in range(0, self.num_groups, size)]

    def gradient(self, gen: torch.Generator, iteration: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss gradient w.r.t. all images at the current images, chunk by chunk, and the per-group terms.

        Returns:
            ``(grad, terms)``: grad like ``images``; terms ``ce``, ``bn`` (weighted over teachers), ``extra``
            (per chunk, summed) and ``correct`` (images the first teacher classifies right), as tensors.
        """
        aug = self.augment or RecoverAugment()
        params = aug.draw(self.num_groups, tuple(self.images.shape[-2:]), gen)
        grad = torch.zeros_like(self.images)
        ce_g = torch.zeros(self.num_groups, device=self.images.device)
        bn_g = torch.zeros(self.num_groups, device=self.images.device)
        extra = torch.zeros((), device=self.images.device)
        correct = torch.zeros((), device=self.images.device)
        dev = self.images.device
        with self.hook:
            for chunk in self._chunks():
                lo, hi = chunk[0], chunk[-1]
                sel = ((self.groups >= lo) & (self.groups <= hi)).nonzero().squeeze(1)
                order = torch.argsort(self.groups[sel], stable=True)
                idx = sel[order]  # the chunk's images, sorted by group
                if idx.numel() == 0:
                    continue
                g_glob = self.groups[idx]
                g_loc = g_glob - lo
                ng = hi - lo + 1
                x = self.images[idx].detach().requires_grad_(True)
                y = self.labels[idx]
                xa = aug.apply(x, g_glob, params)
                self.hook.set_groups(g_loc, ng)
                seg = _segment_matrix(g_loc, ng, torch.float32)
                logits, total = [], torch.zeros((), device=dev)
                for t, (m, w) in enumerate(zip(self.modules, self.weights)):
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
                        out = m(xa)
                    out = out.float()
                    logits.append(out)
                    ce = seg @ F.cross_entropy(out, y, reduction="none")  # (ng,) mean CE of each group
                    bn = self.hook.module_losses(t)  # (ng,)
                    total = total + w * (ce.sum() + self.r_bn * bn.sum())
                    ce_g[lo : hi + 1] += w * ce.detach()
                    bn_g[lo : hi + 1] += w * bn.detach()
                    if t == 0:
                        correct = correct + (out.argmax(1) == y).sum()
                if self.extra_losses:
                    inp = LossInputs(x, xa, y, g_glob, logits, self.num_groups, iteration)
                    for f in self.extra_losses:
                        e = f(inp)
                        total = total + e
                        extra = extra + e.detach()
                (gx,) = torch.autograd.grad(total, x)
                grad[idx] = gx
                self.hook.set_groups(None)
        return grad, {"ce": ce_g, "bn": bn_g, "extra": extra, "correct": correct}

    def step(self, gen: torch.Generator, iteration: int | None = None, lr: float | None = None) -> dict[str, float]:
        """One iteration: augment, forward every teacher, gradient, mask, Adam step at the cosine lr, clamp.

        Args:
            gen: the only source of randomness (augmentation draws).
            iteration: 0-based iteration (None: the internal counter); sets the lr and Adam's step count.
            lr: base lr of the schedule (None: ``self.lr``; a matcher passes its current, maybe reduced, value).

        Returns:
            ``loss`` (per-group mean of the optimized loss), ``ce`` and ``bn`` (per-group means, teacher-weighted;
            ``bn`` before ``r_bn``), ``acc`` (first teacher on the augmented images), ``lr`` (this step's).
        """
        it = self.iteration if iteration is None else int(iteration)
        lr_t = cosine_lr(self.lr if lr is None else float(lr), it, self.num_iterations)
        grad, terms = self.gradient(gen, it)
        if self.mask is not None:
            grad = grad * self.mask
        adam_(self.images, self.exp_avg, self.exp_avg_sq, grad, lr_t, it + 1, self.betas, self.eps)
        if self.box is not None:
            with torch.no_grad():
                torch.maximum(self.images, self._box[0], out=self.images)
                torch.minimum(self.images, self._box[1], out=self.images)
        self.iteration = it + 1
        g = max(1, self.num_groups)
        ce, bn = terms["ce"].sum() / g, terms["bn"].sum() / g
        loss = ce + self.r_bn * bn + terms["extra"] / g
        acc = terms["correct"] / max(1, self.images.shape[0])
        vals = torch.stack([loss, ce, bn, acc.float()]).tolist()
        return {"loss": vals[0], "ce": vals[1], "bn": vals[2], "acc": vals[3], "lr": lr_t}


def recover(
    teachers: Any,
    images: torch.Tensor,
    labels: torch.Tensor,
    groups: torch.Tensor | None = None,
    *,
    num_iterations: int,
    generator: torch.Generator,
    log: list[dict[str, float]] | None = None,
    **settings: Any,
) -> torch.Tensor:
    """Run ``num_iterations`` steps of :class:`Recovery` and return the recovered images (a new tensor).

    Args:
        teachers: one teacher (module or :class:`~condense.teachers.Teacher`) or a sequence of them.
        images, labels, groups: as :class:`Recovery`; ``images`` is not modified.
        num_iterations: iterations (and the cosine schedule's length).
        generator: the only source of randomness.
        log: when given, each step's stats are appended to it.
        **settings: any other :class:`Recovery` argument (lr, r_bn, augment, box, mask, extra_losses, ...).

    Shape:
        images: (N, C, H, W); labels, groups: (N,); return: (N, C, H, W).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(3))
        >>> _ = net(torch.randn(2, 1, 6, 6)); net = net.eval()
        >>> out = recover(net, torch.randn(3, 1, 6, 6), torch.arange(3), num_iterations=2,
        ...               generator=torch.Generator().manual_seed(0))
        >>> out.shape
        torch.Size([3, 1, 6, 6])
    """
    if not isinstance(generator, torch.Generator):
        raise ArgumentTypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if isinstance(num_iterations, bool) or not isinstance(num_iterations, int) or num_iterations < 0:
        raise ConfigError(f"num_iterations must be an int >= 0, got {num_iterations!r}")
    if isinstance(teachers, (nn.Module,)) or hasattr(teachers, "module"):
        teachers = [teachers]
    rec = Recovery(list(teachers), images.detach().clone(), labels, groups, num_iterations=num_iterations, **settings)
    for _ in range(num_iterations):
        stats = rec.step(generator)
        if log is not None:
            log.append(stats)
    return rec.images


def _speed(model: str, shape: tuple[int, int, int], n: int, iters: int, **kwargs: Any) -> float:
    """Images per second of :meth:`Recovery.step` (forward + backward + Adam) on the CPU after one warm-up step."""
    import time

    from condense.models import create_model

    c, h, w = shape
    net = create_model(model, in_channels=c, num_classes=10, image_size=(h, w), seed=0, **kwargs)
    net.train()
    with torch.no_grad():  # give the BN layers non-trivial running statistics
        for _ in range(3):
            net(torch.randn(64, c, h, w))
    net.eval()
    gen = torch.Generator().manual_seed(0)
    rec = Recovery(
        [net],
        torch.randn(n, c, h, w, generator=gen, device=gen.device),
        torch.arange(n) % 10,
        torch.arange(n) // 10,
        num_iterations=iters + 1,
        augment=RecoverAugment(jitter=max(1, h // 8)),
    )
    rec.step(gen)
    t0 = time.perf_counter()
    for _ in range(iters):
        rec.step(gen)
    return n * iters / (time.perf_counter() - t0)


def _iter_cases() -> Iterable[tuple[str, str, tuple[int, int, int], dict[str, Any]]]:
    yield "digits 8x8, convnet_bn w64 d2", "convnet_bn", (1, 8, 8), {"width": 64, "depth": 2}
    yield "3x32x32, convnet_bn w128 d3", "convnet_bn", (3, 32, 32), {}
    yield "3x32x32, resnet18_bn", "resnet18_bn", (3, 32, 32), {}


if __name__ == "__main__":  # pragma: no cover  (the speed figures of the module docstring)
    torch.set_num_threads(1)
    for label, model, shape, kw in _iter_cases():
        print(f"{label}: {_speed(model, shape, 100, 5, **kw):.0f} images/s")
