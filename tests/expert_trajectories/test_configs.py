"""Expert configs: paper defaults, JSON round trip, presets as data, the kind-or-preset resolution rule."""

from __future__ import annotations

import json

import pytest

from condense.config import config_from_dict
from condense.errors import ConfigError
from condense.expert_trajectories import (
    EXPERT_KINDS,
    EXPERT_PRESETS,
    FlatExpertConfig,
    SmoothExpertConfig,
    VanillaExpertConfig,
    expert_kind_of,
    get_expert_config,
    list_expert_kinds,
    list_expert_presets,
    resolve_expert_config,
)


def test_configs_have_paper_defaults_and_round_trip():
    v, f, s = get_expert_config("vanilla"), get_expert_config("flat"), get_expert_config("smooth")
    assert isinstance(v, VanillaExpertConfig) and (v.lr_teacher, v.momentum, v.weight_decay, v.batch_size) == (
        0.01,
        0.0,
        0.0,
        256,
    )
    assert isinstance(f, FlatExpertConfig) and (f.rho, f.alpha, f.adaptive) == (0.01, 0.3, True)
    assert isinstance(s, SmoothExpertConfig) and (s.momentum, s.weight_decay, s.gp_weight) == (0.9, 1e-3, 2.0)
    assert [s.loss_scale(e) for e in (0, 9, 10)] == pytest.approx([0.5, 0.95, 1.0])
    assert get_expert_config("ftd_alpha1").alpha == 1.0 and get_expert_config("datm").kind == "flat"
    assert EXPERT_PRESETS["datm"]["epochs"] == 100
    for name in list_expert_kinds():
        cfg = get_expert_config(name)
        assert config_from_dict(type(cfg), json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="lr_teacher"):
        get_expert_config("vanilla", lr_teacher=-1.0)
    with pytest.raises(ConfigError, match="did you mean 'flat'"):
        get_expert_config("flta")
    with pytest.raises(ConfigError, match="unknown FlatExpertConfig field 'rh'"):
        get_expert_config("flat", rh=0.1)
    with pytest.raises(ConfigError, match="augment"):
        get_expert_config("vanilla", augment="dssa")


def test_presets_are_keyword_data_with_a_source():
    assert list_expert_presets() == ["ast", "datm", "ftd", "ftd_alpha1", "mtt"]
    assert list_expert_kinds() == ["flat", "smooth", "vanilla", *list_expert_presets()]
    assert not set(EXPERT_PRESETS) & set(EXPERT_KINDS.list())  # one string names one thing
    for name, p in EXPERT_PRESETS.items():
        assert p["source"] and p["kind"] in EXPERT_KINDS and isinstance(p["epochs"], int), name
        fields = {k: v for k, v in p.items() if k not in ("kind", "epochs", "source")}
        cfg = get_expert_config(name)
        assert cfg.kind == p["kind"] and all(getattr(cfg, k) == v for k, v in fields.items()), name


def test_a_name_resolves_to_a_kind():
    assert [expert_kind_of(n) for n in ("mtt", "ftd", "ftd_alpha1", "datm", "ast")] == [
        "vanilla",
        "flat",
        "flat",
        "flat",
        "smooth",
    ]
    assert [expert_kind_of(k) for k in ("vanilla", "flat", "smooth")] == ["vanilla", "flat", "smooth"]
    with pytest.raises(ConfigError, match="did you mean 'datm'"):
        expert_kind_of("dtam")
    assert get_expert_config("datm", alpha=1.0).alpha == 1.0  # overrides win over the preset


def test_resolve_kind_and_config():
    flat = get_expert_config("flat", alpha=1.0)
    assert resolve_expert_config("vanilla", flat) is flat  # the default kind never contradicts
    assert resolve_expert_config("datm", flat) is flat  # a preset of the config's kind is fine
    assert resolve_expert_config("ast", None) == get_expert_config("smooth")
    with pytest.raises(ConfigError, match="contradicts"):
        resolve_expert_config("smooth", flat)
    with pytest.raises(ConfigError, match="must be an ExpertConfig"):
        resolve_expert_config("vanilla", {"lr_teacher": 0.1})
