"""condense: dataset distillation (synthetic set condensation) in PyTorch.

Example:
    >>> import condense
    >>> data = condense.load_dataset("digits")
    >>> syn = condense.distill("random_real", data, ipc=1)
    >>> len(syn)
    10
"""

from __future__ import annotations

from condense._version import __version__
from condense.data import ImageData, list_datasets, load_dataset
from condense.errors import CondenseError
from condense.eval import evaluate, random_real_baseline
from condense.methods.base import RunContext, distill, get_method, list_methods
from condense.synthetic import SyntheticSet


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching ``pattern`` (plus any ``timm:<name>``)."""
    from condense.models import list_models as _list

    return _list(pattern)


__all__ = [
    "__version__",
    "CondenseError",
    "ImageData",
    "RunContext",
    "SyntheticSet",
    "distill",
    "evaluate",
    "get_method",
    "list_datasets",
    "list_methods",
    "list_models",
    "load_dataset",
    "random_real_baseline",
]
