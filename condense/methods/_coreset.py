"""Shared core of the coreset methods (``herding``, ``herding_graphs``): herding selection written on features.

The methods differ only in their features (trained-ConvNet embeddings or pixels for images, computation-tree
histograms for graphs); the selection is the same and lives here once.

References:
    Welling, "Herding Dynamical Weights to Learn", ICML 2009. Used as a dataset-distillation baseline since Zhao,
    Mopuri & Bilen, ICLR 2021, arXiv:2006.05929 (Table 1, "Herding").
"""

from __future__ import annotations

import torch

__all__ = ["herding_select", "herding_per_class"]


def herding_select(features: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of ``k`` rows chosen by herding: each pick brings the mean of the picks closest to the mean of all.

    Step ``t`` (0-based) adds the unchosen row ``i`` minimizing ``|| (s_t + x_i) / (t + 1) - mu ||``, where ``s_t``
    is the sum of the rows chosen so far and ``mu`` the mean of all rows (Welling's herding step). Ties go to the
    lowest index.

    Args:
        features: one row per candidate.
        k: how many to pick (all rows when there are fewer).

    Shape:
        features: (N, D) float.
        return: (min(k, N),) int64 on the CPU, in selection order.

    Example:
        >>> herding_select(torch.tensor([[0.0], [1.0], [2.0], [10.0]]), 2).tolist()
        [2, 1]
    """
    n = features.shape[0]
    mu = features.mean(0)
    total = torch.zeros_like(mu)  # s_t
    available = torch.ones(n, dtype=torch.bool, device=features.device)
    chosen: list[int] = []
    for t in range(min(k, n)):
        dist = ((total[None] + features) / (t + 1) - mu[None]).norm(dim=1)
        dist[~available] = float("inf")
        i = int(dist.argmin())
        chosen.append(i)
        available[i] = False
        total += features[i]
    return torch.tensor(chosen, dtype=torch.long)


def herding_per_class(features: torch.Tensor, labels: torch.Tensor, num_classes: int, ipc: int) -> torch.Tensor:
    """:func:`herding_select` run inside every class: ``ipc`` rows per class (all of a smaller class), class-major.

    Args:
        features: one row per candidate.
        labels: the class of each row.
        num_classes: K.
        ipc: rows picked per class.

    Shape:
        features: (N, D) float; labels: (N,) int64.
        return: (<= K * ipc,) int64 row indices on ``labels``' device; class 0's picks first, each class in
        selection order.

    Example:
        >>> herding_per_class(torch.tensor([[0.0], [1.0], [5.0], [6.0]]), torch.tensor([0, 0, 1, 1]), 2, 1).tolist()
        [0, 2]
    """
    picks = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        picks.append(members[herding_select(features[members], ipc).to(members.device)])
    return torch.cat(picks)
