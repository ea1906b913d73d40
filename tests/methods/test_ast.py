"""AST on digits: config, a short run on smooth experts, and one test per AST mechanism (init, perturbation,
intermediate matching, balanced loss, heavy-ball student); with every mechanism off AST is MTT."""

from __future__ import annotations

import json
import math

import pytest
import torch

from condense.config import config_from_dict, config_to_dict
from condense.errors import ConfigError, MismatchError
from condense.methods import RunContext, distill, get_method
from condense.methods import mtt as mtt_module
from condense.methods._trajectory import expert_logits, real_by_class
from condense.methods.ast import ASTConfig, balanced_loss_weight, perturb_conv_weights

#: every AST mechanism switched off: what is left is MTT
MTT_LIKE = {
    "init": "real",
    "weight_perturb": 0.0,
    "intermediate_loss": "none",
    "balanced_loss": False,
    "student_momentum": 0.0,
}


def _state(digits, buffer, overrides=None, ipc=1, name="ast", preset="digits-ipc1", seed=0):
    m = get_method(name)
    cfg = m.resolve_config(preset, overrides)
    gen = torch.Generator().manual_seed(seed)
    return m, cfg, gen, m.init_state(digits, cfg, ipc, gen, RunContext(buffer=buffer))


def _spy(monkeypatch) -> dict:
    """Record the arguments ``MTT.step`` passes to the student unroll."""
    seen: dict = {}
    real = mtt_module.meta_gradient

    def spy(model, layout, theta0, images, labels, lr, plan, matches, **kw):
        seen.update(theta0=theta0.clone(), matches=matches, **kw)
        return real(model, layout, theta0, images, labels, lr, plan, matches, **kw)

    monkeypatch.setattr(mtt_module, "meta_gradient", spy)
    return seen


def test_config_round_trip_and_validation():
    cfg = get_method("ast").resolve_config()
    assert isinstance(cfg, ASTConfig) and cfg.expert_kind == "smooth" and cfg.init == "representative"
    assert config_from_dict(ASTConfig, json.loads(json.dumps(config_to_dict(cfg)))) == cfg
    for name in get_method("ast").presets:
        get_method("ast").resolve_config(name)
    with pytest.raises(ConfigError, match="intermediate_loss"):
        ASTConfig(intermediate_loss="middle")
    with pytest.raises(ConfigError, match="student_momentum"):
        ASTConfig(student_momentum=1.0)
    with pytest.raises(ConfigError, match="weight_perturb"):
        ASTConfig(weight_perturb=-1.0)
    with pytest.raises(ConfigError, match="init"):
        ASTConfig(init="correct")  # DATM's init is DATM's


def test_two_iterations_on_smooth_experts(digits, digits_smooth_buffer):
    run = RunContext(buffer=digits_smooth_buffer)
    syn = distill("ast", digits, ipc=2, preset="digits-ipc1", overrides={"num_iterations": 2}, run=run)
    assert syn.method == "ast" and syn.images.shape == (20, 1, 8, 8) and bool(torch.isfinite(syn.images).all())
    assert syn.labels.tolist() == [c for c in range(10) for _ in range(2)] and syn.lr > 0
    assert syn.meta["expert_kind"] == "smooth"


def test_ast_beats_random_real_ipc1(digits, digits_smooth_buffer, beats_random):
    beats_random("ast", digits, digits_smooth_buffer)


def test_needs_smooth_experts(digits, digits_buffer):
    with pytest.raises(MismatchError, match="smooth"):
        distill("ast", digits, ipc=1, overrides={"num_iterations": 1}, run=RunContext(buffer=digits_buffer))


def test_representative_init_takes_the_image_nearest_the_class_centroid(digits, digits_smooth_buffer):
    # with k = ipc = 1 the k-means centroid is the class mean of the expert's logits
    m, cfg, gen, st = _state(digits, digits_smooth_buffer, {"num_iterations": 1})
    rt = st.runtime
    buf = rt["buffer"]
    flat = buf.snapshot(buf.expert_ids[0], -1)
    for c, pool in enumerate(real_by_class(digits)):
        feats = expert_logits(rt["model"], rt["layout"], flat, digits.x_train[pool]).float()
        nearest = pool[torch.cdist(feats.mean(0, keepdim=True), feats).argmin()]
        torch.testing.assert_close(st.tensors["images"][c], digits.x_train[nearest], rtol=0, atol=0)


def test_weight_perturbation_scales_only_conv_weights(digits_smooth_buffer):
    from condense.expert_trajectories import ExpertBuffer

    buf = ExpertBuffer.open(digits_smooth_buffer)
    layout, theta = buf.layout, buf.snapshot(buf.expert_ids[0], 2)
    out = perturb_conv_weights(theta, layout, 1.0, torch.Generator().manual_seed(0))
    before, after = layout.unflatten(theta), layout.unflatten(out)
    assert any(len(s) == 4 for s in layout.shapes)
    for name, shape in zip(layout.names, layout.shapes, strict=True):
        if len(shape) != 4:
            assert torch.equal(before[name], after[name]), name
            continue
        # w' = w + a * (d / ||d||_F) * w: the relative change (w' - w) / w is a unit-norm Gaussian direction
        rel = (after[name] - before[name])[before[name] != 0] / before[name][before[name] != 0]
        assert float(rel.norm()) == pytest.approx(1.0, rel=1e-3), name
    assert torch.equal(out, perturb_conv_weights(theta, layout, 1.0, torch.Generator().manual_seed(0)))
    assert torch.equal(perturb_conv_weights(theta, layout, 0.0, torch.Generator()), theta)


def test_step_starts_from_the_perturbed_checkpoint(digits, digits_smooth_buffer, monkeypatch):
    seen = _spy(monkeypatch)
    m, cfg, gen, st = _state(digits, digits_smooth_buffer, {"init": "real", "weight_perturb": 1.0})
    t = int(m.step(st, 0, gen)["start_epoch"])
    buf = st.runtime["buffer"]
    assert not any(torch.equal(seen["theta0"], buf.snapshot(e, t)) for e in buf.expert_ids)
    m, cfg, gen, st = _state(digits, digits_smooth_buffer, {"init": "real", "weight_perturb": 0.0})
    t = int(m.step(st, 0, gen)["start_epoch"])
    assert any(torch.equal(seen["theta0"], buf.snapshot(e, t)) for e in buf.expert_ids)


@pytest.mark.parametrize("mode,weights", [("aggregate", [1.0, 1.0, 1.0]), ("adaptive", [1 / 3, 2 / 3, 1.0])])
def test_intermediate_matching_adds_checkpoints_t_plus_i(digits, digits_smooth_buffer, monkeypatch, mode, weights):
    seen = _spy(monkeypatch)
    over = {"init": "real", "weight_perturb": 0.0, "intermediate_loss": mode, "expert_epochs": 3, "syn_steps": 7}
    m, cfg, gen, st = _state(digits, digits_smooth_buffer, over)
    t = int(m.step(st, 0, gen)["start_epoch"])
    buf = st.runtime["buffer"]
    (k,) = [e for e in buf.expert_ids if torch.equal(seen["theta0"], buf.snapshot(e, t))]
    assert [mt.step for mt in seen["matches"]] == [2, 4, 7]  # floor(N / M) * i for i = 1, 2, then N
    assert [mt.weight for mt in seen["matches"]] == pytest.approx(weights)
    for i, mt in enumerate(seen["matches"], start=1):
        assert torch.equal(mt.target, buf.snapshot(k, t + i))
    m, cfg, gen, st = _state(digits, digits_smooth_buffer, {**over, "intermediate_loss": "none"})
    m.step(st, 0, gen)
    assert [mt.step for mt in seen["matches"]] == [7]


def _ast_balance(start_epoch: int, max_start_epoch: int) -> float:
    """AST distill.py's lines: ``if start_epoch >= args.max_start_epoch//2: ce_loss *= math.log(start_epoch -
    args.max_start_epoch//2 + 8, 5)`` else ``ce_loss /= math.log(args.max_start_epoch//2 - start_epoch + 8, 5)``."""
    if start_epoch >= max_start_epoch // 2:
        return math.log(start_epoch - max_start_epoch // 2 + 8, 5)
    return 1.0 / math.log(max_start_epoch // 2 - start_epoch + 8, 5)


def test_balanced_loss_uses_the_integer_midpoint():
    # odd T is where T // 2 (AST) and T / 2 differ: T = 25, t = 12 is log5(8) = 1.292 in AST, 0.752 with T / 2
    assert balanced_loss_weight(12, 25) == pytest.approx(1.2920, abs=1e-4)
    assert balanced_loss_weight(11, 25) == pytest.approx(0.7325, abs=1e-4)  # 1 / log5(9)
    for big_t in (2, 3, 20, 25, 41):
        for t in range(big_t):
            assert balanced_loss_weight(t, big_t) == pytest.approx(_ast_balance(t, big_t), rel=1e-12), (t, big_t)


def test_balanced_loss_and_heavy_ball_student(digits, digits_smooth_buffer, monkeypatch):
    assert balanced_loss_weight(0, 20) < 1.0 < balanced_loss_weight(19, 20)  # early segments weigh less
    assert balanced_loss_weight(10, 20) == pytest.approx(1.2920, abs=1e-4)  # log5(8)
    assert balanced_loss_weight(9, 20) == pytest.approx(1 / 1.3652, abs=1e-4)  # 1 / log5(9)
    seen = _spy(monkeypatch)
    m, cfg, gen, st = _state(digits, digits_smooth_buffer, {"init": "real"})
    assert cfg.max_start_epoch % 2 == 1  # the digits preset's T = 3 is odd: t = 1 is above AST's midpoint T // 2
    t = int(m.step(st, 0, gen)["start_epoch"])
    assert seen["loss_scale"] == pytest.approx(_ast_balance(t, cfg.max_start_epoch), rel=1e-12)
    assert seen["momentum"] == 0.9
    m, cfg, gen, st = _state(digits, digits_smooth_buffer, {"init": "real", "balanced_loss": False})
    m.step(st, 0, gen)
    assert seen["loss_scale"] == 1.0


def test_with_every_mechanism_off_ast_is_mtt(digits, digits_smooth_buffer):
    mtt_cfg = get_method("mtt").resolve_config("digits-ipc1", {"expert_kind": "smooth"})
    out = {}
    for name in ("ast", "mtt"):
        if name == "ast":
            m, cfg, gen, st = _state(digits, digits_smooth_buffer, {**config_to_dict(mtt_cfg), **MTT_LIKE}, preset=None)
        else:
            m, cfg, gen, st = _state(digits, digits_smooth_buffer, {"expert_kind": "smooth"}, name="mtt")
        for it in range(2):
            m.step(st, it, gen)
        out[name] = st.tensors
    for key in ("images", "lr", "mom_images", "mom_lr"):
        assert torch.equal(out["ast"][key], out["mtt"][key]), key
