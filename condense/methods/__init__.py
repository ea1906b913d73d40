"""Distillation methods, one file each; importing this package registers them all."""

from __future__ import annotations

from condense.methods import (  # noqa: F401  (registers every built-in method)
    datm,
    dc,
    dm,
    doscond,
    ftd,
    herding,
    herding_graphs,
    mirage,
    mtt,
    random_graphs,
    random_real,
)
from condense.methods.base import METHODS, Matcher, MatchState, Method, RunContext, distill, get_method, list_methods

__all__ = ["METHODS", "Method", "Matcher", "MatchState", "RunContext", "distill", "get_method", "list_methods"]
