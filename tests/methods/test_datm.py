"""DATM on digits: quality vs random real, soft-label init and learning, the growing window, the loss threshold."""

from __future__ import annotations

import pytest
import torch

from condense.errors import ConfigError
from condense.methods import RunContext, get_method


def test_datm_beats_random_real_ipc1(digits, digits_flat_buffer, beats_random):
    beats_random("datm", digits, digits_flat_buffer)


def _state(digits, buffer, overrides=None, ipc=1):
    m = get_method("datm")
    cfg = m.resolve_config("digits-ipc1", overrides)
    gen = torch.Generator().manual_seed(0)
    return m, cfg, gen, m.init_state(digits, cfg, ipc, gen, RunContext(buffer=buffer))


def test_soft_labels_from_correct_experts(digits, digits_flat_buffer):
    m, cfg, gen, st = _state(digits, digits_flat_buffer, ipc=2)
    labels = st.tensors["labels"]
    assert labels.shape == (20, 10) and labels.is_floating_point()
    # the images were chosen because an expert classifies them correctly; their averaged logits agree
    assert labels.argmax(1).tolist() == [c for c in range(10) for _ in range(2)]
    y0 = labels.clone()
    m.step(st, 0, gen)
    assert not torch.equal(y0, st.tensors["labels"])  # learnable
    syn = m.to_synthetic(st)
    assert syn.soft_labels and syn.meta["temperature"] == 1.0 and syn.lr > 0


def test_start_window_grows():
    m = get_method("datm")
    cfg = m.resolve_config(
        None, {"current_max_start_epoch": 10, "max_start_epoch": 20, "expansion_end_iterations": 100}
    )
    assert m.start_window(cfg, 0) == (0, 10)
    assert m.start_window(cfg, 50) == (0, 15)
    assert m.start_window(cfg, 100) == (0, 20)
    assert m.start_window(cfg, 10_000) == (0, 20)
    fixed = m.resolve_config("cifar10-ipc500")
    assert m.start_window(fixed, 0) == (40, 60)


def test_threshold_skips_the_update(digits, digits_flat_buffer):
    m, cfg, gen, st = _state(digits, digits_flat_buffer, {"threshold": 1e-9})
    before = {k: v.clone() for k, v in st.tensors.items()}
    stats = m.step(st, 0, gen)
    assert stats["skipped"] == 1.0
    for k, v in before.items():
        assert torch.equal(v, st.tensors[k]), k


def test_datm_validation():
    """Refused configs. The preset values are pinned against DATM's configs in
    ``tests/methods/test_contract.py::test_datm_presets_equal_the_configs``."""
    m = get_method("datm")
    with pytest.raises(ConfigError, match="current_max_start_epoch"):
        m.resolve_config(None, {"current_max_start_epoch": 30})
