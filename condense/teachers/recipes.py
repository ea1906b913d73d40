"""Teacher training recipes (named presets of :class:`TeacherRecipe`) and the recipes' augmentation.

Recipes are timm-style keyword data, each with its ``source`` (see :mod:`condense.teachers` for the list). The
augmentation is the random crop with padding written as a shift (:func:`condense.augment.functional.crop`),
filled with the normalized value of a black pixel, then the random flip (:func:`condense.augment.functional.flip`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from condense.augment import functional
from condense.config import check_choice, check_range, config_from_dict, preset

if TYPE_CHECKING:
    from condense.data import ImageData

__all__ = [
    "RECIPES",
    "TeacherRecipe",
    "augment_batch",
    "black_pixel",
    "default_recipe_for",
    "get_recipe",
    "list_recipes",
]


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
