"""SyntheticSet: bit-exact round trip, refusal of corrupt/truncated/mismatched files, exports."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from condense.errors import DataNotFoundError, IntegrityError, MismatchError
from condense.synthetic import SyntheticSet, sidecar_path


def _syn(soft: bool = False, zca_tensors: dict | None = None) -> SyntheticSet:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(20, 1, 8, 8, generator=g)
    labels = torch.randn(20, 10, generator=g) if soft else torch.arange(10).repeat(2)
    return SyntheticSet(
        images=images,
        labels=labels,
        classes=[str(i) for i in range(10)],
        method="test",
        dataset="digits",
        ipc=2,
        lr=0.0123,
        preprocessing={"mean": [0.3063], "std": [0.3741], "zca": None},
        tensors=zca_tensors or {},
        config={"a": 1, "b": [1, 2]},
        meta={"note": "x"},
    )


@pytest.mark.parametrize("soft", [False, True])
def test_round_trip_bit_exact(tmp_path, soft):
    syn = _syn(soft)
    path = syn.save(tmp_path / "set.safetensors")
    back = SyntheticSet.load(path)
    assert torch.equal(back.images, syn.images)
    assert torch.equal(back.labels, syn.labels)
    assert back.labels.dtype == syn.labels.dtype
    assert back.lr == syn.lr and back.classes == syn.classes and back.config == syn.config
    assert back.soft_labels == soft
    # Loading through the sidecar path works too.
    assert torch.equal(SyntheticSet.load(sidecar_path(path)).images, syn.images)


def test_missing_file(tmp_path):
    with pytest.raises(DataNotFoundError, match="not found"):
        SyntheticSet.load(tmp_path / "nope.safetensors")


def test_truncated_file_refused(tmp_path):
    path = _syn().save(tmp_path / "set.safetensors")
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(IntegrityError, match="checksum"):
        SyntheticSet.load(path)


def test_tampered_file_refused(tmp_path):
    path = _syn().save(tmp_path / "set.safetensors")
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(IntegrityError, match="checksum"):
        SyntheticSet.load(path)


def test_sidecar_shape_mismatch_refused(tmp_path):
    path = _syn().save(tmp_path / "set.safetensors")
    meta = json.loads(sidecar_path(path).read_text())
    meta["tensors"]["images"]["shape"] = [21, 1, 8, 8]
    sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(IntegrityError, match="sidecar says"):
        SyntheticSet.load(path)


def test_version_and_garbage_refused(tmp_path):
    path = _syn().save(tmp_path / "set.safetensors")
    meta = json.loads(sidecar_path(path).read_text())
    meta["format_version"] = 99
    sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(IntegrityError, match="version"):
        SyntheticSet.load(path)
    sidecar_path(path).write_text("{not json")
    with pytest.raises(IntegrityError, match="JSON"):
        SyntheticSet.load(path)


def test_invalid_contents_refused():
    with pytest.raises(IntegrityError, match="labels"):
        SyntheticSet(torch.zeros(3, 1, 8, 8), torch.zeros(4, dtype=torch.long), ["a"], "m", "d", 1)
    with pytest.raises(IntegrityError, match="int64"):
        SyntheticSet(torch.zeros(3, 1, 8, 8), torch.zeros(3, dtype=torch.int32), ["a"], "m", "d", 1)
    with pytest.raises(IntegrityError, match="lr"):
        SyntheticSet(torch.zeros(3, 1, 8, 8), torch.zeros(3, dtype=torch.long), ["a"], "m", "d", 1, lr=-1.0)


def test_nonfinite_never_saved(tmp_path):
    syn = _syn()
    syn.images[0, 0, 0, 0] = float("nan")
    with pytest.raises(IntegrityError, match="non-finite"):
        syn.save(tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()


def test_compatibility_with_dataset(digits):
    syn = _syn()
    syn.preprocessing = digits.preprocessing()
    syn.check_compatible(digits)
    syn.classes = list("abcdefghij")
    with pytest.raises(MismatchError, match="classes"):
        syn.check_compatible(digits)


def test_zca_stored_and_inverted(tmp_path):
    from condense.data import load_dataset

    data = load_dataset("digits", zca=True)
    syn = _syn(zca_tensors=data.zca.to_tensors())
    syn.preprocessing = data.preprocessing()
    syn.images = data.x_train[:20].clone()
    path = syn.save(tmp_path / "z.safetensors")
    back = SyntheticSet.load(path)
    back.check_compatible(data)
    plain = load_dataset("digits")
    with pytest.raises(MismatchError, match="ZCA"):
        back.check_compatible(plain)
    # De-whitened pixels match the original pixels of those training images.
    px = back.pixels()
    ref = plain.x_train[:20] * 0.3741 + 0.3063
    torch.testing.assert_close(px, ref.clamp(0, 1), atol=2e-3, rtol=0)


def test_exports(tmp_path):
    syn = _syn()
    npz = syn.export(tmp_path / "out.npz", format="npz")
    arr = np.load(npz, allow_pickle=False)
    assert arr["x"].shape == (20, 8, 8, 1) and arr["x"].dtype == np.uint8
    assert arr["y"].tolist() == syn.labels.tolist()
    folder = syn.export(tmp_path / "folder", format="imagefolder")
    assert len(list(folder.rglob("*.png"))) == 20
    assert len([p for p in folder.iterdir() if p.is_dir()]) == 10
    grid = syn.grid(tmp_path / "grid.png")
    assert grid.stat().st_size > 0


def test_to_dataloader():
    syn = _syn()
    xb, yb = next(iter(syn.to_dataloader(batch_size=8, shuffle=False)))
    assert xb.shape == (8, 1, 8, 8) and yb.shape == (8,)
