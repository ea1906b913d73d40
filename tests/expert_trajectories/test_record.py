"""record_experts: argument checks, resume rules, mid-expert checkpoints, resume after a real kill, torchrun over two
processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from condense.errors import ConfigError, IntegrityError, MismatchError
from condense.expert_trajectories import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    ExpertBuffer,
    expert_filename,
    get_expert_config,
    record_experts,
)
from condense.expert_trajectories._train import Trainer

MODEL_KW = {"width": 8}
REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _record(data, out, n=2, epochs=2, **kw):
    kw.setdefault("config", get_expert_config("vanilla", batch_size=128, augment="dsa_noflip"))
    return record_experts(data, "convnet", n, epochs, out, quiet=True, model_kwargs=MODEL_KW, **kw)


# ----------------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------------


def test_bad_arguments_are_refused(digits, tmp_path):
    with pytest.raises(ConfigError, match="n_experts"):
        record_experts(digits, "convnet", 0, 1, tmp_path)
    with pytest.raises(ConfigError, match="dtype"):
        record_experts(digits, "convnet", 1, 1, tmp_path, dtype="float64")
    with pytest.raises(ConfigError, match="contradicts"):
        record_experts(digits, "convnet", 1, 1, tmp_path, kind="smooth", config=get_expert_config("flat"))

    with pytest.raises(ConfigError, match="epochs"):
        record_experts(digits, "convnet", 1, 0, tmp_path)
    with pytest.raises(ConfigError, match="did you mean 'datm'"):
        record_experts(digits, "convnet", 1, 1, tmp_path, kind="dtam")
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="checkpoint_every_epochs"):
            record_experts(digits, "convnet", 1, 1, tmp_path, checkpoint_every_epochs=bad)


def test_kind_may_be_a_preset(digits, tmp_path):
    buf = record_experts(digits, "convnet", 1, 1, tmp_path, kind="datm", quiet=True, model_kwargs=MODEL_KW, seed=1)
    assert buf.kind == "flat" and buf.config == get_expert_config("datm").to_dict()


# ----------------------------------------------------------------------------------------------------------------------
# Resume rules
# ----------------------------------------------------------------------------------------------------------------------


def test_resume_refuses_other_settings_and_extends(digits, tmp_path):
    first = _record(digits, tmp_path, n=2, epochs=2)
    stamp = (tmp_path / expert_filename(0)).stat().st_mtime_ns
    with pytest.raises(MismatchError, match="epochs"):
        _record(digits, tmp_path, n=2, epochs=3)
    more = _record(digits, tmp_path, n=3, epochs=2)
    assert more.num_experts == 3
    assert (tmp_path / expert_filename(0)).stat().st_mtime_ns == stamp  # kept, not retrained
    torch.testing.assert_close(more.trajectory(1), first.trajectory(1), rtol=0, atol=0)


def test_resume_retrains_a_damaged_expert(digits, tmp_path):
    first = _record(digits, tmp_path, n=2, epochs=2)
    ref = first.trajectory(1).clone()  # trajectory() may alias the memory-mapped file we are about to cut
    f = tmp_path / expert_filename(1)
    f.write_bytes(f.read_bytes()[:-64])  # cut inside the tensor data: the header alone still parses
    kept = (tmp_path / expert_filename(0)).stat().st_mtime_ns
    again = _record(digits, tmp_path, n=2, epochs=2)
    assert (tmp_path / expert_filename(0)).stat().st_mtime_ns == kept
    torch.testing.assert_close(again.trajectory(1), ref, rtol=0, atol=0)  # retrained from the same seeds


def test_resume_refuses_another_format_version(digits, tmp_path):
    _record(digits, tmp_path, n=1, epochs=1)
    m = json.loads((tmp_path / MANIFEST_NAME).read_text())
    m["format_version"] = 0
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(m))
    with pytest.raises(IntegrityError, match=rf"format version 0; this condense reads version {FORMAT_VERSION}") as e:
        _record(digits, tmp_path, n=1, epochs=1)
    assert str(tmp_path / MANIFEST_NAME) in str(e.value)


# ----------------------------------------------------------------------------------------------------------------------
# Mid-expert checkpoints (a crash is simulated in-process; the real kills are below and in tests/test_faults_kill.py)
# ----------------------------------------------------------------------------------------------------------------------


class _Crash(Exception):
    pass


def _crash_after(monkeypatch, n_epochs: int) -> None:
    """Make the n-th per-epoch evaluation of this process raise, as a kill after n - 1 finished epochs would."""
    real = Trainer.evaluate
    calls = {"n": 0}

    def evaluate(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n_epochs:
            raise _Crash
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "evaluate", evaluate)


def _partials(out: Path) -> list[Path]:
    return sorted(out.glob("partial_*"))


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line]


@pytest.mark.parametrize("at_once, crash", [(1, 5), (2, 3)])  # inside expert 1 (epoch 1 of 3 done); vmapped pair
def test_crash_inside_an_expert_resumes_bit_identical(digits, tmp_path, monkeypatch, at_once, crash):
    cfg = get_expert_config("smooth", batch_size=256, augment="dsa_noflip")  # momentum, lr decay at epoch 2, DSA
    ref = _record(digits, tmp_path / "ref", n=2, epochs=3, config=cfg, experts_at_once=at_once)
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _crash_after(m, crash)
        with pytest.raises(_Crash):
            _record(digits, out, n=2, epochs=3, config=cfg, experts_at_once=at_once)
    (folder,) = _partials(out)
    assert folder.name.startswith(f"partial_{ref.manifest['run_key']}_")  # keyed by the run
    rec = json.loads((folder / "checkpoint.json").read_text())
    assert rec["epoch"] == crash - 1 - 3 * (at_once == 1) and rec["num_snapshots"] == rec["epoch"] + 1
    assert [e["id"] for e in rec["experts"]] == ([1] if at_once == 1 else [0, 1])

    buf = _record(digits, out, n=2, epochs=3, config=cfg, experts_at_once=at_once)
    assert _partials(out) == []  # deleted once its experts are written
    resumes = [e for e in _log(out) if e["event"] == "resume"]
    assert [r["from_epoch"] for r in resumes] == [rec["epoch"]]
    for e in range(2):
        assert torch.equal(buf.trajectory(e), ref.trajectory(e))  # bit-identical, not close
        a, b = buf.expert_record(e), ref.expert_record(e)
        assert (a["accuracy_curve"], a["train_loss_curve"]) == (b["accuracy_curve"], b["train_loss_curve"])


def test_a_damaged_or_foreign_checkpoint_is_never_resumed(digits, tmp_path, monkeypatch, caplog):
    ref = _record(digits, tmp_path / "ref", n=1, epochs=3)
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _crash_after(m, 3)
        with pytest.raises(_Crash):
            _record(digits, out, n=1, epochs=3)
    (folder,) = _partials(out)
    rec = json.loads((folder / "checkpoint.json").read_text())
    assert rec["epoch"] == 2
    rec["lr"] = 0.5  # an edited record fails its seal: the expert starts over, and still ends as the reference
    (folder / "checkpoint.json").write_text(json.dumps(rec))
    with caplog.at_level("WARNING", logger="condense"):
        buf = _record(digits, out, n=1, epochs=3)
    assert "unusable" in caplog.text and "lr" in caplog.text
    assert torch.equal(buf.trajectory(0), ref.trajectory(0)) and _partials(out) == []
    assert not [e for e in _log(out) if e["event"] == "resume"]

    other = tmp_path / "other"  # another configuration's checkpoint in the folder: refused, never resumed
    with monkeypatch.context() as m:
        _crash_after(m, 2)
        with pytest.raises(_Crash):
            _record(digits, other, n=1, epochs=3)
    (other / MANIFEST_NAME).unlink()  # without the manifest the checkpoint itself must refuse
    with pytest.raises(MismatchError, match="other settings"):
        _record(digits, other, n=1, epochs=4)


def test_checkpoints_can_be_turned_off_or_spaced(digits, tmp_path, monkeypatch):
    for every, crash, expected in ((0, 3, None), (2, 4, 2)):
        out = tmp_path / f"every{every}"
        with monkeypatch.context() as m:
            _crash_after(m, crash)
            with pytest.raises(_Crash):
                _record(digits, out, n=1, epochs=4, checkpoint_every_epochs=every)
        found = _partials(out)
        got = json.loads((found[0] / "checkpoint.json").read_text())["epoch"] if found else None
        assert got == expected
        files = sorted(f.name for f in found[0].iterdir()) if found else []
        assert files == (
            [] if not found else ["checkpoint.json", "snapshots_00000_00003.safetensors", "state_00002.safetensors"]
        )


# ----------------------------------------------------------------------------------------------------------------------
# A real kill, then resume
# ----------------------------------------------------------------------------------------------------------------------

_SLOW_RECORD = """
import sys, time
import torch
torch.set_num_threads(1)
import condense.expert_trajectories._train as train
from condense.data import load_dataset
from condense.expert_trajectories import get_expert_config, record_experts

_aug = train.augment_experts
def slow_augment(*args, **kwargs):  # stretch each step so the parent can kill us mid-expert
    time.sleep(0.03)
    return _aug(*args, **kwargs)
train.augment_experts = slow_augment
cfg = get_expert_config("vanilla", batch_size=128, augment="dsa_noflip")
record_experts(load_dataset("digits"), "convnet", 3, 3, sys.argv[1], config=cfg, quiet=True,
               experts_at_once=1, model_kwargs={"width": 8})
"""


def test_kill_then_resume(digits, tmp_path):
    out = tmp_path / "killed"
    script = tmp_path / "slow_record.py"
    script.write_text(_SLOW_RECORD)
    proc = subprocess.Popen([sys.executable, str(script), str(out)], env=_env(), stderr=subprocess.PIPE)
    first = out / expert_filename(0)
    deadline = time.monotonic() + 120
    log = out / "log.jsonl"
    try:
        # kill inside expert 1, once it has a checkpoint (epoch 1 of 3: 12 steps x 30 ms per epoch)
        while not (log.is_file() and '"event": "checkpoint", "experts": [1]' in log.read_text()):
            if proc.poll() is not None:
                pytest.fail(f"recorder exited early ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("recorder checkpointed no expert 1 within 120 s")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    m = json.loads((out / MANIFEST_NAME).read_text())
    assert [e["status"] for e in m["experts"]] == ["done", "pending", "pending"]
    assert not (out / expert_filename(1)).exists()
    (partial,) = _partials(out)
    saved = json.loads((partial / "checkpoint.json").read_text())["epoch"]
    assert saved in (1, 2)
    stamp = first.stat().st_mtime_ns

    cfg = get_expert_config("vanilla", batch_size=128, augment="dsa_noflip")
    resumed = _record(digits, out, n=3, epochs=3, config=cfg, experts_at_once=1)
    assert resumed.num_experts == 3 and first.stat().st_mtime_ns == stamp
    assert not list(out.glob(".*.tmp")) and _partials(out) == []
    assert [e["from_epoch"] for e in _log(out) if e["event"] == "resume"] == [saved]
    reference = _record(digits, tmp_path / "ref", n=3, epochs=3, config=cfg, experts_at_once=1)
    for e in range(3):  # the interrupted expert continued from its checkpoint: bit-identical to an uninterrupted run
        assert torch.equal(resumed.trajectory(e), reference.trajectory(e)), e


# ----------------------------------------------------------------------------------------------------------------------
# torchrun: 2 gloo processes split the experts
# ----------------------------------------------------------------------------------------------------------------------

_DIST_RECORD = """
import os
import sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from condense.data import load_dataset
from condense.expert_trajectories import get_expert_config, record_experts
cfg = get_expert_config("vanilla", batch_size=128, augment="dsa_noflip")
buf = record_experts(load_dataset("digits"), "convnet", 3, 2, sys.argv[1], config=cfg, quiet=True,
                     model_kwargs={"width": 8})
Path(sys.argv[2], f"rank{os.environ['RANK']}.txt").write_text(f"{buf.num_experts}")
"""


def test_torchrun_gloo_two_processes(digits, tmp_path):
    out = tmp_path / "dist"
    script = tmp_path / "dist_record.py"
    script.write_text(textwrap.dedent(_DIST_RECORD))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(out)]
    cmd.append(str(tmp_path))
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)] == ["3", "3"]  # every rank returns the buffer
    buf = ExpertBuffer.open(out)
    assert buf.num_experts == 3
    assert [buf.expert_record(e)["rank"] for e in range(3)] == [0, 1, 0]  # split over the two ranks
    cfg = get_expert_config("vanilla", batch_size=128, augment="dsa_noflip")
    single = _record(digits, tmp_path / "single", n=3, epochs=2, config=cfg, experts_at_once=1)
    for e in range(3):  # seeds depend on the expert id only, not on the rank that trained it
        torch.testing.assert_close(buf.trajectory(e), single.trajectory(e), rtol=1e-4, atol=1e-5)
