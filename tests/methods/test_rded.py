"""RDED: the selection keeps the observer's most confident crops, the mosaic layout, refusals, and that the set beats
random real images relabeled by the same teacher under the same soft-label protocol."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from condense.errors import ConfigError, MismatchError
from condense.methods import RunContext, distill
from condense.methods._decoupled import mosaic
from condense.methods.rded import select_patches


def test_mosaic_cell_k_of_image_i_is_patch_k_times_ipc_plus_i():
    ipc, factor = 3, 2
    patches = torch.arange(ipc * factor * factor, dtype=torch.float32)[:, None, None, None].expand(-1, 1, 4, 4)
    out = mosaic(patches.contiguous(), factor, ipc, (9, 9))  # 9 = 5 + 4: the first row/column of cells is larger
    for i in range(ipc):
        cells = [out[i, 0, 0, 0], out[i, 0, 0, 8], out[i, 0, 8, 0], out[i, 0, 8, 8]]
        assert [int(c) for c in cells] == [k * ipc + i for k in range(4)]
    assert int(out[0, 0, 4, 4]) == 0 and int(out[0, 0, 5, 5]) == 3 * ipc  # cell borders at 5


def test_selection_keeps_each_images_best_crop_then_the_lowest_losses(digits, digits_teacher):
    from condense.teachers import load_teacher

    observer = load_teacher(digits_teacher).module
    x = digits.x_train[digits.y_train == 3][:20]
    gen = torch.Generator().manual_seed(0)
    patches, losses = select_patches(x, 3, 5, observer, patch=8, num_crop=4, scale=(0.3, 1.0), gen=gen)
    assert patches.shape == (5, 1, 8, 8) and bool((losses[1:] >= losses[:-1]).all())
    with torch.no_grad():
        again = F.cross_entropy(observer(patches), torch.full((5,), 3), reduction="none")
    assert torch.allclose(again, losses, atol=1e-5)
    # brute force with the same crops: the kept losses are the 5 smallest of the per-image minima
    from torchvision.ops import roi_align

    from condense.augment.views import ViewRecipe, crop_boxes

    g2 = torch.Generator().manual_seed(0)
    recipe = ViewRecipe(scale=(0.3, 1.0), ratio=(1.0, 1.0), flip=False, mix="none")
    boxes = torch.stack([crop_boxes(20, (8, 8), recipe, g2) for _ in range(4)])
    per_image = []
    with torch.no_grad():
        for k in range(4):
            rois = torch.cat([torch.arange(20.0)[:, None], boxes[k]], 1)
            crops = roi_align(x, rois, output_size=(8, 8), sampling_ratio=0, aligned=True)
            per_image.append(F.cross_entropy(observer(crops), torch.full((20,), 3), reduction="none"))
    best = torch.stack(per_image).min(0).values.sort().values[:5]
    assert torch.allclose(best, losses, atol=1e-5)


def test_rded_refuses_missing_wrong_and_too_small(digits, digits_teacher):
    with pytest.raises(ConfigError, match="teachers train"):
        distill("rded", digits, 1, run=RunContext(quiet=True))
    reordered = dataclasses.replace(digits, classes=list(reversed(digits.classes)))
    with pytest.raises(MismatchError, match="class order"):
        distill("rded", reordered, 1, run=RunContext(quiet=True, teacher=digits_teacher))
    with pytest.raises(ConfigError, match="mipc"):
        distill("rded", digits, 10, overrides={"mipc": 5}, run=RunContext(quiet=True, teacher=digits_teacher))


def test_rded_beats_random_real_relabeled_by_the_same_teacher(digits, digits_teacher):
    """Digits IPC 1, ConvNetD2 students, 3 seeds x 300 epochs, online labels from the same teacher for both rows.

    Measured (1 CPU thread): RDED 87.0 +- 0.3 % vs random real 86.2 +- 1.5 % (the digits preset, crop scale
    0.08-1); the teacher alone scores 99.2 %.
    """
    from condense.eval import evaluate, random_real_baseline

    syn = distill("rded", digits, 1, run=RunContext(quiet=True, teacher=digits_teacher))
    assert (
        syn.meta["eval"] == {"protocol": "soft_label", "model": "convnetd2"} and syn.meta["label_source"] == "teacher"
    )
    kw = {"models": ["convnetd2"], "seeds": 3, "epochs": 300}
    row = evaluate(syn, digits, **kw)
    base = random_real_baseline(digits, 1, protocol="soft_label", teacher=digits_teacher, **kw)
    assert row["protocol"] == base["protocol"] == "soft_label" and row["batch_size"] == base["batch_size"] == 10
    assert row["teachers"] == base["teachers"]
    assert row["accuracy"]["convnetd2"]["mean"] > base["accuracy"]["convnetd2"]["mean"]
