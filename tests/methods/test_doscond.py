"""DosCond (one-step gradient matching for graphs): dense/sparse equivalence, the artifact, resume, and that it
beats random real graphs of the same size under the shared graph protocol."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from condense.data import load_dataset
from condense.errors import ConfigError, IntegrityError
from condense.eval import GRAPH_PROTOCOL, evaluate, random_real_baseline
from condense.graph_summary import to_batch
from condense.methods import RunContext, distill, get_method
from condense.methods.doscond import PRESETS, DosCondConfig, dense_gcn_forward
from condense.models.gnn import create_gnn
from condense.synthetic import SyntheticSet

FAST = GRAPH_PROTOCOL.replace(epochs=20, min_steps=300)


@pytest.fixture(scope="module")
def graphs():
    return load_dataset("synthetic_graphs")


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_dense_forward_equals_sparse_gcn(graphs, pooling: str) -> None:
    net = create_gnn("gcn", in_dim=graphs.in_dim, num_classes=2, layers=3, hidden=16, pooling=pooling, seed=0)
    idx = graphs.train_idx[:4]
    b = graphs.batch(idx)
    sparse = net(b.x, b.edge_index, b.batch, b.num_graphs)
    n = int(graphs.num_nodes(idx).max())
    x = torch.zeros(4, n, graphs.in_dim)
    adj = torch.zeros(4, n, n)
    for j, g in enumerate(idx.tolist()):
        nl, ei, _, _ = graphs.subgraphs(torch.tensor([g]))
        x[j, : nl.numel()] = graphs.features(nl)
        adj[j, ei[0], ei[1]] = 1.0
    params = dict(net.named_parameters())
    for j, g in enumerate(idx.tolist()):  # each graph unpadded: padding rows would join the readout
        m = int(graphs.num_nodes(torch.tensor([g])))
        one = dense_gcn_forward(params, x[j : j + 1, :m], adj[j : j + 1, :m, :m], pooling)
        torch.testing.assert_close(one[0], sparse[j], atol=1e-5, rtol=1e-5)


def test_presets_by_dataset() -> None:
    m = get_method("doscond")
    assert set(PRESETS) == {"tu:NCI1", "tu:MUTAG", "tu:DD"} and all(p["source"] for p in PRESETS.values())
    assert m.default_preset("tu:MUTAG", 7) == "tu:MUTAG" and m.default_preset("synthetic_graphs", 5) is None
    assert m.resolve_config("tu:MUTAG").lr_adj == 0.1


def test_artifact_and_round_trip(graphs, tmp_path: Path) -> None:
    syn = distill("doscond", graphs, ipc=3, overrides={"num_iterations": 5}, run=RunContext(quiet=True))
    assert syn.kind == "graph_summary" and syn.meta["summary"] == "dense_graphs" and len(syn) == 6
    assert syn.tensors["adj"].dtype == torch.bool and torch.equal(
        syn.tensors["adj"], syn.tensors["adj"].transpose(1, 2)
    )
    assert not bool(syn.tensors["adj"].diagonal(dim1=1, dim2=2).any())
    assert torch.bincount(syn.labels).tolist() == [3, 3]
    back = SyntheticSet.load(syn.save(tmp_path / "dos"))
    batch = to_batch(back, graphs)
    assert batch.num_graphs == 6 and batch.class_weight is None and batch.depth is None
    assert batch.edge_index.shape[1] == int(syn.tensors["adj"].sum())
    broken = SyntheticSet(
        images=None,
        labels=back.labels,
        classes=back.classes,
        method="doscond",
        dataset=back.dataset,
        ipc=3,
        tensors={"feat": back.tensors["feat"]},
        config=back.config,
        meta=back.meta,
        kind="graph_summary",
    )
    with pytest.raises(IntegrityError, match="adj"):
        to_batch(broken, graphs)


def test_config_errors() -> None:  # the wrong data kind is a contract test (tests/methods/test_contract.py)
    with pytest.raises(ConfigError):
        DosCondConfig(distance="l1")
    with pytest.raises(ConfigError, match="did you mean 'mean'"):
        DosCondConfig(pooling="maen")


def test_doscond_beats_random_embedded(graphs) -> None:
    """A GCN trained on DosCond's graphs beats random real graphs of the same count (shared graph protocol)."""
    syn = distill("doscond", graphs, ipc=5, overrides={"num_iterations": 40}, run=RunContext(quiet=True))
    dos = evaluate(syn, graphs, models=["gcn"], seeds=3, protocol=FAST)
    rnd = random_real_baseline(graphs, 5, models=["gcn"], seeds=3, protocol=FAST)
    assert dos["num_graphs"] == rnd["num_graphs"] == 10
    assert dos["roc_auc"]["gcn"]["mean"] > rnd["roc_auc"]["gcn"]["mean"], (dos["roc_auc"], rnd["roc_auc"])
