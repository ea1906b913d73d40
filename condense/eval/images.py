"""Train fresh models on a (synthetic) training set and score them on the real test set.

Two paths with the same arithmetic, so they give the same numbers:

- **vmap** (models without running statistics, e.g. the instance-norm ConvNet): the S seeds' models are
  stacked with ``torch.func.stack_module_state`` and trained at once with ``vmap(grad(loss))`` and a
  functional SGD that reproduces ``torch.optim.SGD`` (momentum, L2 weight decay). One kernel launch serves
  all seeds, which is where the speed-up comes from at distillation-sized batches.
- **loop** (BatchNorm models, or ``vmap=False``): one ``nn.Module`` and ``torch.optim.SGD`` per seed.

Every seed owns a CPU ``torch.Generator`` (``generator("condense-eval", seed)``, the stream the graph
evaluator uses too) that draws its batch order and its augmentation parameters in the same sequence on both paths;
augmentation is applied per seed outside ``vmap`` (DSA draws one op group per call, which vmap cannot express).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from condense.errors import ConfigError
from condense.eval.protocol import EvalProtocol
from condense.optim import sgd_tree
from condense.seeding import generator

__all__ = ["train_and_test", "soft_target_loss", "predict"]

logger = logging.getLogger("condense")


def soft_target_loss(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-entropy for hard targets; KD loss (KL to softmax(targets / T), scaled by T^2) for soft targets.

    Shape:
        logits: (B, K).
        targets: (B,) int64 class indices, or (B, K) float logits.
    """
    if targets.ndim == 1:
        return F.cross_entropy(logits, targets)
    t = temperature
    return F.kl_div(F.log_softmax(logits / t, 1), F.softmax(targets / t, 1), reduction="batchmean") * (t * t)


def _lr_at(epoch: int, base_lr: float, proto: EvalProtocol) -> float:
    return base_lr * (proto.lr_decay if epoch >= int(proto.epochs * proto.lr_decay_at) else 1.0)


def _batches(n: int, gen: torch.Generator, batch_size: int) -> list[torch.Tensor]:
    perm = torch.randperm(n, generator=gen, device=gen.device)
    return list(perm.split(batch_size))


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    """``model``'s logits on ``x`` in eval mode, ``batch`` images at a time."""
    model.eval()
    return torch.cat([model(x[i : i + batch]) for i in range(0, x.shape[0], batch)])


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Per-seed accuracy of (S, M, K) logits."""
    correct = (logits.argmax(-1) == y).sum(-1).tolist()
    return [int(c) / max(1, y.shape[0]) for c in correct]


def train_and_test(
    images: torch.Tensor,
    labels: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    model: str,
    *,
    num_classes: int,
    seeds: Sequence[int],
    protocol: EvalProtocol,
    lr: float,
    augment: str,
    device: torch.device | str = "cpu",
    vmap: bool | None = None,
    quiet: bool = True,
    desc: str = "eval",
    return_logits: bool = False,
) -> list[float] | tuple[list[float], torch.Tensor]:
    """Train one fresh ``model`` per seed on ``(images, labels)``; return the final-epoch test accuracies.

    Args:
        images: training images (synthetic set, random subset or full data).
        labels: hard or soft (logit) labels.
        x_test: real test images with the same preprocessing.
        y_test: test labels.
        model: registered model name (``condense models``).
        num_classes: number of classes.
        seeds: one model (initialization + batch order + augmentation) per seed.
        protocol: the evaluation recipe (epochs, SGD settings, schedule, batch size, temperature).
        lr: initial learning rate (the set's learned lr or the protocol's).
        augment: augmentation name (``condense.augment``), resolved by the caller.
        device: where to train.
        vmap: force (True) or forbid (False) the vmapped path; None = vmap on CUDA when the model allows it
            (on CPUs the loop is faster; ``benchmarks/eval_speed.py`` measures both).
        quiet: hide the progress bar.
        desc: progress-bar label.
        return_logits: also return the final test logits of every seed (for checks and ensembling).

    Shape:
        images: (N, C, H, W) float32.
        labels: (N,) int64 or (N, K) float32.
        x_test: (M, C, H, W); y_test: (M,) int64.
        return: list of S accuracies in [0, 1] (and logits (S, M, K) when ``return_logits``).
    """
    from condense.augment import get_augment
    from condense.models import create_model, has_running_stats

    device = torch.device(device)
    images = images.detach().to(device, torch.float32)
    labels = labels.detach().to(device)
    x_test, y_test = x_test.to(device), y_test.to(device)
    c, h, w = images.shape[1:]
    models = [
        create_model(model, in_channels=c, num_classes=num_classes, image_size=(h, w), seed=int(s)).to(device)
        for s in seeds
    ]
    aug = get_augment(augment)
    # per-seed CPU generator for batch order and augmentation: a stream apart from model init (graphs use it too)
    gens = [generator("condense-eval", s) for s in seeds]
    # vmap pays on GPUs (one launch for all seeds); on CPUs grouped convolutions are slower than a loop.
    use_vmap = (device.type == "cuda" and not any(has_running_stats(m) for m in models)) if vmap is None else vmap
    if use_vmap and any(has_running_stats(m) for m in models):
        raise ConfigError(f"model '{model}' keeps running statistics and cannot be vmapped over seeds; pass vmap=False")
    from tqdm.auto import tqdm

    bar = tqdm(range(protocol.epochs), desc=f"{desc} {model} x{len(seeds)}", disable=quiet, leave=False)
    if use_vmap:
        logits = _train_vmap(models, images, labels, x_test, gens, aug, protocol, lr, bar)
    else:
        logits = torch.stack(
            [
                _train_one(m, images, labels, x_test, g, aug, protocol, lr, bar if i == 0 else None)
                for i, (m, g) in enumerate(zip(models, gens))
            ]
        )
    acc = _accuracy(logits, y_test)
    return (acc, logits) if return_logits else acc


def _train_one(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    x_test: torch.Tensor,
    gen: torch.Generator,
    aug,
    proto: EvalProtocol,
    lr: float,
    bar,
) -> torch.Tensor:
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=proto.momentum, weight_decay=proto.weight_decay)
    epochs = bar if bar is not None else range(proto.epochs)
    for ep in epochs:
        for group in opt.param_groups:
            group["lr"] = _lr_at(ep, lr, proto)
        net.train()
        for idx in _batches(images.shape[0], gen, proto.batch_size):
            idx = idx.to(images.device)
            x = aug(images[idx], generator=gen)
            loss = soft_target_loss(net(x), labels[idx], proto.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if not math.isfinite(float(loss.detach())):
            logger.warning("evaluation training diverged (loss %s); accuracy will be chance level", float(loss))
            break
    return predict(net, x_test, proto.test_batch_size)


def _train_vmap(
    models: list[nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    x_test: torch.Tensor,
    gens: list[torch.Generator],
    aug,
    proto: EvalProtocol,
    lr: float,
    bar,
) -> torch.Tensor:
    from torch.func import functional_call, grad, stack_module_state
    from torch.func import vmap as fvmap

    params, buffers = stack_module_state(models)
    params = {k: v.detach() for k, v in params.items()}
    base = copy.deepcopy(models[0]).to("meta")
    base.train()

    def loss_fn(p, b, x, y):
        return soft_target_loss(functional_call(base, (p, b), (x,)), y, proto.temperature)

    step_grad = fvmap(grad(loss_fn))
    mom: dict[str, torch.Tensor] | None = None
    s_count = len(models)
    for ep in bar:
        cur_lr = _lr_at(ep, lr, proto)
        # Every seed draws its own batch order from its own generator, as in the loop path.
        orders = [_batches(images.shape[0], g, proto.batch_size) for g in gens]
        for b in range(len(orders[0])):
            idx = torch.stack([orders[s][b] for s in range(s_count)]).to(images.device)  # (S, B)
            x = torch.stack([aug(images[idx[s]], generator=gens[s]) for s in range(s_count)])
            grads = step_grad(params, buffers, x, labels[idx])
            with torch.no_grad():  # torch.optim.SGD(momentum, weight_decay) on every seed's parameters at once
                params, mom = sgd_tree(params, grads, mom, cur_lr, proto.momentum, proto.weight_decay)
    base.eval()

    def logits_fn(p, b, x):
        return functional_call(base, (p, b), (x,))

    fwd = fvmap(logits_fn, in_dims=(0, 0, None))
    with torch.no_grad():
        bs = proto.test_batch_size
        return torch.cat([fwd(params, buffers, x_test[i : i + bs]) for i in range(0, x_test.shape[0], bs)], dim=1)
