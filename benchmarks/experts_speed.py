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
On the CPU ``peak_mem_mb`` is the process's peak resident set size so far (monotonic over the cases); on CUDA it is
``torch.cuda.max_memory_allocated`` of the case.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _commit() -> str | None:
    """The checked-out commit, read from .git without running git."""
    head = REPO / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            path = REPO / ".git" / ref[5:]
            if path.is_file():
                return path.read_text().strip()[:12]
            packed = REPO / ".git" / "packed-refs"
            for line in packed.read_text().splitlines():
                if line.endswith(ref[5:]):
                    return line.split()[0][:12]
            return None
        return ref[:12]
    except OSError:
        return None


def _metadata(device: torch.device) -> dict:
    import condense

    return {
        "commit": _commit(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "condense": condense.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or None,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "cpu_threads": torch.get_num_threads(),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def _load(args: argparse.Namespace):
    from condense.data import load_dataset

    data = load_dataset(args.dataset, args.data_root, zca=args.zca)
    if args.subset:
        # a fixed, class-mixed prefix of a seeded permutation: same subset every run
        perm = torch.randperm(data.x_train.shape[0], generator=torch.Generator().manual_seed(0))[: args.subset]
        data.x_train, data.y_train = data.x_train[perm].contiguous(), data.y_train[perm].contiguous()
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
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))

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
                torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
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
            _sync(device)
            seconds = time.perf_counter() - t0
            finals = [c[-1] for c in buf.accuracy_curves.values()]
            row = {
                "mode": mode,
                "k": k,
                "seconds_per_expert_epoch": round(seconds / (args.experts * args.epochs), 4),
                "peak_mem_mb": round(_peak_mb(device), 1),
                "final_test_acc": round(sum(finals) / len(finals), 4),
            }
            results.append(row)
            log(
                f"{mode:5s} K={k:3d}  {row['seconds_per_expert_epoch']:.3f} s/expert-epoch  "
                f"peak {row['peak_mem_mb']:.0f} MB  final acc {row['final_test_acc']:.3f}"
            )

    report = {
        "benchmark": "experts_speed",
        "metadata": _metadata(device),
        "config": {
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
        },
        "results": results,
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
