"""The method interface: a registry of distillation methods, ``Method`` and ``Matcher``, and ``distill()``.

Two shapes of method (see STYLE.md §4):

- :class:`Method`: one call, ``distill(data, cfg, ipc, generator, run) -> SyntheticSet`` (coresets, Mirage,
  recover + relabel).
- :class:`Matcher`: iterative optimization (DC, DM, MTT, FTD, DATM) with ``init_state``/``step``/``to_synthetic``;
  the shared runner (``condense.methods._runner``) supplies the loop, checkpoint/resume, NaN rollback,
  evaluation cadence, progress bar and JSONL log, so a method file holds only its algorithm.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from condense.config import resolve_config
from condense.registry import Registry

__all__ = [
    "METHODS",
    "register_method",
    "Method",
    "Matcher",
    "MatchState",
    "RunContext",
    "distill",
    "get_method",
    "list_methods",
]

logger = logging.getLogger("condense")

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
        quiet: silence progress bars.
        buffer: path of an expert-trajectory buffer (trajectory matchers).
        teacher: path of a trained teacher (recover + relabel methods).
        data_root: where datasets live (for methods that load more than the main dataset).
        num_workers: data-loader workers where a method uses one.
    """

    device: torch.device | str = "cpu"
    out_dir: Path | None = None
    checkpoint_every: int = 0
    eval_every: int = 0
    eval_epochs: int = 300
    eval_models: list[str] | None = None
    eval_seeds: int = 1
    resume: bool = True
    quiet: bool = False
    buffer: Path | None = None
    teacher: Path | None = None
    data_root: str | None = None
    num_workers: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        if self.out_dir is not None:
            self.out_dir = Path(self.out_dir)
        if self.buffer is not None:
            self.buffer = Path(self.buffer)
        if self.teacher is not None:
            self.teacher = Path(self.teacher)


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

    Subclasses set ``Config`` (a frozen dataclass) and ``presets`` (``"<dataset>-ipc<N>" -> overrides``) and
    implement :meth:`distill`.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = object
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: "images" or "graphs": which kind of dataset the method consumes.
    data_kind: ClassVar[str] = "images"
    #: True when the method reads an expert-trajectory buffer (``run.buffer``), as MTT/FTD/DATM do.
    needs_buffer: ClassVar[bool] = False

    def resolve_config(self, preset: str | None = None, overrides: Mapping[str, Any] | None = None) -> Any:
        """Defaults <- preset <- overrides, validated."""
        return resolve_config(self.Config, self.presets, preset, overrides)

    def default_preset(self, dataset: str, ipc: int) -> str | None:
        """The preset named ``"<dataset>-ipc<ipc>"`` when the method has one."""
        key = f"{dataset}-ipc{ipc}"
        return key if key in self.presets else None

    @abc.abstractmethod
    def distill(self, data: Any, cfg: Any, ipc: int, generator: torch.Generator, run: RunContext) -> Any:
        """Return a :class:`~condense.synthetic.SyntheticSet` with ``ipc`` items per class."""


class Matcher(Method):
    """An iterative method: the shared runner calls ``init_state`` once, ``step`` per iteration, then
    ``to_synthetic``. ``cfg`` must have an ``num_iterations`` field."""

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

    @abc.abstractmethod
    def to_synthetic(self, state: MatchState) -> Any:
        """The artifact of the current state (the final state, or the method's documented EMA)."""

    def distill(self, data: Any, cfg: Any, ipc: int, generator: torch.Generator, run: RunContext) -> Any:
        from condense.methods._runner import run_matcher

        return run_matcher(self, data, cfg, ipc, generator, run)


def get_method(name: str) -> Method:
    """Instantiate the method registered as ``name`` (did-you-mean error otherwise)."""
    import condense.methods  # noqa: F401  (registers the built-in methods)

    return METHODS.get(name)()


def list_methods(pattern: str = "*") -> list[str]:
    """Registered method names matching ``pattern``."""
    import condense.methods  # noqa: F401

    return METHODS.list(pattern)


def distill(
    name: str,
    data: Any,
    ipc: int,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    generator: torch.Generator | None = None,
    run: RunContext | None = None,
) -> Any:
    """Distill ``data`` into ``ipc`` items per class with method ``name``.

    Args:
        name: registered method name (``condense methods`` lists them).
        data: an :class:`~condense.data.ImageData` (or a graph dataset for graph methods).
        ipc: items per class.
        preset: preset name; None picks ``"<dataset>-ipc<ipc>"`` when the method has it, else the defaults.
        overrides: config field overrides applied after the preset.
        generator: the only source of randomness (None: a generator seeded with 0).
        run: the run environment (None: CPU, nothing written).

    Example:
        >>> from condense import distill, load_dataset
        >>> syn = distill("random_real", load_dataset("digits"), ipc=1)
        >>> syn.images.shape
        torch.Size([10, 1, 8, 8])
    """
    from condense.config import check_range

    check_range("ipc", ipc, 1)
    method = get_method(name)
    if preset is None:
        preset = method.default_preset(getattr(data, "name", ""), ipc)
    cfg = method.resolve_config(preset, overrides)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    run = run or RunContext()
    logger.info("distilling %s with %s (ipc %d, preset %s)", getattr(data, "name", "?"), name, ipc, preset)
    syn = method.distill(data, cfg, ipc, generator, run)
    if preset is not None:
        syn.meta.setdefault("preset", preset)
    return syn
