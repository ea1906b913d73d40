"""The digits demo behind ``condense run``: record the method's demo buffer, distill, evaluate, compare.

``DEMO_BUFFERS`` is the one table of expert buffers the digits presets of the trajectory methods were tuned on
(the tests record the same buffers). Settings, measured on 2 CPU cores, not from a paper: a depth-2 ConvNet of
width 32 (on 8x8 inputs the depth-3 ConvNet instance-normalizes a 2x2 map in its last block, whose double backward
makes the meta-gradient spike by 1e3-1e5 between iterations; depth 2 normalizes 4x4 maps, as depth 3 does on 32x32
CIFAR), SGD lr 0.05 with batch 64 (the MTT defaults, lr 0.01 and batch 256, leave a digits expert at chance for its
first five epochs), DSA without flips, 6 epochs (the presets need T+ = 3 plus M = 2). About 5 s to record (10 s for
flat experts).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DEMO_BUFFERS",
    "DEMO_COMMITTEES",
    "DEMO_ENCODER",
    "DEMO_TEACHER",
    "demo_buffer",
    "demo_teacher",
    "run_demo",
]

_DIGITS_VANILLA: dict[str, Any] = {
    "kind": "vanilla",
    "model": "convnetd2",
    "model_kwargs": {"width": 32},
    "experts": 2,
    "epochs": 6,
    "config": {"lr_teacher": 0.05, "batch_size": 64, "augment": "dsa_noflip"},
}

#: method name -> the expert buffer ``condense run`` records for it on digits:
#: ``record_experts(data, model, experts, epochs, out, kind=kind, model_kwargs=model_kwargs,
#: config=get_expert_config(kind, **config))``.
DEMO_BUFFERS: dict[str, dict[str, Any]] = {
    "mtt": _DIGITS_VANILLA,
    "ftd": {**_DIGITS_VANILLA, "kind": "flat"},
    "datm": {**_DIGITS_VANILLA, "kind": "flat"},
    # AST's smooth experts (momentum 0.9, weight decay 1e-3, clipping loss, gradient penalty) with the same lr and
    # batch: they reach 96-97% after 6 epochs on digits (vanilla: 94-96%), measured.
    "ast": {**_DIGITS_VANILLA, "kind": "smooth"},
}


#: The teacher ``condense run`` trains for the decoupled methods (SRe2L, RDED) on digits, and the tests' teacher:
#: ``train_teacher(data, model, epochs, out, recipe=recipe, model_kwargs=model_kwargs)``. A depth-2 BatchNorm ConvNet
#: of width 64 (depth 3 pools 8x8 digits to 1x1); measured on 1 CPU thread: 3 s, 99.2 % test accuracy.
DEMO_TEACHER: dict[str, Any] = {
    "model": "convnet_bn",
    "model_kwargs": {"width": 64, "depth": 2},
    "epochs": 15,
    "recipe": "digits",
}


#: Committee methods train several demo teachers (the tests' committees): CV-DD votes with three depth-2 BatchNorm
#: ConvNets of other widths and seeds, INFER compensates against two architectures (a depth-1 one beside the demo's).
DEMO_COMMITTEES: dict[str, list[dict[str, Any]]] = {
    "cvdd": [
        DEMO_TEACHER,
        {**DEMO_TEACHER, "name": "convnet_bn_w32_s1", "model_kwargs": {"width": 32, "depth": 2}, "seed": 1},
        {**DEMO_TEACHER, "name": "convnet_bn_w64_s2", "seed": 2},
    ],
    "infer": [DEMO_TEACHER, {**DEMO_TEACHER, "name": "convnet_bn_w32_d1", "model_kwargs": {"width": 32, "depth": 1}}],
}


#: The target encoder ``condense run --method krr_st`` trains on the source half of digits (KRR-ST reads no labels):
#: ``train_encoder(source, model, epochs, out, model_kwargs=model_kwargs)``; a Barlow Twins ConvNet-BN of depth 2 and
#: width 64, 30 epochs, linear probe 100 % on the source classes (measured; about 10 s on one CPU thread).
DEMO_ENCODER: dict[str, Any] = {"model": "convnet_bn", "model_kwargs": {"width": 64, "depth": 2}, "epochs": 30}


def demo_buffer(method: str) -> dict[str, Any] | None:
    """The demo buffer settings of ``method`` (None when the method reads no buffer)."""
    spec = DEMO_BUFFERS.get(method)
    return None if spec is None else {**spec, "config": dict(spec["config"])}


def demo_teacher(
    data: Any,
    out: Path,
    *,
    seed: int = 0,
    device: str = "cpu",
    quiet: bool = True,
    say: Callable[[str], None],
    spec: Mapping[str, Any] | None = None,
) -> Path:
    """Train a demo teacher (``spec``, default :data:`DEMO_TEACHER`) on ``data`` into ``out/<dataset>_<name>_teacher``
    (a teacher already there that fits the data and was trained with the same settings is reused); its folder."""
    from condense.teachers import JSON_FILE, load_teacher, train_teacher

    spec = dict(spec or DEMO_TEACHER)
    t_seed = seed + int(spec.get("seed", 0))
    name = spec.get("name", spec["model"])
    folder = Path(out) / f"{data.name}_{name}_teacher"
    if (folder / JSON_FILE).is_file():
        t = load_teacher(folder)
        t.check_compatible(data)
        if (t.model, t.model_kwargs, t.epochs, t.seed) == (spec["model"], spec["model_kwargs"], spec["epochs"], t_seed):
            say(f"[1/3] reusing the demo teacher {folder} ({100 * t.test_accuracy:.1f} % test)")
            return folder
    say(f"[1/3] training the demo teacher {name} ({spec['model']}, {spec['epochs']} epochs) into {folder}")
    t = train_teacher(
        data,
        spec["model"],
        spec["epochs"],
        folder,
        recipe=spec["recipe"],
        model_kwargs=spec["model_kwargs"],
        seed=t_seed,
        device=device,
        quiet=quiet,
    )
    say(f"      teacher test accuracy {100 * t.test_accuracy:.1f} %")
    return folder


def run_demo(
    data: Any,
    method: str,
    ipc: int,
    out: str | Path,
    *,
    models: Sequence[str] | None = None,
    seeds: int = 3,
    epochs: int | None = 300,
    protocol: str | None = None,
    experts: int | None = None,
    expert_epochs: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    device: str = "cpu",
    quiet: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Distill ``data`` with ``method``, then score the set and a random real subset of the same size.

    Three stages, each announced through ``progress`` (the CLI passes ``print``): (1) when the method matches expert
    trajectories, record its demo buffer (:data:`DEMO_BUFFERS`) into ``out`` (rerunning resumes the recording);
    (2) distill (the JSONL log goes to ``out/<dataset>_<method>_ipc<N>_work``) and save the artifact in ``out``;
    (3) evaluate it and a random real subset with the shared protocol (same seeds, same epochs).

    Returns:
        ``{"dataset", "method", "ipc", "distilled_acc", "random_acc", "distilled", "random", "epochs", "artifact",
        "seconds"}``; accuracies are fractions, ``*_acc`` the mean of the first evaluation model.
    """
    import torch

    from condense.eval import evaluate, random_real_baseline
    from condense.expert_trajectories import get_expert_config, record_experts
    from condense.methods import RunContext, distill, get_method

    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    out = Path(out)
    if get_method(method).teacher_kind == "encoder":
        return _run_transfer_demo(data, method, ipc, out, seeds, epochs, overrides, seed, device, quiet, say, t0)
    buffer = None
    if get_method(method).needs_buffer:
        spec = demo_buffer(method)
        if spec is None:
            from condense.errors import ConfigError

            raise ConfigError(
                f"method '{method}' needs an expert buffer and has no demo buffer; use 'condense experts'"
            )
        kind, model = spec["kind"], spec["model"]
        n_experts, n_epochs = experts or spec["experts"], expert_epochs or spec["epochs"]
        buffer = out / f"{data.name}_{model}_{kind}_buffer"
        say(f"[1/3] recording {n_experts} {kind} experts ({model}) x {n_epochs} epochs into {buffer}")
        record_experts(
            data,
            model,
            n_experts,
            n_epochs,
            buffer,
            kind=kind,
            config=get_expert_config(kind, **spec["config"]),
            model_kwargs=spec["model_kwargs"],
            seed=seed,
            device=device,
            quiet=quiet,
        )
    teacher = None
    if getattr(get_method(method), "needs_teacher", False):
        specs = DEMO_COMMITTEES.get(method, [DEMO_TEACHER])
        teacher = [demo_teacher(data, out, seed=seed, device=device, quiet=quiet, say=say, spec=s) for s in specs]
    say(f"[2/3] distilling {data.name} with {method} at ipc {ipc}")
    run = RunContext(
        device=device,
        out_dir=out / f"{data.name}_{method}_ipc{ipc}_work",
        checkpoint_every=0,  # demo runs take seconds to minutes: no checkpoints
        quiet=quiet,
        buffer=buffer,
        teacher=teacher,
    )
    gen = torch.Generator().manual_seed(seed)
    syn = distill(method, data, ipc, overrides=overrides, generator=gen, run=run)
    path = syn.save(out / f"{data.name}_{method}_ipc{ipc}.safetensors")
    say(f"[3/3] evaluating the distilled set and a random real subset ({seeds} seeds x {epochs} epochs)")
    kw = {"models": models, "seeds": seeds, "epochs": epochs, "device": device, "seed": seed, "quiet": quiet}
    if protocol is not None:
        kw["protocol"] = protocol
    row = evaluate(syn, data, **kw)
    if row.get("random_real") is not None:  # soft_label: random real relabeled by the same teacher, in the row
        random_acc = row["random_real"]
    else:
        random_acc = random_real_baseline(data, ipc, **{**kw, "models": list(row["accuracy"])})["accuracy"]
    first = next(iter(row["accuracy"]))
    return {
        "dataset": data.name,
        "method": method,
        "ipc": ipc,
        "distilled_acc": row["accuracy"][first]["mean"],
        "random_acc": random_acc[first]["mean"],
        "distilled": row["accuracy"],
        "random": random_acc,
        "epochs": row.get("epochs"),
        "artifact": str(path),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _run_transfer_demo(
    data: Any,
    method: str,
    ipc: int,
    out: Path,
    seeds: int,
    epochs: int | None,
    overrides: Mapping[str, Any] | None,
    seed: int,
    device: str,
    quiet: bool,
    say: Callable[[str], None],
    t0: float,
) -> dict[str, Any]:
    """``run_demo`` for a self-supervised method (KRR-ST): class split, target encoder, distill, transfer."""
    import torch

    from condense.eval import evaluate, get_protocol
    from condense.eval.transfer import class_split
    from condense.methods import RunContext, distill
    from condense.teachers import ENCODER_JSON_FILE, load_encoder, train_encoder

    source, target = class_split(data, seed)
    spec = DEMO_ENCODER
    folder = out / f"{data.name}_split{seed}_{spec['model']}_encoder"
    enc = None
    if (folder / ENCODER_JSON_FILE).is_file():
        enc = load_encoder(folder)
        enc.check_compatible(source)
        if (enc.model, enc.model_kwargs, enc.epochs, enc.seed) != (
            spec["model"],
            spec["model_kwargs"],
            spec["epochs"],
            seed,
        ):
            enc = None
        else:
            say(f"[1/3] reusing the target encoder {folder} (linear probe {100 * enc.probe_accuracy:.1f} %)")
    if enc is None:
        say(
            f"[1/3] training a Barlow Twins target encoder ({spec['model']}, {spec['epochs']} epochs) on the source "
            f"classes {', '.join(source.classes)} into {folder}"
        )
        enc = train_encoder(
            source, spec["model"], spec["epochs"], folder, model_kwargs=spec["model_kwargs"], seed=seed, device=device
        )
        say(f"      linear probe {100 * enc.probe_accuracy:.1f} %")
    m = ipc * source.num_classes
    say(f"[2/3] distilling the source half of {data.name} into {m} images with {method}")
    run = RunContext(
        device=device,
        out_dir=out / f"{data.name}_{method}_ipc{ipc}_work",
        checkpoint_every=0,
        quiet=quiet,
        teacher=folder,
    )
    syn = distill(method, source, ipc, overrides=overrides, generator=torch.Generator().manual_seed(seed), run=run)
    path = syn.save(out / f"{data.name}_{method}_ipc{ipc}.safetensors")
    protocol = get_protocol("transfer").replace(**{k: v for k, v in syn.meta["eval"].items() if k != "protocol"})
    protocol = protocol.replace(pretrain_epochs=epochs)
    say(
        f"[3/3] transfer to the held-out classes {', '.join(target.classes)}: pre-train {protocol.pretrain_epochs} "
        f"epochs, fine-tune {protocol.finetune_iterations} iterations, {seeds} seeds; beside no pre-training and a "
        f"random real subset of {m} images"
    )
    row = evaluate(syn, source, protocol=protocol, target=target, seeds=seeds, device=device)
    first = next(iter(row["accuracy"]))
    return {
        "dataset": data.name,
        "method": method,
        "ipc": ipc,
        "num_images": m,
        "distilled_acc": row["accuracy"][first]["mean"],
        "random_acc": row["random_real"][first]["mean"],
        "scratch_acc": row["scratch"][first]["mean"],
        "distilled": row["accuracy"],
        "random": row["random_real"],
        "scratch": row["scratch"],
        "random_labels": row["random_real_labels"],
        "protocol": protocol.to_dict(),
        "target": row["target"],
        "artifact": str(path),
        "seconds": round(time.perf_counter() - t0, 2),
    }
