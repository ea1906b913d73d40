"""Fixtures of the method tests: small expert buffers on digits, recorded once per session.

The digits presets of MTT/FTD/DATM (``digits-ipc1``, ``digits-ipc10``) assume a buffer like ``DIGITS_BUFFER``: a
depth-2 ConvNet of width 32 (on 8x8 inputs the depth-3 ConvNet instance-normalizes a 2x2 map in its last block, whose
double backward makes the meta-gradient spike by 1e3-1e5 from one iteration to the next; depth 2 normalizes 4x4 maps,
as the depth-3 net does on 32x32 CIFAR), SGD lr 0.05 with batch 64 (the MTT defaults, lr 0.01 and batch 256, leave a
digits expert at chance for its first five epochs), DSA without flips, 6 epochs (T+ 3 + M 2 = 5 needed).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

#: buffer settings the digits presets were tuned with (record_experts arguments)
DIGITS_BUFFER = dict(model="convnetd2", model_kwargs={"width": 32}, n_experts=2, epochs=6)
DIGITS_EXPERT = dict(lr_teacher=0.05, batch_size=64, augment="dsa_noflip")


@pytest.fixture
def one_thread():
    """Two cores shared with other jobs: oversubscribed intra-op threads make small convs many times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _record(digits, out: Path, kind: str) -> Path:
    from condense.expert_trajectories import get_expert_config, record_experts

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = get_expert_config(kind, **DIGITS_EXPERT)
        b = DIGITS_BUFFER
        record_experts(
            digits,
            b["model"],
            b["n_experts"],
            b["epochs"],
            out,
            config=cfg,
            model_kwargs=b["model_kwargs"],
            seed=0,
            quiet=True,
        )
    finally:
        torch.set_num_threads(n)
    return out


@pytest.fixture(scope="session")
def digits_buffer(digits, tmp_path_factory) -> Path:
    """A vanilla (MTT) buffer on digits: 2 experts x 6 epochs of a width-32 ConvNetD2 (a few seconds)."""
    return _record(digits, tmp_path_factory.mktemp("experts") / "digits_vanilla", "vanilla")


@pytest.fixture(scope="session")
def digits_flat_buffer(digits, tmp_path_factory) -> Path:
    """A flat (GSAM, FTD/DATM) buffer on digits with the same settings."""
    return _record(digits, tmp_path_factory.mktemp("experts") / "digits_flat", "flat")


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
