"""No silent collapse: the runner's rollback-and-retry on a collapse, MTT's collapse signals, the lr trajectory record.

A toy matcher drives the runner exactly (its "learned lr" sinks to the floor whenever the image lr is above a
threshold), so each test knows when a collapse must be seen, where the run must roll back to and what it must save.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from condense.errors import CollapseError, MismatchError
from condense.methods import RunContext, distill
from condense.methods._runner import COLLAPSE_WINDOW, LOG_NAME, MAX_COLLAPSE_RECOVERIES, lr_summary, run_matcher
from condense.methods.base import Matcher, MatchState
from condense.methods.mtt import COLLAPSE_ITERATIONS, LOSS_JUMP, MTT


@dataclass(frozen=True, kw_only=True)
class _ToyConfig:
    num_iterations: int = 20
    lr_img: float = 100.0
    lr_min: float = 1e-6
    bad_from: int = 7  # the lr starts sinking at this iteration while lr_img > safe_lr_img
    safe_lr_img: float = 5.0


class _Toy(Matcher):
    """Images that never change; an 'lr' that halves each iteration from ``bad_from`` on while lr_img is unsafe,
    and reaches the floor ``lr_min`` after three such iterations (so MTT's floor rule fires five iterations later)."""

    name = "toy_collapse"
    Config = _ToyConfig

    def init_state(self, data: Any, cfg: _ToyConfig, ipc: int, gen: torch.Generator, run: RunContext) -> MatchState:
        st = MatchState()
        st.tensors["images"] = data.x_train[:10].clone()
        st.tensors["lr"] = torch.tensor(0.01)
        st.scalars["lr_img"] = float(cfg.lr_img)
        st.runtime["cfg"] = cfg
        return st

    def restore_runtime(self, state: MatchState, data: Any, cfg: Any, run: RunContext) -> None:
        state.runtime["cfg"] = cfg

    def step(self, state: MatchState, it: int, gen: torch.Generator) -> dict[str, float]:
        cfg = state.runtime["cfg"]
        lr = state.tensors["lr"]
        if it >= cfg.bad_from and state.scalars["lr_img"] > cfg.safe_lr_img:
            lr.copy_(torch.clamp(lr * 0.01, min=cfg.lr_min))
        return {"loss": 0.5, "distance": 0.5, "lr": float(lr), "grad_norm": 1.0}

    collapse = MTT.collapse  # the rules under test, on this toy's stats

    def to_synthetic(self, state: MatchState) -> Any:
        from condense.synthetic import SyntheticSet

        return SyntheticSet(
            images=state.tensors["images"].clone(),
            labels=torch.arange(10),
            classes=[str(i) for i in range(10)],
            method=self.name,
            dataset="digits",
            ipc=1,
            lr=float(state.tensors["lr"]),
        )


def _events(work) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (work / LOG_NAME).read_text().splitlines()]


def test_a_collapse_rolls_back_to_a_healthy_state_and_recovers_with_a_lower_image_lr(digits, tmp_path):
    # lr_img 100 -> 10 (still unsafe) -> 1 (safe): two collapses, then the run completes
    cfg = _ToyConfig(num_iterations=25, bad_from=12)
    syn = run_matcher(
        _Toy(), digits, cfg, 1, torch.Generator().manual_seed(0), RunContext(out_dir=tmp_path, quiet=True)
    )
    events = [e for e in _events(tmp_path) if e.get("event") == "collapse"]
    assert len(events) == 2 and syn.meta["collapses"] == 2
    # the lr hits the floor at iteration 13 and the collapse shows COLLAPSE_ITERATIONS - 1 iterations later; the
    # healthy state is the snapshot taken one full window before the last window boundary (10 for a detection at 17)
    detected = 13 + COLLAPSE_ITERATIONS - 1
    assert (
        events[0]["it"] == detected
        and events[0]["rolled_back_to"] == (detected // COLLAPSE_WINDOW - 1) * COLLAPSE_WINDOW
    )
    assert "floor lr_min=1e-06" in events[0]["reason"]
    assert syn.lr == pytest.approx(0.01)  # the recovered run never sank again
    traj = syn.meta["lr_trajectory"]
    assert traj["initial"] == pytest.approx(0.01) and traj["floor_iterations"] == 0 and len(traj["points"]) == 25


def test_a_collapse_that_does_not_recover_stops_with_a_clear_error_and_saves_nothing(digits, tmp_path):
    cfg = _ToyConfig(safe_lr_img=1e-9)  # no lr_img within three divisions by 10 is safe
    with pytest.raises(CollapseError) as info:
        run_matcher(_Toy(), digits, cfg, 1, torch.Generator().manual_seed(0), RunContext(out_dir=tmp_path, quiet=True))
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("toy_collapse collapsed at iteration ")
    assert f"rolled back {MAX_COLLAPSE_RECOVERIES} times" in msg and "Nothing was saved" in msg
    collapses = [e for e in _events(tmp_path) if e.get("event") == "collapse"]
    assert len(collapses) == MAX_COLLAPSE_RECOVERIES + 1
    assert not list(tmp_path.glob("*.safetensors"))


def _stats(n: int, **kw: float) -> list[dict[str, float]]:
    base = {"loss": 0.8, "distance": 0.8, "lr": 0.01, "grad_norm": 1.0}
    return [{**base, **kw} for _ in range(n)]


class _State:
    def __init__(self) -> None:
        self.runtime = {"cfg": _ToyConfig()}
        self.tensors = {"images": torch.ones(10, 1, 8, 8)}


def test_mtt_collapse_rules():
    m, st = MTT(), _State()
    assert m.collapse(st, _stats(10)) is None
    # the floor rule needs COLLAPSE_ITERATIONS iterations in a row
    floor = _stats(COLLAPSE_ITERATIONS, lr=1e-6)
    assert "floor" in (m.collapse(st, floor) or "")
    assert m.collapse(st, _stats(1) + floor[1:]) is None
    # a loss jump over LOSS_JUMP x the recent median
    jump = _stats(4) + _stats(1, loss=0.8 * LOSS_JUMP * 1.1)
    assert "jumped" in (m.collapse(st, jump) or "")
    assert m.collapse(st, _stats(4) + _stats(1, loss=0.8 * LOSS_JUMP * 0.9)) is None
    # distance stuck at 1 with vanishing gradients (the state's images have norm 8: threshold 8e-7)
    stuck = _stats(COLLAPSE_ITERATIONS, distance=0.9999, loss=0.9999, grad_norm=1e-9)
    assert "does not move" in (m.collapse(st, stuck) or "")
    assert m.collapse(st, _stats(COLLAPSE_ITERATIONS, distance=0.9999, loss=0.9999, grad_norm=1e-3)) is None


def test_lr_summary_points_and_floor():
    trace = [0.01] * 80 + [1e-6] * 20
    s = lr_summary(trace, 1e-6)
    assert s["initial"] == 0.01 and s["final"] == 1e-6 and s["min"] == 1e-6 and s["floor_iterations"] == 20
    assert s["points"][0] == [0, 0.01] and s["points"][-1] == [99, 1e-6] and len(s["points"]) == 50


# ----------------------------------------------------------------------------------------------------------------------
# The user's path: buffers of the default expert settings, a depth-3 ConvNet on 8x8 digits, a forced divergence
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_buffer(digits, tmp_path_factory):
    """What `condense experts --dataset digits --experts 2 --epochs 5` records: the default model for 8x8 inputs
    (ConvNetD2, width 128) with the default expert settings (SGD lr 0.01, batch 256)."""
    from condense.expert_trajectories import record_experts
    from condense.models import default_model_for

    out = tmp_path_factory.mktemp("experts") / "default"
    record_experts(digits, default_model_for(digits), 2, 5, out, seed=0, quiet=True)
    return out


def test_mtt_on_a_default_buffer_takes_the_buffer_lr_and_beats_random(digits, default_buffer, beats_random):
    acc, rnd = beats_random("mtt", digits, default_buffer)
    assert acc >= rnd + 0.10


def test_the_digits_preset_refuses_a_depth3_buffer_before_any_step(digits, tmp_path):
    from condense.expert_trajectories import record_experts

    buf = record_experts(digits, "convnet", 1, 4, tmp_path / "d3", seed=0, quiet=True).path
    with pytest.raises(MismatchError, match=r"model: needs convnetd2, buffer has convnet.*check_buffer=false"):
        distill("mtt", digits, ipc=1, run=RunContext(buffer=buf, quiet=True))


def test_a_forced_divergence_exits_non_zero_and_leaves_no_artifact(digits_buffer, tmp_path, capsys):
    from condense.cli import main

    out = tmp_path / "mtt.safetensors"
    argv = ["distill", "--method", "mtt", "--dataset", "digits", "--ipc", "1", "--buffer", str(digits_buffer)]
    argv += ["--out", str(out), "--quiet", "--set", "lr_img=1e9", "--checkpoint-every", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("condense: error: mtt")
    assert any(w in err[0] for w in ("collapsed", "diverged", "reach max |x|"))
    assert not out.exists() and not out.with_suffix(".json").exists()
