"""Expert configs: one frozen dataclass per expert kind, and the papers' settings as named presets (pure data).

An expert's *kind* says how it is trained; a *preset* is a kind plus field overrides and the epochs a paper trained
for. The two name sets are disjoint (checked at import), so one string argument can take either:

    ==========  ===================  ====================================================================
    kind        config               training
    ==========  ===================  ====================================================================
    vanilla     VanillaExpertConfig  MTT: SGD lr 0.01, no momentum, no weight decay, batch 256, DSA
    flat        FlatExpertConfig     FTD/DATM: the same SGD wrapped in GSAM (rho 0.01, alpha 0.3)
    smooth      SmoothExpertConfig   AST: SGD lr 0.003, momentum 0.9, wd 1e-3, lr x0.6 at mid-training,
                                     early-epoch loss down-scaling ("clipping loss"), input-gradient penalty
    ==========  ===================  ====================================================================

    ===========  ======  =====================================================================================
    preset       kind    what it changes
    ===========  ======  =====================================================================================
    mtt          vanilla nothing (50 epochs)
    ftd          flat    alpha 0.3 (50 epochs)
    ftd_alpha1   flat    alpha 1.0 (50 epochs)
    datm         flat    alpha 0.3, 100 epochs (DATM's late matching windows reach epoch 70)
    ast          smooth  nothing (50 epochs)
    ===========  ======  =====================================================================================

Resolution rule, used by :func:`get_expert_config` and ``record_experts(kind=...)``: a name is looked up among the
presets first, then among the kinds; :func:`expert_kind_of` returns the kind either resolves to. The preset's
``epochs`` is advice for callers (the CLI, the demo); the config itself holds no epoch count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from condense.augment import list_augments
from condense.config import check_range, config_from_dict, config_to_dict, preset
from condense.errors import ConfigError
from condense.registry import Registry, did_you_mean

__all__ = [
    "ExpertConfig",
    "VanillaExpertConfig",
    "FlatExpertConfig",
    "SmoothExpertConfig",
    "EXPERT_KINDS",
    "EXPERT_PRESETS",
    "expert_kind_of",
    "get_expert_config",
    "list_expert_kinds",
    "list_expert_presets",
    "resolve_expert_config",
]

EXPERT_KINDS: Registry[type[ExpertConfig]] = Registry("expert kind")


# ----------------------------------------------------------------------------------------------------------------------
# Configs: one per kind, defaults from the papers' code
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ExpertConfig:
    """Settings shared by every expert kind; the defaults are MTT's (``buffer.py``).

    Use a kind's subclass (:class:`VanillaExpertConfig`, :class:`FlatExpertConfig`, :class:`SmoothExpertConfig`)
    or :func:`get_expert_config`.
    """

    kind: ClassVar[str] = "vanilla"

    lr_teacher: float = 0.01  # expert SGD learning rate (MTT buffer.py --lr_teacher)
    momentum: float = 0.0  # SGD momentum (MTT --mom 0: "much easier for our synthetic data to imitate", issue #8)
    weight_decay: float = 0.0  # SGD weight decay (MTT --l2 0)
    batch_size: int = 256  # real images per SGD step (MTT --batch_train)
    augment: str = "auto"  # DSA during expert training (MTT: args.dsa True); auto = no flip on digit datasets
    lr_decay_factor: float = 1.0  # lr multiplied by this once, at lr_decay_epoch (MTT: --decay off -> 1.0)
    # the first 0-based epoch trained at the decayed lr, with the momentum buffer reset to zero there (a new SGD);
    # None: epochs // 2 + 2, because AST buffer.py (and MTT --decay) decays after epoch epochs // 2 + 1 has trained
    lr_decay_epoch: int | None = None
    max_attempts: int = 3  # trainings per expert when one diverges (NaN/inf); each retry draws fresh seeds

    def __post_init__(self) -> None:
        check_range("lr_teacher", self.lr_teacher, 0.0, lo_open=True)
        check_range("momentum", self.momentum, 0.0, 1.0)
        check_range("weight_decay", self.weight_decay, 0.0)
        check_range("batch_size", self.batch_size, 1)
        check_range("lr_decay_factor", self.lr_decay_factor, 0.0, lo_open=True)
        if self.lr_decay_epoch is not None:
            check_range("lr_decay_epoch", self.lr_decay_epoch, 0)
        check_range("max_attempts", self.max_attempts, 1)
        if self.augment != "auto" and self.augment not in list_augments():
            raise ConfigError(
                f"augment={self.augment!r} is not an augmentation preset{did_you_mean(self.augment, list_augments())}"
                f" available: {', '.join(list_augments())}"
            )

    @property
    def decays(self) -> bool:
        """Whether the lr changes mid-training (then the snapshots depend on the total epochs)."""
        return self.lr_decay_factor != 1.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (the kind is stored next to them in the manifest)."""
        return config_to_dict(self)


@EXPERT_KINDS.register("vanilla")
@dataclass(frozen=True, kw_only=True)
class VanillaExpertConfig(ExpertConfig):
    """MTT experts: plain SGD, constant learning rate, DSA (Cazenavette et al., CVPR 2022, arXiv:2203.11932)."""

    kind: ClassVar[str] = "vanilla"


@EXPERT_KINDS.register("flat")
@dataclass(frozen=True, kw_only=True)
class FlatExpertConfig(ExpertConfig):
    """FTD / DATM "flat" experts: MTT's SGD wrapped in GSAM (see ``sam.py``).

    References:
        Du et al., CVPR 2023, arXiv:2211.11004, Table 7 (alpha 0.3 for CIFAR-10 IPC 1/10, 1 elsewhere);
        Guo et al., ICLR 2024, arXiv:2310.05773 (DATM: alpha 0.3 for all settings, 100 epochs).
    """

    kind: ClassVar[str] = "flat"

    rho: float = 0.01  # GSAM perturbation radius rho (FTD run_buffer.sh --rho_max = --rho_min = 0.01)
    alpha: float = 0.3  # GSAM surrogate-gap weight alpha (FTD Table 7 CIFAR-10 IPC 1/10; DATM README)
    adaptive: bool = True  # ASAM-style perturbation scaled by w**2 (FTD's --adaptive is type=bool: always True)
    perturb_eps: float = 1e-12  # GSAM perturb_eps

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("rho", self.rho, 0.0)
        check_range("alpha", self.alpha, 0.0)
        check_range("perturb_eps", self.perturb_eps, 0.0)


@EXPERT_KINDS.register("smooth")
@dataclass(frozen=True, kw_only=True)
class SmoothExpertConfig(ExpertConfig):
    """AST "smooth" experts: momentum SGD with weight decay and a mid-run lr decay, an early-epoch loss
    down-scaling ("clipping loss") and a gradient penalty on the inputs.

    The scaled cross-entropy in epoch e < ``loss_scale_epochs`` is ``(loss_scale_start + e * loss_scale_step) * CE``;
    the penalty is ``gp_weight * mean_{n,h,w}((||d sum(logits) / d x_{n,:,h,w}||_2 - 1)^2)`` on the un-augmented batch,
    the norm taken over channels (AST ``utils.epoch_gp``).

    References:
        Shen, Yang and Lam, arXiv:2310.10541; code ``shenjiyuan123/AST-Alignment-with-Smooth-Expert:buffer.py``
        (README: ``--optim SGDMOM --loss_decay --gp True``).
    """

    kind: ClassVar[str] = "smooth"

    lr_teacher: float = 0.003  # AST buffer.py --lr_teacher default
    momentum: float = 0.9  # AST SGDMOM
    weight_decay: float = 1e-3  # AST SGDMOM weight decay
    lr_decay_factor: float = 0.6  # AST: lr x0.6 after epoch train_epochs // 2 + 1 has trained (unconditional)
    loss_scale_start: float = 0.5  # AST --loss_decay: CE x0.5 in epoch 0 ...
    loss_scale_step: float = 0.05  # ... +0.05 per epoch ...
    loss_scale_epochs: int = 10  # ... for epochs 0-9 (x0.95 in epoch 9), x1 afterwards
    gp_weight: float = 2.0  # lambda of AST's gradient penalty (utils.epoch_gp)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("loss_scale_start", self.loss_scale_start, 0.0, lo_open=True)
        check_range("loss_scale_step", self.loss_scale_step, 0.0)
        check_range("loss_scale_epochs", self.loss_scale_epochs, 0)
        check_range("gp_weight", self.gp_weight, 0.0)

    def loss_scale(self, epoch: int) -> float:
        """Factor on the cross-entropy in ``epoch`` (0-based)."""
        if epoch < self.loss_scale_epochs:
            return min(1.0, self.loss_scale_start + epoch * self.loss_scale_step)
        return 1.0


# ----------------------------------------------------------------------------------------------------------------------
# Presets: a kind, field overrides, the epochs the paper trained for, and where the values come from
# ----------------------------------------------------------------------------------------------------------------------

EXPERT_PRESETS: dict[str, dict[str, Any]] = {
    "mtt": preset(source="MTT README: 50 epochs, 100 experts, lr_teacher 0.01", kind="vanilla", epochs=50),
    "ftd": preset(source="FTD run_buffer.sh; Table 7 (CIFAR-10 IPC 1/10)", kind="flat", alpha=0.3, epochs=50),
    "ftd_alpha1": preset(source="FTD Table 7 (all other settings)", kind="flat", alpha=1.0, epochs=50),
    "datm": preset(source="DATM README buffer command (--train_epochs=100)", kind="flat", alpha=0.3, epochs=100),
    "ast": preset(source="AST README/buffer.py (--optim SGDMOM --loss_decay --gp True)", kind="smooth", epochs=50),
}
_PRESET_META = ("kind", "epochs", "source")  # preset keys that are not config fields

# One string names a kind or a preset, so the two name sets must never overlap.
if set(EXPERT_PRESETS) & set(EXPERT_KINDS.list()):
    raise ValueError(f"expert preset names {sorted(set(EXPERT_PRESETS) & set(EXPERT_KINDS.list()))} shadow kinds")


# ----------------------------------------------------------------------------------------------------------------------
# Lookup
# ----------------------------------------------------------------------------------------------------------------------


def list_expert_kinds() -> list[str]:
    """Every name :func:`get_expert_config` accepts: the kinds, then the presets (each group sorted)."""
    return sorted(EXPERT_KINDS.list()) + list_expert_presets()


def list_expert_presets() -> list[str]:
    """The preset names only (``ast``, ``datm``, ``ftd``, ``ftd_alpha1``, ``mtt``)."""
    return sorted(EXPERT_PRESETS)


def expert_kind_of(name: str) -> str:
    """The kind a kind or preset name resolves to (``"datm"`` -> ``"flat"``, ``"flat"`` -> ``"flat"``).

    Raises:
        ConfigError: ``name`` is neither, with a did-you-mean over both.

    Example:
        >>> expert_kind_of("datm"), expert_kind_of("smooth")
        ('flat', 'smooth')
    """
    if name in EXPERT_PRESETS:
        return EXPERT_PRESETS[name]["kind"]
    if name in EXPERT_KINDS.list():
        return name
    names = list_expert_kinds()
    raise ConfigError(f"unknown expert kind '{name}'{did_you_mean(name, names)} available: {', '.join(names)}")


def get_expert_config(name: str = "vanilla", **overrides: Any) -> ExpertConfig:
    """The config of an expert kind (``vanilla``, ``flat``, ``smooth``) or preset (``mtt``, ``ftd``, ``datm``, ...).

    A preset name gives its kind's config with the preset's overrides applied; ``overrides`` then win over both.

    Args:
        name: kind or preset name (see :func:`list_expert_kinds`).
        **overrides: field values replacing the defaults (unknown fields raise :class:`ConfigError`).

    Example:
        >>> get_expert_config("datm").alpha, get_expert_config("flat", alpha=1.0).alpha
        (0.3, 1.0)
    """
    kind = expert_kind_of(name)
    values = {k: v for k, v in EXPERT_PRESETS.get(name, {}).items() if k not in _PRESET_META}
    values.update(overrides)
    return config_from_dict(EXPERT_KINDS.get(kind), values)


def resolve_expert_config(kind: str, config: ExpertConfig | None) -> ExpertConfig:
    """The config ``record_experts(kind=..., config=...)`` trains with.

    ``config=None`` gives :func:`get_expert_config` of ``kind`` (a kind or a preset). A given ``config`` wins; ``kind``
    must then be the default ``"vanilla"`` or resolve to the config's kind.

    Raises:
        ConfigError: ``config`` is not an :class:`ExpertConfig`, or ``kind`` names another kind than it has.
    """
    if config is None:
        return get_expert_config(kind)
    if not isinstance(config, ExpertConfig):
        raise ConfigError(f"config must be an ExpertConfig, got {type(config).__name__}")
    if kind not in ("vanilla", config.kind) and EXPERT_PRESETS.get(kind, {}).get("kind") != config.kind:
        raise ConfigError(f"kind={kind!r} contradicts config of kind {config.kind!r}; pass one or the other")
    return config
