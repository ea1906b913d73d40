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
