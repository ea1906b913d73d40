"""Shared core of the graph methods (Mirage, random_graphs, herding_graphs): canonical computation-tree codes and
graph-subset artifacts. Imported only by those method files."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from condense.config import config_to_dict
from condense.errors import MismatchError
from condense.synthetic import SyntheticSet

__all__ = ["TreeVocab", "computation_tree_ids", "graph_set", "graph_subset_set"]


class TreeVocab:
    """Canonical ids of computation trees, level by level, shared across all graphs.

    ``rows[l][i] = (label, children)`` defines tree ``i`` of depth ``l``: its root label and the sorted ids of its
    children's depth-(l-1) trees. Depth-0 trees are bare labels (``rows[0][i] = (label, ())``).
    """

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.index: list[dict[tuple[int, ...], int]] = [{} for _ in range(depth + 1)]
        self.rows: list[list[tuple[int, tuple[int, ...]]]] = [[] for _ in range(depth + 1)]

    def code(self, level: int, key: tuple[int, ...]) -> int:
        """Id of the tree ``key = (label, *children)`` at ``level``, adding it when new."""
        d = self.index[level]
        i = d.get(key)
        if i is None:
            i = len(d)
            d[key] = i
            self.rows[level].append((key[0], key[1:]))
        return i


def computation_tree_ids(
    node_label: np.ndarray, edge_index: np.ndarray, depth: int, vocab: TreeVocab | None = None
) -> tuple[list[np.ndarray], TreeVocab]:
    """Canonical id of every node's l-hop computation tree, for l = 0..depth.

    Two nodes get the same depth-l id exactly when their depth-l computation trees are isomorphic (same labels,
    same shape up to child order); this is the bottom-up canonical form of Mirage Sec. 3.2.

    Args:
        node_label: discrete node labels. edge_index: directed pairs, both directions of every edge.
        depth: L. vocab: extend an existing vocabulary (ids stay consistent across calls).

    Shape:
        node_label: (n,) int; edge_index: (2, e) int. return: list of L + 1 arrays (n,) int64.

    Example:
        >>> ids, vocab = computation_tree_ids(np.array([0, 1, 1]), np.array([[0, 0, 1, 2], [1, 2, 0, 0]]), 1)
        >>> ids[1].tolist()  # the two label-1 leaves share a tree, the centre differs
        [0, 1, 1]
    """
    vocab = vocab or TreeVocab(depth)
    n = int(node_label.shape[0])
    labels = node_label.astype(np.int64).tolist()
    ids = [np.array([vocab.code(0, (lab,)) for lab in labels], dtype=np.int64)]
    src, dst = edge_index[0].astype(np.int64), edge_index[1].astype(np.int64)
    ptr = np.zeros(n + 1, dtype=np.int64)
    ptr[1:] = np.cumsum(np.bincount(src, minlength=n))
    p = ptr.tolist()
    for level in range(1, depth + 1):
        child = ids[-1][dst]
        order = np.lexsort((child, src))  # group by node, sort children: the multiset, canonically ordered
        cl = child[order].tolist()
        out = np.empty(n, dtype=np.int64)
        for v in range(n):
            out[v] = vocab.code(level, (labels[v], *cl[p[v] : p[v + 1]]))
        ids.append(out)
    return ids, vocab


def graph_set(
    data: Any, method: str, ipc: int, tensors: dict[str, torch.Tensor], labels: torch.Tensor, cfg: Any, meta: dict
) -> SyntheticSet:
    """A ``graph_summary`` SyntheticSet of ``data``'s classes: the one artifact shape of every graph method."""
    return SyntheticSet(
        images=None,
        labels=labels,
        classes=list(data.classes),
        method=method,
        dataset=data.name,
        ipc=ipc,
        tensors=tensors,
        config=config_to_dict(cfg),
        meta=meta,
        kind="graph_summary",
    )


def graph_subset_set(data: Any, idx: torch.Tensor, method: str, ipc: int, cfg: Any, extra: dict | None = None):
    """A ``graph_summary`` SyntheticSet holding the real graphs ``idx`` of ``data`` (shared by graph coresets)."""
    from condense.data.tu import GraphData, pack_graphs

    if not isinstance(data, GraphData):
        raise MismatchError(f"{method} selects graphs from a graph dataset (tu:<NAME>), got {type(data).__name__}")
    tensors = pack_graphs(data, idx)
    meta = {
        "summary": "graph_subset",
        "num_graphs": int(idx.numel()),
        "num_node_labels": data.num_node_labels,
        "node_label_kind": data.node_label_kind,
        "summary_bytes": int(sum(t.numel() * t.element_size() for t in tensors.values()) + idx.numel() * 8),
        "raw_bytes": int(data.raw_bytes),
        "data": data.describe(),
        **(extra or {}),
    }
    return graph_set(data, method, ipc, tensors, data.y[idx].to(torch.int64), cfg, meta)
