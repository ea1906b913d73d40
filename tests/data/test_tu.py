"""Graph datasets: the TU reader (``tu:<NAME>``), the embedded ``synthetic_graphs``, splits, batching and packing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from condense.data import load_dataset
from condense.data.graph import GraphData, pack_graphs, stratified_split, unpack_graphs
from condense.data.graph_synthetic import EMBEDDED_GRAPHS, generate_graphs
from condense.errors import ConfigError, DataFormatError, DataNotFoundError, UnknownNameError


@pytest.fixture(scope="module")
def graphs() -> GraphData:
    return load_dataset(EMBEDDED_GRAPHS)


def _write_tu(folder: Path, name: str, *, labels=(-1, 1, 1), node_labels=True, twice=True) -> Path:
    """Three tiny graphs in the real TU text layout: a triangle, a path and a star (1-indexed, comma-separated)."""
    d = folder / name
    d.mkdir(parents=True)
    edges = [(1, 2), (2, 3), (3, 1), (4, 5), (5, 6), (7, 8), (7, 9), (7, 10)]
    lines = []
    for a, b in edges:
        lines += [f"{a}, {b}", f"{b}, {a}"]
        if twice:  # IMDB-BINARY lists every directed pair twice
            lines += [f"{a}, {b}", f"{b}, {a}"]
    (d / f"{name}_A.txt").write_text("\n".join(lines) + "\n")
    (d / f"{name}_graph_indicator.txt").write_text("\n".join(["1"] * 3 + ["2"] * 3 + ["3"] * 4) + "\n")
    (d / f"{name}_graph_labels.txt").write_text("\n".join(str(v) for v in labels) + "\n")
    if node_labels:
        (d / f"{name}_node_labels.txt").write_text("\n".join(["0", "1", "2", "1", "1", "0", "2", "0", "0", "0"]) + "\n")
    return d


def test_names() -> None:
    """Graph datasets sit in the one dataset registry; unknown names are registry errors, not missing files."""
    from condense.data import list_datasets

    assert {"tu:", EMBEDDED_GRAPHS, "graphs"} <= set(list_datasets())
    assert load_dataset("graphs").fingerprint == load_dataset(EMBEDDED_GRAPHS).fingerprint
    with pytest.raises(UnknownNameError, match="did you mean 'synthetic_graphs'"):
        load_dataset("synthetic_graph")
    with pytest.raises(UnknownNameError, match="tu:MUTAG"):
        load_dataset("tu:")
    with pytest.raises(ConfigError, match="zca"):
        load_dataset(EMBEDDED_GRAPHS, zca=True)


def test_embedded(graphs: GraphData) -> None:
    assert graphs.num_graphs == 300 and graphs.num_classes == 2 and graphs.in_dim == 4
    parts = [graphs.train_idx, graphs.val_idx, graphs.test_idx]
    assert sum(len(p) for p in parts) == 300
    assert len(torch.unique(torch.cat(parts))) == 300
    for p in parts:  # stratified: both classes in every part, balanced
        counts = torch.bincount(graphs.y[p], minlength=2)
        assert abs(int(counts[0]) - int(counts[1])) <= 1
    again = generate_graphs()
    assert again.fingerprint == graphs.fingerprint and torch.equal(again.test_idx, graphs.test_idx)
    other = load_dataset(EMBEDDED_GRAPHS, seed=1)
    assert other.fingerprint == graphs.fingerprint and not torch.equal(other.test_idx, graphs.test_idx)
    assert graphs.raw_bytes > 0


def test_edges_symmetric_unique(graphs: GraphData) -> None:
    ei = graphs.edge_index
    n = graphs.node_label.shape[0]
    key = ei[0] * n + ei[1]
    assert len(torch.unique(key)) == key.numel()
    assert torch.equal(torch.sort(key)[0], torch.sort(ei[1] * n + ei[0])[0])
    assert bool((ei[0] != ei[1]).all())


def test_batch_and_pack(graphs: GraphData) -> None:
    idx = graphs.train_idx[[3, 0, 7]]
    b = graphs.batch(idx)
    assert b.num_graphs == 3 and b.x.shape == (int(graphs.num_nodes(idx).sum()), graphs.in_dim)
    assert bool((b.batch[b.edge_index[0]] == b.batch[b.edge_index[1]]).all())  # edges stay inside a graph
    assert torch.equal(torch.bincount(b.batch), graphs.num_nodes(idx))
    u = unpack_graphs(pack_graphs(graphs, idx), graphs.y[idx], graphs.in_dim)
    assert torch.equal(u.x, b.x) and torch.equal(u.edge_index, b.edge_index) and torch.equal(u.y, b.y)


def test_stratified_split_small() -> None:
    tr, va, te = stratified_split(torch.tensor([0] * 10 + [1] * 20), seed=3)
    assert len(tr) + len(va) + len(te) == 30 and len(te) == 3 and len(va) == 3


def test_tu_quirks(tmp_path: Path) -> None:
    _write_tu(tmp_path, "FAKE")
    for root in (tmp_path, tmp_path / "FAKE"):  # root may be the data folder or the dataset folder itself
        d = load_dataset("tu:FAKE", str(root))
        assert d.num_graphs == 3 and d.classes == ["-1", "1"] and d.y.tolist() == [0, 1, 1]
        assert d.edge_index.shape[1] == 16  # 8 undirected edges, duplicates coalesced
        assert d.node_label_kind == "node_labels" and d.num_node_labels == 3
        assert d.raw_bytes == sum(p.stat().st_size for p in (tmp_path / "FAKE").iterdir())


def test_tu_labels_12_and_degree(tmp_path: Path) -> None:
    _write_tu(tmp_path, "NOLAB", labels=(1, 2, 2), node_labels=False, twice=False)
    d = load_dataset("tu:NOLAB", str(tmp_path))
    assert d.classes == ["1", "2"] and d.y.tolist() == [0, 1, 1]
    assert d.node_label_kind == "degree" and d.node_label_values == [1, 2, 3]
    assert d.node_label_values[int(d.node_label[6])] == 3  # the star's centre has degree 3


def test_tu_missing(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="MUTAG_A.txt"):
        load_dataset("tu:MUTAG", str(tmp_path))
    with pytest.raises(DataNotFoundError, match="MUTAG_A.txt"):
        load_dataset("tu:MUTAG", tmp_path)  # a Path root works too
    d = _write_tu(tmp_path, "PART")
    (d / "PART_graph_labels.txt").unlink()
    with pytest.raises(DataNotFoundError, match="PART_graph_labels.txt"):
        load_dataset("tu:PART", str(tmp_path))


@pytest.mark.parametrize(
    "file, content, match",
    [
        ("graph_labels", "1\n1\n", "ids must be 1..2"),
        ("node_labels", "0\n1\n", "2 lines but there are 10 nodes"),
        ("A", "1, 2\n2, 11\n", "node ids must be 1..10"),
        ("A", "1, 4\n", "two different graphs"),
        ("graph_indicator", "1\n2\n1\n2\n2\n2\n3\n3\n3\n3\n", "not sorted"),
        ("A", "1, x\n", "not a number"),
    ],
)
def test_tu_inconsistent(tmp_path: Path, file: str, content: str, match: str) -> None:
    d = _write_tu(tmp_path, "BAD")
    (d / f"BAD_{file}.txt").write_text(content)
    with pytest.raises(DataFormatError, match=match):
        load_dataset("tu:BAD", str(tmp_path))


def test_bad_split(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="split"):
        load_dataset(EMBEDDED_GRAPHS, split="kfold")
    _write_tu(tmp_path, "SPL")
    with pytest.raises(ConfigError, match="split"):
        load_dataset("tu:SPL", tmp_path, split="kfold")
    d = load_dataset(EMBEDDED_GRAPHS, split="mirage")
    assert len(d.test_idx) == 30 and len(d.val_idx) == 30


@pytest.mark.real_data
def test_real_mutag(shared_data: Path) -> None:
    root = shared_data / "tu"
    if not (root / "MUTAG").is_dir():
        pytest.skip(f"'{root / 'MUTAG'}' is absent")
    d = load_dataset("tu:MUTAG", str(root))
    assert d.num_graphs == 188 and int(d.node_label.shape[0]) == 3371 and d.edge_index.shape[1] == 2 * 3721
    assert d.classes == ["-1", "1"] and torch.bincount(d.y).tolist() == [63, 125]
    assert d.num_node_labels == 7 and d.edge_label is not None and d.edge_label.shape[0] == d.edge_index.shape[1]


def test_canonical_trees_are_isomorphism_invariant() -> None:
    """``computation_tree_ids``: a path a-b-c and the same path listed in another node order get the same trees."""
    import numpy as np

    from condense.data.graph import computation_tree_ids

    lab = np.array([0, 1, 0])
    e1 = np.array([[0, 1, 1, 2], [1, 0, 2, 1]])
    ids1, vocab = computation_tree_ids(lab, e1, 2)
    perm = np.array([2, 0, 1])  # new id of old node i
    lab2 = np.empty(3, dtype=np.int64)
    lab2[perm] = lab
    ids2, _ = computation_tree_ids(lab2, perm[e1], 2, vocab)
    assert sorted(ids1[2].tolist()) == sorted(ids2[2].tolist())
    assert ids1[2][0] == ids1[2][2] != ids1[2][1]
