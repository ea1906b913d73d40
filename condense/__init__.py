"""condense: dataset distillation (synthetic set condensation) in PyTorch.

The names below load on first use (PEP 562), so ``import condense`` and ``condense --help`` stay fast and do not
import torch until a dataset, method or artifact is touched.

Example:
    >>> import condense
    >>> data = condense.load_dataset("digits")
    >>> syn = condense.distill("random_real", data, ipc=1)
    >>> len(syn)
    10
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from condense._version import __version__
from condense.errors import CondenseError

if TYPE_CHECKING:
    from condense.data import ImageData, list_datasets, load_dataset
    from condense.eval import evaluate, full_data_baseline, random_real_baseline
    from condense.methods import RunContext, distill, get_method, list_methods
    from condense.models import list_models
    from condense.synthetic import SyntheticSet

#: public name -> the module that defines it
_EXPORTS = {
    "ImageData": "condense.data",
    "list_datasets": "condense.data",
    "load_dataset": "condense.data",
    "evaluate": "condense.eval",
    "full_data_baseline": "condense.eval",
    "random_real_baseline": "condense.eval",
    "RunContext": "condense.methods",
    "distill": "condense.methods",
    "get_method": "condense.methods",
    "list_methods": "condense.methods",
    "list_models": "condense.models",
    "SyntheticSet": "condense.synthetic",
}

__all__ = [
    "__version__",
    "CondenseError",
    "ImageData",
    "RunContext",
    "SyntheticSet",
    "distill",
    "evaluate",
    "full_data_baseline",
    "get_method",
    "list_datasets",
    "list_methods",
    "list_models",
    "load_dataset",
    "random_real_baseline",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'condense' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
