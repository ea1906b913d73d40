"""Differentiable student unrolls for the trajectory-matching family (MTT, FTD, DATM, AST options, TESLA mode).

A student network starts from an expert checkpoint theta*_t and takes N SGD steps (optionally heavy-ball, as AST)
on minibatches of the synthetic set, with DSA and a learnable step size alpha. The matching loss compares the
student's parameters with later expert checkpoints. This module computes that loss and its meta-gradient with
respect to the synthetic images, alpha and (soft) labels, in two exact ways:

- ``mode="full"``: ordinary reverse mode through the whole unroll (MTT's ``create_graph=True`` backward). The
  autograd graph holds N steps of activations and double-backward state, so memory grows linearly in N.
- ``mode="lean"``: forward N steps without a graph, keeping only each step's parameters (a flat (P,) vector),
  minibatch indices and augmentation parameters; then walk the steps backwards, recomputing one step's gradient
  at a time and pulling the adjoint through it with one vector-Jacobian product (a Hessian-vector product for the
  parameters plus the mixed terms for images and labels). Activation memory is one step's, constant in N; the
  stored parameters cost N * P floats (1.3 MB per step for the CIFAR ConvNetD3), far below one step's graph.
  Unlike the TESLA code, which treats each theta_i as constant w.r.t. earlier batches, this keeps the cross-step
  (Hessian) terms, so it equals the full unroll up to float rounding (tests/methods/test_unroll.py checks it).

The student is ``torch.func.functional_call`` on a parameter dict that is a set of views of one flat vector (no module
is re-parametrized). Its gradients are taken with ``torch.autograd.grad(create_graph=True)`` by default, or with
``torch.func.grad`` / ``torch.func.vjp`` (``engine="func"``): same numbers, but the autograd engine measured about
1 ms less Python overhead per student step on the CPU, which matters on a GPU where one step of the CIFAR ConvNet
takes a few ms.

Notation (MTT paper, Eq. 1-2; AST for momentum and intermediate matching)::

    theta_{i+1} = theta_i - alpha * b_{i+1},   b_{i+1} = mu * b_i + g_i,   g_i = grad_theta l(A_i(X[idx_i]); theta_i)
    L = sum_j w_j * ||theta_{s_j} - T_j||^2 / ||theta_0 - T_j||^2

with ``mu = 0`` for MTT/FTD/DATM (plain SGD, b_{i+1} = g_i), ``s_J = N`` and ``T_J = theta*_{t+M}``.

References:
    Cazenavette et al., "Dataset Distillation by Matching Training Trajectories", CVPR 2022, arXiv:2203.11932,
    Eq. 1-2 and Algorithm 1.
    Cui et al., "Scaling Up Dataset Distillation to ImageNet-1K with Constant Memory" (TESLA), ICML 2023,
    arXiv:2211.10586, Section 4 (constant-memory recomputation).
    Shen, Yang and Lam, "AST: Effective Dataset Distillation through Alignment with Smooth and High-Quality Expert
    Trajectories", arXiv:2310.10541 (heavy-ball student, intermediate matching loss).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vjp

from condense.augment import flip_concat
from condense.models.params import ParamLayout
from condense.optim import sgd

__all__ = [
    "ENGINES",
    "MODES",
    "StepPlan",
    "MatchTarget",
    "MetaGrad",
    "inner_loss",
    "meta_gradient",
    "parameter_distance",
]

MODES = ("full", "lean")
#: how the inner gradient is taken: ``autograd`` (``torch.autograd.grad(create_graph=True)`` on the functional_call
#: loss; default, about 1 ms less Python overhead per student step than ``func``) or ``func`` (``torch.func.grad`` and
#: ``torch.func.vjp``). Both give the same numbers.
ENGINES = ("autograd", "func")


@dataclass
class StepPlan:
    """What one student step sees: which synthetic items and which augmentation draw.

    Shape:
        idx: (B,), int64 indices into the synthetic set.
        aug_params: the augmentation's parameter dict for this batch (replayed exactly in the lean backward),
            or None when no augmentation is used.
    """

    idx: torch.Tensor
    aug_params: Any = None


@dataclass
class MatchTarget:
    """One term ``weight * ||theta_step - target||^2 / ||theta_0 - target||^2`` of the matching loss.

    Shape:
        target: (P,), flat expert parameters theta*_{t+k}.
    """

    step: int
    target: torch.Tensor
    weight: float = 1.0


@dataclass
class MetaGrad:
    """The matching loss and its gradients (None where the input was not asked for).

    Shape:
        images: same as the synthetic images (N, C, H, W).
        labels: same as the learnable labels (N, K), or None.
        lr: () scalar, d loss / d alpha.
    """

    loss: float
    images: torch.Tensor
    lr: torch.Tensor
    labels: torch.Tensor | None = None
    final_distance: float = float("nan")
    extras: dict[str, float] = field(default_factory=dict)


def inner_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The student's training loss: cross-entropy on hard labels, soft cross-entropy on logit labels.

    Soft labels are logits (DATM stores and learns logits): the target is ``softmax(labels)`` at temperature 1,
    as ``NUS-HPC-AI-Lab/DATM:distill/DATM.py``.

    Shape:
        logits: (B, K), student outputs.
        labels: (B,) int64 or (B, K) float logits.
    """
    if labels.is_floating_point():
        return -(torch.softmax(labels, dim=1) * torch.log_softmax(logits, dim=1)).sum(1).mean()
    return F.cross_entropy(logits, labels)


def parameter_distance(theta: torch.Tensor, target: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """MTT's normalized distance ``||theta - target||^2 / ||start - target||^2`` summed over all parameters.

    Shape:
        theta, target, start: (P,), flat parameters.
    """
    return (theta - target).pow(2).sum() / (start - target).pow(2).sum()


def _make_loss_fn(
    model: nn.Module,
    layout: ParamLayout,
    augment: Callable[..., torch.Tensor] | None,
    loss_scale: float,
    mirror: bool = False,
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any], torch.Tensor]:
    """``(theta (P,), images (B,C,H,W), labels, aug_params) -> scalar``: the student's inner loss (on
    ``[images; flip_W images]`` with the labels repeated when ``mirror``, FYI arXiv:2407.08113)."""

    def loss_fn(theta: torch.Tensor, imgs: torch.Tensor, labels: torch.Tensor, aug_params: Any) -> torch.Tensor:
        if mirror:  # FYI, inside the step: the vjp w.r.t. imgs (lean) and autograd (full) sum both halves
            imgs, labels = flip_concat(imgs, labels)
        # the augmentation is applied to the raw images, so the same draw is replayed exactly in the lean backward
        x = augment(imgs, params=aug_params) if augment is not None and aug_params is not None else imgs
        logits = functional_call(model, layout.unflatten(theta), (x,))
        return inner_loss(logits, labels) * loss_scale

    return loss_fn


def _make_grad_fn(
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any], torch.Tensor], engine: str
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any], torch.Tensor]:
    """``(theta, images, labels, aug_params) -> g (P,)``, differentiable w.r.t. every input that requires grad."""
    if engine == "func":
        g = grad(loss_fn)
        return lambda th, im, lb, ap: g(th, im, lb, ap)

    def grad_fn(theta: torch.Tensor, imgs: torch.Tensor, labels: torch.Tensor, aug_params: Any) -> torch.Tensor:
        with torch.enable_grad():
            leaf = not theta.requires_grad
            th = theta.detach().requires_grad_(True) if leaf else theta
            loss = loss_fn(th, imgs, labels, aug_params)
            needs_graph = not leaf or imgs.requires_grad or labels.requires_grad
            return torch.autograd.grad(loss, th, create_graph=needs_graph)[0]

    return grad_fn


def _check(mode: str, plan: Sequence[StepPlan], matches: Sequence[MatchTarget], momentum: float, engine: str) -> None:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if mode not in MODES:
        raise ValueError(f"unroll mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not plan:
        raise ValueError("the student unroll needs at least one step, got an empty plan")
    if not matches:
        raise ValueError("the matching loss needs at least one MatchTarget, got none")
    n = len(plan)
    for m in matches:
        if not 1 <= m.step <= n:
            raise ValueError(f"match step must lie in [1, {n}], got {m.step}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"student momentum must lie in [0, 1), got {momentum}")


def meta_gradient(
    model: nn.Module,
    layout: ParamLayout,
    theta0: torch.Tensor,
    images: torch.Tensor,
    labels: torch.Tensor,
    lr: torch.Tensor,
    plan: Sequence[StepPlan],
    matches: Sequence[MatchTarget],
    *,
    augment: Callable[..., torch.Tensor] | None = None,
    mode: str = "full",
    momentum: float = 0.0,
    loss_scale: float = 1.0,
    labels_grad: bool = False,
    engine: str = "autograd",
    mirror: bool = False,
) -> MetaGrad:
    """Unroll the student for ``len(plan)`` steps and return the matching loss and its exact meta-gradient.

    Args:
        model: a module of the expert's architecture; only its structure is used (``functional_call``).
        layout: how a flat parameter vector maps onto ``model``'s parameters.
        theta0: the start checkpoint theta*_t (also the normalizer's ``start``).
        images: synthetic images X (the leaf being distilled; no ``requires_grad`` needed).
        labels: hard labels or learnable soft-label logits.
        lr: the learnable student step size alpha (a 0-d tensor; must be > 0 to keep momentum recoverable).
        plan: per-step minibatch indices and augmentation parameters (sampled by the caller from its generator).
        matches: matching-loss terms; the last one is normally ``MatchTarget(len(plan), theta*_{t+M})``.
        augment: ``augment(x, params=p)`` replaying a differentiable augmentation, or None.
        mode: ``"full"`` (backprop through the unroll) or ``"lean"`` (constant-memory recomputation).
        momentum: heavy-ball momentum mu of the student (0 for MTT; AST uses the experts' 0.9).
        loss_scale: multiplies the inner loss (AST's balanced inner loss).
        labels_grad: also return d loss / d labels (learnable soft labels).
        engine: ``"autograd"`` or ``"func"`` (see :data:`ENGINES`).
        mirror: FYI (Son et al., ECCV 2024, arXiv:2407.08113): every step trains on ``[X[idx]; flip_W X[idx]]``
            with the labels repeated (the plan's augmentation parameters must cover ``2 * len(idx)`` images,
            as ``minibatch_plan(..., mirror=True)`` draws them); the meta-gradient of both halves lands on X[idx].

    Returns:
        :class:`MetaGrad` with detached gradients in the dtype and device of the inputs.

    Shape:
        theta0: (P,), flat parameters in ``layout`` order.
        images: (N, C, H, W).
        labels: (N,) int64 or (N, K) float logits.
        lr: (), float.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> lay = ParamLayout.from_module(net)
        >>> theta0 = torch.zeros(lay.numel)
        >>> x, y = torch.randn(3, 1, 2, 2), torch.tensor([0, 1, 0])
        >>> plan = [StepPlan(torch.arange(3))] * 2
        >>> mg = meta_gradient(net, lay, theta0, x, y, torch.tensor(0.1), plan, [MatchTarget(2, theta0 + 1)])
        >>> mg.images.shape, mg.lr.shape
        (torch.Size([3, 1, 2, 2]), torch.Size([]))
    """
    _check(mode, plan, matches, momentum, engine)
    loss_fn = _make_loss_fn(model, layout, augment, loss_scale, mirror)
    fn = _full if mode == "full" else _lean
    return fn(loss_fn, engine, theta0, images, labels, lr, plan, matches, momentum, labels_grad)


def _full(loss_fn, engine, theta0, images, labels, lr, plan, matches, momentum, labels_grad) -> MetaGrad:
    grad_fn = _make_grad_fn(loss_fn, engine)
    x = images.detach().requires_grad_(True)
    y = labels.detach().requires_grad_(labels_grad)
    alpha = lr.detach().requires_grad_(True)
    theta0 = theta0.detach()
    by_step: dict[int, list[MatchTarget]] = {}
    for m in matches:
        by_step.setdefault(m.step, []).append(m)
    theta, buf = theta0, None
    loss = theta0.new_zeros(())
    final = None
    with torch.enable_grad():
        for i, p in enumerate(plan, start=1):
            g = grad_fn(theta, x[p.idx], y[p.idx], p.aug_params)
            theta, buf = sgd(theta, g, buf, alpha, momentum)  # b <- mu * b + g; theta <- theta - alpha * b
            for m in by_step.get(i, ()):
                d = parameter_distance(theta, m.target, theta0)
                loss = loss + m.weight * d
                final = d.detach()  # read once at the end: no host sync inside the unroll
        inputs = [x, alpha] + ([y] if labels_grad else [])
        grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    gx = grads[0] if grads[0] is not None else torch.zeros_like(x)
    gy = None
    if labels_grad:
        gy = grads[2] if grads[2] is not None else torch.zeros_like(y)
    return MetaGrad(float(loss.detach()), gx.detach(), grads[1].detach(), gy, float(final))


@torch.no_grad()
def _lean(loss_fn, engine, theta0, images, labels, lr, plan, matches, momentum, labels_grad) -> MetaGrad:
    grad_fn = _make_grad_fn(loss_fn, engine)
    alpha = lr.detach()
    x, y, theta0 = images.detach(), labels.detach(), theta0.detach()
    n = len(plan)
    # ---- forward without a graph: keep theta_i (and b_i with momentum), nothing else
    thetas = [theta0]
    bufs: list[torch.Tensor] = []
    theta, buf = theta0, None
    for p in plan:
        g = grad_fn(theta, x[p.idx], y[p.idx], p.aug_params)
        theta, buf = sgd(theta, g, buf, alpha, momentum)
        thetas.append(theta)
        if momentum != 0.0:
            bufs.append(buf)
    # ---- loss and its direct gradients d L / d theta_s
    loss = 0.0
    final = float("nan")
    direct: dict[int, torch.Tensor] = {}
    for m in matches:
        denom = (theta0 - m.target).pow(2).sum()
        diff = thetas[m.step] - m.target
        d = diff.pow(2).sum() / denom
        loss += m.weight * float(d)
        final = float(d)
        direct[m.step] = direct.get(m.step, 0) + (2.0 * m.weight / denom) * diff
    # ---- backward, one step at a time (adjoints: a_theta = dL/dtheta_{i+1}, a_buf = dL/db_{i+1} from later steps)
    gx = torch.zeros_like(x)
    gy = torch.zeros_like(y) if labels_grad else None
    g_alpha = torch.zeros((), dtype=alpha.dtype, device=alpha.device)
    a_theta = direct.get(n, torch.zeros_like(theta0))
    a_buf = torch.zeros_like(theta0)
    for i in range(n - 1, -1, -1):
        p = plan[i]
        imgs = x[p.idx]
        lab = y[p.idx]
        g, pull = _step_vjp(grad_fn, engine, thetas[i], imgs, lab, p.aug_params, labels_grad)
        b_next = bufs[i] if momentum != 0.0 else g
        g_alpha -= torch.dot(b_next, a_theta)  # theta_{i+1} = theta_i - alpha * b_{i+1}
        a_b_total = a_buf - alpha * a_theta  # total adjoint of b_{i+1}, which feeds g_i with weight 1
        cot = pull(a_b_total)
        a_theta = a_theta + cot[0]
        gx.index_add_(0, p.idx, cot[1])
        if labels_grad:
            gy.index_add_(0, p.idx, cot[2])
        a_buf = momentum * a_b_total
        if i in direct and i > 0:
            a_theta = a_theta + direct[i]
    return MetaGrad(loss, gx, g_alpha, gy, final)


def _step_vjp(grad_fn, engine: str, theta, imgs, labels, aug_params, labels_grad: bool):
    """``g_i`` and a function pulling a cotangent of ``g_i`` back to ``(theta_i, images, [labels])``: one step's
    Hessian-vector product and mixed second derivatives, with only this step's graph alive."""
    if engine == "func":
        with torch.enable_grad():
            if labels_grad:
                return vjp(lambda th, im, lb: grad_fn(th, im, lb, aug_params), theta, imgs, labels)
            return vjp(lambda th, im: grad_fn(th, im, labels, aug_params), theta, imgs)
    with torch.enable_grad():
        th = theta.detach().requires_grad_(True)
        im = imgs.detach().requires_grad_(True)
        lb = labels.detach().requires_grad_(True) if labels_grad else labels
        g = grad_fn(th, im, lb, aug_params)
    ins = [th, im] + ([lb] if labels_grad else [])

    def pull(cot: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.enable_grad():
            out = torch.autograd.grad(g, ins, grad_outputs=cot, allow_unused=True)
        return tuple(torch.zeros_like(t) if o is None else o for o, t in zip(out, ins, strict=True))

    return g.detach(), pull
