"""Self-supervised target encoders (Barlow Twins) for KRR-ST, stored like a teacher.

KRR-ST (Lee et al., ICLR 2024, arXiv:2310.06511) distills towards the representations of a frozen *target model*
trained without labels: a Barlow Twins ResNet-18 in the released code (``db-Lee/selfsup_dd:train.py:40-44``, the
checkpoint ``teacher_ckpt/barlow_twins_resnet18_{data}.pt`` is shipped, not trained there). condense trains one:

- backbone: any registered image model with ``embed`` (ConvNet-BN by default); its representation is ``embed(x)``,
  of dimension ``num_features`` (the classifier of the builder is unused and built with one output);
- projector: Linear-BN-ReLU-Linear (Barlow Twins, Zbontar et al., ICML 2021, arXiv:2103.03230, Sec. 2), dropped at
  save time as in the paper (the representation is the backbone's output);
- loss: ``sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2`` with ``C`` the cross-correlation of the two views'
  batch-standardized projections (the paper's Eq. 1, lambda = 5.1e-3);
- views: a random shift with black fill (RandomCrop with padding), a horizontal flip only where the dataset allows
  it (never on digits: :data:`condense.augment.NO_FLIP_DATASETS`), Gaussian noise and a random erased square;
- optimizer: AdamW with a cosine schedule stepped per epoch (the paper uses LARS at batch 2048; on CPU-sized data
  AdamW is the stable choice; a known difference).

At save time the encoder's **linear-probe accuracy** is measured and recorded: a closed-form ridge regression
(float64 ``torch.linalg.solve``) from the standardized train-split representations to one-hot labels, scored on the
test split. The labels are read only for this number.

Layout on disk, in a folder ``out``: ``encoder.safetensors`` (the backbone's ``state_dict``) and ``encoder.json``
(format stamp, architecture, dataset name and fingerprint, classes, preprocessing, recipe, epochs, seed, feature
dimension, probe accuracy, tensor shapes and the tensor file's sha256), sealed with :func:`condense.io.seal`; both
written atomically, the tensor file first. This file is the one owner of the format.

Example:
    >>> from condense.data import load_dataset  # doctest: +SKIP
    >>> enc = train_encoder(load_dataset("digits"), "convnet_bn", 30, "enc")  # doctest: +SKIP
    >>> load_encoder("enc").features(x).shape  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from condense.augment import NO_FLIP_DATASETS, functional
from condense.config import check_range, config_from_dict
from condense.errors import ConfigError, DataNotFoundError, IntegrityError, MismatchError
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
from condense.models import create_model
from condense.seeding import derive_seed, seeded

__all__ = [
    "ENCODER_FORMAT",
    "ENCODER_JSON_FILE",
    "ENCODER_TENSOR_FILE",
    "Encoder",
    "EncoderRecipe",
    "barlow_twins_loss",
    "default_encoder_recipe",
    "import_encoder",
    "linear_probe_accuracy",
    "load_encoder",
    "train_encoder",
]

ENCODER_FORMAT = "condense.Encoder"
_FORMAT_VERSION = 1
ENCODER_TENSOR_FILE = "encoder.safetensors"
ENCODER_JSON_FILE = "encoder.json"
_BATCH = 1024
#: ``recipe["name"]`` of an encoder read from a user's checkpoint (:func:`import_encoder`)
IMPORTED_ENCODER = "imported"

_FIELDS: dict[str, Any] = {
    "format": str,
    "format_version": int,
    "provenance": dict,
    "model": dict,
    "dataset": str,
    "fingerprint": str,
    "classes": list[str],
    "preprocessing": dict,
    "recipe": dict,
    "epochs": int,
    "seed": int,
    "feature_dim": int,
    "probe_accuracy": float,
    "train_seconds": float,
    "tensors": dict[str, dict],
    "sha256": str,
}


@dataclass(frozen=True, kw_only=True)
class EncoderRecipe:
    """How a Barlow Twins encoder is trained (defaults sized for small images; see :func:`default_encoder_recipe`)."""

    batch_train: int = 256  # images per step (Barlow Twins: 2048; CPU-sized here)
    lr: float = 1e-3  # AdamW learning rate, cosine to 0 over the epochs (condense choice; the paper uses LARS)
    weight_decay: float = 1e-4  # AdamW weight decay
    lambda_offdiag: float = 5.1e-3  # lambda, weight of the redundancy-reduction term (Barlow Twins paper Sec. 2)
    projector_dim: int = 256  # width of the two projector layers
    crop_padding: int = 1  # RandomCrop padding as a shift, black fill
    flip: bool = False  # horizontal flip (never on digit datasets)
    noise_std: float = 0.1  # Gaussian noise added to each view (normalized units)
    erase_size: int = 3  # side of the erased square; 0 turns erasing off
    erase_prob: float = 0.5  # probability that a view gets an erased square

    def __post_init__(self) -> None:
        check_range("batch_train", self.batch_train, 2)
        check_range("lr", self.lr, 0.0, lo_open=True)
        check_range("weight_decay", self.weight_decay, 0.0)
        check_range("lambda_offdiag", self.lambda_offdiag, 0.0)
        check_range("projector_dim", self.projector_dim, 1)
        check_range("crop_padding", self.crop_padding, 0)
        check_range("noise_std", self.noise_std, 0.0)
        check_range("erase_size", self.erase_size, 0)
        check_range("erase_prob", self.erase_prob, 0.0, 1.0)


def default_encoder_recipe(data: Any, **overrides: Any) -> EncoderRecipe:
    """The recipe for ``data``: padding 1/8 of the side (4 px on 32 px, 1 px on 8 px), flips unless the dataset is a
    no-flip dataset (digits, MNIST, SVHN: a mirrored digit is another glyph), erasing of 3/8 of the side."""
    side = int(data.image_size[0])
    base = {
        "crop_padding": max(1, int(0.125 * side + 0.5)),
        "flip": data.name not in NO_FLIP_DATASETS,
        "erase_size": max(1, int(0.375 * side + 0.5)),
    }
    recipe = EncoderRecipe(**{**base, **overrides})
    if recipe.flip and data.name in NO_FLIP_DATASETS:
        raise ConfigError(
            f"flip=True mirrors the images, but dataset {data.name!r} must not be flipped; set flip=False"
        )
    return recipe


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambda_offdiag: float) -> torch.Tensor:
    """Barlow Twins' loss: ``sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2``, ``C = z1n^T z2n / B`` with each
    projection standardized over the batch.

    Shape:
        z1, z2: (B, P); return: () scalar.
    """
    b = z1.shape[0]
    z1n = (z1 - z1.mean(0)) / (z1.std(0, unbiased=False) + 1e-5)
    z2n = (z2 - z2.mean(0)) / (z2.std(0, unbiased=False) + 1e-5)
    c = z1n.T @ z2n / b
    diag = torch.diagonal(c)
    return (1 - diag).pow(2).sum() + lambda_offdiag * (c.pow(2).sum() - diag.pow(2).sum())


def _view(x: torch.Tensor, recipe: EncoderRecipe, fill: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One random view per image: shift (black fill), optional flip, noise, an erased square (filled black)."""
    b, _, h, w = x.shape
    if recipe.crop_padding:
        p = recipe.crop_padding
        x = functional.crop(x - fill, torch.randint(-p, p + 1, (b, 2), generator=gen, device=gen.device)) + fill
    if recipe.flip:
        x = functional.flip(x, torch.rand(b, generator=gen, device=gen.device) < 0.5)
    if recipe.noise_std:
        x = x + recipe.noise_std * torch.randn(x.shape, generator=gen, device=gen.device)
    if recipe.erase_size and recipe.erase_prob:
        centers = torch.stack(
            [
                torch.randint(0, h, (b,), generator=gen, device=gen.device),
                torch.randint(0, w, (b,), generator=gen, device=gen.device),
            ],
            1,
        )
        erased = functional.cutout(x - fill, centers, (recipe.erase_size, recipe.erase_size)) + fill
        keep = (torch.rand(b, generator=gen, device=gen.device) >= recipe.erase_prob).view(b, 1, 1, 1)
        x = torch.where(keep, x, erased)
    return x


def _black(data: Any) -> torch.Tensor:
    if data.zca is not None:
        return torch.zeros(1, data.channels, 1, 1)
    return (-torch.tensor(data.mean) / torch.tensor(data.std)).reshape(1, -1, 1, 1)


@dataclass
class Encoder:
    """A self-supervised backbone with the data contract it was trained under.

    Args:
        module: the backbone (eval mode); :meth:`features` is its ``embed``.
        model, model_kwargs: registered architecture and builder options.
        dataset, fingerprint, classes, preprocessing: the training data it was trained on (labels never used for
            training; ``classes`` are recorded for the probe).
        recipe: the :class:`EncoderRecipe` as a dict; epochs, seed: training length and seed.
        probe_accuracy: linear-probe top-1 on the test split at save time, a fraction in [0, 1].
        input_shape: ``[C, H, W]``.
    """

    module: nn.Module
    model: str
    model_kwargs: dict[str, Any]
    dataset: str
    fingerprint: str
    classes: list[str]
    preprocessing: dict[str, Any]
    recipe: dict[str, Any]
    epochs: int
    seed: int
    probe_accuracy: float
    input_shape: list[int]
    train_seconds: float = 0.0
    provenance: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    sha256: str = ""

    @property
    def feature_dim(self) -> int:
        return int(self.module.num_features)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The target representations ``g(x)`` in eval mode, in batches of 1024.

        Shape:
            x: (N, C, H, W) in the encoder's preprocessing; return: (N, D) float32 on ``x``'s device.
        """
        if x.ndim != 4 or list(x.shape[1:]) != list(self.input_shape):
            raise MismatchError(
                f"encoder takes images of shape (N, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}"
            )
        self.module.eval()
        dev = next(self.module.parameters()).device
        out = [self.module.embed(x[i : i + _BATCH].to(dev, torch.float32)).float() for i in range(0, len(x), _BATCH)]
        return torch.cat(out).to(x.device)

    def reference(self) -> dict[str, Any]:
        """What an artifact records about its encoder (JSON)."""
        return {
            "path": None if self.path is None else str(Path(self.path).resolve()),
            "sha256": self.sha256,
            "model": self.model,
            "model_kwargs": dict(self.model_kwargs),
            "dataset": self.dataset,
            "fingerprint": self.fingerprint,
            "feature_dim": self.feature_dim,
            "probe_accuracy": float(self.probe_accuracy),
        }

    def check_compatible(self, data: Any) -> None:
        """Refuse data other than the encoder's: dataset, fingerprint, preprocessing (one line naming the field)."""
        where = f"encoder '{self.path}'" if self.path is not None else "encoder"
        if getattr(data, "kind", None) != "images":
            raise MismatchError(f"{where} needs image data, got {type(data).__name__}")
        for what, mine, theirs in (
            ("dataset", self.dataset, data.name),
            ("fingerprint", self.fingerprint, data.fingerprint),
            ("preprocessing", self.preprocessing, data.preprocessing()),
        ):
            if canonical_json(json.loads(json.dumps(mine))) != canonical_json(json.loads(json.dumps(theirs))):
                raise MismatchError(
                    f"{where} was trained with {what} {str(mine)[:80]}, the data has {str(theirs)[:80]}; train an "
                    "encoder on this data (condense.teachers.train_encoder) or load the data it was trained on"
                )

    def save(self, out: str | Path) -> Path:
        """Write ``out/encoder.safetensors`` + ``out/encoder.json`` atomically; returns the folder."""
        out = Path(out)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        for k, v in tensors.items():
            if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                raise IntegrityError(f"refusing to save non-finite values in encoder tensor '{k}'")
        meta = {
            **stamp(ENCODER_FORMAT, _FORMAT_VERSION),
            "model": {"name": self.model, "kwargs": dict(self.model_kwargs), "input_shape": list(self.input_shape)},
            "dataset": self.dataset,
            "fingerprint": self.fingerprint,
            "classes": list(self.classes),
            "preprocessing": json.loads(json.dumps(self.preprocessing)),
            "recipe": dict(self.recipe),
            "epochs": int(self.epochs),
            "seed": int(self.seed),
            "feature_dim": self.feature_dim,
            "probe_accuracy": float(self.probe_accuracy),
            "train_seconds": float(self.train_seconds),
            "tensors": {
                k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")} for k, v in tensors.items()
            },
        }
        spath = out / ENCODER_JSON_FILE
        check_fields(meta, {k: v for k, v in _FIELDS.items() if k != "sha256"}, spath, hint="pass values of that type")
        meta["sha256"] = save_tensors(
            out / ENCODER_TENSOR_FILE,
            tensors,
            metadata={"format": ENCODER_FORMAT, "format_version": str(_FORMAT_VERSION)},
        )
        write_json_atomic(spath, seal(meta))
        self.path, self.sha256, self.provenance = out, meta["sha256"], dict(meta["provenance"])
        return out


def _backbone(model: str, input_shape: list[int], kwargs: dict[str, Any], seed: int | None) -> nn.Module:
    c, h, w = input_shape
    net = create_model(model, in_channels=c, num_classes=1, image_size=(h, w), seed=seed, **kwargs)
    if not hasattr(net, "embed") or not hasattr(net, "num_features"):
        raise ConfigError(f"model '{model}' has no embed()/num_features; pick a ConvNet or ResNet of condense")
    return net


@torch.no_grad()
def linear_probe_accuracy(encoder: Encoder, data: Any, ridge: float = 1e-3) -> float:
    """Top-1 test accuracy of a closed-form ridge regression from standardized train representations (plus a bias)
    to one-hot labels: ``W = (F^T F + lambda I)^-1 F^T Y`` by ``torch.linalg.solve`` in float64, ``lambda = ridge *
    tr(F^T F) / D``."""
    f_tr = encoder.features(data.x_train.cpu()).double()
    f_te = encoder.features(data.x_test.cpu()).double()
    mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-6
    f_tr, f_te = (f_tr - mu) / sd, (f_te - mu) / sd
    f_tr = torch.cat([f_tr, torch.ones(len(f_tr), 1, dtype=f_tr.dtype)], 1)
    f_te = torch.cat([f_te, torch.ones(len(f_te), 1, dtype=f_te.dtype)], 1)
    y = F.one_hot(data.y_train.cpu(), data.num_classes).double()
    gram = f_tr.T @ f_tr
    lam = ridge * torch.trace(gram) / gram.shape[0]
    w = torch.linalg.solve(gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype), f_tr.T @ y)
    return float((f_te @ w).argmax(1).eq(data.y_test.cpu()).double().mean())


def train_encoder(
    data: Any,
    model: str,
    epochs: int,
    out: str | Path | None = None,
    *,
    recipe: EncoderRecipe | None = None,
    model_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> Encoder:
    """Train a Barlow Twins encoder on ``data``'s training images (labels unused), measure its linear probe, and
    save it to ``out`` when given.

    Randomness: the backbone and projector are built under ``seeded(derive_seed("condense-encoder", seed, "init"))``;
    batch order and views come from a generator seeded with ``derive_seed("condense-encoder", seed, "views")``.
    """
    check_range("epochs", epochs, 1)
    if data.kind != "images":
        raise MismatchError(f"train_encoder needs image data, got {type(data).__name__}")
    recipe = recipe or default_encoder_recipe(data)
    if recipe.flip and data.name in NO_FLIP_DATASETS:
        raise ConfigError(f"flip=True mirrors the images, but dataset {data.name!r} must not be flipped")
    model_kwargs = dict(model_kwargs or {})
    device = torch.device(device)
    input_shape = [data.channels, *map(int, data.image_size)]
    start = time.perf_counter()
    init_seed = derive_seed("condense-encoder", seed, "init")
    net = _backbone(model, input_shape, model_kwargs, init_seed).to(device)
    p = recipe.projector_dim
    with seeded(init_seed + 1):
        proj = nn.Sequential(
            nn.Linear(net.num_features, p), nn.BatchNorm1d(p), nn.ReLU(), nn.Linear(p, p, bias=False)
        ).to(device)
    params = [*net.parameters(), *proj.parameters()]
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    gen = torch.Generator().manual_seed(derive_seed("condense-encoder", seed, "views"))
    x_all, fill = data.x_train.cpu(), _black(data)
    n, b = len(x_all), min(recipe.batch_train, len(x_all))
    for epoch in range(epochs):
        for g in opt.param_groups:  # cosine, stepped per epoch
            g["lr"] = recipe.lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        net.train(), proj.train()
        order = torch.randperm(n, generator=gen, device=gen.device)
        for i in range(0, n - b + 1, b):  # drop the last partial batch: the loss standardizes over the batch
            x = x_all[order[i : i + b]]
            v1, v2 = _view(x, recipe, fill, gen).to(device), _view(x, recipe, fill, gen).to(device)
            z = proj(net.embed(torch.cat([v1, v2])))
            loss = barlow_twins_loss(z[:b], z[b:], recipe.lambda_offdiag)
            if not bool(torch.isfinite(loss)):
                raise IntegrityError(f"Barlow Twins loss became {float(loss)} at epoch {epoch}; lower the lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    enc = Encoder(
        module=net,
        model=model,
        model_kwargs=model_kwargs,
        dataset=data.name,
        fingerprint=data.fingerprint,
        classes=list(data.classes),
        preprocessing=data.preprocessing(),
        recipe=asdict(recipe),
        epochs=int(epochs),
        seed=int(seed),
        probe_accuracy=0.0,
        input_shape=input_shape,
    )
    enc.probe_accuracy = linear_probe_accuracy(enc, data)
    enc.train_seconds = time.perf_counter() - start
    if out is not None:
        enc.save(out)
    return enc


def load_encoder(path: str | Path, map_location: str | torch.device = "cpu") -> Encoder:
    """Load and verify an encoder written by :func:`train_encoder` (its folder or either file).

    Raises:
        DataNotFoundError: a file is missing (a supervised teacher folder is named as such).
        IntegrityError: another format, an edited field, a checksum or shape that differs from the record.
    """
    folder = Path(path)
    if folder.name in (ENCODER_TENSOR_FILE, ENCODER_JSON_FILE):
        folder = folder.parent
    tpath, spath = folder / ENCODER_TENSOR_FILE, folder / ENCODER_JSON_FILE
    for p in (tpath, spath):
        if not p.is_file():
            hint = (
                " (this folder holds a supervised teacher, not an encoder)"
                if (folder / "teacher.json").is_file()
                else ""
            )
            raise DataNotFoundError(
                f"encoder file '{p}' not found{hint}; an encoder is a folder holding {ENCODER_TENSOR_FILE} and "
                f"{ENCODER_JSON_FILE} (write one with condense.teachers.train_encoder)"
            )
    meta = read_json(spath)
    if not isinstance(meta, dict):
        raise IntegrityError(f"'{spath}' is not a condense encoder record")
    check_stamp(meta, ENCODER_FORMAT, _FORMAT_VERSION, spath)
    check_seal(meta, spath)
    check_fields(meta, _FIELDS, spath)
    acc = meta["probe_accuracy"]
    if not 0.0 <= acc <= 1.0:
        raise IntegrityError(f"'{spath}': field 'probe_accuracy' is {acc}, expected a fraction in [0, 1]")
    tensors = load_tensors(tpath, expected_sha256=meta["sha256"])
    if set(meta["tensors"]) != set(tensors):
        raise IntegrityError(f"'{tpath}' holds other tensors than its record lists; re-create it")
    for k, spec in meta["tensors"].items():
        t = tensors[k]
        if [list(t.shape), str(t.dtype).removeprefix("torch.")] != [spec.get("shape"), spec.get("dtype")]:
            raise IntegrityError(f"tensor '{k}' in '{tpath}' is {t.dtype} {tuple(t.shape)}, the record says {spec}")
    m = meta["model"]
    net = _backbone(m["name"], list(m["input_shape"]), dict(m["kwargs"]), None)
    try:
        net.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise IntegrityError(f"'{tpath}' does not fit architecture {m['name']!r}: {str(e).splitlines()[0]}") from e
    if net.num_features != meta["feature_dim"]:
        raise IntegrityError(f"'{spath}': feature_dim {meta['feature_dim']} != the architecture's {net.num_features}")
    if meta["recipe"].get("name") != IMPORTED_ENCODER:
        config_from_dict(EncoderRecipe, meta["recipe"])
    return Encoder(
        module=net.to(map_location).eval(),
        model=m["name"],
        model_kwargs=dict(m["kwargs"]),
        dataset=meta["dataset"],
        fingerprint=meta["fingerprint"],
        classes=list(meta["classes"]),
        preprocessing=dict(meta["preprocessing"]),
        recipe=dict(meta["recipe"]),
        epochs=meta["epochs"],
        seed=meta["seed"],
        probe_accuracy=float(acc),
        input_shape=list(m["input_shape"]),
        train_seconds=float(meta["train_seconds"]),
        provenance=dict(meta["provenance"]),
        path=folder,
        sha256=meta["sha256"],
    )


def import_encoder(
    checkpoint: str | Path,
    model: str,
    data: Any,
    out: str | Path | None,
    *,
    model_kwargs: dict[str, Any] | None = None,
    key: str | None = None,
    device: str | torch.device = "cpu",
) -> Encoder:
    """A self-supervised backbone trained elsewhere as a KRR-ST target encoder: loaded strictly into condense
    architecture ``model`` (its ``embed`` is the representation), probed on ``data`` and saved to ``out``.

    The checkpoint is read by :func:`condense.teachers.read_state_dict` (safetensors or weights-only
    ``torch.load``; ``module.`` / ``_orig_mod.`` prefixes removed). A projector or classifier head in it is not part
    of the representation: entries under ``classifier.`` and ``projector.`` are ignored (named in the record); every
    other key must fit the backbone exactly. The recipe records ``name="imported"``, the source file and its sha256.

    Raises:
        DataNotFoundError: the checkpoint is absent. IntegrityError: it cannot be read as weights only, or does not
        fit the architecture (naming the first missing or unexpected key, or a tensor of another shape).
    """
    from condense.teachers.external import read_state_dict

    if getattr(data, "kind", None) != "images":
        raise MismatchError(f"import_encoder needs image data, got {type(data).__name__}")
    model_kwargs = dict(model_kwargs or {})
    state, info = read_state_dict(checkpoint, key)
    heads = ("classifier.", "projector.")
    ignored = sorted(k for k in state if k.startswith(heads))
    state = {k: v for k, v in state.items() if not k.startswith(heads)}
    input_shape = [data.channels, *map(int, data.image_size)]
    net = _backbone(model, input_shape, model_kwargs, 0)
    own = {k: v for k, v in net.state_dict().items() if not k.startswith(heads)}
    where = f"checkpoint '{checkpoint}' does not fit backbone {model!r} {model_kwargs}"
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        first = f"missing key '{missing[0]}'" if missing else f"unexpected key '{unexpected[0]}'"
        raise IntegrityError(f"{where}: {first} ({len(missing)} missing, {len(unexpected)} unexpected)")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise IntegrityError(f"{where}: '{k}' is {tuple(state[k].shape)} in the file, {tuple(v.shape)} here")
    net.load_state_dict({**net.state_dict(), **state}, strict=True)
    enc = Encoder(
        module=net.to(device).eval(),
        model=model,
        model_kwargs=model_kwargs,
        dataset=data.name,
        fingerprint=data.fingerprint,
        classes=list(data.classes),
        preprocessing=data.preprocessing(),
        recipe={"name": IMPORTED_ENCODER, **info, "ignored_keys": ignored},
        epochs=0,
        seed=0,
        probe_accuracy=0.0,
        input_shape=input_shape,
    )
    enc.probe_accuracy = linear_probe_accuracy(enc, data)
    if out is not None:
        enc.save(out)
    return enc
