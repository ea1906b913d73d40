"""Accuracy summaries and DD-Ranking's metrics (IOR, HLR, LRS, ARS), in fractions, with the raw gaps kept.

DD-Ranking (Li et al., "DD-Ranking: Rethinking the Evaluation of Dataset Distillation", arXiv:2505.13300, 2025;
``NUS-HPC-AI-Lab/DD-Ranking`` v0.2.0) scores a distilled set by what it adds over a random real subset of the same
size trained the same way, and by how much of the full-data accuracy it recovers with hard labels alone:

- **IOR** (improvement over random) = acc(syn, own protocol) - acc(random real, same protocol); higher is better.
- **HLR** (hard label recovery) = acc(full data, hard labels) - acc(syn, hard labels); lower is better.
- **LRS** (label-robust score) = s(a), a = w * IOR - (1 - w) * HLR, w = 0.5 (both equally important).
- **ARS** (augmentation-robust score) = s(b), b = g * (acc(syn, aug) - acc(rdm, aug))
  + (1 - g) * (acc(syn, no aug) - acc(rdm, no aug)), g = 0.5.

where s(x) = (e^x - e^-1) / (e - e^-1) maps [-1, 1] onto [0, 1] (s(-1) = 0, s(0) = 1 / (e + 1) ~ 0.269, s(1) = 1).

Two differences from DD-Ranking v0.2.0 (``../shared/reference/ecosystem.md`` section 2):

- **Fractions, not percent.** Every accuracy here is a fraction in [0, 1] (what ``condense.eval.evaluate`` returns),
  so the gaps and a, b lie in [-1, 1], the interval the squash is built for. DD-Ranking feeds percentages into the
  exponential: a 5-point gap becomes a = 5 and s(5) = 63.0, far outside [0, 1], and a -5-point gap gives s(-5) =
  -0.15; the scores then saturate and stop ranking anything. Every function below refuses an accuracy above 1, so a
  percentage cannot slip in.
- **No test-set selection.** DD-Ranking keeps the best of several checkpoints and the best of 5 learning rates as
  judged on the test set. condense's protocols train a fixed number of epochs with a fixed recipe and report the
  final-epoch test accuracy, mean over the seeds; the rows this module reads are those means, so nothing here picks
  a value by looking at test accuracy.

Each metric is ``None`` when one of its inputs was not measured (no random-real row, no hard-label or no-augmentation
evaluation, no full-data row), never a guess.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass

from condense.errors import ConfigError

__all__ = [
    "summarize",
    "RankingMetrics",
    "squash",
    "ior",
    "hlr",
    "lrs",
    "ars",
    "ranking_metrics",
    "LRS_WEIGHT",
    "ARS_WEIGHT",
]

#: DD-Ranking's default w: IOR and HLR weigh the same
LRS_WEIGHT = 0.5
#: DD-Ranking's default gamma: the gaps with and without augmentation weigh the same
ARS_WEIGHT = 0.5

_E, _INV_E = math.e, math.exp(-1.0)


def summarize(runs: list[float]) -> dict[str, float | list[float]]:
    """``{"mean", "std", "runs"}`` of accuracies (population std, 0 for one run)."""
    runs = [float(r) for r in runs]
    mean = statistics.fmean(runs) if runs else float("nan")
    std = statistics.pstdev(runs) if len(runs) > 1 else 0.0
    return {"mean": mean, "std": std, "runs": runs}


def _fraction(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name}: expected an accuracy as a fraction in [0, 1] or None, got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ConfigError(
            f"{name}: accuracy {value!r} is outside [0, 1]; DD-Ranking metrics take fractions (0.91, not 91 %)"
        )
    return float(value)


def _weight(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name}: expected a weight in [0, 1], got {value!r}")
    return float(value)


def squash(x: float) -> float:
    """DD-Ranking's score map s(x) = (e^x - e^-1) / (e - e^-1): s(-1) = 0, s(1) = 1, increasing.

    Raises:
        ConfigError: ``x`` is outside [-1, 1] (a gap in percent rather than a fraction, or not a number).

    Example:
        >>> round(squash(1.0), 12), round(squash(-1.0), 12)
        (1.0, 0.0)
    """
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not -1.0 - 1e-12 <= x <= 1.0 + 1e-12:
        raise ConfigError(f"squash: expected a gap of fractions in [-1, 1], got {x!r}; pass fractions, not percent")
    return (math.exp(x) - _INV_E) / (_E - _INV_E)


def ior(syn: float | None, random_real: float | None) -> float | None:
    """Improvement over random: acc(syn, protocol) - acc(random real of the same IPC, same protocol and labels)."""
    syn, random_real = _fraction("ior: syn", syn), _fraction("ior: random_real", random_real)
    return None if syn is None or random_real is None else syn - random_real


def hlr(full_hard: float | None, syn_hard: float | None) -> float | None:
    """Hard label recovery: acc(full real training set, hard labels) - acc(syn, hard labels); lower is better."""
    full_hard, syn_hard = _fraction("hlr: full_hard", full_hard), _fraction("hlr: syn_hard", syn_hard)
    return None if full_hard is None or syn_hard is None else full_hard - syn_hard


def lrs(ior_value: float | None, hlr_value: float | None, w: float = LRS_WEIGHT) -> tuple[float | None, float | None]:
    """Label-robust score: ``(a, s(a))`` with a = w * IOR - (1 - w) * HLR; ``(None, None)`` when a gap is missing.

    Example:
        >>> a, score = lrs(0.1, 0.3)
        >>> round(a, 12), round(score, 4)
        (-0.1, 0.2285)
    """
    w = _weight("lrs: w", w)
    if ior_value is None or hlr_value is None:
        return None, None
    a = w * ior_value - (1.0 - w) * hlr_value
    return a, squash(a)


def ars(
    syn_aug: float | None,
    random_aug: float | None,
    syn_noaug: float | None,
    random_noaug: float | None,
    g: float = ARS_WEIGHT,
) -> tuple[float | None, float | None, float | None, float | None]:
    """Augmentation-robust score: ``(aug gap, no-aug gap, b, s(b))``, b = g * aug gap + (1 - g) * no-aug gap.

    The gaps are acc(syn) - acc(random real) with the protocol's train-time augmentation and without it; a missing
    input makes its gap (and then b and the score) ``None``.
    """
    g = _weight("ars: g", g)
    aug = ior(syn_aug, random_aug)
    noaug = ior(syn_noaug, random_noaug)
    if aug is None or noaug is None:
        return aug, noaug, None, None
    b = g * aug + (1.0 - g) * noaug
    return aug, noaug, b, squash(b)


@dataclass(frozen=True)
class RankingMetrics:
    """The DD-Ranking numbers of one set under one evaluation model, fractions, ``None`` where not measured.

    Attributes:
        ior: acc(syn) - acc(random real), same protocol and labels.
        hlr: acc(full data, hard) - acc(syn, hard).
        lrs_a: the raw LRS gap a = w * IOR - (1 - w) * HLR, in [-1, 1].
        lrs: s(a) in [0, 1].
        ars_aug_gap: acc(syn, aug) - acc(random real, aug).
        ars_noaug_gap: acc(syn, no aug) - acc(random real, no aug).
        ars_b: the raw ARS gap b = g * aug gap + (1 - g) * no-aug gap, in [-1, 1].
        ars: s(b) in [0, 1].
    """

    ior: float | None
    hlr: float | None
    lrs_a: float | None
    lrs: float | None
    ars_aug_gap: float | None
    ars_noaug_gap: float | None
    ars_b: float | None
    ars: float | None

    def to_dict(self) -> dict[str, float | None]:
        """The fields as a plain dict (CSV columns, JSON)."""
        return asdict(self)


def ranking_metrics(
    *,
    syn: float | None,
    random_real: float | None,
    syn_hard: float | None,
    full_hard: float | None,
    syn_noaug: float | None = None,
    random_noaug: float | None = None,
    w: float = LRS_WEIGHT,
    g: float = ARS_WEIGHT,
) -> RankingMetrics:
    """All four metrics for one set and one evaluation model.

    Args:
        syn: acc(syn) under the set's own protocol (with its train-time augmentation).
        random_real: acc(random real subset of the same IPC) under that protocol and labels.
        syn_hard: acc(syn) trained with hard labels (classic protocol).
        full_hard: acc(full real training set) with hard labels.
        syn_noaug: acc(syn) under its protocol without train-time augmentation.
        random_noaug: acc(random real) under that protocol without augmentation.
        w: LRS weight of IOR (DD-Ranking default 0.5).
        g: ARS weight of the augmented gap (DD-Ranking default 0.5).

    Raises:
        ConfigError: an accuracy outside [0, 1] (percent) or a weight outside [0, 1].
    """
    i = ior(syn, random_real)
    h = hlr(full_hard, syn_hard)
    a, score = lrs(i, h, w)
    aug, noaug, b, ars_score = ars(syn, random_real, syn_noaug, random_noaug, g)
    return RankingMetrics(i, h, a, score, aug, noaug, b, ars_score)
