"""Versioned evaluation protocols: how a synthetic set is scored, as data.

The ``classic`` protocol is the one DC/DSA/DM, MTT, FTD and DATM report (see ``shared/reference/trajectory.md``
§1.4 and ``ecosystem.md`` §0): a fresh network trained on the synthetic set with SGD (momentum 0.9, weight decay
5e-4), lr = the set's learned lr or 0.01, lr x0.1 at half the epochs, DSA augmentation, batch 256, 1000 epochs,
and the **final-epoch** test accuracy (never best-on-test) averaged over seeds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from condense.config import check_range
from condense.errors import ConfigError, UnknownNameError
from condense.registry import did_you_mean

__all__ = ["EvalProtocol", "PROTOCOLS", "get_protocol"]


@dataclass(frozen=True, kw_only=True)
class EvalProtocol:
    """How to train and score a model on a synthetic set.

    Args:
        name: protocol name written into every result row.
        version: bumped whenever a change could move a number.
        epochs: training epochs over the synthetic set (classic: 1000; the loop runs exactly this many).
        lr: learning rate when the set carries no learned lr.
        use_learned_lr: train with the set's learned lr (MTT family) when it has one.
        momentum: SGD momentum.
        weight_decay: SGD weight decay (L2 added to the gradient, torch.optim.SGD semantics).
        lr_decay_at: fraction of epochs after which lr is multiplied by ``lr_decay``.
        lr_decay: multiplicative lr drop.
        batch_size: synthetic images per step.
        augment: augmentation name (``condense.augment``); "auto" = DSA, without flip on digit datasets.
        temperature: soft-label temperature: targets are softmax(labels / T), KD loss scaled by T^2.
        test_batch_size: test-set batch size (memory only, not accuracy).
    """

    name: str = "classic"
    version: int = 1
    epochs: int = 1000
    lr: float = 0.01
    use_learned_lr: bool = True
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_decay_at: float = 0.5
    lr_decay: float = 0.1
    batch_size: int = 256
    augment: str = "auto"
    temperature: float = 1.0
    test_batch_size: int = 1024

    def __post_init__(self) -> None:
        check_range("epochs", self.epochs, 1)
        check_range("lr", self.lr, 0.0, lo_open=True)
        check_range("momentum", self.momentum, 0.0, 1.0)
        check_range("weight_decay", self.weight_decay, 0.0)
        check_range("lr_decay_at", self.lr_decay_at, 0.0, 1.0)
        check_range("batch_size", self.batch_size, 1)
        check_range("temperature", self.temperature, 0.0, lo_open=True)

    def augment_for(self, dataset: str) -> str:
        """Resolve ``augment="auto"`` for ``dataset``."""
        from condense.augment import resolve_augment

        return resolve_augment(self.augment, dataset)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> EvalProtocol:
        """A copy with ``changes`` (None values ignored, so CLI defaults keep the protocol's)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        bad = [k for k in changes if k not in {f.name for f in dataclasses.fields(self)}]
        if bad:
            raise ConfigError(f"unknown protocol field '{bad[0]}'")
        return dataclasses.replace(self, **changes)


PROTOCOLS: dict[str, EvalProtocol] = {
    "classic": EvalProtocol(),
    # The same recipe without augmentation (DD-Ranking's augmentation-robust score needs both).
    "classic_noaug": EvalProtocol(name="classic_noaug", augment="none"),
}


def get_protocol(name: str | EvalProtocol) -> EvalProtocol:
    """Look up a named protocol (or pass an :class:`EvalProtocol` through)."""
    if isinstance(name, EvalProtocol):
        return name
    if name not in PROTOCOLS:
        names = sorted(PROTOCOLS)
        raise UnknownNameError(f"unknown protocol '{name}'{did_you_mean(name, names)} available: {', '.join(names)}")
    return PROTOCOLS[name]
