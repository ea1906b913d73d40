"""Versioned evaluation protocols: how a synthetic set is scored, as data, one registry for images and graphs.

The ``classic`` protocol is the one DC/DSA/DM, MTT, FTD and DATM report (see ``shared/reference/trajectory.md``
§1.4 and ``ecosystem.md`` §0): a fresh network trained on the synthetic set with SGD (momentum 0.9, weight decay
5e-4), lr = the set's learned lr or 0.01, lr x0.1 at half the epochs, DSA augmentation, batch 256, 1000 epochs,
and the **final-epoch** test accuracy (never best-on-test) averaged over seeds.

The ``datm`` protocol is ``classic`` with batch 128, the batch of DATM's evaluation (every DATM config sets
``batch_train: 128``); use it to compare with DATM's tables. ``classic_noaug`` is ``classic`` without augmentation.

The ``soft_label`` protocol is the post-training of the decoupled methods (SRe2L, RDED and their successors; see
``shared/reference/decoupled.md`` §1 and §5.1): a fresh student (ResNet-18 by default) trained with AdamW on
RandomResizedCrop + flip views mixed with CutMix, against a teacher's logits on the same views (KL at temperature
20), cosine schedule, 300 epochs, final-epoch accuracy. The labels come from a stored label store when the set
carries one (FKD, :mod:`condense.labels`) or from the teacher online (RDED); the random-real baseline is relabeled
by the same teacher under the same protocol.

The ``graph`` protocol trains a fresh GNN with Adam on a graph summary, a graph subset or the full training split
and scores the checkpoint with the best **validation** score on the test split (Mirage, DosCond and KiDD code; see
:mod:`condense.eval.graphs`).

Every protocol carries a ``kind`` (``"images"`` or ``"graphs"``, the ``data.kind`` it applies to) and a ``version``
that is bumped whenever a change could move a number.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from condense.config import check_choice, check_range
from condense.errors import ConfigError
from condense.registry import Registry

__all__ = [
    "EvalProtocol",
    "GraphProtocol",
    "SoftLabelProtocol",
    "GRAPH_PROTOCOL",
    "PROTOCOLS",
    "get_protocol",
    "list_protocols",
]


class _Replaceable:
    """``to_dict`` and a strict ``replace`` shared by both protocol dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def replace(self, **changes: Any):  # -> same class
        """A copy with ``changes`` (None values ignored, so CLI defaults keep the protocol's)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        names = [f.name for f in dataclasses.fields(self)]  # type: ignore[arg-type]
        bad = [k for k in changes if k not in names]
        if bad:
            raise ConfigError(f"unknown {type(self).__name__} field '{bad[0]}'; fields: {', '.join(names)}")
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True, kw_only=True)
class EvalProtocol(_Replaceable):
    """How to train and score an image model on a synthetic set.

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
        source: where the recipe comes from (documentation only; never changes a number).
    """

    kind: ClassVar[str] = "images"

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
    source: str = "MTT utils.py evaluate_synset / DC utils.py (shared/reference/trajectory.md 1.4)"

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


@dataclass(frozen=True, kw_only=True)
class SoftLabelProtocol(_Replaceable):
    """How a student is trained on a set with a teacher's soft labels (the decoupled methods' evaluation).

    Args:
        name, version: written into every row; the version is bumped when a change could move a number.
        model: the default student (SRe2L/RDED: ResNet-18 with the CIFAR stem at 32 px; ``resnet18_bn`` here).
        epochs: passes over the set (SRe2L ``train_FKD.sh`` / RDED: 300).
        lr, weight_decay: AdamW (SRe2L/RDED: 1e-3, 0.01; betas the PyTorch defaults).
        lr_floor: the cosine schedule's floor as a fraction of ``lr`` (SRe2L: 0, cosine to 0; RDED divides its
            cosine by 2, i.e. 0.5). Stepped per epoch, as both references do.
        batch_size: views per step; None: RDED's rule (``argument.py``: 10 at IPC 1, 50 up to IPC 10, 100 above,
            doubled from 100 classes, at most the set's size).
        temperature: KD temperature (SRe2L/RDED with CutMix: 20).
        t_squared: multiply the KL by T^2 (Hinton's scaling); off, as in SRe2L's ``train_FKD.py`` (commented out).
        scale: RandomResizedCrop area range (SRe2L: (0.08, 1)). flip: random flip ("auto": off on digit datasets).
        mix, mix_alpha: ``"cutmix"`` with Beta(1, 1) (SRe2L, RDED), ``"mixup"`` (0.8 in SRe2L's CIFAR script, INFER)
            or ``"none"``.
        labels: ``"auto"`` (the set's label store when it carries one, else the teacher online), ``"online"`` or
            ``"stored"``.
        test_batch_size: test-set batch size (memory only).
        source: where the recipe comes from (documentation only).
    """

    kind: ClassVar[str] = "images"

    name: str = "soft_label"
    version: int = 1
    model: str = "resnet18_bn"
    epochs: int = 300
    lr: float = 1e-3
    weight_decay: float = 0.01
    lr_floor: float = 0.0
    batch_size: int | None = None
    temperature: float = 20.0
    t_squared: bool = False
    scale: tuple[float, float] = (0.08, 1.0)
    flip: str = "auto"
    mix: str = "cutmix"
    mix_alpha: float = 1.0
    labels: str = "auto"
    test_batch_size: int = 1024
    source: str = (
        "SRe2L validate/train_FKD.py + train_FKD.sh (AdamW 1e-3 wd 0.01, cosine, KL T 20 without T^2, CutMix, "
        "RandomResizedCrop(0.08-1) + flip, 300 epochs); batch by RDED's argument.py rule; final epoch "
        "(shared/reference/decoupled.md 1.1, 1.2, 5.1)"
    )

    def __post_init__(self) -> None:
        check_range("epochs", self.epochs, 1)
        check_range("lr", self.lr, 0.0, lo_open=True)
        check_range("weight_decay", self.weight_decay, 0.0)
        check_range("lr_floor", self.lr_floor, 0.0, 1.0)
        if self.batch_size is not None:
            check_range("batch_size", self.batch_size, 1)
        check_range("temperature", self.temperature, 0.0, lo_open=True)
        check_choice("flip", self.flip, ("auto", "on", "off"))
        check_choice("mix", self.mix, ("cutmix", "mixup", "none"))
        check_range("mix_alpha", self.mix_alpha, 0.0, lo_open=True)
        check_choice("labels", self.labels, ("auto", "online", "stored"))

    def batch_for(self, ipc: int, num_classes: int) -> int:
        """The batch size: ``batch_size``, else RDED's rule (``argument.py``: 10 at IPC 1, 50 up to IPC 10, else
        100; x2 from 100 classes; at most ``ipc * num_classes``)."""
        if self.batch_size is not None:
            return self.batch_size
        base = 10 if ipc <= 1 else 50 if ipc <= 10 else 100
        return min(base * (2 if num_classes >= 100 else 1), ipc * num_classes)

    def flip_for(self, dataset: str) -> bool:
        """Resolve ``flip="auto"``: no flip on digit datasets (mirrored digits are other glyphs)."""
        from condense.augment import NO_FLIP_DATASETS

        return self.flip == "on" or (self.flip == "auto" and dataset not in NO_FLIP_DATASETS)

    def lr_at(self, epoch: int) -> float:
        """The cosine schedule at ``epoch`` (0-based), from ``lr`` down to ``lr * lr_floor``."""
        import math

        cos = 0.5 * (1.0 + math.cos(math.pi * epoch / self.epochs))
        return self.lr * (self.lr_floor + (1.0 - self.lr_floor) * cos)


@dataclass(frozen=True, kw_only=True)
class GraphProtocol(_Replaceable):
    """How a GNN is trained and scored on a graph source.

    Args:
        name, version: written into every row; the version is bumped when a change could move a number.
        epochs: passes over the training graphs (tree-sets for summaries).
        min_steps: optimizer steps at least, whatever the training-set size.
        batch_size: graphs per step.
        lr: Adam learning rate. weight_decay: Adam (L2) weight decay.
        hidden: GNN width. layers: GNN depth for graph sources (summaries use their mined depth L).
        pooling: readout, ``"sum"``, ``"mean"`` or ``"logit_sum"`` (node logits summed). dropout: before the
            classifier.
        select: which model is scored on the test split: ``"val"``, the checkpoint with the best validation score
            (ROC-AUC, accuracy when K > 2) among ``val_checks`` evenly spaced checks, as the Mirage, DosCond and KiDD
            code do; ``"final"``, the last one (also used when the dataset has no validation graphs).
        val_checks: validation checks per run when ``select="val"``.
    """

    kind: ClassVar[str] = "graphs"

    name: str = "graph"
    version: int = 3  # 3: batch order from seeding.generator("condense-eval", seed); 2: best-validation checkpoint
    epochs: int = 100  # library choice (Mirage trains NCI1 300 epochs at batch 500)
    min_steps: int = 3000  # library choice: with best-validation selection a longer floor costs only time (NCI1
    # Mirage theta 0.2, 5 seeds: 0.669 with 1000 steps, 0.688 with 3000; random graphs 0.565 / 0.550)
    batch_size: int = 64  # Mirage DD/molhiv: 64
    lr: float = 0.005  # Mirage: Adam 1e-3; larger here so CPU runs converge in fewer steps
    weight_decay: float = 5e-4
    hidden: int = 64  # Mirage TU: 64-128
    layers: int = 2  # Mirage NCI1 / DD: 2
    pooling: str = "sum"  # Mirage NCI1 / IMDB-B / DD: sum (mean scored lower on NCI1 here too)
    dropout: float = 0.0
    select: str = "val"  # Mirage / DosCond / KiDD code: test score at the best-validation epoch
    val_checks: int = 20  # library choice: every 5% of the run

    def __post_init__(self) -> None:
        check_choice("select", self.select, ("val", "final"))
        check_range("val_checks", self.val_checks, 1)
        check_range("epochs", self.epochs, 1)
        check_range("min_steps", self.min_steps, 0)
        check_range("batch_size", self.batch_size, 1)
        check_range("lr", self.lr, 0.0, lo_open=True)
        check_range("weight_decay", self.weight_decay, 0.0)
        check_range("dropout", self.dropout, 0.0, 1.0)


GRAPH_PROTOCOL = GraphProtocol()

PROTOCOLS: Registry[EvalProtocol | GraphProtocol | SoftLabelProtocol] = Registry("protocol")
PROTOCOLS.register("classic")(EvalProtocol())
# The same recipe without augmentation (DD-Ranking's augmentation-robust score needs both).
PROTOCOLS.register("classic_noaug")(EvalProtocol(name="classic_noaug", augment="none"))
# DATM's evaluation: the classic recipe with batch 128 (every DATM config sets batch_train: 128, which
# utils/utils_baseline.py feeds to the evaluation's DataLoader); soft labels already train with the KD loss at T = 1,
# whose gradient equals DATM's soft cross-entropy. Not chosen automatically: pass protocol="datm".
PROTOCOLS.register("datm")(
    EvalProtocol(
        name="datm",
        batch_size=128,
        source="DATM configs/{CIFAR-10,CIFAR-100,TinyImageNet}/ConvIN/IPC*.yaml batch_train: 128 at 97ae510 "
        "(shared/reference/trajectory.md 1.4 and 4.2; fidelity-audit.md finding 5)",
    )
)
PROTOCOLS.register("graph")(GRAPH_PROTOCOL)
PROTOCOLS.register("soft_label")(SoftLabelProtocol())

#: The protocol ``evaluate`` uses when none is given, by ``data.kind``.
DEFAULT_PROTOCOLS = {"images": "classic", "graphs": "graph"}


def get_protocol(
    name: str | EvalProtocol | GraphProtocol | SoftLabelProtocol,
) -> EvalProtocol | GraphProtocol | SoftLabelProtocol:
    """Look up a named protocol (or pass a protocol object through).

    Example:
        >>> get_protocol("graph").kind
        'graphs'
    """
    if isinstance(name, (EvalProtocol, GraphProtocol, SoftLabelProtocol)):
        return name
    return PROTOCOLS.get(name)


def list_protocols(pattern: str = "*") -> list[str]:
    """Registered protocol names matching the fnmatch ``pattern``."""
    return PROTOCOLS.list(pattern)
