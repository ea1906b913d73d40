"""FTD on digits: quality vs random real, the EMA images are the artifact, flat experts are required."""

from __future__ import annotations

import pytest
import torch

from condense.errors import ConfigError, MismatchError
from condense.methods import RunContext, distill, get_method


def test_ftd_beats_random_real_ipc1(digits, digits_flat_buffer, beats_random):
    beats_random("ftd", digits, digits_flat_buffer)


def test_ema_images_are_saved(digits, digits_flat_buffer):
    m = get_method("ftd")
    cfg = m.resolve_config("digits-ipc1", {"ema_decay": 0.5})
    gen = torch.Generator().manual_seed(0)
    st = m.init_state(digits, cfg, 1, gen, RunContext(buffer=digits_flat_buffer))
    x0 = st.tensors["images"].clone()
    m.step(st, 0, gen)
    x1 = st.tensors["images"]
    torch.testing.assert_close(st.tensors["ema_images"], 0.5 * x0 + 0.5 * x1)
    torch.testing.assert_close(m.to_synthetic(st).images, st.tensors["ema_images"])


def test_ftd_refuses_vanilla_experts(digits, digits_buffer):
    with pytest.raises(MismatchError, match="flat"):
        distill("ftd", digits, ipc=1, run=RunContext(buffer=digits_buffer))


def test_ftd_validation():
    """Refused configs. The preset values are pinned against FTD's Table 7 in
    ``tests/methods/test_contract.py::test_mtt_and_ftd_presets_equal_the_papers_tables``."""
    m = get_method("ftd")
    with pytest.raises(ConfigError, match="ema_decay"):
        m.resolve_config(None, {"ema_decay": 1.0})
