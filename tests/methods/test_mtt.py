"""MTT on digits: quality vs random real, guard rails (positive lr, NaN rollback), resume, lean mode, the step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from condense.errors import ConfigError, MismatchError
from condense.methods import RunContext, distill, get_method
from condense.methods import mtt as core


def test_mtt_beats_random_real_ipc1(digits, digits_buffer, beats_random):
    beats_random("mtt", digits, digits_buffer)


def _state(digits, buffer, overrides=None, ipc=1, name="mtt", seed=0):
    m = get_method(name)
    cfg = m.resolve_config(f"digits-ipc{ipc}", overrides)
    gen = torch.Generator().manual_seed(seed)
    return m, cfg, gen, m.init_state(digits, cfg, ipc, gen, RunContext(buffer=buffer))


def test_step_updates_images_and_lr(digits, digits_buffer, monkeypatch):
    """One step moves X and alpha by SGD on the meta-gradient: the first momentum step is x - lr * g."""
    grads = []
    real = core.meta_gradient

    def spy(*args, **kwargs):
        mg = real(*args, **kwargs)
        grads.append((mg.images.clone(), mg.lr.clone()))
        return mg

    monkeypatch.setattr(core, "meta_gradient", spy)
    m, cfg, gen, st = _state(digits, digits_buffer)
    x0, lr0 = st.tensors["images"].clone(), st.tensors["lr"].clone()
    stats = m.step(st, 0, gen)
    assert set(stats) >= {"loss", "lr", "grad_norm", "start_epoch"}
    assert stats["loss"] > 0 and not torch.equal(x0, st.tensors["images"])
    ((g_x, g_lr),) = grads
    assert float(g_lr.abs()) > 0
    lr1 = st.tensors["lr"]
    assert float(lr1) != float(lr0)  # alpha is learned, not only the pixels
    torch.testing.assert_close(lr1, (lr0 - cfg.lr_lr * g_lr).clamp(min=cfg.lr_min), rtol=0, atol=0)
    torch.testing.assert_close(st.tensors["images"], x0 - cfg.lr_img * g_x, rtol=1e-6, atol=1e-6)
    assert torch.equal(st.tensors["mom_lr"], g_lr) and float(st.tensors["mom_images"].abs().sum()) > 0


def test_monitoring_scores_the_buffers_model(digits, digits_buffer, tmp_path):
    """Mid-run evaluation trains the distillation model (the buffer's, convnetd2 here), not always ConvNet-3."""
    run = RunContext(buffer=digits_buffer, out_dir=tmp_path, quiet=True, eval_every=1, eval_epochs=1, eval_seeds=1)
    syn = distill("mtt", digits, ipc=1, overrides={"num_iterations": 1}, run=run)
    assert syn.meta["model"] == "convnetd2"
    events = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    (ev,) = [e for e in events if e.get("event") == "eval"]
    assert list(ev["accuracy"]) == ["convnetd2"]


def test_learned_lr_stays_positive(digits, digits_buffer, monkeypatch):
    # a huge lr on alpha with a gradient forced positive throws alpha far below zero; the clamp holds it at lr_min
    m, cfg, gen, st = _state(digits, digits_buffer, {"lr_lr": 1e6, "lr_img": 0.0})
    real = core.meta_gradient

    def flipped(*args, **kwargs):
        mg = real(*args, **kwargs)
        mg.lr = mg.lr.abs() + 1.0
        return mg

    monkeypatch.setattr(core, "meta_gradient", flipped)
    m.step(st, 0, gen)
    assert float(st.tensors["lr"]) == pytest.approx(cfg.lr_min, rel=1e-6)
    assert m.to_synthetic(st).lr > 0


def test_nan_in_step_is_rolled_back(digits, digits_buffer, tmp_path, monkeypatch):
    real = core.meta_gradient
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        mg = real(*args, **kwargs)
        if calls["n"] == 2:  # the second iteration's gradient is NaN
            mg.images = torch.full_like(mg.images, float("nan"))
            mg.loss = float("nan")
        return mg

    monkeypatch.setattr(core, "meta_gradient", poisoned)
    run = RunContext(buffer=digits_buffer, out_dir=tmp_path, quiet=True)
    syn = distill("mtt", digits, ipc=1, overrides={"num_iterations": 3}, run=run)
    assert syn.meta["divergences"] == 1
    assert bool(torch.isfinite(syn.images).all()) and syn.lr > 0
    events = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    div = [e for e in events if e.get("event") == "divergence"]
    assert len(div) == 1 and div[0]["scalars"]["lr_img"] == pytest.approx(50.0)  # halved from the preset's 100


def test_resume_after_interruption_equals_uninterrupted(digits, digits_buffer, tmp_path, monkeypatch):
    over = {"num_iterations": 4}
    ref = distill("mtt", digits, ipc=1, overrides=over, run=RunContext(buffer=digits_buffer, quiet=True))

    real_step = core.MTT.step

    def dying(self, state, it, gen):
        if it == 3:
            raise KeyboardInterrupt  # a kill after the checkpoint at iteration 2
        return real_step(self, state, it, gen)

    run = RunContext(buffer=digits_buffer, out_dir=tmp_path, checkpoint_every=2, quiet=True)
    monkeypatch.setattr(core.MTT, "step", dying)
    with pytest.raises(KeyboardInterrupt):
        distill("mtt", digits, ipc=1, overrides=over, run=run)
    monkeypatch.setattr(core.MTT, "step", real_step)
    resumed = distill("mtt", digits, ipc=1, overrides=over, run=run)
    assert resumed.meta["resumed_from"] == 2
    torch.testing.assert_close(resumed.images, ref.images)
    assert resumed.lr == pytest.approx(ref.lr)


def test_lean_mode_matches_full_mode(digits, digits_buffer):
    out = {}
    for mode in ("full", "lean"):
        m, cfg, gen, st = _state(digits, digits_buffer, {"unroll": mode, "syn_steps": 6})
        stats = m.step(st, 0, gen)
        out[mode] = (stats["loss"], st.tensors["images"].clone(), float(st.tensors["lr"]))
    assert out["lean"][0] == pytest.approx(out["full"][0], rel=1e-5)
    torch.testing.assert_close(out["lean"][1], out["full"][1], rtol=1e-3, atol=1e-4)
    assert out["lean"][2] == pytest.approx(out["full"][2], rel=1e-5)


def test_config_validation():
    """Refused configs. The preset values are pinned against MTT's table in
    ``tests/methods/test_contract.py::test_mtt_and_ftd_presets_equal_the_papers_tables``."""
    m = get_method("mtt")
    with pytest.raises(ConfigError, match="max_start_epoch"):
        m.resolve_config(None, {"min_start_epoch": 5, "max_start_epoch": 5})
    with pytest.raises(ConfigError, match="unroll"):
        m.resolve_config(None, {"unroll": "tesla"})
    with pytest.raises(ConfigError, match="lr_min"):
        m.resolve_config(None, {"lr_min": 1.0, "lr_student_init": 0.01})  # the floor above alpha_0
    with pytest.raises(ConfigError, match="init"):
        m.resolve_config(None, {"init": "representative"})  # AST's init is AST's (ast.py), not MTT's


def test_mtt_step_is_plain_sgd_matching_the_final_checkpoint(digits, digits_buffer, monkeypatch):
    # MTT's own lines of step: one matching term at step N against theta*_{t+M}, mu = 0, inner-loss weight 1
    seen = {}
    real = core.meta_gradient

    def spy(model, layout, theta0, images, labels, lr, plan, matches, **kw):
        seen.update(theta0=theta0, plan=plan, matches=matches, **kw)
        return real(model, layout, theta0, images, labels, lr, plan, matches, **kw)

    monkeypatch.setattr(core, "meta_gradient", spy)
    m, cfg, gen, st = _state(digits, digits_buffer)
    stats = m.step(st, 0, gen)
    assert seen["momentum"] == 0.0 and seen["loss_scale"] == 1.0 and len(seen["plan"]) == cfg.syn_steps
    (only,) = seen["matches"]
    buf, t = st.runtime["buffer"], int(stats["start_epoch"])
    assert only.step == cfg.syn_steps and only.weight == 1.0
    assert cfg.min_start_epoch <= t < cfg.max_start_epoch
    # the student starts at theta*_t of one expert k (unperturbed) and is matched with theta*_{t+M} of the same k
    (k,) = [e for e in buf.expert_ids if torch.equal(seen["theta0"], buf.snapshot(e, t))]
    assert torch.equal(only.target, buf.snapshot(k, t + cfg.expert_epochs))


def test_needs_a_matching_buffer(digits, digits_buffer, tmp_path):
    assert get_method("mtt").needs_buffer
    with pytest.raises(ConfigError, match="buffer"):
        distill("mtt", digits, ipc=1, overrides={"num_iterations": 1}, run=RunContext())
    with pytest.raises(MismatchError, match="flat"):
        distill("mtt", digits, ipc=1, overrides={"expert_kind": "flat"}, run=RunContext(buffer=digits_buffer))
    with pytest.raises(ConfigError, match="snapshot"):
        distill("mtt", digits, ipc=1, overrides={"max_start_epoch": 6}, run=RunContext(buffer=digits_buffer))


_CHILD = """
import time, torch
torch.set_num_threads(1)
from condense.data import load_dataset
from condense.methods import RunContext, distill
from condense.methods.mtt import MTT

real_step = MTT.step

def slow_step(self, state, it, gen):  # slow enough that the parent kills it mid-run
    time.sleep(0.05)
    return real_step(self, state, it, gen)

MTT.step = slow_step
run = RunContext(out_dir={out!r}, buffer={buf!r}, checkpoint_every=3, quiet=True)
distill("mtt", load_dataset("digits"), ipc=1, overrides={over!r}, run=run)
"""


def test_resume_after_sigkill(digits, digits_buffer, tmp_path):
    over = {"num_iterations": 30, "syn_steps": 5}
    out = tmp_path / "run"
    code = textwrap.dedent(_CHILD.format(out=str(out), buf=str(digits_buffer), over=over))
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while not (out / "checkpoint.json").exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    killed_at = json.loads((out / "checkpoint.json").read_text())["iteration"]
    assert 3 <= killed_at < 30
    run = RunContext(out_dir=out, buffer=digits_buffer, checkpoint_every=3, quiet=True)
    syn = distill("mtt", digits, ipc=1, overrides=over, run=run)
    assert syn.meta["resumed_from"] >= killed_at and bool(torch.isfinite(syn.images).all()) and syn.lr > 0
    ref = distill("mtt", digits, ipc=1, overrides=over, run=RunContext(buffer=digits_buffer, quiet=True))
    torch.testing.assert_close(syn.images, ref.images, rtol=1e-6, atol=1e-6)  # killed + resumed == uninterrupted
