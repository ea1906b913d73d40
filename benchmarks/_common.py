"""Shared helpers of the benchmark scripts: timing, peak memory, run metadata and the JSON result line (STYLE §10).

Every ``benchmarks/<area>_speed.py`` prints, as its last stdout line, one JSON object::

    {"benchmark": name, "metadata": {"commit", "date", "torch", "condense", "device", "cuda", "python", "cpu_threads"},
     "config": {...}, "results": [{..., "median_ms", "iqr_ms", "peak_mem_mb", "accuracy"}]}

Timing: :func:`time_ms` runs warm-up calls first, then synchronizes the device around each timed call (CUDA events
are not needed at these durations; ``torch.cuda.synchronize`` bounds each call). :func:`summarize_ms` reports the
median and inter-quartile range.

Peak memory: on CUDA, the allocator's peak (``torch.cuda.max_memory_allocated``) since :func:`reset_peak_memory`. On
the CPU, the process's peak resident set (``VmHWM``) since the reset, which on Linux writes ``5`` to
``/proc/self/clear_refs``; it includes the interpreter and the loaded libraries (a few hundred MB), so compare CPU
figures only with each other. Where the reset is not possible it falls back to ``ru_maxrss`` (peak since start).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "metadata",
    "git_commit",
    "device_name",
    "synchronize",
    "reset_peak_memory",
    "peak_memory_mb",
    "rss_mb",
    "take_subset",
    "stderr_logger",
    "time_ms",
    "summarize_ms",
    "print_result",
    "run_stage",
]

REPO = Path(__file__).resolve().parents[1]


def git_commit(repo: Path = REPO) -> str | None:
    """The checked-out commit, read from ``.git`` files (no git process); None outside a checkout."""
    git = repo / ".git"
    try:
        if git.is_file():  # a worktree: "gitdir: <path>"
            git = Path(git.read_text().split(":", 1)[1].strip())
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(":", 1)[1].strip()
        for base in (git, Path((git / "commondir").read_text().strip()) if (git / "commondir").is_file() else git):
            base = base if base.is_absolute() else git / base
            if (base / ref).is_file():
                return (base / ref).read_text().strip()
            packed = base / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split(" ", 1)[0]
    except (OSError, IndexError):
        return None
    return None


def device_name(device: torch.device | str) -> str:
    """Human-readable device: the GPU's name, or the CPU model and the cores this process may use."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model} ({cores} cores, {torch.get_num_threads()} torch threads)"


def metadata(device: torch.device | str = "cpu") -> dict[str, Any]:
    """``{"commit", "date", "torch", "condense", "device", "cuda", "python", "cpu_threads"}`` of this run."""
    import condense

    return {
        "commit": git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "condense": condense.__version__,
        "device": device_name(device),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
    }


def synchronize(device: torch.device | str) -> None:
    """Wait for queued CUDA work (no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device | str) -> None:
    """Start a new peak-memory window (CUDA allocator peak, or the process's VmHWM on Linux)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the peak resident set size (Linux >= 4.0)
    except OSError:
        pass


def _proc_status_mb(field: str) -> float | None:
    """A ``/proc/self/status`` memory field (``VmHWM``, ``VmRSS``) in MB; None where there is no such file."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _max_rss_mb() -> float:
    """The process's peak resident set since it started (``ru_maxrss``)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 1024)


def peak_memory_mb(device: torch.device | str) -> float:
    """Peak memory in MB since :func:`reset_peak_memory` (see the module docstring for what the CPU figure is)."""
    device = torch.device(device)
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    hwm = _proc_status_mb("VmHWM")
    return round(hwm if hwm is not None else _max_rss_mb(), 1)


def rss_mb() -> float:
    """The process's current resident set in MB (Linux ``VmRSS``; elsewhere the peak since start), unrounded."""
    rss = _proc_status_mb("VmRSS")
    return rss if rss is not None else _max_rss_mb()


def take_subset(data: Any, n: int) -> Any:
    """Keep ``n`` training images of ``data`` (in place): a fixed, class-mixed prefix of a seeded permutation.

    The same subset every run, so CPU timings do not depend on the real set's size; the fingerprint says so.
    """
    perm = torch.randperm(data.x_train.shape[0], generator=torch.Generator().manual_seed(0))[:n]
    data.x_train, data.y_train = data.x_train[perm].contiguous(), data.y_train[perm].contiguous()
    data.fingerprint = f"{data.fingerprint}-subset{n}"
    return data


def stderr_logger(quiet: bool) -> Callable[..., None]:
    """``print`` to stderr (stdout stays for the JSON line), or a no-op when ``quiet``."""
    if quiet:
        return lambda *a: None
    return lambda *a: print(*a, file=sys.stderr, flush=True)


def time_ms(fn: Callable[[], Any], device: torch.device | str, repeats: int, warmup: int = 1) -> list[float]:
    """Milliseconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls, synchronized."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def summarize_ms(times: Sequence[float]) -> dict[str, float]:
    """``{"median_ms", "iqr_ms", "n"}`` of a list of timings (IQR 0 for fewer than two)."""
    times = sorted(times)
    if len(times) >= 2:
        q = statistics.quantiles(times, n=4, method="inclusive")
        iqr = q[2] - q[0]
    else:
        iqr = 0.0
    return {"median_ms": round(statistics.median(times), 3), "iqr_ms": round(iqr, 3), "n": len(times)}


def print_result(
    benchmark: str, config: dict[str, Any], results: list[dict[str, Any]], device: torch.device | str | None = None
) -> dict[str, Any]:
    """Print the benchmark's JSON object as the last stdout line and return it."""
    device = device if device is not None else config.get("device", "cpu")
    out = {"benchmark": benchmark, "metadata": metadata(device), "config": config, "results": results}
    print(json.dumps(out), flush=True)
    return out


def run_stage(
    results: list[dict[str, Any]], name: str, device: torch.device | str, fn: Callable[[], Any], **extra: Any
):
    """Run ``fn`` as one benchmark stage: its wall seconds and peak memory (reset first) appended to ``results`` as
    ``{"stage": name, "seconds", "peak_mem_mb", **extra}`` and echoed on stderr; returns ``(fn(), row)``."""
    reset_peak_memory(device)
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    row = {"stage": name, "seconds": round(time.perf_counter() - t0, 3), "peak_mem_mb": peak_memory_mb(device), **extra}
    results.append(row)
    print(json.dumps(row), file=sys.stderr, flush=True)
    return out, row
