"""Expert trajectories: record, store, sample (the buffer every trajectory-matching method reads).

Example:
    >>> from condense.expert_trajectories import get_expert_config
    >>> get_expert_config("ftd").rho
    0.01
"""

from __future__ import annotations

from condense.expert_trajectories.buffer import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    ExpertBuffer,
    TrajectorySample,
    expert_filename,
)
from condense.expert_trajectories.recorder import (
    EXPERT_KINDS,
    EXPERT_PRESETS,
    ExpertConfig,
    FlatExpertConfig,
    SmoothExpertConfig,
    VanillaExpertConfig,
    derive_seed,
    get_expert_config,
    list_expert_kinds,
    record_experts,
)
from condense.expert_trajectories.sam import gsam_gradient

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "EXPERT_KINDS",
    "EXPERT_PRESETS",
    "ExpertBuffer",
    "ExpertConfig",
    "FlatExpertConfig",
    "SmoothExpertConfig",
    "TrajectorySample",
    "VanillaExpertConfig",
    "derive_seed",
    "expert_filename",
    "get_expert_config",
    "gsam_gradient",
    "list_expert_kinds",
    "record_experts",
]
