"""Teachers: training on digits, the sealed file pair, the data contract (classes, preprocessing) on load, imported
checkpoints, several teachers at once (looped and vmapped), and the teachers CLI (train, import, show)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from condense.cli import main
from condense.data import ImageData, load_dataset
from condense.errors import ConfigError, IntegrityError, MismatchError
from condense.io import sha256_file
from condense.teachers import (
    IMPORTED,
    JSON_FILE,
    RECIPES,
    TENSOR_FILE,
    Teacher,
    TeacherRecipe,
    TeacherSpec,
    augment_batch,
    black_pixel,
    get_recipe,
    import_teacher,
    list_recipes,
    load_teacher,
    train_teacher,
    train_teachers,
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


# ----------------------------------------------------------------------------------------------------------------------
# Imported checkpoints
# ----------------------------------------------------------------------------------------------------------------------


def _state(teacher: Teacher) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in teacher.module.state_dict().items()}


@pytest.mark.parametrize("fmt", ["torch", "safetensors"])
def test_an_imported_state_dict_gives_the_same_logits(trained, digits, tmp_path, fmt):
    teacher = trained[0]
    if fmt == "torch":
        ckpt = tmp_path / "ckpt.pth"
        torch.save(_state(teacher), ckpt)
    else:
        from safetensors.torch import save_file

        ckpt = tmp_path / "ckpt.safetensors"
        save_file(_state(teacher), str(ckpt))
    out = tmp_path / "imported"
    imported = import_teacher(ckpt, "convnet_bn", digits, out, model_kwargs=SMALL)
    x = digits.x_test[:100]
    torch.testing.assert_close(imported.logits(x), teacher.logits(x), rtol=0, atol=0)
    assert imported.test_accuracy == teacher.test_accuracy  # measured again, on the same test split
    loaded = load_teacher(out)
    torch.testing.assert_close(loaded.logits(x), teacher.logits(x), rtol=0, atol=0)
    assert (loaded.recipe_name, loaded.epochs, loaded.model_kwargs) == (IMPORTED, 0, SMALL)
    assert loaded.recipe["source_file"] == ckpt.name and loaded.recipe["source_sha256"] == sha256_file(ckpt)
    assert loaded.recipe["prefix_removed"] is None
    loaded.check_compatible(digits)


def test_a_nested_data_parallel_checkpoint_is_unwrapped(trained, digits, tmp_path):
    teacher = trained[0]
    ckpt = tmp_path / "ddp.pth"
    wrapped = {f"module.{k}": v for k, v in _state(teacher).items()}
    torch.save({"epoch": 3, "state_dict": wrapped, "best_acc": 0.9}, ckpt)
    imported = import_teacher(ckpt, "convnet_bn", digits, None, model_kwargs=SMALL)
    x = digits.x_test[:50]
    torch.testing.assert_close(imported.logits(x), teacher.logits(x), rtol=0, atol=0)
    assert imported.recipe["key"] == "state_dict" and imported.recipe["prefix_removed"] == "module."
    torch.save({"weights": wrapped}, ckpt)  # an unusual key is found only when named
    with pytest.raises(IntegrityError, match="not a state dict") as e:
        import_teacher(ckpt, "convnet_bn", digits, None, model_kwargs=SMALL)
    assert "'weights'" in _one_line(e)
    assert import_teacher(ckpt, "convnet_bn", digits, None, model_kwargs=SMALL, key="weights").test_accuracy > 0.5
    with pytest.raises(IntegrityError, match="has no entry 'model'"):
        import_teacher(ckpt, "convnet_bn", digits, None, model_kwargs=SMALL, key="model")


def test_a_checkpoint_of_another_architecture_is_refused(trained, digits, tmp_path):
    ckpt = tmp_path / "ckpt.pth"
    torch.save(_state(trained[0]), ckpt)
    with pytest.raises(IntegrityError) as e:
        import_teacher(ckpt, "resnet18_bn", digits, tmp_path / "t")
    msg = _one_line(e)
    assert "does not fit architecture 'resnet18_bn'" in msg and "missing keys (first 'conv1.weight')" in msg
    assert "unexpected keys (first 'features.0.weight')" in msg
    with pytest.raises(IntegrityError) as e:
        import_teacher(ckpt, "convnet_bn", digits, tmp_path / "t", model_kwargs={"width": 64})
    assert "tensor 'features.0.weight' has shape (32, 1, 3, 3), the architecture needs (64, 1, 3, 3)" in _one_line(e)
    assert not (tmp_path / "t").exists()


class _RunsCode:
    """Unpickling this calls print: a pickle that runs code, which weights_only must refuse."""

    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_a_pickle_with_code_is_refused(trained, digits, tmp_path, capsys):
    ckpt = tmp_path / "evil.pth"
    torch.save({"state_dict": _state(trained[0]), "payload": _RunsCode()}, ckpt)
    with pytest.raises(IntegrityError, match=r"cannot be read as weights only \(torch.load\(weights_only=True\)") as e:
        import_teacher(ckpt, "convnet_bn", digits, None, model_kwargs=SMALL)
    _one_line(e)
    assert "unpickled code ran" not in capsys.readouterr().out
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(IntegrityError, match="cannot be read as weights only"):
        import_teacher(tmp_path / "junk.pth", "convnet_bn", digits, None, model_kwargs=SMALL)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        import_teacher(tmp_path / "nope.pth", "convnet_bn", digits, None)


def test_a_torchvision_resnet_imports_into_timm_at_224_px(tmp_path):
    """timm models by name are teachers at ImageNet size, and a torchvision state dict loads into timm:resnet18."""
    import torchvision

    g = torch.Generator().manual_seed(0)
    data = ImageData(
        name="tiny224",
        x_train=torch.randn(4, 3, 224, 224, generator=g),
        y_train=torch.tensor([0, 1, 0, 1]),
        x_test=torch.randn(2, 3, 224, 224, generator=g),
        y_test=torch.tensor([0, 1]),
        classes=["a", "b"],
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
    )
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(num_classes=2).eval()
    ckpt = tmp_path / "tv.pth"
    torch.save(tv.state_dict(), ckpt)
    teacher = import_teacher(ckpt, "timm:resnet18", data, tmp_path / "t")
    with torch.no_grad():
        expected = tv(data.x_test)
    torch.testing.assert_close(load_teacher(tmp_path / "t").logits(data.x_test), expected, rtol=1e-4, atol=1e-5)
    assert teacher.has_batchnorm and teacher.recipe["prefix_added"] == "net."
    recipe = TeacherRecipe(batch_train=4, crop_padding=28, train_epochs=1)  # one step of crop + flip at 224 px
    trained = train_teacher(data, "timm:resnet18", 1, tmp_path / "trained", recipe=recipe, quiet=True)
    loaded = load_teacher(tmp_path / "trained")
    torch.testing.assert_close(loaded.logits(data.x_test), trained.logits(data.x_test), rtol=0, atol=0)
    assert loaded.model == "timm:resnet18" and loaded.input_shape == [3, 224, 224] and loaded.has_batchnorm


# ----------------------------------------------------------------------------------------------------------------------
# Several teachers
# ----------------------------------------------------------------------------------------------------------------------

TINY = {"width": 16}


@pytest.fixture(scope="module")
def small_digits(digits):
    # 200 training images: 4 steps of 64 per epoch (the last one partial), so a few steps compare exactly
    return dataclasses.replace(digits, x_train=digits.x_train[:200], y_train=digits.y_train[:200], fingerprint="")


def test_several_teachers_equal_one_by_one_and_stacked_equals_looped(small_digits, tmp_path):
    specs = [TeacherSpec("convnet_bn", seed=s, model_kwargs=TINY) for s in (0, 3)]
    looped = train_teachers(small_digits, specs, tmp_path / "loop", epochs=2, quiet=True)  # CPU default: loop
    stacked = train_teachers(small_digits, specs, None, epochs=2, vmap=True, quiet=True)
    single = train_teacher(small_digits, "convnet_bn", 2, None, model_kwargs=TINY, seed=3, quiet=True)
    x = small_digits.x_test[:64]
    torch.testing.assert_close(looped[1].logits(x), single.logits(x), rtol=0, atol=0)  # the loop is train_teacher
    assert not torch.allclose(looped[0].logits(x), looped[1].logits(x))  # seeds differ
    for a, b in zip(looped, stacked):
        sa, sb = a.module.state_dict(), b.module.state_dict()
        assert set(sa) == set(sb)
        for k in sa:  # parameters and the BatchNorm running statistics updated inside vmap
            torch.testing.assert_close(sb[k], sa[k], rtol=0, atol=1e-5, msg=k)
        assert int(sb["features.1.num_batches_tracked"]) == 8  # 2 epochs x 4 steps, each counted once
        assert b.seed == a.seed and b.epochs == 2
    for spec in specs:
        loaded = load_teacher(tmp_path / "loop" / spec.name)
        assert (loaded.model, loaded.seed, loaded.model_kwargs) == ("convnet_bn", spec.seed, TINY)
    assert [s.name for s in specs] == ["convnet_bn-s0", "convnet_bn-s3"]


def test_several_architectures_train_one_after_another(small_digits, tmp_path):
    teachers = train_teachers(small_digits, ["lenet", "convnet_bn"], tmp_path, epochs=1, vmap=True, quiet=True)
    assert [t.model for t in teachers] == ["lenet", "convnet_bn"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["convnet_bn-s0", "lenet-s0"]


def test_several_teachers_refuse_bad_specs(small_digits):
    with pytest.raises(ConfigError, match="share the folder name 'convnet_bn-s0'"):
        train_teachers(small_digits, ["convnet_bn", TeacherSpec("convnet_bn", model_kwargs=TINY)], None, epochs=1)
    with pytest.raises(ConfigError, match="at least one"):
        train_teachers(small_digits, [], None, epochs=1)
    with pytest.raises(TypeError, match="list of TeacherSpec"):
        train_teachers(small_digits, "convnet_bn", None, epochs=1)
    with pytest.raises(ConfigError, match="seed"):
        train_teachers(small_digits, [TeacherSpec("convnet_bn", seed=-1)], None, epochs=1)


def test_under_torchrun_each_rank_trains_its_share(small_digits, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    specs = [TeacherSpec("convnet_bn", seed=s, model_kwargs=TINY) for s in range(3)]
    mine = train_teachers(small_digits, specs, None, epochs=1, quiet=True)
    assert [t.seed for t in mine] == [1]


# ----------------------------------------------------------------------------------------------------------------------
# CLI: several teachers, import, show
# ----------------------------------------------------------------------------------------------------------------------


def test_cli_trains_several_seeds_into_named_folders(tmp_path, capsys):
    argv = ["teachers", "train", "--dataset", "digits", "--model", "convnet_bn", "--model-arg", "width=8"]
    argv += ["--seeds", "0,2", "--epochs", "1", "--out", str(tmp_path)]
    code, stdout, err = _run(capsys, *argv)
    assert code == 0, err
    for seed in (0, 2):
        teacher = load_teacher(tmp_path / f"convnet_bn-s{seed}")
        assert teacher.seed == seed and teacher.model_kwargs == {"width": 8}
        assert f"(seed {seed})" in stdout and f"{100 * teacher.test_accuracy:.2f} %" in stdout
    code, _, err = _run(capsys, *argv)
    assert code == 2 and "pass --force" in err and "convnet_bn-s0" in err
    code, _, err = _run(capsys, *argv, "--seed", "1")
    assert code == 2 and "not both" in err
    code, _, err = _run(capsys, *argv[:-2], "--seeds", "1,1", "--out", str(tmp_path))
    assert code == 2 and "--seeds" in err and len(err.strip().splitlines()) == 1


def test_cli_imports_and_shows_a_teacher(trained, tmp_path, capsys):
    teacher = trained[0]
    ckpt = tmp_path / "mine.pt"
    torch.save({"model": _state(teacher)}, ckpt)
    out = tmp_path / "imp"
    argv = ["teachers", "import", "--dataset", "digits", "--model", "convnet_bn", "--model-arg", "width=32"]
    argv += ["--checkpoint", str(ckpt), "--out", str(out)]
    code, stdout, err = _run(capsys, *argv)
    assert code == 0, err
    assert f"{100 * teacher.test_accuracy:.2f} %" in stdout and "mine.pt" in stdout
    code, _, err = _run(capsys, *argv)
    assert code == 2 and "pass --force" in err
    bad = ["teachers", "import", "--dataset", "digits", "--model", "resnet18_bn", "--checkpoint", str(ckpt)]
    code, _, err = _run(capsys, *bad, "--out", str(tmp_path / "bad"))
    assert code == 2 and "missing keys" in err and len(err.strip().splitlines()) == 1, err

    code, stdout, err = _run(capsys, "teachers", "show", str(out))
    assert code == 0, err
    loaded = load_teacher(out)
    for needle in ("convnet_bn(width=32)", "digits", "10 classes", "imported", loaded.sha256, "1x8x8"):
        assert needle in stdout, needle
    assert f"{100 * teacher.test_accuracy:.2f} %" in stdout
    code, stdout, err = _run(capsys, "teachers", "show", str(trained[1]), "--json")
    assert code == 0, err
    record = json.loads(stdout.strip().splitlines()[-1])
    assert record["test_accuracy"] == teacher.test_accuracy and record["num_classes"] == 10
    assert record["recipe_name"] == "digits" and record["sha256"] == teacher.sha256
    code, _, err = _run(capsys, "teachers", "show", str(tmp_path / "none"))
    assert code == 2 and "not found" in err
