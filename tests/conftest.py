"""Shared pytest fixtures: the real_data and gpu markers (skipped only when the data or CUDA is absent), a cached
digits dataset."""

from __future__ import annotations

import os
from pathlib import Path

# One intra-op thread per process: the suite's tensors are tiny, and on a 2-core CI machine two OpenMP threads
# per process (plus the subprocesses of the kill/torchrun tests) oversubscribe the cores and run 10x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # the one place: no test module sets threads again

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_gpu = pytest.mark.skip(reason="needs CUDA, none available")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
        if "real_data" in item.keywords and not SHARED_DATA.is_dir():
            item.add_marker(pytest.mark.skip(reason=f"real data folder '{SHARED_DATA}' is absent"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data (tests using it carry the real_data marker)."""
    return SHARED_DATA


@pytest.fixture(scope="session")
def digits():
    """The embedded digits dataset, loaded once per session."""
    from condense.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def digits_teacher(digits, tmp_path_factory) -> Path:
    """The demo teacher of the decoupled methods on digits (``condense.demo.DEMO_TEACHER``), trained once."""
    from condense.demo import DEMO_TEACHER
    from condense.teachers import train_teacher

    out = tmp_path_factory.mktemp("teachers") / "digits_convnet_bn"
    spec = DEMO_TEACHER
    train_teacher(
        digits, spec["model"], spec["epochs"], out, recipe=spec["recipe"], model_kwargs=spec["model_kwargs"], quiet=True
    )
    return out


@pytest.fixture(scope="session")
def digits_encoder(digits, tmp_path_factory) -> Path:
    """A small Barlow Twins target encoder on digits (KRR-ST's ``teacher_kind = "encoder"``), trained once."""
    from condense.teachers import train_encoder

    out = tmp_path_factory.mktemp("encoders") / "digits_bt"
    train_encoder(digits, "convnet_bn", 2, out, model_kwargs={"width": 16, "depth": 2})
    return out
