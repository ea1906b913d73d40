"""Random graphs: ``ipc`` real training graphs per class drawn uniformly, the baseline of every graph table.

The Random rows of the Mirage paper (Gupta et al., ICLR 2024, arXiv:2310.09486, Table 2) and of DosCond (Jin et
al., KDD 2022, arXiv:2206.07746): a GNN trained on a uniform sample of real graphs. The graphs are stored in the
artifact itself (node labels, local edges, sizes, and their indices in the dataset as provenance), so the set is
self-contained like any other SyntheticSet. The draw is the data layer's
(:meth:`condense.data.graph.GraphData.sample_per_class`), shared with the random-graph baseline of ``condense.eval``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from condense.graph_summary import graph_subset_set
from condense.methods.base import Method, RunContext, register_method

__all__ = ["RandomGraphs", "RandomGraphsConfig"]


@dataclass(frozen=True, kw_only=True)
class RandomGraphsConfig:
    """No algorithm settings: the draw is fixed by the generator."""


@register_method("random_graphs")
class RandomGraphs(Method):
    """``ipc`` uniformly drawn training graphs per class (all of a class when it has fewer)."""

    Config = RandomGraphsConfig
    data_kind = "graphs"

    def distill(self, data: Any, cfg: RandomGraphsConfig, ipc: int, generator: torch.Generator, run: RunContext):
        idx = data.sample_per_class(ipc, generator)
        return graph_subset_set(data, idx, self.name, ipc, cfg)
