"""DM speed: milliseconds per distillation iteration, peak memory, and accuracy after a short run.

Two step implementations are timed from the same initial state (``DM.init_state``, generator seed 0):
    - ``vectorized``: condense's ``DM.step`` (all classes in one real and one synthetic forward, Siamese DSA
      grouped by augmentation group);
    - ``per_class``: the authors' structure (``main_DM.py``: a random permutation per class for the real batch, one
      augmentation call and one embed forward per class for the real and the synthetic batch), re-implemented here
      on public building blocks, for reference.
Warm-up iterations run first and are not timed; each timed iteration is synchronized. Accuracy comes from a separate
run of ``--iterations`` iterations scored by the shared protocol (``--eval-epochs``, one seed); evaluation time is not
in the timings.

Usage:
    python benchmarks/dm_speed.py --quick --json
    python benchmarks/dm_speed.py --dataset cifar10 --data-root ../shared/data/cifar10 --device cuda --ipc 1,10,50
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import peak_memory_mb, print_result, reset_peak_memory, summarize_ms, time_ms  # noqa: E402


def _per_class_step(state, cfg, data, x_train, members, aug, gen):
    """One DM iteration with the authors' per-class loop (reference timing only).

    ``main_DM.py``: per class, ``get_images(c, batch_real)`` (a random permutation of the class's indices) and one
    augmentation call plus one embed forward for the real and the synthetic batch. Built from public pieces only:
    the state's documented tensors (``images``, ``momentum``), the dataset, the augmentation and the one in-place
    SGD (:func:`condense.optim.sgd_`).
    """
    from condense.models import create_model_for
    from condense.optim import sgd_
    from condense.seeding import seed_from

    k, images, buf = data.num_classes, state.tensors["images"], state.tensors["momentum"]
    ipc = images.shape[0] // k
    net = create_model_for(cfg.model, data, seed=seed_from(gen), device=images.device).train().requires_grad_(False)
    syn = images.detach().requires_grad_(True)
    loss = torch.zeros((), device=images.device)
    for c in range(k):
        pick = torch.randperm(members[c].numel(), generator=gen)[: cfg.batch_real].to(members[c].device)
        real_c = x_train[members[c][pick]]
        syn_c = syn[c * ipc : (c + 1) * ipc]
        if not aug.is_identity:
            p = aug.sample(real_c, generator=gen, shared=True)
            real_c, syn_c = aug(real_c, params=p), aug(syn_c, params=p)
        out_real = net.embed(real_c).detach()
        out_syn = net.embed(syn_c)
        loss = loss + (out_real.mean(0) - out_syn.mean(0)).pow(2).sum()
    (grad,) = torch.autograd.grad(loss, syn)
    sgd_(images, buf, grad, float(state.scalars["lr_img"]), momentum=cfg.momentum)
    return {"loss": float(loss.detach()) / k}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--ipc", default="10", help="comma-separated IPCs")
    p.add_argument("--batch-real", type=int, default=None, help="override the preset's batch_real")
    p.add_argument("--modes", default="vectorized,per_class")
    p.add_argument("--repeats", type=int, default=20, help="timed iterations per case")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iterations", type=int, default=None, help="iterations of the accuracy run (default: preset)")
    p.add_argument("--eval-epochs", type=int, default=300)
    p.add_argument("--no-accuracy", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads on the CPU")
    p.add_argument(
        "--quick", action="store_true", help="5 timed iterations, a 20-iteration run, 50 eval epochs, 1 CPU thread"
    )
    p.add_argument("--json", action="store_true", help="(always on) the last stdout line is the JSON result")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.eval_epochs = 5, 1, 50
        args.iterations = args.iterations or 20
        args.threads = args.threads or 1  # a smoke test: robust to a shared CPU, where threads oversubscribe
    if args.threads:
        torch.set_num_threads(args.threads)

    from condense.augment import get_augment
    from condense.data import load_dataset
    from condense.eval import evaluate
    from condense.methods import RunContext, distill, get_method

    device = torch.device(args.device)
    data = load_dataset(args.dataset, args.data_root)
    method = get_method("dm")
    x_train = data.x_train.to(device)
    members = [data.indices_of_class(c).to(device) for c in range(data.num_classes)]
    results = []
    for ipc in [int(s) for s in args.ipc.split(",")]:
        preset = method.default_preset(data.name, ipc)
        over = {} if args.batch_real is None else {"batch_real": args.batch_real}
        cfg = method.resolve_config(preset, over)
        for mode in args.modes.split(","):
            gen = torch.Generator().manual_seed(0)
            state = method.init_state(data, cfg, ipc, gen, RunContext(device=device))
            if mode == "vectorized":
                step = method.step
            else:
                aug = get_augment(cfg.augment)
                step = lambda s, i, g: _per_class_step(s, cfg, data, x_train, members, aug, g)  # noqa: B023, E731
            counter = iter(range(10**9))
            reset_peak_memory(device)
            times = time_ms(lambda: step(state, next(counter), gen), device, args.repeats, args.warmup)  # noqa: B023
            results.append(
                {
                    "case": f"{data.name}-ipc{ipc}",
                    "mode": mode,
                    "preset": preset,
                    "batch_real": cfg.batch_real,
                    **summarize_ms(times),
                    "peak_mem_mb": peak_memory_mb(device),
                }
            )
        if not args.no_accuracy:
            iters = args.iterations if args.iterations is not None else cfg.num_iterations
            t0 = time.perf_counter()
            syn = distill(
                "dm",
                data,
                ipc,
                preset=preset,
                overrides={**over, "num_iterations": iters},
                generator=torch.Generator().manual_seed(0),
                run=RunContext(device=device, quiet=True),
            )
            seconds = time.perf_counter() - t0
            row = evaluate(syn, data, models=["convnet"], seeds=1, epochs=args.eval_epochs, device=device, seed=0)
            rnd = evaluate(
                distill("random_real", data, ipc),
                data,
                models=["convnet"],
                seeds=1,
                epochs=args.eval_epochs,
                device=device,
                seed=0,
            )
            for r in results:
                if r["case"] == f"{data.name}-ipc{ipc}" and r["mode"] == "vectorized":
                    r.update(
                        accuracy=row["accuracy"]["convnet"]["mean"],
                        random_real_accuracy=rnd["accuracy"]["convnet"]["mean"],
                        accuracy_iterations=iters,
                        distill_seconds=round(seconds, 2),
                    )
    by_case: dict[str, dict[str, float]] = {}
    for r in results:
        by_case.setdefault(r["case"], {})[r["mode"]] = r["median_ms"]
    for case, modes in by_case.items():
        if "vectorized" in modes and "per_class" in modes:
            results.append(
                {
                    "case": case,
                    "mode": "speedup_vectorized_over_per_class",
                    "value": round(modes["per_class"] / modes["vectorized"], 3),
                }
            )
    config = {
        "dataset": args.dataset,
        "ipc": args.ipc,
        "device": str(device),
        "repeats": args.repeats,
        "warmup": args.warmup,
        "eval_epochs": args.eval_epochs,
        "threads": torch.get_num_threads(),
    }
    return print_result("dm_speed", config, results, device)


if __name__ == "__main__":
    main()
