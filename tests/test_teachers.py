"""Teachers: training on digits, the sealed file pair, and the data contract (classes, preprocessing) on load."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from condense.cli import main
from condense.data import load_dataset
from condense.errors import ConfigError, IntegrityError, MismatchError
from condense.teachers import (
    JSON_FILE,
    RECIPES,
    TENSOR_FILE,
    Teacher,
    TeacherRecipe,
    augment_batch,
    black_pixel,
    get_recipe,
    list_recipes,
    load_teacher,
    train_teacher,
)

SMALL = {"width": 32}  # convnet_bn (depth 3, BatchNorm) at width 32: well under 1 s per digits epoch on one thread


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory) -> tuple[Teacher, Path]:
    out = tmp_path_factory.mktemp("teacher") / "t"
    teacher = train_teacher(digits, "convnet_bn", 3, out, model_kwargs=SMALL, seed=0, quiet=True)
    return teacher, out


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def test_a_small_bn_teacher_beats_chance_clearly(trained):
    teacher, out = trained
    assert teacher.has_batchnorm  # decoupled methods match BatchNorm statistics
    assert teacher.test_accuracy > 0.5, teacher.test_accuracy  # chance is 0.1
    assert (out / TENSOR_FILE).is_file() and (out / JSON_FILE).is_file()
    assert teacher.recipe_name == "digits" and teacher.recipe["flip"] is False
    assert not teacher.module.training


def test_round_trip_gives_identical_logits_and_record(trained, digits):
    teacher, out = trained
    loaded = load_teacher(out)
    x = digits.x_test[:100]
    torch.testing.assert_close(loaded.logits(x), teacher.logits(x), rtol=0, atol=0)
    assert loaded.logits(x).shape == (100, 10)
    for name in ("model", "model_kwargs", "dataset", "fingerprint", "classes", "recipe", "epochs", "seed"):
        assert getattr(loaded, name) == getattr(teacher, name), name
    assert loaded.test_accuracy == teacher.test_accuracy
    assert loaded.preprocessing == json.loads(json.dumps(digits.preprocessing()))
    # the running statistics came back too: eval-mode logits depend on them
    bn = [m for m in loaded.module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and not torch.equal(bn[0].running_mean, torch.zeros_like(bn[0].running_mean))
    loaded.check_compatible(digits)  # the data it was trained on passes
    assert load_teacher(out / JSON_FILE).fingerprint == teacher.fingerprint  # either file of the pair


def test_logits_refuse_other_image_shapes(trained):
    with pytest.raises(MismatchError, match=r"\(N, 1, 8, 8\)"):
        trained[0].logits(torch.zeros(2, 3, 8, 8))


@pytest.mark.parametrize(
    "field, edit",
    [
        ("test_accuracy", lambda m: 0.999),
        ("classes", lambda m: m["classes"][::-1]),
        ("preprocessing", lambda m: {**m["preprocessing"], "mean": [0.0]}),
        ("dataset", lambda m: "mnist"),
        ("recipe", lambda m: {**m["recipe"], "lr_teacher": 1.0}),
        ("model", lambda m: {**m["model"], "kwargs": {"width": 64}}),
    ],
)
def test_an_edited_field_is_refused_naming_it(trained, tmp_path, field, edit):
    folder = _copy(trained[1], tmp_path)
    meta = json.loads((folder / JSON_FILE).read_text())
    meta[field] = edit(meta)
    (folder / JSON_FILE).write_text(json.dumps(meta))
    with pytest.raises(IntegrityError, match=f"field '{field}' was edited"):
        load_teacher(folder)


def test_an_edited_tensor_file_is_refused(trained, tmp_path):
    folder = _copy(trained[1], tmp_path)
    blob = bytearray((folder / TENSOR_FILE).read_bytes())
    blob[-3] ^= 0xFF
    (folder / TENSOR_FILE).write_bytes(bytes(blob))
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        load_teacher(folder)


def test_a_missing_file_is_named(trained, tmp_path):
    folder = _copy(trained[1], tmp_path)
    (folder / TENSOR_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=TENSOR_FILE):
        load_teacher(folder)


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert len(msg.splitlines()) == 1, msg
    return msg


def test_data_in_another_class_order_is_refused(trained, digits):
    permuted = dataclasses.replace(digits, classes=list(reversed(digits.classes)))
    assert permuted.fingerprint == digits.fingerprint  # same tensors: only the class order tells them apart
    with pytest.raises(MismatchError) as e:
        load_teacher(trained[1]).check_compatible(permuted)
    msg = _one_line(e)
    assert "class order" in msg and '["0", "1", "2"' in msg and '["9", "8", "7"' in msg


def test_data_with_other_preprocessing_is_refused(trained):
    whitened = load_dataset("digits", zca=True)
    with pytest.raises(MismatchError) as e:
        load_teacher(trained[1]).check_compatible(whitened)
    msg = _one_line(e)
    assert "preprocessing" in msg and "zca" in msg


def test_other_data_is_refused(trained, digits):
    teacher = load_teacher(trained[1])
    with pytest.raises(MismatchError, match="dataset 'digits', the data has dataset 'mnist'"):
        teacher.check_compatible(dataclasses.replace(digits, name="mnist"))
    half = dataclasses.replace(digits, x_train=digits.x_train[:700], y_train=digits.y_train[:700], fingerprint="")
    with pytest.raises(MismatchError, match="fingerprint"):
        teacher.check_compatible(half)


def test_same_seed_same_teacher_other_seed_other_teacher(digits):
    a, b, c = (train_teacher(digits, "convnet_bn", 1, None, model_kwargs=SMALL, seed=s, quiet=True) for s in (0, 0, 1))
    x = digits.x_test[:50]
    torch.testing.assert_close(a.logits(x), b.logits(x), rtol=0, atol=0)
    assert not torch.allclose(a.logits(x), c.logits(x))


def test_recipes_are_sourced_and_match_the_references():
    assert set(list_recipes()) == {"sre2l_cifar", "rded_cifar", "digits"}
    assert all(RECIPES[name]["source"] for name in list_recipes())
    sre2l = get_recipe("sre2l_cifar")
    assert (sre2l.optimizer, sre2l.lr_teacher, sre2l.momentum, sre2l.weight_decay) == ("sgd", 0.1, 0.9, 5e-4)
    assert (sre2l.schedule, sre2l.batch_train, sre2l.crop_padding, sre2l.flip, sre2l.train_epochs) == (
        "cosine",
        128,
        4,
        True,
        200,
    )
    rded = get_recipe("rded_cifar")
    assert (rded.optimizer, rded.lr_teacher, rded.batch_train, rded.schedule, rded.train_epochs) == (
        "adam",
        1e-3,
        512,
        "cosine",
        200,
    )
    with pytest.raises(KeyError, match="did you mean 'digits'"):
        get_recipe("digit")
    with pytest.raises(ConfigError, match="lr_teacher"):
        TeacherRecipe(lr_teacher=0.0)


def test_a_flipping_recipe_is_refused_on_digits(digits):
    with pytest.raises(ConfigError, match="must not be flipped"):
        train_teacher(digits, "convnet_bn", 1, None, recipe="sre2l_cifar", quiet=True)


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_trains_and_refuses_an_existing_teacher_without_force(tmp_path, capsys, digits):
    out = tmp_path / "cli_teacher"
    argv = ["teachers", "train", "--dataset", "digits", "--model", "convnet_bn", "--model-arg", "width=16"]
    argv += ["--epochs", "2", "--out", str(out)]  # not --quiet: the result line is what a user reads
    code, stdout, err = _run(capsys, *argv)
    assert code == 0, err
    assert "test accuracy" in stdout and str(out) in stdout
    teacher = load_teacher(out)
    assert teacher.model_kwargs == {"width": 16} and teacher.epochs == 2
    assert f"{100 * teacher.test_accuracy:.2f} %" in stdout
    teacher.check_compatible(digits)
    before = (out / JSON_FILE).read_bytes()

    code, _, err = _run(capsys, *argv)
    assert code == 2 and "pass --force" in err and len(err.strip().splitlines()) == 1, err
    assert (out / JSON_FILE).read_bytes() == before

    code, _, err = _run(capsys, *argv, "--force", "--seed", "1")
    assert code == 0, err
    assert load_teacher(out).seed == 1


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--recipe", "sre2l_cifarr"], "did you mean 'sre2l_cifar'"),
        (["--model", "convnet_bnn"], "did you mean"),
        (["--epochs", "0"], "--epochs: expected a positive integer"),
        (["--model-arg", "nope=1"], "--model-arg refused by model"),
        (["--recipe", "sre2l_cifar"], "must not be flipped"),
    ],
)
def test_cli_bad_flags_are_one_line(tmp_path, capsys, extra, needle):
    argv = ["teachers", "train", "--dataset", "digits", "--model", "convnet_bn", "--out", str(tmp_path / "t")]
    code, _, err = _run(capsys, *argv, *extra)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "t" / JSON_FILE).exists()


def test_cli_out_must_be_a_folder(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("keep")
    code, _, err = _run(capsys, "teachers", "train", "--dataset", "digits", "--model", "convnet_bn", "--out", str(f))
    assert code == 2 and "is a file" in err and f.read_text() == "keep"


def test_the_crop_pads_with_black_pixels_and_the_flip_mirrors(digits):
    fill = black_pixel(digits)  # (0 - mean) / std
    torch.testing.assert_close(fill.flatten(), -torch.tensor(digits.mean) / torch.tensor(digits.std))
    white = torch.full((64, 1, 8, 8), (1.0 - digits.mean[0]) / digits.std[0])
    gen = torch.Generator().manual_seed(0)
    out = augment_batch(white, TeacherRecipe(crop_padding=1, flip=False), fill, gen)
    is_black = torch.isclose(out, fill.expand_as(out))
    is_white = torch.isclose(out, white)
    assert bool((is_black | is_white).all())
    assert 0 < int(is_black.any(dim=(1, 2, 3)).sum()) < 64  # most images shifted, some (shift 0, 0) not
    assert int(is_black.sum(dim=(1, 2, 3)).max()) <= 15  # at most one row and one column of an 8x8 image
    ramp = torch.arange(8.0).expand(64, 1, 8, 8)
    flipped = augment_batch(ramp, TeacherRecipe(crop_padding=0, flip=True), fill, gen)
    mirrored = (flipped == ramp.flip(3)).all(dim=(1, 2, 3))
    assert bool((mirrored | (flipped == ramp).all(dim=(1, 2, 3))).all()) and 10 < int(mirrored.sum()) < 54
