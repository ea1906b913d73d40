"""Train students on a teacher's soft labels (the ``soft_label`` protocol) and score them on the real test set.

The recipe is :class:`~condense.eval.protocol.SoftLabelProtocol`: per epoch, the views of the set (a random order
split into batches, RandomResizedCrop + flip per image, CutMix or MixUp per batch) come either from a stored
:class:`~condense.labels.LabelStore` (FKD: the teacher's logits were computed once, the student replays the same
views) or are drawn from the stream ``("condense-views", seed, epoch)`` and labeled by the teacher online (RDED).
For a student seed ``s`` the online views are the ones :func:`condense.labels.relabel` stores with view seed ``s``,
so a store made with seed ``s`` and the online teacher train the same student (tested).

Loss: ``KL(softmax(teacher / T) || softmax(student / T))`` averaged over the batch (``F.kl_div(..., "batchmean")``),
times ``T^2`` only when the protocol says so (SRe2L's ``train_FKD.py`` leaves it out). AdamW, cosine per epoch.
The accuracy is the final epoch's.

A DBR store (``store.mode == "dbr"``, NRR-DD, arXiv:2503.18267 Sec. 3.4) holds two distances per view instead of
logits; the student is then trained with :func:`dbr_loss`, ``L_sce + alpha_dbr * L_dbr`` (alpha_dbr recorded in the
store), against the set's class labels (``labels=``), at temperature 1.

Known differences from the references: SRe2L trains with batch 1024 and gradient accumulation 2 on ImageNet and
tracks the best of evaluations every 10 epochs; RDED's loop runs an extra no-grad forward of the student on the
un-mixed batch (BatchNorm statistics updated twice per step) and reports the best accuracy in the last 20 % of
epochs. Here: one forward per step, the final epoch, and the batch of the protocol.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from condense.augment.views import ViewRecipe, apply_views
from condense.errors import ConfigError, DivergenceError
from condense.eval.images import predict
from condense.eval.protocol import SoftLabelProtocol
from condense.labels import LabelStore, dbr_distances, epoch_views

__all__ = ["dbr_loss", "kd_loss", "train_soft"]


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float, t_squared: bool = False) -> torch.Tensor:
    """KL divergence from the teacher's to the student's softened distribution, batch mean.

    Teacher logits of ``-inf`` (classes a top-k store dropped) have probability 0 and contribute nothing.

    Shape:
        student, teacher: (B, K) logits.
    """
    t = temperature
    target = F.softmax(teacher / t, dim=1)
    log_p = F.log_softmax(student / t, dim=1)
    # kl_div with zero targets gives 0 * log 0 = 0; -inf logits give exact zeros in target
    loss = F.kl_div(log_p, target, reduction="batchmean")
    return loss * (t * t) if t_squared else loss


def dbr_loss(
    student: torch.Tensor,
    target: torch.Tensor,
    labels: torch.Tensor,
    perm: torch.Tensor,
    lam: float,
    alpha: float,
) -> torch.Tensor:
    """NRR-DD's Distance-Based Representative student loss ``L_S = L_sce + alpha * L_dbr`` on one mixed batch.

    Tran et al., CVPR 2025, arXiv:2503.18267, Sec. 3.4, as far as it is public (``shared/reference/decoupled.md``
    4.2: the student minimises ``L_sce + alpha_dbr * L_dbr``, with ``L_dbr`` pulling the student's ``d_org`` and
    ``d_aug`` toward the stored teacher ones). Here, with ``d^S = dbr_distances(student, ...)``:

    - ``L_sce`` = batch mean of ``d_aug^S``: the cross-entropy to the mixed one-hot label (the CutMix / MixUp loss);
    - ``L_dbr`` = batch mean of ``(d_org^S - d_org^T)^2 + (d_aug^S - d_aug^T)^2`` (squared error: a choice, the
      distance between distances is not public).

    Shape:
        student: (B, K) logits; target: (B, 2) stored ``(d_org^T, d_aug^T)``; labels: (B,) the views' own classes;
        perm: (B,) mixing partners.
    """
    d = dbr_distances(student, labels, perm, lam)
    l_sce = d[:, 1].mean()
    l_dbr = (d - target.to(d.device, d.dtype)).pow(2).sum(1).mean()
    return l_sce + float(alpha) * l_dbr


def _no_grad(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return fn(x)


def train_soft(
    images: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    model: str,
    *,
    num_classes: int,
    seeds: Sequence[int],
    protocol: SoftLabelProtocol,
    batch_size: int,
    flip: bool,
    labeler: Callable[[torch.Tensor], torch.Tensor] | None = None,
    store: LabelStore | None = None,
    device: torch.device | str = "cpu",
    quiet: bool = True,
    desc: str = "eval",
    labels: torch.Tensor | None = None,
) -> list[float]:
    """Train one student per seed on ``images`` with soft labels; return their final-epoch test accuracies.

    Args:
        images: the training set (synthetic or real subset), in the teacher's preprocessing.
        x_test, y_test: the real test split.
        model: the student architecture (registered name).
        num_classes: number of classes.
        seeds: one student (initialization) per seed; with an online labeler also its views.
        protocol: the recipe. batch_size, flip: resolved by the caller (``protocol.batch_for`` / ``flip_for``).
        labeler: the teacher (or committee) as a function of a batch -> logits, for online labels.
        store: stored labels to replay instead (its batch size and views win; ``protocol.epochs`` must not exceed
            the store's epochs).
        device: where to train. quiet: hide the progress bar. desc: its label.
        labels: the class of each image; needed (and checked) only with a DBR store (:func:`dbr_loss`).

    Raises:
        ConfigError: neither or both of ``labeler`` and ``store``; a store shorter than the protocol.
        DivergenceError: the student's loss became non-finite.
    """
    from tqdm.auto import tqdm

    from condense.models import create_model

    if (labeler is None) == (store is None):
        raise ConfigError("soft-label training needs either a teacher (online labels) or a label store, not both")
    if store is not None and store.epochs < protocol.epochs:
        raise ConfigError(
            f"the label store holds {store.epochs} epochs but the protocol trains {protocol.epochs}; relabel with "
            f"epochs >= {protocol.epochs} or evaluate with epochs={store.epochs}"
        )
    device = torch.device(device)
    x = images.detach().to(device, torch.float32)
    dbr = store is not None and store.mode == "dbr"
    if store is not None:
        store.check_images(images)
        store.check_labels(labels)
    y_all = labels.detach().to(device, torch.long) if dbr and labels is not None else None
    recipe = ViewRecipe(scale=protocol.scale, flip=flip, mix=protocol.mix, mix_alpha=protocol.mix_alpha)
    hw = (int(x.shape[-2]), int(x.shape[-1]))
    c = int(x.shape[1])
    accs = []
    bar = tqdm(
        total=protocol.epochs * len(seeds), desc=f"{desc} {model} soft x{len(seeds)}", disable=quiet, leave=False
    )
    for s in seeds:
        net = create_model(model, in_channels=c, num_classes=num_classes, image_size=hw, seed=int(s)).to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=protocol.lr, weight_decay=protocol.weight_decay)
        for ep in range(protocol.epochs):
            for group in opt.param_groups:
                group["lr"] = protocol.lr_at(ep)
            net.train()
            if dbr:
                assert y_all is not None
                for v, xb, t in store.batches(x, ep, check=False):
                    y = y_all[v.index.to(device)]
                    loss = dbr_loss(net(xb), t, y, v.perm.to(device), float(v.lam), store.dbr_alpha)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                batches = iter(())
            elif store is not None:
                batches = ((xb, t) for _, xb, t in store.batches(x, ep, check=False))
            else:
                assert labeler is not None
                views = epoch_views(x.shape[0], batch_size, hw, recipe, int(s), ep)
                batches = ((xb, _no_grad(labeler, xb)) for xb in (apply_views(x, v) for v in views))
            for xb, target in batches:
                loss = kd_loss(net(xb), target.to(device), protocol.temperature, protocol.t_squared)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if not math.isfinite(float(loss.detach())):
                raise DivergenceError(f"soft-label student (seed {s}) diverged at epoch {ep} (loss {float(loss)})")
            bar.update(1)
        logits = predict(net, x_test.to(device), protocol.test_batch_size)
        accs.append(float((logits.argmax(1) == y_test.to(device)).float().mean()))
    bar.close()
    return accs
