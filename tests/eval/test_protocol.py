"""One evaluation API for both data kinds: the PROTOCOLS registry, ``evaluate`` and the baselines dispatching on
``data.kind``, and the one-line errors for a set of the wrong kind."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch

from condense import seeding
from condense.data import load_dataset
from condense.errors import ConfigError, MismatchError, UnknownNameError
from condense.eval import (
    GRAPH_PROTOCOL,
    PROTOCOLS,
    EvalProtocol,
    GraphProtocol,
    evaluate,
    evaluate_tensors,
    full_data_baseline,
    get_protocol,
    random_real_baseline,
)
from condense.eval.graphs import evaluate_graph_set
from condense.graph_summary import graph_subset_set
from condense.synthetic import SyntheticSet


@dataclass(frozen=True)
class _NoConfig:
    """The config of a hand-built set (no hyperparameters)."""


# a few dozen Adam steps: enough to exercise every path, far too few to mean anything
TINY = GRAPH_PROTOCOL.replace(epochs=1, min_steps=20, val_checks=2)


@pytest.fixture(scope="module")
def graphs():
    return load_dataset("synthetic_graphs")


@pytest.fixture(scope="module")
def graph_set(graphs):
    idx = graphs.sample_per_class(3, torch.Generator().manual_seed(0))
    return graph_subset_set(graphs, idx, "random_graphs", 3, None)


@pytest.fixture(scope="module")
def image_set(digits):
    idx = digits.sample_per_class(1, torch.Generator().manual_seed(0))
    return SyntheticSet.from_tensors(digits.x_train[idx], digits.y_train[idx], digits, "random_real", 1, _NoConfig())


def test_graph_protocol_is_registered():
    assert {"classic", "classic_noaug", "graph"} <= set(PROTOCOLS.list())
    assert get_protocol("graph") is GRAPH_PROTOCOL and isinstance(GRAPH_PROTOCOL, GraphProtocol)
    assert GRAPH_PROTOCOL.kind == "graphs" and EvalProtocol.kind == "images"
    assert GRAPH_PROTOCOL.version >= 2 and "kind" not in GRAPH_PROTOCOL.to_dict()
    assert get_protocol(TINY) is TINY
    assert GRAPH_PROTOCOL.replace(epochs=None) == GRAPH_PROTOCOL  # None keeps the protocol's value
    with pytest.raises(UnknownNameError, match="did you mean 'graph'"):
        get_protocol("grap")
    with pytest.raises(ConfigError, match="unknown GraphProtocol field 'momentum'"):
        GRAPH_PROTOCOL.replace(momentum=0.9)
    with pytest.raises(ConfigError, match="select"):
        GRAPH_PROTOCOL.replace(select="best")


def test_evaluate_graph_set_through_the_one_entry_point(graphs, graph_set):
    row = evaluate(graph_set, graphs, seeds=2, protocol=TINY)
    assert row["method"] == "random_graphs" and row["dataset"] == graphs.name and row["ipc"] == 3
    assert row["num_graphs"] == 6 and row["metric"] == "roc_auc" and row["protocol"]["name"] == "graph"
    assert set(row["accuracy"]) == {"gcn"} and len(row["accuracy"]["gcn"]["runs"]) == 2
    auc = row["roc_auc"]["gcn"]
    assert len(auc["runs"]) == 2 and auc["mean"] == pytest.approx(sum(auc["runs"]) / 2) and "summary_bytes" in row
    # the dispatch adds nothing: the graph evaluator gives the same numbers; seed s is the same run everywhere
    direct = evaluate_graph_set(graph_set, graphs, seeds=2, protocol=TINY)
    assert direct["accuracy"] == row["accuracy"] and direct["roc_auc"] == row["roc_auc"]
    one = evaluate(graph_set, graphs, seeds=[1], protocol=TINY)
    assert one["accuracy"]["gcn"]["runs"] == row["accuracy"]["gcn"]["runs"][1:]
    assert evaluate(graph_set, graphs, seeds=1, seed=1, protocol=TINY)["accuracy"] == one["accuracy"]
    assert evaluate(graph_set, graphs, seeds=1, protocol="graph", epochs=1, batch_size=8)["protocol"]["batch_size"] == 8


def test_graph_baselines_through_the_shared_entry_points(graphs):
    rnd = random_real_baseline(graphs, 3, seeds=2, protocol=TINY)
    assert rnd["method"] == "random_graphs" and rnd["ipc"] == 3 and rnd["num_graphs"] == 6
    assert len(rnd["accuracy"]["gcn"]["runs"]) == 2
    # seed s trains on the subset drawn with the image baseline's rule, and with seed s
    idx = graphs.sample_per_class(3, seeding.generator("condense-random-real", 1))
    drawn = graph_subset_set(graphs, idx, "random_graphs", 3, None)
    again = evaluate(drawn, graphs, seeds=[1], protocol=TINY)
    assert again["accuracy"]["gcn"]["runs"] == rnd["accuracy"]["gcn"]["runs"][1:]
    full = full_data_baseline(graphs, seeds=1, protocol=TINY, models=["gin"])
    assert full["method"] == "full_data" and full["ipc"] is None and full["num_graphs"] == len(graphs.train_idx)
    assert set(full["accuracy"]) == {"gin"}


def test_kind_mismatch_is_one_line(graphs, digits, graph_set, image_set):
    with pytest.raises(MismatchError) as err:
        evaluate(image_set, graphs, seeds=1)
    msg = str(err.value)
    assert "\n" not in msg and "image set" in msg and f"data '{graphs.name}' holds graphs" in msg, msg
    with pytest.raises(MismatchError) as err:
        evaluate(graph_set, digits, seeds=1)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("syn is a graph summary") and "data 'digits' holds images" in msg, msg


def test_options_of_the_other_kind_are_refused(graphs, digits, graph_set, image_set):
    with pytest.raises(ConfigError, match="image evaluation only"):
        evaluate(graph_set, graphs, seeds=1, vmap=False, protocol=TINY)
    with pytest.raises(ConfigError, match="image evaluation only"):
        random_real_baseline(graphs, 1, seeds=1, temperature=2.0, protocol=TINY)
    with pytest.raises(ConfigError, match="'classic' scores images"):
        evaluate(graph_set, graphs, seeds=1, protocol="classic")
    with pytest.raises(ConfigError, match="'graph' trains GNNs"):
        evaluate(image_set, digits, seeds=1, protocol="graph")
    with pytest.raises(ConfigError, match="ImageData or a GraphData"):
        evaluate(image_set, object(), seeds=1)


def test_evaluate_tensors_errors_are_condense_errors(digits, graphs, image_set):
    x, y = image_set.images, image_set.labels
    with pytest.raises(ConfigError, match="seeds"):
        evaluate_tensors(x, y, digits, seeds=[])
    with pytest.raises(ConfigError, match="seeds"):
        evaluate_tensors(x, y, digits, seeds=0)
    with pytest.raises(MismatchError, match="holds graphs"):
        evaluate_tensors(x, y, graphs, seeds=1)
    with pytest.raises(MismatchError, match="shape"):
        evaluate_tensors(x[:, :, :4], y, digits, seeds=1)
    with pytest.raises(ConfigError, match="labels"):
        evaluate_tensors(x, y[:-1], digits, seeds=1)


def test_eval_does_not_load_methods():
    code = (
        "import sys, torch\nfrom condense.data import load_dataset\n"
        "from condense.eval import GRAPH_PROTOCOL, evaluate\n"
        "from condense.graph_summary import graph_subset_set\n"
        "g = load_dataset('synthetic_graphs')\n"
        "s = graph_subset_set(g, g.sample_per_class(1, torch.Generator()), 'random_graphs', 1, None)\n"
        "evaluate(s, g, seeds=1, protocol=GRAPH_PROTOCOL.replace(epochs=1, min_steps=5, val_checks=1))\n"
        "print(sorted(m for m in sys.modules if m.startswith('condense.methods')))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "[]", res.stdout


def test_datm_protocol_is_classic_with_batch_128():
    """DATM's evaluation (every DATM config: ``batch_train: 128``) differs from classic in the batch only."""
    datm, classic = get_protocol("datm"), get_protocol("classic")
    assert isinstance(datm, EvalProtocol) and datm.name == "datm" and "batch_train: 128" in datm.source
    assert datm.batch_size == 128 and classic.batch_size == 256
    # the rest of the recipe is MTT's evaluate_synset, as the classic one (trajectory.md 1.4)
    expected = dict(
        epochs=1000,
        lr=0.01,
        use_learned_lr=True,
        momentum=0.9,
        weight_decay=5e-4,
        lr_decay_at=0.5,
        lr_decay=0.1,
        augment="auto",
        temperature=1.0,
    )
    for proto in (datm, classic):
        assert {k: getattr(proto, k) for k in expected} == expected, proto.name
    different = {k for k, v in datm.to_dict().items() if v != classic.to_dict()[k]}
    assert different == {"name", "batch_size", "source"}


@dataclass(frozen=True)
class _DCLikeConfig:
    """A config that names its network (DC, DSA, DM, herding)."""

    model: str = "convnetd2"


@dataclass(frozen=True)
class _TrajectoryLikeConfig:
    model: str | None = None  # the trajectory configs: None means the buffer's model


@pytest.mark.parametrize(
    "cfg, meta, expected",
    [
        (_NoConfig(), {}, "convnet"),  # nothing recorded (random real): ConvNet-3
        (_DCLikeConfig(), {}, "convnetd2"),  # DC / DM / herding: the config's network
        (_TrajectoryLikeConfig(), {"model": "convnetd2"}, "convnetd2"),  # MTT family: the buffer's, in meta
    ],
    ids=["none", "config", "meta"],
)
def test_images_are_scored_with_the_model_they_were_distilled_with(digits, cfg, meta, expected):
    from condense.eval.evaluate import distilled_model

    idx = digits.sample_per_class(1, torch.Generator().manual_seed(0))
    syn = SyntheticSet.from_tensors(digits.x_train[idx], digits.y_train[idx], digits, "x", 1, cfg, meta=meta)
    assert distilled_model(syn) == expected
    row = evaluate(syn, digits, seeds=1, epochs=1)
    assert list(row["accuracy"]) == [expected]
    # the default is that model, trained as if asked for by name; the cross-architecture list stays an option
    named = evaluate(syn, digits, seeds=1, epochs=1, models=[expected])
    assert named["accuracy"] == row["accuracy"]
    assert list(evaluate(syn, digits, seeds=1, epochs=1, models=["convnet", "mlp"])["accuracy"]) == ["convnet", "mlp"]
