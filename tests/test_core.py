"""Registry, config and io helpers."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from condense.config import check_range, config_from_dict, config_to_dict, parse_overrides, resolve_config
from condense.errors import ConfigError, DataNotFoundError, IntegrityError, UnknownNameError
from condense.io import load_tensors, read_json, save_tensors, write_json_atomic
from condense.registry import Registry


@dataclass(frozen=True, kw_only=True)
class _Cfg:
    lr_img: float = 100.0
    syn_steps: int = 20
    zca: bool = False
    name: str = "a"
    sizes: tuple[int, ...] = (1, 2)
    maybe: float | None = None

    def __post_init__(self) -> None:
        check_range("syn_steps", self.syn_steps, 1)


def test_registry_duplicates_and_did_you_mean():
    reg: Registry[int] = Registry("thing")
    reg.register("alpha")(1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("alpha")(2)
    with pytest.raises(UnknownNameError, match="did you mean 'alpha'"):
        reg.get("alpah")
    assert reg.list("al*") == ["alpha"] and "alpha" in reg


def test_config_round_trip_and_overrides():
    cfg = _Cfg(syn_steps=3, sizes=(4, 5))
    assert config_from_dict(_Cfg, config_to_dict(cfg)) == cfg
    ov = parse_overrides(_Cfg, ["lr_img=1e3", "syn_steps=5", "zca=true", "sizes=1,2,3", "maybe=none"])
    assert ov == {"lr_img": 1000.0, "syn_steps": 5, "zca": True, "sizes": (1, 2, 3), "maybe": None}
    with pytest.raises(ConfigError, match="did you mean 'syn_steps'"):
        parse_overrides(_Cfg, ["syn_step=5"])
    with pytest.raises(ConfigError, match="cannot parse"):
        parse_overrides(_Cfg, ["syn_steps=many"])
    with pytest.raises(ConfigError, match="out of range"):
        resolve_config(_Cfg, {"p": {"syn_steps": 0, "source": "x"}}, "p", None)
    with pytest.raises(UnknownNameError, match="unknown preset"):
        resolve_config(_Cfg, {"p": {}}, "q", None)
    assert resolve_config(_Cfg, {"p": {"syn_steps": 7, "source": "x"}}, "p", {"zca": True}) == _Cfg(
        syn_steps=7, zca=True
    )


def test_io_atomic_and_checksums(tmp_path):
    digest = save_tensors(tmp_path / "t.safetensors", {"a": torch.arange(4)})
    assert torch.equal(load_tensors(tmp_path / "t.safetensors", digest)["a"], torch.arange(4))
    with pytest.raises(IntegrityError, match="checksum"):
        load_tensors(tmp_path / "t.safetensors", "0" * 64)
    with pytest.raises(DataNotFoundError):
        load_tensors(tmp_path / "missing.safetensors")
    write_json_atomic(tmp_path / "x.json", {"k": 1})
    assert read_json(tmp_path / "x.json") == {"k": 1}
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "bad.json", {"k": float("nan")})
    assert not (tmp_path / "bad.json").exists()


def test_stamp_and_read_metadata(tmp_path):
    from condense.io import check_stamp, read_metadata, stamp

    head = stamp("condense.Thing", 3)
    assert head["format_version"] == 3 and head["provenance"]["condense"]
    check_stamp(head, "condense.Thing", 3, "x.json")
    with pytest.raises(IntegrityError, match="format version 3; this condense reads version 4"):
        check_stamp(head, "condense.Thing", 4, "x.json")
    with pytest.raises(IntegrityError, match="not a condense.Other file"):
        check_stamp(head, "condense.Other", 3, "x.json")
    f = tmp_path / "m.safetensors"
    save_tensors(f, {"a": torch.arange(6)}, metadata={"k": "v"})
    assert read_metadata(f) == {"k": "v"}
    f.write_bytes(f.read_bytes()[:-4])
    with pytest.raises(IntegrityError, match="cut or padded"):
        read_metadata(f)
    (tmp_path / "short").write_bytes(b"\x01")
    with pytest.raises(IntegrityError, match="shorter"):
        read_metadata(tmp_path / "short")


def test_preset_and_check_choice():
    from condense.config import check_choice, preset

    assert preset(source="Table 1", lr=0.1) == {"source": "Table 1", "lr": 0.1}
    with pytest.raises(ConfigError, match="source"):
        preset(source="", lr=0.1)
    check_choice("init", "real", ("real", "noise"))
    with pytest.raises(ConfigError, match="did you mean 'real'"):
        check_choice("init", "reel", ("real", "noise"))


# ----------------------------------------------------------------------------------------------------------------------
# The integrity scheme: seal / check_seal / check_fields
# ----------------------------------------------------------------------------------------------------------------------

_EDITED = (
    r"'x\.json': field '{}' was edited after the file was written \(recorded sha256 [0-9a-f]{{16}}\.\.\., "
    r"now [0-9a-f]{{16}}\.\.\.\); the file cannot be trusted: re-create it"
)


def test_canonical_json_is_sorted_compact_and_refuses_nan():
    from condense.io import canonical_json

    assert canonical_json({"b": (1, 2), "a": None, "c": {"y": 1.5, "x": "é"}}) == (
        '{"a":null,"b":[1,2],"c":{"x":"\\u00e9","y":1.5}}'
    )
    with pytest.raises(ValueError):
        canonical_json({"lr": float("nan")})


def test_seal_survives_a_json_round_trip_and_names_every_edited_field():
    import json

    from condense.io import FIELD_SEAL_KEY, SEAL_KEY, canonical_json, check_seal, edited_fields, seal, sha256_bytes

    rec = seal({"lr": 0.01, "ipc": 10, "preprocessing": {"mean": [0.3], "zca": None}, "classes": ["a", "b"]})
    body = {k: v for k, v in rec.items() if k not in (SEAL_KEY, FIELD_SEAL_KEY)}
    assert rec[SEAL_KEY] == sha256_bytes(canonical_json(body).encode())
    assert rec[FIELD_SEAL_KEY] == {k: sha256_bytes(canonical_json(v).encode()) for k, v in body.items()}
    check_seal(json.loads(json.dumps(rec, indent=2)), "x.json")  # what a reader sees: intact
    assert seal(rec) == rec and edited_fields(rec) == []
    for field, value in [("lr", 0.5), ("ipc", "10"), ("preprocessing", {"mean": [0.4], "zca": None}), ("classes", [])]:
        with pytest.raises(IntegrityError, match=_EDITED.format(field)) as e:
            check_seal({**rec, field: value}, "x.json")
        assert "\n" not in str(e.value)
        assert edited_fields({**rec, field: value}) == [field]
    with pytest.raises(IntegrityError, match=r"fields 'lr', 'ipc' were edited"):
        check_seal({**rec, "lr": 0.5, "ipc": 11}, "x.json")
    with pytest.raises(IntegrityError, match=r"field 'extra' was added after the file was written"):
        check_seal({**rec, "extra": 1}, "x.json")
    with pytest.raises(IntegrityError, match=r"field 'classes' was removed after the file was written"):
        check_seal({k: v for k, v in rec.items() if k != "classes"}, "x.json")
    with pytest.raises(IntegrityError, match=r"field 'lr' holds NaN or Infinity"):
        check_seal({**rec, "lr": float("nan")}, "x.json")
    with pytest.raises(IntegrityError, match=r"its seal 'meta_sha256' was edited"):
        check_seal({**rec, SEAL_KEY: "0" * 64}, "x.json")
    with pytest.raises(IntegrityError, match=r"its per-field seal 'field_sha256' was edited"):
        check_seal({**rec, FIELD_SEAL_KEY: {**rec[FIELD_SEAL_KEY], "lr": "0" * 64}}, "x.json")
    for broken in (body, {**body, SEAL_KEY: 3, FIELD_SEAL_KEY: {}}, {**body, SEAL_KEY: "a", FIELD_SEAL_KEY: []}):
        with pytest.raises(IntegrityError, match=r"'x\.json' carries no valid seal"):
            check_seal(broken, "x.json")
    with pytest.raises(IntegrityError, match=r"field 'experts\[2\]\.seeds' was edited.*record it again"):
        check_seal({**seal({"seeds": [1]}), "seeds": [2]}, "x.json", prefix="experts[2].", hint="record it again")
    with pytest.raises(IntegrityError, match="cannot write field 'lr'"):
        seal({"lr": float("inf")})


def test_check_fields_refuses_a_wrong_type_in_one_line():
    from condense.io import check_fields

    schema = {"ipc": int, "lr": float | None, "classes": list[str], "config": dict, "shapes": dict[str, list[int]]}
    good = {"ipc": 3, "lr": None, "classes": ["a"], "config": {}, "shapes": {"w": [2, 3]}, "other": "kept"}
    check_fields(good, schema, "x.json")
    check_fields({**good, "lr": 1}, schema, "x.json")  # JSON writes 1.0 as 1 in other tools: still a number
    bad = [
        ("ipc", "3", r"a string \('3'\), expected an integer"),
        ("ipc", True, r"a boolean \(True\), expected an integer"),
        ("ipc", 1.5, r"a number \(1\.5\), expected an integer"),
        ("lr", "big", r"a string \('big'\), expected a number or null"),
        ("classes", [1, 2], r"a list \(\[1, 2\]\), expected a list whose items are each a string"),
        ("classes", "ab", r"a string \('ab'\), expected a list whose items are each a string"),
        ("config", [], r"a list \(\[\]\), expected an object"),
        (
            "shapes",
            {"w": ["2"]},
            r"an object .*, expected an object whose values are each a list whose items are each an integer",
        ),
    ]
    for name, value, want in bad:
        with pytest.raises(IntegrityError, match=rf"'x\.json': field '{name}' is {want}; the file cannot be") as e:
            check_fields({**good, name: value}, schema, "x.json")
        assert "\n" not in str(e.value)
    with pytest.raises(IntegrityError, match=r"'x\.json' lacks the field 'ipc'"):
        check_fields({k: v for k, v in good.items() if k != "ipc"}, schema, "x.json")
    with pytest.raises(IntegrityError, match=r"field 'experts\[0\]\.ipc' is a string.*; fix it"):
        check_fields({**good, "ipc": "3"}, schema, "x.json", prefix="experts[0].", hint="fix it")


def test_check_range_refuses_nan():
    with pytest.raises(ConfigError, match="nan"):
        check_range("lr", float("nan"), 0.0)
    check_range("lr", 0.5, 0.0, 1.0)
