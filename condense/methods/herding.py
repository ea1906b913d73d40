"""Herding coreset (Welling, ICML 2009; used as a DD baseline since Zhao et al., ICLR 2021, arXiv:2006.05929).

Per class, greedily picks the real image whose embedding brings the running mean of the selected embeddings
closest to the class mean embedding. Embeddings come from a ConvNet trained briefly on the real data (the DC
code uses a trained ConvNet; ``train_epochs=0`` uses raw pixels instead).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from condense.config import check_range
from condense.data.base import ImageData
from condense.methods._coreset import herding_per_class
from condense.methods.base import Method, RunContext, register_method
from condense.models import create_model_for
from condense.seeding import seed_from
from condense.synthetic import SyntheticSet

__all__ = ["Herding", "HerdingConfig"]


@dataclass(frozen=True, kw_only=True)
class HerdingConfig:
    """Herding hyperparameters (the DC code's herding baseline)."""

    model: str = "convnet"  # embedding network (DC code: ConvNet)
    train_epochs: int = 10  # epochs of real-data training before embedding (0: raw pixels)
    lr_net: float = 0.01  # SGD lr of that training (DC code)
    batch_size: int = 256  # real images per step

    def __post_init__(self) -> None:
        check_range("train_epochs", self.train_epochs, 0)
        check_range("lr_net", self.lr_net, 0.0, lo_open=True)
        check_range("batch_size", self.batch_size, 1)


@register_method("herding")
class Herding(Method):
    """Herding coreset on trained-ConvNet embeddings."""

    Config = HerdingConfig
    presets: dict = {}

    def distill(
        self, data: ImageData, cfg: HerdingConfig, ipc: int, generator: torch.Generator, run: RunContext
    ) -> SyntheticSet:
        device = run.device
        x, y = data.x_train.to(device), data.y_train.to(device)
        if cfg.train_epochs > 0:
            # built on the CPU then moved, so the initialization (and the coreset) is the same on every device
            net = create_model_for(cfg.model, data, seed=seed_from(generator)).to(device)
            opt = torch.optim.SGD(net.parameters(), lr=cfg.lr_net, momentum=0.9, weight_decay=5e-4)
            net.train()
            for _ in range(cfg.train_epochs):
                order = torch.randperm(x.shape[0], generator=generator, device=generator.device)
                for idx in order.split(cfg.batch_size):
                    idx = idx.to(device)
                    loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            net.eval()
            with torch.no_grad():
                feats = torch.cat([net.embed(x[i : i + 1024]) for i in range(0, x.shape[0], 1024)])
        else:
            feats = x.flatten(1)
        idx = herding_per_class(feats, y, data.num_classes, ipc).cpu()
        return SyntheticSet.from_tensors(data.x_train[idx], data.y_train[idx], data, self.name, ipc, cfg)
