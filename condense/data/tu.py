"""Graph-classification datasets: the TU text layout, an embedded generated dataset, and stratified splits.

A graph dataset is held as one :class:`GraphData`: every graph's nodes and edges concatenated (PyG-style),
with per-graph offsets, so that batching a set of graphs is a few vectorized index operations and no
Python loop over graphs (the CPU-fast path the GNN trainer and Mirage rely on).

Names:

- ``tu:<NAME>`` reads the TU Dortmund raw text layout ``<root>/<NAME>/<NAME>_A.txt``,
  ``_graph_indicator.txt``, ``_graph_labels.txt`` and, when present, ``_node_labels.txt``,
  ``_edge_labels.txt`` and ``_node_attributes.txt`` (Morris et al., "TUDataset", GRL+ 2020, arXiv:2007.08663).
- ``synthetic_graphs`` (alias ``graphs``): a small two-class dataset generated in code, the embedded default
  for tests and the demo (no files, no network).

Known TU quirks handled here: graph labels in {-1, 1} (MUTAG) or {1, 2} (PROTEINS) are remapped to 0..K-1 in
sorted order; edges listed twice or in one direction only are coalesced into one symmetric, sorted, duplicate-free
edge list (IMDB-BINARY lists every directed pair twice); self-loops are dropped; datasets without node labels
(IMDB-BINARY) get the node degree as discrete label, as Mirage and most GNN papers do. Inconsistent files raise
:class:`~condense.errors.DataFormatError` naming the file and the disagreement.

Node features are always the one-hot code of the discrete node label: the GNN input must be a function of what
Mirage mines (computation trees over discrete labels), so that a model trained on a tree summary sees the same
features on real graphs. Continuous ``node_attributes`` are loaded and kept in ``GraphData.node_attr`` but are
not used as features.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from condense.errors import ConfigError, DataFormatError, DataNotFoundError

__all__ = [
    "EMBEDDED_GRAPHS",
    "GraphData",
    "GraphBatch",
    "is_graph_dataset",
    "load_graph_dataset",
    "load_tu",
    "make_synthetic_graphs",
    "stratified_split",
    "random_split",
    "to_tu_text",
    "SPLITS",
    "pack_graphs",
    "unpack_graphs",
]

EMBEDDED_GRAPHS = "synthetic_graphs"
_ALIASES = {"graphs": EMBEDDED_GRAPHS}
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
        weight: (B,) float32 per-graph loss weight, or None (uniform).
    """

    x: torch.Tensor
    edge_index: torch.Tensor
    batch: torch.Tensor
    y: torch.Tensor
    num_graphs: int
    deg: torch.Tensor | None = None
    pool_mask: torch.Tensor | None = None
    weight: torch.Tensor | None = None

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
            mv(self.weight),
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

    Shape:
        node_label: (N,) int64 in [0, V).
        edge_index: (2, E) int64 global node ids, both directions listed.
        node_ptr: (G + 1,) int64; edge_ptr: (G + 1,) int64.
        y: (G,) int64 in [0, K).
        train_idx / val_idx / test_idx: (G_split,) int64, disjoint, sorted.
        node_attr: (N, A) float32 or None; edge_label: (E,) int64 or None.
    """

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
        idx = idx[torch.randperm(len(idx), generator=gen)]
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
    perm = torch.randperm(num_graphs, generator=torch.Generator().manual_seed(seed))
    n_test = int(fractions[2] * num_graphs)
    n_val = int(fractions[1] * num_graphs)
    te, va, tr = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
    return torch.sort(tr)[0], torch.sort(va)[0], torch.sort(te)[0]


def _split(y: torch.Tensor, split: str, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if split == "stratified":
        return stratified_split(y, seed)
    if split == "mirage":
        return random_split(int(y.shape[0]), seed)
    raise ConfigError(f"unknown graph split '{split}'; allowed: {', '.join(SPLITS)}")


# ---------------------------------------------------------------------------------------------- building


def _build(
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
    tr, va, te = _split(yt, split, seed)
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


# ---------------------------------------------------------------------------------------------- TU text files


def _read_numbers(path: Path, dtype: type, cols: int | None) -> np.ndarray:
    """Parse a comma-separated TU file into an array of ``cols`` columns (1-D when ``cols`` is 1)."""
    text = path.read_text()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    try:
        flat = np.array(text.replace(",", " ").split(), dtype=dtype)
    except ValueError as e:
        raise DataFormatError(f"'{path}' holds a value that is not a number ({e}); expected comma-separated") from e
    nrows = len(lines)
    if nrows == 0:
        raise DataFormatError(f"'{path}' is empty")
    width = flat.size // nrows
    if width * nrows != flat.size or (cols is not None and width != cols):
        want = f"{cols} value(s)" if cols is not None else "the same number of values"
        raise DataFormatError(f"'{path}': every line must hold {want}; got {flat.size} values on {nrows} lines")
    return flat if width == 1 and cols == 1 else flat.reshape(nrows, width)


def _tu_folder(name: str, root: str | Path | None) -> Path:
    base = Path(root) if root is not None else Path("data")
    for cand in (base / name, base, base / "tu" / name):
        if (cand / f"{name}_A.txt").is_file():
            return cand
    return base / name


def load_tu(name: str, root: str | Path | None = None, *, seed: int = 0, split: str = "stratified") -> GraphData:
    """Load a TU Dortmund dataset from its raw text files.

    Args:
        name: folder and file prefix, e.g. ``"MUTAG"``.
        root: folder holding ``<name>/`` (default ``./data``), or the dataset folder itself.
        seed: split seed.
        split: ``"stratified"`` (per-class 80/10/10) or ``"mirage"`` (shuffled 80/10/10, first 10% test).

    Raises:
        DataNotFoundError: a required file is missing (the message lists the expected files).
        DataFormatError: files disagree (line counts, ids out of range, edges across graphs, ...).

    Example:
        >>> data = load_tu("MUTAG", "../shared/data/tu")  # doctest: +SKIP
        >>> data.num_graphs, data.classes  # doctest: +SKIP
        (188, ['-1', '1'])
    """
    folder = _tu_folder(name, root)
    f = {k: folder / f"{name}_{k}.txt" for k in ("A", "graph_indicator", "graph_labels")}
    missing = [p.name for p in f.values() if not p.is_file()]
    if missing:
        raise DataNotFoundError(
            f"TU dataset '{name}' not found under '{folder}': missing {', '.join(missing)}; expected "
            f"{name}_A.txt, {name}_graph_indicator.txt, {name}_graph_labels.txt (optional {name}_node_labels.txt, "
            f"{name}_edge_labels.txt, {name}_node_attributes.txt); pass --data-root pointing at the folder that "
            f"holds '{name}/'"
        )
    opt = {k: folder / f"{name}_{k}.txt" for k in ("node_labels", "edge_labels", "node_attributes")}
    raw_bytes = sum(p.stat().st_size for p in [*f.values(), *opt.values()] if p.is_file())

    indicator = _read_numbers(f["graph_indicator"], np.int64, 1)
    glabels = _read_numbers(f["graph_labels"], np.int64, 1)
    edges = _read_numbers(f["A"], np.int64, 2)
    n, g = indicator.shape[0], glabels.shape[0]
    if indicator.min() < 1 or indicator.max() != g:
        raise DataFormatError(
            f"'{f['graph_indicator'].name}' refers to graphs {indicator.min()}..{indicator.max()} but "
            f"'{f['graph_labels'].name}' has {g} labels; ids must be 1..{g}"
        )
    if np.any(np.diff(indicator) < 0):
        bad = int(np.nonzero(np.diff(indicator) < 0)[0][0]) + 2
        raise DataFormatError(
            f"'{f['graph_indicator'].name}' is not sorted (line {bad}); node ids must be contiguous per graph"
        )
    if np.any(np.bincount(indicator, minlength=g + 1)[1:] == 0):
        empty = int(np.nonzero(np.bincount(indicator, minlength=g + 1)[1:] == 0)[0][0]) + 1
        raise DataFormatError(f"'{f['graph_indicator'].name}': graph {empty} has no nodes")
    if edges.min() < 1 or edges.max() > n:
        line = int(np.nonzero((edges < 1).any(1) | (edges > n).any(1))[0][0]) + 1
        raise DataFormatError(
            f"'{f['A'].name}' line {line} refers to node {edges[line - 1].tolist()}; node ids must be 1..{n} "
            f"({n} lines in '{f['graph_indicator'].name}')"
        )
    edges = edges - 1
    node_graph = indicator - 1
    cross = node_graph[edges[:, 0]] != node_graph[edges[:, 1]]
    if cross.any():
        line = int(np.nonzero(cross)[0][0]) + 1
        raise DataFormatError(f"'{f['A'].name}' line {line}: the edge joins nodes of two different graphs")

    node_labels = None
    if opt["node_labels"].is_file():
        node_labels = _read_numbers(opt["node_labels"], np.int64, None)
        node_labels = node_labels[:, 0] if node_labels.ndim == 2 else node_labels  # first column if several
        if node_labels.shape[0] != n:
            raise DataFormatError(
                f"'{opt['node_labels'].name}' has {node_labels.shape[0]} lines but there are {n} nodes"
            )
    edge_labels = None
    if opt["edge_labels"].is_file():
        edge_labels = _read_numbers(opt["edge_labels"], np.int64, None)
        edge_labels = edge_labels[:, 0] if edge_labels.ndim == 2 else edge_labels
        if edge_labels.shape[0] != edges.shape[0]:
            raise DataFormatError(
                f"'{opt['edge_labels'].name}' has {edge_labels.shape[0]} lines but '{f['A'].name}' lists "
                f"{edges.shape[0]} edges"
            )
    node_attr = None
    if opt["node_attributes"].is_file():
        node_attr = _read_numbers(opt["node_attributes"], np.float64, None)
        node_attr = node_attr.reshape(node_attr.shape[0], -1)
        if node_attr.shape[0] != n:
            raise DataFormatError(
                f"'{opt['node_attributes'].name}' has {node_attr.shape[0]} lines but there are {n} nodes"
            )
    return _build(
        f"tu:{name}",
        node_graph,
        edges,
        glabels,
        node_labels,
        split=split,
        seed=seed,
        raw_bytes=raw_bytes,
        node_attr=node_attr,
        edge_labels=edge_labels,
    )


def to_tu_text(data: GraphData, prefix: str) -> dict[str, str]:
    """The TU text files of ``data`` (``{filename: content}``), each undirected edge listed in both directions.

    Used to measure the raw size of generated data and to write fake TU folders in tests.
    """
    ei = data.edge_index.numpy() + 1
    ind = np.repeat(np.arange(1, data.num_graphs + 1), (data.node_ptr[1:] - data.node_ptr[:-1]).numpy())
    labels = np.array([int(c) for c in data.classes])[data.y.numpy()]
    values = np.array(data.node_label_values)[data.node_label.numpy()]
    out = {
        f"{prefix}_A.txt": "".join(f"{a}, {b}\n" for a, b in zip(ei[0], ei[1])),
        f"{prefix}_graph_indicator.txt": "".join(f"{i}\n" for i in ind),
        f"{prefix}_graph_labels.txt": "".join(f"{v}\n" for v in labels),
    }
    if data.node_label_kind == "node_labels":
        out[f"{prefix}_node_labels.txt"] = "".join(f"{v}\n" for v in values)
    return out


# ---------------------------------------------------------------------------------------------- embedded data

# Generator of the embedded dataset. Changing any value changes every recorded number of the demo and tests.
_SYN = {
    "num_graphs": 300,  # 150 per class
    "nodes": (12, 28),  # inclusive range of nodes per graph
    "extra_edges": (0, 4),  # random chords added to the random tree backbone (cycles)
    "label_probs": (0.45, 0.25, 0.25, 0.05),  # background node labels 0..3 (label 3 is rare)
    "motifs": 2,  # copies of the class motif planted in every graph
    "seed": 0,
}


def make_synthetic_graphs(seed: int = 0, split: str = "stratified") -> GraphData:
    """The embedded dataset: 300 small labelled graphs in two classes told apart by a local motif.

    Every graph is a random tree of 12-28 nodes (plus a few chords) with background node labels 0-3. Class 0 has
    label-3 hubs whose neighbours are mostly label 1; class 1 has label-3 hubs whose neighbours are mostly label 2.
    Size, label counts and background structure carry no class signal, so a classifier must look at the 1-hop
    computation tree of the hubs: what Mirage mines, and what a handful of random graphs rarely pins down.

    Args:
        seed: split seed (the graphs themselves are fixed).
        split: ``"stratified"`` or ``"mirage"``.

    Example:
        >>> data = make_synthetic_graphs()
        >>> data.num_graphs, data.num_classes
        (300, 2)
    """
    rng = np.random.default_rng(_SYN["seed"])
    node_graph: list[np.ndarray] = []
    edges: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    ys = np.arange(_SYN["num_graphs"]) % 2
    offset = 0
    lo, hi = _SYN["nodes"]
    for gi, c in enumerate(ys):
        n = int(rng.integers(lo, hi + 1))
        lab = rng.choice(4, size=n, p=_SYN["label_probs"])
        parent = np.array([rng.integers(0, i) for i in range(1, n)])
        e = [np.stack([np.arange(1, n), parent], 1)]
        k = int(rng.integers(_SYN["extra_edges"][0], _SYN["extra_edges"][1] + 1))
        if k:
            a, b = rng.integers(0, n, size=k), rng.integers(0, n, size=k)
            e.append(np.stack([a, b], 1))
        # plant the motif: a label-3 hub with 2-3 new leaf neighbours, 80% of them in the class' label
        for _ in range(_SYN["motifs"]):
            hub = int(rng.integers(0, n))
            lab[hub] = 3
            m = int(rng.integers(2, 4))
            leaf_lab = np.where(rng.random(m) < 0.8, 1 + c, rng.choice([0, 2 - c], size=m))
            new = np.arange(n, n + m)
            lab = np.concatenate([lab, leaf_lab])
            e.append(np.stack([new, np.full(m, hub)], 1))
            n += m
        node_graph.append(np.full(n, gi))
        edges.append(np.concatenate(e) + offset)
        labels.append(lab)
        offset += n
    ng = np.concatenate(node_graph)
    ed = np.concatenate(edges)
    nl = np.concatenate(labels)
    data = _build(EMBEDDED_GRAPHS, ng, ed, ys, nl, split=split, seed=seed, raw_bytes=0)
    data.raw_bytes = sum(len(v.encode()) for v in to_tu_text(data, "SYNTHETIC").values())
    return data


# ---------------------------------------------------------------------------------------------- entry points


def is_graph_dataset(name: str) -> bool:
    """True for ``tu:<NAME>`` and the embedded graph dataset (``synthetic_graphs`` or its alias ``graphs``)."""
    return name.startswith("tu:") or name in (EMBEDDED_GRAPHS, *_ALIASES)


def load_graph_dataset(name: str, root: str | None = None, seed: int = 0, *, split: str = "stratified") -> GraphData:
    """Load a graph dataset by name.

    Args:
        name: ``tu:<NAME>`` (raw TU text files under ``root``) or ``synthetic_graphs`` / ``graphs``.
        root: data folder holding ``<NAME>/`` (default ``./data``) or the dataset folder itself.
        seed: split seed.
        split: ``"stratified"`` (default) or ``"mirage"`` (the authors' shuffled 80/10/10).

    Example:
        >>> data = load_graph_dataset("synthetic_graphs")
        >>> len(data.train_idx), len(data.val_idx), len(data.test_idx)
        (240, 30, 30)
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown graph split '{split}'; allowed: {', '.join(SPLITS)}")
    name = _ALIASES.get(name, name)
    if name == EMBEDDED_GRAPHS:
        return make_synthetic_graphs(seed=seed, split=split)
    if name.startswith("tu:") and len(name) > 3:
        return load_tu(name[3:], root, seed=seed, split=split)
    raise DataNotFoundError(
        f"unknown graph dataset '{name}'; use 'tu:<NAME>' (e.g. tu:MUTAG, read from <root>/<NAME>/<NAME>_A.txt ...) "
        f"or '{EMBEDDED_GRAPHS}'"
    )
