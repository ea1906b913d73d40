"""MTT: Dataset Distillation by Matching Training Trajectories (Cazenavette et al., CVPR 2022, arXiv:2203.11932).

Algorithm (Algorithm 1 of the paper; ``GeorgeCazenavette/mtt-distillation:distill.py``):

1. Initialize X from random real images (``init="real"``), alpha <- alpha_0 (``lr_student_init``).
2. Each iteration: draw an expert and a start epoch t ~ U{0..T+ - 1}; the student starts at theta*_t.
3. Take N SGD steps of the student on minibatches of DSA-augmented X with step size alpha (differentiably).
4. L = ||theta_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2, summed over all parameters.
5. Update X (SGD, lr_img, momentum 0.5) and alpha (SGD, lr_lr, momentum 0.5) along dL.

This file holds the whole algorithm: :class:`MTTConfig`, :meth:`MTT.init_state`, :meth:`MTT.step` (numbered as
above) and :meth:`MTT.to_synthetic`. FTD (``ftd.py``), DATM (``datm.py``) and AST (``ast.py``) subclass :class:`MTT`
and override a few small named methods that ``step`` calls at marked points (``start_window``, ``student_start``,
``matching_targets``, ``student_momentum``, ``inner_loss_weight``, ``update``, ``synthetic_images``); each of those
methods is one line of MTT's algorithm here. Inits that read the experts are a table, ``MTT.expert_inits``. The
unroll math is :func:`condense.methods._unroll.meta_gradient`; buffer checks, minibatch plans and the special inits
are functions in ``_trajectory.py``.

Defaults: the argparse defaults of ``distill.py``; presets: the per-dataset settings listed by the author in
``justincui03/dc_benchmark:methods/tm/readme.md`` (the text copy of the README table image; reference/trajectory.md
Section 2.3) with the CIFAR-10 IPC 10 lr_img typo replaced by 100 (MTT issue #31). Iterations follow the 5000
default.

Differences from the authors' code:

- alpha is clamped to ``lr_min`` > 0 after every update (the code lets it go negative, MTT issues #16, #20);
  non-finite steps are rolled back and lr_img halved (the shared runner) instead of crashing with NaN pixels.
- Experts are sampled uniformly at random per iteration (the code walks a shuffled list of loaded experts).
- The student is ``torch.func.functional_call`` on views of one flat vector, not ``ReparamModule``; no DataParallel.
- ``unroll="lean"`` computes the same meta-gradient with constant activation memory (see ``_unroll.py``); it is
  not the TESLA code's approximation, which drops the cross-step terms.
- The artifact is the final state, with the learned alpha saved (the code saves the best-on-test images and never
  saves alpha). ZCA is a property of the dataset (``load_dataset(..., zca=True)``), not a flag here.
- alpha_0 (``lr_student_init``) defaults to the buffer's recorded expert lr when the preset leaves it unset (MTT's
  ``--lr_teacher`` default is the experts' 0.01, so the two agree on MTT's own buffers); every paper preset sets it.
- A preset names the buffer it was published with (``preset(..., buffer=paper_buffer(...))``: expert recipe, ZCA,
  model, epochs, 100 experts); a buffer with another recipe is refused before the first step (``check_buffer``).
- Collapse guard (``collapse``): a finite run that stops learning (loss jump, alpha pinned at its floor, the
  student not moving) is rolled back to a healthy state with lr_img / 10, up to three times, then stopped with
  :class:`~condense.errors.CollapseError`; nothing is saved. The artifact records the learned-lr trajectory
  (``meta["lr_trajectory"]``).

Speed (measured on the CPU, digits, N=20; see benchmarks/distill_speed.py): the inner gradient is
``torch.autograd.grad(create_graph=True)`` on the ``functional_call`` loss (17% faster per full iteration and 30% per
lean iteration than ``torch.func.grad``/``vjp``, which remain available as ``engine="func"`` in ``_unroll``); the DSA
parameters and minibatches of all N steps are drawn before the unroll; the synthetic set, the buffer snapshots and the
student live on the run's device; the unroll reads no tensor value on the host, so an iteration syncs only for the
logged floats. ``unroll="lean"`` costs about 40% more time than ``"full"`` (one extra forward/backward per step) for
a 10x smaller peak (CIFAR-10 ConvNetD3 with ZCA, IPC 1, N=50, one CPU thread: 9.3 s and +192 MB per iteration
instead of 6.7 s and +2002 MB).

Guard rails: alpha is clamped to ``lr_min`` (> 0) after every update; a clamp keeps the paper's ``lr_lr`` meaning
(a log-parametrization would rescale it by alpha^2). Non-finite losses or tensors are rolled back by the runner,
which then calls ``on_divergence`` (image lr halved).

References:
    Cazenavette et al., "Dataset Distillation by Matching Training Trajectories", CVPR 2022, arXiv:2203.11932,
    Eq. 1-2 and Algorithm 1.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from condense.config import check_choice, check_range, preset
from condense.errors import ConfigError, MismatchError
from condense.methods._gate import LR_FLOOR_MARGIN
from condense.methods._trajectory import (
    buffer_requirement_differences,
    minibatch_plan,
    open_expert_buffer,
    student_model,
)
from condense.methods._unroll import MODES, MatchTarget, MetaGrad, meta_gradient
from condense.methods.base import Matcher, MatchState, RunContext, register_method
from condense.optim import sgd_

__all__ = ["DIGITS_PRESET", "EXPERT_KINDS", "MTT", "MTTConfig", "PRESETS", "paper_buffer"]

EXPERT_KINDS = ("any", "vanilla", "flat", "smooth")

logger = logging.getLogger(__name__)
#: a loss above this multiple of the recent median (and above 10) is a collapse (MTT.collapse)
LOSS_JUMP = 1e3
#: iterations in a row a stuck alpha or a stuck distance must last to count as a collapse (MTT.collapse)
COLLAPSE_ITERATIONS = 5


@dataclass(frozen=True, kw_only=True)
class MTTConfig:
    """MTT hyperparameters. Defaults are MTT's ``distill.py`` argparse defaults unless noted.

    FTD, DATM and AST configs subclass this one and add their fields.
    """

    #: values ``init`` accepts (DATM adds "correct", AST "representative")
    inits: ClassVar[tuple[str, ...]] = ("real", "noise")

    num_iterations: int = 5000  # outer iterations (MTT --Iteration)
    syn_steps: int = 20  # N, student steps per iteration (MTT --syn_steps)
    expert_epochs: int = 3  # M, expert epochs between start and target (MTT --expert_epochs)
    min_start_epoch: int = 0  # smallest start epoch t (MTT: 0; DATM min_start_epoch)
    max_start_epoch: int = 25  # T+, exclusive upper bound of t (MTT --max_start_epoch)
    lr_img: float = 1000.0  # SGD lr on pixels (MTT --lr_img)
    lr_lr: float = 1e-5  # SGD lr on alpha (MTT --lr_lr)
    lr_student_init: float | None = None  # alpha_0 (MTT --lr_teacher); None: the buffer's recorded expert lr
    momentum_img: float = 0.5  # SGD momentum on pixels (MTT distill.py: optimizer_img momentum=0.5)
    momentum_lr: float = 0.5  # SGD momentum on alpha (MTT distill.py: optimizer_lr momentum=0.5)
    lr_min: float = 1e-6  # floor that keeps alpha positive (condense guard rail; MTT has none)
    batch_syn: int | None = None  # synthetic images per student step, None: all (MTT --batch_syn)
    init: str = "real"  # X_0: "real" images or "noise" (MTT --pix_init real)
    augment: str = "dsa"  # augmentation preset for the student (MTT --dsa True, DSA strategy)
    unroll: str = "full"  # "full" backprop through N steps, or "lean" constant-memory exact recompute (TESLA-style)
    model: str | None = None  # student architecture; None: the buffer's (must match it when given)
    expert_kind: str = "any"  # required buffer kind: any, vanilla, flat (FTD/DATM), smooth (AST)
    buffer_requirements: dict[str, Any] | None = None  # what the preset needs of the buffer (set from its "buffer")
    check_buffer: bool = True  # refuse a buffer that misses buffer_requirements (False: warn and record the gaps)
    fyi: bool = False  # FYI: each step trains on [x; flip_W x], batch_syn halved (arXiv:2407.08113, FYI MTT/)

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
        for name in ("lr_img", "lr_lr", "lr_student_init", "lr_min"):
            if getattr(self, name) is not None:
                check_range(name, getattr(self, name), 0.0, lo_open=name in ("lr_student_init", "lr_min"))
        if self.lr_student_init is not None and self.lr_min > self.lr_student_init:
            raise ConfigError(f"lr_min={self.lr_min} must not exceed lr_student_init={self.lr_student_init}")
        for name in ("momentum_img", "momentum_lr"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ConfigError(f"{name}={v} must lie in [0, 1)")
        if self.batch_syn is not None:
            check_range("batch_syn", self.batch_syn, 1)
        check_choice("init", self.init, self.inits)
        check_choice("unroll", self.unroll, MODES)
        check_choice("expert_kind", self.expert_kind, EXPERT_KINDS)


# ----------------------------------------------------------------------------------------------------------------------
# Presets: a whole experiment. The algorithm's values, and (``buffer``) the expert buffer the setting was published
# with, which ``distill`` checks. CIFAR/Tiny rows: dc_benchmark methods/tm/readme.md ("sota parameters provided by the
# author"), reference/trajectory.md Section 2.3; buffers: ``paper_buffer`` below.
# ----------------------------------------------------------------------------------------------------------------------

#: The digits (8x8, 10 classes) preset every trajectory method spreads; not from a paper. Tuned for CPU minutes on
#: ConvNetD2 buffers, which it requires (``buffer``): the demo's (``condense.demo.DEMO_BUFFERS``: width 32, SGD lr
#: 0.05, batch 64, 6 epochs) and ``condense experts --dataset digits`` with the default expert settings (width 128,
#: lr 0.01, batch 256). The student's alpha_0 is the buffer's expert lr. On 8x8 inputs the depth-3 ConvNet
#: instance-normalizes 2x2 maps in its last block; its meta-gradient norms then jump between 1e3 and 6e8 from one
#: iteration to the next (measured, 5 default experts x 10 epochs) and no image lr from 1e-4 to 100 beat the real
#: init, so the preset refuses ConvNet-3 buffers (``--set check_buffer=false`` tries anyway; the collapse guard then
#: stops it).
DIGITS_PRESET: dict[str, Any] = preset(
    source="condense: tuned on digits ConvNetD2 buffers (CPU minutes), not from a paper",
    buffer={"model": "convnetd2"},
    num_iterations=60,
    syn_steps=20,
    expert_epochs=2,
    max_start_epoch=3,
    lr_img=100.0,
    lr_lr=1e-5,
    augment="dsa_noflip",
)

_SRC = "MTT author settings via justincui03/dc_benchmark methods/tm/readme.md (trajectory.md 2.3)"

PRESETS: dict[str, dict[str, Any]] = {
    "cifar10-ipc1": preset(
        source=_SRC, syn_steps=50, expert_epochs=2, max_start_epoch=2, lr_img=100.0, lr_lr=1e-7, lr_student_init=0.01
    ),
    "cifar10-ipc10": preset(
        source=_SRC, syn_steps=30, expert_epochs=2, max_start_epoch=20, lr_img=100.0, lr_lr=1e-5, lr_student_init=0.001
    ),
    "cifar10-ipc50": preset(
        source=_SRC,
        syn_steps=30,
        expert_epochs=2,
        max_start_epoch=40,
        lr_img=1000.0,
        lr_lr=1e-5,
        lr_student_init=0.001,
    ),
    "cifar100-ipc1": preset(
        source=_SRC, syn_steps=20, expert_epochs=3, max_start_epoch=20, lr_img=1000.0, lr_lr=1e-5, lr_student_init=0.01
    ),
    "cifar100-ipc10": preset(
        source=_SRC, syn_steps=20, expert_epochs=2, max_start_epoch=20, lr_img=1000.0, lr_lr=1e-5, lr_student_init=0.01
    ),
    "cifar100-ipc50": preset(
        source=_SRC,
        syn_steps=80,
        expert_epochs=2,
        max_start_epoch=40,
        lr_img=1000.0,
        lr_lr=1e-5,
        lr_student_init=0.01,
        batch_syn=125,
    ),
    "tinyimagenet-ipc1": preset(
        source=_SRC,
        syn_steps=10,
        expert_epochs=2,
        max_start_epoch=10,
        lr_img=10000.0,
        lr_lr=1e-4,
        lr_student_init=0.01,
    ),
    "tinyimagenet-ipc10": preset(
        source=_SRC,
        syn_steps=20,
        expert_epochs=2,
        max_start_epoch=40,
        lr_img=10000.0,
        lr_lr=1e-4,
        lr_student_init=0.01,
        batch_syn=200,
    ),
    "tinyimagenet-ipc50": preset(
        source=_SRC,
        syn_steps=20,
        expert_epochs=2,
        max_start_epoch=40,
        lr_img=10000.0,
        lr_lr=1e-4,
        lr_student_init=0.01,
        batch_syn=300,
    ),
    "digits-ipc1": dict(DIGITS_PRESET),
    "digits-ipc10": {**DIGITS_PRESET, "batch_syn": 50},
}


def paper_buffer(expert: str, *, zca: bool, model: str = "convnet", experts: int = 100) -> dict[str, Any]:
    """The buffer a paper's setting was published with: expert preset (kind and training fields), ZCA, model, the
    expert count and the preset's epochs (``condense.expert_trajectories.EXPERT_PRESETS``).

    ``condense experts --preset <method>-<preset>`` records it; ``distill`` refuses a buffer that differs in the
    recipe (``_trajectory.buffer_requirement_differences``) unless ``check_buffer=False``.
    """
    from condense.expert_trajectories import EXPERT_PRESETS

    epochs = EXPERT_PRESETS[expert]["epochs"]
    return {"expert": expert, "zca": zca, "model": model, "model_kwargs": {}, "experts": experts, "epochs": epochs}


#: ZCA per setting (the ZCA column of reference/trajectory.md 2.3); Tiny runs use ConvNetD4; 100 experts x 50 epochs
#: (MTT README, buffer.py defaults)
_MTT_ZCA = {
    "cifar10-ipc1": True,
    "cifar10-ipc10": True,
    "cifar10-ipc50": False,
    "cifar100-ipc1": True,
    "cifar100-ipc10": False,
    "cifar100-ipc50": True,
    "tinyimagenet-ipc1": False,
    "tinyimagenet-ipc10": False,
    "tinyimagenet-ipc50": False,
}
for _name, _zca in _MTT_ZCA.items():
    PRESETS[_name]["buffer"] = paper_buffer(
        "mtt", zca=_zca, model="convnetd4" if _name.startswith("tinyimagenet") else "convnet"
    )


# ----------------------------------------------------------------------------------------------------------------------
# The method
# ----------------------------------------------------------------------------------------------------------------------


@register_method("mtt")
class MTT(Matcher):
    """Matching Training Trajectories (Cazenavette et al., CVPR 2022, arXiv:2203.11932).

    Needs an expert buffer (``RunContext(buffer=...)``, ``--buffer``) recorded on the same dataset and model.

    State (all checkpointed by the runner; see :class:`~condense.methods.base.MatchState`)::

        tensors: images (N, C, H, W) X; labels (N,) int64; lr () alpha; mom_images, mom_lr the SGD momentum
                 buffers, so a resumed run continues exactly (FTD adds ema_images, DATM logit labels + mom_labels)
        scalars: lr_img (halved by the runner after a non-finite step), ipc
        runtime: buffer, model, layout, augment, cfg, data, device (rebuilt by ``restore_runtime``)

    Example:
        >>> from condense import distill, load_dataset  # doctest: +SKIP
        >>> from condense.methods.base import RunContext  # doctest: +SKIP
        >>> syn = distill("mtt", load_dataset("digits"), ipc=1, run=RunContext(buffer="buf"))  # doctest: +SKIP
    """

    Config = MTTConfig
    presets = PRESETS
    needs_buffer: ClassVar[bool] = True
    #: inits that read the experts, ``cfg.init`` -> ``fn(buffer, model, data, ipc, gen, device) -> (images, labels)``
    #: (MTT: none; DATM adds ``init_correct``, AST ``init_representative``, both in ``_trajectory.py``)
    expert_inits: ClassVar[dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]]] = {}

    def resolve_config(self, preset: str | None = None, overrides: dict[str, Any] | None = None) -> Any:
        """Defaults <- preset <- overrides; the preset's ``buffer`` requirements become ``buffer_requirements``."""
        cfg = super().resolve_config(preset, overrides)
        wanted = (self.presets.get(preset) or {}).get("buffer") if preset is not None else None
        if wanted is not None and "buffer_requirements" not in (overrides or {}):
            cfg = dataclasses.replace(cfg, buffer_requirements=dict(wanted))
        return cfg

    # ------------------------------------------------------------------------------------------------------------------
    # Runtime and initial state
    # ------------------------------------------------------------------------------------------------------------------

    def restore_runtime(self, state: MatchState, data: Any, cfg: MTTConfig, run: RunContext) -> None:
        """Open and check the buffer, build the student and the augmentation (nothing here is checkpointed)."""
        from condense.augment import check_flip_allowed, get_augment

        if cfg.fyi:  # FYI mirrors the images: refused where flips are forbidden (digits, MNIST, SVHN)
            check_flip_allowed(data.name, f"{self.name} fyi=True")
        buf = open_expert_buffer(
            run.buffer,
            data,
            method=self.name,
            model=cfg.model,
            kind=cfg.expert_kind,
            last_epoch=cfg.max_start_epoch - 1 + cfg.expert_epochs,
        )
        mismatches, notes = buffer_requirement_differences(buf, cfg.buffer_requirements)
        if mismatches and cfg.check_buffer:
            raise MismatchError(
                f"{self.name}: buffer '{run.buffer}' is not the one this preset needs ({'; '.join(mismatches)}); "
                f"record it with `condense experts --for {self.name} --dataset {data.name} --ipc N`, or pass "
                "--set check_buffer=false to run on this buffer anyway"
            )
        for msg in mismatches + notes:
            logger.warning("%s: buffer '%s': %s", self.name, run.buffer, msg)
        device = torch.device(run.device)
        aug = get_augment(cfg.augment)
        state.runtime.update(
            buffer_check={"mismatches": mismatches, "notes": notes},
            buffer=buf,
            model=student_model(buf, device),
            layout=buf.layout,
            augment=None if aug.is_identity else aug,
            cfg=cfg,
            data=data,
            device=device,
        )

    def init_state(self, data: Any, cfg: MTTConfig, ipc: int, gen: torch.Generator, run: RunContext) -> MatchState:
        """X_0 (``init_images``), hard labels, alpha_0 = ``lr_student_init`` and zero momentum buffers."""
        state = MatchState()
        self.restore_runtime(state, data, cfg, run)
        device = state.runtime["device"]
        images, labels = self.init_images(state, data, ipc, gen)
        images = images.to(device).float().contiguous()
        state.tensors["images"] = images
        state.tensors["mom_images"] = torch.zeros_like(images)
        state.tensors["labels"] = labels.to(device)
        state.tensors["lr"] = torch.tensor(self.initial_lr(cfg, state.runtime["buffer"]), device=device)
        state.tensors["mom_lr"] = torch.zeros((), device=device)
        state.scalars.update(lr_img=float(cfg.lr_img), ipc=int(ipc))
        return state

    @staticmethod
    def initial_lr(cfg: MTTConfig, buf: Any) -> float:
        """alpha_0: ``lr_student_init``, or when the preset leaves it unset (None) the buffer's expert lr, as MTT's
        ``--lr_teacher`` is the experts' lr unless a setting says otherwise.

        Raises:
            ConfigError: the buffer records no positive expert lr, or it lies below ``lr_min``.
        """
        if cfg.lr_student_init is not None:
            return float(cfg.lr_student_init)
        lr = buf.manifest.get("config", {}).get("lr_teacher")
        if not isinstance(lr, (int, float)) or not lr > 0:
            raise ConfigError(f"buffer '{buf.path}' records no expert lr (lr_teacher); set lr_student_init")
        if lr < cfg.lr_min:
            raise ConfigError(f"the buffer's expert lr {lr:g} is below lr_min={cfg.lr_min:g}; set lr_student_init")
        return float(lr)

    def init_images(
        self, state: MatchState, data: Any, ipc: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """X_0 and its hard labels: ``ipc`` random real images per class (MTT ``--pix_init real``) or noise, or an
        init of :attr:`expert_inits` (chosen from the experts) named by ``cfg.init``.

        Shape:
            return: images (K * ipc, C, H, W), labels (K * ipc,) int64, class-major.
        """
        from condense.methods._classwise import init_images

        rt = state.runtime
        init = rt["cfg"].init
        if init in self.expert_inits:
            return self.expert_inits[init](rt["buffer"], rt["model"], data, ipc, gen, rt["device"])
        return init_images(data, ipc, init, gen)

    # ------------------------------------------------------------------------------------------------------------------
    # One iteration
    # ------------------------------------------------------------------------------------------------------------------

    def step(self, state: MatchState, it: int, gen: torch.Generator) -> dict[str, float]:
        """One outer iteration of MTT's Algorithm 1: sample a trajectory segment, unroll, update X and alpha.

        Notation (code name -> paper symbol)::

            sample.expert_id -> k (the expert), sample.start_epoch -> t, cfg.expert_epochs -> M,
            cfg.syn_steps -> N, theta0 -> hat theta_{t,0} = theta*_t, sample.target -> theta*_{t+M},
            images -> D_syn (the pixels X), labels -> y, lr -> alpha (learned student step size),
            plan[n].idx -> b_n (the minibatch of student step n), plan[n].aug_params -> A (DSA draw),
            mg.loss -> L (Eq. 2), mg.images -> dL/dX, mg.lr -> dL/dalpha, state.scalars["lr_img"] -> alpha_pixel

        The named methods called below are MTT's own lines; FTD, DATM and AST override them (marked per step).

        Returns:
            Plain floats for the log: loss, distance (the final term of L), lr, grad_norm, start_epoch, skipped.
        """
        rt = state.runtime
        cfg, buf, device = rt["cfg"], rt["buffer"], rt["device"]
        images, labels, lr = state.tensors["images"], state.tensors["labels"], state.tensors["lr"]

        # 1. sample expert k and start epoch t ~ U{lo, ..., hi - 1}; read theta*_t and theta*_{t+M}
        #    (Algorithm 1).                                            [DATM overrides start_window: growing hi]
        lo, hi = self.start_window(cfg, it)
        sample = buf.sample(lo, hi, cfg.expert_epochs, device, gen)

        # 2. initialize the student at hat theta_{t,0} = theta*_t.          [AST overrides student_start: perturb]
        theta0 = self.student_start(state, sample, gen)

        # 3. the matching terms of L = ||hat theta_{t,N} - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2
        #    (Eq. 2).                                      [AST overrides matching_targets: adds theta*_{t+i}]
        matches = self.matching_targets(state, sample)

        # 4. unroll N student steps hat theta_{t,n+1} = hat theta_{t,n} - alpha * grad l(A(X[b_n]); hat theta_{t,n})
        #    (Eq. 1; minibatches b_n and DSA draws come first) and back-propagate L to X and alpha.
        #                                   [AST overrides student_momentum (heavy ball) and inner_loss_weight]
        #    FYI (cfg.fyi): each step's x -> [x; flip_W x], labels twice, with batch_syn halved in the plan.
        plan = minibatch_plan(images, cfg.syn_steps, cfg.batch_syn, rt["augment"], gen, mirror=cfg.fyi)
        mg = meta_gradient(
            rt["model"],
            rt["layout"],
            theta0,
            images,
            labels,
            lr,
            plan,
            matches,
            augment=rt["augment"],
            mode=cfg.unroll,
            momentum=self.student_momentum(cfg),
            loss_scale=self.inner_loss_weight(cfg, sample.start_epoch),
            labels_grad=labels.is_floating_point(),
            mirror=cfg.fyi,
        )

        # 5. update X and alpha with SGD along dL.                 [FTD: + image EMA; DATM: threshold, + labels]
        applied = self.update(state, mg)
        return {
            "loss": mg.loss,
            "distance": mg.final_distance,
            "lr": float(lr),
            "grad_norm": float(mg.images.norm()),
            "start_epoch": float(sample.start_epoch),
            "skipped": float(not applied),
        }

    def start_window(self, cfg: MTTConfig, it: int) -> tuple[int, int]:
        """Step 1: ``[lo, hi)`` of start epochs at iteration ``it``; MTT's is fixed, ``[min_start_epoch, T+)``."""
        return cfg.min_start_epoch, cfg.max_start_epoch

    def student_start(self, state: MatchState, sample: Any, gen: torch.Generator) -> torch.Tensor:
        """Step 2: the student's initial parameters hat theta_{t,0}; MTT's are the expert's theta*_t.

        They are also the normalizer's ``theta*_t`` in L (see :func:`~condense.methods._unroll.meta_gradient`).

        Shape:
            return: (P,), flat parameters in ``buffer.layout`` order.
        """
        return sample.start

    def matching_targets(self, state: MatchState, sample: Any) -> list[MatchTarget]:
        """Step 3: the terms of L; MTT's only one compares hat theta_{t,N} with theta*_{t+M} (Eq. 2)."""
        return [MatchTarget(state.runtime["cfg"].syn_steps, sample.target)]

    def student_momentum(self, cfg: MTTConfig) -> float:
        """Step 4: heavy-ball momentum mu of the student's inner SGD; MTT's student uses plain SGD (mu = 0, Eq. 1)."""
        return 0.0

    def inner_loss_weight(self, cfg: MTTConfig, start_epoch: int) -> float:
        """Step 4: the factor on the student's inner loss l at start epoch t; 1 in MTT."""
        return 1.0

    def update(self, state: MatchState, mg: MetaGrad) -> bool:
        """Step 5: SGD with momentum on X (``lr_img``, ``momentum_img``) and alpha (``lr_lr``, ``momentum_lr``).

        alpha is then clamped to ``lr_min`` (a condense guard rail, see the module docstring).

        Returns:
            Whether the update was applied (always for MTT; DATM skips some).
        """
        cfg, t = state.runtime["cfg"], state.tensors
        sgd_(t["images"], t["mom_images"], mg.images, float(state.scalars["lr_img"]), cfg.momentum_img, fused=False)
        sgd_(t["lr"], t["mom_lr"], mg.lr, cfg.lr_lr, cfg.momentum_lr, fused=False)
        with torch.no_grad():
            t["lr"].clamp_(min=cfg.lr_min)
        return True

    # ------------------------------------------------------------------------------------------------------------------
    # Collapse (the runner rolls back to a healthy state and divides lr_img by 10; see condense.methods._runner)
    # ------------------------------------------------------------------------------------------------------------------

    def collapse(self, state: MatchState, recent: list[dict[str, float]]) -> str | None:
        """The three ways a trajectory run dies while staying finite (condense guard rail; MTT has none):

        - the loss jumps by more than :data:`LOSS_JUMP` x the median of the recent iterations (an image step that
          threw the student off: the meta-gradient that follows pins alpha at its floor);
        - alpha sits at its floor ``lr_min`` for :data:`COLLAPSE_ITERATIONS` iterations in a row;
        - the distance stays at 1 (the student does not move: theta_N = theta*_t) while the image gradient vanishes
          (below 1e-7 x ||X||) for :data:`COLLAPSE_ITERATIONS` iterations in a row.

        Shape:
            recent: the stats :meth:`step` returned, oldest first, this iteration last.
        """
        cfg, last = state.runtime["cfg"], recent[-1]
        if len(recent) >= 3:
            med = statistics.median(r["loss"] for r in recent[:-1])
            if last["loss"] > 10.0 and last["loss"] > LOSS_JUMP * max(med, 1e-12):
                return f"the matching loss jumped to {last['loss']:.3g}, {last['loss'] / med:.3g}x the recent median"
        if len(recent) < COLLAPSE_ITERATIONS:
            return None
        window = recent[-COLLAPSE_ITERATIONS:]
        if all(r["lr"] <= LR_FLOOR_MARGIN * cfg.lr_min for r in window):
            return f"the learned lr sat at its floor lr_min={cfg.lr_min:g} for {COLLAPSE_ITERATIONS} iterations"
        tiny = 1e-7 * max(float(state.tensors["images"].norm()), 1.0)
        if all(abs(r["distance"] - 1.0) < 1e-2 and r["grad_norm"] <= tiny for r in window):
            return (
                f"the distance stayed at 1 (the student does not move) with image gradients below {tiny:.2g} for "
                f"{COLLAPSE_ITERATIONS} iterations"
            )
        return None

    # ------------------------------------------------------------------------------------------------------------------
    # Output
    # ------------------------------------------------------------------------------------------------------------------

    def synthetic_images(self, state: MatchState) -> torch.Tensor:
        """The images the artifact keeps: MTT's final X (FTD keeps its EMA).

        Shape:
            return: (N, C, H, W).
        """
        return state.tensors["images"]

    def to_synthetic(self, state: MatchState) -> Any:
        """The artifact: :meth:`synthetic_images`, the labels and the learned alpha, with the buffer recorded."""
        from condense.synthetic import SyntheticSet

        rt = state.runtime
        labels = state.tensors["labels"]
        meta: dict[str, Any] = {
            "buffer": str(rt["buffer"].path),
            "expert_kind": rt["buffer"].kind,
            "model": rt["buffer"].model_spec["name"],
            "buffer_experts": rt["buffer"].num_experts,
            "buffer_epochs": rt["buffer"].epochs,
        }
        if any(rt.get("buffer_check", {}).values()):
            meta["buffer_check"] = rt["buffer_check"]
        if labels.is_floating_point():
            meta.update(label_kind="logits", temperature=1.0)
        return SyntheticSet.from_tensors(
            self.synthetic_images(state),
            labels,
            rt["data"],
            self.name,
            int(state.scalars["ipc"]),
            rt["cfg"],
            lr=float(state.tensors["lr"]),
            meta=meta,
        )
