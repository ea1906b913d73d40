"""RDED: realistic and diverse patches picked by a teacher, tiled into mosaics (no optimization).

Sun, Shi, Yu & Lin, "On the Diversity and Realism of Distilled Dataset: An Efficient Dataset Distillation
Paradigm", CVPR 2024, arXiv:2312.03526. Authors' code: ``LINs-lab/RDED`` (read at its default branch; file:line below).

Algorithm, per class ``c`` (``synthesize/main.py`` ``init_images`` + ``synthesize/utils.py`` ``selector``,
``mix_images``):

1. draw ``mipc`` real training images of class ``c`` (``synthesize/main.py:22-28``: an ImageFolder with
   ``ipc=args.mipc, shuffle=True``; 300 in every released script);
2. from each, ``num_crop`` square RandomResizedCrops (ratio 1, scale (0.08, 1)) of side ``size // factor``
   (``utils.py:54-70`` ``MultiRandomCrop``);
3. score every crop by the observer's cross-entropy for class ``c``, the crop zero-padded back to full size
   (``utils.py:97-117``); keep each image's lowest-loss crop, then the ``ipc * factor**2`` lowest-loss images
   (``utils.py:119-136``);
4. tile them ``factor x factor`` into ``ipc`` images: position ``k`` of image ``i`` holds the ``k * ipc + i``-th
   selected patch (``utils.py:139-166``, nearest-neighbour resize of each patch;
   :func:`condense.methods._decoupled.mosaic`, shared with NRR-DD);
5. the labels are the teacher's soft labels at training time (``validation/main.py``: the teacher runs online on
   every CutMixed batch), so the set is scored with the ``soft_label`` protocol and the same teacher.

Defaults: ``factor`` 1 at 32 px and below (``scripts/cifar10_10ipc_*.sh``: ``--factor 1``), 2 at 64 px and above
(``scripts/imagenet-*_cr5.sh``, tinyimagenet ``--factor 2``); ``num_crop`` 5, ``mipc`` 300 (every script).

Differences from the authors' code, and why:

- Crops are cut with :func:`condense.augment.views.crop_boxes` (torchvision's RandomResizedCrop parameters,
  vectorized) and resized with ``roi_align`` instead of torchvision's antialiased resize of a PIL-decoded tensor;
  the mosaic's patch resize is the same nearest-neighbour ``F.interpolate``.
- The crops are taken from the dataset's already-resized images (e.g. 32x32 CIFAR, or the 128/224 center crops of
  :mod:`condense.data.imagenet`), not from full-resolution JPEGs; at 224 px on ImageNet the references crop the
  original image, which holds more detail.
- The images are kept as float tensors (lossless), not written as JPEGs and read back.
- The observer is the first ``--teacher``; RDED may observe with one model and relabel with another (its
  ``--arch-name`` and the teacher of ``validation/main.py`` are the same in every released script).
- The reference scores crops of a class in one batch of ``mipc * num_crop``; here in chunks of
  ``batch_score`` (memory only, same numbers).
- RDED's evaluation recipe differs from the shared ``soft_label`` protocol: ShufflePatches(factor) + RRC
  (scale 1/factor..1), cosine with floor 0.5, and the best accuracy of the last 20 % of epochs
  (``validation/main.py``); condense scores every decoupled set with one protocol (RRC 0.08..1, cosine to 0, final
  epoch), so rows compare methods, not recipes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from condense.augment.views import crop_boxes
from condense.config import check_range, preset
from condense.data.base import ImageData
from condense.methods._decoupled import mosaic, run_teachers
from condense.methods.base import Method, RunContext, register_method
from condense.synthetic import SyntheticSet

__all__ = ["RDED", "RDEDConfig", "PRESETS", "select_patches"]


@dataclass(frozen=True, kw_only=True)
class RDEDConfig:
    """RDED's synthesis settings (``LINs-lab/RDED`` ``argument.py`` and ``scripts/*.sh``)."""

    factor: int | None = None  # patches per side of a mosaic; None: 1 up to 32 px, else 2 (scripts/*: --factor)
    num_crop: int = 5  # crops scored per real image (scripts/*: --num-crop 5)
    mipc: int = 300  # real images drawn per class, capped by the class size (scripts/*: --mipc 300)
    crop_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area range (utils.py:62-66: torchvision default)
    batch_score: int = 1024  # crops per observer forward (memory only; the reference: mipc per batch)

    def __post_init__(self) -> None:
        if self.factor is not None:
            check_range("factor", self.factor, 1)
        check_range("num_crop", self.num_crop, 1)
        check_range("mipc", self.mipc, 1)
        check_range("crop_scale[0]", self.crop_scale[0], 0.0, 1.0, lo_open=True)
        check_range("crop_scale[1]", self.crop_scale[1], self.crop_scale[0], 1.0)
        check_range("batch_score", self.batch_score, 1)

    def factor_for(self, size: int) -> int:
        return self.factor if self.factor is not None else (1 if size <= 32 else 2)


PRESETS: dict[str, dict[str, Any]] = {
    "digits": preset(
        source="condense: the embedded 8x8 digits, factor 1 as RDED at 32 px; scored with a ConvNetD2 student "
        "(a ResNet-18 on 8x8 digits costs CPU minutes per seed)",
        factor=1,
        eval={"protocol": "soft_label", "model": "convnetd2"},
    ),
    "cifar10": preset(source="RDED scripts/cifar10_10ipc_resnet-18-modified_to_resnet-18-modified_cr5.sh", factor=1),
    "cifar100": preset(source="RDED scripts/cifar100_10ipc_resnet-18-modified_to_resnet-18-modified_cr5.sh", factor=1),
    "tinyimagenet": preset(source="RDED scripts/tinyimagenet_10ipc_resnet-18-modified_*_cr5.sh", factor=2),
    "imagenette": preset(source="RDED scripts/imagenet-nette_10ipc_resnet-18_to_resnet-18_cr5.sh", factor=2),
    "imagewoof": preset(source="RDED scripts/imagenet-woof_10ipc_resnet-18_to_resnet-18_cr5.sh", factor=2),
    "imagenet1k": preset(source="RDED scripts/imagenet-1k_10ipc_resnet-18_to_resnet-18_cr5.sh", factor=2),
}


def select_patches(
    images: torch.Tensor,
    label: int,
    n: int,
    observer: torch.nn.Module,
    *,
    patch: int,
    num_crop: int,
    scale: tuple[float, float],
    gen: torch.Generator,
    batch: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 2-3: the ``n`` most confident crops of one class's images (lowest observer cross-entropy).

    Returns:
        ``(patches, losses)``: (n, C, patch, patch) and (n,) ascending.

    Shape:
        images: (M, C, H, W) real images of class ``label``, in the observer's preprocessing.
    """
    from torchvision.ops import roi_align

    from condense.augment.views import ViewRecipe

    m, _, h, w = images.shape
    recipe = ViewRecipe(scale=scale, ratio=(1.0, 1.0), flip=False, mix="none")
    # crop k of image j: (num_crop, M) boxes, drawn crop by crop as MultiRandomCrop does per image
    boxes = torch.stack([crop_boxes(m, (h, w), recipe, gen) for _ in range(num_crop)])  # (num_crop, M, 4)
    dev = next(observer.parameters()).device
    src = images.to(dev)
    flat = boxes.reshape(-1, 4).to(dev, src.dtype)
    which = torch.arange(m, device=dev).repeat(num_crop).to(src.dtype)[:, None]
    rois = torch.cat([which, flat], 1)
    losses, crops = [], []
    pad_h, pad_w = h - patch, w - patch
    pads = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    observer.eval()
    with torch.no_grad():
        for i in range(0, rois.shape[0], batch):
            c = roi_align(src, rois[i : i + batch], output_size=(patch, patch), sampling_ratio=0, aligned=True)
            logits = observer(F.pad(c, pads) if patch < min(h, w) else c).float()
            target = torch.full((c.shape[0],), label, device=dev, dtype=torch.long)
            losses.append(F.cross_entropy(logits, target, reduction="none"))
            crops.append(c)
    loss = torch.cat(losses).view(num_crop, m)
    crop = torch.cat(crops).view(num_crop, m, *crops[0].shape[1:])
    best = loss.argmin(0)  # each image's most confident crop
    cols = torch.arange(m, device=dev)
    loss, crop = loss[best, cols], crop[best, cols]
    keep = loss.argsort()[:n]
    return crop[keep].cpu(), loss[keep].cpu()


@register_method("rded")
class RDED(Method):
    """RDED (Sun et al., CVPR 2024): observer-scored real crops tiled into mosaics; labels from the teacher."""

    Config = RDEDConfig
    presets = PRESETS
    needs_teacher = True

    def distill(
        self, data: ImageData, cfg: RDEDConfig, ipc: int, generator: torch.Generator, run: RunContext
    ) -> SyntheticSet:
        from tqdm.auto import tqdm

        teachers = run_teachers(self.name, run, data, need_batchnorm=False)
        observer = teachers[0].module.to(run.device)
        h, w = data.x_train.shape[-2:]
        factor = cfg.factor_for(min(h, w))
        patch = min(h, w) // factor
        n = ipc * factor * factor
        images, labels = [], []
        for c in tqdm(range(data.num_classes), desc="rded", disable=run.quiet, leave=False):
            pool = (data.y_train == c).nonzero().flatten()
            if min(cfg.mipc, pool.numel()) < n:
                from condense.errors import ConfigError

                raise ConfigError(
                    f"rded at ipc {ipc} with factor {factor} keeps {n} crops of class {c} (one per real image), but "
                    f"draws min(mipc={cfg.mipc}, class size {pool.numel()}) images; lower ipc or factor, or raise mipc"
                )
            order = torch.randperm(pool.numel(), generator=generator, device=generator.device).cpu()
            pick = pool[order[: min(cfg.mipc, pool.numel())]]
            patches, _ = select_patches(
                data.x_train[pick],
                c,
                n,
                observer,
                patch=patch,
                num_crop=cfg.num_crop,
                scale=cfg.crop_scale,
                gen=generator,
                batch=cfg.batch_score,
            )
            images.append(mosaic(patches, factor, ipc, (h, w)))
            labels.append(torch.full((ipc,), c, dtype=torch.long))
        meta = {
            "teachers": [t.reference() for t in teachers],
            "label_source": "teacher",
            "factor": factor,
        }
        return SyntheticSet.from_tensors(torch.cat(images), torch.cat(labels), data, self.name, ipc, cfg, meta=meta)
