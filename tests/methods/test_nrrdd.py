"""NRR-DD: the refinement never touches the critical region, DBR labels are two numbers per view, the DBR student
loss pulls the student's distances to the stored ones, refusals, and the digits result against random real images
relabeled by the same teacher under the same soft-label protocol."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from condense.augment.views import ViewRecipe
from condense.errors import ConfigError, MismatchError
from condense.eval.soft import dbr_loss
from condense.labels import dbr_distances, load_label_store, relabel
from condense.methods import RunContext, distill, get_method
from condense.methods.nrrdd import non_critical_mask


def _teacher(k: int = 5, c: int = 1, hw: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(c * hw * hw, k)).eval()


def test_refinement_never_changes_a_pixel_outside_the_mask(digits, digits_teacher):
    method = get_method("nrrdd")
    cfg = method.resolve_config("digits-ipc1", {"num_iterations": 20, "cam_eps": 0.5})
    run = RunContext(quiet=True, teacher=digits_teacher)
    state = method.init_state(digits, cfg, 1, torch.Generator().manual_seed(3), run)
    mosaics = state.tensors["images"].clone()
    mask = state.tensors["mask"]
    frozen = (mask == 0).expand_as(mosaics)
    assert 0.05 < float(frozen.float().mean()) < 0.95  # both regions exist
    gen = torch.Generator().manual_seed(4)
    for it in range(cfg.num_iterations):
        method.step(state, it, gen)
    out = state.tensors["images"]
    assert torch.equal(out[frozen], mosaics[frozen])  # bit for bit
    assert float((out - mosaics)[~frozen].abs().max()) > 0.1  # the non-critical pixels did move
    # through distill: the same generator gives the same mosaics, and the set keeps them where the mask is 0
    syn = distill("nrrdd", digits, 1, preset="digits-ipc1", generator=torch.Generator().manual_seed(3), run=run)
    again = method.init_state(digits, cfg, 1, torch.Generator().manual_seed(3), run)
    keep = (again.tensors["mask"] == 0).expand_as(syn.images)
    assert torch.equal(syn.images[keep], again.tensors["images"][keep])
    assert not torch.equal(syn.images, again.tensors["images"])


def test_mask_is_zero_on_the_critical_region():
    cams = torch.tensor([[[0.0, 0.25, 0.5, 1.0]]])
    assert non_critical_mask(cams, 0.5).flatten().tolist() == [1.0, 0.5, 0.0, 0.0]
    assert non_critical_mask(cams, 0.5, "binary").flatten().tolist() == [1.0, 1.0, 0.0, 0.0]


def test_dbr_store_holds_two_distances_per_view(tmp_path):
    n, k, epochs = 12, 5, 3
    x = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(n) % k
    t = _teacher(k)
    recipe = ViewRecipe(flip=False)
    kw = dict(epochs=epochs, batch_size=5, recipe=recipe, seed=7)
    dbr = relabel(x, [t], mode="dbr", labels=y, dbr_alpha=0.25, out=tmp_path / "dbr", **kw)
    fkd = relabel(x, [t], out=tmp_path / "fkd", **kw)
    shard = load_file(tmp_path / "dbr" / "epoch-0001.safetensors")
    assert "logits" not in shard and shard["dbr"].shape == (n, 2) and shard["dbr"].dtype == torch.float16
    other = load_file(tmp_path / "fkd" / "epoch-0001.safetensors")
    assert set(shard) - {"dbr"} == set(other) - {"logits"}  # the same view parameters
    # per epoch exactly n * (k - 2) fp16 values fewer than the logits store
    assert fkd.label_bytes - dbr.label_bytes == pytest.approx(epochs * n * (k - 2) * 2, abs=epochs * 200)
    raw = sum(t.numel() * t.element_size() for t in shard.values())
    raw_fkd = sum(t.numel() * t.element_size() for t in other.values())
    assert raw_fkd - raw == n * (k - 2) * 2
    # the stored distances are the cross-entropies of the teacher's logits on the same views
    back = load_label_store(tmp_path / "dbr")
    assert back.mode == "dbr" and back.dbr_alpha == 0.25
    z, start = fkd.logits(1), 0
    for v in fkd.views(1):
        m = len(v)
        want = dbr_distances(z[start : start + m], y[v.index], v.perm, float(v.lam))
        assert torch.allclose(back.dbr(1)[start : start + m], want, rtol=2e-3, atol=2e-3)
        start += m
    with pytest.raises(ConfigError, match="DBR distances"):
        back.logits(0)
    with pytest.raises(MismatchError, match="other class labels"):
        back.check_labels((y + 1) % k)
    with pytest.raises(ConfigError, match="labels="):
        relabel(x, [t], mode="dbr", **kw)


def test_dbr_distances_are_cross_entropies_to_the_original_and_mixed_labels():
    z = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    y, perm, lam = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 0, 3, 2]), 0.7
    d = dbr_distances(z, y, perm, lam)
    mixed = lam * F.one_hot(y, 3) + (1 - lam) * F.one_hot(y[perm], 3)
    assert torch.allclose(d[:, 0], F.cross_entropy(z, y, reduction="none"))
    assert torch.allclose(d[:, 1], F.cross_entropy(z, mixed.float(), reduction="none"))


def test_dbr_loss_pulls_the_students_distances_to_the_stored_ones():
    g = torch.Generator().manual_seed(2)
    teacher = torch.randn(16, 6, generator=g) * 2
    y, perm, lam = torch.randint(0, 6, (16,), generator=g), torch.randperm(16, generator=g), 0.6
    target = dbr_distances(teacher, y, perm, lam)
    # at the teacher's logits L_dbr is 0, so the loss is L_sce, the mean distance to the mixed label
    assert torch.allclose(dbr_loss(teacher, target, y, perm, lam, 5.0), target[:, 1].mean())
    s = torch.zeros(16, 6, requires_grad=True)
    gap0 = float((dbr_distances(s.detach(), y, perm, lam) - target).abs().mean())
    opt = torch.optim.Adam([s], lr=0.05)
    for _ in range(300):
        loss = dbr_loss(s, target, y, perm, lam, 50.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    gap = float((dbr_distances(s.detach(), y, perm, lam) - target).abs().mean())
    assert gap < 0.1 * gap0 and gap < 0.1


def test_dbr_set_is_scored_with_the_dbr_loss_on_its_stored_labels(digits, digits_teacher, tmp_path):
    from condense.eval import evaluate
    from condense.synthetic import SyntheticSet

    run = RunContext(quiet=True, teacher=digits_teacher)
    syn = distill("nrrdd", digits, 1, preset="digits-dbr", overrides={"dbr_epochs": 60}, run=run)
    store = syn.label_store
    assert store.mode == "dbr" and store.dbr(0).shape == (10, 2) and store.epochs == 60
    path = syn.save(tmp_path / "nrr.safetensors")
    back = SyntheticSet.load(path)
    assert back.label_store.mode == "dbr"
    row = evaluate(back, digits, models=["convnetd2"], seeds=1, epochs=60, baseline=False)
    assert row["label_mode"] == "dbr" and row["label_source"] == "stored" and not row["teacher_at_train_time"]
    assert row["accuracy"]["convnetd2"]["mean"] > 0.4  # chance is 0.1
    other = dataclasses.replace(back, labels=back.labels.roll(1))
    with pytest.raises(MismatchError, match="other class labels"):
        evaluate(other, digits, models=["convnetd2"], seeds=1, epochs=2, baseline=False)


def test_nrrdd_refuses_missing_and_reordered_teacher(digits, digits_teacher):
    with pytest.raises(ConfigError, match="teachers train"):
        distill("nrrdd", digits, 1, run=RunContext(quiet=True))
    reordered = dataclasses.replace(digits, classes=list(reversed(digits.classes)))
    with pytest.raises(MismatchError, match="class order"):
        distill("nrrdd", reordered, 1, run=RunContext(quiet=True, teacher=digits_teacher))
    with pytest.raises(ConfigError, match="mipc"):
        distill("nrrdd", digits, 10, overrides={"mipc": 5}, run=RunContext(quiet=True, teacher=digits_teacher))


def test_nrrdd_beats_random_real_relabeled_by_the_same_teacher(digits, digits_teacher):
    """Digits IPC 1, ConvNetD2 students, 3 seeds x 300 epochs, online labels from the same teacher for both rows.

    Measured (1 CPU thread): NRR-DD (digits-ipc1) 88.5 +- 0.6 % vs random real 86.2 +- 1.5 %; SRe2L's digits-ipc1
    scores 81.5 % under the same protocol (condense.methods.sre2l), RDED 87.0 %.
    """
    from condense.eval import evaluate

    syn = distill("nrrdd", digits, 1, run=RunContext(quiet=True, teacher=digits_teacher))
    assert syn.meta["eval"] == {"protocol": "soft_label", "model": "convnetd2"}
    row = evaluate(syn, digits, models=["convnetd2"], seeds=3, epochs=300)
    ours, base = row["accuracy"]["convnetd2"]["mean"], row["random_real"]["convnetd2"]["mean"]
    assert ours > base and ours > 0.815
