"""The ``condense`` command line: the only code that reads argv, prints results and sets exit codes.

Every subcommand maps to a library call; ``--json`` prints one JSON object as the last stdout line with
accuracies as fractions in [0, 1]. A :class:`~condense.errors.CondenseError` (a user mistake: unknown name,
missing data, bad file) becomes one line on stderr and exit code 2; so does a flag argparse refuses (the usage
block is left out: the line names the flag and points at ``--help``).

Flags are checked before any data is loaded or anything computed: every ``--out`` (an existing file is replaced
only with ``--force``, a folder where a file goes is refused, an artifact name is ``NAME.safetensors`` or ``NAME``),
``--buffer``, ``--work-dir``, ``--device``, ``--models``, ``--protocol`` and the counts.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from condense._version import __version__
from condense.errors import CondenseError, ConfigError, DataNotFoundError, OutputExistsError

logger = logging.getLogger("condense")

EPILOG = """examples:
  condense run                                    # distill digits and compare with random real images
  condense experts --preset mtt-cifar10-ipc10 --dataset cifar10 --data-root data --out buffers/c10
  condense distill --method mtt --dataset cifar10 --data-root data --ipc 10 --buffer buffers/c10 --out c10_mtt
  condense eval c10_mtt.safetensors --dataset cifar10 --data-root data --models convnet,resnet18 --seeds 5 --json
  condense baseline random --dataset cifar10 --data-root data --ipc 10 --json
  condense show c10_mtt.safetensors --out grid.png
  condense teachers train --dataset digits --model convnet_bn --epochs 10 --out teachers/digits_bn
  condense teachers show teachers/digits_bn
  condense distill --method rded --dataset digits --ipc 10 --teacher teachers/digits_bn --out digits_rded
  condense relabel digits_rded.safetensors --dataset digits --out digits_rded_fkd    # stored soft labels
  condense eval digits_rded_fkd.safetensors --dataset digits --json                  # soft_label protocol
"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``condense distill: error: argument --ipc: ...; see '... --help'``)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def _models_arg(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",")]
    if not names or not all(names):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated model names such as 'convnet,resnet18', got {text!r}"
        )
    return names


def _int_at_least(lo: int, what: str):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected {what}, got {v}")
        return v

    parse.__name__ = what  # argparse names the type in some messages
    return parse


_positive_int = _int_at_least(1, "a positive integer")
_every = _int_at_least(0, "an integer >= 0 (0 means never)")
_seed = _int_at_least(0, "an integer >= 0")


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("common options")
    g.add_argument("--data-root", default=None, help="folder holding datasets (default ./data)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    g.add_argument("--seed", type=_seed, default=0, help="seed of every random choice (default 0)")
    g.add_argument("--quiet", action="store_true", help="no progress bars or log messages")
    g.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for torch (default: torch's)")


def _class_split_opt(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--class-split",
        type=int,
        default=None,
        metavar="SEED",
        help="use the source half of a seeded class split (condense.eval.class_split) instead of the whole dataset",
    )


def _eval_opts(p: argparse.ArgumentParser, seeds: int = 5, epochs: int | None = None, epochs_note: str = "") -> None:
    p.add_argument(
        "--models",
        type=_models_arg,
        default=None,
        help="comma-separated evaluation models (default: the model the set was distilled with, convnet when it "
        "records none and for baselines; gcn for graph datasets, also gin, gat)",
    )
    p.add_argument("--seeds", type=_positive_int, default=seeds, help=f"models trained per architecture ({seeds})")
    p.add_argument(
        "--epochs",
        type=_positive_int,
        default=epochs,
        help="training epochs (default: "
        + (str(epochs) if epochs else "the protocol's: 1000 for images, 100 for graphs")
        + epochs_note
        + ")",
    )
    p.add_argument(
        "--protocol",
        default=None,
        help="evaluation protocol (default: classic for images, graph for graph datasets; see condense.eval.PROTOCOLS)",
    )
    p.add_argument(
        "--teacher",
        action="append",
        default=None,
        metavar="DIR",
        help="soft_label protocol: the teacher folder whose logits train the student (repeat for a committee; "
        "default: the teachers the set records)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree (exposed for docs and tests)."""
    parser = _Parser(
        prog="condense",
        description="Dataset distillation: condense a training set into a few synthetic images (or graphs) per "
        "class, evaluate them with one shared protocol, and export them for other training code.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"condense {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    for name, helptext in (
        ("datasets", "list registered datasets"),
        ("models", "list registered models"),
        ("methods", "list registered distillation methods"),
    ):
        p = sub.add_parser(name, help=helptext, description=helptext)
        p.add_argument("pattern", nargs="?", default="*", help="fnmatch filter, e.g. 'convnet*'")

    p = sub.add_parser(
        "run",
        help="the demo: distill the embedded default and compare with random real images",
        description="Distill a dataset (default: scikit-learn's digits, no files needed), evaluate the result and "
        "a random real subset of the same size with the shared protocol, and save the artifact.",
    )
    p.add_argument("--dataset", default="digits", help="dataset name (default digits)")
    p.add_argument("--method", default="mtt", help="method (default mtt; 'condense methods' lists them)")
    p.add_argument("--ipc", type=_positive_int, default=10, help="images per class (default 10)")
    p.add_argument("--out", default="condense_runs", help="output folder (default ./condense_runs)")
    p.add_argument("--force", action="store_true", help="replace an artifact of the same name in --out")
    p.add_argument(
        "--iterations", type=_positive_int, default=None, help="distillation iterations (--set num_iterations=K)"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a method config field")
    p.add_argument("--experts", type=_positive_int, default=None, help="experts to record for trajectory methods")
    p.add_argument("--expert-epochs", type=_positive_int, default=None, help="epochs per expert")
    _eval_opts(p, seeds=3, epochs=300, epochs_note="; krr_st: the transfer protocol's pre-training epochs, 1000")
    p.set_defaults(epochs=None)  # 300, or the transfer protocol's pre-training epochs for krr_st (cmd_run)
    _common(p)

    p = sub.add_parser(
        "experts",
        help="record expert training trajectories into a buffer",
        description="Train experts on real data and save their parameters after every epoch (resumable).",
    )
    p.add_argument("--dataset", required=True)
    p.add_argument(
        "--preset",
        default=None,
        help="record the buffer a distillation preset needs, named <method>-<preset> (e.g. mtt-cifar10-ipc10): "
        "its expert recipe, ZCA, model, epochs and the paper's expert count (100); --experts/--epochs may shrink it",
    )
    p.add_argument(
        "--for",
        dest="for_method",
        default=None,
        metavar="METHOD",
        help="like --preset, for the default preset "
        "of METHOD on --dataset at --ipc (e.g. --for mtt --dataset cifar10 --ipc 10)",
    )
    p.add_argument("--ipc", type=_positive_int, default=None, help="with --for: the IPC whose preset is meant")
    p.add_argument(
        "--model",
        default=None,
        help="architecture (default: the preset's, else the papers' ConvNet for the resolution: convnetd2 "
        "below 16 px, convnet to 32, convnetd4 at 64, convnetd5 above)",
    )
    p.add_argument(
        "--experts", type=_positive_int, default=None, help="experts (default 10 for CPUs; a --preset records 100)"
    )
    p.add_argument("--epochs", type=_positive_int, default=None, help="epochs per expert (default: the preset's, 50)")
    p.add_argument(
        "--kind", default=None, help="vanilla (MTT), flat (FTD/DATM, GSAM), smooth (AST), or an expert preset"
    )
    p.add_argument("--zca", action="store_true", help="ZCA-whiten the data (eps 0.1; a --preset sets it)")
    p.add_argument("--at-once", type=_positive_int, default=None, help="experts trained at once (default: auto)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an expert config field")
    p.add_argument(
        "--model-arg", action="append", default=[], metavar="KEY=VALUE", help="model builder argument, e.g. width=32"
    )
    p.add_argument(
        "--checkpoint-every-epochs",
        type=_every,
        default=1,
        help="epochs between checkpoints inside an expert, so a kill loses at most this much (1; 0: never)",
    )
    p.add_argument("--out", required=True, help="buffer folder (an existing one is resumed)")
    _common(p)

    p = sub.add_parser(
        "distill",
        help="distill a dataset with one method",
        description="Distill a dataset and save the SyntheticSet (safetensors + JSON sidecar).",
    )
    p.add_argument("--method", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--ipc", type=_positive_int, default=None, help="images per class (required unless --images)")
    p.add_argument(
        "--images",
        type=_positive_int,
        default=None,
        help="a budget of N images in total, not per class (methods whose budget is 'total': krr_st)",
    )
    _class_split_opt(p)
    p.add_argument("--buffer", default=None, help="expert buffer directory (trajectory matchers)")
    p.add_argument(
        "--teacher",
        action="append",
        default=None,
        metavar="DIR",
        help="teacher folder (decoupled methods sre2l, rded; 'condense teachers train'); repeat for a committee",
    )
    p.add_argument(
        "--iterations",
        type=_positive_int,
        default=None,
        help="shorthand for --set num_iterations=K (iterative methods)",
    )
    p.add_argument("--preset", default=None, help="preset name (default '<dataset>-ipc<N>' when it exists)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument(
        "--zca", action="store_true", help="ZCA-whiten the data (eps 0.1; on by itself when the buffer was whitened)"
    )
    p.add_argument("--work-dir", default=None, help="checkpoints + JSONL log here (default: beside --out)")
    p.add_argument(
        "--checkpoint-every", type=_every, default=100, help="iterations between checkpoints (100; 0: never)"
    )
    p.add_argument("--eval-every", type=_every, default=0, help="iterations between monitoring evaluations (0: never)")
    p.add_argument(
        "--out", required=True, help="artifact NAME.safetensors or NAME; writes NAME.safetensors + NAME.json"
    )
    p.add_argument("--force", action="store_true", help="replace an existing artifact at --out")
    p.add_argument(
        "--restart", action="store_true", help="discard the checkpoint and log in the work folder and start over"
    )
    _common(p)

    p = sub.add_parser("teachers", help="train, import and show teachers for decoupled methods (squeeze)")
    tsub = p.add_subparsers(dest="teachers_command", metavar="ACTION")
    t = tsub.add_parser(
        "train",
        help="train teachers on a dataset and save them with their classes, preprocessing and test accuracy",
        description="Train a teacher (the squeeze stage of SRe2L/RDED) and write DIR/teacher.safetensors + "
        "DIR/teacher.json; prints the final-epoch test accuracy. With several --model values or --seeds, trains "
        "one teacher per model and seed into DIR/<model>-s<seed>/.",
    )
    t.add_argument("--dataset", required=True)
    t.add_argument(
        "--model",
        required=True,
        action="append",
        type=_models_arg,
        help="architecture, e.g. convnet_bn or resnet18_bn (BatchNorm); repeat it or give a comma list for several",
    )
    t.add_argument(
        "--seeds", type=_seeds_arg, default=None, help="several teachers per model, e.g. 0,1,2 (DIR/<model>-s<seed>/)"
    )
    t.add_argument(
        "--vmap",
        choices=("auto", "on", "off"),
        default="auto",
        help="train same-model teachers stacked with vmap (auto: on CUDA, without grouped convolutions)",
    )
    t.add_argument("--epochs", type=_positive_int, default=None, help="training epochs (default: the recipe's)")
    t.add_argument(
        "--recipe", default=None, help="sre2l_cifar, rded_cifar or digits (default: digits on digits, else sre2l_cifar)"
    )
    t.add_argument("--zca", action="store_true", help="ZCA-whiten the data (eps 0.1; recorded and then required)")
    t.add_argument(
        "--model-arg", action="append", default=[], metavar="KEY=VALUE", help="model builder argument, e.g. width=32"
    )
    t.add_argument(
        "--out", required=True, help="teacher folder (DIR/teacher.safetensors + DIR/teacher.json), or their parent"
    )
    t.add_argument("--force", action="store_true", help="replace a teacher already in --out")
    _common(t)
    t = tsub.add_parser(
        "encoder",
        help="train a self-supervised (Barlow Twins) target encoder for KRR-ST, saved with its linear-probe accuracy",
        description="Train a Barlow Twins encoder on the training images (labels unused; flips only where the "
        "dataset allows them) and write DIR/encoder.safetensors + DIR/encoder.json with its data contract and the "
        "linear-probe accuracy measured at save time. Pass it to 'condense distill --method krr_st --teacher DIR'.",
    )
    t.add_argument("--dataset", required=True)
    t.add_argument("--model", default="convnet_bn", help="backbone with embed(): a ConvNet or ResNet (convnet_bn)")
    t.add_argument("--epochs", type=_positive_int, default=30, help="training epochs (30)")
    _class_split_opt(t)
    t.add_argument("--zca", action="store_true", help="ZCA-whiten the data (eps 0.1; recorded and then required)")
    t.add_argument(
        "--model-arg", action="append", default=[], metavar="KEY=VALUE", help="model builder argument, e.g. width=64"
    )
    t.add_argument("--out", required=True, help="encoder folder (DIR/encoder.safetensors + DIR/encoder.json)")
    t.add_argument("--force", action="store_true", help="replace an encoder already in --out")
    _common(t)
    t = tsub.add_parser(
        "import",
        help="turn a checkpoint trained elsewhere into a condense teacher (measured on the dataset)",
        description="Load a state dict (safetensors, or torch.save read with weights_only=True; 'module.' "
        "prefixes removed) strictly into a condense architecture, measure its test accuracy on --dataset and "
        "write DIR/teacher.safetensors + DIR/teacher.json with the dataset's classes and preprocessing.",
    )
    t.add_argument("--dataset", required=True, help="the data the checkpoint was trained on (same normalization)")
    t.add_argument("--model", required=True, help="condense architecture of the checkpoint, e.g. resnet18_bn")
    t.add_argument("--checkpoint", required=True, help="a .safetensors or torch.save file holding a state dict")
    t.add_argument("--key", default=None, help="entry holding the state dict (default: found, e.g. 'state_dict')")
    t.add_argument(
        "--encoder",
        action="store_true",
        help="import a self-supervised backbone as a KRR-ST target encoder (DIR/encoder.*; probed, not scored)",
    )
    t.add_argument("--zca", action="store_true", help="ZCA-whiten the data (eps 0.1)")
    t.add_argument(
        "--model-arg", action="append", default=[], metavar="KEY=VALUE", help="model builder argument, e.g. width=32"
    )
    t.add_argument("--out", required=True, help="teacher folder (DIR/teacher.safetensors + DIR/teacher.json)")
    t.add_argument("--force", action="store_true", help="replace a teacher already in --out")
    _common(t)
    t = tsub.add_parser(
        "show",
        help="print a teacher's record (architecture, data, recipe, measured accuracy, checksum)",
        description="Verify and print a teacher folder's record.",
    )
    t.add_argument("path", help="teacher folder (or its teacher.json / teacher.safetensors)")
    t.add_argument("--json", action="store_true", help="print the record as one JSON object")

    p = sub.add_parser(
        "relabel",
        help="store a teacher's soft labels for every epoch of views of a set (FKD)",
        description="Run the teacher(s) over RandomResizedCrop + flip + CutMix views of the set for every training "
        "epoch and store their fp16 logits with the view parameters beside a copy of the artifact, so students train "
        "later without the teacher (condense eval replays them).",
    )
    p.add_argument("path", help="artifact (.safetensors or its .json sidecar)")
    p.add_argument("--dataset", required=True)
    p.add_argument(
        "--teacher",
        action="append",
        default=None,
        metavar="DIR",
        help="teacher folder (default: the set's); repeat for a committee (mean of logits)",
    )
    p.add_argument("--epochs", type=_positive_int, default=None, help="epochs of views (default: the protocol's, 300)")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="views per batch (default: the protocol's)")
    p.add_argument("--topk", type=_positive_int, default=None, help="keep only the k largest logits per view")
    p.add_argument("--precision", choices=("fp16", "fp32"), default="fp16", help="logit precision (fp16, as FKD)")
    p.add_argument(
        "--mode",
        choices=("logits", "dbr"),
        default="logits",
        help="logits (FKD) or dbr (NRR-DD's two distances per view, trained with its DBR loss)",
    )
    p.add_argument("--dbr-alpha", type=float, default=0.1, help="weight of the DBR loss term (mode dbr; 0.1)")
    p.add_argument("--out", required=True, help="new artifact NAME; writes NAME.safetensors, NAME.json, NAME.labels/")
    p.add_argument("--force", action="store_true", help="replace an existing artifact at --out")
    _common(p)

    p = sub.add_parser("eval", help="evaluate a synthetic set", description="Score a synthetic set.")
    p.add_argument("path", help="artifact (.safetensors or its .json sidecar)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--zca", action="store_true", help="ZCA-whiten the real data (must match the artifact)")
    _class_split_opt(p)
    p.add_argument(
        "--target",
        default=None,
        metavar="TASK",
        help="transfer protocol (KRR-ST sets): the task to fine-tune on: 'split' (the other half of --class-split), "
        "'few_labels:N' (N labeled images per class of the dataset), or a dataset name",
    )
    p.add_argument(
        "--protocol-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of the protocol, e.g. finetune_iterations=500 (transfer) or lr=0.01",
    )
    _eval_opts(p)
    _common(p)

    p = sub.add_parser("baseline", help="score a baseline with the same protocol")
    bsub = p.add_subparsers(dest="baseline", metavar="KIND")
    for kind, helptext in (("random", "random real subset at the same IPC"), ("full", "the whole training set")):
        b = bsub.add_parser(kind, help=helptext, description=helptext)
        b.add_argument("--dataset", required=True)
        if kind == "random":
            b.add_argument("--ipc", type=_positive_int, required=True)
        b.add_argument("--zca", action="store_true")
        _eval_opts(b)
        _common(b)

    p = sub.add_parser("show", help="write a PNG grid of a synthetic set")
    p.add_argument("path")
    p.add_argument("--out", required=True, help="PNG path")
    p.add_argument("--force", action="store_true", help="replace an existing file at --out")

    p = sub.add_parser("export", help="export a synthetic set as an ImageFolder of PNGs or one .npz")
    p.add_argument("path")
    p.add_argument("--format", choices=["imagefolder", "npz"], default="imagefolder")
    p.add_argument("--out", required=True, help="a folder (imagefolder; npz: NAME.npz inside), or a file NAME.npz")
    p.add_argument("--force", action="store_true", help="replace existing files at --out")

    # condense report (condense/bench/report.py)
    p = sub.add_parser(
        "report",
        help="tables, CSV, HTML and plots from 'condense bench' results",
        description="Markdown table (mean ± std, best in bold, † where a method does not beat random real), "
        "results.csv, a self-contained report.html and PNG plots (matplotlib: pip install 'condense-dd[plots]').",
    )
    p.add_argument("results", nargs="+", metavar="RESULTS.jsonl", help="results files written by 'condense bench'")
    p.add_argument("--out", required=True, metavar="DIR", help="report folder")
    p.add_argument("--models", type=_models_arg, default=None, help="report only these evaluation models (a,b)")
    p.add_argument("--no-plots", action="store_true", help="write no PNGs (tables, CSV and HTML only)")
    p.add_argument("--force", action="store_true", help="replace a report already in --out")
    # condense import (condense/published.py)
    p = sub.add_parser(
        "import",
        help="read a published distilled set (DC/DSA/DM, MTT, FTD, DATM, SRe2L, RDED, ImageFolder, npz)",
        description="Read the files a method's authors publish into a condense artifact, checked against the "
        "dataset and recorded with their sha256; tensor files are read with torch.load(weights_only=True) only.",
    )
    p.add_argument(
        "path",
        help="res_*.pt (DC/DSA/DM), a run folder or images_<it>.pt (MTT/FTD/DATM), an "
        "ImageFolder (SRe2L/RDED/imagefolder) or a .npz",
    )
    p.add_argument(
        "--format",
        required=True,
        choices=["dc", "dsa", "dm", "mtt", "ftd", "datm", "sre2l", "rded", "imagefolder", "npz"],
    )
    p.add_argument("--dataset", required=True)
    p.add_argument(
        "--zca",
        action="store_true",
        help="load the dataset ZCA-whitened: MTT/FTD/DATM sets made with --zca live there; pixels are whitened",
    )
    p.add_argument("--ipc", type=_positive_int, default=None, help="images per class (ImageFolders: the first N)")
    p.add_argument("--it", default=None, metavar="ITER", help="MTT/FTD/DATM iteration (images_ITER.pt; default best)")
    p.add_argument("--exp", type=_int_at_least(0, "an integer >= 0"), default=0, help="DC/DSA/DM experiment (0)")
    p.add_argument("--ema", action="store_true", help="FTD: the EMA images (ema_images_*.pt)")
    p.add_argument("--lr", type=float, default=None, help="MTT/FTD learned lr (their code saves none)")
    p.add_argument("--model", default=None, help="the architecture it was distilled with (evaluation's default)")
    p.add_argument("--method", default=None, help="method name to record (imagefolder/npz default: imported)")
    p.add_argument("--no-space-check", action="store_true", help="skip the value-space statistics check")
    p.add_argument("--out", required=True, help="new artifact NAME; writes NAME.safetensors and NAME.json")
    p.add_argument("--force", action="store_true", help="replace an existing artifact at --out")
    _common(p)

    # bench: a TOML grid of datasets x methods x IPC x models x seeds (condense/bench/run.py)
    p = sub.add_parser("bench", help="run a benchmark grid (specs/*.toml) into a results JSONL, resumably")
    p.add_argument("spec", help="the grid, a TOML file (specs/digits.toml)")
    p.add_argument("--work", default=None, help="work folder: cells, buffers, teachers, sets (default bench-NAME)")
    p.add_argument("--out", default=None, help="results JSONL (default WORK/results.jsonl), rebuilt every run")
    p.add_argument("--device", default=None, help="cpu, cuda (cuda:LOCAL_RANK under torchrun; default: cuda if any)")
    p.add_argument("--dry-run", action="store_true", help="validate; print the cells and prerequisites only")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-cell lines")
    return parser


# ---------------------------------------------------------------------------------------------- helpers


def _device(name: str | None) -> str:
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"unknown device '{name}'; use cpu, cuda or cuda:N") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' requested but CUDA is not available; use --device cpu")
    return str(dev)


def _refuse_existing(path: Path, force: bool) -> None:
    """One line unless ``path`` is free: a folder is always refused, a file unless ``force``."""
    if path.is_dir():
        raise OutputExistsError(f"--out: '{path}' is a folder where a file goes; pass a file name")
    if path.exists() and not force:
        raise OutputExistsError(f"--out: '{path}' exists; pass --force to replace it, or choose another --out")


def _artifact_paths(out: str, force: bool) -> tuple[Path, Path]:
    """The two files an artifact ``--out`` writes (``NAME.safetensors``, ``NAME.json``), checked before any work."""
    p = Path(out)
    if p.is_dir() or out.endswith(("/", "\\")):
        raise OutputExistsError(
            f"--out: '{out}' is a folder; pass an artifact name such as '{p / 'distilled.safetensors'}'"
        )
    if p.suffix not in ("", ".safetensors"):
        raise ConfigError(
            f"--out: '{out}' ends in '{p.suffix}'; an artifact is written as NAME.safetensors + NAME.json, so pass "
            f"'{p.with_suffix('.safetensors')}' or '{p.with_suffix('')}'"
        )
    tensors = p if p.suffix == ".safetensors" else p.with_name(p.name + ".safetensors")
    pair = (tensors, tensors.with_suffix(".json"))
    for q in pair:
        _refuse_existing(q, force)
    return pair


def _folder_arg(flag: str, path: str | Path, expected: str) -> Path:
    """``path`` unless it is a file where a folder is expected."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} '{p}' is a file; expected {expected}")
    return p


def _buffer_arg(path: str) -> Path:
    p = _folder_arg("--buffer", path, "a buffer folder holding manifest.json")
    if not (p / "manifest.json").is_file():
        what = "has no manifest.json" if p.is_dir() else "does not exist"
        raise DataNotFoundError(
            f"--buffer '{p}' {what}; expected a buffer folder holding manifest.json (record one with "
            "'condense experts ... --out DIR')"
        )
    return p


def _buffer_whitened(path: Path) -> bool:
    """Whether a buffer records ZCA, read through ``ExpertBuffer.open`` (its manifest verified like every file)."""
    from condense.expert_trajectories import ExpertBuffer

    return ExpertBuffer.open(path).manifest["preprocessing"].get("zca") is not None


def _artifact_arg(path: str) -> str:
    if Path(path).is_dir():
        raise ConfigError(f"'{path}' is a folder; expected an artifact file (NAME.safetensors or its NAME.json)")
    return path


def _check_eval_args(args: argparse.Namespace) -> str:
    """Device, protocol and model names of an evaluating command, before any data is loaded; returns the device."""
    from condense.eval.protocol import get_protocol

    device = _device(args.device)
    if args.protocol is not None:
        get_protocol(args.protocol)
    for name in args.models or ():
        _check_model_name(name)
    return device


def _check_model_name(name: str) -> None:
    from condense.models.gnn import GNNS
    from condense.models.registry import MODELS, TIMM_PREFIX

    if name.startswith(TIMM_PREFIX) or name in GNNS.list():
        return
    MODELS.get(name)  # an unknown name raises with a did-you-mean


def _load(args: argparse.Namespace):
    data = _whole_dataset(args)
    if getattr(args, "class_split", None) is not None:
        from condense.eval.transfer import class_split

        data = class_split(data, args.class_split)[0]
    return data


def _protocol_with(args: argparse.Namespace, syn: Any) -> Any:
    """``--protocol-set``: the protocol (``--protocol``, else the set's recorded one with the fields its preset
    records) with the given fields replaced, parsed by their types."""
    from condense.config import parse_overrides
    from condense.eval.protocol import DEFAULT_PROTOCOLS, get_protocol

    recorded = syn.meta.get("eval") if isinstance(syn.meta.get("eval"), dict) else {}
    name = (
        args.protocol or recorded.get("protocol") or DEFAULT_PROTOCOLS[syn.kind if syn.kind == "images" else "graphs"]
    )
    base = get_protocol(name)
    fields = set(base.to_dict()) if hasattr(base, "to_dict") else set()
    extras = (
        {k: v for k, v in recorded.items() if k in fields and k != "name"} if name == recorded.get("protocol") else {}
    )
    return base.replace(**{**extras, **parse_overrides(type(base), args.protocol_set)})


def _target(args: argparse.Namespace, data: Any) -> Any:
    """``condense eval --target``: the task a transfer-protocol set is fine-tuned on."""
    from condense.eval.transfer import class_split, few_labels

    spec = args.target
    if spec == "split":
        if args.class_split is None:
            raise ConfigError("--target split fine-tunes on the other half of --class-split SEED; pass --class-split")
        full = _whole_dataset(args)
        return class_split(full, args.class_split)[1]
    if spec.startswith("few_labels:"):
        n = spec.removeprefix("few_labels:")
        if not n.isdigit() or int(n) < 1:
            raise ConfigError(f"--target few_labels:N needs a positive integer N, got {spec!r}")
        return few_labels(data, int(n))
    from condense.data import load_dataset

    return load_dataset(spec, args.data_root)


def _whole_dataset(args: argparse.Namespace) -> Any:
    """The whole dataset of ``args`` (no class split), with its ZCA setting."""
    from condense.data import load_dataset

    kwargs = {"zca": True, "zca_device": _device(args.device)} if getattr(args, "zca", False) else {}
    return load_dataset(args.dataset, args.data_root, **kwargs)


def _print_result(args: argparse.Namespace, obj: dict[str, Any], lines: list[str]) -> None:
    if not getattr(args, "quiet", False) or not getattr(args, "json", False):
        for line in lines:
            print(line)
    if getattr(args, "json", False):
        print(json.dumps(obj, allow_nan=False))


def _pct(a: dict[str, Any]) -> str:
    return f"{100 * a['mean']:.2f} ± {100 * a['std']:.2f} % over {len(a['runs'])} runs"


def _acc_lines(row: dict[str, Any], label: str) -> list[str]:
    return [f"{label} {m}: {_pct(a)}" for m, a in row["accuracy"].items()]


def _eval_kwargs(args: argparse.Namespace, device: str) -> dict[str, Any]:
    return {
        "models": args.models,
        "seeds": args.seeds,
        "epochs": args.epochs,
        "protocol": args.protocol,
        "device": device,
        "seed": args.seed,
        "quiet": args.quiet,
        "teacher": [_teacher_arg(t) for t in args.teacher] if getattr(args, "teacher", None) else None,
    }


def _teacher_arg(path: str) -> Path:
    return _folder_arg("--teacher", path, "a teacher folder holding teacher.json (condense teachers train)")


# ---------------------------------------------------------------------------------------------- commands


def cmd_list(args: argparse.Namespace) -> int:
    if args.command == "datasets":
        from condense.data import list_datasets

        names = [n for n in list_datasets(args.pattern) if not n.endswith(":")]
        extra = ["tu:<NAME> (TU graph datasets, e.g. tu:MUTAG)", "imagefolder:<path>"]
    elif args.command == "models":
        from condense.models import list_models

        names = list_models(args.pattern)
        extra = ["timm:<name> (any timm model, adapted to the dataset)"]
    else:
        from condense.methods import get_method, list_methods

        names = []
        for n in list_methods(args.pattern):
            m = get_method(n)
            doc = (type(m).__doc__ or "").strip().splitlines()[0]
            names.append(f"{n:<15} {m.data_kind:<7} {doc}")
        extra = []
    for n in names:
        print(n)
    for e in extra:
        print(e)
    return 0


def cmd_experts(args: argparse.Namespace) -> int:
    from condense.config import parse_overrides
    from condense.expert_trajectories import get_expert_config, record_experts

    out = _folder_arg("--out", args.out, "a buffer folder (a new one, or one to resume)")
    device = _device(args.device)
    _apply_buffer_preset(args)
    base = get_expert_config(args.kind)
    config = get_expert_config(args.kind, **parse_overrides(type(base), args.set))
    model_kwargs = _model_kwargs(args.model_arg)
    data = _load(args)
    if args.model is None:
        from condense.models import default_model_for

        args.model = default_model_for(data)
    _probe_model(args.model, data, model_kwargs)
    t0 = time.perf_counter()
    buf = record_experts(
        data,
        args.model,
        args.experts,
        args.epochs,
        out,
        kind=args.kind,
        config=config,
        model_kwargs=model_kwargs or None,
        seed=args.seed,
        device=device,
        quiet=args.quiet,
        experts_at_once=args.at_once,
        checkpoint_every_epochs=args.checkpoint_every_epochs,
    )
    curves = buf.accuracy_curves
    finals = [c[-1] for c in curves.values() if c]
    msg = f"recorded {len(curves)} experts into {args.out} in {time.perf_counter() - t0:.1f}s"
    if finals:
        msg += f"; final test accuracy {100 * min(finals):.1f}-{100 * max(finals):.1f} %"
    if not args.quiet:
        print(msg)
    return 0


def _model_kwargs(items: list[str]) -> dict[str, Any]:
    """``--model-arg key=value`` flags as builder kwargs (values parsed as JSON when they are JSON)."""
    model_kwargs: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--model-arg {item!r} must look like key=value")
        try:
            model_kwargs[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            model_kwargs[key.strip()] = raw
    return model_kwargs


def _seeds_arg(text: str) -> list[int]:
    try:
        seeds = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers >= 0 such as 0,1,2, got {text!r}"
        ) from None
    if any(v < 0 for v in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct integers >= 0 such as 0,1,2, got {text!r}")
    return seeds


def _teacher_out(out: Path, force: bool) -> None:
    from condense.teachers import JSON_FILE, TENSOR_FILE

    for q in (out / TENSOR_FILE, out / JSON_FILE):
        if q.exists() and not force:
            raise OutputExistsError(f"--out: '{out}' already holds a teacher ('{q.name}'); pass --force to replace it")
        if q.is_dir():
            raise OutputExistsError(f"--out: '{q}' is a folder where a file goes")


def cmd_teachers(args: argparse.Namespace) -> int:
    actions = {
        "train": _teachers_train,
        "encoder": _teachers_encoder,
        "import": _teachers_import,
        "show": _teachers_show,
    }
    if args.teachers_command is None:
        raise ConfigError(
            "condense teachers: name an action: 'condense teachers train|encoder|import|show ...' (see --help)"
        )
    return actions[args.teachers_command](args)


def _teachers_train(args: argparse.Namespace) -> int:
    from condense.teachers import TeacherSpec, get_recipe

    models = [m for group in args.model for m in group]
    if args.seeds is not None and args.seed != 0:
        raise ConfigError("pass --seed S (one teacher) or --seeds S1,S2,... (several), not both")
    if len(set(models)) != len(models):
        raise ConfigError(f"--model names a model twice: {','.join(models)}")
    several = len(models) > 1 or args.seeds is not None
    seeds = args.seeds if args.seeds is not None else [args.seed]
    specs = [TeacherSpec(m, seed=s) for m in models for s in seeds]
    out = _folder_arg("--out", args.out, "a teacher folder (DIR/teacher.safetensors + DIR/teacher.json)")
    folders = [out / spec.name for spec in specs] if several else [out]
    for folder in folders:
        _folder_arg("--out", folder, "a teacher folder")
        _teacher_out(folder, args.force)
    device = _device(args.device)
    for m in models:
        _check_model_name(m)
    if args.recipe is not None:
        get_recipe(args.recipe)  # an unknown name raises with a did-you-mean before the data is loaded
    model_kwargs = _model_kwargs(args.model_arg)
    data = _load(args)
    for m in models:
        _probe_model(m, data, model_kwargs)
    from condense.teachers import train_teacher, train_teachers

    t0 = time.perf_counter()
    if several:
        specs = [TeacherSpec(s.model, seed=s.seed, model_kwargs=model_kwargs) for s in specs]
        vmap = {"auto": None, "on": True, "off": False}[args.vmap]
        teachers = train_teachers(
            data, specs, out, epochs=args.epochs, recipe=args.recipe, device=device, vmap=vmap, quiet=args.quiet
        )
    else:
        teachers = [
            train_teacher(
                data,
                models[0],
                args.epochs,
                out,
                recipe=args.recipe,
                model_kwargs=model_kwargs or None,
                seed=args.seed,
                device=device,
                quiet=args.quiet,
            )
        ]
    if not args.quiet:
        for teacher in teachers:
            print(
                f"trained {teacher.model} teacher (seed {teacher.seed}) on {teacher.dataset} ({teacher.epochs} "
                f"epochs, recipe {teacher.recipe_name or 'custom'}): test accuracy "
                f"{100 * teacher.test_accuracy:.2f} % -> {teacher.path}"
            )
        print(f"{len(teachers)} teacher(s) in {time.perf_counter() - t0:.1f}s")
    return 0


def _encoder_out(out: Path, force: bool) -> None:
    from condense.teachers import ENCODER_JSON_FILE, ENCODER_TENSOR_FILE

    for q in (out / ENCODER_TENSOR_FILE, out / ENCODER_JSON_FILE):
        if q.exists() and not force:
            raise OutputExistsError(f"--out: '{out}' already holds an encoder ('{q.name}'); pass --force to replace it")


def _teachers_encoder(args: argparse.Namespace) -> int:
    out = _folder_arg("--out", args.out, "an encoder folder (DIR/encoder.safetensors + DIR/encoder.json)")
    _encoder_out(out, args.force)
    device = _device(args.device)
    _check_model_name(args.model)
    model_kwargs = _model_kwargs(args.model_arg)
    data = _load(args)
    _probe_model(args.model, data, model_kwargs)
    from condense.teachers import train_encoder

    t0 = time.perf_counter()
    enc = train_encoder(data, args.model, args.epochs, out, model_kwargs=model_kwargs, seed=args.seed, device=device)
    if not args.quiet:
        print(
            f"trained a Barlow Twins {enc.model} encoder on {enc.dataset} ({enc.epochs} epochs, {enc.feature_dim}-d "
            f"features): linear probe {100 * enc.probe_accuracy:.2f} % -> {out} ({time.perf_counter() - t0:.1f}s)"
        )
    return 0


def _teachers_import(args: argparse.Namespace) -> int:
    if args.encoder:
        out = _folder_arg("--out", args.out, "an encoder folder (DIR/encoder.safetensors + DIR/encoder.json)")
        _encoder_out(out, args.force)
    else:
        out = _folder_arg("--out", args.out, "a teacher folder (DIR/teacher.safetensors + DIR/teacher.json)")
        _teacher_out(out, args.force)
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        raise DataNotFoundError(f"--checkpoint '{checkpoint}' is not a file (a .safetensors or torch.save file)")
    device = _device(args.device)
    _check_model_name(args.model)
    model_kwargs = _model_kwargs(args.model_arg)
    data = _load(args)
    _probe_model(args.model, data, model_kwargs)
    if args.encoder:
        from condense.teachers import import_encoder

        enc = import_encoder(
            checkpoint, args.model, data, out, model_kwargs=model_kwargs or None, key=args.key, device=device
        )
        if not args.quiet:
            print(
                f"imported {checkpoint.name} as a {enc.model} target encoder on {enc.dataset} ({enc.feature_dim}-d "
                f"features): linear probe {100 * enc.probe_accuracy:.2f} % -> {out}"
            )
        return 0
    from condense.teachers import import_teacher

    teacher = import_teacher(
        checkpoint, args.model, data, out, model_kwargs=model_kwargs or None, key=args.key, device=device
    )
    if not args.quiet:
        print(
            f"imported {checkpoint.name} as a {teacher.model} teacher on {teacher.dataset}: test accuracy "
            f"{100 * teacher.test_accuracy:.2f} % -> {out}"
        )
    return 0


def _encoder_show(args: argparse.Namespace) -> int:
    from condense.teachers import load_encoder

    e = load_encoder(args.path)
    record = {
        "path": str(e.path),
        "kind": "encoder",
        "model": e.model,
        "model_kwargs": e.model_kwargs,
        "input_shape": e.input_shape,
        "dataset": e.dataset,
        "fingerprint": e.fingerprint,
        "classes": e.classes,
        "preprocessing": e.preprocessing,
        "recipe": e.recipe,
        "epochs": e.epochs,
        "seed": e.seed,
        "feature_dim": e.feature_dim,
        "probe_accuracy": e.probe_accuracy,
        "sha256": e.sha256,
    }
    if args.json:
        print(json.dumps(record, allow_nan=False))
        return 0
    kwargs = ", ".join(f"{k}={v!r}" for k, v in e.model_kwargs.items())
    print(
        "\n".join(
            [
                f"encoder      {e.path} (self-supervised target model for KRR-ST)",
                f"architecture {e.model}({kwargs}) on {'x'.join(map(str, e.input_shape))}, {e.feature_dim}-d features",
                f"dataset      {e.dataset} (fingerprint {e.fingerprint[:16]}), {len(e.classes)} classes",
                f"recipe       {', '.join(f'{k}={v}' for k, v in e.recipe.items())}",
                f"training     {e.epochs} epochs, seed {e.seed}",
                f"probe        {100 * e.probe_accuracy:.2f} % linear-probe top-1 on the test split",
                f"sha256       {e.sha256} (encoder.safetensors)",
            ]
        )
    )
    return 0


def _teachers_show(args: argparse.Namespace) -> int:
    from condense.teachers import ENCODER_JSON_FILE, load_teacher

    folder = Path(args.path)
    if (folder / ENCODER_JSON_FILE).is_file() or folder.name.startswith("encoder."):
        return _encoder_show(args)
    t = load_teacher(args.path)
    record = {
        "path": str(t.path),
        "model": t.model,
        "model_kwargs": t.model_kwargs,
        "input_shape": t.input_shape,
        "dataset": t.dataset,
        "fingerprint": t.fingerprint,
        "num_classes": t.num_classes,
        "classes": t.classes,
        "preprocessing": t.preprocessing,
        "recipe_name": t.recipe_name,
        "recipe": t.recipe,
        "epochs": t.epochs,
        "seed": t.seed,
        "test_accuracy": t.test_accuracy,
        "train_seconds": t.train_seconds,
        "has_batchnorm": t.has_batchnorm,
        "sha256": t.sha256,
        "written_by": {k: t.provenance.get(k) for k in ("condense", "torch", "created") if k in t.provenance},
    }
    if args.json:
        print(json.dumps(record, allow_nan=False))
        return 0
    classes = ", ".join(t.classes[:10]) + (", ..." if t.num_classes > 10 else "")
    kwargs = ", ".join(f"{k}={v!r}" for k, v in t.model_kwargs.items())
    recipe = ", ".join(f"{k}={v}" for k, v in t.recipe.items())
    lines = [
        f"teacher      {t.path}",
        f"architecture {t.model}({kwargs}) on {'x'.join(map(str, t.input_shape))}, BatchNorm: {t.has_batchnorm}",
        f"dataset      {t.dataset} (fingerprint {t.fingerprint[:16]}), {t.num_classes} classes: {classes}",
        f"recipe       {t.recipe_name or 'custom'}: {recipe}",
        f"training     {t.epochs} epochs, seed {t.seed}, {t.train_seconds:.1f}s",
        f"accuracy     {100 * t.test_accuracy:.2f} % top-1 on the test split (measured after the final epoch)",
        f"sha256       {t.sha256} (teacher.safetensors)",
        f"written by   condense {t.provenance.get('condense', '?')}, torch {t.provenance.get('torch', '?')}",
    ]
    print("\n".join(lines))
    return 0


def _apply_buffer_preset(args: argparse.Namespace) -> None:
    """Fill ``condense experts``' recipe flags from ``--preset`` / ``--for`` (a flag that contradicts the preset is
    refused: the buffer would not be the one the preset needs); without a preset, the plain CPU-sized defaults."""
    if args.preset is None and args.for_method is None:
        if args.ipc is not None:
            raise ConfigError("--ipc only goes with --for METHOD")
        args.kind = args.kind or "vanilla"
        args.experts = args.experts or 10
        args.epochs = args.epochs or 50
        return
    from condense.expert_trajectories import get_expert_config
    from condense.methods import preset_buffer

    if args.preset is not None and args.for_method is not None:
        raise ConfigError("pass --preset NAME or --for METHOD --ipc N, not both")
    if args.for_method is not None and args.ipc is None:
        raise ConfigError("--for METHOD needs --ipc N (the preset is '<dataset>-ipc<N>')")
    if args.preset is not None:
        method, key, need, min_epochs = preset_buffer(args.preset)
        if not key.startswith(args.dataset + "-") and key != args.dataset:
            raise ConfigError(f"--preset {args.preset} is a preset for another dataset than --dataset {args.dataset}")
    else:
        method, key, need, min_epochs = preset_buffer(method=args.for_method, dataset=args.dataset, ipc=args.ipc)
    name = f"{method}-{key}"
    kind = need.get("expert") or need.get("kind") or "vanilla"
    for flag, given, wanted in (("--kind", args.kind, kind), ("--model", args.model, need.get("model"))):
        if given is not None and wanted is not None and given != wanted:
            raise ConfigError(f"{flag} {given} contradicts preset {name}, which needs {wanted}; drop {flag}")
    if args.set:
        raise ConfigError(f"--set changes the expert recipe preset {name} needs; record without --preset to use it")
    if args.zca and need.get("zca") is False:
        raise ConfigError(f"--zca contradicts preset {name}, which is recorded without ZCA; drop --zca")
    args.kind = kind
    args.model = args.model or need.get("model")
    args.zca = bool(need.get("zca", args.zca))
    args.experts = args.experts or need.get("experts", 10)
    args.epochs = args.epochs or need.get("epochs") or min_epochs
    if args.epochs < min_epochs:
        raise ConfigError(f"--epochs {args.epochs}: preset {name} reads expert epochs up to {min_epochs}")
    if need.get("epochs") and args.epochs != need["epochs"] and get_expert_config(kind).decays:
        raise ConfigError(
            f"--epochs {args.epochs}: preset {name} records {need['epochs']} epochs and its experts' lr decays "
            "mid-training, so the length changes every snapshot; drop --epochs"
        )
    if not args.quiet:
        print(
            f"recording the buffer of preset {name}: {args.experts} {kind} experts x {args.epochs} epochs, "
            f"model {args.model or 'default'}, ZCA {'on' if args.zca else 'off'}"
        )


def _probe_model(name: str, data: Any, model_kwargs: dict[str, Any]) -> None:
    """Build ``name`` once with the ``--model-arg`` options, so a wrong option is one line before any training."""
    from condense.models import create_model_for

    try:
        create_model_for(name, data, seed=0, **model_kwargs)
    except TypeError as e:  # the builder refused a keyword: a user mistake in --model-arg
        raise ConfigError(f"--model-arg refused by model '{name}': {e}") from None


def _overrides(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """``--set key=value`` items (and ``--iterations K``, shorthand for ``--set num_iterations=K``) parsed by the
    method's config field types; an unknown field is refused with the fields the config has."""
    from condense.config import parse_overrides
    from condense.methods import get_method

    items = list(getattr(args, "set", None) or [])
    if getattr(args, "iterations", None) is not None:
        items.append(f"num_iterations={args.iterations}")
    values = parse_overrides(get_method(method).Config, items)
    for key, value in values.items():
        if any(
            isinstance(v, float) and math.isnan(v) for v in (value if isinstance(value, (tuple, list)) else [value])
        ):
            raise ConfigError(f"--set {key}={value!r}: nan is not a value; pass a number")
    return values


def _distill(
    args: argparse.Namespace,
    data,
    method: str,
    ipc: int,
    out_dir: Path | None,
    buffer: Path | None,
    device: str,
    teachers: list[Path] | None = None,
):
    import torch

    from condense.methods import RunContext, distill

    run = RunContext(
        device=device,
        out_dir=out_dir,
        checkpoint_every=getattr(args, "checkpoint_every", 0),
        eval_every=getattr(args, "eval_every", 0),
        quiet=args.quiet,
        buffer=buffer,
        teacher=teachers or None,
        restart=getattr(args, "restart", False),
    )
    gen = torch.Generator().manual_seed(args.seed)
    overrides = _overrides(args, method)
    return distill(method, data, ipc, preset=getattr(args, "preset", None), overrides=overrides, generator=gen, run=run)


def cmd_distill(args: argparse.Namespace) -> int:
    from condense.methods import get_method

    method = get_method(args.method)
    if getattr(method, "needs_buffer", False) and not args.buffer:
        raise ConfigError(
            f"method '{args.method}' matches expert trajectories: pass --buffer DIR (record one with "
            "'condense experts ...')"
        )
    if getattr(method, "needs_teacher", False) and not args.teacher:
        make = "train" if method.teacher_kind == "classifier" else "encoder"
        raise ConfigError(
            f"method '{args.method}' starts from a trained {'teacher' if make == 'train' else 'target encoder'}: "
            f"pass --teacher DIR (make one with 'condense teachers {make} --dataset {args.dataset} --model "
            "convnet_bn --out DIR')"
        )
    if args.images is not None and method.budget != "total":
        raise ConfigError(
            f"--images N is a total budget, read by methods whose budget is 'total' (krr_st); '{args.method}' "
            "distills --ipc images per class"
        )
    if args.ipc is None and args.images is None:
        raise ConfigError("pass --ipc N (images per class), or --images N (a total budget; krr_st)")
    teachers = [_teacher_arg(t) for t in args.teacher or ()]
    tensors, sidecar = _artifact_paths(args.out, args.force)
    default_work = tensors.with_name(tensors.stem + "_work")
    work = _folder_arg("--work-dir", args.work_dir or default_work, "a folder for checkpoints and the log")
    buffer = _buffer_arg(args.buffer) if args.buffer else None
    if buffer is not None and not args.zca and _buffer_whitened(buffer):
        args.zca = True  # the experts saw ZCA-whitened data: so must the student (the buffer check compares the ZCA)
        if not args.quiet:
            print(f"the buffer '{buffer}' was recorded on ZCA-whitened data: loading {args.dataset} with --zca")
    device = _device(args.device)
    overrides = _overrides(args, args.method)  # a bad --set is refused before the data is loaded
    if args.preset is not None:
        method.resolve_config(args.preset, overrides)
    data = _load(args)
    t0 = time.perf_counter()
    if args.images is not None:  # a total budget: num_images = N; the set's ipc is N per class, rounded down
        args.set = [*args.set, f"num_images={args.images}"]
        args.ipc = args.ipc or max(1, args.images // data.num_classes)
    syn = _distill(args, data, args.method, args.ipc, work, buffer, device, teachers)
    _artifact_paths(str(tensors), args.force)  # another process may have written it meanwhile
    path = syn.save(tensors)
    print(
        f"saved {len(syn)} items ({args.method}, {args.dataset}, ipc {args.ipc}) to {path} and "
        f"{sidecar} in {time.perf_counter() - t0:.1f}s"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from condense.eval import evaluate
    from condense.synthetic import SyntheticSet

    device = _check_eval_args(args)
    syn = SyntheticSet.load(_artifact_arg(args.path))
    if syn.preprocessing.get("zca") and not args.zca:
        args.zca = True  # the set lives in ZCA space: the real test images must be whitened the same way
    data = _load(args)
    kw = _eval_kwargs(args, device)
    if args.target is not None:
        kw["target"] = _target(args, data)
    if args.protocol_set:
        kw["protocol"] = _protocol_with(args, syn)
    row = evaluate(syn, data, **kw)
    if row.get("protocol") == "transfer":
        first = next(iter(row["accuracy"]))
        lines = [f"transfer to {row['target']['dataset']} ({len(row['target']['classes'])} classes), {first}:"]
        for name, key in (
            ("pre-trained on the set", "accuracy"),
            ("no pre-training", "scratch"),
            ("random real, same objective", "random_real"),
            ("random real, labels", "random_real_labels"),
        ):
            if row.get(key):
                lines.append(f"  {name:<28} {_pct(row[key][first])}")
        _print_result(args, row, lines)
        return 0
    row.setdefault("dataset", args.dataset)
    row.setdefault("ipc", syn.ipc)
    _print_result(args, row, _acc_lines(row, f"{syn.method} ipc {syn.ipc}"))
    return 0


def cmd_relabel(args: argparse.Namespace) -> int:
    from condense.eval.protocol import get_protocol
    from condense.labels import relabel
    from condense.synthetic import SyntheticSet
    from condense.teachers import load_teacher

    device = _device(args.device)
    tensors, sidecar = _artifact_paths(args.out, args.force)
    syn = SyntheticSet.load(_artifact_arg(args.path))
    data = _load(args)
    syn.check_compatible(data)
    paths = (
        [_teacher_arg(t) for t in args.teacher]
        if args.teacher
        else [Path(r["path"]) for r in syn.meta.get("teachers") or [] if isinstance(r, dict) and r.get("path")]
    )
    if not paths:
        raise ConfigError("the set records no teacher: pass --teacher DIR")
    teachers = [load_teacher(p, map_location=device) for p in paths]
    for t in teachers:
        t.check_compatible(data)
    proto = get_protocol("soft_label")
    from condense.augment.views import ViewRecipe

    recipe = ViewRecipe(scale=proto.scale, flip=proto.flip_for(data.name), mix=proto.mix, mix_alpha=proto.mix_alpha)
    t0 = time.perf_counter()
    syn.label_store = relabel(
        syn.images,
        [t.module for t in teachers],
        epochs=args.epochs or proto.epochs,
        batch_size=args.batch_size or proto.batch_for(syn.ipc, data.num_classes),
        recipe=recipe,
        seed=args.seed,
        precision=args.precision,
        topk=args.topk,
        references=[t.reference() for t in teachers],
        device=device,
        quiet=args.quiet,
        mode=args.mode,
        labels=syn.hard_labels if args.mode == "dbr" else None,
        dbr_alpha=args.dbr_alpha,
    )
    syn.meta["teachers"] = [t.reference() for t in teachers]
    path = syn.save(tensors)
    store = syn.label_store
    print(
        f"relabeled {len(syn)} images x {store.epochs} epochs with {len(teachers)} teacher(s) in "
        f"{time.perf_counter() - t0:.1f}s: {store.label_bytes / 1e6:.2f} MB of labels "
        f"({syn.images.numel() / 1e6:.2f} MB of uint8 pixels); saved {path}, {sidecar} and {path.stem}.labels/"
    )
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from condense.eval import full_data_baseline, random_real_baseline

    if args.baseline is None:
        raise ConfigError("choose a baseline: 'condense baseline random ...' or 'condense baseline full ...'")
    device = _check_eval_args(args)
    data = _load(args)
    kw = _eval_kwargs(args, device)
    row = random_real_baseline(data, args.ipc, **kw) if args.baseline == "random" else full_data_baseline(data, **kw)
    row.setdefault("dataset", args.dataset)
    row.setdefault("ipc", getattr(args, "ipc", None))
    _print_result(args, row, _acc_lines(row, f"{args.baseline} ipc {getattr(args, 'ipc', 'all')}"))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from condense.demo import run_demo
    from condense.methods import get_method

    out = _folder_arg("--out", args.out, "an output folder")
    device = _check_eval_args(args)
    get_method(args.method)
    if args.threads is None and device == "cpu" and args.dataset == "digits":
        # The demo's tensors are tiny: one thread avoids OpenMP oversubscription, which on a busy 2-core machine
        # made the demo 7x slower (330 s with 2 threads vs 48 s with 1, measured while another job ran).
        import torch

        torch.set_num_threads(1)
    method = args.method
    overrides = _overrides(args, method)
    data = _load(args)
    artifact, sidecar = _artifact_paths(str(out / f"{data.name}_{method}_ipc{args.ipc}.safetensors"), args.force)
    kw = _eval_kwargs(args, device)
    if kw["epochs"] is None:  # --epochs' default: 300; a self-supervised method's transfer protocol keeps its own
        kw["epochs"] = None if get_method(method).teacher_kind == "encoder" else 300
    res = run_demo(
        data,
        method,
        args.ipc,
        args.out,
        models=kw["models"],
        seeds=kw["seeds"],
        epochs=kw["epochs"],
        protocol=kw["protocol"],
        experts=args.experts,
        expert_epochs=args.expert_epochs,
        overrides=overrides,
        seed=args.seed,
        device=device,
        quiet=args.quiet,
        progress=None if args.quiet else print,
    )
    lines = [
        *(f"distilled ({method}) {m}: {_pct(a)}" for m, a in res["distilled"].items()),
        *(f"random real     {m}: {_pct(a)}" for m, a in res["random"].items()),
        *(f"no pre-training {m}: {_pct(a)}" for m, a in (res.get("scratch") or {}).items()),
        f"artifact: {res['artifact']} and {sidecar}  ({res['seconds']:.0f}s)",
    ]
    _print_result(args, res, lines)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from condense.synthetic import SyntheticSet

    _refuse_existing(Path(args.out), args.force)
    out = SyntheticSet.load(_artifact_arg(args.path)).grid(args.out)
    print(f"wrote {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from condense.synthetic import SyntheticSet

    out = Path(args.out)
    to_file = args.format == "npz" and out.suffix == ".npz"
    if to_file:
        _refuse_existing(out, args.force)
    else:
        _folder_arg("--out", out, f"a folder ({args.format}), or a file NAME.npz with --format npz")
    syn = SyntheticSet.load(_artifact_arg(args.path))
    if args.format == "npz" and not to_file:
        _refuse_existing(out / f"{syn.dataset}_{syn.method}_ipc{syn.ipc}.npz", args.force)
    elif args.format == "imagefolder" and out.is_dir() and any(out.iterdir()) and not args.force:
        raise OutputExistsError(
            f"--out: folder '{out}' is not empty; pass --force to write the PNGs into it (files of the same name are "
            "replaced), or choose another --out"
        )
    path = syn.export(out, format=args.format)
    print(f"exported {len(syn)} images to {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from condense.bench.report import write_report

    written = write_report(args.results, args.out, models=args.models, plots=not args.no_plots, force=args.force)
    pngs = sum(name.endswith(".png") for name in written)
    print(f"wrote {written['report.md']}, {written['results.csv']}, {written['report.html']} and {pngs} PNGs")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from condense.published import TRAJECTORY_FORMATS, describe, import_published

    tensors, sidecar = _artifact_paths(args.out, args.force)
    if args.model is not None:
        _check_model_name(args.model)
    it = None if args.it in (None, "best") else (int(args.it) if str(args.it).isdigit() else args.it)
    data = _whole_dataset(args)
    syn = import_published(
        args.path,
        args.format,
        data,
        ipc=args.ipc,
        zca=True if args.zca and args.format in TRAJECTORY_FORMATS else None,
        it=it,
        exp=args.exp,
        ema=args.ema,
        lr=args.lr,
        model=args.model,
        method=args.method,
        check_space=not args.no_space_check,
    )
    path = syn.save(tensors)
    print(f"read {args.format} set '{syn.meta['imported']['source']}': {describe(syn)}")
    print(f"saved {path} and {sidecar}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from condense.bench.run import run_bench

    device = "cpu" if args.dry_run else _device(args.device)
    res = run_bench(
        args.spec,
        args.work,
        args.out,
        device=device,
        dry_run=args.dry_run,
        quiet=args.quiet,
        progress=None if args.quiet else print,
    )
    if args.dry_run:
        for c in res["cells"]:
            print(f"{c['cell']}  {c['role']:<11} {c['label']}{'  (done)' if c['done'] else ''}")
        for p in res["prerequisites"]:
            print(f"{p['kind']:<8} {p['id']}  {'made' if p['made'] else 'to make'}: {json.dumps(p['spec'])}")
        print(f"{len(res['cells'])} cells, {len(res['prerequisites'])} prerequisites")
    return 0


COMMANDS = {
    "datasets": cmd_list,
    "models": cmd_list,
    "methods": cmd_list,
    "run": cmd_run,
    "experts": cmd_experts,
    "distill": cmd_distill,
    "teachers": cmd_teachers,
    "relabel": cmd_relabel,
    "eval": cmd_eval,
    "baseline": cmd_baseline,
    "show": cmd_show,
    "export": cmd_export,
    "import": cmd_import,
    "report": cmd_report,
    "bench": cmd_bench,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``condense`` console script and ``python -m condense``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    quiet = getattr(args, "quiet", False)
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s")
    try:
        return COMMANDS[args.command](args)
    except CondenseError as e:
        print(f"condense: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "condense: interrupted (checkpoints, if any, are kept; rerun the same command to resume)", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
