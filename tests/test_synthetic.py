"""SyntheticSet: bit-exact round trip, refusal of corrupt/truncated/mismatched files, exports."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from condense.errors import DataNotFoundError, IntegrityError, MismatchError
from condense.io import seal
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
    with pytest.raises(IntegrityError, match="field 'tensors' was edited"):
        SyntheticSet.load(path)
    # re-sealed (as another tool writing a consistent but wrong sidecar would), the shape check still refuses it
    sidecar_path(path).write_text(json.dumps(seal(meta)))
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


# ----------------------------------------------------------------------------------------------------------------------
# The sealed sidecar (format version 3): every edit, truncation and wrong type is refused naming the field
# ----------------------------------------------------------------------------------------------------------------------

_SIDECAR_EDITS = {
    "lr": 0.5,
    "preprocessing": {"mean": [0.5], "std": [0.3741], "zca": None},
    "ipc": 3,
    "method": "mtt",
    "dataset": "cifar10",
    "kind": "graph_summary",
    "classes": list("abcdefghij"),
    "label_kind": "soft",
    "config": {"a": 2, "b": [1, 2]},
    "meta": {},
}


def _sidecar(tmp_path):
    path = _syn().save(tmp_path / "set.safetensors")
    return path, json.loads(sidecar_path(path).read_text())


@pytest.mark.parametrize("field", sorted(_SIDECAR_EDITS))
def test_edited_sidecar_field_is_refused_naming_it(tmp_path, field):
    path, meta = _sidecar(tmp_path)
    meta[field] = _SIDECAR_EDITS[field]
    sidecar_path(path).write_text(json.dumps(meta, indent=2))
    want = rf"set\.json': field '{field}' was edited after the file was written \(recorded sha256 .*re-create it"
    with pytest.raises(IntegrityError, match=want) as e:
        SyntheticSet.load(path)
    assert "\n" not in str(e.value)


def test_sidecar_is_sealed_and_an_untouched_file_loads(tmp_path):
    from condense.io import FIELD_SEAL_KEY, SEAL_KEY
    from condense.synthetic import FORMAT_VERSION

    path, meta = _sidecar(tmp_path)
    assert FORMAT_VERSION == 3 and meta["format_version"] == 3
    assert len(meta[SEAL_KEY]) == 64 and set(meta[FIELD_SEAL_KEY]) == set(meta) - {SEAL_KEY, FIELD_SEAL_KEY}
    sidecar_path(path).write_text(json.dumps(meta))  # rewritten without indentation or key order: same content
    back = SyntheticSet.load(path)
    assert back.lr == 0.0123 and back.ipc == 2 and back.provenance == meta["provenance"]
    assert torch.equal(back.images, _syn().images) and torch.equal(back.labels, _syn().labels)


def test_sidecar_of_format_version_2_is_refused(tmp_path):
    from condense.io import unseal

    path, meta = _sidecar(tmp_path)
    old = {**unseal(meta), "format_version": 2}  # what condense wrote before the seal
    sidecar_path(path).write_text(json.dumps(old))
    with pytest.raises(IntegrityError, match=r"format version 2; this condense reads version 3\. Re-create"):
        SyntheticSet.load(path)


@pytest.mark.parametrize("cut", [0, 1, 50, -2])
def test_truncated_or_padded_sidecar_is_refused(tmp_path, cut):
    path, _ = _sidecar(tmp_path)
    text = sidecar_path(path).read_text()
    sidecar_path(path).write_text(text[:cut] if cut >= 0 else text[:cut] + '{"lr": 9}')
    with pytest.raises(IntegrityError, match=r"set\.json' is not valid JSON"):
        SyntheticSet.load(path)


_WRONG_TYPES = {
    "ipc": "3",
    "lr": "big",
    "classes": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    "method": None,
    "kind": 1,
    "preprocessing": [],
    "config": "a=1",
    "tensors": {"images": [20, 1, 8, 8]},
    "sha256": 5,
}


@pytest.mark.parametrize("field", sorted(_WRONG_TYPES))
def test_sidecar_field_of_the_wrong_type_is_one_line(tmp_path, field):
    """Edited: the seal names it. Re-sealed (another tool, or a hand-fixed seal): the type check names it."""
    from condense.io import seal

    path, meta = _sidecar(tmp_path)
    meta[field] = _WRONG_TYPES[field]
    sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(IntegrityError, match=rf"field '{field}' was edited"):
        SyntheticSet.load(path)
    sidecar_path(path).write_text(json.dumps(seal(meta)))
    with pytest.raises(IntegrityError, match=rf"set\.json': field '{field}' is .*, expected") as e:
        SyntheticSet.load(path)
    assert "\n" not in str(e.value)


def test_resealed_label_kind_must_match_the_labels(tmp_path):
    from condense.io import seal

    path, meta = _sidecar(tmp_path)
    sidecar_path(path).write_text(json.dumps(seal({**meta, "label_kind": "soft"})))
    with pytest.raises(IntegrityError, match=r"field 'label_kind' says 'soft', the labels are hard"):
        SyntheticSet.load(path)


def test_save_refuses_a_field_of_the_wrong_type(tmp_path):
    syn = _syn()
    syn.ipc = "2"
    with pytest.raises(IntegrityError, match=r"field 'ipc' is a string \('2'\), expected an integer"):
        syn.save(tmp_path / "bad.safetensors")
    assert not list(tmp_path.iterdir())  # nothing written, not even the tensor file


@pytest.mark.parametrize("soft", [False, True])
def test_round_trip_keeps_every_field_and_the_seal(tmp_path, soft):
    syn = _syn(soft)
    first = syn.save(tmp_path / "a.safetensors")
    back = SyntheticSet.load(first)
    second = back.save(tmp_path / "b.safetensors")
    again = SyntheticSet.load(second)
    for x, y in ((syn.images, again.images), (syn.labels, again.labels)):
        assert x.dtype == y.dtype and torch.equal(x, y)  # bit-exact through two saves and loads
    a, b = (json.loads(sidecar_path(p).read_text()) for p in (first, second))
    # the safetensors header's metadata order is not fixed (a hash map), so the file sha256 may differ
    same = {k for k in a if k not in ("provenance", "sha256", "meta_sha256", "field_sha256")}
    assert {k: a[k] for k in same} == {k: b[k] for k in same}
    assert {k: a["field_sha256"][k] for k in same} == {k: b["field_sha256"][k] for k in same}
    for f in ("method", "dataset", "ipc", "lr", "classes", "preprocessing", "config", "meta", "kind"):
        assert getattr(back, f) == getattr(syn, f)
