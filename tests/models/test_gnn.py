"""GCN / GIN / GAT: shapes, gradients, invariances, and the computation-tree equivalence Mirage relies on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from condense.data import load_dataset
from condense.data.graph import computation_tree_ids
from condense.errors import ConfigError, UnknownNameError
from condense.models.gnn import create_gnn, global_pool, list_gnns

GNNS = list_gnns()


@pytest.fixture(scope="module")
def graphs():
    return load_dataset("synthetic_graphs")


def test_registry() -> None:
    assert GNNS == ["gat", "gcn", "gin"]
    with pytest.raises(UnknownNameError, match="did you mean 'gcn'"):
        create_gnn("gcm", in_dim=3, num_classes=2)
    with pytest.raises(ConfigError):
        create_gnn("gcn", in_dim=3, num_classes=2, pooling="max")


def test_seed_builds_the_same_model_without_touching_the_global_rng() -> None:
    state = torch.random.get_rng_state()
    a = create_gnn("gin", in_dim=3, num_classes=2, seed=7)
    b = create_gnn("gin", in_dim=3, num_classes=2, seed=7)
    c = create_gnn("gin", in_dim=3, num_classes=2, seed=8)
    assert torch.equal(torch.random.get_rng_state(), state)
    pa, pb, pc = (torch.cat([p.flatten() for p in n.parameters()]) for n in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


@pytest.mark.parametrize("name", GNNS)
@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_forward_backward(graphs, name: str, pooling: str) -> None:
    torch.manual_seed(0)
    net = create_gnn(name, in_dim=graphs.in_dim, num_classes=2, hidden=16, layers=2, pooling=pooling)
    b = graphs.batch(graphs.train_idx[:5])
    out = net(b.x, b.edge_index, b.batch, b.num_graphs)
    assert out.shape == (5, 2) and bool(torch.isfinite(out).all())
    torch.nn.functional.cross_entropy(out, b.y).backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in net.parameters())


@pytest.mark.parametrize("name", GNNS)
def test_node_permutation_invariance(graphs, name: str) -> None:
    torch.manual_seed(0)
    net = create_gnn(name, in_dim=graphs.in_dim, num_classes=2, hidden=16).eval()
    b = graphs.batch(graphs.train_idx[:3])
    perm = torch.randperm(b.x.shape[0], generator=torch.Generator().manual_seed(1))
    inv = torch.argsort(perm)
    out = net(b.x, b.edge_index, b.batch, b.num_graphs)
    out_p = net(b.x[perm], inv[b.edge_index], b.batch[perm], b.num_graphs)
    torch.testing.assert_close(out, out_p, rtol=1e-5, atol=1e-5)


def test_pool_mask() -> None:
    h = torch.arange(8.0).reshape(4, 2)
    b = torch.tensor([0, 0, 1, 1])
    m = torch.tensor([True, False, True, True])
    torch.testing.assert_close(global_pool(h, b, 2, "sum", m), torch.tensor([[0.0, 1.0], [10.0, 12.0]]))
    torch.testing.assert_close(global_pool(h, b, 2, "mean", m), torch.tensor([[0.0, 1.0], [5.0, 6.0]]))


@pytest.mark.parametrize("name, tol", [("gin", 1e-5), ("gat", 1e-5), ("gcn", 0.25)])
def test_tree_root_equals_node_embedding(graphs, name: str, tol: float) -> None:
    """A root of an expanded L-hop computation tree gets the embedding of its node in the real graph (Mirage Sec. 3);
    exact for GIN/GAT, approximate for GCN, whose normalization needs the unseen degree of the leaves."""
    from condense.graph_summary import encode_tree_sets, expand_summary
    from condense.synthetic import SyntheticSet

    nl, ei, _, _ = graphs.subgraphs(graphs.train_idx[:1])
    ids, vocab = computation_tree_ids(nl.numpy(), ei.numpy(), 2)
    sets = [(int(t),) for t in ids[2]]
    tensors, _ = encode_tree_sets(vocab, sets, [[1, 0]] * len(sets), 2)
    syn = SyntheticSet(
        None,
        torch.zeros(len(sets), dtype=torch.int64),
        ["0", "1"],
        "mirage",
        "synthetic_graphs",
        1,
        tensors=tensors,
        config={"num_hops": 2},
        meta={"summary": "mirage_tree_sets", "num_node_labels": graphs.in_dim},
        kind="graph_summary",
    )
    tb, _ = expand_summary(syn)
    torch.manual_seed(0)
    net = create_gnn(name, in_dim=graphs.in_dim, num_classes=2, hidden=16, layers=2, pooling="sum").eval()
    n = nl.shape[0]
    real = net.embed(graphs.features(nl), ei, torch.arange(n), n)  # every node pooled alone
    tree = net.embed(tb.x, tb.edge_index, tb.batch, tb.num_graphs, deg=tb.deg, pool_mask=tb.pool_mask)
    err = float((real - tree).abs().max().detach() / real.abs().max().detach().clamp_min(1e-6))
    assert err < tol, f"{name}: relative error {err:.3g}"
    assert np.array_equal(np.bincount(tb.batch.numpy()[tb.pool_mask.numpy()]), np.ones(n))


@pytest.mark.parametrize("name", GNNS)
def test_logit_sum_readout_sums_node_logits(graphs, name: str) -> None:
    """logit_sum: the head scores every node (bias included) and a graph's logits are the sum of its nodes'."""
    net = create_gnn(name, in_dim=graphs.in_dim, num_classes=2, pooling="logit_sum")
    b = graphs.batch(graphs.train_idx[:3])
    out = net(b.x, b.edge_index, b.batch, b.num_graphs)
    node = net.head(
        torch.relu(net.convs[1](torch.relu(net.convs[0](b.x, b.edge_index, _deg(b))), b.edge_index, _deg(b)))
    )
    want = torch.zeros(3, 2).index_add_(0, b.batch, node)
    torch.testing.assert_close(out, want, atol=1e-4, rtol=1e-4)
    mask = torch.zeros(b.x.shape[0], dtype=torch.bool)
    mask[::2] = True
    masked = net(b.x, b.edge_index, b.batch, b.num_graphs, pool_mask=mask)
    torch.testing.assert_close(masked, torch.zeros(3, 2).index_add_(0, b.batch[mask], node[mask]), atol=1e-4, rtol=1e-4)


def _deg(b) -> torch.Tensor:
    return torch.bincount(b.edge_index[1], minlength=b.x.shape[0]).float()
