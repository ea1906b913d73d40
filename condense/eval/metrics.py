"""Accuracy summaries and the DD-Ranking leaderboard metrics, computed on fractions (not percent).

References:
    Li et al., "DD-Ranking: Rethinking the Evaluation of Dataset Distillation", arXiv:2505.13300, 2025.
    Hard-label recovery HLR = acc(real, hard) - acc(syn, hard); improvement over random
    IOR = acc(syn) - acc(random subset, same protocol); alpha = w*IOR - (1-w)*HLR;
    LRS = (e^alpha - e^-1) / (e - e^-1). DD-Ranking v0.2.0 feeds percentages into the exponential, which
    saturates the score; we use fractions so that alpha lies in [-1, 1] as the paper intends.
"""

from __future__ import annotations

import math
import statistics

__all__ = ["summarize", "improvement_over_random", "hard_label_recovery", "label_robust_score"]


def summarize(runs: list[float]) -> dict[str, float | list[float]]:
    """``{"mean", "std", "runs"}`` of accuracies (population std, 0 for one run)."""
    runs = [float(r) for r in runs]
    mean = statistics.fmean(runs) if runs else float("nan")
    std = statistics.pstdev(runs) if len(runs) > 1 else 0.0
    return {"mean": mean, "std": std, "runs": runs}


def improvement_over_random(acc_syn: float, acc_random: float) -> float:
    """IOR: synthetic minus random-real accuracy under the same protocol (fractions). Higher is better."""
    return float(acc_syn) - float(acc_random)


def hard_label_recovery(acc_real_hard: float, acc_syn_hard: float) -> float:
    """HLR: full-data minus synthetic accuracy, both with hard labels (fractions). Lower is better."""
    return float(acc_real_hard) - float(acc_syn_hard)


def label_robust_score(ior: float, hlr: float, w: float = 0.5) -> float:
    """LRS in [0, 1] from IOR and HLR given as fractions.

    Example:
        >>> round(label_robust_score(0.0, 0.0), 4)
        0.2689
    """
    if not (-1.0 <= ior <= 1.0 and -1.0 <= hlr <= 1.0):
        raise ValueError(f"IOR and HLR must be fractions in [-1, 1], got {ior}, {hlr} (percent passed?)")
    alpha = w * ior - (1 - w) * hlr
    return (math.exp(alpha) - math.exp(-1)) / (math.e - math.exp(-1))
