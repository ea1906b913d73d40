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

Shape: :class:`DATM` subclasses :class:`~condense.methods.mtt.MTT`, adds ``init_correct`` to its
``expert_inits`` (1, correct samples) and overrides ``init_state`` (1, soft labels), ``start_window`` (2, the growing
window) and ``update`` (4-5, the threshold and the label update); everything else is ``MTT.step``.

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
from typing import Any, ClassVar

import torch

from condense.config import check_range, preset
from condense.errors import ConfigError
from condense.methods._trajectory import expert_logits, init_correct
from condense.methods._unroll import MetaGrad
from condense.methods.base import MatchState, RunContext, register_method
from condense.methods.mtt import DIGITS_PRESET, MTT, MTTConfig, paper_buffer
from condense.optim import sgd_

__all__ = ["DATM", "DATMConfig", "PRESETS"]


@dataclass(frozen=True, kw_only=True)
class DATMConfig(MTTConfig):
    """DATM hyperparameters (defaults: ``configs/CIFAR-10/ConvIN/IPC10.yaml`` and ``utils/cfg.py``)."""

    inits: ClassVar[tuple[str, ...]] = ("real", "noise", "correct")

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
    lr_student_init: float | None = None  # alpha_0 (all configs: lr_teacher 0.01, set by the presets); None: buffer's
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


# ----------------------------------------------------------------------------------------------------------------------
# Presets: configs/<dataset>/ConvIN/IPC*.yaml at HEAD (reference/trajectory.md 4.2). A fixed window
# (sequential_generation=False) starts at its top, current_max_start_epoch = max_start_epoch; a growing one starts at
# current_max_start_epoch and reaches max_start_epoch after expansion_end_iterations. Fields a config leaves at the
# DATMConfig default (init="correct", threshold=1.0) are not repeated.
# ----------------------------------------------------------------------------------------------------------------------

_SRC = "DATM configs/{ds}/ConvIN/IPC{ipc}.yaml at HEAD 97ae510 (reference/trajectory.md 4.2)"

PRESETS: dict[str, dict[str, Any]] = {
    "cifar10-ipc1": preset(
        source=_SRC.format(ds="CIFAR-10", ipc=1),
        syn_steps=80,
        expert_epochs=2,
        min_start_epoch=0,
        current_max_start_epoch=4,
        max_start_epoch=4,
        sequential_generation=False,
        lr_img=100.0,
        lr_lr=1e-7,
        lr_y=5.0,
        batch_syn=10,
        threshold=1.1,
    ),
    "cifar10-ipc10": preset(
        source=_SRC.format(ds="CIFAR-10", ipc=10),
        syn_steps=80,
        expert_epochs=2,
        min_start_epoch=0,
        current_max_start_epoch=10,
        max_start_epoch=20,
        sequential_generation=True,
        expansion_end_iterations=1000,
        lr_img=100.0,
        lr_lr=1e-5,
        lr_y=2.0,
        batch_syn=100,
    ),
    "cifar10-ipc50": preset(
        source=_SRC.format(ds="CIFAR-10", ipc=50),
        syn_steps=80,
        expert_epochs=2,
        min_start_epoch=0,
        current_max_start_epoch=20,
        max_start_epoch=40,
        sequential_generation=True,
        expansion_end_iterations=2000,
        lr_img=1000.0,
        lr_lr=1e-5,
        lr_y=2.0,
        batch_syn=500,
    ),
    "cifar10-ipc500": preset(
        source=_SRC.format(ds="CIFAR-10", ipc=500),
        syn_steps=40,
        expert_epochs=2,
        min_start_epoch=40,
        current_max_start_epoch=60,
        max_start_epoch=60,
        sequential_generation=False,
        lr_img=50.0,
        lr_lr=1e-5,
        lr_y=10.0,
        batch_syn=1000,
    ),
    "cifar10-ipc1000": preset(
        source=_SRC.format(ds="CIFAR-10", ipc=1000),
        syn_steps=100,
        expert_epochs=2,
        min_start_epoch=40,
        current_max_start_epoch=60,
        max_start_epoch=60,
        sequential_generation=False,
        lr_img=50.0,
        lr_lr=1e-5,
        lr_y=10.0,
        batch_syn=1000,
    ),
    "cifar100-ipc1": preset(
        source=_SRC.format(ds="CIFAR-100", ipc=1),
        syn_steps=40,
        expert_epochs=3,
        min_start_epoch=0,
        current_max_start_epoch=10,
        max_start_epoch=20,
        sequential_generation=True,
        expansion_end_iterations=1000,
        lr_img=1000.0,
        lr_lr=1e-5,
        lr_y=10.0,
        batch_syn=100,
    ),
    "cifar100-ipc10": preset(
        source=_SRC.format(ds="CIFAR-100", ipc=10),
        syn_steps=80,
        expert_epochs=2,
        min_start_epoch=0,
        current_max_start_epoch=30,
        max_start_epoch=50,
        sequential_generation=True,
        expansion_end_iterations=2000,
        lr_img=1000.0,
        lr_lr=1e-5,
        lr_y=10.0,
        batch_syn=1000,
    ),
    "cifar100-ipc50": preset(
        source=_SRC.format(ds="CIFAR-100", ipc=50),
        syn_steps=80,
        expert_epochs=2,
        min_start_epoch=20,
        current_max_start_epoch=70,
        max_start_epoch=70,
        sequential_generation=False,
        lr_img=1000.0,
        lr_lr=1e-5,
        lr_y=10.0,
        batch_syn=1000,
        init="real",
    ),
    "cifar100-ipc100": preset(
        source=_SRC.format(ds="CIFAR-100", ipc=100),
        syn_steps=80,
        expert_epochs=2,
        min_start_epoch=30,
        current_max_start_epoch=70,
        max_start_epoch=70,
        sequential_generation=False,
        lr_img=50.0,
        lr_lr=1e-5,
        lr_y=10.0,
        batch_syn=1000,
    ),
    "tinyimagenet-ipc1": preset(
        source=_SRC.format(ds="TinyImageNet", ipc=1),
        syn_steps=40,
        expert_epochs=2,
        min_start_epoch=0,
        current_max_start_epoch=15,
        max_start_epoch=20,
        sequential_generation=True,
        expansion_end_iterations=2000,
        lr_img=10000.0,
        lr_lr=1e-4,
        lr_y=10.0,
        batch_syn=200,
    ),
    "tinyimagenet-ipc10": preset(
        source=_SRC.format(ds="TinyImageNet", ipc=10),
        syn_steps=40,
        expert_epochs=2,
        min_start_epoch=10,
        current_max_start_epoch=50,
        max_start_epoch=50,
        sequential_generation=False,
        lr_img=100.0,
        lr_lr=1e-4,
        lr_y=10.0,
        batch_syn=500,
    ),
    "tinyimagenet-ipc50": preset(
        source=_SRC.format(ds="TinyImageNet", ipc=50),
        syn_steps=20,
        expert_epochs=2,
        min_start_epoch=40,
        current_max_start_epoch=70,
        max_start_epoch=70,
        sequential_generation=False,
        lr_img=100.0,
        lr_lr=1e-4,
        lr_y=10.0,
        batch_syn=1000,
    ),
    # digits: MTT's digits preset (on a flat buffer) plus DATM's window, labels and threshold
    "digits-ipc1": {
        **DIGITS_PRESET,
        "min_start_epoch": 0,
        "current_max_start_epoch": 2,
        "expansion_end_iterations": 30,
        "lr_y": 2.0,
        "batch_syn": None,
        "threshold": 1.1,
    },
    "digits-ipc10": {
        **DIGITS_PRESET,
        "min_start_epoch": 0,
        "current_max_start_epoch": 2,
        "expansion_end_iterations": 30,
        "lr_y": 2.0,
        "batch_syn": 50,
        "threshold": 1.0,
    },
}

# Every DATM config: alpha_0 = lr_teacher 0.01, zca True, evaluation batch 128 (the "datm" protocol); Tiny ConvNetD4.
# The buffer is the README's: 100 GSAM experts (alpha 0.3) x 100 epochs, ZCA (``paper_buffer("datm", ...)``).
for _name in [k for k in PRESETS if not k.startswith("digits")]:
    _tiny = _name.startswith("tinyimagenet")
    PRESETS[_name]["lr_student_init"] = 0.01
    PRESETS[_name]["buffer"] = paper_buffer("datm", zca=True, model="convnetd4" if _tiny else "convnet")
    PRESETS[_name]["eval"] = {"protocol": "datm"}


@register_method("datm")
class DATM(MTT):
    """Difficulty-Aligned Trajectory Matching (Guo et al., ICLR 2024, arXiv:2310.05773).

    State: MTT's; with ``soft_labels`` the labels are (N, K) float logits with their momentum ``mom_labels``.
    """

    Config = DATMConfig
    presets = PRESETS
    expert_inits = {"correct": init_correct}  # step 1: real images an expert classifies correctly

    def init_state(self, data: Any, cfg: DATMConfig, ipc: int, gen: torch.Generator, run: RunContext) -> MatchState:
        """MTT's initial state with the hard labels replaced by learnable logits (:meth:`soft_labels`)."""
        state = super().init_state(data, cfg, ipc, gen, run)
        if cfg.soft_labels:
            labels = self.soft_labels(state, cfg, state.tensors["labels"])
            state.tensors["labels"] = labels
            state.tensors["mom_labels"] = torch.zeros_like(labels)
        return state

    @torch.no_grad()
    def soft_labels(self, state: MatchState, cfg: DATMConfig, hard: torch.Tensor) -> torch.Tensor:
        """Initial logit labels y: the mean final-checkpoint logits of the experts that classify each image
        correctly (``init="correct"``), or one expert's logits otherwise (DATM with ``pix_init: real``).

        Shape:
            hard: (N,) int64; return: (N, K) float32 logits.
        """
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

    def start_window(self, cfg: DATMConfig, it: int) -> tuple[int, int]:
        """Step 1: DATM's Sequential_Generation, UB = min(cur + floor((max - cur) * it / expansion_end), max)."""
        if not cfg.sequential_generation:
            return cfg.min_start_epoch, cfg.max_start_epoch
        cur, top = cfg.current_max_start_epoch, cfg.max_start_epoch
        ub = min(cur + (top - cur) * it // cfg.expansion_end_iterations, top)
        return cfg.min_start_epoch, ub

    def update(self, state: MatchState, mg: MetaGrad) -> bool:
        """Step 5: skip the iteration when L > ``threshold``; otherwise MTT's update of X and alpha, then SGD on the
        logit labels y (``lr_y``, ``momentum_y``; DATM Section 3.3)."""
        cfg = state.runtime["cfg"]
        if not mg.loss <= cfg.threshold:
            return False
        super().update(state, mg)
        if mg.labels is not None:
            t = state.tensors
            sgd_(t["labels"], t["mom_labels"], mg.labels, cfg.lr_y, cfg.momentum_y, fused=False)
        return True
