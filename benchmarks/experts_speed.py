"""Expert-trajectory recording speed: experts trained one at a time ("loop") vs K at once with vmap ("vmap").

Measures seconds per expert-epoch of :func:`condense.expert_trajectories.record_experts`, the per-epoch test pass
included (the original MTT ``buffer.py`` figure, 2.2 s per expert-epoch on an H100 for CIFAR-10 ConvNetD3 with DSA,
also includes it), peak memory and the experts' final test accuracy. A warm-up recording runs first (it pays the
one-time torch.func import and allocator warm-up) and is not reported.

Usage:
    python benchmarks/experts_speed.py --quick                       # CPU smoke test, < 1 minute
    python benchmarks/experts_speed.py --device cuda --dataset cifar10 --data-root ../shared/data/cifar10 \
        --model convnetd3 --experts 20 --epochs 3
    python benchmarks/experts_speed.py --dataset cifar10 --data-root ../shared/data/cifar10 --subset 2560 ...

The last stdout line is one JSON object (see ``--json``):
    {"benchmark": "experts_speed", "metadata": {...}, "config": {...},
     "results": [{"mode", "k", "seconds_per_expert_epoch", "peak_mem_mb", "final_test_acc"}, ...]}
``peak_mem_mb`` is reset before each case: on CUDA ``torch.cuda.max_memory_allocated`` of the case; on the CPU the
process's peak resident set (``VmHWM``) of the case, interpreter and data included (see ``_common``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _common import (
    peak_memory_mb,
    print_result,
    reset_peak_memory,
    stderr_logger,
    synchronize,
    take_subset,
)


def _load(args: argparse.Namespace):
    from condense.data import load_dataset

    data = load_dataset(args.dataset, args.data_root, zca=args.zca)
    if args.subset:
        take_subset(data, args.subset)
    return data


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-root", default=None)
    p.add_argument("--zca", action="store_true")
    p.add_argument("--subset", type=int, default=0, help="train on this many images only (0: all)")
    p.add_argument("--model", default="convnet")
    p.add_argument("--width", type=int, default=None, help="ConvNet width (default: the model's, 128)")
    p.add_argument("--kind", default="vanilla")
    p.add_argument("--experts", type=int, default=4, help="experts per case (K for the vmap case)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--modes", default="loop,vmap")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads on the CPU")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="expert-config overrides")
    p.add_argument("--quick", action="store_true", help="tiny CPU run (< 1 minute)")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    args = p.parse_args(argv)
    if args.quick:
        args.dataset, args.subset, args.experts, args.epochs = "digits", 0, 2, 2
        args.width = args.width or 32
        # digits has only 6 steps per epoch at batch 256; smaller batches and a larger lr make 2 epochs learn
        args.set = ["batch_size=64", "lr_teacher=0.05", *args.set]
    if args.threads:
        torch.set_num_threads(args.threads)

    from condense.config import parse_overrides
    from condense.expert_trajectories import get_expert_config, record_experts

    device = torch.device(args.device)
    data = _load(args)
    augment = "dsa_noflip" if args.dataset in ("digits", "mnist") else "dsa"
    cfg = get_expert_config(args.kind, augment=augment)
    cfg = get_expert_config(args.kind, **{"augment": augment, **parse_overrides(type(cfg), args.set)})
    model_kwargs = {"width": args.width} if args.width else {}
    log = stderr_logger(args.json)

    with tempfile.TemporaryDirectory() as tmp:
        # warm-up: torch.func imports, cuDNN autotuning, allocator
        record_experts(
            data,
            args.model,
            1,
            1,
            Path(tmp) / "warm",
            config=cfg,
            device=device,
            quiet=True,
            model_kwargs=model_kwargs,
            experts_at_once=1,
        )
        results = []
        for mode in args.modes.split(","):
            k = 1 if mode == "loop" else args.experts
            if device.type == "cuda":
                torch.cuda.empty_cache()
            reset_peak_memory(device)
            t0 = time.perf_counter()
            buf = record_experts(
                data,
                args.model,
                args.experts,
                args.epochs,
                Path(tmp) / mode,
                config=cfg,
                device=device,
                quiet=True,
                model_kwargs=model_kwargs,
                experts_at_once=k,
            )
            synchronize(device)
            seconds = time.perf_counter() - t0
            finals = [c[-1] for c in buf.accuracy_curves.values()]
            row = {
                "mode": mode,
                "k": k,
                "seconds_per_expert_epoch": round(seconds / (args.experts * args.epochs), 4),
                "peak_mem_mb": peak_memory_mb(device),
                "final_test_acc": round(sum(finals) / len(finals), 4),
            }
            results.append(row)
            log(
                f"{mode:5s} K={k:3d}  {row['seconds_per_expert_epoch']:.3f} s/expert-epoch  "
                f"peak {row['peak_mem_mb']:.0f} MB  final acc {row['final_test_acc']:.3f}"
            )

    config = {
        "dataset": args.dataset,
        "subset": args.subset or None,
        "num_train": int(data.x_train.shape[0]),
        "zca": args.zca,
        "model": args.model,
        "model_kwargs": model_kwargs,
        "kind": args.kind,
        "expert_config": cfg.to_dict(),
        "experts": args.experts,
        "epochs": args.epochs,
        "test_pass_included": True,
    }
    return print_result("experts_speed", config, results, device)


if __name__ == "__main__":
    main()
