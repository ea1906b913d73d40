"""Graph-classification data in memory: the :class:`GraphData` container, batching, splits and computation trees.

A graph dataset is held as one :class:`GraphData`: every graph's nodes and edges concatenated (PyG-style),
with per-graph offsets, so that batching a set of graphs is a few vectorized index operations and no
Python loop over graphs (the CPU-fast path the GNN trainer and Mirage rely on). Loaders that fill it:
``tu:<NAME>`` (:mod:`condense.data.tu`) and ``synthetic_graphs`` (:mod:`condense.data.graph_synthetic`), both
in the one dataset registry (``condense.data.load_dataset``).

Node features are always the one-hot code of the discrete node label: the GNN input must be a function of what
Mirage mines (computation trees over discrete labels), so that a model trained on a tree summary sees the same
features on real graphs. Continuous ``node_attributes`` are kept in ``GraphData.node_attr`` but are not features.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from condense.config import check_choice
from condense.data.base import sample_per_class
from condense.errors import DataFormatError

__all__ = [
    "GraphData",
    "GraphBatch",
    "SPLITS",
    "build_graph_data",
    "computation_tree_ids",
    "pack_graphs",
    "random_split",
    "split_graphs",
    "stratified_split",
    "TreeVocab",
    "unpack_graphs",
]

# Fractions (train, val, test): the 80/10/10 protocol of Mirage's TU scripts (frigategnn/Mirage NCI1/IMDB-B).
_FRACTIONS = (0.8, 0.1, 0.1)
SPLITS = ("stratified", "mirage")


# ---------------------------------------------------------------------------------------------- containers


@dataclass
class GraphBatch:
    """A disjoint union of graphs, ready for a GNN forward pass.

    Shape:
        x: (n, F) float32 node features (one-hot node labels).
        edge_index: (2, e) int64 (source, target) pairs into the n nodes; messages flow source -> target.
        batch: (n,) int64 graph index of every node, in [0, B).
        y: (B,) int64 class of every graph.
        deg: (n,) float32 node degrees to use in GCN normalization, or None (computed from ``edge_index``).
        pool_mask: (n,) bool nodes the readout pools over, or None (all nodes).
        class_weight: (B, K) float32 sampling weights of (graph, class) pairs when training on the batch, or None
            (each graph with its own class, uniformly). A Mirage tree-set carries its class-balanced support here.

    ``depth`` is the GNN depth the batch requires, or None (any): a tree-set graph of L-hop computation trees is
    only an exact view of a node for an L-layer GNN.
    """

    x: torch.Tensor
    edge_index: torch.Tensor
    batch: torch.Tensor
    y: torch.Tensor
    num_graphs: int
    deg: torch.Tensor | None = None
    pool_mask: torch.Tensor | None = None
    class_weight: torch.Tensor | None = None
    depth: int | None = None

    def to(self, device: torch.device | str) -> GraphBatch:
        """A copy with every tensor on ``device``."""

        def mv(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return GraphBatch(
            mv(self.x),
            mv(self.edge_index),
            mv(self.batch),
            mv(self.y),
            self.num_graphs,
            mv(self.deg),
            mv(self.pool_mask),
            mv(self.class_weight),
            self.depth,
        )


@dataclass
class GraphData:
    """A whole graph-classification dataset: all graphs concatenated, plus a fixed train/val/test split.

    Args:
        name: dataset name (``tu:MUTAG``, ``synthetic_graphs``).
        node_label: discrete node labels (TU node labels remapped to 0..V-1, or degrees when absent).
        edge_index: symmetric, duplicate-free, self-loop-free edges, sorted by source node.
        node_ptr: node offsets per graph (graph g owns nodes ``node_ptr[g]:node_ptr[g+1]``).
        edge_ptr: edge offsets per graph (graph g owns edges ``edge_ptr[g]:edge_ptr[g+1]``).
        y: graph classes in ``classes`` order.
        classes: original label values as strings, sorted (``["-1", "1"]`` for MUTAG).
        train_idx, val_idx, test_idx: graph indices of the split.
        node_label_kind: ``"node_labels"`` or ``"degree"``.
        node_label_values: the original value behind every discrete label (TU label or degree).
        raw_bytes: bytes of the raw dataset files (the TU text files; for generated data, of its TU text form).
        node_attr: continuous TU node attributes when the dataset has them (not used as features).
        edge_label: TU edge labels when present, aligned with ``edge_index`` (not used by the GNNs).
        split: split protocol name; seed: its seed.

    ``kind == "graphs"`` (a class attribute) tells methods and evaluation which data kind this is.

    Shape:
        node_label: (N,) int64 in [0, V).
        edge_index: (2, E) int64 global node ids, both directions listed.
        node_ptr: (G + 1,) int64; edge_ptr: (G + 1,) int64.
        y: (G,) int64 in [0, K).
        train_idx / val_idx / test_idx: (G_split,) int64, disjoint, sorted.
        node_attr: (N, A) float32 or None; edge_label: (E,) int64 or None.
    """

    kind: ClassVar[str] = "graphs"

    name: str
    node_label: torch.Tensor
    edge_index: torch.Tensor
    node_ptr: torch.Tensor
    edge_ptr: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    test_idx: torch.Tensor
    node_label_kind: str = "node_labels"
    node_label_values: list[int] = field(default_factory=list)
    raw_bytes: int = 0
    node_attr: torch.Tensor | None = None
    edge_label: torch.Tensor | None = None
    split: str = "stratified"
    seed: int = 0
    fingerprint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        g = int(self.y.shape[0])
        if self.node_ptr.shape != (g + 1,) or self.edge_ptr.shape != (g + 1,):
            raise DataFormatError(
                f"{self.name}: node_ptr/edge_ptr must be ({g + 1},), got {tuple(self.node_ptr.shape)} and "
                f"{tuple(self.edge_ptr.shape)}"
            )
        if self.edge_index.ndim != 2 or self.edge_index.shape[0] != 2:
            raise DataFormatError(f"{self.name}: edge_index must be (2, E), got {tuple(self.edge_index.shape)}")
        if int(self.node_ptr[-1]) != self.node_label.shape[0] or int(self.edge_ptr[-1]) != self.edge_index.shape[1]:
            raise DataFormatError(f"{self.name}: offsets do not cover the node or edge arrays")
        if g and (int(self.y.min()) < 0 or int(self.y.max()) >= len(self.classes)):
            raise DataFormatError(f"{self.name}: graph labels must lie in [0, {len(self.classes) - 1}]")
        if not self.node_label_values:
            self.node_label_values = list(range(int(self.node_label.max()) + 1 if self.node_label.numel() else 0))
        if not self.fingerprint:
            h = hashlib.sha256()
            for t in (self.node_label, self.edge_index, self.node_ptr, self.y):
                h.update(t.numpy().astype(np.int64).tobytes())
            self.fingerprint = h.hexdigest()[:16]

    # ------------------------------------------------------------------ sizes

    @property
    def num_graphs(self) -> int:
        return int(self.y.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_node_labels(self) -> int:
        """V, the number of distinct discrete node labels (= the GNN input width)."""
        return len(self.node_label_values)

    @property
    def in_dim(self) -> int:
        """Input feature width of a GNN on this dataset."""
        return self.num_node_labels

    @property
    def y_train(self) -> torch.Tensor:
        """(G_train,) int64 classes of the training graphs."""
        return self.y[self.train_idx]

    def num_nodes(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """(len(idx),) int64 node counts of graphs ``idx`` (all graphs when None)."""
        n = self.node_ptr[1:] - self.node_ptr[:-1]
        return n if idx is None else n[idx]

    def degree(self) -> torch.Tensor:
        """(N,) int64 degree of every node."""
        return torch.bincount(self.edge_index[0], minlength=self.node_label.shape[0])

    def indices_of_class(self, c: int) -> torch.Tensor:
        """Training-graph indices (into all graphs) of class ``c``."""
        return self.train_idx[self.y[self.train_idx] == c]

    def sample_per_class(self, ipc: int, generator: torch.Generator) -> torch.Tensor:
        """``ipc`` random training graphs per class (all of a class when it has fewer), class-sorted.

        Shape:
            return: (<= K * ipc,) int64 graph indices into ``data`` (all training graphs).

        Example:
            >>> from condense.data import load_dataset
            >>> load_dataset("synthetic_graphs").sample_per_class(3, torch.Generator().manual_seed(0)).shape
            torch.Size([6])
        """
        return sample_per_class([self.indices_of_class(c) for c in range(self.num_classes)], ipc, generator)

    def features(self, node_label: torch.Tensor) -> torch.Tensor:
        """One-hot features of discrete node labels.

        Shape:
            node_label: (n,) int64 in [0, V). return: (n, V) float32.
        """
        return torch.nn.functional.one_hot(node_label, self.num_node_labels).float()

    # ------------------------------------------------------------------ batching

    def subgraphs(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The graphs ``idx`` relabelled as a disjoint union (vectorized, no loop over graphs).

        Returns:
            ``(node_label, edge_index, node_ptr, edge_ptr)`` of the selection.

        Shape:
            idx: (B,) int64 graph indices. node_label: (n,); edge_index: (2, e) local ids; ptrs: (B + 1,).
        """
        idx = torch.as_tensor(idx, dtype=torch.int64).reshape(-1)
        n_start, n_cnt = self.node_ptr[idx], self.node_ptr[idx + 1] - self.node_ptr[idx]
        e_start, e_cnt = self.edge_ptr[idx], self.edge_ptr[idx + 1] - self.edge_ptr[idx]
        nodes = _ranges(n_start, n_cnt)
        edges = _ranges(e_start, e_cnt)
        new_nptr = torch.zeros(len(idx) + 1, dtype=torch.int64)
        new_nptr[1:] = torch.cumsum(n_cnt, 0)
        new_eptr = torch.zeros(len(idx) + 1, dtype=torch.int64)
        new_eptr[1:] = torch.cumsum(e_cnt, 0)
        # global id -> local id: subtract the graph's old offset, add its new one
        shift = torch.repeat_interleave(new_nptr[:-1] - n_start, e_cnt)
        ei = self.edge_index[:, edges] + shift
        return self.node_label[nodes], ei, new_nptr, new_eptr

    def batch(self, idx: torch.Tensor) -> GraphBatch:
        """A :class:`GraphBatch` of the graphs ``idx`` (undirected edges, pooling over all nodes)."""
        idx = torch.as_tensor(idx, dtype=torch.int64).reshape(-1)
        nl, ei, nptr, _ = self.subgraphs(idx)
        b = torch.repeat_interleave(torch.arange(len(idx)), nptr[1:] - nptr[:-1])
        return GraphBatch(self.features(nl), ei, b, self.y[idx], len(idx))

    def describe(self) -> dict[str, Any]:
        """JSON summary recorded with artifacts built from this dataset."""
        return {
            "name": self.name,
            "graphs": self.num_graphs,
            "nodes": int(self.node_label.shape[0]),
            "undirected_edges": int(self.edge_index.shape[1]) // 2,
            "classes": list(self.classes),
            "node_label_kind": self.node_label_kind,
            "num_node_labels": self.num_node_labels,
            "split": self.split,
            "seed": self.seed,
            "train": int(self.train_idx.numel()),
            "val": int(self.val_idx.numel()),
            "test": int(self.test_idx.numel()),
            "raw_bytes": self.raw_bytes,
            "fingerprint": self.fingerprint,
        }


def pack_graphs(data: GraphData, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """The graphs ``idx`` of ``data`` as self-contained tensors for a graph-subset SyntheticSet.

    Shape:
        idx: (B,) int64. returns ``node_label`` (n,) int16, ``edge_index`` (2, e) int32 local ids (both
        directions), ``num_nodes`` (B,) int32, ``num_edges`` (B,) int32, ``graph_index`` (B,) int32 (provenance).
    """
    idx = torch.as_tensor(idx, dtype=torch.int64).reshape(-1)
    nl, ei, nptr, eptr = data.subgraphs(idx)
    return {
        "node_label": nl.to(torch.int16),
        "edge_index": ei.to(torch.int32),
        "num_nodes": (nptr[1:] - nptr[:-1]).to(torch.int32),
        "num_edges": (eptr[1:] - eptr[:-1]).to(torch.int32),
        "graph_index": idx.to(torch.int32),
    }


def unpack_graphs(tensors: dict[str, torch.Tensor], y: torch.Tensor, num_node_labels: int) -> GraphBatch:
    """Inverse of :func:`pack_graphs`: a :class:`GraphBatch` with one-hot node features.

    Shape:
        y: (B,) int64 classes of the packed graphs. return: GraphBatch with B graphs.
    """
    for k in ("node_label", "edge_index", "num_nodes", "num_edges"):
        if k not in tensors:
            raise DataFormatError(f"packed graphs lack the tensor '{k}'")
    nn_ = tensors["num_nodes"].to(torch.int64)
    nl = tensors["node_label"].to(torch.int64)
    ei = tensors["edge_index"].to(torch.int64)
    if int(nn_.sum()) != nl.shape[0] or int(tensors["num_edges"].sum()) != ei.shape[1] or len(nn_) != len(y):
        raise DataFormatError("packed graph tensors disagree in length (num_nodes, node_label, edge_index, labels)")
    if nl.numel() and int(nl.max()) >= num_node_labels:
        raise DataFormatError(f"packed graphs use node label {int(nl.max())}, the dataset has {num_node_labels}")
    batch = torch.repeat_interleave(torch.arange(len(nn_)), nn_)
    x = torch.nn.functional.one_hot(nl, num_node_labels).float()
    return GraphBatch(x, ei, batch, y.to(torch.int64), len(nn_))


def _ranges(starts: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Concatenation of ``arange(s, s + c)`` for every pair, without a Python loop."""
    total = int(counts.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.int64)
    offs = torch.cumsum(counts, 0) - counts  # start of each range in the output
    return torch.arange(total) - torch.repeat_interleave(offs - starts, counts)


# ---------------------------------------------------------------------------------------------- splits


def stratified_split(
    y: torch.Tensor, seed: int = 0, fractions: tuple[float, float, float] = _FRACTIONS
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class shuffled 80/10/10 split with a fixed seed (every class in every part when it has >= 3 graphs).

    Shape:
        y: (G,) int64. returns: three sorted int64 index tensors (train, val, test).

    Example:
        >>> tr, va, te = stratified_split(torch.tensor([0, 0, 0, 1, 1, 1, 0, 1, 0, 1]))
        >>> len(tr), len(va), len(te)
        (6, 2, 2)
    """
    gen = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[], [], []]
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen, device=gen.device)]
        n = len(idx)
        n_test = max(1, round(fractions[2] * n)) if n >= 3 else 0
        n_val = max(1, round(fractions[1] * n)) if n >= 3 else 0
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test : n_test + n_val])
        parts[0].append(idx[n_test + n_val :])
    tr, va, te = (torch.sort(torch.cat(p))[0] for p in parts)
    return tr, va, te


def random_split(
    num_graphs: int, seed: int = 0, fractions: tuple[float, float, float] = _FRACTIONS
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mirage's TU protocol: shuffle all graphs, first 10% test, next 10% validation, the rest training.

    The authors shuffle with PyG's ``dataset.shuffle()`` under seed 0; we use a seeded ``torch.randperm``, so the
    protocol is the same but the exact graphs differ.
    """
    perm = torch.randperm(num_graphs, generator=torch.Generator().manual_seed(seed), device="cpu")
    n_test = int(fractions[2] * num_graphs)
    n_val = int(fractions[1] * num_graphs)
    te, va, tr = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
    return torch.sort(tr)[0], torch.sort(va)[0], torch.sort(te)[0]


def split_graphs(y: torch.Tensor, split: str, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (train, val, test) graph indices of protocol ``split`` (one of :data:`SPLITS`) with seed ``seed``."""
    check_choice("split", split, SPLITS)
    if split == "mirage":
        return random_split(int(y.shape[0]), seed)
    return stratified_split(y, seed)


# ---------------------------------------------------------------------------------------------- building


def build_graph_data(
    name: str,
    node_graph: np.ndarray,
    edges: np.ndarray,
    graph_labels: np.ndarray,
    node_labels: np.ndarray | None,
    *,
    split: str,
    seed: int,
    raw_bytes: int,
    node_attr: np.ndarray | None = None,
    edge_labels: np.ndarray | None = None,
) -> GraphData:
    """Coalesce edges, remap labels and split: the shared tail of every graph loader.

    Args:
        node_graph: (N,) 0-based graph id of every node, non-decreasing.
        edges: (M, 2) 0-based node ids, any direction, duplicates allowed.
        graph_labels: (G,) raw graph labels (any integers).
        node_labels: (N,) raw node labels or None (use degrees).
    """
    n = int(node_graph.shape[0])
    g = int(graph_labels.shape[0])
    src, dst = edges[:, 0], edges[:, 1]
    keep = src != dst  # TU files have none, but a self-loop would double-count in every GNN
    src, dst = src[keep], dst[keep]
    elab = edge_labels[keep] if edge_labels is not None else None
    # symmetrize then coalesce: key = src * N + dst, unique keeps the first occurrence's edge label
    s2, d2 = np.concatenate([src, dst]), np.concatenate([dst, src])
    key = s2 * n + d2
    key_u, first = np.unique(key, return_index=True)
    src_u, dst_u = key_u // n, key_u % n
    elab_u = None if elab is None else np.concatenate([elab, elab])[first]
    node_ptr = np.zeros(g + 1, dtype=np.int64)
    node_ptr[1:] = np.cumsum(np.bincount(node_graph, minlength=g))
    edge_graph = node_graph[src_u]  # sorted because src_u is sorted and node ids are grouped by graph
    edge_ptr = np.zeros(g + 1, dtype=np.int64)
    edge_ptr[1:] = np.cumsum(np.bincount(edge_graph, minlength=g))

    if node_labels is None:
        raw_nl = np.bincount(src_u, minlength=n)
        kind = "degree"
    else:
        raw_nl = node_labels
        kind = "node_labels"
    values, nl = np.unique(raw_nl, return_inverse=True)
    classes_raw, y = np.unique(graph_labels, return_inverse=True)
    yt = torch.from_numpy(y.astype(np.int64))
    tr, va, te = split_graphs(yt, split, seed)
    return GraphData(
        name=name,
        node_label=torch.from_numpy(nl.astype(np.int64)),
        edge_index=torch.from_numpy(np.stack([src_u, dst_u]).astype(np.int64)),
        node_ptr=torch.from_numpy(node_ptr),
        edge_ptr=torch.from_numpy(edge_ptr),
        y=yt,
        classes=[str(int(c)) for c in classes_raw],
        train_idx=tr,
        val_idx=va,
        test_idx=te,
        node_label_kind=kind,
        node_label_values=[int(v) for v in values],
        raw_bytes=raw_bytes,
        node_attr=None if node_attr is None else torch.from_numpy(node_attr.astype(np.float32)),
        edge_label=None if elab_u is None else torch.from_numpy(elab_u.astype(np.int64)),
        split=split,
        seed=seed,
    )


# ---------------------------------------------------------------------------------------------- computation trees


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
