"""Contract tests parametrized over every registered image method (STYLE §9, diffusers' common scheduler test).

Each method runs two iterations on digits and returns a valid, finite SyntheticSet; its config round-trips through
JSON; every preset resolves; the same generator gives the same result; for matchers, checkpoint then resume equals
an uninterrupted run. Methods that read an expert buffer get the session fixture from ``conftest.py``.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from condense.config import config_from_dict, config_to_dict
from condense.methods import RunContext, distill
from condense.methods.base import Matcher, get_method, list_methods
from condense.synthetic import SyntheticSet

IPC = 2
#: per-method overrides that make two iterations take well under a second on digits (num_iterations is generic)
TINY: dict[str, dict] = {
    "dm": {"batch_real": 8},
    "dc": {"batch_real": 8, "num_outer_loops": 2, "num_inner_loops": 1},
    "dsa": {"batch_real": 8, "num_outer_loops": 2, "num_inner_loops": 1},
}

IMAGE_METHODS = [n for n in list_methods() if get_method(n).data_kind == "images"]


def _overrides(name: str) -> dict:
    method = get_method(name)
    fields = {f.name for f in dataclasses.fields(method.Config)}
    over = {"num_iterations": 2} if "num_iterations" in fields else {}
    over.update(TINY.get(name, {}))
    return over


def _run(name: str, request: pytest.FixtureRequest, **kwargs) -> RunContext:
    """A quiet RunContext, with the digits expert buffer for methods that need one."""
    method = get_method(name)
    buffer = None
    if getattr(method, "needs_buffer", False):
        kind = getattr(method.resolve_config(_preset(name)), "expert_kind", "any")
        fixture = "digits_flat_buffer" if kind == "flat" else "digits_buffer"
        buffer = request.getfixturevalue(fixture)  # a missing fixture is an error, never a silent skip
    return RunContext(quiet=True, buffer=buffer, **kwargs)


def _preset(name: str) -> str | None:
    """The method's first digits preset (tuned for these inputs and the digits buffer), else its defaults."""
    digits = sorted(p for p in get_method(name).presets if p.startswith("digits-"))
    return digits[0] if digits else None


def _distill(name, data, request, seed=0, **run_kwargs) -> SyntheticSet:
    return distill(
        name,
        data,
        ipc=IPC,
        preset=_preset(name),
        overrides=_overrides(name),
        generator=torch.Generator().manual_seed(seed),
        run=_run(name, request, **run_kwargs),
    )


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_two_iterations_give_a_valid_finite_set(name, digits, request, tmp_path):
    syn = _distill(name, digits, request)
    assert isinstance(syn, SyntheticSet) and syn.method == name and syn.ipc == IPC
    assert syn.images.shape == (IPC * digits.num_classes, digits.channels, *digits.image_size)
    assert syn.images.dtype == torch.float32 and bool(torch.isfinite(syn.images).all())
    assert len(syn) == IPC * digits.num_classes
    assert torch.equal(syn.hard_labels.bincount(minlength=digits.num_classes), torch.full((10,), IPC))
    if syn.soft_labels:
        assert bool(torch.isfinite(syn.labels).all())
    syn.check_compatible(digits)
    loaded = SyntheticSet.load(syn.save(tmp_path / f"{name}.safetensors"))
    assert torch.equal(loaded.images, syn.images) and torch.equal(loaded.labels, syn.labels)
    assert loaded.config == syn.config


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_config_round_trips_through_json(name):
    method = get_method(name)
    cfg = method.resolve_config()
    text = json.dumps(config_to_dict(cfg), allow_nan=False)
    assert config_from_dict(method.Config, json.loads(text)) == cfg
    with pytest.raises(ValueError, match="unknown"):
        config_from_dict(method.Config, {"no_such_field": 1})


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_every_preset_resolves(name):
    method = get_method(name)
    for preset, values in method.presets.items():
        assert isinstance(values.get("source"), str) and values["source"], f"{name} preset {preset} lacks a source"
        cfg = method.resolve_config(preset)
        for key, value in values.items():
            if key != "source":
                got = getattr(cfg, key)
                assert got == (tuple(value) if isinstance(got, tuple) else value), f"{name}:{preset}.{key}"


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_same_generator_same_result(name, digits, request):
    a = _distill(name, digits, request, seed=1)
    b = _distill(name, digits, request, seed=1)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.lr == b.lr


class _Interrupt(Exception):
    pass


MATCHERS = [n for n in IMAGE_METHODS if isinstance(get_method(n), Matcher)]


@pytest.mark.parametrize("name", MATCHERS)
def test_checkpoint_then_resume_equals_uninterrupted(name, digits, request, tmp_path, monkeypatch):
    ref = _distill(name, digits, request, seed=2)
    cls = type(get_method(name))
    real_step = cls.step

    def interrupted(self, state, it, gen):
        if it == 1:
            raise _Interrupt
        return real_step(self, state, it, gen)

    monkeypatch.setattr(cls, "step", interrupted)
    with pytest.raises(_Interrupt):
        _distill(name, digits, request, seed=2, out_dir=tmp_path, checkpoint_every=1)
    monkeypatch.setattr(cls, "step", real_step)
    syn = _distill(name, digits, request, seed=7, out_dir=tmp_path, checkpoint_every=1)
    assert syn.meta["resumed_from"] == 1
    assert torch.equal(syn.images, ref.images) and torch.equal(syn.labels, ref.labels)
    assert syn.lr == ref.lr
