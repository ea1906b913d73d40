"""The method interface: the method registry, ``Method``, ``Matcher``, ``MatchState`` and ``RunContext``.

Two shapes of method (see STYLE.md §4):

- :class:`Method`: one call, ``distill(data, cfg, ipc, generator, run) -> SyntheticSet`` (coresets, Mirage,
  recover + relabel).
- :class:`Matcher`: iterative optimization (DC, DM, MTT, FTD, DATM, DosCond) with ``init_state``/``step``/
  ``to_synthetic``; the shared runner (``condense.methods._runner``) supplies the loop, checkpoint/resume, NaN
  rollback, evaluation cadence, progress bar and JSONL log, so a method file holds only its algorithm.

This file imports nothing else from ``condense.methods``: the entry points ``distill``, ``get_method`` and
``list_methods`` live in the package face (``condense/methods/__init__.py``), which imports every method file first.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from condense.config import preset_key, resolve_config
from condense.registry import Registry

__all__ = ["METHODS", "register_method", "Method", "Matcher", "MatchState", "RunContext"]

METHODS: Registry[type[Method]] = Registry("method")


def register_method(name: str):
    """Class decorator: register a :class:`Method` subclass under ``name`` and set ``cls.name``."""

    def deco(cls: type[Method]) -> type[Method]:
        cls.name = name
        return METHODS.register(name)(cls)

    return deco


@dataclass
class RunContext:
    """The environment a method runs in (never algorithm values; those live in the method's Config).

    Args:
        device: where tensors live during distillation.
        out_dir: folder for checkpoints, the JSONL log and intermediate artifacts (None: nothing written).
        checkpoint_every: iterations between atomic checkpoints (0: never).
        eval_every: iterations between monitoring evaluations with the shared protocol (0: never). Monitoring
            selects nothing; the artifact is always the final state.
        eval_epochs: epochs of each monitoring evaluation.
        eval_models: architectures of each monitoring evaluation (None: the method's distillation model).
        eval_seeds: seeds of each monitoring evaluation.
        resume: resume from the newest checkpoint in ``out_dir`` when one exists.
        restart: discard what a previous run left in ``out_dir`` (its checkpoint and log are moved aside into
            ``out_dir/discarded-<time>/``) and start over (``--restart``).
        quiet: silence progress bars.
        buffer: path of an expert-trajectory buffer (trajectory matchers).
        teacher: folder of a trained teacher (``condense teachers train``; decoupled methods, SRe2L and RDED), or
            several such folders (a committee).
    """

    device: torch.device | str = "cpu"
    out_dir: Path | None = None
    checkpoint_every: int = 0
    eval_every: int = 0
    eval_epochs: int = 300
    eval_models: list[str] | None = None
    eval_seeds: int = 1
    resume: bool = True
    restart: bool = False
    quiet: bool = False
    buffer: Path | None = None
    teacher: Path | list[Path] | None = None

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        if self.out_dir is not None:
            self.out_dir = Path(self.out_dir)
        if self.buffer is not None:
            self.buffer = Path(self.buffer)
        if isinstance(self.teacher, (list, tuple)):
            self.teacher = [Path(t) for t in self.teacher]
        elif self.teacher is not None:
            self.teacher = Path(self.teacher)

    @property
    def teachers(self) -> list[Path]:
        """``teacher`` as a list (empty when none was given)."""
        if self.teacher is None:
            return []
        return list(self.teacher) if isinstance(self.teacher, list) else [self.teacher]


@dataclass
class MatchState:
    """Everything a Matcher needs to continue: named tensors + JSON scalars (checkpointable generically).

    ``tensors`` holds the images, labels, learned lr, optimizer moments, generator state (as uint8 tensor);
    ``scalars`` holds JSON-able values (iteration counters, current image lr, windows). A checkpoint is the
    two written as safetensors + JSON, so resuming needs no method-specific code. Objects that are rebuilt
    from these (models, buffers, optimizers) live in ``runtime`` and are never saved.
    """

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    scalars: dict[str, Any] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)


class Method(abc.ABC):
    """Base class of every distillation method.

    Subclasses set ``Config`` (a frozen dataclass), ``presets`` (``"<dataset>-ipc<N>"`` or ``"<dataset>"`` ->
    overrides, built with :func:`condense.config.preset`) and ``data_kind``, and implement :meth:`distill`.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = object
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: "images" or "graphs": which kind of dataset the method consumes.
    data_kind: ClassVar[str] = "images"
    #: True when the method reads an expert-trajectory buffer (``run.buffer``), as MTT/FTD/DATM do.
    needs_buffer: ClassVar[bool] = False
    #: True when the method reads a trained teacher (``run.teacher``), as SRe2L and RDED do.
    needs_teacher: ClassVar[bool] = False
    #: What ``run.teacher`` must hold when ``needs_teacher``: ``"classifier"`` (``condense teachers train``) or
    #: ``"encoder"`` (a self-supervised target encoder, ``condense teachers encoder``; KRR-ST).
    teacher_kind: ClassVar[str] = "classifier"
    #: ``"per_class"``: ``ipc`` images of every class (class-balanced sets); ``"total"``: a budget of images in all,
    #: drawn without regard to class (KRR-ST's m, ``--images N``), so a set may miss a class.
    budget: ClassVar[str] = "per_class"

    def resolve_config(self, preset: str | None = None, overrides: Mapping[str, Any] | None = None) -> Any:
        """Defaults <- preset <- overrides, validated."""
        return resolve_config(self.Config, self.presets, preset, overrides)

    def default_preset(self, dataset: str, ipc: int) -> str | None:
        """The preset ``"<dataset>-ipc<ipc>"``, else the per-dataset preset ``"<dataset>"``, else None.

        ``distill()`` uses it when no preset is named: DM on ``digits`` at IPC 10 gets ``"digits-ipc10"``, DosCond on
        ``tu:MUTAG`` at any IPC gets ``"tu:MUTAG"`` (the authors' script sets its lr per dataset).
        """
        for key in (preset_key(dataset, ipc), preset_key(dataset)):
            if key in self.presets:
                return key
        return None

    @abc.abstractmethod
    def distill(self, data: Any, cfg: Any, ipc: int, generator: torch.Generator, run: RunContext) -> Any:
        """Return a :class:`~condense.synthetic.SyntheticSet` with ``ipc`` items per class."""


class Matcher(Method):
    """An iterative method: the shared runner calls ``init_state`` once, ``step`` per iteration, then
    ``to_synthetic``. ``cfg`` must have a ``num_iterations`` field.

    A Matcher has no ``distill`` of its own: :func:`condense.methods.distill` hands it to the shared runner
    (``condense.methods._runner.run_matcher``), which owns the loop around these hooks.
    """

    def distill(self, data: Any, cfg: Any, ipc: int, generator: torch.Generator, run: RunContext) -> Any:
        """Not how a Matcher runs: :func:`condense.methods.distill` hands it to the shared runner.

        Raises:
            TypeError: always, naming the entry point to call instead.
        """
        raise TypeError(
            f"{type(self).__name__} is a Matcher: run it with condense.methods.distill('{self.name}', data, ipc, ...), "
            "which drives init_state/step/to_synthetic through the shared runner"
        )

    @abc.abstractmethod
    def init_state(self, data: Any, cfg: Any, ipc: int, gen: torch.Generator, run: RunContext) -> MatchState:
        """Build the initial state (images, labels, learned lr, optimizer moments) and its runtime objects."""

    def restore_runtime(self, state: MatchState, data: Any, cfg: Any, run: RunContext) -> None:
        """Rebuild ``state.runtime`` (models, buffers) after loading a checkpoint. Default: nothing."""

    @abc.abstractmethod
    def step(self, state: MatchState, it: int, gen: torch.Generator) -> dict[str, float]:
        """One iteration: update ``state`` in place and return plain floats for the log (loss, grad norm, lr)."""

    def on_divergence(self, state: MatchState) -> None:
        """Called after the runner rolled ``state`` back from a non-finite step. Default: halve the image lr
        (``state.scalars["lr_img"]``) when the method keeps one; methods with other knobs override this."""
        if "lr_img" in state.scalars:
            state.scalars["lr_img"] = float(state.scalars["lr_img"]) * 0.5

    def collapse(self, state: MatchState, recent: list[dict[str, float]]) -> str | None:
        """Why the run has collapsed, or None. ``recent`` holds the stats of the last accepted iterations (oldest
        first, the current one last). The runner calls it after every finite step; on a reason it rolls back to the
        last healthy state and calls :meth:`on_collapse`. Default: never (methods whose failures show up as
        non-finite values need nothing more)."""
        return None

    def on_collapse(self, state: MatchState) -> None:
        """Called after the runner rolled ``state`` back to a healthy state because of :meth:`collapse`. Default:
        divide the image lr (``state.scalars["lr_img"]``) by 10."""
        if "lr_img" in state.scalars:
            state.scalars["lr_img"] = float(state.scalars["lr_img"]) * 0.1

    @abc.abstractmethod
    def to_synthetic(self, state: MatchState) -> Any:
        """The artifact of the current state (the final state, or the method's documented EMA)."""
