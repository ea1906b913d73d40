"""The ``condense`` command line: the only code that reads argv, prints results and sets exit codes.

Every subcommand maps to a library call; ``--json`` prints one JSON object as the last stdout line with
accuracies as fractions in [0, 1]. A :class:`~condense.errors.CondenseError` (a user mistake: unknown name,
missing data, bad file) becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from condense._version import __version__
from condense.errors import CondenseError, ConfigError

logger = logging.getLogger("condense")

EPILOG = """examples:
  condense run                                    # distill digits and compare with random real images
  condense experts --dataset cifar10 --data-root data --model convnetd3 --experts 20 --epochs 50 --out buffers/c10
  condense distill --method mtt --dataset cifar10 --data-root data --ipc 10 --buffer buffers/c10 \
      --out c10_mtt.safetensors
  condense eval c10_mtt.safetensors --dataset cifar10 --data-root data --models convnet,resnet18 --seeds 5 --json
  condense baseline random --dataset cifar10 --data-root data --ipc 10 --json
  condense show c10_mtt.safetensors --out grid.png
"""


def _models_arg(text: str | None) -> list[str] | None:
    return [m.strip() for m in text.split(",") if m.strip()] if text else None


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("common options")
    g.add_argument("--data-root", default=None, help="folder holding datasets (default ./data)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    g.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    g.add_argument("--quiet", action="store_true", help="no progress bars or log messages")
    g.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for torch (default: torch's)")


def _eval_opts(p: argparse.ArgumentParser, seeds: int = 5, epochs: int | None = None) -> None:
    p.add_argument(
        "--models",
        default=None,
        help="comma-separated evaluation models (default: convnet; gcn for graph datasets, also gin, gat)",
    )
    p.add_argument("--seeds", type=_positive_int, default=seeds, help=f"models trained per architecture ({seeds})")
    p.add_argument(
        "--epochs",
        type=_positive_int,
        default=epochs,
        help="training epochs (default: "
        + (str(epochs) if epochs else "the protocol's: 1000 for images, 100 for graphs")
        + ")",
    )
    p.add_argument(
        "--protocol",
        default=None,
        help="evaluation protocol (default: classic for images, graph for graph datasets; see condense.eval.PROTOCOLS)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
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
    p.add_argument(
        "--iterations", type=_positive_int, default=None, help="distillation iterations (--set num_iterations=K)"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a method config field")
    p.add_argument("--experts", type=_positive_int, default=None, help="experts to record for trajectory methods")
    p.add_argument("--expert-epochs", type=_positive_int, default=None, help="epochs per expert")
    _eval_opts(p, seeds=3, epochs=300)
    _common(p)

    p = sub.add_parser(
        "experts",
        help="record expert training trajectories into a buffer",
        description="Train experts on real data and save their parameters after every epoch (resumable).",
    )
    p.add_argument("--dataset", required=True)
    p.add_argument("--model", default="convnet")
    p.add_argument("--experts", type=_positive_int, default=10)
    p.add_argument("--epochs", type=_positive_int, default=50)
    p.add_argument("--kind", default="vanilla", help="vanilla (MTT), flat (FTD/DATM, GSAM) or smooth (AST)")
    p.add_argument("--zca", action="store_true", help="ZCA-whiten the data (eps 0.1)")
    p.add_argument("--at-once", type=_positive_int, default=None, help="experts trained at once (default: auto)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an expert config field")
    p.add_argument(
        "--model-arg", action="append", default=[], metavar="KEY=VALUE", help="model builder argument, e.g. width=32"
    )
    p.add_argument("--out", required=True, help="buffer directory")
    _common(p)

    p = sub.add_parser(
        "distill",
        help="distill a dataset with one method",
        description="Distill a dataset and save the SyntheticSet (safetensors + JSON sidecar).",
    )
    p.add_argument("--method", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--ipc", type=_positive_int, required=True)
    p.add_argument("--buffer", default=None, help="expert buffer directory (trajectory matchers)")
    p.add_argument(
        "--iterations",
        type=_positive_int,
        default=None,
        help="shorthand for --set num_iterations=K (iterative methods)",
    )
    p.add_argument("--preset", default=None, help="preset name (default '<dataset>-ipc<N>' when it exists)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--zca", action="store_true", help="ZCA-whiten the data (eps 0.1)")
    p.add_argument("--work-dir", default=None, help="checkpoints + JSONL log here (default: beside --out)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="iterations between checkpoints (100)")
    p.add_argument("--eval-every", type=int, default=0, help="iterations between monitoring evaluations (0)")
    p.add_argument("--out", required=True, help="artifact path (.safetensors)")
    _common(p)

    p = sub.add_parser("eval", help="evaluate a synthetic set", description="Score a synthetic set.")
    p.add_argument("path", help="artifact (.safetensors or its .json sidecar)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--zca", action="store_true", help="ZCA-whiten the real data (must match the artifact)")
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

    p = sub.add_parser("export", help="export a synthetic set as an ImageFolder of PNGs or one .npz")
    p.add_argument("path")
    p.add_argument("--format", choices=["imagefolder", "npz"], default="imagefolder")
    p.add_argument("--out", required=True)
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


def _load(args: argparse.Namespace):
    from condense.data import load_dataset

    kwargs = {"zca": True} if getattr(args, "zca", False) else {}
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
        "models": _models_arg(args.models),
        "seeds": args.seeds,
        "epochs": args.epochs,
        "protocol": args.protocol,
        "device": device,
        "seed": args.seed,
        "quiet": args.quiet,
    }


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

    base = get_expert_config(args.kind)
    config = get_expert_config(args.kind, **parse_overrides(type(base), args.set))
    model_kwargs = {}
    for item in args.model_arg:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--model-arg {item!r} must look like key=value")
        try:
            model_kwargs[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            model_kwargs[key.strip()] = raw
    data = _load(args)
    t0 = time.perf_counter()
    buf = record_experts(
        data,
        args.model,
        args.experts,
        args.epochs,
        Path(args.out),
        kind=args.kind,
        config=config,
        model_kwargs=model_kwargs or None,
        seed=args.seed,
        device=_device(args.device),
        quiet=args.quiet,
        experts_at_once=args.at_once,
    )
    curves = buf.accuracy_curves
    finals = [c[-1] for c in curves.values() if c]
    msg = f"recorded {len(curves)} experts into {args.out} in {time.perf_counter() - t0:.1f}s"
    if finals:
        msg += f"; final test accuracy {100 * min(finals):.1f}-{100 * max(finals):.1f} %"
    if not args.quiet:
        print(msg)
    return 0


def _overrides(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """``--set key=value`` items (and ``--iterations K``, shorthand for ``--set num_iterations=K``) parsed by the
    method's config field types; an unknown field is refused with the fields the config has."""
    from condense.config import parse_overrides
    from condense.methods import get_method

    items = list(getattr(args, "set", None) or [])
    if getattr(args, "iterations", None) is not None:
        items.append(f"num_iterations={args.iterations}")
    return parse_overrides(get_method(method).Config, items)


def _distill(args: argparse.Namespace, data, method: str, ipc: int, out_dir: Path | None, buffer: str | None):
    import torch

    from condense.methods import RunContext, distill

    run = RunContext(
        device=_device(args.device),
        out_dir=out_dir,
        checkpoint_every=getattr(args, "checkpoint_every", 0),
        eval_every=getattr(args, "eval_every", 0),
        quiet=args.quiet,
        buffer=Path(buffer) if buffer else None,
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
    data = _load(args)
    out = Path(args.out)
    work = Path(args.work_dir) if args.work_dir else out.with_name(out.stem + "_work")
    t0 = time.perf_counter()
    syn = _distill(args, data, args.method, args.ipc, work, args.buffer)
    path = syn.save(out)
    if not args.quiet:
        print(
            f"saved {len(syn)} items ({args.method}, {args.dataset}, ipc {args.ipc}) to {path} "
            f"in {time.perf_counter() - t0:.1f}s"
        )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from condense.eval import evaluate
    from condense.synthetic import SyntheticSet

    syn = SyntheticSet.load(args.path)
    data = _load(args)
    row = evaluate(syn, data, **_eval_kwargs(args, _device(args.device)))
    row.setdefault("dataset", args.dataset)
    row.setdefault("ipc", syn.ipc)
    _print_result(args, row, _acc_lines(row, f"{syn.method} ipc {syn.ipc}"))
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from condense.eval import full_data_baseline, random_real_baseline

    if args.baseline is None:
        raise ConfigError("choose a baseline: 'condense baseline random ...' or 'condense baseline full ...'")
    data = _load(args)
    kw = _eval_kwargs(args, _device(args.device))
    row = random_real_baseline(data, args.ipc, **kw) if args.baseline == "random" else full_data_baseline(data, **kw)
    row.setdefault("dataset", args.dataset)
    row.setdefault("ipc", getattr(args, "ipc", None))
    _print_result(args, row, _acc_lines(row, f"{args.baseline} ipc {getattr(args, 'ipc', 'all')}"))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from condense.demo import run_demo

    device = _device(args.device)
    if args.threads is None and device == "cpu" and args.dataset == "digits":
        # The demo's tensors are tiny: one thread avoids OpenMP oversubscription, which on a busy 2-core machine
        # made the demo 7x slower (330 s with 2 threads vs 48 s with 1, measured while another job ran).
        import torch

        torch.set_num_threads(1)
    method = args.method
    data = _load(args)
    kw = _eval_kwargs(args, device)
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
        overrides=_overrides(args, method),
        seed=args.seed,
        device=device,
        quiet=args.quiet,
        progress=None if args.quiet else print,
    )
    lines = [
        *(f"distilled ({method}) {m}: {_pct(a)}" for m, a in res["distilled"].items()),
        *(f"random real     {m}: {_pct(a)}" for m, a in res["random"].items()),
        f"artifact: {res['artifact']}  ({res['seconds']:.0f}s)",
    ]
    _print_result(args, res, lines)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from condense.synthetic import SyntheticSet

    out = SyntheticSet.load(args.path).grid(args.out)
    print(f"wrote {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from condense.synthetic import SyntheticSet

    out = SyntheticSet.load(args.path).export(args.out, format=args.format)
    print(f"exported to {out}")
    return 0


COMMANDS = {
    "datasets": cmd_list,
    "models": cmd_list,
    "methods": cmd_list,
    "run": cmd_run,
    "experts": cmd_experts,
    "distill": cmd_distill,
    "eval": cmd_eval,
    "baseline": cmd_baseline,
    "show": cmd_show,
    "export": cmd_export,
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
