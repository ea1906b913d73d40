"""record_experts: configs, vmap == loop, GSAM and SGD against references, resume after a real kill, torchrun."""

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
import torch.nn.functional as F

from condense.config import config_from_dict
from condense.errors import ConfigError, DivergenceError, MismatchError
from condense.expert_trajectories import (
    EXPERT_PRESETS,
    MANIFEST_NAME,
    ExpertBuffer,
    FlatExpertConfig,
    SmoothExpertConfig,
    VanillaExpertConfig,
    derive_seed,
    expert_filename,
    get_expert_config,
    gsam_gradient,
    list_expert_kinds,
    record_experts,
)
from condense.models import create_model

MODEL_KW = {"width": 8}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _record(data, out, n=2, epochs=2, **kw):
    kw.setdefault("config", get_expert_config("vanilla", batch_size=128, augment="dsa_noflip"))
    return record_experts(data, "convnet", n, epochs, out, quiet=True, model_kwargs=MODEL_KW, **kw)


# ----------------------------------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------------------------------


def test_configs_have_paper_defaults_and_round_trip():
    v, f, s = get_expert_config("vanilla"), get_expert_config("flat"), get_expert_config("smooth")
    assert isinstance(v, VanillaExpertConfig) and (v.lr_teacher, v.momentum, v.weight_decay, v.batch_size) == (
        0.01,
        0.0,
        0.0,
        256,
    )
    assert isinstance(f, FlatExpertConfig) and (f.rho, f.alpha, f.adaptive) == (0.01, 0.3, True)
    assert isinstance(s, SmoothExpertConfig) and (s.momentum, s.weight_decay, s.gp_weight) == (0.9, 1e-3, 2.0)
    assert [s.loss_scale(e) for e in (0, 9, 10)] == pytest.approx([0.5, 0.95, 1.0])
    assert get_expert_config("ftd_alpha1").alpha == 1.0 and get_expert_config("datm").kind == "flat"
    assert EXPERT_PRESETS["datm"]["epochs"] == 100
    for name in list_expert_kinds():
        cfg = get_expert_config(name)
        assert config_from_dict(type(cfg), json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="lr_teacher"):
        get_expert_config("vanilla", lr_teacher=-1.0)
    with pytest.raises(ConfigError, match="did you mean 'flat'"):
        get_expert_config("flta")
    with pytest.raises(ConfigError, match="unknown FlatExpertConfig field 'rh'"):
        get_expert_config("flat", rh=0.1)
    with pytest.raises(ConfigError, match="augment"):
        get_expert_config("vanilla", augment="dssa")


def test_bad_arguments_are_refused(digits, tmp_path):
    with pytest.raises(ConfigError, match="n_experts"):
        record_experts(digits, "convnet", 0, 1, tmp_path)
    with pytest.raises(ConfigError, match="dtype"):
        record_experts(digits, "convnet", 1, 1, tmp_path, dtype="float64")
    with pytest.raises(ConfigError, match="contradicts"):
        record_experts(digits, "convnet", 1, 1, tmp_path, kind="smooth", config=get_expert_config("flat"))


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


def test_functional_sgd_matches_torch_optim(digits, tmp_path):
    """Momentum + weight decay + lr decay against torch.optim.SGD on the same data order (no augmentation)."""
    cfg = get_expert_config(
        "vanilla",
        momentum=0.9,
        weight_decay=5e-3,
        batch_size=256,
        augment="none",
        lr_decay_factor=0.5,
        lr_decay_epoch=1,
    )
    buf = _record(digits, tmp_path / "b", n=1, epochs=2, config=cfg, seed=3)
    net = create_model(
        "convnet", in_channels=1, num_classes=10, image_size=(8, 8), seed=derive_seed(3, 0, 0, "init"), **MODEL_KW
    )
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-3)
    order = torch.Generator().manual_seed(derive_seed(3, 0, 0, "order"))
    n = digits.x_train.shape[0]
    for epoch in range(2):
        if epoch == 1:
            opt.param_groups[0]["lr"] *= 0.5
        perm = torch.randperm(n, generator=order)
        for s in range(0, n, 256):
            idx = perm[s : s + 256]
            opt.zero_grad()
            F.cross_entropy(net(digits.x_train[idx]), digits.y_train[idx]).backward()
            opt.step()
    ref = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    torch.testing.assert_close(buf.snapshot(0, -1), ref, rtol=1e-4, atol=1e-5)


def _gsam_reference(net, x, y, rho, alpha):
    """GSAM as the FTD code does it: in-place perturbation and p.grad surgery on a module."""
    params = list(net.parameters())
    F.cross_entropy(net(x), y).backward()
    old_g = [p.grad.clone() for p in params]
    norm = torch.norm(torch.stack([(p.abs() * p.grad).norm(2) for p in params]), 2)
    scale = rho / (norm + 1e-12)
    e_ws = []
    with torch.no_grad():
        for p in params:
            e_w = p.grad * scale * p.pow(2)
            p.add_(e_w)
            e_ws.append(e_w)
    net.zero_grad()
    F.cross_entropy(net(x), y).backward()
    inner = sum((g * p.grad).sum() for g, p in zip(old_g, params))
    new_norm = torch.norm(torch.stack([p.grad.norm(2) for p in params]), 2)
    old_norm = torch.norm(torch.stack([g.norm(2) for g in old_g]), 2)
    cosine = inner / (new_norm * old_norm + 1e-12)
    out = []
    with torch.no_grad():
        for p, g, e_w in zip(params, old_g, e_ws):
            vertical = g - cosine * old_norm * p.grad / (new_norm + 1e-12)
            out.append(p.grad - alpha * vertical)
            p.sub_(e_w)
    return out


def test_gsam_gradient_matches_the_optimizer_form():
    torch.manual_seed(0)
    net = create_model("convnet", in_channels=1, num_classes=10, image_size=(8, 8), seed=0, width=4)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    params = {k: v.detach().clone() for k, v in net.named_parameters()}

    def grad_fn(p, perturbed):
        def loss(q):
            return F.cross_entropy(torch.func.functional_call(net, q, (x,)), y)

        return torch.func.grad_and_value(loss)(p)

    d, loss = gsam_gradient(grad_fn, params, rho=0.05, alpha=0.4)
    ref = _gsam_reference(net, x, y, rho=0.05, alpha=0.4)
    for (k, v), r in zip(d.items(), ref):
        torch.testing.assert_close(v, r, rtol=1e-5, atol=1e-7, msg=k)
    with torch.no_grad():
        assert float(loss) == pytest.approx(float(F.cross_entropy(net(x), y)), rel=1e-6)
    d0, _ = gsam_gradient(grad_fn, params, rho=0.0, alpha=0.0)
    g, _ = grad_fn(params, False)
    for k in g:  # rho = alpha = 0 is plain SGD
        torch.testing.assert_close(d0[k], g[k])


# ----------------------------------------------------------------------------------------------------------------------
# Running statistics, snapshot schedule, divergence, resume rules
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


def test_resume_refuses_other_settings_and_extends(digits, tmp_path):
    first = _record(digits, tmp_path, n=2, epochs=2)
    stamp = (tmp_path / expert_filename(0)).stat().st_mtime_ns
    with pytest.raises(MismatchError, match="epochs"):
        _record(digits, tmp_path, n=2, epochs=3)
    more = _record(digits, tmp_path, n=3, epochs=2)
    assert more.num_experts == 3
    assert (tmp_path / expert_filename(0)).stat().st_mtime_ns == stamp  # kept, not retrained
    torch.testing.assert_close(more.trajectory(1), first.trajectory(1), rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------------------------
# A real kill, then resume
# ----------------------------------------------------------------------------------------------------------------------

_SLOW_RECORD = """
import sys, time
import torch
torch.set_num_threads(1)
import condense.expert_trajectories.recorder as rec
from condense.data import load_dataset

_aug = rec.augment_experts
def slow_augment(*args, **kwargs):  # stretch each step so the parent can kill us mid-expert
    time.sleep(0.03)
    return _aug(*args, **kwargs)
rec.augment_experts = slow_augment
cfg = rec.get_expert_config("vanilla", batch_size=128, augment="dsa_noflip")
rec.record_experts(load_dataset("digits"), "convnet", 3, 3, sys.argv[1], config=cfg, quiet=True,
                   experts_at_once=1, model_kwargs={"width": 8})
"""


def test_kill_then_resume(digits, tmp_path):
    out = tmp_path / "killed"
    script = tmp_path / "slow_record.py"
    script.write_text(_SLOW_RECORD)
    proc = subprocess.Popen([sys.executable, str(script), str(out)], env=_env(), stderr=subprocess.PIPE)
    first = out / expert_filename(0)
    deadline = time.monotonic() + 120
    try:
        while not first.exists():
            if proc.poll() is not None:
                pytest.fail(f"recorder exited early ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("recorder wrote no expert within 120 s")
            time.sleep(0.02)
        time.sleep(0.2)  # expert 1 is now half trained (36 steps x 30 ms each)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    m = json.loads((out / MANIFEST_NAME).read_text())
    assert [e["status"] for e in m["experts"]] == ["done", "pending", "pending"]
    assert not (out / expert_filename(1)).exists()
    stamp = first.stat().st_mtime_ns

    cfg = get_expert_config("vanilla", batch_size=128, augment="dsa_noflip")
    resumed = _record(digits, out, n=3, epochs=3, config=cfg, experts_at_once=1)
    assert resumed.num_experts == 3 and first.stat().st_mtime_ns == stamp
    assert not list(out.glob(".*.tmp"))
    reference = _record(digits, tmp_path / "ref", n=3, epochs=3, config=cfg, experts_at_once=1)
    for e in range(3):  # the interrupted expert was redone from scratch: same trajectory as an uninterrupted run
        torch.testing.assert_close(resumed.trajectory(e), reference.trajectory(e), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# torchrun: 2 gloo processes split the experts
# ----------------------------------------------------------------------------------------------------------------------

_DIST_RECORD = """
import os
import sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from condense.data import load_dataset
from condense.expert_trajectories import get_expert_config, record_experts
cfg = get_expert_config("vanilla", batch_size=128, augment="dsa_noflip")
buf = record_experts(load_dataset("digits"), "convnet", 3, 2, sys.argv[1], config=cfg, quiet=True,
                     model_kwargs={"width": 8})
Path(sys.argv[2], f"rank{os.environ['RANK']}.txt").write_text(f"{buf.num_experts}")
"""


def test_torchrun_gloo_two_processes(digits, tmp_path):
    out = tmp_path / "dist"
    script = tmp_path / "dist_record.py"
    script.write_text(textwrap.dedent(_DIST_RECORD))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(out)]
    cmd.append(str(tmp_path))
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)] == ["3", "3"]  # every rank returns the buffer
    buf = ExpertBuffer.open(out)
    assert buf.num_experts == 3
    assert [buf.expert_record(e)["rank"] for e in range(3)] == [0, 1, 0]  # split over the two ranks
    cfg = get_expert_config("vanilla", batch_size=128, augment="dsa_noflip")
    single = _record(digits, tmp_path / "single", n=3, epochs=2, config=cfg, experts_at_once=1)
    for e in range(3):  # seeds depend on the expert id only, not on the rank that trained it
        torch.testing.assert_close(buf.trajectory(e), single.trajectory(e), rtol=1e-4, atol=1e-5)
