"""Record expert trajectories: train K experts at once, snapshot every epoch, resume after a kill.

An expert is a network trained on the real data whose parameters are saved at initialization and after every epoch;
trajectory matchers (MTT, FTD, DATM, AST) start students from these snapshots. The kinds and the papers' presets are
in ``configs.py``, the vmapped trainer in ``_train.py``, the files in ``manifest.py``, the checkpoints of experts in
training and the progress log in ``_partial.py``, torchrun in :mod:`condense.distributed`.
Cost: digits, ConvNet width 128, one CPU core: 0.57 s per expert-epoch trained one at a time
(``benchmarks/experts_speed.py``); on CUDA, K experts share each step through ``vmap``.

:func:`record_experts` reads top to bottom: check the arguments; set up device and ranks; build the header every
file of this run carries (its ``run_key`` is what resume compares); keep the experts already finished in ``out``;
train this rank's share of the others, writing each one the moment it finishes; gather failures and write the final
manifest.

Mid-expert checkpoints (``checkpoint_every_epochs``, default 1): a group of experts in training saves its whole
state into ``out/partial_<run_key>_<first id>_<group digest>/`` (the format is in ``_partial.py``), so a kill loses
at most that many epochs; a rerun with the same settings continues the group from it and the finished experts are
bit-identical to an uninterrupted recording. The folder is deleted once the group's experts are written. Each
process also appends its progress to ``out/log.jsonl`` (``log_rank<r>.jsonl`` for ranks > 0): one line per
session start, finished epoch, checkpoint, resume and expert.

Differences from the authors' code (``GeorgeCazenavette/mtt-distillation:buffer.py``, ``AngusDujw/FTD-distillation:
buffer/buffer_FTD.py``, ``shenjiyuan123/AST-Alignment-with-Smooth-Expert:buffer.py``):
    - one safetensors file per expert with a JSON manifest (see ``manifest.py``), not pickled lists; every expert is
      written as soon as it finishes (the original drops experts when ``num_experts % save_interval != 0``);
    - seeds are explicit and recorded; the global RNG is never reseeded;
    - a diverged expert (NaN/inf parameters) is retrained with fresh seeds instead of being saved;
    - per-epoch test accuracy of every expert is recorded (the original only logs it to an online experiment tracker);
    - AST's input-gradient penalty and GSAM's second pass leave BatchNorm running statistics untouched.

References:
    Cazenavette et al., "Dataset Distillation by Matching Training Trajectories", CVPR 2022, arXiv:2203.11932, Sec. 3.
    Du et al., "Minimizing the Accumulated Trajectory Error to Improve Dataset Distillation", CVPR 2023,
    arXiv:2211.11004, Sec. 4.1 (flat experts via GSAM).
    Guo et al., "Towards Lossless Dataset Distillation via Difficulty-Aligned Trajectory Matching", ICLR 2024,
    arXiv:2310.05773 (100-epoch GSAM experts).
    Shen, Yang and Lam, "AST: Effective Dataset Distillation through Alignment with Smooth and High-Quality Expert
    Trajectories", arXiv:2310.10541 (smooth experts).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from condense.distributed import DistContext, resolve_device
from condense.errors import ConfigError, DivergenceError
from condense.expert_trajectories._partial import (
    LOG_NAME,
    PARTIAL_FORMAT,
    PARTIAL_FORMAT_VERSION,
    PartialCheckpoint,
    drop_finished_partials,
    load_partial,
    remove_torn_writes,
    scan_partials,
)
from condense.expert_trajectories._train import Expert, GroupState, Trainer, choose_experts_at_once
from condense.expert_trajectories.buffer import ExpertBuffer
from condense.expert_trajectories.configs import ExpertConfig, resolve_expert_config
from condense.expert_trajectories.manifest import (
    STORAGE_DTYPES,
    build_header,
    check_existing,
    expert_record,
    scan_experts,
    write_expert,
    write_manifest,
)
from condense.io import JsonlLog
from condense.models import ParamLayout, create_model, has_running_stats

if TYPE_CHECKING:
    from condense.data import ImageData

__all__ = ["record_experts", "DEFAULT_CHECKPOINT_EVERY_EPOCHS", "PARTIAL_FORMAT", "PARTIAL_FORMAT_VERSION", "LOG_NAME"]

logger = logging.getLogger("condense")

#: Epochs between mid-expert checkpoints. One epoch: a kill loses at most one epoch of the group in training, and a
#: checkpoint costs the group's parameters and momentum plus the new snapshot rows (each row is written once), small
#: next to an epoch of training.
DEFAULT_CHECKPOINT_EVERY_EPOCHS = 1


# ----------------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------------


def _check_counts(
    n_experts: Any, epochs: Any, save_every_steps: Any, experts_at_once: Any, dtype: str, checkpoint_every: Any
) -> None:
    """Validate the plain arguments at the boundary (the config validates itself)."""
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 0:
        raise ConfigError(
            "checkpoint_every_epochs must be an int >= 0 (0 turns mid-expert checkpoints off), "
            f"got {checkpoint_every!r}"
        )
    if isinstance(n_experts, bool) or not isinstance(n_experts, int) or n_experts < 1:
        raise ConfigError(f"n_experts must be a positive int, got {n_experts!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be a positive int, got {epochs!r}")
    if save_every_steps is not None and (not isinstance(save_every_steps, int) or save_every_steps < 1):
        raise ConfigError(f"save_every_steps must be a positive int or None, got {save_every_steps!r}")
    if experts_at_once is not None and (not isinstance(experts_at_once, int) or experts_at_once < 1):
        raise ConfigError(f"experts_at_once must be a positive int or None, got {experts_at_once!r}")
    if dtype not in STORAGE_DTYPES:
        raise ConfigError(f"dtype={dtype!r} is not a storage dtype; allowed: {', '.join(STORAGE_DTYPES)}")


# ----------------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------------


def record_experts(
    data: ImageData,
    model: str,
    n_experts: int,
    epochs: int,
    out: str | Path,
    *,
    kind: str = "vanilla",
    config: ExpertConfig | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    quiet: bool = False,
    experts_at_once: int | None = None,
    save_every_steps: int | None = None,
    model_kwargs: dict[str, Any] | None = None,
    dtype: str = "float32",
    checkpoint_every_epochs: int = DEFAULT_CHECKPOINT_EVERY_EPOCHS,
) -> ExpertBuffer:
    """Train ``n_experts`` experts on ``data`` and record their trajectories as a buffer in ``out``.

    Resumes automatically: experts already finished in ``out`` (same dataset, preprocessing, model, kind, config,
    epochs, seed and dtype) are kept and only the others are trained, so a killed run continues where it stopped
    and a finished buffer can be extended with more experts. Experts in training are checkpointed every
    ``checkpoint_every_epochs`` epochs, so a kill loses at most that many epochs of them, and the resumed experts are
    bit-identical to an uninterrupted recording. Under ``torchrun`` (``WORLD_SIZE`` > 1) the experts are
    split over ranks (gloo on the CPU, nccl on CUDA); each rank writes its own expert files and rank 0 writes the
    manifest after a barrier (``out`` must be on a file system every rank sees).

    Args:
        data: the training set (its test split gives the per-epoch accuracy curves).
        model: registered model name (``convnet``, ``convnetd3``, ``convnet_bn``, ...).
        n_experts: number of experts the buffer should hold.
        epochs: training epochs per expert (MTT/FTD 50, DATM 100).
        out: buffer directory (created).
        kind: an expert kind (``vanilla``, ``flat``, ``smooth``) or a preset name (``mtt``, ``ftd``, ``ftd_alpha1``,
            ``datm``, ``ast``), resolved as in :func:`~condense.expert_trajectories.get_expert_config`; used only when
            ``config`` is None (otherwise it must be ``vanilla`` or resolve to the config's kind). A preset's
            ``epochs`` is not applied: pass ``epochs`` yourself (``EXPERT_PRESETS[name]["epochs"]``).
        config: the expert config (default: the kind's paper defaults).
        seed: base seed; each expert's init, data order and DSA seeds are derived from (seed, expert id, attempt).
        device: where to train (``cuda`` under torchrun uses ``cuda:LOCAL_RANK``).
        quiet: no progress bars.
        experts_at_once: K experts trained together with ``vmap`` (default: from free GPU memory on CUDA, 1 on the
            CPU where vmap's grouped convolutions are slower than a loop); 1 trains them one at a time. Models with
            BatchNorm are always trained one at a time.
        save_every_steps: snapshot every k SGD steps instead of every epoch (snapshot indices then count k steps).
        model_kwargs: builder options for ``create_model`` (``width``, ``depth``, ...), recorded in the buffer.
        dtype: storage dtype of the snapshots, ``float32`` (default), ``float16`` or ``bfloat16`` (half the disk).
        checkpoint_every_epochs: epochs between checkpoints of the experts in training (default 1; 0: none, a kill
            then loses the experts in training). Not part of the run's settings: any value resumes any checkpoint.

    Returns:
        The opened :class:`ExpertBuffer`.

    Raises:
        ConfigError: bad counts, dtype or kind.
        MismatchError: ``out`` holds a buffer (or a checkpoint of experts in training) recorded with other settings.
        IntegrityError: ``out`` holds a manifest of another format version (the message names both versions).
        DivergenceError: an expert diverged (NaN/inf) in all ``config.max_attempts`` attempts; the finished experts
            are kept and the manifest marks that expert ``failed``.

    Example:
        >>> from condense.data import load_dataset
        >>> buf = record_experts(load_dataset("digits"), "convnet", 2, 2, "/tmp/doc_buf", quiet=True,
        ...                      model_kwargs={"width": 8})  # doctest: +SKIP
        >>> buf.num_experts, buf.num_snapshots  # doctest: +SKIP
        (2, 3)
    """
    cfg = resolve_expert_config(kind, config)
    _check_counts(n_experts, epochs, save_every_steps, experts_at_once, dtype, checkpoint_every_epochs)
    out = Path(out)
    model_kwargs = dict(model_kwargs or {})

    # 1. Setup: device and ranks (a single process is a world of one)
    device = resolve_device(device)
    dist = DistContext.from_env(device)
    quiet_here = quiet or dist.rank != 0  # one progress bar per job, not per rank
    try:
        # 2. Header: a probe network gives the parameter layout; run_key hashes every setting resume must match
        probe = create_model(
            model,
            in_channels=data.channels,
            num_classes=data.num_classes,
            image_size=data.image_size,
            seed=0,
            **model_kwargs,
        )
        running_stats = has_running_stats(probe)
        layout = ParamLayout.from_module(probe)
        del probe
        trainer = Trainer(
            data,
            model,
            model_kwargs,
            cfg,
            epochs,
            save_every_steps,
            device,
            STORAGE_DTYPES[dtype],
            running_stats,
            quiet_here,
        )
        header = build_header(
            data=data,
            model=model,
            model_kwargs=model_kwargs,
            layout=layout,
            kind=cfg.kind,
            config=cfg.to_dict(),
            augment=trainer.aug.config(),
            epochs=epochs,
            steps_per_epoch=trainer.steps_per_epoch,
            snapshot_steps=trainer.snapshot_plan,
            save_every_steps=save_every_steps,
            seed=seed,
            dtype=dtype,
        )

        # 3. Resume: refuse a folder with other settings, keep the experts it already holds
        check_existing(out, header)
        partials = scan_partials(out, header["run_key"])
        out.mkdir(parents=True, exist_ok=True)
        dist.barrier()  # every rank has checked the old manifest before rank 0 rewrites it
        if dist.rank == 0:
            remove_torn_writes(out)
        done = scan_experts(out, header)
        if dist.rank == 0:
            drop_finished_partials(partials, done)
            write_manifest(out, header, done, {}, n_experts)
        dist.barrier()  # all ranks scanned the same finished set before anyone trains

        # 4. Train: this rank's share of the pending experts, K at a time
        pending = [i for i in range(n_experts) if i not in done]
        mine = pending[dist.rank :: dist.world]  # round robin: seeds depend on the expert id, not the rank
        k = choose_experts_at_once(trainer, len(mine), experts_at_once)
        if mine:
            logger.info(
                "recording %d %s experts on %s (rank %d/%d, %d at once)",
                len(mine),
                cfg.kind,
                device,
                dist.rank,
                dist.world,
                k,
            )
        failed: dict[int, str] = {}
        # one process rewrites the manifest after every expert; under torchrun only rank 0 writes it, at the end
        on_change = (lambda: write_manifest(out, header, done, failed, n_experts)) if dist.world == 1 else None
        log = JsonlLog(out / (LOG_NAME if dist.rank == 0 else f"log_rank{dist.rank}.jsonl"))
        try:
            _train_assigned(
                trainer,
                mine,
                k,
                seed,
                cfg,
                out,
                header["run_key"],
                done,
                failed,
                on_change,
                dist.rank,
                checkpoint_every=checkpoint_every_epochs,
                partials={f: ids for f, ids in partials.items() if ids is not None},
                log=log,
            )
        finally:
            log.close()

        # 5. Finish: gather failures from every rank, write the final manifest, open the buffer
        dist.barrier()
        all_failed: dict[int, str] = {}
        for part in dist.all_gather(failed):
            all_failed.update(part)
        if dist.rank == 0:
            write_manifest(out, header, scan_experts(out, header), all_failed, n_experts)
        dist.barrier()
        if all_failed:
            ids = sorted(all_failed)
            raise DivergenceError(
                f"experts {ids} diverged (NaN/inf) in all {cfg.max_attempts} attempts with lr_teacher="
                f"{cfg.lr_teacher}; lower the learning rate; finished experts are kept in '{out}'"
            )
        buf = ExpertBuffer.open(out)
        if dist.rank == 0:
            _warn_if_not_learned(buf, data.num_classes)
        return buf
    finally:
        dist.close()


# ----------------------------------------------------------------------------------------------------------------------
# Training the assigned experts
# ----------------------------------------------------------------------------------------------------------------------


def _train_assigned(
    trainer: Trainer,
    ids: list[int],
    k: int,
    seed: int,
    cfg: ExpertConfig,
    out: Path,
    run_key: str,
    done: dict[int, dict[str, Any]],
    failed: dict[int, str],
    on_change: Callable[[], None] | None,
    rank: int = 0,
    *,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY_EPOCHS,
    partials: dict[Path, list[int]] | None = None,
    log: JsonlLog | None = None,
) -> None:
    """Train the experts ``ids`` in groups of ``k``; write each finished one at once; retry diverged ones.

    Groups with a checkpoint in ``partials`` (folder -> expert ids) whose pending experts are all in ``ids`` go
    first, resumed as they were grouped; the others are grouped in order as an uninterrupted run groups them.
    """
    log = log or JsonlLog(None)
    log.write({"event": "start", "experts": list(ids), "rank": rank, "checkpoint_every_epochs": checkpoint_every})
    bar = None
    if not trainer.quiet and ids:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(ids), desc=f"{cfg.kind} experts", unit="expert", position=0)
    mine = set(ids)
    resumed: list[tuple[Path, list[int]]] = []
    for folder, members in sorted((partials or {}).items()):
        todo = [i for i in members if i not in done]
        if todo and all(i in mine for i in todo):
            resumed.append((folder, members))
            mine -= set(members)
    queue = [Expert.make(seed, i, 0) for i in ids if i in mine]
    while resumed or queue:
        state = None
        if resumed:
            folder, members = resumed.pop(0)
            loaded = load_partial(folder, run_key, seed, trainer, checkpoint_every)
            if loaded is None:  # unreadable: those experts start over, in the plain queue's order
                shutil.rmtree(folder, ignore_errors=True)
                queue = [Expert.make(seed, i, 0) for i in sorted(set(members) - set(done))] + queue
                continue
            group, state, writer = loaded
            log.write({"event": "resume", **_who(group), "from_epoch": state.epoch})
            logger.info("resuming experts %s from epoch %d (%s)", [e.id for e in group], state.epoch, folder.name)
        else:
            group, queue = queue[:k], queue[k:]
            writer = PartialCheckpoint(out, run_key, group, checkpoint_every)

        def on_epoch(st: GroupState, group=group, writer=writer) -> None:
            acc = [c[-1] if c else None for c in st.accuracy_curves]
            log.write({"event": "epoch", **_who(group), "epoch": st.epoch, "test_acc": acc})
            if writer.due(st.epoch, trainer.epochs):
                writer.write(st, group)
                log.write({"event": "checkpoint", **_who(group), "epoch": st.epoch})

        for res in trainer.train_group(group, position=1, resume=state, on_epoch=on_epoch):
            e = res.expert
            if e.id in done:
                continue  # finished before a kill that left its group's checkpoint behind
            if res.ok:
                rec = expert_record(
                    expert_id=e.id,
                    attempt=e.attempt,
                    seeds=e.seeds,
                    accuracy_curve=res.accuracy_curve,
                    train_loss_curve=res.train_loss_curve,
                    seconds=res.seconds,
                    run_key=run_key,
                    rank=rank,
                )
                done[e.id] = write_expert(out, rec, res.snapshots)
                log.write({"event": "expert", "id": e.id, "attempt": e.attempt, "status": "done"})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(f"expert {e.id}: test acc {rec['final_test_acc']:.3f}")
            elif e.attempt + 1 < cfg.max_attempts:
                logger.warning("expert %d diverged (attempt %d); retrying with fresh seeds", e.id, e.attempt + 1)
                log.write({"event": "expert", "id": e.id, "attempt": e.attempt, "status": "diverged"})
                queue.append(Expert.make(seed, e.id, e.attempt + 1))  # the attempt number is part of every seed
                continue
            else:
                failed[e.id] = f"diverged (NaN/inf parameters) in all {cfg.max_attempts} attempts"
                log.write({"event": "expert", "id": e.id, "attempt": e.attempt, "status": "failed"})
                if bar is not None:
                    bar.update(1)
            if on_change is not None:
                on_change()
        writer.remove()  # every expert of the group is written (or will be retried from its start)
    if bar is not None:
        bar.close()


def _who(group: list[Expert]) -> dict[str, list[int]]:
    return {"experts": [e.id for e in group], "attempts": [e.attempt for e in group]}


# ----------------------------------------------------------------------------------------------------------------------
# Checks on the result
# ----------------------------------------------------------------------------------------------------------------------


def _warn_if_not_learned(buf: ExpertBuffer, num_classes: int) -> None:
    """A buffer whose experts stayed near chance is a bad buffer: say so (the accuracy curves are in the manifest)."""
    chance = 1.0 / num_classes
    stuck = {i: c[-1] for i, c in buf.accuracy_curves.items() if c and c[-1] is not None and c[-1] < 1.5 * chance}
    if stuck:
        worst = ", ".join(f"{i}: {a:.3f}" for i, a in sorted(stuck.items())[:5])
        logger.warning(
            "%d of %d experts in '%s' ended near chance test accuracy (%s; chance %.3f): the buffer is unlikely to "
            "help distillation; train more epochs or raise lr_teacher",
            len(stuck),
            buf.num_experts,
            buf.path,
            worst,
            chance,
        )
