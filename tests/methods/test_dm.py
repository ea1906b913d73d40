"""DM on digits: quality against random real under the shared protocol, and the vectorized pieces against loops."""

from __future__ import annotations

import time

import pytest
import torch

from condense.augment import get_augment
from condense.errors import ConfigError
from condense.eval import evaluate
from condense.methods import RunContext, distill, get_method
from condense.methods._classwise import ClassSampler, init_images, siamese_augment
from condense.methods.dm import DMConfig, dm_loss
from condense.models import create_model

#: the shared protocol of the quality tests (same for DM and the random-real baseline, and as the trajectory
#: matchers' tests use)
QUALITY_EVAL = dict(models=["convnet"], seeds=2, epochs=200, seed=0)


def test_dm_beats_random_real_ipc10(digits):
    t0 = time.perf_counter()
    syn = distill("dm", digits, ipc=10, generator=torch.Generator().manual_seed(0), run=RunContext(quiet=True))
    assert syn.meta["preset"] == "digits-ipc10"
    acc = evaluate(syn, digits, **QUALITY_EVAL)["accuracy"]["convnet"]["mean"]
    rnd = distill("random_real", digits, ipc=10, generator=torch.Generator().manual_seed(0))
    base = evaluate(rnd, digits, **QUALITY_EVAL)["accuracy"]["convnet"]["mean"]
    assert acc > base, f"DM {acc:.4f} vs random real {base:.4f}"
    print(f"DM {acc:.4f} vs random real {base:.4f} in {time.perf_counter() - t0:.1f} s")


def test_dm_ipc1_gains_over_random_real_and_over_its_own_init(digits):
    """At IPC 1 the effect is large: DM moves its real initialization far beyond any single random image."""
    run = RunContext(quiet=True)
    syn = distill("dm", digits, ipc=1, generator=torch.Generator().manual_seed(0), run=run)
    init = distill(
        "dm", digits, ipc=1, overrides={"num_iterations": 0}, generator=torch.Generator().manual_seed(0), run=run
    )
    rnd = distill("random_real", digits, ipc=1, generator=torch.Generator().manual_seed(0))
    acc, acc_init, acc_rnd = (
        evaluate(s, digits, **QUALITY_EVAL)["accuracy"]["convnet"]["mean"] for s in (syn, init, rnd)
    )
    assert acc >= acc_rnd + 0.10 and acc >= acc_init + 0.10, f"DM {acc:.3f}, init {acc_init:.3f}, random {acc_rnd:.3f}"


def test_vectorized_loss_equals_the_per_class_loop(digits):
    k, b, s = digits.num_classes, 7, 3
    net = create_model("convnet", in_channels=1, num_classes=k, image_size=(8, 8), seed=0).requires_grad_(False)
    real = torch.stack([digits.x_train[digits.indices_of_class(c)[:b]] for c in range(k)])
    syn = torch.randn(k, s, 1, 8, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    loss = dm_loss(net, real, syn)
    (g,) = torch.autograd.grad(loss, syn)
    syn2 = syn.detach().clone().requires_grad_(True)
    ref = sum(((net.embed(real[c]).mean(0) - net.embed(syn2[c]).mean(0)) ** 2).sum() for c in range(k))
    (g_ref,) = torch.autograd.grad(ref, syn2)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("preset", ["dsa", "dsa_noflip", "dsa_all", "none"])
def test_siamese_augment_equals_one_shared_draw_per_class(preset):
    aug = get_augment(preset)
    g = torch.Generator().manual_seed(0)
    real, syn = torch.randn(6, 5, 3, 8, 8, generator=g), torch.randn(6, 2, 3, 8, 8, generator=g)
    out_real, out_syn = siamese_augment(aug, real, syn, torch.Generator().manual_seed(1))
    ref_gen = torch.Generator().manual_seed(1)
    for c in range(6):
        p = aug.sample(real[c], generator=ref_gen, shared=True)
        torch.testing.assert_close(out_real[c], aug(real[c], params=p))
        torch.testing.assert_close(out_syn[c], aug(syn[c], params=p))


def test_siamese_augment_passes_gradients_to_the_synthetic_images():
    aug = get_augment("dsa")
    syn = torch.randn(4, 2, 3, 8, 8, requires_grad=True)
    _, out = siamese_augment(aug, torch.randn(4, 3, 3, 8, 8), syn, torch.Generator().manual_seed(0))
    (g,) = torch.autograd.grad(out.sum(), syn)
    assert g.shape == syn.shape and bool(torch.isfinite(g).all())


def test_class_sampler_draws_distinct_members_of_each_class(digits):
    s = ClassSampler(digits.y_train, digits.num_classes)
    idx = s.sample(50, torch.Generator().manual_seed(0))
    assert idx.shape == (10, 50)
    for c in range(10):
        assert bool((digits.y_train[idx[c]] == c).all()) and idx[c].unique().numel() == 50
    assert s.sample(10**6, torch.Generator()).shape == (10, int(s.counts.min()))


def test_init_images(digits):
    x, y = init_images(digits, 3, "real", torch.Generator().manual_seed(0))
    assert x.shape == (30, 1, 8, 8) and y.tolist() == [c for c in range(10) for _ in range(3)]
    flat = digits.x_train.flatten(1)
    for img, c in zip(x.flatten(1), y):
        hit = (flat == img).all(1).nonzero().flatten()
        assert hit.numel() >= 1 and int(digits.y_train[hit[0]]) == int(c)
    xn, _ = init_images(digits, 2, "noise", torch.Generator().manual_seed(0))
    assert xn.shape == (20, 1, 8, 8) and abs(float(xn.std()) - 1.0) < 0.2
    with pytest.raises(ConfigError, match="has"):
        init_images(digits, 10**4, "real", torch.Generator())
    with pytest.raises(ConfigError, match="init"):
        init_images(digits, 1, "gan", torch.Generator())


def test_config_validation_and_paper_defaults():
    cfg = DMConfig()
    assert (cfg.lr_img, cfg.momentum, cfg.batch_real, cfg.num_iterations, cfg.init) == (1.0, 0.5, 256, 20000, "real")
    with pytest.raises(ConfigError, match="augment"):
        DMConfig(augment="mixup")
    with pytest.raises(ConfigError, match="momentum"):
        DMConfig(momentum=1.5)
    assert get_method("dm").resolve_config("cifar10-ipc10") == DMConfig()


def test_step_is_sgd_with_momentum_on_the_images(digits, monkeypatch):
    """x_{t+1} = x_t - lr (0.5 buf_t + g_t), buf_{t+1} = 0.5 buf_t + g_t, with g_t computed here: the gradient of
    DM's Eq. 5 (written out below) for the network and real batch the step drew, autograd on a copy of x_t."""
    import condense.methods.dm as dm_module

    drawn = []
    real_loss = dm_module.dm_loss

    def spy(net, real, syn):
        drawn.append((net, real.detach().clone()))
        return real_loss(net, real, syn)

    monkeypatch.setattr(dm_module, "dm_loss", spy)
    m = get_method("dm")
    cfg = m.resolve_config(None, {"batch_real": 8, "augment": "none", "lr_img": 0.5})
    gen = torch.Generator().manual_seed(0)
    st = m.init_state(digits, cfg, 1, gen, RunContext())

    def independent_grad(x: torch.Tensor, net, real: torch.Tensor) -> torch.Tensor:
        x = x.detach().clone().requires_grad_(True)
        k = real.shape[0]
        loss = x.new_zeros(())
        for c in range(k):  # sum_c || mean_i psi(real_c,i) - mean_j psi(x_c,j) ||^2, one class at a time
            mu_real = net.embed(real[c]).detach().mean(0)
            mu_syn = net.embed(x.view(k, -1, *x.shape[1:])[c]).mean(0)
            loss = loss + (mu_real - mu_syn).pow(2).sum()
        (g,) = torch.autograd.grad(loss, x)
        return g

    buf = torch.zeros_like(st.tensors["images"])
    for it in range(3):
        x_t = st.tensors["images"].clone()
        m.step(st, it, gen)
        net, real = drawn[-1]
        g = independent_grad(x_t, net, real)
        assert float(g.abs().sum()) > 0
        buf = 0.5 * buf + g  # torch.optim.SGD(momentum=0.5): dampening 0, the first buffer is g
        torch.testing.assert_close(st.tensors["images"], x_t - 0.5 * buf, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(st.tensors["momentum"], buf, rtol=1e-4, atol=1e-5)
    assert len(drawn) == 3 and not torch.equal(drawn[0][1], drawn[1][1])  # a fresh real batch per step
