"""Trajectory-matching distillation speed: ms per outer iteration, peak memory and accuracy, full vs lean unroll.

One iteration is one ``Matcher.step`` of MTT (or FTD/DATM with ``--method``): sample a trajectory, unroll N student
steps, backprop to the images/lr (``--mode full``) or recompute step by step (``--mode lean``, constant activation
memory), update. Warm-up iterations run first and are not timed; each timed iteration is synchronized (CUDA) and the
median and interquartile range are reported. Peak memory is ``torch.cuda.max_memory_allocated`` reset before each
mode on CUDA (the state, buffer snapshots and data included); on the CPU it is the peak resident memory above the
level after the warm-up (freed heap returned to the OS first; sampled every 2 ms; one fresh process per mode), i.e.
what the distillation itself adds. Accuracy: after ``--iterations`` iterations the synthetic set is scored with the
shared protocol (``--eval-epochs``, ``--eval-seeds``); it is left out of the timings.

The reference the issue compares with is the authors' ``distill.py`` on CIFAR-10 ConvNetD3 with ZCA:
``python distill.py --dataset=CIFAR10 --ipc=10 --syn_steps=30 --expert_epochs=2 --max_start_epoch=20 --zca
--lr_img=100 --lr_lr=1e-05 --lr_teacher=0.001`` (466 ms/iteration on an H100, 9.9 GB peak; IPC 1, N=50: 800 ms).

Usage:
    python benchmarks/distill_speed.py --quick                  # CPU smoke test on digits, < 1 minute
    python benchmarks/distill_speed.py --device cuda --dataset cifar10 --data-root ../shared/data/cifar10 --ipc 10 \
        --syn-steps 30 --mode full,lean --iterations 300 --buffer buffers/cifar10_zca_convnet

When ``--buffer`` is absent (or names a folder without a buffer) a small buffer is recorded first, untimed (digits:
the test-suite settings; CIFAR-10: 2 experts x (max_start_epoch + expert_epochs) epochs, MTT's expert settings).

The last stdout line is one JSON object:
    {"benchmark": "distill_speed", "metadata": {...}, "config": {...},
     "results": [{"method", "mode", "ipc", "syn_steps", "median_ms", "iqr_ms", "peak_mem_mb", "accuracy"}, ...]}
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from _common import (
    peak_memory_mb,
    print_result,
    reset_peak_memory,
    rss_mb,
    stderr_logger,
    summarize_ms,
    take_subset,
    time_ms,
)


#: digits buffer of the test suite (tests/methods/conftest.py), the one the digits presets were tuned with
class _CpuPeak:
    """Peak RSS above a baseline, sampled every 2 ms by a thread (CPU has no allocator statistics).

    Freed heap is handed back to the OS first (glibc ``malloc_trim``), so dataset loading and ZCA fitting do not
    leave a free pool that would hide the distillation's own allocations.
    """

    def __init__(self) -> None:
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
        self.base = rss_mb()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.002)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, rss_mb()) - self.base


def _record_buffer(args, data, cfg, out: Path, device: torch.device) -> Path:
    from condense.demo import demo_buffer
    from condense.expert_trajectories import get_expert_config, record_experts

    spec = demo_buffer(args.method)
    kind = spec["kind"]
    if args.dataset == "digits":  # the buffer the digits presets were tuned on (condense run records the same)
        ecfg = get_expert_config(kind, **spec["config"])
        model, kwargs, epochs = spec["model"], spec["model_kwargs"], spec["epochs"]
    else:
        ecfg = get_expert_config(kind)
        model, kwargs, epochs = "convnet", {}, cfg.max_start_epoch + cfg.expert_epochs
    record_experts(
        data, model, args.experts, epochs, out, config=ecfg, model_kwargs=kwargs, seed=0, device=device, quiet=True
    )
    return out


def _case(args, data, buffer: Path, mode: str, device: torch.device, log) -> dict:
    from condense.eval import evaluate
    from condense.methods import RunContext, get_method

    method = get_method(args.method)
    preset = method.default_preset(data.name, args.ipc)
    over = {"unroll": mode, "num_iterations": args.iterations}
    if args.syn_steps:
        over["syn_steps"] = args.syn_steps
    cfg = method.resolve_config(preset, over)
    gen = torch.Generator().manual_seed(0)
    state = method.init_state(data, cfg, args.ipc, gen, RunContext(device=device, buffer=buffer, quiet=True))
    for it in range(args.warmup):
        method.step(state, it, gen)
    reset_peak_memory(device)
    cpu_peak = _CpuPeak() if device.type == "cpu" else None
    counter = iter(range(args.warmup, args.warmup + args.iterations))
    times = time_ms(lambda: method.step(state, next(counter), gen), device, args.iterations, warmup=0)
    peak = peak_memory_mb(device) if cpu_peak is None else cpu_peak.stop()
    acc = None
    if args.eval_epochs > 0:
        row = evaluate(
            method.to_synthetic(state),
            data,
            models=[args.eval_model],
            seeds=args.eval_seeds,
            epochs=args.eval_epochs,
            device=device,
        )
        acc = row["accuracy"][args.eval_model]
    res = {
        "method": args.method,
        "mode": mode,
        "ipc": args.ipc,
        "syn_steps": cfg.syn_steps,
        "batch_syn": cfg.batch_syn,
        "preset": preset,
        "iterations": args.iterations,
        **summarize_ms(times),
        "peak_mem_mb": round(peak, 1),
        "accuracy": None if acc is None else {"mean": acc["mean"], "std": acc["std"]},
    }
    log(json.dumps(res))
    return res


def _subprocess_case(argv: list[str] | None, args, buffer: Path, mode: str, log) -> dict:
    import subprocess

    cmd = [sys.executable, __file__, *(sys.argv[1:] if argv is None else argv)]
    cmd += ["--mode", mode, "--buffer", str(buffer), "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])["results"][0]
    log(json.dumps(res))
    return res


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dataset", default="digits", choices=["digits", "cifar10"])
    p.add_argument("--data-root", default=None)
    p.add_argument("--zca", default="auto", choices=["auto", "on", "off"], help="auto: on for CIFAR-10 IPC 1/10 (MTT)")
    p.add_argument("--method", default="mtt", choices=["mtt", "ftd", "datm"])
    p.add_argument("--ipc", type=int, default=1)
    p.add_argument("--syn-steps", type=int, default=None, help="N (default: the preset's)")
    p.add_argument("--mode", default="full,lean", help="comma list of unroll modes: full, lean")
    p.add_argument(
        "--buffer", default=None, help="expert buffer; recorded there first when absent (default: a temp one)"
    )
    p.add_argument("--experts", type=int, default=2, help="experts of the recorded buffer")
    p.add_argument("--iterations", type=int, default=20, help="timed iterations (also the training before eval)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--eval-epochs", type=int, default=300, help="0: skip the accuracy evaluation")
    p.add_argument("--eval-seeds", type=int, default=2)
    p.add_argument("--eval-model", default="convnet")
    p.add_argument(
        "--subset", type=int, default=0, help="use a fixed subset of this many training images (CPU timing runs)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads on the CPU")
    p.add_argument("--quick", action="store_true", help="tiny CPU run on digits (< 1 minute)")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    args = p.parse_args(argv)
    if args.quick:
        args.dataset, args.iterations, args.warmup = "digits", 5, 1
        args.eval_epochs, args.eval_seeds = 50, 1
        args.syn_steps = args.syn_steps or 10
        args.threads = args.threads or 1
    if args.threads:
        torch.set_num_threads(args.threads)
    from condense.data import load_dataset
    from condense.methods import get_method

    device = torch.device(args.device)
    zca = args.zca == "on" or (args.zca == "auto" and args.dataset == "cifar10" and args.ipc in (1, 10))
    data = load_dataset(args.dataset, args.data_root, zca=zca)
    if args.subset:
        take_subset(data, args.subset)
    if device.type == "cuda":
        data.x_train, data.y_train = data.x_train.to(device), data.y_train.to(device)
        data.x_test, data.y_test = data.x_test.to(device), data.y_test.to(device)
    log = stderr_logger(args.json)
    method = get_method(args.method)
    cfg = method.resolve_config(method.default_preset(data.name, args.ipc))
    modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        buffer = Path(tmp) / "buffer" if args.buffer is None else Path(args.buffer)
        if not (buffer / "manifest.json").is_file():
            t0 = time.perf_counter()
            _record_buffer(args, data, cfg, buffer, device)
            log(f"recorded a buffer into {buffer} in {time.perf_counter() - t0:.1f} s")
        if device.type == "cpu" and len(modes) > 1:
            # peak RSS is per process and never falls: measure each mode in a fresh process on the same buffer
            results = [_subprocess_case(argv, args, buffer, mode, log) for mode in modes]
        else:
            results = [_case(args, data, buffer, mode, device, log) for mode in modes]
    config = {k: v for k, v in vars(args).items() if k != "json"} | {"zca": zca}
    return print_result("distill_speed", config, results, device)


if __name__ == "__main__":
    main()
