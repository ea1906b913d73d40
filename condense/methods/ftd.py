"""FTD: Minimizing the Accumulated Trajectory Error to Improve Dataset Distillation (Du et al., CVPR 2023,
arXiv:2211.11004).

Algorithm (``AngusDujw/FTD-distillation:distill/distill_FTD.py``): MTT's loop on *flat* experts, plus an EMA of the
synthetic images.

1. Experts are trained with GSAM (rho 0.01, surrogate-gap weight alpha 0.3 or 1) so their trajectories lie in flat
   regions; record them with ``record_experts(..., kind="flat")`` (the buffer's kind is checked).
2. Each iteration: draw an expert and t ~ U{0..T+ - 1}; unroll N student steps on DSA-augmented X with step alpha.
3. L = ||theta_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2; SGD (momentum 0.5) on X and alpha.
4. After each update, EMA <- d * EMA + (1 - d) * X (timm ``ModelEmaV2``, no warm-up or bias correction).
5. The EMA images are what is evaluated and saved.

Defaults: MTT's argparse defaults (shared with :class:`~condense.methods._trajectory.TrajectoryConfig`) plus
``ema_decay``; presets: FTD Table 7 (``docs/parameters.png``, transcribed in reference/trajectory.md Section 3.2),
5000 iterations (``distill/run_distill.sh``). Tiny ImageNet IPC 50 has no FTD setting.

Differences from the authors' code: those of MTT (see ``mtt.py``: alpha clamped positive, NaN rollback, random
expert per iteration, final state not best-on-test); only the EMA images are kept (the code evaluates and saves both
raw and EMA images); the GSAM settings belong to the buffer, not to this config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from condense.errors import ConfigError
from condense.methods._trajectory import DIGITS_PRESET, TrajectoryConfig, TrajectoryMatcher
from condense.methods.base import MatchState, RunContext, register_method

__all__ = ["FTD", "FTDConfig", "PRESETS"]


@dataclass(frozen=True, kw_only=True)
class FTDConfig(TrajectoryConfig):
    """FTD hyperparameters: the trajectory fields (MTT defaults) plus the image EMA."""

    expert_kind: str = "flat"  # FTD matches GSAM-trained experts (buffer/buffer_FTD.py)
    ema_decay: float = 0.9995  # d, EMA decay of the synthetic images (FTD Table 7, CIFAR-10 IPC 10)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay={self.ema_decay} must lie in [0, 1)")


@register_method("ftd")
class FTD(TrajectoryMatcher):
    """Flat Trajectory Distillation (Du et al., CVPR 2023, arXiv:2211.11004): MTT on GSAM experts + image EMA."""

    Config = FTDConfig
    demo_buffer = {**TrajectoryMatcher.demo_buffer, "kind": "flat"}

    def init_state(self, data: Any, cfg: FTDConfig, ipc: int, gen: torch.Generator, run: RunContext) -> MatchState:
        state = super().init_state(data, cfg, ipc, gen, run)
        state.tensors["ema_images"] = state.tensors["images"].detach().clone()
        return state

    def after_update(self, state: MatchState, cfg: FTDConfig) -> None:
        # ModelEmaV2.update: ema = d * ema + (1 - d) * x
        with torch.no_grad():
            state.tensors["ema_images"].lerp_(state.tensors["images"], 1.0 - cfg.ema_decay)

    def final_images(self, state: MatchState) -> torch.Tensor:
        return state.tensors["ema_images"]


# ----------------------------------------------------------------------------------------------------------------------
# Presets: FTD Table 7 (reference/trajectory.md 3.2). ZCA on for CIFAR-10 IPC 1/10 and CIFAR-100 as MTT's settings.
# ----------------------------------------------------------------------------------------------------------------------


def _p(n, m, t, lr_img, lr_lr, lr_teacher, ema, batch=None) -> dict:
    d = dict(
        syn_steps=n,
        expert_epochs=m,
        max_start_epoch=t,
        lr_img=float(lr_img),
        lr_lr=lr_lr,
        lr_teacher=lr_teacher,
        ema_decay=ema,
        source="FTD paper Table 7 (docs/parameters.png), reference/trajectory.md 3.2",
    )
    if batch is not None:
        d["batch_syn"] = batch
    return d


PRESETS: dict[str, dict] = {
    "cifar10-ipc1": _p(50, 2, 2, 100, 1e-7, 0.01, 0.9999),
    "cifar10-ipc10": _p(30, 2, 20, 100, 1e-5, 0.001, 0.9995),
    "cifar10-ipc50": _p(30, 2, 40, 1000, 1e-5, 0.01, 0.999),
    "cifar100-ipc1": _p(40, 3, 20, 1000, 1e-5, 0.01, 0.9995),
    "cifar100-ipc10": _p(20, 2, 40, 1000, 1e-5, 0.01, 0.9995),
    "cifar100-ipc50": _p(80, 2, 40, 1000, 1e-5, 0.01, 0.999, batch=1000),
    "tinyimagenet-ipc1": _p(30, 2, 10, 10000, 1e-4, 0.01, 0.999),
    "tinyimagenet-ipc10": _p(20, 2, 40, 10000, 1e-4, 0.01, 0.999, batch=500),
    # digits: the shared preset (``_trajectory.DIGITS_PRESET``, on a flat buffer) plus the EMA of the images
    "digits-ipc1": {**DIGITS_PRESET, "ema_decay": 0.9},
    "digits-ipc10": {**DIGITS_PRESET, "ema_decay": 0.9, "batch_syn": 50},
}
FTD.presets = PRESETS
