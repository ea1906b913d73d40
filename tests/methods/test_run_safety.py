"""Runs that cannot mix, collide or save garbage (issue 11): the resume key, --restart, the work-folder lock and the
plausibility gate every artifact passes."""

from __future__ import annotations

import dataclasses
import fcntl
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

from condense.errors import DivergenceError, IntegrityError, LockedError, MismatchError
from condense.methods import RunContext, distill, get_method, list_methods
from condense.methods._checkpoint import CHECKPOINT_JSON, CHECKPOINT_TENSORS
from condense.methods._gate import IMAGE_RANGE_FACTOR, check_plausible
from condense.methods._runner import LOCK_NAME, LOG_NAME
from condense.synthetic import SyntheticSet

REPO = Path(__file__).resolve().parents[2]
#: a DM run of milliseconds per iteration on digits
TINY_DM = {"num_iterations": 4, "batch_real": 8}
#: two iterations of a trajectory matcher's digits preset
TINY_MTT = {"num_iterations": 2}
START_OVER = "rerun with --restart to discard the checkpoint, or use another --work-dir"


def _dm(digits, run: RunContext, seed: int = 0, **over):
    return distill(
        "dm", digits, ipc=1, overrides={**TINY_DM, **over}, generator=torch.Generator().manual_seed(seed), run=run
    )


def _events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------------------------------------------------------------
# The resume key: seed, buffer and version join method, config, dataset and IPC
# ----------------------------------------------------------------------------------------------------------------------


def test_resume_with_another_seed_is_refused(digits, tmp_path):
    run = RunContext(out_dir=tmp_path, checkpoint_every=2, quiet=True)
    _dm(digits, run, seed=0)
    with pytest.raises(MismatchError) as info:
        _dm(digits, run, seed=1)
    msg = str(info.value)
    assert "\n" not in msg and f"the checkpoint in '{tmp_path}' belongs to another run" in msg
    assert "generator_initial: checkpoint '" in msg and "(another --seed or generator)" in msg
    assert msg.endswith(START_OVER)
    assert _dm(digits, run, seed=0).meta["resumed_from"] == 4  # the same seed still resumes


def test_resume_with_another_buffer_is_refused(digits, digits_buffer, digits_flat_buffer, tmp_path):
    """A finished MTT run rerun with another --buffer used to return the old images with the new buffer recorded."""

    def mtt(buffer):
        run = RunContext(out_dir=tmp_path, checkpoint_every=1, quiet=True, buffer=buffer)
        return distill("mtt", digits, ipc=1, overrides=TINY_MTT, run=run)

    first = mtt(digits_buffer)
    with pytest.raises(MismatchError, match=r"buffer: checkpoint '\w+:\w+', this run '\w+:\w+' \(another --buffer\)"):
        mtt(digits_flat_buffer)
    again = mtt(digits_buffer)
    assert again.meta["resumed_from"] == 2 and torch.equal(again.images, first.images)


def test_resume_refuses_a_checkpoint_without_the_new_identity_fields(digits, tmp_path):
    """A checkpoint that does not record the seed (written before the key covered it) cannot be checked: refused."""
    from condense.methods._checkpoint import load_checkpoint, restore_state, save_checkpoint

    run = RunContext(out_dir=tmp_path, checkpoint_every=2, quiet=True)
    _dm(digits, run)
    record, tensors, gen_state = load_checkpoint(tmp_path)
    identity = {k: record[k] for k in ("method", "config", "dataset", "fingerprint", "preprocessing", "ipc")}
    gen = torch.Generator()
    gen.set_state(gen_state)
    save_checkpoint(tmp_path, restore_state(record, tensors, torch.device("cpu")), gen, 4, identity, record["extra"])
    with pytest.raises(MismatchError, match=r"generator_initial: checkpoint '<absent>'.*condense_version"):
        _dm(digits, run)


def test_restart_starts_over_and_equals_a_fresh_run(digits, tmp_path):
    _dm(digits, RunContext(out_dir=tmp_path, checkpoint_every=2, quiet=True), seed=0)
    syn = _dm(digits, RunContext(out_dir=tmp_path, checkpoint_every=2, quiet=True, restart=True), seed=5)
    fresh = _dm(digits, RunContext(quiet=True), seed=5)
    assert syn.meta["resumed_from"] is None
    assert torch.equal(syn.images, fresh.images) and torch.equal(syn.labels, fresh.labels)
    # the previous run's checkpoint and log were moved aside, not deleted, and the new log says where
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("discarded-")]
    assert {p.name for p in aside.iterdir()} == {CHECKPOINT_TENSORS, CHECKPOINT_JSON, LOG_NAME}
    events = _events(tmp_path)
    assert events[0] == {"event": "restart", "moved": [CHECKPOINT_TENSORS, CHECKPOINT_JSON, LOG_NAME], "to": str(aside)}
    assert events[1]["event"] == "start" and events[-1]["event"] == "end"
    # and the new checkpoint is the seed-5 run's: resuming it with seed 5 returns the same set
    assert torch.equal(_dm(digits, RunContext(out_dir=tmp_path, quiet=True), seed=5).images, fresh.images)


def test_a_corrupt_checkpoint_says_how_to_start_over(digits, tmp_path):
    run = RunContext(out_dir=tmp_path, checkpoint_every=2, quiet=True)
    ref = _dm(digits, run)
    path = tmp_path / CHECKPOINT_TENSORS
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(IntegrityError) as info:
        _dm(digits, run)
    msg = str(info.value)
    assert "\n" not in msg and "checksum mismatch" in msg and msg.endswith(START_OVER)
    again = _dm(digits, RunContext(out_dir=tmp_path, checkpoint_every=2, quiet=True, restart=True))
    assert torch.equal(again.images, ref.images)


# ----------------------------------------------------------------------------------------------------------------------
# The work-folder lock
# ----------------------------------------------------------------------------------------------------------------------

_HOLDER = """
import fcntl, os, sys, time
fd = os.open({path!r}, os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.ftruncate(fd, 0)
os.pwrite(fd, f"{{os.getpid()}}\\n".encode(), 0)
print("locked", flush=True)
time.sleep(600)
"""


def _hold_lock(folder: Path) -> subprocess.Popen:
    """A child process that holds ``folder/.lock`` the way a run does, until it is killed."""
    folder.mkdir(parents=True, exist_ok=True)
    code = textwrap.dedent(_HOLDER.format(path=str(folder / LOCK_NAME)))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_into_a_held_folder_refuses_at_once(digits, tmp_path):
    holder = _hold_lock(tmp_path)
    try:
        t0 = time.perf_counter()
        with pytest.raises(LockedError) as info:
            _dm(digits, RunContext(out_dir=tmp_path, checkpoint_every=2, quiet=True))
        assert time.perf_counter() - t0 < 5  # refused before any work
        msg = str(info.value)
        assert "\n" not in msg
        assert f"'{tmp_path}' is in use by another run (PID {holder.pid} holds" in msg
        assert msg.endswith("wait for it to finish, or use another --work-dir")
        assert not (tmp_path / LOG_NAME).exists() and not (tmp_path / CHECKPOINT_TENSORS).exists()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_a_killed_holder_leaves_no_blocking_lock(digits, tmp_path):
    holder = _hold_lock(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    holder.stdout.close()
    assert holder.returncode == -signal.SIGKILL and (tmp_path / LOCK_NAME).read_text().strip() == str(holder.pid)
    syn = _dm(digits, RunContext(out_dir=tmp_path, checkpoint_every=2, quiet=True))
    assert syn.meta["iterations"] == TINY_DM["num_iterations"]


class _Interrupt(Exception):
    pass


def test_the_lock_is_held_during_the_run_and_released_at_the_end_and_on_error(digits, tmp_path, monkeypatch):
    from condense.methods.dm import DM

    seen = []
    real_step = DM.step

    def probing(self, state, it, gen):
        fd = os.open(tmp_path / LOCK_NAME, os.O_RDWR)
        try:  # a second lock during the run fails, and the file names this process
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            seen.append(os.pread(fd, 64, 0).decode().strip())
        finally:
            os.close(fd)
        if it == 2:
            raise _Interrupt
        return real_step(self, state, it, gen)

    monkeypatch.setattr(DM, "step", probing)
    with pytest.raises(_Interrupt):
        _dm(digits, RunContext(out_dir=tmp_path, checkpoint_every=2, quiet=True))
    assert seen == [str(os.getpid())] * 3
    monkeypatch.setattr(DM, "step", real_step)
    # released on the error: the same process (or any other) runs into the folder at once, and resumes
    assert _dm(digits, RunContext(out_dir=tmp_path, checkpoint_every=2, quiet=True)).meta["resumed_from"] == 2
    fd = os.open(tmp_path / LOCK_NAME, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released at the end
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------------------------------
# The plausibility gate
# ----------------------------------------------------------------------------------------------------------------------


def test_dm_with_a_huge_image_lr_is_refused_and_writes_no_artifact(digits, tmp_path):
    work = tmp_path / "work"
    with pytest.raises(DivergenceError) as info:
        _dm(digits, RunContext(out_dir=work, quiet=True), num_iterations=3, lr_img=1e9)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("dm: the synthetic images reach max |x| = ")
    assert f"({IMAGE_RANGE_FACTOR:g} x the real data's max |x| of 1.85)" in msg and "lower the learning rates" in msg
    assert {p.name for p in work.iterdir()} == {LOCK_NAME, LOG_NAME}  # no checkpoint: checkpoint_every is 0
    assert _events(work)[-1]["event"] == "refused"
    # what a user of the command line gets: exit 2, one line, no artifact
    from condense.cli import main

    out = tmp_path / "dm.safetensors"
    argv = ["distill", "--method", "dm", "--dataset", "digits", "--ipc", "1", "--out", str(out), "--quiet"]
    argv += ["--set", "lr_img=1e9", "--set", "num_iterations=3", "--checkpoint-every", "0"]
    assert main(argv) == 2
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_mtt_with_a_huge_image_lr_is_refused(digits, digits_buffer, tmp_path):
    with pytest.raises(DivergenceError, match=r"^mtt: the synthetic images reach max \|x\| = \S+, allowed <= "):
        distill(
            "mtt",
            digits,
            ipc=1,
            overrides={"num_iterations": 3, "lr_img": 1e12},
            run=RunContext(out_dir=tmp_path, quiet=True, buffer=digits_buffer),
        )


def _syn(digits, **kw) -> SyntheticSet:
    base = dict(
        images=digits.x_train[:10].clone(),
        labels=torch.arange(10),
        classes=list(digits.classes),
        method="toy",
        dataset="digits",
        ipc=1,
    )
    return SyntheticSet(**{**base, **kw})


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"lr": 1e-6, "config": {"lr_min": 1e-6}}, r"toy: the learned lr is 1e-06, pinned at its floor lr_min=1e-06"),
        ({"labels": torch.full((10,), 10)}, r"toy: labels range over \[10, 10\], allowed \[0, 9\] \(10 classes\)"),
        ({"labels": torch.full((10, 10), float("nan"))}, "toy: the soft labels hold non-finite values"),
        ({"tensors": {"feat": torch.tensor([float("inf")])}}, "toy: tensor 'feat' holds non-finite values"),
        ({"images": torch.full((10, 1, 8, 8), 4e4)}, r"toy: the synthetic images reach max \|x\| = 4e\+04"),
    ],
    ids=["lr_at_floor", "label_out_of_range", "soft_labels_nan", "summary_inf", "images_out_of_range"],
)
def test_the_gate_names_the_quantity_its_value_and_the_allowed_range(digits, change, match):
    with pytest.raises(DivergenceError, match=match) as info:
        check_plausible(_syn(digits, **change), digits)
    assert "\n" not in str(info.value)


def test_the_gate_accepts_real_data_and_a_learned_lr_off_its_floor(digits):
    check_plausible(_syn(digits, lr=0.01, config={"lr_min": 1e-6}), digits)
    check_plausible(_syn(digits, images=digits.x_train[:10] * 0.5 * IMAGE_RANGE_FACTOR), digits)


def test_plain_methods_pass_the_gate_in_distill(digits, monkeypatch):
    """``distill()`` gates a plain Method's set too (random_real here, made to return diverged pixels)."""
    method = type(get_method("random_real"))
    real = method.distill

    def scaled(self, *args, **kwargs):
        syn = real(self, *args, **kwargs)
        syn.images = syn.images * 1e9
        return syn

    monkeypatch.setattr(method, "distill", scaled)
    with pytest.raises(DivergenceError, match="^random_real: the synthetic images reach"):
        distill("random_real", digits, ipc=1)


IMAGE_METHODS = [n for n in list_methods() if get_method(n).data_kind == "images"]
#: kind of expert buffer -> conftest fixture
_BUFFERS = {
    "any": "digits_buffer",
    "vanilla": "digits_buffer",
    "flat": "digits_flat_buffer",
    "smooth": "digits_smooth_buffer",
}
#: what keeps a gated run of each method short (two iterations; dc/dsa/dm with small real batches)
_SHORT = {"dm": {"batch_real": 8}, "dc": {"batch_real": 8, "num_outer_loops": 2, "inner_epochs": 1}}
_SHORT["dsa"] = _SHORT["dc"]
_SHORT["krr_st"] = {"batch_real": 32, "num_models": 2, "pool_steps": 3, "width": 16}
_TEACHERS = {"classifier": "digits_teacher", "encoder": "digits_encoder"}


def _digits_cases() -> list[tuple[str, str | None, int]]:
    cases = []
    for name in IMAGE_METHODS:
        presets = sorted(p for p in get_method(name).presets if p.startswith("digits-ipc"))
        cases += [(name, p, int(p.removeprefix("digits-ipc"))) for p in presets] or [(name, None, 1)]
    return cases


@pytest.mark.parametrize(("name", "preset", "ipc"), _digits_cases(), ids=lambda v: str(v))
def test_every_digits_preset_of_every_image_method_passes_the_gate(name, preset, ipc, digits, request):
    method = get_method(name)
    fields = {f.name for f in dataclasses.fields(method.Config)}
    over = {"num_iterations": 2, **_SHORT.get(name, {})} if "num_iterations" in fields else {}
    buffer = None
    if method.needs_buffer:
        buffer = request.getfixturevalue(_BUFFERS[getattr(method.resolve_config(preset), "expert_kind", "any")])
    teacher = request.getfixturevalue(_TEACHERS[method.teacher_kind]) if method.needs_teacher else None
    run = RunContext(quiet=True, buffer=buffer, teacher=teacher)
    syn = distill(name, digits, ipc=ipc, preset=preset, overrides=over, run=run)
    check_plausible(syn, digits)  # distill() already ran it; the set it returned passes
    peak = float(syn.images.abs().amax()) / float(digits.x_train.abs().amax())
    assert peak < IMAGE_RANGE_FACTOR / 10, f"{name} {preset}: {peak:.3g}x the real range, within 10x of the bound"


def test_a_killed_write_leaves_no_temp_file_behind(digits, tmp_path):
    """A temp file of an interrupted checkpoint write is removed by the next run that holds the lock."""
    tmp_path.mkdir(exist_ok=True)
    stale = tmp_path / f".{CHECKPOINT_TENSORS}.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    _dm(digits, RunContext(out_dir=tmp_path, checkpoint_every=2, quiet=True))
    assert not stale.exists()
    assert (tmp_path / CHECKPOINT_JSON).is_file()
