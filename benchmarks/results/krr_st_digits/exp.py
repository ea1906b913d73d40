"""KRR-ST on digits, one class split: encoder, distillation, transfer rows (README, KRR-ST section).

Usage: python exp.py SPLIT MODES ITERS WORK [LR]  (MODES: linear,finetune; reuses WORK/enc<SPLIT> when present).
Prints one JSON line per mode with the per-seed accuracies (percent) of each transfer row.
"""

import json
import sys
import time
from pathlib import Path

import torch

from condense.data import load_dataset
from condense.eval.transfer import TransferProtocol, class_split, transfer_evaluate
from condense.methods import RunContext, distill
from condense.teachers import load_encoder, train_encoder


def main() -> None:
    torch.set_num_threads(1)
    split, modes, iters, out = int(sys.argv[1]), sys.argv[2].split(","), int(sys.argv[3]), Path(sys.argv[4])
    lr = float(sys.argv[5]) if len(sys.argv) > 5 else 1e-2
    t0 = time.time()
    src, tgt = class_split(load_dataset("digits"), seed=split)
    encdir = out / f"enc{split}"
    if (encdir / "encoder.json").exists():
        enc = load_encoder(encdir)
    else:
        enc = train_encoder(src, "convnet_bn", 30, encdir, model_kwargs={"width": 64, "depth": 2})
    over = {"num_iterations": iters, "lr": lr}
    syn = distill("krr_st", src, ipc=10, overrides=over, run=RunContext(quiet=True, teacher=encdir))
    print(f"split {split}: probe {enc.probe_accuracy:.3f}, distilled {len(syn.images)} in {time.time() - t0:.0f}s")
    for mode in modes:
        proto = TransferProtocol(width=64, depth=2, finetune_iterations=500, mode=mode)
        rows = transfer_evaluate(syn, src, tgt, protocol=proto, seeds=3, encoder=enc)
        accs = {r["row"]: [round(100 * a, 2) for a in r["accuracies"]] for r in rows}
        print(json.dumps({"split": split, "mode": mode, "iters": iters, **accs, "t": round(time.time() - t0)}))


if __name__ == "__main__":
    main()
