"""SRe2L on digits: the teacher recognizes the recovered images, and every teacher problem is refused before a step.

The contract test (``tests/methods/test_contract.py``) covers the config round trip, presets, determinism and
checkpoint-then-resume equality for SRe2L with the ``digits_teacher`` fixture; this file covers what is specific.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from condense.errors import ConfigError, MismatchError
from condense.methods import RunContext, distill, get_method
from condense.methods.sre2l import SRe2L
from condense.teachers import load_teacher, train_teacher


def _never_step(monkeypatch):
    """Make any step fail loudly: refusals must come before the first step."""

    def boom(self, state, it, gen):
        raise AssertionError("a step ran before the refusal")

    monkeypatch.setattr(SRe2L, "step", boom)


def test_the_teacher_classifies_the_recovered_images(digits, digits_teacher, tmp_path):
    run = RunContext(quiet=True, teacher=digits_teacher, out_dir=tmp_path)
    syn = distill("sre2l", digits, ipc=10, generator=torch.Generator().manual_seed(0), run=run)
    assert syn.meta["preset"] == "digits-ipc10"
    teacher = load_teacher(digits_teacher)
    logits = teacher.logits(syn.images)
    acc = float((logits.argmax(1) == syn.labels).float().mean())
    assert acc >= 0.9, acc
    assert float(torch.nn.functional.cross_entropy(logits, syn.labels)) < 0.1
    # the images moved away from the noise they started from and stayed in the pixel box
    lo = (-torch.tensor(digits.mean) / torch.tensor(digits.std)).min()
    hi = ((1 - torch.tensor(digits.mean)) / torch.tensor(digits.std)).max()
    assert float(syn.images.min()) >= float(lo) - 1e-6 and float(syn.images.max()) <= float(hi) + 1e-6
    stats = [
        json.loads(line)["stats"] for line in (tmp_path / "log.jsonl").read_text().splitlines() if '"stats"' in line
    ]
    assert len(stats) == 300
    assert stats[-1]["bn"] < 0.25 * stats[0]["bn"], (stats[0]["bn"], stats[-1]["bn"])
    assert stats[0]["acc"] < 0.5 and stats[-1]["acc"] == 1.0  # noise at the start, recognized at the end
    assert syn.meta["label_source"] == "teacher"
    assert syn.meta["teachers"] == [teacher.reference()]
    assert syn.labels.dtype == torch.int64 and torch.equal(syn.labels, torch.arange(10).repeat_interleave(10))


def test_a_missing_teacher_is_refused_in_one_line(digits, monkeypatch):
    _never_step(monkeypatch)
    with pytest.raises(ConfigError) as info:
        distill("sre2l", digits, ipc=1, overrides={"num_iterations": 2}, run=RunContext(quiet=True))
    msg = str(info.value)
    assert "\n" not in msg
    assert "condense teachers train --dataset D --model convnet_bn --out DIR" in msg and "--teacher DIR" in msg


def test_a_teacher_of_another_class_order_is_refused(digits, digits_teacher, monkeypatch):
    _never_step(monkeypatch)
    permuted = dataclasses.replace(digits, classes=list(reversed(digits.classes)))
    assert permuted.fingerprint == digits.fingerprint  # only the class order tells them apart
    with pytest.raises(MismatchError, match="class order"):
        distill(
            "sre2l",
            permuted,
            ipc=1,
            overrides={"num_iterations": 2},
            run=RunContext(quiet=True, teacher=digits_teacher),
        )


@pytest.fixture(scope="module")
def small_teachers(digits, tmp_path_factory):
    """A BN-less teacher and a second BN teacher (1 epoch each, width 8: a second or two)."""
    root = tmp_path_factory.mktemp("small_teachers")
    train_teacher(digits, "convnet", 1, root / "plain", model_kwargs={"width": 8, "depth": 2}, quiet=True)
    train_teacher(digits, "convnet_bn", 1, root / "bn", model_kwargs={"width": 8, "depth": 2}, quiet=True)
    return root / "plain", root / "bn"


def test_a_teacher_without_batchnorm_is_refused(digits, small_teachers, monkeypatch):
    _never_step(monkeypatch)
    with pytest.raises(ConfigError) as info:
        distill(
            "sre2l",
            digits,
            ipc=1,
            overrides={"num_iterations": 2},
            run=RunContext(quiet=True, teacher=small_teachers[0]),
        )
    assert "\n" not in str(info.value) and "BatchNorm" in str(info.value)


def test_zca_data_and_flipped_digits_are_refused(digits, digits_teacher, monkeypatch):
    from condense.data import load_dataset

    _never_step(monkeypatch)
    run = RunContext(quiet=True, teacher=digits_teacher)
    with pytest.raises(MismatchError, match="ZCA"):
        distill("sre2l", load_dataset("digits", zca=True), ipc=1, overrides={"num_iterations": 2}, run=run)
    with pytest.raises(MismatchError, match="flip"):
        distill("sre2l", digits, ipc=1, overrides={"num_iterations": 2, "flip": True}, run=run)
    with pytest.raises(ConfigError, match="teacher_weights"):
        distill("sre2l", digits, ipc=1, overrides={"num_iterations": 2, "teacher_weights": (0.5, 0.5)}, run=run)


def test_resuming_with_another_teacher_is_refused(digits, digits_teacher, small_teachers, tmp_path, monkeypatch):
    over = {"num_iterations": 3}
    real_step = SRe2L.step

    class Interrupt(Exception):
        pass

    def interrupted(self, state, it, gen):
        if it == 1:
            raise Interrupt
        return real_step(self, state, it, gen)

    monkeypatch.setattr(SRe2L, "step", interrupted)
    run = RunContext(quiet=True, teacher=digits_teacher, out_dir=tmp_path, checkpoint_every=1)
    with pytest.raises(Interrupt):
        distill("sre2l", digits, ipc=1, overrides=over, run=run)
    monkeypatch.setattr(SRe2L, "step", real_step)
    other = RunContext(quiet=True, teacher=small_teachers[1], out_dir=tmp_path, checkpoint_every=1)
    with pytest.raises(MismatchError, match="sha256"):
        distill("sre2l", digits, ipc=1, overrides=over, run=other)
    syn = distill("sre2l", digits, ipc=1, overrides=over, run=run)  # the right teacher resumes
    assert syn.meta["resumed_from"] == 1


def test_a_committee_of_two_teachers_runs_and_records_both(digits, digits_teacher, small_teachers):
    run = RunContext(quiet=True, teacher=[digits_teacher, small_teachers[1]])
    syn = distill("sre2l", digits, ipc=1, overrides={"num_iterations": 2, "teacher_weights": (0.7, 0.3)}, run=run)
    assert [t["sha256"] for t in syn.meta["teachers"]] == [
        load_teacher(p).sha256 for p in (digits_teacher, small_teachers[1])
    ]


def test_presets_follow_the_scripts():
    m = get_method("sre2l")
    assert m.needs_teacher
    cifar = m.resolve_config("cifar100")  # recover_cifar.sh
    assert (cifar.lr_img, cifar.num_iterations, cifar.r_bn, cifar.batch_classes, cifar.jitter) == (
        0.25,
        1000,
        0.01,
        100,
        4,
    )
    assert (cifar.rrc, cifar.flip, cifar.init, cifar.first_bn_multiplier) == (False, False, "noise", 10.0)
    assert m.resolve_config() == cifar  # the defaults are the CIFAR-100 script
    tiny = m.resolve_config("tinyimagenet")  # recover_tiny.sh
    assert (tiny.lr_img, tiny.r_bn, tiny.num_iterations, tiny.rrc, tiny.flip, tiny.jitter_signed) == (
        0.1,
        1.0,
        4000,
        True,
        True,
        True,
    )
    pp = m.resolve_config("cifar10-plusplus")  # SRe2L++ (CV-DD scripts)
    assert (pp.init, pp.rrc, pp.flip, pp.num_iterations, pp.lr_img, pp.batch_classes) == (
        "real",
        True,
        True,
        4000,
        0.25,
        10,
    )
    assert m.default_preset("cifar10", 10) == "cifar10" and m.default_preset("digits", 1) == "digits-ipc1"
