"""The recover engine: BN hooks (no leaks, per-group statistics), augmentation, Adam, schedule, clamp, mask,
refusals."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from condense.data import load_dataset
from condense.errors import ConfigError, MismatchError
from condense.models import create_model_for
from condense.recover import (
    BNStatHook,
    RecoverAugment,
    Recovery,
    adam_,
    batchnorm_layers,
    class_batches,
    cosine_lr,
    pixel_box,
    recover,
    roll_flip,
)


@pytest.fixture(scope="module")
def bn_net(digits):
    """A convnet_bn whose running statistics are those of real digits (a few train-mode forwards), frozen."""
    net = create_model_for("convnet_bn", digits, seed=0, width=16, depth=2)
    for m in batchnorm_layers(net):
        m.momentum = None  # cumulative average: the running statistics become those of the batches seen
    net.train()
    with torch.no_grad():
        for i in range(0, 1024, 128):
            net(digits.x_train[i : i + 128])
    return net.eval().requires_grad_(False)


def _hook_count(net: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in net.modules())


def _sre2l_reference_bn(net: nn.Module, x: torch.Tensor, first: float) -> torch.Tensor:
    """SRe2L's BNFeatureHook math (recover/utils.py:96-100), written independently: one forward, one group."""
    feats = []
    handles = [
        m.register_forward_hook(lambda mod, inp, out: feats.append((mod, inp[0])))
        for m in net.modules()
        if isinstance(m, nn.BatchNorm2d)
    ]
    try:
        net(x)
    finally:
        for h in handles:
            h.remove()
    total = torch.zeros(())
    for i, (mod, a) in enumerate(feats):
        c = a.shape[1]
        mean = a.mean([0, 2, 3])
        var = a.permute(1, 0, 2, 3).reshape(c, -1).var(1, unbiased=False)
        r = torch.norm(mod.running_var - var, 2) + torch.norm(mod.running_mean - mean, 2)
        total = total + (first if i == 0 else 1.0) * r
    return total


def test_hooks_exist_only_inside_the_context(bn_net, digits):
    x = digits.x_train[:6]
    assert _hook_count(bn_net) == 0
    hook = BNStatHook(bn_net)
    with hook:
        assert _hook_count(bn_net) == len(batchnorm_layers(bn_net)) == 2
        bn_net(x)
        assert hook.loss().ndim == 0
    assert _hook_count(bn_net) == 0 and not hook.active
    with pytest.raises(RuntimeError, match="saw no forward"):
        hook.losses()  # the last forward's values were dropped on exit
    with pytest.raises(ValueError, match="boom"), hook:
        bn_net(x)
        raise ValueError("boom")
    assert _hook_count(bn_net) == 0  # removed on an exception too
    with hook:
        with pytest.raises(RuntimeError, match="saw no forward"):
            hook.losses()  # nothing carried over from the previous with
    rec = Recovery([bn_net], x.clone(), digits.y_train[:6], num_iterations=2)
    rec.step(torch.Generator().manual_seed(0))
    assert _hook_count(bn_net) == 0  # a step leaves no hook behind


def test_one_group_equals_the_reference_hook(bn_net, digits):
    x = torch.randn(12, *digits.x_train.shape[1:], generator=torch.Generator().manual_seed(1))
    with BNStatHook(bn_net, first_bn_multiplier=10.0) as hook:
        bn_net(x)
        ours = hook.loss()
    torch.testing.assert_close(ours, _sre2l_reference_bn(bn_net, x, 10.0), rtol=1e-6, atol=1e-6)


def test_per_group_stats_in_one_forward_equal_separate_forwards(bn_net, digits):
    gen = torch.Generator().manual_seed(2)
    sizes = [3, 5, 1, 4]  # unequal groups, one of a single image
    groups = torch.repeat_interleave(torch.arange(4), torch.tensor(sizes))
    perm = torch.randperm(groups.numel(), generator=gen)  # groups interleaved in the batch
    groups = groups[perm]
    x = torch.randn(groups.numel(), *digits.x_train.shape[1:], generator=gen) * 0.7 + 0.2
    hook = BNStatHook(bn_net, first_bn_multiplier=10.0)
    with hook:
        hook.set_groups(groups, 4)
        out_all = bn_net(x)
        together = hook.losses()[0]
    assert together.shape == (4,)
    separate = []
    for g in range(4):
        with hook:
            out_g = bn_net(x[groups == g])
            separate.append(hook.loss())
        torch.testing.assert_close(out_all[groups == g], out_g, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(together, torch.stack(separate), rtol=1e-6, atol=1e-6)
    assert float(together.std()) > 1e-3  # the groups really differ, so a pooled statistic would fail


def test_layer_weights_scale_each_layer(bn_net, digits):
    x = digits.x_train[:8]
    with BNStatHook(bn_net, first_bn_multiplier=1.0, layer_weights=[[1.0, 0.0]]) as hook:
        bn_net(x)
        first_only = hook.loss()
    with BNStatHook(bn_net, first_bn_multiplier=2.0, layer_weights=[[1.0, 0.0]]) as hook:
        bn_net(x)
        doubled = hook.loss()
    torch.testing.assert_close(doubled, 2 * first_only)
    with pytest.raises(ConfigError, match="2 BatchNorm2d"):
        BNStatHook(bn_net, layer_weights=[[1.0]])


def test_adam_equals_torch_adam():
    gen = torch.Generator().manual_seed(3)
    p0 = torch.randn(4, 5, generator=gen)
    grads = [torch.randn(4, 5, generator=gen) for _ in range(6)]
    ref = p0.clone().requires_grad_(True)
    opt = torch.optim.Adam([ref], lr=0.25, betas=(0.5, 0.9), eps=1e-8)
    ours, m, v = p0.clone(), torch.zeros(4, 5), torch.zeros(4, 5)
    for t, g in enumerate(grads):
        lr = cosine_lr(0.25, t, 6)
        for group in opt.param_groups:
            group["lr"] = lr
        ref.grad = g.clone()
        opt.step()
        adam_(ours, m, v, g, lr, t + 1, (0.5, 0.9), 1e-8)
    torch.testing.assert_close(ours, ref.detach(), rtol=1e-6, atol=1e-7)


def test_cosine_lr_is_sre2l_policy():
    assert cosine_lr(0.25, 0, 100) == 0.25
    assert math.isclose(cosine_lr(0.25, 50, 100), 0.125)
    assert math.isclose(cosine_lr(0.25, 99, 100), 0.25 * 0.5 * (1 + math.cos(math.pi * 0.99)))


def test_roll_flip_equals_torch_roll_and_flip():
    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).reshape(2, 3, 5, 6)
    shifts = torch.tensor([[1, -2], [4, 3]])
    flips = torch.tensor([True, False])
    out = roll_flip(x, shifts, flips)
    for i in range(2):
        xi = torch.flip(x[i], dims=(-1,)) if flips[i] else x[i]
        want = torch.roll(xi, shifts=(int(shifts[i, 0]), int(shifts[i, 1])), dims=(-2, -1))
        assert torch.equal(out[i], want)


def test_augment_draws_one_transform_per_group_from_the_generator():
    aug = RecoverAugment(rrc=True, rrc_scale=(0.3, 1.0), flip=True, jitter=2)
    p1 = aug.draw(5, (8, 8), torch.Generator().manual_seed(4))
    p2 = aug.draw(5, (8, 8), torch.Generator().manual_seed(4))
    assert p1["boxes"] == p2["boxes"] and torch.equal(p1["shifts"], p2["shifts"])
    for top, left, h, w in p1["boxes"]:
        assert 0 <= top and top + h <= 8 and 0 <= left and left + w <= 8 and h > 0 and w > 0
    assert int(p1["shifts"].min()) >= 0 and int(p1["shifts"].max()) <= 2
    x = torch.randn(10, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    groups = torch.arange(5).repeat_interleave(2)
    x[1::2] = x[0::2]  # both images of a group equal: one draw per group keeps them equal
    out = aug.apply(x, groups, p1)
    assert torch.equal(out[0::2], out[1::2])
    assert not torch.equal(out, x)


def test_chunking_the_groups_does_not_change_the_result(bn_net, digits):
    x0 = torch.randn(20, *digits.x_train.shape[1:], generator=torch.Generator().manual_seed(6))
    y = torch.arange(10).repeat(2)
    groups = torch.arange(20) // 5  # four groups of five
    outs = []
    for bg in (0, 1, 3):
        outs.append(
            recover(
                bn_net,
                x0,
                y,
                groups,
                num_iterations=4,
                generator=torch.Generator().manual_seed(7),
                augment=RecoverAugment(rrc=True, jitter=1),
                batch_groups=bg,
            )
        )
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs[2], outs[0], rtol=1e-5, atol=1e-5)
    assert not torch.equal(outs[0], x0)


def test_class_batches_put_one_image_per_class_in_each_group():
    g = class_batches(5, 3, 2)  # 5 classes, ipc 3, batches of 2 classes: chunks {0,1}, {2,3}, {4}
    labels = torch.arange(5).repeat_interleave(3)
    assert g.numel() == 15 and int(g.max()) == 3 * 3 - 1
    for gid in g.unique():
        cls = labels[g == gid]
        assert cls.unique().numel() == cls.numel()  # never two images of a class in one batch
        assert cls.numel() in (1, 2)


def test_bn_loss_decreases_and_teacher_learns_the_classes(digits_teacher, digits):
    from condense.teachers import load_teacher

    teacher = load_teacher(digits_teacher)
    gen = torch.Generator().manual_seed(8)
    x0 = torch.randn(20, *digits.x_train.shape[1:], generator=gen)
    y = torch.arange(10).repeat(2)
    log: list[dict[str, float]] = []
    out = recover(
        teacher,
        x0,
        y,
        torch.arange(20) // 10,
        num_iterations=150,
        generator=gen,
        r_bn=1.0,
        box=pixel_box(digits),
        augment=RecoverAugment(jitter=1),
        log=log,
    )
    assert log[-1]["bn"] < 0.5 * log[0]["bn"], (log[0]["bn"], log[-1]["bn"])
    assert log[-1]["ce"] < log[0]["ce"]
    assert (teacher.logits(out).argmax(1) == y).float().mean() > 0.9
    assert set(log[0]) == {"loss", "ce", "bn", "acc", "lr"} and all(isinstance(v, float) for v in log[0].values())


def test_images_are_clamped_to_the_pixel_box(bn_net, digits):
    lo, hi = pixel_box(digits)
    mean, std = torch.tensor(digits.mean), torch.tensor(digits.std)
    torch.testing.assert_close(lo, -mean / std)
    torch.testing.assert_close(hi, (1 - mean) / std)
    x0 = 10 * torch.randn(10, *digits.x_train.shape[1:], generator=torch.Generator().manual_seed(9))
    assert float(x0.max()) > float(hi.max()) and float(x0.min()) < float(lo.min())
    out = recover(bn_net, x0, torch.arange(10), num_iterations=1, generator=torch.Generator(), box=(lo, hi))
    assert float(out.min()) >= float(lo.min()) - 1e-6 and float(out.max()) <= float(hi.max()) + 1e-6
    assert float(out.max()) == pytest.approx(float(hi.max()))  # clamped, not rescaled


def test_mask_freezes_masked_pixels(bn_net, digits):
    x0 = digits.x_train[:10].clone()
    mask = torch.zeros(10, 1, 8, 8)
    mask[:, :, :, :4] = 1.0  # only the left half may change
    out = recover(
        bn_net,
        x0,
        digits.y_train[:10],
        num_iterations=5,
        generator=torch.Generator().manual_seed(10),
        box=pixel_box(digits),
        mask=mask,
        augment=RecoverAugment(jitter=1),
    )
    assert torch.equal(out[..., 4:], x0[..., 4:])
    assert not torch.equal(out[..., :4], x0[..., :4])
    with pytest.raises(MismatchError, match="mask has shape"):
        Recovery([bn_net], x0, digits.y_train[:10], mask=torch.ones(10, 2, 8, 8))


def test_extra_losses_are_added(bn_net, digits):
    x0 = digits.x_train[:10].clone()
    seen = []

    def l2(inp):
        seen.append(inp.augmented.shape)
        return 100.0 * inp.images.pow(2).mean()

    kw = dict(num_iterations=3, r_bn=0.0, box=None)
    plain = recover(bn_net, x0, digits.y_train[:10], generator=torch.Generator().manual_seed(11), **kw)
    pulled = recover(
        bn_net, x0, digits.y_train[:10], generator=torch.Generator().manual_seed(11), extra_losses=[l2], **kw
    )
    assert len(seen) == 3 and seen[0] == x0.shape
    assert float(pulled.pow(2).mean()) < float(plain.pow(2).mean())


def test_teacher_without_batchnorm_is_refused_in_one_line(digits):
    net = create_model_for("convnet", digits, seed=0, width=8, depth=2)  # instance norm: no running statistics
    with pytest.raises(ConfigError) as info:
        Recovery([net], digits.x_train[:4].clone(), digits.y_train[:4])
    msg = str(info.value)
    assert "\n" not in msg and "no BatchNorm2d" in msg and "convnet_bn" in msg
    with pytest.raises(ConfigError, match="no BatchNorm2d"):
        BNStatHook(net)


def test_zca_data_and_bad_arguments_are_refused(bn_net, digits):
    zca = load_dataset("digits", zca=True)
    with pytest.raises(MismatchError, match="ZCA"):
        pixel_box(zca)
    x = digits.x_train[:4].clone()
    with pytest.raises(ConfigError, match="teacher_weights"):
        Recovery([bn_net], x, digits.y_train[:4], teacher_weights=[1.0, 1.0])
    with pytest.raises(ConfigError, match="CUDA"):
        Recovery([bn_net], x, digits.y_train[:4], amp=True)
    with pytest.raises(MismatchError, match="labels"):
        Recovery([bn_net], x, digits.y_train[:3])


def test_a_committee_weights_its_teachers(bn_net, digits):
    """Weight 0 on a teacher removes it: the result equals recovering from the other teacher alone."""
    other = create_model_for("convnet_bn", digits, seed=1, width=16, depth=2).eval().requires_grad_(False)
    x0 = torch.randn(10, *digits.x_train.shape[1:], generator=torch.Generator().manual_seed(12))
    y = torch.arange(10)
    alone = recover(bn_net, x0, y, num_iterations=3, generator=torch.Generator().manual_seed(13))
    pair = recover(
        [bn_net, other], x0, y, num_iterations=3, generator=torch.Generator().manual_seed(13), teacher_weights=[1, 0]
    )
    both = recover([bn_net, other], x0, y, num_iterations=3, generator=torch.Generator().manual_seed(13))
    torch.testing.assert_close(pair, alone)
    assert not torch.allclose(both, alone)
