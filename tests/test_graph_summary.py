"""The graph artifact formats: tree-set encode/expand, dense and subset decoding, and the ``to_batch`` dispatch."""

from __future__ import annotations

import pytest
import torch

from condense.data import load_dataset
from condense.data.graph import computation_tree_ids
from condense.errors import MismatchError
from condense.graph_summary import (
    DECODERS,
    TREE_SET_TENSORS,
    encode_tree_sets,
    expand_summary,
    graph_subset_set,
    small_int,
    to_batch,
)
from condense.synthetic import SyntheticSet


@pytest.fixture(scope="module")
def graphs():
    return load_dataset("synthetic_graphs")


def _tree_set_summary(graphs, sampling: str = "support") -> SyntheticSet:
    nl, ei, _, _ = graphs.subgraphs(graphs.train_idx[:2])
    ids, vocab = computation_tree_ids(nl.numpy(), ei.numpy(), 2)
    sets = sorted({(int(t),) for t in ids[2]})[:4]
    tensors, rows = encode_tree_sets(vocab, sets, [[2, 1]] * len(sets), 2)
    assert set(tensors) == set(TREE_SET_TENSORS) and rows >= len(sets)
    return SyntheticSet(
        None,
        torch.zeros(len(sets), dtype=torch.int64),
        list(graphs.classes),
        "mirage",
        graphs.name,
        4,
        tensors=tensors,
        config={"num_hops": 2, "sampling": sampling},
        meta={"summary": "mirage_tree_sets", "num_node_labels": graphs.in_dim, "class_sizes": [4, 2]},
        kind="graph_summary",
    )


def test_small_int() -> None:
    assert small_int([0, 255]).dtype == torch.uint8 and small_int([256]).dtype == torch.int16
    assert small_int([40_000]).dtype == torch.int32 and small_int([]).numel() == 0


def test_tree_sets_decode_with_weights_and_depth(graphs) -> None:
    syn = _tree_set_summary(graphs)
    batch, support = expand_summary(syn)
    assert support.shape == (4, 2) and int(batch.pool_mask.sum()) == 4  # one root per single-tree set
    b = to_batch(syn, graphs)
    assert b.depth == 2 and b.num_graphs == 4
    torch.testing.assert_close(b.class_weight, torch.tensor([[0.5, 0.5]] * 4))  # support / class size
    uniform = to_batch(_tree_set_summary(graphs, sampling="uniform"), graphs)
    torch.testing.assert_close(uniform.class_weight, torch.tensor([[1.0, 0.0]] * 4))


def test_subset_decodes_to_the_real_graphs(graphs) -> None:
    idx = graphs.sample_per_class(2, torch.Generator().manual_seed(0))
    syn = graph_subset_set(graphs, idx, "random_graphs", 2, None)
    b, real = to_batch(syn, graphs), graphs.batch(idx)
    assert torch.equal(b.x, real.x) and torch.equal(b.edge_index, real.edge_index) and torch.equal(b.y, real.y)
    assert b.class_weight is None and b.depth is None


def test_to_batch_dispatch_and_checks(graphs, digits) -> None:
    assert set(DECODERS) == {"mirage_tree_sets", "graph_subset", "dense_graphs"}
    syn = graph_subset_set(graphs, graphs.train_idx[:2], "random_graphs", 1, None)
    syn.meta["summary"] = "sketch"
    with pytest.raises(MismatchError, match="unknown graph summary format 'sketch'"):
        to_batch(syn, graphs)
    syn.meta["summary"], syn.classes = "graph_subset", ["a", "b"]
    with pytest.raises(MismatchError, match="classes"):
        to_batch(syn, graphs)
    with pytest.raises(MismatchError, match="graph dataset"):
        graph_subset_set(digits, torch.tensor([0]), "random_graphs", 1, None)
