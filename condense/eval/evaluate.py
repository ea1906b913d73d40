"""The shared evaluation entry points: score a SyntheticSet, a random real subset or the full data the same way.

One call per question, for every data kind: :func:`evaluate`, :func:`random_real_baseline` and
:func:`full_data_baseline` read ``data.kind`` and send image datasets to the image trainer
(:mod:`condense.eval.images`) and graph datasets to the GNN trainer (:mod:`condense.eval.graphs`). A synthetic set
of the wrong kind for its dataset is refused with one :class:`~condense.errors.MismatchError`.

Rows keep each kind's format: image rows carry ``protocol`` (a name), ``protocol_version``, ``epochs``, ``lr``,
``augment``, ``seeds`` and ``label_kind``; graph rows carry ``num_graphs``, ``metric``, ``roc_auc`` (binary) and
``protocol`` (the whole recipe as a dict). Both carry ``method``, ``dataset``, ``ipc``, ``accuracy`` (per model
``{"mean", "std", "runs"}``, fractions) and ``seconds``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from condense.config import check_range
from condense.data.base import ImageData
from condense.errors import ArgumentTypeError, ConfigError, MismatchError
from condense.eval import graphs
from condense.eval.checks import (
    check_count,
    check_images,
    check_ipc,
    check_kind,
    check_labels,
    check_options,
    data_kind,
    images_only,
)
from condense.eval.images import train_and_test
from condense.eval.metrics import summarize
from condense.eval.protocol import (
    DEFAULT_PROTOCOLS,
    PROTOCOLS,
    EvalProtocol,
    GraphProtocol,
    SoftLabelProtocol,
    get_protocol,
)
from condense.eval.transfer import TransferProtocol, transfer_evaluate
from condense.seeding import generator as seeded_generator
from condense.synthetic import SyntheticSet

__all__ = [
    "evaluate",
    "evaluate_tensors",
    "random_real_baseline",
    "full_data_baseline",
    "distilled_model",
]

#: Models for raw tensors, baselines and sets that record no distillation model (ConvNet-3, the field's default).
DEFAULT_MODELS = ("convnet",)


def distilled_model(syn: SyntheticSet) -> str:
    """The architecture an image set was distilled with, which :func:`evaluate` trains by default.

    MTT, FTD, DATM and DC/DM score a set with the network it was distilled with (MTT ``utils.py``
    ``get_eval_pool('S', model, model)``, eval mode "S"; the DC code's ``main.py`` the same), e.g. ConvNetD4 for
    Tiny ImageNet. Read, in order: ``syn.meta["model"]`` (the trajectory methods record their buffer's model
    there), ``syn.config["model"]`` (DC, DSA, DM and herding record their network in the config; the trajectory
    configs hold None there, meaning the buffer's), else ``"convnet"`` (sets without a recorded model, e.g.
    random real).

    Example:
        >>> from condense.data import load_dataset
        >>> from condense.methods import distill
        >>> distilled_model(distill("random_real", load_dataset("digits"), ipc=1))
        'convnet'
    """
    for source in (syn.meta, syn.config):
        name = source.get("model") if isinstance(source, dict) else None
        if isinstance(name, str) and name:
            return name
    return DEFAULT_MODELS[0]


def _graph_options(data: Any, kw: dict[str, Any], vmap: bool | None) -> dict[str, Any]:
    """``kw`` for the GNN trainer: refuses the image-only options (temperature, vmap) and drops ``temperature``."""
    images_only(data, temperature=kw["temperature"], vmap=vmap)
    return {k: v for k, v in kw.items() if k != "temperature"}


def _image_protocol(
    protocol: str | EvalProtocol | GraphProtocol | SoftLabelProtocol | None,
    epochs: int | None,
    batch_size: int | None,
    temperature: float | None,
) -> EvalProtocol | SoftLabelProtocol:
    proto = get_protocol(DEFAULT_PROTOCOLS["images"] if protocol is None else protocol)
    if not isinstance(proto, (EvalProtocol, SoftLabelProtocol)):
        raise ConfigError(f"protocol '{proto.name}' trains GNNs; image evaluation needs one such as 'classic'")
    return proto.replace(epochs=epochs, batch_size=batch_size, temperature=temperature)


TeacherArg = Any  # a teacher folder (str | Path), a condense.teachers.Teacher, or a list of them


def _load_teachers(teacher: TeacherArg, data: ImageData, recorded: Any = None) -> list[Any]:
    """Teachers from ``teacher`` (folders or Teacher objects), else from a set's ``meta["teachers"]`` references;
    each must fit ``data`` (class order, preprocessing), and a recorded teacher must still be the same file."""

    from condense.teachers import Teacher, load_teacher

    items = teacher if isinstance(teacher, (list, tuple)) else ([] if teacher is None else [teacher])
    out = []
    if items:
        for t in items:
            if isinstance(t, (str, Path)):
                t = load_teacher(t)
            if not isinstance(t, Teacher):
                raise ArgumentTypeError(f"teacher must be a teacher folder or a Teacher, got {type(t).__name__}")
            out.append(t)
    else:
        for ref in recorded or []:
            path = ref.get("path") if isinstance(ref, dict) else None
            if not path:
                raise ConfigError("the set records a teacher without a folder; pass teacher=DIR to evaluate it")
            t = load_teacher(path)
            if ref.get("sha256") and t.sha256 != ref["sha256"]:
                raise MismatchError(
                    f"teacher '{path}' is not the one the set was made with (its sha256 changed); pass teacher=DIR"
                )
            out.append(t)
    if not out:
        raise ConfigError(
            "the soft_label protocol needs a teacher: pass teacher=DIR (condense teachers train ... --out DIR) or "
            "score a set that records one"
        )
    for t in out:
        t.check_compatible(data)
    return out


def _soft_row(
    images: torch.Tensor,
    data: ImageData,
    proto: SoftLabelProtocol,
    models: Sequence[str],
    seed_list: list[int],
    teachers: list[Any],
    store: Any,
    ipc: int | None,
    device: torch.device | str,
    quiet: bool,
    desc: str,
    labels: torch.Tensor | None = None,
) -> dict[str, Any]:
    """One soft-label evaluation row: students trained on ``images`` with stored or online teacher labels.

    ``labels`` (the images' classes) are read only by a DBR store (NRR-DD), whose student loss needs them; such a
    row adds ``"label_mode": "dbr"``.
    """
    from condense.eval.soft import train_soft
    from condense.labels import ensemble_logits

    use_store = store is not None and proto.labels in ("auto", "stored")
    if proto.labels == "stored" and store is None:
        raise ConfigError("protocol labels='stored' but the set carries no label store; relabel it or use 'online'")
    dev = torch.device(device)
    modules = [t.module.to(dev).eval() for t in teachers]
    labeler = None if use_store else (lambda x: ensemble_logits(modules, None, x))
    batch = store.batch_size if use_store else proto.batch_for(ipc, data.num_classes)
    flip = proto.flip_for(data.name)
    t0 = time.perf_counter()
    acc: dict[str, Any] = {}
    for m in models:
        runs = train_soft(
            images,
            data.x_test,
            data.y_test,
            m,
            num_classes=data.num_classes,
            seeds=seed_list,
            protocol=proto,
            batch_size=batch,
            flip=flip,
            labeler=labeler,
            store=store if use_store else None,
            device=dev,
            quiet=quiet,
            desc=desc,
            labels=labels,
        )
        acc[m] = summarize(runs)
    extra = {"label_mode": "dbr"} if use_store and store.mode == "dbr" else {}
    return {
        **extra,
        "protocol": proto.name,
        "protocol_version": proto.version,
        "epochs": proto.epochs,
        "lr": proto.lr,
        "batch_size": batch,
        "temperature": proto.temperature,
        "label_source": "stored" if use_store else "online",
        "teacher_at_train_time": not use_store,
        "teachers": store.manifest["teachers"] if use_store else [t.reference() for t in teachers],
        "image_bytes": int(images.numel()),  # as uint8 pixels, how the papers count storage
        "label_bytes": int(store.label_bytes) if use_store else 0,
        "seeds": seed_list,
        "accuracy": acc,
        "seconds": round(time.perf_counter() - t0, 3),
    }


# ---------------------------------------------------------------------------------------------- images


def evaluate_tensors(
    images: torch.Tensor,
    labels: torch.Tensor,
    data: ImageData,
    *,
    models: Sequence[str] | None = None,
    seeds: int | Sequence[int] = 5,
    protocol: str | EvalProtocol | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    temperature: float | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    vmap: bool | None = None,
    quiet: bool = True,
    desc: str = "eval",
    teacher: TeacherArg = None,
) -> dict[str, Any]:
    """Train fresh image models on ``(images, labels)`` and score them on ``data``'s test split.

    Args:
        images, labels: the training set (synthetic, a random subset or the full data).
        data: an image dataset (its test split is scored; its name resolves ``augment="auto"``).
        models: registered model names (default ``convnet``).
        seeds: models per architecture (seeds ``seed .. seed + seeds - 1``) or an explicit list.
        protocol: the recipe (default ``"classic"``). epochs, batch_size, temperature: overrides of the protocol's.
        lr: the learning rate (default: the protocol's). device: where to train. vmap: see
            :func:`~condense.eval.images.train_and_test`. quiet: hide progress bars. desc: progress-bar label.
        teacher: with the ``soft_label`` protocol, the teacher folder(s) or Teacher(s) that label the views online
            (``labels`` are then only checked); the row adds the label source, teachers and bytes.

    Returns:
        ``{"protocol", "protocol_version", "epochs", "lr", "augment", "seeds", "accuracy": {model: {"mean",
        "std", "runs"}}, "seconds"}`` with accuracies as fractions.

    Shape:
        images: (N, C, H, W) with the (C, H, W) of ``data``. labels: (N,) int64 or (N, K) float soft labels.
    """
    if data_kind(data) != "images":
        raise MismatchError(f"evaluate_tensors trains image models but data '{data.name}' holds graphs; use evaluate")
    if not isinstance(images, torch.Tensor):
        raise ArgumentTypeError(f"images must be a torch.Tensor (N, C, H, W), got {type(images).__name__}")
    kw = check_options("images", models, seeds, protocol, epochs, lr, batch_size, temperature, device, seed)
    check_labels(labels, data, "labels")
    check_images(images, labels, data)
    proto = _image_protocol(protocol, epochs, batch_size, temperature)
    seed_list = list(range(seed, seed + seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if isinstance(proto, SoftLabelProtocol):
        if lr is not None:
            proto = proto.replace(lr=float(lr))
        teachers = _load_teachers(teacher, data)
        ipc = max(1, round(images.shape[0] / data.num_classes))
        return _soft_row(
            images, data, proto, kw["models"] or [proto.model], seed_list, teachers, None, ipc, device, quiet, desc
        )
    if teacher is not None:
        raise ConfigError(f"teacher= is read by the soft_label protocol only, not by '{proto.name}'")
    use_lr = float(lr) if lr is not None else proto.lr
    check_range("lr", use_lr, 0.0, lo_open=True)
    augment = proto.augment_for(data.name)
    t0 = time.perf_counter()
    acc: dict[str, Any] = {}
    for m in kw["models"] or DEFAULT_MODELS:
        runs = train_and_test(
            images,
            labels,
            data.x_test,
            data.y_test,
            m,
            num_classes=data.num_classes,
            seeds=seed_list,
            protocol=proto,
            lr=use_lr,
            augment=augment,
            device=device,
            vmap=vmap,
            quiet=quiet,
            desc=desc,
        )
        acc[m] = summarize(runs)
    return {
        "protocol": proto.name,
        "protocol_version": proto.version,
        "epochs": proto.epochs,
        "lr": use_lr,
        "augment": augment,
        "seeds": seed_list,
        "accuracy": acc,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _transfer_row(
    syn: SyntheticSet,
    source: ImageData,
    protocol: Any,
    target: Any,
    kw: dict[str, Any],
    epochs: int | None,
    batch_size: int | None,
    seeds: int | Sequence[int],
    device: Any,
) -> dict[str, Any]:
    """:func:`evaluate` under the ``transfer`` protocol: pre-train on the set, fine-tune on ``target``."""
    if target is None or getattr(target, "kind", None) != "images":
        raise ConfigError(
            "the transfer protocol fine-tunes on a target task: pass target= an ImageData (e.g. the held-out half "
            "of condense.eval.transfer.class_split(data), or few_labels(data, n)); got "
            f"{type(target).__name__ if target is not None else 'none'}"
        )
    if kw["models"] or not isinstance(seeds, int) or kw["seed"]:
        raise ConfigError(
            "the transfer protocol trains its own model (protocol.model) with seeds 0..seeds-1; "
            "pass neither models= nor a seed list nor seed="
        )
    if isinstance(protocol, TransferProtocol):
        proto = protocol
    else:  # the registered protocol, sized by what the set's preset records (KRR-ST's digits preset: the demo net)
        recorded = syn.meta.get("eval") if isinstance(syn.meta.get("eval"), dict) else {}
        proto = PROTOCOLS.get("transfer").replace(**{k: v for k, v in recorded.items() if k != "protocol"})
    proto = proto.replace(pretrain_epochs=epochs, batch_pretrain=batch_size)
    encoder = None
    ref = syn.meta.get("encoder") if isinstance(syn.meta, dict) else None
    if isinstance(ref, dict) and ref.get("path") and Path(ref["path"]).exists():
        from condense.teachers.ssl import load_encoder

        encoder = load_encoder(ref["path"], map_location=device)
        if encoder.sha256 != ref.get("sha256"):
            raise MismatchError(
                f"the set was distilled with the encoder of sha256 {ref.get('sha256')}; '{ref['path']}' now holds "
                f"{encoder.sha256}"
            )
    t0 = time.perf_counter()
    rows = {
        r["row"]: r
        for r in transfer_evaluate(syn, source, target, protocol=proto, seeds=seeds, encoder=encoder, device=device)
    }
    model = proto.model
    out: dict[str, Any] = {
        "method": syn.method,
        "dataset": source.name,
        "ipc": syn.ipc,
        "num_images": len(syn.images),
        "label_kind": "representations" if "krr_targets" in syn.tensors else ("soft" if syn.soft_labels else "hard"),
        "protocol": proto.name,
        "protocol_version": proto.version,
        "target": {"dataset": target.name, "classes": list(target.classes), "num_train": len(target.x_train)},
        "seeds": list(range(seeds)),
        "accuracy": {model: summarize(rows["set"]["accuracies"])},
    }
    for name in ("scratch", "random_real", "random_real_labels"):
        out[name] = {model: summarize(rows[name]["accuracies"])} if name in rows else None
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


# ---------------------------------------------------------------------------------------------- entry points


def evaluate(
    syn: Any,
    data: Any,
    *,
    models: Sequence[str] | None = None,
    seeds: int | Sequence[int] = 5,
    protocol: str | EvalProtocol | GraphProtocol | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    temperature: float | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    vmap: bool | None = None,
    quiet: bool = True,
    teacher: TeacherArg = None,
    baseline: bool = True,
    target: Any = None,
) -> dict[str, Any]:
    """Score a :class:`~condense.synthetic.SyntheticSet` with the shared protocol of its kind; returns one row.

    Images (``data.kind == "images"``): fresh ``models`` (default: the model the set was distilled with,
    :func:`distilled_model`, e.g. ``convnetd4`` for a Tiny ImageNet trajectory set; ``convnet`` when the set
    records none) trained with the ``classic`` protocol; the learning rate is, in order, ``lr`` if given, the
    set's learned lr (when the protocol uses it), the protocol's lr; soft labels train with the KD loss at the
    protocol's temperature (or the set's ``meta["temperature"]``). Graphs (``data.kind == "graphs"``): fresh GNNs
    (default ``gcn``) trained with the ``graph`` protocol (:func:`condense.eval.graphs.evaluate_graph_set`);
    ``temperature`` and ``vmap`` do not apply.

    Args:
        syn: the set to score; ``syn.kind`` must match ``data.kind``.
        data: the dataset it was distilled from.
        models: architectures to train (default images: ``[distilled_model(syn)]``; pass a list for
            cross-architecture scores). seeds: runs per architecture (a count from ``seed``, or a list).
        protocol: a name in ``PROTOCOLS`` or a protocol object (default for images: the set's
            ``meta["eval"]["protocol"]``, which a preset records, e.g. ``datm`` for DATM's presets, else ``classic``;
            ``graph`` for graphs).
        epochs, lr, batch_size, temperature: overrides of the protocol's values.
        device: where to train. seed: first seed. vmap: images only. quiet: hide progress bars.
        teacher: ``soft_label`` protocol (the decoupled methods' default, recorded by SRe2L/RDED sets): the teacher
            folder(s) or Teacher(s) whose logits train the student; default the teachers the set records (reloaded
            and checked against their recorded sha256). A set that carries a label store replays it instead (no
            teacher at training time) unless the protocol says ``labels="online"``.
        baseline: ``soft_label`` protocol only: also score random real subsets at the set's IPC relabeled online by
            the same teacher(s), same students, seeds and epochs (:func:`random_real_baseline`), as
            ``row["random_real"]`` (the decoupled family's baseline, in every row); skipped (None) when the teachers
            are not available (a stored-label set whose teacher folders are gone).
        target: ``transfer`` protocol only (KRR-ST's default, ``condense.eval.transfer``): the task to fine-tune on
            (an ImageData, e.g. the other half of :func:`~condense.eval.transfer.class_split`); ``data`` is then the
            source the set was distilled from. The row's ``accuracy`` is the fine-tuned accuracy after pre-training
            on the set, beside ``scratch`` (no pre-training) and ``random_real`` (a random real subset of the same
            size, pre-trained with the set's objective; for a KRR-ST set also ``random_real_labels``, with
            cross-entropy on its labels). ``epochs`` sets the pre-training epochs.

    Raises:
        MismatchError: ``syn`` and ``data`` are of different kinds, classes or preprocessing.

    Example:
        >>> from condense.data import load_dataset
        >>> from condense.methods import distill
        >>> data = load_dataset("digits")
        >>> row = evaluate(distill("random_real", data, ipc=1), data, seeds=1, epochs=2)
        >>> list(row["accuracy"]), row["epochs"], len(row["accuracy"]["convnet"]["runs"])
        (['convnet'], 2, 1)
    """
    if not isinstance(syn, SyntheticSet):
        raise ArgumentTypeError(
            f"syn must be a SyntheticSet (from distill() or SyntheticSet.load), got {type(syn).__name__}; "
            "to score raw tensors use evaluate_tensors(images, labels, data)"
        )
    kind = check_kind(syn, data)
    kw = check_options(kind, models, seeds, protocol, epochs, lr, batch_size, temperature, device, seed)
    if syn.labels.ndim == 1:
        check_labels(syn.labels, data, "syn.labels")
    if kind == "graphs":
        return graphs.evaluate_graph_set(syn, data, quiet=quiet, **_graph_options(data, kw, vmap))
    syn.check_compatible(data)
    if protocol is None:  # the protocol the set's preset was published with (DATM: "datm", batch 128), else classic
        protocol = (syn.meta.get("eval") or {}).get("protocol") if isinstance(syn.meta, dict) else None
    if protocol == "transfer" or isinstance(protocol, TransferProtocol):
        return _transfer_row(syn, data, protocol, target, kw, epochs, batch_size, seeds, device)
    if target is not None:
        raise ConfigError(f"target= is read by the transfer protocol only, not by '{protocol or 'classic'}'")
    proto = _image_protocol(protocol, epochs, batch_size, temperature)
    if isinstance(proto, SoftLabelProtocol):
        if lr is not None:
            proto = proto.replace(lr=float(lr))
        evaluation = syn.meta.get("eval") if isinstance(syn.meta.get("eval"), dict) else {}
        store = getattr(syn, "label_store", None)
        if store is not None and proto.labels != "online":
            teachers = []  # stored labels need no teacher; the row reports the store's teachers
        else:
            teachers = _load_teachers(teacher, data, syn.meta.get("teachers"))
        models = kw["models"] or [evaluation.get("model") or proto.model]
        seed_list = list(range(seed, seed + seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
        row = _soft_row(
            syn.images,
            data,
            proto,
            models,
            seed_list,
            teachers,
            store,
            syn.ipc,
            device,
            quiet,
            syn.method,
            labels=syn.labels if syn.labels.ndim == 1 else None,
        )
        row["random_real"] = None
        if baseline:
            if not teachers and teacher is None and store is not None:
                refs = store.manifest["teachers"]
                present = refs and all(isinstance(r, dict) and r.get("path") and Path(r["path"]).exists() for r in refs)
                teachers = _load_teachers(None, data, refs) if present else []
            if teachers or teacher is not None:
                base = random_real_baseline(
                    data,
                    syn.ipc,
                    models=models,
                    seeds=len(seed_list),
                    protocol=proto,
                    device=device,
                    seed=seed_list[0],
                    quiet=quiet,
                    teacher=teacher if teacher is not None else teachers,
                )
                row["random_real"] = base["accuracy"]
        return {"method": syn.method, "dataset": data.name, "ipc": syn.ipc, "label_kind": "soft", **row}
    if teacher is not None:
        raise ConfigError(f"teacher= is read by the soft_label protocol only, not by '{proto.name}'")
    if lr is None and proto.use_learned_lr and syn.lr is not None:
        lr = syn.lr
    if temperature is None and "temperature" in syn.meta:
        proto = proto.replace(temperature=float(syn.meta["temperature"]))
    # epochs, batch_size and temperature are folded into proto
    row = evaluate_tensors(
        syn.images,
        syn.labels,
        data,
        models=kw["models"] or [distilled_model(syn)],
        seeds=seeds,
        protocol=proto,
        lr=lr,
        device=device,
        seed=seed,
        vmap=vmap,
        quiet=quiet,
        desc=syn.method,
    )
    return {
        "method": syn.method,
        "dataset": data.name,
        "ipc": syn.ipc,
        "label_kind": "soft" if syn.soft_labels else "hard",
        **row,
    }


def random_real_baseline(
    data: Any,
    ipc: int,
    *,
    models: Sequence[str] | None = None,
    seeds: int = 5,
    protocol: str | EvalProtocol | GraphProtocol | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    temperature: float | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    vmap: bool | None = None,
    quiet: bool = True,
    teacher: TeacherArg = None,
) -> dict[str, Any]:
    """Random real subsets at ``ipc`` per class under the shared protocol: seed ``s`` draws its own subset and model.

    The subset of seed ``s`` is ``data.sample_per_class(ipc, seeding.generator("condense-random-real", s))`` for
    both kinds; each run uses a different draw, so the std covers both subset choice and model initialization.
    Under the ``soft_label`` protocol the subset is relabeled online by ``teacher`` (the same teacher and recipe as
    the distilled set: the decoupled methods' baseline, DD-Ranking's point).

    Returns:
        The row of :func:`evaluate` with ``method="random_real"`` (images) or ``"random_graphs"`` (graphs).
    """
    kind = data_kind(data)
    check_count("seeds", seeds)
    check_ipc(data, ipc)
    kw = check_options(kind, models, seeds, protocol, epochs, lr, batch_size, temperature, device, seed)
    if kind == "graphs":
        return graphs.random_graph_baseline(data, ipc, quiet=quiet, **_graph_options(data, kw, vmap))
    acc: dict[str, list[float]] = {}
    row: dict[str, Any] = {}
    t0 = time.perf_counter()
    for s in range(seed, seed + seeds):
        idx = data.sample_per_class(ipc, seeded_generator("condense-random-real", s))
        x, y = data.x_train[idx].clone(), data.y_train[idx].clone()
        row = evaluate_tensors(
            x, y, data, **{**kw, "seeds": [s]}, vmap=vmap, quiet=quiet, desc="random", teacher=teacher
        )
        for m, r in row["accuracy"].items():
            acc.setdefault(m, []).extend(r["runs"])
    row.update(
        {
            "accuracy": {m: summarize(r) for m, r in acc.items()},
            "seeds": list(range(seed, seed + seeds)),
            "seconds": round(time.perf_counter() - t0, 3),
        }
    )
    soft = row.get("protocol") == "soft_label"
    return {"method": "random_real", "dataset": data.name, "ipc": ipc, "label_kind": "soft" if soft else "hard", **row}


def full_data_baseline(
    data: Any,
    *,
    models: Sequence[str] | None = None,
    seeds: int | Sequence[int] = 5,
    protocol: str | EvalProtocol | GraphProtocol | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    temperature: float | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    vmap: bool | None = None,
    quiet: bool = True,
) -> dict[str, Any]:
    """The whole training split under the shared protocol (the upper reference; slow on large datasets).

    Returns:
        The row of :func:`evaluate` with ``method="full_data"`` and ``ipc=None``.
    """
    kind = data_kind(data)
    kw = check_options(kind, models, seeds, protocol, epochs, lr, batch_size, temperature, device, seed)
    if kind == "graphs":
        return graphs.full_graph_baseline(data, quiet=quiet, **_graph_options(data, kw, vmap))
    row = evaluate_tensors(data.x_train, data.y_train, data, **kw, vmap=vmap, quiet=quiet, desc="full")
    return {"method": "full_data", "dataset": data.name, "ipc": None, "label_kind": "hard", **row}
