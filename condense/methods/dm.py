"""DM: Dataset Condensation with Distribution Matching (Zhao & Bilen, WACV 2023, arXiv:2110.04181).

Algorithm (paper Sec. 3.2, Eq. 5; ``VICO-UoE/DatasetCondensation:main_DM.py``), per iteration:

1. sample a freshly initialized embedding network psi_theta (ConvNet-3 by default; never trained);
2. for every class c draw a real batch B_c (``batch_real`` images) and take the class's synthetic images S_c;
3. apply the same DSA transform A_omega_c to both (Siamese, one draw per class);
4. loss = sum_c || mean psi(A(B_c)) - mean psi(A(S_c)) ||^2 (maximum mean discrepancy with a linear kernel);
5. one SGD step with momentum on the synthetic pixels.

Defaults are the authors' code (``main_DM.py``: 20000 iterations, lr_img 1.0, momentum 0.5, batch_real 256, real
init, DSA ``color_crop_cutout_flip_scale_rotate``); presets cite the paper's Table 1.

FYI (``fyi=True``; Son et al., "FYI: Flip Your Images for Dataset Distillation", ECCV 2024, arXiv:2407.08113,
``cvlab-yonsei/FYI:DC_DSA_DM/main_DM.py``): per class, S_c (IPC images) becomes [S_c; flip_W S_c] (2 IPC images)
before the class's Siamese DSA draw, and the synthetic mean in Eq. 5 is taken over the 2 IPC images; the real batch
is unchanged. The stored set is the K*IPC images; evaluation is unchanged.

Differences from the authors' code:
    - All classes go through the embedding network in two forwards (real, synthetic) instead of one pair per
      class; with instance norm (no batch statistics) the features are identical. This is what the authors' code
      does for BN models anyway.
    - DSA parameters come from the run's generator (the code seeds the global RNG from the wall clock); each class
      still has its own Siamese draw.
    - Real batches have ``min(batch_real, smallest class)`` images for every class (the code: ``min(batch_real,
      size of class c)``); identical on balanced datasets.
    - The logged ``loss`` is the per-class average, as the code prints; the optimized loss is the sum.

Notation: ``images`` -> S (synthetic set), ``lr_img`` -> eta_S, embed -> psi_theta.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from condense.augment import check_flip_allowed, flip_concat, list_augments
from condense.config import check_choice, check_range, preset
from condense.data.base import ImageData
from condense.methods._classwise import INIT_MODES, init_images, real_data_runtime, siamese_augment
from condense.methods.base import Matcher, MatchState, RunContext, register_method
from condense.models import create_model_for
from condense.optim import sgd_
from condense.seeding import seed_from
from condense.synthetic import SyntheticSet

__all__ = ["DM", "DMConfig", "PRESETS", "dm_loss"]


@dataclass(frozen=True, kw_only=True)
class DMConfig:
    """Hyperparameters of DM; defaults from the authors' ``main_DM.py``."""

    model: str = "convnet"  # psi_theta, randomly initialized embedding network (main_DM.py --model ConvNet)
    num_iterations: int = 20000  # K, outer iterations (main_DM.py --Iteration 20000; paper Sec. 4.1)
    lr_img: float = 1.0  # eta_S, SGD learning rate on the synthetic pixels (main_DM.py --lr_img 1.0)
    momentum: float = 0.5  # SGD momentum on the pixels (main_DM.py: SGD([image_syn], momentum=0.5))
    batch_real: int = 256  # |B_c|, real images per class per iteration (main_DM.py --batch_real 256)
    init: str = "real"  # S initialization, "real" or "noise" (main_DM.py --init real)
    augment: str = "dsa"  # A_omega, condense.augment preset (main_DM.py --dsa_strategy: all six DSA groups)
    fyi: bool = False  # FYI: match the mean embedding of [S_c; flip_W S_c] (arXiv:2407.08113, main_DM.py)

    def __post_init__(self) -> None:
        check_range("num_iterations", self.num_iterations, 0)
        check_range("lr_img", self.lr_img, 0.0, lo_open=True)
        check_range("momentum", self.momentum, 0.0, 1.0)
        check_range("batch_real", self.batch_real, 1)
        check_choice("init", self.init, INIT_MODES)
        check_choice("augment", self.augment, list_augments())


# ----------------------------------------------------------------------------------------------------------------------
# Presets: algorithm values only (timm-style keyword data; keys "<dataset>-ipc<N>"). The paper uses the same
# hyperparameters for every dataset and IPC.
# ----------------------------------------------------------------------------------------------------------------------

_PAPER = dict(num_iterations=20000, lr_img=1.0, momentum=0.5, batch_real=256, init="real")
_SRC = "DM paper (arXiv:2110.04181) Table 1"
# sklearn digits (8x8): depth 2, because the depth-3 ConvNet pools 8x8 down to 1x1 (its features are channel means of
# a 2x2 map); depth 2 keeps a 2x2 map, as depth 3 keeps 4x4 on 32x32 CIFAR. The feature scale of an 8x8 embedding is
# small, so the pixel lr is 100x the paper's to move the images within a few hundred iterations.
_DIGITS = dict(
    model="convnetd2", num_iterations=300, lr_img=100.0, momentum=0.5, batch_real=32, init="real", augment="dsa_noflip"
)
_DIGITS_SRC = "condense: tuned on sklearn digits for a CPU test (tests/methods/test_dm.py); not from the paper"

PRESETS: dict[str, dict[str, Any]] = {
    "cifar10-ipc1": preset(source=f"{_SRC}, CIFAR-10 IPC 1: 26.0 +- 0.8%", **_PAPER),
    "cifar10-ipc10": preset(source=f"{_SRC}, CIFAR-10 IPC 10: 48.9 +- 0.6%", **_PAPER),
    "cifar10-ipc50": preset(source=f"{_SRC}, CIFAR-10 IPC 50: 63.0 +- 0.4%", **_PAPER),
    "cifar100-ipc1": preset(source=f"{_SRC}, CIFAR-100 IPC 1: 11.4 +- 0.3%", **_PAPER),
    "cifar100-ipc10": preset(source=f"{_SRC}, CIFAR-100 IPC 10: 29.7 +- 0.3%", **_PAPER),
    "mnist-ipc1": preset(
        source=f"{_SRC}, MNIST IPC 1: 89.7 +- 0.6% (no flip for digits, DC code)", **_PAPER, augment="dsa_noflip"
    ),
    "mnist-ipc10": preset(
        source=f"{_SRC}, MNIST IPC 10: 97.5 +- 0.1% (no flip for digits, DC code)", **_PAPER, augment="dsa_noflip"
    ),
    "mnist-ipc50": preset(
        source=f"{_SRC}, MNIST IPC 50: 98.6 +- 0.1% (no flip for digits, DC code)", **_PAPER, augment="dsa_noflip"
    ),
    "digits-ipc1": preset(source=_DIGITS_SRC, **_DIGITS),
    "digits-ipc10": preset(source=_DIGITS_SRC, **_DIGITS),
}


@register_method("dm")
class DM(Matcher):
    """Distribution Matching (Zhao & Bilen, WACV 2023, arXiv:2110.04181).

    State: ``tensors = {"images": (K*ipc, C, H, W), "labels": (K*ipc,), "momentum": like images}``,
    ``scalars = {"lr_img", "ipc"}``. The embedding network is rebuilt every step from a seed drawn from the
    generator, so nothing else needs saving.

    Example:
        >>> from condense import distill, load_dataset  # doctest: +SKIP
        >>> syn = distill("dm", load_dataset("digits"), ipc=10)  # doctest: +SKIP
    """

    Config = DMConfig
    presets = PRESETS

    def init_state(self, data: ImageData, cfg: DMConfig, ipc: int, gen: torch.Generator, run: RunContext) -> MatchState:
        if cfg.fyi:
            check_flip_allowed(data.name, f"{self.name} fyi=True")
        device = torch.device(run.device)
        images, labels = init_images(data, ipc, cfg.init, gen)
        images = images.to(device)
        state = MatchState(
            tensors={"images": images, "labels": labels.to(device), "momentum": torch.zeros_like(images)},
            scalars={"lr_img": float(cfg.lr_img), "ipc": int(ipc)},
        )
        self.restore_runtime(state, data, cfg, run)
        return state

    def restore_runtime(self, state: MatchState, data: ImageData, cfg: DMConfig, run: RunContext) -> None:
        state.runtime.update(real_data_runtime(data, cfg, run.device))

    def step(self, state: MatchState, it: int, gen: torch.Generator) -> dict[str, float]:
        rt = state.runtime
        cfg: DMConfig = rt["cfg"]
        data: ImageData = rt["data"]
        k, ipc = data.num_classes, int(state.scalars["ipc"])
        images, buf = state.tensors["images"], state.tensors["momentum"]

        net = create_model_for(cfg.model, data, seed=seed_from(gen), device=rt["device"]).train().requires_grad_(False)
        real = rt["x_train"][rt["sampler"].sample(cfg.batch_real, gen)]  # (K, B, C, H, W)
        syn = images.detach().requires_grad_(True)
        syn_c = syn.view(k, ipc, *images.shape[1:])  # (K, IPC, C, H, W)
        if cfg.fyi:  # FYI: S_c -> [S_c; flip S_c] before the Siamese draw; dL/dS = g_1 + flip(g_2)
            syn_c, _ = flip_concat(syn_c, dim=1)
        real_aug, syn_aug = siamese_augment(rt["aug"], real, syn_c, gen)
        loss = dm_loss(net, real_aug, syn_aug)
        (grad,) = torch.autograd.grad(loss, syn)

        lr = float(state.scalars["lr_img"])
        sgd_(
            images, buf, grad, lr, momentum=cfg.momentum
        )  # torch.optim.SGD([S], momentum): buf = m*buf + g; S -= lr*buf
        return {"loss": float(loss.detach()) / k, "lr_img": lr}

    def to_synthetic(self, state: MatchState) -> SyntheticSet:
        rt = state.runtime
        return SyntheticSet.from_tensors(
            state.tensors["images"],
            state.tensors["labels"],
            rt["data"],
            self.name,
            int(state.scalars["ipc"]),
            rt["cfg"],
        )


def dm_loss(net: torch.nn.Module, real: torch.Tensor, syn: torch.Tensor) -> torch.Tensor:
    """Eq. 5 summed over classes: ``sum_c || mean_i psi(real[c, i]) - mean_j psi(syn[c, j]) ||^2``.

    The real features are computed without a graph (they are constants of the objective); each side goes through
    ``net.embed`` in one forward for all classes.

    Shape:
        real: (K, B, C, H, W); syn: (K, S, C, H, W); return: () scalar.
    """
    k = real.shape[0]
    with torch.no_grad():
        mu_real = net.embed(real.flatten(0, 1)).view(k, real.shape[1], -1).mean(1)
    mu_syn = net.embed(syn.flatten(0, 1)).view(k, syn.shape[1], -1).mean(1)
    return (mu_real - mu_syn).pow(2).sum()
