"""Decoupled distillation benchmark: teachers, SRe2L / RDED / INFER / CV-DD / NRR-DD synthesis, soft labels, students
beside random real relabeled by the same teachers.

Per configuration, in this order (each stage's seconds and peak memory in the JSON):

1. ``teacher``: ``train_teacher`` on the training split with the configuration's model and recipe; its final-epoch
   test accuracy.
2. per method (``sre2l``, ``rded``, ``nrrdd`` with the first teacher; ``infer``, ``cvdd`` with it and the
   configuration's ``committee``) and IPC: ``distill(method, data, ipc, run=RunContext(teacher=...))`` timed as
   synthesis seconds and images/s (SRe2L: the whole recover run; RDED: scoring and tiling), then the set is scored
   with the ``soft_label`` protocol (the configuration's student, epochs, seeds; labels from the same teacher online)
   and, with ``--store-epochs``, relabeled into a label store whose bytes are reported next to the images' bytes.
3. ``random_real``: per IPC and teacher set (one teacher, or the committee), random real subsets relabeled by the
   same teachers under the same protocol (DD-Ranking's point: the baseline every decoupled row must beat).
4. ``recover_step``: the recover engine's step time for a batch of ``--step-batch`` images at 224 px with an
   (untrained) ``timm:resnet18`` teacher on this device, and the projection of ImageNet-1K IPC 10 from it (SRe2L's
   4000 iterations x 100 batches of 100 images): ``projected_hours = step_s * (100 / step_batch) * 4000 * 100 /
   3600`` (the step time is taken as linear in the batch; on a GPU measure with ``--step-batch 100``).

Configurations (``--config``):

- ``quick`` (CI, < 1 minute): digits, the demo teacher and a second one for 5 epochs, IPC 2 (INFER's smallest on 10
  classes with 2 teachers), the digits presets cut to 10-30 iterations, ConvNetD2 students for 50 epochs, 1 seed, a
  10-epoch label store, a 2-image 64 px step. Figures are for plumbing only.
- ``cpu`` (CIFAR-10 on this 2-core CPU, about 30 minutes per pair of methods): the first training shard (10,000
  images) and the full test set, a ConvNet-BN teacher (width 64, depth 3) trained 15 epochs with SRe2L's CIFAR
  recipe (the committee adds a width-32 one), IPC 10, SRe2L with its CIFAR preset values (lr 0.25, r_bn 0.01,
  jitter 4, no RRC) for 300 iterations instead of 1000 (INFER, CV-DD and NRR-DD also 300; their label stores 100
  epochs), RDED factor 1, ConvNet-BN students (width 128) for 100 epochs x 3 seeds, an 8-image step at 224 px.
- ``gpu`` (on an H100/H200; not run here): CIFAR-10 from ``--data-root`` (the shards present), a ResNet-18 teacher
  (``resnet18_bn``, SRe2L CIFAR recipe, 200 epochs; MobileNetV2 joins it for the committees), IPC 10 and 50, the
  methods' CIFAR presets, ResNet-18 students for 300 epochs x 3 seeds, a 100-image step at 224 px. The papers'
  figures are printed beside ours (``paper`` field: CIFAR-10 IPC 10 with ResNet-18: SRe2L 27.2, RDED 37.1, INFER
  32.0, CV-DD 44.6, NRR-DD about 72 (third-party, student unknown); SRe2L CIFAR-100 IPC 10 31.6;
  ``shared/reference/decoupled.md`` §5). Five methods at two IPCs do not fit one 10-minute call: run ``--methods
  sre2l,rded`` and ``--methods infer,cvdd,nrrdd`` as two calls with the same ``--work`` (teachers are reused).
  Their teachers trained on all 50,000 images; with two shards ours sees 10,000, so expect lower numbers.

Usage:
    python benchmarks/decoupled.py --quick
    python benchmarks/decoupled.py --config cpu --data-root ../shared/data --out decoupled_cpu.json
    python benchmarks/decoupled.py --config gpu --device cuda --data-root .gpu_data --out $OUT/decoupled.json

The GPU run (a session whose task has a device) uses the two CIFAR-10 shards that ``benchmarks/gpu_check.py``'s
docstring copies into the ignored ``.gpu_data/cifar10/`` (10,000 training images, the full test set); kornia is not
needed. Two ``run`` calls (tool arguments), after ``gpu_check.py``, then ``give_back``; the second reuses the
teachers the first trained only if the machine is still warm (``--work .gpu_work``), else it trains them again::

    carry: [".gpu_data"]    timeout_s: 590
    command: set -o pipefail; export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD;
      python3 benchmarks/decoupled.py --config gpu --device cuda --data-root .gpu_data --methods sre2l,rded
      --work .gpu_work --out $OUT/decoupled_a.json 2>&1 | tee $OUT/decoupled_a.log

and the same with ``--methods infer,cvdd,nrrdd --out $OUT/decoupled_b.json``.

The JSON is rewritten after every stage (``"status": "running"`` until the end), so a run stopped at its limit still
returns the teacher, the baselines and the sets it finished. Not measured yet (no device was lent to the sessions
that wrote it); the time estimate (teacher about 2 minutes, each IPC a few minutes) is arithmetic, not a measurement.

The last stdout line is one JSON object: ``{"benchmark": "decoupled", "metadata", "config", "results": [...],
"summary": {method: {ipc: {"accuracy", "random_real", "paper"}}}}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import metadata, run_stage, synchronize  # noqa: E402

#: (method, dataset, ipc) -> the paper's ResNet-18 figure (shared/reference/decoupled.md §5)
PAPER = {
    ("infer", "cifar10", 10): 32.0,
    ("cvdd", "cifar10", 10): 44.6,
    ("nrrdd", "cifar10", 10): 72.2,  # third-party paper notes; the student architecture is unknown
    ("sre2l", "cifar10", 10): 27.2,
    ("rded", "cifar10", 10): 37.1,
    ("sre2l", "cifar100", 10): 31.6,
    ("rded", "cifar100", 10): 42.6,
    ("sre2l", "cifar100", 50): 49.5,
    ("rded", "cifar100", 50): 62.6,
}

#: methods that read several teachers (the configuration's ``teacher`` plus its ``committee``); the others read one
COMMITTEE_METHODS = {"infer": True, "cvdd": True}

CONFIGS: dict[str, dict[str, Any]] = {
    "quick": {
        "dataset": "digits",
        "train_limit": None,
        "teacher": {"model": "convnet_bn", "model_kwargs": {"width": 64, "depth": 2}, "epochs": 5, "recipe": "digits"},
        "committee": [
            {
                "name": "convnet_bn_w32",
                "model": "convnet_bn",
                "model_kwargs": {"width": 32, "depth": 2},
                "epochs": 5,
                "recipe": "digits",
                "seed": 1,
            },
        ],
        "ipcs": [2],
        "methods": {
            "sre2l": {"preset": "digits-ipc1", "num_iterations": 30},
            "rded": {},
            "infer": {"num_iterations": 30},
            "cvdd": {"preset": "digits-ipc1", "num_iterations": 10, "relabel_epochs": 50},
            "nrrdd": {"preset": "digits-ipc1", "num_iterations": 10},
        },
        "student": "convnetd2",
        "eval_epochs": 50,
        "seeds": 1,
        "store_epochs": 10,
        "step": {"size": 64, "batch": 2, "steps": 1},
    },
    "cpu": {
        "dataset": "cifar10",
        "train_limit": 10000,
        "teacher": {"model": "convnet_bn", "model_kwargs": {"width": 64}, "epochs": 15, "recipe": "sre2l_cifar"},
        "ipcs": [10],
        "committee": [
            {
                "name": "convnet_bn_w32",
                "model": "convnet_bn",
                "model_kwargs": {"width": 32},
                "epochs": 15,
                "recipe": "sre2l_cifar",
                "seed": 1,
            },
        ],
        "methods": {
            "sre2l": {"num_iterations": 300},
            "rded": {},
            "infer": {"num_iterations": 300, "label_epochs": 100},
            "cvdd": {"num_iterations": 300, "relabel_epochs": 100},
            "nrrdd": {"num_iterations": 300},
        },
        "student": "convnet_bn",
        "eval_epochs": 100,
        "seeds": 3,
        "store_epochs": 0,
        "step": {"size": 224, "batch": 8, "steps": 2},
    },
    "gpu": {
        "dataset": "cifar10",
        "train_limit": None,
        "teacher": {"model": "resnet18_bn", "model_kwargs": {}, "epochs": 200, "recipe": "sre2l_cifar"},
        "ipcs": [10, 50],
        "committee": [
            {
                "name": "mobilenetv2",
                "model": "mobilenetv2",
                "model_kwargs": {},
                "epochs": 200,
                "recipe": "sre2l_cifar",
                "seed": 1,
            },
        ],
        "methods": {"sre2l": {}, "rded": {}, "infer": {}, "cvdd": {}, "nrrdd": {}},
        "student": "resnet18_bn",
        "eval_epochs": 300,
        "seeds": 3,
        "store_epochs": 0,
        "step": {"size": 224, "batch": 100, "steps": 5},
    },
}


def _load(cfg: dict[str, Any], data_root: str | None):
    from condense.data import load_dataset

    data = load_dataset(cfg["dataset"], data_root)
    limit = cfg.get("train_limit")
    if limit and data.x_train.shape[0] > limit:
        import dataclasses

        data = dataclasses.replace(data, x_train=data.x_train[:limit].clone(), y_train=data.y_train[:limit].clone())
    return data


def _recover_step(size: int, batch: int, steps: int, device: str) -> dict[str, Any]:
    """Median seconds of one recover step (SRe2L settings) for ``batch`` images at ``size`` px, timm:resnet18."""
    from condense.models import create_model
    from condense.recover import RecoverAugment, Recovery

    teacher = create_model("timm:resnet18", in_channels=3, num_classes=1000, image_size=(size, size), seed=0)
    teacher = teacher.to(device).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, device=device)
    rec = Recovery(
        [teacher],
        x,
        torch.arange(batch, device=device) % 1000,
        num_iterations=4000,
        lr=0.25,
        r_bn=0.01,
        augment=RecoverAugment(rrc=True, flip=True, jitter=32),
    )
    times = []
    for i in range(steps + 1):
        synchronize(device)
        t0 = time.perf_counter()
        rec.step(gen, i)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    per = sorted(times[1:])[len(times[1:]) // 2] if len(times) > 1 else times[0]
    hours = per * (100 / batch) * 4000 * 100 / 3600
    return {
        "step_seconds": round(per, 4),
        "step_batch": batch,
        "size": size,
        "projected_in1k_ipc10_hours": round(hours, 2),
    }


def _teacher(data, spec: dict[str, Any], work: Path, device: str):
    """Train the teacher ``spec`` into ``work`` (or reuse one trained there with the same settings)."""
    from condense.teachers import JSON_FILE, load_teacher, train_teacher

    name = spec.get("name", spec["model"])
    folder = work / f"{data.name}_{name}_teacher"
    if (folder / JSON_FILE).is_file():
        t = load_teacher(folder)
        same = (t.model, t.model_kwargs, t.epochs, t.seed) == (
            spec["model"],
            spec["model_kwargs"],
            spec["epochs"],
            spec.get("seed", 0),
        )
        if same and t.fingerprint == data.fingerprint:
            return t, True
    t = train_teacher(
        data,
        spec["model"],
        spec["epochs"],
        folder,
        recipe=spec["recipe"],
        model_kwargs=spec["model_kwargs"],
        seed=spec.get("seed", 0),
        device=device,
        quiet=True,
    )
    return t, False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the CI configuration (digits, < 1 minute)")
    p.add_argument("--config", choices=sorted(CONFIGS), default=None)
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--methods", default=None, help="comma-separated subset of the configuration's methods")
    p.add_argument("--out", default=None, help="also write the JSON here (after every stage)")
    p.add_argument(
        "--work", default=None, help="folder for the teachers (reused when already trained there; default: temporary)"
    )
    args = p.parse_args(argv)
    name = "quick" if args.quick or args.config is None else args.config
    cfg = CONFIGS[name]
    device = args.device
    methods = dict(cfg["methods"])
    if args.methods:
        wanted = args.methods.split(",")
        unknown = [m for m in wanted if m not in methods]
        if unknown:
            p.error(f"--methods: {unknown} not in this configuration ({', '.join(methods)})")
        methods = {m: methods[m] for m in wanted}

    from condense.eval import evaluate, random_real_baseline
    from condense.labels import relabel
    from condense.methods import RunContext, distill

    results: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    out = {"benchmark": "decoupled", "metadata": metadata(device), "config": {"name": name, **cfg}, "results": results}

    def dump(status: str) -> None:
        out["status"], out["summary"] = status, summary
        if args.out:
            Path(args.out).write_text(json.dumps(out))

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="condense-decoupled-"))
    work.mkdir(parents=True, exist_ok=True)
    data, _ = run_stage(results, "load", device, lambda: _load(cfg, args.data_root), dataset=cfg["dataset"])
    results[-1].update({"train_images": int(data.x_train.shape[0]), "test_images": int(data.x_test.shape[0])})
    needs_committee = any(COMMITTEE_METHODS.get(m) for m in methods)
    specs = [cfg["teacher"], *(cfg.get("committee", []) if needs_committee else [])]
    teachers = []
    for spec in specs:
        (t, reused), row = run_stage(
            results, "teacher", device, partial(_teacher, data, spec, work, device), model=spec["model"]
        )
        row.update({"epochs": spec["epochs"], "test_accuracy": t.test_accuracy, "reused": reused})
        teachers.append(t)
    dump("running")
    student = cfg["student"]
    ev = {"models": [student], "seeds": cfg["seeds"], "epochs": cfg["eval_epochs"], "device": device}
    for ipc in cfg["ipcs"]:
        baselines: dict[str, Any] = {}
        for method, overrides in methods.items():
            group = "committee" if COMMITTEE_METHODS.get(method) else "one"
            used = teachers if group == "committee" else teachers[:1]
            folders = [t.path for t in used]
            if group not in baselines:  # random real relabeled by the same teachers, same protocol
                base, row = run_stage(
                    results,
                    "random_real",
                    device,
                    partial(random_real_baseline, data, ipc, protocol="soft_label", teacher=folders, **ev),
                    ipc=ipc,
                    teachers=len(used),
                )
                row["accuracy"] = baselines[group] = base["accuracy"][student]
                dump("running")
            run = RunContext(device=device, teacher=folders, quiet=True)
            gen = torch.Generator().manual_seed(0)
            overrides = dict(overrides)
            preset = overrides.pop("preset", None)
            syn, srow = run_stage(
                results,
                f"{method}_synthesis",
                device,
                partial(distill, method, data, ipc, preset=preset, overrides=overrides, generator=gen, run=run),
                method=method,
                ipc=ipc,
                teachers=len(used),
            )
            srow["images_per_second"] = round(len(syn) / max(srow["seconds"], 1e-9), 2)
            iters = syn.config.get("num_iterations")
            if iters:  # recover: forward + backward + Adam per image per iteration
                srow["image_iterations_per_second"] = round(len(syn) * iters / max(srow["seconds"], 1e-9), 1)
            srow["config"] = syn.config
            srow["images"] = len(syn)
            row_eval, erow = run_stage(
                results,
                f"{method}_eval",
                device,
                partial(evaluate, syn, data, baseline=False, **ev),
                method=method,
                ipc=ipc,
            )
            erow["accuracy"] = row_eval["accuracy"][student]
            erow["image_bytes"] = row_eval["image_bytes"]
            erow["label_source"] = row_eval["label_source"]
            erow["label_bytes"] = row_eval["label_bytes"]
            if cfg["store_epochs"] and syn.label_store is None:
                from condense.augment.views import ViewRecipe

                recipe = ViewRecipe(flip=data.name not in ("digits",))
                store, lrow = run_stage(
                    results,
                    f"{method}_relabel",
                    device,
                    partial(
                        relabel,
                        syn.images,
                        [t.module for t in used],
                        epochs=cfg["store_epochs"],
                        batch_size=row_eval["batch_size"],
                        recipe=recipe,
                        device=device,
                    ),
                    method=method,
                    ipc=ipc,
                )
                lrow["label_bytes"] = store.label_bytes
                lrow["image_bytes"] = int(syn.images.numel())
            summary.setdefault(method, {})[str(ipc)] = {
                "accuracy": erow["accuracy"],
                "random_real": baselines[group],
                "teachers": len(used),
                "paper": PAPER.get((method, data.name, ipc)),
                "teacher_accuracy": [t.test_accuracy for t in used],
                "synthesis_seconds": srow["seconds"],
                "images": len(syn),
                "label_bytes": erow["label_bytes"],
            }
            dump("running")
    st = cfg["step"]
    step, srow = run_stage(
        results, "recover_step", device, lambda: _recover_step(st["size"], st["batch"], st["steps"], device)
    )
    srow.update(step)
    dump("complete")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
