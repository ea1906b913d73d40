"""Fault injection on every JSON record condense writes: each edit is refused with a CondenseError, never accepted.

File kinds: the artifact sidecar, the buffer manifest, an expert file's header record (read by the resume scan and
through the buffer), ``checkpoint.json`` and the record embedded in ``checkpoint.safetensors``. Edit kinds: change
each top-level field (same type, another value), remove it, give it the wrong type, truncate the JSON at several
points, append garbage. Every case must raise a :class:`CondenseError` subclass: another exception is a traceback
(a bug), no exception a silent acceptance.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from condense.errors import CondenseError

# ----------------------------------------------------------------------------------------------------------------------
# Edits of one JSON object
# ----------------------------------------------------------------------------------------------------------------------


def _other_value(v: Any) -> Any:
    """A value of the same JSON type that differs from ``v``."""
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return v + 1
    if isinstance(v, float):
        return v * 2 + 1
    if isinstance(v, str):
        return v + "x"
    if isinstance(v, list):
        return v[:-1] if v else [0]
    if isinstance(v, dict):
        return {**v, "_edited": 1}
    return 1  # null


def _wrong_type(v: Any) -> Any:
    """A value of another JSON type."""
    if isinstance(v, str):
        return 123
    if isinstance(v, bool):
        return "yes"
    if isinstance(v, (int, float)):
        return "12"
    if isinstance(v, list):
        return {"a": 1}
    if isinstance(v, dict):
        return [1]
    return "x"  # null


def _edits(text: str) -> Iterator[tuple[str, str]]:
    """``(case name, edited text)`` for every edit kind applied to the JSON object ``text``."""
    obj = json.loads(text)
    for key in obj:
        yield f"edit {key}", json.dumps({**obj, key: _other_value(obj[key])})
        yield f"remove {key}", json.dumps({k: v for k, v in obj.items() if k != key})
        yield f"wrong type {key}", json.dumps({**obj, key: _wrong_type(obj[key])})
    body = text.rstrip()
    for cut in sorted({0, 1, len(body) // 2, len(body) - 1}):
        yield f"truncate at {cut}", body[:cut]
    yield "append garbage", body + "garbage"
    yield "append an object", body + '\n{"lr": 1}'


# ----------------------------------------------------------------------------------------------------------------------
# File kinds: how to put an edited record in place, and how condense reads it
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class _Kind:
    name: str
    read_text: Callable[[], str]  # the pristine record
    write_text: Callable[[str], None]  # put an edited record in place
    restore: Callable[[], None]  # put the pristine files back
    load: Callable[[], Any]  # what condense does with it


def _file_kind(name: str, path: Path, load: Callable[[], Any]) -> _Kind:
    pristine = path.read_bytes()
    return _Kind(name, lambda: pristine.decode(), path.write_text, lambda: path.write_bytes(pristine), load)


def _header_kind(name: str, path: Path, load: Callable[[], Any]) -> _Kind:
    """A JSON record stored as ``metadata["record"]`` in a safetensors header (tensor bytes kept)."""
    from safetensors.torch import load_file

    from condense.io import read_metadata, save_tensors

    pristine, meta, tensors = path.read_bytes(), read_metadata(path), load_file(path)

    def write(text: str) -> None:
        save_tensors(path, tensors, metadata={**meta, "record": text})

    return _Kind(name, lambda: meta["record"], write, lambda: path.write_bytes(pristine), load)


@pytest.fixture(scope="module")
def kinds(tmp_path_factory, digits) -> list[_Kind]:
    from condense.expert_trajectories import ExpertBuffer, expert_filename, get_expert_config, record_experts
    from condense.expert_trajectories.manifest import MANIFEST_NAME, scan_experts
    from condense.methods._checkpoint import CHECKPOINT_JSON, CHECKPOINT_TENSORS, load_checkpoint, save_checkpoint
    from condense.methods.base import MatchState
    from condense.synthetic import SyntheticSet, sidecar_path

    root = tmp_path_factory.mktemp("faults")
    # an artifact with a learned lr, ZCA-free preprocessing and a config
    g = torch.Generator().manual_seed(0)
    syn = SyntheticSet(
        images=torch.randn(20, 1, 8, 8, generator=g),
        labels=torch.arange(10).repeat(2),
        classes=list(digits.classes),
        method="mtt",
        dataset="digits",
        ipc=2,
        lr=0.0123,
        preprocessing=digits.preprocessing(),
        config={"syn_steps": 3, "lr_img": 100.0},
        meta={"iterations": 2},
    )
    art = syn.save(root / "art.safetensors")
    # a buffer of two tiny experts
    buf = root / "buf"
    cfg = get_expert_config("vanilla", batch_size=256, augment="none")
    record_experts(digits, "convnet", 2, 1, buf, config=cfg, quiet=True, model_kwargs={"width": 8}, seed=3)
    header = json.loads((buf / MANIFEST_NAME).read_text())
    # a checkpoint of a small state
    ck = root / "ck"
    state = MatchState(
        tensors={"images": torch.randn(10, 1, 8, 8, generator=g), "labels": torch.arange(10)},
        scalars={"lr_img": 0.5, "ipc": 1},
    )
    identity = {
        "method": "toy",
        "config": {"num_iterations": 6, "lr_img": 0.5},
        "dataset": digits.name,
        "fingerprint": digits.fingerprint,
        "preprocessing": json.loads(json.dumps(digits.preprocessing())),
        "ipc": 1,
    }
    save_checkpoint(ck, state, torch.Generator().manual_seed(1), 4, identity, {"divergences": 0, "seconds": 1.5})

    expert = buf / expert_filename(1)
    return [
        _file_kind("artifact sidecar", sidecar_path(art), lambda: SyntheticSet.load(art)),
        _file_kind("buffer manifest", buf / MANIFEST_NAME, lambda: ExpertBuffer.open(buf)),
        _header_kind("expert record (resume scan)", expert, lambda: scan_experts(buf, header)),
        _header_kind("expert record (buffer read)", expert, lambda: ExpertBuffer.open(buf).trajectory(1)),
        _file_kind("checkpoint.json", ck / CHECKPOINT_JSON, lambda: load_checkpoint(ck)),
        _header_kind("checkpoint record", ck / CHECKPOINT_TENSORS, lambda: load_checkpoint(ck)),
    ]


def run_cases(kinds: list[_Kind]) -> tuple[Counter, list[str]]:
    """Apply every edit to every file kind; count ``clear`` / ``traceback`` / ``silent`` outcomes (and list the bad)."""
    counts: Counter = Counter()
    bad: list[str] = []
    for kind in kinds:
        kind.load()  # the pristine files load
        for case, text in _edits(kind.read_text()):
            kind.write_text(text)
            try:
                kind.load()
            except CondenseError:
                counts["clear"] += 1
            except Exception as e:  # noqa: BLE001 - anything else is the bug this test looks for
                counts["traceback"] += 1
                bad.append(f"{kind.name}: {case}: traceback {type(e).__name__}: {e}")
            else:
                counts["silent"] += 1
                bad.append(f"{kind.name}: {case}: accepted")
            finally:
                kind.restore()
            counts["tried"] += 1
        kind.load()  # restored: loads again
    return counts, bad


def test_every_edit_of_every_file_is_refused_with_a_condense_error(kinds):
    counts, bad = run_cases(kinds)
    assert bad == []
    assert counts["traceback"] == 0 and counts["silent"] == 0
    assert counts["clear"] == counts["tried"] > 300  # 6 file kinds x (3 per field x ~15 fields + 6 cuts)


def test_the_fault_loop_can_fail(tmp_path):
    """A loader that accepts everything, and one that raises a plain exception, are both caught by the loop."""
    path = tmp_path / "x.json"
    path.write_text('{"a": 1}')
    counts, bad = run_cases([_file_kind("lax", path, lambda: None)])
    assert counts["silent"] == counts["tried"] > 0 and len(bad) == counts["tried"]
    buggy = _file_kind("buggy", path, lambda: 1 / (path.read_text() == '{"a": 1}'))  # ZeroDivisionError once edited
    counts, _ = run_cases([buggy])
    assert counts["traceback"] == counts["tried"] > 0
