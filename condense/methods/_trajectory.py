"""The shared core of the trajectory matchers (MTT, FTD, DATM) and AST's options: config, state, one step.

A trajectory matcher keeps synthetic images X, labels y (hard, or learnable logits for DATM) and a learnable student
step size alpha. Each iteration samples an expert and a start epoch t from a recorded buffer, unrolls a student from
theta*_t for N steps on X (:mod:`condense.methods._unroll`), and moves X, alpha (and y) down the gradient of the
normalized distance between the student and theta*_{t+M}. The method files (``mtt.py``, ``ftd.py``, ``datm.py``)
hold their configs, presets and the few hooks where they differ; everything they share is here.

State (all checkpointed by the runner; see :class:`~condense.methods.base.MatchState`)::

    tensors: images (N, C, H, W); labels (N,) int64 or (N, K) float logits; lr () alpha; mom_images, mom_lr
             (and mom_labels, ema_images) the SGD momentum buffers / EMA, so a resumed run continues exactly
    scalars: lr_img (halved by the runner after a non-finite step), ipc
    runtime: buffer, model, layout, augment, cfg, data, device (rebuilt by ``restore_runtime``)

Guard rails: alpha is clamped to ``lr_min`` (> 0) after every update. MTT lets alpha go negative (MTT issues #16,
#20); a clamp keeps the paper's ``lr_lr`` meaning (a log-parametrization would rescale it by alpha^2). Non-finite
losses or tensors are rolled back by the runner, which then calls :meth:`on_divergence` (image lr halved).

AST options (Shen, Yang and Lam, arXiv:2310.10541), switches of every trajectory config:

- smooth experts: ``expert_kind="smooth"`` requires a buffer recorded with ``kind="smooth"``;
  ``student_momentum=0.9`` makes the student use heavy-ball momentum like those experts;
- ``balanced_loss``: inner CE times log5(t - T/2 + 8) for t >= T/2, divided by log5(T/2 - t + 8) otherwise;
- ``intermediate_loss``: ``"aggregate"`` / ``"adaptive"`` add the distance to theta*_{t+i} at student step
  floor(N/M) * i, i = 1..M-1, with weight 1 / (i / M);
- ``weight_perturb``: theta_0 <- theta_0 + a * (d / ||d||_F) * theta_0 on conv weights, d ~ N(0, I);
- ``init="representative"``: per class, k-means (k = ipc) on an expert's logits, the real image nearest each
  centroid (AST's code takes int(ipc / 10) images per each of 10 centroids, i.e. none below IPC 10).

With ``weight_perturb`` the perturbed theta_0 is both the student's start and the normalizer's ``theta*_t``.

References:
    Cazenavette et al., "Dataset Distillation by Matching Training Trajectories", CVPR 2022, arXiv:2203.11932.
    Du et al., "Minimizing the Accumulated Trajectory Error to Improve Dataset Distillation", CVPR 2023,
    arXiv:2211.11004.
    Guo et al., "Towards Lossless Dataset Distillation via Difficulty-Aligned Trajectory Matching", ICLR 2024,
    arXiv:2310.05773.
    Shen, Yang and Lam, "AST: Effective Dataset Distillation through Alignment with Smooth and High-Quality Expert
    Trajectories", arXiv:2310.10541 (code: shenjiyuan123/AST-Alignment-with-Smooth-Expert).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch.func import functional_call

from condense.config import check_range
from condense.errors import ConfigError, MismatchError
from condense.methods._unroll import MODES, MatchTarget, ParamLayout, StepPlan, meta_gradient
from condense.methods.base import Matcher, MatchState, RunContext

__all__ = ["DIGITS_PRESET", "TrajectoryConfig", "TrajectoryMatcher", "INITS", "expert_logits", "kmeans"]

# The digits (8x8, 10 classes) preset every trajectory matcher starts from: tuned here for CPU minutes on the buffer
# of ``TrajectoryMatcher.demo_buffer`` (convnetd2 width 32, SGD lr 0.05, batch 64, 6 epochs); not from a paper.
DIGITS_PRESET: dict[str, object] = dict(
    num_iterations=60,
    syn_steps=20,
    expert_epochs=2,
    max_start_epoch=3,
    lr_img=100.0,
    lr_lr=1e-5,
    lr_teacher=0.05,
    augment="dsa_noflip",
    source="condense: tuned on digits (CPU minutes), not from a paper",
)

INITS = ("real", "noise", "correct", "representative")
EXPERT_KINDS = ("any", "vanilla", "flat", "smooth")
INTERMEDIATE = ("none", "aggregate", "adaptive")


@dataclass(frozen=True, kw_only=True)
class TrajectoryConfig:
    """Fields shared by MTT, FTD and DATM. Defaults are MTT's ``distill.py`` argparse defaults unless noted."""

    num_iterations: int = 5000  # outer iterations (MTT --Iteration)
    syn_steps: int = 20  # N, student steps per iteration (MTT --syn_steps)
    expert_epochs: int = 3  # M, expert epochs between start and target (MTT --expert_epochs)
    min_start_epoch: int = 0  # smallest start epoch t (MTT: 0; DATM min_start_epoch)
    max_start_epoch: int = 25  # T+, exclusive upper bound of t (MTT --max_start_epoch)
    lr_img: float = 1000.0  # SGD lr on pixels (MTT --lr_img)
    lr_lr: float = 1e-5  # SGD lr on alpha (MTT --lr_lr)
    lr_teacher: float = 0.01  # alpha_0, initial student step size (MTT --lr_teacher)
    momentum_img: float = 0.5  # SGD momentum on pixels (MTT distill.py: optimizer_img momentum=0.5)
    momentum_lr: float = 0.5  # SGD momentum on alpha (MTT distill.py: optimizer_lr momentum=0.5)
    lr_min: float = 1e-6  # floor that keeps alpha positive (condense guard rail; MTT has none)
    batch_syn: int | None = None  # synthetic images per student step, None: all (MTT --batch_syn)
    init: str = "real"  # "real", "noise", "correct" (DATM), "representative" (AST) (MTT --pix_init real)
    augment: str = "dsa"  # augmentation preset for the student (MTT --dsa True, DSA strategy)
    unroll: str = "full"  # "full" backprop through N steps, or "lean" constant-memory exact recompute (TESLA-style)
    model: str | None = None  # student architecture; None: the buffer's (must match it when given)
    expert_kind: str = "any"  # required buffer kind: any, vanilla, flat (FTD/DATM), smooth (AST)
    student_momentum: float = 0.0  # mu, heavy-ball momentum of the student (AST --mom 0.9 with smooth experts)
    balanced_loss: bool = False  # AST --balance_loss
    intermediate_loss: str = "none"  # AST --agg_middle_loss ("aggregate") / --adaptive_middle_loss ("adaptive")
    weight_perturb: float = 0.0  # AST --weight_perturb strength a (AST uses 1.0); 0: off

    def __post_init__(self) -> None:
        check_range("num_iterations", self.num_iterations, 0)
        check_range("syn_steps", self.syn_steps, 1)
        check_range("expert_epochs", self.expert_epochs, 1)
        check_range("min_start_epoch", self.min_start_epoch, 0)
        if self.max_start_epoch <= self.min_start_epoch:
            raise ConfigError(
                f"max_start_epoch={self.max_start_epoch} must exceed min_start_epoch={self.min_start_epoch} "
                "(start epochs are drawn from [min_start_epoch, max_start_epoch))"
            )
        for name in ("lr_img", "lr_lr", "lr_teacher", "lr_min"):
            check_range(name, getattr(self, name), 0.0, lo_open=name in ("lr_teacher", "lr_min"))
        if self.lr_min > self.lr_teacher:
            raise ConfigError(f"lr_min={self.lr_min} must not exceed lr_teacher={self.lr_teacher}")
        for name in ("momentum_img", "momentum_lr", "student_momentum"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ConfigError(f"{name}={v} must lie in [0, 1)")
        if self.batch_syn is not None:
            check_range("batch_syn", self.batch_syn, 1)
        _choice("init", self.init, INITS)
        _choice("unroll", self.unroll, MODES)
        _choice("expert_kind", self.expert_kind, EXPERT_KINDS)
        _choice("intermediate_loss", self.intermediate_loss, INTERMEDIATE)
        check_range("weight_perturb", self.weight_perturb, 0.0)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not supported; allowed: {', '.join(allowed)}")


# ----------------------------------------------------------------------------------------------------------------------
# Expert helpers (initialization)
# ----------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def expert_logits(
    model: torch.nn.Module, layout: ParamLayout, flat: torch.Tensor, x: torch.Tensor, batch: int = 1024
) -> torch.Tensor:
    """Logits of the expert with flat parameters ``flat`` on ``x`` (batched, no augmentation).

    Shape:
        flat: (P,); x: (B, C, H, W); return: (B, K).
    """
    params = layout.unflatten(flat.to(x.device))
    return torch.cat([functional_call(model, params, (x[i : i + batch],)) for i in range(0, x.shape[0], batch)])


def kmeans(x: torch.Tensor, k: int, generator: torch.Generator, iters: int = 25) -> torch.Tensor:
    """Plain Lloyd k-means (k-means++-free: k distinct random points as seeds); returns the (k, D) centroids.

    Shape:
        x: (B, D) with B >= k.
    """
    perm = torch.randperm(x.shape[0], generator=generator)[:k].to(x.device)
    cent = x[perm].clone()
    for _ in range(iters):
        assign = torch.cdist(x, cent).argmin(1)
        for j in range(k):
            members = x[assign == j]
            if members.shape[0]:
                cent[j] = members.mean(0)
    return cent


# ----------------------------------------------------------------------------------------------------------------------
# The matcher
# ----------------------------------------------------------------------------------------------------------------------


class TrajectoryMatcher(Matcher):
    """Base of MTT, FTD and DATM: one iteration = sample a trajectory, unroll a student, update X, alpha (y).

    Subclasses override the hooks :meth:`start_window`, :meth:`accept`, :meth:`after_update`,
    :meth:`final_images`, :meth:`init_labels` and :meth:`label_lr`.
    """

    needs_buffer: ClassVar[bool] = True
    #: the buffer ``condense run`` (the digits demo) records first: the settings the digits presets were tuned on.
    #: ``record_experts(data, model, experts, epochs, out, kind=kind, model_kwargs=model_kwargs,
    #: config=get_expert_config(kind, **config))``; about 5 s on 2 CPU cores (10 s for flat experts).
    demo_buffer: ClassVar[dict[str, Any]] = {
        "kind": "vanilla",
        "model": "convnetd2",
        "model_kwargs": {"width": 32},
        "experts": 2,
        "epochs": 6,
        "config": {"lr_teacher": 0.05, "batch_size": 64, "augment": "dsa_noflip"},
    }

    # ---------------------------------------------------------------- hooks

    def start_window(self, cfg: Any, it: int) -> tuple[int, int]:
        """``[lo, hi)`` of start epochs at iteration ``it`` (MTT: fixed)."""
        return cfg.min_start_epoch, cfg.max_start_epoch

    def accept(self, loss: float, cfg: Any) -> bool:
        """Whether this iteration's update is applied (DATM skips losses above a threshold)."""
        return True

    def after_update(self, state: MatchState, cfg: Any) -> None:
        """Called after the parameters moved (FTD updates its EMA here)."""

    def final_images(self, state: MatchState) -> torch.Tensor:
        """The images kept in the artifact (FTD: the EMA)."""
        return state.tensors["images"]

    def init_labels(self, state: MatchState, cfg: Any, hard: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Initial labels; hard class indices by default."""
        return hard

    def label_lr(self, cfg: Any) -> tuple[float, float]:
        """(lr, momentum) of the learnable labels (DATM)."""
        return 0.0, 0.0

    # ---------------------------------------------------------------- runtime

    def restore_runtime(self, state: MatchState, data: Any, cfg: Any, run: RunContext) -> None:
        from condense.augment import get_augment
        from condense.expert_trajectories import ExpertBuffer
        from condense.models import create_model

        if run.buffer is None:
            raise ConfigError(
                f"{self.name} matches expert trajectories and needs a buffer; record one with `condense experts` "
                "and pass --buffer PATH (RunContext(buffer=...))"
            )
        buf = ExpertBuffer.open(run.buffer)
        spec = buf.model_spec
        if cfg.model is not None and cfg.model != spec["name"]:
            raise MismatchError(
                f"{self.name} config asks for model {cfg.model!r} but buffer '{run.buffer}' was recorded with "
                f"{spec['name']!r}; set model={spec['name']} or record a buffer for {cfg.model}"
            )
        buf.check_compatible(data, spec["name"])
        if cfg.expert_kind != "any" and buf.kind != cfg.expert_kind:
            raise MismatchError(
                f"{self.name} with expert_kind={cfg.expert_kind!r} needs a {cfg.expert_kind} buffer, but "
                f"'{run.buffer}' holds {buf.kind} experts; record one with kind={cfg.expert_kind!r} or set "
                "expert_kind=any"
            )
        need = cfg.max_start_epoch - 1 + cfg.expert_epochs
        if need > buf.num_snapshots - 1:
            raise ConfigError(
                f"max_start_epoch={cfg.max_start_epoch} and expert_epochs={cfg.expert_epochs} need snapshot {need}, "
                f"but buffer '{run.buffer}' holds snapshots 0..{buf.num_snapshots - 1}; record longer experts or "
                "lower them"
            )
        device = torch.device(run.device)
        model = create_model(
            spec["name"],
            in_channels=spec["in_channels"],
            num_classes=spec["num_classes"],
            image_size=tuple(spec["image_size"]),
            seed=0,
            **spec.get("kwargs", {}),
        ).to(device)
        layout = ParamLayout(tuple(buf.param_names), tuple(tuple(buf.param_shapes[n]) for n in buf.param_names))
        mine = ParamLayout.from_module(model)
        if mine != layout:
            raise MismatchError(
                f"buffer '{run.buffer}' parameters {list(layout.names)} do not match model {spec['name']!r} "
                f"parameters {list(mine.names)}; record a new buffer"
            )
        aug = get_augment(cfg.augment)
        state.runtime.update(
            buffer=buf,
            model=model,
            layout=layout,
            augment=None if aug.is_identity else aug,
            cfg=cfg,
            data=data,
            device=device,
        )

    # ---------------------------------------------------------------- init

    def init_state(self, data: Any, cfg: Any, ipc: int, gen: torch.Generator, run: RunContext) -> MatchState:
        state = MatchState()
        self.restore_runtime(state, data, cfg, run)
        device = state.runtime["device"]
        if cfg.init in ("real", "noise"):
            from condense.methods._classwise import init_images

            images, hard = init_images(data, ipc, cfg.init, gen)
        elif cfg.init == "correct":
            images, hard = self._init_correct(state, data, ipc, gen)
        else:
            images, hard = self._init_representative(state, data, ipc, gen)
        images = images.to(device).float().contiguous()
        hard = hard.to(device)
        state.tensors["images"] = images
        state.tensors["mom_images"] = torch.zeros_like(images)
        labels = self.init_labels(state, cfg, hard, gen).to(device)
        state.tensors["labels"] = labels
        if labels.is_floating_point():
            state.tensors["mom_labels"] = torch.zeros_like(labels)
        state.tensors["lr"] = torch.tensor(float(cfg.lr_teacher), device=device)
        state.tensors["mom_lr"] = torch.zeros((), device=device)
        state.scalars.update(lr_img=float(cfg.lr_img), ipc=int(ipc))
        return state

    def _real_by_class(self, data: Any) -> list[torch.Tensor]:
        y = data.y_train
        return [torch.nonzero(y == c).flatten() for c in range(data.num_classes)]

    def _init_correct(
        self, state: MatchState, data: Any, ipc: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """DATM ``samples_predicted_correctly``: per class, random real images an expert's final checkpoint gets
        right; experts are tried in order until every class has ``ipc`` images."""
        rt = state.runtime
        buf, model, layout, device = rt["buffer"], rt["model"], rt["layout"], rt["device"]
        chosen: list[list[int]] = [[] for _ in range(data.num_classes)]
        pools = self._real_by_class(data)
        for eid in buf.expert_ids:
            if all(len(c) >= ipc for c in chosen):
                break
            logits = expert_logits(model, layout, buf.snapshot(eid, -1), data.x_train.to(device))
            ok = (logits.argmax(1).cpu() == data.y_train.cpu()).cpu()
            for c, pool in enumerate(pools):
                if len(chosen[c]) >= ipc:
                    continue
                pool = pool.cpu()
                cand = pool[ok[pool]]
                cand = cand[~torch.isin(cand, torch.tensor(chosen[c], dtype=torch.long))]
                cand = cand[torch.randperm(cand.numel(), generator=gen)]
                chosen[c].extend(cand[: ipc - len(chosen[c])].tolist())
        short = [c for c, v in enumerate(chosen) if len(v) < ipc]
        if short:
            raise ConfigError(
                f"init='correct' found fewer than {ipc} correctly classified real images for classes {short} with "
                f"the {buf.num_experts} experts of the buffer; use init='real'"
            )
        idx = torch.tensor([i for c in chosen for i in c], dtype=torch.long)
        from condense.methods._classwise import class_major_labels

        return data.x_train[idx.to(data.x_train.device)].clone(), class_major_labels(data.num_classes, ipc)

    def _init_representative(
        self, state: MatchState, data: Any, ipc: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """AST ``--pix_init avg``: per class, k-means with k = ipc on a final-epoch expert's logits; the real image
        nearest each centroid (distinct)."""
        rt = state.runtime
        buf, model, layout, device = rt["buffer"], rt["model"], rt["layout"], rt["device"]
        flat = buf.snapshot(buf.expert_ids[0], -1)
        picks: list[int] = []
        for c, pool in enumerate(self._real_by_class(data)):
            if pool.numel() < ipc:
                raise ConfigError(f"init='representative' needs {ipc} images of class {c}, found {pool.numel()}")
            feats = expert_logits(model, layout, flat, data.x_train[pool].to(device)).float()
            cent = kmeans(feats, ipc, gen)
            dist = torch.cdist(cent, feats)
            taken: list[int] = []
            for j in range(ipc):
                order = dist[j].argsort()
                k = next(int(i) for i in order.tolist() if int(i) not in taken)
                taken.append(k)
            picks.extend(pool[torch.tensor(taken, device=pool.device)].tolist())
        idx = torch.tensor(picks, dtype=torch.long)
        from condense.methods._classwise import class_major_labels

        return data.x_train[idx.to(data.x_train.device)].clone(), class_major_labels(data.num_classes, ipc)

    # ---------------------------------------------------------------- one iteration

    def _plan(self, images: torch.Tensor, cfg: Any, aug: Any, gen: torch.Generator) -> list[StepPlan]:
        """MTT's minibatching: chunks of one random permutation, a fresh permutation when they run out."""
        n = images.shape[0]
        b = n if cfg.batch_syn is None else min(cfg.batch_syn, n)
        chunks: list[torch.Tensor] = []
        plan = []
        for _ in range(cfg.syn_steps):
            if not chunks:
                chunks = list(torch.split(torch.randperm(n, generator=gen), b))
            idx = chunks.pop().to(images.device)
            params = None if aug is None else aug.sample(images[idx], gen)
            plan.append(StepPlan(idx, params))
        return plan

    @staticmethod
    def _perturb(theta: torch.Tensor, layout: ParamLayout, strength: float, gen: torch.Generator) -> torch.Tensor:
        """AST weight perturbation on conv weights (4-D): w <- w + a * (d / ||d||_F) * w, d ~ N(0, I)."""
        theta = theta.clone()
        params = layout.unflatten(theta)
        for shape, (_, w) in zip(layout.shapes, params.items(), strict=True):
            if len(shape) == 4:
                d = torch.randn(shape, generator=gen).to(w.device, w.dtype)
                w.add_(strength * d / d.norm() * w)
        return theta

    def _balance(self, cfg: Any, t: int) -> float:
        """AST balanced inner loss factor for start epoch ``t`` (T = max_start_epoch)."""
        half = cfg.max_start_epoch / 2
        if t >= half:
            return math.log(t - half + 8, 5)
        return 1.0 / math.log(half - t + 8, 5)

    def step(self, state: MatchState, it: int, gen: torch.Generator) -> dict[str, float]:
        rt = state.runtime
        cfg, buf, layout, device = rt["cfg"], rt["buffer"], rt["layout"], rt["device"]
        lo, hi = self.start_window(cfg, it)
        sample = buf.sample(lo, hi, cfg.expert_epochs, device, gen)
        theta0 = sample.start
        if cfg.weight_perturb > 0:
            theta0 = self._perturb(theta0, layout, cfg.weight_perturb, gen)
        n, m = cfg.syn_steps, cfg.expert_epochs
        matches = [MatchTarget(n, sample.target)]
        if cfg.intermediate_loss != "none" and m > 1 and n >= m:
            for i in range(1, m):
                target = buf.snapshot(sample.expert_id, sample.start_epoch + i).to(device)
                w = 1.0 if cfg.intermediate_loss == "aggregate" else i / m
                matches.insert(-1, MatchTarget((n // m) * i, target, w))
        scale = self._balance(cfg, sample.start_epoch) if cfg.balanced_loss else 1.0
        images, labels, lr = state.tensors["images"], state.tensors["labels"], state.tensors["lr"]
        plan = self._plan(images, cfg, rt["augment"], gen)
        soft = labels.is_floating_point()
        mg = meta_gradient(
            rt["model"],
            layout,
            theta0,
            images,
            labels,
            lr,
            plan,
            matches,
            augment=rt["augment"],
            mode=cfg.unroll,
            momentum=cfg.student_momentum,
            loss_scale=scale,
            labels_grad=soft,
        )
        accepted = self.accept(mg.loss, cfg)
        if accepted:
            with torch.no_grad():
                lr_img = float(state.scalars["lr_img"])
                _sgd(images, state.tensors["mom_images"], mg.images, lr_img, cfg.momentum_img)
                _sgd(lr, state.tensors["mom_lr"], mg.lr, cfg.lr_lr, cfg.momentum_lr)
                lr.clamp_(min=cfg.lr_min)
                if soft:
                    lr_y, mom_y = self.label_lr(cfg)
                    _sgd(labels, state.tensors["mom_labels"], mg.labels, lr_y, mom_y)
            self.after_update(state, cfg)
        return {
            "loss": mg.loss,
            "distance": mg.final_distance,
            "lr": float(lr),
            "grad_norm": float(mg.images.norm()),
            "start_epoch": float(sample.start_epoch),
            "skipped": float(not accepted),
        }

    # ---------------------------------------------------------------- output

    def to_synthetic(self, state: MatchState) -> Any:
        from condense.synthetic import SyntheticSet

        rt = state.runtime
        labels = state.tensors["labels"]
        meta: dict[str, Any] = {
            "buffer": str(rt["buffer"].path),
            "expert_kind": rt["buffer"].kind,
            "model": rt["buffer"].model_spec["name"],
        }
        if labels.is_floating_point():
            meta.update(label_kind="logits", temperature=1.0)
        return SyntheticSet.from_tensors(
            self.final_images(state),
            labels,
            rt["data"],
            self.name,
            int(state.scalars["ipc"]),
            rt["cfg"],
            lr=float(state.tensors["lr"]),
            meta=meta,
        )


def _sgd(p: torch.Tensor, buf: torch.Tensor, g: torch.Tensor, lr: float, momentum: float) -> None:
    """In-place ``torch.optim.SGD`` step (dampening 0): buf <- mu * buf + g; p <- p - lr * buf."""
    buf.mul_(momentum).add_(g)
    p.sub_(lr * buf)
