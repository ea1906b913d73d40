"""Does the KRR-ST set teach the encoder's representation better than a random real subset? (README, KRR-ST.)

Usage: python diag.py SPLIT LR ITERS ENCODER_DIR  (the encoder exp.py trained on that split's source half).
Pre-trains a fresh ConvNet-BN on the set and on a random real subset of 50 images (encoder targets), 3 seeds, and
prints the MSE to g(x) divided by the targets' variance on the source and the target test images.
"""

import json
import sys

import torch
import torch.nn.functional as F

from condense.data import load_dataset
from condense.eval.transfer import TransferProtocol, class_split, pretrain
from condense.methods import RunContext, distill
from condense.seeding import derive_seed
from condense.teachers import load_encoder


def main() -> None:
    torch.set_num_threads(1)
    split, lr, iters, encdir = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    src, tgt = class_split(load_dataset("digits"), split)
    enc = load_encoder(encdir)
    over = {"num_iterations": iters, "lr": lr}
    syn = distill("krr_st", src, ipc=10, overrides=over, run=RunContext(quiet=True, teacher=encdir))
    proto = TransferProtocol(width=64, depth=2)

    def score(net: torch.nn.Module) -> dict[str, float]:
        net.eval()
        out = {}
        with torch.no_grad():
            for name, x in (("src_test", src.x_test), ("tgt_test", tgt.x_test)):
                y = enc.features(x)
                out[name] = round(float(F.mse_loss(net(x), y) / y.var(0).mean()), 4)
        return out

    res: dict[str, list] = {"set": [], "random": []}
    for s in range(3):
        res["set"].append(score(pretrain(syn.images, syn.tensors["krr_targets"], src, proto, s)))
        g = torch.Generator().manual_seed(derive_seed("condense-random-real", s))
        x = src.x_train[torch.randperm(len(src.x_train), generator=g)[:50]]
        res["random"].append(score(pretrain(x, enc.features(x), src, proto, s)))
    print(json.dumps({"split": split, "lr": lr, "iters": iters, **res}))


if __name__ == "__main__":
    main()
