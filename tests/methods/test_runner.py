"""The shared matcher runner: checkpoint/resume (also after a real SIGKILL), NaN rollback, monitoring, logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from condense.errors import DivergenceError, IntegrityError, MismatchError
from condense.io import seal
from condense.methods import RunContext, distill
from condense.methods._checkpoint import CHECKPOINT_JSON, CHECKPOINT_TENSORS, CHECKPOINT_VERSION, load_checkpoint
from condense.methods._runner import LOG_NAME, MAX_CONSECUTIVE_DIVERGENCES, run_matcher
from condense.methods.base import Matcher, MatchState
from condense.methods.dm import DM
from condense.synthetic import SyntheticSet

REPO = Path(__file__).resolve().parents[2]
#: a DM config that runs in milliseconds per iteration on digits
TINY_DM = {"num_iterations": 6, "batch_real": 8}


# ----------------------------------------------------------------------------------------------------------------------
# A toy matcher: a random walk on the pixels, with switches that inject NaN
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ToyConfig:
    num_iterations: int = 6  # loop length
    lr_img: float = 0.5  # step size of the walk
    nan_image_at: int = -1  # iteration whose first attempt writes NaN into the images
    nan_loss_at: int = -1  # iteration whose first attempt returns a NaN loss
    nan_from: int = -1  # every attempt from this iteration on is NaN (persistent divergence)


class Toy(Matcher):
    name = "toy"
    Config = ToyConfig

    def init_state(self, data, cfg, ipc, gen, run):
        images = torch.randn(data.num_classes * ipc, data.channels, *data.image_size, generator=gen)
        labels = torch.arange(data.num_classes).repeat_interleave(ipc)
        state = MatchState(tensors={"images": images, "labels": labels}, scalars={"lr_img": cfg.lr_img, "ipc": ipc})
        self.restore_runtime(state, data, cfg, run)
        return state

    def restore_runtime(self, state, data, cfg, run):
        state.runtime.update(data=data, cfg=cfg, fired=set())

    def step(self, state, it, gen):
        cfg, fired = state.runtime["cfg"], state.runtime["fired"]
        x = state.tensors["images"]
        x.add_(torch.randn(x.shape, generator=gen), alpha=float(state.scalars["lr_img"]))
        loss = float(x.pow(2).mean())
        if it == cfg.nan_image_at and "image" not in fired:
            fired.add("image")
            x[0, 0, 0, 0] = float("nan")
        if it == cfg.nan_loss_at and "loss" not in fired:
            fired.add("loss")
            loss = float("nan")
        if 0 <= cfg.nan_from <= it:
            x.fill_(float("inf"))
        return {"loss": loss}

    def to_synthetic(self, state):
        rt = state.runtime
        return SyntheticSet.from_tensors(
            state.tensors["images"],
            state.tensors["labels"],
            rt["data"],
            self.name,
            int(state.scalars["ipc"]),
            rt["cfg"],
            meta={"lr_img": state.scalars["lr_img"]},
        )


def _toy(digits, cfg=None, run=None, seed=0):
    return run_matcher(Toy(), digits, cfg or ToyConfig(), 1, torch.Generator().manual_seed(seed), run or RunContext())


def _events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]


# ----------------------------------------------------------------------------------------------------------------------
# NaN rollback
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["nan_image_at", "nan_loss_at"])
def test_non_finite_step_is_rolled_back_and_lr_halved(digits, tmp_path, field):
    cfg = ToyConfig(**{field: 2})
    syn = _toy(digits, cfg, RunContext(out_dir=tmp_path, quiet=True))
    assert syn.meta["divergences"] == 1 and syn.meta["iterations"] == 6
    assert syn.meta["lr_img"] == pytest.approx(0.25)
    assert bool(torch.isfinite(syn.images).all())
    div = [e for e in _events(tmp_path) if e.get("event") == "divergence"]
    assert len(div) == 1 and div[0]["it"] == 2 and div[0]["scalars"]["lr_img"] == pytest.approx(0.25)
    iters = [e["it"] for e in _events(tmp_path) if "stats" in e]
    assert iters == list(range(6))  # the failed attempt is not logged as an iteration


def test_rollback_restores_the_exact_state(digits):
    """A rolled-back image tensor equals the pre-step tensor; the retry draws new numbers from the generator."""
    m, cfg = Toy(), ToyConfig(nan_image_at=0)
    gen = torch.Generator().manual_seed(0)
    st = m.init_state(digits, cfg, 1, gen, RunContext())
    x0 = st.tensors["images"].clone()
    ref_gen = torch.Generator().manual_seed(0)
    torch.randn(x0.shape, generator=ref_gen)  # init
    first = torch.randn(x0.shape, generator=ref_gen)
    second = torch.randn(x0.shape, generator=ref_gen)
    syn = run_matcher(
        m,
        digits,
        ToyConfig(nan_image_at=0, num_iterations=1),
        1,
        torch.Generator().manual_seed(0),
        RunContext(quiet=True),
    )
    assert not torch.equal(first, second)
    torch.testing.assert_close(syn.images, x0 + 0.25 * second, rtol=0, atol=0)


def test_persistent_divergence_raises_and_never_saves_non_finite(digits, tmp_path):
    run = RunContext(out_dir=tmp_path, checkpoint_every=1, quiet=True)
    with pytest.raises(DivergenceError, match="consecutive non-finite"):
        _toy(digits, ToyConfig(nan_from=3), run)
    record, tensors, _ = load_checkpoint(tmp_path)
    assert record["iteration"] == 3
    assert all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())
    div = [e for e in _events(tmp_path) if e.get("event") == "divergence"]
    assert len(div) == MAX_CONSECUTIVE_DIVERGENCES
    assert div[-1]["scalars"]["lr_img"] == pytest.approx(0.5 * 0.5**MAX_CONSECUTIVE_DIVERGENCES)


def test_dm_recovers_from_nan_images(digits, monkeypatch):
    real_step = DM.step
    calls = {"n": 0}

    def poisoned(self, state, it, gen):
        stats = real_step(self, state, it, gen)
        calls["n"] += 1
        if calls["n"] == 2:
            state.tensors["images"][3] = float("nan")
        return stats

    monkeypatch.setattr(DM, "step", poisoned)
    syn = distill("dm", digits, ipc=1, overrides=TINY_DM, run=RunContext(quiet=True))
    assert syn.meta["divergences"] == 1 and bool(torch.isfinite(syn.images).all())


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoint and resume
# ----------------------------------------------------------------------------------------------------------------------


class _Interrupt(Exception):
    pass


def test_checkpoint_then_resume_equals_uninterrupted_dm(digits, tmp_path, monkeypatch):
    ref = distill("dm", digits, ipc=2, overrides=TINY_DM, generator=torch.Generator().manual_seed(3))

    real_step = DM.step

    def interrupted(self, state, it, gen):
        if it == 4:
            raise _Interrupt
        return real_step(self, state, it, gen)

    run = RunContext(out_dir=tmp_path, checkpoint_every=3, quiet=True)
    monkeypatch.setattr(DM, "step", interrupted)
    with pytest.raises(_Interrupt):
        distill("dm", digits, ipc=2, overrides=TINY_DM, generator=torch.Generator().manual_seed(3), run=run)
    monkeypatch.setattr(DM, "step", real_step)
    assert json.loads((tmp_path / CHECKPOINT_JSON).read_text())["iteration"] == 3
    # the same seed (another one is refused); the generator's advanced state comes from the checkpoint
    syn = distill("dm", digits, ipc=2, overrides=TINY_DM, generator=torch.Generator().manual_seed(3), run=run)
    assert syn.meta["resumed_from"] == 3 and syn.meta["iterations"] == 6
    assert torch.equal(syn.images, ref.images) and torch.equal(syn.labels, ref.labels)
    assert [e["from_iteration"] for e in _events(tmp_path) if e.get("event") == "resume"] == [3]


def test_resume_of_a_finished_run_returns_it(digits, tmp_path):
    run = RunContext(out_dir=tmp_path, checkpoint_every=4, quiet=True)
    a = _toy(digits, run=run)
    b = _toy(digits, run=run, seed=0)
    assert b.meta["resumed_from"] == 6 and torch.equal(a.images, b.images)


def test_resume_refuses_another_config(digits, tmp_path):
    run = RunContext(out_dir=tmp_path, checkpoint_every=2, quiet=True)
    _toy(digits, run=run)
    with pytest.raises(MismatchError, match=r"config\.lr_img: checkpoint 0\.5, this run 0\.1"):
        _toy(digits, ToyConfig(lr_img=0.1), run)
    with pytest.raises(MismatchError, match="ipc"):
        run_matcher(Toy(), digits, ToyConfig(), 2, torch.Generator(), run)
    fresh = _toy(digits, ToyConfig(lr_img=0.1), RunContext(out_dir=tmp_path, resume=False, quiet=True))
    assert fresh.meta["resumed_from"] is None


def test_corrupt_checkpoint_is_refused(digits, tmp_path):
    run = RunContext(out_dir=tmp_path, checkpoint_every=2, quiet=True)
    _toy(digits, run=run)
    path = tmp_path / CHECKPOINT_TENSORS
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0xFF  # a byte of tensor data
    path.write_bytes(bytes(blob))
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        _toy(digits, run=run)


def test_checkpoint_carries_the_shared_stamp_and_refuses_other_versions(digits, tmp_path):
    """``format``/``format_version``/``provenance`` as every condense file; a checkpoint of another version is refused
    with the file named, and so is a file that is not a safetensors checkpoint at all."""
    from condense.io import save_tensors

    run = RunContext(out_dir=tmp_path, checkpoint_every=2, quiet=True)
    _toy(digits, run=run)
    record, _, _ = load_checkpoint(tmp_path)
    assert record["format"] == "condense.checkpoint" and record["format_version"] == CHECKPOINT_VERSION == 3
    assert {"condense", "torch", "created"} <= set(record["provenance"])
    sidecar = json.loads((tmp_path / CHECKPOINT_JSON).read_text())
    assert sidecar["format_version"] == CHECKPOINT_VERSION and sidecar["iteration"] == 6
    # rewrite the tensor file as a version-1 checkpoint (its record said "version", not "format_version")
    from safetensors.torch import load_file

    old = {k: v for k, v in record.items() if k not in ("format_version", "provenance")}
    old["version"] = 1
    save_tensors(
        tmp_path / CHECKPOINT_TENSORS,
        load_file(tmp_path / CHECKPOINT_TENSORS),
        metadata={"format": "condense.checkpoint", "record": json.dumps(old)},
    )
    with pytest.raises(IntegrityError, match=r"checkpoint\.safetensors' has condense\.checkpoint format version None"):
        _toy(digits, run=run)
    (tmp_path / CHECKPOINT_TENSORS).write_bytes(b"\x01\x00")
    with pytest.raises(IntegrityError, match="checkpoint.safetensors"):
        _toy(digits, run=run)


def test_kill_between_tensor_and_json_write_still_resumes(digits, tmp_path):
    """The tensor file embeds its own record, so a stale checkpoint.json (kill mid-checkpoint) is survivable."""
    run = RunContext(out_dir=tmp_path, checkpoint_every=2, quiet=True)
    _toy(digits, ToyConfig(num_iterations=2), RunContext(out_dir=tmp_path / "a", checkpoint_every=2, quiet=True))
    ref = _toy(digits, run=run)
    # put back the sidecar of an older checkpoint of the same run next to the newest tensor file
    old = json.loads((tmp_path / CHECKPOINT_JSON).read_text())
    old.update(iteration=2, sha256="0" * 64)
    (tmp_path / CHECKPOINT_JSON).write_text(json.dumps(seal(old)))  # condense wrote the older sidecar: it is sealed
    syn = _toy(digits, run=run)
    assert syn.meta["resumed_from"] == 6 and torch.equal(syn.images, ref.images)


def test_nothing_written_without_out_dir(digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _toy(digits, run=RunContext(checkpoint_every=1, quiet=True))
    assert list(tmp_path.iterdir()) == []


def test_log_and_monitoring_cadence(digits, tmp_path, monkeypatch):
    import condense.eval

    seen = []

    def fake_evaluate(syn, data, *, models, seeds, epochs, device, quiet, seed):
        assert isinstance(syn, SyntheticSet) and quiet
        seen.append((tuple(models), seeds, epochs))
        return {"accuracy": {m: {"mean": 0.5, "std": 0.0, "runs": [0.5]} for m in models}}

    monkeypatch.setattr(condense.eval, "evaluate", fake_evaluate)
    run = RunContext(out_dir=tmp_path, eval_every=2, eval_epochs=7, eval_seeds=2, quiet=True)
    syn = _toy(digits, run=run)
    assert seen == [(("convnet",), 2, 7)] * 3  # Toy has no model field: convnet
    ev = _events(tmp_path)
    assert [e["it"] for e in ev if e.get("event") == "eval"] == [2, 4, 6]
    assert ev[0]["event"] == "start" and ev[-1]["event"] == "end"
    assert all(set(e) == {"it", "stats", "seconds"} for e in ev if "stats" in e)
    assert syn.meta["iterations"] == 6 and syn.meta["seconds"] > 0


# ----------------------------------------------------------------------------------------------------------------------
# A real kill
# ----------------------------------------------------------------------------------------------------------------------

_CHILD = """
import time, torch
torch.set_num_threads(1)
from condense.data import load_dataset
from condense.methods import RunContext, distill
from condense.methods.dm import DM

real_step = DM.step

def slow_step(self, state, it, gen):  # slow enough that the parent kills it mid-run
    time.sleep(0.05)
    return real_step(self, state, it, gen)

DM.step = slow_step
run = RunContext(out_dir={out!r}, checkpoint_every=5, quiet=True)
distill("dm", load_dataset("digits"), ipc=1, overrides={over!r}, generator=torch.Generator().manual_seed(0), run=run)
"""


def test_resume_after_sigkill(digits, tmp_path):
    over = {"num_iterations": 60, "batch_real": 8}
    code = textwrap.dedent(_CHILD.format(out=str(tmp_path), over=over))
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while not (tmp_path / CHECKPOINT_JSON).exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    killed_at = json.loads((tmp_path / CHECKPOINT_JSON).read_text())["iteration"]
    assert 5 <= killed_at < 60

    run = RunContext(out_dir=tmp_path, checkpoint_every=5, quiet=True)
    syn = distill("dm", digits, ipc=1, overrides=over, generator=torch.Generator().manual_seed(0), run=run)
    assert syn.meta["iterations"] == 60 and syn.meta["resumed_from"] >= killed_at
    assert syn.images.shape == (10, 1, 8, 8) and bool(torch.isfinite(syn.images).all())
    path = syn.save(tmp_path / "dm.safetensors")
    assert torch.equal(SyntheticSet.load(path).images, syn.images)
    ref = distill("dm", digits, ipc=1, overrides=over, generator=torch.Generator().manual_seed(0))
    assert torch.equal(syn.images, ref.images)  # killed + resumed == uninterrupted


def test_a_torn_log_line_does_not_swallow_the_resume_event(digits, tmp_path):
    run = RunContext(out_dir=tmp_path, checkpoint_every=2, quiet=True)
    _toy(digits, run=run)
    with open(tmp_path / LOG_NAME, "a") as f:
        f.write('{"it": 6, "sta')  # killed mid-write
    _toy(digits, run=run)
    lines = (tmp_path / LOG_NAME).read_text().splitlines()
    torn = lines.index('{"it": 6, "sta')
    after = [json.loads(line) for line in lines[torn + 1 :]]
    assert after[0] == {"event": "resume", "from_iteration": 6} and after[-1]["event"] == "end"


# ----------------------------------------------------------------------------------------------------------------------
# The sealed checkpoint records (format version 3)
# ----------------------------------------------------------------------------------------------------------------------


def _checkpointed(digits, tmp_path) -> RunContext:
    run = RunContext(out_dir=tmp_path, checkpoint_every=2, quiet=True)
    _toy(digits, run=run)
    return run


def _rewrite_embedded(tmp_path: Path, record: dict) -> None:
    """Rewrite the tensor file with another embedded record (tensor bytes kept), as a hand edit would."""
    from safetensors.torch import load_file

    from condense.io import save_tensors

    path = tmp_path / CHECKPOINT_TENSORS
    save_tensors(path, load_file(path), metadata={"format": "condense.checkpoint", "record": json.dumps(record)})


@pytest.mark.parametrize(
    "field, value",
    [("config", {"num_iterations": 6, "lr_img": 5.0}), ("iteration", 4), ("ipc", 2), ("scalars", {"lr_img": 9.0})],
)
def test_edited_checkpoint_json_is_refused_naming_the_field(digits, tmp_path, field, value):
    run = _checkpointed(digits, tmp_path)
    side = json.loads((tmp_path / CHECKPOINT_JSON).read_text())
    (tmp_path / CHECKPOINT_JSON).write_text(json.dumps({**side, field: value}))
    want = rf"checkpoint\.json': field '{field}' was edited after the file was written.*start afresh"
    with pytest.raises(IntegrityError, match=want):
        load_checkpoint(tmp_path)
    with pytest.raises(IntegrityError, match=want):
        _toy(digits, run=run)


@pytest.mark.parametrize("field, value", [("config", {"num_iterations": 6, "lr_img": 5.0}), ("iteration", 2)])
def test_edited_embedded_record_is_refused_naming_the_field(digits, tmp_path, field, value):
    run = _checkpointed(digits, tmp_path)
    record, _, _ = load_checkpoint(tmp_path)
    sealed = json.loads(json.dumps({**seal(record), field: value}))
    _rewrite_embedded(tmp_path, sealed)
    with pytest.raises(IntegrityError, match=rf"checkpoint\.safetensors': field '{field}' was edited"):
        _toy(digits, run=run)


@pytest.mark.parametrize("field, value", [("iteration", "6"), ("config", []), ("extra", None), ("ipc", True)])
def test_checkpoint_field_of_the_wrong_type_is_one_line(digits, tmp_path, field, value):
    _checkpointed(digits, tmp_path)
    side = json.loads((tmp_path / CHECKPOINT_JSON).read_text())
    (tmp_path / CHECKPOINT_JSON).write_text(json.dumps({**side, field: value}))
    with pytest.raises(IntegrityError, match=rf"field '{field}' was edited"):
        load_checkpoint(tmp_path)
    (tmp_path / CHECKPOINT_JSON).write_text(json.dumps(seal({**side, field: value})))  # re-sealed: the type check
    with pytest.raises(IntegrityError, match=rf"checkpoint\.json': field '{field}' is .*, expected") as e:
        load_checkpoint(tmp_path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("cut", [0, 40, -3])
def test_truncated_checkpoint_json_is_refused(digits, tmp_path, cut):
    _checkpointed(digits, tmp_path)
    text = (tmp_path / CHECKPOINT_JSON).read_text()
    (tmp_path / CHECKPOINT_JSON).write_text(text[:cut])
    with pytest.raises(IntegrityError, match=r"checkpoint\.json' is not valid JSON"):
        load_checkpoint(tmp_path)


def test_checkpoint_records_are_sealed_and_version_2_is_refused(digits, tmp_path):
    from condense.io import check_seal, unseal

    run = _checkpointed(digits, tmp_path)
    side = json.loads((tmp_path / CHECKPOINT_JSON).read_text())
    check_seal(side, CHECKPOINT_JSON)
    record, tensors, gen_state = load_checkpoint(tmp_path)  # untouched: loads, the seal stripped
    assert "meta_sha256" not in record and {k: v for k, v in unseal(side).items() if k != "sha256"} == record
    _rewrite_embedded(tmp_path, {**record, "format_version": 2})  # what condense wrote before the seal
    with pytest.raises(IntegrityError, match=r"format version 2; this condense reads version 3"):
        _toy(digits, run=run)
