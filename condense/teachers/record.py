"""The teacher on disk: :class:`Teacher`, its sealed ``teacher.json`` + ``teacher.safetensors`` pair, and loading.

See :mod:`condense.teachers` for the layout. One owner of the format: this file writes and reads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from condense.config import config_from_dict
from condense.errors import DataNotFoundError, IntegrityError, MismatchError
from condense.io import (
    canonical_json,
    check_fields,
    check_seal,
    check_stamp,
    load_tensors,
    read_json,
    save_tensors,
    seal,
    stamp,
    write_json_atomic,
)
from condense.models import create_model, has_running_stats
from condense.teachers.recipes import TeacherRecipe

if TYPE_CHECKING:
    from condense.data import ImageData

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "IMPORTED",
    "JSON_FILE",
    "TENSOR_FILE",
    "Teacher",
    "load_teacher",
    "measure_accuracy",
]

FORMAT = "condense.Teacher"
FORMAT_VERSION = 1
TENSOR_FILE = "teacher.safetensors"
JSON_FILE = "teacher.json"
#: ``recipe_name`` of a teacher imported from a user's checkpoint (:func:`condense.teachers.import_teacher`); its
#: ``recipe`` then records the source file instead of training values (:data:`_IMPORTED_FIELDS`).
IMPORTED = "imported"
_EVAL_BATCH = 1024

#: The type of every field of ``teacher.json`` (:func:`condense.io.check_fields`).
_FIELDS: dict[str, Any] = {
    "format": str,
    "format_version": int,
    "provenance": dict,
    "model": dict,
    "dataset": str,
    "fingerprint": str,
    "classes": list[str],
    "preprocessing": dict,
    "recipe_name": str | None,
    "recipe": dict,
    "epochs": int,
    "seed": int,
    "test_accuracy": float,
    "train_seconds": float,
    "tensors": dict[str, dict],
    "sha256": str,
}
_MODEL_FIELDS: dict[str, Any] = {"name": str, "kwargs": dict, "input_shape": list[int], "num_classes": int}
_IMPORTED_FIELDS: dict[str, Any] = {
    "source_file": str,
    "source_sha256": str,
    "key": str | None,
    "prefix_removed": str | None,
    "prefix_added": str | None,
}


@dataclass
class Teacher:
    """A trained classifier with the data contract it was trained under.

    Args:
        module: the network, in eval mode.
        model: registered architecture name; ``model_kwargs`` its builder options.
        dataset, fingerprint, classes, preprocessing: the training data's name, content fingerprint, class order and
            preprocessing (``ImageData.preprocessing()``).
        recipe: the resolved :class:`TeacherRecipe` as a dict; ``recipe_name`` the preset it came from, if any.
        epochs, seed: training length and seed.
        test_accuracy: top-1 on the test split after the final epoch, a fraction in [0, 1].
        input_shape: ``[C, H, W]`` the network takes.
    """

    module: nn.Module
    model: str
    model_kwargs: dict[str, Any]
    dataset: str
    fingerprint: str
    classes: list[str]
    preprocessing: dict[str, Any]
    recipe: dict[str, Any]
    recipe_name: str | None
    epochs: int
    seed: int
    test_accuracy: float
    input_shape: list[int]
    train_seconds: float = 0.0
    provenance: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    sha256: str = ""  # of teacher.safetensors; set by save() and load_teacher()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def has_batchnorm(self) -> bool:
        """Whether the network keeps BatchNorm running statistics (what SRe2L-style recovery matches)."""
        return has_running_stats(self.module)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's class logits in eval mode (BatchNorm uses its running statistics).

        Shape:
            x: (N, C, H, W), float, in the teacher's preprocessing (see :attr:`preprocessing`).
            return: (N, K) float32 logits, on ``x``'s device, classes in :attr:`classes` order.
        """
        if x.ndim != 4 or list(x.shape[1:]) != list(self.input_shape):
            raise MismatchError(
                f"teacher takes images of shape (N, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}"
            )
        self.module.eval()
        dev = next(self.module.parameters()).device
        return self.module(x.to(dev, torch.float32)).float().to(x.device)

    def reference(self) -> dict[str, Any]:
        """What an artifact records about the teacher it was made with (JSON): folder, tensor sha256, architecture,
        dataset, fingerprint and measured test accuracy. Readers reload it with :func:`load_teacher` and compare."""
        return {
            "path": None if self.path is None else str(Path(self.path).resolve()),
            "sha256": self.sha256,
            "model": self.model,
            "model_kwargs": dict(self.model_kwargs),
            "dataset": self.dataset,
            "fingerprint": self.fingerprint,
            "test_accuracy": float(self.test_accuracy),
        }

    def check_compatible(self, data: ImageData) -> None:
        """Refuse data other than what the teacher was trained on: dataset, fingerprint, class order, preprocessing.

        Raises:
            MismatchError: one line naming the field and both values.
        """
        where = f"teacher '{self.path}'" if self.path is not None else "teacher"
        fix = "train a teacher on this data (condense teachers train) or load the data the teacher was trained on"
        if getattr(data, "kind", None) != "images":
            raise MismatchError(f"{where} needs image data, got {type(data).__name__}")
        pairs = (
            ("dataset", self.dataset, data.name),
            ("fingerprint", self.fingerprint, data.fingerprint),
            ("class order", list(self.classes), list(data.classes)),
            ("preprocessing", self.preprocessing, data.preprocessing()),
        )
        for what, mine, theirs in pairs:
            if canonical_json(_jsonable(mine)) != canonical_json(_jsonable(theirs)):
                raise MismatchError(
                    f"{where} was trained with {what} {_short(mine)}, the data has {what} {_short(theirs)}; {fix}"
                )

    def save(self, out: str | Path) -> Path:
        """Write ``out/teacher.safetensors`` + ``out/teacher.json`` atomically; returns the folder."""
        out = Path(out)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        for k, v in tensors.items():
            if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                raise IntegrityError(f"refusing to save non-finite values in teacher tensor '{k}'")
        meta = {
            **stamp(FORMAT, FORMAT_VERSION),
            "model": {
                "name": self.model,
                "kwargs": dict(self.model_kwargs),
                "input_shape": list(self.input_shape),
                "num_classes": self.num_classes,
            },
            "dataset": self.dataset,
            "fingerprint": self.fingerprint,
            "classes": list(self.classes),
            "preprocessing": _jsonable(self.preprocessing),
            "recipe_name": self.recipe_name,
            "recipe": dict(self.recipe),
            "epochs": int(self.epochs),
            "seed": int(self.seed),
            "test_accuracy": float(self.test_accuracy),
            "train_seconds": float(self.train_seconds),
            "tensors": {
                k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")} for k, v in tensors.items()
            },
        }
        spath = out / JSON_FILE
        check_fields(meta, {k: v for k, v in _FIELDS.items() if k != "sha256"}, spath, hint="pass values of that type")
        meta["sha256"] = save_tensors(
            out / TENSOR_FILE, tensors, metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)}
        )
        write_json_atomic(spath, seal(meta))
        self.path, self.sha256, self.provenance = out, meta["sha256"], dict(meta["provenance"])
        return out


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v))


def _short(v: Any, limit: int = 80) -> str:
    text = json.dumps(v) if not isinstance(v, str) else repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _teacher_dir(path: str | Path) -> Path:
    p = Path(path)
    return p.parent if p.name in (TENSOR_FILE, JSON_FILE) else p


def load_teacher(path: str | Path, map_location: str | torch.device = "cpu") -> Teacher:
    """Load and verify a teacher written by :func:`train_teacher` (pass its folder or either file).

    Raises:
        DataNotFoundError: either file is missing.
        IntegrityError: another format or version, an edited field (named), a field of the wrong type, a checksum,
            shape or dtype that differs from the record, or a state dict that does not fit the architecture.
    """
    folder = _teacher_dir(path)
    tpath, spath = folder / TENSOR_FILE, folder / JSON_FILE
    for p in (tpath, spath):
        if not p.is_file():
            raise DataNotFoundError(
                f"teacher file '{p}' not found; a teacher is a folder holding {TENSOR_FILE} and {JSON_FILE} "
                "(write one with 'condense teachers train ... --out DIR')"
            )
    meta = read_json(spath)
    if not isinstance(meta, dict):
        raise IntegrityError(f"'{spath}' is not a condense teacher record")
    check_stamp(meta, FORMAT, FORMAT_VERSION, spath)
    check_seal(meta, spath)
    check_fields(meta, _FIELDS, spath)
    check_fields(meta["model"], _MODEL_FIELDS, spath, prefix="model.")
    refuse = "the file cannot be trusted: re-create it"
    acc = meta["test_accuracy"]
    if not 0.0 <= acc <= 1.0:
        raise IntegrityError(f"'{spath}': field 'test_accuracy' is {acc}, expected a fraction in [0, 1]; {refuse}")
    m = meta["model"]
    if m["num_classes"] != len(meta["classes"]) or len(m["input_shape"]) != 3:
        raise IntegrityError(
            f"'{spath}': model num_classes {m['num_classes']} / input_shape {m['input_shape']} do not fit "
            f"{len(meta['classes'])} classes of (C, H, W) images; {refuse}"
        )
    recorded = meta["tensors"]
    tensors = load_tensors(tpath, expected_sha256=meta["sha256"])
    if set(recorded) != set(tensors):
        raise IntegrityError(f"'{tpath}' holds tensors {sorted(tensors)[:5]}..., the record lists others; {refuse}")
    for k, spec in recorded.items():
        t = tensors[k]
        if not isinstance(spec, dict) or [list(t.shape), str(t.dtype).replace("torch.", "")] != [
            spec.get("shape"),
            spec.get("dtype"),
        ]:
            raise IntegrityError(f"tensor '{k}' in '{tpath}' is {t.dtype} {tuple(t.shape)}, the record says {spec}")
    c, h, w = m["input_shape"]
    module = create_model(m["name"], in_channels=c, num_classes=m["num_classes"], image_size=(h, w), **m["kwargs"])
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise IntegrityError(f"'{tpath}' does not fit architecture {m['name']!r} {m['kwargs']}: {first}") from e
    module.to(map_location).eval()
    recipe = meta["recipe"]
    if meta["recipe_name"] == IMPORTED:
        check_fields(recipe, _IMPORTED_FIELDS, spath, prefix="recipe.")
    else:
        config_from_dict(TeacherRecipe, recipe)  # refuses an unknown or out-of-range recipe value
    return Teacher(
        module=module,
        model=m["name"],
        model_kwargs=dict(m["kwargs"]),
        dataset=meta["dataset"],
        fingerprint=meta["fingerprint"],
        classes=list(meta["classes"]),
        preprocessing=dict(meta["preprocessing"]),
        recipe=dict(recipe),
        recipe_name=meta["recipe_name"],
        epochs=meta["epochs"],
        seed=meta["seed"],
        test_accuracy=float(acc),
        input_shape=[c, h, w],
        train_seconds=float(meta["train_seconds"]),
        provenance=dict(meta["provenance"]),
        path=folder,
        sha256=meta["sha256"],
    )


@torch.no_grad()
def measure_accuracy(module: nn.Module, x: torch.Tensor, y: torch.Tensor, device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy of ``module`` in eval mode on ``(x, y)``, in batches of 1024, as a fraction in [0, 1].

    Shape:
        x: (N, C, H, W); y: (N,) int64.
    """
    module.eval()
    correct = 0
    for i in range(0, x.shape[0], _EVAL_BATCH):
        xb = x[i : i + _EVAL_BATCH].to(device)
        correct += int((module(xb).argmax(1).cpu() == y[i : i + _EVAL_BATCH].cpu()).sum())
    return correct / max(1, x.shape[0])
