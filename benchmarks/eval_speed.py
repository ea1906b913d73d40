"""Evaluation speed: S seeds x E epochs of the shared protocol, looped vs vmapped over seeds.

Issue 2's case: digits IPC 10, 5 seeds x 300 epochs on the CPU; on a GPU, CIFAR-10 IPC 10, 5 seeds x 1000
epochs (target <= 5 s total; the MTT code spends about 40 s on an H100). The timed region is what the
protocol costs: training plus the one final test pass; a one-epoch warm-up run comes first.

Usage:
    python benchmarks/eval_speed.py --quick --json
    python benchmarks/eval_speed.py --dataset cifar10 --data-root ../shared/data/cifar10 --device cuda --epochs 1000
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import peak_memory_mb, print_result, reset_peak_memory, synchronize


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--model", default="convnet")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--modes", default="loop,vmap")
    p.add_argument("--quick", action="store_true", help="10 epochs, 2 seeds: about 20 s on a 2-core CPU")
    p.add_argument("--json", action="store_true", help="(always on) last line is the JSON result")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.seeds = 10, 2

    from condense import distill, load_dataset
    from condense.eval import get_protocol
    from condense.eval.images import train_and_test

    data = load_dataset(args.dataset, args.data_root)
    syn = distill("random_real", data, ipc=args.ipc, generator=torch.Generator().manual_seed(0))
    proto = get_protocol("classic").replace(epochs=args.epochs)
    results = []
    for mode in args.modes.split(","):
        kw = dict(
            num_classes=data.num_classes,
            seeds=list(range(args.seeds)),
            protocol=proto,
            lr=0.01,
            augment=proto.augment_for(data.name),
            device=args.device,
            vmap=mode == "vmap",
        )
        # warm-up: one short run compiles kernels / fills caches
        train_and_test(
            syn.images, syn.labels, data.x_test, data.y_test, args.model, **{**kw, "protocol": proto.replace(epochs=1)}
        )
        reset_peak_memory(args.device)
        synchronize(args.device)
        t0 = time.perf_counter()
        accs = train_and_test(syn.images, syn.labels, data.x_test, data.y_test, args.model, **kw)
        synchronize(args.device)
        sec = time.perf_counter() - t0
        results.append(
            {
                "mode": mode,
                "seconds": round(sec, 3),
                "seconds_per_seed_epoch": sec / (args.seeds * args.epochs),
                "peak_mem_mb": peak_memory_mb(args.device),
                "accuracy": sum(accs) / len(accs),
                "runs": accs,
            }
        )
    if len(results) == 2:
        results.append({"mode": "speedup_vmap_over_loop", "value": results[0]["seconds"] / results[1]["seconds"]})
    return print_result(
        "eval_speed",
        {
            "dataset": args.dataset,
            "model": args.model,
            "ipc": args.ipc,
            "seeds": args.seeds,
            "epochs": args.epochs,
            "device": args.device,
        },
        results,
    )


if __name__ == "__main__":
    main()
