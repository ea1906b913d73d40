"""The student unroll: the memory-lean meta-gradient equals backprop through the full unroll (float64)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from condense.augment import get_augment
from condense.methods._unroll import MatchTarget, StepPlan, meta_gradient, parameter_distance
from condense.models.params import ParamLayout


def _tiny(seed: int = 0):
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.GroupNorm(4, 4),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    ).double()
    layout = ParamLayout.from_module(net)
    theta0 = layout.flatten(dict(net.named_parameters())).detach()
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(6, 1, 8, 8, generator=g, dtype=torch.float64)
    target = theta0 + 0.05 * torch.randn(theta0.shape, generator=g, dtype=torch.float64)
    mid = theta0 + 0.02 * torch.randn(theta0.shape, generator=g, dtype=torch.float64)
    return net, layout, theta0, images, target, mid, g


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


@pytest.mark.parametrize("engine", ["autograd", "func"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("intermediate", [False, True])
def test_lean_equals_full_unroll(momentum, soft, intermediate, engine):
    net, layout, theta0, images, target, mid, g = _tiny()
    aug = get_augment("dsa_noflip")
    labels = torch.randn(6, 3, generator=g, dtype=torch.float64) if soft else torch.tensor([0, 1, 2, 0, 1, 2])
    plan = []
    for _ in range(5):
        idx = torch.randperm(6, generator=g)[:4]
        plan.append(StepPlan(idx, aug.sample(images[idx], g)))
    matches = [MatchTarget(5, target)]
    if intermediate:
        matches.insert(0, MatchTarget(2, mid, 0.5))
    lr = torch.tensor(0.1, dtype=torch.float64)
    kw = dict(augment=aug, momentum=momentum, labels_grad=soft, loss_scale=1.3)
    full = meta_gradient(net, layout, theta0, images, labels, lr, plan, matches, mode="full", **kw)
    lean = meta_gradient(net, layout, theta0, images, labels, lr, plan, matches, mode="lean", engine=engine, **kw)
    if engine == "func":  # the torch.func engine computes the same full unroll
        full_func = meta_gradient(net, layout, theta0, images, labels, lr, plan, matches, engine="func", **kw)
        assert _rel(full_func.images, full.images) < 1e-10
    assert full.images.abs().sum() > 0
    assert lean.loss == pytest.approx(full.loss, rel=1e-10)
    assert _rel(lean.images, full.images) < 1e-4
    assert _rel(lean.lr.reshape(1), full.lr.reshape(1)) < 1e-4
    if soft:
        assert _rel(lean.labels, full.labels) < 1e-4


def test_full_unroll_matches_finite_differences():
    net, layout, theta0, images, target, _, g = _tiny(1)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    plan = [StepPlan(torch.randperm(6, generator=g)[:4]) for _ in range(4)]
    matches = [MatchTarget(4, target)]

    def loss(x: torch.Tensor, lr: float) -> float:
        lr_t = torch.tensor(lr, dtype=torch.float64)
        return meta_gradient(net, layout, theta0, x, labels, lr_t, plan, matches, mode="full").loss

    mg = meta_gradient(net, layout, theta0, images, labels, torch.tensor(0.1, dtype=torch.float64), plan, matches)
    eps = 1e-6
    xp, xm = images.clone(), images.clone()
    xp[2, 0, 3, 4] += eps
    xm[2, 0, 3, 4] -= eps
    fd_x = (loss(xp, 0.1) - loss(xm, 0.1)) / (2 * eps)
    fd_lr = (loss(images, 0.1 + eps) - loss(images, 0.1 - eps)) / (2 * eps)
    torch.testing.assert_close(mg.images[2, 0, 3, 4].item(), fd_x, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(mg.lr.item(), fd_lr, rtol=1e-5, atol=1e-9)


def test_parameter_distance_and_layout():
    net = nn.Linear(3, 2)
    layout = ParamLayout.from_module(net)
    flat = layout.flatten(dict(net.named_parameters()))
    assert layout.numel == 8
    back = layout.unflatten(flat)
    torch.testing.assert_close(back["weight"], net.weight)
    start, target = torch.zeros(4), torch.ones(4)
    assert float(parameter_distance(start, target, start)) == pytest.approx(1.0)
    assert float(parameter_distance(target, target, start)) == 0.0


def test_bad_arguments_raise():
    net, layout, theta0, images, target, _, _ = _tiny()
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    lr = torch.tensor(0.1, dtype=torch.float64)
    plan = [StepPlan(torch.arange(6))]
    with pytest.raises(ValueError, match="mode"):
        meta_gradient(net, layout, theta0, images, labels, lr, plan, [MatchTarget(1, target)], mode="tesla")
    with pytest.raises(ValueError, match="engine"):
        meta_gradient(net, layout, theta0, images, labels, lr, plan, [MatchTarget(1, target)], engine="jax")
    with pytest.raises(ValueError, match="match step"):
        meta_gradient(net, layout, theta0, images, labels, lr, plan, [MatchTarget(3, target)])
