"""DC / DSA: loop table, the layer-wise distance, the vectorized matching loss against a per-class loop, guards."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from condense.augment import get_augment
from condense.errors import ConfigError
from condense.methods import RunContext, distill, get_method
from condense.methods.dc import (
    DSA_PRESETS,
    DCConfig,
    DSAConfig,
    get_loops,
    gradient_matching_loss,
    match_distance,
)
from condense.models import create_model


def test_get_loops_table_and_fallback():
    assert get_loops(1) == (1, 1) and get_loops(10) == (10, 50) and get_loops(50) == (50, 10)
    assert get_loops(20) == (20, 25) and get_loops(30) == (30, 20) and get_loops(40) == (40, 15)
    assert get_loops(5) == (1, 1) and get_loops(15) == (10, 50) and get_loops(200) == (50, 10)
    with pytest.raises(ConfigError):
        get_loops(0)


def _distance_wb_reference(gs: torch.Tensor, gr: torch.Tensor) -> torch.Tensor:
    """The DC code's distance_wb for one parameter of one class, written out plainly."""
    if gs.ndim == 1:
        return torch.zeros(())
    gs, gr = gs.reshape(gs.shape[0], -1), gr.reshape(gr.shape[0], -1)
    return torch.sum(1 - torch.sum(gs * gr, -1) / (gs.norm(dim=-1) * gr.norm(dim=-1) + 1e-6))


def test_layerwise_distance_matches_the_per_class_reference():
    g = torch.Generator().manual_seed(0)
    shapes = {"conv": (4, 3, 3, 3), "norm": (4,), "fc": (5, 16), "bias": (5,)}
    gs = {n: torch.randn(3, *s, generator=g) for n, s in shapes.items()}
    gr = {n: torch.randn(3, *s, generator=g) for n, s in shapes.items()}
    ref = sum(_distance_wb_reference(gs[n][c], gr[n][c]) for n in shapes for c in range(3))
    torch.testing.assert_close(match_distance(gs, gr, "layerwise"), ref, rtol=1e-5, atol=1e-5)
    assert float(match_distance(gs, gs, "layerwise")) == pytest.approx(0.0, abs=1e-4)
    # 1-D parameters are ignored, as in the DC code
    gs2 = {**gs, "bias": gs["bias"] + 100.0}
    torch.testing.assert_close(match_distance(gs2, gr, "layerwise"), ref, rtol=1e-5, atol=1e-5)
    mse = sum(((gs[n] - gr[n]) ** 2).sum() for n in shapes)
    torch.testing.assert_close(match_distance(gs, gr, "mse"), mse)
    flat_s = torch.cat([gs[n].flatten(1) for n in shapes], 1)
    flat_r = torch.cat([gr[n].flatten(1) for n in shapes], 1)
    cos = (1 - F.cosine_similarity(flat_s, flat_r, dim=1, eps=0)).sum()
    torch.testing.assert_close(match_distance(gs, gr, "cos"), cos, rtol=1e-4, atol=1e-4)


def test_vectorized_matching_loss_and_its_gradient_equal_the_per_class_loop(digits):
    """vmap(grad) over classes + double backward == the DC code's loop of autograd.grad(create_graph=True)."""
    k, b, s = digits.num_classes, 6, 2
    net = create_model("convnetw32", in_channels=1, num_classes=k, image_size=(8, 8), seed=0)
    params = {n: p.detach() for n, p in net.named_parameters()}
    g = torch.Generator().manual_seed(1)
    real = torch.stack([digits.x_train[digits.indices_of_class(c)[:b]] for c in range(k)])
    syn = torch.randn(k, s, 1, 8, 8, generator=g, requires_grad=True)
    loss = gradient_matching_loss(net, params, real, syn, "layerwise")
    (grad_vec,) = torch.autograd.grad(loss, syn)

    syn2 = syn.detach().clone().requires_grad_(True)
    plist = list(net.parameters())
    total = torch.zeros(())
    for c in range(k):
        y_r = torch.full((b,), c)
        gw_r = [t.detach() for t in torch.autograd.grad(F.cross_entropy(net(real[c]), y_r), plist)]
        gw_s = torch.autograd.grad(F.cross_entropy(net(syn2[c]), torch.full((s,), c)), plist, create_graph=True)
        total = total + sum(_distance_wb_reference(a, r) for a, r in zip(gw_s, gw_r))
    (grad_loop,) = torch.autograd.grad(total, syn2)
    torch.testing.assert_close(loss, total, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad_vec, grad_loop, rtol=1e-3, atol=1e-5)


def test_an_image_step_lowers_the_matching_loss(digits):
    k = digits.num_classes
    net = create_model("convnetw32", in_channels=1, num_classes=k, image_size=(8, 8), seed=0)
    params = {n: p.detach() for n, p in net.named_parameters()}
    real = torch.stack([digits.x_train[digits.indices_of_class(c)[:16]] for c in range(k)])
    syn = torch.randn(k, 1, 1, 8, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    loss0 = gradient_matching_loss(net, params, real, syn, "layerwise")
    (g,) = torch.autograd.grad(loss0, syn)
    loss1 = gradient_matching_loss(net, params, real, (syn - 0.1 * g).detach(), "layerwise")
    assert float(loss1) < float(loss0.detach())


def test_dc_and_dsa_defaults_follow_the_authors_code():
    """Every default against the authors' ``main.py`` and their README commands (DC: arXiv:2006.05929, DSA:
    arXiv:2102.08259; ``VICO-UoE/DatasetCondensation``)."""
    dc, dsa = DCConfig(), DSAConfig()
    # main.py argparse: --Iteration 1000, --lr_img 0.1, --lr_net 0.01, --batch_real 256, --batch_train 256,
    # --dis_metric ours, --model ConvNet; SGD([image_syn], momentum=0.5); loops from get_loops(ipc)
    paper = {
        "model": "convnet",
        "num_iterations": 1000,
        "lr_img": 0.1,
        "momentum": 0.5,
        "lr_net": 0.01,
        "batch_real": 256,
        "batch_train": 256,
        "distance": "layerwise",
        "num_outer_loops": None,
        "inner_epochs": None,
        "fyi": False,
    }
    for cfg in (dc, dsa):
        assert {k: getattr(cfg, k) for k in paper} == paper
    # DC's command keeps main.py's --init noise and no augmentation; the DSA command is
    # "--init real --method DSA --dsa_strategy color_crop_cutout_flip_scale_rotate" (readme.md)
    assert (dc.init, dc.augment) == ("noise", "none")
    assert (dsa.init, dsa.augment) == ("real", "dsa")
    assert get_augment(dsa.augment).strategy == "color_crop_cutout_flip_scale_rotate"
    assert get_method("dsa").Config is DSAConfig and get_method("dc").Config is DCConfig
    # loop table of the code's get_loops (ipc -> outer_loop, inner_loop)
    assert [get_loops(i) for i in (1, 10, 20, 30, 40, 50)] == [(1, 1), (10, 50), (20, 25), (30, 20), (40, 15), (50, 10)]
    # the paper presets do not reset init: a DSA preset run starts from real images
    for key in DSA_PRESETS:
        assert get_method("dsa").resolve_config(key).init == "real", key
    for key in ("cifar10-ipc1", "cifar10-ipc10", "cifar10-ipc50", "mnist-ipc10"):
        assert get_method("dc").resolve_config(key).init == "noise", key
    with pytest.raises(ConfigError, match="distance"):
        DCConfig(distance="l2")
    with pytest.raises(ConfigError, match="lr_img"):
        DCConfig(lr_img=0.0)


def test_loops_resolved_from_ipc_unless_set(digits):
    m = get_method("dc")
    st = m.init_state(digits, m.resolve_config(), 10, torch.Generator().manual_seed(0), RunContext())
    assert (st.scalars["num_outer_loops"], st.scalars["inner_epochs"]) == (10, 50)
    cfg = m.resolve_config(None, {"num_outer_loops": 3, "inner_epochs": 0})
    st = m.init_state(digits, cfg, 10, torch.Generator().manual_seed(0), RunContext())
    assert (st.scalars["num_outer_loops"], st.scalars["inner_epochs"]) == (3, 0)


def test_models_with_running_stats_are_refused(digits):
    with pytest.raises(ConfigError, match="running statistics"):
        distill("dc", digits, ipc=1, overrides={"model": "convnet_bn", "num_iterations": 1})


@pytest.mark.parametrize("name", ["dc", "dsa"])
def test_short_run_moves_the_images(name, digits):
    over = {"num_iterations": 2, "batch_real": 16, "num_outer_loops": 2, "inner_epochs": 1, "init": "real"}
    m = get_method(name)
    gen = torch.Generator().manual_seed(0)
    cfg = m.resolve_config(None, over)
    st = m.init_state(digits, cfg, 1, gen, RunContext())
    x0 = st.tensors["images"].clone()
    stats = m.step(st, 0, gen)
    assert stats["loss"] > 0 and not torch.equal(x0, st.tensors["images"])
    assert bool(torch.isfinite(st.tensors["images"]).all())
