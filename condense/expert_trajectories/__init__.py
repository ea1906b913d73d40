"""Expert trajectories: record, store, sample (the buffer every trajectory-matching method reads).

Files, in reading order: ``configs.py`` (expert kinds and the papers' presets), ``manifest.py`` (the buffer format:
manifest header, expert files, resume scan), ``buffer.py`` (:class:`ExpertBuffer`, the read side), ``record.py``
(:func:`record_experts` and its resume loop), ``_partial.py`` (checkpoints of the experts in training, the progress
log), ``_train.py`` (the vmapped K-expert trainer), ``sam.py`` (GSAM for flat experts).

Example:
    >>> from condense.expert_trajectories import get_expert_config
    >>> get_expert_config("ftd").rho
    0.01
"""

from __future__ import annotations

from condense.expert_trajectories.buffer import ExpertBuffer, TrajectorySample
from condense.expert_trajectories.configs import (
    EXPERT_KINDS,
    EXPERT_PRESETS,
    ExpertConfig,
    FlatExpertConfig,
    SmoothExpertConfig,
    VanillaExpertConfig,
    expert_kind_of,
    get_expert_config,
    list_expert_kinds,
    list_expert_presets,
    resolve_expert_config,
)
from condense.expert_trajectories.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    STORAGE_DTYPES,
    TENSOR_KEY,
    canonical_json,
    dataset_record,
    derive_seed,
    expert_filename,
    read_manifest,
)
from condense.expert_trajectories.record import record_experts
from condense.expert_trajectories.sam import gsam_gradient

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "STORAGE_DTYPES",
    "TENSOR_KEY",
    "EXPERT_KINDS",
    "EXPERT_PRESETS",
    "ExpertBuffer",
    "ExpertConfig",
    "FlatExpertConfig",
    "SmoothExpertConfig",
    "TrajectorySample",
    "VanillaExpertConfig",
    "canonical_json",
    "dataset_record",
    "derive_seed",
    "expert_filename",
    "expert_kind_of",
    "get_expert_config",
    "gsam_gradient",
    "list_expert_kinds",
    "list_expert_presets",
    "read_manifest",
    "record_experts",
    "resolve_expert_config",
]
