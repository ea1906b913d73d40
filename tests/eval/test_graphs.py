"""Graph evaluation: rows for graph subsets and baselines, dataset checks, and best-validation checkpoint selection."""

from __future__ import annotations

import pytest
import torch

from condense.data import load_dataset
from condense.errors import ConfigError, MismatchError
from condense.eval import GRAPH_PROTOCOL, GraphSource, evaluate, full_data_baseline, train_and_test_gnn
from condense.graph_summary import to_batch
from condense.methods import distill

# a short protocol so the whole graph suite stays well under a minute on 2 cores
FAST = GRAPH_PROTOCOL.replace(epochs=20, min_steps=300)


@pytest.fixture(scope="module")
def graphs():
    return load_dataset("synthetic_graphs")


def test_summary_checked_against_the_dataset(graphs) -> None:
    other = load_dataset("synthetic_graphs")
    other.node_label_values = other.node_label_values + [99]
    with pytest.raises(MismatchError, match="node labels"):
        evaluate(distill("mirage", graphs, ipc=1), other, seeds=1, protocol=FAST)


def test_graph_subset_rows(graphs) -> None:
    for name in ("random_graphs", "herding_graphs"):
        syn = distill(name, graphs, ipc=3)
        assert syn.kind == "graph_summary" and len(syn) == 6 and syn.meta["summary"] == "graph_subset"
        assert torch.bincount(syn.labels).tolist() == [3, 3]
        assert bool((graphs.y[syn.tensors["graph_index"].long()] == syn.labels).all())
    row = evaluate(syn, graphs, models=["gcn", "gin"], seeds=1, protocol=FAST)
    assert set(row["accuracy"]) == {"gcn", "gin"} and set(row["roc_auc"]) == {"gcn", "gin"}
    # each architecture's score is its own: scoring gin alone gives the same numbers as in the pair
    alone = evaluate(syn, graphs, models=["gin"], seeds=1, protocol=FAST)
    assert alone["roc_auc"]["gin"] == row["roc_auc"]["gin"] and alone["accuracy"]["gin"] == row["accuracy"]["gin"]


def test_full_baseline_row(graphs) -> None:
    row = full_data_baseline(graphs, models=["gcn"], seeds=1, protocol=FAST.replace(epochs=2, min_steps=50))
    assert row["method"] == "full_data" and row["num_graphs"] == len(graphs.train_idx)
    assert {"dataset", "ipc", "accuracy", "seconds"} <= set(row) and len(row["accuracy"]["gcn"]["runs"]) == 1


def test_validation_checkpoint_selection(graphs) -> None:
    """select="val" scores the checkpoint with the best validation score: with the test graphs as validation set it
    can never score below the final model (the last check is the final step)."""
    syn = distill("mirage", graphs, ipc=3)
    src = GraphSource(batch=to_batch(syn, graphs))  # class_weight and depth travel with the batch
    test = graphs.batch(graphs.test_idx)
    kw = {"in_dim": graphs.in_dim, "num_classes": graphs.num_classes, "seed": 1}
    final = train_and_test_gnn(src, test, "gcn", protocol=FAST.replace(select="final"), **kw)
    best = train_and_test_gnn(src, test, "gcn", protocol=FAST, val=test, **kw)
    assert best[1] >= final[1]
    assert train_and_test_gnn(src, test, "gcn", protocol=FAST, **kw) == final  # no validation graphs: final model
    with pytest.raises(ConfigError, match="select"):
        FAST.replace(select="best")
