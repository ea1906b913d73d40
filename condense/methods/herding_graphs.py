"""Herding on graphs: per class, greedily pick the graphs whose running mean embedding tracks the class mean.

Herding (Welling, ICML 2009) as used for graph coresets by DosCond and KiDD and listed as a baseline by Mirage
(Gupta et al., ICLR 2024, arXiv:2310.09486). Those papers embed graphs with the target GNN; here the embedding is
model-free so the coreset is the same for every GNN: the normalized histogram of each graph's L-hop computation
trees (Weisfeiler-Lehman subtree features, Shervashidze et al., JMLR 2011) over the ``num_features`` most
frequent trees of the training split; the selection is the one of the image ``herding``
(``condense.methods._coreset.herding_select``). Known difference: no trained GNN is involved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from condense.config import check_range
from condense.data.graph import computation_tree_ids
from condense.graph_summary import graph_subset_set
from condense.methods._coreset import herding_per_class
from condense.methods.base import Method, RunContext, register_method

__all__ = ["HerdingGraphs", "HerdingGraphsConfig", "wl_histograms"]


@dataclass(frozen=True, kw_only=True)
class HerdingGraphsConfig:
    """Herding settings.

    Args:
        num_hops: depth of the computation trees counted (WL iterations).
        num_features: most frequent trees kept as histogram bins.
    """

    num_hops: int = 2  # as Mirage's L on TU data
    num_features: int = 512  # library choice

    def __post_init__(self) -> None:
        check_range("num_hops", self.num_hops, 0, 4)
        check_range("num_features", self.num_features, 1)


def wl_histograms(data: Any, idx: torch.Tensor, num_hops: int, num_features: int) -> torch.Tensor:
    """L2-normalized counts of each graph's computation trees of depth 0..num_hops (top ``num_features`` bins).

    Shape:
        idx: (B,) graph indices. return: (B, <= num_features) float32.
    """
    nl, ei, nptr, _ = data.subgraphs(idx)
    ids, vocab = computation_tree_ids(nl.numpy(), ei.numpy(), num_hops)
    offs = np.cumsum([0] + [len(r) for r in vocab.rows])
    codes = np.concatenate([ids[level] + offs[level] for level in range(num_hops + 1)])
    graph_of = np.tile(np.repeat(np.arange(len(idx)), (nptr[1:] - nptr[:-1]).numpy()), num_hops + 1)
    counts = np.bincount(codes, minlength=int(offs[-1]))
    top = np.argsort(-counts, kind="stable")[:num_features]
    col = np.full(int(offs[-1]), -1)
    col[top] = np.arange(len(top))
    keep = col[codes] >= 0
    h = np.zeros((len(idx), len(top)), dtype=np.float32)
    np.add.at(h, (graph_of[keep], col[codes[keep]]), 1.0)
    h /= np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
    return torch.from_numpy(h)


@register_method("herding_graphs")
class HerdingGraphs(Method):
    """Herding over model-free WL-histogram embeddings, ``ipc`` graphs per class."""

    Config = HerdingGraphsConfig
    data_kind = "graphs"

    def distill(self, data: Any, cfg: HerdingGraphsConfig, ipc: int, generator: torch.Generator, run: RunContext):
        feats = wl_histograms(data, data.train_idx, cfg.num_hops, cfg.num_features)
        rows = herding_per_class(feats, data.y[data.train_idx], data.num_classes, ipc)
        return graph_subset_set(data, data.train_idx[rows], self.name, ipc, cfg)
