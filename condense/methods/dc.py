"""DC and DSA: dataset condensation by gradient matching, without and with Differentiable Siamese Augmentation.

References:
    Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient Matching", ICLR 2021, arXiv:2006.05929 (DC,
    Algorithm 1, Eq. 9-10 for the layer-wise distance).
    Zhao & Bilen, "Dataset Condensation with Differentiable Siamese Augmentation", ICML 2021, arXiv:2102.08259 (DSA,
    Eq. 4: the same transform on the real and synthetic batch of a class).

Algorithm (``VICO-UoE/DatasetCondensation:main.py``), per iteration:

1. sample a freshly initialized network theta_0 (ConvNet-3 by default);
2. repeat ``num_outer_loops`` times (T in the paper): for every class c, compute the gradient of the cross-entropy
   on a real batch B_c and on the synthetic images S_c (both under the same DSA draw for ``dsa``), and sum the
   layer-wise distance D(grad_S, grad_B) (Eq. 10: 1 - cosine per output unit); take one SGD step on the pixels;
3. between outer loops, train theta for ``inner_epochs`` epochs on the current synthetic set (SGD, lr_net).

Defaults are the authors' code (``main.py``: 1000 iterations, lr_img 0.1 with momentum 0.5, lr_net 0.01, batch_real
256, batch_train 256, noise init, ``dis_metric='ours'``; outer/inner loops from ``get_loops(ipc)``); presets cite the
papers' Table 1 (DC) / Table 2 (DSA). DSA starts from real images: its authors' command is ``python main.py --method
DSA ... --init real`` (``VICO-UoE/DatasetCondensation:readme.md``, the DSA usage line), while ``main.py``'s argparse
default, which DC's command keeps, is ``--init noise``.

FYI (``fyi=True``; Son et al., "FYI: Flip Your Images for Dataset Distillation", ECCV 2024, arXiv:2407.08113,
``cvlab-yonsei/FYI:DC_DSA_DM/main.py``): every synthetic batch is concatenated with its horizontal mirror before the
augmentation draw, labels repeated. (a) In the matching loss the class-c batch S_c (IPC images) becomes
[S_c; flip S_c] (2 IPC images) under the class's Siamese DSA draw; the real batch is unchanged. (b) The network
training between outer loops trains each minibatch as [S_b; flip S_b] (the code's ``epoch(..., batch_aug=True)``),
so a minibatch holds 2 ``batch_train`` images and the number of SGD steps per epoch is unchanged. The stored set is
the K*IPC images; evaluation is unchanged.

Differences from the authors' code:
    - Gradients of all classes come from one ``torch.func.vmap(torch.func.grad(...))`` call over a (K, B, ...)
      batch instead of a Python loop over classes; the matching loss is identical.
    - Models with running statistics (BatchNorm) are refused: the code's BN freezing trick is not reproduced.
    - Real batches have ``min(batch_real, smallest class)`` images for every class (the code: ``min(batch_real,
      size of class c)``); identical on balanced datasets.
    - An IPC outside ``get_loops``' table (1, 10, 20, 30, 40, 50, and 100 as in later forks) uses the entry of the
      largest listed IPC below it (the code exits); set ``num_outer_loops``/``inner_epochs`` to choose.
    - Randomness (networks, batches, DSA) comes from the run's generator; the code reseeds from the wall clock.

Notation: ``images`` -> S, ``lr_img`` -> eta_S, ``lr_net`` -> eta_theta, ``num_outer_loops`` -> T (outer loop),
``inner_epochs`` -> epochs of theta-training between outer steps (the code's ``inner_loop``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from condense.augment import check_flip_allowed, flip_concat, list_augments
from condense.config import check_choice, check_range, preset
from condense.data.base import ImageData
from condense.errors import ConfigError
from condense.methods._classwise import INIT_MODES, init_images, real_data_runtime, siamese_augment
from condense.methods.base import Matcher, MatchState, RunContext, register_method
from condense.models import create_model, create_model_for, has_running_stats
from condense.optim import sgd_, sgd_tree
from condense.seeding import seed_from
from condense.synthetic import SyntheticSet

__all__ = [
    "DC",
    "DSA",
    "DCConfig",
    "DSAConfig",
    "get_loops",
    "match_distance",
    "gradient_matching_loss",
    "DC_PRESETS",
    "DSA_PRESETS",
]

DISTANCES = ("layerwise", "mse", "cos")

# get_loops(ipc) of the DC code: ipc -> (outer_loop, inner_loop); 100 as in the forks that extended it.
_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10), 100: (50, 10)}


def get_loops(ipc: int) -> tuple[int, int]:
    """``(outer, inner)`` loop counts for ``ipc`` from the DC code's table (largest listed IPC <= ``ipc``).

    Example:
        >>> get_loops(10), get_loops(12)
        ((10, 50), (10, 50))
    """
    check_range("ipc", ipc, 1)
    return _LOOPS[max(k for k in _LOOPS if k <= ipc)]


@dataclass(frozen=True, kw_only=True)
class DCConfig:
    """Hyperparameters of DC; defaults from the authors' ``main.py``."""

    model: str = "convnet"  # theta, the network whose gradients are matched (main.py --model ConvNet)
    num_iterations: int = 1000  # K, outer iterations, each with a fresh network (main.py --Iteration 1000)
    lr_img: float = 0.1  # eta_S, SGD learning rate on the pixels (main.py --lr_img 0.1)
    momentum: float = 0.5  # SGD momentum on the pixels (main.py: SGD([image_syn], momentum=0.5))
    lr_net: float = 0.01  # eta_theta, plain SGD on the network between outer loops (main.py --lr_net 0.01)
    batch_real: int = 256  # |B_c|, real images per class per outer loop (main.py --batch_real 256)
    batch_train: int = 256  # batch of the network training on S (main.py --batch_train 256)
    num_outer_loops: int | None = None  # T, image updates per iteration (None: get_loops(ipc), DC code utils.py)
    inner_epochs: int | None = None  # epochs of network training on S between updates (None: get_loops(ipc))
    distance: str = "layerwise"  # D: "layerwise" (Eq. 10, code 'ours'), "mse" or "cos" (main.py --dis_metric)
    init: str = "noise"  # S initialization, "noise" or "real" (main.py --init noise)
    augment: str = "none"  # A_omega, condense.augment preset; DC has none (main.py --method DC)
    fyi: bool = False  # FYI: train on [S; flip_W S] in the matching loss and the network update (arXiv:2407.08113)

    def __post_init__(self) -> None:
        check_range("num_iterations", self.num_iterations, 0)
        check_range("lr_img", self.lr_img, 0.0, lo_open=True)
        check_range("momentum", self.momentum, 0.0, 1.0)
        check_range("lr_net", self.lr_net, 0.0)
        check_range("batch_real", self.batch_real, 1)
        check_range("batch_train", self.batch_train, 1)
        if self.num_outer_loops is not None:
            check_range("num_outer_loops", self.num_outer_loops, 1)
        if self.inner_epochs is not None:
            check_range("inner_epochs", self.inner_epochs, 0)
        check_choice("distance", self.distance, DISTANCES)
        check_choice("init", self.init, INIT_MODES)
        check_choice("augment", self.augment, list_augments())


@dataclass(frozen=True, kw_only=True)
class DSAConfig(DCConfig):
    """DC with Siamese augmentation: the augmentation and the initialization defaults differ.

    Both follow the DSA authors' command (``VICO-UoE/DatasetCondensation:readme.md``: ``python main.py --dataset
    CIFAR10 --model ConvNet --ipc 10 --init real --method DSA --dsa_strategy color_crop_cutout_flip_scale_rotate``;
    Zhao & Bilen, ICML 2021, arXiv:2102.08259). FYI's ``scripts/dsa.sh`` uses ``--init real`` too.
    """

    augment: str = "dsa"  # A_omega (main.py --method DSA --dsa_strategy color_crop_cutout_flip_scale_rotate)
    init: str = "real"  # S initialization (DSA readme command: --init real; DC keeps main.py's default noise)


def match_distance(gw_syn: dict[str, torch.Tensor], gw_real: dict[str, torch.Tensor], distance: str) -> torch.Tensor:
    """Gradient-matching distance summed over classes (leading dim) and parameters.

    ``layerwise`` (DC Eq. 10, the code's ``distance_wb``): for each weight, flatten to (out, rest) and sum
    ``1 - cos`` over output units; 1-D parameters (biases, norm affine) contribute 0, as in the code. ``mse`` sums
    squared differences; ``cos`` is ``1 - cos`` of all gradients flattened together, per class.

    Shape:
        gw_syn[name], gw_real[name]: (K, *param.shape).
        return: () scalar.

    Example:
        >>> g = {"w": torch.ones(2, 3, 4)}
        >>> float(match_distance(g, g, "layerwise")) < 1e-5
        True
    """
    eps = 1e-6  # the code's 0.000001 in the cosine denominator
    if distance == "layerwise":
        total = None
        for name, gs in gw_syn.items():
            if gs.ndim <= 2:  # (K, C): bias / norm parameters, ignored by distance_wb
                continue
            gs = gs.flatten(2)
            gr = gw_real[name].flatten(2)
            cos = (gs * gr).sum(-1) / (gs.norm(dim=-1) * gr.norm(dim=-1) + eps)
            d = (1 - cos).sum()
            total = d if total is None else total + d
        if total is None:
            raise ConfigError("distance='layerwise' found no weight with more than one dimension to match")
        return total
    gs = torch.cat([g.flatten(1) for g in gw_syn.values()], dim=1)
    gr = torch.cat([gw_real[n].flatten(1) for n in gw_syn], dim=1)
    if distance == "mse":
        return (gs - gr).pow(2).sum()
    return (1 - (gs * gr).sum(-1) / (gs.norm(dim=-1) * gr.norm(dim=-1) + eps)).sum()


def _ce_fn(net: torch.nn.Module):
    """``(params, x, y) -> cross-entropy`` of ``net`` called functionally with ``params`` (buffers as they are)."""
    from torch.func import functional_call

    buffers = dict(net.named_buffers())

    def ce(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(net, (p, buffers), (x,)), y)

    return ce


def gradient_matching_loss(
    net: torch.nn.Module, params: dict[str, torch.Tensor], real: torch.Tensor, syn: torch.Tensor, distance: str
) -> torch.Tensor:
    """DC's outer objective for all classes at once: ``sum_c D(grad L(S_c), grad L(B_c))`` (Algorithm 1, line 8).

    Per-class gradients come from ``vmap(grad(cross_entropy))`` with the class as the vmapped dimension; the real
    ones are constants (no graph), the synthetic ones stay differentiable w.r.t. ``syn`` (double backward).

    Shape:
        real: (K, B, C, H, W), class c in row c; syn: (K, S, C, H, W); return: () scalar.
    """
    from torch.func import grad, vmap

    k = real.shape[0]
    class_grads = vmap(grad(_ce_fn(net)), in_dims=(None, 0, 0))
    y_real = torch.arange(k, device=real.device)[:, None].expand(k, real.shape[1])
    y_syn = torch.arange(k, device=syn.device)[:, None].expand(k, syn.shape[1])
    with torch.no_grad():
        gw_real = class_grads(params, real, y_real)
    gw_syn = class_grads(params, syn, y_syn)
    return match_distance(gw_syn, gw_real, distance)


# ----------------------------------------------------------------------------------------------------------------------
# Presets: algorithm values only (timm-style keyword data; keys "<dataset>-ipc<N>"). Loop counts come from
# get_loops(ipc) unless set.
# ----------------------------------------------------------------------------------------------------------------------

#: the authors' main.py settings, the same for every dataset and IPC of both papers' tables
_PAPER = dict(num_iterations=1000, lr_img=0.1, lr_net=0.01, batch_real=256, batch_train=256)
# sklearn digits (8x8): depth 2. The depth-3 ConvNet instance-normalizes a 2x2 map in its last block; through the
# double backward of gradient matching that makes the pixel gradient explode (one step moved pixels by up to 32
# normalized units on digits, 0.3 with depth 2).
_DIGITS = dict(model="convnetd2", num_iterations=20, num_outer_loops=5, inner_epochs=5, init="real")
_DIGITS_SRC = "condense: sklearn digits 8x8, shortened for CPU (20 iterations, 5/5 loops), not from a paper"
_DC_SRC = "DC paper (arXiv:2006.05929) Table 1"
_DSA_SRC = "DSA paper (arXiv:2102.08259) main results table"

DC_PRESETS: dict[str, dict[str, Any]] = {
    "cifar10-ipc1": preset(source=f"{_DC_SRC}, CIFAR-10 IPC 1: 28.3 +- 0.5%", **_PAPER),
    "cifar10-ipc10": preset(source=f"{_DC_SRC}, CIFAR-10 IPC 10: 44.9 +- 0.5%", **_PAPER),
    "cifar10-ipc50": preset(source=f"{_DC_SRC}, CIFAR-10 IPC 50: 53.9 +- 0.5%", **_PAPER),
    "mnist-ipc1": preset(source=f"{_DC_SRC}, MNIST IPC 1: 91.7 +- 0.5%", **_PAPER),
    "mnist-ipc10": preset(source=f"{_DC_SRC}, MNIST IPC 10: 97.4 +- 0.2%", **_PAPER),
    "mnist-ipc50": preset(source=f"{_DC_SRC}, MNIST IPC 50: 98.8 +- 0.2%", **_PAPER),
    "digits-ipc10": preset(source=_DIGITS_SRC, **_DIGITS),
}

DSA_PRESETS: dict[str, dict[str, Any]] = {
    "cifar10-ipc1": preset(source=f"{_DSA_SRC}, CIFAR-10 IPC 1: 28.8 +- 0.7%", **_PAPER),
    "cifar10-ipc10": preset(source=f"{_DSA_SRC}, CIFAR-10 IPC 10: 52.1 +- 0.5%", **_PAPER),
    "cifar10-ipc50": preset(source=f"{_DSA_SRC}, CIFAR-10 IPC 50: 60.6 +- 0.5%", **_PAPER),
    "mnist-ipc1": preset(
        source=f"{_DSA_SRC}, MNIST IPC 1: 88.7 +- 0.6% (no flip for digits)", **_PAPER, augment="dsa_noflip"
    ),
    "mnist-ipc10": preset(
        source=f"{_DSA_SRC}, MNIST IPC 10: 97.8 +- 0.1% (no flip for digits)", **_PAPER, augment="dsa_noflip"
    ),
    "mnist-ipc50": preset(
        source=f"{_DSA_SRC}, MNIST IPC 50: 99.2 +- 0.1% (no flip for digits)", **_PAPER, augment="dsa_noflip"
    ),
    "digits-ipc10": preset(source=_DIGITS_SRC, **_DIGITS, augment="dsa_noflip"),
}


@register_method("dc")
class DC(Matcher):
    """Dataset Condensation with gradient matching (Zhao, Mopuri & Bilen, ICLR 2021, arXiv:2006.05929).

    State: ``tensors = {"images", "labels", "momentum"}``, ``scalars = {"lr_img", "ipc", "num_outer_loops",
    "inner_epochs"}``. Networks are rebuilt every iteration from a generator-drawn seed.

    Example:
        >>> from condense import distill, load_dataset  # doctest: +SKIP
        >>> syn = distill("dc", load_dataset("digits"), ipc=1, overrides={"num_iterations": 10})  # doctest: +SKIP
    """

    Config: ClassVar[type] = DCConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = DC_PRESETS

    def init_state(self, data: ImageData, cfg: DCConfig, ipc: int, gen: torch.Generator, run: RunContext) -> MatchState:
        probe = create_model(  # seeded: leaves the global RNG alone
            cfg.model, in_channels=data.channels, num_classes=data.num_classes, image_size=data.image_size, seed=0
        )
        if has_running_stats(probe):
            raise ConfigError(
                f"{self.name} matches gradients of models without running statistics; model={cfg.model!r} has "
                "BatchNorm buffers. Use an instance/layer/no-norm model (e.g. 'convnet')"
            )
        if cfg.fyi:
            check_flip_allowed(data.name, f"{self.name} fyi=True")
        outer, inner = get_loops(ipc)
        device = torch.device(run.device)
        images, labels = init_images(data, ipc, cfg.init, gen)
        images = images.to(device)
        state = MatchState(
            tensors={"images": images, "labels": labels.to(device), "momentum": torch.zeros_like(images)},
            scalars={
                "lr_img": float(cfg.lr_img),
                "ipc": int(ipc),
                "num_outer_loops": int(cfg.num_outer_loops or outer),
                "inner_epochs": int(inner if cfg.inner_epochs is None else cfg.inner_epochs),
            },
        )
        self.restore_runtime(state, data, cfg, run)
        return state

    def restore_runtime(self, state: MatchState, data: ImageData, cfg: DCConfig, run: RunContext) -> None:
        state.runtime.update(real_data_runtime(data, cfg, run.device))

    def step(self, state: MatchState, it: int, gen: torch.Generator) -> dict[str, float]:
        from torch.func import grad

        rt = state.runtime
        cfg: DCConfig = rt["cfg"]
        data: ImageData = rt["data"]
        k, ipc = data.num_classes, int(state.scalars["ipc"])
        outer, inner = int(state.scalars["num_outer_loops"]), int(state.scalars["inner_epochs"])
        images, labels, buf = state.tensors["images"], state.tensors["labels"], state.tensors["momentum"]
        device, aug = rt["device"], rt["aug"]
        lr = float(state.scalars["lr_img"])

        net = create_model_for(cfg.model, data, seed=seed_from(gen), device=device).train()
        params = {n: p.detach() for n, p in net.named_parameters()}
        train_grad = grad(_ce_fn(net))
        loss_sum = 0.0
        for ol in range(outer):
            real = rt["x_train"][rt["sampler"].sample(cfg.batch_real, gen)]  # (K, B, C, H, W)
            syn = images.detach().requires_grad_(True)
            syn_c = syn.view(k, ipc, *images.shape[1:])  # (K, IPC, C, H, W)
            if cfg.fyi:  # FYI: S_c -> [S_c; flip S_c], before the class's Siamese draw; dL/dS sums both halves
                syn_c, _ = flip_concat(syn_c, dim=1)
            real_aug, syn_aug = siamese_augment(aug, real, syn_c, gen)
            loss = gradient_matching_loss(net, params, real_aug, syn_aug, cfg.distance)
            (g,) = torch.autograd.grad(loss, syn)
            sgd_(images, buf, g, lr, momentum=cfg.momentum)  # torch.optim.SGD([S], momentum) on the pixels
            loss_sum += float(loss.detach())
            if ol == outer - 1:
                break
            # train theta on the (detached) synthetic set: inner epochs of plain SGD, fresh DSA draws per batch
            x_all, n = images.detach(), images.shape[0]
            for _ in range(inner):
                perm = torch.randperm(n, generator=gen, device=gen.device).to(device)
                for s in range(0, n, cfg.batch_train):
                    idx = perm[s : s + cfg.batch_train]
                    xb, yb = x_all[idx], labels[idx]
                    if cfg.fyi:  # FYI: each minibatch trains as [S_b; flip S_b] (the code's batch_aug=True)
                        xb, yb = flip_concat(xb, yb)
                    if not aug.is_identity:
                        xb = aug(xb, generator=gen)
                    gp = train_grad(params, xb, yb)
                    params, _ = sgd_tree(params, gp, None, cfg.lr_net)  # plain SGD on theta (main.py)
        return {"loss": loss_sum / (k * outer), "lr_img": lr}

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


@register_method("dsa")
class DSA(DC):
    """DC with Differentiable Siamese Augmentation (Zhao & Bilen, ICML 2021, arXiv:2102.08259): the same
    algorithm with ``augment="dsa"`` by default; the augmentation runs on both batches of a class with one draw."""

    Config: ClassVar[type] = DSAConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = DSA_PRESETS
