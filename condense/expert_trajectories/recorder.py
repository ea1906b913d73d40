"""Record expert trajectories: train K experts at once, snapshot every epoch, resume after a kill.

An expert is a network trained on the real data whose parameters are saved at initialization and after every epoch;
trajectory matchers (MTT, FTD, DATM, AST) start students from these snapshots. Three kinds, one config class each:

    ==========  ===================  ====================================================================
    kind        config               training
    ==========  ===================  ====================================================================
    vanilla     VanillaExpertConfig  MTT: SGD lr 0.01, no momentum, no weight decay, batch 256, DSA
    flat        FlatExpertConfig     FTD/DATM: the same SGD wrapped in GSAM (rho 0.01, alpha 0.3)
    smooth      SmoothExpertConfig   AST: SGD lr 0.003, momentum 0.9, wd 1e-3, lr x0.6 at mid-training,
                                     early-epoch loss down-scaling ("clipping loss"), input-gradient penalty
    ==========  ===================  ====================================================================

Named presets (``mtt``, ``ftd``, ``ftd_alpha1``, ``datm``, ``ast``) map to a kind, overrides and the epochs the
papers used (DATM trains its GSAM experts for 100 epochs because its late windows reach epoch 70).

Speed: for models without running statistics (the instance-norm ConvNet) the K experts' parameters are stacked
(``torch.func.stack_module_state``) and one functional SGD step is ``vmap``-ed over them, so a step is a few large
batched kernels instead of K small ones. Models with BatchNorm are trained one at a time (running statistics cannot
be vmapped). Every expert owns three seeds derived from ``(seed, expert id, attempt)``: its initialization, its data
order and its DSA draws. DSA parameters are drawn per expert (one group per expert and step, as the authors' code
does per batch) outside ``vmap`` and applied once per drawn group to the stacked batch, so an expert's trajectory
does not depend on which other experts share its group: a vmapped run equals a looped run up to float rounding.

Differences from the authors' code (``GeorgeCazenavette/mtt-distillation:buffer.py``, ``AngusDujw/FTD-distillation:
buffer/buffer_FTD.py``, ``shenjiyuan123/AST-Alignment-with-Smooth-Expert:buffer.py``):
    - one safetensors file per expert with a JSON manifest (see ``buffer.py``), not pickled lists; every expert is
      written as soon as it finishes (the original drops experts when ``num_experts % save_interval != 0``);
    - seeds are explicit and recorded; the global RNG is never reseeded;
    - a diverged expert (NaN/inf parameters) is retrained with fresh seeds instead of being saved;
    - per-epoch test accuracy of every expert is recorded (the original only logs it to an online experiment tracker);
    - AST's input-gradient penalty and GSAM's second pass leave BatchNorm running statistics untouched.

References:
    Cazenavette et al., "Dataset Distillation by Matching Training Trajectories", CVPR 2022, arXiv:2203.11932, Sec. 3.
    Du et al., "Minimizing the Accumulated Trajectory Error to Improve Dataset Distillation", CVPR 2023,
    arXiv:2211.11004, Sec. 4.1 (flat experts via GSAM).
    Guo et al., "Towards Lossless Dataset Distillation via Difficulty-Aligned Trajectory Matching", ICLR 2024,
    arXiv:2310.05773 (100-epoch GSAM experts).
    Shen, Yang and Lam, "AST: Effective Dataset Distillation through Alignment with Smooth and High-Quality Expert
    Trajectories", arXiv:2310.10541 (smooth experts).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F

from condense.config import check_range, config_from_dict, config_to_dict
from condense.errors import ConfigError, DivergenceError, IntegrityError, MismatchError
from condense.expert_trajectories.buffer import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    STORAGE_DTYPES,
    TENSOR_KEY,
    ExpertBuffer,
    _canon,
    dataset_record,
    expert_filename,
)
from condense.expert_trajectories.sam import gsam_gradient
from condense.io import save_tensors, sha256_file, write_json_atomic
from condense.registry import Registry, did_you_mean

if TYPE_CHECKING:
    from condense.data import ImageData

__all__ = [
    "ExpertConfig",
    "VanillaExpertConfig",
    "FlatExpertConfig",
    "SmoothExpertConfig",
    "EXPERT_KINDS",
    "EXPERT_PRESETS",
    "get_expert_config",
    "list_expert_kinds",
    "record_experts",
    "derive_seed",
]

logger = logging.getLogger("condense")

# CPU default: one at a time. vmap turns each conv into a grouped conv, which is slow on the CPU: measured on 1 core,
# digits ConvNet width 128: loop 0.57 s per expert-epoch, vmap with K=4 1.61 s (benchmarks/experts_speed.py).
_CPU_DEFAULT_EXPERTS_AT_ONCE = 1
_GPU_MAX_EXPERTS_AT_ONCE = 64
_GPU_MEMORY_FRACTION = 0.7  # of the free memory the experts of a group may use
_EVAL_IMAGES = 2048  # test images x experts per forward pass of the per-epoch evaluation (bounds activation memory)


# ======================================================================================================================
# Configs: one per kind, defaults from the papers' code
# ======================================================================================================================


@dataclass(frozen=True, kw_only=True)
class ExpertConfig:
    """Settings shared by every expert kind; the defaults are MTT's (``buffer.py``).

    Use a kind's subclass (:class:`VanillaExpertConfig`, :class:`FlatExpertConfig`, :class:`SmoothExpertConfig`)
    or :func:`get_expert_config`.
    """

    kind: ClassVar[str] = "vanilla"

    lr_teacher: float = 0.01  # expert SGD learning rate (MTT buffer.py --lr_teacher)
    momentum: float = 0.0  # SGD momentum (MTT --mom 0: "much easier for our synthetic data to imitate", issue #8)
    weight_decay: float = 0.0  # SGD weight decay (MTT --l2 0)
    batch_size: int = 256  # real images per SGD step (MTT --batch_train)
    augment: str = "auto"  # DSA during expert training (MTT: args.dsa True); auto = no flip on digit datasets
    lr_decay_factor: float = 1.0  # lr multiplied by this once, at lr_decay_epoch (MTT: --decay off -> 1.0)
    lr_decay_epoch: int | None = None  # 0-based epoch of that decay; None: epochs // 2 + 1 (AST buffer.py)
    max_attempts: int = 3  # trainings per expert when one diverges (NaN/inf); each retry draws fresh seeds

    def __post_init__(self) -> None:
        check_range("lr_teacher", self.lr_teacher, 0.0, lo_open=True)
        check_range("momentum", self.momentum, 0.0, 1.0)
        check_range("weight_decay", self.weight_decay, 0.0)
        check_range("batch_size", self.batch_size, 1)
        check_range("lr_decay_factor", self.lr_decay_factor, 0.0, lo_open=True)
        if self.lr_decay_epoch is not None:
            check_range("lr_decay_epoch", self.lr_decay_epoch, 0)
        check_range("max_attempts", self.max_attempts, 1)
        from condense.augment import list_augments

        if self.augment != "auto" and self.augment not in list_augments():
            raise ConfigError(
                f"augment={self.augment!r} is not an augmentation preset{did_you_mean(self.augment, list_augments())}"
                f" available: {', '.join(list_augments())}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (the kind is stored next to them in the manifest)."""
        return config_to_dict(self)


@dataclass(frozen=True, kw_only=True)
class VanillaExpertConfig(ExpertConfig):
    """MTT experts: plain SGD, constant learning rate, DSA (Cazenavette et al., CVPR 2022, arXiv:2203.11932)."""

    kind: ClassVar[str] = "vanilla"


@dataclass(frozen=True, kw_only=True)
class FlatExpertConfig(ExpertConfig):
    """FTD / DATM "flat" experts: MTT's SGD wrapped in GSAM (see ``sam.py``).

    References:
        Du et al., CVPR 2023, arXiv:2211.11004, Table 7 (alpha 0.3 for CIFAR-10 IPC 1/10, 1 elsewhere);
        Guo et al., ICLR 2024, arXiv:2310.05773 (DATM: alpha 0.3 for all settings, 100 epochs).
    """

    kind: ClassVar[str] = "flat"

    rho: float = 0.01  # GSAM perturbation radius rho (FTD run_buffer.sh --rho_max = --rho_min = 0.01)
    alpha: float = 0.3  # GSAM surrogate-gap weight alpha (FTD Table 7 CIFAR-10 IPC 1/10; DATM README)
    adaptive: bool = True  # ASAM-style perturbation scaled by w**2 (FTD's --adaptive is type=bool: always True)
    perturb_eps: float = 1e-12  # GSAM perturb_eps

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("rho", self.rho, 0.0)
        check_range("alpha", self.alpha, 0.0)
        check_range("perturb_eps", self.perturb_eps, 0.0)


@dataclass(frozen=True, kw_only=True)
class SmoothExpertConfig(ExpertConfig):
    """AST "smooth" experts: momentum SGD with weight decay and a mid-run lr decay, an early-epoch loss
    down-scaling ("clipping loss") and a gradient penalty on the inputs.

    The scaled cross-entropy in epoch e < ``loss_scale_epochs`` is ``(loss_scale_start + e * loss_scale_step) * CE``;
    the penalty is ``gp_weight * mean_{n,h,w}((||d sum(logits) / d x_{n,:,h,w}||_2 - 1)^2)`` on the un-augmented batch,
    the norm taken over channels (AST ``utils.epoch_gp``).

    References:
        Shen, Yang and Lam, arXiv:2310.10541; code ``shenjiyuan123/AST-Alignment-with-Smooth-Expert:buffer.py``
        (README: ``--optim SGDMOM --loss_decay --gp True``).
    """

    kind: ClassVar[str] = "smooth"

    lr_teacher: float = 0.003  # AST buffer.py --lr_teacher default
    momentum: float = 0.9  # AST SGDMOM
    weight_decay: float = 1e-3  # AST SGDMOM weight decay
    lr_decay_factor: float = 0.6  # AST: lr x0.6 at epoch train_epochs // 2 + 1 (unconditional)
    loss_scale_start: float = 0.5  # AST --loss_decay: CE x0.5 in epoch 0 ...
    loss_scale_step: float = 0.05  # ... +0.05 per epoch ...
    loss_scale_epochs: int = 10  # ... for epochs 0-9 (x0.95 in epoch 9), x1 afterwards
    gp_weight: float = 2.0  # lambda of AST's gradient penalty (utils.epoch_gp)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("loss_scale_start", self.loss_scale_start, 0.0, lo_open=True)
        check_range("loss_scale_step", self.loss_scale_step, 0.0)
        check_range("loss_scale_epochs", self.loss_scale_epochs, 0)
        check_range("gp_weight", self.gp_weight, 0.0)

    def loss_scale(self, epoch: int) -> float:
        """Factor on the cross-entropy in ``epoch`` (0-based)."""
        if epoch < self.loss_scale_epochs:
            return min(1.0, self.loss_scale_start + epoch * self.loss_scale_step)
        return 1.0


EXPERT_KINDS: Registry[type[ExpertConfig]] = Registry("expert kind")
for _cls in (VanillaExpertConfig, FlatExpertConfig, SmoothExpertConfig):
    EXPERT_KINDS.register(_cls.kind)(_cls)

# Presets are data: a kind, field overrides, the epochs the paper trained for and where the values come from.
EXPERT_PRESETS: dict[str, dict[str, Any]] = {
    "mtt": {"kind": "vanilla", "epochs": 50, "source": "MTT README: 50 epochs, 100 experts, lr_teacher 0.01"},
    "ftd": {"kind": "flat", "alpha": 0.3, "epochs": 50, "source": "FTD run_buffer.sh; Table 7 (CIFAR-10 IPC 1/10)"},
    "ftd_alpha1": {"kind": "flat", "alpha": 1.0, "epochs": 50, "source": "FTD Table 7 (all other settings)"},
    "datm": {"kind": "flat", "alpha": 0.3, "epochs": 100, "source": "DATM README buffer command (--train_epochs=100)"},
    "ast": {"kind": "smooth", "epochs": 50, "source": "AST README/buffer.py (--optim SGDMOM --loss_decay --gp True)"},
}


def list_expert_kinds() -> list[str]:
    """Expert kinds and presets accepted by :func:`get_expert_config`."""
    return sorted(EXPERT_KINDS.list()) + sorted(EXPERT_PRESETS)


def get_expert_config(name: str = "vanilla", **overrides: Any) -> ExpertConfig:
    """The config of an expert kind (``vanilla``, ``flat``, ``smooth``) or preset (``mtt``, ``ftd``, ``datm``, ...).

    Args:
        name: kind or preset name.
        **overrides: field values replacing the defaults (unknown fields raise :class:`ConfigError`).

    Example:
        >>> get_expert_config("datm").alpha, get_expert_config("flat", alpha=1.0).alpha
        (0.3, 1.0)
    """
    values: dict[str, Any] = {}
    if name in EXPERT_PRESETS:
        preset = EXPERT_PRESETS[name]
        kind = preset["kind"]
        values = {k: v for k, v in preset.items() if k not in ("kind", "epochs", "source")}
    else:
        kind = name
        if name not in EXPERT_KINDS.list():
            names = list_expert_kinds()
            raise ConfigError(f"unknown expert kind '{name}'{did_you_mean(name, names)} available: {', '.join(names)}")
    values.update(overrides)
    return config_from_dict(EXPERT_KINDS.get(kind), values)


def _resolve_config(kind: str, config: ExpertConfig | None) -> ExpertConfig:
    if config is None:
        return get_expert_config(kind)
    if not isinstance(config, ExpertConfig):
        raise ConfigError(f"config must be an ExpertConfig, got {type(config).__name__}")
    if kind not in ("vanilla", config.kind) and EXPERT_PRESETS.get(kind, {}).get("kind") != config.kind:
        raise ConfigError(f"kind={kind!r} contradicts config of kind {config.kind!r}; pass one or the other")
    return config


# ======================================================================================================================
# Seeds, snapshot plan, distributed context
# ======================================================================================================================


def derive_seed(seed: int, expert_id: int, attempt: int, stream: str) -> int:
    """A 63-bit seed for one random stream (``init``, ``order``, ``aug``) of one expert's attempt.

    Hash-derived, so experts are independent of each other, of how they are grouped and of the number of ranks.
    """
    digest = hashlib.sha256(f"condense-experts/{seed}/{expert_id}/{attempt}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def _snapshot_steps(epochs: int, steps_per_epoch: int, save_every_steps: int | None) -> list[int]:
    total = epochs * steps_per_epoch
    if save_every_steps is None:
        return [e * steps_per_epoch for e in range(epochs + 1)]
    steps = list(range(0, total + 1, save_every_steps))
    if steps[-1] != total:
        steps.append(total)
    return steps


@dataclass
class _Dist:
    """torch.distributed context when launched by torchrun (WORLD_SIZE > 1), else a single process."""

    rank: int = 0
    world: int = 1
    created: bool = False

    @classmethod
    def from_env(cls, device: torch.device) -> _Dist:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_available():
            raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        created = False
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
            created = True
        return cls(rank=dist.get_rank(), world=dist.get_world_size(), created=created)

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def all_gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.created:
            import torch.distributed as dist

            dist.destroy_process_group()


def _resolve_device(device: torch.device | str) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


# ======================================================================================================================
# Training K experts at once
# ======================================================================================================================


@dataclass
class _Expert:
    """One attempt at one expert: its seeds and its own data-order and augmentation generators."""

    id: int
    attempt: int
    seeds: dict[str, int]
    order_gen: torch.Generator
    aug_gen: torch.Generator

    @classmethod
    def make(cls, seed: int, expert_id: int, attempt: int) -> _Expert:
        seeds = {s: derive_seed(seed, expert_id, attempt, s) for s in ("init", "order", "aug")}
        return cls(
            expert_id,
            attempt,
            seeds,
            torch.Generator().manual_seed(seeds["order"]),
            torch.Generator().manual_seed(seeds["aug"]),
        )


@dataclass
class _Result:
    expert: _Expert
    ok: bool
    snapshots: torch.Tensor | None  # (S, P) in the storage dtype, on the CPU
    accuracy_curve: list[float | None]
    train_loss_curve: list[float | None]
    seconds: float


def augment_experts(aug: Any, x: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """DSA on a stack of K experts' batches, each expert drawing its own parameters from its own generator.

    Experts that drew the same DSA group are augmented by one ``apply`` call on their concatenated images, so a
    step costs at most one call per group however large K is, and each expert's result does not depend on the
    others (per-sample ops only).

    Shape:
        x: (K, B, C, H, W).
        return: (K, B, C, H, W).
    """
    if aug.is_identity:
        return x
    k, b = x.shape[:2]
    params = [aug.sample(x[i], generator=generators[i]) for i in range(k)]
    if k == 1:
        return aug.apply(x[0], params[0]).unsqueeze(0)
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(params):
        groups.setdefault(int(p["group"]) if "group" in p else -1, []).append(i)
    out = torch.empty_like(x)
    for ids in groups.values():
        merged = {
            key: (params[ids[0]][key] if key == "group" else torch.cat([params[i][key] for i in ids]))
            for key in params[ids[0]]
        }
        sel = torch.tensor(ids, device=x.device)
        out[sel] = aug.apply(x[sel].reshape(len(ids) * b, *x.shape[2:]), merged).reshape(len(ids), b, *x.shape[2:])
    return out


class _Trainer:
    """Trains groups of experts; knows nothing about files (the recorder writes what it returns)."""

    def __init__(
        self,
        data: ImageData,
        model: str,
        model_kwargs: dict[str, Any],
        cfg: ExpertConfig,
        epochs: int,
        save_every_steps: int | None,
        device: torch.device,
        storage_dtype: torch.dtype,
        running_stats: bool,
        quiet: bool,
    ) -> None:
        from condense.augment import get_augment

        self.model = model
        self.model_kwargs = model_kwargs
        self.cfg = cfg
        self.epochs = epochs
        self.device = device
        self.storage_dtype = storage_dtype
        self.running_stats = running_stats
        self.quiet = quiet
        from condense.augment import resolve_augment

        self.aug = get_augment(resolve_augment(cfg.augment, data.name))
        self.x_train = data.x_train.to(device)
        self.y_train = data.y_train.to(device)
        self.x_test = data.x_test.to(device)
        self.y_test = data.y_test.to(device)
        self.model_args = {
            "in_channels": data.channels,
            "num_classes": data.num_classes,
            "image_size": data.image_size,
        }
        self.num_train = int(self.x_train.shape[0])
        self.steps_per_epoch = math.ceil(self.num_train / cfg.batch_size)
        self.snapshot_plan = _snapshot_steps(epochs, self.steps_per_epoch, save_every_steps)
        self.snapshot_steps = set(self.snapshot_plan)
        self.num_snapshots = len(self.snapshot_plan)
        self.lr_decay_epoch = cfg.lr_decay_epoch if cfg.lr_decay_epoch is not None else epochs // 2 + 1

    # ------------------------------------------------------------------------------------------------------------------

    def build(self, expert: _Expert) -> torch.nn.Module:
        from condense.models import create_model

        net = create_model(self.model, **self.model_args, seed=expert.seeds["init"], **self.model_kwargs)
        return net.to(self.device)

    def _step_fn(self, base: torch.nn.Module, lr: float, loss_scale: float) -> Callable:
        """One SGD step of ONE expert as a pure function (vmapped over K experts, or called as is)."""
        cfg = self.cfg
        flat = isinstance(cfg, FlatExpertConfig)
        gp_weight = cfg.gp_weight if isinstance(cfg, SmoothExpertConfig) else 0.0
        running_stats = self.running_stats
        call = torch.func.functional_call

        def loss_fn(p, b, x, y, x_clean):
            ce = F.cross_entropy(call(base, (p, b), (x,)), y)
            loss = ce * loss_scale
            if gp_weight > 0:
                # AST gradient penalty on the un-augmented batch; BN statistics of this pass go to a copy
                b_gp = {k: v.clone() for k, v in b.items()} if running_stats else b
                gx = torch.func.grad(lambda xc, bb: call(base, (p, bb), (xc,)).sum())(x_clean, b_gp)
                loss = loss + gp_weight * (gx.norm(dim=1) - 1.0).pow(2).mean()
            return loss, ce

        def step(p, mom, b, x, y, x_clean):
            def grad_fn(params, perturbed):
                bb = {k: v.clone() for k, v in b.items()} if (perturbed and running_stats) else b
                grads, ce = torch.func.grad(loss_fn, has_aux=True)(params, bb, x, y, x_clean)
                return grads, ce

            if flat:
                d, ce = gsam_gradient(
                    grad_fn, p, rho=cfg.rho, alpha=cfg.alpha, adaptive=cfg.adaptive, eps=cfg.perturb_eps
                )
            else:
                d, ce = grad_fn(p, False)
            new_p, new_mom = {}, {}
            for k, w in p.items():
                g = d[k] + cfg.weight_decay * w if cfg.weight_decay else d[k]
                if cfg.momentum:
                    # torch.optim.SGD (dampening 0): buf = mu * buf + g, with buf = g at the first step (buf0 = 0)
                    g = cfg.momentum * mom[k] + g
                    new_mom[k] = g
                new_p[k] = w - lr * g
            return new_p, new_mom, ce

        return step

    @torch.no_grad()
    def _evaluate(self, base: torch.nn.Module, params: dict, buffers: dict, vmapped: bool) -> torch.Tensor:
        """Test accuracy of each expert, shape (K,)."""
        call = torch.func.functional_call
        base.eval()
        correct = None
        chunk = max(128, _EVAL_IMAGES // len(next(iter(params.values()))) if vmapped else _EVAL_IMAGES)
        for s in range(0, self.x_test.shape[0], chunk):
            xb, yb = self.x_test[s : s + chunk], self.y_test[s : s + chunk]
            if vmapped:
                logits = torch.func.vmap(lambda p, b, x: call(base, (p, b), (x,)), in_dims=(0, 0, None))(
                    params, buffers, xb
                )
            else:
                logits = call(base, (params, buffers), (xb,)).unsqueeze(0)
            c = (logits.argmax(-1) == yb).sum(-1)
            correct = c if correct is None else correct + c
        base.train()
        return correct.double() / self.x_test.shape[0]

    def train_group(self, experts: list[_Expert], position: int = 0) -> list[_Result]:
        """Train ``experts`` together (vmapped when more than one) and return their snapshots and curves."""
        t0 = time.perf_counter()
        k = len(experts)
        vmapped = k > 1
        if vmapped and self.running_stats:
            raise ConfigError("models with running statistics (BatchNorm) are trained one at a time")
        models = [self.build(e) for e in experts]
        names = [n for n, _ in models[0].named_parameters()]
        if vmapped:
            params, buffers = torch.func.stack_module_state(models)
            params = {n: params[n].detach() for n in names}
            base = copy.deepcopy(models[0]).to("meta")
        else:
            base = models[0]
            params = {n: p.detach().clone() for n, p in base.named_parameters()}
            buffers = {n: b.clone() for n, b in base.named_buffers()}
        base.train()
        mom = {n: torch.zeros_like(p) for n, p in params.items()} if self.cfg.momentum else {}

        snaps: list[torch.Tensor] = []
        finite = torch.ones(k, dtype=torch.bool)

        def snapshot() -> None:
            flat = torch.cat([params[n].reshape(k, -1) for n in names], dim=1)
            finite.logical_and_(torch.isfinite(flat).all(dim=1).cpu())
            snaps.append(flat.to("cpu", self.storage_dtype))

        snapshot()
        acc_curves: list[list[float]] = [[] for _ in range(k)]
        loss_curves: list[list[float]] = [[] for _ in range(k)]
        lr = self.cfg.lr_teacher
        bs = self.cfg.batch_size
        step = 0
        bar = None
        if not self.quiet:
            from tqdm.auto import tqdm

            ids = ",".join(str(e.id) for e in experts)
            bar = tqdm(total=self.epochs, desc=f"experts {ids}", leave=False, position=position)
        for epoch in range(self.epochs):
            if epoch == self.lr_decay_epoch and self.cfg.lr_decay_factor != 1.0:
                lr *= self.cfg.lr_decay_factor
            scale = self.cfg.loss_scale(epoch) if isinstance(self.cfg, SmoothExpertConfig) else 1.0
            step_fn = self._step_fn(base, lr, scale)
            if vmapped:
                step_fn = torch.func.vmap(step_fn, in_dims=(0, 0, 0, 0, 0, 0))
            perms = torch.stack([torch.randperm(self.num_train, generator=e.order_gen) for e in experts])
            perms = perms.to(self.device)
            loss_sum = torch.zeros(k, device=self.device, dtype=torch.float64)
            for s in range(self.steps_per_epoch):
                idx = perms[:, s * bs : (s + 1) * bs]
                x_clean = self.x_train[idx]  # (K, B, C, H, W)
                y = self.y_train[idx]  # (K, B)
                x = augment_experts(self.aug, x_clean, [e.aug_gen for e in experts])
                if vmapped:
                    params, mom, ce = step_fn(params, mom, buffers, x, y, x_clean)
                else:
                    params, mom, ce = step_fn(params, mom, buffers, x[0], y[0], x_clean[0])
                loss_sum += ce.detach().reshape(k)
                step += 1
                if step in self.snapshot_steps and step % self.steps_per_epoch:
                    snapshot()
            if step in self.snapshot_steps:
                snapshot()
            acc = self._evaluate(base, params, buffers, vmapped).tolist()
            losses = (loss_sum / self.steps_per_epoch).tolist()
            for i in range(k):
                # None, not NaN: the manifest is strict JSON
                acc_curves[i].append(round(float(acc[i]), 6) if finite[i] else None)
                loss_curves[i].append(round(float(losses[i]), 6) if math.isfinite(losses[i]) else None)
            if bar is not None:
                bar.update(1)
                ok = [a for a, f in zip(acc, finite.tolist()) if f]
                bar.set_postfix_str(
                    f"test acc {' '.join(f'{a:.3f}' for a in ok[:4])}{' ...' if len(ok) > 4 else ''}"
                    f"{f' ({k - len(ok)} diverged)' if len(ok) < k else ''}"
                )
            if not finite.any():
                break  # every expert of the group diverged; no point finishing
        if bar is not None:
            bar.close()
        seconds = (time.perf_counter() - t0) / k
        stacked = torch.stack(snaps, dim=1) if finite.any() else None  # (K, S, P)
        results = []
        for i, e in enumerate(experts):
            ok = bool(finite[i]) and len(snaps) == self.num_snapshots
            results.append(_Result(e, ok, stacked[i].clone() if ok else None, acc_curves[i], loss_curves[i], seconds))
        return results

    def per_expert_bytes(self) -> int:
        """Device memory one more expert in a group needs, measured on one CUDA step (a rough upper bound)."""
        e = _Expert.make(0, 0, 0)
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        base_mem = torch.cuda.memory_allocated(self.device)
        net = self.build(e)
        params = {n: p.detach().clone() for n, p in net.named_parameters()}
        buffers = {n: b.clone() for n, b in net.named_buffers()}
        mom = {n: torch.zeros_like(p) for n, p in params.items()} if self.cfg.momentum else {}
        idx = torch.arange(min(self.cfg.batch_size, self.num_train), device=self.device)
        x, y = self.x_train[idx], self.y_train[idx]
        self._step_fn(net, self.cfg.lr_teacher, 1.0)(params, mom, buffers, x, y, x)
        torch.cuda.synchronize(self.device)
        used = torch.cuda.max_memory_allocated(self.device) - base_mem
        del net, params, buffers, mom
        return int(used * 1.5) + 1


def _choose_k(trainer: _Trainer, n: int, experts_at_once: int | None, running_stats: bool) -> int:
    if n <= 1:
        return 1
    if running_stats:
        if experts_at_once not in (None, 1):
            logger.warning("model keeps running statistics (BatchNorm): training experts one at a time")
        return 1
    if experts_at_once is not None:
        return max(1, min(experts_at_once, n))
    if trainer.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(trainer.device)
        per = trainer.per_expert_bytes()
        return max(1, min(n, _GPU_MAX_EXPERTS_AT_ONCE, int(free * _GPU_MEMORY_FRACTION) // per))
    return min(n, _CPU_DEFAULT_EXPERTS_AT_ONCE)


# ======================================================================================================================
# Files: expert records, manifest, resume
# ======================================================================================================================


def _read_expert_record(path: Path) -> dict[str, Any] | None:
    """The record stored in an expert file's safetensors header, or None when the file is unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            return None
        return json.loads(meta["record"])
    except Exception:  # a corrupt header means "not finished": the expert is trained again
        return None


def _scan_experts(out: Path, run_key: str) -> dict[int, dict[str, Any]]:
    """Finished experts found in ``out``: id -> manifest record (with the file's sha256)."""
    done: dict[int, dict[str, Any]] = {}
    for path in sorted(out.glob("expert_*.safetensors")):
        rec = _read_expert_record(path)
        if rec is None:
            logger.warning("'%s' is unreadable; its expert will be trained again", path)
            continue
        if rec.get("run_key") != run_key:
            raise MismatchError(
                f"'{path}' was recorded with other settings (run key {rec.get('run_key')}, this run {run_key}); "
                "use another output folder or delete it"
            )
        rec = {k: v for k, v in rec.items() if k != "run_key"}
        rec["sha256"] = sha256_file(path)
        done[int(rec["id"])] = rec
    return done


def _write_manifest(
    out: Path, header: dict[str, Any], done: dict[int, dict], failed: dict[int, str], n_experts: int
) -> None:
    experts = []
    for i in sorted(set(range(n_experts)) | set(done) | set(failed)):
        if i in done:
            experts.append(done[i])
        elif i in failed:
            experts.append({"id": i, "file": expert_filename(i), "status": "failed", "error": failed[i]})
        else:
            experts.append({"id": i, "file": expert_filename(i), "status": "pending"})
    manifest = dict(header)
    manifest["num_experts_done"] = len(done)
    manifest["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    manifest["experts"] = experts
    write_json_atomic(out / MANIFEST_NAME, manifest)


def _check_existing(out: Path, run_key: str, header: dict[str, Any]) -> None:
    path = out / MANIFEST_NAME
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise IntegrityError(f"'{path}' exists but is not valid JSON ({e}); delete it or use another folder") from e
    if old.get("format") != FORMAT:
        raise MismatchError(f"'{out}' holds a '{MANIFEST_NAME}' that is not an expert buffer; use another folder")
    if old.get("run_key") != run_key:
        diffs = [
            k
            for k in ("dataset", "preprocessing", "model", "kind", "config", "augment", "epochs", "seed", "dtype")
            if _canon(old.get(k)) != _canon(header.get(k))
        ]
        raise MismatchError(
            f"'{out}' holds a buffer recorded with other settings (differs in: {', '.join(diffs) or 'format'}); "
            "resume needs identical settings; use another --out or delete the folder"
        )


# ======================================================================================================================
# Entry point
# ======================================================================================================================


def record_experts(
    data: ImageData,
    model: str,
    n_experts: int,
    epochs: int,
    out: str | Path,
    *,
    kind: str = "vanilla",
    config: ExpertConfig | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    quiet: bool = False,
    experts_at_once: int | None = None,
    save_every_steps: int | None = None,
    model_kwargs: dict[str, Any] | None = None,
    dtype: str = "float32",
) -> ExpertBuffer:
    """Train ``n_experts`` experts on ``data`` and record their trajectories as a buffer in ``out``.

    Resumes automatically: experts already finished in ``out`` (same dataset, preprocessing, model, kind, config,
    epochs, seed and dtype) are kept and only the others are trained, so a killed run continues where it stopped
    and a finished buffer can be extended with more experts. Under ``torchrun`` (``WORLD_SIZE`` > 1) the experts are
    split over ranks (gloo on the CPU, nccl on CUDA); each rank writes its own expert files and rank 0 writes the
    manifest after a barrier (``out`` must be on a file system every rank sees).

    Args:
        data: the training set (its test split gives the per-epoch accuracy curves).
        model: registered model name (``convnet``, ``convnetd3``, ``convnet_bn``, ...).
        n_experts: number of experts the buffer should hold.
        epochs: training epochs per expert (MTT/FTD 50, DATM 100).
        out: buffer directory (created).
        kind: ``vanilla``, ``flat``, ``smooth`` or a preset name (``mtt``, ``ftd``, ``datm``, ``ast``); ignored when
            ``config`` is given (a contradicting kind raises).
        config: the expert config (default: the kind's paper defaults).
        seed: base seed; each expert's init, data order and DSA seeds are derived from (seed, expert id, attempt).
        device: where to train (``cuda`` under torchrun uses ``cuda:LOCAL_RANK``).
        quiet: no progress bars.
        experts_at_once: K experts trained together with ``vmap`` (default: from free GPU memory on CUDA, 1 on the
            CPU where vmap's grouped convolutions are slower than a loop); 1 trains them one at a time. Models with
            BatchNorm are always trained one at a time.
        save_every_steps: snapshot every k SGD steps instead of every epoch (snapshot indices then count k steps).
        model_kwargs: builder options for ``create_model`` (``width``, ``depth``, ...), recorded in the buffer.
        dtype: storage dtype of the snapshots, ``float32`` (default), ``float16`` or ``bfloat16`` (half the disk).

    Returns:
        The opened :class:`ExpertBuffer`.

    Raises:
        ConfigError: bad counts, dtype or kind.
        MismatchError: ``out`` holds a buffer recorded with other settings.
        DivergenceError: an expert diverged (NaN/inf) in all ``config.max_attempts`` attempts; the finished experts
            are kept and the manifest marks that expert ``failed``.

    Example:
        >>> from condense.data import load_dataset
        >>> buf = record_experts(load_dataset("digits"), "convnet", 2, 2, "/tmp/doc_buf", quiet=True,
        ...                      model_kwargs={"width": 8})  # doctest: +SKIP
        >>> buf.num_experts, buf.num_snapshots  # doctest: +SKIP
        (2, 3)
    """
    from condense.models import create_model, has_running_stats

    cfg = _resolve_config(kind, config)
    if isinstance(n_experts, bool) or not isinstance(n_experts, int) or n_experts < 1:
        raise ConfigError(f"n_experts must be a positive int, got {n_experts!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be a positive int, got {epochs!r}")
    if save_every_steps is not None and (not isinstance(save_every_steps, int) or save_every_steps < 1):
        raise ConfigError(f"save_every_steps must be a positive int or None, got {save_every_steps!r}")
    if experts_at_once is not None and (not isinstance(experts_at_once, int) or experts_at_once < 1):
        raise ConfigError(f"experts_at_once must be a positive int or None, got {experts_at_once!r}")
    if dtype not in STORAGE_DTYPES:
        raise ConfigError(f"dtype={dtype!r} is not a storage dtype; allowed: {', '.join(STORAGE_DTYPES)}")
    out = Path(out)
    model_kwargs = dict(model_kwargs or {})

    device = _resolve_device(device)
    dist = _Dist.from_env(device)
    try:
        probe = create_model(
            model,
            in_channels=data.channels,
            num_classes=data.num_classes,
            image_size=data.image_size,
            seed=0,
            **model_kwargs,
        )
        running_stats = has_running_stats(probe)
        trainer = _Trainer(
            data,
            model,
            model_kwargs,
            cfg,
            epochs,
            save_every_steps,
            device,
            STORAGE_DTYPES[dtype],
            running_stats,
            quiet or dist.rank != 0,
        )
        steps = trainer.snapshot_plan
        named = list(probe.named_parameters())
        header = _header(data, model, model_kwargs, cfg, trainer, named, epochs, steps, save_every_steps, seed, dtype)
        run_key = header["run_key"]
        del probe

        _check_existing(out, run_key, header)
        out.mkdir(parents=True, exist_ok=True)
        dist.barrier()  # every rank has checked the old manifest before rank 0 rewrites it
        if dist.rank == 0:
            for tmp in out.glob(".expert_*.tmp"):  # left by a killed atomic write
                tmp.unlink(missing_ok=True)
        done = _scan_experts(out, run_key)
        if dist.rank == 0:
            _write_manifest(out, header, done, {}, n_experts)
        dist.barrier()  # all ranks scanned the same finished set before anyone trains

        pending = [i for i in range(n_experts) if i not in done]
        mine = pending[dist.rank :: dist.world]
        k = _choose_k(trainer, len(mine), experts_at_once, running_stats)
        if mine:
            logger.info(
                "recording %d %s experts on %s (rank %d/%d, %d at once)",
                len(mine),
                cfg.kind,
                device,
                dist.rank,
                dist.world,
                k,
            )
        on_change = (lambda: _write_manifest(out, header, done, failed, n_experts)) if dist.world == 1 else None
        failed: dict[int, str] = {}
        _train_assigned(
            trainer, mine, k, seed, cfg, out, run_key, done, failed, on_change, quiet or dist.rank != 0, dist.rank
        )

        dist.barrier()
        all_failed: dict[int, str] = {}
        for part in dist.all_gather(failed):
            all_failed.update(part)
        if dist.rank == 0:
            _write_manifest(out, header, _scan_experts(out, run_key), all_failed, n_experts)
        dist.barrier()
        if all_failed:
            ids = sorted(all_failed)
            raise DivergenceError(
                f"experts {ids} diverged (NaN/inf) in all {cfg.max_attempts} attempts with lr_teacher="
                f"{cfg.lr_teacher}; lower the learning rate; finished experts are kept in '{out}'"
            )
        buf = ExpertBuffer.open(out)
        if dist.rank == 0:
            _warn_if_not_learned(buf, data.num_classes)
        return buf
    finally:
        dist.close()


def _train_assigned(
    trainer: _Trainer,
    ids: list[int],
    k: int,
    seed: int,
    cfg: ExpertConfig,
    out: Path,
    run_key: str,
    done: dict[int, dict[str, Any]],
    failed: dict[int, str],
    on_change: Callable[[], None] | None,
    quiet: bool,
    rank: int = 0,
) -> None:
    """Train the experts ``ids`` in groups of ``k``; write each finished one at once; retry diverged ones."""
    bar = None
    if not quiet and ids:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(ids), desc=f"{cfg.kind} experts", unit="expert", position=0)
    queue = [_Expert.make(seed, i, 0) for i in ids]
    while queue:
        group, queue = queue[:k], queue[k:]
        for res in trainer.train_group(group, position=1):
            e = res.expert
            if res.ok:
                rec = _expert_record(res, run_key)
                rec["rank"] = rank
                meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "record": json.dumps(rec)}
                sha = save_tensors(out / rec["file"], {TENSOR_KEY: res.snapshots}, metadata=meta)
                rec = {key: v for key, v in rec.items() if key != "run_key"}
                rec["sha256"] = sha
                done[e.id] = rec
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(f"expert {e.id}: test acc {rec['final_test_acc']:.3f}")
            elif e.attempt + 1 < cfg.max_attempts:
                logger.warning("expert %d diverged (attempt %d); retrying with fresh seeds", e.id, e.attempt + 1)
                queue.append(_Expert.make(seed, e.id, e.attempt + 1))
                continue
            else:
                failed[e.id] = f"diverged (NaN/inf parameters) in all {cfg.max_attempts} attempts"
                if bar is not None:
                    bar.update(1)
            if on_change is not None:
                on_change()
    if bar is not None:
        bar.close()


def _warn_if_not_learned(buf: ExpertBuffer, num_classes: int) -> None:
    """A buffer whose experts stayed near chance is a bad buffer: say so (the accuracy curves are in the manifest)."""
    chance = 1.0 / num_classes
    stuck = {i: c[-1] for i, c in buf.accuracy_curves.items() if c and c[-1] is not None and c[-1] < 1.5 * chance}
    if stuck:
        worst = ", ".join(f"{i}: {a:.3f}" for i, a in sorted(stuck.items())[:5])
        logger.warning(
            "%d of %d experts in '%s' ended near chance test accuracy (%s; chance %.3f): the buffer is unlikely to "
            "help distillation; train more epochs or raise lr_teacher",
            len(stuck),
            buf.num_experts,
            buf.path,
            worst,
            chance,
        )


def _header(
    data: ImageData,
    model: str,
    model_kwargs: dict[str, Any],
    cfg: ExpertConfig,
    trainer: _Trainer,
    named: list[tuple[str, torch.nn.Parameter]],
    epochs: int,
    steps: list[int],
    save_every_steps: int | None,
    seed: int,
    dtype: str,
) -> dict[str, Any]:
    """Manifest fields shared by all experts; ``run_key`` hashes the ones resume must match."""
    import condense

    header: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dataset": dataset_record(data),
        "preprocessing": data.preprocessing(),
        "model": {
            "name": model,
            "in_channels": data.channels,
            "num_classes": data.num_classes,
            "image_size": list(data.image_size),
            "kwargs": model_kwargs,
        },
        "param_names": [n for n, _ in named],
        "param_shapes": {n: list(p.shape) for n, p in named},
        "num_params": sum(p.numel() for _, p in named),
        "kind": cfg.kind,
        "config": cfg.to_dict(),
        "augment": trainer.aug.config(),
        "epochs": epochs,
        "steps_per_epoch": trainer.steps_per_epoch,
        "save_every_steps": save_every_steps,
        "snapshot_steps": steps,
        "num_snapshots": len(steps),
        "dtype": dtype,
        "seed": seed,
        "seed_derivation": "sha256('condense-experts/{seed}/{expert_id}/{attempt}/{init|order|aug}')[:8] LE & 2^63-1",
    }
    keyed = {k: v for k, v in header.items()}
    header["run_key"] = hashlib.sha256(_canon(keyed).encode()).hexdigest()[:16]
    header["provenance"] = {
        "condense": condense.__version__,
        "torch": torch.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return header


def _expert_record(res: _Result, run_key: str) -> dict[str, Any]:
    e = res.expert
    curve = res.accuracy_curve
    return {
        "id": e.id,
        "file": expert_filename(e.id),
        "status": "done",
        "attempt": e.attempt,
        "seeds": e.seeds,
        "accuracy_curve": curve,
        "final_test_acc": curve[-1] if curve else None,
        "train_loss_curve": res.train_loss_curve,
        "seconds": round(res.seconds, 3),
        "run_key": run_key,
    }
