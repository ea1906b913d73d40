"""Soft-label stores: the teacher's logits on every (image, epoch) view, with the view parameters that replay them.

The relabel stage of SRe2L-style distillation (FKD; ``VILA-Lab/SRe2L`` ``SRe2L/relabel/generate_soft_label.py``)
runs the teacher once per epoch over augmented, mixed batches of the distilled images and stores, per batch, the crop
boxes, flips, mix permutation/weight/box and the teacher's fp16 logits, so the student is later trained on exactly
those views without the teacher. The references write one ``.tar`` per batch per epoch and patch
``torch.utils.data._utils.fetch._MapDatasetFetcher`` so the DataLoader returns the stored mix with each batch
(``SRe2L/validate/README.md``). Here:

- :func:`relabel` draws each epoch's views with :func:`condense.augment.views.sample_views` from the stream
  ``seeding.generator("condense-views", seed, epoch)``, runs one teacher or a weighted committee (mean of logits, in
  eval mode: BatchNorm uses running statistics, as FKD does) and returns a :class:`LabelStore`.
- A store is a folder: ``labels.json`` (sealed manifest: format stamp, the images' sha256, counts, the view recipe,
  seed, precision, top-k, the teachers' references and the sha256 and byte count of every shard) and one
  ``epoch-NNNN.safetensors`` shard per epoch (order, boxes, flips, per-batch permutation/weight/CutMix box, and the
  logits in fp16, or their top-k values and indices). Every read is verified against the manifest.
- :meth:`LabelStore.batches` replays one epoch as ``(views, inputs, targets)`` and :meth:`LabelStore.dataloader`
  wraps it in a plain ``DataLoader`` over batch numbers (no patched PyTorch internals), for users' own training code.
- DBR storage (``relabel(..., mode="dbr", labels=...)``, NRR-DD, arXiv:2503.18267) keeps, per view, only the two
  distances of :func:`dbr_distances` (``dbr``: (N, 2) per shard instead of (N, K) logits); the manifest adds
  ``mode``, ``labels_sha256`` (the one-hot labels are the set's classes, replayed from the set) and ``dbr_alpha``.
- Top-k storage keeps the ``k`` largest logits; the rest replay as ``-inf`` (probability 0 after the softmax at any
  temperature), i.e. the target distribution is renormalized over the top ``k`` classes.

The store checks that it is replayed on the images it was made for (their sha256), so a relabeled set cannot be
paired with edited or other images.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from condense.augment.views import ViewRecipe
    >>> teacher = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5)).eval()
    >>> store = relabel(torch.randn(10, 3, 4, 4), [teacher], epochs=2, batch_size=4, recipe=ViewRecipe(), seed=0)
    >>> store.epochs, len(store.views(1)), store.logits(0).shape
    (2, 3, torch.Size([10, 5]))
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from condense.augment.views import ViewRecipe, Views, apply_views, sample_views
from condense.config import check_range
from condense.errors import ConfigError, DataNotFoundError, IntegrityError, MismatchError
from condense.io import (
    check_fields,
    check_seal,
    check_stamp,
    load_tensors,
    read_json,
    save_tensors,
    seal,
    stamp,
    unseal,
    write_json_atomic,
)
from condense.seeding import generator as seeded_generator

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "LABEL_MODES",
    "MANIFEST",
    "LabelStore",
    "dbr_distances",
    "ensemble_logits",
    "epoch_views",
    "images_sha256",
    "labels_sha256",
    "load_label_store",
    "relabel",
]

FORMAT = "condense.LabelStore"
FORMAT_VERSION = 1
MANIFEST = "labels.json"
VIEW_STREAM = "condense-views"

_FIELDS: dict[str, Any] = {
    "format": str,
    "format_version": int,
    "provenance": dict,
    "images_sha256": str,
    "num_images": int,
    "num_classes": int,
    "image_hw": list[int],
    "epochs": int,
    "batch_size": int,
    "seed": int,
    "recipe": dict,
    "precision": str,
    "topk": int | None,
    "teachers": list[dict],
    "weights": list[float],
    "shards": list[dict],
    "label_bytes": int,
}
#: label modes: ``"logits"`` (FKD: C logits per view) and ``"dbr"`` (NRR-DD's Distance-Based Representative labels:
#: 2 distances per view). A logits store's manifest has no ``mode`` field (stores written before DBR read as logits);
#: a DBR store adds the fields of ``_DBR_FIELDS``, checked on load.
LABEL_MODES = ("logits", "dbr")
_DBR_FIELDS: dict[str, Any] = {"mode": str, "labels_sha256": str, "dbr_alpha": float}


def images_sha256(images: torch.Tensor) -> str:
    """sha256 of a float32 image tensor's bytes (what a store records about the images it labels)."""
    t = images.detach().to("cpu", torch.float32).contiguous()
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()


def labels_sha256(labels: torch.Tensor) -> str:
    """sha256 of a class-index tensor's bytes as int64 (what a DBR store records about the labels it was made with)."""
    t = labels.detach().to("cpu", torch.int64).contiguous()
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()


def dbr_distances(logits: torch.Tensor, labels: torch.Tensor, perm: torch.Tensor, lam: float) -> torch.Tensor:
    """NRR-DD's two distances of one mixed batch: cross-entropies of ``logits`` to the views' one-hot labels.

    Tran, Le, Le, Do, Phung, "Enhancing Dataset Distillation via Non-Critical Region Refinement", CVPR 2025,
    arXiv:2503.18267, Sec. 3.4 (Distance-Based Representative knowledge transfer; the equations were not readable
    here, so this is the reading of ``shared/reference/decoupled.md`` 4.2): for view ``b`` of class ``y_b`` mixed
    with its partner ``perm[b]`` at weight ``lam``,

    - ``d_org[b] = CE(logits[b], onehot(y_b))`` (distance to the original label),
    - ``d_aug[b] = CE(logits[b], lam * onehot(y_b) + (1 - lam) * onehot(y_perm[b]))`` (to the mixed label), which
      equals ``lam * d_org[b] + (1 - lam) * CE(logits[b], onehot(y_perm[b]))``.

    Temperature 1 (a choice: the source gives none). Differentiable in ``logits`` (the student loss uses it too).

    Shape:
        logits: (B, K); labels: (B,) int64, the class of each view's own image; perm: (B,) int64. return: (B, 2)
        float32, columns ``(d_org, d_aug)``.
    """
    logp = torch.log_softmax(logits.float(), dim=1)
    y = labels.to(logp.device, torch.long)
    d_org = -logp.gather(1, y[:, None])[:, 0]
    d_partner = -logp.gather(1, y[perm.to(y.device)][:, None])[:, 0]
    lam = float(lam)
    return torch.stack([d_org, lam * d_org + (1.0 - lam) * d_partner], 1)


def epoch_views(
    num_images: int, batch_size: int, hw: tuple[int, int], recipe: ViewRecipe, seed: int, epoch: int
) -> list[Views]:
    """The views of ``epoch`` for view seed ``seed``: the one stream both the labeler and an online teacher use."""
    return sample_views(num_images, batch_size, hw, recipe, seeded_generator(VIEW_STREAM, seed, epoch))


def ensemble_logits(teachers: Sequence[nn.Module], weights: Sequence[float] | None, x: torch.Tensor) -> torch.Tensor:
    """The weighted mean of the teachers' logits on ``x`` in eval mode (one teacher: its logits).

    Shape:
        x: (B, C, H, W). return: (B, K) float32.
    """
    w = [1.0 / len(teachers)] * len(teachers) if weights is None else [float(v) for v in weights]
    out = None
    with torch.no_grad():
        for t, wt in zip(teachers, w):
            t.eval()
            z = t(x).float() * wt
            out = z if out is None else out + z
    assert out is not None
    return out


@dataclass
class LabelStore:
    """Stored soft labels for one image set: per epoch, the views and the teacher's logits on them.

    Build one with :func:`relabel`, read one with :func:`load_label_store`. ``shards[e]`` holds epoch ``e``'s
    tensors (in memory, or loaded lazily from ``root`` and verified).
    """

    manifest: dict[str, Any]
    root: Path | None = None
    shards: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)

    # ------------------------------------------------------------------ facts
    @property
    def epochs(self) -> int:
        return int(self.manifest["epochs"])

    @property
    def num_images(self) -> int:
        return int(self.manifest["num_images"])

    @property
    def num_classes(self) -> int:
        return int(self.manifest["num_classes"])

    @property
    def batch_size(self) -> int:
        return int(self.manifest["batch_size"])

    @property
    def seed(self) -> int:
        return int(self.manifest["seed"])

    @property
    def recipe(self) -> ViewRecipe:
        return ViewRecipe.from_dict(self.manifest["recipe"])

    @property
    def mode(self) -> str:
        """``"logits"`` (FKD soft labels) or ``"dbr"`` (two distances per view, NRR-DD)."""
        return str(self.manifest.get("mode", "logits"))

    @property
    def dbr_alpha(self) -> float:
        """alpha_dbr of the student loss ``L_sce + alpha_dbr * L_dbr`` a DBR store is trained with."""
        if self.mode != "dbr":
            raise ConfigError("this label store holds logits, not DBR distances; it has no dbr_alpha")
        return float(self.manifest["dbr_alpha"])

    @property
    def label_bytes(self) -> int:
        """Bytes of all shards (logits and view parameters), the figure reported next to the images' bytes."""
        return int(self.manifest["label_bytes"])

    # ------------------------------------------------------------------ reading
    def _shard(self, epoch: int) -> dict[str, torch.Tensor]:
        if not 0 <= epoch < self.epochs:
            raise ConfigError(f"the label store holds epochs 0..{self.epochs - 1}, asked for epoch {epoch}")
        if epoch not in self.shards:
            if self.root is None:
                raise IntegrityError(f"label store lacks epoch {epoch} and has no folder to read it from")
            spec = self.manifest["shards"][epoch]
            self.shards[epoch] = load_tensors(self.root / spec["file"], expected_sha256=spec["sha256"])
        return self.shards[epoch]

    def views(self, epoch: int) -> list[Views]:
        """The stored views of ``epoch``, batch by batch."""
        s = self._shard(epoch)
        out, start = [], 0
        for b, n in enumerate(s["batch_sizes"].tolist()):
            sl = slice(start, start + n)
            out.append(
                Views(
                    s["order"][sl].long(),
                    s["boxes"][sl].float(),
                    s["flip"][sl].bool(),
                    s["perm"][sl].long(),
                    s["lam"][b].float(),
                    s["mix_box"][b].long(),
                )
            )
            start += n
        return out

    def logits(self, epoch: int) -> torch.Tensor:
        """(N, K) float32 logits of ``epoch`` in view order (top-k stores: ``-inf`` outside the top k)."""
        if self.mode == "dbr":
            raise ConfigError(
                "this label store holds DBR distances (2 per view), not logits; read them with store.dbr(epoch)"
            )
        s = self._shard(epoch)
        if "logits" in s:
            return s["logits"].float()
        vals, idx = s["topk_values"].float(), s["topk_indices"].long()
        out = torch.full((vals.shape[0], self.num_classes), float("-inf"))
        return out.scatter_(1, idx, vals)

    def dbr(self, epoch: int) -> torch.Tensor:
        """(N, 2) float32 DBR distances ``(d_org, d_aug)`` of ``epoch`` in view order (:func:`dbr_distances`)."""
        if self.mode != "dbr":
            raise ConfigError("this label store holds logits, not DBR distances; read them with store.logits(epoch)")
        return self._shard(epoch)["dbr"].float()

    def targets(self, epoch: int) -> torch.Tensor:
        """What a student is trained against at ``epoch``: the logits (N, K), or the DBR distances (N, 2)."""
        return self.dbr(epoch) if self.mode == "dbr" else self.logits(epoch)

    def check_labels(self, labels: torch.Tensor | None) -> None:
        """A DBR store replays against the images' class labels: refuse missing or other labels."""
        if self.mode != "dbr":
            return
        if labels is None:
            raise ConfigError("a DBR label store needs the images' class labels to replay (pass labels=)")
        if tuple(labels.shape) != (self.num_images,) or labels_sha256(labels) != self.manifest["labels_sha256"]:
            raise MismatchError(
                "DBR label store was made for other class labels (their sha256 differs); relabel with these labels"
            )

    def check_images(self, images: torch.Tensor) -> None:
        """Refuse images other than those the store was made for (shape or sha256)."""
        hw = list(images.shape[-2:])
        if images.shape[0] != self.num_images or hw != list(self.manifest["image_hw"]):
            raise MismatchError(
                f"label store was made for {self.num_images} images of {self.manifest['image_hw']} px, "
                f"got {images.shape[0]} of {hw}"
            )
        if images_sha256(images) != self.manifest["images_sha256"]:
            raise MismatchError(
                "label store was made for other images (their sha256 differs); relabel these images with the teacher"
            )

    def batches(
        self, images: torch.Tensor, epoch: int, *, check: bool = True
    ) -> Iterator[tuple[Views, torch.Tensor, torch.Tensor]]:
        """Replay ``epoch``: ``(views, inputs, targets)`` per batch, inputs on ``images``' device.

        Shape:
            images: (N, C, H, W). inputs: (B, C, H, W). targets: (B, K) float32 teacher logits, or (B, 2) DBR
            distances for a DBR store.
        """
        if check:
            self.check_images(images)
        z = self.targets(epoch)
        start = 0
        for v in self.views(epoch):
            n = len(v)
            yield v, apply_views(images, v), z[start : start + n].to(images.device)
            start += n

    def dataloader(self, images: torch.Tensor, epoch: int, **kwargs: Any) -> torch.utils.data.DataLoader:
        """A plain ``DataLoader`` yielding ``(inputs, targets)`` for ``epoch`` in stored order, one batch per item.

        Example: ``for e in range(store.epochs): for x, t in store.dataloader(images, e): loss = kl(model(x), t)``.
        """
        self.check_images(images)
        batches = [(x, t) for _, x, t in self.batches(images, epoch, check=False)]
        return torch.utils.data.DataLoader(_Batches(batches), batch_size=None, shuffle=False, **kwargs)

    # ------------------------------------------------------------------ writing
    def save(self, out: str | Path) -> Path:
        """Write every shard, then the sealed manifest, atomically; returns the folder."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        meta = dict(self.manifest)
        shards, total = [], 0
        for e in range(self.epochs):
            tensors = self._shard(e)
            name = f"epoch-{e:04d}.safetensors"
            sha = save_tensors(out / name, tensors, metadata={"format": FORMAT, "epoch": str(e)})
            size = (out / name).stat().st_size
            shards.append({"file": name, "sha256": sha, "bytes": size})
            total += size
        meta["shards"], meta["label_bytes"] = shards, total
        meta = unseal(meta)
        check_fields(meta, {k: v for k, v in _FIELDS.items()}, out / MANIFEST, hint="pass values of that type")
        if "mode" in meta:
            check_fields(meta, _DBR_FIELDS, out / MANIFEST, hint="pass values of that type")
        write_json_atomic(out / MANIFEST, seal(meta))
        self.manifest, self.root = meta, out
        return out


class _Batches(torch.utils.data.Dataset):
    def __init__(self, items: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.items[i]


def _shard_tensors(
    views: list[Views], logits: torch.Tensor, precision: str, topk: int | None, dbr: torch.Tensor | None = None
) -> dict:
    out = {
        "order": torch.cat([v.index for v in views]).to(torch.int32),
        "boxes": torch.cat([v.boxes for v in views]).float(),
        "flip": torch.cat([v.flip for v in views]).to(torch.uint8),
        "perm": torch.cat([v.perm for v in views]).to(torch.int32),
        "batch_sizes": torch.tensor([len(v) for v in views], dtype=torch.int32),
        "lam": torch.stack([v.lam.float() for v in views]),
        "mix_box": torch.stack([v.mix_box for v in views]).to(torch.int32),
    }
    dtype = torch.float16 if precision == "fp16" else torch.float32
    if dbr is not None:  # DBR: two distances per view instead of the logits
        out["dbr"] = dbr.to(dtype)
    elif topk is None:
        out["logits"] = logits.to(dtype)
    else:
        vals, idx = logits.topk(topk, dim=1)
        out["topk_values"] = vals.to(dtype)
        out["topk_indices"] = idx.to(torch.int16 if logits.shape[1] < 2**15 else torch.int32)
    return out


def relabel(
    images: torch.Tensor,
    teachers: Sequence[nn.Module],
    *,
    epochs: int,
    batch_size: int,
    recipe: ViewRecipe,
    seed: int = 0,
    weights: Sequence[float] | None = None,
    precision: str = "fp16",
    topk: int | None = None,
    references: Sequence[dict[str, Any]] | None = None,
    device: torch.device | str = "cpu",
    out: str | Path | None = None,
    quiet: bool = True,
    labeler: Callable[[torch.Tensor], torch.Tensor] | None = None,
    mode: str = "logits",
    labels: torch.Tensor | None = None,
    dbr_alpha: float = 1.0,
) -> LabelStore:
    """Label ``epochs`` epochs of views of ``images`` with the teachers; returns the store (saved when ``out``).

    Args:
        images: the set to label, in the teachers' preprocessing.
        teachers: one or more classifiers (kept in eval mode); ``weights`` their weights (default equal).
        epochs, batch_size: how many epochs and the batch of every epoch (the student's batch at replay).
        recipe: the crops, flips and mixing (:class:`~condense.augment.views.ViewRecipe`).
        seed: the view seed (stream ``("condense-views", seed, epoch)``).
        precision: ``"fp16"`` (FKD) or ``"fp32"``. topk: keep only the top-k logits per view (None: all).
        references: what to record about the teachers (``Teacher.reference()``).
        device: where the teachers run. out: folder to write (None: in memory only). quiet: hide the progress bar.
        labeler: a replacement for the teacher ensemble (a function of the batch), e.g. a mixed-precision wrapper.
        mode: ``"logits"`` (FKD, the default) or ``"dbr"``: store per view only the two distances of
            :func:`dbr_distances` (NRR-DD's DBR labels), ``(N, 2)`` per epoch instead of ``(N, K)`` logits.
        labels: ``mode="dbr"`` only: the class of each image (the one-hot labels the distances are measured to).
        dbr_alpha: ``mode="dbr"`` only: alpha_dbr of the student loss, recorded in the manifest.

    Shape:
        images: (N, C, H, W) float32.
    """
    from tqdm.auto import tqdm

    check_range("epochs", epochs, 1)
    check_range("batch_size", batch_size, 1)
    if precision not in ("fp16", "fp32"):
        raise ConfigError(f"precision must be 'fp16' or 'fp32', got {precision!r}")
    if not teachers and labeler is None:
        raise ConfigError("relabel needs at least one teacher")
    if weights is not None and len(weights) != len(teachers):
        raise ConfigError(f"{len(weights)} teacher weights for {len(teachers)} teachers")
    if mode not in LABEL_MODES:
        raise ConfigError(f"mode must be one of {', '.join(LABEL_MODES)}, got {mode!r}")
    if mode == "dbr":
        if labels is None or tuple(labels.shape) != (int(images.shape[0]),):
            raise ConfigError(
                f"mode='dbr' needs labels=, one class index per image ({int(images.shape[0])},); got "
                f"{None if labels is None else tuple(labels.shape)}"
            )
        if topk is not None:
            raise ConfigError("mode='dbr' stores two distances per view, not logits; leave topk=None")
        check_range("dbr_alpha", dbr_alpha, 0.0)
        y_all = labels.detach().to("cpu", torch.long)
    device = torch.device(device)
    x_all = images.detach().to(device, torch.float32)
    hw = (int(images.shape[-2]), int(images.shape[-1]))
    label = labeler or (lambda x: ensemble_logits(teachers, weights, x))
    shards: dict[int, dict[str, torch.Tensor]] = {}
    num_classes = None
    for e in tqdm(range(epochs), desc="relabel", disable=quiet, leave=False):
        views = epoch_views(images.shape[0], batch_size, hw, recipe, seed, e)
        z = torch.cat([label(apply_views(x_all, v)).float().cpu() for v in views])
        if not bool(torch.isfinite(z).all()):
            raise IntegrityError(f"teacher logits are not finite at epoch {e}; refusing to store them")
        num_classes = int(z.shape[1])
        if topk is not None and not 1 <= topk <= num_classes:
            raise ConfigError(f"topk must be in 1..{num_classes}, got {topk}")
        dbr = None
        if mode == "dbr":
            dbr, start = torch.empty(z.shape[0], 2), 0
            for v in views:
                n = len(v)
                dbr[start : start + n] = dbr_distances(z[start : start + n], y_all[v.index], v.perm, float(v.lam))
                start += n
        shards[e] = _shard_tensors(views, z, precision, topk, dbr)
    w = [1.0 / max(1, len(teachers))] * len(teachers) if weights is None else [float(v) for v in weights]
    manifest = {
        **stamp(FORMAT, FORMAT_VERSION),
        "images_sha256": images_sha256(images),
        "num_images": int(images.shape[0]),
        "num_classes": int(num_classes or 0),
        "image_hw": list(hw),
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "seed": int(seed),
        "recipe": recipe.to_dict(),
        "precision": precision,
        "topk": topk,
        "teachers": [dict(r) for r in (references or [])],
        "weights": w,
        "shards": [],
        "label_bytes": sum(sum(t.numel() * t.element_size() for t in s.values()) for s in shards.values()),
    }
    if mode == "dbr":  # only DBR stores carry these fields: a logits store's manifest is unchanged
        manifest.update({"mode": "dbr", "labels_sha256": labels_sha256(labels), "dbr_alpha": float(dbr_alpha)})
    store = LabelStore(manifest=manifest, shards=shards)
    if out is not None:
        store.save(out)
    return store


def load_label_store(path: str | Path) -> LabelStore:
    """Open a store written by :meth:`LabelStore.save` (shards are read and verified when first used).

    Raises:
        DataNotFoundError: no ``labels.json`` in ``path``.
        IntegrityError: another format or version, an edited or mistyped field, a missing shard.
    """
    root = Path(path)
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise DataNotFoundError(f"label store manifest '{mpath}' not found (write one with relabel(..., out=DIR))")
    meta = read_json(mpath)
    if not isinstance(meta, dict):
        raise IntegrityError(f"'{mpath}' is not a condense label store manifest")
    check_stamp(meta, FORMAT, FORMAT_VERSION, mpath)
    check_seal(meta, mpath)
    check_fields(meta, _FIELDS, mpath)
    if "mode" in meta:
        check_fields(meta, _DBR_FIELDS, mpath)
        if meta["mode"] not in LABEL_MODES:
            raise IntegrityError(f"'{mpath}': field 'mode' is {meta['mode']!r}, expected one of {LABEL_MODES}")
    if len(meta["shards"]) != meta["epochs"]:
        raise IntegrityError(f"'{mpath}' lists {len(meta['shards'])} shards for {meta['epochs']} epochs")
    for spec in meta["shards"]:
        if not (root / str(spec.get("file"))).is_file():
            raise IntegrityError(f"label store shard '{root / str(spec.get('file'))}' is missing; relabel again")
    ViewRecipe.from_dict(meta["recipe"])
    return LabelStore(manifest=unseal(meta), root=root)
