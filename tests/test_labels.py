"""Views, the soft-label store and the soft-label protocol: exact replay, verification, online == stored."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from condense.augment.views import ViewRecipe, Views, apply_views, sample_views
from condense.errors import ConfigError, IntegrityError, MismatchError
from condense.labels import load_label_store, relabel


def _teacher(k: int = 5, c: int = 3, hw: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(c * hw * hw, k)).eval()


def test_identity_view_is_the_image_and_flip_mirrors():
    x = torch.randn(3, 2, 6, 6)
    full = torch.tensor([[0.0, 0.0, 6.0, 6.0]] * 3)
    v = Views(
        torch.arange(3),
        full,
        torch.tensor([False, True, False]),
        torch.arange(3),
        torch.tensor(1.0),
        torch.zeros(4, dtype=torch.long),
    )
    y = apply_views(x, v)
    assert torch.equal(y[0], x[0]) and torch.equal(y[2], x[2])
    assert torch.equal(y[1], x[1].flip(-1))


def test_cutmix_pastes_the_partner_box_and_lam_is_its_area():
    gen = torch.Generator().manual_seed(3)
    recipe = ViewRecipe(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False, mix="cutmix")
    x = torch.arange(4, dtype=torch.float32)[:, None, None, None].expand(4, 1, 16, 16).contiguous()
    for v in sample_views(4, 4, (16, 16), recipe, gen):
        y = apply_views(x, v)
        y0, y1, x0, x1 = v.mix_box.tolist()
        area = (y1 - y0) * (x1 - x0)
        assert float(v.lam) == pytest.approx(1 - area / 256)
        for i in range(4):  # inside the box the partner's value, outside its own
            own, partner = float(x[v.index[i], 0, 0, 0]), float(x[v.index[v.perm[i]], 0, 0, 0])
            inside = y[i, 0, y0:y1, x0:x1]
            assert bool((inside == partner).all())
            assert float((y[i, 0] == own).sum()) >= 256 - area


def test_views_follow_the_generator_and_cover_every_image_once():
    r = ViewRecipe()
    a = sample_views(23, 5, (32, 32), r, torch.Generator().manual_seed(1))
    b = sample_views(23, 5, (32, 32), r, torch.Generator().manual_seed(1))
    c = sample_views(23, 5, (32, 32), r, torch.Generator().manual_seed(2))
    assert [len(v) for v in a] == [5, 5, 5, 5, 3]
    assert sorted(torch.cat([v.index for v in a]).tolist()) == list(range(23))
    assert all(torch.equal(u.boxes, w.boxes) and torch.equal(u.perm, w.perm) for u, w in zip(a, b))
    assert not all(torch.equal(u.boxes, w.boxes) for u, w in zip(a, c))
    boxes = torch.cat([v.boxes for v in a])
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / 1024
    assert bool((boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 32).all() and (boxes[:, 3] <= 32).all())
    assert float(area.min()) >= 0.05 and float(area.max()) <= 1.0


def test_store_round_trip_replays_the_same_views_and_logits(tmp_path):
    images = torch.randn(12, 3, 8, 8)
    t = _teacher()
    store = relabel(images, [t], epochs=3, batch_size=5, recipe=ViewRecipe(), seed=4, out=tmp_path / "s")
    again = load_label_store(tmp_path / "s")
    for e in range(3):
        assert torch.equal(store.logits(e), again.logits(e))
        for (v1, x1, t1), (v2, x2, t2) in zip(store.batches(images, e), again.batches(images, e)):
            assert torch.equal(x1, x2) and torch.equal(t1, t2) and torch.equal(v1.boxes, v2.boxes)
            # the stored logits are the teacher's on exactly these views (fp16)
            assert torch.allclose(t2, t(x2).half().float())
    loader = again.dataloader(images, 1)
    got = [(x, z) for x, z in loader]
    ref = [(x, z) for _, x, z in again.batches(images, 1)]
    assert len(got) == 3 and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(got, ref))
    assert again.label_bytes == sum((tmp_path / "s" / f"epoch-{e:04d}.safetensors").stat().st_size for e in range(3))


def test_store_refuses_other_images_edits_and_damage(tmp_path):
    images = torch.randn(6, 3, 8, 8)
    relabel(images, [_teacher()], epochs=2, batch_size=4, recipe=ViewRecipe(), seed=0, out=tmp_path / "s")
    store = load_label_store(tmp_path / "s")
    with pytest.raises(MismatchError, match="other images"):
        store.check_images(images + 1e-3)
    with pytest.raises(ConfigError, match="epochs 0..1"):
        store.logits(2)
    m = json.loads((tmp_path / "s" / "labels.json").read_text())
    m["seed"] = 5
    (tmp_path / "s" / "labels.json").write_text(json.dumps(m))
    with pytest.raises(IntegrityError, match="seed"):
        load_label_store(tmp_path / "s")
    relabel(images, [_teacher()], epochs=2, batch_size=4, recipe=ViewRecipe(), seed=0, out=tmp_path / "t")
    shard = tmp_path / "t" / "epoch-0001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(IntegrityError, match="checksum"):
        load_label_store(tmp_path / "t").logits(1)


def test_topk_store_keeps_the_top_logits_and_drops_the_rest():
    images = torch.randn(8, 3, 8, 8)
    t = _teacher(k=6)
    full = relabel(images, [t], epochs=1, batch_size=8, recipe=ViewRecipe(), seed=0, precision="fp32")
    top = relabel(images, [t], epochs=1, batch_size=8, recipe=ViewRecipe(), seed=0, precision="fp32", topk=2)
    z, zk = full.logits(0), top.logits(0)
    kept = torch.isfinite(zk)
    assert bool((kept.sum(1) == 2).all())
    assert torch.equal(zk[kept], z[kept])
    assert torch.equal(kept, torch.zeros_like(kept).scatter_(1, z.topk(2, 1).indices, True))
    assert top.label_bytes < full.label_bytes


def test_committee_labels_are_the_weighted_mean_of_logits():
    images = torch.randn(4, 3, 8, 8)
    a, b = _teacher(), nn.Sequential(nn.Flatten(), nn.Linear(192, 5)).eval()
    s = relabel(images, [a, b], weights=[0.25, 0.75], epochs=1, batch_size=4, recipe=ViewRecipe(), precision="fp32")
    ((_, x, z),) = list(s.batches(images, 0))
    with torch.no_grad():
        assert torch.allclose(z, 0.25 * a(x) + 0.75 * b(x), atol=1e-6)


def test_online_teacher_and_its_fp32_store_train_the_same_student(digits):
    """A store made with view seed s replays exactly the views the online teacher draws for student seed s."""
    from condense.eval.protocol import get_protocol
    from condense.eval.soft import train_soft

    x = digits.x_train[:40]
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    proto = get_protocol("soft_label").replace(epochs=2)
    recipe = ViewRecipe(scale=proto.scale, flip=False, mix=proto.mix, mix_alpha=proto.mix_alpha)
    store = relabel(x, [teacher], epochs=2, batch_size=16, recipe=recipe, seed=7, precision="fp32")
    kw = dict(num_classes=10, seeds=[7], protocol=proto, batch_size=16, flip=False)
    online = train_soft(x, digits.x_test, digits.y_test, "convnetd2", labeler=teacher, **kw)
    stored = train_soft(x, digits.x_test, digits.y_test, "convnetd2", store=store, **kw)
    other = train_soft(x, digits.x_test, digits.y_test, "convnetd2", store=store, **{**kw, "seeds": [8]})
    assert online == stored
    assert other != stored  # another student initialization: not the same run
    with pytest.raises(ConfigError, match="holds 2 epochs"):
        train_soft(
            x, digits.x_test, digits.y_test, "convnetd2", store=store, **{**kw, "protocol": proto.replace(epochs=3)}
        )


def test_synthetic_set_carries_its_label_store(digits, tmp_path):
    from condense.methods import distill
    from condense.synthetic import SyntheticSet, label_store_path

    syn = distill("random_real", digits, ipc=2)
    syn.label_store = relabel(
        syn.images,
        [nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()],
        epochs=2,
        batch_size=8,
        recipe=ViewRecipe(flip=False),
        seed=0,
    )
    path = syn.save(tmp_path / "set")
    assert label_store_path(path).is_dir()
    back = SyntheticSet.load(path)
    assert back.label_store is not None and back.label_store.epochs == 2
    assert "label_store" not in back.meta
    ((xa, za),) = [b for b, _ in zip(back.to_dataloader(epoch=1), range(1))]
    _, xb, zb = next(back.label_store.batches(back.images, 1))
    assert torch.equal(xa, xb) and torch.equal(za, zb)
    with pytest.raises(IntegrityError, match="no label store"):
        distill("random_real", digits, ipc=2).to_dataloader(epoch=0)
    # a store replaced by another one (other labels, same images) is refused
    relabel(
        syn.images,
        [nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()],
        epochs=2,
        batch_size=4,
        recipe=ViewRecipe(flip=False),
        seed=1,
        out=label_store_path(path),
    )
    with pytest.raises(IntegrityError, match="not the one"):
        SyntheticSet.load(path)


def test_soft_label_rows_report_sources_and_bytes(digits, digits_teacher):
    from condense.eval import evaluate, random_real_baseline
    from condense.methods import distill
    from condense.teachers import load_teacher

    teacher = load_teacher(digits_teacher)
    base = random_real_baseline(
        digits, 1, models=["convnetd2"], seeds=1, epochs=2, protocol="soft_label", teacher=digits_teacher
    )
    assert base["label_source"] == "online" and base["teacher_at_train_time"] and base["label_bytes"] == 0
    assert base["teachers"][0]["sha256"] == teacher.sha256 and base["label_kind"] == "soft"
    syn = distill("random_real", digits, ipc=1)
    syn.label_store = relabel(
        syn.images,
        [teacher.module],
        epochs=2,
        batch_size=10,
        recipe=ViewRecipe(flip=False),
        references=[teacher.reference()],
    )
    row = evaluate(syn, digits, models=["convnetd2"], seeds=1, epochs=2, protocol="soft_label")
    assert row["label_source"] == "stored" and not row["teacher_at_train_time"]
    assert row["label_bytes"] == syn.label_store.label_bytes > 0 and row["image_bytes"] == 10 * 64
    # every soft-label row carries the random real subsets relabeled by the same teacher, same students and epochs
    assert len(row["random_real"]["convnetd2"]["runs"]) == 1
    kw = {"models": ["convnetd2"], "seeds": 1, "epochs": 2, "protocol": "soft_label", "baseline": False}
    assert evaluate(syn, digits, **kw)["random_real"] is None
    with pytest.raises(ConfigError, match="needs a teacher"):
        evaluate(distill("random_real", digits, ipc=1), digits, seeds=1, epochs=1, protocol="soft_label")
    with pytest.raises(ConfigError, match="soft_label protocol only"):
        evaluate(syn, digits, seeds=1, epochs=1, teacher=digits_teacher)
