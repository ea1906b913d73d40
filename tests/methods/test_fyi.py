"""FYI (Son et al., ECCV 2024, arXiv:2407.08113): the ``fyi`` option of DC, DSA, DM and the MTT family.

What is checked: the flipped concatenation against explicit mirrored copies (values and gradients); each matcher's
loss and pixel gradient with ``fyi=True`` against the same matcher without it on the explicit set [X; flip X] under
identical draws; the MTT meta-gradient (full and lean, hard and soft labels) against an explicit mirrored batch; the
batch policy (``batch_syn`` halved); the refusal on no-flip datasets; short runs that resume exactly; the benchmark.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from condense.augment import NO_FLIP_DATASETS, check_flip_allowed, flip_concat, get_augment
from condense.data.base import from_uint8_arrays
from condense.errors import MismatchError
from condense.methods import RunContext, distill, get_method
from condense.methods._trajectory import minibatch_plan
from condense.methods._unroll import MatchTarget, StepPlan, meta_gradient
from condense.models import create_model
from condense.models.params import ParamLayout

K, HW = 4, 8  # classes and image side of the flip-allowed test dataset
BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _mirror(x: torch.Tensor) -> torch.Tensor:
    """The W-mirror by explicit index reversal (numpy slicing), independent of ``Tensor.flip``."""
    return torch.from_numpy(np.ascontiguousarray(x.detach().numpy()[..., ::-1]))


@pytest.fixture(scope="module")
def rgb():
    """A tiny flip-allowed RGB dataset (4 classes, 8x8): random uint8 images with a class-dependent colour bias."""
    rng = np.random.default_rng(0)

    def split(per: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(K), per)
        x = rng.integers(0, 256, size=(len(y), HW, HW, 3)).astype(np.int16)
        x[..., 0] += (y * 30)[:, None, None]  # a learnable signal, so the experts move
        return np.clip(x, 0, 255).astype(np.uint8), y

    (xtr, ytr), (xte, yte) = split(24), split(6)
    return from_uint8_arrays("tiny_rgb", xtr, ytr, xte, yte, [f"c{i}" for i in range(K)], (0.5,) * 3, (0.25,) * 3)


@pytest.fixture(scope="module")
def rgb_buffer(rgb, tmp_path_factory) -> Path:
    """One vanilla expert of 3 epochs on ``rgb`` (convnetd2, width 16), with flips in its DSA."""
    from condense.expert_trajectories import get_expert_config, record_experts

    out = tmp_path_factory.mktemp("fyi") / "buffer"
    cfg = get_expert_config("vanilla", lr_teacher=0.05, batch_size=32, augment="dsa")
    record_experts(rgb, "convnetd2", 1, 3, out, config=cfg, model_kwargs={"width": 16}, seed=0, quiet=True)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# The helper
# ----------------------------------------------------------------------------------------------------------------------


def test_flip_concat_is_the_batch_and_its_mirror_with_gradients_summed():
    x = torch.randn(3, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([2, 0, 1])
    out, yy = flip_concat(x, y)
    torch.testing.assert_close(out[:3], x.detach(), rtol=0, atol=0)
    torch.testing.assert_close(out[3:], _mirror(x), rtol=0, atol=0)
    assert yy.tolist() == [2, 0, 1, 2, 0, 1]
    w = torch.randn_like(out)
    (g,) = torch.autograd.grad((w * out).sum(), x)
    torch.testing.assert_close(g, w[:3] + _mirror(w[3:]))
    # class-wise layout: the mirror of each class's row follows it inside the class
    xc = torch.randn(2, 3, 1, 2, 2)
    out_c, none = flip_concat(xc, dim=1)
    assert none is None and out_c.shape == (2, 6, 1, 2, 2)
    torch.testing.assert_close(out_c[1, 3:], _mirror(xc[1]), rtol=0, atol=0)


def test_no_flip_datasets_are_refused_by_the_guard():
    check_flip_allowed("cifar10")
    for name in NO_FLIP_DATASETS:
        with pytest.raises(MismatchError, match=name):
            check_flip_allowed(name)


# ----------------------------------------------------------------------------------------------------------------------
# (a) exactness: fyi on X == no fyi on the explicit [X_c; flip X_c] per class, same draws
# ----------------------------------------------------------------------------------------------------------------------


def _explicit(images: torch.Tensor, ipc: int) -> torch.Tensor:
    """Per class, [X_c; mirror(X_c)], class-major: the set a fyi=False run would need to match fyi=True."""
    xc = images.view(K, ipc, *images.shape[1:])
    return torch.cat([xc, _mirror(xc)], dim=1).flatten(0, 1)


def _fold(g_explicit: torch.Tensor, ipc: int) -> torch.Tensor:
    """Map a gradient on the explicit set back to X: the first half plus the mirrored second half, per class."""
    g = g_explicit.view(K, 2 * ipc, *g_explicit.shape[1:])
    return (g[:, :ipc] + _mirror(g[:, ipc:])).flatten(0, 1)


def _one_step(name: str, data, over: dict, ipc: int, images: torch.Tensor | None = None):
    """One step of a class-wise matcher from noise (or from ``images``): (loss, pixel gradient, images before)."""
    m = get_method(name)
    cfg = m.resolve_config(None, {"init": "noise", "lr_img": 1.0, **over})
    state = m.init_state(data, cfg, ipc, torch.Generator().manual_seed(1), RunContext())
    if images is not None:
        state.tensors["images"].copy_(images)
    before = state.tensors["images"].clone()
    out = m.step(state, 0, torch.Generator().manual_seed(7))
    # first SGD step from a zero momentum buffer: S <- S - lr * g, lr = 1
    return out["loss"], before - state.tensors["images"], before


@pytest.mark.parametrize(
    ("name", "over"),
    [
        ("dm", {"batch_real": 8, "model": "convnetd2"}),
        ("dsa", {"batch_real": 8, "model": "convnetd2", "num_outer_loops": 1, "inner_epochs": 0}),
        ("dc", {"batch_real": 8, "model": "convnetd2", "num_outer_loops": 1, "inner_epochs": 0, "distance": "mse"}),
    ],
)
def test_loss_and_pixel_gradient_equal_the_explicit_mirrored_set(name, over, rgb):
    ipc = 2
    loss_fyi, g_fyi, x = _one_step(name, rgb, {**over, "fyi": True}, ipc)
    loss_ref, g_ref, _ = _one_step(name, rgb, over, 2 * ipc, images=_explicit(x, ipc))
    assert loss_fyi == pytest.approx(loss_ref, rel=1e-5)
    torch.testing.assert_close(g_fyi, _fold(g_ref, ipc), rtol=1e-4, atol=1e-6)
    # and the option changes the result: without it the same X gives another loss
    loss_off, _, _ = _one_step(name, rgb, over, ipc)
    assert abs(loss_off - loss_fyi) > 1e-4 * abs(loss_fyi)


def test_dc_network_update_trains_on_mirrored_minibatches(rgb, monkeypatch):
    """Between outer loops every minibatch goes through flip_concat with its labels before DSA."""
    import condense.methods.dc as dc

    seen = []

    def spy(x, labels=None, *, dim=0):
        seen.append((tuple(x.shape), dim, None if labels is None else labels.clone()))
        return flip_concat(x, labels, dim=dim)

    monkeypatch.setattr(dc, "flip_concat", spy)
    over = {"batch_real": 4, "model": "convnetd2", "num_outer_loops": 2, "inner_epochs": 1, "batch_train": 3}
    _one_step("dsa", rgb, {**over, "fyi": True}, 2)
    class_wise = [s for s in seen if s[1] == 1]
    inner = [s for s in seen if s[1] == 0]
    assert [s[0][:2] for s in class_wise] == [(K, 2), (K, 2)]  # the matching loss of both outer loops
    assert [s[0][0] for s in inner] == [3, 3, 2]  # the 8 images in minibatches of 3, each mirrored
    assert all(s[2] is not None and s[2].shape == (s[0][0],) for s in inner)


def _student(seed: int = 0):
    net = create_model("convnetd2", in_channels=3, num_classes=K, image_size=(HW, HW), width=8, seed=seed)
    lay = ParamLayout.from_module(net)
    return net, lay, lay.flatten(dict(net.named_parameters())).detach()


@pytest.mark.parametrize("mode", ["full", "lean"])
@pytest.mark.parametrize("soft", [False, True])
def test_mtt_meta_gradient_equals_an_explicit_mirrored_batch(mode, soft):
    torch.manual_seed(0)
    net, lay, theta0 = _student()
    n = 6
    x = torch.randn(n, 3, HW, HW, dtype=torch.float32)
    y = torch.randn(n, K) if soft else torch.arange(n) % K
    aug = get_augment("dsa")
    plan = minibatch_plan(x, 3, 4, aug, torch.Generator().manual_seed(3), mirror=True)
    assert [p.idx.numel() for p in plan] == [2, 2, 2]
    target = theta0 + 0.01 * torch.randn_like(theta0)
    lr = torch.tensor(0.05)
    kw = dict(augment=aug, mode=mode, labels_grad=soft)
    mg = meta_gradient(net, lay, theta0, x, y, lr, plan, [MatchTarget(3, target)], mirror=True, **kw)
    # the explicit batch: E = [X; mirror X], step n sees E[[idx, idx + n]] under the same draw
    e = torch.cat([x, _mirror(x)])
    ey = torch.cat([y, y])
    plan_e = [StepPlan(torch.cat([p.idx, p.idx + n]), p.aug_params) for p in plan]
    ref = meta_gradient(net, lay, theta0, e, ey, lr, plan_e, [MatchTarget(3, target)], **kw)
    assert mg.loss == pytest.approx(ref.loss, rel=1e-5)
    torch.testing.assert_close(mg.lr, ref.lr, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(mg.images, ref.images[:n] + _mirror(ref.images[n:]), rtol=1e-4, atol=1e-7)
    if soft:
        torch.testing.assert_close(mg.labels, ref.labels[:n] + ref.labels[n:], rtol=1e-4, atol=1e-7)
    # the option matters: the same plan without the mirror gives another loss
    off = meta_gradient(net, lay, theta0, x, y, lr, [StepPlan(p.idx) for p in plan], [MatchTarget(3, target)],
                        mode=mode, labels_grad=soft)  # fmt: skip
    assert off.loss != pytest.approx(mg.loss, rel=1e-4)


# ----------------------------------------------------------------------------------------------------------------------
# (b) batch policy
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "batch", "sizes", "plain"),
    [
        # 6 -> 3 distinct per step; chunks of one permutation, its remainder (10 mod 3 = 1) popped first
        (10, 6, [1, 3, 3, 3, 1], [4, 6, 4, 6, 4]),
        (10, None, [5, 5, 5, 5, 5], [10, 10, 10, 10, 10]),  # unset: ceil(10 / 2)
        (5, None, [2, 3, 2, 3, 2], [5, 5, 5, 5, 5]),  # unset, odd: chunks of ceil(5 / 2) = 3 and the remainder 2
        (10, 7, [2, 4, 4, 2, 4], [3, 7, 3, 7, 3]),  # odd batch: ceil(7 / 2) = 4 distinct, 8 seen
        (3, 100, [3, 3, 3, 3, 3], [3, 3, 3, 3, 3]),  # never more than the set
    ],
)
def test_minibatch_plan_halves_the_batch_and_draws_for_both_halves(n, batch, sizes, plain):
    x = torch.randn(n, 3, HW, HW)
    plan = minibatch_plan(x, 5, batch, get_augment("dsa"), torch.Generator().manual_seed(0), mirror=True)
    assert [p.idx.numel() for p in plan] == sizes
    for p in plan:
        assert p.idx.unique().numel() == p.idx.numel()  # distinct images; their mirrors are added in the step
        lead = {v.shape[0] for k, v in p.aug_params.items() if k != "group"}
        assert lead == {2 * p.idx.numel()}  # one draw per image the step sees, mirrors included
    ref = minibatch_plan(x, 5, batch, get_augment("dsa"), torch.Generator().manual_seed(0))
    assert [p.idx.numel() for p in ref] == plain


def test_mtt_step_with_batch_syn_b_uses_b_over_2_distinct_images(rgb, rgb_buffer, monkeypatch):
    import condense.methods.mtt as mtt

    calls = []
    real = mtt.meta_gradient

    def spy(*args, **kwargs):
        calls.append((args[6], kwargs.get("mirror")))
        return real(*args, **kwargs)

    monkeypatch.setattr(mtt, "meta_gradient", spy)
    over = {"fyi": True, "batch_syn": 6, "syn_steps": 4, "max_start_epoch": 1, "expert_epochs": 1, "lr_img": 10.0}
    syn = distill("mtt", rgb, ipc=3, overrides={**over, "num_iterations": 1}, run=RunContext(buffer=rgb_buffer))
    (plan, mirror), = calls  # fmt: skip
    assert mirror is True and len(plan) == 4
    assert all(p.idx.numel() == 3 and p.idx.unique().numel() == 3 for p in plan)
    assert syn.images.shape[0] == K * 3  # only the N * IPC images are stored


def test_variants_inherit_the_option():
    for name in ("mtt", "ftd", "datm", "ast", "dc", "dsa", "dm"):
        fields = {f.name: f for f in dataclasses.fields(get_method(name).Config)}
        assert "fyi" in fields and fields["fyi"].default is False, name


# ----------------------------------------------------------------------------------------------------------------------
# (c) refusal on no-flip datasets
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dc", "dsa", "dm", "mtt", "ftd", "datm", "ast"])
def test_fyi_is_refused_on_digits_in_one_line(name, digits):
    with pytest.raises(MismatchError, match="'digits' must not be flipped") as err:
        distill(name, digits, ipc=1, overrides={"fyi": True, "num_iterations": 1}, run=RunContext(quiet=True))
    assert "\n" not in str(err.value) and name in str(err.value)


# ----------------------------------------------------------------------------------------------------------------------
# (d) short runs that resume exactly
# ----------------------------------------------------------------------------------------------------------------------

RUNS = {
    "dm": {"batch_real": 8, "model": "convnetd2", "lr_img": 10.0},
    "dsa": {"batch_real": 8, "model": "convnetd2", "num_outer_loops": 2, "inner_epochs": 1},
    "mtt-full": {"syn_steps": 4, "batch_syn": 4, "max_start_epoch": 2, "expert_epochs": 1, "lr_img": 10.0},
    "mtt-lean": {"syn_steps": 4, "max_start_epoch": 2, "expert_epochs": 1, "lr_img": 10.0, "unroll": "lean"},
    "datm": {"syn_steps": 3, "batch_syn": 4, "max_start_epoch": 2, "current_max_start_epoch": 1, "expert_epochs": 1,
             "expansion_end_iterations": 2, "init": "real", "expert_kind": "any", "lr_img": 10.0},
}  # fmt: skip


def _fyi_run(key: str, data, buffer, seed: int = 4, **run_kwargs):
    name = key.split("-")[0]
    over = {**RUNS[key], "fyi": True, "num_iterations": 3}
    run = RunContext(quiet=True, buffer=buffer if name in ("mtt", "datm") else None, **run_kwargs)
    return distill(name, data, ipc=2, overrides=over, generator=torch.Generator().manual_seed(seed), run=run)


@pytest.mark.parametrize("key", list(RUNS))
def test_short_fyi_run_resumes_exactly(key, rgb, rgb_buffer, tmp_path, monkeypatch):
    ref = _fyi_run(key, rgb, rgb_buffer)
    assert ref.images.shape == (K * 2, 3, HW, HW) and bool(torch.isfinite(ref.images).all())
    cls = type(get_method(key.split("-")[0]))
    real_step = cls.step

    class Interrupt(Exception):
        pass

    def interrupted(self, state, it, gen):
        if it == 2:
            raise Interrupt
        return real_step(self, state, it, gen)

    monkeypatch.setattr(cls, "step", interrupted)
    with pytest.raises(Interrupt):
        _fyi_run(key, rgb, rgb_buffer, out_dir=tmp_path, checkpoint_every=1)
    monkeypatch.setattr(cls, "step", real_step)
    syn = _fyi_run(key, rgb, rgb_buffer, out_dir=tmp_path, checkpoint_every=1)
    assert syn.meta["resumed_from"] == 2
    assert torch.equal(syn.images, ref.images) and torch.equal(syn.labels, ref.labels) and syn.lr == ref.lr
    assert syn.config["fyi"] is True


# ----------------------------------------------------------------------------------------------------------------------
# The benchmark (a generated CIFAR-shaped stand-in, so it runs without ../shared/data)
# ----------------------------------------------------------------------------------------------------------------------


def test_fyi_benchmark_quick_prints_one_json_line(capsys):
    sys.path.insert(0, str(BENCH))
    try:
        import fyi_speed
    finally:
        sys.path.remove(str(BENCH))
    out = fyi_speed.main(["--quick", "--standin"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == out
    modes = {r["mode"]: r for r in out["results"] if "median_ms" in r}
    assert set(modes) == {"dm", "dm+fyi"}
    for r in modes.values():
        assert r["median_ms"] > 0 and r["peak_mem_mb"] > 0 and 0.0 <= r["accuracy"] <= 1.0
        assert 0.0 <= r["random_real_accuracy"] <= 1.0
    assert out["config"]["data"].startswith("stand-in")
