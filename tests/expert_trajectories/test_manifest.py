"""The buffer format: manifest contents and stamp, run_key stability, the seed rule, version refusal, resume scan."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from pathlib import Path

import pytest

from condense import seeding
from condense.augment import get_augment, resolve_augment
from condense.errors import IntegrityError, MismatchError
from condense.expert_trajectories import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    ExpertBuffer,
    canonical_json,
    derive_seed,
    expert_filename,
    get_expert_config,
    read_manifest,
    record_experts,
)
from condense.expert_trajectories.manifest import (
    SEED_DERIVATION,
    build_header,
    check_existing,
    read_expert_record,
    scan_experts,
)
from condense.models import ParamLayout, create_model

MODEL_KW = {"width": 8}
N_EXPERTS, EPOCHS = 2, 2


@pytest.fixture(scope="module")
def buffer_dir(tmp_path_factory, digits) -> Path:
    out = tmp_path_factory.mktemp("buf") / "digits_convnet"
    cfg = get_expert_config("vanilla", batch_size=128, augment="dsa_noflip")
    record_experts(digits, "convnet", N_EXPERTS, EPOCHS, out, config=cfg, quiet=True, model_kwargs=MODEL_KW, seed=7)
    return out


def _copy(buffer_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(buffer_dir, dst)
    return dst


def _header(digits, **changes):
    """The header record_experts writes for vanilla defaults on digits, ConvNet width 8, 2 epochs, seed 5."""
    cfg = get_expert_config("vanilla")
    spe = math.ceil(digits.x_train.shape[0] / cfg.batch_size)
    net = create_model("convnet", in_channels=1, num_classes=10, image_size=(8, 8), seed=0, **MODEL_KW)
    kw = dict(
        data=digits,
        model="convnet",
        model_kwargs=dict(MODEL_KW),
        layout=ParamLayout.from_module(net),
        kind=cfg.kind,
        config=cfg.to_dict(),
        augment=get_augment(resolve_augment(cfg.augment, digits.name)).config(),
        epochs=2,
        steps_per_epoch=spe,
        snapshot_steps=[0, spe, 2 * spe],
        save_every_steps=None,
        seed=5,
        dtype="float32",
    )
    kw.update(changes)
    return build_header(**kw)


# ----------------------------------------------------------------------------------------------------------------------
# What a manifest holds
# ----------------------------------------------------------------------------------------------------------------------


def test_manifest_stamp_seeds_and_records(buffer_dir):
    """The format-level fields (test_buffer.py checks what the buffer reads from them)."""
    buf = ExpertBuffer.open(buffer_dir)
    m = json.loads((buffer_dir / MANIFEST_NAME).read_text())
    assert m["format"] == FORMAT and m["format_version"] == FORMAT_VERSION
    assert set(m["provenance"]) >= {"condense", "torch", "python", "platform", "created"}  # condense.io.provenance
    assert m["seed"] == 7 and m["seed_derivation"] == SEED_DERIVATION
    assert m["num_snapshots"] == EPOCHS + 1 and m["num_params"] == buf.layout.numel
    assert m["param_names"] == list(buf.layout.names)
    assert m["num_experts_done"] == N_EXPERTS and [e["id"] for e in m["experts"]] == list(range(N_EXPERTS))
    rec = buf.expert_record(1)
    assert rec["seeds"] == {s: derive_seed(7, 1, rec["attempt"], s) for s in ("init", "order", "aug")}
    assert "run_key" not in rec and rec["rank"] == 0 and rec["final_test_acc"] == rec["accuracy_curve"][-1]
    assert rec["file"] == expert_filename(1) and rec["status"] == "done"


def test_expert_file_header_repeats_its_record(buffer_dir):
    rec = read_expert_record(buffer_dir / expert_filename(0))
    m = json.loads((buffer_dir / MANIFEST_NAME).read_text())
    assert rec["run_key"] == m["run_key"]
    listed = {k: v for k, v in m["experts"][0].items() if k != "sha256"}
    assert {k: v for k, v in rec.items() if k != "run_key"} == listed


def test_run_key_ignores_provenance_and_is_stable(digits):
    a, b = _header(digits), _header(digits)
    assert a["run_key"] == b["run_key"]
    keyed = {k: v for k, v in a.items() if k not in ("run_key", "provenance")}
    assert a["run_key"] == hashlib.sha256(canonical_json(keyed).encode()).hexdigest()[:16]
    assert _header(digits, seed=6)["run_key"] != a["run_key"]
    assert _header(digits, dtype="bfloat16")["run_key"] != a["run_key"]
    # Recorded by condense at format version 2 (sealed manifests; version 1 gave "0594661ca392e7d6"): a buffer
    # written then still resumes. If this changes on purpose, bump FORMAT_VERSION so old folders are refused with a
    # clear message instead.
    assert a["run_key"] == "e3620be4992c35e1"


def test_seed_rule_matches_the_recorded_string():
    for seed, eid, attempt, stream in [(0, 0, 0, "init"), (7, 3, 1, "order"), (123, 99, 2, "aug")]:
        text = f"condense-experts/{seed}/{eid}/{attempt}/{stream}"  # SEED_DERIVATION, spelled out
        want = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)
        assert derive_seed(seed, eid, attempt, stream) == want
        assert seeding.derive_seed("condense-experts", seed, eid, attempt, stream) == want
    assert "condense-experts/{seed}/{expert_id}/{attempt}/" in SEED_DERIVATION


# ----------------------------------------------------------------------------------------------------------------------
# Refusing what this condense cannot read
# ----------------------------------------------------------------------------------------------------------------------


def test_other_format_version_names_the_file_and_both_versions(buffer_dir, tmp_path):
    path = _copy(buffer_dir, tmp_path)
    m = json.loads((path / MANIFEST_NAME).read_text())
    m["format_version"] = 99
    (path / MANIFEST_NAME).write_text(json.dumps(m))
    want = rf"format version 99; this condense reads version {FORMAT_VERSION}"
    for call in (lambda: read_manifest(path / MANIFEST_NAME), lambda: ExpertBuffer.open(path)):
        with pytest.raises(IntegrityError, match=want) as e:
            call()
        assert str(path / MANIFEST_NAME) in str(e.value)
    with pytest.raises(IntegrityError, match="format version 99"):
        check_existing(path, {**m, "format_version": FORMAT_VERSION})


def test_foreign_or_incomplete_manifest_is_refused(buffer_dir, tmp_path):
    path = _copy(buffer_dir, tmp_path)
    m = json.loads((path / MANIFEST_NAME).read_text())
    (path / MANIFEST_NAME).write_text(json.dumps({**m, "format": "something.else"}))
    with pytest.raises(IntegrityError, match=str(path / MANIFEST_NAME)):
        read_manifest(path / MANIFEST_NAME)
    with pytest.raises(MismatchError, match="not an expert buffer"):
        check_existing(path, m)
    (path / MANIFEST_NAME).write_text(json.dumps({k: v for k, v in m.items() if k != "param_shapes"}))
    with pytest.raises(IntegrityError, match="param_shapes"):
        read_manifest(path / MANIFEST_NAME)
    (path / MANIFEST_NAME).write_text(json.dumps({**m, "dtype": "float64"}))
    with pytest.raises(IntegrityError, match="float64"):
        read_manifest(path / MANIFEST_NAME)
    (path / MANIFEST_NAME).write_text(json.dumps([1, 2]))
    with pytest.raises(IntegrityError, match="not a condense expert-buffer manifest"):
        read_manifest(path / MANIFEST_NAME)


# ----------------------------------------------------------------------------------------------------------------------
# Resume scan
# ----------------------------------------------------------------------------------------------------------------------


def test_scan_keeps_whole_files_and_skips_damaged_ones(buffer_dir, tmp_path, caplog):
    path = _copy(buffer_dir, tmp_path)
    header = json.loads((path / MANIFEST_NAME).read_text())
    done = scan_experts(path, header)
    assert sorted(done) == list(range(N_EXPERTS))
    assert [done[i] for i in range(N_EXPERTS)] == header["experts"]  # the records rebuilt from the files alone
    f = path / expert_filename(1)
    f.write_bytes(f.read_bytes()[:-16])  # header intact, data cut
    assert read_expert_record(f) is None  # the header parses, but io.read_metadata checks the size it describes
    with caplog.at_level(logging.WARNING, logger="condense"):
        assert sorted(scan_experts(path, header)) == [0]  # so the cut expert is trained again
    assert expert_filename(1) in caplog.text
    (path / expert_filename(3)).write_bytes(b"\x00" * 5)  # not safetensors at all
    assert read_expert_record(path / expert_filename(3)) is None
    with pytest.raises(MismatchError, match="other settings"):
        scan_experts(path, {**header, "run_key": "0" * 16})


# ----------------------------------------------------------------------------------------------------------------------
# The seal (format version 2): edited manifests and expert records are refused naming the field
# ----------------------------------------------------------------------------------------------------------------------

_MANIFEST_EDITS = {
    "num_params": 12,
    "dataset": {"name": "mnist"},
    "model": {"name": "convnet_bn"},
    "seed": 8,
    "epochs": 5,
    "preprocessing": {"mean": [0.5], "std": [0.5], "zca": None},
    "kind": "flat",
    "config": {},
    "param_names": [],
}


def _opens(path: Path) -> list:
    return [lambda: read_manifest(path / MANIFEST_NAME), lambda: ExpertBuffer.open(path)]


@pytest.mark.parametrize("field", sorted(_MANIFEST_EDITS))
def test_edited_manifest_field_is_refused_naming_it(buffer_dir, tmp_path, field):
    path = _copy(buffer_dir, tmp_path)
    m = json.loads((path / MANIFEST_NAME).read_text())
    m[field] = _MANIFEST_EDITS[field]
    (path / MANIFEST_NAME).write_text(json.dumps(m, indent=2))
    want = rf"manifest\.json': field '{field}' was edited after the file was written \(recorded sha256 .*record it"
    for call in _opens(path):
        with pytest.raises(IntegrityError, match=want):
            call()


def test_edited_expert_entry_in_the_manifest_names_the_expert_and_field(buffer_dir, tmp_path):
    path = _copy(buffer_dir, tmp_path)
    m = json.loads((path / MANIFEST_NAME).read_text())
    edited = json.loads(json.dumps(m))
    edited["experts"][1]["seeds"]["init"] += 1
    (path / MANIFEST_NAME).write_text(json.dumps(edited))
    for call in _opens(path):
        with pytest.raises(IntegrityError, match=r"field 'experts\[1\]\.seeds' was edited after the file was written"):
            call()
    edited = json.loads(json.dumps(m))
    edited["experts"][0]["sha256"] = "0" * 64  # the manifest's own field of the entry: its top-level seal names it
    (path / MANIFEST_NAME).write_text(json.dumps(edited))
    with pytest.raises(IntegrityError, match=r"field 'experts' was edited"):
        ExpertBuffer.open(path)


@pytest.mark.parametrize("field, value", [("num_params", "1234"), ("seed", "7"), ("dtype", ["float32"])])
def test_manifest_field_of_the_wrong_type_is_one_line(buffer_dir, tmp_path, field, value):
    from condense.io import seal

    path = _copy(buffer_dir, tmp_path)
    m = json.loads((path / MANIFEST_NAME).read_text())
    (path / MANIFEST_NAME).write_text(json.dumps({**m, field: value}))
    with pytest.raises(IntegrityError, match=rf"field '{field}'"):
        ExpertBuffer.open(path)
    (path / MANIFEST_NAME).write_text(json.dumps(seal({**m, field: value})))  # re-sealed: the type check names it
    with pytest.raises(IntegrityError, match=rf"field '{field}' (is|names)") as e:
        ExpertBuffer.open(path)
    assert "\n" not in str(e.value)


def test_resealed_manifest_that_contradicts_itself_is_refused(buffer_dir, tmp_path):
    from condense.io import seal

    path = _copy(buffer_dir, tmp_path)
    m = json.loads((path / MANIFEST_NAME).read_text())
    (path / MANIFEST_NAME).write_text(json.dumps(seal({**m, "num_params": m["num_params"] + 1})))
    with pytest.raises(IntegrityError, match=r"'param_names', 'param_shapes' and 'num_params'.*disagree"):
        ExpertBuffer.open(path)
    (path / MANIFEST_NAME).write_text(json.dumps(seal({**m, "num_snapshots": 99})))
    with pytest.raises(IntegrityError, match=r"field 'num_snapshots' \(99\) disagrees"):
        ExpertBuffer.open(path)


@pytest.mark.parametrize("cut", [0, 10, -1])
def test_truncated_manifest_is_refused(buffer_dir, tmp_path, cut):
    path = _copy(buffer_dir, tmp_path)
    text = (path / MANIFEST_NAME).read_text()
    (path / MANIFEST_NAME).write_text(text[:cut] if cut >= 0 else text.rstrip()[:-1])
    for call in _opens(path):
        with pytest.raises(IntegrityError, match=r"manifest\.json' is not valid JSON"):
            call()
    with pytest.raises(IntegrityError, match="not valid JSON"):
        check_existing(path, json.loads(text))


def _rewrite_record(f: Path, **changes) -> None:
    """Rewrite an expert file with its header record changed (tensor bytes kept), as a hand edit would."""
    from safetensors.torch import load_file

    from condense.io import read_metadata, save_tensors

    meta = read_metadata(f)
    rec = json.loads(meta["record"])
    rec.update(changes)
    save_tensors(f, load_file(f), metadata={**meta, "record": json.dumps(rec)})


@pytest.mark.parametrize("field, value", [("seeds", {"init": 1, "order": 2, "aug": 3}), ("id", 0), ("run_key", "x")])
def test_edited_expert_file_record_is_refused_on_resume(buffer_dir, tmp_path, field, value):
    path = _copy(buffer_dir, tmp_path)
    header = json.loads((path / MANIFEST_NAME).read_text())
    f = path / expert_filename(1)
    _rewrite_record(f, **{field: value})
    want = rf"{expert_filename(1)}': field '{field}' was edited after the file was written.*delete that expert file"
    with pytest.raises(IntegrityError, match=want):
        read_expert_record(f)
    with pytest.raises(IntegrityError, match=want):
        scan_experts(path, header)


def test_expert_file_record_of_the_wrong_type_or_version_is_refused(buffer_dir, tmp_path):
    from safetensors.torch import load_file

    from condense.io import read_metadata, save_tensors, seal

    path = _copy(buffer_dir, tmp_path)
    f = path / expert_filename(0)
    meta = read_metadata(f)
    rec = json.loads(meta["record"])
    save_tensors(f, load_file(f), metadata={**meta, "record": json.dumps(seal({**rec, "attempt": "0"}))})
    with pytest.raises(IntegrityError, match=r"field 'attempt' is a string \('0'\), expected an integer"):
        read_expert_record(f)
    save_tensors(f, load_file(f), metadata={**meta, "record": '{"id": 0'})
    with pytest.raises(IntegrityError, match="holds no readable expert record"):
        read_expert_record(f)
    save_tensors(f, load_file(f), metadata={**meta, "format_version": "1"})
    with pytest.raises(IntegrityError, match=r"format version '1'; this condense reads version 2"):
        read_expert_record(f)


def test_every_record_is_sealed_once_and_listed_with_its_seal(buffer_dir):
    from condense.io import check_seal

    assert FORMAT_VERSION == 2
    m = json.loads((buffer_dir / MANIFEST_NAME).read_text())
    check_seal(m, MANIFEST_NAME)
    for e in m["experts"]:
        rec = read_expert_record(buffer_dir / e["file"])  # the sealed file record, run_key included
        assert rec["meta_sha256"] == e["meta_sha256"] and rec["run_key"] == m["run_key"]
        check_seal(rec, e["file"])


def test_resuming_a_version_1_buffer_says_how_to_start_over(buffer_dir, tmp_path):
    from condense.io import unseal

    path = _copy(buffer_dir, tmp_path)
    m = json.loads((path / MANIFEST_NAME).read_text())
    (path / MANIFEST_NAME).write_text(json.dumps({**unseal(m), "format_version": 1}))
    want = r"format version 1; this condense reads version 2.*cannot be resumed: record into another --out folder"
    with pytest.raises(IntegrityError, match=want) as e:
        check_existing(path, m)
    assert str(path) in str(e.value)
    with pytest.raises(IntegrityError, match=r"format version 1; this condense reads version 2"):
        ExpertBuffer.open(path)


def test_resuming_into_an_edited_manifest_is_refused(buffer_dir, tmp_path):
    path = _copy(buffer_dir, tmp_path)
    m = json.loads((path / MANIFEST_NAME).read_text())
    (path / MANIFEST_NAME).write_text(json.dumps({**m, "seed": 8}))
    with pytest.raises(IntegrityError, match=r"field 'seed' was edited.*cannot be resumed"):
        check_existing(path, m)
    (path / MANIFEST_NAME).write_text(json.dumps(m))
    check_existing(path, m)  # untouched: resumes
