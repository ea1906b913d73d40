"""The graph artifact formats: how a graph ``SyntheticSet`` stores its graphs and how it turns back into a batch.

A graph method's output is a ``SyntheticSet(kind="graph_summary")`` whose ``meta["summary"]`` names one of three
formats. This module owns all three, below both the methods that write them and the evaluation that reads them:

- ``"mirage_tree_sets"`` (:func:`encode_tree_sets` / :func:`expand_summary`): Mirage's frequent computation-tree
  sets, a shared table of trees (root label + child rows) plus, per tree-set, its root rows and per-class supports,
  all as small integer tensors (:data:`TREE_SET_TENSORS`).
- ``"dense_graphs"`` (:func:`dense_to_batch`): DosCond's learned dense graphs, continuous node features and a 0/1
  adjacency per graph (:data:`DENSE_TENSORS`).
- ``"graph_subset"`` (:func:`graph_subset_set` / :func:`subset_to_batch`): real training graphs picked by a coreset
  method, packed by :func:`condense.data.graph.pack_graphs`.

:func:`to_batch` decodes any of them into one :class:`~condense.data.graph.GraphBatch` through the :data:`DECODERS`
table, after checking the artifact against the dataset (classes, node-label vocabulary).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from condense.config import config_to_dict
from condense.data.graph import GraphBatch, GraphData, TreeVocab, pack_graphs, unpack_graphs
from condense.errors import IntegrityError, MismatchError
from condense.synthetic import SyntheticSet

__all__ = [
    "DECODERS",
    "DENSE_TENSORS",
    "TREE_SET_TENSORS",
    "dense_to_batch",
    "encode_tree_sets",
    "expand_summary",
    "graph_set",
    "graph_subset_set",
    "small_int",
    "subset_to_batch",
    "to_batch",
]

TREE_SET_TENSORS = ("tree_label", "tree_num_children", "tree_children", "set_size", "set_items", "set_support")
DENSE_TENSORS = ("feat", "adj")


# ---------------------------------------------------------------------------------------------- artifacts


def graph_set(
    data: GraphData,
    method: str,
    ipc: int,
    tensors: dict[str, torch.Tensor],
    labels: torch.Tensor,
    cfg: Any,
    meta: dict[str, Any],
) -> SyntheticSet:
    """A ``graph_summary`` SyntheticSet of ``data``'s classes: the one artifact shape of every graph method.

    Args:
        data: the dataset distilled. method: the registered method name. ipc: the requested per-class budget.
        tensors: the format's tensors. labels: class of every stored graph or tree-set. cfg: the method config
            (a dataclass, or None). meta: JSON; ``meta["summary"]`` names the format (a key of :data:`DECODERS`).

    Shape:
        labels: (S,) int64 in [0, K).
    """
    return SyntheticSet(
        images=None,
        labels=labels,
        classes=list(data.classes),
        method=method,
        dataset=data.name,
        ipc=ipc,
        tensors=tensors,
        config={} if cfg is None else config_to_dict(cfg),
        meta=meta,
        kind="graph_summary",
    )


def graph_subset_set(
    data: GraphData, idx: torch.Tensor, method: str, ipc: int, cfg: Any, extra: dict[str, Any] | None = None
) -> SyntheticSet:
    """A ``graph_subset`` SyntheticSet holding the real graphs ``idx`` of ``data`` (shared by graph coresets).

    Shape:
        idx: (S,) int64 graph indices into ``data``.

    Raises:
        MismatchError: ``data`` is not a graph dataset.
    """
    if getattr(data, "kind", None) != "graphs":
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


# ---------------------------------------------------------------------------------------------- tree sets (Mirage)


def small_int(values: list[int] | np.ndarray) -> torch.Tensor:
    """The narrowest of uint8 / int16 / int32 that holds ``values`` (all non-negative).

    Example:
        >>> small_int([0, 300]).dtype
        torch.int16
    """
    arr = np.asarray(values, dtype=np.int64)
    hi = int(arr.max()) if arr.size else 0
    dtype = np.uint8 if hi < 256 else np.int16 if hi < 32768 else np.int32
    return torch.from_numpy(arr.astype(dtype))


def encode_tree_sets(
    vocab: TreeVocab, sets: list[tuple[int, ...]], supports: list[list[int]], depth: int
) -> tuple[dict[str, torch.Tensor], int]:
    """Pack tree-sets, their per-class supports and every tree they reach into small integer tensors.

    Trees are rows of one table shared across levels (a depth-1 tree used by two depth-2 trees is stored once):
    ``tree_label[r]`` is the root label of row r and its children are the next ``tree_num_children[r]`` entries of
    ``tree_children`` (rows again). Tree-set s lists ``set_size[s]`` root rows in ``set_items``.

    Args:
        vocab: the canonical trees (:func:`condense.data.graph.computation_tree_ids`). sets: depth-``depth`` tree
            ids per tree-set. supports: per tree-set, its support in every class. depth: L.

    Returns:
        ``(tensors, number of tree rows)``, the tensors named by :data:`TREE_SET_TENSORS`.

    Shape:
        set_support: (S, K) small int; every other tensor is 1-D.
    """
    row_of: dict[tuple[int, int], int] = {}  # (level, vocab id) -> row
    label: list[int] = []
    children: list[list[int]] = []

    def add(level: int, i: int) -> int:
        key = (level, i)
        if key in row_of:
            return row_of[key]
        lab, kids = vocab.rows[level][i]
        kid_rows = [add(level - 1, j) for j in kids] if level > 0 else []
        row_of[key] = len(label)
        label.append(lab)
        children.append(kid_rows)
        return row_of[key]

    set_items: list[int] = []
    set_size: list[int] = []
    for items in sets:
        set_items.extend(add(depth, i) for i in items)
        set_size.append(len(items))
    tensors = {
        "tree_label": small_int(label),
        "tree_num_children": small_int([len(c) for c in children]),
        "tree_children": small_int([j for c in children for j in c]),
        "set_size": small_int(set_size),
        "set_items": small_int(set_items),
        "set_support": small_int(np.asarray(supports, dtype=np.int64).reshape(len(sets), -1)),
    }
    return tensors, len(label)


def expand_summary(syn: SyntheticSet, num_node_labels: int | None = None) -> tuple[GraphBatch, torch.Tensor]:
    """Turn a Mirage summary into one batch of tree-set graphs a GNN can train on.

    Every tree-set becomes one graph: the disjoint union of its trees, edges pointing child -> parent (messages
    flow to the root), the readout pooling over the roots only (Mirage Sec. 4). GCN degrees are the true ones for
    inner nodes (a computation-tree node lists every neighbour as a child, the parent included); leaves get the
    mean degree of inner nodes with the same label.

    Args:
        syn: a SyntheticSet with ``meta["summary"] == "mirage_tree_sets"``.
        num_node_labels: V, the one-hot width (default: ``syn.meta["num_node_labels"]``).

    Returns:
        ``(batch, support)``: a GraphBatch of the S tree-set graphs (``y`` = the class each was mined in) and
        their supports in every class.

    Shape:
        support: (S, K) float32, graphs of class k (training split) containing every tree of set s.
    """
    if syn.kind != "graph_summary" or syn.meta.get("summary") != "mirage_tree_sets":
        raise IntegrityError(f"expected a Mirage tree-set summary, got kind={syn.kind!r} from method {syn.method!r}")
    missing = [k for k in TREE_SET_TENSORS if k not in syn.tensors]
    if missing:
        raise IntegrityError(f"Mirage summary lacks tensors {missing}")
    v = int(num_node_labels or syn.meta["num_node_labels"])
    t = {k: syn.tensors[k].to(torch.int64).cpu() for k in TREE_SET_TENSORS}
    label, nkids = t["tree_label"].tolist(), t["tree_num_children"].tolist()
    kptr = np.concatenate([[0], np.cumsum(nkids)]).tolist()
    kids = t["tree_children"].tolist()
    sizes = t["set_size"].tolist()
    items = t["set_items"].tolist()
    sup = t["set_support"].reshape(len(sizes), -1).float()
    if (
        len(sizes) != len(syn.labels)
        or sum(sizes) != len(items)
        or kptr[-1] != len(kids)
        or sup.shape[1] != len(syn.classes)
    ):
        raise IntegrityError("Mirage summary tensors disagree in length (set_size, set_items, labels, children)")
    if label and max(label) >= v:
        raise MismatchError(f"summary uses node label {max(label)} but the dataset has {v} node labels")

    node_lab: list[int] = []
    src: list[int] = []
    dst: list[int] = []
    batch: list[int] = []
    is_root: list[bool] = []
    nchild: list[int] = []
    pos = 0
    for s, size in enumerate(sizes):
        for r in items[pos : pos + size]:
            stack = [(r, -1)]
            while stack:
                row, parent = stack.pop()
                me = len(node_lab)
                node_lab.append(label[row])
                batch.append(s)
                is_root.append(parent < 0)
                nchild.append(nkids[row])
                if parent >= 0:
                    src.append(me)
                    dst.append(parent)
                stack.extend((c, me) for c in kids[kptr[row] : kptr[row + 1]])
        pos += size
    nl = torch.tensor(node_lab, dtype=torch.int64)
    deg = torch.tensor(nchild, dtype=torch.float32)
    inner = deg > 0
    if bool(inner.any()):
        sums = torch.zeros(v).index_add_(0, nl[inner], deg[inner])
        cnt = torch.bincount(nl[inner], minlength=v).float()
        fallback = float(deg[inner].mean())
        mean_deg = torch.where(cnt > 0, sums / cnt.clamp_min(1), torch.full((v,), fallback))
        deg = torch.where(inner, deg, mean_deg[nl])
    gb = GraphBatch(
        x=torch.nn.functional.one_hot(nl, v).float(),
        edge_index=torch.tensor([src, dst], dtype=torch.int64).reshape(2, -1),
        batch=torch.tensor(batch, dtype=torch.int64),
        y=syn.hard_labels.cpu(),
        num_graphs=len(sizes),
        deg=deg,
        pool_mask=torch.tensor(is_root, dtype=torch.bool),
    )
    return gb, sup


def _tree_sets_to_batch(syn: SyntheticSet, data: GraphData) -> GraphBatch:
    """Tree-set graphs with root pooling, their sampling weights and the mined depth L (``to_batch`` decoder)."""
    batch, support = expand_summary(syn, data.num_node_labels)
    if syn.config.get("sampling", "support") == "support":
        # a (tree-set, class) pair is drawn with probability support_c(s) / |class c|: class-balanced, and a
        # tree-set present in both classes teaches the GNN its odds, not a hard label
        sizes = torch.tensor(syn.meta.get("class_sizes", [1] * data.num_classes), dtype=torch.float32)
        batch.class_weight = support / sizes.clamp_min(1)[None, :]
    else:
        batch.class_weight = torch.nn.functional.one_hot(batch.y, data.num_classes).float()
    hops = syn.config.get("num_hops")
    batch.depth = None if hops is None else int(hops)
    return batch


# ---------------------------------------------------------------------------------------------- dense graphs (DosCond)


def dense_to_batch(syn: SyntheticSet, num_node_labels: int) -> GraphBatch:
    """The dense synthetic graphs of a DosCond set as a sparse :class:`~condense.data.graph.GraphBatch`.

    Every one of the N nodes is kept (isolated zero-feature padding included, as the code's DenseGCN pools over
    all N), edges are the stored 0/1 adjacency, features the learned continuous X.

    Shape:
        syn.tensors["feat"]: (S, N, F) float32; syn.tensors["adj"]: (S, N, N) bool. return: S graphs, S * N nodes.
    """
    missing = [k for k in DENSE_TENSORS if k not in syn.tensors]
    if missing:
        raise IntegrityError(f"dense graph set lacks tensors {missing}")
    feat, adj = syn.tensors["feat"].float().cpu(), syn.tensors["adj"].bool().cpu()
    if feat.ndim != 3 or adj.shape != (*feat.shape[:2], feat.shape[1]) or len(syn.labels) != feat.shape[0]:
        raise IntegrityError(
            f"dense graph set shapes disagree: feat {tuple(feat.shape)}, adj {tuple(adj.shape)}, "
            f"{len(syn.labels)} labels"
        )
    if feat.shape[2] != num_node_labels:
        raise MismatchError(f"dense graphs have {feat.shape[2]} node features, the dataset has {num_node_labels}")
    s, n, _ = feat.shape
    g, i, j = adj.nonzero(as_tuple=True)
    return GraphBatch(
        x=feat.reshape(s * n, -1),
        edge_index=torch.stack([g * n + i, g * n + j]),
        batch=torch.arange(s).repeat_interleave(n),
        y=syn.hard_labels.cpu(),
        num_graphs=s,
    )


# ---------------------------------------------------------------------------------------------- graph subsets


def subset_to_batch(syn: SyntheticSet, data: GraphData) -> GraphBatch:
    """The real graphs stored in a ``graph_subset`` set, as a batch with one-hot node features."""
    return unpack_graphs(syn.tensors, syn.hard_labels.cpu(), data.num_node_labels)


# ---------------------------------------------------------------------------------------------- dispatch

#: ``meta["summary"]`` -> decoder ``(syn, data) -> GraphBatch``.
DECODERS: dict[str, Callable[[SyntheticSet, GraphData], GraphBatch]] = {
    "mirage_tree_sets": _tree_sets_to_batch,
    "graph_subset": subset_to_batch,
    "dense_graphs": lambda syn, data: dense_to_batch(syn, data.num_node_labels),
}


def to_batch(syn: SyntheticSet, data: GraphData) -> GraphBatch:
    """Decode a graph SyntheticSet of any format into the batch a GNN trains on.

    Mirage summaries become tree-set graphs with root pooling, ``class_weight`` = class-balanced support (or one-hot
    with ``sampling="uniform"``) and ``depth`` = the mined L; graph subsets and dense graphs become their graphs
    with ``class_weight`` and ``depth`` None (own class, uniform; any depth).

    Raises:
        MismatchError: ``syn`` is an image set, or its classes or node labels differ from ``data``'s, or its
            ``meta["summary"]`` names no known format.

    Example:
        >>> from condense.data import load_dataset
        >>> from condense.graph_summary import graph_subset_set
        >>> data = load_dataset("synthetic_graphs")
        >>> syn = graph_subset_set(data, data.sample_per_class(2, torch.Generator()), "random_graphs", 2, None)
        >>> to_batch(syn, data).num_graphs
        4
    """
    if syn.kind != "graph_summary":
        raise MismatchError(f"'{syn.method}' produced an image set; graph evaluation needs kind='graph_summary'")
    if list(syn.classes) != list(data.classes):
        raise MismatchError(
            f"summary classes {syn.classes} differ from dataset '{data.name}' classes {data.classes}; evaluate it on "
            f"the dataset it was distilled from ('{syn.dataset}')"
        )
    v_syn = syn.meta.get("num_node_labels", data.num_node_labels)
    if v_syn != data.num_node_labels:
        raise MismatchError(
            f"summary was built with {v_syn} node labels, dataset '{data.name}' has {data.num_node_labels}"
        )
    fmt = syn.meta.get("summary")
    decode = DECODERS.get(fmt)
    if decode is None:
        raise MismatchError(f"unknown graph summary format {fmt!r}; expected one of {', '.join(map(repr, DECODERS))}")
    return decode(syn, data)
