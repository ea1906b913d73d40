"""The method contract, run over EVERY registered method (STYLE §9; diffusers' ``tests/schedulers/test_schedulers.py``).

:class:`TestMethodContract` holds the tests every method must pass, each parametrized over ``list_methods()``, image
and graph methods alike; the data comes from a fixture chosen by the method's ``data_kind`` (the embedded ``digits``
for images, the embedded ``synthetic_graphs`` for graphs):

- two iterations return a valid, finite SyntheticSet that saves, loads and fits its dataset;
- the config round-trips through JSON and unknown fields are refused; every preset builds and carries a source;
- the same generator gives the same result;
- for every Matcher, checkpoint then resume equals an uninterrupted run;
- a method given the other kind of data raises the one-line :class:`MismatchError` of ``distill()``.

Per-method files add only what is specific (DATM's window growth, FTD's EMA, Mirage's mining vs brute force).
Methods that read an expert buffer get the session fixture of ``conftest.py`` for their ``expert_kind``.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from condense.config import config_from_dict, config_to_dict
from condense.data import load_dataset
from condense.errors import MismatchError
from condense.methods import Matcher, RunContext, distill, get_method, list_methods
from condense.synthetic import SyntheticSet

IPC = 2
ALL_METHODS = list_methods()
MATCHERS = [n for n in ALL_METHODS if isinstance(get_method(n), Matcher)]
#: per-method overrides that make two iterations take well under a second (num_iterations is set generically)
TINY: dict[str, dict] = {
    "dm": {"batch_real": 8},
    "dc": {"batch_real": 8, "num_outer_loops": 2, "inner_epochs": 1},
    "dsa": {"batch_real": 8, "num_outer_loops": 2, "inner_epochs": 1},
}
#: expert kind a trajectory method's config asks for -> the conftest fixture holding such a digits buffer
BUFFER_FIXTURES = {
    "any": "digits_buffer",
    "vanilla": "digits_buffer",
    "flat": "digits_flat_buffer",
    "smooth": "digits_smooth_buffer",
}


@pytest.fixture(scope="module")
def graphs():
    """The embedded graph dataset (two classes, 240 training graphs)."""
    return load_dataset("synthetic_graphs")


def _data(name: str, request: pytest.FixtureRequest):
    """The dataset fixture of the method's kind: digits for image methods, synthetic_graphs for graph methods."""
    kind = get_method(name).data_kind
    return request.getfixturevalue({"images": "digits", "graphs": "graphs"}[kind])


def _other_data(name: str, request: pytest.FixtureRequest):
    kind = get_method(name).data_kind
    return request.getfixturevalue({"images": "graphs", "graphs": "digits"}[kind])


def _preset(name: str) -> str | None:
    """The method's first digits preset (tuned for these inputs and the digits buffer), else its defaults."""
    digits = sorted(p for p in get_method(name).presets if p.startswith("digits-"))
    return digits[0] if digits else None


def _overrides(name: str) -> dict:
    fields = {f.name for f in dataclasses.fields(get_method(name).Config)}
    over = {"num_iterations": 2} if "num_iterations" in fields else {}
    over.update(TINY.get(name, {}))
    return over


def _run(name: str, request: pytest.FixtureRequest, **kwargs) -> RunContext:
    """A quiet RunContext, with the digits expert buffer of the right kind for methods that need one."""
    method = get_method(name)
    buffer = None
    if method.needs_buffer:
        kind = getattr(method.resolve_config(_preset(name)), "expert_kind", "any")
        buffer = request.getfixturevalue(BUFFER_FIXTURES[kind])  # a missing fixture is an error, never a skip
    return RunContext(quiet=True, buffer=buffer, **kwargs)


def _distill(name: str, request: pytest.FixtureRequest, seed: int = 0, **run_kwargs) -> SyntheticSet:
    return distill(
        name,
        _data(name, request),
        ipc=IPC,
        preset=_preset(name),
        overrides=_overrides(name),
        generator=torch.Generator().manual_seed(seed),
        run=_run(name, request, **run_kwargs),
    )


def _tensors(syn: SyntheticSet) -> dict[str, torch.Tensor]:
    """Every tensor of a set (images, labels and the extra tensors of graph summaries)."""
    out = {"labels": syn.labels, **syn.tensors}
    if syn.images is not None:
        out["images"] = syn.images
    return out


def _assert_same(a: SyntheticSet, b: SyntheticSet) -> None:
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), f"tensor '{key}' differs"
    assert a.lr == b.lr


class TestMethodContract:
    """What every registered method guarantees (one parametrized test per guarantee)."""

    @pytest.mark.parametrize("name", ALL_METHODS)
    def test_two_iterations_give_a_valid_finite_set(self, name, request, tmp_path):
        data = _data(name, request)
        syn = _distill(name, request)
        assert isinstance(syn, SyntheticSet) and syn.method == name and syn.ipc == IPC
        assert syn.dataset == data.name and list(syn.classes) == list(data.classes)
        for key, t in _tensors(syn).items():
            if t.is_floating_point():
                assert bool(torch.isfinite(t).all()), f"{name}: non-finite values in '{key}'"
        counts = syn.hard_labels.bincount(minlength=data.num_classes)
        assert counts.numel() == data.num_classes and bool((counts > 0).all())
        if syn.soft_labels:
            assert syn.labels.shape == (len(syn), data.num_classes)
        if get_method(name).data_kind == "images":
            assert syn.kind == "images" and syn.images.dtype == torch.float32
            assert syn.images.shape == (IPC * data.num_classes, data.channels, *data.image_size)
            assert torch.equal(counts, torch.full((data.num_classes,), IPC))
            syn.check_compatible(data)
        else:
            from condense.graph_summary import to_batch

            assert syn.kind == "graph_summary" and syn.images is None
            assert bool((counts <= IPC).all())
            assert to_batch(syn, data).num_graphs > 0  # evaluation can read it
        loaded = SyntheticSet.load(syn.save(tmp_path / f"{name}.safetensors"))
        _assert_same(loaded, syn)
        assert loaded.config == syn.config and loaded.kind == syn.kind

    @pytest.mark.parametrize("name", ALL_METHODS)
    def test_config_round_trips_through_json(self, name):
        method = get_method(name)
        cfg = method.resolve_config()
        text = json.dumps(config_to_dict(cfg), allow_nan=False)
        assert config_from_dict(method.Config, json.loads(text)) == cfg
        with pytest.raises(ValueError, match="unknown"):
            config_from_dict(method.Config, {"no_such_field": 1})

    @pytest.mark.parametrize("name", ALL_METHODS)
    def test_every_preset_builds(self, name):
        method = get_method(name)
        for preset, values in method.presets.items():
            assert isinstance(values.get("source"), str) and values["source"], f"{name} preset {preset} lacks a source"
            cfg = method.resolve_config(preset)
            for key, value in values.items():
                if key != "source":
                    got = getattr(cfg, key)
                    assert got == (tuple(value) if isinstance(got, tuple) else value), f"{name}:{preset}.{key}"
            json.dumps(config_to_dict(cfg), allow_nan=False)

    @pytest.mark.parametrize("name", ALL_METHODS)
    def test_same_generator_same_result(self, name, request):
        _assert_same(_distill(name, request, seed=1), _distill(name, request, seed=1))

    @pytest.mark.parametrize("name", MATCHERS)
    def test_checkpoint_then_resume_equals_uninterrupted(self, name, request, tmp_path, monkeypatch):
        ref = _distill(name, request, seed=2)
        cls = type(get_method(name))
        real_step = cls.step

        class Interrupt(Exception):
            pass

        def interrupted(self, state, it, gen):
            if it == 1:
                raise Interrupt
            return real_step(self, state, it, gen)

        monkeypatch.setattr(cls, "step", interrupted)
        with pytest.raises(Interrupt):
            _distill(name, request, seed=2, out_dir=tmp_path, checkpoint_every=1)
        monkeypatch.setattr(cls, "step", real_step)
        # the same seed (another one is refused: tests/methods/test_run_safety.py); the generator's advanced state
        # comes from the checkpoint, not from the fresh generator passed in
        syn = _distill(name, request, seed=2, out_dir=tmp_path, checkpoint_every=1)
        assert syn.meta["resumed_from"] == 1
        _assert_same(syn, ref)

    @pytest.mark.parametrize("name", ALL_METHODS)
    def test_the_other_data_kind_is_refused_in_one_line(self, name, request):
        method = get_method(name)
        data = _other_data(name, request)
        with pytest.raises(MismatchError) as info:
            distill(name, data, ipc=1, overrides=_overrides(name), run=RunContext(quiet=True))
        msg = str(info.value)
        assert "\n" not in msg
        assert f"method '{name}' distills {method.data_kind} but '{data.name}' holds {data.kind}" in msg
        same_kind = [n for n in ALL_METHODS if get_method(n).data_kind == data.kind]
        assert msg.endswith(f"{data.kind.rstrip('s')} methods: {', '.join(same_kind)}")


def test_mismatch_message_names_the_methods_of_the_data_kind(graphs):
    with pytest.raises(MismatchError) as info:
        distill("dm", graphs, ipc=1)
    graph_methods = ", ".join(n for n in ALL_METHODS if get_method(n).data_kind == "graphs")
    assert str(info.value) == (
        f"method 'dm' distills images but 'synthetic_graphs' holds graphs; graph methods: {graph_methods}"
    )


def test_data_without_a_kind_is_refused(digits):
    class Bare:
        name = "bare"

    with pytest.raises(MismatchError, match="has no data kind"):
        distill("random_real", Bare(), ipc=1)
