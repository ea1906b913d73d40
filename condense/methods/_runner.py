"""The shared loop of every :class:`~condense.methods.base.Matcher`: checkpoint/resume, NaN rollback, monitoring.

A matcher file holds only its algorithm (``init_state``, ``step``, ``to_synthetic``); :func:`run_matcher` supplies
everything a long run needs around it:

- **Checkpoints** every ``run.checkpoint_every`` iterations and at the end, into ``run.out_dir``: the state's
  tensors, the generator state and a JSON record (the format is ``condense.methods._checkpoint``). A kill between
  the two file writes leaves a tensor file that still verifies on its own: resume then uses it and says so.
- **Resume** (``run.resume``): the checkpoint is verified (checksums), refused with :class:`MismatchError` when
  anything that defines the run differs: method, config, dataset (name, fingerprint, preprocessing), IPC
  (``_checkpoint.run_identity``), and, added here, the generator's state before its first draw (the seed), the expert
  buffer (:func:`buffer_identity`) and the condense version. Then ``matcher.restore_runtime`` rebuilds what is not
  saved and the generator state is restored, so an interrupted-then-resumed run equals an uninterrupted one bit for
  bit when the matcher draws all its randomness from the generator. ``run.restart`` moves an existing checkpoint
  and log aside (into ``discarded-<time>/``) and starts over; a corrupt checkpoint is refused with that advice.
- **Lock**: a run holds an exclusive ``flock`` on ``run.out_dir/.lock`` (which records its PID) from start to end,
  so a second run into the same folder refuses at once with :class:`LockedError`. The kernel drops the lock when
  the holder dies, so the file a killed run leaves behind blocks nothing. (Without ``fcntl``, on Windows, the lock
  is skipped with a log note.)
- **Plausibility gate**: the final set passes :func:`condense.methods._gate.check_plausible` (finite, images within
  20x the real data's range, learned lr off its floor, labels in range) before it is returned.
- **NaN/inf rollback**: before each step the state's tensors are cloned (only the tensors: the cost is one copy of
  the images, labels and optimizer moments per iteration, negligible next to a forward/backward pass; runtime
  objects are never copied). When a step returns a non-finite statistic or leaves a non-finite floating tensor or
  scalar in the state, the tensors and scalars are restored, ``matcher.on_divergence`` is called (by default it
  halves ``scalars["lr_img"]``), the event is logged, and the iteration is retried. The generator is *not* rewound,
  so the retry sees new randomness. After :data:`MAX_CONSECUTIVE_DIVERGENCES` failures in a row the run stops with
  :class:`DivergenceError`. Nothing non-finite is ever saved or returned.
- **Monitoring**: every ``run.eval_every`` iterations the current synthetic set is scored with the shared protocol
  (:func:`condense.eval.evaluate`, a fixed evaluation seed so monitoring never consumes the run's generator). It is
  logged and shown on the progress bar; it selects nothing, the artifact is always the final state.
- **Logs**: a tqdm bar (silenced by ``run.quiet``) with the loss and the last accuracy, and a JSONL log
  ``run.out_dir/log.jsonl`` with one line per iteration (``{"it", "stats", "seconds"}``) plus ``event`` lines
  (``start``, ``resume``, ``divergence``, ``eval``, ``checkpoint``, ``end``). Nothing is written when
  ``run.out_dir`` is None.

Matchers keep everything a run needs to continue in ``state.tensors``/``state.scalars`` (optimizer moments
included) and everything rebuildable in ``state.runtime``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from condense._version import __version__
from condense.errors import CollapseError, DivergenceError, IntegrityError, LockedError, MismatchError
from condense.io import JsonlLog
from condense.methods._checkpoint import (
    CHECKPOINT_JSON,
    CHECKPOINT_TENSORS,
    identity_differences,
    load_checkpoint,
    restore_state,
    run_identity,
    save_checkpoint,
)
from condense.methods._gate import LR_FLOOR_MARGIN, check_plausible
from condense.methods.base import Matcher, MatchState, RunContext

try:  # POSIX only; the lock is skipped (with a log note) where it is missing
    import fcntl
except ImportError:  # pragma: no cover  (Windows)
    fcntl = None

__all__ = [
    "run_matcher",
    "run_key_extras",
    "buffer_identity",
    "generator_digest",
    "LOG_NAME",
    "LOCK_NAME",
    "MAX_CONSECUTIVE_DIVERGENCES",
    "COLLAPSE_WINDOW",
    "MAX_COLLAPSE_RECOVERIES",
    "lr_summary",
]

logger = logging.getLogger("condense")

LOG_NAME = "log.jsonl"
#: the lock file of a work folder (holds the PID of the run that has it)
LOCK_NAME = ".lock"
#: what to do about a checkpoint this run may not use (ends every such message)
START_OVER = "rerun with --restart to discard the checkpoint, or use another --work-dir"
#: Consecutive non-finite steps (each rolled back, image lr reduced) before the run gives up.
MAX_CONSECUTIVE_DIVERGENCES = 5
#: Iterations between healthy-state snapshots: a collapse rolls back to the state COLLAPSE_WINDOW to
#: 2 * COLLAPSE_WINDOW iterations before it was detected.
COLLAPSE_WINDOW = 5
#: Collapses (each rolled back to a healthy state, image lr / 10) before the run stops with CollapseError.
MAX_COLLAPSE_RECOVERIES = 3
#: At most this many (iteration, lr) points of the learned-lr trajectory go into the artifact's meta.
LR_TRACE_POINTS = 50


# ----------------------------------------------------------------------------------------------------------------------
# Identity of a run beyond _checkpoint.run_identity: seed, buffer, code version
# ----------------------------------------------------------------------------------------------------------------------

#: identity keys this module adds to ``run_identity`` (compared by :func:`_extra_differences`), with a hint each
_EXTRA_KEYS = {
    "generator_initial": "another --seed or generator",
    "buffer": "another --buffer",
    "condense_version": "another condense version",
}


def generator_digest(gen: torch.Generator) -> str:
    """16 hex digits of sha256 over the generator's state: the seed identity, taken before the run's first draw."""
    return hashlib.sha256(gen.get_state().cpu().numpy().tobytes()).hexdigest()[:16]


def buffer_identity(matcher: Matcher, run: RunContext) -> str | None:
    """``"<run_key>:<sha256 of manifest.json, 16 hex>"`` of the run's expert buffer; None for methods without one.

    ``run_key`` names the buffer's settings (dataset, model, expert config, seed); the manifest digest adds which
    experts it holds. A folder without a readable manifest gives ``"unreadable:<path>"`` (opening the buffer then
    fails with its own message).
    """
    if not matcher.needs_buffer or run.buffer is None:
        return None
    from condense.expert_trajectories import MANIFEST_NAME

    path = Path(run.buffer) / MANIFEST_NAME
    try:
        blob = path.read_bytes()
        key = json.loads(blob).get("run_key", "?")
    except (OSError, ValueError, AttributeError):
        return f"unreadable:{run.buffer}"
    return f"{key}:{hashlib.sha256(blob).hexdigest()[:16]}"


def run_key_extras(matcher: Matcher, gen: torch.Generator, run: RunContext) -> dict[str, Any]:
    """The identity fields the runner adds to ``run_identity``: seed (generator digest), buffer, condense version."""
    return {
        "generator_initial": generator_digest(gen),
        "buffer": buffer_identity(matcher, run),
        "condense_version": __version__,
    }


def _extra_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``"key: checkpoint X, this run Y (hint)"`` per extra identity field that differs (absent in old checkpoints)."""
    out = []
    for key, hint in _EXTRA_KEYS.items():
        old = saved.get(key, "<absent>")
        if old != current[key]:
            out.append(f"{key}: checkpoint {old!r}, this run {current[key]!r} ({hint})")
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Work-folder lock and restart
# ----------------------------------------------------------------------------------------------------------------------


class _FolderLock:
    """An exclusive, non-blocking ``flock`` on ``folder/.lock``, held open for the run; the file records the PID.

    The kernel releases a flock when its holder exits or is killed, so a stale file never blocks; the file itself is
    left in place (deleting it would let two runs lock two different files of the same name).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.fd: int | None = None

    def acquire(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # pragma: no cover  (Windows)
            logger.info("no fcntl on this platform: '%s' is not locked against a second run", self.folder)
            return
        path = self.folder / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(
                f"'{self.folder}' is in use by another run (PID {holder} holds '{path}'); wait for it to finish, "
                "or use another --work-dir"
            ) from None
        except OSError as e:  # a file system without flock (some network mounts): run unlocked, say so
            os.close(fd)
            logger.warning("could not lock '%s' (%s); running without a lock", path, e)
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _discard_previous(out_dir: Path) -> dict[str, Any] | None:
    """Move the checkpoint files and the log of ``out_dir`` aside into ``out_dir/discarded-<time>/`` (``--restart``).

    Returns:
        ``{"moved": [names], "to": folder}``, or None when there was nothing to discard.
    """
    names = [n for n in (CHECKPOINT_TENSORS, CHECKPOINT_JSON, LOG_NAME) if (out_dir / n).exists()]
    if not names:
        return None
    stem = out_dir / time.strftime("discarded-%Y%m%d-%H%M%S")
    dest, n = stem, 1
    while dest.exists():
        n += 1
        dest = stem.with_name(f"{stem.name}-{n}")
    dest.mkdir()
    for name in names:
        os.replace(out_dir / name, dest / name)
    logger.warning("--restart: moved the previous run's %s from '%s' aside to '%s'", ", ".join(names), out_dir, dest)
    return {"moved": names, "to": str(dest)}


# ----------------------------------------------------------------------------------------------------------------------
# Rollback
# ----------------------------------------------------------------------------------------------------------------------


def _snapshot(state: MatchState) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Clone the state's tensors (and copy its JSON scalars): all a rollback needs, nothing from ``runtime``."""
    return {k: v.detach().clone() for k, v in state.tensors.items()}, copy.deepcopy(state.scalars)


@torch.no_grad()
def _rollback(state: MatchState, snap: tuple[dict[str, torch.Tensor], dict[str, Any]]) -> None:
    """Put the snapshot back, in place where possible so runtime objects holding the tensors see it too."""
    tensors, scalars = snap
    for name in list(state.tensors):
        if name not in tensors:
            del state.tensors[name]
    for name, saved in tensors.items():
        cur = state.tensors.get(name)
        if cur is not None and cur.shape == saved.shape and cur.dtype == saved.dtype and cur.device == saved.device:
            cur.copy_(saved)
            cur.grad = None
        else:
            restored = saved.clone()
            if cur is not None and cur.requires_grad and restored.is_floating_point():
                restored.requires_grad_(True)
            state.tensors[name] = restored
    state.scalars.clear()
    state.scalars.update(copy.deepcopy(scalars))


def _non_finite(stats: dict[str, Any], state: MatchState) -> list[str]:
    """Names of the non-finite statistics, floating state tensors and float scalars (one host sync for tensors)."""
    bad = [f"stats.{k}" for k, v in stats.items() if isinstance(v, (int, float)) and not math.isfinite(v)]
    bad += [f"scalars.{k}" for k, v in state.scalars.items() if isinstance(v, float) and not math.isfinite(v)]
    names = [k for k, t in state.tensors.items() if t.is_floating_point() and t.numel()]
    if names:
        dev = state.tensors[names[0]].device
        flags = torch.stack([torch.isfinite(state.tensors[k].detach()).all().to(dev) for k in names]).cpu()
        if not bool(flags.all()):
            bad += [f"tensors.{k}" for k, ok in zip(names, flags.tolist()) if not ok]
    return bad


def lr_summary(trace: list[float], lr_min: float | None) -> dict[str, Any]:
    """What the artifact records of a learned lr: initial, final, min, max, iterations at the floor, and at most
    :data:`LR_TRACE_POINTS` evenly spaced ``[iteration, lr]`` points (``trace[i]`` is the lr after iteration ``i``)."""
    n = len(trace)
    if n <= LR_TRACE_POINTS:
        idx = list(range(n))
    else:
        idx = sorted({round(i * (n - 1) / (LR_TRACE_POINTS - 1)) for i in range(LR_TRACE_POINTS)})
    out: dict[str, Any] = {
        "initial": trace[0],
        "final": trace[-1],
        "min": min(trace),
        "max": max(trace),
        "points": [[i, trace[i]] for i in idx],
    }
    if lr_min is not None:
        out["floor_iterations"] = sum(v <= LR_FLOOR_MARGIN * lr_min for v in trace)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Logging
# ----------------------------------------------------------------------------------------------------------------------


def _to_float(v: Any) -> Any:
    """Stats are plain floats by contract; one-element tensors are tolerated and converted."""
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return float(v)
    return v


def _monitor(syn: Any, data: Any, cfg: Any, run: RunContext) -> dict[str, Any]:
    """Score the current set with the shared protocol of the data's kind (a fixed seed: the run's generator is
    never consumed). Images: ``run.eval_epochs`` epochs of the model the set was distilled with
    (``condense.eval.evaluate.distilled_model``: the buffer's for trajectory methods); graphs: the
    graph protocol's own length, GCN by default."""
    from condense.eval import evaluate
    from condense.eval.evaluate import distilled_model

    t0 = time.perf_counter()
    if getattr(data, "kind", "images") == "graphs":
        models, epochs = list(run.eval_models or ["gcn"]), None
    else:
        # the model the set was distilled with (the buffer's for trajectory methods), as evaluate's default
        models, epochs = list(run.eval_models or [distilled_model(syn)]), run.eval_epochs
    row = evaluate(syn, data, models=models, seeds=run.eval_seeds, epochs=epochs, device=run.device, quiet=True, seed=0)
    acc = {m: float(v["mean"]) for m, v in row["accuracy"].items()}
    std = {m: float(v["std"]) for m, v in row["accuracy"].items()}
    return {"accuracy": acc, "std": std, "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------------------


def run_matcher(matcher: Matcher, data: Any, cfg: Any, ipc: int, gen: torch.Generator, run: RunContext) -> Any:
    """Run ``cfg.num_iterations`` steps of ``matcher`` with checkpoints, resume, NaN rollback and monitoring.

    Args:
        matcher: the algorithm (``init_state``/``step``/``to_synthetic``).
        data: the real dataset (an :class:`~condense.data.ImageData`).
        cfg: the matcher's resolved config; ``cfg.num_iterations`` is the loop length.
        ipc: images per class.
        gen: the run's only source of randomness; its state before the first draw is part of the run's identity,
            and on resume it is restored from the checkpoint.
        run: device, output folder, checkpoint/eval cadence, resume/restart, quiet flag, buffer.

    Returns:
        ``matcher.to_synthetic(state)`` of the final state, with ``meta["iterations"]``, ``meta["seconds"]`` (total
        over all sessions of the run), ``meta["divergences"]`` and ``meta["resumed_from"]`` (None or the iteration).

    Raises:
        LockedError: another run holds ``run.out_dir``.
        MismatchError: ``run.out_dir`` holds a checkpoint of another run (method, config, dataset, IPC, seed,
            buffer or condense version).
        IntegrityError: the checkpoint fails its checksums.
        DivergenceError: :data:`MAX_CONSECUTIVE_DIVERGENCES` non-finite steps in a row, a non-finite initial state,
            or a final set that fails the plausibility gate (:func:`condense.methods._gate.check_plausible`).

    Example:
        >>> from condense import distill, load_dataset  # doctest: +SKIP
        >>> syn = distill("dm", load_dataset("digits"), ipc=1, overrides={"num_iterations": 2})  # doctest: +SKIP
    """
    lock = None if run.out_dir is None else _FolderLock(Path(run.out_dir))
    if lock is not None:
        lock.acquire()
        # a run killed inside an atomic write leaves its temp file (never the target): only the lock holder clears them
        for tmp in Path(run.out_dir).glob(".checkpoint*.tmp"):
            tmp.unlink(missing_ok=True)
    try:
        return _run_locked(matcher, data, cfg, ipc, gen, run)
    finally:
        if lock is not None:
            lock.release()


def _run_locked(matcher: Matcher, data: Any, cfg: Any, ipc: int, gen: torch.Generator, run: RunContext) -> Any:
    """:func:`run_matcher` once the work folder is locked."""
    num_iterations = int(cfg.num_iterations)
    out_dir = run.out_dir
    # the seed identity is the generator's state now, before the run's first draw
    identity = {**run_identity(matcher, data, cfg, ipc), **run_key_extras(matcher, gen, run)}
    device = torch.device(run.device)

    start, divergences, seconds_before, resumed_from = 0, 0, 0.0, None
    collapses, lr_trace = 0, []
    discarded = _discard_previous(out_dir) if (out_dir is not None and run.restart) else None
    loaded = None
    if out_dir is not None and run.resume and not run.restart:
        try:
            loaded = load_checkpoint(out_dir)
        except IntegrityError as e:
            raise type(e)(f"{e}; {START_OVER}") from e
    if loaded is not None:
        record, tensors, gen_state = loaded
        if record.get("generator_device", "cpu") != gen.device.type:
            raise MismatchError(
                f"the checkpoint in '{out_dir}' saved a {record.get('generator_device')} generator, this run passes a "
                f"{gen.device.type} one; pass a generator on {record.get('generator_device')} to resume"
            )
        diffs = identity_differences(record, identity) + _extra_differences(record, identity)
        if diffs:
            raise MismatchError(
                f"the checkpoint in '{out_dir}' belongs to another run ({'; '.join(diffs)}); {START_OVER}"
            )
        state = restore_state(record, tensors, device)
        gen.set_state(gen_state)
        start = resumed_from = int(record["iteration"])
        divergences = int(record.get("extra", {}).get("divergences", 0))
        collapses = int(record.get("extra", {}).get("collapses", 0))
        lr_trace = [float(v) for v in record.get("extra", {}).get("lr_trace", [])][:start]
        seconds_before = float(record.get("extra", {}).get("seconds", 0.0))
        matcher.restore_runtime(state, data, cfg, run)
        logger.info("resuming %s from iteration %d in '%s'", matcher.name, start, out_dir)
    else:
        state = matcher.init_state(data, cfg, ipc, gen, run)
        bad = _non_finite({}, state)
        if bad:
            raise DivergenceError(f"{matcher.name}: the initial state holds non-finite values in {', '.join(bad)}")

    log = JsonlLog(None if out_dir is None else out_dir / LOG_NAME)
    if discarded is not None:
        log.write({"event": "restart", **discarded})
    if resumed_from is None:
        log.write({"event": "start", "method": matcher.name, "ipc": int(ipc), "num_iterations": num_iterations})
    else:
        log.write({"event": "resume", "from_iteration": resumed_from})

    def checkpoint(done: int, elapsed: float) -> None:
        if out_dir is None or run.checkpoint_every <= 0:
            return
        extra = {"divergences": divergences, "collapses": collapses, "lr_trace": lr_trace[:done], "seconds": elapsed}
        save_checkpoint(out_dir, state, gen, done, identity, extra)
        log.write({"event": "checkpoint", "it": done})

    from tqdm.auto import tqdm

    bar = tqdm(
        total=num_iterations, initial=start, disable=run.quiet, desc=f"{matcher.name} ipc{ipc}", dynamic_ncols=True
    )
    postfix: dict[str, str] = {}
    t_start = time.perf_counter()
    try:
        it = start
        consecutive = 0
        recent: list[dict[str, Any]] = []  # stats of the accepted iterations since the last rollback
        # where a collapse rolls back to: the first state, then the candidate of a window boundary once a whole
        # window after it has passed the collapse check (so 5-10 iterations before a detection); both reuse the
        # per-step snapshot, which nothing writes to
        healthy: tuple[int, Any] | None = None
        candidate: tuple[int, Any] | None = None
        while it < num_iterations:
            snap = _snapshot(state)
            if healthy is None:
                healthy = (it, snap)
            elif it % COLLAPSE_WINDOW == 0 and it > healthy[0] and (candidate is None or candidate[0] < it):
                if candidate is not None:
                    healthy = candidate
                candidate = (it, snap)
            t0 = time.perf_counter()
            stats = {k: _to_float(v) for k, v in (matcher.step(state, it, gen) or {}).items()}
            bad = _non_finite(stats, state)
            if bad:
                consecutive += 1
                divergences += 1
                _rollback(state, snap)
                matcher.on_divergence(state)
                logger.warning(
                    "%s: non-finite %s at iteration %d; rolled back (attempt %d of %d)",
                    matcher.name,
                    ", ".join(bad),
                    it,
                    consecutive,
                    MAX_CONSECUTIVE_DIVERGENCES,
                )
                log.write(
                    {"event": "divergence", "it": it, "attempt": consecutive, "bad": bad, "scalars": state.scalars}
                )
                if consecutive >= MAX_CONSECUTIVE_DIVERGENCES:
                    raise DivergenceError(
                        f"{matcher.name} diverged: {consecutive} consecutive non-finite steps at iteration {it} "
                        f"({', '.join(bad)}) even after rolling back and reducing the image lr; lower the learning "
                        "rates in the config"
                    )
                continue
            consecutive = 0
            dt = time.perf_counter() - t0
            log.write({"it": it, "stats": stats, "seconds": dt})
            recent = [*recent[-2 * COLLAPSE_WINDOW + 1 :], stats]
            reason = matcher.collapse(state, recent)
            if reason is not None:
                collapses += 1
                back, snap = healthy
                log.write({"event": "collapse", "it": it, "reason": reason, "rolled_back_to": back})
                if collapses > MAX_COLLAPSE_RECOVERIES:
                    raise CollapseError(
                        f"{matcher.name} collapsed at iteration {it}: {reason}; rolled back {MAX_COLLAPSE_RECOVERIES} "
                        f"times to a healthy state with the image lr divided by 10 each time (now "
                        f"{state.scalars.get('lr_img', 'n/a')}) without recovering. Nothing was saved. The settings "
                        "do not fit this buffer: check the preset's buffer requirements, or lower lr_img / lr_lr "
                        "(--set lr_img=...)"
                    )
                _rollback(state, snap)
                matcher.on_collapse(state)
                healthy, candidate = (back, _snapshot(state)), None  # later rollbacks keep the lower lr
                logger.warning(
                    "%s collapsed at iteration %d (%s); rolled back to iteration %d, lr_img now %s (recovery %d of %d)",
                    matcher.name,
                    it,
                    reason,
                    back,
                    state.scalars.get("lr_img"),
                    collapses,
                    MAX_COLLAPSE_RECOVERIES,
                )
                del lr_trace[back:]
                recent = []
                bar.n = back
                bar.refresh()
                it = back
                continue
            if "lr" in stats:
                lr_trace.append(float(stats["lr"]))
            it += 1
            if "loss" in stats:
                postfix["loss"] = f"{stats['loss']:.4g}"
            if run.eval_every > 0 and it % run.eval_every == 0:
                ev = _monitor(matcher.to_synthetic(state), data, cfg, run)
                log.write({"event": "eval", "it": it, **ev})
                postfix["acc"] = "/".join(f"{a:.3f}" for a in ev["accuracy"].values())
                logger.info("%s iteration %d: accuracy %s", matcher.name, it, ev["accuracy"])
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
            if run.checkpoint_every > 0 and it % run.checkpoint_every == 0 and it < num_iterations:
                checkpoint(it, seconds_before + time.perf_counter() - t_start)
        seconds = seconds_before + time.perf_counter() - t_start
        if resumed_from != num_iterations:
            checkpoint(num_iterations, seconds)
        syn = matcher.to_synthetic(state)
        try:
            check_plausible(syn, data)
        except DivergenceError as e:
            log.write({"event": "refused", "error": str(e)})
            raise
        syn.meta.update(
            {
                "iterations": num_iterations,
                "seconds": seconds,
                "divergences": divergences,
                "collapses": collapses,
                "resumed_from": resumed_from,
            }
        )
        if len(lr_trace) == num_iterations and lr_trace:
            syn.meta["lr_trajectory"] = lr_summary(lr_trace, getattr(cfg, "lr_min", None))
        log.write({"event": "end", "iterations": num_iterations, "seconds": seconds, "divergences": divergences})
        return syn
    finally:
        bar.close()
        log.close()
