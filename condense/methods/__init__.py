"""Distillation methods, one file each; importing this package registers them all."""

from __future__ import annotations

from condense.methods import herding, random_real  # noqa: F401
from condense.methods.base import METHODS, Matcher, MatchState, Method, RunContext, distill, get_method, list_methods

__all__ = ["METHODS", "Method", "Matcher", "MatchState", "RunContext", "distill", "get_method", "list_methods"]
from condense.methods import dc, dm  # noqa: F401, E402
from condense.methods import datm, ftd, mtt  # noqa: F401, E402
from condense.methods import herding_graphs, mirage, random_graphs  # noqa: F401,E402  (graph methods)
