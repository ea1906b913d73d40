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
Methods that read an expert buffer get the session fixture of ``conftest.py`` for their ``expert_kind``; methods
that read a teacher (``needs_teacher``) get the session fixture of their ``teacher_kind`` (``digits_teacher``, or
``digits_encoder`` for KRR-ST). A method whose ``budget`` is ``"total"`` (KRR-ST) returns ``ipc x classes`` images
drawn without regard to class, so only their number is checked, not the count per class.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from condense.config import PRESET_META, config_from_dict, config_to_dict
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
    "krr_st": {"batch_real": 32, "num_models": 2, "pool_steps": 3, "width": 16},
}
#: teacher kind a method reads -> the conftest fixture holding such a digits teacher
TEACHER_FIXTURES = {"classifier": "digits_teacher", "encoder": "digits_encoder"}
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
    """A quiet RunContext, with the digits expert buffer of the right kind for methods that need one and the digits
    teacher (``conftest.py``'s ``digits_teacher``) for methods that need a teacher."""
    method = get_method(name)
    buffer = teacher = None
    if method.needs_buffer:
        kind = getattr(method.resolve_config(_preset(name)), "expert_kind", "any")
        buffer = request.getfixturevalue(BUFFER_FIXTURES[kind])  # a missing fixture is an error, never a skip
    if method.needs_teacher:
        teacher = request.getfixturevalue(TEACHER_FIXTURES[method.teacher_kind])
    return RunContext(quiet=True, buffer=buffer, teacher=teacher, **kwargs)


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
        per_class = get_method(name).budget == "per_class"
        assert counts.numel() == data.num_classes and (bool((counts > 0).all()) or not per_class)
        if syn.soft_labels:
            assert syn.labels.shape == (len(syn), data.num_classes)
        if get_method(name).data_kind == "images":
            assert syn.kind == "images" and syn.images.dtype == torch.float32
            assert syn.images.shape == (IPC * data.num_classes, data.channels, *data.image_size)
            if per_class:
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
                if key not in PRESET_META:  # source, buffer, eval: what the preset says beside the config fields
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


# ----------------------------------------------------------------------------------------------------------------------
# Preset VALUES against the papers' tables. Literal tables written from shared/reference/trajectory.md (2.3, 3.2,
# 4.2) and the DC/DM authors' main.py / main_DM.py argparse defaults, never read from the code: a preset that drifts
# from its source, a dropped row or a row without a reference fails here.
# ----------------------------------------------------------------------------------------------------------------------

#: classes per dataset key, to compare "all synthetic images" (None) with an explicit batch_syn
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "tinyimagenet": 200, "mnist": 10}

ALL = None  # batch_syn "all synthetic images"

#: MTT, trajectory.md 2.3 (justincui03/dc_benchmark methods/tm/readme.md, the author's settings):
#: (N syn_steps, M expert_epochs, T+ max_start_epoch, lr_img, lr_lr, lr_teacher alpha_0, batch_syn)
MTT_TABLE = {
    "cifar10-ipc1": (50, 2, 2, 100, 1e-7, 0.01, ALL),
    "cifar10-ipc10": (30, 2, 20, 100, 1e-5, 0.001, ALL),
    "cifar10-ipc50": (30, 2, 40, 1000, 1e-5, 0.001, ALL),
    "cifar100-ipc1": (20, 3, 20, 1000, 1e-5, 0.01, ALL),
    "cifar100-ipc10": (20, 2, 20, 1000, 1e-5, 0.01, ALL),
    "cifar100-ipc50": (80, 2, 40, 1000, 1e-5, 0.01, 125),
    "tinyimagenet-ipc1": (10, 2, 10, 10000, 1e-4, 0.01, ALL),
    "tinyimagenet-ipc10": (20, 2, 40, 10000, 1e-4, 0.01, 200),
    "tinyimagenet-ipc50": (20, 2, 40, 10000, 1e-4, 0.01, 300),
}

#: FTD Table 7, trajectory.md 3.2: (N, M, T+, batch_syn, lr_img, lr_lr, lr_teacher, ema_decay)
FTD_TABLE = {
    "cifar10-ipc1": (50, 2, 2, ALL, 100, 1e-7, 0.01, 0.9999),
    "cifar10-ipc10": (30, 2, 20, ALL, 100, 1e-5, 0.001, 0.9995),
    "cifar10-ipc50": (30, 2, 40, ALL, 1000, 1e-5, 0.01, 0.999),
    "cifar100-ipc1": (40, 3, 20, ALL, 1000, 1e-5, 0.01, 0.9995),
    "cifar100-ipc10": (20, 2, 40, ALL, 1000, 1e-5, 0.01, 0.9995),
    "cifar100-ipc50": (80, 2, 40, 1000, 1000, 1e-5, 0.01, 0.999),
    "tinyimagenet-ipc1": (30, 2, 10, ALL, 10000, 1e-4, 0.01, 0.999),
    "tinyimagenet-ipc10": (20, 2, 40, 500, 10000, 1e-4, 0.01, 0.999),
}

#: DATM configs/*/ConvIN/IPC*.yaml, trajectory.md 4.2: (N, M, window, lr_img, lr_lr, lr_y, batch_syn, init,
#: threshold); window = ("fixed", min, max) or ("grow", min, from, to, over iterations)
DATM_TABLE = {
    "cifar10-ipc1": (80, 2, ("fixed", 0, 4), 100, 1e-7, 5, 10, "correct", 1.1),
    "cifar10-ipc10": (80, 2, ("grow", 0, 10, 20, 1000), 100, 1e-5, 2, 100, "correct", 1.0),
    "cifar10-ipc50": (80, 2, ("grow", 0, 20, 40, 2000), 1000, 1e-5, 2, 500, "correct", 1.0),
    "cifar10-ipc500": (40, 2, ("fixed", 40, 60), 50, 1e-5, 10, 1000, "correct", 1.0),
    "cifar10-ipc1000": (100, 2, ("fixed", 40, 60), 50, 1e-5, 10, 1000, "correct", 1.0),
    "cifar100-ipc1": (40, 3, ("grow", 0, 10, 20, 1000), 1000, 1e-5, 10, 1000, "correct", 1.0),
    "cifar100-ipc10": (80, 2, ("grow", 0, 30, 50, 2000), 1000, 1e-5, 10, 1000, "correct", 1.0),
    "cifar100-ipc50": (80, 2, ("fixed", 20, 70), 1000, 1e-5, 10, 1000, "real", 1.0),
    "cifar100-ipc100": (80, 2, ("fixed", 30, 70), 50, 1e-5, 10, 1000, "correct", 1.0),
    "tinyimagenet-ipc1": (40, 2, ("grow", 0, 15, 20, 2000), 10000, 1e-4, 10, 1000, "correct", 1.0),
    "tinyimagenet-ipc10": (40, 2, ("fixed", 10, 50), 100, 1e-4, 10, 500, "correct", 1.0),
    "tinyimagenet-ipc50": (20, 2, ("fixed", 40, 70), 100, 1e-4, 10, 1000, "correct", 1.0),
}

#: DC main.py / DM main_DM.py argparse defaults (VICO-UoE/DatasetCondensation), the same for every dataset and IPC
DC_CODE = dict(
    model="convnet",
    num_iterations=1000,
    lr_img=0.1,
    lr_net=0.01,
    momentum=0.5,
    batch_real=256,
    batch_train=256,
    distance="layerwise",  # --dis_metric ours
    init="noise",
    augment="none",
)
DSA_CODE = {**DC_CODE, "init": "real", "augment": "dsa"}  # readme: --init real --method DSA, all six DSA groups
#: main_DM.py; augment "dsa": --dsa_strategy color_crop_cutout_flip_scale_rotate
DM_CODE = dict(
    model="convnet", num_iterations=20000, lr_img=1.0, momentum=0.5, batch_real=256, init="real", augment="dsa"
)
#: DC utils.py get_loops: ipc -> (outer_loop, inner_loop)
DC_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}


def _paper_presets(name: str) -> set[str]:
    """The method's presets that cite a paper (digits presets are condense's own CPU tuning)."""
    return {p for p in get_method(name).presets if not p.startswith("digits")}


def _set_size(preset: str) -> int:
    dataset, ipc = preset.rsplit("-ipc", 1)
    return NUM_CLASSES[dataset] * int(ipc)


def _effective_batch(batch_syn: int | None, preset: str) -> int:
    """Images per student step: a batch of at least the set size (or None) is the whole set."""
    n = _set_size(preset)
    return n if batch_syn is None else min(batch_syn, n)


@pytest.mark.parametrize("name", ["mtt", "ftd"])
def test_mtt_and_ftd_presets_equal_the_papers_tables(name):
    table = MTT_TABLE if name == "mtt" else FTD_TABLE
    method = get_method(name)
    assert _paper_presets(name) == set(table)
    for preset, row in table.items():
        cfg = method.resolve_config(preset)
        if name == "mtt":
            n, m, t, lr_img, lr_lr, lr_teacher, batch = row
        else:
            n, m, t, batch, lr_img, lr_lr, lr_teacher, ema = row
            assert cfg.ema_decay == ema, preset
        got = (cfg.syn_steps, cfg.expert_epochs, cfg.min_start_epoch, cfg.max_start_epoch)
        assert got == (n, m, 0, t), preset
        assert (cfg.lr_img, cfg.lr_lr, cfg.lr_student_init) == (lr_img, lr_lr, lr_teacher), preset
        assert _effective_batch(cfg.batch_syn, preset) == _effective_batch(batch, preset), preset
        # MTT distill.py defaults every row keeps: 5000 iterations (FTD run_distill.sh too), real init, DSA
        assert (cfg.num_iterations, cfg.init, cfg.augment) == (5000, "real", "dsa"), preset
        assert (cfg.momentum_img, cfg.momentum_lr) == (0.5, 0.5), preset
        assert cfg.expert_kind == ("flat" if name == "ftd" else "any"), preset


def test_datm_presets_equal_the_configs():
    method = get_method("datm")
    assert _paper_presets("datm") == set(DATM_TABLE)
    for preset, (n, m, window, lr_img, lr_lr, lr_y, batch, init, threshold) in DATM_TABLE.items():
        cfg = method.resolve_config(preset)
        assert (cfg.syn_steps, cfg.expert_epochs) == (n, m), preset
        if window[0] == "fixed":
            _, lo, hi = window
            assert (cfg.sequential_generation, cfg.min_start_epoch, cfg.max_start_epoch) == (False, lo, hi), preset
        else:
            _, lo, grow_from, hi, over = window
            got = (cfg.min_start_epoch, cfg.current_max_start_epoch, cfg.max_start_epoch, cfg.expansion_end_iterations)
            assert cfg.sequential_generation and got == (lo, grow_from, hi, over), preset
        assert (cfg.lr_img, cfg.lr_lr, cfg.lr_y) == (lr_img, lr_lr, lr_y), preset
        assert _effective_batch(cfg.batch_syn, preset) == _effective_batch(batch, preset), preset
        assert (cfg.init, cfg.threshold) == (init, threshold), preset
        # every DATM config: 10000 iterations, lr_teacher 0.01, Momentum_y 0.9, soft labels, flat (GSAM) experts
        assert (cfg.num_iterations, cfg.lr_student_init, cfg.momentum_y) == (10000, 0.01, 0.9), preset
        assert cfg.soft_labels and cfg.expert_kind == "flat", preset


@pytest.mark.parametrize("name, code", [("dc", DC_CODE), ("dsa", DSA_CODE), ("dm", DM_CODE)])
def test_dc_dsa_dm_defaults_and_presets_equal_the_authors_code(name, code):
    method = get_method(name)
    for preset in [None, *sorted(_paper_presets(name))]:
        cfg = method.resolve_config(preset)
        # the papers use the code's settings for every dataset; on MNIST only the flip of DSA is dropped
        want = dict(code)
        if preset is not None and preset.startswith("mnist") and want["augment"] == "dsa":
            want["augment"] = "dsa_noflip"
        assert {k: getattr(cfg, k) for k in want} == want, preset
    assert _paper_presets(name) >= {"cifar10-ipc1", "cifar10-ipc10", "cifar10-ipc50"}
    if name != "dm":
        from condense.methods.dc import get_loops

        assert {ipc: get_loops(ipc) for ipc in DC_LOOPS} == DC_LOOPS
