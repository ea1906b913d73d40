"""FYI speed: DM and DM+FYI side by side at equal iterations: ms per iteration, peak memory, accuracy vs random real.

FYI (Son et al., "FYI: Flip Your Images for Dataset Distillation", ECCV 2024, arXiv:2407.08113) concatenates each
class's synthetic batch with its horizontal mirror before DSA, so DM+FYI embeds 2 IPC synthetic images per class
where DM embeds IPC; the real images per class are the same. First, per mode, ``--warmup`` untimed iterations of a
throwaway state measure the peak memory (reset before each mode). Then both runs start from the same initial state
(``DM.init_state``, generator seed ``--seed``, one generator per run) and advance in lockstep, one iteration of each
in alternating order, so a shared machine's load falls on both alike; every iteration is timed (synchronized). Each
result is then evaluated by the shared protocol (ConvNet, ``--eval-epochs``, ``--eval-seeds`` seeds), beside a
random real subset of the same size; evaluation time is not in the timings.

This is a CPU-sized run by default: a ``--train-subset`` of CIFAR-10's training set (5,000 images), a
``--test-subset`` (2,000 test images), IPC 10, ``--batch-real`` 64 (the papers: 256), ``--iterations`` 100 (DM's and
FYI's scripts: 20,000 on the full set) and a 100-epoch evaluation with one seed. Its accuracies are far from the
published ones (DM 48.9, DM+FYI 53.1 on CIFAR-10 IPC 10, FYI's main table) and show only whether the two runs diverge
after a hundred steps; the timings are what it measures. The CIFAR-10 copy under ``../shared/data`` is JPEG-derived
(see its README), another reason not to compare with the papers.

``--quick`` (the smoke test) uses a generated CIFAR-shaped stand-in (random images with a class colour bias) unless
``--data-root`` is given, and tiny sizes.

Usage:
    python benchmarks/fyi_speed.py --data-root ../shared/data
    python benchmarks/fyi_speed.py --quick
    python benchmarks/fyi_speed.py --data-root ../shared/data --device cuda --train-subset 0 --iterations 1000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    peak_memory_mb,
    print_result,
    reset_peak_memory,
    stderr_logger,
    summarize_ms,
    synchronize,
    take_subset,
)

MODES = {"dm": False, "dm+fyi": True}


def standin_cifar(per_class_train: int, per_class_test: int, seed: int = 0) -> Any:
    """A CIFAR-10-shaped stand-in (10 classes, 3x32x32, uint8 noise with a per-class colour bias), for ``--quick``."""
    from condense.data.base import from_uint8_arrays

    rng = np.random.default_rng(seed)
    bias = rng.integers(-60, 61, size=(10, 3))

    def split(per: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(10), per)
        x = rng.integers(40, 216, size=(len(y), 32, 32, 3)) + bias[y][:, None, None, :]
        return np.clip(x, 0, 255).astype(np.uint8), y

    (xtr, ytr), (xte, yte) = split(per_class_train), split(per_class_test)
    classes = [f"class{i}" for i in range(10)]
    return from_uint8_arrays("cifar10_standin", xtr, ytr, xte, yte, classes, (0.5,) * 3, (0.25,) * 3)


def _timed_step(method: Any, state: Any, it: int, gen: torch.Generator, device: torch.device) -> float:
    """Milliseconds of one synchronized ``method.step``."""
    synchronize(device)
    t0 = time.perf_counter()
    method.step(state, it, gen)
    synchronize(device)
    return (time.perf_counter() - t0) * 1000.0


def _test_subset(data: Any, n: int) -> Any:
    """Keep ``n`` test images of ``data`` (in place): a fixed prefix of a seeded permutation (shorter evaluation)."""
    perm = torch.randperm(data.x_test.shape[0], generator=torch.Generator().manual_seed(1))[:n]
    data.x_test, data.y_test = data.x_test[perm].contiguous(), data.y_test[perm].contiguous()
    return data


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--data-root", default=None, help="folder holding cifar10/ (default ../shared/data)")
    p.add_argument("--standin", action="store_true", help="use the generated CIFAR-shaped stand-in")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--train-subset", type=int, default=5000, help="training images kept (0: all)")
    p.add_argument("--test-subset", type=int, default=2000, help="test images scored (0: all)")
    p.add_argument("--iterations", type=int, default=100, help="distillation iterations of each mode")
    p.add_argument("--batch-real", type=int, default=64, help="real images per class per iteration (DM: 256)")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations per mode (peak memory, warm-up)")
    p.add_argument("--eval-epochs", type=int, default=100)
    p.add_argument("--eval-seeds", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads on the CPU")
    p.add_argument("--quiet", action="store_true")
    p.add_argument(
        "--quick", action="store_true", help="stand-in data, IPC 2, 4 iterations, 5 eval epochs, 1 CPU thread"
    )
    p.add_argument("--json", action="store_true", help="(always on) the last stdout line is the JSON result")
    args = p.parse_args(argv)
    if args.quick:
        args.ipc, args.iterations, args.warmup, args.batch_real = 2, 4, 1, 8
        args.eval_epochs, args.eval_seeds, args.train_subset, args.test_subset = 5, 1, 300, 100
        args.standin = args.standin or args.data_root is None
        args.threads = args.threads or 1  # a smoke test: robust to a shared CPU, where threads oversubscribe
    if args.threads:
        torch.set_num_threads(args.threads)
    log = stderr_logger(args.quiet)

    from condense.data import load_dataset
    from condense.eval import evaluate
    from condense.methods import distill, get_method

    device = torch.device(args.device)
    if args.standin:
        data = standin_cifar(30 if args.quick else 500, 10 if args.quick else 100)
        source = "stand-in: generated CIFAR-shaped noise with a class colour bias (not CIFAR-10)"
    else:
        root = args.data_root or str(Path(__file__).resolve().parents[2] / "shared" / "data")
        data = load_dataset(args.dataset, root)
        source = f"{args.dataset} from {root}"
        if args.train_subset and args.train_subset < data.x_train.shape[0]:
            take_subset(data, args.train_subset)
            source += f", {args.train_subset}-image train subset (seeded)"
    if args.test_subset and args.test_subset < data.x_test.shape[0]:
        _test_subset(data, args.test_subset)
        source += f", {args.test_subset}-image test subset (seeded)"
    method = get_method("dm")
    eval_kw = dict(models=["convnet"], seeds=args.eval_seeds, epochs=args.eval_epochs, device=device, seed=0)

    from condense.methods import RunContext

    run = RunContext(device=device, quiet=True)
    cfgs, peaks, states, gens, times = {}, {}, {}, {}, {}
    for mode, fyi in MODES.items():
        over = {"num_iterations": args.iterations, "batch_real": args.batch_real, "fyi": fyi}
        cfgs[mode] = method.resolve_config(method.default_preset(data.name, args.ipc), over)
        reset_peak_memory(device)
        g = torch.Generator().manual_seed(args.seed + 1)
        throwaway = method.init_state(data, cfgs[mode], args.ipc, g, run)
        for it in range(max(args.warmup, 1)):
            method.step(throwaway, it, g)
        synchronize(device)
        peaks[mode] = peak_memory_mb(device)
        del throwaway
        gens[mode] = torch.Generator().manual_seed(args.seed)
        states[mode] = method.init_state(data, cfgs[mode], args.ipc, gens[mode], run)
        times[mode] = []
    log(f"dm vs dm+fyi: {args.iterations} iterations each, IPC {args.ipc}, batch_real {args.batch_real}")
    order = list(MODES)
    for it in range(args.iterations):
        for mode in order if it % 2 == 0 else order[::-1]:  # alternate who goes first
            times[mode].append(_timed_step(method, states[mode], it, gens[mode], device))
        if (it + 1) % 10 == 0:
            log(f"  iteration {it + 1}: " + ", ".join(f"{m} {times[m][-1]:.0f} ms" for m in order))

    results = []
    for mode, fyi in MODES.items():
        acc = evaluate(method.to_synthetic(states[mode]), data, **eval_kw)["accuracy"]["convnet"]
        log(f"{mode}: {summarize_ms(times[mode])['median_ms']} ms/iteration, accuracy {acc['mean']:.4f}")
        results.append(
            {
                "case": f"{data.name}-ipc{args.ipc}",
                "mode": mode,
                "fyi": fyi,
                "synthetic_images_per_class_in_loss": 2 * args.ipc if fyi else args.ipc,
                "iterations": args.iterations,
                **summarize_ms(times[mode]),
                "peak_mem_mb": peaks[mode],
                "distill_seconds": round(sum(times[mode]) / 1000.0, 2),
                "accuracy": acc["mean"],
                "accuracy_std": acc.get("std"),
            }
        )
    rnd = evaluate(distill("random_real", data, args.ipc, generator=torch.Generator().manual_seed(args.seed)), data,
                   **eval_kw)["accuracy"]["convnet"]  # fmt: skip
    for r in results:
        r["random_real_accuracy"] = rnd["mean"]
    dm, fy = results
    results.append(
        {
            "case": dm["case"],
            "mode": "fyi_over_dm",
            "time_ratio": round(fy["median_ms"] / dm["median_ms"], 3),
            "accuracy_delta": round(fy["accuracy"] - dm["accuracy"], 4),
        }
    )
    config = {
        "dataset": data.name,
        "data": source,
        "ipc": args.ipc,
        "iterations": args.iterations,
        "batch_real": args.batch_real,
        "train_images": int(data.x_train.shape[0]),
        "test_images": int(data.x_test.shape[0]),
        "warmup": args.warmup,
        "eval": {"models": ["convnet"], "seeds": args.eval_seeds, "epochs": args.eval_epochs},
        "device": str(device),
        "threads": torch.get_num_threads(),
        "sizing": (
            "quick smoke test"
            if args.quick
            else "CPU-sized run: train subset, few iterations (the papers: 20,000 on full CIFAR-10), short evaluation;"
            " accuracies are not comparable with published numbers"
        ),
    }
    return print_result("fyi_speed", config, results, device)


if __name__ == "__main__":
    main()
