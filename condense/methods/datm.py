"""DATM: Towards Lossless Dataset Distillation via Difficulty-Aligned Trajectory Matching (Guo et al., ICLR 2024,
arXiv:2310.05773).

Algorithm (``NUS-HPC-AI-Lab/DATM:distill/DATM.py``): MTT on FTD's flat experts, with

1. init: per class, real images that an expert's final checkpoint classifies correctly (``init="correct"``);
   soft labels = the mean logits of the experts that classify each chosen image correctly;
2. the start epoch t ~ U{min..UB-1}, where UB grows linearly from ``current_max_start_epoch`` to
   ``max_start_epoch`` over ``expansion_end_iterations`` ("sequential generation": easy, early trajectories first);
3. N student steps with soft cross-entropy -sum softmax(y) log_softmax(f(x)) against the learnable logits y;
4. L = MTT's normalized distance; if L > ``threshold`` the iteration applies no update;
5. otherwise SGD on X (lr_img, momentum 0.5), alpha (lr_lr, momentum 0.5) and y (lr_y, momentum 0.9).

Defaults: DATM's CIFAR-10 IPC 10 config (``configs/CIFAR-10/ConvIN/IPC10.yaml``) and ``utils/cfg.py``; presets: the
configs at HEAD (reference/trajectory.md Section 4.2), 10000 iterations, ZCA on (load the data with ``zca=True``).

Differences from the authors' code:

- Correct-sample init walks the buffer's experts in id order (the code hard-codes 10 files x 10 experts) and draws
  the images of each class at random with the run's generator; soft labels average at most ``num_label_experts``
  experts (the code: all of them).
- ``ema_decay`` of the configs is unused by the code and absent here.
- Those of MTT (alpha clamped positive, NaN rollback, random expert per iteration, final state saved with alpha and
  the logit labels; ``meta["temperature"] = 1`` so the shared evaluation trains with softmax(y) targets).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from condense.config import check_range
from condense.errors import ConfigError
from condense.methods._trajectory import DIGITS_PRESET, TrajectoryConfig, TrajectoryMatcher, expert_logits
from condense.methods.base import MatchState, register_method

__all__ = ["DATM", "DATMConfig", "PRESETS"]


@dataclass(frozen=True, kw_only=True)
class DATMConfig(TrajectoryConfig):
    """DATM hyperparameters (defaults: ``configs/CIFAR-10/ConvIN/IPC10.yaml`` and ``utils/cfg.py``)."""

    num_iterations: int = 10000  # all DATM configs
    syn_steps: int = 80  # N (C10-10)
    expert_epochs: int = 2  # M (C10-10)
    min_start_epoch: int = 0  # lower end of the window (C10-10)
    current_max_start_epoch: int = 10  # UB at iteration 0 (C10-10)
    max_start_epoch: int = 20  # UB after the expansion (C10-10)
    expansion_end_iterations: int = 1000  # iterations over which UB grows (C10-10 expansion_end_epoch)
    sequential_generation: bool = True  # grow the window (utils/cfg.py Sequential_Generation default True)
    lr_img: float = 100.0  # (C10-10)
    lr_lr: float = 1e-5  # (C10-10)
    lr_teacher: float = 0.01  # alpha_0 (all configs)
    batch_syn: int | None = 100  # (C10-10 after the 2024-04 fix)
    init: str = "correct"  # samples_predicted_correctly (all configs but C100-50)
    expert_kind: str = "flat"  # FTD's GSAM buffers (README)
    soft_labels: bool = True  # learnable logit labels (DATM Section 3.3)
    lr_y: float = 2.0  # SGD lr on the logits (C10-10 lr_y)
    momentum_y: float = 0.9  # SGD momentum on the logits (Momentum_y, all configs)
    threshold: float = 1.0  # skip the update when the loss exceeds it (C10-1: 1.1)
    num_label_experts: int | None = None  # experts averaged for the soft labels; None: all (the code: all)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.min_start_epoch < self.current_max_start_epoch <= self.max_start_epoch:
            raise ConfigError(
                f"need min_start_epoch < current_max_start_epoch <= max_start_epoch, got {self.min_start_epoch}, "
                f"{self.current_max_start_epoch}, {self.max_start_epoch}"
            )
        check_range("expansion_end_iterations", self.expansion_end_iterations, 1)
        check_range("lr_y", self.lr_y, 0.0)
        check_range("threshold", self.threshold, 0.0, lo_open=True)
        if not 0.0 <= self.momentum_y < 1.0:
            raise ConfigError(f"momentum_y={self.momentum_y} must lie in [0, 1)")
        if self.num_label_experts is not None:
            check_range("num_label_experts", self.num_label_experts, 1)


@register_method("datm")
class DATM(TrajectoryMatcher):
    """Difficulty-Aligned Trajectory Matching (Guo et al., ICLR 2024, arXiv:2310.05773)."""

    Config = DATMConfig
    demo_buffer = {**TrajectoryMatcher.demo_buffer, "kind": "flat"}

    def start_window(self, cfg: DATMConfig, it: int) -> tuple[int, int]:
        """DATM Sequential_Generation: UB = min(cur + floor((max - cur) * it / expansion_end), max)."""
        if not cfg.sequential_generation:
            return cfg.min_start_epoch, cfg.max_start_epoch
        cur, top = cfg.current_max_start_epoch, cfg.max_start_epoch
        ub = min(cur + (top - cur) * it // cfg.expansion_end_iterations, top)
        return cfg.min_start_epoch, ub

    def accept(self, loss: float, cfg: DATMConfig) -> bool:
        return loss <= cfg.threshold

    def label_lr(self, cfg: DATMConfig) -> tuple[float, float]:
        return cfg.lr_y, cfg.momentum_y

    @torch.no_grad()
    def init_labels(self, state: MatchState, cfg: DATMConfig, hard: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Soft logit labels: the mean final-checkpoint logits of the experts that classify each image correctly
        (``init="correct"``), or one expert's logits otherwise (DATM with ``pix_init: real``)."""
        if not cfg.soft_labels:
            return hard
        rt = state.runtime
        buf, model, layout = rt["buffer"], rt["model"], rt["layout"]
        images = state.tensors["images"]
        ids = buf.expert_ids if cfg.init == "correct" else buf.expert_ids[:1]
        if cfg.num_label_experts is not None:
            ids = ids[: cfg.num_label_experts]
        total = torch.zeros(images.shape[0], len(rt["data"].classes), device=images.device)
        count = torch.zeros(images.shape[0], 1, device=images.device)
        for eid in ids:
            logits = expert_logits(model, layout, buf.snapshot(eid, -1), images).float()
            ok = (logits.argmax(1) == hard).float()[:, None] if cfg.init == "correct" else torch.ones_like(count)
            total += logits * ok
            count += ok
        if bool((count == 0).any()):
            # an image no expert gets right (only possible for init != "correct"): fall back to its first expert
            first = expert_logits(model, layout, buf.snapshot(ids[0], -1), images).float()
            total = torch.where(count == 0, first, total)
            count = count.clamp(min=1)
        return (total / count).contiguous()


# ----------------------------------------------------------------------------------------------------------------------
# Presets: configs/<dataset>/ConvIN/IPC*.yaml at HEAD (reference/trajectory.md 4.2). "fixed" windows turn
# sequential_generation off; growing ones start at current_max_start_epoch.
# ----------------------------------------------------------------------------------------------------------------------

_SRC = "DATM configs/{ds}/ConvIN/IPC{ipc}.yaml at HEAD 97ae510 (reference/trajectory.md 4.2)"


def _p(ds, ipc, n, m, lo, cur, top, grow, lr_img, lr_lr, lr_y, batch, init="correct", threshold=1.0) -> dict:
    d = dict(
        syn_steps=n,
        expert_epochs=m,
        min_start_epoch=lo,
        current_max_start_epoch=cur if grow else top,
        max_start_epoch=top,
        sequential_generation=grow is not None,
        lr_img=float(lr_img),
        lr_lr=lr_lr,
        lr_y=float(lr_y),
        batch_syn=batch,
        init=init,
        threshold=threshold,
        source=_SRC.format(ds=ds, ipc=ipc),
    )
    if grow:
        d["expansion_end_iterations"] = grow
    return d


_DIGITS = {
    **DIGITS_PRESET,
    "min_start_epoch": 0,
    "current_max_start_epoch": 2,
    "expansion_end_iterations": 30,
    "lr_y": 2.0,
}
PRESETS: dict[str, dict] = {
    "cifar10-ipc1": _p("CIFAR-10", 1, 80, 2, 0, None, 4, None, 100, 1e-7, 5, 10, threshold=1.1),
    "cifar10-ipc10": _p("CIFAR-10", 10, 80, 2, 0, 10, 20, 1000, 100, 1e-5, 2, 100),
    "cifar10-ipc50": _p("CIFAR-10", 50, 80, 2, 0, 20, 40, 2000, 1000, 1e-5, 2, 500),
    "cifar10-ipc500": _p("CIFAR-10", 500, 40, 2, 40, None, 60, None, 50, 1e-5, 10, 1000),
    "cifar10-ipc1000": _p("CIFAR-10", 1000, 100, 2, 40, None, 60, None, 50, 1e-5, 10, 1000),
    "cifar100-ipc1": _p("CIFAR-100", 1, 40, 3, 0, 10, 20, 1000, 1000, 1e-5, 10, 100),
    "cifar100-ipc10": _p("CIFAR-100", 10, 80, 2, 0, 30, 50, 2000, 1000, 1e-5, 10, 1000),
    "cifar100-ipc50": _p("CIFAR-100", 50, 80, 2, 20, None, 70, None, 1000, 1e-5, 10, 1000, init="real"),
    "cifar100-ipc100": _p("CIFAR-100", 100, 80, 2, 30, None, 70, None, 50, 1e-5, 10, 1000),
    "tinyimagenet-ipc1": _p("TinyImageNet", 1, 40, 2, 0, 15, 20, 2000, 10000, 1e-4, 10, 200),
    "tinyimagenet-ipc10": _p("TinyImageNet", 10, 40, 2, 10, None, 50, None, 100, 1e-4, 10, 500),
    "tinyimagenet-ipc50": _p("TinyImageNet", 50, 20, 2, 40, None, 70, None, 100, 1e-4, 10, 1000),
    # digits: the shared preset (``_trajectory.DIGITS_PRESET``, on a flat buffer) plus DATM's window and labels
    "digits-ipc1": {**_DIGITS, "batch_syn": None, "threshold": 1.1},
    "digits-ipc10": {**_DIGITS, "batch_syn": 50, "threshold": 1.0},
}
DATM.presets = PRESETS
