"""Teachers from a user's checkpoint: :func:`import_teacher` reads a state dict, measures it and seals it.

A checkpoint from another code base (``torch.save(model.state_dict(), "ckpt.pth")``, a training script's
``{"epoch": ..., "state_dict": ...}``, a safetensors file) becomes a normal condense teacher: the state dict is
loaded strictly into a condense architecture, its test accuracy is measured on the data it is declared for, and it
is saved with that data's class order, preprocessing and fingerprint (``recipe_name`` ``"imported"``; the recipe
records the source file's name and sha256, ``epochs`` is 0).

Nothing is unpickled: ``.pth``/``.pt`` files are read with ``torch.load(..., weights_only=True)``, which refuses
pickles that would run code. Key prefixes are normalized: ``module.`` (``DataParallel``/DDP) and ``_orig_mod.``
(``torch.compile``) are removed, and ``net.`` is added for ``timm:`` models (whose condense wrapper holds the timm
network as ``net``), so a torchvision/timm ResNet state dict loads into ``timm:resnet18``.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from condense.errors import ArgumentTypeError, DataNotFoundError, IntegrityError
from condense.io import sha256_bytes
from condense.models import TIMM_PREFIX, create_model_for
from condense.teachers.record import IMPORTED, Teacher, measure_accuracy

if TYPE_CHECKING:
    from condense.data import ImageData

__all__ = ["NESTED_KEYS", "import_teacher", "read_state_dict"]

logger = logging.getLogger("condense")

#: keys under which training scripts commonly nest the state dict, tried in this order when no ``key`` is given
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "state_dict_ema")
_STRIP_PREFIXES = ("module.", "_orig_mod.")


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def _is_safetensors(blob: bytes) -> bool:
    # safetensors: 8-byte little-endian header length, then a JSON header starting with '{'
    if len(blob) < 10:
        return False
    n = int.from_bytes(blob[:8], "little")
    return 0 < n <= len(blob) - 8 and blob[8:9] == b"{"


def read_state_dict(path: str | Path, key: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict stored in ``path`` (safetensors, or ``torch.load(weights_only=True)``), with its provenance.

    Args:
        path: a safetensors file or a file written by ``torch.save``.
        key: the entry holding the state dict (``"state_dict"``, ``"model"``, ...); None: the file's top level when
            it is a state dict, else the first of :data:`NESTED_KEYS` that holds one.

    Returns:
        ``(state_dict, info)``: ``info`` holds ``source_file`` (the file name), ``source_sha256``, ``key`` (the
        entry used, or None) and ``prefix_removed`` (``"module."`` or ``"_orig_mod."`` when stripped, else None).

    Raises:
        DataNotFoundError: the file is absent.
        IntegrityError: one line: the file is neither safetensors nor a weights-only torch file (a pickle with
            code is refused), or it holds no state dict at ``key``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"checkpoint '{path}' not found (expected a .safetensors or torch.save file)")
    blob = path.read_bytes()
    fix = "re-save it with torch.save(model.state_dict(), path) or safetensors.torch.save_file"
    if _is_safetensors(blob):
        from safetensors.torch import load

        try:
            obj: Any = load(blob)
        except Exception as e:  # safetensors raises its own error types
            raise IntegrityError(f"checkpoint '{path}' is not a valid safetensors file ({_first_line(e)})") from e
    else:
        try:
            obj = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        except Exception as e:  # UnpicklingError for a pickle with code, RuntimeError/EOFError for other files
            raise IntegrityError(
                f"checkpoint '{path}' cannot be read as weights only (torch.load(weights_only=True): "
                f"{_first_line(e)}); condense never unpickles code: {fix}"
            ) from e
    used = key
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            keys = sorted(map(str, obj)) if isinstance(obj, Mapping) else []
            raise IntegrityError(f"checkpoint '{path}' has no entry {key!r}; its top-level keys: {keys[:10]}")
        obj = obj[key]
    elif not _is_state_dict(obj) and isinstance(obj, Mapping):
        used = next((k for k in NESTED_KEYS if _is_state_dict(obj.get(k))), None)
        obj = obj[used] if used is not None else obj
    if not _is_state_dict(obj):
        what = f"entry {used!r}" if used is not None else "the file"
        shown = sorted(map(str, obj))[:10] if isinstance(obj, Mapping) else type(obj).__name__
        raise IntegrityError(
            f"checkpoint '{path}': {what} is not a state dict of named tensors (holds {shown}); pass the key of "
            f"the entry that is (key=... / --key K; tried {', '.join(NESTED_KEYS)})"
        )
    state = dict(obj)
    removed = None
    for prefix in _STRIP_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
            removed = prefix if removed is None else removed + prefix
    info = {"source_file": path.name, "source_sha256": sha256_bytes(blob), "key": used, "prefix_removed": removed}
    return state, info


def _check_fits(state: Mapping[str, torch.Tensor], module: torch.nn.Module, where: str) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (first '{missing[0]}')")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first '{unexpected[0]}')")
        raise IntegrityError(f"{where}: {', '.join(parts)}; check --model / --model-arg, or --key")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise IntegrityError(
                f"{where}: tensor '{k}' has shape {tuple(state[k].shape)}, the architecture needs {tuple(v.shape)}; "
                "check --model / --model-arg and the dataset (channels, classes)"
            )


def import_teacher(
    checkpoint: str | Path,
    model: str,
    data: ImageData,
    out: str | Path | None,
    *,
    model_kwargs: dict[str, Any] | None = None,
    key: str | None = None,
    device: str | torch.device = "cpu",
) -> Teacher:
    """Load a user's checkpoint into condense architecture ``model``, measure it on ``data`` and save it to ``out``.

    The data contract recorded is ``data``'s (name, fingerprint, class order, preprocessing): pass the data the
    checkpoint was trained on, with the same normalization and class order. The measured test accuracy is the
    check that they match; one near chance is logged as a warning (the usual cause is another class order or
    normalization).

    Args:
        checkpoint: a safetensors file or a ``torch.save`` file holding a state dict (see :func:`read_state_dict`).
        model: a registered model name or ``timm:<name>``.
        data: the image data the checkpoint was trained on.
        out: teacher folder (files there are replaced); None: not saved.
        model_kwargs: builder options of ``model``.
        key: the checkpoint entry holding the state dict (None: found automatically).
        device: where the accuracy is measured and the returned teacher lives.

    Raises:
        ArgumentTypeError: ``data`` is not image data.
        DataNotFoundError: the checkpoint is absent.
        IntegrityError: one line: the file cannot be read as weights only, holds no state dict, or does not fit
            the architecture (naming the first missing or unexpected key, or the first tensor of another shape).
    """
    if getattr(data, "kind", None) != "images":
        raise ArgumentTypeError(f"import_teacher needs image data (ImageData), got {type(data).__name__}")
    model_kwargs = dict(model_kwargs or {})
    state, info = read_state_dict(checkpoint, key)
    module = create_model_for(model, data, seed=0, **model_kwargs)
    prefix_added = None
    if model.startswith(TIMM_PREFIX) and not any(k.startswith("net.") for k in state):
        state, prefix_added = {f"net.{k}": v for k, v in state.items()}, "net."
    _check_fits(state, module, f"checkpoint '{checkpoint}' does not fit architecture {model!r} {model_kwargs}")
    module.load_state_dict(state, strict=True)
    device = torch.device(device)
    module.to(device).eval()
    acc = measure_accuracy(module, data.x_test, data.y_test, device)
    if data.num_classes > 1 and acc < 1.5 / data.num_classes:
        logger.warning(
            "imported teacher %s scores %.2f %% on %s, near chance (%.2f %%): was it trained with this class order "
            "and normalization?",
            model,
            100 * acc,
            data.name,
            100 / data.num_classes,
        )
    teacher = Teacher(
        module=module,
        model=model,
        model_kwargs=model_kwargs,
        dataset=data.name,
        fingerprint=data.fingerprint,
        classes=list(data.classes),
        preprocessing=data.preprocessing(),
        recipe={**info, "prefix_added": prefix_added},
        recipe_name=IMPORTED,
        epochs=0,
        seed=0,
        test_accuracy=acc,
        input_shape=[data.channels, *data.image_size],
    )
    if out is not None:
        teacher.save(out)
    return teacher
