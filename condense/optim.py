"""Functional optimizer steps: the one SGD update every method, trainer and recorder uses.

All follow ``torch.optim.SGD`` with dampening 0 and no Nesterov: ``d = g + wd * p``; ``b = d`` at the first step,
``b = mu * b + d`` after; ``p <- p - lr * b``. Three forms:

- :func:`sgd`: out of place on one tensor, differentiable (the student unroll of trajectory matching).
- :func:`sgd_tree`: out of place on a dict of named tensors, ``vmap``-safe (vmapped experts and evaluation seeds).
- :func:`sgd_`: in place under ``no_grad`` (synthetic images updated by DC, DM and the trajectory matchers).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

__all__ = ["sgd", "sgd_tree", "sgd_"]


def sgd(
    p: torch.Tensor,
    g: torch.Tensor,
    buf: torch.Tensor | None,
    lr: float | torch.Tensor,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One SGD step on ``p`` with gradient ``g``; returns ``(new_p, new_buf)`` (``new_buf`` is None without momentum).

    ``buf=None`` means the first step (the buffer starts as the step itself, as in ``torch.optim.SGD``).
    ``lr`` may be a tensor that requires grad (MTT's learned step size alpha).
    """
    d = g + weight_decay * p if weight_decay else g
    if momentum:
        d = d if buf is None else momentum * buf + d
        return p - lr * d, d
    return p - lr * d, None


def sgd_tree(
    params: Mapping[str, torch.Tensor],
    grads: Mapping[str, torch.Tensor],
    bufs: Mapping[str, torch.Tensor] | None,
    lr: float | torch.Tensor,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """:func:`sgd` applied to every named tensor; ``bufs=None`` is the first step."""
    new_p: dict[str, torch.Tensor] = {}
    new_b: dict[str, torch.Tensor] = {}
    for k, w in params.items():
        new_p[k], b = sgd(w, grads[k], None if bufs is None else bufs[k], lr, momentum, weight_decay)
        if b is not None:
            new_b[k] = b
    return new_p, (new_b if momentum else None)


@torch.no_grad()
def sgd_(
    p: torch.Tensor,
    buf: torch.Tensor,
    g: torch.Tensor,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    *,
    fused: bool = True,
) -> None:
    """In-place SGD step: ``buf`` (zeros before the first step) and ``p`` are updated; nothing is returned.

    ``fused=True`` subtracts with one ``p.sub_(b, alpha=lr)``; ``fused=False`` computes ``lr * b`` first, which rounds
    differently in the last bits. DC and DM use the fused form, the trajectory matchers the other one: each keeps
    the rounding its recorded results were measured with (``p`` may be a 0-d tensor such as MTT's learned alpha).
    """
    d = g.add(p, alpha=weight_decay) if weight_decay else g
    if momentum:
        buf.mul_(momentum).add_(d)
        d = buf
    if fused:
        p.sub_(d, alpha=lr)
    else:
        p.sub_(lr * d)
