"""The shared evaluation protocol: ``evaluate(syn, data)`` scores any synthetic set the same way."""

from __future__ import annotations

from condense.eval.evaluate import (
    evaluate,
    evaluate_tensors,
    full_data_baseline,
    random_real_baseline,
    random_subset,
)
from condense.eval.metrics import (
    hard_label_recovery,
    improvement_over_random,
    label_robust_score,
    summarize,
)
from condense.eval.protocol import PROTOCOLS, EvalProtocol, get_protocol

__all__ = [
    "evaluate",
    "evaluate_tensors",
    "random_real_baseline",
    "full_data_baseline",
    "random_subset",
    "EvalProtocol",
    "PROTOCOLS",
    "get_protocol",
    "summarize",
    "improvement_over_random",
    "hard_label_recovery",
    "label_robust_score",
]
