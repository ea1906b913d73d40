"""ExpertBuffer (the read side): manifest fields, lazy reads, sampling, layout, checksum and mismatch refusal."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from condense.data import load_dataset
from condense.errors import ConfigError, DataNotFoundError, IntegrityError, MismatchError
from condense.expert_trajectories import (
    FORMAT,
    MANIFEST_NAME,
    ExpertBuffer,
    derive_seed,
    expert_filename,
    get_expert_config,
    record_experts,
)
from condense.models import ParamLayout, create_model

MODEL_KW = {"width": 8}  # a tiny ConvNet keeps each recording well under a second
N_EXPERTS, EPOCHS = 3, 3


@pytest.fixture(scope="module")
def buffer_dir(tmp_path_factory, digits) -> Path:
    out = tmp_path_factory.mktemp("buf") / "digits_convnet"
    cfg = get_expert_config("vanilla", batch_size=128, augment="dsa_noflip")
    record_experts(digits, "convnet", N_EXPERTS, EPOCHS, out, config=cfg, quiet=True, model_kwargs=MODEL_KW, seed=7)
    return out


@pytest.fixture
def buf(buffer_dir) -> ExpertBuffer:
    return ExpertBuffer.open(buffer_dir)


def _copy(buffer_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(buffer_dir, dst)
    return dst


def test_manifest_describes_the_buffer(buf, buffer_dir, digits):
    m = json.loads((buffer_dir / MANIFEST_NAME).read_text())
    assert m["format"] == FORMAT
    assert m["dataset"]["name"] == "digits" and m["dataset"]["fingerprint"] == digits.fingerprint
    assert m["preprocessing"] == json.loads(json.dumps(digits.preprocessing()))
    assert m["model"] == {
        "name": "convnet",
        "in_channels": 1,
        "num_classes": 10,
        "image_size": [8, 8],
        "kwargs": MODEL_KW,
    }
    assert m["kind"] == "vanilla" and m["config"]["lr_teacher"] == 0.01 and m["config"]["batch_size"] == 128
    assert m["augment"]["strategy"] == "color_crop_cutout_scale_rotate"
    assert [e["status"] for e in m["experts"]] == ["done"] * N_EXPERTS
    assert all(len(e["sha256"]) == 64 for e in m["experts"])
    assert buf.num_experts == N_EXPERTS and buf.num_snapshots == EPOCHS + 1 and buf.kind == "vanilla"
    assert buf.model_spec["name"] == "convnet"
    curves = buf.accuracy_curves
    assert sorted(curves) == list(range(N_EXPERTS))
    assert all(len(c) == EPOCHS for c in curves.values())
    # each curve entry is the test accuracy of the snapshot taken after that epoch, recomputed here from the file
    net = create_model("convnet", in_channels=1, num_classes=10, image_size=(8, 8), **MODEL_KW).eval()
    for e, curve in curves.items():
        for epoch, acc in enumerate(curve):
            params = buf.layout.unflatten(buf.snapshot(e, epoch + 1))
            with torch.no_grad():
                pred = torch.func.functional_call(net, params, (digits.x_test,)).argmax(1)
            assert acc == pytest.approx(float((pred == digits.y_test).double().mean()), abs=2e-6), (e, epoch)


def test_param_layout_matches_the_model(buf):
    net = create_model("convnet", in_channels=1, num_classes=10, image_size=(8, 8), **MODEL_KW)
    named = list(net.named_parameters())
    assert buf.param_names == [n for n, _ in named]
    assert buf.param_shapes == {n: tuple(p.shape) for n, p in named}
    assert buf.num_params == sum(p.numel() for _, p in named)


def test_snapshot_zero_is_the_seeded_init(buf):
    net = create_model(
        "convnet", in_channels=1, num_classes=10, image_size=(8, 8), seed=derive_seed(7, 1, 0, "init"), **MODEL_KW
    )
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    torch.testing.assert_close(buf.snapshot(1, 0), flat, rtol=0, atol=0)
    assert not torch.equal(buf.snapshot(1, 0), buf.snapshot(1, -1))  # the expert moved
    assert not torch.equal(buf.snapshot(0, 0), buf.snapshot(1, 0))  # experts have their own init


def test_sample_reads_start_and_target(buf):
    g = torch.Generator().manual_seed(0)
    s = buf.sample(0, 2, 1, "cpu", generator=g)
    assert s.start.shape == (buf.num_params,) and s.start.dtype == torch.float32
    assert 0 <= s.start_epoch < 2 and s.target_epoch == s.start_epoch + 1 and s.expert_id in buf.expert_ids
    torch.testing.assert_close(s.start, buf.snapshot(s.expert_id, s.start_epoch), rtol=0, atol=0)
    torch.testing.assert_close(s.target, buf.snapshot(s.expert_id, s.target_epoch), rtol=0, atol=0)
    s2 = buf.sample(0, 2, 1, "cpu", generator=torch.Generator().manual_seed(0))
    assert (s2.expert_id, s2.start_epoch) == (s.expert_id, s.start_epoch)  # same generator, same draw
    seen = {(x.expert_id, x.start_epoch) for x in (buf.sample(1, 3, 1, "cpu", generator=g) for _ in range(60))}
    assert {e for e, _ in seen} == set(range(N_EXPERTS)) and {t for _, t in seen} == {1, 2}


def test_sample_window_is_checked(buf):
    with pytest.raises(ConfigError, match="record longer experts"):
        buf.sample(0, EPOCHS, 2, "cpu")
    with pytest.raises(ConfigError, match="empty"):
        buf.sample(2, 2, 1, "cpu")
    with pytest.raises(ConfigError, match="out of range"):
        buf.snapshot(0, EPOCHS + 1)


def test_layout_unflatten_feeds_functional_call(buf):
    net = create_model("convnet", in_channels=1, num_classes=10, image_size=(8, 8), **MODEL_KW)
    assert isinstance(buf.layout, ParamLayout) and buf.layout == ParamLayout.from_module(net)
    assert not hasattr(buf, "unflatten") and not hasattr(buf, "flatten")  # one conversion: models.ParamLayout
    flat = buf.snapshot(2, -1)
    params = buf.layout.unflatten(flat)
    assert list(params) == buf.param_names
    assert all(params[k].shape == buf.param_shapes[k] for k in params)
    assert params[buf.param_names[0]].data_ptr() == flat.data_ptr()  # views, no copy
    torch.testing.assert_close(buf.layout.flatten(params), flat)
    x = torch.randn(4, 1, 8, 8)
    out = torch.func.functional_call(net, params, (x,))
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    stacked = buf.layout.unflatten(torch.stack([flat, flat]))
    assert stacked[buf.param_names[0]].shape[0] == 2
    with pytest.raises(MismatchError, match=str(buf.num_params)):
        buf.layout.unflatten(flat[:-1])


def test_open_does_not_read_expert_files(buf):
    assert buf._verified == set() and buf._handles == {}
    buf.snapshot(0, 0)
    assert buf._verified == {0}
    clone = pickle.loads(pickle.dumps(buf))  # e.g. sent to a worker process
    torch.testing.assert_close(clone.snapshot(0, 1), buf.snapshot(0, 1))


def test_tampered_expert_is_refused(buffer_dir, tmp_path):
    path = _copy(buffer_dir, tmp_path)
    f = path / expert_filename(1)
    raw = bytearray(f.read_bytes())
    raw[-5] ^= 0xFF  # flip a byte inside the tensor data
    f.write_bytes(bytes(raw))
    b = ExpertBuffer.open(path)
    b.snapshot(0, 0)  # untouched experts still read
    recorded = json.loads((path / MANIFEST_NAME).read_text())["experts"][1]["sha256"]
    with pytest.raises(IntegrityError, match="checksum mismatch") as e:
        b.snapshot(1, 0)
    msg = str(e.value)
    assert str(f) in msg and recorded in msg


def test_truncated_expert_is_refused(buffer_dir, tmp_path):
    path = _copy(buffer_dir, tmp_path)
    f = path / expert_filename(2)
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(IntegrityError, match=expert_filename(2)):
        ExpertBuffer.open(path).snapshot(2, 1)


def test_missing_expert_and_bad_manifest(buffer_dir, tmp_path):
    path = _copy(buffer_dir, tmp_path)
    (path / expert_filename(0)).unlink()
    with pytest.raises(DataNotFoundError, match=expert_filename(0)):
        ExpertBuffer.open(path).snapshot(0, 0)
    with pytest.raises(DataNotFoundError):
        ExpertBuffer.open(tmp_path / "nope")
    m = json.loads((path / MANIFEST_NAME).read_text())
    m["format_version"] = 99
    (path / MANIFEST_NAME).write_text(json.dumps(m))
    with pytest.raises(IntegrityError, match="format version"):
        ExpertBuffer.open(path)
    (path / MANIFEST_NAME).write_text("{ truncated")
    with pytest.raises(IntegrityError):
        ExpertBuffer.open(path)


def test_compatible_run_passes(buf, digits):
    buf.check_compatible(digits, "convnet")
    buf.check_compatible(digits, "convnet", MODEL_KW)


def test_other_preprocessing_model_or_data_is_refused(buf, digits):
    with pytest.raises(MismatchError, match=r"ZCA: buffer off, this run on.*record a new buffer"):
        buf.check_compatible(load_dataset("digits", zca=True), "convnet")
    with pytest.raises(MismatchError, match="model: buffer convnet, this run convnet_bn"):
        buf.check_compatible(digits, "convnet_bn")
    with pytest.raises(MismatchError, match="model options"):
        buf.check_compatible(digits, "convnet", {"width": 16})
    other = load_dataset("digits")
    other.name = "mnist"
    with pytest.raises(MismatchError, match="dataset: buffer digits, this run mnist"):
        buf.check_compatible(other, "convnet")
    shifted = load_dataset("digits")
    shifted.fingerprint = "0" * 16
    with pytest.raises(MismatchError, match="fingerprint"):
        buf.check_compatible(shifted, "convnet")


def test_half_precision_storage(digits, tmp_path, buffer_dir):
    cfg = get_expert_config("vanilla", batch_size=128, augment="dsa_noflip")
    b16 = record_experts(
        digits,
        "convnet",
        1,
        EPOCHS,
        tmp_path / "f16",
        config=cfg,
        quiet=True,
        model_kwargs=MODEL_KW,
        seed=7,
        dtype="bfloat16",
    )
    b32 = ExpertBuffer.open(buffer_dir)
    s = b16.snapshot(0, -1)
    assert s.dtype == torch.float32
    torch.testing.assert_close(s, b32.snapshot(0, -1), rtol=1e-2, atol=1e-2)
    size16 = (tmp_path / "f16" / expert_filename(0)).stat().st_size
    size32 = (buffer_dir / expert_filename(0)).stat().st_size
    assert size16 < 0.6 * size32


def test_open_refuses_an_edited_manifest_naming_the_field(buffer_dir, tmp_path):
    path = _copy(buffer_dir, tmp_path)
    m = json.loads((path / MANIFEST_NAME).read_text())
    (path / MANIFEST_NAME).write_text(json.dumps({**m, "num_snapshots": EPOCHS}))
    with pytest.raises(IntegrityError, match=r"field 'num_snapshots' was edited after the file was written"):
        ExpertBuffer.open(path)
    (path / MANIFEST_NAME).write_text(json.dumps(m))
    assert ExpertBuffer.open(path).num_snapshots == EPOCHS + 1  # untouched: opens


def test_a_replaced_expert_with_its_sha256_updated_is_refused(buffer_dir, tmp_path):
    """The expert files' sha256 are inside the manifest's seal: swapping a file and its checksum is caught."""
    from condense.io import sha256_file

    path = _copy(buffer_dir, tmp_path)
    shutil.copy(path / expert_filename(0), path / expert_filename(1))
    m = json.loads((path / MANIFEST_NAME).read_text())
    m["experts"][1]["sha256"] = sha256_file(path / expert_filename(1))
    (path / MANIFEST_NAME).write_text(json.dumps(m))
    with pytest.raises(IntegrityError, match=r"manifest\.json': field 'experts' was edited"):
        ExpertBuffer.open(path)
