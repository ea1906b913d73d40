"""``synthetic_graphs``: a small two-class graph dataset generated in code, the embedded default for tests and the
demo (no files, no network). "Synthetic" here means generated *real* data, not a distilled set.
"""

from __future__ import annotations

import numpy as np

from condense.config import check_choice
from condense.data.base import register_dataset
from condense.data.graph import SPLITS, GraphData, build_graph_data
from condense.data.tu import to_tu_text
from condense.errors import ConfigError

__all__ = ["EMBEDDED_GRAPHS", "generate_graphs", "load_synthetic_graphs"]

EMBEDDED_GRAPHS = "synthetic_graphs"

# Generator of the embedded dataset. Changing any value changes every recorded number of the demo and tests.
_SYN = {
    "num_graphs": 300,  # 150 per class
    "nodes": (12, 28),  # inclusive range of nodes per graph
    "extra_edges": (0, 4),  # random chords added to the random tree backbone (cycles)
    "label_probs": (0.45, 0.25, 0.25, 0.05),  # background node labels 0..3 (label 3 is rare)
    "motifs": 2,  # copies of the class motif planted in every graph
    "seed": 0,
}


def generate_graphs(seed: int = 0, split: str = "stratified") -> GraphData:
    """The embedded dataset: 300 small labelled graphs in two classes told apart by a local motif.

    Every graph is a random tree of 12-28 nodes (plus a few chords) with background node labels 0-3. Class 0 has
    label-3 hubs whose neighbours are mostly label 1; class 1 has label-3 hubs whose neighbours are mostly label 2.
    Size, label counts and background structure carry no class signal, so a classifier must look at the 1-hop
    computation tree of the hubs: what Mirage mines, and what a handful of random graphs rarely pins down.

    Args:
        seed: split seed (the graphs themselves are fixed).
        split: ``"stratified"`` or ``"mirage"``.

    Example:
        >>> data = generate_graphs()
        >>> data.num_graphs, data.num_classes
        (300, 2)
    """
    check_choice("split", split, SPLITS)
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
    data = build_graph_data(EMBEDDED_GRAPHS, ng, ed, ys, nl, split=split, seed=seed, raw_bytes=0)
    data.raw_bytes = sum(len(v.encode()) for v in to_tu_text(data, "SYNTHETIC").values())
    return data


@register_dataset(EMBEDDED_GRAPHS)
def load_synthetic_graphs(
    root: str | None = None, *, zca: bool = False, download: bool = False, seed: int = 0, split: str = "stratified"
) -> GraphData:
    """``load_dataset("synthetic_graphs", seed=, split=)``: :func:`generate_graphs` behind the dataset registry.

    Args:
        root: ignored (the data is generated in code). zca: must be False. download: ignored.
        seed: split seed. split: ``"stratified"`` or ``"mirage"``.

    Example:
        >>> data = load_synthetic_graphs()
        >>> len(data.train_idx), len(data.val_idx), len(data.test_idx)
        (240, 30, 30)
    """
    if zca:
        raise ConfigError(f"zca applies to image datasets; '{EMBEDDED_GRAPHS}' is a graph dataset, drop --zca")
    return generate_graphs(seed=seed, split=split)


register_dataset("graphs")(load_synthetic_graphs)  # short alias, same data and name
