"""Kill -9 fault suite: SIGKILL ``condense distill`` and ``condense experts`` at seeded points, rerun, compare.

Each command is first run uninterrupted (in this process, through ``condense.cli.main``, timed). Then a chain of
subprocesses runs the same command line: each is killed with SIGKILL, either at a seeded random time within the
measured run time ("time" kills) or the moment a file write is in flight in its folders (an atomic write's temp file
is seen) or, failing that, right after its log shows a checkpoint ("write" kills); the next one resumes. The last one
runs to the end. The result must be bit-identical to the uninterrupted run, and the work lost to each kill (completed
iterations or epochs the next run did not get back, read from the JSONL logs) must not exceed the checkpoint interval.
``FIGURES`` collects the counts (``pytest -s`` prints them).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file

from condense.expert_trajectories.record import DEFAULT_CHECKPOINT_EVERY_EPOCHS

REPO = Path(__file__).resolve().parents[1]
SEED = 11  # of the kill schedule
MODES = ("time", "write", "time", "write")  # four kills per command: two at seeded times, two on writes
DISTILL_ITERATIONS, DISTILL_EVERY = 30, 5
EXPERT_EPOCHS = 4
FIGURES: dict[str, dict] = {}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _lines(log: Path) -> list[dict]:
    """The log's complete JSON lines (a kill may leave a torn last line)."""
    if not log.is_file():
        return []
    out = []
    for line in log.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def _tmp_files(folders: list[Path]) -> list[Path]:
    """Temp files of atomic writes in flight (``.<name>.<random>.tmp``), one level of subfolders included."""
    found = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            if entry.name.endswith(".tmp"):
                found.append(Path(entry.path))
            elif entry.is_dir():
                found += [Path(e.path) for e in os.scandir(entry.path) if e.name.endswith(".tmp")]
    return found


def _reference(args: list[str]) -> float:
    """Run the command uninterrupted in this process; its wall time."""
    from condense.cli import main

    t0 = time.perf_counter()
    assert main(args) == 0
    return time.perf_counter() - t0


def _kill_chain(
    args: list[str],
    log: Path,
    folders: list[Path],
    run_time: float,
    remaining: Callable[[dict], float],
    tmp: Path,
    done: Path,
) -> list[dict]:
    """Start, kill, restart ``condense <args>`` for each of ``MODES``, then run it to the end; one dict per kill.

    A "time" kill lands at a seeded fraction of the session's remaining work (``remaining(first log line)`` of the
    measured ``run_time``), so later, resumed sessions are killed inside their shorter runs too.
    """
    rng = random.Random(SEED)
    kills: list[dict] = []
    for mode in MODES:
        if done.exists():
            break  # finished before this kill (then there is nothing left to interrupt)
        before, tmp_before = len(_lines(log)), len(_tmp_files(folders))
        with open(tmp / f"session{len(kills)}.err", "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "condense", *args], env=_env(), stderr=err)
            try:
                deadline = time.monotonic() + 60
                while len(_lines(log)) <= before and proc.poll() is None:  # the session has started its loop
                    assert time.monotonic() < deadline, "no log line within 60 s"
                    time.sleep(0.005)
                seen_tmp = False
                u = rng.uniform(0.1, 0.5)
                if mode == "time":
                    first = _lines(log)[before] if len(_lines(log)) > before else {}
                    time.sleep(u * remaining(first) * run_time)
                else:
                    n_ckpt = sum(e.get("event") == "checkpoint" for e in _lines(log))
                    while proc.poll() is None:
                        if _tmp_files(folders):
                            seen_tmp = True
                            break
                        if sum(e.get("event") == "checkpoint" for e in _lines(log)) > n_ckpt:
                            break  # the write was too quick to see: kill right after it
                        time.sleep(0.001)
                if proc.poll() is not None:
                    break  # it finished first: not a kill
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        assert proc.returncode == -signal.SIGKILL
        kills.append({"mode": mode, "seen_tmp": seen_tmp, "tmp_left": len(_tmp_files(folders)) > tmp_before})
    if not done.exists():  # (a session may have finished before its kill)
        with open(tmp / "final.err", "wb") as err:
            res = subprocess.run([sys.executable, "-m", "condense", *args], env=_env(), stderr=err, timeout=120)
        text = (tmp / "final.err").read_text()
        assert res.returncode == 0 and "Traceback" not in text, text[-3000:]
    return kills


def _sessions(lines: list[dict], starts: tuple[str, ...]) -> list[list[dict]]:
    """The log split at each session's first line."""
    out: list[list[dict]] = []
    for e in lines:
        if e.get("event") in starts or not out:
            out.append([])
        out[-1].append(e)
    return out


def _report(name: str, kills: list[dict], lost: list[int], interval: int, identical: bool) -> None:
    FIGURES[name] = {
        "kills": len(kills),
        "during_writes": sum(k["seen_tmp"] for k in kills),
        "left_a_temp_file": sum(k["tmp_left"] for k in kills),
        "lost_per_kill": lost,
        "interval": interval,
        "bit_identical": identical,
    }
    print(f"\n{name}: {json.dumps(FIGURES[name])}")


# ----------------------------------------------------------------------------------------------------------------------
# condense distill --method dm
# ----------------------------------------------------------------------------------------------------------------------


def _distill_args(out: Path) -> list[str]:
    # lr_img=1: the digits-ipc1 preset's 100 drives DM's pixels past the plausibility gate within 30 iterations
    return [
        "distill", "--method", "dm", "--dataset", "digits", "--ipc", "1",
        "--set", f"num_iterations={DISTILL_ITERATIONS}", "--set", "lr_img=1", "--checkpoint-every", str(DISTILL_EVERY),
        "--work-dir", str(out.parent / "work"), "--out", str(out), "--quiet",
    ]  # fmt: skip


def _artifact(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    side = json.loads(path.with_suffix(".json").read_text())
    keep = ("method", "dataset", "ipc", "classes", "label_kind", "lr", "preprocessing", "config")
    meta = {k: side.get(k) for k in keep}
    meta["iterations"] = side["meta"]["iterations"]
    return load_file(str(path)), meta


def test_distill_survives_kill_9(tmp_path):
    ref = tmp_path / "ref" / "dm.safetensors"
    run_time = _reference(_distill_args(ref))
    out = tmp_path / "run" / "dm.safetensors"
    work = out.parent / "work"

    def remaining(first: dict) -> float:
        return 1 - first.get("from_iteration", 0) / DISTILL_ITERATIONS

    args = _distill_args(out)
    kills = _kill_chain(args, work / "log.jsonl", [work, out.parent], run_time, remaining, tmp_path, out)
    assert len(kills) >= 4, f"only {len(kills)} kills landed: the runs are too short for the schedule"

    # Work lost per kill: iterations the killed session completed that the next one did not resume from
    sessions = _sessions(_lines(work / "log.jsonl"), ("start", "resume"))
    assert len(sessions) == len(kills) + 1
    lost = []
    for killed, nxt in zip(sessions, sessions[1:]):
        first = killed[0]
        completed = max([e["it"] + 1 for e in killed if "it" in e and "event" not in e], default=None)
        if completed is None:
            completed = first.get("from_iteration", 0)
        resumed = nxt[0].get("from_iteration", 0) if nxt[0]["event"] == "resume" else 0
        lost.append(completed - resumed)
    assert all(0 <= n <= DISTILL_EVERY for n in lost), lost

    (t_ref, m_ref), (t_run, m_run) = _artifact(ref), _artifact(out)
    assert m_run == m_ref and t_run.keys() == t_ref.keys()
    identical = all(t_run[k].dtype == t_ref[k].dtype and torch.equal(t_run[k], t_ref[k]) for k in t_ref)
    _report("distill", kills, lost, DISTILL_EVERY, identical)
    assert identical


# ----------------------------------------------------------------------------------------------------------------------
# condense experts
# ----------------------------------------------------------------------------------------------------------------------


def _experts_args(out: Path) -> list[str]:
    return [
        "experts", "--dataset", "digits", "--model", "convnetd2", "--model-arg", "width=8",
        "--experts", "2", "--epochs", str(EXPERT_EPOCHS), "--out", str(out), "--quiet",
    ]  # fmt: skip


def _buffer(out: Path) -> tuple[list[torch.Tensor], list[dict]]:
    manifest = json.loads((out / "manifest.json").read_text())
    keep = ("id", "status", "attempt", "seeds", "accuracy_curve", "train_loss_curve")
    records = [{k: e.get(k) for k in keep} for e in manifest["experts"]]
    tensors = [load_file(str(out / e["file"]))["params"] for e in manifest["experts"]]
    return tensors, records


def test_experts_survive_kill_9(tmp_path):
    ref = tmp_path / "ref"
    run_time = _reference(_experts_args(ref))
    out = tmp_path / "run"
    log = out / "log.jsonl"

    def remaining(first: dict) -> float:
        return len(first.get("experts", [0, 1])) / 2

    done = out / "expert_0001.safetensors"
    kills = _kill_chain(_experts_args(out), log, [out], run_time, remaining, tmp_path, done)
    assert len(kills) >= 4, f"only {len(kills)} kills landed: the runs are too short for the schedule"

    # Work lost per kill: finished epochs of the group in training that the next session did not resume from
    sessions = _sessions(_lines(log), ("start",))
    assert len(sessions) == len(kills) + 1
    lost = []
    for killed, nxt in zip(sessions, sessions[1:]):
        progress: dict[tuple, int] = {}
        for e in killed:
            if e["event"] == "resume":
                progress[tuple(e["experts"])] = e["from_epoch"]
            elif e["event"] == "epoch":
                progress[tuple(e["experts"])] = e["epoch"]
        finished = {e["id"] for e in killed if e["event"] == "expert"}
        open_groups = {g: n for g, n in progress.items() if not set(g) <= finished}
        resumed = {tuple(e["experts"]): e["from_epoch"] for e in nxt if e["event"] == "resume"}
        lost.append(sum(n - resumed.get(g, 0) for g, n in open_groups.items()))
    assert all(0 <= n <= DEFAULT_CHECKPOINT_EVERY_EPOCHS for n in lost), lost
    assert not list(out.glob("partial_*")) and not _tmp_files([out])  # nothing left behind

    (t_ref, r_ref), (t_run, r_run) = _buffer(ref), _buffer(out)
    assert r_run == r_ref
    identical = all(a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(t_run, t_ref, strict=True))
    _report("experts", kills, lost, DEFAULT_CHECKPOINT_EVERY_EPOCHS, identical)
    assert identical
