"""TU Dortmund graph datasets: the raw text reader (registered as ``tu:<NAME>``) and a writer of the same layout.

``tu:<NAME>`` reads ``<root>/<NAME>/<NAME>_A.txt``, ``_graph_indicator.txt``, ``_graph_labels.txt`` and, when
present, ``_node_labels.txt``, ``_edge_labels.txt`` and ``_node_attributes.txt`` (Morris et al., "TUDataset", GRL+
2020, arXiv:2007.08663) into a :class:`~condense.data.graph.GraphData`:
``condense.data.load_dataset("tu:MUTAG", root, seed=0, split="stratified")``.

Known TU quirks handled here: graph labels in {-1, 1} (MUTAG) or {1, 2} (PROTEINS) are remapped to 0..K-1 in
sorted order; edges listed twice or in one direction only are coalesced into one symmetric, sorted, duplicate-free
edge list (IMDB-BINARY lists every directed pair twice); self-loops are dropped; datasets without node labels
(IMDB-BINARY) get the node degree as discrete label, as Mirage and most GNN papers do. Inconsistent files raise
:class:`~condense.errors.DataFormatError` naming the file and the disagreement.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from condense.config import check_choice
from condense.data.base import register_dataset
from condense.data.graph import SPLITS, GraphData, build_graph_data
from condense.errors import ConfigError, DataFormatError, DataNotFoundError, UnknownNameError

__all__ = ["load_tu", "load_tu_dataset", "to_tu_text"]


# ---------------------------------------------------------------------------------------------- reader


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
    check_choice("split", split, SPLITS)
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
    return build_graph_data(
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


@register_dataset("tu:")
def load_tu_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    zca: bool = False,
    download: bool = False,
    seed: int = 0,
    split: str = "stratified",
) -> GraphData:
    """``load_dataset("tu:<NAME>", root, seed=, split=)``: :func:`load_tu` behind the dataset registry.

    Args:
        name: the part after ``tu:``, e.g. ``"MUTAG"``.
        root: folder holding ``<NAME>/`` (default ``./data``), or the dataset folder itself.
        zca: must be False (graphs have no pixels to whiten). download: ignored (TU files are read from disk).
        seed: split seed. split: ``"stratified"`` or ``"mirage"``.

    Raises:
        UnknownNameError: ``name`` is empty (``"tu:"``).
        ConfigError: ``zca=True`` or an unknown ``split``.
    """
    if not name:
        raise UnknownNameError("dataset 'tu:' needs a TU dataset name, e.g. tu:MUTAG (read from <root>/MUTAG/)")
    if zca:
        raise ConfigError(f"zca applies to image datasets; 'tu:{name}' is a graph dataset, drop --zca")
    return load_tu(name, root, seed=seed, split=split)


# ---------------------------------------------------------------------------------------------- writer


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
