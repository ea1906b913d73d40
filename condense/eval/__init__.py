"""The shared evaluation protocol: ``evaluate(syn, data)`` scores any synthetic set, image or graph, the same way.

Layout: :mod:`~condense.eval.protocol` (the recipes, one ``PROTOCOLS`` registry), :mod:`~condense.eval.images`
(image models, seeds x models, vmap or loop), :mod:`~condense.eval.soft` (students on a teacher's soft labels, the
``soft_label`` protocol), :mod:`~condense.eval.graphs` (GNNs), :mod:`~condense.eval.transfer` (pre-train on a set,
fine-tune on a target task: the ``transfer`` protocol of KRR-ST), :mod:`~condense.eval.evaluate`
(the entry points, dispatching on ``data.kind``), :mod:`~condense.eval.checks` (their argument checks) and
:mod:`~condense.eval.metrics`. Nothing here imports ``condense.methods``.
"""

from __future__ import annotations

from condense.eval.checks import check_kind
from condense.eval.evaluate import (
    evaluate,
    evaluate_tensors,
    full_data_baseline,
    random_real_baseline,
)
from condense.eval.graphs import GraphSource, summary_readout, train_and_test_gnn
from condense.eval.metrics import RankingMetrics, ars, hlr, ior, lrs, ranking_metrics, squash, summarize
from condense.eval.protocol import (
    GRAPH_PROTOCOL,
    PROTOCOLS,
    EvalProtocol,
    GraphProtocol,
    SoftLabelProtocol,
    get_protocol,
    list_protocols,
)
from condense.eval.transfer import TransferProtocol, class_split, few_labels, transfer_evaluate

__all__ = [
    "evaluate",
    "evaluate_tensors",
    "check_kind",
    "random_real_baseline",
    "full_data_baseline",
    "EvalProtocol",
    "SoftLabelProtocol",
    "GraphProtocol",
    "TransferProtocol",
    "class_split",
    "few_labels",
    "transfer_evaluate",
    "GRAPH_PROTOCOL",
    "PROTOCOLS",
    "get_protocol",
    "list_protocols",
    "GraphSource",
    "train_and_test_gnn",
    "summary_readout",
    "summarize",
    "ior",
    "hlr",
    "lrs",
    "ars",
    "squash",
    "ranking_metrics",
    "RankingMetrics",
]
