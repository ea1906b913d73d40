"""GSAM (surrogate-gap guided sharpness-aware minimization) as a pure function, for FTD/DATM "flat" experts.

FTD trains its experts with GSAM wrapped around plain SGD so that the recorded trajectories run through flat
regions of the loss; DATM reuses those experts, trained longer. The authors' code (``buffer/gsam`` in
``AngusDujw/FTD-distillation``) is an optimizer that mutates ``p.grad`` in place; here the same update is a pure
function of a parameter dict so that it runs per expert under ``torch.func.vmap`` (K experts at once) and in the
plain loop alike, with bit-for-bit the same arithmetic.

One GSAM gradient, for weights w and loss L (code names: ``old_g`` -> g, ``p.grad`` after the second pass -> g_p):

    g     = dL/dw (w)                                  # first pass, the loss reported is L(w)
    e_w   = rho * g * w**2 / (||w * g|| + eps)          # adaptive (ASAM-style), FTD's --adaptive is always True
          = rho * g / (||g|| + eps)                     # non-adaptive
    g_p   = dL/dw (w + e_w)                            # second pass at the perturbed weights
    d     = g_p - alpha * (g - cos(g, g_p) * ||g|| * g_p / ||g_p||)   # remove alpha x the part of g orthogonal to g_p

The base optimizer (SGD) then steps with ``d`` from the unperturbed weights. ``eps`` is the code's
``perturb_eps = 1e-12``; norms are taken over all parameters of one model together.

References:
    Zhuang et al., "Surrogate Gap Minimization Improves Sharpness-Aware Training", ICLR 2022, arXiv:2203.08065,
    Algorithm 1 (GSAM), and its code as vendored in FTD (``gsam/gsam.py``: ``perturb_weights``,
    ``gradient_decompose``).
    Du et al., "Minimizing the Accumulated Trajectory Error to Improve Dataset Distillation", CVPR 2023,
    arXiv:2211.11004, Section 4.1 (flat expert trajectories; rho 0.01, alpha 0.3 or 1, Table 7).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["gsam_gradient", "global_norm"]

Params = dict[str, torch.Tensor]


def global_norm(tensors: Params, weights: Params | None = None) -> torch.Tensor:
    """L2 norm of all tensors of a dict taken together (``||weights * tensors||`` when ``weights`` is given).

    Pure (no ``.item()``), so it runs under ``vmap``; returns a 0-d tensor.
    """
    sq = [((weights[k].abs() * t) if weights is not None else t).pow(2).sum() for k, t in tensors.items()]
    return torch.stack(sq).sum().sqrt()


def gsam_gradient(
    grad_fn: Callable[[Params, bool], tuple[Params, torch.Tensor]],
    params: Params,
    *,
    rho: float,
    alpha: float,
    adaptive: bool = True,
    eps: float = 1e-12,
) -> tuple[Params, torch.Tensor]:
    """The GSAM descent direction at ``params`` (two gradient evaluations).

    Args:
        grad_fn: ``grad_fn(params, perturbed) -> (grads, loss)``; ``perturbed`` is True for the second pass so the
            caller can leave running statistics (BatchNorm) untouched there, as GSAM's ``disable_running_stats``.
        params: the current weights w, by name.
        rho: perturbation radius rho (FTD: 0.01, constant).
        alpha: surrogate-gap weight alpha (FTD: 0.3 for CIFAR-10 IPC 1/10, 1 elsewhere; DATM: 0.3).
        adaptive: scale the perturbation by w**2 (ASAM); FTD's ``--adaptive`` is always True.
        eps: GSAM's ``perturb_eps``.

    Returns:
        ``(direction, loss)``: the gradient replacement d by name, and L(w) from the first pass.

    Example:
        >>> w = {"a": torch.tensor([1.0, -2.0])}
        >>> fn = lambda p, _: ({"a": 2 * p["a"]}, (p["a"] ** 2).sum())
        >>> d, loss = gsam_gradient(fn, w, rho=0.01, alpha=0.3)
        >>> float(loss)
        5.0
    """
    grads, loss = grad_fn(params, False)
    # perturb_weights: e_w = rho * g * (w**2 if adaptive) / (||(|w| if adaptive) * g|| + eps)
    scale = rho / (global_norm(grads, params if adaptive else None) + eps)
    perturbed = {}
    for k, p in params.items():
        e_w = grads[k] * scale
        if adaptive:
            e_w = e_w * p.pow(2)
        perturbed[k] = p + e_w
    grads_p, _ = grad_fn(perturbed, True)
    # gradient_decompose: d = g_p - alpha * (g - cos * ||g|| * g_p / ||g_p||)
    inner = torch.stack([(grads[k] * grads_p[k]).sum() for k in grads]).sum()
    norm_p = global_norm(grads_p)
    norm_g = global_norm(grads)
    cosine = inner / (norm_p * norm_g + eps)
    direction = {}
    for k in grads:
        vertical = grads[k] - cosine * norm_g * grads_p[k] / (norm_p + eps)
        direction[k] = grads_p[k] - alpha * vertical
    return direction, loss
