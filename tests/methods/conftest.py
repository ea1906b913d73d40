"""Fixtures of the method tests: small expert buffers on digits, recorded once per session.

The digits presets of MTT/FTD/DATM/AST (``digits-ipc1``, ``digits-ipc10``) were tuned on the buffers of
``condense.demo.DEMO_BUFFERS`` (the ones ``condense run`` records; the table documents the settings), and the
fixtures below record exactly those: a vanilla buffer (MTT's), a flat one (FTD's and DATM's) and a smooth one (AST's).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from condense.demo import DEMO_BUFFERS


def _record(digits, out: Path, method: str) -> Path:
    """Record ``DEMO_BUFFERS[method]`` on digits into ``out`` (seed 0)."""
    from condense.expert_trajectories import get_expert_config, record_experts

    spec = DEMO_BUFFERS[method]
    record_experts(
        digits,
        spec["model"],
        spec["experts"],
        spec["epochs"],
        out,
        config=get_expert_config(spec["kind"], **spec["config"]),
        model_kwargs=spec["model_kwargs"],
        seed=0,
        quiet=True,
    )
    return out


@pytest.fixture(scope="session")
def digits_buffer(digits, tmp_path_factory) -> Path:
    """MTT's vanilla demo buffer on digits: 2 experts x 6 epochs of a width-32 ConvNetD2 (a few seconds)."""
    return _record(digits, tmp_path_factory.mktemp("experts") / "digits_vanilla", "mtt")


@pytest.fixture(scope="session")
def digits_flat_buffer(digits, tmp_path_factory) -> Path:
    """FTD's (and DATM's) flat (GSAM) demo buffer on digits, same settings."""
    return _record(digits, tmp_path_factory.mktemp("experts") / "digits_flat", "ftd")


@pytest.fixture(scope="session")
def digits_smooth_buffer(digits, tmp_path_factory) -> Path:
    """AST's smooth (momentum, weight decay, clipping loss, gradient penalty) demo buffer on digits."""
    return _record(digits, tmp_path_factory.mktemp("experts") / "digits_smooth", "ast")


#: shared evaluation protocol of the quality tests (same for the method and the random-real baseline)
QUALITY_EVAL = dict(models=["convnet"], seeds=2, epochs=200, seed=0)


def _beats_random(name: str, data, buffer, margin: float = 0.10) -> tuple[float, float]:
    """Distill ``name`` at IPC 1 with its digits preset; assert it beats random real by ``margin`` (fraction)."""
    from condense.eval import evaluate
    from condense.methods import RunContext, distill

    syn = distill(name, data, ipc=1, run=RunContext(buffer=buffer, quiet=True))
    assert syn.lr is not None and syn.lr > 0
    acc = evaluate(syn, data, **QUALITY_EVAL)["accuracy"]["convnet"]["mean"]
    rnd = evaluate(distill("random_real", data, ipc=1), data, **QUALITY_EVAL)["accuracy"]["convnet"]["mean"]
    assert acc >= rnd + margin, f"{name} {acc:.3f} vs random real {rnd:.3f}"
    return acc, rnd


@pytest.fixture
def beats_random():
    """The quality check of the trajectory matchers: ``beats_random(name, data, buffer)``."""
    return _beats_random
