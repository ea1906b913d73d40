"""Run a bench spec: shared prerequisites once, then every cell whose row is missing, then the results JSONL.

Layout of the work folder::

    WORK/buffers/<id>/          expert buffers (record_experts; every rank records its share under torchrun)
    WORK/teachers/<id>/         teachers (train_teacher; made by rank 0 while the others wait)
    WORK/cells/<id>/row.json    a finished cell's row, written atomically last (its presence = cell done)
    WORK/cells/<id>/work/       the method runner's checkpoint and log (a killed cell resumes from it)
    WORK/cells/<id>/ran.log     one line per attempt at the cell (tests count redone cells with it)
    WORK/sets/<id>.safetensors  the cell's artifact (SyntheticSet.save)

Peak memory per stage: on CUDA ``torch.cuda.max_memory_allocated`` (reset at each stage start); on the CPU the
process' resident-set high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs`` where Linux allows it,
else ``ru_maxrss``, which never goes down), named by ``peak_mem_kind`` in each stage.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import socket
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from condense.bench.spec import Cell, Spec, expand, load_spec, prereq_id
from condense.distributed import DistContext
from condense.io import read_json, sha256_file, write_json_atomic

__all__ = ["plan", "run_bench"]

ROW_SCHEMA = "condense-bench-row"
ROW_SCHEMA_VERSION = 1
_NO_ROW_KEYS = ("stages", "hardware", "host", "finished")  # rank-layout dependent


def _reset_peak(device: Any) -> str:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
        return "cuda_max_allocated"
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return "rss_highwater_vmhwm"
    except OSError:
        return "rss_highwater_process"


def _peak_mb(device: Any, kind: str) -> float:
    import torch

    if kind == "cuda_max_allocated":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    if kind == "rss_highwater_vmhwm":
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


@contextmanager
def _stage(stages: dict[str, Any], name: str, device: Any):
    kind = _reset_peak(device)
    t0 = time.perf_counter()
    rec: dict[str, Any] = {}
    yield rec
    stages[name] = {
        "seconds": round(time.perf_counter() - t0, 3),
        "peak_mem_mb": _peak_mb(device, kind),
        "peak_mem_kind": kind,
        **rec,
    }


def _hardware(device: Any, ranks: DistContext) -> dict[str, Any]:
    import torch

    dev = str(device)
    name = (
        torch.cuda.get_device_name(device) if dev.startswith("cuda") else (platform.processor() or platform.machine())
    )
    return {
        "device": dev,
        "name": name,
        "threads": torch.get_num_threads(),
        "world_size": ranks.world,
        "rank": ranks.rank,
    }


def _teacher_made(work: Path, pid: str) -> bool:
    """A teacher prerequisite is made when its record names a folder that holds a teacher."""
    info = work / "teachers" / f"{pid}.bench.json"
    return info.is_file() and (work / read_json(info)["folder"] / "teacher.json").is_file()


def plan(spec: Spec, work: Path) -> dict[str, Any]:
    """What a run would do: the cells (id, role, label, done?) and the prerequisites (kind, id, spec, made?)."""
    cells = expand(spec)
    prereqs: dict[str, dict[str, Any]] = {}
    for c in cells:
        if c.buffer is not None:
            pid = prereq_id(c.buffer)
            prereqs[pid] = {
                "kind": "buffer",
                "id": pid,
                "spec": c.buffer,
                "made": (work / "buffers" / pid / "manifest.json").is_file(),
            }
        for t in c.teachers or []:
            tspec = {**t, "dataset": c.config["dataset"], "zca": c.config["zca"]}
            pid = prereq_id(tspec)
            prereqs[pid] = {
                "kind": "teacher",
                "id": pid,
                "spec": tspec,
                "made": _teacher_made(work, pid),
            }
    rows = [
        {"cell": c.id, "role": c.role, "label": _label(c), "done": (work / "cells" / c.id / "row.json").is_file()}
        for c in cells
    ]
    return {"cells": rows, "prerequisites": list(prereqs.values())}


def _label(c: Cell) -> str:
    cfg = c.config
    what = cfg.get("method", c.role)
    ipc = f" ipc{cfg['ipc']}" if cfg.get("ipc") is not None else ""
    return f"{cfg['dataset']} {what}{ipc} [{cfg['eval']['protocol']}]"


class _Runner:
    def __init__(
        self, spec: Spec, work: Path, device: Any, quiet: bool, say: Callable[[str], None], ranks: DistContext
    ):
        self.spec, self.work, self.device, self.quiet, self.say, self.ranks = spec, work, device, quiet, say, ranks
        self._data: dict[tuple[str, bool], Any] = {}
        self.made: dict[str, dict[str, Any]] = {}

    def data(self, name: str, zca: bool) -> Any:
        from condense.data import load_dataset

        key = (name, zca)
        if key not in self._data:
            self._data[key] = load_dataset(name, self.spec.data_root, zca=zca)
        return self._data[key]

    # prerequisites -------------------------------------------------------------------------------------------------
    def buffer(self, bspec: dict[str, Any]) -> Path:
        from condense.expert_trajectories import get_expert_config, record_experts

        pid = prereq_id(bspec)
        folder = self.work / "buffers" / pid
        info = folder.parent / f"{pid}.bench.json"
        if not info.is_file():
            stages: dict[str, Any] = {}
            with _stage(stages, "buffer", self.device):
                record_experts(
                    self.data(bspec["dataset"], bspec["zca"]),
                    bspec["model"],
                    bspec["experts"],
                    bspec["epochs"],
                    folder,
                    kind=bspec["kind"],
                    config=get_expert_config(bspec["kind"], **bspec.get("config", {})),
                    model_kwargs=bspec.get("model_kwargs") or None,
                    seed=bspec["seed"],
                    device=self.device,
                    quiet=True,
                )
            if self.ranks.rank == 0:
                write_json_atomic(info, {"spec": bspec, **stages["buffer"]})
        self.ranks.barrier()
        return folder

    def teacher(self, tspec: dict[str, Any]) -> Path:
        from condense.demo import demo_teacher
        from condense.teachers import JSON_FILE

        pid = prereq_id(tspec)
        folder = self.work / "teachers" / pid
        info = folder.parent / f"{pid}.bench.json"
        made_before = info.is_file() and (self.work / read_json(info)["folder"] / JSON_FILE).is_file()
        if self.ranks.rank == 0 and not made_before:
            stages: dict[str, Any] = {}
            with _stage(stages, "teacher", self.device):
                made = demo_teacher(
                    self.data(tspec["dataset"], tspec["zca"]),
                    folder,
                    seed=self.spec.seed,
                    device=str(self.device),
                    quiet=True,
                    say=lambda _m: None,
                    spec=tspec,
                )
            write_json_atomic(info, {"spec": tspec, "folder": str(made.relative_to(self.work)), **stages["teacher"]})
        self.ranks.barrier()
        return self.work / read_json(info)["folder"]

    def prereq_stage(self, kind: str, tspec: dict[str, Any], first: bool) -> dict[str, Any]:
        info = read_json(self.work / f"{kind}s" / f"{prereq_id(tspec)}.bench.json")
        return {k: info[k] for k in ("seconds", "peak_mem_mb", "peak_mem_kind")} | {"reused": not first}

    # cells ---------------------------------------------------------------------------------------------------------
    def eval_kw(self, cell: Cell) -> dict[str, Any]:
        ev = cell.config["eval"]
        return {
            "models": ev["models"],
            "seeds": ev["seeds"],
            "seed": ev["seed"],
            "epochs": ev["epochs"],
            "device": self.device,
            "quiet": True,
        }

    def noaug(self, name: str) -> Any:
        from condense.eval import get_protocol

        proto = get_protocol(name)
        if hasattr(proto, "augment"):
            return proto.replace(augment="none")
        return proto.replace(mix="none", flip="off", scale=(1.0, 1.0))

    def run_cell(self, cell: Cell, teacher_dirs: dict[str, Path], buffer_dirs: dict[str, Path]) -> dict[str, Any]:
        import torch

        from condense.eval import evaluate, evaluate_tensors, full_data_baseline, random_real_baseline

        cfg, folder = cell.config, self.work / "cells" / cell.id
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "ran.log", "a") as f:
            f.write(f"{datetime.datetime.now(datetime.UTC).isoformat()} rank {self.ranks.rank}\n")
        data = self.data(cfg["dataset"], cfg["zca"])
        kw = self.eval_kw(cell)
        proto = cfg["eval"]["protocol"]
        teachers = [
            teacher_dirs[prereq_id({**t, "dataset": cfg["dataset"], "zca": cfg["zca"]})] for t in (cell.teachers or [])
        ]
        stages: dict[str, Any] = {}
        acc_hard = acc_noaug = None
        artifact = artifact_sha = None
        preset = None
        label_kind = "hard"
        if cell.role == "full_data":
            with _stage(stages, "eval", self.device):
                res = full_data_baseline(data, protocol=proto, **kw)
            acc = res["accuracy"]
            acc_hard = acc
        elif cell.role == "random_real":
            tkw = {"teacher": teachers} if teachers else {}
            with _stage(stages, "eval", self.device):
                res = random_real_baseline(data, cfg["ipc"], protocol=proto, **kw, **tkw)
                acc = res["accuracy"]
                label_kind = res["label_kind"]
                if label_kind == "hard":
                    acc_hard = acc
                else:
                    acc_hard = random_real_baseline(data, cfg["ipc"], protocol="classic", **kw)["accuracy"]
                if cfg.get("noaug"):
                    acc_noaug = random_real_baseline(data, cfg["ipc"], protocol=self.noaug(proto), **kw, **tkw)[
                        "accuracy"
                    ]
        else:
            from condense.methods import RunContext, distill

            if cell.buffer is not None:
                stages["buffer"] = self.prereq_stage(
                    "buffer", cell.buffer, self.first[prereq_id(cell.buffer)] == cell.id
                )
            for t in cell.teachers or []:
                tspec = {**t, "dataset": cfg["dataset"], "zca": cfg["zca"]}
                stages["teacher"] = self.prereq_stage("teacher", tspec, self.first[prereq_id(tspec)] == cell.id)
            run = RunContext(
                device=self.device,
                out_dir=folder / "work",
                checkpoint_every=self.spec.checkpoint_every,
                quiet=True,
                buffer=buffer_dirs[prereq_id(cell.buffer)] if cell.buffer is not None else None,
                teacher=teachers or None,
            )
            with _stage(stages, "distill", self.device):
                syn = distill(
                    cfg["method"],
                    data,
                    cfg["ipc"],
                    preset=cfg["preset"],
                    overrides=cfg["overrides"] or None,
                    generator=torch.Generator().manual_seed(cfg["seed"]),
                    run=run,
                )
            preset = syn.meta.get("preset") if isinstance(syn.meta, dict) else None
            path = syn.save(self.work / "sets" / f"{cell.id}.safetensors")
            artifact, artifact_sha = path, sha256_file(path)
            tkw = {"teacher": teachers} if teachers else {}
            with _stage(stages, "eval", self.device):
                if teachers:
                    tkw["baseline"] = False
                res = evaluate(syn, data, protocol=proto, **kw, **tkw)
                acc = res["accuracy"]
                label_kind = res["label_kind"]
                if cfg.get("hard"):
                    if label_kind == "hard":
                        acc_hard = acc
                    else:
                        hard = syn.labels.argmax(1) if syn.labels.ndim == 2 else syn.labels
                        lr = syn.lr if syn.lr is not None else None
                        acc_hard = evaluate_tensors(syn.images, hard, data, protocol="classic", lr=lr, **kw)["accuracy"]
                if cfg.get("noaug"):
                    acc_noaug = evaluate(syn, data, protocol=self.noaug(proto), **kw, **tkw)["accuracy"]
        row = {
            "schema": ROW_SCHEMA,
            "schema_version": ROW_SCHEMA_VERSION,
            "cell": cell.id,
            "role": cell.role,
            "dataset": cfg["dataset"],
            "method": cfg.get("method", cell.role),
            "ipc": cfg.get("ipc"),
            "preset": preset,
            "label_kind": label_kind,
            "protocol": proto,
            "protocol_version": cfg["eval"]["protocol_version"],
            "models": list(acc),
            "seeds": list(range(cfg["eval"]["seed"], cfg["eval"]["seed"] + cfg["eval"]["seeds"])),
            "accuracy": acc,
            "accuracy_hard": acc_hard,
            "accuracy_noaug": acc_noaug,
            "baseline_cell": cell.baseline_cell,
            "full_cell": cell.full_cell,
            "stages": stages,
            "artifact": None if artifact is None else str(Path("sets") / f"{cell.id}.safetensors"),
            "artifact_sha256": artifact_sha,
            "config": cfg,
            "condense_version": _version(),
            "torch_version": torch.__version__,
            "hardware": _hardware(self.device, self.ranks),
            "host": socket.gethostname(),
            "finished": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        write_json_atomic(folder / "row.json", row)
        return row


def _version() -> str:
    from condense._version import __version__

    return __version__


def run_bench(
    spec: str | Path | Spec,
    work: str | Path | None = None,
    out: str | Path | None = None,
    *,
    device: str = "cpu",
    dry_run: bool = False,
    quiet: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every missing cell of ``spec`` and write the results JSONL (rebuilt from all finished rows, grid order).

    Args:
        spec: a TOML file or a parsed :class:`Spec`.
        work: the work folder (default ``bench-<spec name>``); cells, buffers, teachers and sets live there.
        out: the results JSONL (default ``WORK/results.jsonl``); artifact paths in rows are relative to its folder.
        device: where to train (``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun).
        dry_run: only validate and return the plan (cells, prerequisites) without computing anything.
        quiet: no progress bar or per-cell lines.
        progress: receives one line per finished cell and the summary (the CLI passes ``print``).

    Returns:
        ``{"cells", "ran", "skipped", "results", "seconds", "rows"}`` (``rows``: the results' rows, rank 0), or the
        plan when ``dry_run``.
    """
    import torch

    t0 = time.perf_counter()
    spec = spec if isinstance(spec, Spec) else load_spec(spec)
    work = Path(work) if work is not None else Path(f"bench-{spec.name}")
    out = Path(out) if out is not None else work / "results.jsonl"
    if dry_run:
        return {"dry_run": True, **plan(spec, work)}
    say = progress or (lambda _m: None)
    ranks = DistContext.from_env(device)
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and "LOCAL_RANK" in os.environ:
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    if ranks.rank != 0:
        quiet = True
        say = lambda _m: None  # noqa: E731
    try:
        return _run(spec, work, out, dev, quiet, say, ranks, t0)
    finally:
        ranks.close()


def _run(spec: Spec, work: Path, out: Path, dev: Any, quiet: bool, say: Any, ranks: DistContext, t0: float) -> dict:
    runner = _Runner(spec, work, dev, quiet, say, ranks)
    cells = expand(spec)
    runner.first = {}
    buffer_dirs: dict[str, Path] = {}
    teacher_dirs: dict[str, Path] = {}
    for c in cells:
        if c.buffer is not None:
            runner.first.setdefault(prereq_id(c.buffer), c.id)
        for t in c.teachers or []:
            runner.first.setdefault(prereq_id({**t, "dataset": c.config["dataset"], "zca": c.config["zca"]}), c.id)
    pending = [c for c in cells if not (work / "cells" / c.id / "row.json").is_file()]
    for c in pending:  # prerequisites in grid order, every rank taking part (buffers) or waiting (teachers)
        if c.buffer is not None and prereq_id(c.buffer) not in buffer_dirs:
            say(f"expert buffer {c.buffer['kind']} {c.buffer['model']} x {c.buffer['experts']} ({c.config['dataset']})")
            buffer_dirs[prereq_id(c.buffer)] = runner.buffer(c.buffer)
        for t in c.teachers or []:
            tspec = {**t, "dataset": c.config["dataset"], "zca": c.config["zca"]}
            if prereq_id(tspec) not in teacher_dirs:
                say(f"teacher {t.get('name', t.get('model'))} ({c.config['dataset']})")
                teacher_dirs[prereq_id(tspec)] = runner.teacher(tspec)
    ranks.barrier()
    mine = {c.id for c in pending[ranks.rank :: ranks.world]}  # round robin in grid order
    todo = [c for c in pending if c.id in mine]
    bar = None
    if not quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cells), initial=len(cells) - len(pending), desc="bench", unit="cell")
    for c in todo:
        row = runner.run_cell(c, teacher_dirs, buffer_dirs)
        first = row["models"][0]
        line = f"{_label(c):<42} {c.id}  {100 * row['accuracy'][first]['mean']:5.1f} % ({first})"
        if bar is not None:
            bar.write(line)
            bar.update(1)
    if bar is not None:
        bar.close()
    ranks.barrier()
    rows: list[dict[str, Any]] = []
    if ranks.rank == 0:
        rows = [read_json(work / "cells" / c.id / "row.json") for c in cells]
        rel = os.path.relpath(work, out.parent) if out.parent.resolve() != work.resolve() else ""
        lines = []
        for r in rows:
            if r["artifact"] is not None and rel:
                r["artifact"] = str(Path(rel) / r["artifact"])
            lines.append(json.dumps(r, sort_keys=False))
        from condense.io import write_bytes_atomic

        out.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(out, ("\n".join(lines) + "\n").encode())
        say(_summary(rows, len(pending), time.perf_counter() - t0, out))
    ranks.barrier()
    return {
        "cells": len(cells),
        "ran": len(todo),
        "skipped": len(cells) - len(pending),
        "results": str(out),
        "seconds": round(time.perf_counter() - t0, 2),
        "rows": rows,
    }


def _summary(rows: list[dict[str, Any]], ran: int, seconds: float, out: Path) -> str:
    lines = [f"{len(rows)} cells ({ran} run now, {len(rows) - ran} already done) in {seconds:.1f} s -> {out}"]
    base = {r["cell"]: r for r in rows}
    for r in rows:
        m = r["models"][0]
        acc = r["accuracy"][m]
        tail = ""
        b = base.get(r.get("baseline_cell") or "")
        if b is not None and m in b["accuracy"]:
            tail = f"  random real {100 * b['accuracy'][m]['mean']:.1f}"
        ipc = "" if r["ipc"] is None else f" ipc{r['ipc']}"
        lines.append(
            f"  {r['dataset']} {r['method']}{ipc:<7} {m}: {100 * acc['mean']:5.1f} ± {100 * acc['std']:.1f} %{tail}"
        )
    return "\n".join(lines)
