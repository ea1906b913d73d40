"""The transfer protocol: pre-train a fresh network on a distilled set, then fine-tune it on a target task.

This is how KRR-ST (Lee et al., ICLR 2024, arXiv:2310.06511) scores its sets (``db-Lee/selfsup_dd:test.py``,
``algorithms/pretrain_krr_st.py``, ``algorithms/pretrain_dc.py``, ``algorithms/finetune.py``; research note
``shared/reference/fyi-krrst-sota.md`` §2.4):

1. **pre-train** a fresh network on the set: a set that carries ``tensors["krr_targets"]`` (KRR-ST) with
   MSE(f(X_s), Y_s), the head sized to the representation, SGD lr 0.1, momentum 0.9, weight decay 1e-3, batch 256,
   no augmentation, no schedule (``pretrain_krr_st.py:15-35``, ``train.py:145-149``); a labeled set with
   cross-entropy, SGD lr 0.01, weight decay 5e-4, lr x0.1 at half (``pretrain_dc.py``; condense augments with the
   shift and the dataset's flip policy instead of the full DSA);
2. **fine-tune** on the target: drop the head, a new linear head, SGD lr 0.01, momentum 0.9, weight decay 5e-4,
   cosine over ``finetune_iterations``, batch 256, shift + flip (never on digits) (``finetune.py:25-33``);
   ``mode="linear"`` trains only the new head on frozen features (BatchNorm in eval mode);
3. the **final-iteration** test accuracy, mean and std over seeds (``test.py --num_test 3``).

Rows (:func:`transfer_evaluate`): ``set`` (the distilled set), ``scratch`` (no pre-training, ``test_scratch.py``),
``random_real`` (a random real subset of the source of the same size, pre-trained with the set's objective: for a
KRR-ST set its targets are the encoder's representations of the subset, which is KRR-ST's own initialization, so
an encoder is required), and for a KRR-ST set also ``random_real_labels`` (the same subset with cross-entropy on
its labels, the paper's "random" baseline).

Targets offline (the paper's fine-grained targets are not available): :func:`class_split` (distill from half the
classes, transfer to the other half) and :func:`few_labels` (n labeled training images per class).

Randomness: seed s pre-trains from ``derive_seed("condense-transfer", s, "init")``, orders batches from
``generator("condense-eval", s, ...)``, and draws the random subset from ``derive_seed("condense-random-real", s)``.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from condense.augment import NO_FLIP_DATASETS, functional
from condense.config import check_choice, check_range
from condense.data.base import ImageData
from condense.errors import ConfigError, MismatchError
from condense.eval.protocol import PROTOCOLS
from condense.models import create_model
from condense.seeding import derive_seed, generator, seeded

__all__ = ["TransferProtocol", "class_split", "few_labels", "finetune", "pretrain", "transfer_evaluate"]


@dataclass(frozen=True, kw_only=True)
class TransferProtocol:
    """The pre-train then fine-tune protocol of KRR-ST, as data (defaults: ``db-Lee/selfsup_dd``)."""

    kind: ClassVar[str] = "images"
    name: str = "transfer"
    version: int = 1
    model: str = "convnet_bn"  # test_model "base": the distillation ConvNet with BatchNorm
    width: int = 128
    depth: int = 3
    pretrain_epochs: int = 1000  # train.py --pre_epoch 1000 (also pretrain_dc.py's 1000 epochs)
    batch_pretrain: int = 256  # train.py --pre_batch_size 256
    lr_pretrain: float = 0.1  # MSE pre-training: train.py --pre_lr 0.1
    weight_decay_pretrain: float = 1e-3  # train.py --pre_wd 1e-3
    lr_pretrain_ce: float = 0.01  # cross-entropy pre-training of labeled sets (pretrain_dc.py)
    weight_decay_pretrain_ce: float = 5e-4  # pretrain_dc.py
    finetune_iterations: int = 10000  # 10k for CIFAR/Tiny targets, 5k for the others (finetune.py)
    batch_finetune: int = 256
    lr_finetune: float = 0.01
    weight_decay_finetune: float = 5e-4
    momentum: float = 0.9
    crop_padding: int = 4  # RandomCrop(padding 4) of the fine-tuning (and CE pre-training) batches, as a shift
    mode: str = "finetune"  # "finetune" the whole network, or "linear": a head on frozen features

    def __post_init__(self) -> None:
        for f in ("width", "depth", "pretrain_epochs", "batch_pretrain", "finetune_iterations", "batch_finetune"):
            check_range(f, getattr(self, f), 1)
        for f in ("lr_pretrain", "lr_pretrain_ce", "lr_finetune"):
            check_range(f, getattr(self, f), 0.0, lo_open=True)
        check_range("momentum", self.momentum, 0.0, 1.0)
        check_range("crop_padding", self.crop_padding, 0)
        check_choice("mode", self.mode, ("finetune", "linear"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TransferProtocol:
        """A copy with ``changes`` (None values ignored); an unknown field is refused naming the fields."""
        changes = {k: v for k, v in changes.items() if v is not None}
        names = [f.name for f in dataclasses.fields(self)]
        bad = [k for k in changes if k not in names]
        if bad:
            raise ConfigError(f"unknown TransferProtocol field '{bad[0]}'; fields: {', '.join(names)}")
        return dataclasses.replace(self, **changes)


PROTOCOLS.register("transfer")(TransferProtocol())


# ---------------------------------------------------------------------------------------------------------------------
# Target tasks
# ---------------------------------------------------------------------------------------------------------------------


def _subset(data: ImageData, classes: list[int], train_idx: torch.Tensor | None = None) -> ImageData:
    remap = torch.full((data.num_classes,), -1, dtype=torch.long)
    remap[torch.tensor(classes)] = torch.arange(len(classes))
    tr = torch.isin(data.y_train, torch.tensor(classes)).nonzero().flatten() if train_idx is None else train_idx
    te = torch.isin(data.y_test, torch.tensor(classes)).nonzero().flatten()
    return ImageData(
        data.name,
        data.x_train[tr],
        remap[data.y_train[tr]],
        data.x_test[te],
        remap[data.y_test[te]],
        [data.classes[c] for c in classes],
        tuple(data.mean),
        tuple(data.std),
        data.zca,
    )


def class_split(data: ImageData, seed: int = 0) -> tuple[ImageData, ImageData]:
    """Split the classes in two halves (a permutation from ``derive_seed("condense-class-split", seed)``): the
    source (first half, distill and train the encoder on it) and the target (the other half, transfer to it). Each
    keeps the dataset's name and preprocessing, its own fingerprint, and labels renumbered 0..k-1.

    Example:
        >>> from condense.data import load_dataset
        >>> src, tgt = class_split(load_dataset("digits"), seed=0)
        >>> len(set(src.classes) & set(tgt.classes))
        0
    """
    if data.num_classes < 2:
        raise ConfigError(f"class_split needs at least 2 classes, '{data.name}' has {data.num_classes}")
    g = torch.Generator().manual_seed(derive_seed("condense-class-split", seed))
    perm = torch.randperm(data.num_classes, generator=g, device=g.device).tolist()
    half = data.num_classes // 2
    return _subset(data, sorted(perm[:half])), _subset(data, sorted(perm[half:]))


def few_labels(data: ImageData, n: int, seed: int = 0) -> ImageData:
    """``data`` with only ``n`` training images per class (drawn with ``derive_seed("condense-few-labels", seed)``);
    the test split is unchanged."""
    check_range("n", n, 1)
    g = torch.Generator().manual_seed(derive_seed("condense-few-labels", seed))
    idx = []
    for c in range(data.num_classes):
        cls = (data.y_train == c).nonzero().flatten()
        if len(cls) < n:
            raise ConfigError(f"few_labels n={n} exceeds the {len(cls)} training images of class {data.classes[c]}")
        idx.append(cls[torch.randperm(len(cls), generator=g, device=g.device)[:n]])
    return _subset(data, list(range(data.num_classes)), torch.cat(idx).sort().values)


# ---------------------------------------------------------------------------------------------------------------------
# Pre-training and fine-tuning
# ---------------------------------------------------------------------------------------------------------------------


def _fill(data: ImageData) -> torch.Tensor:
    if data.zca is not None:
        return torch.zeros(1, data.channels, 1, 1)
    return (-torch.tensor(data.mean) / torch.tensor(data.std)).reshape(1, -1, 1, 1)


def _augment(x: torch.Tensor, data: ImageData, pad: int, gen: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    if pad:
        fill = _fill(data).to(x.device)
        x = functional.crop(x - fill, torch.randint(-pad, pad + 1, (b, 2), generator=gen, device=gen.device)) + fill
    if data.name not in NO_FLIP_DATASETS:
        x = functional.flip(x, torch.rand(b, generator=gen, device=gen.device).to(x.device) < 0.5)
    return x


def _model(protocol: TransferProtocol, data: ImageData, out_dim: int, seed: int, device: Any) -> nn.Module:
    c, (h, w) = data.channels, data.image_size
    with torch.device(device):
        return create_model(
            protocol.model,
            in_channels=c,
            num_classes=out_dim,
            image_size=(h, w),
            seed=seed,
            width=protocol.width,
            depth=protocol.depth,
        )


def pretrain(
    x: torch.Tensor,
    y: torch.Tensor,
    data: ImageData,
    protocol: TransferProtocol,
    seed: int,
    device: Any = "cpu",
) -> nn.Module:
    """Pre-train a fresh network on ``(x, y)``: MSE when ``y`` is a float (N, D) representation, cross-entropy with
    the step schedule when it is (N,) int labels (of ``data``'s classes)."""
    regress = y.is_floating_point()
    out_dim = y.shape[1] if regress else data.num_classes
    net = _model(protocol, data, out_dim, derive_seed("condense-transfer", seed, "init"), device).train()
    lr = protocol.lr_pretrain if regress else protocol.lr_pretrain_ce
    wd = protocol.weight_decay_pretrain if regress else protocol.weight_decay_pretrain_ce
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=protocol.momentum, weight_decay=wd)
    gen = generator("condense-eval", seed, "pretrain")
    x, y = x.to(device), y.to(device)
    n, b = len(x), protocol.batch_pretrain
    for epoch in range(protocol.pretrain_epochs):
        if not regress and epoch == protocol.pretrain_epochs // 2:
            for g in opt.param_groups:
                g["lr"] = lr * 0.1
        order = torch.randperm(n, generator=gen, device=gen.device).to(device)
        for i in range(0, n, b):
            xb, yb = x[order[i : i + b]], y[order[i : i + b]]
            if regress:
                loss = F.mse_loss(net(xb), yb)  # no augmentation (pretrain_krr_st.py:28-35)
            else:
                loss = F.cross_entropy(net(_augment(xb, data, protocol.crop_padding, gen)), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net


def finetune(
    net: nn.Module | None, target: ImageData, protocol: TransferProtocol, seed: int, device: Any = "cpu"
) -> float:
    """Fine-tune (or linear-probe) ``net`` on ``target`` with a new head; ``None`` starts from a fresh network (the
    scratch row). Returns the final-iteration top-1 test accuracy, a fraction."""
    if net is None:
        net = _model(protocol, target, target.num_classes, derive_seed("condense-transfer", seed, "init"), device)
    with seeded(derive_seed("condense-transfer", seed, "head")):
        net.classifier = nn.Linear(net.num_features, target.num_classes).to(device)
    linear = protocol.mode == "linear"
    params = net.classifier.parameters() if linear else net.parameters()
    opt = torch.optim.SGD(
        params, lr=protocol.lr_finetune, momentum=protocol.momentum, weight_decay=protocol.weight_decay_finetune
    )
    gen = generator("condense-eval", seed, "finetune")
    x_all, y_all = target.x_train.to(device), target.y_train.to(device)
    n, b, t_max = len(x_all), min(protocol.batch_finetune, len(x_all)), protocol.finetune_iterations
    net.train()
    if linear:
        net.requires_grad_(False).eval()
        net.classifier.requires_grad_(True)
    for it in range(t_max):
        for g in opt.param_groups:  # CosineAnnealingLR(T_max = iterations), stepped per iteration
            g["lr"] = protocol.lr_finetune * 0.5 * (1 + math.cos(math.pi * it / t_max))
        idx = torch.randint(0, n, (b,), generator=gen, device=gen.device).to(device)
        xb = _augment(x_all[idx], target, protocol.crop_padding, gen)
        loss = F.cross_entropy(net(xb), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        x_te, y_te = target.x_test.to(device), target.y_test.to(device)
        correct = sum(
            int((net(x_te[i : i + 1024]).argmax(1) == y_te[i : i + 1024]).sum()) for i in range(0, len(x_te), 1024)
        )
    return correct / max(1, len(x_te))


def _row(name: str, accs: list[float], protocol: TransferProtocol, num_images: int) -> dict[str, Any]:
    return {
        "row": name,
        "accuracy_mean": statistics.fmean(accs),
        "accuracy_std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
        "accuracies": list(accs),
        "num_images": int(num_images),
        "protocol": protocol.to_dict(),
    }


def transfer_evaluate(
    syn: Any,
    source: ImageData,
    target: ImageData,
    *,
    protocol: TransferProtocol | None = None,
    seeds: int = 3,
    encoder: Any = None,
    rows: tuple[str, ...] = ("set", "scratch", "random_real", "random_real_labels"),
    device: Any = "cpu",
) -> list[dict[str, Any]]:
    """Score a distilled set of ``source`` by transfer to ``target``; one row per entry of ``rows`` (those that apply).

    Args:
        syn: a :class:`~condense.synthetic.SyntheticSet` of ``source`` (KRR-ST's carries ``krr_targets``).
        source, target: the data the set was distilled from, and the task to fine-tune on (e.g. :func:`class_split`).
        protocol: the protocol (None: ``PROTOCOLS.get("transfer")``); ``protocol.replace(...)`` sizes it.
        seeds: repeats (pre-train + fine-tune), seeds 0..seeds-1.
        encoder: the set's target :class:`~condense.teachers.Encoder`; the ``random_real`` row of a KRR-ST set
            regresses its representations (without it that row is left out).
        rows: which of ``set``, ``scratch``, ``random_real``, ``random_real_labels`` to compute.

    Returns:
        dicts with ``row``, ``accuracy_mean``, ``accuracy_std``, ``accuracies``, ``num_images``, ``protocol``.
    """
    protocol = protocol or PROTOCOLS.get("transfer")
    if not isinstance(protocol, TransferProtocol):
        raise ConfigError(f"transfer_evaluate needs a TransferProtocol, got {type(protocol).__name__}")
    syn.check_compatible(source)
    krr = "krr_targets" in syn.tensors
    if encoder is not None:
        encoder.check_compatible(source)
    if source.channels != target.channels or tuple(source.image_size) != tuple(target.image_size):
        raise MismatchError(
            f"source images {source.channels}x{source.image_size} and target {target.channels}x{target.image_size} "
            "differ; pre-resize the target to the source resolution (as the paper does)"
        )
    m = len(syn.images)
    x_syn = syn.images
    y_syn = syn.tensors["krr_targets"] if krr else syn.labels
    out: list[dict[str, Any]] = []
    for name in rows:
        if name == "random_real" and krr and encoder is None:
            continue
        if name == "random_real_labels" and not krr:
            continue
        accs = []
        for s in range(seeds):
            if name == "scratch":
                net = None
            elif name == "set":
                net = pretrain(x_syn, y_syn, source, protocol, s, device)
            else:
                g = torch.Generator().manual_seed(derive_seed("condense-random-real", s))
                idx = torch.randperm(len(source.x_train), generator=g, device=g.device)[:m]
                x = source.x_train[idx]
                y = encoder.features(x) if (krr and name == "random_real") else source.y_train[idx]
                net = pretrain(x, y, source, protocol, s, device)
            accs.append(finetune(net, target, protocol, s, device))
        out.append(_row(name, accs, protocol, 0 if name == "scratch" else m))
    return out
