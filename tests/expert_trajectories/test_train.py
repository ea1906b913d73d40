"""The K-expert trainer: vmap == loop, functional SGD against torch.optim.SGD, BatchNorm, snapshot plan, divergence,
resume from an epoch's state."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from condense.augment import get_augment
from condense.errors import DivergenceError
from condense.expert_trajectories import (
    MANIFEST_NAME,
    derive_seed,
    expert_filename,
    get_expert_config,
    record_experts,
)
from condense.expert_trajectories._train import Expert, GroupState, Trainer, augment_experts, snapshot_steps
from condense.models import create_model, has_running_stats

MODEL_KW = {"width": 8}


def _record(data, out, n=2, epochs=2, **kw):
    kw.setdefault("config", get_expert_config("vanilla", batch_size=128, augment="dsa_noflip"))
    return record_experts(data, "convnet", n, epochs, out, quiet=True, model_kwargs=MODEL_KW, **kw)


# ----------------------------------------------------------------------------------------------------------------------
# Numerics
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, epochs, batch",
    [("vanilla", 2, 128), ("flat", 2, 128), ("smooth", 1, 256)],  # smooth: GP + momentum amplify rounding
)
def test_vmapped_experts_equal_looped_experts(digits, tmp_path, kind, epochs, batch):
    cfg = get_expert_config(kind, batch_size=batch, augment="dsa_noflip")
    vm = _record(digits, tmp_path / "vmap", n=3, epochs=epochs, config=cfg, experts_at_once=3)
    lp = _record(digits, tmp_path / "loop", n=3, epochs=epochs, config=cfg, experts_at_once=1)
    for e in range(3):
        torch.testing.assert_close(vm.trajectory(e), lp.trajectory(e), rtol=1e-4, atol=1e-5)
        assert vm.accuracy_curves[e] == pytest.approx(lp.accuracy_curves[e], abs=0.01)
    assert not torch.equal(vm.trajectory(0), vm.trajectory(1))


def _ast_loop_reference(digits, epochs, lr, momentum, weight_decay, factor, decay_after, seed):
    """Expert training written from AST's ``buffer.py`` loop (and MTT's ``--decay``): ``torch.optim.SGD``; after
    epoch ``decay_after`` has trained, lr *= factor and a NEW ``torch.optim.SGD`` (empty momentum buffer).

    Same init seed and data order as the trainer; no augmentation, no loss scaling, no penalty. Returns the flat
    parameters after every epoch.
    """
    net = create_model(
        "convnet", in_channels=1, num_classes=10, image_size=(8, 8), seed=derive_seed(seed, 0, 0, "init"), **MODEL_KW
    )
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    order = torch.Generator().manual_seed(derive_seed(seed, 0, 0, "order"))
    n = digits.x_train.shape[0]
    out = []
    for e in range(epochs):
        perm = torch.randperm(n, generator=order)
        for s in range(0, n, 256):
            idx = perm[s : s + 256]
            opt.zero_grad()
            F.cross_entropy(net(digits.x_train[idx]), digits.y_train[idx]).backward()
            opt.step()
        out.append(torch.cat([p.detach().reshape(-1) for p in net.parameters()]))
        if e == decay_after:  # AST buffer.py: ``if e in lr_schedule: lr *= 0.6; teacher_optim = torch.optim.SGD(...)``
            lr *= factor
            opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    return out


@pytest.mark.parametrize(
    "kind, extra, decay_after",
    [
        # AST's smooth experts with its default schedule: lr_schedule = [E // 2 + 1] = [3] for E = 5
        ("smooth", {"gp_weight": 0.0, "loss_scale_start": 1.0, "loss_scale_step": 0.0}, 5 // 2 + 1),
        # MTT's --decay convention with an explicit first decayed epoch: lr_decay_epoch=2 means "after epoch 1"
        ("vanilla", {"momentum": 0.9, "weight_decay": 5e-3, "lr_decay_factor": 0.1, "lr_decay_epoch": 2}, 1),
    ],
)
def test_functional_sgd_matches_asts_training_loop(digits, tmp_path, kind, extra, decay_after):
    """Momentum + weight decay + the lr decay against AST's loop: the decay lands after epoch E // 2 + 1 (the first
    decayed epoch is E // 2 + 2, or ``lr_decay_epoch``) and the momentum buffer starts again from zero there."""
    cfg = get_expert_config(kind, batch_size=256, augment="none", **extra)
    buf = _record(digits, tmp_path / "b", n=1, epochs=5, config=cfg, seed=3)
    ref = _ast_loop_reference(
        digits, 5, cfg.lr_teacher, cfg.momentum, cfg.weight_decay, cfg.lr_decay_factor, decay_after, seed=3
    )
    for e in range(5):
        torch.testing.assert_close(buf.snapshot(0, e + 1), ref[e], rtol=1e-4, atol=1e-5, msg=f"after epoch {e}")


# ----------------------------------------------------------------------------------------------------------------------
# Seeds, augmentation, snapshot plan
# ----------------------------------------------------------------------------------------------------------------------


def test_an_expert_owns_three_derived_seeds():
    e = Expert.make(7, 4, 1)
    assert e.seeds == {s: derive_seed(7, 4, 1, s) for s in ("init", "order", "aug")}
    assert len(set(e.seeds.values())) == 3
    ref = torch.Generator().manual_seed(derive_seed(7, 4, 1, "order"))
    assert torch.equal(torch.randperm(50, generator=e.order_gen), torch.randperm(50, generator=ref))
    assert Expert.make(7, 4, 2).seeds["init"] != e.seeds["init"]  # a retry draws fresh seeds


def test_augment_experts_does_not_depend_on_the_group(digits):
    """Each expert's DSA result is the same whether it is augmented alone or stacked with others."""
    aug = get_augment("dsa_noflip")
    x = digits.x_train[:24].reshape(3, 8, *digits.x_train.shape[1:])
    together = augment_experts(aug, x, [torch.Generator().manual_seed(s) for s in (1, 2, 3)])
    for i, s in enumerate((1, 2, 3)):
        alone = augment_experts(aug, x[i : i + 1], [torch.Generator().manual_seed(s)])
        torch.testing.assert_close(together[i], alone[0], rtol=1e-5, atol=1e-6)
    assert augment_experts(get_augment("none"), x, []) is x


def test_snapshot_plan():
    assert snapshot_steps(2, 12, None) == [0, 12, 24]
    assert snapshot_steps(2, 12, 5) == [0, 5, 10, 15, 20, 24]
    assert snapshot_steps(1, 6, 3) == [0, 3, 6]


# ----------------------------------------------------------------------------------------------------------------------
# Running statistics, snapshot schedule, divergence
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["flat", "smooth"])  # GSAM's second pass and AST's penalty pass touch BN copies
def test_batchnorm_models_train_in_a_loop(digits, tmp_path, kind):
    cfg = get_expert_config(kind, batch_size=256, augment="dsa_noflip")
    buf = record_experts(
        digits, "convnet_bn", 2, 1, tmp_path, config=cfg, quiet=True, experts_at_once=2, model_kwargs=MODEL_KW
    )
    assert buf.num_experts == 2 and all(len(c) == 1 for c in buf.accuracy_curves.values())
    assert torch.isfinite(buf.snapshot(1, -1)).all()


def test_snapshots_every_k_steps(digits, tmp_path):
    buf = _record(digits, tmp_path, n=1, epochs=2, save_every_steps=5)  # 12 steps per epoch at batch 128
    assert buf.snapshot_steps == [0, 5, 10, 15, 20, 24]
    assert buf.num_snapshots == 6 and len(buf.accuracy_curves[0]) == 2


def test_diverged_expert_is_never_saved(digits, tmp_path):
    cfg = get_expert_config("vanilla", lr_teacher=1e30, batch_size=256, augment="none", max_attempts=2)
    with pytest.raises(DivergenceError, match=r"experts \[0\] diverged"):
        _record(digits, tmp_path, n=1, epochs=2, config=cfg)
    m = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert m["experts"][0]["status"] == "failed"
    assert not (tmp_path / expert_filename(0)).exists()


# ----------------------------------------------------------------------------------------------------------------------
# Resume from the state handed to on_epoch
# ----------------------------------------------------------------------------------------------------------------------


def _copy_state(st: GroupState) -> GroupState:
    """What a checkpoint keeps: every tensor cloned to the CPU, every list copied."""
    cpu = {k: {n: t.detach().cpu().clone() for n, t in getattr(st, k).items()} for k in ("params", "mom", "buffers")}
    return GroupState(
        st.epoch,
        st.step,
        st.lr,
        cpu["params"],
        cpu["mom"],
        cpu["buffers"],
        [s.clone() for s in st.snapshots],
        st.finite.clone(),
        [list(c) for c in st.accuracy_curves],
        [list(c) for c in st.train_loss_curves],
        st.seconds,
    )


@pytest.mark.parametrize(
    "kind, model, k",
    [("smooth", "convnet", 2), ("flat", "convnet_bn", 1)],  # vmapped with momentum + lr decay; BatchNorm buffers
)
def test_a_group_resumed_from_an_epoch_state_ends_bit_identical(digits, kind, model, k):
    cfg = get_expert_config(kind, batch_size=256, augment="dsa_noflip", lr_decay_epoch=2, lr_decay_factor=0.5)
    net = create_model(model, in_channels=1, num_classes=10, image_size=digits.image_size, seed=0, **MODEL_KW)
    bn = has_running_stats(net)
    trainer = Trainer(digits, model, MODEL_KW, cfg, 3, None, torch.device("cpu"), torch.float32, bn, True)
    kept: dict[int, tuple[GroupState, list]] = {}

    def keep(st: GroupState, group: list[Expert]) -> None:
        gens = [(e.order_gen.get_state(), e.aug_gen.get_state()) for e in group]
        kept[st.epoch] = (_copy_state(st), gens)

    group = [Expert.make(0, i, 0) for i in range(k)]
    ref = trainer.train_group(group, on_epoch=lambda st: keep(st, group))
    assert sorted(kept) == [1, 2, 3]
    for epoch in (1, 2):  # before and after the lr decay at epoch 2
        state, gens = kept[epoch]
        again = [Expert.make(0, i, 0) for i in range(k)]
        for e, (order, aug) in zip(again, gens):
            e.order_gen.set_state(order)
            e.aug_gen.set_state(aug)
        res = trainer.train_group(again, resume=state)
        for a, b in zip(res, ref):
            assert a.ok and torch.equal(a.snapshots, b.snapshots), epoch
            assert a.accuracy_curve == b.accuracy_curve and a.train_loss_curve == b.train_loss_curve
