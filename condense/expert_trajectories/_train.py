"""Train K experts at once: stacked parameters, one vmapped functional SGD step, a snapshot every epoch.

Knows nothing about files: :meth:`Trainer.train_group` returns snapshots and curves, and ``record.py`` writes them.
After every epoch it hands the group's whole training state (:class:`GroupState`) to a callback, and it continues
from such a state when given one, so ``record.py`` can checkpoint inside an expert and resume bit for bit.

Speed: for models without running statistics (the instance-norm ConvNet) the K experts' parameters are stacked
(``torch.func.stack_module_state``) and one functional SGD step is ``vmap``-ed over them, so a step is a few large
batched kernels instead of K small ones. Models with BatchNorm are trained one at a time (running statistics cannot
be vmapped). Every expert owns three seeds derived from ``(seed, expert id, attempt)`` (``manifest.derive_seed``):
its initialization, its data order and its DSA draws. DSA parameters are drawn per expert (one group per expert and
step, as the authors' code does per batch) outside ``vmap`` and applied once per drawn group to the stacked batch, so
an expert's trajectory does not depend on which other experts share its group: a vmapped run equals a looped run up
to float rounding.

One step of one expert (``Trainer.step_fn``), in order: cross-entropy on the augmented batch, scaled in AST's early
epochs; AST's input-gradient penalty on the clean batch; the gradient, through GSAM for flat experts (``sam.py``);
then ``condense.optim.sgd_tree`` (``torch.optim.SGD`` semantics: weight decay, momentum, dampening 0).

Learning-rate decay (``lr_decay_factor`` != 1): the lr is multiplied once, before epoch ``lr_decay_epoch`` (0-based;
default ``epochs // 2 + 2``), and the momentum buffer is reset to zero there. This is AST's ``buffer.py`` loop (and
MTT's ``--decay``): after epoch ``epochs // 2 + 1`` has trained it multiplies the lr and builds a new
``torch.optim.SGD``, so epoch ``epochs // 2 + 2`` is the first one at the lower lr and starts without momentum
(for 50 epochs: epochs 0-26 at lr, 27-49 at 0.6 lr).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from condense.augment import get_augment, resolve_augment
from condense.errors import ConfigError
from condense.expert_trajectories.configs import ExpertConfig, FlatExpertConfig, SmoothExpertConfig
from condense.expert_trajectories.manifest import expert_seeds
from condense.expert_trajectories.sam import gsam_gradient
from condense.models import create_model
from condense.models.params import ParamLayout
from condense.optim import sgd_tree

if TYPE_CHECKING:
    from condense.data import ImageData

__all__ = [
    "Expert",
    "GroupState",
    "TrainResult",
    "Trainer",
    "augment_experts",
    "choose_experts_at_once",
    "snapshot_steps",
]

logger = logging.getLogger("condense")

# CPU default: one at a time. vmap turns each conv into a grouped conv, which is slow on the CPU: measured on 1 core,
# digits ConvNet width 128: loop 0.57 s per expert-epoch, vmap with K=4 1.61 s (benchmarks/experts_speed.py).
CPU_DEFAULT_EXPERTS_AT_ONCE = 1
GPU_MAX_EXPERTS_AT_ONCE = 64
GPU_MEMORY_FRACTION = 0.7  # of the free memory the experts of a group may use
EVAL_IMAGES = 2048  # test images x experts per forward pass of the per-epoch evaluation (bounds activation memory)


# ----------------------------------------------------------------------------------------------------------------------
# One expert attempt, its result, the snapshot plan
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class Expert:
    """One attempt at one expert: its seeds and its own data-order and augmentation generators."""

    id: int
    attempt: int
    seeds: dict[str, int]
    order_gen: torch.Generator
    aug_gen: torch.Generator

    @classmethod
    def make(cls, seed: int, expert_id: int, attempt: int) -> Expert:
        """The attempt ``attempt`` at expert ``expert_id`` of a run with base seed ``seed``."""
        seeds = expert_seeds(seed, expert_id, attempt)
        return cls(
            expert_id,
            attempt,
            seeds,
            torch.Generator().manual_seed(seeds["order"]),
            torch.Generator().manual_seed(seeds["aug"]),
        )


@dataclass
class TrainResult:
    """What training one expert produced; ``ok`` is False when it diverged (its snapshots are then None).

    Shape:
        snapshots: (S, P), in the storage dtype, on the CPU.
    """

    expert: Expert
    ok: bool
    snapshots: torch.Tensor | None
    accuracy_curve: list[float | None]  # test accuracy after each epoch (None once diverged: the manifest is JSON)
    train_loss_curve: list[float | None]  # mean unscaled cross-entropy of each epoch
    seconds: float  # wall time of the group divided by its size


@dataclass
class GroupState:
    """Everything a group of K experts needs to continue training after ``epoch`` finished epochs.

    Together with the experts' ``order_gen``/``aug_gen`` states (the only random streams still drawn from: the
    ``init`` seed is spent when the networks are built) this determines the rest of the training exactly, so a group
    resumed from it ends bit-identical to one that never stopped. Tensors are on the training device except
    ``finite`` and ``snapshots`` (CPU, as the trainer keeps them).

    Shape:
        params, mom, buffers: name -> (K, *shape) when the group is vmapped (K > 1), else (*shape,); ``mom`` is
            ``{}`` without momentum, ``buffers`` ``{}`` without BatchNorm.
        snapshots: S_done tensors of (K, P), the storage dtype: the snapshots taken so far.
        finite: (K,), bool, False once an expert's parameters went non-finite.
    """

    epoch: int  # finished epochs
    step: int  # SGD steps taken (epoch * steps_per_epoch)
    lr: float  # the learning rate of the next epoch, before its decay check
    params: dict[str, torch.Tensor]
    mom: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    snapshots: list[torch.Tensor]
    finite: torch.Tensor
    accuracy_curves: list[list[float | None]]
    train_loss_curves: list[list[float | None]]
    seconds: float  # wall time the group has trained so far, over every session


def snapshot_steps(epochs: int, steps_per_epoch: int, save_every_steps: int | None) -> list[int]:
    """Global SGD step of each snapshot: every epoch (``[0, S_e, 2 S_e, ...]``) or every k steps plus the last."""
    total = epochs * steps_per_epoch
    if save_every_steps is None:
        return [e * steps_per_epoch for e in range(epochs + 1)]
    steps = list(range(0, total + 1, save_every_steps))
    if steps[-1] != total:
        steps.append(total)
    return steps


# ----------------------------------------------------------------------------------------------------------------------
# Augmentation: K experts, K independent DSA draws, one apply per drawn group
# ----------------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------------------------------


class Trainer:
    """Trains groups of experts on one dataset, model and config; knows nothing about files.

    Args:
        data: the training set; its test split gives the per-epoch accuracy.
        model: registered model name.
        model_kwargs: builder options for ``create_model``.
        cfg: the expert config.
        epochs: training epochs per expert.
        save_every_steps: snapshot every k SGD steps instead of every epoch.
        device: where to train (the data is moved there once).
        storage_dtype: dtype the snapshots are kept in.
        running_stats: the model has BatchNorm running statistics (then experts train one at a time).
        quiet: no progress bars.
    """

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
        self.model = model
        self.model_kwargs = model_kwargs
        self.cfg = cfg
        self.epochs = epochs
        self.device = device
        self.storage_dtype = storage_dtype
        self.running_stats = running_stats
        self.quiet = quiet
        self.aug = get_augment(resolve_augment(cfg.augment, data.name))
        # The whole dataset lives on the device: a batch is one index, no loader.
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
        self.snapshot_plan = snapshot_steps(epochs, self.steps_per_epoch, save_every_steps)
        self.snapshot_steps = set(self.snapshot_plan)
        self.num_snapshots = len(self.snapshot_plan)
        # the first 0-based epoch trained at the decayed lr: AST's buffer.py decays after epoch E // 2 + 1 has
        # trained (``if e in lr_schedule`` at the end of epoch e), so epoch E // 2 + 2 is the first at the lower lr
        self.lr_decay_epoch = cfg.lr_decay_epoch if cfg.lr_decay_epoch is not None else epochs // 2 + 2

    def build(self, expert: Expert) -> torch.nn.Module:
        """The expert's network, initialized from its ``init`` seed, on the device."""
        net = create_model(self.model, **self.model_args, seed=expert.seeds["init"], **self.model_kwargs)
        return net.to(self.device)

    def step_fn(self, base: torch.nn.Module, lr: float, loss_scale: float) -> Callable:
        """One SGD step of ONE expert as a pure function (vmapped over K experts, or called as is).

        The returned ``step(params, mom, buffers, x, y, x_clean)`` gives ``(new_params, new_mom, ce)``; ``mom`` is
        zeros before the first step (not None: vmap needs the same inputs every step; ``0 * mu + d`` is ``d``
        exactly, as torch.optim.SGD's first step) and ``{}`` without momentum.

        Shape (one expert; vmap adds a leading K to every argument):
            params, mom: name -> (*param_shape,).
            x: (B, C, H, W), augmented; x_clean: (B, C, H, W), the same images un-augmented (AST's penalty).
            y: (B,), int64 labels.
            ce: (), the unscaled cross-entropy of the batch.
        """
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
                # GSAM's perturbed pass must not move the BN running statistics: it gets a copy
                bb = {k: v.clone() for k, v in b.items()} if (perturbed and running_stats) else b
                grads, ce = torch.func.grad(loss_fn, has_aux=True)(params, bb, x, y, x_clean)
                return grads, ce

            if flat:
                d, ce = gsam_gradient(
                    grad_fn, p, rho=cfg.rho, alpha=cfg.alpha, adaptive=cfg.adaptive, eps=cfg.perturb_eps
                )
            else:
                d, ce = grad_fn(p, False)
            new_p, new_mom = sgd_tree(p, d, mom if cfg.momentum else None, lr, cfg.momentum, cfg.weight_decay)
            return new_p, new_mom or {}, ce

        return step

    @torch.no_grad()
    def evaluate(self, base: torch.nn.Module, params: dict, buffers: dict, vmapped: bool) -> torch.Tensor:
        """Test accuracy of each expert of the group.

        Shape:
            return: (K,), float64 fractions.
        """
        call = torch.func.functional_call
        base.eval()
        correct = None
        chunk = max(128, EVAL_IMAGES // len(next(iter(params.values()))) if vmapped else EVAL_IMAGES)
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

    def train_group(
        self,
        experts: list[Expert],
        position: int = 0,
        *,
        resume: GroupState | None = None,
        on_epoch: Callable[[GroupState], None] | None = None,
    ) -> list[TrainResult]:
        """Train ``experts`` together (vmapped when more than one) and return their snapshots and curves.

        Args:
            experts: the group; their ``order_gen``/``aug_gen`` must be in the state that matches ``resume``.
            position: tqdm position of the group's bar.
            resume: continue from this state (from ``on_epoch`` of an earlier call with the same experts) instead
                of from the initialization.
            on_epoch: called after every finished epoch with the live state (do not modify it; copy what you keep).
        """
        t0 = time.perf_counter()
        k = len(experts)
        vmapped = k > 1
        if vmapped and self.running_stats:
            raise ConfigError("models with running statistics (BatchNorm) are trained one at a time")

        # Setup: K stacked parameter sets on one stateless ("meta") copy of the network
        models = [self.build(e) for e in experts]
        layout = ParamLayout.from_module(models[0])
        if vmapped:
            params, buffers = torch.func.stack_module_state(models)
            params = {n: params[n].detach() for n in layout.names}
            base = copy.deepcopy(models[0]).to("meta")
        else:
            base = models[0]
            params = {n: p.detach().clone() for n, p in base.named_parameters()}
            buffers = {n: b.clone() for n, b in base.named_buffers()}
        base.train()
        mom = {n: torch.zeros_like(p) for n, p in params.items()} if self.cfg.momentum else {}

        # Snapshots: (K, P) rows in the storage dtype; a non-finite row marks its expert as diverged
        snaps: list[torch.Tensor] = []
        finite = torch.ones(k, dtype=torch.bool)

        def snapshot() -> None:
            flat = layout.flatten(params).reshape(k, -1)
            finite.logical_and_(torch.isfinite(flat).all(dim=1).cpu())
            snaps.append(flat.to("cpu", self.storage_dtype))

        acc_curves: list[list[float | None]] = [[] for _ in range(k)]
        loss_curves: list[list[float | None]] = [[] for _ in range(k)]
        lr = self.cfg.lr_teacher
        bs = self.cfg.batch_size
        step = 0
        start_epoch = 0
        seconds_before = 0.0
        if resume is None:
            snapshot()
        else:
            # Resume: the saved tensors replace the fresh initialization; the networks built above only give the
            # stateless ``base`` and the layout (building them draws from no stream the training uses)
            dev = self.device
            params = {n: resume.params[n].to(dev) for n in params}
            mom = {n: resume.mom[n].to(dev) for n in mom}
            buffers = {n: resume.buffers[n].to(dev) for n in buffers}
            snaps = list(resume.snapshots)
            finite = resume.finite.clone()
            acc_curves = [list(c) for c in resume.accuracy_curves]
            loss_curves = [list(c) for c in resume.train_loss_curves]
            lr, step, start_epoch, seconds_before = resume.lr, resume.step, resume.epoch, resume.seconds
        bar = None
        if not self.quiet:
            from tqdm.auto import tqdm

            ids = ",".join(str(e.id) for e in experts)
            bar = tqdm(total=self.epochs, initial=start_epoch, desc=f"experts {ids}", leave=False, position=position)

        # Training: per epoch, each expert's own permutation; per step, its own DSA draw
        for epoch in range(start_epoch, self.epochs):
            if epoch == self.lr_decay_epoch and self.cfg.lr_decay_factor != 1.0:
                # AST (buffer.py) and MTT (--decay) rebuild torch.optim.SGD with the new lr: the momentum buffer
                # starts again from zero (zeros here: the first step's 0 * mu + d is d, as a fresh SGD's buffer)
                lr *= self.cfg.lr_decay_factor
                mom = {n: torch.zeros_like(m) for n, m in mom.items()}
            scale = self.cfg.loss_scale(epoch) if isinstance(self.cfg, SmoothExpertConfig) else 1.0
            step_fn = self.step_fn(base, lr, scale)
            if vmapped:
                step_fn = torch.func.vmap(step_fn, in_dims=(0, 0, 0, 0, 0, 0))
            perms = torch.stack(
                [torch.randperm(self.num_train, generator=e.order_gen, device=e.order_gen.device) for e in experts]
            )
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

            # Logging: test accuracy and mean loss of the epoch
            acc = self.evaluate(base, params, buffers, vmapped).tolist()
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
            if on_epoch is not None:
                # lr is the value after this epoch's decay check, so a resumed epoch + 1 applies the same rule
                on_epoch(
                    GroupState(
                        epoch + 1,
                        step,
                        lr,
                        params,
                        mom,
                        buffers,
                        snaps,
                        finite,
                        acc_curves,
                        loss_curves,
                        seconds_before + time.perf_counter() - t0,
                    )
                )
        if bar is not None:
            bar.close()

        seconds = (seconds_before + time.perf_counter() - t0) / k
        stacked = torch.stack(snaps, dim=1) if finite.any() else None  # (K, S, P)
        results = []
        for i, e in enumerate(experts):
            ok = bool(finite[i]) and len(snaps) == self.num_snapshots
            snap = stacked[i].clone() if ok else None
            results.append(TrainResult(e, ok, snap, acc_curves[i], loss_curves[i], seconds))
        return results

    def per_expert_bytes(self) -> int:
        """Device memory one more expert in a group needs, measured on one CUDA step (a rough upper bound)."""
        e = Expert.make(0, 0, 0)
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        base_mem = torch.cuda.memory_allocated(self.device)
        net = self.build(e)
        params = {n: p.detach().clone() for n, p in net.named_parameters()}
        buffers = {n: b.clone() for n, b in net.named_buffers()}
        mom = {n: torch.zeros_like(p) for n, p in params.items()} if self.cfg.momentum else {}
        idx = torch.arange(min(self.cfg.batch_size, self.num_train), device=self.device)
        x, y = self.x_train[idx], self.y_train[idx]
        self.step_fn(net, self.cfg.lr_teacher, 1.0)(params, mom, buffers, x, y, x)
        torch.cuda.synchronize(self.device)
        used = torch.cuda.max_memory_allocated(self.device) - base_mem
        del net, params, buffers, mom
        return int(used * 1.5) + 1


def choose_experts_at_once(trainer: Trainer, n: int, experts_at_once: int | None) -> int:
    """K, the group size: 1 for BatchNorm models, else the caller's, else what fits the free GPU memory (1 on CPU)."""
    if n <= 1:
        return 1
    if trainer.running_stats:
        if experts_at_once not in (None, 1):
            logger.warning("model keeps running statistics (BatchNorm): training experts one at a time")
        return 1
    if experts_at_once is not None:
        return max(1, min(experts_at_once, n))
    if trainer.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(trainer.device)
        per = trainer.per_expert_bytes()
        return max(1, min(n, GPU_MAX_EXPERTS_AT_ONCE, int(free * GPU_MEMORY_FRACTION) // per))
    return min(n, CPU_DEFAULT_EXPERTS_AT_ONCE)
