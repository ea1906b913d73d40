"""condense.optim: the one SGD update equals torch.optim.SGD (dampening 0) in all three forms."""

from __future__ import annotations

import pytest
import torch

from condense.optim import sgd, sgd_, sgd_tree


def _reference(p0, grads, lr, momentum, wd):
    p = torch.nn.Parameter(p0.clone())
    opt = torch.optim.SGD([p], lr=lr, momentum=momentum, weight_decay=wd)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    return p.detach()


@pytest.mark.parametrize("momentum, wd", [(0.0, 0.0), (0.9, 0.0), (0.5, 5e-4)])
def test_all_forms_match_torch_sgd(momentum, wd):
    gen = torch.Generator().manual_seed(0)
    p0 = torch.randn(5, generator=gen)
    grads = [torch.randn(5, generator=gen) for _ in range(4)]
    want = _reference(p0, grads, 0.1, momentum, wd)

    p, buf = p0.clone(), None
    for g in grads:
        p, buf = sgd(p, g, buf, 0.1, momentum, wd)
    torch.testing.assert_close(p, want, rtol=1e-6, atol=1e-7)

    tree, bufs = {"w": p0.clone()}, None
    for g in grads:
        tree, bufs = sgd_tree(tree, {"w": g}, bufs, 0.1, momentum, wd)
    torch.testing.assert_close(tree["w"], want, rtol=1e-6, atol=1e-7)

    q, b = p0.clone(), torch.zeros(5)
    for g in grads:
        sgd_(q, b, g, 0.1, momentum, wd)
    torch.testing.assert_close(q, want, rtol=1e-6, atol=1e-7)


def test_sgd_is_differentiable_in_the_step_size():
    alpha = torch.tensor(0.1, requires_grad=True)
    p, _ = sgd(torch.ones(3), torch.full((3,), 2.0), None, alpha)
    (d,) = torch.autograd.grad(p.sum(), alpha)
    assert float(d) == pytest.approx(-6.0)
