"""The one dataset registry for every data kind, ``data.kind``, and the shared per-class sampling."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from condense.data import DATASETS, GraphData, ImageData, list_datasets, load_dataset, sample_per_class
from condense.errors import ConfigError, UnknownNameError


@pytest.fixture(scope="module")
def graphs() -> GraphData:
    return load_dataset("synthetic_graphs")


def test_one_registry_for_images_and_graphs(digits, graphs) -> None:
    names = list_datasets()
    assert {"digits", "cifar10", "imagefolder:", "tu:", "synthetic_graphs"} <= set(names)
    assert list_datasets("tu*") == ["tu:"] and "synthetic_graphs" in DATASETS
    assert isinstance(digits, ImageData) and isinstance(graphs, GraphData)
    with pytest.raises(UnknownNameError, match="did you mean 'digits'"):
        load_dataset("digit")
    with pytest.raises(UnknownNameError, match="unknown dataset 'tv:'"):
        load_dataset("tv:MUTAG")


def test_kind_is_a_class_attribute(digits, graphs) -> None:
    assert ImageData.kind == digits.kind == "images"
    assert GraphData.kind == graphs.kind == "graphs"
    assert "kind" not in {f.name for cls in (ImageData, GraphData) for f in dataclasses.fields(cls)}  # not an init arg


@pytest.mark.parametrize("which", ["digits", "graphs"])
def test_sample_per_class(digits, graphs, which: str) -> None:
    data = digits if which == "digits" else graphs
    a = data.sample_per_class(4, torch.Generator().manual_seed(3))
    b = data.sample_per_class(4, torch.Generator().manual_seed(3))
    c = data.sample_per_class(4, torch.Generator().manual_seed(4))
    assert a.dtype == torch.int64 and torch.equal(a, b) and not torch.equal(a, c)
    y = data.y_train if which == "digits" else data.y
    labels = y[a]
    assert torch.bincount(labels, minlength=data.num_classes).tolist() == [4] * data.num_classes
    assert torch.equal(labels, labels.sort().values)  # class-sorted
    assert a.unique().numel() == a.numel()  # distinct
    if which == "graphs":  # training graphs only
        assert bool(torch.isin(a, data.train_idx).all())


def test_sample_per_class_draw_order(digits) -> None:
    """The exact draw of the former ``eval.random_subset``: per class, randperm over its members, first ipc."""
    gen = torch.Generator().manual_seed(0)
    want = []
    for c in range(digits.num_classes):
        members = digits.indices_of_class(c)
        want.append(members[torch.randperm(members.numel(), generator=gen)[:3]])
    assert torch.equal(digits.sample_per_class(3, torch.Generator().manual_seed(0)), torch.cat(want))


def test_sample_per_class_small_classes() -> None:
    members = [torch.tensor([5, 7]), torch.tensor([1, 2, 3, 4])]
    got = sample_per_class(members, 3, torch.Generator().manual_seed(0))
    assert got.numel() == 5 and set(got[:2].tolist()) == {5, 7} and set(got[2:].tolist()) <= {1, 2, 3, 4}
    with pytest.raises(ConfigError, match="ipc"):
        sample_per_class(members, 0, torch.Generator())
