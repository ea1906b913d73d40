"""Coreset baselines: random_real, herding and the shared herding selection (``methods/_coreset.py``)."""

from __future__ import annotations

import torch

from condense import distill
from condense.methods._coreset import herding_per_class, herding_select


def test_random_real_is_stratified_and_seeded(digits):
    a = distill("random_real", digits, ipc=3, generator=torch.Generator().manual_seed(1))
    b = distill("random_real", digits, ipc=3, generator=torch.Generator().manual_seed(1))
    c = distill("random_real", digits, ipc=3, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert torch.bincount(a.labels, minlength=10).tolist() == [3] * 10


def test_herding_select_matches_mean_better_than_prefix():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(200, 16, generator=g)
    idx = herding_select(feats, 10)
    assert len(set(idx.tolist())) == 10
    mu = feats.mean(0)
    herd_err = (feats[idx].mean(0) - mu).norm()
    rand_err = (feats[:10].mean(0) - mu).norm()
    assert herd_err < rand_err


def test_herding_runs_on_digits(digits):
    syn = distill("herding", digits, ipc=2, overrides={"train_epochs": 1})
    assert syn.images.shape == (20, 1, 8, 8)
    assert torch.bincount(syn.labels, minlength=10).tolist() == [2] * 10
    assert torch.isfinite(syn.images).all()


def test_random_real_is_the_data_layers_per_class_draw(digits):
    """random_real keeps exactly the images ``ImageData.sample_per_class`` draws (the baselines use the same draw)."""
    syn = distill("random_real", digits, ipc=4, generator=torch.Generator().manual_seed(3))
    idx = digits.sample_per_class(4, torch.Generator().manual_seed(3))
    assert torch.equal(syn.images, digits.x_train[idx]) and torch.equal(syn.labels, digits.y_train[idx])


def test_herding_per_class_is_class_major_and_herds_inside_each_class():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(30, 4, generator=g)
    labels = torch.arange(3).repeat(10)
    idx = herding_per_class(feats, labels, 3, 4)
    assert labels[idx].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    for c in range(3):
        members = torch.nonzero(labels == c).flatten()
        assert torch.equal(idx[4 * c : 4 * (c + 1)], members[herding_select(feats[members], 4)])
    small = herding_per_class(feats[:4], labels[:4], 3, 5)  # classes with fewer rows than ipc give all of them
    assert sorted(small.tolist()) == [0, 1, 2, 3]


def test_herding_graphs_uses_the_shared_selection():
    from condense.data import load_dataset
    from condense.methods.herding_graphs import wl_histograms

    graphs = load_dataset("synthetic_graphs")
    syn = distill("herding_graphs", graphs, ipc=3)
    cfg = syn.config
    feats = wl_histograms(graphs, graphs.train_idx, cfg["num_hops"], cfg["num_features"])
    rows = herding_per_class(feats, graphs.y[graphs.train_idx], graphs.num_classes, 3)
    assert torch.equal(syn.tensors["graph_index"].long(), graphs.train_idx[rows].long())
