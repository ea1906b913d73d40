"""INFER on digits: the file holds real bases + compensators, the bases are untouched real images, one UFC is shared by
every class and optimized as the reference loop does, static labels are the teachers' mean logits mixed by MixUp, and
an IPC too small for the formula or a teacher of another class order is refused before any step.

The contract test (``tests/methods/test_contract.py``) covers the config round trip, presets, determinism and
checkpoint-then-resume equality with the ``digits_teacher`` fixture (one teacher, IPC 2: ipc_init 1, 2 images per
class); this file covers what is specific, with a second small teacher of another architecture (M = 2).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from condense.errors import ConfigError, MismatchError
from condense.methods import RunContext, distill
from condense.methods.infer import INFER, ipc_init_for, rebuild_images
from condense.recover import pixel_box
from condense.teachers import load_teacher, train_teacher


@pytest.fixture(scope="module")
def second_teacher(digits, tmp_path_factory):
    """A second architecture for digits: convnet_bn of width 32 and depth 1 (1 s, 99.4 % test accuracy)."""
    out = tmp_path_factory.mktemp("teachers") / "digits_convnet_bn_w32d1"
    train_teacher(digits, "convnet_bn", 15, out, recipe="digits", model_kwargs={"width": 32, "depth": 1}, quiet=True)
    return out


def _never_step(monkeypatch):
    def boom(self, state, it, gen):
        raise AssertionError("a step ran before the refusal")

    monkeypatch.setattr(INFER, "step", boom)


def _distill(digits, teachers, ipc=2, **over):
    over = {"num_iterations": 5, "labels": "static", "label_epochs": 2, "label_batch_size": 10, **over}
    return distill("infer", digits, ipc, overrides=over, run=RunContext(quiet=True, teacher=teachers))


def test_ipc_init_is_the_papers_formula():
    # decoupled.md 2.2 table: CIFAR-10/100 with 4 architectures, ImageNet-1K with 3
    assert [ipc_init_for(i, 4, 10) for i in (10, 50)] == [7, 35]
    assert [ipc_init_for(i, 4, 100) for i in (10, 50, 100)] == [9, 48, 96]
    assert [ipc_init_for(i, 3, 1000) for i in (10, 50)] == [9, 49]
    for ipc in range(2, 60):
        for m in range(1, 6):
            for k in (10, 100):
                assert ipc_init_for(ipc, m, k) == int(ipc / (m / k + 1)) or ipc * k % (m + k) == 0
                assert ipc_init_for(ipc, m, k) * (k + m) <= ipc * k  # storage within the budget


def test_the_file_holds_real_bases_and_compensators(digits, digits_teacher, second_teacher, tmp_path):
    syn = _distill(digits, [digits_teacher, second_teacher], ipc=2)
    k, c, h, w = digits.num_classes, digits.channels, *digits.image_size
    meta = syn.meta
    assert (meta["ipc_storage"], meta["ipc_init"], meta["num_architectures"], meta["images_per_class"]) == (2, 1, 2, 3)
    assert meta["storage_images"] == k * 1 + 2 == 12 and meta["num_ufc"] == 2
    assert syn.ipc == 2 and syn.images.shape == (k * 3, c, h, w)
    assert torch.equal(syn.labels, torch.arange(k).repeat_interleave(3))
    path = syn.save(tmp_path / "infer.safetensors")
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        base, ufc = f.get_tensor("infer_base"), f.get_tensor("infer_ufc")
    # bases + compensators (+ the static logits and the rebuild indices), never the materialized x + u
    assert {"infer_base", "infer_ufc", "infer_logits", "infer_base_index", "infer_ufc_index", "labels"} == keys
    stored = sum(path.stat().st_size for _ in [0])
    assert stored < meta["materialized_bytes"]
    assert base.shape == (k, c, h, w) and ufc.shape == (2, 1, c, h, w)
    assert meta["compact_bytes"] == (base.numel() + ufc.numel()) * 4 == 12 * 64 * 4
    assert meta["materialized_bytes"] == syn.images.numel() * 4
    # every base is an unchanged real training image of its class
    flat = digits.x_train.flatten(1)
    for i in range(k):
        hit = (flat == base[i].flatten()).all(1).nonzero().flatten()
        assert hit.numel() >= 1 and int(digits.y_train[hit[0]]) == i
    # the training images are the bases themselves plus clamp(base + u_m), one u_m shared by all classes
    per_class = syn.images.view(k, 3, c, h, w)
    assert torch.equal(per_class[:, 0], base)
    assert float(ufc.abs().amax()) > 0  # the compensators moved
    lo, hi = pixel_box(digits)
    for m in range(2):
        assert torch.equal(per_class[:, 1 + m], (base + ufc[m, 0]).clamp(float(lo), float(hi)))
    assert torch.equal(rebuild_images(base, ufc, k, pixel_box(digits), 0), syn.images)
    from condense.synthetic import SyntheticSet

    loaded = SyntheticSet.load(path)
    assert torch.equal(loaded.tensors["infer_ufc"], ufc) and loaded.label_store is not None
    assert torch.equal(loaded.images, syn.images)  # rebuilt on load, bit for bit (sha256 checked)
    # an edited compensator no longer rebuilds the recorded images: refused
    from safetensors.torch import load_file, save_file

    from condense.errors import IntegrityError

    t = load_file(str(path))
    t["infer_ufc"] = t["infer_ufc"] + 1e-3
    save_file(t, str(path))
    with pytest.raises(IntegrityError):
        SyntheticSet.load(path)


def test_one_ufc_step_equals_the_reference_loop(digits, digits_teacher):
    """ufc_cifar.py:50-114 written out for one teacher and one slot, no jitter: zeros(1, C, H, W), Adam(0.5, 0.9),
    cosine lr, CE over all classes + r_bn * (10 * first BN + the rest) of ||mean - running||_2 + ||var - running||_2."""
    its, lr, r_bn = 3, 0.25, 1.0
    syn = _distill(digits, [digits_teacher], ipc=2, num_iterations=its, jitter=0, r_bn=r_bn, first_bn_multiplier=10.0)
    base, ufc = syn.tensors["infer_base"], syn.tensors["infer_ufc"]
    net = load_teacher(digits_teacher).module.eval().requires_grad_(False)
    feats = []

    def hook(mod, inp, out):
        x = inp[0]
        var = x.permute(1, 0, 2, 3).reshape(x.shape[1], -1).var(1, unbiased=False)
        feats.append(torch.norm(mod.running_var - var, 2) + torch.norm(mod.running_mean - x.mean([0, 2, 3]), 2))

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    u = torch.zeros(1, *base.shape[1:], requires_grad=True)
    opt = torch.optim.Adam([u], lr=lr, betas=(0.5, 0.9), eps=1e-8)
    y = torch.arange(digits.num_classes)
    for it in range(its):
        for g in opt.param_groups:
            g["lr"] = 0.5 * (1 + torch.cos(torch.tensor(torch.pi * it / its)).item()) * lr
        feats.clear()
        loss = F.cross_entropy(net(base + u), y)
        loss = loss + r_bn * sum(f * (10.0 if i == 0 else 1.0) for i, f in enumerate(feats))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for hd in handles:
        hd.remove()
    assert torch.allclose(ufc[0, 0], u.detach()[0], atol=1e-5), float((ufc[0, 0] - u.detach()[0]).abs().max())


def test_static_labels_are_the_teachers_mean_logits_mixed_by_mixup(digits, digits_teacher, second_teacher):
    syn = _distill(digits, [digits_teacher, second_teacher], ipc=2, num_iterations=2)
    t1, t2 = load_teacher(digits_teacher), load_teacher(second_teacher)
    z = (t1.logits(syn.images) + t2.logits(syn.images)) / 2
    assert torch.allclose(syn.tensors["infer_logits"], z, atol=1e-5)
    store = syn.label_store
    assert store.recipe.mix == "mixup" and store.recipe.mix_alpha == 0.8 and store.epochs == 2
    start = 0
    for v in store.views(1):
        lam, n = float(v.lam), len(v)
        want = lam * z[v.index] + (1 - lam) * z[v.index][v.perm]
        assert torch.allclose(store.logits(1)[start : start + n], want, atol=2e-2)  # fp16 storage
        start += n
    assert syn.meta["label_source"] == "static"
    dyn = _distill(digits, [digits_teacher, second_teacher], ipc=2, num_iterations=2, labels="dynamic")
    assert dyn.label_store is None and "infer_logits" not in dyn.tensors and dyn.meta["label_source"] == "teacher"


def test_an_ipc_without_a_base_slot_is_refused_in_one_line(digits, digits_teacher, monkeypatch):
    _never_step(monkeypatch)
    with pytest.raises(ConfigError) as info:
        _distill(digits, [digits_teacher], ipc=1)
    msg = str(info.value)
    assert "\n" not in msg and "ipc_init = int(IPC / (M / K + 1)) = 0" in msg and "ipc >= 2" in msg


def test_teacher_problems_are_refused_before_a_step(digits, digits_teacher, monkeypatch):
    _never_step(monkeypatch)
    with pytest.raises(ConfigError, match="teachers train"):
        distill("infer", digits, 2, run=RunContext(quiet=True))
    reordered = dataclasses.replace(digits, classes=list(reversed(digits.classes)))
    with pytest.raises(MismatchError, match="class order"):
        distill("infer", reordered, 2, run=RunContext(quiet=True, teacher=digits_teacher))


def test_batch_classes_gives_one_ufc_per_class_chunk(digits, digits_teacher):
    """``--batch-size`` below K (the reference's ImageNet default of 100 of 1000 classes): one UFC per chunk."""
    syn = _distill(digits, [digits_teacher], ipc=2, num_iterations=3, batch_classes=5, labels="dynamic")
    base, ufc = syn.tensors["infer_base"], syn.tensors["infer_ufc"]
    assert ufc.shape == (1, 2, *base.shape[1:]) and syn.meta["num_ufc"] == 2 and syn.meta["storage_images"] == 12
    assert not torch.equal(ufc[0, 0], ufc[0, 1])
    lo, hi = (float(b) for b in pixel_box(digits))
    comp = syn.images.view(10, 2, *base.shape[1:])[:, 1]
    for c in range(10):
        assert torch.equal(comp[c], (base[c] + ufc[0, c // 5]).clamp(lo, hi))
