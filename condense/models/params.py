"""Flat <-> named parameters: the one conversion the expert buffer, the recorder and the student unroll share.

Expert buffers store each snapshot as one flat float vector in ``named_parameters()`` order; trajectory matching
unrolls a student on such a vector and calls the model with ``torch.func.functional_call`` on named views of it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from condense.errors import MismatchError

__all__ = ["ParamLayout"]


@dataclass(frozen=True)
class ParamLayout:
    """Names and shapes of a model's parameters, in the order of one flat vector.

    :meth:`unflatten` returns views (no copies), so gradients of anything computed from them flow back into the flat
    vector. Leading dimensions are kept, so a stack of K experts ``(K, P)`` unflattens to ``(K, *shape)`` per name.

    Example:
        >>> lay = ParamLayout.from_module(torch.nn.Linear(3, 2))
        >>> lay.numel, sorted(lay.unflatten(torch.zeros(lay.numel)))
        (8, ['bias', 'weight'])
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def from_module(cls, module: nn.Module) -> ParamLayout:
        """Layout of ``module.named_parameters()`` (the order experts are flattened in)."""
        items = list(module.named_parameters())
        return cls(tuple(n for n, _ in items), tuple(tuple(p.shape) for _, p in items))

    @property
    def sizes(self) -> tuple[int, ...]:
        """Element count of each parameter, in layout order."""
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def numel(self) -> int:
        """P, the length of the flat vector."""
        return sum(self.sizes)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named views of a flat vector.

        Shape:
            flat: (..., P); return: name -> (..., *shape), views of ``flat`` in layout order.

        Raises:
            MismatchError: the last dimension is not P.
        """
        if flat.shape[-1] != self.numel:
            raise MismatchError(f"flat parameters have length {flat.shape[-1]}, the model has {self.numel}")
        lead = flat.shape[:-1]
        parts = flat.split(self.sizes, dim=-1)
        return {n: p.view(*lead, *s) for n, p, s in zip(self.names, parts, self.shapes, strict=True)}

    def flatten(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Inverse of :meth:`unflatten`: concatenate in layout order.

        Shape:
            params: name -> (..., *shape); return: (..., P).

        Raises:
            MismatchError: a parameter of the layout is missing.
        """
        missing = [n for n in self.names if n not in params]
        if missing:
            raise MismatchError(f"parameters {missing} are missing; the model has {list(self.names)}")
        first, shape0 = params[self.names[0]], self.shapes[0]
        lead = first.shape[: first.ndim - len(shape0)]
        return torch.cat([params[n].reshape(*lead, -1) for n in self.names], dim=-1)
