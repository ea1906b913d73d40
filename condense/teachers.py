"""Teachers for decoupled distillation (squeeze): train a classifier on real data and keep it with its data contract.

SRe2L, RDED and the methods built on them (INFER, CV-DD, NRR-DD) start from a *teacher*, a network trained on the
real training set, whose BatchNorm statistics and logits the recover and relabel stages read. The most common
complaint in those repositories is a teacher used with data in another class order or another normalization
(RDED #3/#4/#6, CV-DD #5: accuracies tens of points low), so a condense teacher carries its architecture, dataset
name and fingerprint, class order, preprocessing, training recipe and measured test accuracy, and
:meth:`Teacher.check_compatible` refuses data that differs in any of them.

Layout on disk, in a folder ``out``:

- ``out/teacher.safetensors``: the model's ``state_dict`` (parameters and BatchNorm buffers).
- ``out/teacher.json``: format stamp, architecture (name, builder kwargs, input shape, class count), dataset name
  and fingerprint, classes, preprocessing, recipe name and values, epochs, seed, final-epoch test accuracy, tensor
  shapes/dtypes and the sha256 of the tensor file, sealed with :func:`condense.io.seal`.

Both are written atomically, the tensor file first. Loading checks the stamp, the seal (an edited field is refused
naming it), every field's type, the checksum, the recorded shapes and that the state dict fits the architecture.

Recipes (:data:`RECIPES`) are named presets of :class:`TeacherRecipe`, each with its ``source``:

- ``sre2l_cifar``: SRe2L's CIFAR teacher (``VILA-Lab/SRe2L`` ``SRe2L/*small_dataset/README_CIFAR.md``): SGD lr 0.1,
  momentum 0.9, weight decay 5e-4, cosine, batch 128, RandomCrop(pad 4) + flip, 200 epochs.
- ``rded_cifar``: RDED's squeeze recipe for CIFAR (``LINs-lab/RDED``): Adam lr 1e-3, batch 512, cosine, crop + flip,
  200 epochs.
- ``digits``: a condense recipe for the embedded 8x8 digits, sized for CPU minutes (no flip: mirrored digits are
  other glyphs).

Augmentation is the random crop with padding written as a shift (:func:`condense.augment.functional.crop`, DSA's
pad-and-crop as a gather), filled with the normalized value of a black pixel, so it equals torchvision's
``RandomCrop(size, padding=p)`` (zero padding) applied before ``Normalize`` as in the references; on ZCA data the fill
is 0 (whitened space has no black pixel). The flip is :func:`condense.augment.functional.flip`.

Known differences from the references: SRe2L and RDED train CIFAR teachers with a torchvision DataLoader (random
order per epoch, the last partial batch kept); condense keeps the last partial batch too, draws its order and
augmentation from seeded generators, and the cosine schedule is stepped per epoch (``CosineAnnealingLR(T_max=epochs)``
as in SRe2L's CIFAR script). The accuracy recorded is the final epoch's, never the best one.

Example:
    >>> from condense.data import load_dataset
    >>> data = load_dataset("digits")
    >>> t = train_teacher(data, "convnet_bn", 1, "tmp_teacher", quiet=True)  # doctest: +SKIP
    >>> load_teacher("tmp_teacher").check_compatible(data)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from condense.augment import NO_FLIP_DATASETS, functional
from condense.config import check_choice, check_range, config_from_dict, config_to_dict, preset
from condense.errors import (
    ArgumentTypeError,
    ConfigError,
    DataNotFoundError,
    DivergenceError,
    IntegrityError,
    MismatchError,
)
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
from condense.models import create_model, create_model_for, has_running_stats
from condense.seeding import derive_seed

if TYPE_CHECKING:
    from condense.data import ImageData

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "RECIPES",
    "TENSOR_FILE",
    "JSON_FILE",
    "Teacher",
    "TeacherRecipe",
    "augment_batch",
    "black_pixel",
    "default_recipe_for",
    "get_recipe",
    "list_recipes",
    "load_teacher",
    "train_teacher",
]

logger = logging.getLogger("condense")

FORMAT = "condense.Teacher"
FORMAT_VERSION = 1
TENSOR_FILE = "teacher.safetensors"
JSON_FILE = "teacher.json"
_SEED_NAMESPACE = "condense-teacher"
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


# ----------------------------------------------------------------------------------------------------------------------
# Recipes
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TeacherRecipe:
    """How a teacher is trained: optimizer, schedule, batch size and augmentation (algorithm values only)."""

    optimizer: str = "sgd"  # "sgd" or "adam" (SRe2L README_CIFAR: SGD)
    lr_teacher: float = 0.1  # initial learning rate (SRe2L README_CIFAR: 0.1)
    momentum: float = 0.9  # SGD momentum; ignored by Adam (SRe2L README_CIFAR: 0.9)
    weight_decay: float = 5e-4  # L2 weight decay (SRe2L README_CIFAR: 5e-4)
    schedule: str = "cosine"  # "cosine" (per-epoch CosineAnnealingLR to 0) or "constant" (SRe2L: cosine)
    batch_train: int = 128  # minibatch size (SRe2L README_CIFAR: 128)
    crop_padding: int = 4  # RandomCrop padding in pixels, 0: no crop (SRe2L README_CIFAR: RandomCrop(32, pad 4))
    flip: bool = True  # random horizontal flip with probability 0.5 (SRe2L README_CIFAR: RandomHorizontalFlip)
    train_epochs: int = 200  # the recipe's published length, used when no epoch count is given (SRe2L: 200)

    def __post_init__(self) -> None:
        check_choice("optimizer", self.optimizer, ("sgd", "adam"))
        check_choice("schedule", self.schedule, ("cosine", "constant"))
        check_range("lr_teacher", self.lr_teacher, 0.0, lo_open=True)
        check_range("momentum", self.momentum, 0.0, 1.0)
        check_range("weight_decay", self.weight_decay, 0.0)
        check_range("batch_train", self.batch_train, 1)
        check_range("crop_padding", self.crop_padding, 0)
        check_range("train_epochs", self.train_epochs, 1)


#: Named teacher recipes (timm-style keyword data, each with its ``source``).
RECIPES: dict[str, dict[str, Any]] = {
    "sre2l_cifar": preset(
        source="SRe2L (Yin et al., NeurIPS 2023) VILA-Lab/SRe2L SRe2L/*small_dataset/README_CIFAR.md: ResNet-18, "
        "SGD lr 0.1 momentum 0.9 wd 5e-4, cosine, batch 128, RandomCrop(32, padding=4) + flip, 200 epochs",
        optimizer="sgd",
        lr_teacher=0.1,
        momentum=0.9,
        weight_decay=5e-4,
        schedule="cosine",
        batch_train=128,
        crop_padding=4,
        flip=True,
        train_epochs=200,
    ),
    "rded_cifar": preset(
        source="RDED (Sun et al., CVPR 2024) LINs-lab/RDED squeeze recipe for CIFAR: Adam lr 1e-3, batch 512, "
        "cosine, RandomCrop(32, padding=4) + flip, 200 epochs (weight decay 0 and padding 4 not checked in the code)",
        optimizer="adam",
        lr_teacher=1e-3,
        momentum=0.0,
        weight_decay=0.0,
        schedule="cosine",
        batch_train=512,
        crop_padding=4,
        flip=True,
        train_epochs=200,
    ),
    "digits": preset(
        source="condense choice for the 8x8 digits on a CPU: SGD lr 0.05 momentum 0.9 wd 5e-4, cosine, batch 64, "
        "shift crop with padding 1, no flip, 30 epochs (measured: convnet_bn width 128, 1 thread: 15 s, 99.4 % test)",
        optimizer="sgd",
        lr_teacher=0.05,
        momentum=0.9,
        weight_decay=5e-4,
        schedule="cosine",
        batch_train=64,
        crop_padding=1,
        flip=False,
        train_epochs=30,
    ),
}


def list_recipes() -> list[str]:
    """The names of the teacher recipes."""
    return sorted(RECIPES)


def get_recipe(name: str, **overrides: Any) -> TeacherRecipe:
    """The recipe ``name`` (a key of :data:`RECIPES`) with ``overrides`` applied.

    Raises:
        UnknownNameError: unknown recipe (with a did-you-mean).
        ConfigError: an override is unknown or out of range.
    """
    from condense.registry import Registry

    reg: Registry[dict[str, Any]] = Registry("teacher recipe")
    for k, v in RECIPES.items():
        reg.register(k)(v)
    values = {k: v for k, v in reg.get(name).items() if k != "source"}
    return config_from_dict(TeacherRecipe, {**values, **overrides})


def default_recipe_for(dataset: str) -> str:
    """The recipe ``train_teacher`` uses when none is named: ``digits`` on the digits, else ``sre2l_cifar``."""
    return "digits" if dataset == "digits" else "sre2l_cifar"


# ----------------------------------------------------------------------------------------------------------------------
# The teacher
# ----------------------------------------------------------------------------------------------------------------------


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
        self.path, self.sha256 = out, meta["sha256"]
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


# ----------------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------------


def black_pixel(data: ImageData) -> torch.Tensor:
    """The normalized value of a 0 pixel per channel (0 on ZCA data), the fill of the padded crop.

    Shape:
        return: (1, C, 1, 1).
    """
    if data.zca is not None:
        return torch.zeros(1, data.channels, 1, 1)
    mean, std = torch.tensor(data.mean), torch.tensor(data.std)
    return (-mean / std).reshape(1, -1, 1, 1)


def augment_batch(x: torch.Tensor, recipe: TeacherRecipe, fill: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A recipe's training augmentation: RandomCrop(padding=p) as a shift with ``fill``, then the random flip.

    The shifts and flips are drawn from ``gen`` (a CPU generator), one per image.

    Shape:
        x: (B, C, H, W); fill: (1, C, 1, 1); return: (B, C, H, W).
    """
    b = x.shape[0]
    if recipe.crop_padding:
        p = recipe.crop_padding
        shift = torch.randint(-p, p + 1, (b, 2), generator=gen, device=gen.device)
        fill = fill.to(x.device, x.dtype)
        x = functional.crop(x - fill, shift) + fill  # zero fill of (x - fill) is the black pixel of x
    if recipe.flip:
        x = functional.flip(x, torch.rand(b, generator=gen, device=gen.device) < 0.5)
    return x


@torch.no_grad()
def _accuracy(module: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    module.eval()
    correct = 0
    for i in range(0, x.shape[0], _EVAL_BATCH):
        xb = x[i : i + _EVAL_BATCH].to(device)
        correct += int((module(xb).argmax(1).cpu() == y[i : i + _EVAL_BATCH].cpu()).sum())
    return correct / max(1, x.shape[0])


def train_teacher(
    data: ImageData,
    model: str,
    epochs: int | None,
    out: str | Path | None,
    *,
    recipe: str | TeacherRecipe | None = None,
    model_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    quiet: bool = False,
) -> Teacher:
    """Train a teacher on ``data``'s training split, measure its final test accuracy, and save it to ``out``.

    Args:
        data: image data (its class order and preprocessing are recorded and later enforced).
        model: a registered model name (``convnet_bn``, ``resnet18_bn``, ...); decoupled methods need BatchNorm.
        epochs: epochs to train; None: the recipe's ``train_epochs``.
        out: folder for ``teacher.safetensors`` + ``teacher.json`` (files there are replaced); None: not saved.
        recipe: a name in :data:`RECIPES`, a :class:`TeacherRecipe`, or None for :func:`default_recipe_for`.
        model_kwargs: builder options (``width=32``, ``norm="batch"``).
        seed: seeds the initialization, the batch order and the augmentation (independent derived streams).
        device: where training runs.
        quiet: no per-epoch log messages.

    Raises:
        ArgumentTypeError: ``data`` is not image data, or ``epochs``/``seed`` is not an int.
        ConfigError: ``epochs`` < 1, an unknown recipe value, a flip recipe on a no-flip dataset.
    """
    if getattr(data, "kind", None) != "images":
        raise ArgumentTypeError(f"train_teacher needs image data (ImageData), got {type(data).__name__}")
    for name, v in (("seed", seed), ("epochs", epochs)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise ArgumentTypeError(f"{name} must be an int, got {v!r}")
    if recipe is None:
        recipe = default_recipe_for(data.name)
    recipe_name = recipe if isinstance(recipe, str) else None
    cfg = get_recipe(recipe) if isinstance(recipe, str) else recipe
    if not isinstance(cfg, TeacherRecipe):
        raise ArgumentTypeError(f"recipe must be a name or a TeacherRecipe, got {type(recipe).__name__}")
    epochs = cfg.train_epochs if epochs is None else epochs
    check_range("epochs", epochs, 1)
    check_range("seed", seed, 0)
    if cfg.flip and data.name in NO_FLIP_DATASETS:
        raise ConfigError(
            f"recipe {recipe_name or 'given'} flips images, but dataset {data.name!r} must not be flipped (mirrored "
            f"digits are other glyphs; no-flip datasets: {', '.join(NO_FLIP_DATASETS)}); use recipe 'digits' or "
            "a recipe with flip=False"
        )
    model_kwargs = dict(model_kwargs or {})
    device = torch.device(device)
    module = create_model_for(
        model, data, seed=derive_seed(_SEED_NAMESPACE, seed, "init") % (2**63), device=device, **model_kwargs
    )
    order_gen = torch.Generator().manual_seed(derive_seed(_SEED_NAMESPACE, seed, "order"))
    aug_gen = torch.Generator().manual_seed(derive_seed(_SEED_NAMESPACE, seed, "augment"))
    if cfg.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            module.parameters(), lr=cfg.lr_teacher, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    else:
        opt = torch.optim.Adam(module.parameters(), lr=cfg.lr_teacher, weight_decay=cfg.weight_decay)
    fill = black_pixel(data)
    x_train, y_train = data.x_train, data.y_train
    n = x_train.shape[0]
    t0 = time.perf_counter()
    for epoch in range(epochs):
        lr = cfg.lr_teacher
        if cfg.schedule == "cosine":  # CosineAnnealingLR(T_max=epochs, eta_min=0), stepped once per epoch
            lr = 0.5 * cfg.lr_teacher * (1 + math.cos(math.pi * epoch / epochs))
        for g in opt.param_groups:
            g["lr"] = lr
        module.train()
        perm = torch.randperm(n, generator=order_gen, device=order_gen.device).cpu()
        total, seen = 0.0, 0
        for i in range(0, n, cfg.batch_train):
            idx = perm[i : i + cfg.batch_train]
            if idx.numel() < 2 and has_running_stats(module):
                continue  # BatchNorm cannot train on one image; the reference loaders never meet this at batch 128
            xb = augment_batch(x_train[idx].to(device), cfg, fill, aug_gen)
            loss = F.cross_entropy(module(xb), y_train[idx].to(device))
            value = float(loss.detach())
            if not math.isfinite(value):
                raise DivergenceError(
                    f"teacher training diverged at epoch {epoch} (loss {value}); lower lr_teacher "
                    f"(now {cfg.lr_teacher})"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += value * idx.numel()
            seen += idx.numel()
        if not quiet:
            logger.info("teacher epoch %d/%d: train loss %.4f, lr %.4g", epoch + 1, epochs, total / max(1, seen), lr)
    seconds = time.perf_counter() - t0
    acc = _accuracy(module, data.x_test, data.y_test, device)
    module.eval()
    teacher = Teacher(
        module=module,
        model=model,
        model_kwargs=model_kwargs,
        dataset=data.name,
        fingerprint=data.fingerprint,
        classes=list(data.classes),
        preprocessing=data.preprocessing(),
        recipe=config_to_dict(cfg),
        recipe_name=recipe_name,
        epochs=epochs,
        seed=seed,
        test_accuracy=acc,
        input_shape=[data.channels, *data.image_size],
        train_seconds=seconds,
    )
    if out is not None:
        teacher.save(out)
        teacher.provenance = read_json(Path(out) / JSON_FILE)["provenance"]
    if not quiet:
        logger.info("teacher %s on %s: test accuracy %.2f %% after %d epochs", model, data.name, 100 * acc, epochs)
    return teacher
