"""KRR-ST: Self-Supervised Dataset Distillation for Transfer Learning (Lee et al., ICLR 2024, arXiv:2310.06511).

The set is m images X_s with m learnable *target representations* Y_s (no labels), so that pre-training a network
on MSE(f(X_s), Y_s) initializes it well for fine-tuning on other tasks. The inner problem is a linear head on the
frozen features of a model from a pool, solved in closed form by kernel ridge regression. Per iteration
(``db-Lee/selfsup_dd:algorithms/distill.py:7-67``):

1. pick pool model i ~ U(P) (eval mode: BatchNorm running statistics);
2. a real batch x_r (``batch_real``), augmented (shift with padding, flip only where allowed); y_r = g(x_r), g the
   frozen self-supervised target encoder (:mod:`condense.teachers.ssl`);
3. Phi_s = [embed_i(X_s), 1], Phi_r = [embed_i(x_r), 1] (no graph); K_ss = Phi_s Phi_s^T, K_rs = Phi_r Phi_s^T;
   lambda = ridge * tr(K_ss) (detached); L = MSE(K_rs (K_ss + lambda I)^-1 Y_s, y_r), the inverse applied by
   ``torch.linalg.solve`` in float32 (``distill.py:36-48``);
4. AdamW on (X_s, Y_s) (weight decay 0), lr linearly from ``lr`` to ``lr * lr_end_factor`` over the run
   (``train.py:66-74``), optional per-tensor grad-norm clip (``distill.py:60-62``);
5. pool update of model i (``model_pool.py:44-62``): if its step counter reached ``pool_steps`` it is re-initialized,
   else one full-batch SGD step (lr 0.1, momentum 0.9, wd 1e-3) on MSE(f_i(X_s), Y_s) in train mode, counter + 1.

Initialization (``train.py:47-64``, ``model_pool.py:30-42``): X_s = m training images in a random order (labels
ignored), Y_s = g(X_s); each pool model starts with a counter drawn from U{1, ..., pool_steps - 1} and is trained
for that many full-batch steps on (X_s, Y_s).

The released code's pool refresh never resets the counter (``model_pool.py:46-50``): once a slot reaches
``pool_steps`` it is re-initialized on *every* later visit and never trained again. ``pool_reset="faithful"``
reproduces that; ``pool_reset="intended"`` (default) resets the counter to 0 after re-initialization, so the slot
trains again on later visits.

Budget: m images in total (``num_images``), not per class; ``num_images=0`` takes ``ipc * num_classes`` so that
``distill(..., ipc=5)`` on digits gives 50 images, drawn without regard to class. The artifact stores the images,
``tensors["krr_targets"]`` (m, D) beside them, and as ``labels`` the classes of the real images each synthetic image
started from (KRR-ST never reads them; they are there because a :class:`~condense.synthetic.SyntheticSet` has
labels); ``meta["encoder"]`` records the target encoder, ``meta["eval"]`` the ``transfer`` protocol (the digits
preset also its sizes).

Defaults: ``train.py`` argparse (outer_lr 1e-3, 160,000 iterations, batch 1024, 10 models, online_iteration 1000,
online lr 0.1, online wd 1e-3, grad norm 0); ridge 1e-6 (``distill.py:41``). Presets: CIFAR-100 outer lr 1e-4,
Tiny-ImageNet 1e-5 (README), and a CPU-sized digits preset.

Known differences from the authors' code:
    - The target encoder is condense's Barlow Twins encoder trained on the source data (the code ships a BT
      ResNet-18 checkpoint); ``run.teacher`` names its folder.
    - X_s lives in the data's normalized space throughout (the code starts X_s from raw loader tensors and
      normalizes only real batches; see the research note §2.6).
    - Pool and evaluation ConvNets have constant width (the code's CIFAR-100 net is 128-256-512).
    - The code draws real batches from a shuffled DataLoader; condense samples indices with the run's generator.
    - ``precompute_targets=True`` (off by default; the CPU configuration of ``benchmarks/krr_st.py``) reads y_r from
      g(x) computed once per training image and leaves real batches unaugmented, saving the encoder forward of every
      step; the code always augments and runs g.
    - The monitoring linear probe every 16,000 steps is not run (the shared runner's ``eval_every`` does not apply
      to a label-free set); use :func:`condense.eval.transfer.transfer_evaluate`.

Notation: ``images`` -> X_s, ``targets`` -> Y_s, ``pool{i}.*`` -> f_i, encoder -> g.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call

from condense.augment import NO_FLIP_DATASETS, functional
from condense.config import check_choice, check_range, preset
from condense.errors import ConfigError, MismatchError
from condense.methods.base import Matcher, MatchState, RunContext, register_method
from condense.models import create_model
from condense.optim import sgd_
from condense.seeding import seed_from
from condense.synthetic import SyntheticSet
from condense.teachers.ssl import Encoder, load_encoder

__all__ = ["KRRST", "KRRSTConfig", "PRESETS", "krr_predict"]

POOL_RESETS = ("intended", "faithful")


@dataclass(frozen=True, kw_only=True)
class KRRSTConfig:
    """Hyperparameters of KRR-ST; defaults from ``db-Lee/selfsup_dd:train.py`` and ``algorithms/distill.py``."""

    num_images: int = 0  # m, images in total (train.py --num_images); 0: ipc * num_classes
    model: str = "convnet_bn"  # pool architecture f_i (train.py --train_model; ConvNet with BatchNorm)
    width: int = 128  # ConvNet width (the code's CIFAR-100 net: 128-256-512)
    depth: int = 3  # ConvNet depth (3 on 32 px, 4 on 64 px)
    num_iterations: int = 160000  # T_outer (train.py --outer_iteration 160000)
    lr: float = 1e-3  # AdamW lr on (X_s, Y_s) (train.py --outer_lr 1e-3; README: 1e-4 CIFAR-100, 1e-5 Tiny)
    lr_end_factor: float = 1e-3  # LinearLR end_factor over num_iterations (train.py:73-74)
    weight_decay: float = 0.0  # AdamW weight decay (train.py --outer_wd 0)
    grad_clip: float = 0.0  # per-tensor grad-norm clip, 0 off (train.py --outer_grad_norm 0; distill.py:60-62)
    batch_real: int = 1024  # |x_r| (train.py --outer_batch_size 1024)
    num_models: int = 10  # P (train.py --num_models 10)
    pool_steps: int = 1000  # online_iteration: a pool model's steps before re-initialization (train.py:140)
    lr_pool: float = 0.1  # online SGD lr (train.py --online_lr 0.1)
    momentum_pool: float = 0.9  # online SGD momentum (model_pool.py:20)
    weight_decay_pool: float = 1e-3  # online SGD weight decay (train.py --online_wd 1e-3)
    ridge: float = 1e-6  # lambda = ridge * tr(K_ss) (distill.py:41)
    pool_reset: str = "intended"  # "faithful": the released counter bug (model_pool.py:46-50); "intended": reset to 0
    crop_padding: int = 4  # RandomCrop(padding) of real batches, as a shift with black fill (data/augmentation.py)
    flip: str = "auto"  # horizontal flip of real batches: "auto" (off on digit datasets), "on", "off"
    precompute_targets: bool = False  # y_r from a cache of g(x) over the training split, real batches unaugmented

    def __post_init__(self) -> None:
        check_range("num_images", self.num_images, 0)
        check_range("width", self.width, 1)
        check_range("depth", self.depth, 1)
        check_range("num_iterations", self.num_iterations, 0)
        check_range("lr", self.lr, 0.0, lo_open=True)
        check_range("lr_end_factor", self.lr_end_factor, 0.0, 1.0, lo_open=True)
        check_range("weight_decay", self.weight_decay, 0.0)
        check_range("grad_clip", self.grad_clip, 0.0)
        check_range("batch_real", self.batch_real, 1)
        check_range("num_models", self.num_models, 1)
        check_range("pool_steps", self.pool_steps, 2)
        check_range("lr_pool", self.lr_pool, 0.0, lo_open=True)
        check_range("momentum_pool", self.momentum_pool, 0.0, 1.0)
        check_range("weight_decay_pool", self.weight_decay_pool, 0.0)
        check_range("ridge", self.ridge, 0.0, lo_open=True)
        check_choice("pool_reset", self.pool_reset, POOL_RESETS)
        check_range("crop_padding", self.crop_padding, 0)
        check_choice("flip", self.flip, ("auto", "on", "off"))


_README = "db-Lee/selfsup_dd README (train.py commands)"
_DIGITS_SRC = "condense: sized for CPU minutes on sklearn digits (tests/test_krr_st.py); not from the paper"
PRESETS: dict[str, dict[str, Any]] = {
    "cifar100": preset(source=f"{_README}, CIFAR-100: m = 1000, outer lr 1e-4", num_images=1000, lr=1e-4),
    "tinyimagenet": preset(
        source=f"{_README}, Tiny-ImageNet: m = 2000, outer lr 1e-5, ConvNet depth 4", num_images=2000, lr=1e-5, depth=4
    ),
    "digits": preset(
        source=_DIGITS_SRC,
        # its sets are scored with the transfer protocol on the network of the pool, 500 fine-tuning iterations
        eval={"protocol": "transfer", "width": 64, "depth": 2, "finetune_iterations": 500},
        width=64,
        depth=2,
        num_iterations=1000,
        lr=1e-2,
        batch_real=256,
        num_models=4,
        pool_steps=100,
        crop_padding=1,
    ),
}


def krr_predict(phi_s: torch.Tensor, phi_r: torch.Tensor, y_s: torch.Tensor, ridge: float) -> torch.Tensor:
    """The closed-form kernel-ridge head: ``K_rs (K_ss + lambda I)^-1 Y_s`` with ``lambda = ridge * tr(K_ss)``.

    Linear kernel on features with a bias column appended; float32; the inverse is applied with
    ``torch.linalg.solve``, never formed.

    Shape:
        phi_s: (m, d); phi_r: (B, d); y_s: (m, D); return: (B, D).
    """
    ones = lambda f: torch.cat([f, torch.ones(f.shape[0], 1, dtype=f.dtype, device=f.device)], 1)  # noqa: E731
    phi_s, phi_r = ones(phi_s.float()), ones(phi_r.float())
    k_ss = phi_s @ phi_s.T
    k_rs = phi_r @ phi_s.T
    lam = ridge * torch.trace(k_ss.detach())
    eye = torch.eye(k_ss.shape[0], dtype=k_ss.dtype, device=k_ss.device)
    return k_rs @ torch.linalg.solve(k_ss + lam * eye, y_s.float())


def _flip_on(cfg: KRRSTConfig, dataset: str) -> bool:
    if cfg.flip == "on" and dataset in NO_FLIP_DATASETS:
        raise ConfigError(f"flip='on' mirrors the real batches, but dataset {dataset!r} must not be flipped")
    return cfg.flip == "on" or (cfg.flip == "auto" and dataset not in NO_FLIP_DATASETS)


@register_method("krr_st")
class KRRST(Matcher):
    """KRR-ST (Lee et al., ICLR 2024): learnable images and target representations, kernel-ridge outer loss on a
    refreshed model pool.

    State: ``tensors = {"images", "targets", "labels", "adam_*", "pool{i}.<param|buffer>", "pool{i}.mom.<param>"}``,
    ``scalars = {"lr_img", "ipc", "pool_counts", "adam_step", "encoder_sha256"}``: every pool model lives in the
    state, so a resumed run equals an uninterrupted one (and resuming with another encoder is refused).
    ``run.teacher`` is the folder of a :func:`condense.teachers.train_encoder` encoder.
    """

    Config = KRRSTConfig
    presets = PRESETS
    needs_teacher = True
    teacher_kind = "encoder"
    budget = "total"
    data_kind = "images"

    # ------------------------------------------------------------------ runtime

    def _encoder(self, run: RunContext, data: Any) -> Encoder:
        if not run.teachers:
            raise ConfigError(
                "method 'krr_st' needs a self-supervised target encoder and none was given; train one with "
                "condense.teachers.train_encoder(data, 'convnet_bn', epochs, DIR) and pass RunContext(teacher=DIR)"
            )
        if len(run.teachers) != 1:
            raise ConfigError(f"method 'krr_st' reads one target encoder, got {len(run.teachers)} folders")
        enc = load_encoder(run.teachers[0], map_location=run.device)
        enc.check_compatible(data)
        return enc

    def restore_runtime(self, state: MatchState, data: Any, cfg: KRRSTConfig, run: RunContext) -> None:
        device = torch.device(run.device)
        enc = self._encoder(run, data)
        saved = state.scalars.setdefault("encoder_sha256", enc.sha256)
        if saved != enc.sha256:
            raise MismatchError(
                f"the checkpoint was made with the encoder of sha256 {saved}, this run passes '{enc.path}' "
                f"({enc.sha256}); pass the same --teacher folder, or rerun with --restart"
            )
        fill = torch.zeros(1, data.channels, 1, 1)
        if data.zca is None:
            fill = (-torch.tensor(data.mean) / torch.tensor(data.std)).reshape(1, -1, 1, 1)
        cache = None
        if cfg.precompute_targets:  # g(x) of every training image once (no augmentation): a CPU-time saver
            cache = enc.features(data.x_train.to(device))
        state.runtime.update(
            target_cache=cache,
            cfg=cfg,
            data=data,
            device=device,
            encoder=enc,
            x_train=data.x_train.to(device),
            fill=fill.to(device),
            flip=_flip_on(cfg, data.name),
            net=self._new_model(cfg, data, enc.feature_dim, None, device),
        )

    @staticmethod
    def _new_model(cfg: KRRSTConfig, data: Any, out_dim: int, seed: int | None, device: torch.device):
        c, (h, w) = data.channels, data.image_size
        with torch.device(device):
            return create_model(
                cfg.model,
                in_channels=c,
                num_classes=out_dim,
                image_size=(h, w),
                seed=seed,
                width=cfg.width,
                depth=cfg.depth,
            )

    # ------------------------------------------------------------------ pool (model_pool.py)

    @staticmethod
    def _pool_params(state: MatchState, i: int) -> dict[str, torch.Tensor]:
        pre = f"pool{i}."
        mom = f"pool{i}.mom."
        return {k[len(pre) :]: v for k, v in state.tensors.items() if k.startswith(pre) and not k.startswith(mom)}

    def _reinit(self, state: MatchState, i: int, gen: torch.Generator) -> None:
        """Re-initialize pool slot ``i`` from a seed drawn from ``gen`` (momentum buffers zeroed)."""
        rt = state.runtime
        net = self._new_model(rt["cfg"], rt["data"], state.tensors["targets"].shape[1], seed_from(gen), rt["device"])
        for k, v in net.state_dict().items():
            state.tensors[f"pool{i}.{k}"] = v.detach().clone()
        for k, p in net.named_parameters():
            state.tensors[f"pool{i}.mom.{k}"] = torch.zeros_like(p)

    def _pool_step(self, state: MatchState, i: int) -> float:
        """One full-batch SGD step of MSE(f_i(X_s), Y_s) in train mode (``model_pool.py:57-62``)."""
        rt, cfg = state.runtime, state.runtime["cfg"]
        net = rt["net"].train()
        tensors = self._pool_params(state, i)
        names = [k for k, _ in net.named_parameters()]
        params = {k: tensors[k].detach().requires_grad_(True) for k in names}
        buffers = {k: v for k, v in tensors.items() if k not in params}  # BN running stats, updated in place
        x_s, y_s = state.tensors["images"].detach(), state.tensors["targets"].detach()
        loss = F.mse_loss(functional_call(net, {**params, **buffers}, (x_s,)), y_s)
        grads = torch.autograd.grad(loss, list(params.values()))
        with torch.no_grad():
            for k, g in zip(names, grads):
                sgd_(
                    state.tensors[f"pool{i}.{k}"],
                    state.tensors[f"pool{i}.mom.{k}"],
                    g,
                    cfg.lr_pool,
                    momentum=cfg.momentum_pool,
                    weight_decay=cfg.weight_decay_pool,
                )
        return float(loss.detach())

    def _pool_update(self, state: MatchState, i: int, gen: torch.Generator) -> None:
        cfg = state.runtime["cfg"]
        counts = state.scalars["pool_counts"]
        if counts[i] >= cfg.pool_steps:
            self._reinit(state, i, gen)
            if cfg.pool_reset == "intended":
                counts[i] = 0
            # faithful: the counter stays >= pool_steps, so the slot is re-initialized on every later visit
        else:
            counts[i] += 1
            self._pool_step(state, i)

    # ------------------------------------------------------------------ Matcher hooks

    def init_state(self, data: Any, cfg: KRRSTConfig, ipc: int, gen: torch.Generator, run: RunContext) -> MatchState:
        device = torch.device(run.device)
        m = cfg.num_images or ipc * data.num_classes
        if m > len(data.x_train):
            raise ConfigError(f"num_images {m} exceeds the {len(data.x_train)} training images of '{data.name}'")
        state = MatchState(scalars={"lr_img": float(cfg.lr), "ipc": int(ipc), "adam_step": 0})
        self.restore_runtime(state, data, cfg, run)
        enc: Encoder = state.runtime["encoder"]
        idx = torch.randperm(len(data.x_train), generator=gen, device=gen.device)[
            :m
        ]  # first m of a shuffled loader (train.py:50-63)
        images = data.x_train[idx].to(device).clone()
        targets = enc.features(images).to(device)  # Y_s = g(normalize(X_s)) (train.py:55)
        state.tensors.update(
            images=images,
            targets=targets,
            labels=data.y_train[idx].to(device).clone(),
            adam_m_images=torch.zeros_like(images),
            adam_v_images=torch.zeros_like(images),
            adam_m_targets=torch.zeros_like(targets),
            adam_v_targets=torch.zeros_like(targets),
        )
        counts = []
        for i in range(cfg.num_models):  # model_pool.py:30-42: U{1, ..., pool_steps - 1} warm-up steps each
            self._reinit(state, i, gen)
            counts.append(int(torch.randint(1, cfg.pool_steps, (), generator=gen, device=gen.device)))
            for _ in range(counts[-1]):
                self._pool_step(state, i)
        state.scalars["pool_counts"] = counts
        return state

    def _real_batch(self, state: MatchState, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A real batch x_r and its targets y_r = g(A(x_r)) (``precompute_targets``: g(x_r) from the cache)."""
        rt, cfg = state.runtime, state.runtime["cfg"]
        x_all = rt["x_train"]
        b = min(cfg.batch_real, len(x_all))
        idx = torch.randperm(len(x_all), generator=gen, device=gen.device)[:b].to(x_all.device)
        x = x_all[idx]
        if rt["target_cache"] is not None:
            return x, rt["target_cache"][idx]
        if cfg.crop_padding:
            p = cfg.crop_padding
            x = (
                functional.crop(x - rt["fill"], torch.randint(-p, p + 1, (b, 2), generator=gen, device=gen.device))
                + rt["fill"]
            )
        if rt["flip"]:
            x = functional.flip(x, torch.rand(b, generator=gen, device=gen.device).to(x.device) < 0.5)
        return x, rt["encoder"].features(x)

    def step(self, state: MatchState, it: int, gen: torch.Generator) -> dict[str, float]:
        rt = state.runtime
        cfg: KRRSTConfig = rt["cfg"]
        # 1. pick f_i, eval mode (BatchNorm running statistics)
        i = int(torch.randint(0, cfg.num_models, (), generator=gen, device=gen.device))
        net = rt["net"].eval()
        pool = self._pool_params(state, i)
        # 2. real batch and its target representations y_r = g(A(x_r))
        x_r, y_r = self._real_batch(state, gen)
        # 3. kernel-ridge head on pool features and the outer MSE
        x_s = state.tensors["images"].detach().requires_grad_(True)
        y_s = state.tensors["targets"].detach().requires_grad_(True)
        phi_s = _embed(net, pool, x_s)
        with torch.no_grad():
            phi_r = _embed(net, pool, x_r)
        loss = F.mse_loss(krr_predict(phi_s, phi_r, y_s, cfg.ridge), y_r)
        g_x, g_y = torch.autograd.grad(loss, [x_s, y_s])
        # 4. AdamW on (X_s, Y_s), LinearLR factor 1 -> lr_end_factor
        frac = min(it, cfg.num_iterations) / max(1, cfg.num_iterations)
        lr = float(state.scalars["lr_img"]) * (1.0 + (cfg.lr_end_factor - 1.0) * frac)
        if cfg.grad_clip > 0:
            g_x, g_y = _clip(g_x, cfg.grad_clip), _clip(g_y, cfg.grad_clip)
        state.scalars["adam_step"] = t = int(state.scalars["adam_step"]) + 1
        with torch.no_grad():
            for name, g in (("images", g_x), ("targets", g_y)):
                _adamw_(
                    state.tensors[name],
                    state.tensors[f"adam_m_{name}"],
                    state.tensors[f"adam_v_{name}"],
                    g,
                    lr,
                    t,
                    cfg.weight_decay,
                )
        # 5. pool update of f_i (re-initialize, or one SGD step)
        self._pool_update(state, i, gen)
        return {"loss": float(loss.detach()), "lr": lr, "model": float(i)}

    def to_synthetic(self, state: MatchState) -> SyntheticSet:
        rt = state.runtime
        syn = SyntheticSet.from_tensors(
            state.tensors["images"],
            state.tensors["labels"],
            rt["data"],
            self.name,
            int(state.scalars["ipc"]),
            rt["cfg"],
            meta={
                "encoder": rt["encoder"].reference(),
                "num_images": int(state.tensors["images"].shape[0]),
                "labels": "classes of the real images the set started from; KRR-ST never reads them",
            },
        )
        syn.tensors["krr_targets"] = state.tensors["targets"].detach().float().cpu().clone()
        return syn


def _embed(net: torch.nn.Module, pool: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``f_i.embed(x)`` with slot i's parameters and buffers."""
    return functional_call(_EmbedOf(net), {f"net.{k}": v for k, v in pool.items()}, (x,))


class _EmbedOf(torch.nn.Module):
    """A view of ``net`` whose forward is ``net.embed`` (so :func:`functional_call` can run the embedding)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.embed(x)


def _clip(g: torch.Tensor, max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_`` of one tensor (the code clips X_s and Y_s separately)."""
    norm = g.norm()
    return g * min(1.0, max_norm / (float(norm) + 1e-6))


def _adamw_(p, m, v, g, lr: float, t: int, weight_decay: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
    """In-place ``torch.optim.AdamW`` step (default betas and eps; decoupled weight decay)."""
    if weight_decay:
        p.mul_(1 - lr * weight_decay)
    m.mul_(b1).add_(g, alpha=1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    denom = (v / (1 - b2**t)).sqrt_().add_(eps)
    p.addcdiv_(m, denom, value=-lr / (1 - b1**t))
